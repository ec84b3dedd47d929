//! The server's side of the lock service as a pure state machine (the original's
//! `lock_server.c`): messages from mounts in, messages to mounts out.
//!
//! Per lock the server keeps the mounts' grants, their waiting requests in arrival order,
//! and the grants it asked a mount to drop (invalidated, answer pending). Processing a
//! lock walks its requests in order: a request that conflicts with grants sends those
//! holders invalidations and waits for every answer; a request that conflicts with
//! nothing is granted (replacing the mount's own grant), WRITE and WRITE_ONLY with a new
//! `write_seq` from the caller's [`SeqSource`]. Nothing is granted while invalidations of
//! the lock or lock recovery are pending.
//!
//! Recovery: a new server learns the mounts' locks from the mounts
//! ([`LockServer::start_recovery`] asks each known mount for them in key order, batch by
//! batch). A lock a mount was dropping when the old server went away is recovered in
//! the mode it drops *from* and waits for the mount's answer, as if this server had asked
//! (the answer may arrive before the batch: it is kept until then). Requests wait until
//! every known mount has recovered or left.

use super::{compatible, invalidation_mode, LockError, LockMode};
use crate::format::Key;
use crate::transport::{NetLock, ServerRequest, LOCK_RECOVER_BATCH};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

/// Write seqs a mount may report (recovery, invalidation answers): a greater one is a
/// protocol error, so a hostile mount cannot push the server's seq to overflow.
pub const MAX_WRITE_SEQ: u64 = 1 << 62;

/// Where write seqs come from: the server's seq (`ServerCore::next_seq`).
pub trait SeqSource {
    /// A seq greater than every one handed out before.
    fn next_seq(&mut self) -> u64;
    /// Make later seqs greater than `seq` (a recovered lock's `write_seq`).
    fn raise_seq(&mut self, seq: u64);
}

/// A message the lock server sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LockOutput {
    /// The answer to request `token` of mount `rid` ([`crate::transport::Response::Lock`]).
    Grant {
        /// The mount.
        rid: u64,
        /// The request's token, as given to [`LockServer::request`].
        token: u64,
        /// The grant.
        nl: NetLock,
    },
    /// Request `token` of mount `rid` will never be answered (the mount left, or sent it
    /// again under a new token): its waiter gives up.
    Cancel {
        /// The mount.
        rid: u64,
        /// The request's token.
        token: u64,
    },
    /// A request to mount `rid` ([`ServerRequest::LockInvalidate`] or
    /// [`ServerRequest::LockRecover`]).
    Send {
        /// The mount.
        rid: u64,
        /// What it is asked.
        req: ServerRequest,
    },
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    rid: u64,
    /// Granted: the mode; requested: the mode asked for; invalidated: the mode granted.
    mode: LockMode,
    /// Requested: the waiter's token. Invalidated: unused.
    token: u64,
    /// Invalidated: the mode the mount was asked to drop to.
    target: LockMode,
}

#[derive(Debug, Default)]
struct ServerLock {
    granted: Vec<Entry>,
    requested: VecDeque<Entry>,
    invalidated: Vec<Entry>,
}

impl ServerLock {
    fn is_empty(&self) -> bool {
        self.granted.is_empty() && self.requested.is_empty() && self.invalidated.is_empty()
    }
}

/// Counters of what the server did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockServerStats {
    /// Requests received.
    pub requests: u64,
    /// Grants sent.
    pub grants: u64,
    /// Invalidations sent.
    pub invalidations: u64,
    /// Locks rebuilt from mounts' recovery batches.
    pub recovered: u64,
    /// Of those, locks the mount was dropping (recovered waiting for its answer, or
    /// with the answer that came before the batch).
    pub recovered_dropping: u64,
    /// Messages that matched nothing and were ignored (duplicates, answers for mounts
    /// that left).
    pub ignored: u64,
}

/// The lock server's state (see the module docs).
#[derive(Debug, Default)]
pub struct LockServer {
    locks: BTreeMap<Key, ServerLock>,
    /// Mounts whose locks are not recovered yet.
    recovering: BTreeSet<u64>,
    /// Invalidation answers that arrived from a recovering mount before the batch of
    /// their lock.
    early: HashMap<(u64, Key), NetLock>,
    stats: LockServerStats,
}

impl LockServer {
    /// A server with no locks and no recovery pending (a volume's first server, or one
    /// whose mounts all left).
    pub fn new() -> LockServer {
        LockServer::default()
    }

    /// What the server did so far.
    pub fn stats(&self) -> LockServerStats {
        self.stats
    }

    /// Whether recovery waits for some mount.
    pub fn recovering(&self) -> bool {
        !self.recovering.is_empty()
    }

    /// The modes granted per lock and mount (invalidated grants count in the mode they
    /// drop from), for checks and debugging.
    pub fn granted(&self) -> Vec<(Key, u64, LockMode)> {
        let mut out = Vec::new();
        for (key, l) in &self.locks {
            for e in l.granted.iter().chain(&l.invalidated) {
                out.push((*key, e.rid, e.mode));
            }
        }
        out
    }

    /// Requests waiting for a grant.
    pub fn waiting(&self) -> usize {
        self.locks.values().map(|l| l.requested.len()).sum()
    }

    /// Mount `rid` asks for `nl.new_mode` on lock `nl.key`; `token` names the waiter
    /// (it comes back in the grant). A second request of the mount for the same lock
    /// replaces the first (a resend after a reconnect): the first is cancelled.
    pub fn request(
        &mut self,
        rid: u64,
        token: u64,
        nl: NetLock,
        seq: &mut dyn SeqSource,
    ) -> Vec<LockOutput> {
        self.stats.requests += 1;
        let mut out = Vec::new();
        let l = self.locks.entry(nl.key).or_default();
        if let Some(e) = l.requested.iter_mut().find(|e| e.rid == rid) {
            out.push(LockOutput::Cancel {
                rid,
                token: e.token,
            });
            e.token = token;
            e.mode = nl.new_mode;
        } else {
            l.requested.push_back(Entry {
                rid,
                mode: nl.new_mode,
                token,
                target: LockMode::Null,
            });
        }
        self.process(nl.key, seq, &mut out);
        out
    }

    /// Mount `rid` answers an invalidation: it dropped lock `nl.key` to `nl.new_mode`,
    /// having committed what it wrote under the grant of `nl.write_seq` (later seqs are
    /// made greater: the answer may be all a new server hears of that grant). An answer
    /// nothing waits for is ignored (a duplicate), unless the mount is recovering: then
    /// it is kept for the lock's recovery batch.
    pub fn invalidated(
        &mut self,
        rid: u64,
        nl: NetLock,
        seq: &mut dyn SeqSource,
    ) -> Result<Vec<LockOutput>, LockError> {
        let mut out = Vec::new();
        if nl.write_seq > MAX_WRITE_SEQ {
            return Err(LockError::Protocol("write seq out of range"));
        }
        seq.raise_seq(nl.write_seq);
        let found = self
            .locks
            .get(&nl.key)
            .and_then(|l| l.invalidated.iter().position(|e| e.rid == rid));
        let Some(i) = found else {
            if self.recovering.contains(&rid) {
                self.early.insert((rid, nl.key), nl);
            } else {
                self.stats.ignored += 1;
            }
            return Ok(out);
        };
        let l = self
            .locks
            .get_mut(&nl.key)
            .ok_or(LockError::Protocol("invalidated lock vanished"))?;
        let e = l.invalidated[i];
        if nl.new_mode != e.target {
            return Err(LockError::Protocol(
                "invalidation answered with another mode than asked",
            ));
        }
        l.invalidated.swap_remove(i);
        if e.target != LockMode::Null {
            l.granted.push(Entry {
                mode: e.target,
                ..e
            });
        }
        self.process(nl.key, seq, &mut out);
        Ok(out)
    }

    /// Mount `rid` left (farewell or eviction): its grants and requests go (their waiters
    /// are cancelled), and what waited for it is processed.
    pub fn farewell(&mut self, rid: u64, seq: &mut dyn SeqSource) -> Vec<LockOutput> {
        let mut out = Vec::new();
        let mut touched = Vec::new();
        for (key, l) in self.locks.iter_mut() {
            let before = l.granted.len() + l.requested.len() + l.invalidated.len();
            l.granted.retain(|e| e.rid != rid);
            l.invalidated.retain(|e| e.rid != rid);
            l.requested.retain(|e| {
                if e.rid == rid {
                    out.push(LockOutput::Cancel {
                        rid,
                        token: e.token,
                    });
                }
                e.rid != rid
            });
            if l.granted.len() + l.requested.len() + l.invalidated.len() != before {
                touched.push(*key);
            }
        }
        self.early.retain(|(r, _), _| *r != rid);
        if self.recovering.remove(&rid) && self.recovering.is_empty() {
            self.process_all(seq, &mut out);
        } else {
            for key in touched {
                self.process(key, seq, &mut out);
            }
        }
        out
    }

    /// Cancel every waiting request (the server is going away; the mounts send them to
    /// the next one).
    pub fn cancel_waiting(&mut self) -> Vec<LockOutput> {
        let mut out = Vec::new();
        for l in self.locks.values_mut() {
            for e in l.requested.drain(..) {
                out.push(LockOutput::Cancel {
                    rid: e.rid,
                    token: e.token,
                });
            }
        }
        self.locks.retain(|_, l| !l.is_empty());
        out
    }

    /// A new server starts: the known mounts `rids` (those with a mounted-client record)
    /// must send their locks before anything is granted. Asks each for its first batch.
    pub fn start_recovery(&mut self, rids: impl IntoIterator<Item = u64>) -> Vec<LockOutput> {
        let mut out = Vec::new();
        for rid in rids {
            if self.recovering.insert(rid) {
                out.push(LockOutput::Send {
                    rid,
                    req: ServerRequest::LockRecover { key: Key::MIN },
                });
            }
        }
        out
    }

    /// A recovery batch of mount `rid`: its locks in key order, each in the mode it holds
    /// (`old_mode`), and dropping to `new_mode` when that differs. An empty batch ends the
    /// mount's recovery. Raises the seq above the batch's write seqs. A batch from a mount
    /// that is not recovering is ignored (a duplicate).
    pub fn recover(
        &mut self,
        rid: u64,
        batch: &[NetLock],
        seq: &mut dyn SeqSource,
    ) -> Result<Vec<LockOutput>, LockError> {
        let mut out = Vec::new();
        if !self.recovering.contains(&rid) {
            self.stats.ignored += 1;
            return Ok(out);
        }
        if batch.len() > LOCK_RECOVER_BATCH {
            return Err(LockError::Protocol("lock recovery batch too large"));
        }
        if batch.iter().any(|nl| nl.write_seq > MAX_WRITE_SEQ) {
            return Err(LockError::Protocol("write seq out of range"));
        }
        if batch.windows(2).any(|w| w[0].key >= w[1].key) {
            return Err(LockError::Protocol("lock recovery batch out of key order"));
        }
        let Some(last) = batch.last() else {
            self.recovering.remove(&rid);
            self.early.retain(|(r, _), _| *r != rid);
            if self.recovering.is_empty() {
                self.process_all(seq, &mut out);
            }
            return Ok(out);
        };
        for nl in batch {
            let dropping = nl.new_mode != nl.old_mode;
            if dropping && nl.new_mode != invalidation_mode(nl.old_mode, nl.new_mode) {
                return Err(LockError::Protocol("recovered lock drops to a bad mode"));
            }
            seq.raise_seq(nl.write_seq);
            let l = self.locks.entry(nl.key).or_default();
            if l.granted.iter().chain(&l.invalidated).any(|e| e.rid == rid) {
                // A batch sent again: the lock is recovered already.
                continue;
            }
            self.stats.recovered += 1;
            if dropping {
                self.stats.recovered_dropping += 1;
            }
            let e = Entry {
                rid,
                mode: nl.old_mode,
                token: 0,
                target: nl.new_mode,
            };
            if !dropping {
                if nl.old_mode != LockMode::Null {
                    l.granted.push(e);
                }
            } else if let Some(ans) = self.early.remove(&(rid, nl.key)) {
                // The mount finished dropping before it sent the batch.
                if ans.new_mode == nl.new_mode && nl.new_mode != LockMode::Null {
                    l.granted.push(Entry {
                        mode: nl.new_mode,
                        ..e
                    });
                }
            } else {
                l.invalidated.push(e);
            }
        }
        let next = last
            .key
            .next()
            .ok_or(LockError::Protocol("lock recovery past the last key"))?;
        out.push(LockOutput::Send {
            rid,
            req: ServerRequest::LockRecover { key: next },
        });
        Ok(out)
    }

    fn process_all(&mut self, seq: &mut dyn SeqSource, out: &mut Vec<LockOutput>) {
        let keys: Vec<Key> = self
            .locks
            .iter()
            .filter(|(_, l)| !l.requested.is_empty())
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.process(key, seq, out);
        }
    }

    /// Grant what can be granted on lock `key`, in arrival order, invalidating what is in
    /// the way (`process_waiting_requests`).
    fn process(&mut self, key: Key, seq: &mut dyn SeqSource, out: &mut Vec<LockOutput>) {
        if !self.recovering.is_empty() {
            return;
        }
        let Some(l) = self.locks.get_mut(&key) else {
            return;
        };
        while l.invalidated.is_empty() {
            let Some(req) = l.requested.front().copied() else {
                break;
            };
            let mut i = 0;
            while i < l.granted.len() {
                let g = l.granted[i];
                if compatible(g.mode, g.rid, req.mode, req.rid) {
                    i += 1;
                    continue;
                }
                let target = invalidation_mode(g.mode, req.mode);
                out.push(LockOutput::Send {
                    rid: g.rid,
                    req: ServerRequest::LockInvalidate(NetLock {
                        key,
                        write_seq: 0,
                        old_mode: g.mode,
                        new_mode: target,
                    }),
                });
                self.stats.invalidations += 1;
                l.granted.swap_remove(i);
                l.invalidated.push(Entry { target, ..g });
            }
            if !l.invalidated.is_empty() {
                break;
            }
            l.requested.pop_front();
            let old_mode = match l.granted.iter().position(|g| g.rid == req.rid) {
                Some(i) => l.granted.swap_remove(i).mode,
                None => LockMode::Null,
            };
            let write_seq = if super::can_write(req.mode) {
                seq.next_seq()
            } else {
                0
            };
            out.push(LockOutput::Grant {
                rid: req.rid,
                token: req.token,
                nl: NetLock {
                    key,
                    write_seq,
                    old_mode,
                    new_mode: req.mode,
                },
            });
            self.stats.grants += 1;
            if req.mode != LockMode::Null {
                l.granted.push(req);
            }
        }
        if l.is_empty() {
            self.locks.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LockMode::*;

    #[derive(Default)]
    struct Seq(u64);
    impl SeqSource for Seq {
        fn next_seq(&mut self) -> u64 {
            self.0 += 1;
            self.0
        }
        fn raise_seq(&mut self, seq: u64) {
            self.0 = self.0.max(seq);
        }
    }

    fn nl(old: LockMode, new: LockMode) -> NetLock {
        NetLock {
            key: Key::new(16, 0, 0, 0, 0, 0),
            write_seq: 0,
            old_mode: old,
            new_mode: new,
        }
    }

    #[test]
    fn conflicting_request_waits_for_every_invalidation() {
        let (mut s, mut q) = (LockServer::new(), Seq::default());
        assert!(matches!(
            s.request(1, 10, nl(Null, Read), &mut q)[..],
            [LockOutput::Grant { rid: 1, .. }]
        ));
        assert!(matches!(
            s.request(2, 20, nl(Null, Read), &mut q)[..],
            [LockOutput::Grant { rid: 2, .. }]
        ));
        let out = s.request(3, 30, nl(Null, Write), &mut q);
        assert_eq!(out.len(), 2, "both readers are invalidated: {out:?}");
        assert!(out.iter().all(|o| matches!(o, LockOutput::Send { req: ServerRequest::LockInvalidate(n), .. } if n.new_mode == Null)));
        // A later reader waits behind the writer, even though it is compatible.
        assert!(s.request(4, 40, nl(Null, Read), &mut q).is_empty());
        assert!(s.invalidated(1, nl(Read, Null), &mut q).unwrap().is_empty());
        let out = s.invalidated(2, nl(Read, Null), &mut q).unwrap();
        // The writer is granted with a new write seq, and at once asked to drop to READ.
        assert!(
            matches!(out[0], LockOutput::Grant { rid: 3, token: 30, nl } if nl.write_seq == 1 && nl.new_mode == Write)
        );
        assert!(
            matches!(out[1], LockOutput::Send { rid: 3, req: ServerRequest::LockInvalidate(n) } if n.new_mode == Read)
        );
        // A duplicate answer changes nothing.
        assert!(s.invalidated(2, nl(Read, Null), &mut q).unwrap().is_empty());
        let out = s.invalidated(3, nl(Write, Read), &mut q).unwrap();
        assert!(matches!(out[..], [LockOutput::Grant { rid: 4, .. }]));
        assert_eq!(s.granted().len(), 2);
    }

    #[test]
    fn same_mount_upgrade_and_null_request() {
        let (mut s, mut q) = (LockServer::new(), Seq::default());
        s.request(1, 1, nl(Null, Read), &mut q);
        let out = s.request(1, 2, nl(Read, Write), &mut q);
        assert!(
            matches!(out[..], [LockOutput::Grant { nl, .. }] if nl.old_mode == Read && nl.new_mode == Write)
        );
        // WRITE_ONLY after WRITE on the same mount: its own grant is invalidated first.
        let out = s.request(1, 3, nl(Write, WriteOnly), &mut q);
        assert!(matches!(out[..], [LockOutput::Send { rid: 1, .. }]));
        let out = s.invalidated(1, nl(Write, Null), &mut q).unwrap();
        assert!(
            matches!(out[..], [LockOutput::Grant { nl, .. }] if nl.old_mode == Null && nl.write_seq == 2)
        );
        let out = s.request(2, 4, nl(Null, WriteOnly), &mut q);
        assert!(
            matches!(out[..], [LockOutput::Grant { rid: 2, .. }]),
            "WO is shared"
        );
        // A NULL request invalidates the mount's own grant first, then gives the lock
        // up; nothing is tracked for it.
        let out = s.request(1, 5, nl(WriteOnly, Null), &mut q);
        assert!(
            matches!(out[..], [LockOutput::Send { rid: 1, req: ServerRequest::LockInvalidate(n) }] if n.new_mode == Null)
        );
        let out = s.invalidated(1, nl(WriteOnly, Null), &mut q).unwrap();
        assert!(
            matches!(out[..], [LockOutput::Grant { rid: 1, nl, .. }] if nl.new_mode == Null && nl.old_mode == Null)
        );
        assert_eq!(s.granted(), vec![(nl(Null, Null).key, 2, WriteOnly)]);
    }

    #[test]
    fn recovery_blocks_grants_and_raises_the_seq() {
        let (mut s, mut q) = (LockServer::new(), Seq::default());
        let out = s.start_recovery([1, 2]);
        assert_eq!(out.len(), 2);
        assert!(s.request(3, 1, nl(Null, Read), &mut q).is_empty());
        let mut w = nl(Write, Write);
        w.write_seq = 77;
        let out = s.recover(1, &[w], &mut q).unwrap();
        assert!(matches!(
            &out[..],
            [LockOutput::Send {
                rid: 1,
                req: ServerRequest::LockRecover { .. }
            }]
        ));
        assert!(s.recover(1, &[], &mut q).unwrap().is_empty());
        // Mount 2 leaves instead of recovering: requests proceed.
        let out = s.farewell(2, &mut q);
        assert!(
            matches!(out[..], [LockOutput::Send { rid: 1, req: ServerRequest::LockInvalidate(n) }] if n.new_mode == Read)
        );
        let out = s.invalidated(1, nl(Write, Read), &mut q).unwrap();
        assert!(matches!(out[..], [LockOutput::Grant { rid: 3, .. }]));
        assert_eq!(q.next_seq(), 78, "the seq is above the recovered write seq");
    }

    #[test]
    fn recovered_mid_invalidation_waits_for_the_answer() {
        let (mut s, mut q) = (LockServer::new(), Seq::default());
        s.start_recovery([1, 2]);
        // Mount 2 answers the old server's invalidation before it sends its batch.
        s.invalidated(2, nl(Write, Null), &mut q).unwrap();
        s.recover(2, &[nl(Write, Null)], &mut q).unwrap();
        s.recover(2, &[], &mut q).unwrap();
        s.recover(1, &[nl(Read, Null)], &mut q).unwrap();
        s.recover(1, &[], &mut q).unwrap();
        assert_eq!(s.granted(), vec![(nl(Null, Null).key, 1, Read)]);
        assert!(
            s.request(3, 1, nl(Null, Write), &mut q).is_empty(),
            "waits for mount 1"
        );
        let out = s.invalidated(1, nl(Read, Null), &mut q).unwrap();
        assert!(matches!(out[..], [LockOutput::Grant { rid: 3, .. }]));
        assert!(
            s.recover(1, &[nl(Read, Read)], &mut q).unwrap().is_empty(),
            "late batch ignored"
        );
        // A write seq no volume reaches is refused, so the seq cannot be pushed to overflow.
        let mut huge = nl(Write, Null);
        huge.write_seq = u64::MAX;
        assert!(s.invalidated(3, huge, &mut q).is_err());
        s.start_recovery([9]);
        assert!(s.recover(9, &[huge], &mut q).is_err());
    }
}
