//! A mount's side of srch (see [`crate::srch`]): the entries its transactions log, the
//! searches it runs over the committed files, and the compaction steps it does for the
//! server.
//!
//! The entries of the open transaction wait in a cache of their own, beside the item
//! cache, as a set: logging an entry that is there already takes it out (the pair
//! cancels before it is written). The commit toggles them into the mount's log file
//! ([`crate::srch::apply_log`]) with the transaction's allocator, so the file is
//! committed with the items of the same operations, and its cost is counted as the items'
//! is (its leaves and paths, in the budget the commit reserves). An operation that fails
//! takes its entries back with its items.

use super::*;
use crate::alloc::ListAlloc;
use crate::srch::{self, SearchXattrs};

impl Client {
    /// Log the srch entry `{hash, ino, id}` in the open transaction: an xattr `.srch.`
    /// tagged was made or removed (a change, counted against the operation's
    /// reservation). Logging the same entry twice in a transaction leaves nothing.
    pub fn srch_add(&mut self, hash: u64, ino: u64, id: u64) -> Result<()> {
        self.hold(false)?;
        let key = srch_entry_key(hash, ino, id);
        let old = match self.srch.get(&key).cloned() {
            Some(d) => {
                self.srch.restore(key, None);
                Some(d)
            }
            None => {
                let root: BtreeRoot = self.srch_file.root.into();
                self.srch.account(&self.wri, &root, &key)?;
                self.srch.put(
                    key,
                    cache::Dirty {
                        seq: 0,
                        flags: 0,
                        val: Vec::new(),
                    },
                )
            }
        };
        if let Some(op) = &mut self.op {
            op.srch_undo.push((key, old));
        }
        self.dirty = true;
        Ok(())
    }

    /// Entries logged in the open transaction (not yet in the log file).
    pub fn srch_pending(&self) -> usize {
        self.srch.len()
    }

    /// The mount's log file as of the open transaction's start.
    pub fn srch_file(&self) -> &RawSrchFile {
        &self.srch_file
    }

    /// Write the transaction's entries into the log file, for the commit of `lt`.
    pub(super) fn write_srch(&mut self, lt: &mut LogTrees) -> Result<()> {
        let keys = self.srch.take();
        if !keys.is_empty() {
            let mut t = TreeTxn {
                wri: &mut self.wri,
                alloc: &mut self.alloc,
            };
            srch::apply_log(&mut t, &mut self.srch_file, keys.into_keys())?;
        }
        lt.srch_file = self.srch_file;
        Ok(())
    }

    /// What the server's last commit holds of srch files and compactions (tests and
    /// tools; see [`srch::stats`]).
    pub fn srch_stats(&self) -> Result<srch::SrchStats> {
        let mut stale_seq = None;
        loop {
            let snap = self.snapshot()?;
            match srch::stats(
                &*self.cache,
                &snap.srch_root,
                snap.trees.iter().map(|(t, _)| t),
            ) {
                Err(e) if is_stale(&e) => {
                    if stale_seq == Some(snap.seq) {
                        return Err(e.into());
                    }
                    stale_seq = Some(snap.seq);
                }
                r => return Ok(r?),
            }
        }
    }

    /// Search the srch files the server last committed for the inodes of
    /// `next_ino..=last_ino` with an entry of `hash` (see [`srch::search`]). A block
    /// found reused means newer roots exist: the search starts again with them (the same
    /// roots going stale twice is corruption).
    pub fn search_srch(
        &self,
        hash: u64,
        next_ino: u64,
        last_ino: u64,
        limit: usize,
    ) -> Result<SearchXattrs> {
        let mut stale_seq = None;
        loop {
            let snap = self.snapshot()?;
            let res = srch::search_files(
                &*self.cache,
                &snap.srch_root,
                snap.trees.iter().map(|(t, _)| t),
            )
            .and_then(|files| srch::search(&*self.cache, &files, hash, next_ino, last_ino, limit));
            match res {
                Err(e) if is_stale(&e) => {
                    if stale_seq == Some(snap.seq) {
                        return Err(e.into());
                    }
                    stale_seq = Some(snap.seq);
                }
                r => return Ok(r?),
            }
        }
    }

    /// A worker that does srch compaction steps for the server, outside the mount's
    /// transaction (`None` on a read-only mount); a step merges at most `step_entries`
    /// input entries.
    pub fn srch_compactor(&self, step_entries: u64) -> Option<SrchCompactor> {
        if self.read_only {
            return None;
        }
        Some(SrchCompactor {
            rid: self.rid,
            transport: self.transport.clone(),
            meta: self.meta.clone(),
            cache: self.cache.clone(),
            seed: self.seed,
            server_flushes_meta: self.server_flushes_meta,
            step_entries,
        })
    }
}

/// Does srch compaction steps for the server on a mount's behalf (see
/// [`crate::srch`]): it holds what a step needs and nothing of the mount's transaction,
/// so steps run beside the mount's operations.
#[derive(Debug, Clone)]
pub struct SrchCompactor {
    rid: u64,
    transport: Arc<dyn Transport>,
    meta: Arc<dyn BlockDevice>,
    cache: Arc<BlockCache>,
    seed: u64,
    server_flushes_meta: bool,
    step_entries: u64,
}

impl SrchCompactor {
    /// Do one step of srch compaction, if the server has work: merge a bounded part of
    /// the inputs into the output with the work's blocks, write and flush them, and hand
    /// the result back. Returns whether there was work. A step that fails is reported to
    /// the server (the work goes back as it was) and the error returned.
    pub fn step(&self) -> Result<bool> {
        self.step_with(MergeFault::None)
    }

    /// [`SrchCompactor::step`] with a fault injected (tests): `Fail` reports a failed
    /// step, `Vanish` does the step but never reports it (the mount's restart or
    /// eviction gives the work back), `Duplicate` reports it twice.
    pub fn step_with(&self, fault: MergeFault) -> Result<bool> {
        let sc = match self
            .transport
            .call(Request::GetSrchCompact { rid: self.rid })?
        {
            Response::SrchCompact(Some(sc)) => *sc,
            Response::SrchCompact(None) => return Ok(false),
            _ => return Err(TransportError::Unexpected.into()),
        };
        let res = match fault {
            MergeFault::Fail => Err(ClientError::Poisoned),
            _ => self.compact(&sc),
        };
        if fault == MergeFault::Vanish {
            return Ok(true);
        }
        let result = match &res {
            Ok(r) => *r,
            Err(_) => SrchCompact {
                flags: (sc.flags.get() | SRCH_COMPACT_FLAG_ERROR).into(),
                ..sc
            },
        };
        let sends = if fault == MergeFault::Duplicate { 2 } else { 1 };
        for _ in 0..sends {
            match self
                .transport
                .call(Request::CommitSrchCompact(Box::new(result)))?
            {
                Response::Done => {}
                _ => return Err(TransportError::Unexpected.into()),
            }
        }
        match (res, fault) {
            (Err(_), MergeFault::Fail) => Ok(true),
            (r, _) => r.map(|_| true),
        }
    }

    fn compact(&self, sc: &SrchCompact) -> Result<SrchCompact> {
        let mut wri =
            BlockWriter::new(self.cache.clone(), self.seed ^ sc.seq.get().rotate_left(23));
        let mut alloc = ListAlloc::load(&*self.cache, &sc.meta_avail, &sc.meta_freed)?;
        let mut out = sc.out;
        let mut next: Key = (&sc.next).into();
        let done = srch::compact_step(
            &mut wri,
            &mut alloc,
            srch::inputs(sc),
            &mut out,
            &mut next,
            self.step_entries,
        )?;
        let (meta_avail, meta_freed) = alloc.write_lists(&mut wri, 0)?;
        wri.write_all()?;
        if !self.server_flushes_meta {
            self.meta.flush()?;
        }
        let done_flag = if done { SRCH_COMPACT_FLAG_DONE } else { 0 };
        Ok(SrchCompact {
            meta_avail,
            meta_freed,
            out,
            next: (&next).into(),
            flags: (sc.flags.get() | done_flag).into(),
            ..*sc
        })
    }
}
