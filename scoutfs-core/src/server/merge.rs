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
//! requests handed to mounts, their completions, and the input trees being freed.
//! Requests cover the subtree of the filesystem root (its last parent level) holding the
//! next input key, and never two of the same parent. Splicing waits until no request is
//! outstanding (the parents' bounds must not move under a mount's merge) and then, one
//! completion at a time, replaces the parent reference, gives the completion's unused and
//! freed blocks back, marks the completion spliced (persistently, so a restart never
//! splices it twice), rebalances where a merge stopped early and queues its remainder.
//! Every unit of work first checks that the commit has room ([`MergeConfig::
//! splice_commit_blocks`]); when it has not, the progress made is committed and the work
//! goes on in the next commit. While splicing, `nr_complete` is held at the batch size so
//! no request is handed out between those commits. The end of a merge -- its inputs
//! leaving the log trees for freeing records, and its status -- is one commit: inputs
//! removed one at a time would let a read see the ones left without the newer versions
//! (deletions among them) of those removed.
//!
//! Durable commits are the merge's main fixed cost, so work that may share a commit
//! does: the completion that makes splicing due starts splicing in the commit that
//! records it, the end of the merge follows in that commit when splicing finishes there,
//! and freeing the inputs starts in the commit that ends the merge -- each only while the
//! commit has room, the rest going on a commit at a time as above. A small merge is
//! then two server commits: its request, and its completion with everything after it.
//! Reads lose nothing by this: they take the roots of whole commits, and a combined
//! commit goes from one state the separate commits made durable to another (the root
//! before a splice with all the inputs; the spliced root with all the inputs still
//! there, whose merged versions a read skips as no newer than the root's; the root
//! after the merge without any input) without a new state in between.

use super::{all_log_trees, release_list, ServerCore};
use crate::alloc::list::write_new_list;
use crate::btree::{self, FreeProgress, MergeCursor, TreeTxn};
use crate::format::*;
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
}

impl MergeConfig {
    /// The defaults, with request sizes scaled down to what a small volume can give.
    pub fn for_limits(limits: &super::AllocLimits) -> MergeConfig {
        let d = MergeConfig::default();
        let request_blocks = d.request_blocks.min(limits.client_meta_target.max(32));
        MergeConfig {
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
        }
    }
}

/// Counts of log merge work, for tests and statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeCounters {
    /// Requests handed out.
    pub requests: u64,
    /// Completions spliced into the filesystem root.
    pub spliced: u64,
    /// Times splicing or freeing stopped to commit because the commit was full.
    pub pauses: u64,
    /// Merges finished.
    pub merges: u64,
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

/// Whether a log tree is an input of the merge with seq `merge_seq`.
fn is_input(lt: &LogTrees, merge_seq: u64) -> bool {
    lt.flags.get() & LOG_TREES_FLAG_FINALIZED != 0 && lt.finalize_seq.get() < merge_seq
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
                Some(f) => lt.first_trans_seq.get() < f,
                None => ours.height >= self.merge.finalize_height || low || self.force_finalize,
            };
        if !want {
            return self.maybe_start_merge().map(|_| lt);
        }
        self.force_finalize = false;
        let fseq = match group {
            Some(f) => f,
            None => self.next_seq(),
        };
        // Every other tree that began before F, is not being written and holds items
        // goes with ours.
        let others: Vec<LogTrees> = trees
            .into_iter()
            .filter(|t| {
                t.rid != lt.rid
                    && t.flags.get() & LOG_TREES_FLAG_FINALIZED == 0
                    && t.first_trans_seq.get() < fseq
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
        self.with_txn(|t, r| {
            t.force(
                &mut r.logs_root,
                &log_trees_key(bare.rid.get(), bare.nr.get()),
                bare.as_bytes(),
            )
        })?;
        Ok(next)
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
        let blocked = trees.iter().any(|t| {
            t.flags.get() & LOG_TREES_FLAG_FINALIZED == 0
                && t.first_trans_seq.get() < group
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

    /// Whether this commit has used up its room for merge work (counted as a pause).
    fn commit_full(&mut self) -> bool {
        let full = self.wri.dirty_blocks() >= self.merge.splice_commit_blocks;
        if full {
            self.merge_counters.pauses += 1;
        }
        full
    }

    /// What the log merge has done since the server started.
    pub fn merge_counters(&self) -> MergeCounters {
        self.merge_counters
    }

    /// Hand mount `rid` a merge request, or do the splicing and freeing that must come
    /// first (see the module comment).
    pub fn get_log_merge(&mut self, rid: u64) -> Result<MergeStep> {
        if self.free_some_inputs()? {
            return Ok(MergeStep::InProgress);
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
            let Some(blocks) = self.take_pool_blocks(n)? else {
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

    /// Blocks out of the server's pool for a request's list; `None` if the pool would
    /// fall below what the server's own commits need.
    fn take_pool_blocks(&mut self, n: usize) -> Result<Option<Vec<u64>>> {
        // Short of space, a smaller request still makes progress (and the merge is what
        // gives space back).
        const MIN_REQUEST_BLOCKS: u64 = 24;
        let keep = (self.limits.server_list_target / 2) as u64;
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

    /// Record a mount's completed (or failed) request. A completion for a request that
    /// no longer exists -- a resend of one already processed -- changes nothing.
    pub fn commit_log_merge(&mut self, comp: &LogMergeComplete) -> Result<()> {
        let rid = comp.rid.get();
        let key = log_merge_key(merge_zone::REQUEST, rid, comp.seq.get());
        let Some(it) = btree::lookup(&self.wri, &self.roots.log_merge, &key)? else {
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
        // The completion must be for the request's range.
        let mut c = *comp;
        c.start = req.start;
        c.end = req.end;
        c.flags = (c.flags.get() & (MERGE_COMPLETE_FLAG_REMAIN)).into();
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
        // commit that records it, if that commit has room; what does not fit goes on
        // from `get_log_merge` as before.
        let due = st.nr_requests.get() == 0
            && (st.nr_complete.get() >= self.merge.batch
                || zone_items(&self.wri, &self.roots.log_merge, merge_zone::RANGE)?.is_empty());
        if due && self.wri.dirty_blocks() < self.merge.splice_commit_blocks {
            self.splice(st)?;
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

    /// Cancel every request of a mount that failed or left.
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
    /// is full (see the module comment).
    fn splice(&mut self, mut st: LogMergeStatus) -> Result<MergeStep> {
        if st.flags.get() & MERGE_STATUS_FLAG_SPLICING == 0 {
            st.flags = (st.flags.get() | MERGE_STATUS_FLAG_SPLICING).into();
            st.nr_complete = st.nr_complete.get().max(self.merge.batch).into();
            self.put_status(&st)?;
        }
        let comps = zone_items(&self.wri, &self.roots.log_merge, merge_zone::COMPLETE)?;
        // Phase A: replace each completion's parent reference.
        for it in &comps {
            let c: LogMergeComplete = decode(&it.val, "merge completion of the wrong size")?;
            if c.flags.get() & MERGE_COMPLETE_FLAG_SPLICED != 0 {
                continue;
            }
            if self.commit_full() {
                return Ok(MergeStep::InProgress);
            }
            let key = it.key;
            self.with_txn(|t, r| {
                let start: Key = (&c.start).into();
                t.set_parent(&mut r.fs_root, &start, c.root.into())?;
                // Blocks the merge did not use, and blocks it copied away from the old
                // subtree (the stable super still references those), are free once this
                // commit is durable.
                release_list(t, &c.meta_avail, true)?;
                release_list(t, &c.meta_freed, true)?;
                let mut done = c;
                done.flags = (c.flags.get() | MERGE_COMPLETE_FLAG_SPLICED).into();
                done.meta_avail = RawAllocListHead::default();
                done.meta_freed = RawAllocListHead::default();
                t.force(&mut r.log_merge, &key, done.as_bytes())
            })?;
            self.merge_counters.spliced += 1;
        }
        // Phase B: rebalance where merges stopped early, queue their remainders, and
        // drop the completions.
        for it in &comps {
            if self.commit_full() {
                return Ok(MergeStep::InProgress);
            }
            let c: LogMergeComplete =
                match btree::lookup(&self.wri, &self.roots.log_merge, &it.key)? {
                    Some(cur) => decode(&cur.val, "merge completion of the wrong size")?,
                    None => continue,
                };
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
        // Phase C: the merge is done. The inputs are queued for freeing and leave the
        // log trees, and the status goes, all in one commit: an input removed while
        // another stays would let the one left show versions that a removed one
        // superseded (an item it deleted, which the root no longer holds, would come
        // back). Each input costs a few dirty blocks, and there is one per mount.
        let inputs = self.merge_inputs(st.seq.get())?;
        let fseqs: Vec<u64> = inputs.iter().map(|_| self.next_seq()).collect();
        self.with_txn(|t, r| {
            for (lt, &fseq) in inputs.iter().zip(&fseqs) {
                let root: BtreeRoot = lt.item_root.into();
                if !root.is_empty() {
                    let f = LogMergeFreeing {
                        root: lt.item_root,
                        key: (&Key::MIN).into(),
                        seq: fseq.into(),
                    };
                    t.force(
                        &mut r.log_merge,
                        &log_merge_key(merge_zone::FREEING, fseq, 0),
                        f.as_bytes(),
                    )?;
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
        // Freeing the inputs starts in the same commit if it has room: their blocks,
        // like the bloom blocks above, are free once this commit is durable, and no
        // committed root references them after it.
        if self.wri.dirty_blocks() < self.merge.splice_commit_blocks {
            self.free_some_inputs()?;
        }
        Ok(MergeStep::InProgress)
    }

    /// Free input trees a budget at a time; true if there was work (commit before more).
    fn free_some_inputs(&mut self) -> Result<bool> {
        let items = zone_items(&self.wri, &self.roots.log_merge, merge_zone::FREEING)?;
        if items.is_empty() {
            return Ok(false);
        }
        for it in items {
            if self.commit_full() {
                return Ok(true);
            }
            let f: LogMergeFreeing = decode(&it.val, "merge freeing of the wrong size")?;
            let budget = self.merge.free_budget;
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
        Ok(true)
    }

    /// Every outstanding request (the simulation checks its invariants with them).
    pub fn merge_requests(&self) -> Result<Vec<LogMergeRequest>> {
        zone_items(&self.wri, &self.roots.log_merge, merge_zone::REQUEST)?
            .iter()
            .map(|it| decode(&it.val, "merge request of the wrong size"))
            .collect()
    }
}

/// Mount side: merge a request's inputs into a private copy of its subtree, stopping
/// after `dirty_limit` dirty blocks or when fewer than `alloc_low` blocks are left.
/// Returns the merged subtree and where the merge ended; the caller writes the lists and
/// blocks and sends the completion ([`crate::client::Client::merge_once`]).
pub fn merge_request(
    t: &mut TreeTxn<'_>,
    req: &LogMergeRequest,
    dirty_limit: usize,
    alloc_low: usize,
) -> btree::Result<(BtreeRoot, btree::MergeEnd)> {
    let rd_inputs: Vec<BtreeRoot> = {
        let logs: BtreeRoot = req.logs_root.into();
        let mut v = Vec::new();
        let lo = Key::new(zone::LOG_TREES, 0, 0, 0, 0, 0);
        let hi = Key::new(zone::LOG_TREES, u64::MAX, 255, u64::MAX, u64::MAX, 255);
        let mut bad = false;
        btree::scan(&*t.wri, &logs, &lo, &hi, |it| {
            match LogTrees::read_from_bytes(it.val) {
                Ok(lt) if is_input(&lt, req.input_seq.get()) => v.push(lt.item_root.into()),
                Ok(_) => {}
                Err(_) => bad = true,
            }
            ControlFlow::Continue(())
        })?;
        if bad {
            return Err(btree::BtreeError::Corrupt {
                blkno: 0,
                reason: "log trees item of the wrong size",
            });
        }
        v
    };
    let start: Key = (&req.start).into();
    let end: Key = (&req.end).into();
    // The inputs are committed trees this merge never changes: the cursor reads them
    // through the writer while the merge changes the subtree.
    let mut cur = MergeCursor::new(&rd_inputs, start, end);
    let mut root: BtreeRoot = req.root.into();
    let limits = btree::MergeLimits {
        dirty_blocks: dirty_limit,
        alloc_low,
        subtree: req.flags.get() & MERGE_REQUEST_FLAG_SUBTREE != 0,
        per_item_descent: false,
    };
    let end_state = t.merge_cursor(&mut root, limits, &mut cur)?;
    Ok((root, end_state))
}
