#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The allocators against models: the free-extent tree against a set of free blocks, and
//! the alloc list allocator against a set of available and a list of freed blocks.
//!
//! Trees use 512-byte metadata blocks so the extent tree grows several levels from a few
//! hundred extents.

mod common;

use common::proptest_cases;
use proptest::prelude::*;
use scoutfs_core::alloc::list::read_list;
use scoutfs_core::alloc::{AllocError, AllocRoot, Extent, FreeSet, ListAlloc, MetaAllocator};
use scoutfs_core::block::{BlockCache, BlockError, BlockWriter, Geometry};
use scoutfs_core::btree::{self, BtreeError, TreeTxn};
use scoutfs_core::device::BlockDevice;
use scoutfs_core::format::{zone, Key};
use std::collections::BTreeSet;
use std::sync::Arc;

const BS: usize = 512;
const META_BLOCKS: u64 = 8192;
/// The block numbers the extent tree under test manages (a pretend data device).
const SPACE: u64 = 4096;

#[derive(Clone, Debug)]
enum Op {
    /// Free `len` blocks from `start` (into the tree).
    Free(u64, u64),
    /// Remove `len` blocks from `start` (they must all be free).
    Remove(u64, u64),
    /// Allocate up to `len` blocks, best fit.
    Alloc(u64),
    /// Allocate up to `len` blocks from the lowest extent.
    AllocLow(u64),
    Commit,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SPACE, 1..24u64).prop_map(|(s, l)| Op::Free(s, l)),
        3 => (0..SPACE, 1..24u64).prop_map(|(s, l)| Op::Remove(s, l)),
        3 => (1..40u64).prop_map(Op::Alloc),
        1 => (1..40u64).prop_map(Op::AllocLow),
        1 => Just(Op::Commit),
        1 => Just(Op::Reopen),
    ]
}

struct Harness {
    dev: Arc<dyn BlockDevice>,
    geo: Geometry,
    cache: Arc<BlockCache>,
    wri: BlockWriter,
    meta: FreeSet,
    /// The tree as the open transaction sees it, and as last committed.
    tree: AllocRoot,
    committed_tree: AllocRoot,
    /// The model: free blocks, now and as last committed.
    free: BTreeSet<u64>,
    committed_free: BTreeSet<u64>,
    max_height: u8,
    seed: u64,
}

impl Harness {
    fn new() -> Harness {
        let (dev, geo, cache) = common::raw_cache(BS, 1, META_BLOCKS, 0xa110c, 1 << 20);
        Harness {
            wri: BlockWriter::new(cache.clone(), 1),
            dev,
            geo,
            cache,
            meta: FreeSet::from_used(1, META_BLOCKS, []),
            tree: AllocRoot::EMPTY,
            committed_tree: AllocRoot::EMPTY,
            free: BTreeSet::new(),
            committed_free: BTreeSet::new(),
            max_height: 0,
            seed: 1,
        }
    }

    fn txn(&mut self) -> (TreeTxn<'_>, &mut AllocRoot) {
        (
            TreeTxn {
                wri: &mut self.wri,
                alloc: &mut self.meta,
            },
            &mut self.tree,
        )
    }

    /// The model's maximal runs of free blocks.
    fn model_extents(&self) -> Vec<Extent> {
        let mut out: Vec<Extent> = Vec::new();
        for &b in &self.free {
            match out.last_mut() {
                Some(e) if e.end() == b => e.len += 1,
                _ => out.push(Extent { start: b, len: 1 }),
            }
        }
        out
    }

    fn all_free(&self, start: u64, len: u64) -> bool {
        (start..start + len).all(|b| self.free.contains(&b))
    }

    fn none_free(&self, start: u64, len: u64) -> bool {
        self.free.range(start..start + len).next().is_none()
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Free(start, len) => {
                let (mut t, tree) = self.txn();
                let before = *tree;
                let r = tree.insert(&mut t, start, len);
                if self.none_free(start, len) {
                    r.unwrap();
                    self.free.extend(start..start + len);
                } else {
                    assert!(
                        matches!(
                            r,
                            Err(BtreeError::Block(BlockError::Alloc(AllocError::BadFree(_))))
                        ),
                        "freeing free blocks {start}+{len}: {r:?}"
                    );
                    assert_eq!(self.tree, before, "a refused free changed the tree");
                }
            }
            Op::Remove(start, len) => {
                let (mut t, tree) = self.txn();
                let before = *tree;
                let r = tree.remove(&mut t, start, len);
                if self.all_free(start, len) {
                    r.unwrap();
                    for b in start..start + len {
                        self.free.remove(&b);
                    }
                } else {
                    assert!(
                        matches!(
                            r,
                            Err(BtreeError::Block(BlockError::Alloc(AllocError::NoSpace)))
                        ),
                        "removing blocks that are not all free {start}+{len}: {r:?}"
                    );
                    assert_eq!(self.tree, before, "a refused remove changed the tree");
                }
            }
            Op::Alloc(len) => {
                let model = self.model_extents();
                // Best fit: the smallest extent of at least `len`, lowest start among
                // equals; else a prefix of the largest (lowest start among equals).
                let want = model
                    .iter()
                    .filter(|e| e.len >= len)
                    .min_by_key(|e| (e.len, e.start))
                    .or_else(|| {
                        model
                            .iter()
                            .max_by_key(|e| (e.len, std::cmp::Reverse(e.start)))
                    })
                    .map(|e| Extent {
                        start: e.start,
                        len: e.len.min(len),
                    });
                let (mut t, tree) = self.txn();
                let got = tree.alloc(&mut t, len).unwrap();
                assert_eq!(got, want, "alloc({len})");
                if let Some(e) = got {
                    for b in e.start..e.end() {
                        assert!(self.free.remove(&b));
                    }
                }
            }
            Op::AllocLow(len) => {
                let want = self.model_extents().first().map(|e| Extent {
                    start: e.start,
                    len: e.len.min(len),
                });
                let (mut t, tree) = self.txn();
                let got = tree.alloc_low(&mut t, len).unwrap();
                assert_eq!(got, want, "alloc_low({len})");
                if let Some(e) = got {
                    for b in e.start..e.end() {
                        assert!(self.free.remove(&b));
                    }
                }
            }
            Op::Commit => self.commit(),
            Op::Reopen => {
                // Drop the open transaction and read the committed tree through a new cache.
                self.wri.discard();
                self.meta.abort();
                self.rebuild_meta();
                self.cache = Arc::new(BlockCache::new(self.dev.clone(), self.geo, 1 << 20));
                self.seed += 1;
                self.wri = BlockWriter::new(self.cache.clone(), self.seed);
                self.tree = self.committed_tree;
                self.free = self.committed_free.clone();
            }
        }
        self.check();
    }

    fn commit(&mut self) {
        self.wri.write_all().unwrap();
        self.meta.commit_done();
        self.seed += 1;
        self.wri = BlockWriter::new(self.cache.clone(), self.seed);
        self.committed_tree = self.tree;
        self.committed_free = self.free.clone();
        // Every metadata block is the tree's or free: nothing leaked, nothing twice.
        let mut used = 0u64;
        btree::walk_blocks(&*self.cache, &self.tree.root, &mut |_| {
            used += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(
            self.meta.free_blocks() + used,
            META_BLOCKS - 1,
            "metadata blocks leaked or counted twice"
        );
    }

    /// Free metadata = every block the committed tree does not use.
    fn rebuild_meta(&mut self) {
        let mut used = Vec::new();
        btree::walk_blocks(&*self.cache, &self.committed_tree.root, &mut |b| {
            used.push(b.blk.blkno);
            Ok(())
        })
        .unwrap();
        self.meta = FreeSet::from_used(1, META_BLOCKS, used);
    }

    fn check(&mut self) {
        let got = self.tree.extents(&self.wri).unwrap();
        assert_eq!(got, self.model_extents(), "extents");
        assert_eq!(self.tree.total_len, self.free.len() as u64, "total_len");
        let model = self.model_extents();
        assert_eq!(self.tree.first(&self.wri).unwrap(), model.first().copied());
        let largest = model
            .iter()
            .max_by_key(|e| (e.len, std::cmp::Reverse(e.start)))
            .copied();
        assert_eq!(self.tree.largest(&self.wri).unwrap(), largest, "largest");
        // Both zones hold exactly one item per extent, and nothing else is in the tree.
        let items = btree::items(&self.wri, &self.tree.root, &Key::MIN, &Key::MAX).unwrap();
        let mut by_blkno = Vec::new();
        let mut by_order = Vec::new();
        for it in &items {
            assert!(it.val.is_empty());
            match it.key.zone {
                zone::FREE_EXTENT_BLKNO => by_blkno.push((it.key.first, it.key.second)),
                zone::FREE_EXTENT_ORDER => by_order.push((it.key.second, !it.key.first)),
                z => panic!("item in zone {z}"),
            }
        }
        by_order.sort_unstable();
        let want: Vec<(u64, u64)> = model.iter().map(|e| (e.start, e.len)).collect();
        assert_eq!(by_blkno, want);
        assert_eq!(by_order, want);
        if !self.tree.root.is_empty() {
            btree::verify(&self.wri, &self.tree.root).unwrap();
        }
        self.max_height = self.max_height.max(self.tree.root.height);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(48)))]

    #[test]
    fn extent_tree_matches_a_set_of_free_blocks(ops in prop::collection::vec(op(), 1..300)) {
        let mut h = Harness::new();
        for op in &ops {
            h.apply(op);
        }
        h.commit();
    }
}

/// A long fixed sequence: many small fragmented frees grow the tree several levels, then
/// allocation and removal take it back down, through commits and reopens.
#[test]
fn fragmented_frees_grow_the_tree_and_allocation_empties_it() {
    let mut h = Harness::new();
    // Every other block: nothing merges.
    for b in (0..SPACE).step_by(2) {
        h.apply(&Op::Free(b, 1));
        if b % 512 == 0 {
            h.apply(&Op::Commit);
        }
    }
    assert!(h.max_height >= 3, "height {}", h.max_height);
    h.apply(&Op::Commit);
    h.apply(&Op::Reopen);
    // The odd blocks merge everything into one extent.
    for b in (1..SPACE).step_by(2) {
        h.apply(&Op::Free(b, 1));
    }
    assert_eq!(h.tree.extents(&h.wri).unwrap().len(), 1);
    h.apply(&Op::Commit);
    while h.tree.total_len > 0 {
        h.apply(&Op::Alloc(37));
    }
    h.apply(&Op::Commit);
    assert!(h.tree.root.is_empty() || h.tree.root.height == 1);
}

#[derive(Clone, Debug)]
enum ListOp {
    Alloc,
    Free(u64),
    /// Write the lists, commit and load them back.
    Cycle,
}

fn list_op() -> impl Strategy<Value = ListOp> {
    prop_oneof![
        4 => Just(ListOp::Alloc),
        4 => (0..SPACE).prop_map(ListOp::Free),
        1 => Just(ListOp::Cycle),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(48)))]

    #[test]
    fn list_alloc_matches_its_model(ops in prop::collection::vec(list_op(), 1..400)) {
        let (_, _, cache) = common::raw_cache(BS, 1, META_BLOCKS, 0x1157, 1 << 20);
        let mut wri = BlockWriter::new(cache.clone(), 9);
        // Avail blocks live above SPACE; frees come from below it (blocks in use).
        let mut avail: BTreeSet<u64> = (SPACE..SPACE + 600).collect();
        let mut freed: Vec<u64> = Vec::new();
        let mut a = ListAlloc::new(avail.iter().copied().collect());
        let mut in_use: BTreeSet<u64> = (1..SPACE).collect();
        // The blocks holding the lists last written: the next write frees them.
        let mut prev_lists: Vec<u64> = Vec::new();
        let mut seed = 10;
        for op in &ops {
            match *op {
                ListOp::Alloc => match a.alloc_meta() {
                    Ok(b) => {
                        prop_assert!(avail.remove(&b), "allocated {} that was not available", b);
                        prop_assert!(!freed.contains(&b), "reused {} freed in this transaction", b);
                        in_use.insert(b);
                    }
                    Err(e) => {
                        prop_assert_eq!(e, AllocError::NoSpace);
                        prop_assert!(avail.is_empty());
                    }
                },
                ListOp::Free(i) => {
                    // A block in use (the i-th), or, when i is odd and something was freed,
                    // a block freed earlier in this transaction again.
                    if i % 2 == 1 && !freed.is_empty() {
                        let b = freed[i as usize % freed.len()];
                        prop_assert_eq!(a.free_meta(b), Err(AllocError::BadFree(b)));
                        continue;
                    }
                    let Some(&b) = in_use.iter().nth(i as usize % in_use.len().max(1)) else {
                        continue;
                    };
                    prop_assert_eq!(a.free_meta(b), Ok(()));
                    in_use.remove(&b);
                    freed.push(b);
                }
                ListOp::Cycle => {
                    let Some(cost) = a.commit_cost(BS) else { continue };
                    if cost > avail.len() {
                        continue;
                    }
                    let (ah, fh) = a.write_lists(&mut wri, 0).unwrap();
                    wri.write_all().unwrap();
                    seed += 1;
                    wri = BlockWriter::new(cache.clone(), seed);
                    let back = ListAlloc::load(&*cache, &ah, &fh).unwrap();
                    let lists: Vec<u64> = read_list(&*cache, &ah).unwrap().blocks.iter()
                        .chain(read_list(&*cache, &fh).unwrap().blocks.iter())
                        .map(|r| r.blkno).collect();
                    prop_assert_eq!(lists.len(), cost);
                    let got_avail: BTreeSet<u64> = back.avail().iter().copied().collect();
                    let got_freed: Vec<u64> = back.freed().to_vec();
                    // The list blocks came out of avail, and are in neither list.
                    for b in &lists {
                        prop_assert!(avail.remove(b));
                        prop_assert!(!got_avail.contains(b) && !got_freed.contains(b));
                    }
                    prop_assert_eq!(&got_avail, &avail);
                    let mut want_freed = freed.clone();
                    want_freed.extend(prev_lists.iter().copied());
                    prop_assert_eq!(&got_freed, &want_freed);
                    prev_lists = lists;
                    // Next transaction: what was freed is reusable, the old list blocks
                    // are freed by the next write.
                    a = back;
                    let f = a.take_freed();
                    avail.extend(f.iter().copied());
                    a.add_avail(f);
                    freed.clear();
                }
            }
        }
    }
}
