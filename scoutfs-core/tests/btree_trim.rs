//! Trimming key ranges out of a tree (what the log merge does to its inputs) against a
//! `BTreeMap` model, with 512-byte blocks so that trees are four and more levels deep.
//!
//! After every trim the tree must verify and hold exactly the model less the range; the
//! trim must copy no more than four paths' worth of blocks (the two edge paths, the right
//! edge it may extend, the root it may collapse);
//! once the detached subtrees are freed and the transaction committed, every block the
//! tree no longer references must be free again.
//!
//! `SCOUTFS_PROPTEST_CASES=N` runs N cases.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::proptest_cases;
use proptest::prelude::*;
use scoutfs_core::alloc::FreeSet;
use scoutfs_core::block::{BlockCache, BlockWriter, Geometry};
use scoutfs_core::btree::{self, FreeProgress, TreeTxn};
use scoutfs_core::device::BlockDevice;
use scoutfs_core::format::{BtreeRoot, Key};
use std::collections::BTreeMap;
use std::sync::Arc;

fn key(i: u32) -> Key {
    Key::new(40, u64::from(i / 8), (i % 8) as u8, 7, 0, 0)
}

struct Store {
    dev: Arc<dyn BlockDevice>,
    geo: Geometry,
    cache: Arc<BlockCache>,
    wri: BlockWriter,
    alloc: FreeSet,
    root: BtreeRoot,
    writers: u64,
}

impl Store {
    fn new() -> Store {
        let (dev, geo, cache) = common::raw_cache(512, 4, 32 << 10, 0x7121, 16 << 20);
        Store {
            wri: BlockWriter::new(cache.clone(), 1),
            alloc: FreeSet::from_used(geo.first_blkno, geo.total_blocks, []),
            dev,
            geo,
            cache,
            root: BtreeRoot::EMPTY,
            writers: 1,
        }
    }

    fn txn<T>(&mut self, f: impl FnOnce(&mut TreeTxn<'_>, &mut BtreeRoot) -> T) -> T {
        let mut t = TreeTxn {
            wri: &mut self.wri,
            alloc: &mut self.alloc,
        };
        f(&mut t, &mut self.root)
    }

    fn commit(&mut self) {
        self.wri.write_all().unwrap();
        self.dev.flush().unwrap();
        self.alloc.commit_done();
        self.writers += 1;
        self.wri = BlockWriter::new(self.cache.clone(), self.writers);
    }

    fn tree_blocks(&self) -> u64 {
        let mut n = 0;
        btree::walk_blocks(&*self.cache, &self.root, &mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        n
    }

    fn items(&self) -> BTreeMap<Key, Vec<u8>> {
        btree::items(&self.wri, &self.root, &Key::MIN, &Key::MAX)
            .unwrap()
            .into_iter()
            .map(|it| (it.key, it.val))
            .collect()
    }
}

/// Build a tree of `n` random items, then trim each range in turn, checking as the
/// module comment says. Returns the heights seen.
fn run(seed: u64, n: u32, keys: u32, ranges: &[(u32, u32)]) -> u8 {
    let mut s = Store::new();
    let mut model = BTreeMap::new();
    let mut rng = seed;
    for _ in 0..n {
        let i = (scoutfs_core::block::splitmix64(&mut rng) % u64::from(keys)) as u32;
        let len = (scoutfs_core::block::splitmix64(&mut rng) % 40) as usize;
        let v = vec![i as u8; len];
        s.txn(|t, r| t.force(r, &key(i), &v)).unwrap();
        model.insert(key(i), v);
    }
    s.commit();
    let mut top = s.root.height;
    for &(a, b) in ranges {
        let (lo, hi) = (key(a.min(b)), key(a.max(b)));
        let h = s.root.height as usize;
        let mut detached = Vec::new();
        let before = s.wri.dirty_blocks();
        s.txn(|t, r| t.trim(r, &lo, &hi, &mut detached)).unwrap();
        let copied = s.wri.dirty_blocks() - before;
        // Two edge paths, the right edge extended, a collapsed root: a path each.
        assert!(
            copied <= 4 * h,
            "trim copied {copied} blocks of a tree {h} high"
        );
        model.retain(|k, _| *k < lo || *k > hi);
        btree::verify(&s.wri, &s.root).unwrap();
        assert_eq!(s.items(), model);
        for sub in &detached {
            let done = s
                .txn(|t, _| btree::free_blocks(t, sub, &Key::MIN, usize::MAX))
                .unwrap();
            assert!(matches!(done, FreeProgress::Done { .. }), "{done:?}");
        }
        s.commit();
        top = top.max(s.root.height);
        // Every block the tree does not reference is free (nothing leaked, nothing freed
        // twice: a double free would make the count too high).
        let total = s.geo.total_blocks - s.geo.first_blkno;
        assert_eq!(s.alloc.free_blocks() + s.tree_blocks(), total);
    }
    top
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(48)))]

    #[test]
    fn trimmed_trees_hold_the_model_less_the_ranges(
        seed in any::<u64>(),
        n in 1u32..3000,
        keys in 1u32..4000,
        ranges in proptest::collection::vec((0u32..4200, 0u32..4200), 1..6),
    ) {
        run(seed, n, keys, &ranges);
    }
}

/// Deep trees, ranges of every shape: a point, the first and last keys, everything, and
/// ranges ending on and between the keys of parent blocks.
#[test]
fn deep_trees_trim_every_shape_of_range() {
    let mut tallest = 0;
    for seed in 0..6 {
        let h = run(
            seed,
            4000,
            5000,
            &[(2500, 2500), (0, 10), (4990, 6000), (100, 3000), (0, 9000)],
        );
        tallest = tallest.max(h);
    }
    assert!(tallest >= 4, "trees only {tallest} high");
}
