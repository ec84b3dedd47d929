//! The log merge, server side: finalization, requests, completions, splicing and freeing.
//!
//! Finalization: once a mount's log tree grows past [`MergeConfig::finalize_height`] (or
//! its allocator is LOW, or a test forces it), the server finalizes every log tree that is
//! not in an open transaction, and each mount's tree as it commits; the merge starts once
//! no transaction that began before the finalization is still open. So every finalized
//! item is older than every item of a tree still being written, and a deletion merged into
//! the filesystem root can never uncover an older version in a live tree.
//!
//! The merge's state lives in the `log_merge` btree: a status, the key ranges left, the
//! requests handed to mounts, their completions, and the blocks being freed. Requests
//! cover the subtree of the filesystem root (its last parent level) holding the next
//! input key, and never two of the same parent. A completion is checked against the
//! request it answers (the mount it was given to, its range, its subtree's height, its
//! lists) and refused, changing nothing, if it does not fit; a completion of a request
//! that is gone (a resend) changes nothing either.
//!
//! Splicing waits until no request is outstanding (the parents' bounds must not move
//! under a mount's merge) and then goes a completion at a time. Phase A replaces the
//! parent reference, gives the completion's unused and freed blocks back, and *trims* the
//! merged range out of every input tree ([`crate::btree::TreeTxn::trim`]), all in one
//! change: from that commit on, readers find the range in the root and nowhere else, so
//! no version is counted twice (a total summing to zero can leave the root), and the
//! inputs' blocks come back as the merge goes rather than at its end. Subtrees the trim
//! detached are freed a budget at a time through freeing records.
//! The completion is marked spliced in the same change, so a restart never splices it
//! twice. Phase B rebalances where a merge stopped early and queues its remainder. While
//! splicing, `nr_complete` is held at the batch size so no request is handed out between
//! those commits. When no range is left, the end of the merge removes the (by then empty)
//! inputs from the log trees and the status.
//!
//! Pacing, as the original's "splice in many commits": before each unit of splicing,
//! rebalancing or freeing, the work stops and the progress is committed when the server's
//! headroom (free metadata blocks less what the commit itself will write) has fallen
//! below a quarter of what it was at the first unit of the commit, or below what one unit
//! may need ([`ServerCore::merge_unit_blocks`]), whichever is more; the next unit goes on
//! in the next commit, with the blocks this one freed. So the merge's own work never runs
//! the allocator dry. The commit-size bound ([`MergeConfig::splice_commit_blocks`]) is kept
//! as well, for latency. If not even one unit fits at the start of a commit, the merge is
//! *stalled*: it says so ([`ServerCore::merge_stall`], [`MergeCounters::stalls`]) and waits
//! for space instead of failing.
//!
//! Space for the merge: a pass of requests is sized to what the volume can hold
//! ([`super::AllocLimits::merge_blocks`]); requests may take blocks down to the splice
//! reserve (two units and the server's own commits), and mounts' refills stop above the
//! requests' share, so mounts filling the volume leave the merge what it needs to finish
//! and give the space back.
//!
//! Durable commits are the merge's main fixed cost, so work that may share a commit
//! does: the completion that makes splicing due starts splicing in the commit that
//! records it, the end of the merge follows in that commit when splicing finishes there,
//! and freeing starts in the commit that ends the merge -- each only while the commit has
//! room, the rest going on a commit at a time as above. A small merge is then two server
//! commits: its request, and its completion with everything after it.

use super::{release_list, ServerCore};
use crate::alloc::list::write_new_list;
use crate::btree::{self, FreeProgress, MergeCursor, TreeTxn};
use crate::format::*;
use crate::logs::{all_log_trees, is_input};
use crate::volume::{Result, VolumeError};
use std::ops::ControlFlow;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// How the log merge is paced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergeConfig {
    /// A log tree this high is finalized (the original: 3, "height > 2").
    pub finalize_height: u8,
    /// Requests plus completions outstanding at once; splicing starts when this many
    /// completions wait (or no range is left).
    pub batch: u64,
    /// Metadata blocks given to each request.
    pub request_blocks: usize,
    /// A mount's merge stops after dirtying this many blocks.
    pub merge_dirty_blocks: usize,
    /// Splicing and freeing stop for a commit once the commit has dirtied this many blocks.
    pub splice_commit_blocks: usize,
    /// Blocks freed per unit of freeing work.
    pub free_budget: usize,
    /// Pace each phase ([`MergePhase`]) of merge work as if the server's headroom were at
    /// most this many blocks when a commit's merge work begins: tests reproduce a nearly
    /// full device's pacing with it on any volume (`u64::MAX`, the default, paces by the
    /// real headroom alone).
    pub headroom_limit: [u64; 3],
}

impl MergeConfig {
    /// The defaults, with requests sized so that a pass of them fits what the volume
    /// sets aside for the merge ([`super::AllocLimits::merge_blocks`]).
    pub fn for_limits(limits: &super::AllocLimits) -> MergeConfig {
        let d = MergeConfig::default();
        let batch = (limits.merge_blocks / 32).clamp(1, d.batch);
        let per_request = (limits.merge_blocks / batch) as usize;
        let request_blocks = d
            .request_blocks
            .min(limits.client_meta_target)
            .min(per_request)
            .max(32);
        MergeConfig {
            batch,
            request_blocks,
            merge_dirty_blocks: request_blocks.saturating_sub(4),
            ..d
        }
    }
}

impl Default for MergeConfig {
    fn default() -> Self {
        MergeConfig {
            finalize_height: 3,
            batch: 8,
            request_blocks: 1028,
            merge_dirty_blocks: 1024,
            splice_commit_blocks: 4096,
            free_budget: 62,
            headroom_limit: [u64::MAX; 3],
        }
    }
}

/// A phase of the merge's work that pauses to commit (indexes [`MergeCounters`] arrays).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergePhase {
    /// Phase A: splicing completions into the filesystem root (and the end of the merge).
    Splice = 0,
    /// Phase B: rebalancing after splices, queueing remainders.
    Rebalance = 1,
    /// Freeing what the merge no longer needs (trimmed subtrees, inputs).
    Free = 2,
}

/// Counts of log merge work, for tests and statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeCounters {
    /// Requests handed out.
    pub requests: u64,
    /// Completions spliced into the filesystem root.
    pub spliced: u64,
    /// Merges finished.
    pub merges: u64,
    /// Times a phase stopped to commit because free space ran low (by [`MergePhase`]).
    pub low_space_pauses: [u64; 3],
    /// Times a phase stopped to commit because the commit was full (by [`MergePhase`]).
    pub full_commit_pauses: [u64; 3],
    /// Times merge work found too little free space for even one unit at the start of a
    /// commit, and waited.
    pub stalls: u64,
    /// Completions refused (wrong mount, range or subtree, unreadable lists).
    pub refused: u64,
    /// Input subtrees detached by trims (and then freed).
    pub trimmed_subtrees: u64,
    /// The most headroom one unit of splicing, rebalancing or freeing used.
    pub max_unit_blocks: u64,
    /// The unit estimate ([`ServerCore::merge_unit_blocks`]) in force when that happened.
    pub unit_estimate: u64,
}

impl MergeCounters {
    /// Every pause, for any reason, of any phase.
    pub fn pauses(&self) -> u64 {
        self.low_space_pauses.iter().sum::<u64>() + self.full_commit_pauses.iter().sum::<u64>()
    }
}

/// Why merge work is waiting for space (see [`ServerCore::merge_stall`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergeStall {
    /// The phase that could not start a unit.
    pub phase: MergePhase,
    /// The server's headroom then, in metadata blocks.
    pub headroom: u64,
    /// What one unit may need.
    pub need: u64,
}

/// The pacing of merge work within the open server commit.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct MergePace {
    /// Headroom at the first unit of this commit.
    start: Option<u64>,
    /// The real headroom then (`start` may be limited, see
    /// [`MergeConfig::headroom_limit`]).
    first: Option<u64>,
    /// Units done in this commit.
    units: u64,
    /// The real headroom before the unit in progress, and what it was thought to need.
    before: u64,
    before_need: u64,
    /// Set when a unit could not start at the beginning of a commit; cleared by progress.
    pub(super) stall: Option<MergeStall>,
}

impl MergePace {
    /// A new commit opens: its pacing starts afresh (a stall is kept until work goes on).
    pub(super) fn commit_done(&mut self) {
        self.start = None;
        self.first = None;
        self.units = 0;
    }
}

/// Whether a unit of merge work may go on in this commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Room {
    Go,
    /// Commit first, then go on.
    Pause,
    /// Not even one unit fits at the start of a commit.
    Stall,
}

impl Room {
    /// What `get_log_merge` answers when the work must stop here (`None`: go on).
    fn stop(self) -> Option<MergeStep> {
        match self {
            Room::Go => None,
            Room::Pause => Some(MergeStep::InProgress),
            Room::Stall => Some(MergeStep::Nothing),
        }
    }
}

/// What a call to [`ServerCore::get_log_merge`] came to.
#[derive(Clone, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum MergeStep {
    /// A request for the mount.
    Request(LogMergeRequest),
    /// Nothing to hand out now.
    Nothing,
    /// Work was done and must be committed before more (call again).
    InProgress,
}

fn decode<T: FromBytes>(val: &[u8], what: &'static str) -> Result<T> {
    T::read_from_bytes(val).map_err(|_| {
        VolumeError::Btree(btree::BtreeError::Corrupt {
            blkno: 0,
            reason: what,
        })
    })
}

fn status_key() -> Key {
    log_merge_key(merge_zone::STATUS, 0, 0)
}

pub(super) fn zone_items<R: crate::block::BlockRead + ?Sized>(
    rd: &R,
    root: &BtreeRoot,
    zone: u8,
) -> Result<Vec<btree::Item>> {
    let lo = Key::new(zone, 0, 0, 0, 0, 0);
    let hi = Key::new(zone, u64::MAX, 255, u64::MAX, u64::MAX, 255);
    Ok(btree::items(rd, root, &lo, &hi)?)
}

/// Record `root` (a whole input tree, or a subtree a trim detached) for freeing from its
/// first key, under key `(seq, nr)`.
fn put_freeing(
    t: &mut TreeTxn<'_>,
    log_merge: &mut BtreeRoot,
    seq: u64,
    nr: u64,
    root: BtreeRoot,
) -> btree::Result<()> {
    let f = LogMergeFreeing {
        root: root.into(),
        key: (&Key::MIN).into(),
        seq: seq.into(),
    };
    t.force(
        log_merge,
        &log_merge_key(merge_zone::FREEING, seq, nr),
        f.as_bytes(),
    )
}

/// The seq below which a tree must join the finalized group of finalize seq `f`:
/// above `f` and above every item of a finalized tree. A tree finalized after `f` was
/// chosen (one whose transaction was open then) may hold items written under lock
/// grants made since, whose seqs pass `f`; another mount's tree that began after `f`
/// may hold an older version of such an item, which must be merged with it, never
/// after it (a deletion merged into the root first would let the older version show
/// again).
pub(super) fn group_threshold(trees: &[LogTrees], f: u64) -> u64 {
    trees
        .iter()
        .filter(|t| t.flags.get() & LOG_TREES_FLAG_FINALIZED != 0)
        .map(|t| t.max_item_seq.get().saturating_add(1))
        .fold(f, u64::max)
}

impl ServerCore {
    /// The merge pacing in use.
    pub fn merge_config(&self) -> &MergeConfig {
        &self.merge
    }

    /// Change the merge pacing (tests and benches use small values).
    pub fn set_merge_config(&mut self, cfg: MergeConfig) {
        self.merge = cfg;
    }

    /// Finalize log trees at the next opportunity whatever their size (tests, and an
    /// administrator forcing a merge).
    pub fn force_finalize(&mut self) {
        self.force_finalize = true;
    }

    /// The status of the running merge, if any.
    pub fn merge_status(&self) -> Result<Option<LogMergeStatus>> {
        match btree::lookup(&self.wri, &self.roots.log_merge, &status_key())? {
            Some(it) => Ok(Some(decode(&it.val, "merge status of the wrong size")?)),
            None => Ok(None),
        }
    }

    /// Called by `get_log_trees` with the mount's committed tree: finalize it (returning
    /// the fresh tree that replaces it) if the merge wants it, and start the merge once
    /// every tree that must be in it is finalized.
    pub(crate) fn finalize_for(&mut self, lt: LogTrees) -> Result<LogTrees> {
        if lt.flags.get() & LOG_TREES_FLAG_FINALIZED != 0 {
            // Finalized by the server while the mount was between transactions: the
            // mount goes on in a fresh tree, which takes the allocators.
            return self.successor(lt);
        }
        if self.merge_status()?.is_some() {
            return Ok(lt);
        }
        let trees = all_log_trees(&self.wri, &self.roots.logs_root)?;
        // Trees finalized for the coming merge share one finalize seq F: every tree that
        // may hold an item older than F (its first transaction began before F) must join
        // them, and none that began after. A tree's current transaction is not enough: a
        // tree spans many transactions, and its old items are as old as its first.
        let group = trees
            .iter()
            .filter(|t| t.flags.get() & LOG_TREES_FLAG_FINALIZED != 0)
            .map(|t| t.finalize_seq.get())
            .min();
        let ours: BtreeRoot = lt.item_root.into();
        let low = lt.meta_avail.flags.get() & ALLOC_FLAG_LOW != 0;
        let want = !ours.is_empty()
            && match group {
                Some(f) => lt.first_trans_seq.get() < group_threshold(&trees, f),
                None => ours.height >= self.merge.finalize_height || low || self.force_finalize,
            };
        if !want {
            return self.maybe_start_merge().map(|_| lt);
        }
        self.force_finalize = false;
        let (fseq, threshold) = match group {
            Some(f) => (f, group_threshold(&trees, f)),
            None => {
                let f = self.next_seq();
                (f, f)
            }
        };
        // Every other tree that began before the threshold, is not being written and
        // holds items goes with ours.
        let others: Vec<LogTrees> = trees
            .into_iter()
            .filter(|t| {
                t.rid != lt.rid
                    && t.flags.get() & LOG_TREES_FLAG_FINALIZED == 0
                    && t.first_trans_seq.get() < threshold
                    && t.get_trans_seq.get() <= t.commit_trans_seq.get()
                    && !BtreeRoot::from(t.item_root).is_empty()
            })
            .collect();
        self.with_txn(|t, r| {
            for mut o in others {
                o.flags = (o.flags.get() | LOG_TREES_FLAG_FINALIZED).into();
                o.finalize_seq = fseq.into();
                t.force(
                    &mut r.logs_root,
                    &log_trees_key(o.rid.get(), o.nr.get()),
                    o.as_bytes(),
                )?;
            }
            Ok(())
        })?;
        // Ours is finalized; the mount goes on in a fresh tree that takes its allocators.
        let mut fin = lt;
        fin.flags = (fin.flags.get() | LOG_TREES_FLAG_FINALIZED).into();
        fin.finalize_seq = fseq.into();
        let next = self.successor(fin)?;
        self.maybe_start_merge()?;
        Ok(next)
    }

    /// Move a finalized tree's allocators to a fresh tree of the same mount.
    fn successor(&mut self, fin: LogTrees) -> Result<LogTrees> {
        let mut next = fin;
        next.nr = (fin.nr.get() + 1).into();
        next.item_root = BtreeRoot::EMPTY.into();
        next.bloom_ref = BlockRef::NONE.into();
        next.max_item_seq = 0.into();
        next.finalize_seq = 0.into();
        next.flags = 0.into();
        next.inode_count_delta = 0.into();
        // Set when the mount's next transaction opens.
        next.first_trans_seq = 0.into();
        let mut bare = fin;
        bare.meta_avail = RawAllocListHead::default();
        bare.meta_freed = RawAllocListHead::default();
        bare.data_avail = RawAllocRoot::default();
        bare.data_freed = RawAllocRoot::default();
        // The srch log file goes on with the mount too (one record names it).
        bare.srch_file = RawSrchFile::default();
        self.with_txn(|t, r| {
            t.force(
                &mut r.logs_root,
                &log_trees_key(bare.rid.get(), bare.nr.get()),
                bare.as_bytes(),
            )
        })?;
        Ok(next)
    }

    /// The mounts whose open transactions keep a finalized group from its merge (they
    /// must commit so that their trees can join it): the server asks them to.
    pub fn merge_blockers(&self) -> Result<Vec<(u64, u64)>> {
        if self.merge_status()?.is_some() {
            return Ok(Vec::new());
        }
        let trees = all_log_trees(&self.wri, &self.roots.logs_root)?;
        let Some(group) = trees
            .iter()
            .filter(|t| t.flags.get() & LOG_TREES_FLAG_FINALIZED != 0)
            .map(|t| t.finalize_seq.get())
            .min()
        else {
            return Ok(Vec::new());
        };
        let threshold = group_threshold(&trees, group);
        Ok(trees
            .iter()
            .filter(|t| {
                t.flags.get() & LOG_TREES_FLAG_FINALIZED == 0
                    && t.first_trans_seq.get() < threshold
                    && t.get_trans_seq.get() > t.commit_trans_seq.get()
            })
            .map(|t| (t.rid.get(), t.get_trans_seq.get()))
            .collect())
    }

    /// Start the merge if finalized trees exist and no transaction that began before
    /// their finalization is still open.
    pub(super) fn maybe_start_merge(&mut self) -> Result<bool> {
        if self.merge_status()?.is_some() {
            return Ok(false);
        }
        let trees = all_log_trees(&self.wri, &self.roots.logs_root)?;
        let Some(group) = trees
            .iter()
            .filter(|t| t.flags.get() & LOG_TREES_FLAG_FINALIZED != 0)
            .map(|t| t.finalize_seq.get())
            .min()
        else {
            return Ok(false);
        };
        // A tree whose first transaction began before F and is not finalized may hold (or
        // still receive) items older than finalized ones: the merge waits for it.
        let threshold = group_threshold(&trees, group);
        let blocked = trees.iter().any(|t| {
            t.flags.get() & LOG_TREES_FLAG_FINALIZED == 0
                && t.first_trans_seq.get() < threshold
                && (t.get_trans_seq.get() > t.commit_trans_seq.get()
                    || !BtreeRoot::from(t.item_root).is_empty())
        });
        if blocked {
            return Ok(false);
        }
        let seq = self.next_seq();
        self.with_txn(|t, r| {
            let st = LogMergeStatus {
                next_range_key: (&Key::MIN).into(),
                seq: seq.into(),
                ..LogMergeStatus::new_zeroed()
            };
            t.force(&mut r.log_merge, &status_key(), st.as_bytes())?;
            let range = LogMergeRange {
                start: (&Key::MIN).into(),
                end: (&Key::MAX).into(),
            };
            t.force(
                &mut r.log_merge,
                &log_merge_key(merge_zone::RANGE, 0, 0),
                range.as_bytes(),
            )
        })?;
        Ok(true)
    }

    fn put_status(&mut self, st: &LogMergeStatus) -> Result<()> {
        self.with_txn(|t, r| t.force(&mut r.log_merge, &status_key(), st.as_bytes()))
    }

    fn merge_inputs(&self, merge_seq: u64) -> Result<Vec<LogTrees>> {
        Ok(all_log_trees(&self.wri, &self.roots.logs_root)?
            .into_iter()
            .filter(|t| is_input(t, merge_seq))
            .collect())
    }

    /// What one unit of splicing may allocate, at most, given the trees as they are and
    /// the merge's inputs: the path through the filesystem root to the parent replaced;
    /// per input, the trim's two edge paths, the right edge it extends and the root it
    /// may collapse (a path's worth each); the `log_merge` and
    /// `logs_root` paths changed, with the freeing records of the subtrees the trims
    /// detach (a request's worth of leaves, at most, per input); and the list entries of
    /// the blocks freed (the completion's two lists). A rebalance, or a unit of freeing,
    /// needs less.
    pub fn merge_unit_blocks(&self, inputs: &[LogTrees]) -> u64 {
        let bs = self.cache.geometry().block_size;
        let cap = alloc_list_capacity(bs).max(1) as u64;
        // Parents hold a child in 66 bytes; freeing records take 114 in a leaf.
        let fanout = (bs / 66).max(2) as u64;
        let per_leaf = (bs / 2 / 114).max(1) as u64;
        let req = self.merge.request_blocks as u64;
        let h = |r: &BtreeRoot| u64::from(r.height) + 1;
        let trims: u64 = inputs.iter().map(|t| 4 * h(&t.item_root.into())).sum();
        let records = inputs.len() as u64 * (req / fanout + 1);
        let frees = 2 * req;
        2 * h(&self.roots.fs_root)
            + trims
            + 2 * h(&self.roots.log_merge)
            + h(&self.roots.logs_root)
            + records / per_leaf
            + frees / cap
            + 6
    }

    /// Why merge work is waiting for space, if it is.
    pub fn merge_stall(&self) -> Option<MergeStall> {
        self.merge_pace.stall
    }

    /// Whether this commit has room for one more unit of `phase` needing up to `need`
    /// blocks (see the module comment); counts the pause or the stall if not.
    fn merge_room(&mut self, phase: MergePhase, need: u64) -> Room {
        let bs = self.cache.geometry().block_size;
        let real = self.pool.headroom(bs);
        let first = *self.merge_pace.first.get_or_insert(real);
        // Under a headroom limit: the limit, less what this commit has used since.
        let limit = self.merge.headroom_limit[phase as usize];
        let head = real.min(limit.saturating_sub(first.saturating_sub(real)));
        if self.merge_pace.units > 0 {
            // What the unit before this one used, against what it was thought to need.
            let used = self.merge_pace.before.saturating_sub(real);
            if used > self.merge_counters.max_unit_blocks {
                self.merge_counters.max_unit_blocks = used;
                self.merge_counters.unit_estimate = self.merge_pace.before_need;
            }
        }
        let start = *self.merge_pace.start.get_or_insert(head);
        if head < (start / 4).max(need) {
            if self.merge_pace.units == 0 {
                if self.merge_pace.stall.is_none() {
                    self.merge_counters.stalls += 1;
                }
                self.merge_pace.stall = Some(MergeStall {
                    phase,
                    headroom: head,
                    need,
                });
                return Room::Stall;
            }
            self.merge_counters.low_space_pauses[phase as usize] += 1;
            return Room::Pause;
        }
        if self.merge_pace.units > 0 && self.wri.dirty_blocks() >= self.merge.splice_commit_blocks {
            self.merge_counters.full_commit_pauses[phase as usize] += 1;
            return Room::Pause;
        }
        self.merge_pace.units += 1;
        self.merge_pace.before = real;
        self.merge_pace.before_need = need;
        self.merge_pace.stall = None;
        Room::Go
    }

    /// What the log merge has done since the server started.
    pub fn merge_counters(&self) -> MergeCounters {
        self.merge_counters
    }

    /// Hand mount `rid` a merge request, or do the splicing and freeing that must come
    /// first (see the module comment).
    pub fn get_log_merge(&mut self, rid: u64) -> Result<MergeStep> {
        if let Some(stop) = self.free_some()?.stop() {
            return Ok(stop);
        }
        let Some(mut st) = self.merge_status()? else {
            return Ok(MergeStep::Nothing);
        };
        loop {
            let ranges = zone_items(&self.wri, &self.roots.log_merge, merge_zone::RANGE)?;
            let splicing = st.flags.get() & MERGE_STATUS_FLAG_SPLICING != 0;
            if st.nr_requests.get() == 0
                && (splicing || ranges.is_empty() || st.nr_complete.get() >= self.merge.batch)
            {
                return self.splice(st);
            }
            if splicing || st.nr_requests.get() + st.nr_complete.get() >= self.merge.batch {
                return Ok(MergeStep::Nothing);
            }
            // The first range at or after the cursor. A range the cursor is inside of is
            // split there first: its part before the cursor waits for the next splice,
            // which sends the cursor back to the start.
            let from: Key = (&st.next_range_key).into();
            let mut pick: Option<(Key, LogMergeRange)> = None;
            let mut straddle: Option<(Key, LogMergeRange)> = None;
            for it in &ranges {
                let r: LogMergeRange = decode(&it.val, "merge range of the wrong size")?;
                let (s, e): (Key, Key) = ((&r.start).into(), (&r.end).into());
                if e < from {
                    continue;
                }
                if s < from {
                    straddle = Some((it.key, r));
                    break;
                }
                if pick.as_ref().is_none_or(|(_, p)| s < Key::from(&p.start)) {
                    pick = Some((it.key, r));
                }
            }
            if let Some((rkey, r)) = straddle {
                let id = self.next_seq();
                let before = from.prev().unwrap_or(Key::MIN);
                self.with_txn(|t, rt| {
                    let head = LogMergeRange {
                        start: r.start,
                        end: (&before).into(),
                    };
                    let tail = LogMergeRange {
                        start: (&from).into(),
                        end: r.end,
                    };
                    t.force(&mut rt.log_merge, &rkey, head.as_bytes())?;
                    t.force(
                        &mut rt.log_merge,
                        &log_merge_key(merge_zone::RANGE, id, 2),
                        tail.as_bytes(),
                    )
                })?;
                continue;
            }
            let Some((rkey, range)) = pick else {
                // Every range left is before the cursor: splice (even with nothing to
                // splice), which sends the cursor back to the start.
                if st.nr_requests.get() == 0 {
                    return self.splice(st);
                }
                return Ok(MergeStep::Nothing);
            };
            let (start, rend): (Key, Key) = ((&range.start).into(), (&range.end).into());
            // The first input item in the range; none means the range is done.
            let inputs = self.merge_inputs(st.seq.get())?;
            let roots: Vec<BtreeRoot> = inputs.iter().map(|t| t.item_root.into()).collect();
            let mut cur = MergeCursor::new(&roots, start, rend);
            let Some(first) = cur.next_item(&self.wri)? else {
                self.with_txn(|t, r| t.delete(&mut r.log_merge, &rkey))?;
                continue;
            };
            let p = btree::get_parent(&self.wri, &self.roots.fs_root, &first.key)?;
            let end = if p.end < rend { p.end } else { rend };
            let req_seq = self.next_seq();
            let subtree = self.roots.fs_root.height > 2;
            let n = self.merge.request_blocks;
            let Some(blocks) = self.take_pool_blocks(n, &inputs)? else {
                // No room for a request now. Splicing what is complete gives space back;
                // otherwise frees from commits and merges will make some.
                if st.nr_requests.get() == 0 && st.nr_complete.get() > 0 {
                    return self.splice(st);
                }
                return Ok(MergeStep::Nothing);
            };
            let logs_root = self.roots.logs_root;
            let mut req = LogMergeRequest {
                logs_root: logs_root.into(),
                root: p.subtree.into(),
                start: (&first.key).into(),
                end: (&end).into(),
                input_seq: st.seq,
                rid: rid.into(),
                seq: req_seq.into(),
                flags: if subtree {
                    MERGE_REQUEST_FLAG_SUBTREE
                } else {
                    0
                }
                .into(),
                ..LogMergeRequest::new_zeroed()
            };
            st.next_range_key = match p.end.next() {
                Some(k) if p.end != Key::MAX => (&k).into(),
                _ => (&Key::MAX).into(),
            };
            st.nr_requests = (st.nr_requests.get() + 1).into();
            let st2 = st;
            self.with_txn(|t, r| {
                req.meta_avail = write_new_list(t.wri, t.alloc, &blocks, 0)?;
                t.delete(&mut r.log_merge, &rkey)?;
                if end < rend {
                    if let Some(after) = end.next() {
                        let rest = LogMergeRange {
                            start: (&after).into(),
                            end: range.end,
                        };
                        t.force(&mut r.log_merge, &rkey, rest.as_bytes())?;
                    }
                }
                t.force(
                    &mut r.log_merge,
                    &log_merge_key(merge_zone::REQUEST, rid, req_seq),
                    req.as_bytes(),
                )?;
                t.force(&mut r.log_merge, &status_key(), st2.as_bytes())
            })?;
            self.merge_counters.requests += 1;
            return Ok(MergeStep::Request(req));
        }
    }

    /// Blocks the merge keeps for splicing whatever mounts and requests take: two units
    /// of its work and the server's own commits.
    pub(super) fn splice_reserve(&self, inputs: &[LogTrees]) -> u64 {
        2 * self.merge_unit_blocks(inputs) + (self.limits.server_list_target / 2) as u64
    }

    /// What the merge keeps out of mounts' reach: a pass of requests and the splice
    /// reserve. A mount is refilled only from what is above it.
    pub(super) fn merge_reserve(&self, inputs: &[LogTrees]) -> u64 {
        let pass = self
            .merge
            .batch
            .saturating_mul(self.merge.request_blocks as u64);
        pass.saturating_add(self.splice_reserve(inputs))
    }

    /// Blocks out of the server's pool for a request's list; `None` if the pool would
    /// fall into the splice reserve.
    fn take_pool_blocks(&mut self, n: usize, inputs: &[LogTrees]) -> Result<Option<Vec<u64>>> {
        // Short of space, a smaller request still makes progress (and the merge is what
        // gives space back).
        const MIN_REQUEST_BLOCKS: u64 = 24;
        let keep = self.splice_reserve(inputs);
        let n = (n as u64).min(self.pool.free_blocks().saturating_sub(keep));
        if n < MIN_REQUEST_BLOCKS {
            return Ok(None);
        }
        let n = n as usize;
        self.pool.take_blocks(n).map(Some).map_err(|e| {
            self.poisoned = true;
            e.into()
        })
    }

    /// Record the completed (or failed) request that mount `rid` -- the mount the
    /// connection belongs to, not what the completion says -- sends. A completion for a
    /// request that no longer exists (a resend of one already processed) changes
    /// nothing; one that does not fit its request (another mount's, a remainder outside
    /// its range, a subtree of the wrong height, lists that do not read) is refused with
    /// [`VolumeError::Protocol`] and changes nothing.
    pub fn commit_log_merge(&mut self, rid: u64, comp: &LogMergeComplete) -> Result<()> {
        let refuse = |core: &mut ServerCore, why: &'static str| {
            core.merge_counters.refused += 1;
            Err(VolumeError::Protocol(why))
        };
        if comp.rid.get() != rid {
            return refuse(self, "merge completion names another mount");
        }
        let key = log_merge_key(merge_zone::REQUEST, rid, comp.seq.get());
        let Some(it) = btree::lookup(&self.wri, &self.roots.log_merge, &key)? else {
            let elsewhere = zone_items(&self.wri, &self.roots.log_merge, merge_zone::REQUEST)?
                .iter()
                .any(|it| it.key.second == comp.seq.get());
            if elsewhere {
                return refuse(self, "merge completion of a request given to another mount");
            }
            return Ok(());
        };
        let req: LogMergeRequest = decode(&it.val, "merge request of the wrong size")?;
        let Some(mut st) = self.merge_status()? else {
            return Err(VolumeError::Protocol("a merge request without a merge"));
        };
        st.nr_requests = st.nr_requests.get().saturating_sub(1).into();
        if comp.flags.get() & MERGE_COMPLETE_FLAG_ERROR != 0 {
            self.cancel_request(&req, st)?;
            return Ok(());
        }
        if let Err(why) = self.check_completion(&req, comp) {
            return refuse(self, why);
        }
        // The completion is for the request's range.
        let mut c = *comp;
        c.start = req.start;
        c.end = req.end;
        c.flags = (c.flags.get() & MERGE_COMPLETE_FLAG_REMAIN).into();
        st.nr_complete = (st.nr_complete.get() + 1).into();
        self.with_txn(|t, r| {
            t.delete(&mut r.log_merge, &key)?;
            t.force(
                &mut r.log_merge,
                &log_merge_key(merge_zone::COMPLETE, c.seq.get(), 0),
                c.as_bytes(),
            )?;
            t.force(&mut r.log_merge, &status_key(), st.as_bytes())
        })?;
        // The completion that makes splicing due (no request outstanding, and the batch
        // full or no range left: what `get_log_merge` splices on) starts splicing in the
        // commit that records it, as far as the commit has room; what does not fit goes
        // on from `get_log_merge`.
        let due = st.nr_requests.get() == 0
            && (st.nr_complete.get() >= self.merge.batch
                || zone_items(&self.wri, &self.roots.log_merge, merge_zone::RANGE)?.is_empty());
        if due {
            self.splice(st)?;
        }
        Ok(())
    }

    /// Whether a completion fits the request it answers.
    fn check_completion(
        &self,
        req: &LogMergeRequest,
        comp: &LogMergeComplete,
    ) -> std::result::Result<(), &'static str> {
        let (start, end): (Key, Key) = ((&req.start).into(), (&req.end).into());
        if comp.flags.get() & !(MERGE_COMPLETE_FLAG_REMAIN) != 0 {
            return Err("merge completion with unknown flags");
        }
        if comp.flags.get() & MERGE_COMPLETE_FLAG_REMAIN != 0 {
            let remain: Key = (&comp.remain).into();
            if remain < start || remain > end {
                return Err("merge completion's remainder is outside its request");
            }
        }
        let root: BtreeRoot = comp.root.into();
        if req.flags.get() & MERGE_REQUEST_FLAG_SUBTREE != 0 {
            if root.height != 2 {
                return Err("merged subtree of the wrong height");
            }
        } else if root.height > MAX_BTREE_HEIGHT || (root.height == 0) != root.is_empty() {
            return Err("merged tree of a bad height");
        }
        for head in [&comp.meta_avail, &comp.meta_freed] {
            if crate::alloc::list::read_list(&self.wri, head).is_err() {
                return Err("merge completion's lists do not read");
            }
        }
        Ok(())
    }

    /// Undo a request: its range goes back, its blocks come back, nothing is spliced.
    fn cancel_request(&mut self, req: &LogMergeRequest, st: LogMergeStatus) -> Result<()> {
        let key = log_merge_key(merge_zone::REQUEST, req.rid.get(), req.seq.get());
        let req = *req;
        // The restored range is handed out again once the cursor comes back round (the
        // next splice); moving the cursor back could hand out a parent another
        // outstanding request covers.
        self.with_txn(|t, r| {
            // The mount may have written into any of the request's blocks: they are free
            // once this commit is durable, not before.
            release_list(t, &req.meta_avail, true)?;
            t.delete(&mut r.log_merge, &key)?;
            let range = LogMergeRange {
                start: req.start,
                end: req.end,
            };
            t.force(
                &mut r.log_merge,
                &log_merge_key(merge_zone::RANGE, req.seq.get(), 1),
                range.as_bytes(),
            )?;
            t.force(&mut r.log_merge, &status_key(), st.as_bytes())
        })
    }

    /// Cancel every request of a mount that failed, left, or (mounting afresh) says it
    /// holds no merge work.
    pub fn cancel_log_merge(&mut self, rid: u64) -> Result<()> {
        let reqs: Vec<LogMergeRequest> =
            zone_items(&self.wri, &self.roots.log_merge, merge_zone::REQUEST)?
                .iter()
                .filter(|it| it.key.first == rid)
                .map(|it| decode(&it.val, "merge request of the wrong size"))
                .collect::<Result<_>>()?;
        for req in reqs {
            let Some(mut st) = self.merge_status()? else {
                break;
            };
            st.nr_requests = st.nr_requests.get().saturating_sub(1).into();
            self.cancel_request(&req, st)?;
        }
        Ok(())
    }

    /// Splice completions, a unit at a time, committing between units when the commit
    /// is out of room (see the module comment).
    fn splice(&mut self, mut st: LogMergeStatus) -> Result<MergeStep> {
        if st.flags.get() & MERGE_STATUS_FLAG_SPLICING == 0 {
            st.flags = (st.flags.get() | MERGE_STATUS_FLAG_SPLICING).into();
            st.nr_complete = st.nr_complete.get().max(self.merge.batch).into();
            self.put_status(&st)?;
        }
        let comps = zone_items(&self.wri, &self.roots.log_merge, merge_zone::COMPLETE)?;
        // Phase A: replace each completion's parent reference, and trim what it merged
        // out of the inputs.
        for it in &comps {
            let c: LogMergeComplete = decode(&it.val, "merge completion of the wrong size")?;
            if c.flags.get() & MERGE_COMPLETE_FLAG_SPLICED != 0 {
                continue;
            }
            let inputs = self.merge_inputs(st.seq.get())?;
            let need = self.merge_unit_blocks(&inputs);
            if let Some(stop) = self.merge_room(MergePhase::Splice, need).stop() {
                return Ok(stop);
            }
            self.splice_one(it.key, &c, &inputs)?;
            self.merge_counters.spliced += 1;
        }
        // Phase B: rebalance where merges stopped early, queue their remainders, and
        // drop the completions.
        for it in &comps {
            let c: LogMergeComplete =
                match btree::lookup(&self.wri, &self.roots.log_merge, &it.key)? {
                    Some(cur) => decode(&cur.val, "merge completion of the wrong size")?,
                    None => continue,
                };
            // A split or join at every level of the path (and a new root), the range and
            // the completion changed.
            let need = 2 * (u64::from(self.roots.fs_root.height) + 2)
                + 2 * (u64::from(self.roots.log_merge.height) + 1)
                + 2;
            if let Some(stop) = self.merge_room(MergePhase::Rebalance, need).stop() {
                return Ok(stop);
            }
            let key = it.key;
            self.with_txn(|t, r| {
                let start: Key = (&c.start).into();
                t.rebalance(&mut r.fs_root, &start)?;
                if c.flags.get() & MERGE_COMPLETE_FLAG_REMAIN != 0 {
                    let range = LogMergeRange {
                        start: c.remain,
                        end: c.end,
                    };
                    t.force(
                        &mut r.log_merge,
                        &log_merge_key(merge_zone::RANGE, c.seq.get(), 0),
                        range.as_bytes(),
                    )?;
                }
                t.delete(&mut r.log_merge, &key)
            })?;
        }
        let ranges = zone_items(&self.wri, &self.roots.log_merge, merge_zone::RANGE)?;
        if !ranges.is_empty() {
            st.flags = (st.flags.get() & !MERGE_STATUS_FLAG_SPLICING).into();
            st.nr_complete = 0.into();
            st.next_range_key = (&Key::MIN).into();
            self.put_status(&st)?;
            return Ok(MergeStep::InProgress);
        }
        // The merge is done: every input item was in a range and was trimmed with its
        // splice. The inputs leave the log trees (anything a tree still held would be
        // freed like a detached subtree), and the status goes.
        let inputs = self.merge_inputs(st.seq.get())?;
        let need = self.merge_unit_blocks(&inputs);
        if let Some(stop) = self.merge_room(MergePhase::Splice, need).stop() {
            return Ok(stop);
        }
        let fseqs: Vec<u64> = inputs.iter().map(|_| self.next_seq()).collect();
        // A tree finalized while its mount was gone may still name its srch log file.
        let srch_ids: Vec<u64> = inputs.iter().map(|_| self.next_seq()).collect();
        self.with_txn(|t, r| {
            for ((lt, &fseq), &sid) in inputs.iter().zip(&fseqs).zip(&srch_ids) {
                if super::srch::has_log_file(lt) {
                    let mut l = *lt;
                    super::srch::rotate_log(t, &mut r.srch_root, &mut l, sid)?;
                }
                let root: BtreeRoot = lt.item_root.into();
                if !root.is_empty() {
                    put_freeing(t, &mut r.log_merge, fseq, 0, root)?;
                }
                let bloom: BlockRef = lt.bloom_ref.into();
                if !bloom.is_none() {
                    t.alloc.free_meta(bloom.blkno)?;
                }
                t.delete(&mut r.logs_root, &log_trees_key(lt.rid.get(), lt.nr.get()))?;
                // Its inodes are counted by the root now.
                r.inode_count = r.inode_count.wrapping_add(lt.inode_count_delta.get());
            }
            t.delete(&mut r.log_merge, &status_key())
        })?;
        self.merge_counters.merges += 1;
        // Freeing starts in the same commit if it has room.
        self.free_some()?;
        Ok(MergeStep::InProgress)
    }

    /// Phase A for one completion (key `ckey`): splice its subtree, give its blocks
    /// back, trim its range out of the inputs (recording the detached subtrees for
    /// freeing), and mark it spliced -- one change.
    fn splice_one(&mut self, ckey: Key, c: &LogMergeComplete, inputs: &[LogTrees]) -> Result<()> {
        let start: Key = (&c.start).into();
        // What the merge covered: up to its remainder, or its whole range.
        let last: Option<Key> = if c.flags.get() & MERGE_COMPLETE_FLAG_REMAIN != 0 {
            Key::from(&c.remain).prev().filter(|k| *k >= start)
        } else {
            Some((&c.end).into())
        };
        let seq = c.seq.get();
        let mut trimmed = 0u64;
        // Each input's range widened over the keys around it that it holds no items of:
        // the same items go, and whole subtrees (a whole tree, for an input's last range)
        // detach instead of many pieces.
        let mut ranges = Vec::with_capacity(inputs.len());
        if let Some(last) = last {
            for lt in inputs {
                let root: BtreeRoot = lt.item_root.into();
                let lo = match start.prev() {
                    Some(p) => btree::prev(&self.wri, &root, &p)?.and_then(|it| it.key.next()),
                    None => None,
                };
                let hi = match last.next() {
                    Some(n) => btree::next(&self.wri, &root, &n)?.and_then(|it| it.key.prev()),
                    None => None,
                };
                ranges.push((lo.unwrap_or(Key::MIN), hi.unwrap_or(Key::MAX)));
            }
        }
        self.with_txn(|t, r| {
            t.set_parent(&mut r.fs_root, &start, c.root.into())?;
            // Blocks the merge did not use, and blocks it copied away from the old
            // subtree (the stable super still references those), are free once this
            // commit is durable.
            release_list(t, &c.meta_avail, true)?;
            release_list(t, &c.meta_freed, true)?;
            if !ranges.is_empty() {
                let mut detached = Vec::new();
                for (lt, (lo, hi)) in inputs.iter().zip(&ranges) {
                    let mut root: BtreeRoot = lt.item_root.into();
                    t.trim(&mut root, lo, hi, &mut detached)?;
                    if root != BtreeRoot::from(lt.item_root) {
                        let mut nlt = *lt;
                        nlt.item_root = root.into();
                        t.force(
                            &mut r.logs_root,
                            &log_trees_key(lt.rid.get(), lt.nr.get()),
                            nlt.as_bytes(),
                        )?;
                    }
                }
                trimmed = detached.len() as u64;
                for (i, sub) in detached.into_iter().enumerate() {
                    put_freeing(t, &mut r.log_merge, seq, i as u64 + 1, sub)?;
                }
            }
            let mut done = *c;
            done.flags = (c.flags.get() | MERGE_COMPLETE_FLAG_SPLICED).into();
            done.meta_avail = RawAllocListHead::default();
            done.meta_freed = RawAllocListHead::default();
            t.force(&mut r.log_merge, &ckey, done.as_bytes())
        })?;
        self.merge_counters.trimmed_subtrees += trimmed;
        Ok(())
    }

    /// Free what freeing records hold, a budget at a time while the commit has room:
    /// `Go` when there is nothing (left) to free, `Pause` when work was done or remains
    /// (commit before more), `Stall` when not even one unit fits.
    fn free_some(&mut self) -> Result<Room> {
        let bs = self.cache.geometry().block_size;
        let cap = alloc_list_capacity(bs).max(1) as u64;
        let budget = self.merge.free_budget;
        let need = 2 * (u64::from(self.roots.log_merge.height) + 2) + budget as u64 / cap + 2;
        let mut worked = false;
        loop {
            // A batch of records at a time: a unit frees a budget, and a commit may hold
            // many units.
            let mut items = Vec::new();
            btree::scan(
                &self.wri,
                &self.roots.log_merge,
                &log_merge_key(merge_zone::FREEING, 0, 0),
                &log_merge_key(merge_zone::FREEING, u64::MAX, u64::MAX),
                |it| {
                    items.push(it.to_item());
                    if items.len() >= 64 {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                },
            )?;
            if items.is_empty() {
                return Ok(if worked { Room::Pause } else { Room::Go });
            }
            for it in items {
                match self.merge_room(MergePhase::Free, need) {
                    Room::Go => {}
                    Room::Pause => return Ok(Room::Pause),
                    Room::Stall => return Ok(Room::Stall),
                }
                worked = true;
                let f: LogMergeFreeing = decode(&it.val, "merge freeing of the wrong size")?;
                self.with_txn(|t, r| {
                    let from: Key = (&f.key).into();
                    match btree::free_blocks(t, &f.root.into(), &from, budget)? {
                        FreeProgress::Done { .. } => t.delete(&mut r.log_merge, &it.key),
                        FreeProgress::More { next, .. } => {
                            let mut g = f;
                            g.key = (&next).into();
                            t.force(&mut r.log_merge, &it.key, g.as_bytes())
                        }
                    }
                })?;
            }
        }
    }

    /// Every outstanding request (the simulation checks its invariants with them).
    pub fn merge_requests(&self) -> Result<Vec<LogMergeRequest>> {
        zone_items(&self.wri, &self.roots.log_merge, merge_zone::REQUEST)?
            .iter()
            .map(|it| decode(&it.val, "merge request of the wrong size"))
            .collect()
    }
}
