//! Free-extent trees: free space as extents in a btree, indexed twice.
//!
//! Each free extent `(start, len)` is two items with empty values in one btree: one in the
//! [`zone::FREE_EXTENT_BLKNO`] zone keyed by start (to find and merge neighbours) and one
//! in the [`zone::FREE_EXTENT_ORDER`] zone keyed by descending length (to find large
//! extents). [`AllocRoot::total_len`] counts the free blocks. Adjacent free extents are
//! always merged, so the blkno zone never holds two extents that touch.
//!
//! Changing the tree allocates and frees metadata blocks through the [`TreeTxn`] like any
//! other btree change.

use crate::alloc::AllocError;
use crate::block::BlockRead;
use crate::btree::{self, BtreeError, Result, TreeTxn};
use crate::format::{
    free_extent_blkno_key, free_extent_order_key, zone, BtreeRoot, Key, RawAllocRoot,
};
use std::ops::ControlFlow;

/// A free-extent allocator's root, in memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocRoot {
    /// Free blocks the tree holds.
    pub total_len: u64,
    /// `ALLOC_FLAG_*`.
    pub flags: u32,
    /// The extent btree.
    pub root: BtreeRoot,
}

impl From<RawAllocRoot> for AllocRoot {
    fn from(r: RawAllocRoot) -> Self {
        AllocRoot {
            total_len: r.total_len.get(),
            flags: r.flags.get(),
            root: r.root.into(),
        }
    }
}

impl From<AllocRoot> for RawAllocRoot {
    fn from(a: AllocRoot) -> Self {
        RawAllocRoot {
            total_len: a.total_len.into(),
            flags: a.flags.into(),
            pad: 0.into(),
            root: a.root.into(),
        }
    }
}

/// A free extent: `len` blocks from `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Extent {
    /// First block.
    pub start: u64,
    /// Number of blocks (never 0).
    pub len: u64,
}

impl Extent {
    /// One past the last block.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

fn corrupt(reason: &'static str) -> BtreeError {
    BtreeError::Corrupt { blkno: 0, reason }
}

/// Decode a blkno-zone key into its extent.
fn blkno_extent(k: &Key) -> Result<Extent> {
    if k.zone != zone::FREE_EXTENT_BLKNO || k.second == 0 {
        return Err(corrupt("bad free extent key"));
    }
    if k.first.checked_add(k.second).is_none() {
        return Err(corrupt("free extent wraps around"));
    }
    Ok(Extent {
        start: k.first,
        len: k.second,
    })
}

/// The free extent with the greatest start `<= blkno`.
fn extent_at_or_before<R: BlockRead + ?Sized>(
    rd: &R,
    root: &BtreeRoot,
    blkno: u64,
) -> Result<Option<Extent>> {
    // Nothing sorts below the blkno zone in an extent tree; anything found is an extent
    // or corruption.
    btree::prev(rd, root, &free_extent_blkno_key(blkno, u64::MAX))?
        .map(|it| blkno_extent(&it.key))
        .transpose()
}

/// The free extent with the least start `>= blkno`.
fn extent_at_or_after<R: BlockRead + ?Sized>(
    rd: &R,
    root: &BtreeRoot,
    blkno: u64,
) -> Result<Option<Extent>> {
    // The by-size zone sorts after the blkno zone: reaching it means no extent is left.
    btree::next(rd, root, &free_extent_blkno_key(blkno, 0))?
        .filter(|it| it.key.zone == zone::FREE_EXTENT_BLKNO)
        .map(|it| blkno_extent(&it.key))
        .transpose()
}

fn put_extent(t: &mut TreeTxn<'_>, root: &mut BtreeRoot, e: Extent) -> Result<()> {
    t.insert(root, &free_extent_blkno_key(e.start, e.len), &[])?;
    t.insert(root, &free_extent_order_key(e.start, e.len), &[])
}

fn del_extent(t: &mut TreeTxn<'_>, root: &mut BtreeRoot, e: Extent) -> Result<()> {
    let missing = |r: BtreeError| match r {
        BtreeError::NotFound(_) => corrupt("free extent missing from one of its zones"),
        other => other,
    };
    t.delete(root, &free_extent_blkno_key(e.start, e.len))
        .map_err(missing)?;
    t.delete(root, &free_extent_order_key(e.start, e.len))
        .map_err(missing)
}

impl AllocRoot {
    /// An empty allocator.
    pub const EMPTY: AllocRoot = AllocRoot {
        total_len: 0,
        flags: 0,
        root: BtreeRoot::EMPTY,
    };

    /// Record `len` blocks from `start` as free, merging with free neighbours. Freeing a
    /// block that is already free is [`AllocError::BadFree`] and changes nothing.
    pub fn insert(&mut self, t: &mut TreeTxn<'_>, start: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let end = start.checked_add(len).ok_or(AllocError::BadFree(start))?;
        let before = extent_at_or_before(&*t.wri, &self.root, start)?;
        let after = extent_at_or_after(&*t.wri, &self.root, start)?;
        if before.is_some_and(|b| b.end() > start) || after.is_some_and(|a| a.start < end) {
            return Err(AllocError::BadFree(start).into());
        }
        let mut e = Extent { start, len };
        if let Some(b) = before.filter(|b| b.end() == start) {
            del_extent(t, &mut self.root, b)?;
            e = Extent {
                start: b.start,
                len: b.len + e.len,
            };
        }
        if let Some(a) = after.filter(|a| a.start == end) {
            del_extent(t, &mut self.root, a)?;
            e.len += a.len;
        }
        put_extent(t, &mut self.root, e)?;
        self.total_len += len;
        Ok(())
    }

    /// Remove `len` blocks from `start` from the free space; they must all be free
    /// ([`AllocError::NoSpace`] otherwise, with nothing changed).
    pub fn remove(&mut self, t: &mut TreeTxn<'_>, start: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let end = start.checked_add(len).ok_or(AllocError::NoSpace)?;
        let Some(e) = extent_at_or_before(&*t.wri, &self.root, start)? else {
            return Err(AllocError::NoSpace.into());
        };
        if e.end() < end {
            return Err(AllocError::NoSpace.into());
        }
        del_extent(t, &mut self.root, e)?;
        if e.start < start {
            put_extent(
                t,
                &mut self.root,
                Extent {
                    start: e.start,
                    len: start - e.start,
                },
            )?;
        }
        if end < e.end() {
            put_extent(
                t,
                &mut self.root,
                Extent {
                    start: end,
                    len: e.end() - end,
                },
            )?;
        }
        self.total_len = self
            .total_len
            .checked_sub(len)
            .ok_or_else(|| corrupt("free extent tree holds more than its total"))?;
        Ok(())
    }

    /// The free extent with the lowest start, if any.
    pub fn first<R: BlockRead + ?Sized>(&self, rd: &R) -> Result<Option<Extent>> {
        extent_at_or_after(rd, &self.root, 0)
    }

    /// The largest free extent (the lowest-numbered of equals), if any.
    pub fn largest<R: BlockRead + ?Sized>(&self, rd: &R) -> Result<Option<Extent>> {
        let lo = Key::new(zone::FREE_EXTENT_ORDER, 0, 0, 0, 0, 0);
        let hi = Key::new(
            zone::FREE_EXTENT_ORDER,
            u64::MAX,
            255,
            u64::MAX,
            u64::MAX,
            255,
        );
        let mut out = None;
        btree::scan(rd, &self.root, &lo, &hi, |it| {
            out = Some(Extent {
                start: it.key.second,
                len: !it.key.first,
            });
            ControlFlow::Break(())
        })?;
        match out {
            Some(e) if e.len == 0 || e.start.checked_add(e.len).is_none() => {
                Err(corrupt("bad free extent order key"))
            }
            o => Ok(o),
        }
    }

    /// The smallest free extent of at least `len` blocks (the lowest-numbered of equals).
    pub fn best_fit<R: BlockRead + ?Sized>(&self, rd: &R, len: u64) -> Result<Option<Extent>> {
        let lo = Key::new(zone::FREE_EXTENT_ORDER, 0, 0, 0, 0, 0);
        let hi = free_extent_order_key(u64::MAX, len.max(1));
        let mut best: Option<Extent> = None;
        // Descending from `hi` meets the smallest sufficient length first; of equal
        // lengths it meets the highest start first, so keep walking that length.
        btree::scan_rev(rd, &self.root, &lo, &hi, |it| {
            let e = Extent {
                start: it.key.second,
                len: !it.key.first,
            };
            match best {
                Some(b) if b.len != e.len => ControlFlow::Break(()),
                _ => {
                    best = Some(e);
                    ControlFlow::Continue(())
                }
            }
        })?;
        Ok(best)
    }

    /// Allocate up to `len` blocks: a whole extent of `len` if one exists (the smallest
    /// that fits, so large runs stay large), else the start of the largest extent.
    /// `None` when the tree is empty.
    pub fn alloc(&mut self, t: &mut TreeTxn<'_>, len: u64) -> Result<Option<Extent>> {
        if len == 0 {
            return Ok(None);
        }
        let found = match self.best_fit(&*t.wri, len)? {
            Some(e) => Some(e),
            None => self.largest(&*t.wri)?,
        };
        let Some(e) = found else {
            return Ok(None);
        };
        let got = Extent {
            start: e.start,
            len: e.len.min(len),
        };
        self.remove(t, got.start, got.len)?;
        Ok(Some(got))
    }

    /// Allocate up to `len` blocks from the lowest-numbered free extent (metadata: keeps
    /// blocks written together close together).
    pub fn alloc_low(&mut self, t: &mut TreeTxn<'_>, len: u64) -> Result<Option<Extent>> {
        let Some(e) = self.first(&*t.wri)? else {
            return Ok(None);
        };
        let got = Extent {
            start: e.start,
            len: e.len.min(len),
        };
        if got.len == 0 {
            return Ok(None);
        }
        self.remove(t, got.start, got.len)?;
        Ok(Some(got))
    }

    /// The first free extent that ends after `from` (it may start before it).
    pub fn first_ending_after<R: BlockRead + ?Sized>(
        &self,
        rd: &R,
        from: u64,
    ) -> Result<Option<Extent>> {
        if let Some(e) = extent_at_or_before(rd, &self.root, from)? {
            if e.end() > from {
                return Ok(Some(e));
            }
        }
        match from.checked_add(1) {
            Some(f) => extent_at_or_after(rd, &self.root, f),
            None => Ok(None),
        }
    }

    /// Every free extent in block order.
    pub fn extents<R: BlockRead + ?Sized>(&self, rd: &R) -> Result<Vec<Extent>> {
        let lo = free_extent_blkno_key(0, 0);
        let hi = free_extent_blkno_key(u64::MAX, u64::MAX);
        let mut out = Vec::new();
        let mut err = None;
        btree::scan(rd, &self.root, &lo, &hi, |it| match blkno_extent(&it.key) {
            Ok(e) => {
                out.push(e);
                ControlFlow::Continue(())
            }
            Err(e) => {
                err = Some(e);
                ControlFlow::Break(())
            }
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}
