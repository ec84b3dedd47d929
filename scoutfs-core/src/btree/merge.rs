//! Merging items from several trees, and applying merged items to a destination tree.
//!
//! [`MergeCursor`] reads the items of a key range from many trees at once, in key order,
//! a bounded batch per tree at a time, and resolves each key across the trees: the
//! version with the greatest seq wins (a deletion item that wins hides the key), and
//! delta items are summed (seq = the greatest of those combined). Forest reads and the
//! log merge both stand on it.
//!
//! [`TreeTxn::merge_items`] applies resolved items to a destination (the filesystem root,
//! or a private copy of one of its subtrees): deletions delete, deltas add to the stored
//! value (a zero sum is kept, as a marker of the seq merged, see `apply_merged`), other
//! items replace older versions. The
//! destination never stores a deletion item. It stops early, returning the first key it
//! did not apply, when the transaction has dirtied its limit of blocks, when its allocator
//! runs low, or when a subtree's root would have to grow or collapse.

use super::{BtreeError, Item, Result, TreeTxn};
use crate::block::BlockRead;
use crate::format::{BtreeRoot, Key, ITEM_FLAG_DELETION, ITEM_FLAG_DELTA};
use std::collections::VecDeque;
use std::ops::ControlFlow;

/// Items read from one tree per refill.
const BATCH: usize = 256;

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

/// Resolve the versions of one key as a reader sees them: `base` is the filesystem root's
/// version, `logs` the log trees'. Log versions no newer than the base have been merged
/// into it already (a merge in progress leaves its inputs in place until it ends) and are
/// skipped; the rest fold in seq order (newer wins, deltas sum). `None` if nothing is
/// left; a deletion is returned as such.
pub fn resolve(base: Option<Item>, mut logs: Vec<Item>) -> Option<Item> {
    let floor = base.as_ref().map(|b| b.seq);
    logs.retain(|it| floor.is_none_or(|f| it.seq > f));
    logs.sort_by_key(|it| it.seq);
    let mut out = base;
    for it in logs {
        out = Some(match out {
            None => it,
            Some(prev) => combine(prev, it),
        });
    }
    out
}

/// Combine two versions of one key: the newer wins, except that deltas sum.
pub fn combine(older: Item, newer: Item) -> Item {
    let (older, newer) = if older.seq > newer.seq {
        (newer, older)
    } else {
        (older, newer)
    };
    if older.flags & ITEM_FLAG_DELTA != 0 && newer.flags & ITEM_FLAG_DELTA != 0 {
        return Item {
            key: newer.key,
            seq: newer.seq,
            flags: ITEM_FLAG_DELTA,
            val: add_deltas(&older.val, &newer.val),
        };
    }
    newer
}

/// The items of one tree in a key range, read a batch at a time.
#[derive(Debug)]
struct TreeCursor {
    root: BtreeRoot,
    /// The next key to read from.
    next: Option<Key>,
    end: Key,
    buf: VecDeque<Item>,
}

impl TreeCursor {
    fn fill<R: BlockRead + ?Sized>(&mut self, rd: &R) -> Result<()> {
        while self.buf.is_empty() {
            let Some(from) = self.next else {
                return Ok(());
            };
            let mut last = None;
            let buf = &mut self.buf;
            super::scan(rd, &self.root, &from, &self.end, |it| {
                last = Some(it.key);
                buf.push_back(it.to_item());
                if buf.len() >= BATCH {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            self.next = match last {
                Some(k) if self.buf.len() >= BATCH && k < self.end => k.next(),
                _ => None,
            };
        }
        Ok(())
    }
}

/// Merged, resolved items of a key range across several trees (see the module comment).
#[derive(Debug)]
pub struct MergeCursor {
    trees: Vec<TreeCursor>,
}

impl MergeCursor {
    /// A cursor over `start..=end` of `roots`.
    pub fn new(roots: &[BtreeRoot], start: Key, end: Key) -> MergeCursor {
        MergeCursor {
            trees: roots
                .iter()
                .map(|&root| TreeCursor {
                    root,
                    next: if root.is_empty() || start > end {
                        None
                    } else {
                        Some(start)
                    },
                    end,
                    buf: VecDeque::new(),
                })
                .collect(),
        }
    }

    /// Every version of the next key, with the index of the tree each came from (in the
    /// order of the roots given). `None` when every tree is exhausted.
    pub fn next_versions<R: BlockRead + ?Sized>(
        &mut self,
        rd: &R,
    ) -> Result<Option<Vec<(usize, Item)>>> {
        let mut least: Option<Key> = None;
        for t in &mut self.trees {
            t.fill(rd)?;
            if let Some(it) = t.buf.front() {
                if least.is_none_or(|l| it.key < l) {
                    least = Some(it.key);
                }
            }
        }
        let Some(key) = least else {
            return Ok(None);
        };
        let mut out = Vec::new();
        for (i, t) in self.trees.iter_mut().enumerate() {
            if t.buf.front().is_some_and(|it| it.key == key) {
                if let Some(it) = t.buf.pop_front() {
                    out.push((i, it));
                }
            }
        }
        Ok(Some(out))
    }

    /// The next resolved item, deletions included (the caller decides what a deletion
    /// means to it). `None` when every tree is exhausted.
    pub fn next_item<R: BlockRead + ?Sized>(&mut self, rd: &R) -> Result<Option<Item>> {
        let mut least: Option<Key> = None;
        for t in &mut self.trees {
            t.fill(rd)?;
            if let Some(it) = t.buf.front() {
                if least.is_none_or(|l| it.key < l) {
                    least = Some(it.key);
                }
            }
        }
        let Some(key) = least else {
            return Ok(None);
        };
        let mut out: Option<Item> = None;
        for t in &mut self.trees {
            if t.buf.front().is_some_and(|it| it.key == key) {
                let it = t.buf.pop_front().ok_or(BtreeError::Corrupt {
                    blkno: 0,
                    reason: "merge cursor lost an item",
                })?;
                out = Some(match out {
                    None => it,
                    Some(prev) => combine(prev, it),
                });
            }
        }
        Ok(out)
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
}

impl TreeTxn<'_> {
    /// Apply `next()`'s items, in key order, to `root` (see the module comment).
    pub fn merge_items(
        &mut self,
        root: &mut BtreeRoot,
        limits: MergeLimits,
        next: &mut dyn FnMut() -> Result<Option<Item>>,
    ) -> Result<MergeEnd> {
        let start_dirty = self.wri.dirty_blocks();
        let mut pending = next()?;
        while let Some(it) = pending.take() {
            if self.wri.dirty_blocks().saturating_sub(start_dirty) >= limits.dirty_blocks
                || self.alloc.remaining() < limits.alloc_low
            {
                return Ok(MergeEnd::Remain(it.key));
            }
            match self.apply_merged(root, &it, limits.subtree) {
                Ok(()) => {}
                Err(BtreeError::SubtreeFull) => return Ok(MergeEnd::Remain(it.key)),
                Err(e) => return Err(e),
            }
            pending = next()?;
        }
        Ok(MergeEnd::Done)
    }

    fn apply_merged(&mut self, root: &mut BtreeRoot, it: &Item, subtree: bool) -> Result<()> {
        if it.flags & ITEM_FLAG_DELETION != 0 {
            return match self.delete_in(root, &it.key, subtree) {
                Err(BtreeError::NotFound(_)) => Ok(()),
                other => other,
            };
        }
        if it.flags & ITEM_FLAG_DELTA == 0 {
            // A plain version replaces an older one in a single descent.
            return self.force_item_in(root, &it.key, it.seq, 0, &it.val, subtree, true);
        }
        let existing = super::lookup(&*self.wri, root, &it.key)?;
        let (seq, flags, val) = match existing {
            // Inputs are newer than the destination; an older input (a replay) changes
            // nothing.
            Some(e) if e.seq > it.seq => return Ok(()),
            // A total that sums to zero stays (or is written) as a zero delta carrying the
            // seq: readers skip log versions no newer than the root's, and the inputs stay
            // readable until the merge ends (and leave one by one), so without it they
            // would be counted again.
            Some(e) if it.flags & ITEM_FLAG_DELTA != 0 && e.flags & ITEM_FLAG_DELTA != 0 => {
                (it.seq, ITEM_FLAG_DELTA, add_deltas(&e.val, &it.val))
            }
            _ => (it.seq, it.flags & ITEM_FLAG_DELTA, it.val.clone()),
        };
        self.force_item_in(root, &it.key, seq, flags, &val, subtree, false)
    }
}
