//! The lock state machines behind mutexes, for threads: [`ClusterLocks`] on a mount
//! (users block in [`ClusterLocks::lock`] until granted; the mount's
//! [`crate::transport::ClientHandler`] hands the server's lock requests to
//! [`ClusterLocks::handle`]), and [`ServerLocks`] behind the server's request handlers
//! (a handler blocks until its request is granted; invalidations go out through the
//! server's [`ServerLink`], answers come back through `Server::client_reply`).
//!
//! An operation takes its locks first, in key order ([`ClusterLocks::lock_inodes`]), and
//! only then holds its transaction: an invalidation may have to commit the transaction,
//! so a thread that waited for a lock while holding it could wait for itself.

use super::client::{Acquire, CacheState, LockClient, LockClientStats};
use super::server::{LockOutput, LockServer, LockServerStats, SeqSource};
use super::{inode_lock, LockError, LockMode, LockRange};
use crate::client::locks::{Held, ItemLocks};
use crate::client::ClientError;
use crate::format::Key;
use crate::transport::{
    ClientReply, NetLock, Request, Response, ServerLink, ServerRequest, Transport,
};
use parking_lot::{Condvar, Mutex, RwLock};
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// What a mount does for its locks: the item cache and transaction behind them.
pub trait LockOwner: Send + Sync {
    /// Lock `range` was written in transaction `trans_seq` and is being given up: commit
    /// now if that transaction is the open one (its items must be durable before another
    /// mount may read them).
    fn sync_if_written(&self, range: &LockRange, trans_seq: u64);

    /// Forget every cached item of `range` (the lock drops to `to`, which cannot read
    /// them, or can but the mount may not trust what it read before).
    fn invalidate(&self, range: &LockRange, to: LockMode);

    /// What the cache holds of `range` (checked against a grant's modes).
    fn cache_state(&self, range: &LockRange) -> CacheState {
        let _ = range;
        CacheState::default()
    }

    /// Whether the calling thread holds the transaction open (it may not wait for a
    /// lock then).
    fn trans_held(&self) -> bool {
        false
    }
}

/// A mount's cluster locks over its [`Transport`].
#[derive(Debug)]
pub struct ClusterLocks {
    transport: Arc<dyn Transport>,
    owner: RwLock<Option<Weak<dyn LockOwner>>>,
    state: Mutex<LockClient>,
    cv: Condvar,
}

impl std::fmt::Debug for dyn LockOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LockOwner")
    }
}

/// A user's hold of a lock in a mode; let go when dropped.
#[derive(Debug)]
pub struct LockGuard {
    locks: Arc<ClusterLocks>,
    range: LockRange,
    mode: LockMode,
    write_seq: u64,
    refresh_gen: u64,
}

impl LockGuard {
    /// The keys the lock covers.
    pub fn range(&self) -> &LockRange {
        &self.range
    }

    /// The mode held.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The seq floor of items written under the grant (an item's seq is at least this).
    pub fn write_seq(&self) -> u64 {
        self.write_seq
    }

    /// Grows each time the mount regains the right to read the range: a cached inode
    /// read under an older generation must be read again.
    pub fn refresh_gen(&self) -> u64 {
        self.refresh_gen
    }

    /// Whether `key` is covered by the lock.
    pub fn covers(&self, key: &Key) -> bool {
        self.range.contains(key)
    }

    /// Items were written under the lock in transaction `trans_seq` (an invalidation
    /// commits it first while it is open).
    pub fn written(&self, trans_seq: u64) {
        self.locks
            .state
            .lock()
            .written(&self.range.start, trans_seq);
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let mut st = self.locks.state.lock();
        // Only a guard releases its own hold, so the lock and the mode are there.
        let _ = st.release(&self.range.start, self.mode);
        drop(st);
        self.locks.cv.notify_all();
    }
}

impl ClusterLocks {
    /// The locks of a mount that reaches the server through `transport`, keeping up to
    /// `idle_limit` idle locks ([`super::client::DEFAULT_LOCK_IDLE_COUNT`]).
    pub fn new(transport: Arc<dyn Transport>, idle_limit: usize) -> Arc<ClusterLocks> {
        Arc::new(ClusterLocks {
            transport,
            owner: RwLock::new(None),
            state: Mutex::new(LockClient::new(idle_limit)),
            cv: Condvar::new(),
        })
    }

    /// The item cache and transaction the locks protect (none: nothing is cached).
    pub fn set_owner(&self, owner: Weak<dyn LockOwner>) {
        *self.owner.write() = Some(owner);
    }

    fn owner(&self) -> Option<Arc<dyn LockOwner>> {
        self.owner.read().as_ref().and_then(Weak::upgrade)
    }

    /// What the mount's lock client did so far.
    pub fn stats(&self) -> LockClientStats {
        self.state.lock().stats()
    }

    /// Hold `range` in `mode` (READ, WRITE or WRITE_ONLY), waiting for the server's
    /// grant if the mount does not hold a mode that serves it. One request per lock is
    /// in flight; other threads that want the lock wait for it.
    pub fn lock(
        self: &Arc<Self>,
        range: LockRange,
        mode: LockMode,
    ) -> Result<LockGuard, LockError> {
        let (write_seq, refresh_gen) = self.acquire_waiting(range, mode)?;
        Ok(LockGuard {
            locks: self.clone(),
            range,
            mode,
            write_seq,
            refresh_gen,
        })
    }

    /// Count a user of `range` in `mode`, waiting for the grant if need be: the lock's
    /// write seq and refresh generation.
    fn acquire_waiting(&self, range: LockRange, mode: LockMode) -> Result<(u64, u64), LockError> {
        if self.owner().is_some_and(|o| o.trans_held()) {
            return Err(LockError::Deadlock);
        }
        let mut st = self.state.lock();
        loop {
            match st.acquire(range, mode)? {
                Acquire::Granted => {
                    return Ok(st
                        .lock(&range.start)
                        .map_or((0, 0), |l| (l.write_seq, l.refresh_gen)));
                }
                Acquire::Wait { send: Some(nl) } => {
                    drop(st);
                    let res = self.send(range, nl);
                    st = self.state.lock();
                    if let Err(e) = res {
                        st.request_failed(&range.start);
                        drop(st);
                        self.cv.notify_all();
                        return Err(e);
                    }
                    self.cv.notify_all();
                }
                Acquire::Wait { send: None } => self.cv.wait(&mut st),
            }
        }
    }

    /// Hold the lock that covers item `key` in `mode` ([`super::lock_range_of`]).
    pub fn lock_key(self: &Arc<Self>, key: &Key, mode: LockMode) -> Result<LockGuard, LockError> {
        self.lock(super::lock_range_of(key), mode)
    }

    /// Send request `nl` for `range` and apply the grant.
    fn send(&self, range: LockRange, nl: NetLock) -> Result<(), LockError> {
        let grant = match self.transport.call(Request::Lock(nl)) {
            Ok(Response::Lock(g)) if g.key == nl.key => g,
            Ok(_) => return Err(LockError::Protocol("lock request answered with another")),
            Err(_) => return Err(LockError::Disconnected),
        };
        let cache = self
            .owner()
            .map(|o| o.cache_state(&range))
            .unwrap_or_default();
        self.state.lock().grant(grant, cache)
    }

    /// Hold the inode groups of `inos` in `mode`, in key order (so two operations
    /// locking the same inodes cannot wait on each other); a group is locked once.
    pub fn lock_inodes(
        self: &Arc<Self>,
        inos: &[u64],
        mode: LockMode,
    ) -> Result<Vec<LockGuard>, LockError> {
        let mut ranges: Vec<LockRange> = inos.iter().map(|i| inode_lock(*i)).collect();
        ranges.sort();
        ranges.dedup();
        ranges.into_iter().map(|r| self.lock(r, mode)).collect()
    }

    /// Give up idle locks past the limit (NULL requests; waits for their grants). A
    /// mount's background work calls it now and then. Returns how many were given up.
    pub fn shrink(&self) -> Result<usize, LockError> {
        let nls: Vec<(NetLock, Option<LockRange>)> = {
            let mut st = self.state.lock();
            let nls = st.shrink();
            nls.into_iter()
                .map(|nl| (nl, st.lock(&nl.key).map(|l| l.range)))
                .collect()
        };
        let n = nls.len();
        let mut first_err = None;
        for (nl, range) in nls {
            let range = range.unwrap_or(LockRange {
                start: nl.key,
                end: nl.key,
            });
            if let Err(e) = self.send(range, nl) {
                self.state.lock().request_failed(&nl.key);
                first_err.get_or_insert(e);
            }
            self.cv.notify_all();
        }
        first_err.map_or(Ok(n), Err)
    }

    /// Handle the server's lock requests (invalidation, recovery): the answer, or `None`
    /// for a request that is not about locks. Blocks an invalidation until the lock's
    /// users are compatible with the new mode, then commits and drops the cache through
    /// the [`LockOwner`].
    pub fn handle(&self, req: &ServerRequest) -> Option<ClientReply> {
        match req {
            ServerRequest::LockInvalidate(nl) => Some(self.invalidate(*nl)),
            ServerRequest::LockRecover { key } => {
                let mut st = self.state.lock();
                // An invalidation being carried out answers the old server, and a
                // transport drops answers to a replaced server: wait until it is done,
                // so that the batch reports the mode it dropped to rather than a drop the
                // new server would wait for forever. (Its commit and cache drop wait for
                // no lock, so this cannot wait for itself.)
                while st.dropping() {
                    self.cv.wait(&mut st);
                }
                let reply = st.recover(key);
                drop(st);
                self.cv.notify_all();
                Some(reply)
            }
            _ => None,
        }
    }

    fn invalidate(&self, nl: NetLock) -> ClientReply {
        let mut st = self.state.lock();
        if let Some(reply) = st.invalidate(nl) {
            return reply;
        }
        let inv = loop {
            if let Some(inv) = st.start_invalidation(&nl.key) {
                break inv;
            }
            if st
                .lock(&nl.key)
                .is_none_or(|l| l.invalidations_queued() == 0)
            {
                // A new server's recovery forgot it: it asks again if it must.
                return ClientReply::Lock(nl);
            }
            self.cv.wait(&mut st);
        };
        drop(st);
        if let Some(owner) = self.owner() {
            if let Some(trans_seq) = inv.written_in {
                owner.sync_if_written(&inv.range, trans_seq);
            }
            if inv.drop_cache {
                owner.invalidate(&inv.range, inv.to);
            }
        }
        let reply = self.state.lock().finish_invalidation(&nl.key);
        self.cv.notify_all();
        // The invalidation was started above, so it is there to finish.
        reply.unwrap_or(ClientReply::Lock(nl))
    }

    /// The requests in flight, for a transport that sends them again to a new server.
    pub fn pending_requests(&self) -> Vec<NetLock> {
        self.state.lock().pending_requests()
    }
}

/// The mount's operations use the cluster locks through [`ItemLocks`]: a user counted
/// per lock and mode, as a [`LockGuard`] does.
impl ItemLocks for ClusterLocks {
    fn try_use(&self, start: &Key, mode: LockMode) -> Option<Held> {
        let (mode, write_seq) = self.state.lock().try_use(start, mode)?;
        Some(Held { mode, write_seq })
    }

    fn use_waiting(&self, start: &Key, end: &Key, mode: LockMode) -> crate::client::Result<Held> {
        if let Some(h) = self.try_use(start, mode) {
            return Ok(h);
        }
        let range = LockRange {
            start: *start,
            end: *end,
        };
        match self.acquire_waiting(range, mode) {
            Ok((write_seq, _)) => Ok(Held { mode, write_seq }),
            Err(LockError::Disconnected) => Err(ClientError::Transport(
                crate::transport::TransportError::Disconnected,
            )),
            Err(LockError::Protocol(msg)) => Err(ClientError::Volume(
                crate::volume::VolumeError::Protocol(msg),
            )),
            Err(LockError::Deadlock) => Err(ClientError::Volume(
                crate::volume::VolumeError::Protocol("lock waited for inside the transaction"),
            )),
        }
    }

    fn unuse(&self, start: &Key, mode: LockMode) {
        let _ = self.state.lock().release(start, mode);
        self.cv.notify_all();
    }

    fn written(&self, start: &Key, trans_seq: u64) {
        self.state.lock().written(start, trans_seq);
    }
}

#[derive(Debug, Default)]
struct ServerState {
    ls: LockServer,
    /// Answers for waiting request handlers by token (`None`: cancelled).
    answers: HashMap<u64, Option<NetLock>>,
    next_token: u64,
}

/// The server's lock service for threads: request handlers block in
/// [`ServerLocks::wait`] until granted.
#[derive(Debug, Default)]
pub struct ServerLocks {
    state: Mutex<ServerState>,
    cv: Condvar,
}

impl ServerLocks {
    /// A lock service with no locks and no recovery pending.
    pub fn new() -> ServerLocks {
        ServerLocks::default()
    }

    /// What the lock server did so far.
    pub fn stats(&self) -> LockServerStats {
        self.state.lock().ls.stats()
    }

    /// Whether lock recovery waits for some mount.
    pub fn recovering(&self) -> bool {
        self.state.lock().ls.recovering()
    }

    fn route(&self, st: &mut ServerState, out: Vec<LockOutput>, link: Option<&dyn ServerLink>) {
        for o in out {
            match o {
                LockOutput::Grant { token, nl, .. } => {
                    st.answers.insert(token, Some(nl));
                }
                LockOutput::Cancel { token, .. } => {
                    st.answers.insert(token, None);
                }
                // Without a link no mount can be reached: a request that needs another
                // mount to let go waits until that mount leaves.
                LockOutput::Send { rid, req } => {
                    if let Some(l) = link {
                        l.send(rid, req);
                    }
                }
            }
        }
        self.cv.notify_all();
    }

    /// Mount `rid` asks for a lock: the request is queued (invalidations it needs go
    /// out through `link`), and [`ServerLocks::wait`] with the returned token waits for
    /// its grant. `seq` is the server's seq (write seqs of grants).
    pub fn submit(
        &self,
        rid: u64,
        nl: NetLock,
        seq: &mut dyn SeqSource,
        link: Option<&dyn ServerLink>,
    ) -> u64 {
        let mut st = self.state.lock();
        st.next_token += 1;
        let token = st.next_token;
        let out = st.ls.request(rid, token, nl, seq);
        self.route(&mut st, out, link);
        token
    }

    /// Wait for the grant of the request `token` ([`LockError::Disconnected`] if it was
    /// cancelled: its mount left or sent it again).
    pub fn wait(&self, token: u64) -> Result<NetLock, LockError> {
        let mut st = self.state.lock();
        loop {
            if let Some(answer) = st.answers.remove(&token) {
                return answer.ok_or(LockError::Disconnected);
            }
            self.cv.wait(&mut st);
        }
    }

    /// Mount `rid` answered an invalidation or a recovery request.
    pub fn client_reply(
        &self,
        rid: u64,
        reply: &ClientReply,
        seq: &mut dyn SeqSource,
        link: Option<&dyn ServerLink>,
    ) -> Result<(), LockError> {
        let mut st = self.state.lock();
        let out = match reply {
            ClientReply::Lock(nl) => st.ls.invalidated(rid, *nl, seq)?,
            ClientReply::LockRecover(batch) => st.ls.recover(rid, batch, seq)?,
            _ => return Ok(()),
        };
        self.route(&mut st, out, link);
        Ok(())
    }

    /// Mount `rid` left: its locks go and its waiting handlers are cancelled.
    pub fn farewell(&self, rid: u64, seq: &mut dyn SeqSource, link: Option<&dyn ServerLink>) {
        let mut st = self.state.lock();
        let out = st.ls.farewell(rid, seq);
        self.route(&mut st, out, link);
    }

    /// Fail every request waiting for a grant (the server is going away).
    pub fn cancel_waiting(&self) {
        let mut st = self.state.lock();
        let out = st.ls.cancel_waiting();
        self.route(&mut st, out, None);
    }

    /// A server taking over starts lock recovery of the known mounts `rids`: nothing is
    /// granted until each has sent its locks or left.
    pub fn start_recovery(
        &self,
        rids: impl IntoIterator<Item = u64>,
        link: Option<&dyn ServerLink>,
    ) {
        let mut st = self.state.lock();
        let out = st.ls.start_recovery(rids);
        self.route(&mut st, out, link);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::TransportError;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A server that grants every request at once (no other mount exists).
    #[derive(Debug, Default)]
    struct Granting {
        asked: Mutex<Vec<NetLock>>,
    }

    impl Transport for Granting {
        fn call(&self, req: Request) -> Result<Response, TransportError> {
            let Request::Lock(nl) = req else {
                return Err(TransportError::Unexpected);
            };
            self.asked.lock().push(nl);
            Ok(Response::Lock(NetLock { write_seq: 7, ..nl }))
        }
    }

    #[derive(Default)]
    struct Owner {
        held: AtomicBool,
        dropped: Mutex<Vec<LockRange>>,
    }

    impl LockOwner for Owner {
        fn sync_if_written(&self, _range: &LockRange, _trans_seq: u64) {}
        fn invalidate(&self, range: &LockRange, _to: LockMode) {
            self.dropped.lock().push(*range);
        }
        fn trans_held(&self) -> bool {
            self.held.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn inodes_lock_in_key_order_once_per_group() {
        let t = Arc::new(Granting::default());
        let locks = ClusterLocks::new(t.clone(), 10);
        let guards = locks
            .lock_inodes(&[5000, 3, 1023, 4096], LockMode::Write)
            .unwrap();
        let starts: Vec<u64> = guards.iter().map(|g| g.range().start.first).collect();
        assert_eq!(starts, vec![0, 4096]);
        assert!(guards
            .iter()
            .all(|g| g.write_seq() == 7 && g.covers(&g.range().end)));
        let asked: Vec<u64> = t.asked.lock().iter().map(|nl| nl.key.first).collect();
        assert_eq!(asked, vec![0, 4096], "one request per group, in key order");
        drop(guards);
        // Held again without asking: the mount keeps its idle locks.
        let g = locks.lock(inode_lock(1), LockMode::Read).unwrap();
        assert_eq!(t.asked.lock().len(), 2);
        drop(g);
    }

    #[test]
    fn item_locks_count_users_by_the_mode_held() {
        let t = Arc::new(Granting::default());
        let locks = ClusterLocks::new(t.clone(), 10);
        let r = inode_lock(0);
        assert_eq!(
            locks.try_use(&r.start, LockMode::Read),
            None,
            "not held yet"
        );
        let h = locks
            .use_waiting(&r.start, &r.end, LockMode::Write)
            .unwrap();
        assert_eq!(
            h,
            Held {
                mode: LockMode::Write,
                write_seq: 7
            }
        );
        // WRITE serves a blind write without asking the server.
        let b = locks.try_use(&r.start, LockMode::WriteOnly).unwrap();
        assert_eq!(b.mode, LockMode::Write);
        assert_eq!(t.asked.lock().len(), 1);
        locks.unuse(&r.start, h.mode);
        locks.unuse(&r.start, b.mode);
        // Idle now: an invalidation to NULL goes through at once.
        let nl = NetLock {
            key: r.start,
            write_seq: 0,
            old_mode: LockMode::Write,
            new_mode: LockMode::Null,
        };
        assert!(matches!(
            locks.handle(&ServerRequest::LockInvalidate(nl)),
            Some(ClientReply::Lock(_))
        ));
        assert_eq!(locks.try_use(&r.start, LockMode::Read), None);
    }

    /// An owner whose commit waits for the test to let it go.
    #[derive(Default)]
    struct SlowCommit {
        syncing: Mutex<bool>,
        go: Mutex<bool>,
        cv: Condvar,
    }

    impl LockOwner for SlowCommit {
        fn sync_if_written(&self, _range: &LockRange, _trans_seq: u64) {
            *self.syncing.lock() = true;
            self.cv.notify_all();
            let mut go = self.go.lock();
            while !*go {
                self.cv.wait(&mut go);
            }
        }
        fn invalidate(&self, _range: &LockRange, _to: LockMode) {}
    }

    /// A new server's recovery request that comes while an invalidation is committing
    /// waits for it: its answer goes to the old server (a transport drops answers to a
    /// replaced server), so the batch reports the mode dropped to, not a drop in progress
    /// the new server would wait for forever (found by scoutfs-net's protocol_sim).
    #[test]
    fn recovery_waits_for_the_invalidation_in_progress() {
        let locks = ClusterLocks::new(Arc::new(Granting::default()), 10);
        let owner = Arc::new(SlowCommit::default());
        let dyn_owner: Arc<dyn LockOwner> = owner.clone();
        locks.set_owner(Arc::downgrade(&dyn_owner));
        let r = inode_lock(0);
        drop(locks.lock(r, LockMode::Write).unwrap());
        let nl = NetLock {
            key: r.start,
            write_seq: 0,
            old_mode: LockMode::Write,
            new_mode: LockMode::Null,
        };
        std::thread::scope(|s| {
            let inv = s.spawn(|| locks.handle(&ServerRequest::LockInvalidate(nl)));
            {
                let mut syncing = owner.syncing.lock();
                while !*syncing {
                    owner.cv.wait(&mut syncing);
                }
            }
            let rec = s.spawn(|| locks.handle(&ServerRequest::LockRecover { key: Key::MIN }));
            std::thread::sleep(std::time::Duration::from_millis(20));
            let early = rec.is_finished();
            *owner.go.lock() = true;
            owner.cv.notify_all();
            assert!(matches!(inv.join().unwrap(), Some(ClientReply::Lock(_))));
            assert!(!early, "recovery answered during the drop");
            // Dropped to NULL: nothing to recover.
            assert_eq!(
                rec.join().unwrap(),
                Some(ClientReply::LockRecover(Vec::new()))
            );
        });
    }

    #[test]
    fn invalidation_drops_the_cache_and_waiting_in_a_transaction_is_refused() {
        let t = Arc::new(Granting::default());
        let locks = ClusterLocks::new(t, 10);
        let owner = Arc::new(Owner::default());
        let dyn_owner: Arc<dyn LockOwner> = owner.clone();
        locks.set_owner(Arc::downgrade(&dyn_owner));
        let r = inode_lock(0);
        drop(locks.lock(r, LockMode::Write).unwrap());
        let nl = NetLock {
            key: r.start,
            write_seq: 0,
            old_mode: LockMode::Write,
            new_mode: LockMode::Null,
        };
        let reply = locks.handle(&ServerRequest::LockInvalidate(nl));
        assert!(
            matches!(reply, Some(ClientReply::Lock(a)) if a.new_mode == LockMode::Null && a.write_seq == 7)
        );
        assert_eq!(*owner.dropped.lock(), vec![r]);
        assert_eq!(locks.handle(&ServerRequest::SyncLogTrees), None);
        owner.held.store(true, Ordering::Relaxed);
        assert_eq!(
            locks.lock(r, LockMode::Read).err(),
            Some(LockError::Deadlock)
        );
    }
}
