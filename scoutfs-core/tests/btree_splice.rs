//! The splicing primitives of the log merge:
//! - a subtree named by `get_parent`, copied and changed by a separate writer (as a merging
//!   client does) and spliced back with `set_parent` + `rebalance`, gives the same items
//!   as making the changes in place, and a tree that verifies;
//! - `free_blocks` in small budgets frees every block of a tree exactly once, never reads
//!   a block it already freed (those are overwritten between calls, as reuse would), and
//!   stays within its budget but for the finished ancestors of the last leaf.

// Tests fail loudly: unwrapping in their helpers is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use scoutfs_core::alloc::{AllocError, MetaAllocator};
use scoutfs_core::block::{BlockCache, BlockWriter, Geometry};
use scoutfs_core::btree::{self, FreeProgress, Item, TreeTxn};
use scoutfs_core::device::MemDevice;
use scoutfs_core::format::{BtreeRoot, Key};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const BS: usize = 512;
const TOTAL: u64 = 1 << 15;

fn geo() -> Geometry {
    Geometry {
        block_size: BS,
        fsid: 0x5b1ce,
        first_blkno: 8,
        total_blocks: TOTAL,
    }
}

fn key(i: u32) -> Key {
    Key::new(16, u64::from(i), 2, 0, 0, 0)
}

/// Hands out blocks from a range and records what is freed (never reusing anything).
struct RangeAlloc {
    next: u64,
    end: u64,
    freed: Vec<u64>,
}

impl RangeAlloc {
    fn new(start: u64, end: u64) -> RangeAlloc {
        RangeAlloc {
            next: start,
            end,
            freed: Vec::new(),
        }
    }
}

impl MetaAllocator for RangeAlloc {
    fn alloc_meta(&mut self) -> Result<u64, AllocError> {
        if self.next >= self.end {
            return Err(AllocError::NoSpace);
        }
        self.next += 1;
        Ok(self.next - 1)
    }
    fn free_meta(&mut self, blkno: u64) -> Result<(), AllocError> {
        self.freed.push(blkno);
        Ok(())
    }
}

struct Env {
    dev: Arc<MemDevice>,
    cache: Arc<BlockCache>,
}

impl Env {
    fn new() -> Env {
        let dev = Arc::new(MemDevice::new(TOTAL * BS as u64));
        let cache = Arc::new(BlockCache::new(dev.clone(), geo(), 8 << 20));
        Env { dev, cache }
    }

    /// A committed tree of the given items, built from blocks of `alloc`.
    fn build(&self, alloc: &mut RangeAlloc, items: &BTreeMap<u32, Vec<u8>>) -> BtreeRoot {
        let mut wri = BlockWriter::new(self.cache.clone(), 1);
        let mut root = BtreeRoot::EMPTY;
        let mut t = TreeTxn {
            wri: &mut wri,
            alloc,
        };
        for (k, v) in items {
            t.insert(&mut root, &key(*k), v).unwrap();
        }
        wri.write_all().unwrap();
        root
    }

    fn items(&self, root: &BtreeRoot) -> Vec<Item> {
        btree::items(&*self.cache, root, &Key::MIN, &Key::MAX).unwrap()
    }
}

fn apply(t: &mut TreeTxn<'_>, root: &mut BtreeRoot, changes: &[(u32, Option<Vec<u8>>)]) {
    for (k, v) in changes {
        match v {
            Some(v) => t.force(root, &key(*k), v).unwrap(),
            None => {
                let _ = t.delete(root, &key(*k));
            }
        }
    }
}

fn model_items(m: &BTreeMap<u32, Vec<u8>>) -> Vec<Item> {
    m.iter()
        .map(|(k, v)| Item {
            key: key(*k),
            seq: 0,
            flags: 0,
            val: v.clone(),
        })
        .collect()
}

/// Splice changes to the subtree covering `at` and compare with the model.
fn splice_case(
    base: &BTreeMap<u32, Vec<u8>>,
    at: u32,
    changes: Vec<(u32, Option<Vec<u8>>)>,
) -> Result<(), TestCaseError> {
    let env = Env::new();
    let mut build_alloc = RangeAlloc::new(8, 10_000);
    let tree = env.build(&mut build_alloc, base);

    // The "client": copy the subtree covering `at` and change it within its range.
    let parent = btree::get_parent(&*env.cache, &tree, &key(at)).unwrap();
    let changes: Vec<_> = changes
        .into_iter()
        .filter(|(k, _)| (parent.start..=parent.end).contains(&key(*k)))
        .collect();
    let mut client_alloc = RangeAlloc::new(10_000, 20_000);
    let mut client = BlockWriter::new(env.cache.clone(), 2);
    let mut sub = parent.subtree;
    apply(
        &mut TreeTxn {
            wri: &mut client,
            alloc: &mut client_alloc,
        },
        &mut sub,
        &changes,
    );
    // A subtree the merge would have stopped on (its root split or collapsed) is not
    // spliced; the merge protocol returns the remainder instead.
    prop_assume!(tree.height <= 2 || sub.height == 2);
    client.write_all().unwrap();

    // The "server": splice it in and rebalance along its path.
    let mut server_alloc = RangeAlloc::new(20_000, 30_000);
    let mut server = BlockWriter::new(env.cache.clone(), 3);
    let mut spliced = tree;
    {
        let mut t = TreeTxn {
            wri: &mut server,
            alloc: &mut server_alloc,
        };
        t.set_parent(&mut spliced, &key(at), sub).unwrap();
        t.rebalance(&mut spliced, &key(at)).unwrap();
    }
    server.write_all().unwrap();

    let mut want = base.clone();
    for (k, v) in &changes {
        match v {
            Some(v) => want.insert(*k, v.clone()),
            None => want.remove(k),
        };
    }
    prop_assert_eq!(env.items(&spliced), model_items(&want));
    btree::verify(&*env.cache, &spliced).unwrap();
    // The original tree is untouched (copy-on-write).
    prop_assert_eq!(env.items(&tree), model_items(base));
    // The same changes made in place give the same items.
    let mut direct = tree;
    let mut direct_alloc = RangeAlloc::new(30_000, TOTAL);
    let mut wri = BlockWriter::new(env.cache.clone(), 4);
    apply(
        &mut TreeTxn {
            wri: &mut wri,
            alloc: &mut direct_alloc,
        },
        &mut direct,
        &changes,
    );
    prop_assert_eq!(
        btree::items(&wri, &direct, &Key::MIN, &Key::MAX).unwrap(),
        env.items(&spliced)
    );
    Ok(())
}

fn base_tree(max: usize) -> impl Strategy<Value = BTreeMap<u32, Vec<u8>>> {
    prop::collection::btree_map(
        0..5000u32,
        prop::collection::vec(any::<u8>(), 0..40),
        0..max,
    )
}

fn changes() -> impl Strategy<Value = Vec<(u32, Option<Vec<u8>>)>> {
    prop::collection::vec(
        (
            0..5000u32,
            prop::option::weighted(0.7, prop::collection::vec(any::<u8>(), 0..40)),
        ),
        0..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, max_global_rejects: 4096, ..ProptestConfig::default() })]

    #[test]
    fn splicing_a_changed_subtree_equals_changing_in_place(
        base in base_tree(1500), at in 0..5000u32, changes in changes(),
    ) {
        splice_case(&base, at, changes)?;
    }

    #[test]
    fn splicing_into_small_trees_replaces_the_root(
        base in base_tree(30), at in 0..5000u32, changes in changes(),
    ) {
        splice_case(&base, at, changes)?;
    }
}

/// Deep trees really get spliced below the root (the subtree is a proper part).
#[test]
fn get_parent_names_a_proper_subtree_of_deep_trees() {
    let env = Env::new();
    let base: BTreeMap<u32, Vec<u8>> = (0..1500).map(|i| (i * 3, vec![i as u8; 20])).collect();
    let tree = env.build(&mut RangeAlloc::new(8, 10_000), &base);
    assert!(tree.height >= 3);
    let p = btree::get_parent(&*env.cache, &tree, &key(2000)).unwrap();
    assert_eq!(p.subtree.height, 2);
    assert_ne!(p.subtree.blk, tree.blk);
    assert!(p.start <= key(2000) && key(2000) <= p.end);
    assert!(p.start > Key::MIN || p.end < Key::MAX);
    // The subtree holds exactly the tree's items in its range.
    let inside: Vec<Item> = env
        .items(&tree)
        .into_iter()
        .filter(|it| (p.start..=p.end).contains(&it.key))
        .collect();
    let sub_items = btree::items(&*env.cache, &p.subtree, &p.start, &p.end).unwrap();
    assert_eq!(sub_items, inside);
    // Past its range a subtree covers nothing: reading there is an error, not a guess.
    if let Some(after) = p.end.next() {
        assert!(btree::lookup(&*env.cache, &p.subtree, &after).is_err());
    }
    splice_case(&base, 2000, vec![(2001, Some(vec![1; 30])), (2004, None)]).unwrap();
}

fn free_case(n: u32, budget: usize) {
    let env = Env::new();
    let base: BTreeMap<u32, Vec<u8>> = (0..n)
        .map(|i| (i, vec![i as u8; (i % 40) as usize]))
        .collect();
    let tree = env.build(&mut RangeAlloc::new(8, 20_000), &base);
    let mut expect: HashMap<u64, usize> = HashMap::new();
    btree::walk_blocks(&*env.cache, &tree, &mut |b| {
        *expect.entry(b.blk.blkno).or_default() += 1;
        Ok(())
    })
    .unwrap();
    let mut freed: HashMap<u64, usize> = HashMap::new();
    let mut from = Key::MIN;
    let mut calls = 0;
    loop {
        calls += 1;
        assert!(calls < 100_000, "free_blocks made no progress");
        let mut alloc = RangeAlloc::new(20_000, 20_000);
        let mut wri = BlockWriter::new(env.cache.clone(), 5);
        let r = btree::free_blocks(
            &mut TreeTxn {
                wri: &mut wri,
                alloc: &mut alloc,
            },
            &tree,
            &from,
            budget,
        )
        .unwrap_or_else(|e| panic!("n {n} budget {budget} call {calls}: {e}"));
        let got = match r {
            FreeProgress::Done { freed } | FreeProgress::More { freed, .. } => freed,
        };
        assert_eq!(got, alloc.freed.len());
        assert!(
            got <= budget.max(1) + usize::from(tree.height.saturating_sub(1)),
            "freed {got} with budget {budget} in a tree of height {}",
            tree.height
        );
        // "Commit" and reuse: every block freed so far is overwritten on the device.
        for b in &alloc.freed {
            *freed.entry(*b).or_default() += 1;
            env.dev
                .with_bytes_mut(|d| d[*b as usize * BS..][..BS].fill(0xee));
            env.cache.forget(*b);
        }
        match r {
            FreeProgress::Done { .. } => break,
            FreeProgress::More { next, .. } => {
                assert!(next > from || calls == 1, "no progress");
                from = next;
            }
        }
    }
    assert_eq!(freed, expect, "n {n} budget {budget}");
}

#[test]
fn free_blocks_frees_every_block_exactly_once_in_any_budget() {
    for n in [0, 1, 5, 40, 300, 2500] {
        for budget in [1, 2, 3, 7, 64, 100_000] {
            free_case(n, budget);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn free_blocks_random_trees(n in 0..3000u32, budget in 1..40usize) {
        free_case(n, budget);
    }
}
