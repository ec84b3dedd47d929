//! Merging items from several trees, and applying merged items to a destination tree.
//!
//! One rule resolves a key's versions wherever they meet -- a reader merging the
//! filesystem root with the log trees, a mount merging inputs, the merge applying its
//! result to the root: the versions fold in seq order ([`combine`]). A newer plain
//! version or deletion replaces what is older; a delta adds to an older delta, and after a
//! deletion (or a plain version) it starts again from nothing: deletion@10, +3@20, +2@5
//! is 3, whichever trees hold them. A total that sums to zero reads as absent and is
//! not kept in the root.
//!
//! [`MergeCursor`] reads the items of a key range from many trees at once, in key order,
//! a bounded batch per tree at a time, and resolves each key across the trees. Forest
//! reads and the log merge both stand on it.
//!
//! [`TreeTxn::merge_items`] applies resolved items to a destination (the filesystem root,
//! or a private copy of one of its subtrees): each is folded onto the destination's
//! version by the same rule, so deletions delete, deltas add to the stored total (or
//! replace it, after a deletion: [`ITEM_FLAG_RESET`]), a zero total is deleted, other
//! items replace older versions. The destination never stores a deletion item. It stops
//! early, returning the first key it did not apply, when the transaction has dirtied its
//! limit of blocks, when its allocator runs low, or when a subtree's root would have to
//! grow or collapse.
//!
//! Nothing stored in the root is counted twice: the log merge removes the inputs' items
//! of a range ([`TreeTxn::trim`]) in the commit that splices the range's merged subtree
//! into the root, so no reader ever sees both.

use super::node::{item_bytes, Node};
use super::{low_water, BtreeError, Item, ItemView, Put, PutMode, Result, TreeTxn};
use crate::block::{BlockGuard, BlockRead, BlockWriter};
use crate::format::{BtreeRoot, Key, ITEM_FLAG_DELETION, ITEM_FLAG_DELTA};
use std::sync::Arc;

/// Add delta values: little-endian i64 lanes, lane by lane (a shorter value counts as
/// zeros in its missing lanes; a trailing partial lane is ignored).
pub fn add_deltas(a: &[u8], b: &[u8]) -> Vec<u8> {
    let lanes = a.len().max(b.len()) / 8;
    let lane = |v: &[u8], i: usize| -> i64 {
        v.get(i * 8..i * 8 + 8)
            .and_then(|s| s.try_into().ok())
            .map(i64::from_le_bytes)
            .unwrap_or(0)
    };
    (0..lanes)
        .flat_map(|i| lane(a, i).wrapping_add(lane(b, i)).to_le_bytes())
        .collect()
}

/// Whether a delta value adds nothing.
pub fn delta_is_zero(v: &[u8]) -> bool {
    v.iter().all(|&b| b == 0)
}

/// Flag of a resolved delta that follows a deletion or a plain version in seq order: it
/// replaces what is older instead of adding to it. Only in memory, between resolving
/// and applying; never written to a block (blocks refuse unknown flags).
pub const ITEM_FLAG_RESET: u8 = 0x80;

/// Resolve the versions of one key as a reader sees them: `base` is the filesystem root's
/// version, `logs` the log trees'; all fold in seq order ([`combine`]; equal seqs in the
/// order given, the root's first). `None` if there is no version; a deletion is returned
/// as such, a total as a plain delta item (its value, which may be zero).
pub fn resolve(base: Option<Item>, logs: Vec<Item>) -> Option<Item> {
    let mut all: Vec<Item> = base.into_iter().chain(logs).collect();
    all.sort_by_key(|it| it.seq);
    let mut out = fold(all)?;
    out.flags &= !ITEM_FLAG_RESET;
    Some(out)
}

/// Fold versions already in seq order.
fn fold(versions: Vec<Item>) -> Option<Item> {
    versions.into_iter().reduce(combine)
}

/// Combine two versions of one key: the newer replaces the older, except that a delta
/// adds to an older delta, and is marked [`ITEM_FLAG_RESET`] when it follows a deletion or
/// a plain version (it does not add to what is older than those).
pub fn combine(older: Item, newer: Item) -> Item {
    let (older, newer) = if older.seq > newer.seq {
        (newer, older)
    } else {
        (older, newer)
    };
    if newer.flags & ITEM_FLAG_DELTA == 0 {
        return newer;
    }
    if older.flags & ITEM_FLAG_DELTA != 0 {
        return Item {
            key: newer.key,
            seq: newer.seq,
            flags: ITEM_FLAG_DELTA | (older.flags & ITEM_FLAG_RESET),
            val: add_deltas(&older.val, &newer.val),
        };
    }
    Item {
        flags: ITEM_FLAG_DELTA | ITEM_FLAG_RESET,
        ..newer
    }
}

/// An item copied out of a dirty leaf; its value is in the cursor's value buffer.
#[derive(Clone, Copy, Debug)]
struct Entry {
    key: Key,
    seq: u64,
    flags: u8,
    off: u32,
    len: u32,
}

/// The items of one tree in a key range, a leaf at a time: a clean (cached) leaf is
/// read in place, the items of a dirty one (a writer's own tree) are copied out.
#[derive(Debug)]
struct TreeCursor {
    root: BtreeRoot,
    /// The next key to read from.
    next: Option<Key>,
    end: Key,
    /// The clean leaf being read, if any (else the copied items are).
    blk: Option<Arc<[u8]>>,
    ents: Vec<Entry>,
    vals: Vec<u8>,
    /// The index of the head item, and the index after the last item in range.
    pos: usize,
    stop: usize,
}

impl TreeCursor {
    fn new(root: BtreeRoot, start: Key, end: Key) -> TreeCursor {
        TreeCursor {
            root,
            next: if root.is_empty() || start > end {
                None
            } else {
                Some(start)
            },
            end,
            blk: None,
            ents: Vec::new(),
            vals: Vec::new(),
            pos: 0,
            stop: 0,
        }
    }

    /// The key of the head item.
    #[inline]
    fn head_key(&self) -> Option<Key> {
        if self.pos >= self.stop {
            return None;
        }
        match &self.blk {
            Some(b) => Some(Node::new(b).key(self.pos)),
            None => self.ents.get(self.pos).map(|e| e.key),
        }
    }

    /// The head item.
    fn head(&self) -> Option<ItemView<'_>> {
        if self.pos >= self.stop {
            return None;
        }
        match &self.blk {
            Some(b) => Some(super::view(&Node::new(b), self.pos)),
            None => self.ents.get(self.pos).map(|e| {
                let (o, l) = (e.off as usize, e.len as usize);
                ItemView {
                    key: e.key,
                    seq: e.seq,
                    flags: e.flags,
                    val: self.vals.get(o..o + l).unwrap_or(&[]),
                }
            }),
        }
    }

    /// Make sure the head holds an item, unless the tree is exhausted.
    fn fill<R: BlockRead + ?Sized>(&mut self, rd: &R) -> Result<()> {
        while self.pos >= self.stop {
            self.blk = None;
            self.ents.clear();
            self.vals.clear();
            self.pos = 0;
            self.stop = 0;
            let Some(from) = self.next.filter(|f| *f <= self.end) else {
                self.next = None;
                return Ok(());
            };
            let Some(leaf) = super::find_leaf(rd, &self.root, &from)? else {
                self.next = None;
                return Ok(());
            };
            let n = Node::new(&leaf.blk);
            let pos = n.lower_bound(&from);
            let stop = match n.search(&self.end) {
                Ok(i) => i + 1,
                Err(i) => i,
            }
            .max(pos);
            // Items past the end in this leaf, or no keys after it: the tree is done.
            self.next = if stop < n.nr() || leaf.hi >= self.end {
                None
            } else {
                leaf.hi.next()
            };
            match leaf.blk {
                BlockGuard::Clean(b) => {
                    self.blk = Some(b);
                    self.pos = pos;
                    self.stop = stop;
                }
                BlockGuard::Dirty(b) => {
                    let n = Node::new(b);
                    for i in pos..stop {
                        let it = super::view(&n, i);
                        self.ents.push(Entry {
                            key: it.key,
                            seq: it.seq,
                            flags: it.flags,
                            off: self.vals.len() as u32,
                            len: it.val.len() as u32,
                        });
                        self.vals.extend_from_slice(it.val);
                    }
                    self.stop = self.ents.len();
                }
            }
        }
        Ok(())
    }
}

/// A key and a tree index packed into two integers that compare as `(key, index)` do.
type Packed = (u128, u128);

/// The head of an exhausted tree: after every real head.
const EXHAUSTED: Packed = (u128::MAX, u128::MAX);

/// Bits of a [`Packed`] head that hold the tree index.
const INDEX_BITS: u32 = 40;

/// Pack `key` (216 bits in field order) and tree index `i` (below 2^40) into a [`Packed`].
#[inline]
fn pack(k: &Key, i: usize) -> Packed {
    let a = (u128::from(k.zone) << 120)
        | (u128::from(k.first) << 56)
        | (u128::from(k.ty) << 48)
        | u128::from(k.second >> 16);
    let b = (u128::from(k.second & 0xffff) << 112)
        | (u128::from(k.third) << 48)
        | (u128::from(k.fourth) << INDEX_BITS)
        | (i as u128 & ((1u128 << INDEX_BITS) - 1));
    (a, b)
}

/// Whether packed head `x` comes before `y`.
#[inline(always)]
fn before(x: &Packed, y: &Packed) -> bool {
    if x.0 != y.0 {
        x.0 < y.0
    } else {
        x.1 < y.1
    }
}

/// Whether two packed heads hold the same key.
#[inline]
fn same_key(x: Packed, y: Packed) -> bool {
    x.0 == y.0 && x.1 >> INDEX_BITS == y.1 >> INDEX_BITS
}

/// Merged, resolved items of a key range across several trees (see the module comment).
///
/// [`MergeCursor::advance`] moves to the next key and [`MergeCursor::current`] borrows
/// its resolved item from the cursor's buffers; [`MergeCursor::next_item`] and
/// [`MergeCursor::next_versions`] return owned copies.
#[derive(Debug)]
pub struct MergeCursor {
    trees: Vec<TreeCursor>,
    /// The key at the head of each tree with the tree's index, packed for comparing
    /// ([`pack`]); [`EXHAUSTED`] once the tree is exhausted (or while its head is the
    /// current key's version).
    heads: Vec<Packed>,
    /// A tournament over the heads: leaves at `width..2 * width` (leaf `width + i` is tree
    /// `i`), each inner node the index of the least head below it (least key, then least
    /// tree index; exhausted trees lose). Node 1 is the winner.
    tour: Vec<usize>,
    width: usize,
    started: bool,
    /// The trees holding a version of the current key, in tree order.
    same: Vec<usize>,
    /// The current key's resolved item when it has several versions.
    combined: Option<Item>,
}

impl MergeCursor {
    /// A cursor over `start..=end` of `roots`.
    pub fn new(roots: &[BtreeRoot], start: Key, end: Key) -> MergeCursor {
        MergeCursor {
            trees: roots
                .iter()
                .map(|&root| TreeCursor::new(root, start, end))
                .collect(),
            heads: vec![EXHAUSTED; roots.len()],
            tour: Vec::new(),
            width: roots.len().next_power_of_two(),
            started: false,
            same: Vec::new(),
            combined: None,
        }
    }

    /// Whether tree `a`'s head comes before tree `b`'s.
    #[inline]
    fn beats(&self, a: usize, b: usize) -> bool {
        match (self.heads.get(a), self.heads.get(b)) {
            (Some(x), Some(y)) => before(x, y),
            (Some(_), None) => true,
            _ => false,
        }
    }

    /// The least head of the trees other than `w`, the tournament's winner: the least of
    /// the winners of the subtrees beside `w`'s path.
    fn runner_up(&self, w: usize) -> Packed {
        let mut best = EXHAUSTED;
        let mut n = self.width + w;
        while n > 1 {
            let s = self.tour.get(n ^ 1).copied().unwrap_or(usize::MAX);
            if let Some(h) = self.heads.get(s) {
                if before(h, &best) {
                    best = *h;
                }
            }
            n /= 2;
        }
        best
    }

    /// Replay the tournament from tree `i`'s leaf up after its head changed.
    fn replay(&mut self, i: usize) {
        let mut n = (self.width + i) / 2;
        while n >= 1 {
            let (l, r) = (
                self.tour.get(2 * n).copied().unwrap_or(usize::MAX),
                self.tour.get(2 * n + 1).copied().unwrap_or(usize::MAX),
            );
            let w = if self.beats(r, l) { r } else { l };
            if let Some(slot) = self.tour.get_mut(n) {
                *slot = w;
            }
            n /= 2;
        }
    }

    /// Move to the next key (every tree's version of the current one is consumed). False
    /// when every tree is exhausted.
    pub fn advance<R: BlockRead + ?Sized>(&mut self, rd: &R) -> Result<bool> {
        if !self.started {
            self.started = true;
            for (i, t) in self.trees.iter_mut().enumerate() {
                t.fill(rd)?;
                if let Some(h) = self.heads.get_mut(i) {
                    *h = t.head_key().map_or(EXHAUSTED, |k| pack(&k, i));
                }
            }
            let w = self.width;
            self.tour = vec![usize::MAX; 2 * w];
            for i in 0..w {
                if let Some(slot) = self.tour.get_mut(w + i) {
                    *slot = i;
                }
            }
            for n in (1..w).rev() {
                let (l, r) = (
                    self.tour.get(2 * n).copied().unwrap_or(usize::MAX),
                    self.tour.get(2 * n + 1).copied().unwrap_or(usize::MAX),
                );
                let win = if self.beats(r, l) { r } else { l };
                if let Some(slot) = self.tour.get_mut(n) {
                    *slot = win;
                }
            }
        } else {
            for j in 0..self.same.len() {
                let i = self.same.get(j).copied().unwrap_or(usize::MAX);
                let Some(t) = self.trees.get_mut(i) else {
                    continue;
                };
                t.pos += 1;
                if t.pos >= t.stop {
                    t.fill(rd)?;
                }
                if let Some(h) = self.heads.get_mut(i) {
                    *h = t.head_key().map_or(EXHAUSTED, |k| pack(&k, i));
                }
                self.replay(i);
            }
        }
        self.same.clear();
        self.combined = None;
        // The winner, then every other tree whose head has the same key (in tree order:
        // ties go to the lesser index), each taken out of the tournament until consumed.
        let w = self.tour.get(1).copied().unwrap_or(0);
        let h = self.heads.get(w).copied().unwrap_or(EXHAUSTED);
        if h == EXHAUSTED {
            return Ok(false);
        }
        if !same_key(h, self.runner_up(w)) {
            // The common case: one version, left in the tournament until consumed.
            self.same.push(w);
            return Ok(true);
        }
        let mut key = None;
        loop {
            let w = self.tour.get(1).copied().unwrap_or(0);
            let h = self.heads.get(w).copied().unwrap_or(EXHAUSTED);
            if h == EXHAUSTED || key.is_some_and(|key| !same_key(key, h)) {
                break;
            }
            key = Some(h);
            self.same.push(w);
            if let Some(h) = self.heads.get_mut(w) {
                *h = EXHAUSTED;
            }
            self.replay(w);
        }
        if self.same.is_empty() {
            return Ok(false);
        }
        if self.same.len() > 1 {
            // Folded in seq order (equal seqs in tree order, as the versions were taken).
            let mut vs = Vec::with_capacity(self.same.len());
            for &i in &self.same {
                let it = self
                    .trees
                    .get(i)
                    .and_then(|t| t.head().map(|v| v.to_item()))
                    .ok_or(BtreeError::Corrupt {
                        blkno: 0,
                        reason: "merge cursor lost an item",
                    })?;
                vs.push(it);
            }
            vs.sort_by_key(|it| it.seq);
            self.combined = fold(vs);
        }
        Ok(true)
    }

    /// The resolved item of the current key, deletions included (the caller decides what a
    /// deletion means to it); `None` before the first [`MergeCursor::advance`] or after
    /// the last.
    pub fn current(&self) -> Option<ItemView<'_>> {
        if let Some(c) = &self.combined {
            return Some(ItemView {
                key: c.key,
                seq: c.seq,
                flags: c.flags,
                val: &c.val,
            });
        }
        let t = self.trees.get(*self.same.first()?)?;
        t.head()
    }

    /// How many of the trees hold a version of the current key (0 before the first
    /// [`MergeCursor::advance`] or after the last).
    pub fn versions(&self) -> usize {
        self.same.len()
    }

    /// Every version of the next key, with the index of the tree each came from (in the
    /// order of the roots given). `None` when every tree is exhausted.
    pub fn next_versions<R: BlockRead + ?Sized>(
        &mut self,
        rd: &R,
    ) -> Result<Option<Vec<(usize, Item)>>> {
        if !self.advance(rd)? {
            return Ok(None);
        }
        Ok(Some(
            self.same
                .iter()
                .filter_map(|&i| {
                    let t = self.trees.get(i)?;
                    t.head().map(|v| (i, v.to_item()))
                })
                .collect(),
        ))
    }

    /// The next resolved item, deletions included (the caller decides what a deletion
    /// means to it). `None` when every tree is exhausted.
    pub fn next_item<R: BlockRead + ?Sized>(&mut self, rd: &R) -> Result<Option<Item>> {
        if !self.advance(rd)? {
            return Ok(None);
        }
        Ok(self.current().map(|v| v.to_item()))
    }
}

/// How a merge into a destination ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeEnd {
    /// Every item was applied.
    Done,
    /// Stopped before this key (dirty limit, allocator low, or the subtree's root full);
    /// the caller continues from it later.
    Remain(Key),
}

/// Limits of one [`TreeTxn::merge_items`] call.
#[derive(Clone, Copy, Debug)]
pub struct MergeLimits {
    /// Stop once this many more blocks are dirty in the transaction.
    pub dirty_blocks: usize,
    /// Stop when the allocator holds fewer free blocks than this.
    pub alloc_low: usize,
    /// The destination is a subtree's parent block (its level must not change).
    pub subtree: bool,
    /// Apply every item with its own descent from the root, as single puts and deletes
    /// do, instead of applying runs of items that fall in one leaf with one descent (the
    /// reference the runs are tested against; slower).
    pub per_item_descent: bool,
}

/// Where a merge's items come from.
trait Source {
    /// Move to the next item; false when there is none.
    fn advance(&mut self, rd: &BlockWriter) -> Result<bool>;
    /// The item moved to.
    fn current(&self) -> Option<ItemView<'_>>;
}

impl Source for MergeCursor {
    fn advance(&mut self, rd: &BlockWriter) -> Result<bool> {
        MergeCursor::advance(self, rd)
    }
    fn current(&self) -> Option<ItemView<'_>> {
        MergeCursor::current(self)
    }
}

/// Owned items handed over one by one by a closure.
struct FnSource<'f> {
    next: &'f mut dyn FnMut() -> Result<Option<Item>>,
    cur: Option<Item>,
}

impl Source for FnSource<'_> {
    fn advance(&mut self, _rd: &BlockWriter) -> Result<bool> {
        self.cur = (self.next)()?;
        Ok(self.cur.is_some())
    }
    fn current(&self) -> Option<ItemView<'_>> {
        self.cur.as_ref().map(|c| ItemView {
            key: c.key,
            seq: c.seq,
            flags: c.flags,
            val: &c.val,
        })
    }
}

/// The dirty leaf the last item went into, and the last key it covers: following items
/// up to that key go straight into it while it has room.
#[derive(Clone, Copy)]
struct OpenLeaf {
    blk: u64,
    hi: Key,
}

impl TreeTxn<'_> {
    /// Apply `next()`'s items, in key order, to `root` (see the module comment).
    pub fn merge_items(
        &mut self,
        root: &mut BtreeRoot,
        limits: MergeLimits,
        next: &mut dyn FnMut() -> Result<Option<Item>>,
    ) -> Result<MergeEnd> {
        self.merge_from(root, limits, &mut FnSource { next, cur: None })
    }

    /// Apply the resolved items of `cur` to `root` (see the module comment). The cursor
    /// reads its trees through this transaction's writer; they must be trees this merge
    /// does not change.
    pub fn merge_cursor(
        &mut self,
        root: &mut BtreeRoot,
        limits: MergeLimits,
        cur: &mut MergeCursor,
    ) -> Result<MergeEnd> {
        self.merge_from(root, limits, cur)
    }

    fn merge_from<S: Source>(
        &mut self,
        root: &mut BtreeRoot,
        limits: MergeLimits,
        src: &mut S,
    ) -> Result<MergeEnd> {
        let start_dirty = self.wri.dirty_blocks();
        let mut open: Option<OpenLeaf> = None;
        while src.advance(self.wri)? {
            let Some(it) = src.current() else {
                break;
            };
            if self.wri.dirty_blocks().saturating_sub(start_dirty) >= limits.dirty_blocks
                || self.alloc.remaining() < limits.alloc_low
            {
                return Ok(MergeEnd::Remain(it.key));
            }
            if let Some(ol) = open.filter(|ol| it.key <= ol.hi) {
                if self.apply_in_leaf(ol.blk, &it)? {
                    continue;
                }
            }
            open = None;
            match self.apply_merged(root, &it, limits.subtree) {
                Ok(leaf) if !limits.per_item_descent => open = leaf,
                Ok(_) => {}
                Err(BtreeError::SubtreeFull) => return Ok(MergeEnd::Remain(it.key)),
                Err(e) => return Err(e),
            }
        }
        Ok(MergeEnd::Done)
    }

    /// Apply a merged item with a descent from the root; returns the leaf a plain version
    /// went into.
    fn apply_merged(
        &mut self,
        root: &mut BtreeRoot,
        it: &ItemView<'_>,
        subtree: bool,
    ) -> Result<Option<OpenLeaf>> {
        if it.flags & ITEM_FLAG_DELETION != 0 {
            return match self.delete_in(root, &it.key, subtree) {
                Err(BtreeError::NotFound(_)) | Ok(()) => Ok(None),
                Err(e) => Err(e),
            };
        }
        if it.flags & ITEM_FLAG_DELTA == 0 {
            // A plain version replaces an older one in a single descent.
            let put = Put::new(PutMode::ForceNewer, it.seq, 0, it.val);
            let (blk, hi) = self.put_walk(root, &it.key, put, subtree)?;
            return Ok(Some(OpenLeaf { blk, hi }));
        }
        let existing = super::lookup(&*self.wri, root, &it.key)?;
        match delta_put(existing.as_ref().map(Item::view), it) {
            DeltaPut::Keep => {}
            DeltaPut::Put(val) => {
                self.force_item_in(root, &it.key, it.seq, ITEM_FLAG_DELTA, &val, subtree, false)?
            }
            DeltaPut::Delete => match self.delete_in(root, &it.key, subtree) {
                Err(BtreeError::NotFound(_)) | Ok(()) => {}
                Err(e) => return Err(e),
            },
        }
        Ok(None)
    }

    /// Apply a merged item to the dirty leaf `blk`, which covers its key, if that needs no
    /// split or join there; false (nothing changed) if it does.
    fn apply_in_leaf(&mut self, blk: u64, it: &ItemView<'_>) -> Result<bool> {
        let low = low_water(self.bs());
        let b = self.wri.get_mut(blk)?;
        let n = Node::new(b);
        let found = n.search_append(&it.key);
        if it.flags & ITEM_FLAG_DELETION != 0 {
            return Ok(match found {
                Err(_) => true,
                // Only while the leaf stays above the low water mark: a descent would
                // have joined it, or dropped it once empty.
                Ok(i) if n.payload().saturating_sub(item_bytes(n.val(i).len())) >= low => {
                    super::node::delete_at(b, i);
                    true
                }
                Ok(_) => false,
            });
        }
        let existing = found.ok().map(|i| super::view(&n, i));
        let (seq, flags, val): (u64, u8, std::borrow::Cow<'_, [u8]>) =
            if it.flags & ITEM_FLAG_DELTA == 0 {
                if existing.is_some_and(|e| e.seq > it.seq) {
                    return Ok(true);
                }
                (it.seq, 0, it.val.into())
            } else {
                match (delta_put(existing, it), found) {
                    (DeltaPut::Keep, _) | (DeltaPut::Delete, Err(_)) => return Ok(true),
                    (DeltaPut::Put(v), _) => (it.seq, ITEM_FLAG_DELTA, v.into()),
                    (DeltaPut::Delete, Ok(i)) => {
                        // As a deletion: only while the leaf stays above the low water
                        // mark (else the descent joins it).
                        if n.payload().saturating_sub(item_bytes(n.val(i).len())) < low {
                            return Ok(false);
                        }
                        super::node::delete_at(b, i);
                        return Ok(true);
                    }
                }
            };
        if val.len() > super::max_value_len(b.len()) || n.free() < item_bytes(val.len()) {
            return Ok(false);
        }
        let done = match found {
            Err(i) => super::node::insert_at(b, i, &it.key, seq, flags, &val),
            Ok(i) => super::node::update_at(b, i, seq, flags, &val),
        };
        if !done {
            return Err(
                crate::block::BlockError::Internal("leaf has no room for a merged item").into(),
            );
        }
        Ok(true)
    }
}

/// What applying a merged total does to the destination's version of its key.
enum DeltaPut {
    /// Nothing: the stored version is newer (a replay).
    Keep,
    /// Store this total.
    Put(Vec<u8>),
    /// The total is zero (or there is none): the key goes.
    Delete,
}

/// What a merged delta item `it` makes of `existing`, the destination's version: the two
/// fold as every reader folds them ([`combine`]), and a total that sums to zero is not
/// kept.
fn delta_put(existing: Option<ItemView<'_>>, it: &ItemView<'_>) -> DeltaPut {
    let val = match existing {
        // Inputs are newer than the destination; an older input (a replay) changes
        // nothing.
        Some(e) if e.seq > it.seq => return DeltaPut::Keep,
        Some(e) if e.flags & ITEM_FLAG_DELTA != 0 && it.flags & ITEM_FLAG_RESET == 0 => {
            add_deltas(e.val, it.val)
        }
        _ => it.val.to_vec(),
    };
    if delta_is_zero(&val) {
        DeltaPut::Delete
    } else {
        DeltaPut::Put(val)
    }
}

#[cfg(test)]
mod tests {
    use super::{before, pack, same_key, EXHAUSTED};
    use crate::format::Key;
    use proptest::prelude::*;

    fn key() -> impl Strategy<Value = Key> {
        // Few distinct values per field, so that ties on leading fields are common.
        let small = prop_oneof![Just(0u64), Just(1), Just(u64::MAX), any::<u64>()];
        let byte = prop_oneof![Just(0u8), Just(1), Just(255), any::<u8>()];
        (
            byte.clone(),
            small.clone(),
            byte.clone(),
            small.clone(),
            small,
            byte,
        )
            .prop_map(|(zone, first, ty, second, third, fourth)| Key {
                zone,
                first,
                ty,
                second,
                third,
                fourth,
            })
    }

    proptest! {
        /// Packed heads order as `(key, tree index)` does, and tell equal keys apart
        /// whatever the index; every real head comes before an exhausted tree's.
        #[test]
        fn packed_heads_order_like_keys(a in key(), b in key(), i in 0..1usize << 20, j in 0..1usize << 20) {
            let (pa, pb) = (pack(&a, i), pack(&b, j));
            prop_assert_eq!(before(&pa, &pb), (a, i) < (b, j));
            prop_assert_eq!(same_key(pa, pb), a == b);
            prop_assert!(before(&pa, &EXHAUSTED));
        }
    }
}
