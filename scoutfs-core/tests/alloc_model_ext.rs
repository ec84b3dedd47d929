//! The free-extent tree against a model, from the other side: block numbers in a low
//! window and at the top of the `u64` range, and every outcome reached (the list allocator
//! and a simpler extent model are in `alloc_model.rs`).
//!
//! - The free-extent tree ([`AllocRoot`]) against a set of free block numbers: random frees
//!   of free and non-free runs, removes of free and partly free runs, `alloc`, `alloc_low`,
//!   `best_fit`, commits, aborts and reopens through a fresh cache. Block numbers come from
//!   a low window and from a window at the top of the `u64` range, so runs that would wrap
//!   are tried too. After every step the tree holds exactly the model's maximal runs, twice
//!   (by blkno and by size), and nothing else; a refused change leaves the root, the dirty
//!   blocks and the metadata allocator untouched. After every commit the metadata blocks
//!   balance: each one is either referenced by the committed tree or free, never both.
//!   Metadata blocks are 512 bytes, so trees grow three and four levels deep.
//!
//! `PROPTEST_CASES=N` (or `SCOUTFS_PROPTEST_CASES=N`) runs N cases of each property test.

// Tests fail loudly: unwrapping in their helpers is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::proptest_cases;
use proptest::prelude::*;
use scoutfs_core::alloc::{AllocError, AllocRoot, Extent, FreeSet, MetaAllocator};
use scoutfs_core::block::{splitmix64, BlockCache, BlockError, BlockWriter, Geometry};
use scoutfs_core::btree::{self, BtreeError, TreeTxn};
use scoutfs_core::device::{BlockDevice, MemDevice};
use scoutfs_core::format::{free_extent_blkno_key, free_extent_order_key, Key, RawAllocRoot};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Metadata block size: small, so trees grow deep.
const BS: usize = 512;
const FIRST_BLKNO: u64 = 8;
const TOTAL_BLOCKS: u64 = 4096;

/// Free block numbers of the extent model live in `0..LOW_END` and in `HIGH_START..`
/// (the last, `u64::MAX`, can never be free: an extent ending past it would wrap).
const LOW_END: u64 = 4096;
const HIGH_START: u64 = u64::MAX - 256;
/// Longest run the model frees (it holds free blocks one by one).
const MAX_MODEL_RUN: u64 = 1 << 16;

fn geometry(fsid: u64) -> Geometry {
    Geometry {
        block_size: BS,
        fsid,
        first_blkno: FIRST_BLKNO,
        total_blocks: TOTAL_BLOCKS,
    }
}

fn new_cache(dev: &Arc<dyn BlockDevice>, geo: Geometry) -> Arc<BlockCache> {
    Arc::new(BlockCache::new(dev.clone(), geo, 8 << 20))
}

fn config(default_cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: proptest_cases(default_cases),
        ..ProptestConfig::default()
    }
}

/// The allocator error inside a btree result, if that is what it is.
fn alloc_err<T>(r: &btree::Result<T>) -> Option<&AllocError> {
    match r {
        Err(BtreeError::Block(BlockError::Alloc(e))) => Some(e),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// The free-extent tree.

/// The free blocks, one by one: the obviously right answer.
type ExtentModel = BTreeSet<u64>;

/// The model's maximal runs of free blocks, in block order.
fn runs(m: &ExtentModel) -> Vec<Extent> {
    let mut out: Vec<Extent> = Vec::new();
    for &b in m {
        match out.last_mut() {
            Some(e) if e.end() == b => e.len += 1,
            _ => out.push(Extent { start: b, len: 1 }),
        }
    }
    out
}

/// The runs of blocks in the two windows that are not free (the last block excluded).
fn gaps(m: &ExtentModel) -> Vec<Extent> {
    let mut out = Vec::new();
    for (lo, hi) in [(0, LOW_END), (HIGH_START, u64::MAX)] {
        let mut at = lo;
        for &b in m.range(lo..hi) {
            if b > at {
                out.push(Extent {
                    start: at,
                    len: b - at,
                });
            }
            at = b + 1;
        }
        if hi > at {
            out.push(Extent {
                start: at,
                len: hi - at,
            });
        }
    }
    out
}

/// The extent `alloc(len)` must take: the smallest free run of at least `len` blocks (the
/// lowest of equals), else the largest run (the lowest of equals); `len` blocks of it at
/// most, from its start.
fn model_alloc(m: &ExtentModel, len: u64) -> Option<Extent> {
    if len == 0 {
        return None;
    }
    let rs = runs(m);
    let e = rs
        .iter()
        .filter(|e| e.len >= len)
        .min_by_key(|e| (e.len, e.start))
        .or_else(|| {
            rs.iter()
                .min_by_key(|e| (std::cmp::Reverse(e.len), e.start))
        })?;
    Some(Extent {
        start: e.start,
        len: e.len.min(len),
    })
}

fn model_best_fit(m: &ExtentModel, len: u64) -> Option<Extent> {
    runs(m)
        .into_iter()
        .filter(|e| e.len >= len.max(1))
        .min_by_key(|e| (e.len, e.start))
}

fn model_largest(m: &ExtentModel) -> Option<Extent> {
    runs(m)
        .into_iter()
        .min_by_key(|e| (std::cmp::Reverse(e.len), e.start))
}

#[derive(Clone, Debug)]
enum ExtOp {
    /// Free a run inside the `pick`th run of non-free blocks (succeeds).
    FreeGap {
        pick: u64,
        off: u64,
        len: u64,
    },
    /// Free the whole `pick`th run of non-free blocks (merging with both neighbours).
    FillGap(u64),
    /// Free a run that covers a block of the `pick`th free run (refused).
    FreeOverlap {
        pick: u64,
        off: u64,
        back: u64,
        len: u64,
    },
    /// Free `n` small runs in random gaps: grows the tree quickly.
    Scatter {
        seed: u64,
        n: u8,
    },
    /// Remove a run inside the `pick`th free run (succeeds: all of it, an end or a middle).
    RemoveFree {
        pick: u64,
        off: u64,
        len: u64,
    },
    /// Remove a run that covers a block of the `pick`th gap (refused).
    RemoveNotFree {
        pick: u64,
        off: u64,
        back: u64,
        len: u64,
    },
    /// Free or remove any run: the model says what must happen.
    Free(u64, u64),
    Remove(u64, u64),
    Alloc(u64),
    AllocLow(u64),
    BestFit(u64),
    Commit,
    Abort,
    Reopen,
}

/// A block number in one of the windows, now and then right at an edge.
fn blkno() -> impl Strategy<Value = u64> {
    prop_oneof![
        8 => 0..LOW_END + 16,
        3 => HIGH_START - 16..=u64::MAX,
        1 => Just(0u64),
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
    ]
}

/// Run lengths: mostly short, some long, now and then 0 or huge.
fn run_len() -> impl Strategy<Value = u64> {
    prop_oneof![
        16 => 1..8u64,
        6 => 1..80u64,
        1 => 80..2000u64,
        1 => Just(0u64),
        1 => Just(u64::MAX),
    ]
}

fn ext_op() -> impl Strategy<Value = ExtOp> {
    let pick = any::<u64>();
    prop_oneof![
        14 => (pick, any::<u64>(), run_len()).prop_map(|(pick, off, len)| ExtOp::FreeGap { pick, off, len }),
        2 => pick.prop_map(ExtOp::FillGap),
        3 => (pick, any::<u64>(), 0..8u64, run_len())
            .prop_map(|(pick, off, back, len)| ExtOp::FreeOverlap { pick, off, back, len }),
        2 => (any::<u64>(), 1..48u8).prop_map(|(seed, n)| ExtOp::Scatter { seed, n }),
        6 => (pick, any::<u64>(), run_len()).prop_map(|(pick, off, len)| ExtOp::RemoveFree { pick, off, len }),
        3 => (pick, any::<u64>(), 0..8u64, run_len())
            .prop_map(|(pick, off, back, len)| ExtOp::RemoveNotFree { pick, off, back, len }),
        3 => (blkno(), run_len()).prop_map(|(s, l)| ExtOp::Free(s, l)),
        3 => (blkno(), run_len()).prop_map(|(s, l)| ExtOp::Remove(s, l)),
        6 => run_len().prop_map(ExtOp::Alloc),
        3 => run_len().prop_map(ExtOp::AllocLow),
        2 => run_len().prop_map(ExtOp::BestFit),
        2 => Just(ExtOp::Commit),
        1 => Just(ExtOp::Abort),
        1 => Just(ExtOp::Reopen),
    ]
}

/// What happened to the changes tried, so a run can show it reached every path.
#[derive(Clone, Copy, Debug, Default)]
struct Outcomes {
    /// Frees that merged with no free neighbour, with the one before, the one after, both.
    freed: [u64; 4],
    bad_free: u64,
    /// Removes of a whole extent, of its end, of its start, of its middle (a split).
    removed: [u64; 4],
    no_space: u64,
    /// Allocations that took a whole best-fitting extent, part of one, part of the largest.
    alloc_whole: u64,
    alloc_part: u64,
    alloc_largest: u64,
    commits: u64,
    reopens: u64,
}

/// An extent tree on a device of 512-byte metadata blocks allocated from a [`FreeSet`];
/// the committed [`RawAllocRoot`] stands in for a super block.
struct ExtentHarness {
    dev: Arc<dyn BlockDevice>,
    geo: Geometry,
    cache: Arc<BlockCache>,
    wri: BlockWriter,
    meta: FreeSet,
    alloc: AllocRoot,
    committed: RawAllocRoot,
    writers: u64,
    model: ExtentModel,
    committed_model: ExtentModel,
    max_height: u8,
    outcomes: Outcomes,
}

impl ExtentHarness {
    fn new() -> ExtentHarness {
        let geo = geometry(0xa110_c8ed);
        let dev: Arc<dyn BlockDevice> =
            Arc::new(MemDevice::new(geo.total_blocks * geo.block_size as u64));
        let cache = new_cache(&dev, geo);
        let mut h = ExtentHarness {
            wri: BlockWriter::new(cache.clone(), 0),
            meta: FreeSet::from_used(geo.first_blkno, geo.total_blocks, []),
            dev,
            geo,
            cache,
            alloc: AllocRoot::EMPTY,
            committed: AllocRoot::EMPTY.into(),
            writers: 0,
            model: ExtentModel::new(),
            committed_model: ExtentModel::new(),
            max_height: 0,
            outcomes: Outcomes::default(),
        };
        h.check();
        h.check_meta_blocks();
        h
    }

    fn change<T>(
        &mut self,
        f: impl FnOnce(&mut AllocRoot, &mut TreeTxn<'_>) -> btree::Result<T>,
    ) -> btree::Result<T> {
        let mut t = TreeTxn {
            wri: &mut self.wri,
            alloc: &mut self.meta,
        };
        f(&mut self.alloc, &mut t)
    }

    /// What a refused change must leave as it was.
    fn state(&self) -> (AllocRoot, usize, u64, usize) {
        (
            self.alloc,
            self.wri.dirty_blocks(),
            self.meta.free_blocks(),
            self.meta.pending_blocks(),
        )
    }

    fn new_writer(&mut self) {
        self.writers += 1;
        self.wri = BlockWriter::new(self.cache.clone(), self.writers);
    }

    /// Start a transaction on the committed tree, with the metadata free space rebuilt
    /// from the blocks it references (what opening a volume does).
    fn restart(&mut self) {
        let mut used = Vec::new();
        let root = AllocRoot::from(self.committed);
        btree::walk_blocks(&*self.cache, &root.root, &mut |b| {
            used.push(b.blk.blkno);
            Ok(())
        })
        .unwrap();
        self.meta = FreeSet::from_used(self.geo.first_blkno, self.geo.total_blocks, used);
        self.alloc = root;
        self.model = self.committed_model.clone();
        self.new_writer();
    }

    fn free(&mut self, start: u64, len: u64) {
        let ok = match start.checked_add(len) {
            Some(end) => self.model.range(start..end).next().is_none(),
            None => false,
        };
        if ok && len > MAX_MODEL_RUN {
            // Right, but more than the model can hold block by block.
            return;
        }
        let before = self.state();
        let r = self.change(|a, t| a.insert(t, start, len));
        if ok {
            r.unwrap();
            if len > 0 {
                let before = start
                    .checked_sub(1)
                    .is_some_and(|b| self.model.contains(&b));
                let after = self.model.contains(&(start + len));
                self.outcomes.freed[usize::from(before) + 2 * usize::from(after)] += 1;
                self.model.extend(start..start + len);
            } else {
                assert_eq!(self.state(), before, "freeing nothing changed something");
            }
        } else {
            assert_eq!(alloc_err(&r), Some(&AllocError::BadFree(start)), "{r:?}");
            assert_eq!(self.state(), before, "a refused free changed something");
            self.outcomes.bad_free += 1;
        }
    }

    fn remove(&mut self, start: u64, len: u64) {
        let before = self.state();
        let r = self.change(|a, t| a.remove(t, start, len));
        let ok = match start.checked_add(len) {
            Some(end) => self.model.range(start..end).count() as u64 == len,
            None => false,
        };
        if ok {
            r.unwrap();
            if len > 0 {
                let before = start
                    .checked_sub(1)
                    .is_some_and(|b| self.model.contains(&b));
                let after = self.model.contains(&(start + len));
                self.outcomes.removed[usize::from(before) + 2 * usize::from(after)] += 1;
                for b in start..start + len {
                    self.model.remove(&b);
                }
            } else {
                assert_eq!(self.state(), before, "removing nothing changed something");
            }
        } else {
            assert_eq!(alloc_err(&r), Some(&AllocError::NoSpace), "{r:?}");
            assert_eq!(self.state(), before, "a refused remove changed something");
            self.outcomes.no_space += 1;
        }
    }

    fn took(&mut self, got: Option<Extent>) {
        if let Some(e) = got {
            for b in e.start..e.end() {
                self.model.remove(&b);
            }
        }
    }

    fn apply(&mut self, op: &ExtOp) {
        match *op {
            ExtOp::FreeGap { pick, off, len } => {
                let gs = gaps(&self.model);
                if gs.is_empty() {
                    return;
                }
                let g = gs[(pick % gs.len() as u64) as usize];
                let off = off % g.len;
                let len = len.clamp(1, g.len - off);
                self.free(g.start + off, len);
            }
            ExtOp::FillGap(pick) => {
                let gs = gaps(&self.model);
                if let Some(g) = gs.get((pick % gs.len().max(1) as u64) as usize) {
                    self.free(g.start, g.len);
                }
            }
            ExtOp::FreeOverlap {
                pick,
                off,
                back,
                len,
            } => {
                let rs = runs(&self.model);
                if rs.is_empty() {
                    return;
                }
                let e = rs[(pick % rs.len() as u64) as usize];
                let b = e.start + off % e.len;
                let start = b.saturating_sub(back);
                self.free(start, (b - start).saturating_add(len.max(1)));
            }
            ExtOp::Scatter { mut seed, n } => {
                for _ in 0..n {
                    let gs = gaps(&self.model);
                    if gs.is_empty() {
                        break;
                    }
                    let g = gs[(splitmix64(&mut seed) % gs.len() as u64) as usize];
                    // Leave a block between runs so they stay separate extents.
                    let off = splitmix64(&mut seed) % g.len;
                    let len = (1 + splitmix64(&mut seed) % 4).min(g.len - off);
                    if off > 0 && off + len < g.len {
                        self.free(g.start + off, len);
                    }
                }
            }
            ExtOp::RemoveFree { pick, off, len } => {
                let rs = runs(&self.model);
                if rs.is_empty() {
                    return;
                }
                let e = rs[(pick % rs.len() as u64) as usize];
                let off = off % e.len;
                self.remove(e.start + off, len.clamp(1, e.len - off));
            }
            ExtOp::RemoveNotFree {
                pick,
                off,
                back,
                len,
            } => {
                let gs = gaps(&self.model);
                if gs.is_empty() {
                    return;
                }
                let g = gs[(pick % gs.len() as u64) as usize];
                let b = g.start + off % g.len;
                let start = b.saturating_sub(back);
                self.remove(start, (b - start).saturating_add(len.max(1)));
            }
            ExtOp::Free(start, len) => self.free(start, len),
            ExtOp::Remove(start, len) => self.remove(start, len),
            ExtOp::Alloc(len) => {
                let want = model_alloc(&self.model, len);
                let best = model_best_fit(&self.model, len);
                let got = self.change(|a, t| a.alloc(t, len)).unwrap();
                assert_eq!(got, want, "alloc({len})");
                match (got, best) {
                    (Some(g), Some(b)) if g.len == b.len => self.outcomes.alloc_whole += 1,
                    (Some(_), Some(_)) => self.outcomes.alloc_part += 1,
                    (Some(_), None) => self.outcomes.alloc_largest += 1,
                    _ => {}
                }
                self.took(got);
            }
            ExtOp::AllocLow(len) => {
                let want = runs(&self.model).first().and_then(|e| {
                    (len > 0).then(|| Extent {
                        start: e.start,
                        len: e.len.min(len),
                    })
                });
                let got = self.change(|a, t| a.alloc_low(t, len)).unwrap();
                assert_eq!(got, want, "alloc_low({len})");
                self.took(got);
            }
            ExtOp::BestFit(len) => {
                let got = self.alloc.best_fit(&self.wri, len).unwrap();
                assert_eq!(got, model_best_fit(&self.model, len), "best_fit({len})");
            }
            ExtOp::Commit => self.commit(),
            ExtOp::Abort => {
                self.wri.discard();
                self.restart();
            }
            ExtOp::Reopen => {
                // Reopening drops the open transaction and everything cached.
                self.cache = new_cache(&self.dev, self.geo);
                self.restart();
                self.outcomes.reopens += 1;
            }
        }
        self.check();
    }

    fn commit(&mut self) {
        self.wri.write_all().unwrap();
        self.dev.flush().unwrap();
        self.meta.commit_done();
        self.committed = self.alloc.into();
        self.committed_model = self.model.clone();
        self.new_writer();
        self.check_meta_blocks();
        self.outcomes.commits += 1;
    }

    /// The open transaction's tree holds the model's runs, each as a blkno item and an
    /// order item with empty values, and nothing else; the root's count and the lookups
    /// agree with the model.
    fn check(&mut self) {
        let a = self.alloc;
        let st = btree::verify(&self.wri, &a.root).unwrap();
        self.max_height = self.max_height.max(st.height);
        let rs = runs(&self.model);
        assert_eq!(a.extents(&self.wri).unwrap(), rs);
        assert_eq!(a.total_len, self.model.len() as u64);
        assert_eq!(a.first(&self.wri).unwrap(), rs.first().copied());
        assert_eq!(a.largest(&self.wri).unwrap(), model_largest(&self.model));

        let items = btree::items(&self.wri, &a.root, &Key::MIN, &Key::MAX).unwrap();
        assert!(items.iter().all(|it| it.val.is_empty()), "{items:?}");
        let got: Vec<Key> = items.iter().map(|it| it.key).collect();
        let mut by_size: Vec<Key> = rs
            .iter()
            .map(|e| free_extent_order_key(e.start, e.len))
            .collect();
        by_size.sort_unstable();
        let want: Vec<Key> = rs
            .iter()
            .map(|e| free_extent_blkno_key(e.start, e.len))
            .chain(by_size)
            .collect();
        assert_eq!(
            got, want,
            "the tree's items are not the twins of the model's runs"
        );
    }

    /// After a commit every metadata block is either referenced by the committed tree
    /// (once) or free: none leaked, none both used and free.
    fn check_meta_blocks(&self) {
        assert_eq!(self.meta.pending_blocks(), 0);
        let root = AllocRoot::from(self.committed);
        // The walk fails on a block referenced twice.
        let mut used = BTreeSet::new();
        btree::walk_blocks(&*self.cache, &root.root, &mut |b| {
            used.insert(b.blk.blkno);
            Ok(())
        })
        .unwrap();
        let mut drain = self.meta.clone();
        let mut free = BTreeSet::new();
        while let Ok(b) = drain.alloc_meta() {
            assert!(free.insert(b), "block {b} free twice");
        }
        assert_eq!(free.len() as u64, self.meta.free_blocks());
        assert!(used.is_disjoint(&free), "blocks both used and free");
        let all: BTreeSet<u64> = (self.geo.first_blkno..self.geo.total_blocks).collect();
        let both: BTreeSet<u64> = used.union(&free).copied().collect();
        assert_eq!(both, all, "blocks leaked or outside the device");
    }

    /// Run `ops`, then commit, reopen, allocate everything and commit: the tree ends
    /// empty and every metadata block is free again.
    fn run(&mut self, ops: &[ExtOp]) {
        for op in ops {
            self.apply(op);
        }
        self.apply(&ExtOp::Commit);
        self.apply(&ExtOp::Reopen);
        while !self.model.is_empty() {
            self.apply(&ExtOp::Alloc(u64::MAX));
        }
        assert_eq!(self.alloc, AllocRoot::EMPTY);
        self.apply(&ExtOp::Commit);
        assert_eq!(
            self.meta.free_blocks(),
            self.geo.total_blocks - self.geo.first_blkno
        );
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn extent_tree_matches_model(ops in prop::collection::vec(ext_op(), 1..400)) {
        let mut h = ExtentHarness::new();
        h.run(&ops);
    }
}

/// A long deterministic mix drawn from the same operations: it must reach every outcome
/// and grow the tree at least three levels deep.
#[test]
fn long_extent_run_reaches_height_three_and_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let ops: Vec<ExtOp> = (0..3000)
        .map(|_| ext_op().new_tree(&mut runner).unwrap().current())
        .collect();
    let mut h = ExtentHarness::new();
    h.run(&ops);
    let o = h.outcomes;
    eprintln!("max height {}, {o:?}", h.max_height);
    assert!(h.max_height >= 3, "reached height {}", h.max_height);
    for (what, n) in [
        ("frees between non-free blocks", o.freed[0]),
        ("frees after a free extent", o.freed[1]),
        ("frees before a free extent", o.freed[2]),
        ("frees joining two free extents", o.freed[3]),
        ("refused frees", o.bad_free),
        ("removes of whole extents", o.removed[0]),
        ("removes of an extent's end", o.removed[1]),
        ("removes of an extent's start", o.removed[2]),
        ("removes splitting an extent", o.removed[3]),
        ("refused removes", o.no_space),
        ("whole best fits", o.alloc_whole),
        ("partial best fits", o.alloc_part),
        ("allocations from the largest", o.alloc_largest),
        ("commits", o.commits),
        ("reopens", o.reopens),
    ] {
        assert!(n > 0, "no {what}: {o:?}");
    }
}
