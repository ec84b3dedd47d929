//! The offline consistency check (`scoutfs check`) and offline space report (`scoutfs df`).
//!
//! [`check`] walks every btree and allocator the super references, verifies every block
//! on the way (the cache checks crc, magic, fsid, blkno and seq; the walk checks levels,
//! key order and the key ranges parents give their children), and proves that every
//! metadata block and every data block is exactly one of: referenced once, or free once.
//! What it finds is a list of [`Problem`]s. It keeps going past damage: a block that does
//! not verify costs its own subtree (whose blocks then read as leaked), not the rest of
//! the volume.
//!
//! What counts, for metadata blocks: *referenced* are the blocks of every btree (the
//! super's trees, each mount's log btree and data extent trees, the extent trees
//! themselves), the alloc list blocks and bloom blocks; *free* are the extents of the
//! metadata extent trees and the block numbers held in alloc lists (the server's and each
//! mount's). For data blocks: *referenced* are the extents of data extent items -- for a
//! key present in several trees (the filesystem root and the mounts' log trees), the
//! version with the greatest seq, unless it is a deletion (on equal seqs the log tree
//! wins, as in [`btree::MergeCursor`]) -- and *free* are the extents of the data extent
//! trees (the server's pool and each mount's avail and freed trees). Offline extents
//! reference no data blocks.
//!
//! The inode count the volume records (the super's `inode_count` plus every log tree's
//! `inode_count_delta`: what statfs reports) must be the number of inode items, each key
//! resolved to its newest version across the root and the log trees as for data extents;
//! it is compared only when every tree could be read.
//!
//! Memory does not grow with the number of items: block states are two bitmaps per device
//! (referenced, free), and problems that clash with them are gathered into runs as they
//! are found. Trees are checked as they stream past: the walk holds one path of blocks,
//! an extent tree's two zones are compared by an order-independent checksum (and only
//! when that differs are the extents without a twin looked up one by one), and of the
//! data extent items only those of the mounts' log trees are held, to resolve them
//! against the filesystem root as it streams by (the log trees' inode keys likewise).
//!
//! The namespace pass ([`NsFault`], one problem per inode and fault) reads the items as
//! a mount reads them: the filesystem root merged with every log tree by
//! [`btree::MergeCursor`] (newest version wins, deletions hide), in key order, so the
//! items of one inode stream past together. It proves: the root inode is a directory;
//! every inode with links is reachable from the root (a directory through its one entry,
//! up to the root without a loop; a file through an entry in a reachable directory);
//! an inode without links has an orphan item, and every orphan item and truncate record
//! an inode; a file's link count is the number of entries naming it, a directory's 2
//! and one per subdirectory; every entry names an existing inode of the entry's kind,
//! and is stored three times with one value (by name hash, by readdir position, as the
//! inode's back-reference), its keys agreeing with its value and its name with its
//! hash, no name twice in a directory; a directory's size is the total length of its
//! entries' names (as `fs` keeps it); data extents only on regular files, not
//! overlapping, and no written block at or past the block the size ends in unless a
//! truncate record says a truncate is under way (unwritten extents past the size are
//! fallocate's `keep_size`); offline extents (released to an archive) hold no blocks,
//! may be longer than other extents and lie below the size too; a linked regular file's
//! online and offline block counts are what its extents hold (an unlinked one's are not
//! kept while its deletion goes in steps); every release record has an inode; a
//! symlink's chunks hold its size; every inode has exactly
//! one item in the meta_seq index, at its meta_seq, and a regular file exactly one in
//! the data_seq index, at its data_seq (other inodes none), and no index item names an
//! inode that does not exist (the index items come first in key order, so they are
//! counted per inode before its items stream past); every `.totl.` total is
//! the sum and the count of the `.totl.` xattrs of its name, and every `.indx.` xattr has
//! its index item and every index item its xattr (what a tagged xattr adds is
//! `fs::tag_effects` of its name and value, as the filesystem keeps it). A leaked inode's problem
//! counts its data blocks, which the block accounting above sees referenced by its
//! extents. It runs only when every item tree walked clean (a damaged tree would show as
//! namespace damage that is not there), and its memory grows with the number of inodes
//! (a few dozen bytes each, and the entries of the directory streaming past).
//!
//! srch files (module `srch`): the blocks of `srch_root`, of its files, compactions and
//! freeing records and of the mounts' current log files, their entries counted against
//! their records, and the live entries compared with the `.srch.` xattrs of the
//! namespace.
//!
//! A super slot that does not verify (while the other does) is a problem of its own:
//! the volume is read from the other slot, which may hold the previous commit.
//!
//! A merge in progress owns blocks too (the records of the server's `log_merge` tree,
//! see `server::merge`): each outstanding request its allocator lists (list blocks
//! referenced, entries free: the blocks the mount may be writing are among them); each
//! completion not yet spliced the blocks of its merged subtree that are not the
//! filesystem root's (the merge shares the blocks it did not change), its list blocks,
//! the unused blocks of its avail list (free) and the entries of its freed list, which
//! are either blocks of the filesystem root (the old subtree, free once spliced) or free
//! already (the request's list blocks, blocks the merge allocated and freed again); a
//! spliced completion owns nothing (its subtree is the root's, its lists were handed
//! back); each freeing record the blocks of its input tree that freeing from its progress
//! key has not freed.

use crate::alloc::list::{list_entries, validate_list_block};
use crate::alloc::{AllocRoot, Extent};
use crate::block::{no_validation, splitmix64, BlockCache, BlockError, BlockRead, StaleReason};
use crate::btree::{self, BlockView, BlockVisitor, BtreeError, ItemView};
use crate::device::BlockDevice;
use crate::format::*;
use crate::server::AllocLimits;
use crate::volume::{self, VolumeError};
use std::collections::BTreeMap;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;
use zerocopy::FromBytes;

mod srch;

pub use srch::SrchFault;

/// Problems kept in a report; further ones are only counted.
pub const MAX_PROBLEMS: usize = 10_000;

/// Metadata blocks visited between calls of the progress callback.
const PROGRESS_EVERY: u64 = 1024;

/// The check's block cache. The walk holds its path, and every block is read once
/// (lookups only follow a damaged extent tree), so a small cache is enough.
const CACHE_BYTES: usize = 16 << 20;

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

impl Run {
    fn of(e: Extent) -> Run {
        Run {
            start: e.start,
            len: e.len,
        }
    }
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
                self.start.saturating_add(self.len - 1),
                self.len
            )
        }
    }
}

/// How a free-extent tree disagrees with itself.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExtentFault {
    /// The extents add up to a different number of blocks than the root's total.
    TotalMismatch {
        /// `total_len` of the root.
        total: u64,
        /// Blocks the extents hold.
        found: u64,
    },
    /// A by-blkno item without its by-size twin.
    MissingBySize {
        /// The extent.
        run: Run,
    },
    /// A by-size item without its by-blkno twin.
    MissingByBlkno {
        /// The extent.
        run: Run,
    },
    /// The two zones differ, but every item has its twin (only if a lookup and the
    /// walk disagree).
    ZonesDiffer {
        /// Items in the by-blkno zone.
        by_blkno: u64,
        /// Items in the by-size zone.
        by_size: u64,
    },
    /// Two extents that touch: they should have been merged into one.
    Unmerged {
        /// The lower extent.
        first: Run,
        /// The extent that starts where it ends.
        second: Run,
    },
    /// Two extents that overlap.
    Overlap {
        /// The lower extent.
        first: Run,
        /// The extent that starts inside it.
        second: Run,
    },
    /// An item that is not a free extent: outside the two zones, a zero or wrapping
    /// length, fields that must be zero, or a value.
    BadItem {
        /// Its key.
        key: Key,
    },
}

impl fmt::Display for ExtentFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtentFault::TotalMismatch { total, found } => {
                write!(f, "holds {found} free blocks but its total says {total}")
            }
            ExtentFault::MissingBySize { run } => {
                write!(f, "free extent of {run} has no by-size item")
            }
            ExtentFault::MissingByBlkno { run } => {
                write!(f, "by-size item of {run} has no by-blkno item")
            }
            ExtentFault::ZonesDiffer { by_blkno, by_size } => write!(
                f,
                "the by-blkno zone ({by_blkno} items) and the by-size zone ({by_size}) differ"
            ),
            ExtentFault::Unmerged { first, second } => {
                write!(
                    f,
                    "free extents of {first} and {second} touch but are not merged"
                )
            }
            ExtentFault::Overlap { first, second } => {
                write!(f, "free extents of {first} and {second} overlap")
            }
            ExtentFault::BadItem { key } => write!(f, "item {key} is not a free extent"),
        }
    }
}

/// Something wrong with a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A block that does not verify against the reference that led to it: a bad
    /// checksum, or the magic, fsid, blkno or seq of another block (stale or
    /// misdirected). What was below it is not walked.
    BadBlock {
        /// The structure being walked.
        what: String,
        /// The block.
        blkno: u64,
        /// What did not match.
        reason: StaleReason,
    },
    /// A block whose header verifies but whose contents or place in its structure are
    /// inconsistent: keys out of order, a level that does not fit, keys outside the range
    /// its parent gives, an empty block, a malformed list block.
    Inconsistent {
        /// The structure being walked.
        what: String,
        /// The block.
        blkno: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A read that failed for another reason (the device).
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
        fault: ExtentFault,
    },
    /// An alloc list holding a different number of blocks than its head says.
    ListCount {
        /// Which list.
        what: String,
        /// `total_nr` of the head.
        claimed: u64,
        /// Block numbers its blocks hold.
        found: u64,
    },
    /// An alloc list whose first block holds a different number of blocks than its head
    /// says.
    ListFirstCount {
        /// Which list.
        what: String,
        /// `first_nr` of the head.
        claimed: u64,
        /// Block numbers the first block holds.
        found: u64,
    },
    /// An item that does not decode or does not fit where it is.
    BadRecord {
        /// Where.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The inode count the volume records (the super's `inode_count` and every log
    /// tree's `inode_count_delta`, what statfs reports) is not the number of inode items
    /// the filesystem holds (each key's newest version across the root and the log
    /// trees).
    InodeCount {
        /// Inode items found.
        counted: u64,
        /// The recorded count.
        recorded: u64,
    },
    /// A `.totl.` total that is not the sum of the values of the `.totl.` xattrs of its
    /// name, or not their count (a missing total reads as zero and zero).
    XattrTotal {
        /// The total's name `A.B.C`.
        name: [u64; 3],
        /// The total and the count the volume records.
        recorded: (u64, u64),
        /// The sum and the count of the xattrs.
        counted: (u64, u64),
    },
    /// The namespace is wrong at an inode (see [`NsFault`]).
    Namespace {
        /// The inode.
        ino: u64,
        /// What is wrong.
        fault: NsFault,
    },
    /// A super slot that does not hold a verified super block: the volume was read from
    /// the other slot, which may hold the previous commit.
    SuperSlot(volume::SlotDamage),
    /// A `.srch.` xattr and the srch files disagree (see [`SrchFault`]).
    SrchEntry {
        /// The inode.
        ino: u64,
        /// The xattr id.
        id: u64,
        /// The hash of the xattr's name.
        hash: u64,
        /// What is wrong.
        fault: SrchFault,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::BadBlock {
                what,
                blkno,
                reason,
            } => write!(
                f,
                "{what}: metadata block {blkno} does not verify: {reason}"
            ),
            Problem::Inconsistent {
                what,
                blkno,
                reason,
            } => write!(
                f,
                "{what}: metadata block {blkno} is inconsistent: {reason}"
            ),
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
            Problem::ExtentTree { what, fault } => write!(f, "{what}: {fault}"),
            Problem::ListCount {
                what,
                claimed,
                found,
            } => write!(
                f,
                "{what}: the list holds {found} blocks but its head says {claimed}"
            ),
            Problem::ListFirstCount {
                what,
                claimed,
                found,
            } => write!(
                f,
                "{what}: the first list block holds {found} blocks but the head says {claimed}"
            ),
            Problem::BadRecord { what, reason } => write!(f, "{what}: {reason}"),
            Problem::InodeCount { counted, recorded } => write!(
                f,
                "the volume records {recorded} inodes (the super's count and the log trees' \
                 deltas) but holds {counted} inode items"
            ),
            Problem::XattrTotal {
                name: [a, b, c],
                recorded,
                counted,
            } => write!(
                f,
                "xattr total {a}.{b}.{c} records {} in {} xattrs, but its xattrs hold {} in {}",
                recorded.0, recorded.1, counted.0, counted.1
            ),
            Problem::Namespace { ino, fault } => write!(f, "inode {ino}: {fault}"),
            Problem::SuperSlot(d) => write!(f, "{d}"),
            Problem::SrchEntry {
                ino,
                id,
                hash,
                fault,
            } => write!(
                f,
                "inode {ino}: .srch. xattr {id} (hash {hash:016x}) {fault}"
            ),
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
    /// Blocks free (and not referenced).
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
    /// Metadata blocks visited (read and verified, or found damaged).
    pub blocks_read: u64,
    /// Inodes the namespace pass found.
    pub inodes: u64,
    /// Whether the namespace pass ran: it needs every item tree readable (damage the
    /// block walk reports first).
    pub namespace_checked: bool,
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

/// Call `f(first bit, number of bits)` for each run of set bits in `w`.
fn bit_runs(mut w: u64, mut f: impl FnMut(u64, u64)) {
    let mut base = 0u64;
    while w != 0 {
        let zeros = w.trailing_zeros();
        w >>= zeros;
        base += zeros as u64;
        let ones = (!w).trailing_zeros();
        f(base, ones as u64);
        if ones >= 64 {
            break;
        }
        w >>= ones;
        base += ones as u64;
    }
}

/// Kinds of runs a [`SpaceMap`] gathers before reporting them.
#[derive(Clone, Copy, Debug)]
enum Clash {
    ReferencedTwice = 0,
    FreeTwice = 1,
    FreeAndReferenced = 2,
    Leaked = 3,
}

impl Clash {
    fn problem(self, space: Space, run: Run) -> Problem {
        match self {
            Clash::ReferencedTwice => Problem::ReferencedTwice { space, run },
            Clash::FreeTwice => Problem::FreeTwice { space, run },
            Clash::FreeAndReferenced => Problem::FreeAndReferenced { space, run },
            Clash::Leaked => Problem::Leaked { space, run },
        }
    }
}

/// The state of every block of one device: a referenced bit and a free bit per block.
/// A mark that finds a bit it clashes with already set reports those blocks, gathering
/// runs of adjacent blocks into one problem.
#[derive(Debug)]
struct SpaceMap {
    space: Space,
    first: u64,
    bits: u64,
    used: Vec<u64>,
    free: Vec<u64>,
    /// The run of each [`Clash`] being gathered; reported when the next one does not
    /// continue it.
    pending: [Option<Run>; 4],
}

impl SpaceMap {
    fn new(space: Space, first: u64, end: u64) -> SpaceMap {
        let bits = end.saturating_sub(first);
        let words = bits.div_ceil(64) as usize;
        SpaceMap {
            space,
            first,
            bits,
            used: vec![0; words],
            free: vec![0; words],
            pending: [None; 4],
        }
    }

    fn gather(&mut self, kind: Clash, run: Run, report: &mut CheckReport) {
        let space = self.space;
        let slot = &mut self.pending[kind as usize];
        match slot {
            Some(p) if p.start + p.len == run.start => p.len += run.len,
            _ => {
                if let Some(p) = slot.replace(run) {
                    report.push(kind.problem(space, p));
                }
            }
        }
    }

    fn gather_bits(&mut self, kind: Clash, word: usize, bits: u64, report: &mut CheckReport) {
        let base = self.first + word as u64 * 64;
        bit_runs(bits, |b, len| {
            self.gather(
                kind,
                Run {
                    start: base + b,
                    len,
                },
                report,
            );
        });
    }

    /// Mark `len` blocks from `start` referenced (`free == false`) or free, reporting
    /// the blocks already in a clashing state. Returns whether any of them was
    /// referenced already; `Err` with the run if it leaves the device.
    fn mark(
        &mut self,
        start: u64,
        len: u64,
        free: bool,
        report: &mut CheckReport,
    ) -> Result<bool, Run> {
        let run = Run { start, len };
        let end = start.checked_add(len).ok_or(run)?;
        if len == 0 || start < self.first || end > self.first + self.bits {
            return Err(run);
        }
        let (mut b, e) = (start - self.first, end - self.first);
        let mut was_used = false;
        while b < e {
            let w = b / 64;
            let lo = b % 64;
            let hi = (e - w * 64).min(64);
            let mask = if hi - lo == 64 {
                u64::MAX
            } else {
                ((1u64 << (hi - lo)) - 1) << lo
            };
            let i = w as usize;
            let (used, freed) = (self.used[i] & mask, self.free[i] & mask);
            // A block is reported free and referenced once: when it first has both bits.
            if free {
                self.gather_bits(Clash::FreeTwice, i, freed, report);
                self.gather_bits(Clash::FreeAndReferenced, i, used & !freed, report);
                self.free[i] |= mask;
            } else {
                self.gather_bits(Clash::ReferencedTwice, i, used, report);
                self.gather_bits(Clash::FreeAndReferenced, i, freed & !used, report);
                self.used[i] |= mask;
                was_used |= used != 0;
            }
            b = (w + 1) * 64;
        }
        Ok(was_used)
    }

    fn flush(&mut self, kind: Clash, report: &mut CheckReport) {
        if let Some(run) = self.pending[kind as usize].take() {
            report.push(kind.problem(self.space, run));
        }
    }

    /// Report what is still gathered and the leaked blocks; count the states.
    fn finish(&mut self, report: &mut CheckReport) -> SpaceCounts {
        for kind in [
            Clash::ReferencedTwice,
            Clash::FreeTwice,
            Clash::FreeAndReferenced,
        ] {
            self.flush(kind, report);
        }
        let (mut referenced, mut free) = (0u64, 0u64);
        for i in 0..self.used.len() {
            let valid = match self.bits - i as u64 * 64 {
                n if n >= 64 => u64::MAX,
                n => (1u64 << n) - 1,
            };
            let (u, f) = (self.used[i], self.free[i]);
            referenced += u.count_ones() as u64;
            free += (f & !u).count_ones() as u64;
            self.gather_bits(Clash::Leaked, i, !(u | f) & valid, report);
        }
        self.flush(Clash::Leaked, report);
        SpaceCounts {
            total: self.bits,
            referenced,
            free,
        }
    }
}

/// How far a check has got, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Metadata blocks visited so far.
    pub blocks_read: u64,
    /// Metadata blocks the super's allocators say are in use (an estimate of the total
    /// to visit; the last call gives the exact number).
    pub blocks_expected: u64,
}

/// The problem a failed block read stands for.
fn block_problem(what: &str, e: BlockError) -> Problem {
    let what = what.to_string();
    match e {
        BlockError::Stale { blkno, reason } => Problem::BadBlock {
            what,
            blkno,
            reason,
        },
        BlockError::Corrupt { blkno, reason } => Problem::Inconsistent {
            what,
            blkno,
            reason,
        },
        BlockError::OutOfRange { blkno, .. } => Problem::OutOfRange {
            space: Space::Meta,
            what,
            run: Run {
                start: blkno,
                len: 1,
            },
        },
        other => Problem::Unreadable {
            what,
            error: other.to_string(),
        },
    }
}

/// The problem a btree walk reported at block `r`.
fn tree_problem(what: &str, r: BlockRef, e: BtreeError) -> Problem {
    match e {
        BtreeError::Block(b) => block_problem(what, b),
        BtreeError::Corrupt { blkno, reason } => Problem::Inconsistent {
            what: what.to_string(),
            blkno: if blkno == 0 { r.blkno } else { blkno },
            reason,
        },
        other => Problem::Unreadable {
            what: what.to_string(),
            error: other.to_string(),
        },
    }
}

fn is_inode(k: &Key) -> bool {
    k.zone == zone::FS && k.ty == item_type::INODE
}

fn is_data_extent(k: &Key) -> bool {
    k.zone == zone::FS && k.ty == item_type::DATA_EXTENT
}

/// The blocks a data extent item references: `None` for a deletion.
fn data_extent(it: &ItemView<'_>) -> Result<Option<Extent>, String> {
    if it.flags & ITEM_FLAG_DELETION != 0 {
        return Ok(None);
    }
    let d = DataExtent::read_from_bytes(it.val).map_err(|_| {
        format!(
            "value of {} bytes is not a data extent ({} bytes)",
            it.val.len(),
            size_of::<DataExtent>()
        )
    })?;
    if d.len.get() == 0 {
        return Err("data extent of no blocks".into());
    }
    if d.flags.get() & DATA_EXTENT_FLAG_OFFLINE != 0 {
        // Released to an archive: no blocks.
        if d.flags.get() != DATA_EXTENT_FLAG_OFFLINE || d.blkno.get() != 0 {
            return Err(format!(
                "offline data extent with flags {:#x} at block {}",
                d.flags.get(),
                d.blkno.get()
            ));
        }
        return Ok(None);
    }
    Ok(Some(Extent {
        start: d.blkno.get(),
        len: d.len.get(),
    }))
}

/// The newest version, among the log trees, of one data extent item.
#[derive(Debug)]
struct LogExtent {
    seq: u64,
    /// `None`: a deletion, or a value that did not decode (reported already).
    extent: Option<Extent>,
    /// Index into [`Walker::log_names`].
    tree: usize,
}

/// A count and an order-independent checksum of the extents of one zone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TwinSum {
    count: u64,
    hash: u64,
}

impl TwinSum {
    fn add(&mut self, e: Extent) {
        let mut s = e.start.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ e.len;
        self.count += 1;
        self.hash = self.hash.wrapping_add(splitmix64(&mut s));
    }
}

/// The state of a free-extent tree streaming past.
#[derive(Debug)]
struct ExtentScan {
    space: Space,
    /// Blocks held by the by-blkno extents.
    sum: u64,
    /// The by-blkno extent seen so far that ends last (the one a next extent may touch
    /// or overlap).
    prev: Option<Extent>,
    by_blkno: TwinSum,
    by_size: TwinSum,
}

/// What to do with the leaf items of a tree being walked.
enum Leaves<'s> {
    /// Nothing (trees whose items reference no blocks).
    Ignore,
    /// `logs_root`: gather the log tree records.
    LogRecords(&'s mut Vec<LogTrees>),
    /// A mount's log btree (an index into [`Walker::log_names`]): gather its data
    /// extent items.
    LogItems(usize),
    /// The filesystem root: resolve its data extent items against the log trees' and
    /// mark the blocks of those that win.
    FsItems,
    /// A free-extent tree.
    Extents(&'s mut ExtentScan),
    /// The server's `log_merge` tree: gather the records that own blocks.
    MergeRecords(&'s mut MergeRecords),
    /// `srch_root`: gather its records.
    SrchRecords(&'s mut srch::SrchRecords),
    /// A srch file: check and count its entries.
    SrchFile(&'s mut u64),
}

/// Which blocks of a tree being walked are its own.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Blocks {
    /// Every block.
    All,
    /// Every block, also recorded as a block of the filesystem root.
    Fs,
    /// The blocks that are not the filesystem root's: a merge completion's subtree
    /// shares the blocks the merge did not change with the root it will be spliced into.
    NotFs,
    /// The blocks that freeing from this key has not freed yet: a child whose last key
    /// is before the key is freed, with everything below it ([`btree::free_blocks`]).
    FromKey(Key),
}

/// The records of a merge in progress that own blocks.
#[derive(Debug, Default)]
struct MergeRecords {
    requests: Vec<LogMergeRequest>,
    completions: Vec<LogMergeComplete>,
    freeing: Vec<LogMergeFreeing>,
}

struct Walker<'a> {
    cache: &'a BlockCache,
    meta: SpaceMap,
    data: SpaceMap,
    report: CheckReport,
    progress: &'a mut dyn FnMut(Progress),
    expected: u64,
    /// Data extent items of the log trees, each the newest version among them.
    log_extents: BTreeMap<Key, LogExtent>,
    /// Inode items of the log trees, the newest version of each among them: its seq and
    /// whether it is an inode (not a deletion).
    log_inodes: BTreeMap<Key, (u64, bool)>,
    /// Inode items of the filesystem root that no log tree overrides.
    root_inodes: u64,
    /// Names of the log trees.
    log_names: Vec<String>,
    /// The blocks of the filesystem root (a bitmap like [`SpaceMap`]'s).
    fs_blocks: Vec<u64>,
}

/// One tree being walked.
struct TreeWalk<'w, 'a, 's> {
    w: &'w mut Walker<'a>,
    what: &'s str,
    leaves: Leaves<'s>,
    blocks: Blocks,
    /// Children of the blocks walked so far that [`Blocks::FromKey`] says are freed.
    freed: std::collections::HashSet<u64>,
    faults: u64,
}

impl BlockVisitor for TreeWalk<'_, '_, '_> {
    fn enter(&mut self, r: BlockRef, _level: u8) -> bool {
        match &self.blocks {
            Blocks::All => {}
            Blocks::Fs => self.w.mark_fs(r.blkno),
            Blocks::NotFs => {
                if self.w.is_fs(r.blkno) {
                    return false;
                }
            }
            Blocks::FromKey(_) => {
                if self.freed.remove(&r.blkno) {
                    return false;
                }
            }
        }
        self.w.enter_meta(self.what, r.blkno)
    }

    fn block(&mut self, b: &BlockView<'_>) {
        if let (Blocks::FromKey(from), true) = (&self.blocks, b.level > 0) {
            for i in 0..b.nr_items() {
                if b.item(i).key < *from {
                    self.freed.insert(b.child(i).blkno);
                }
            }
        }
        if b.level != 0 || matches!(self.leaves, Leaves::Ignore) {
            return;
        }
        for i in 0..b.nr_items() {
            let it = b.item(i);
            match &mut self.leaves {
                Leaves::Ignore => {}
                Leaves::LogRecords(out) => self.w.log_record(&it, out),
                Leaves::LogItems(tree) => self.w.log_item(*tree, &it),
                Leaves::FsItems => self.w.fs_item(&it),
                Leaves::Extents(scan) => self.w.extent_item(self.what, scan, &it),
                Leaves::MergeRecords(out) => self.w.merge_record(&it, out),
                Leaves::SrchRecords(out) => self.w.srch_record(&it, out),
                Leaves::SrchFile(count) => self.w.srch_entry(self.what, &it, count),
            }
        }
    }

    fn fault(&mut self, r: BlockRef, e: BtreeError) {
        self.faults += 1;
        self.w.report.push(tree_problem(self.what, r, e));
    }
}

impl Walker<'_> {
    /// A metadata block about to be read: mark it referenced. `false` if it must not be
    /// read: outside the device, or referenced already (walked there, or the list cycles;
    /// walking it again could take a damaged volume unbounded time).
    fn enter_meta(&mut self, what: &str, blkno: u64) -> bool {
        self.report.blocks_read += 1;
        if self.report.blocks_read.is_multiple_of(PROGRESS_EVERY) {
            (self.progress)(Progress {
                blocks_read: self.report.blocks_read,
                blocks_expected: self.expected.max(self.report.blocks_read),
            });
        }
        match self.meta.mark(blkno, 1, false, &mut self.report) {
            Ok(was_used) => !was_used,
            Err(run) => {
                self.report.push(Problem::OutOfRange {
                    space: Space::Meta,
                    what: what.to_string(),
                    run,
                });
                false
            }
        }
    }

    /// Mark blocks of `space` free (an extent of an extent tree, an entry of a list).
    fn mark_free(&mut self, space: Space, what: &str, e: Extent) {
        let map = match space {
            Space::Meta => &mut self.meta,
            Space::Data => &mut self.data,
        };
        if let Err(run) = map.mark(e.start, e.len, true, &mut self.report) {
            self.report.push(Problem::OutOfRange {
                space,
                what: what.to_string(),
                run,
            });
        }
    }

    /// Mark the data blocks of a winning data extent item referenced.
    fn mark_data(&mut self, tree: &str, key: &Key, e: Extent) {
        if let Err(run) = self.data.mark(e.start, e.len, false, &mut self.report) {
            self.report.push(Problem::OutOfRange {
                space: Space::Data,
                what: format!("{tree}: data extent {key}"),
                run,
            });
        }
    }

    /// Walk a btree, marking its blocks referenced and handing its leaf items on.
    /// Returns the number of faults it had.
    fn tree(&mut self, what: &str, root: &BtreeRoot, leaves: Leaves<'_>) -> u64 {
        self.tree_blocks(what, root, (Key::MIN, Key::MAX), leaves, Blocks::All)
    }

    /// [`Walker::tree`], owning only some of the tree's blocks.
    fn tree_blocks(
        &mut self,
        what: &str,
        root: &BtreeRoot,
        (start, end): (Key, Key),
        leaves: Leaves<'_>,
        blocks: Blocks,
    ) -> u64 {
        let cache = self.cache;
        let mut tw = TreeWalk {
            w: self,
            what,
            leaves,
            blocks,
            freed: Default::default(),
            faults: 0,
        };
        btree::walk_tolerant_range(cache, root, start, end, &mut tw);
        tw.faults
    }

    fn fs_bit(&self, blkno: u64) -> Option<(usize, u64)> {
        let b = blkno.checked_sub(self.meta.first)?;
        if b >= self.meta.bits {
            return None;
        }
        Some(((b / 64) as usize, 1u64 << (b % 64)))
    }

    fn mark_fs(&mut self, blkno: u64) {
        if let Some((w, m)) = self.fs_bit(blkno) {
            if let Some(word) = self.fs_blocks.get_mut(w) {
                *word |= m;
            }
        }
    }

    fn is_fs(&self, blkno: u64) -> bool {
        self.fs_bit(blkno)
            .and_then(|(w, m)| self.fs_blocks.get(w).map(|word| word & m != 0))
            .unwrap_or(false)
    }

    fn merge_record(&mut self, it: &ItemView<'_>, out: &mut MergeRecords) {
        fn get<T: FromBytes>(w: &mut Walker<'_>, it: &ItemView<'_>, name: &str, into: &mut Vec<T>) {
            match T::read_from_bytes(it.val) {
                Ok(v) => into.push(v),
                Err(_) => w.report.push(Problem::BadRecord {
                    what: format!("log_merge item {}", it.key),
                    reason: format!(
                        "value of {} bytes is not a merge {name} ({} bytes)",
                        it.val.len(),
                        size_of::<T>()
                    ),
                }),
            }
        }
        match it.key.zone {
            merge_zone::REQUEST => get(self, it, "request", &mut out.requests),
            merge_zone::COMPLETE => get(self, it, "completion", &mut out.completions),
            merge_zone::FREEING => get(self, it, "freeing record", &mut out.freeing),
            _ => {}
        }
    }

    /// The blocks a merge in progress owns (see [`check`]).
    fn merge_blocks(&mut self, recs: &MergeRecords, fs_root: &BtreeRoot) {
        for r in &recs.requests {
            let name = format!("merge request {}", r.seq.get());
            self.list(&format!("{name} meta_avail"), &r.meta_avail);
            self.list(&format!("{name} meta_freed"), &r.meta_freed);
        }
        for c in &recs.completions {
            if c.flags.get() & MERGE_COMPLETE_FLAG_SPLICED != 0 {
                // Spliced: its subtree is the root's and its lists were handed back.
                continue;
            }
            let name = format!("merge completion {}", c.seq.get());
            let what = format!("{name} subtree");
            // The subtree replaces the root's parent of its keys and covers its range.
            let range = match btree::get_parent(self.cache, fs_root, &(&c.start).into()) {
                Ok(p) => (p.start, p.end),
                Err(e) => {
                    self.report.push(tree_problem(&what, fs_root.blk, e));
                    (Key::MIN, Key::MAX)
                }
            };
            self.tree_blocks(&what, &c.root.into(), range, Leaves::Ignore, Blocks::NotFs);
            self.list(&format!("{name} meta_avail"), &c.meta_avail);
            // Its freed blocks that the filesystem root still references (the old
            // subtree the merge copied away from) are free once it is spliced; the rest
            // (the request's list blocks, blocks the merge freed again) are free now.
            self.list_with(&format!("{name} meta_freed"), &c.meta_freed, true);
        }
        for f in &recs.freeing {
            // A whole input tree, or a subtree a trim detached (which covers keys up to
            // its root's last key); a root that does not read is reported by the walk.
            let root: BtreeRoot = f.root.into();
            let end = btree::covered_end(self.cache, &root).unwrap_or(Key::MAX);
            self.tree_blocks(
                &format!("merge freeing {}", f.seq.get()),
                &root,
                (Key::MIN, end),
                Leaves::Ignore,
                Blocks::FromKey((&f.key).into()),
            );
        }
    }

    fn log_record(&mut self, it: &ItemView<'_>, out: &mut Vec<LogTrees>) {
        let what = || format!("logs_root item {}", it.key);
        if it.key.zone != zone::LOG_TREES {
            self.report.push(Problem::BadRecord {
                what: what(),
                reason: "not a log trees item".into(),
            });
            return;
        }
        let Ok(lt) = LogTrees::read_from_bytes(it.val) else {
            self.report.push(Problem::BadRecord {
                what: what(),
                reason: format!(
                    "value of {} bytes is not a log trees record ({} bytes)",
                    it.val.len(),
                    size_of::<LogTrees>()
                ),
            });
            return;
        };
        if log_trees_key(lt.rid.get(), lt.nr.get()) != it.key {
            self.report.push(Problem::BadRecord {
                what: what(),
                reason: format!(
                    "holds the record of mount {:016x} tree {}",
                    lt.rid.get(),
                    lt.nr.get()
                ),
            });
        }
        out.push(lt);
    }

    fn log_item(&mut self, tree: usize, it: &ItemView<'_>) {
        if is_inode(&it.key) {
            // Later trees win ties, as in the merge cursor.
            if self.log_inodes.get(&it.key).is_none_or(|l| l.0 <= it.seq) {
                let live = it.flags & ITEM_FLAG_DELETION == 0;
                self.log_inodes.insert(it.key, (it.seq, live));
            }
            return;
        }
        if !is_data_extent(&it.key) {
            return;
        }
        let extent = data_extent(it).unwrap_or_else(|reason| {
            let what = format!("{} items: data extent {}", self.log_names[tree], it.key);
            self.report.push(Problem::BadRecord { what, reason });
            None
        });
        // Later trees win ties, as in the merge cursor.
        if self
            .log_extents
            .get(&it.key)
            .is_some_and(|l| l.seq > it.seq)
        {
            return;
        }
        self.log_extents.insert(
            it.key,
            LogExtent {
                seq: it.seq,
                extent,
                tree,
            },
        );
    }

    fn fs_item(&mut self, it: &ItemView<'_>) {
        if is_inode(&it.key) {
            match self.log_inodes.get(&it.key) {
                Some(l) if l.0 >= it.seq => {}
                _ => {
                    self.log_inodes.remove(&it.key);
                    if it.flags & ITEM_FLAG_DELETION == 0 {
                        self.root_inodes += 1;
                    }
                }
            }
            return;
        }
        if !is_data_extent(&it.key) {
            return;
        }
        if let Some(l) = self.log_extents.get(&it.key) {
            if l.seq >= it.seq {
                return;
            }
            self.log_extents.remove(&it.key);
        }
        match data_extent(it) {
            Ok(Some(e)) => self.mark_data("fs_root", &it.key, e),
            Ok(None) => {}
            Err(reason) => self.report.push(Problem::BadRecord {
                what: format!("fs_root: data extent {}", it.key),
                reason,
            }),
        }
    }

    /// Mark the blocks of the data extent items whose newest version is in a log tree.
    fn log_extent_winners(&mut self) {
        for (key, l) in std::mem::take(&mut self.log_extents) {
            if let Some(e) = l.extent {
                let name = format!("{} items", self.log_names[l.tree]);
                self.mark_data(&name, &key, e);
            }
        }
    }

    fn extent_item(&mut self, what: &str, scan: &mut ExtentScan, it: &ItemView<'_>) {
        let k = &it.key;
        let (e, by_blkno) = match k.zone {
            zone::FREE_EXTENT_BLKNO => (
                Extent {
                    start: k.first,
                    len: k.second,
                },
                true,
            ),
            zone::FREE_EXTENT_ORDER => (
                Extent {
                    start: k.second,
                    len: !k.first,
                },
                false,
            ),
            _ => (Extent { start: 0, len: 0 }, false),
        };
        let well_formed = e.len != 0
            && e.start.checked_add(e.len).is_some()
            && k.ty == 0
            && k.third == 0
            && k.fourth == 0
            && it.val.is_empty();
        if !well_formed {
            self.report.push(Problem::ExtentTree {
                what: what.to_string(),
                fault: ExtentFault::BadItem { key: *k },
            });
            return;
        }
        if !by_blkno {
            scan.by_size.add(e);
            return;
        }
        scan.by_blkno.add(e);
        scan.sum = scan.sum.saturating_add(e.len);
        if let Some(p) = scan.prev {
            let (first, second) = (Run::of(p), Run::of(e));
            if p.end() == e.start {
                self.report.push(Problem::ExtentTree {
                    what: what.to_string(),
                    fault: ExtentFault::Unmerged { first, second },
                });
            } else if p.end() > e.start {
                self.report.push(Problem::ExtentTree {
                    what: what.to_string(),
                    fault: ExtentFault::Overlap { first, second },
                });
            }
        }
        if scan.prev.is_none_or(|p| e.end() > p.end()) {
            scan.prev = Some(e);
        }
        self.mark_free(scan.space, what, e);
    }

    /// A free-extent tree: its blocks are referenced, its extents free in `space`.
    fn extent_tree(&mut self, what: &str, ar: &AllocRoot, space: Space) {
        let mut scan = ExtentScan {
            space,
            sum: 0,
            prev: None,
            by_blkno: TwinSum::default(),
            by_size: TwinSum::default(),
        };
        if self.tree(what, &ar.root, Leaves::Extents(&mut scan)) > 0 {
            // Sums over part of a tree say nothing the faults did not.
            return;
        }
        if scan.sum != ar.total_len {
            self.report.push(Problem::ExtentTree {
                what: what.to_string(),
                fault: ExtentFault::TotalMismatch {
                    total: ar.total_len,
                    found: scan.sum,
                },
            });
        }
        if scan.by_blkno != scan.by_size {
            self.missing_twins(what, ar, &scan);
        }
    }

    /// Name the items of an extent tree that have no twin in the other zone.
    fn missing_twins(&mut self, what: &str, ar: &AllocRoot, scan: &ExtentScan) {
        let cache = self.cache;
        let root = &ar.root;
        let mut found = Vec::new();
        let mut lookup_err = None;
        let zones = [
            (zone::FREE_EXTENT_BLKNO, true),
            (zone::FREE_EXTENT_ORDER, false),
        ];
        for (z, by_blkno) in zones {
            let lo = Key::new(z, 0, 0, 0, 0, 0);
            let hi = Key::new(z, u64::MAX, u8::MAX, u64::MAX, u64::MAX, u8::MAX);
            let res = btree::scan(cache, root, &lo, &hi, |it| {
                let (e, twin) = if by_blkno {
                    let e = Extent {
                        start: it.key.first,
                        len: it.key.second,
                    };
                    (e, free_extent_order_key(e.start, e.len))
                } else {
                    let e = Extent {
                        start: it.key.second,
                        len: !it.key.first,
                    };
                    (e, free_extent_blkno_key(e.start, e.len))
                };
                match btree::lookup(cache, root, &twin) {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        let run = Run::of(e);
                        found.push(if by_blkno {
                            ExtentFault::MissingBySize { run }
                        } else {
                            ExtentFault::MissingByBlkno { run }
                        });
                    }
                    Err(e) => {
                        lookup_err = Some(e);
                        return ControlFlow::Break(());
                    }
                }
                if found.len() >= MAX_PROBLEMS {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            if let Some(e) = res.err().or(lookup_err.take()) {
                self.report.push(tree_problem(what, root.blk, e));
                return;
            }
        }
        if found.is_empty() {
            found.push(ExtentFault::ZonesDiffer {
                by_blkno: scan.by_blkno.count,
                by_size: scan.by_size.count,
            });
        }
        for fault in found {
            self.report.push(Problem::ExtentTree {
                what: what.to_string(),
                fault,
            });
        }
    }

    /// An alloc list: its blocks referenced, its entries free metadata blocks.
    fn list(&mut self, what: &str, head: &RawAllocListHead) {
        self.list_with(what, head, false)
    }

    /// [`Walker::list`]; with `fs_owned`, entries that are blocks of the filesystem root
    /// are left to it.
    fn list_with(&mut self, what: &str, head: &RawAllocListHead, fs_owned: bool) {
        let cache = self.cache;
        let mut r: BlockRef = head.blk.into();
        let mut found = 0u64;
        let mut first = None;
        while !r.is_none() {
            if !self.enter_meta(what, r.blkno) {
                // Outside the device, or a cycle: reported; the counts say no more.
                return;
            }
            let g = match cache.read_block(r, MAGIC_ALLOC_LIST, validate_list_block) {
                Ok(g) => g,
                Err(e) => return self.report.push(block_problem(what, e)),
            };
            let Ok((h, _)) = AllocListBlockHeader::ref_from_prefix(&g) else {
                return self.report.push(Problem::Inconsistent {
                    what: what.to_string(),
                    blkno: r.blkno,
                    reason: "short alloc list block",
                });
            };
            let nr = h.nr.get() as u64;
            first.get_or_insert(nr);
            found += nr;
            for b in list_entries(&g) {
                if fs_owned && self.is_fs(b) {
                    continue;
                }
                self.mark_free(Space::Meta, what, Extent { start: b, len: 1 });
            }
            r = h.next.into();
        }
        let first_nr = head.first_nr.get() as u64;
        if first.unwrap_or(0) != first_nr {
            self.report.push(Problem::ListFirstCount {
                what: what.to_string(),
                claimed: first_nr,
                found: first.unwrap_or(0),
            });
        }
        if found != head.total_nr.get() {
            self.report.push(Problem::ListCount {
                what: what.to_string(),
                claimed: head.total_nr.get(),
                found,
            });
        }
    }

    /// A mount's log tree record: its log btree, data extent trees, lists and bloom block.
    /// Returns the faults of its item tree's walk.
    fn log_tree(&mut self, lt: &LogTrees) -> u64 {
        let name = format!("log tree {:016x}.{}", lt.rid.get(), lt.nr.get());
        let idx = self.log_names.len();
        self.log_names.push(name.clone());
        let faults = self.tree(
            &format!("{name} items"),
            &lt.item_root.into(),
            Leaves::LogItems(idx),
        );
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
        let what = format!("{name} bloom");
        if !bloom.is_none() && self.enter_meta(&what, bloom.blkno) {
            if let Err(e) = self.cache.read_block(bloom, MAGIC_BLOOM, no_validation) {
                self.report.push(block_problem(&what, e));
            }
        }
        faults
    }
}

/// How the namespace disagrees with itself at one inode (see [`Problem::Namespace`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NsFault {
    /// The root inode is missing.
    RootMissing,
    /// The root inode is not a directory.
    RootNotDir,
    /// An inode item that does not decode, or whose mode names no kind of file.
    BadInode {
        /// What is wrong.
        reason: String,
    },
    /// An item of the inode that does not decode or does not fit its key.
    BadItem {
        /// Its key.
        key: Key,
        /// What is wrong.
        reason: String,
    },
    /// Items of an inode (xattrs, entries, extents...) whose inode item does not exist.
    ItemsWithoutInode {
        /// How many.
        items: u64,
    },
    /// An inode with links that no path from the root reaches (a leak).
    Unreachable {
        /// Its link count.
        nlink: u32,
        /// Data blocks its extents hold.
        data_blocks: u64,
    },
    /// An inode without links and without the orphan item that has it deleted.
    UnlinkedNotOrphan,
    /// An orphan item of an inode that still has links.
    OrphanLinked {
        /// Its link count.
        nlink: u32,
    },
    /// An orphan item of an inode that does not exist.
    OrphanWithoutInode,
    /// A truncate record of an inode that does not exist.
    TruncateWithoutInode,
    /// A release record of an inode that does not exist.
    ReleaseWithoutInode,
    /// A regular file whose online or offline block counts are not what its extents
    /// hold (written and unwritten extents online, offline extents offline).
    BlockCounts {
        /// The inode's online count.
        online: u64,
        /// The inode's offline count.
        offline: u64,
        /// The blocks of its written and unwritten extents.
        extents_online: u64,
        /// The blocks of its offline extents.
        extents_offline: u64,
    },
    /// A link count that is not what the entries give (a file: the entries that name it;
    /// a directory: 2 and one for each subdirectory).
    LinkCount {
        /// The inode's count.
        nlink: u32,
        /// What the entries give.
        expected: u64,
    },
    /// Entries name the inode, which does not exist.
    EntryToMissing {
        /// The directory of the first such entry.
        dir: u64,
        /// Its name.
        name: String,
        /// Entries naming it.
        entries: u64,
    },
    /// Entries name the inode as a kind it is not.
    EntryKind {
        /// The directory of an entry naming it.
        dir: u64,
        /// The kinds the entries give.
        entry: String,
        /// The inode's kind.
        inode: &'static str,
    },
    /// A directory named by a number of entries other than one (the root: none).
    DirEntries {
        /// Entries naming it.
        entries: u64,
    },
    /// A directory whose size is not the total length of its entries' names.
    DirSize {
        /// The inode's size.
        size: u64,
        /// What the entries give.
        expected: u64,
    },
    /// Directory entries in an inode that is not a directory (or one without links).
    EntriesInNonDir {
        /// How many.
        entries: u64,
    },
    /// A directory entry whose by-name, by-position and back-reference items do not
    /// match (`dir` is this inode).
    EntryItems {
        /// Its readdir position.
        pos: u64,
        /// What does not match.
        reason: &'static str,
    },
    /// A second entry of one name in the directory.
    DuplicateName {
        /// The name.
        name: String,
        /// The readdir position of the second entry.
        pos: u64,
    },
    /// A back-reference to an entry that does not exist (or holds another value).
    DanglingBackref {
        /// The directory it names.
        dir: u64,
        /// The readdir position it names.
        pos: u64,
    },
    /// Entries naming the inode without their back-reference.
    MissingBackrefs {
        /// How many.
        count: u64,
    },
    /// Data extents on an inode that is not a regular file.
    ExtentsOnNonFile {
        /// How many.
        extents: u64,
    },
    /// A written or offline extent past the block the size ends in, with no truncate in
    /// progress.
    ExtentPastSize {
        /// Its first logical block.
        start: u64,
        /// Its length in blocks.
        len: u64,
        /// The inode's size.
        size: u64,
    },
    /// Two extents of the inode that overlap.
    ExtentOverlap {
        /// The first logical block of the later one.
        start: u64,
        /// The block the earlier ones end at.
        prev_end: u64,
    },
    /// An `.indx.` xattr without its index item.
    IndexItemMissing {
        /// The xattr's position's major number.
        major: u8,
        /// Its minor number.
        minor: u64,
        /// The xattr's id.
        xid: u64,
    },
    /// An index item of an `.indx.` xattr the inode does not have.
    IndexItemWithoutXattr {
        /// The item's position's major number.
        major: u8,
        /// Its minor number.
        minor: u64,
        /// The xattr id it names.
        xid: u64,
    },
    /// A symlink whose target chunks do not add up to its size.
    SymlinkLength {
        /// The inode's size.
        size: u64,
        /// Bytes of the chunks.
        found: u64,
    },
    /// The inode's items in a seq index are not the one item its seq names (a regular
    /// file has one in each index; any other inode one in the meta_seq index only).
    IndexItems {
        /// `"meta_seq"` or `"data_seq"`.
        index: &'static str,
        /// The inode's seq (`None`: it has no item in this index).
        seq: Option<u64>,
        /// The index items naming it.
        found: u32,
        /// The seq of the first of them (0 when none).
        first: u64,
    },
    /// Items of a seq index that name an inode that does not exist.
    IndexWithoutInode {
        /// `"meta_seq"` or `"data_seq"`.
        index: &'static str,
        /// How many.
        items: u32,
        /// The seq of the first.
        first: u64,
    },
}

/// The name of seq index `i` (0: meta_seq, 1: data_seq) in reports.
fn index_name(i: usize) -> &'static str {
    if i == 0 {
        "meta_seq"
    } else {
        "data_seq"
    }
}

/// The kind name of a `DT_*` value.
fn dtype_name(t: u8) -> &'static str {
    use crate::fs::FileKind::*;
    [File, Dir, Symlink, CharDev, BlockDev, Fifo, Socket]
        .into_iter()
        .find(|k| k.dtype() == t)
        .map_or("unknown kind", |k| match k {
            File => "regular file",
            Dir => "directory",
            Symlink => "symlink",
            CharDev => "character device",
            BlockDev => "block device",
            Fifo => "fifo",
            Socket => "socket",
        })
}

impl fmt::Display for NsFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NsFault::RootMissing => f.write_str("the root directory does not exist"),
            NsFault::RootNotDir => f.write_str("the root is not a directory"),
            NsFault::BadInode { reason } => write!(f, "inode item: {reason}"),
            NsFault::BadItem { key, reason } => write!(f, "item {key}: {reason}"),
            NsFault::ItemsWithoutInode { items } => {
                write!(f, "{items} items of an inode that does not exist")
            }
            NsFault::Unreachable { nlink, data_blocks } => write!(
                f,
                "leaked: {nlink} links but not reachable from the root ({data_blocks} data \
                 blocks)"
            ),
            NsFault::UnlinkedNotOrphan => f.write_str("no links and no orphan item"),
            NsFault::OrphanLinked { nlink } => write!(f, "orphan item but {nlink} links"),
            NsFault::OrphanWithoutInode => {
                f.write_str("orphan item of an inode that does not exist")
            }
            NsFault::TruncateWithoutInode => {
                f.write_str("truncate record of an inode that does not exist")
            }
            NsFault::ReleaseWithoutInode => {
                f.write_str("release record of an inode that does not exist")
            }
            NsFault::BlockCounts {
                online,
                offline,
                extents_online,
                extents_offline,
            } => write!(
                f,
                "{online} online and {offline} offline blocks counted, its extents hold                  {extents_online} and {extents_offline}"
            ),
            NsFault::LinkCount { nlink, expected } => {
                write!(f, "link count {nlink}, the entries give {expected}")
            }
            NsFault::EntryToMissing { dir, name, entries } => write!(
                f,
                "does not exist, but {entries} entries name it (\"{name}\" in directory {dir})"
            ),
            NsFault::EntryKind { dir, entry, inode } => write!(
                f,
                "a {inode}, but entries name it as {entry} (one in directory {dir})"
            ),
            NsFault::DirEntries { entries } => {
                write!(f, "directory named by {entries} entries")
            }
            NsFault::DirSize { size, expected } => write!(
                f,
                "directory size {size}, its entries' names add up to {expected}"
            ),
            NsFault::EntriesInNonDir { entries } => {
                write!(f, "{entries} directory entries, but not a live directory")
            }
            NsFault::EntryItems { pos, reason } => {
                write!(f, "entry at position {pos}: {reason}")
            }
            NsFault::DuplicateName { name, pos } => {
                write!(f, "a second entry \"{name}\" at position {pos}")
            }
            NsFault::DanglingBackref { dir, pos } => write!(
                f,
                "back-reference to position {pos} of directory {dir}, which holds no such entry"
            ),
            NsFault::MissingBackrefs { count } => {
                write!(f, "{count} entries name it without a back-reference")
            }
            NsFault::ExtentsOnNonFile { extents } => {
                write!(f, "{extents} data extents, but not a regular file")
            }
            NsFault::ExtentPastSize { start, len, size } => write!(
                f,
                "written or offline extent of blocks {start}..{} past the size {size} (no \
                 truncate in progress)",
                start.saturating_add(*len)
            ),
            NsFault::ExtentOverlap { start, prev_end } => write!(
                f,
                "extent at block {start} overlaps the one before (which ends at {prev_end})"
            ),
            NsFault::IndexItemMissing { major, minor, xid } => write!(
                f,
                "xattr {xid} indexes it at {major}.{minor}, but the index item is missing"
            ),
            NsFault::IndexItemWithoutXattr { major, minor, xid } => write!(
                f,
                "an index item at {major}.{minor} names its xattr {xid}, which does not \
                 index it there"
            ),
            NsFault::SymlinkLength { size, found } => {
                write!(f, "symlink of size {size} holds {found} bytes of target")
            }
            NsFault::IndexItems {
                index,
                seq,
                found,
                first,
            } => {
                match seq {
                    Some(s) => write!(f, "{index} {s}, but ")?,
                    None => write!(f, "no {index} index item expected, but ")?,
                }
                match found {
                    0 => write!(f, "no {index} index item names it"),
                    n => write!(
                        f,
                        "{n} {index} index items name it (the first at seq {first})"
                    ),
                }
            }
            NsFault::IndexWithoutInode {
                index,
                items,
                first,
            } => write!(
                f,
                "does not exist, but {items} {index} index items name it (the first at seq \
                 {first})"
            ),
        }
    }
}

/// What the namespace pass keeps of one inode.
#[derive(Clone, Debug, Default)]
struct NsInode {
    exists: bool,
    /// `DT_*` of the inode (0: unknown).
    kind: u8,
    nlink: u32,
    orphan: bool,
    truncate: bool,
    /// The seq index items naming it (meta_seq, data_seq): how many, and the seq of the
    /// first.
    index: [(u32, u64); 2],
    release: bool,
    /// Entries naming it, and the `DT_*` kinds they give (a bit each).
    named: u64,
    named_kinds: u32,
    /// The first entry naming it: (directory, position).
    first: Option<(u64, u64)>,
    /// Entries naming it from directories not reachable from the root.
    named_unreachable: u64,
    /// Order-independent sums over its entries and over its back-references.
    link_sum: u64,
    backref_sum: u64,
    backrefs: u64,
    data_blocks: u64,
}

/// The items of one inode streaming past (they are adjacent in key order).
#[derive(Default)]
struct NsGroup {
    ino: u64,
    inode: Option<Inode>,
    /// Items other than the inode item.
    items: u64,
    /// Entries of the directory by position: the hash of the entry value.
    dirents: BTreeMap<u64, u64>,
    /// The names of the entries with the hash of the last one (adjacent in key order).
    hash_names: (u64, Vec<Vec<u8>>),
    name_bytes: u64,
    subdirs: u64,
    entries: u64,
    extents: u64,
    ext_end: u64,
    /// Blocks of its written and unwritten extents, and of its offline ones.
    online: u64,
    offline: u64,
    past_size_reported: bool,
    symlink_bytes: u64,
    symlink_chunks: u64,
}

fn bytes_hash(b: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    b.hash(&mut h);
    h.finish()
}

/// One link's contribution to an inode's entry and back-reference sums.
fn link_mix(dir: u64, pos: u64, val: &[u8]) -> u64 {
    let mut s = dir.rotate_left(17) ^ pos.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ bytes_hash(val);
    splitmix64(&mut s)
}

/// A `.totl.` total as recorded and as counted from its xattrs so far: (sum, count).
#[derive(Clone, Copy, Debug, Default)]
struct TotalSums {
    recorded: (u64, u64),
    counted: (u64, u64),
}

/// The namespace pass: the items of the filesystem as a mount reads them (the root and
/// every log tree merged, newest version winning, deletions hiding).
struct Namespace<'a> {
    cache: &'a BlockCache,
    roots: Vec<BtreeRoot>,
    report: &'a mut CheckReport,
    inodes: std::collections::HashMap<u64, NsInode>,
    /// Per `.totl.` name, what its item records and what its xattrs add up to.
    totals: BTreeMap<[u64; 3], TotalSums>,
    /// The `.indx.` index items not yet matched by their xattr (the index zone streams
    /// past before the inodes).
    indx_items: std::collections::BTreeSet<Key>,
    /// `(name hash, ino, id)` of every `.srch.` xattr (module `srch`).
    srch: Vec<(u64, u64, u64)>,
}

/// Whether a resolved item is absent to a reader (a deletion, or a total of zero).
fn hidden(it: &ItemView<'_>) -> bool {
    it.flags & ITEM_FLAG_DELETION != 0
        || (it.flags & ITEM_FLAG_DELTA != 0 && btree::delta_is_zero(it.val))
}

impl Namespace<'_> {
    fn fault(&mut self, ino: u64, fault: NsFault) {
        self.report.push(Problem::Namespace { ino, fault });
    }

    /// Call `f` with each visible item of `start..=end`.
    fn read(
        &self,
        start: Key,
        end: Key,
        mut f: impl FnMut(&ItemView<'_>),
    ) -> Result<(), BtreeError> {
        let mut cur = btree::MergeCursor::new(&self.roots, start, end);
        while cur.advance(self.cache)? {
            if let Some(it) = cur.current() {
                if !hidden(&it) {
                    f(&it);
                }
            }
        }
        Ok(())
    }

    /// The visible value of `key`, if any.
    fn get(&self, key: Key) -> Result<Option<Vec<u8>>, BtreeError> {
        let mut out = None;
        self.read(key, key, |it| out = Some(it.val.to_vec()))?;
        Ok(out)
    }

    fn run(&mut self) -> Result<(), BtreeError> {
        let start = Key::new(zone::INODE_INDEX, 0, 0, 0, 0, 0);
        let end = Key::new(zone::FS, u64::MAX, u8::MAX, u64::MAX, u64::MAX, u8::MAX);
        let mut cur = btree::MergeCursor::new(&self.roots, start, end);
        let mut group = NsGroup::default();
        while cur.advance(self.cache)? {
            let Some(it) = cur.current() else { continue };
            if hidden(&it) {
                continue;
            }
            match it.key.zone {
                zone::INODE_INDEX => self.index_item(&it),
                zone::ORPHAN => self.orphan_item(&it),
                zone::XATTR_TOTL => self.total_item(&it),
                zone::XATTR_INDX => self.indx_item(&it),
                zone::FS => {
                    if it.key.first != group.ino {
                        self.finish_group(std::mem::take(&mut group));
                        group.ino = it.key.first;
                    }
                    self.fs_item(&mut group, &it);
                }
                _ => {}
            }
        }
        self.finish_group(group);
        self.finish_tags();
        self.finish()
    }

    fn index_item(&mut self, it: &ItemView<'_>) {
        let k = it.key;
        let ino = k.third;
        let i = match k.ty {
            item_type::META_SEQ => 0,
            item_type::DATA_SEQ => 1,
            _ => usize::MAX,
        };
        if i > 1 || k.first != 0 || k.fourth != 0 || !it.val.is_empty() {
            self.fault(
                ino,
                NsFault::BadItem {
                    key: k,
                    reason: "not an inode seq index item".into(),
                },
            );
            return;
        }
        let t = &mut self.inodes.entry(ino).or_default().index[i];
        if t.0 == 0 {
            t.1 = k.second;
        }
        t.0 = t.0.saturating_add(1);
    }

    fn orphan_item(&mut self, it: &ItemView<'_>) {
        let k = it.key;
        let ino = k.second;
        let well_formed = k.first == 0 && k.third == 0 && k.fourth == 0;
        match k.ty {
            ORPHAN_TYPE if well_formed && it.val.is_empty() => {
                self.inodes.entry(ino).or_default().orphan = true
            }
            TRUNCATE_TYPE if well_formed && it.val.len() == 8 => {
                self.inodes.entry(ino).or_default().truncate = true
            }
            RELEASE_TYPE if well_formed && it.val.len() == size_of::<ReleaseRecord>() => {
                self.inodes.entry(ino).or_default().release = true
            }
            _ => self.fault(
                ino,
                NsFault::BadItem {
                    key: k,
                    reason: "not an orphan item, a truncate or a release record".into(),
                },
            ),
        }
    }

    fn total_item(&mut self, it: &ItemView<'_>) {
        match crate::fs::decode_total(&it.key, it.val) {
            Ok(t) => self.totals.entry(t.name).or_default().recorded = (t.total, t.count),
            Err(reason) => self.report.push(Problem::BadRecord {
                what: format!("xattr total {}", it.key),
                reason: reason.into(),
            }),
        }
    }

    fn indx_item(&mut self, it: &ItemView<'_>) {
        let bad = match crate::fs::decode_indx_key(&it.key) {
            Err(reason) => reason,
            Ok(_) if !it.val.is_empty() => "an index item with a value",
            Ok(_) => {
                self.indx_items.insert(it.key);
                return;
            }
        };
        self.report.push(Problem::BadRecord {
            what: format!("xattr index item {}", it.key),
            reason: bad.into(),
        });
    }

    /// An xattr item: what the first part of a tagged xattr adds must be there.
    fn xattr(&mut self, g: &NsGroup, it: &ItemView<'_>) {
        let Some(t) = crate::fs::tagged_part(&it.key, it.val) else {
            return;
        };
        let e = crate::fs::tag_effects(t.name, &t.tags, t.value);
        if let Some((name, v)) = e.totl {
            let c = &mut self.totals.entry(name).or_default().counted;
            *c = (c.0.wrapping_add(v), c.1.wrapping_add(1));
        }
        if let Some((major, minor)) = e.indx {
            let key = crate::fs::indx_key(major, minor, g.ino, t.id);
            if !self.indx_items.remove(&key) {
                let xid = t.id;
                self.fault(g.ino, NsFault::IndexItemMissing { major, minor, xid });
            }
        }
    }

    /// The totals that are not their xattrs' sums, and the index items no xattr matched.
    fn finish_tags(&mut self) {
        for (name, s) in std::mem::take(&mut self.totals) {
            let TotalSums { recorded, counted } = s;
            if recorded != counted {
                self.report.push(Problem::XattrTotal {
                    name,
                    recorded,
                    counted,
                });
            }
        }
        for key in std::mem::take(&mut self.indx_items) {
            if let Ok((e, xid)) = crate::fs::decode_indx_key(&key) {
                let (major, minor) = (e.major, e.minor);
                self.fault(e.ino, NsFault::IndexItemWithoutXattr { major, minor, xid });
            }
        }
    }

    fn bad_item(&mut self, it: &ItemView<'_>, reason: impl Into<String>) {
        self.fault(
            it.key.first,
            NsFault::BadItem {
                key: it.key,
                reason: reason.into(),
            },
        );
    }

    fn fs_item(&mut self, g: &mut NsGroup, it: &ItemView<'_>) {
        let k = &it.key;
        if k.ty == item_type::INODE {
            match Inode::read_from_bytes(it.val) {
                Ok(i) if k.second == 0 && k.third == 0 && k.fourth == 0 => g.inode = Some(i),
                _ => self.fault(
                    g.ino,
                    NsFault::BadInode {
                        reason: format!("a value of {} bytes under key {k}", it.val.len()),
                    },
                ),
            }
            return;
        }
        g.items += 1;
        match k.ty {
            item_type::XATTR => {
                self.xattr(g, it);
                self.srch_xattr(it);
            }
            item_type::DIRENT => self.dirent(g, it),
            item_type::READDIR => self.readdir(g, it),
            item_type::LINK_BACKREF => self.backref(g, it),
            item_type::SYMLINK => {
                if k.second != g.symlink_chunks {
                    self.bad_item(it, "symlink chunk out of sequence");
                }
                g.symlink_chunks += 1;
                g.symlink_bytes += it.val.len() as u64;
            }
            item_type::DATA_EXTENT => self.extent(g, it),
            _ => self.bad_item(it, "an item of an unknown type"),
        }
    }

    /// Decode an entry value: the [`Dirent`] and the name.
    fn entry<'v>(&mut self, it: &ItemView<'v>) -> Option<(Dirent, &'v [u8])> {
        match Dirent::read_from_prefix(it.val) {
            Ok((d, name)) if !name.is_empty() && name.len() <= crate::fs::NAME_MAX => {
                Some((d, name))
            }
            _ => {
                self.bad_item(
                    it,
                    format!("a value of {} bytes is not an entry", it.val.len()),
                );
                None
            }
        }
    }

    fn dirent(&mut self, g: &mut NsGroup, it: &ItemView<'_>) {
        let Some((d, name)) = self.entry(it) else {
            return;
        };
        let (dir, pos, hash) = (g.ino, it.key.third, it.key.second);
        if d.hash.get() != hash || d.pos.get() != pos || it.key.fourth != 0 {
            return self.bad_item(it, "the entry's hash or position is not its key's");
        }
        if crate::fs::name_hash(name) != hash {
            return self.bad_item(it, "the name does not hash to the key's hash");
        }
        if g.inode.is_some_and(|i| pos >= i.next_readdir_pos.get()) {
            self.bad_item(it, "a position the directory has not handed out yet");
        }
        if g.hash_names.0 != hash {
            g.hash_names = (hash, Vec::new());
        }
        if g.hash_names.1.iter().any(|n| n == name) {
            let name = String::from_utf8_lossy(name).into_owned();
            self.fault(dir, NsFault::DuplicateName { name, pos });
        } else {
            g.hash_names.1.push(name.to_vec());
        }
        g.dirents.insert(pos, bytes_hash(it.val));
        g.name_bytes += name.len() as u64;
        g.entries += 1;
        if d.kind == crate::fs::FileKind::Dir.dtype() {
            g.subdirs += 1;
        }
        let t = self.inodes.entry(d.ino.get()).or_default();
        t.named += 1;
        t.named_kinds |= 1u32.checked_shl(d.kind as u32).unwrap_or(1 << 31);
        t.link_sum = t.link_sum.wrapping_add(link_mix(dir, pos, it.val));
        t.first.get_or_insert((dir, pos));
    }

    fn readdir(&mut self, g: &mut NsGroup, it: &ItemView<'_>) {
        let pos = it.key.second;
        let reason = match g.dirents.remove(&pos) {
            None => "a readdir item without its entry by name",
            Some(h) if h != bytes_hash(it.val) => "the readdir item and the entry differ",
            Some(_) if it.key.third != 0 || it.key.fourth != 0 => "a malformed readdir key",
            Some(_) => return,
        };
        self.fault(g.ino, NsFault::EntryItems { pos, reason });
    }

    fn backref(&mut self, g: &mut NsGroup, it: &ItemView<'_>) {
        let Some((d, _)) = self.entry(it) else {
            return;
        };
        let (dir, pos) = (it.key.second, it.key.third);
        if d.ino.get() != g.ino || d.pos.get() != pos || it.key.fourth != 0 {
            return self.bad_item(
                it,
                "the back-reference's inode or position is not its key's",
            );
        }
        let t = self.inodes.entry(g.ino).or_default();
        t.backrefs += 1;
        t.backref_sum = t.backref_sum.wrapping_add(link_mix(dir, pos, it.val));
    }

    fn extent(&mut self, g: &mut NsGroup, it: &ItemView<'_>) {
        // A value that does not decode is reported by the block walk.
        let Ok(d) = DataExtent::read_from_bytes(it.val) else {
            return;
        };
        let (start, len) = (it.key.second, d.len.get());
        let flags = d.flags.get();
        // An offline extent holds no blocks and may be longer (fs module `archive`).
        let offline = flags & DATA_EXTENT_FLAG_OFFLINE != 0;
        let Some(end) = start.checked_add(len).filter(|_| {
            len > 0
                && (offline || len <= crate::fs::MAX_EXTENT_BLOCKS)
                && it.key.third == 0
                && it.key.fourth == 0
        }) else {
            return self.bad_item(it, format!("an extent of {len} blocks"));
        };
        if offline && (flags != DATA_EXTENT_FLAG_OFFLINE || d.blkno.get() != 0) {
            // Reported by the block walk too; the counts leave it out.
            return self.bad_item(it, "an offline extent with other flags or a block");
        }
        g.extents += 1;
        if offline {
            g.offline += len;
        } else {
            g.online += len;
            self.inodes.entry(g.ino).or_default().data_blocks += len;
        }
        if start < g.ext_end {
            self.fault(
                g.ino,
                NsFault::ExtentOverlap {
                    start,
                    prev_end: g.ext_end,
                },
            );
        }
        g.ext_end = g.ext_end.max(end);
        let Some(inode) = g.inode else { return };
        let size = inode.size.get();
        let written = flags & DATA_EXTENT_FLAG_UNWRITTEN == 0;
        let truncating = self.inodes.get(&g.ino).is_some_and(|t| t.truncate);
        if written && !truncating && !g.past_size_reported && end > size.div_ceil(DATA_BLOCK_SIZE) {
            g.past_size_reported = true;
            self.fault(g.ino, NsFault::ExtentPastSize { start, len, size });
        }
    }

    /// What can be told of an inode from its own items.
    fn finish_group(&mut self, g: NsGroup) {
        let ino = g.ino;
        for pos in g.dirents.keys() {
            self.fault(
                ino,
                NsFault::EntryItems {
                    pos: *pos,
                    reason: "an entry by name without its readdir item",
                },
            );
        }
        let Some(inode) = g.inode else {
            if g.items > 0 {
                self.fault(ino, NsFault::ItemsWithoutInode { items: g.items });
            }
            return;
        };
        let Some(kind) = crate::fs::FileKind::from_mode(inode.mode.get()) else {
            self.fault(
                ino,
                NsFault::BadInode {
                    reason: format!("mode {:o} names no kind of file", inode.mode.get()),
                },
            );
            return;
        };
        use crate::fs::FileKind;
        let nlink = inode.nlink.get();
        let t = self.inodes.entry(ino).or_default();
        t.exists = true;
        t.kind = kind.dtype();
        t.nlink = nlink;
        let index = t.index;
        let seqs = [
            Some(inode.meta_seq.get()),
            (kind == FileKind::File).then(|| inode.data_seq.get()),
        ];
        for (i, (seq, (found, first))) in seqs.into_iter().zip(index).enumerate() {
            let right = match seq {
                Some(s) => found == 1 && first == s,
                None => found == 0,
            };
            if !right {
                let index = index_name(i);
                self.fault(
                    ino,
                    NsFault::IndexItems {
                        index,
                        seq,
                        found,
                        first,
                    },
                );
            }
        }
        let size = inode.size.get();
        if kind == FileKind::Dir && nlink > 0 {
            if size != g.name_bytes {
                self.fault(
                    ino,
                    NsFault::DirSize {
                        size,
                        expected: g.name_bytes,
                    },
                );
            }
            if nlink as u64 != 2 + g.subdirs {
                self.fault(
                    ino,
                    NsFault::LinkCount {
                        nlink,
                        expected: 2 + g.subdirs,
                    },
                );
            }
        } else if g.entries > 0 {
            self.fault(ino, NsFault::EntriesInNonDir { entries: g.entries });
        }
        if kind != FileKind::File && g.extents > 0 {
            self.fault(ino, NsFault::ExtentsOnNonFile { extents: g.extents });
        }
        // An inode being deleted (no links: its extents go in steps) keeps its counts.
        let counted = (inode.online_blocks.get(), inode.offline_blocks.get());
        if kind == FileKind::File && nlink > 0 && counted != (g.online, g.offline) {
            self.fault(
                ino,
                NsFault::BlockCounts {
                    online: counted.0,
                    offline: counted.1,
                    extents_online: g.online,
                    extents_offline: g.offline,
                },
            );
        }
        if kind == FileKind::Symlink && g.symlink_bytes != size {
            self.fault(
                ino,
                NsFault::SymlinkLength {
                    size,
                    found: g.symlink_bytes,
                },
            );
        } else if kind != FileKind::Symlink && g.symlink_chunks > 0 {
            self.fault(
                ino,
                NsFault::BadInode {
                    reason: format!("symlink target chunks on a {}", dtype_name(kind.dtype())),
                },
            );
        }
    }

    /// Whether each directory is reachable from the root: its one entry's directory is,
    /// up to the root, without a loop.
    fn reachable_dirs(&self) -> std::collections::HashMap<u64, bool> {
        let dir = crate::fs::FileKind::Dir.dtype();
        let mut known = std::collections::HashMap::new();
        known.insert(ROOT_INO, true);
        for (&ino, t) in &self.inodes {
            if !t.exists || t.kind != dir || known.contains_key(&ino) {
                continue;
            }
            let mut path = vec![ino];
            let mut on_path = std::collections::HashSet::from([ino]);
            let reached = loop {
                let cur = path.last().copied().unwrap_or(ino);
                let parent = self
                    .inodes
                    .get(&cur)
                    .and_then(|t| t.first.as_ref())
                    .map(|f| f.0);
                let Some(p) = parent else { break false };
                if let Some(&r) = known.get(&p) {
                    break r;
                }
                let live_dir = self
                    .inodes
                    .get(&p)
                    .is_some_and(|t| t.exists && t.kind == dir && t.nlink > 0);
                if !live_dir || !on_path.insert(p) {
                    break false;
                }
                path.push(p);
            };
            for p in path {
                known.insert(p, reached);
            }
        }
        known
    }

    fn finish(&mut self) -> Result<(), BtreeError> {
        let dir = crate::fs::FileKind::Dir.dtype();
        match self.inodes.get(&ROOT_INO) {
            Some(t) if t.exists && t.kind == dir => {}
            Some(t) if t.exists => self.fault(ROOT_INO, NsFault::RootNotDir),
            _ => self.fault(ROOT_INO, NsFault::RootMissing),
        }
        let reach = self.reachable_dirs();
        // Entries in directories the root does not reach do not make what they name
        // reachable: count them (only damaged volumes have such directories).
        let mut lost: Vec<u64> = reach
            .iter()
            .filter(|(_, r)| !**r)
            .map(|(d, _)| *d)
            .collect();
        lost.sort_unstable();
        for d in lost {
            let mut named = Vec::new();
            self.read(readdir_key(d, 0), readdir_key(d, u64::MAX), |it| {
                if let Ok((e, _)) = Dirent::read_from_prefix(it.val) {
                    named.push(e.ino.get());
                }
            })?;
            for ino in named {
                self.inodes.entry(ino).or_default().named_unreachable += 1;
            }
        }
        let mut inos: Vec<u64> = self.inodes.keys().copied().collect();
        inos.sort_unstable();
        let mut suspects = Vec::new();
        for ino in inos {
            let Some(t) = self.inodes.get(&ino).cloned() else {
                continue;
            };
            if !t.exists {
                if let Some((dir, pos)) = t.first {
                    let val = self.get(readdir_key(dir, pos))?.unwrap_or_default();
                    let name = match Dirent::read_from_prefix(&val) {
                        Ok((_, name)) => String::from_utf8_lossy(name).into_owned(),
                        Err(_) => String::new(),
                    };
                    let entries = t.named;
                    self.fault(ino, NsFault::EntryToMissing { dir, name, entries });
                }
                if t.orphan {
                    self.fault(ino, NsFault::OrphanWithoutInode);
                }
                if t.truncate {
                    self.fault(ino, NsFault::TruncateWithoutInode);
                }
                for (i, &(items, first)) in t.index.iter().enumerate() {
                    if items > 0 {
                        let index = index_name(i);
                        self.fault(
                            ino,
                            NsFault::IndexWithoutInode {
                                index,
                                items,
                                first,
                            },
                        );
                    }
                }
                if t.release {
                    self.fault(ino, NsFault::ReleaseWithoutInode);
                }
                continue;
            }
            if t.named_kinds & !(1u32 << (t.kind as u32 & 31)) != 0 {
                let entry = (0..32u8)
                    .filter(|b| t.named_kinds & (1 << b) != 0 && *b != t.kind)
                    .map(dtype_name)
                    .collect::<Vec<_>>()
                    .join(", ");
                let dir = t.first.as_ref().map_or(0, |f| f.0);
                let inode = dtype_name(t.kind);
                self.fault(ino, NsFault::EntryKind { dir, entry, inode });
            }
            let is_dir = t.kind == dir;
            if is_dir {
                let want = if ino == ROOT_INO { 0 } else { 1 };
                if (t.nlink > 0 && t.named != want) || (t.nlink == 0 && t.named > 0) {
                    self.fault(ino, NsFault::DirEntries { entries: t.named });
                }
            } else if t.nlink as u64 != t.named && t.named > 0 {
                // (No entries at all with links: reported as a leak below.)
                self.fault(
                    ino,
                    NsFault::LinkCount {
                        nlink: t.nlink,
                        expected: t.named,
                    },
                );
            }
            if t.nlink == 0 && !t.orphan {
                self.fault(ino, NsFault::UnlinkedNotOrphan);
            }
            if t.nlink > 0 && t.orphan {
                self.fault(ino, NsFault::OrphanLinked { nlink: t.nlink });
            }
            let reached = if is_dir {
                reach.get(&ino).copied().unwrap_or(false)
            } else {
                t.named > t.named_unreachable
            };
            if t.nlink > 0 && !reached && ino != ROOT_INO {
                self.fault(
                    ino,
                    NsFault::Unreachable {
                        nlink: t.nlink,
                        data_blocks: t.data_blocks,
                    },
                );
            }
            if t.backrefs != t.named || t.backref_sum != t.link_sum {
                suspects.push(ino);
            }
        }
        for ino in suspects {
            self.backrefs_of(ino)?;
        }
        self.report.inodes = self.inodes.values().filter(|t| t.exists).count() as u64;
        Ok(())
    }

    /// Name the back-references of `ino` that have no entry, and count its entries
    /// without one.
    fn backrefs_of(&mut self, ino: u64) -> Result<(), BtreeError> {
        let mut refs = Vec::new();
        self.read(
            link_backref_key(ino, 0, 0),
            link_backref_key(ino, u64::MAX, u64::MAX),
            |it| refs.push((it.key.second, it.key.third, it.val.to_vec())),
        )?;
        let mut matched = 0u64;
        for (dir, pos, val) in refs {
            if self.get(readdir_key(dir, pos))?.as_deref() == Some(&val[..]) {
                matched += 1;
            } else {
                self.fault(ino, NsFault::DanglingBackref { dir, pos });
            }
        }
        let named = self.inodes.get(&ino).map_or(0, |t| t.named);
        if named > matched {
            self.fault(
                ino,
                NsFault::MissingBackrefs {
                    count: named - matched,
                },
            );
        }
        Ok(())
    }
}

/// What [`check_with_options`] checks.
#[derive(Clone, Copy, Debug)]
pub struct CheckOptions {
    /// Run the namespace pass (on by default). Off only for volumes whose items are not
    /// a filesystem (tests of the item engine write raw items into the filesystem zone).
    pub namespace: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { namespace: true }
    }
}

/// Check the volume on `meta` and `data` (see the module comment), its blocks and its
/// namespace. `Err` only when the supers cannot be read or do not fit the devices;
/// everything after that is reported as problems.
pub fn check(
    meta: &Arc<dyn BlockDevice>,
    data: &Arc<dyn BlockDevice>,
) -> Result<CheckReport, VolumeError> {
    check_with_progress(meta, data, &mut |_| {})
}

/// [`check`] without the namespace pass: the blocks, allocators and item trees of a
/// volume whose items are not a filesystem (tests of the item engine).
pub fn check_blocks(
    meta: &Arc<dyn BlockDevice>,
    data: &Arc<dyn BlockDevice>,
) -> Result<CheckReport, VolumeError> {
    check_with_options(meta, data, CheckOptions { namespace: false }, &mut |_| {})
}

/// [`check`], calling `progress` every thousand or so metadata blocks and once at the
/// end.
pub fn check_with_progress(
    meta: &Arc<dyn BlockDevice>,
    data: &Arc<dyn BlockDevice>,
    progress: &mut dyn FnMut(Progress),
) -> Result<CheckReport, VolumeError> {
    check_with_options(meta, data, CheckOptions::default(), progress)
}

/// [`check_with_progress`] with [`CheckOptions`].
pub fn check_with_options(
    meta: &Arc<dyn BlockDevice>,
    data: &Arc<dyn BlockDevice>,
    opts: CheckOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<CheckReport, VolumeError> {
    let (sb, damaged) = volume::read_volume_super_slots(&**meta, &**data)?;
    let geo = volume::geometry(&sb);
    let cache = BlockCache::new(meta.clone(), geo, CACHE_BYTES);
    let list_len = |h: &RawAllocListHead| h.total_nr.get();
    let free_estimate = sb
        .meta_alloc
        .iter()
        .map(|a| a.total_len.get())
        .chain(sb.server_meta_avail.iter().map(list_len))
        .chain(sb.server_meta_freed.iter().map(list_len))
        .fold(0u64, u64::saturating_add);
    let mut w = Walker {
        cache: &cache,
        meta: SpaceMap::new(Space::Meta, geo.first_blkno, geo.total_blocks),
        data: SpaceMap::new(Space::Data, DATA_START_BLKNO, sb.total_data_blocks.get()),
        report: CheckReport::default(),
        progress,
        expected: geo
            .total_blocks
            .saturating_sub(geo.first_blkno)
            .saturating_sub(free_estimate),
        log_extents: BTreeMap::new(),
        log_inodes: BTreeMap::new(),
        root_inodes: 0,
        log_names: Vec::new(),
        fs_blocks: vec![
            0;
            geo.total_blocks
                .saturating_sub(geo.first_blkno)
                .div_ceil(64) as usize
        ],
    };
    for d in damaged {
        w.report.push(Problem::SuperSlot(d));
    }
    // The log trees first: their data extent items decide which versions in the
    // filesystem root still reference data blocks.
    let mut records = Vec::new();
    let mut item_faults = w.tree(
        "logs_root",
        &sb.logs_root.into(),
        Leaves::LogRecords(&mut records),
    );
    for lt in &records {
        item_faults += w.log_tree(lt);
    }
    item_faults += w.tree_blocks(
        "fs_root",
        &sb.fs_root.into(),
        (Key::MIN, Key::MAX),
        Leaves::FsItems,
        Blocks::Fs,
    );
    w.log_extent_winners();
    // The inode count, unless the walks above could not read everything.
    if w.report.is_clean() {
        let counted = w.root_inodes + w.log_inodes.values().filter(|l| l.1).count() as u64;
        let recorded = records.iter().fold(sb.inode_count.get(), |n, lt| {
            n.wrapping_add(lt.inode_count_delta.get())
        });
        if counted != recorded {
            w.report.push(Problem::InodeCount { counted, recorded });
        }
    }
    w.log_inodes.clear();
    let mut srch_xattrs = None;
    if opts.namespace && item_faults == 0 {
        let roots = std::iter::once(sb.fs_root.into())
            .chain(records.iter().map(|lt| BtreeRoot::from(lt.item_root)))
            .filter(|r: &BtreeRoot| !r.is_empty())
            .collect();
        let mut ns = Namespace {
            cache: &cache,
            roots,
            report: &mut w.report,
            inodes: Default::default(),
            totals: BTreeMap::new(),
            indx_items: Default::default(),
            srch: Vec::new(),
        };
        match ns.run() {
            Ok(()) => srch_xattrs = Some(std::mem::take(&mut ns.srch)),
            Err(e) => ns.report.push(tree_problem(
                "namespace",
                BtreeRoot::from(sb.fs_root).blk,
                e,
            )),
        }
        w.report.namespace_checked = true;
    }
    let (srch_faults, srch_files) = w.srch(&sb.srch_root.into(), &records);
    if let (Some(xattrs), 0) = (srch_xattrs, srch_faults) {
        w.srch_agree(&srch_files, xattrs);
    }
    let mut merge = MergeRecords::default();
    w.tree(
        "log_merge",
        &sb.log_merge.into(),
        Leaves::MergeRecords(&mut merge),
    );
    w.merge_blocks(&merge, &sb.fs_root.into());
    w.tree(
        "mounted_clients",
        &sb.mounted_clients.into(),
        Leaves::Ignore,
    );
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
    for lt in crate::logs::all_log_trees(&cache, &logs)? {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(w: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        bit_runs(w, |b, l| out.push((b, l)));
        out
    }

    #[test]
    fn bit_runs_find_every_run() {
        assert_eq!(runs(0), vec![]);
        assert_eq!(runs(u64::MAX), vec![(0, 64)]);
        assert_eq!(runs(1 << 63), vec![(63, 1)]);
        assert_eq!(runs(0b1011_0110), vec![(1, 2), (4, 2), (7, 1)]);
        assert_eq!(runs(!1), vec![(1, 63)]);
    }

    #[test]
    fn problems_beyond_the_cap_are_counted_not_kept() {
        let mut r = CheckReport::default();
        let mut m = SpaceMap::new(Space::Data, 0, 3 * MAX_PROBLEMS as u64);
        // Every other block free: a leak per block in between.
        for b in (0..3 * MAX_PROBLEMS as u64).step_by(2) {
            m.mark(b, 1, true, &mut r).unwrap();
        }
        m.finish(&mut r);
        assert_eq!(r.problems.len(), MAX_PROBLEMS);
        assert_eq!(r.problem_count, 3 * MAX_PROBLEMS as u64 / 2);
        assert!(!r.is_clean());
    }

    #[test]
    fn clashes_and_leaks_are_gathered_into_runs() {
        let mut r = CheckReport::default();
        let mut m = SpaceMap::new(Space::Meta, 10, 300);
        m.mark(10, 200, true, &mut r).unwrap();
        // Referenced across word boundaries, partly free.
        m.mark(150, 100, false, &mut r).unwrap();
        assert_eq!(m.mark(150, 1, false, &mut r), Ok(true));
        assert_eq!(
            m.mark(299, 2, false, &mut r),
            Err(Run { start: 299, len: 2 })
        );
        assert_eq!(m.mark(5, 1, true, &mut r), Err(Run { start: 5, len: 1 }));
        assert_eq!(m.mark(7, 0, true, &mut r), Err(Run { start: 7, len: 0 }));
        let counts = m.finish(&mut r);
        let run = |start, len| Run { start, len };
        assert_eq!(
            r.problems,
            vec![
                Problem::ReferencedTwice {
                    space: Space::Meta,
                    run: run(150, 1)
                },
                Problem::FreeAndReferenced {
                    space: Space::Meta,
                    run: run(150, 60)
                },
                Problem::Leaked {
                    space: Space::Meta,
                    run: run(250, 50)
                },
            ]
        );
        assert_eq!(
            counts,
            SpaceCounts {
                total: 290,
                referenced: 100,
                free: 140
            }
        );
    }
}
