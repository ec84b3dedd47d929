//! The btree against a `BTreeMap` model: random sequences of inserts, updates, forced
//! writes, deletes, lookups, next/prev, forward and reverse scans over random ranges,
//! commits, aborts and reopens from the device, with blocks small enough to grow trees of
//! height four and more: 1 KiB blocks through a [`Volume`], and 512-byte blocks of a tree
//! built directly on a cache, writer and [`FreeSet`].
//!
//! After every commit the committed tree must verify, hold exactly the model, and account
//! for every metadata block: the free count equals the blocks the committed tree does not
//! reference, so a leaked or doubly freed block shows. Deleting everything must give every
//! block back.
//!
//! `SCOUTFS_PROPTEST_CASES=N` runs N cases of each property test.

// Tests fail loudly: unwrapping in their helpers is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{proptest_cases, volume_of};
use proptest::prelude::*;
use scoutfs_core::alloc::list::read_list;
use scoutfs_core::alloc::FreeSet;
use scoutfs_core::block::{BlockCache, BlockWriter, Geometry};
use scoutfs_core::btree::{self, BtreeError, Item, TreeTxn};
use scoutfs_core::device::BlockDevice;
use scoutfs_core::format::{BtreeRoot, Key, ITEM_FLAG_DELETION, ITEM_FLAG_DELTA};
use scoutfs_core::volume::{OpenOptions, Volume, VolumeError};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

/// Size of the key space of the deep-tree property tests.
const KEYS: u16 = 6000;
/// Items of the test live in their own zone, apart from mkfs's root inode.
const ZONE: u8 = 50;

type Model = BTreeMap<Key, (u64, u8, Vec<u8>)>;

/// Key `i` of the key space; `third` is 7, so probes with 6 or 8 fall between keys.
fn key(i: u16) -> Key {
    probe(i, 1)
}

/// A key near key `i`: before it (`off` 0), on it (1) or after it (2). Keys spread over
/// several fields so comparisons beyond `first` matter.
fn probe(i: u16, off: u8) -> Key {
    Key::new(
        ZONE,
        u64::from(i / 16),
        (i % 4) as u8,
        u64::from(i % 16),
        6 + u64::from(off),
        (i % 3) as u8,
    )
}

fn value(k: u16, seq: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seq as usize ^ k as usize ^ i) as u8)
        .collect()
}

fn as_item(k: &Key, v: &(u64, u8, Vec<u8>)) -> Item {
    Item {
        key: *k,
        seq: v.0,
        flags: v.1,
        val: v.2.clone(),
    }
}

/// The model's items in `start..=end` (none when `start > end`), forwards or backwards.
fn model_range(model: &Model, start: &Key, end: &Key, rev: bool) -> Vec<Item> {
    if start > end {
        return Vec::new();
    }
    let r = model.range(*start..=*end).map(|(k, v)| as_item(k, v));
    if rev {
        r.rev().collect()
    } else {
        r.collect()
    }
}

/// Where the tree under test lives: one open transaction over a committed tree.
trait Store {
    fn change<T>(
        &mut self,
        f: impl FnOnce(&mut TreeTxn<'_>, &mut BtreeRoot) -> btree::Result<T>,
    ) -> btree::Result<T>;
    /// The root including the open transaction.
    fn root(&self) -> BtreeRoot;
    fn committed_root(&self) -> BtreeRoot;
    fn writer(&self) -> &BlockWriter;
    fn cache(&self) -> &BlockCache;
    fn commit(&mut self);
    fn abort(&mut self);
    /// Drop everything held in memory, the open transaction included, and open the device
    /// again.
    fn reopen(&mut self);
    /// Blocks the allocator can hand out now.
    fn free_blocks(&self) -> u64;
    /// Run the offline check on the committed volume, if there is one.
    fn check_volume(&self) {}
}

/// A filesystem root of 1 KiB blocks, through [`Volume`].
struct VolumeStore {
    meta: Arc<dyn BlockDevice>,
    data: Arc<dyn BlockDevice>,
    vol: Volume,
}

impl VolumeStore {
    fn new() -> VolumeStore {
        let (meta, data) = volume_of(32, 1, 1024);
        let vol = Volume::open(meta.clone(), data.clone(), OpenOptions::default()).unwrap();
        VolumeStore { meta, data, vol }
    }
}

impl Store for VolumeStore {
    fn change<T>(
        &mut self,
        f: impl FnOnce(&mut TreeTxn<'_>, &mut BtreeRoot) -> btree::Result<T>,
    ) -> btree::Result<T> {
        self.vol.change(f).map_err(|e| match e {
            VolumeError::Btree(e) => e,
            e => panic!("volume error {e}"),
        })
    }
    fn root(&self) -> BtreeRoot {
        self.vol.root()
    }
    fn committed_root(&self) -> BtreeRoot {
        self.vol.committed_root()
    }
    fn writer(&self) -> &BlockWriter {
        self.vol.writer()
    }
    fn cache(&self) -> &BlockCache {
        self.vol.cache()
    }
    fn commit(&mut self) {
        self.vol.commit().unwrap();
    }
    fn abort(&mut self) {
        self.vol.abort();
        assert!(!self.vol.is_poisoned());
    }
    fn reopen(&mut self) {
        self.vol =
            Volume::open(self.meta.clone(), self.data.clone(), OpenOptions::default()).unwrap();
    }
    fn check_volume(&self) {
        let r = scoutfs_core::check::check_blocks(&self.meta, &self.data).unwrap();
        // These tests use the volume's filesystem root as a bare btree: deleting the root
        // inode's item (as one does to empty the tree) leaves the inode count the super
        // records behind, which is a filesystem's concern, not the blocks'.
        let problems: Vec<_> = r
            .problems
            .iter()
            .filter(|p| !matches!(p, scoutfs_core::check::Problem::InodeCount { .. }))
            .collect();
        assert!(problems.is_empty(), "check: {problems:#?}");
    }

    /// Free blocks plus the blocks the allocators themselves occupy: all that is not
    /// the filesystem tree.
    fn free_blocks(&self) -> u64 {
        let sb = self.vol.super_block();
        let cache = self.vol.cache();
        let mut other = 0u64;
        for root in [sb.meta_alloc[0].root.into(), sb.data_alloc.root.into()] {
            btree::walk_blocks(&**cache, &root, &mut |_| {
                other += 1;
                Ok(())
            })
            .unwrap();
        }
        for head in [&sb.server_meta_avail[0], &sb.server_meta_freed[0]] {
            other += read_list(&**cache, head).unwrap().blocks.len() as u64;
        }
        self.vol.free_meta_blocks() + other
    }
}

/// A tree of 512-byte blocks built directly on a cache, a writer and a [`FreeSet`]; the
/// committed root stands in for a super block.
struct RawStore {
    dev: Arc<dyn BlockDevice>,
    geo: Geometry,
    cache: Arc<BlockCache>,
    wri: BlockWriter,
    alloc: FreeSet,
    root: BtreeRoot,
    committed: BtreeRoot,
    writers: u64,
}

impl RawStore {
    const BLOCK_SIZE: usize = 512;

    fn new() -> RawStore {
        let (dev, geo, cache) =
            common::raw_cache(Self::BLOCK_SIZE, 4, 64 << 10, 0x5c0f_5eed, 8 << 20);
        RawStore {
            wri: BlockWriter::new(cache.clone(), 0),
            alloc: FreeSet::from_used(geo.first_blkno, geo.total_blocks, []),
            dev,
            geo,
            cache,
            root: BtreeRoot::EMPTY,
            committed: BtreeRoot::EMPTY,
            writers: 0,
        }
    }

    /// Start a transaction on the committed tree, with free space rebuilt from the blocks
    /// it references (what opening a volume does).
    fn restart(&mut self) {
        let mut used = Vec::new();
        btree::walk_blocks(&*self.cache, &self.committed, &mut |b| {
            used.push(b.blk.blkno);
            Ok(())
        })
        .unwrap();
        self.alloc = FreeSet::from_used(self.geo.first_blkno, self.geo.total_blocks, used);
        self.new_writer();
        self.root = self.committed;
    }

    fn new_writer(&mut self) {
        self.writers += 1;
        self.wri = BlockWriter::new(self.cache.clone(), self.writers);
    }
}

impl Store for RawStore {
    fn change<T>(
        &mut self,
        f: impl FnOnce(&mut TreeTxn<'_>, &mut BtreeRoot) -> btree::Result<T>,
    ) -> btree::Result<T> {
        let mut t = TreeTxn {
            wri: &mut self.wri,
            alloc: &mut self.alloc,
        };
        f(&mut t, &mut self.root)
    }
    fn root(&self) -> BtreeRoot {
        self.root
    }
    fn committed_root(&self) -> BtreeRoot {
        self.committed
    }
    fn writer(&self) -> &BlockWriter {
        &self.wri
    }
    fn cache(&self) -> &BlockCache {
        &self.cache
    }
    fn commit(&mut self) {
        self.wri.write_all().unwrap();
        self.dev.flush().unwrap();
        self.alloc.commit_done();
        self.committed = self.root;
        self.new_writer();
    }
    fn abort(&mut self) {
        self.wri.discard();
        self.restart();
    }
    fn reopen(&mut self) {
        self.cache = Arc::new(BlockCache::new(self.dev.clone(), self.geo, 8 << 20));
        self.restart();
    }
    fn free_blocks(&self) -> u64 {
        self.alloc.free_blocks()
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Key index, seq, flags, value length (beyond the maximum: refused).
    Insert(u16, u64, u8, usize),
    Update(u16, u64, u8, usize),
    Force(u16, u64, u8, usize),
    Delete(u16),
    /// Force `count` consecutive keys from `start` (seq 0, no flags): grows trees quickly.
    Bulk(u16, u16, u64),
    /// Delete `count` consecutive keys from `start`: shrinks trees quickly.
    BulkDelete(u16, u16),
    Lookup(Key),
    Next(Key),
    Prev(Key),
    /// `btree::scan` or, if `rev`, `btree::scan_rev` over `start..=end`, breaking after
    /// `limit` items.
    Scan {
        start: Key,
        end: Key,
        limit: usize,
        rev: bool,
    },
    /// `btree::items` over `start..=end`.
    Items(Key, Key),
    Commit,
    Abort,
    Reopen,
}

fn flags() -> impl Strategy<Value = u8> {
    prop_oneof![Just(0u8), Just(ITEM_FLAG_DELETION), Just(ITEM_FLAG_DELTA)]
}

/// Probe keys around the key space, and now and then the ends of all keys.
fn bound(keys: u16) -> impl Strategy<Value = Key> {
    prop_oneof![
        12 => (0..keys, 0..3u8).prop_map(|(i, off)| probe(i, off)),
        1 => Just(Key::MIN),
        1 => Just(Key::MAX),
    ]
}

/// Mostly ordered ranges, some reversed (which hold nothing).
fn range(keys: u16) -> impl Strategy<Value = (Key, Key)> {
    (bound(keys), bound(keys), 0..8u8).prop_map(|(a, b, r)| {
        if r == 0 {
            (a.max(b), a.min(b))
        } else {
            (a.min(b), a.max(b))
        }
    })
}

fn op(keys: u16, max_val: usize) -> impl Strategy<Value = Op> {
    let k = 0..keys;
    let len = prop_oneof![
        30 => 0..40usize,
        10 => 0..=max_val,
        1 => max_val + 1..max_val + 64,
    ];
    let limit = prop_oneof![Just(usize::MAX), 1..24usize];
    prop_oneof![
        20 => (k.clone(), any::<u64>(), flags(), len.clone()).prop_map(|(k, s, f, l)| Op::Insert(k, s, f, l)),
        6 => (k.clone(), any::<u64>(), flags(), len.clone()).prop_map(|(k, s, f, l)| Op::Update(k, s, f, l)),
        10 => (k.clone(), any::<u64>(), flags(), len).prop_map(|(k, s, f, l)| Op::Force(k, s, f, l)),
        12 => k.clone().prop_map(Op::Delete),
        1 => (k.clone(), 1..600u16, any::<u64>()).prop_map(|(k, c, s)| Op::Bulk(k, c, s)),
        1 => (k, 1..400u16).prop_map(|(k, c)| Op::BulkDelete(k, c)),
        4 => bound(keys).prop_map(Op::Lookup),
        3 => bound(keys).prop_map(Op::Next),
        3 => bound(keys).prop_map(Op::Prev),
        3 => (range(keys), limit, any::<bool>())
            .prop_map(|((start, end), limit, rev)| Op::Scan { start, end, limit, rev }),
        1 => range(keys).prop_map(|(a, b)| Op::Items(a, b)),
        1 => Just(Op::Commit),
        1 => Just(Op::Abort),
        1 => Just(Op::Reopen),
    ]
}

/// A store and the model of what its tree holds, in the open transaction and as
/// committed.
struct Harness<S> {
    s: S,
    max_val: usize,
    model: Model,
    committed: Model,
    max_height: u8,
}

impl<S: Store> Harness<S> {
    /// The model starts with what is already there (mkfs's root inode items).
    fn new(s: S, block_size: usize) -> Harness<S> {
        let items = btree::items(s.writer(), &s.root(), &Key::MIN, &Key::MAX).unwrap();
        let model: Model = items
            .into_iter()
            .map(|it| (it.key, (it.seq, it.flags, it.val)))
            .collect();
        Harness {
            s,
            max_val: btree::max_value_len(block_size),
            committed: model.clone(),
            model,
            max_height: 0,
        }
    }

    fn want_all(&self) -> Vec<Item> {
        self.model.iter().map(|(k, v)| as_item(k, v)).collect()
    }

    /// The open transaction's tree verifies, holds exactly the model, and has no root
    /// parent with a single child.
    fn check_all(&mut self) {
        let root = self.s.root();
        let st = btree::verify(self.s.writer(), &root).unwrap();
        self.max_height = self.max_height.max(st.height);
        assert_eq!(st.items, self.model.len());
        self.check_root();
        let got = btree::items(self.s.writer(), &root, &Key::MIN, &Key::MAX).unwrap();
        assert_eq!(got, self.want_all());
    }

    /// A root parent has more than one child: inserts never make one with a single child
    /// and deletes collapse it, so the tree keeps no level it does not need.
    fn check_root(&self) {
        let root = self.s.root();
        if root.height <= 1 {
            return;
        }
        let mut children = 0;
        // The walk visits the root first: stop it there with an error of our own.
        let r = btree::walk_blocks(self.s.writer(), &root, &mut |b| {
            children = b.nr_items();
            Err(BtreeError::TooDeep)
        });
        assert!(matches!(r, Err(BtreeError::TooDeep)), "{r:?}");
        assert!(children > 1, "root of height {} has one child", root.height);
    }

    /// The committed tree verifies through the cache, holds exactly the committed model,
    /// and every metadata block it does not reference is free (it is the only tree on the
    /// device): none leaked, none counted twice.
    fn check_committed(&mut self) {
        let root = self.s.committed_root();
        let cache = self.s.cache();
        let st = btree::verify(cache, &root).unwrap();
        assert_eq!(st.items, self.committed.len());
        let got = btree::items(cache, &root, &Key::MIN, &Key::MAX).unwrap();
        let want: Vec<Item> = self.committed.iter().map(|(k, v)| as_item(k, v)).collect();
        assert_eq!(got, want);
        let geo = cache.geometry();
        let all = geo.total_blocks - geo.first_blkno;
        assert_eq!(
            self.s.free_blocks(),
            all - st.blocks as u64,
            "free blocks do not match the {} blocks of the committed tree",
            st.blocks
        );
        self.s.check_volume();
    }

    /// A put of a value longer than the maximum is refused and changes nothing.
    fn refused<T: std::fmt::Debug>(&self, r: &btree::Result<T>, len: usize) -> bool {
        if len <= self.max_val {
            return false;
        }
        assert!(
            matches!(r, Err(BtreeError::ValueTooLarge { len: l, max }) if *l == len && *max == self.max_val),
            "{r:?}"
        );
        true
    }

    fn delete(&mut self, k: u16) {
        let r = self.s.change(|t, root| t.delete(root, &key(k)));
        if self.model.remove(&key(k)).is_some() {
            r.unwrap();
        } else {
            assert!(
                matches!(r, Err(BtreeError::NotFound(nk)) if nk == key(k)),
                "{r:?}"
            );
        }
        self.check_root();
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Insert(k, seq, fl, len) => {
                let v = value(k, seq, len);
                let r = self
                    .s
                    .change(|t, root| t.insert_item(root, &key(k), seq, fl, &v));
                if self.refused(&r, len) {
                    return;
                }
                match self.model.entry(key(k)) {
                    Entry::Occupied(_) => {
                        assert!(
                            matches!(r, Err(BtreeError::Exists(ek)) if ek == key(k)),
                            "{r:?}"
                        )
                    }
                    Entry::Vacant(e) => {
                        r.unwrap();
                        e.insert((seq, fl, v));
                    }
                }
            }
            Op::Update(k, seq, fl, len) => {
                let v = value(k, seq, len);
                let r = self
                    .s
                    .change(|t, root| t.update_item(root, &key(k), seq, fl, &v));
                if self.refused(&r, len) {
                    return;
                }
                match self.model.get_mut(&key(k)) {
                    Some(slot) => {
                        r.unwrap();
                        *slot = (seq, fl, v);
                    }
                    None => assert!(
                        matches!(r, Err(BtreeError::NotFound(nk)) if nk == key(k)),
                        "{r:?}"
                    ),
                }
            }
            Op::Force(k, seq, fl, len) => {
                let v = value(k, seq, len);
                let r = self
                    .s
                    .change(|t, root| t.force_item(root, &key(k), seq, fl, &v));
                if self.refused(&r, len) {
                    return;
                }
                r.unwrap();
                self.model.insert(key(k), (seq, fl, v));
            }
            Op::Delete(k) => self.delete(k),
            Op::Bulk(start, count, seq) => {
                let end = start.saturating_add(count).min(KEYS);
                for k in start..end {
                    let v = value(k, seq, (seq as usize + k as usize) % 40);
                    self.s.change(|t, root| t.force(root, &key(k), &v)).unwrap();
                    self.model.insert(key(k), (0, 0, v));
                }
            }
            Op::BulkDelete(start, count) => {
                for k in start..start.saturating_add(count).min(KEYS) {
                    self.delete(k);
                }
            }
            Op::Lookup(k) => {
                let got = btree::lookup(self.s.writer(), &self.s.root(), &k).unwrap();
                assert_eq!(got, self.model.get(&k).map(|v| as_item(&k, v)));
            }
            Op::Next(k) => {
                let got = btree::next(self.s.writer(), &self.s.root(), &k).unwrap();
                let want = self.model.range(k..).next().map(|(k, v)| as_item(k, v));
                assert_eq!(got, want);
            }
            Op::Prev(k) => {
                let got = btree::prev(self.s.writer(), &self.s.root(), &k).unwrap();
                let want = self
                    .model
                    .range(..=k)
                    .next_back()
                    .map(|(k, v)| as_item(k, v));
                assert_eq!(got, want);
            }
            Op::Scan {
                start,
                end,
                limit,
                rev,
            } => {
                let mut got = Vec::new();
                let f = |it: btree::ItemView<'_>| {
                    got.push(it.to_item());
                    if got.len() >= limit {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                };
                let (w, root) = (self.s.writer(), self.s.root());
                if rev {
                    btree::scan_rev(w, &root, &start, &end, f).unwrap();
                } else {
                    btree::scan(w, &root, &start, &end, f).unwrap();
                }
                let mut want = model_range(&self.model, &start, &end, rev);
                want.truncate(limit);
                assert_eq!(got, want);
            }
            Op::Items(start, end) => {
                let got = btree::items(self.s.writer(), &self.s.root(), &start, &end).unwrap();
                assert_eq!(got, model_range(&self.model, &start, &end, false));
            }
            Op::Commit => {
                self.check_all();
                self.s.commit();
                self.committed = self.model.clone();
                self.check_committed();
            }
            Op::Abort => {
                self.s.abort();
                self.model = self.committed.clone();
                self.check_all();
                self.check_committed();
            }
            Op::Reopen => {
                // Reopening without a commit drops the open transaction.
                self.s.reopen();
                self.model = self.committed.clone();
                self.check_all();
                self.check_committed();
            }
        }
    }

    fn run(&mut self, ops: &[Op]) {
        for op in ops {
            self.apply(op);
        }
        self.check_all();
        self.apply(&Op::Commit);
        self.apply(&Op::Reopen);
    }
}

fn volume_harness() -> Harness<VolumeStore> {
    Harness::new(VolumeStore::new(), 1024)
}

fn raw_harness() -> Harness<RawStore> {
    Harness::new(RawStore::new(), RawStore::BLOCK_SIZE)
}

fn config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: proptest_cases(default_cases),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn btree_matches_model(ops in prop::collection::vec(op(KEYS, btree::max_value_len(1024)), 1..2500)) {
        let mut h = volume_harness();
        h.run(&ops);
    }

    #[test]
    fn small_block_btree_matches_model(
        ops in prop::collection::vec(op(KEYS, btree::max_value_len(RawStore::BLOCK_SIZE)), 1..2500),
    ) {
        let mut h = raw_harness();
        h.run(&ops);
    }

    #[test]
    fn small_key_space_churn_matches_model(ops in prop::collection::vec(op(64, btree::max_value_len(1024)), 1..1500)) {
        let mut h = volume_harness();
        h.run(&ops);
    }
}

/// A deterministic mix of forced writes, deletes and reads over `keys` keys with commits
/// and reopens: the property tests above run the same harness, and this shows it reaches
/// deep trees.
fn churn<S: Store>(h: &mut Harness<S>, ops: u64, keys: u64) {
    let mut s = 11u64;
    for n in 0..ops {
        let r = scoutfs_core::block::splitmix64(&mut s);
        let k = (r % keys) as u16;
        let op = match n % 10 {
            0..=5 => Op::Force(k, n, 0, (r >> 20) as usize % 48),
            6 | 7 => Op::Delete(k),
            8 => Op::Next(probe(k, (r >> 8) as u8 % 3)),
            _ if n % 1000 == 999 => Op::Reopen,
            _ if n % 500 == 9 => Op::Commit,
            _ => Op::Lookup(key(k)),
        };
        if matches!(op, Op::Reopen) {
            h.apply(&Op::Commit);
        }
        h.apply(&op);
    }
    h.check_all();
}

#[test]
fn model_run_reaches_height_four() {
    let mut h = volume_harness();
    churn(&mut h, 12_000, 4000);
    assert!(h.max_height >= 4, "reached height {}", h.max_height);
}

#[test]
fn small_block_model_run_reaches_height_four() {
    let mut h = raw_harness();
    churn(&mut h, 6_000, 2000);
    assert!(h.max_height >= 4, "reached height {}", h.max_height);
}

#[test]
fn values_longer_than_the_maximum_are_refused() {
    let mut h = volume_harness();
    let max = h.max_val;
    h.apply(&Op::Insert(1, 5, 0, max + 1));
    h.apply(&Op::Insert(1, 5, 0, max));
    h.apply(&Op::Update(1, 6, ITEM_FLAG_DELTA, max + 1));
    h.apply(&Op::Force(
        1,
        7,
        ITEM_FLAG_DELETION,
        usize::from(u16::MAX) + 1,
    ));
    h.apply(&Op::Force(2, 7, ITEM_FLAG_DELETION, max + 1));
    assert_eq!(h.model.get(&key(1)).map(|v| v.2.len()), Some(max));
    assert!(!h.model.contains_key(&key(2)));
    h.apply(&Op::Commit);
}

/// Deleting every item gives back every block: with mkfs's items left, the free count
/// returns to what it was right after mkfs and a first commit; with those deleted too, the
/// tree is empty (height 0) and every metadata block is free, also after a reopen.
#[test]
fn deleting_everything_gives_every_block_back() {
    let mut h = volume_harness();
    h.apply(&Op::Commit);
    let after_mkfs = h.s.free_blocks();
    let mkfs_keys: Vec<Key> = h.model.keys().copied().collect();

    let mut order: Vec<u16> = (0..KEYS).collect();
    let mut s = 5u64;
    shuffle(&mut order, &mut s);
    for (n, &k) in order.iter().enumerate() {
        let len = scoutfs_core::block::splitmix64(&mut s) as usize % (h.max_val + 1);
        h.apply(&Op::Insert(k, n as u64, 0, len));
        if n % 1500 == 1499 {
            h.apply(&Op::Commit);
        }
    }
    h.apply(&Op::Commit);
    assert!(h.max_height >= 4, "reached height {}", h.max_height);
    assert!(h.s.free_blocks() < after_mkfs);

    shuffle(&mut order, &mut s);
    for (n, &k) in order.iter().enumerate() {
        h.apply(&Op::Delete(k));
        if n % 1500 == 1499 {
            h.apply(&Op::Commit);
        }
    }
    h.apply(&Op::Commit);
    assert_eq!(h.model.len(), mkfs_keys.len());
    assert_eq!(h.s.free_blocks(), after_mkfs);

    for k in &mkfs_keys {
        h.s.change(|t, root| t.delete(root, k)).unwrap();
        h.model.remove(k);
    }
    assert_eq!(h.s.root(), BtreeRoot::EMPTY);
    h.apply(&Op::Commit);
    let geo = *h.s.cache().geometry();
    let every_block = geo.total_blocks - geo.first_blkno;
    assert_eq!(h.s.free_blocks(), every_block);
    h.apply(&Op::Reopen);
    assert_eq!(h.s.committed_root(), BtreeRoot::EMPTY);
    assert_eq!(h.s.free_blocks(), every_block);
}

fn shuffle<T>(v: &mut [T], s: &mut u64) {
    for n in (1..v.len()).rev() {
        let j = scoutfs_core::block::splitmix64(s) as usize % (n + 1);
        v.swap(n, j);
    }
}

proptest! {
    #![proptest_config(config(32))]

    /// Fill an empty tree of small blocks over several commits, then delete every item
    /// in another order, with commits between: the tree ends empty and every block is
    /// free again.
    #[test]
    fn emptied_small_block_tree_gives_every_block_back(
        (fill, drain) in prop::collection::btree_map(0..KEYS, 0..=btree::max_value_len(RawStore::BLOCK_SIZE), 1..3000)
            .prop_flat_map(|m| {
                let fill: Vec<(u16, usize)> = m.into_iter().collect();
                let keys: Vec<u16> = fill.iter().map(|f| f.0).collect();
                (Just(fill).prop_shuffle(), Just(keys).prop_shuffle())
            }),
        commit_every in 50..2000usize,
    ) {
        let mut h = raw_harness();
        let every_block = h.s.free_blocks();
        for (n, &(k, len)) in fill.iter().enumerate() {
            h.apply(&Op::Insert(k, n as u64, 0, len));
            if n % commit_every == commit_every - 1 {
                h.apply(&Op::Commit);
            }
        }
        h.apply(&Op::Commit);
        for (n, &k) in drain.iter().enumerate() {
            h.apply(&Op::Delete(k));
            if n % commit_every == commit_every - 1 {
                h.apply(&Op::Commit);
            }
        }
        prop_assert_eq!(h.s.root(), BtreeRoot::EMPTY);
        h.apply(&Op::Commit);
        prop_assert_eq!(h.s.free_blocks(), every_block);
    }
}
