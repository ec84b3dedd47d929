//! The offline consistency check (`scoutfs check`) and offline space report (`scoutfs df`).
//!
//! [`check`] walks every btree and allocator the super references, verifies every block
//! on the way (the cache checks crc, magic, fsid, blkno and seq), and proves that every
//! metadata block and every data block is exactly one of: referenced once, or free once.
//! What it finds is a list of [`Problem`]s; it keeps going past a damaged tree so one bad
//! block does not hide the rest.
//!
//! What counts, for metadata blocks: *referenced* are the blocks of every btree (the
//! super's trees, each mount's log btree and data extent trees, the extent trees
//! themselves), the alloc list blocks and bloom blocks; *free* are the extents of the
//! metadata extent trees and the block numbers held in alloc lists (the server's and each
//! mount's). For data blocks: *referenced* are the extents of data extent items -- for a
//! key present in several trees (the filesystem root and the mounts' log trees), the
//! version with the greatest seq, unless it is a deletion -- and *free* are the extents of
//! the data extent trees (the server's pool and each mount's avail and freed trees).
//!
//! Space is tracked in bitmaps (a bit per block per state), so memory is a few bits per
//! block of the volume whatever its contents.

use crate::alloc::list::read_list;
use crate::alloc::{AllocRoot, Extent};
use crate::block::{BlockCache, BlockRead};
use crate::btree::{self, BtreeError};
use crate::device::BlockDevice;
use crate::format::*;
use crate::server::AllocLimits;
use crate::volume::{self, VolumeError};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use zerocopy::FromBytes;

/// Problems kept in a report; further ones are only counted.
pub const MAX_PROBLEMS: usize = 10_000;

/// Which device a block number belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// The metadata device (metadata block numbers).
    Meta,
    /// The data device (4 KiB data block numbers).
    Data,
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Space::Meta => "metadata",
            Space::Data => "data",
        })
    }
}

/// A run of blocks: `len` from `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// First block.
    pub start: u64,
    /// Number of blocks.
    pub len: u64,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.len == 1 {
            write!(f, "block {}", self.start)
        } else {
            write!(
                f,
                "blocks {}..={} ({})",
                self.start,
                self.start + self.len - 1,
                self.len
            )
        }
    }
}

/// Something wrong with a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A block (or a whole structure from it down) could not be read: a bad checksum, a
    /// stale or foreign block, inconsistent contents, or a reference out of range.
    Unreadable {
        /// The structure being walked.
        what: String,
        /// What the reader said.
        error: String,
    },
    /// Blocks neither referenced nor free.
    Leaked {
        /// Device.
        space: Space,
        /// The blocks.
        run: Run,
    },
    /// Blocks referenced more than once.
    ReferencedTwice {
        /// Device.
        space: Space,
        /// The blocks.
        run: Run,
    },
    /// Blocks both free and referenced.
    FreeAndReferenced {
        /// Device.
        space: Space,
        /// The blocks.
        run: Run,
    },
    /// Blocks free twice (in two allocators, or twice in one).
    FreeTwice {
        /// Device.
        space: Space,
        /// The blocks.
        run: Run,
    },
    /// A structure names blocks outside its device.
    OutOfRange {
        /// Device.
        space: Space,
        /// The structure.
        what: String,
        /// The blocks.
        run: Run,
    },
    /// A free-extent tree that is inconsistent in itself.
    ExtentTree {
        /// Which tree.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A record that does not decode or does not fit.
    BadRecord {
        /// Where.
        what: String,
        /// What is wrong.
        reason: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreadable { what, error } => write!(f, "{what}: unreadable: {error}"),
            Problem::Leaked { space, run } => {
                write!(f, "{space} {run} leaked: neither referenced nor free")
            }
            Problem::ReferencedTwice { space, run } => {
                write!(f, "{space} {run} referenced more than once")
            }
            Problem::FreeAndReferenced { space, run } => {
                write!(f, "{space} {run} free and referenced")
            }
            Problem::FreeTwice { space, run } => write!(f, "{space} {run} free more than once"),
            Problem::OutOfRange { space, what, run } => {
                write!(f, "{what}: {space} {run} outside the device")
            }
            Problem::ExtentTree { what, reason } => write!(f, "{what}: {reason}"),
            Problem::BadRecord { what, reason } => write!(f, "{what}: {reason}"),
        }
    }
}

/// Used and free blocks of one device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpaceCounts {
    /// Blocks that may hold metadata or data.
    pub total: u64,
    /// Blocks referenced.
    pub referenced: u64,
    /// Blocks free.
    pub free: u64,
}

/// What [`check`] found.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// The problems, at most [`MAX_PROBLEMS`].
    pub problems: Vec<Problem>,
    /// All problems found, kept or not.
    pub problem_count: u64,
    /// Metadata blocks.
    pub meta: SpaceCounts,
    /// Data blocks.
    pub data: SpaceCounts,
    /// Metadata blocks read and verified.
    pub blocks_read: u64,
}

impl CheckReport {
    /// Whether the volume is consistent.
    pub fn is_clean(&self) -> bool {
        self.problem_count == 0
    }

    fn push(&mut self, p: Problem) {
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }
}

/// A bit per block.
#[derive(Clone, Debug)]
struct Bitmap(Vec<u64>);

impl Bitmap {
    fn new(bits: u64) -> Bitmap {
        Bitmap(vec![0; bits.div_ceil(64) as usize])
    }

    /// Call `f(word index, mask)` for the words covering `start..start+len`.
    fn words(start: u64, len: u64, mut f: impl FnMut(usize, u64)) {
        let end = start + len;
        let mut b = start;
        while b < end {
            let w = b / 64;
            let lo = b % 64;
            let hi = (end - w * 64).min(64);
            let mask = if hi - lo == 64 {
                u64::MAX
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            f(w as usize, mask);
            b = (w + 1) * 64;
        }
    }

    fn count(&self) -> u64 {
        self.0.iter().map(|w| w.count_ones() as u64).sum()
    }

    /// Runs of set bits, offset by `base`.
    fn runs(&self, base: u64, bits: u64) -> Vec<Run> {
        let mut out: Vec<Run> = Vec::new();
        for (wi, &w) in self.0.iter().enumerate() {
            if w == 0 {
                continue;
            }
            for bit in 0..64 {
                let b = wi as u64 * 64 + bit;
                if b >= bits || w & (1 << bit) == 0 {
                    continue;
                }
                match out.last_mut() {
                    Some(r) if r.start + r.len == base + b => r.len += 1,
                    _ => out.push(Run {
                        start: base + b,
                        len: 1,
                    }),
                }
            }
        }
        out
    }
}

/// The state of every block of one device.
struct Blocks {
    space: Space,
    first: u64,
    bits: u64,
    used: Bitmap,
    free: Bitmap,
    used_twice: Bitmap,
    free_twice: Bitmap,
    both: Bitmap,
}

impl Blocks {
    fn new(space: Space, first: u64, end: u64) -> Blocks {
        let bits = end.saturating_sub(first);
        Blocks {
            space,
            first,
            bits,
            used: Bitmap::new(bits),
            free: Bitmap::new(bits),
            used_twice: Bitmap::new(bits),
            free_twice: Bitmap::new(bits),
            both: Bitmap::new(bits),
        }
    }

    /// Mark a run referenced (`free == false`) or free; `Err` if it leaves the device.
    fn mark(&mut self, start: u64, len: u64, free: bool) -> Result<(), Run> {
        let run = Run { start, len };
        let end = start.checked_add(len).ok_or(run)?;
        if len == 0 || start < self.first || end > self.first + self.bits {
            return Err(run);
        }
        let (used, freeb) = (&mut self.used.0, &mut self.free.0);
        let (ut, ft, both) = (
            &mut self.used_twice.0,
            &mut self.free_twice.0,
            &mut self.both.0,
        );
        Bitmap::words(start - self.first, len, |w, m| {
            if free {
                ft[w] |= freeb[w] & m;
                both[w] |= used[w] & m;
                freeb[w] |= m;
            } else {
                ut[w] |= used[w] & m;
                both[w] |= freeb[w] & m;
                used[w] |= m;
            }
        });
        Ok(())
    }

    fn finish(&self, report: &mut CheckReport) -> SpaceCounts {
        let space = self.space;
        for run in self.used_twice.runs(self.first, self.bits) {
            report.push(Problem::ReferencedTwice { space, run });
        }
        for run in self.free_twice.runs(self.first, self.bits) {
            report.push(Problem::FreeTwice { space, run });
        }
        for run in self.both.runs(self.first, self.bits) {
            report.push(Problem::FreeAndReferenced { space, run });
        }
        let mut leaked = Bitmap::new(self.bits);
        for (i, w) in leaked.0.iter_mut().enumerate() {
            *w = !(self.used.0[i] | self.free.0[i]);
        }
        for run in leaked.runs(self.first, self.bits) {
            report.push(Problem::Leaked { space, run });
        }
        let mut free_only = self.free.clone();
        for (i, w) in free_only.0.iter_mut().enumerate() {
            *w &= !self.used.0[i];
        }
        SpaceCounts {
            total: self.bits,
            referenced: self.used.count(),
            free: free_only.count(),
        }
    }
}

/// A data extent item's latest version seen so far.
struct DataItem {
    seq: u64,
    deletion: bool,
    extent: Option<Extent>,
    what: String,
}

/// How far a check has got, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Metadata blocks read so far.
    pub blocks_read: u64,
    /// Metadata blocks the volume says are in use (an estimate of the total to read).
    pub blocks_expected: u64,
}

struct Walker<'a> {
    cache: &'a BlockCache,
    meta: Blocks,
    data: Blocks,
    report: CheckReport,
    data_items: BTreeMap<Key, DataItem>,
    progress: &'a mut dyn FnMut(Progress),
    expected: u64,
}

fn err_string(e: &BtreeError) -> String {
    match e {
        BtreeError::Block(b) => b.to_string(),
        other => other.to_string(),
    }
}

impl Walker<'_> {
    fn tick(&mut self) {
        self.report.blocks_read += 1;
        if self.report.blocks_read.is_multiple_of(4096) {
            (self.progress)(Progress {
                blocks_read: self.report.blocks_read,
                blocks_expected: self.expected,
            });
        }
    }

    fn mark_meta(&mut self, what: &str, blkno: u64) {
        if let Err(run) = self.meta.mark(blkno, 1, false) {
            self.report.push(Problem::OutOfRange {
                space: Space::Meta,
                what: what.to_string(),
                run,
            });
        }
    }

    /// Walk a btree: mark its blocks referenced, check it, and hand its leaf items to
    /// `leaf`.
    fn tree(
        &mut self,
        what: &str,
        root: &BtreeRoot,
        leaf: &mut dyn FnMut(&mut Self, &btree::ItemView<'_>),
    ) {
        let mut blocks = Vec::new();
        let mut items = Vec::new();
        let res = btree::walk_blocks(self.cache, root, &mut |b| {
            blocks.push(b.blk.blkno);
            if b.level == 0 {
                for i in 0..b.nr_items() {
                    items.push(b.item(i).to_item());
                }
            }
            Ok(())
        });
        for b in blocks {
            self.tick();
            self.mark_meta(what, b);
        }
        match res.and_then(|_| btree::verify(self.cache, root).map(|_| ())) {
            Ok(()) => {}
            Err(e) => self.report.push(Problem::Unreadable {
                what: what.to_string(),
                error: err_string(&e),
            }),
        }
        for it in &items {
            let v = btree::ItemView {
                key: it.key,
                seq: it.seq,
                flags: it.flags,
                val: &it.val,
            };
            leaf(self, &v);
        }
    }

    /// A tree of filesystem items (the fs root or a log btree): note its data extents.
    fn item_tree(&mut self, what: &str, root: &BtreeRoot) {
        let name = what.to_string();
        self.tree(what, root, &mut |w, it| {
            if it.key.zone != zone::FS || it.key.ty != item_type::DATA_EXTENT {
                return;
            }
            if w.data_items.get(&it.key).is_some_and(|d| d.seq > it.seq) {
                return;
            }
            let deletion = it.flags & ITEM_FLAG_DELETION != 0;
            let extent = if deletion {
                None
            } else {
                match DataExtent::read_from_bytes(it.val) {
                    Ok(d) => Some(Extent {
                        start: d.blkno.get(),
                        len: d.len.get(),
                    }),
                    Err(_) => {
                        w.report.push(Problem::BadRecord {
                            what: format!("{name}: data extent {}", it.key),
                            reason: format!("value of {} bytes, not 24", it.val.len()),
                        });
                        None
                    }
                }
            };
            w.data_items.insert(
                it.key,
                DataItem {
                    seq: it.seq,
                    deletion,
                    extent,
                    what: name.clone(),
                },
            );
        });
    }

    /// A free-extent tree: its blocks are referenced, its extents free in `space`.
    fn extent_tree(&mut self, what: &str, ar: &AllocRoot, space: Space) {
        let mut by_blkno = Vec::new();
        let mut by_order = Vec::new();
        let mut bad = 0u64;
        self.tree(what, &ar.root, &mut |_, it| match it.key.zone {
            zone::FREE_EXTENT_BLKNO => by_blkno.push((it.key.first, it.key.second)),
            zone::FREE_EXTENT_ORDER => by_order.push((it.key.second, !it.key.first)),
            _ => bad += 1,
        });
        let problem = |reason: String| Problem::ExtentTree {
            what: what.to_string(),
            reason,
        };
        let mut found = Vec::new();
        if bad > 0 {
            found.push(problem(format!("{bad} items outside the extent zones")));
        }
        let mut sorted_order = by_order.clone();
        sorted_order.sort_unstable();
        if by_blkno != sorted_order {
            found.push(problem(format!(
                "the by-blkno zone ({} extents) and the by-size zone ({}) disagree",
                by_blkno.len(),
                by_order.len()
            )));
        }
        let mut sum = 0u64;
        for w in by_blkno.windows(2) {
            let (a, b) = (w[0], w[1]);
            if a.0.saturating_add(a.1) == b.0 {
                found.push(problem(format!(
                    "extents at {} and {} touch but are not merged",
                    a.0, b.0
                )));
            }
        }
        for &(start, len) in &by_blkno {
            sum = sum.saturating_add(len);
            if len == 0 {
                found.push(problem(format!("empty extent at {start}")));
                continue;
            }
            let r = match space {
                Space::Meta => self.meta.mark(start, len, true),
                Space::Data => self.data.mark(start, len, true),
            };
            if let Err(run) = r {
                found.push(Problem::OutOfRange {
                    space,
                    what: what.to_string(),
                    run,
                });
            }
        }
        if sum != ar.total_len {
            found.push(problem(format!(
                "holds {sum} free blocks but its total says {}",
                ar.total_len
            )));
        }
        for p in found {
            self.report.push(p);
        }
    }

    /// An alloc list: its blocks referenced, its entries free metadata blocks.
    fn list(&mut self, what: &str, head: &RawAllocListHead) {
        match read_list(self.cache, head) {
            Ok(l) => {
                for r in &l.blocks {
                    self.tick();
                    self.mark_meta(what, r.blkno);
                }
                for &b in &l.blknos {
                    if let Err(run) = self.meta.mark(b, 1, true) {
                        self.report.push(Problem::OutOfRange {
                            space: Space::Meta,
                            what: what.to_string(),
                            run,
                        });
                    }
                }
            }
            Err(e) => self.report.push(Problem::Unreadable {
                what: what.to_string(),
                error: e.to_string(),
            }),
        }
    }

    fn log_trees(&mut self, logs_root: &BtreeRoot) {
        let mut records = Vec::new();
        self.tree("logs_root", logs_root, &mut |w, it| {
            if it.key.zone != zone::LOG_TREES {
                return;
            }
            match LogTrees::read_from_bytes(it.val) {
                Ok(lt) => records.push(lt),
                Err(_) => w.report.push(Problem::BadRecord {
                    what: format!("logs_root item {}", it.key),
                    reason: format!("value of {} bytes is not a log trees record", it.val.len()),
                }),
            }
        });
        for lt in records {
            let name = format!("log tree {:016x}.{}", lt.rid.get(), lt.nr.get());
            self.item_tree(&format!("{name} items"), &lt.item_root.into());
            self.extent_tree(
                &format!("{name} data_avail"),
                &lt.data_avail.into(),
                Space::Data,
            );
            self.extent_tree(
                &format!("{name} data_freed"),
                &lt.data_freed.into(),
                Space::Data,
            );
            self.list(&format!("{name} meta_avail"), &lt.meta_avail);
            self.list(&format!("{name} meta_freed"), &lt.meta_freed);
            let bloom: BlockRef = lt.bloom_ref.into();
            if !bloom.is_none() {
                let what = format!("{name} bloom");
                match self
                    .cache
                    .read_block(bloom, MAGIC_BLOOM, crate::block::no_validation)
                {
                    Ok(_) => {
                        self.tick();
                        self.mark_meta(&what, bloom.blkno);
                    }
                    Err(e) => self.report.push(Problem::Unreadable {
                        what,
                        error: e.to_string(),
                    }),
                }
            }
        }
    }

    fn data_extents(&mut self) {
        let items = std::mem::take(&mut self.data_items);
        for (key, d) in items {
            let Some(e) = d.extent.filter(|_| !d.deletion) else {
                continue;
            };
            if let Err(run) = self.data.mark(e.start, e.len, false) {
                self.report.push(Problem::OutOfRange {
                    space: Space::Data,
                    what: format!("{}: data extent {key}", d.what),
                    run,
                });
            }
        }
    }
}

/// Check the volume on `meta` and `data` (see the module comment). `Err` only when the
/// supers cannot be read; everything after that is reported as problems.
pub fn check(
    meta: &Arc<dyn BlockDevice>,
    data: &Arc<dyn BlockDevice>,
) -> Result<CheckReport, VolumeError> {
    check_with_progress(meta, data, &mut |_| {})
}

/// [`check`], calling `progress` every few thousand blocks.
pub fn check_with_progress(
    meta: &Arc<dyn BlockDevice>,
    data: &Arc<dyn BlockDevice>,
    progress: &mut dyn FnMut(Progress),
) -> Result<CheckReport, VolumeError> {
    let sb = volume::read_volume_supers(&**meta, &**data)?;
    let geo = volume::geometry(&sb);
    let cache = BlockCache::new(meta.clone(), geo, 64 << 20);
    let free_estimate = sb.meta_alloc[0].total_len.get();
    let mut w = Walker {
        cache: &cache,
        meta: Blocks::new(Space::Meta, geo.first_blkno, geo.total_blocks),
        data: Blocks::new(Space::Data, DATA_START_BLKNO, sb.total_data_blocks.get()),
        report: CheckReport::default(),
        data_items: BTreeMap::new(),
        progress,
        expected: geo
            .total_blocks
            .saturating_sub(geo.first_blkno)
            .saturating_sub(free_estimate),
    };
    w.item_tree("fs_root", &sb.fs_root.into());
    w.log_trees(&sb.logs_root.into());
    for (what, root) in [
        ("log_merge", sb.log_merge),
        ("mounted_clients", sb.mounted_clients),
        ("srch_root", sb.srch_root),
    ] {
        w.tree(what, &root.into(), &mut |_, _| {});
    }
    for (i, a) in sb.meta_alloc.iter().enumerate() {
        w.extent_tree(&format!("meta_alloc[{i}]"), &(*a).into(), Space::Meta);
    }
    w.extent_tree("data_alloc", &sb.data_alloc.into(), Space::Data);
    for (i, h) in sb.server_meta_avail.iter().enumerate() {
        w.list(&format!("server_meta_avail[{i}]"), h);
    }
    for (i, h) in sb.server_meta_freed.iter().enumerate() {
        w.list(&format!("server_meta_freed[{i}]"), h);
    }
    w.data_extents();
    let mut report = std::mem::take(&mut w.report);
    report.meta = w.meta.finish(&mut report);
    report.data = w.data.finish(&mut report);
    (w.progress)(Progress {
        blocks_read: report.blocks_read,
        blocks_expected: report.blocks_read,
    });
    Ok(report)
}

/// Space of a volume as `df` shows it, read from the allocators' totals (no walk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DfReport {
    /// Metadata block size in bytes.
    pub meta_block_size: u64,
    /// Metadata blocks of the device.
    pub meta_total: u64,
    /// Free metadata blocks, less the server's reserve.
    pub meta_free: u64,
    /// Metadata blocks held back as the reserve (freeing operations use them when the
    /// volume is full).
    pub meta_reserved: u64,
    /// Data block size in bytes.
    pub data_block_size: u64,
    /// Data blocks of the device.
    pub data_total: u64,
    /// Free data blocks.
    pub data_free: u64,
}

/// Used and free space from the super, the allocators' totals and the mounts' lists.
pub fn df(
    meta: &Arc<dyn BlockDevice>,
    data: &Arc<dyn BlockDevice>,
) -> Result<DfReport, VolumeError> {
    let sb = volume::read_volume_supers(&**meta, &**data)?;
    let geo = volume::geometry(&sb);
    let cache = BlockCache::new(meta.clone(), geo, 16 << 20);
    let list_len = |h: &RawAllocListHead| h.total_nr.get();
    let mut meta_free = sb.meta_alloc.iter().map(|a| a.total_len.get()).sum::<u64>()
        + sb.server_meta_avail.iter().map(list_len).sum::<u64>()
        + sb.server_meta_freed.iter().map(list_len).sum::<u64>();
    let mut data_free = sb.data_alloc.total_len.get();
    let logs: BtreeRoot = sb.logs_root.into();
    for lt in crate::server::all_log_trees(&cache, &logs)? {
        meta_free += list_len(&lt.meta_avail) + list_len(&lt.meta_freed);
        data_free += lt.data_avail.total_len.get() + lt.data_freed.total_len.get();
    }
    let reserved = AllocLimits::for_volume(&sb).meta_reserve;
    Ok(DfReport {
        meta_block_size: geo.block_size as u64,
        meta_total: geo.total_blocks,
        meta_free: meta_free.saturating_sub(reserved),
        meta_reserved: reserved,
        data_block_size: DATA_BLOCK_SIZE,
        data_total: sb.total_data_blocks.get(),
        data_free,
    })
}
