//! Many threads, one commit: the server's request handlers batched into shared commits.
//!
//! A handler *holds* the commit, changes the server's trees, releases its hold and waits
//! until a commit that contains its change is durable. The last holder to release starts
//! the commit; handlers that arrive while a commit is being written wait for it to end,
//! and its end gives all of them their holds at once, so they share the next commit and
//! one pair of flushes serves them all. A failed commit fails
//! every handler whose change it held, and the server refuses all later changes (it is
//! poisoned) until it is reopened.

use super::{CommitStats, MergeStep, ServerCore};
use crate::lock::cluster::ServerLocks;
use crate::lock::server::{SeqSource, MAX_WRITE_SEQ};
use crate::transport::{
    ClientReply, MergeAdmin, MergeStatus, Request, Response, ServerLink, VolumeStats,
};
use crate::volume::{Result, VolumeError};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;

#[derive(Debug, Default)]
struct CommitState {
    /// Handlers between hold and release.
    holders: usize,
    /// Handlers that arrived during a commit; the commit's end gives them their holds
    /// all at once, so they share the next commit.
    waiting: usize,
    /// Grows when waiting handlers are given their holds.
    grants: u64,
    /// A commit is being written.
    committing: bool,
    /// Id of the commit changes are going into now.
    open_id: u64,
    /// Every commit up to this id has ended.
    done_id: u64,
    /// The first commit id that failed (all later ones fail too).
    failed_from: Option<u64>,
    /// Commits written.
    commits: u64,
}

/// A thread-safe server: [`ServerCore`] behind batched commits.
#[derive(Debug)]
pub struct Server {
    core: Mutex<ServerCore>,
    state: Mutex<CommitState>,
    cv: Condvar,
    published: Arc<parking_lot::RwLock<crate::transport::CommittedRoots>>,
    /// How the server reaches its mounts (none: only requests from mounts are served).
    link: parking_lot::RwLock<Option<Arc<dyn ServerLink>>>,
    /// The cluster lock service. Its state is locked after the core's, never before.
    locks: ServerLocks,
    /// Open-inode map rounds in progress.
    omap: super::omap::OpenInoMaps,
    /// The open transactions (mount, transaction seq) asked to commit for a merge.
    prompted: Mutex<std::collections::HashSet<(u64, u64)>>,
}

/// Lock grants take their write seqs from the server's seq; recovered locks raise it.
/// The seq is not committed for this: after a restart, recovery raises it again.
impl SeqSource for ServerCore {
    fn next_seq(&mut self) -> u64 {
        ServerCore::next_seq(self)
    }

    fn raise_seq(&mut self, seq: u64) {
        self.seq = self.seq.max(seq);
    }
}

impl Server {
    /// Wrap a server core.
    pub fn new(core: ServerCore) -> Server {
        Server {
            published: core.published_roots(),
            core: Mutex::new(core),
            state: Mutex::new(CommitState {
                open_id: 1,
                ..CommitState::default()
            }),
            cv: Condvar::new(),
            link: parking_lot::RwLock::new(None),
            locks: ServerLocks::new(),
            omap: Default::default(),
            prompted: Default::default(),
        }
    }

    /// Reach the mounts through `link` from now on (the server side of a transport).
    pub fn set_link(&self, link: Arc<dyn ServerLink>) {
        *self.link.write() = Some(link);
    }

    /// A mount's answer to a request the server sent it through its [`ServerLink`]. An
    /// answer that does not fit the lock state is refused (the mount's locks stay as
    /// they were; see [`crate::lock::server::LockServer::invalidated`]).
    pub fn client_reply(&self, rid: u64, reply: ClientReply) {
        if let ClientReply::OpenInoMap { group_nr, bits } = &reply {
            self.omap.answer(rid, *group_nr, bits);
            return;
        }
        let link = self.link.read().clone();
        let mut core = self.core.lock();
        // A protocol error changes nothing on the server; the mount's request handler
        // is where it shows.
        let _ = self
            .locks
            .client_reply(rid, &reply, &mut *core, link.as_deref());
    }

    /// Ask the mounts whose open transactions keep finalized log trees from their merge
    /// (other than `caller`, which just committed or opened one) to commit now
    /// ([`crate::transport::ServerRequest::SyncLogTrees`]), once per transaction: their
    /// trees join the merge at their commit (the original's `SYNC_LOG_TREES`).
    fn prompt_merge_blockers(&self, caller: u64) {
        let Some(link) = self.link.read().clone() else {
            return;
        };
        let Ok(blockers) = self.with_core(|c| c.merge_blockers()) else {
            return;
        };
        let mut prompted = self.prompted.lock();
        prompted.retain(|p| blockers.contains(p));
        for b in blockers {
            if b.0 != caller && prompted.insert(b) {
                link.send(b.0, crate::transport::ServerRequest::SyncLogTrees);
            }
        }
    }

    /// A server that took over starts lock recovery of the mounts `rids` it knows (their
    /// mounted-client records): no lock is granted until each has sent its locks again
    /// ([`crate::transport::ServerRequest::LockRecover`]) or left.
    pub fn start_lock_recovery(&self, rids: impl IntoIterator<Item = u64>) {
        let link = self.link.read().clone();
        self.locks.start_recovery(rids, link.as_deref());
    }

    /// What a server that takes over a volume does once its link is up: raise its seq
    /// above every item seq the log trees hold (items written under lock write seqs the
    /// old server handed out without committing them), then
    /// [`Server::start_lock_recovery`] of every mount with a mounted-client record.
    /// Returns how many mounts must recover.
    pub fn start_lock_recovery_of_mounted(&self) -> Result<usize> {
        let rids: Vec<u64> = {
            let mut core = self.core.lock();
            let c = &mut *core;
            let trees = crate::logs::all_log_trees(c.writer(), &c.roots().logs_root)?;
            let max_item_seq = trees.iter().map(|t| t.max_item_seq.get()).max();
            SeqSource::raise_seq(c, max_item_seq.unwrap_or(0).min(MAX_WRITE_SEQ));
            let items = crate::btree::items(
                c.writer(),
                &c.roots().mounted_clients,
                &crate::format::Key::MIN,
                &crate::format::Key::MAX,
            )?;
            items.iter().map(|it| it.key.first).collect()
        };
        let n = rids.len();
        self.start_lock_recovery(rids);
        Ok(n)
    }

    /// The server stops serving locks (it is being replaced): every lock request waiting
    /// in a handler fails, so its mount sends it to the next server.
    pub fn shutdown_locks(&self) {
        self.locks.cancel_waiting();
    }

    /// Mount `rid` is gone (farewell or eviction): its locks are dropped and what waited
    /// for them goes on.
    pub fn locks_depart(&self, rid: u64) {
        let link = self.link.read().clone();
        let mut core = self.core.lock();
        self.locks.farewell(rid, &mut *core, link.as_deref());
        drop(core);
        self.omap.depart(rid);
    }

    /// The lock service's counters.
    pub fn lock_stats(&self) -> crate::lock::server::LockServerStats {
        self.locks.stats()
    }

    /// The roots of the last durable commit (without waiting for the core).
    pub fn committed_roots(&self) -> crate::transport::CommittedRoots {
        *self.published.read()
    }

    /// Run `f` on the core under a held commit and return once the change is durable.
    /// If `f` fails, nothing waits for a commit and the error is returned (a change that
    /// `f` left half-made has poisoned the core, so it is never committed).
    pub fn apply<T>(&self, f: impl FnOnce(&mut ServerCore) -> Result<T>) -> Result<T> {
        let my_id = {
            let mut s = self.state.lock();
            if s.committing {
                // The commit's end takes our hold for us (see `CommitState::waiting`).
                s.waiting += 1;
                let grants = s.grants;
                while s.grants == grants {
                    self.cv.wait(&mut s);
                }
            } else {
                s.holders += 1;
            }
            s.open_id
        };
        let res = {
            let mut core = self.core.lock();
            f(&mut core)
        };
        let mut s = self.state.lock();
        s.holders -= 1;
        let value = match res {
            Ok(v) => v,
            Err(e) => {
                self.maybe_commit(s);
                return Err(e);
            }
        };
        // Wait for the commit of `my_id`, starting it if we are the last holder.
        loop {
            if s.done_id >= my_id {
                return match s.failed_from {
                    Some(f) if f <= my_id => Err(VolumeError::Poisoned),
                    _ => Ok(value),
                };
            }
            if s.holders == 0 && !s.committing {
                s = self.run_commit(s);
                continue;
            }
            self.cv.wait(&mut s);
        }
    }

    /// The last holder leaving after a failed change still starts a pending commit, so
    /// no other handler waits forever.
    fn maybe_commit(&self, s: parking_lot::MutexGuard<'_, CommitState>) {
        if s.holders == 0 && !s.committing {
            drop(self.run_commit(s));
        }
    }

    fn run_commit<'a>(
        &'a self,
        s: parking_lot::MutexGuard<'a, CommitState>,
    ) -> parking_lot::MutexGuard<'a, CommitState> {
        self.run_commit_result(s).0
    }

    /// Write the open commit (if it holds changes) and publish its outcome.
    fn run_commit_result<'a>(
        &'a self,
        mut s: parking_lot::MutexGuard<'a, CommitState>,
    ) -> (
        parking_lot::MutexGuard<'a, CommitState>,
        Result<Option<CommitStats>>,
    ) {
        s.committing = true;
        let id = s.open_id;
        s.open_id += 1;
        drop(s);
        let res = {
            let mut core = self.core.lock();
            if core.is_poisoned() {
                Err(VolumeError::Poisoned)
            } else if core.is_dirty() {
                core.commit().map(Some)
            } else {
                Ok(None)
            }
        };
        let mut s = self.state.lock();
        s.committing = false;
        s.done_id = id;
        // Everyone who arrived during the commit holds the next one before any of them
        // can start it.
        s.holders += s.waiting;
        s.waiting = 0;
        s.grants += 1;
        match &res {
            Ok(Some(_)) => s.commits += 1,
            Ok(None) => {}
            Err(_) => {
                s.failed_from.get_or_insert(id);
            }
        }
        self.cv.notify_all();
        (s, res)
    }

    /// Handle a client request that arrived on a connection whose mount greeted as
    /// `conn` (`None`: it has not greeted); the answer is given once the change is
    /// durable. A merge completion is taken as the connection's mount's, whatever it
    /// says, and refused from a connection that has not greeted.
    pub fn handle_from(&self, conn: Option<u64>, req: Request) -> Result<Response> {
        match req {
            Request::Greeting { rid, reconnect } => self.apply(|c| {
                c.greeting(rid, reconnect)?;
                Ok(Response::Greeting {
                    fsid: c.super_block().hdr.fsid.get(),
                })
            }),
            Request::GetLogTrees { rid } => {
                let r = self.apply(|c| {
                    c.get_log_trees(rid)
                        .map(|lt| Response::LogTrees(Box::new(lt)))
                });
                self.prompt_merge_blockers(rid);
                r
            }
            // The next transaction opens in the same server commit: a client commit
            // costs one server commit, not two.
            Request::CommitLogTrees(lt) => {
                let r = self.apply(|c| {
                    c.commit_log_trees(&lt)?;
                    // Items may carry lock write seqs above every seq this server
                    // committed.
                    SeqSource::raise_seq(c, lt.max_item_seq.get().min(MAX_WRITE_SEQ));
                    c.get_log_trees(lt.rid.get())
                        .map(|next| Response::LogTrees(Box::new(next)))
                });
                self.prompt_merge_blockers(lt.rid.get());
                r
            }
            Request::GetLogMerge { rid } => {
                // Splicing and freeing advance a commit at a time until a request can be
                // handed out or there is nothing to do.
                for _ in 0..100_000 {
                    match self.apply(|c| c.get_log_merge(rid))? {
                        MergeStep::InProgress => continue,
                        MergeStep::Request(req) => {
                            return Ok(Response::LogMerge(Some(Box::new(req))))
                        }
                        MergeStep::Nothing => return Ok(Response::LogMerge(None)),
                    }
                }
                Err(VolumeError::Protocol("log merge work did not settle"))
            }
            Request::CommitLogMerge(comp) => {
                let Some(rid) = conn else {
                    return Err(VolumeError::Protocol(
                        "merge completion from a mount that has not greeted",
                    ));
                };
                self.apply(|c| {
                    c.commit_log_merge(rid, &comp)?;
                    Ok(Response::Done)
                })
            }
            Request::GetSrchCompact { rid } => self.apply(|c| {
                c.get_srch_compact(rid)
                    .map(|sc| Response::SrchCompact(sc.map(Box::new)))
            }),
            Request::CommitSrchCompact(sc) => {
                let Some(rid) = conn else {
                    return Err(VolumeError::Protocol(
                        "srch compaction result from a mount that has not greeted",
                    ));
                };
                self.apply(|c| {
                    c.commit_srch_compact(rid, &sc)?;
                    Ok(Response::Done)
                })
            }
            Request::AllocInodes { rid, count } => self.apply(|c| {
                let first = c.alloc_inodes(rid, count)?;
                Ok(Response::Inodes { first, count })
            }),
            Request::Farewell { rid } => {
                self.apply(|c| c.farewell(rid))?;
                self.locks_depart(rid);
                Ok(Response::Done)
            }
            Request::GetRoots => Ok(Response::Roots(self.committed_roots())),
            Request::GetLastSeq => Ok(Response::Seq(self.with_core(|c| c.last_seq())?)),
            Request::Statfs => self.with_core(|c| {
                let sb = c.super_block();
                Ok(Response::Statfs(VolumeStats {
                    fsid: sb.hdr.fsid.get(),
                    total_meta_blocks: sb.total_meta_blocks.get(),
                    total_data_blocks: sb.total_data_blocks.get(),
                    meta_free_blocks: c.meta_free_blocks(),
                    data_free_blocks: c.data_free_blocks(),
                    inode_count: c.inode_count()?,
                    reserved_meta_blocks: c.limits().meta_reserve,
                }))
            }),
            Request::Merge(MergeAdmin::ForceFinalize) => self.apply(|c| {
                c.force_finalize();
                Ok(Response::Done)
            }),
            Request::Merge(MergeAdmin::SetConfig(cfg)) => self.apply(|c| {
                c.set_merge_config(cfg);
                Ok(Response::Done)
            }),
            Request::Merge(MergeAdmin::Status) => self.with_core(|c| {
                let trees = crate::logs::all_log_trees(c.writer(), &c.roots().logs_root)?;
                Ok(Response::Merge(MergeStatus {
                    running: c.merge_status()?.is_some(),
                    logs_with_items: trees
                        .iter()
                        .filter(|t| !crate::format::BtreeRoot::from(t.item_root).is_empty())
                        .count() as u64,
                    stall: c.merge_stall(),
                }))
            }),
            Request::Lock(nl) => {
                let Some(rid) = conn else {
                    return Err(VolumeError::Protocol(
                        "lock request from a mount that has not greeted",
                    ));
                };
                let link = self.link.read().clone();
                let token = {
                    let mut core = self.core.lock();
                    self.locks.submit(rid, nl, &mut *core, link.as_deref())
                };
                // Blocks until the lock is granted: other mounts may have to let go.
                let grant = self.locks.wait(token).map_err(|_| {
                    VolumeError::Protocol("lock request cancelled: the mount left or sent it again")
                })?;
                Ok(Response::Lock(grant))
            }
            Request::OpenInoMap { group_nr } => {
                let Some(rid) = conn else {
                    return Err(VolumeError::Protocol(
                        "open-inode map request from a mount that has not greeted",
                    ));
                };
                let others: Vec<u64> = self
                    .with_core(|c| {
                        crate::btree::items(
                            c.writer(),
                            &c.roots().mounted_clients,
                            &crate::format::Key::MIN,
                            &crate::format::Key::MAX,
                        )
                    })?
                    .iter()
                    .map(|it| it.key.first)
                    .filter(|&r| r != rid)
                    .collect();
                let link = self.link.read().clone();
                let bits = self.omap.ask(group_nr, others, link.as_deref());
                Ok(Response::OpenInoMap(Box::new(bits)))
            }
        }
    }

    /// Commits written so far (a measure of batching).
    pub fn commits(&self) -> u64 {
        self.state.lock().commits
    }

    /// Run `f` on the core without holding a commit (reads, statistics).
    pub fn with_core<T>(&self, f: impl FnOnce(&ServerCore) -> T) -> T {
        f(&self.core.lock())
    }

    /// Commit whatever is pending now and return its stats (`None`: nothing to commit).
    pub fn sync(&self) -> Result<Option<CommitStats>> {
        let mut s = self.state.lock();
        while s.committing || s.holders > 0 {
            self.cv.wait(&mut s);
        }
        self.run_commit_result(s).1
    }

    /// The core back, for reopening or inspection.
    pub fn into_core(self) -> ServerCore {
        self.core.into_inner()
    }
}
