//! The item cache of a mount's open transaction: its dirty items, kept in memory until the
//! commit writes them into the log btree in key order, and what writing them will cost.
//!
//! The log btree does not change while a transaction is open (changes wait here), so the
//! blocks the commit will copy are known as the items arrive: the path to the leaf each
//! key falls in. The cache counts each leaf once (it remembers the key range of every leaf
//! it has counted) and each path block once. What splits may add is bounded by the bytes
//! the items bring, at half a block per new leaf, plus one split per touched leaf.

use crate::btree::{self, Item};
use crate::format::*;
use rustc_hash::FxHashSet;
use std::collections::BTreeMap;
use std::ops::Bound;

/// Bytes an item costs in a leaf besides its value (its header and key, rounded up).
pub(super) const ITEM_COST: usize = 64;

/// Memory a dirty item costs besides its value's heap bytes: its key and entry in the
/// map's nodes (counted twice for the nodes' free slots and edges) and the value's
/// allocation header.
const ITEM_MEM: usize = 2 * (size_of::<Key>() + size_of::<Dirty>()) + 16;

/// A dirty item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Dirty {
    pub seq: u64,
    pub flags: u8,
    pub val: Vec<u8>,
}

impl Dirty {
    pub fn to_item(&self, key: Key) -> Item {
        Item {
            key,
            seq: self.seq,
            flags: self.flags,
            val: self.val.clone(),
        }
    }
}

/// The dirty items of a transaction and their cost.
#[derive(Debug, Default)]
pub(super) struct ItemCache {
    items: BTreeMap<Key, Dirty>,
    /// Bytes of the items (values plus [`ITEM_COST`] each).
    bytes: usize,
    /// Memory of the items (value capacities plus [`ITEM_MEM`] each).
    mem: usize,
    /// Leaves of the log btree counted so far: first key → last key.
    leaves: BTreeMap<Key, Key>,
    /// Blocks on the paths to those leaves.
    path_blocks: FxHashSet<u64>,
}

impl ItemCache {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn get(&self, key: &Key) -> Option<&Dirty> {
        self.items.get(key)
    }

    pub fn range(&self, start: &Key, end: &Key) -> impl DoubleEndedIterator<Item = (&Key, &Dirty)> {
        let r = if start <= end {
            Some(self.items.range(*start..=*end))
        } else {
            None
        };
        r.into_iter().flatten()
    }

    pub fn max_seq(&self) -> u64 {
        self.items.values().map(|d| d.seq).max().unwrap_or(0)
    }

    /// Count the leaf of the log btree `root` that `key` falls in, if not counted yet.
    pub fn account<R: crate::block::BlockRead + ?Sized>(
        &mut self,
        rd: &R,
        root: &BtreeRoot,
        key: &Key,
    ) -> btree::Result<()> {
        if let Some((_, hi)) = self
            .leaves
            .range((Bound::Unbounded, Bound::Included(*key)))
            .next_back()
        {
            if key <= hi {
                return Ok(());
            }
        }
        if let Some((path, lo, hi)) = btree::leaf_path(rd, root, key)? {
            self.path_blocks.extend(path);
            self.leaves.insert(lo, hi);
        }
        Ok(())
    }

    /// Put a dirty item (its key must have been [`ItemCache::account`]ed).
    /// Returns the dirty item it replaced.
    pub fn put(&mut self, key: Key, d: Dirty) -> Option<Dirty> {
        self.bytes += d.val.len() + ITEM_COST;
        self.mem += d.val.capacity() + ITEM_MEM;
        let old = self.items.insert(key, d);
        if let Some(old) = &old {
            self.bytes -= old.val.len() + ITEM_COST;
            self.mem -= old.val.capacity() + ITEM_MEM;
        }
        old
    }

    /// Memory the transaction holds and its commit will add, with blocks of
    /// `block_size` bytes: the items, the leaves and path blocks it will copy, and the
    /// new leaves their bytes fill (half full each, as splits leave them) — the blocks
    /// once each, where [`ItemCache::commit_blocks`] bounds the allocator's worst case.
    pub fn memory(&self, block_size: usize) -> usize {
        let half = (block_size.saturating_sub(BTREE_HEADER_SIZE) / 2).max(1);
        let blocks = self.path_blocks.len() + self.leaves.len() + self.bytes.div_ceil(half);
        self.mem + blocks * block_size
    }

    /// Blocks the commit may allocate to write the items into a log btree of `height`
    /// with blocks of `block_size` bytes: every counted path block copied, a sibling
    /// joined per leaf, and the new blocks of splits (a leaf per half block of bytes and
    /// one per touched leaf, parents as many again), plus a new root path.
    pub fn commit_blocks(&self, height: usize, block_size: usize) -> usize {
        let leaves = self.leaves.len();
        let half = (block_size.saturating_sub(BTREE_HEADER_SIZE) / 2).max(1);
        let splits = leaves + self.bytes.div_ceil(half);
        self.path_blocks.len() + leaves + 2 * splits + 2 * height + 4
    }

    /// Put back what `key` held before (`None`: no dirty item), undoing changes of an
    /// operation that failed. What counting the key's leaf added stays counted (an
    /// over-estimate of the commit's cost).
    pub fn restore(&mut self, key: Key, old: Option<Dirty>) {
        if let Some(cur) = self.items.remove(&key) {
            self.bytes -= cur.val.len() + ITEM_COST;
            self.mem -= cur.val.capacity() + ITEM_MEM;
        }
        if let Some(d) = old {
            self.put(key, d);
        }
    }

    /// Take the items out, leaving an empty cache.
    pub fn take(&mut self) -> BTreeMap<Key, Dirty> {
        let items = std::mem::take(&mut self.items);
        *self = ItemCache::default();
        items
    }
}
