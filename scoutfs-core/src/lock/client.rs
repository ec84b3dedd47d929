//! A mount's side of the lock service as a pure state machine (the original's `lock.c`).
//!
//! Per lock the mount keeps the granted mode, its users by mode, the mode of the one
//! request it has in flight, the invalidations the server sent (processed in order), and
//! while one is being carried out the mode it drops from (lock recovery reports that
//! one). Idle locks wait in an LRU; past `idle_limit` locks the oldest idle ones are
//! given up with NULL requests ([`LockClient::shrink`]).
//!
//! The machine does no waiting and no I/O: [`LockClient::acquire`] says whether a user may
//! go on or must wait (and what request to send); an invalidation is ready once the
//! lock's users are compatible with the mode it drops to ([`LockClient::next_invalidation`]
//! sets that mode, so no incompatible user starts, and says what the owner must do:
//! commit the transaction if the lock was written in the open one, drop the cached
//! items of the range unless it drops from WRITE to READ); once done,
//! [`LockClient::finish_invalidation`] gives the answer for the server.
//!
//! Ordering: the server may ask a mount to drop a grant right after sending it. An
//! invalidation whose mode is not the one held while a request is in flight waits for
//! that request's grant, so a transport that hands the grant to the requesting thread
//! and the invalidation to another cannot apply them out of order.

use super::{can_read, can_write, modes_match, LockError, LockMode, LockRange};
use crate::format::Key;
use crate::transport::{ClientReply, NetLock, LOCK_RECOVER_BATCH};
use std::collections::{BTreeMap, VecDeque};

/// The default number of idle locks a mount keeps (the original's `lock_idle_count`).
pub const DEFAULT_LOCK_IDLE_COUNT: usize = 10_000;

/// What the owner's item cache holds of a lock's range when a grant arrives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheState {
    /// Some items of the range are cached.
    pub cached: bool,
    /// Some cached items of the range are dirty.
    pub dirty: bool,
}

/// The answer to [`LockClient::acquire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// The user holds the lock in the mode asked for (release it with
    /// [`LockClient::release`]).
    Granted,
    /// The user must wait and ask again once the lock changes; if `send` is set, the
    /// caller sends that request to the server (the lock's one request in flight).
    Wait {
        /// The request to send.
        send: Option<NetLock>,
    },
}

/// An invalidation ready to be carried out ([`LockClient::next_invalidation`]); the lock
/// already has its new mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalidation {
    /// The lock's keys.
    pub range: LockRange,
    /// The mode dropped from.
    pub from: LockMode,
    /// The mode dropped to.
    pub to: LockMode,
    /// The transaction seq in which the lock was last written, when the old mode could
    /// write: if it is the open transaction's, the owner commits before answering.
    pub written_in: Option<u64>,
    /// The owner drops the cached items of the range (all but WRITE to READ).
    pub drop_cache: bool,
}

/// One lock as a mount holds it.
#[derive(Clone, Debug)]
pub struct ClientLock {
    /// The keys it covers.
    pub range: LockRange,
    /// The mode granted (during an invalidation: the mode dropped to).
    pub mode: LockMode,
    /// The seq floor of items written under the grant.
    pub write_seq: u64,
    /// The transaction seq the lock was last written in (0: never).
    pub dirty_trans_seq: u64,
    /// Grows each time the mount gains the right to read (its cached inode must be read
    /// again).
    pub refresh_gen: u64,
    users: [u32; 4],
    request: Option<LockMode>,
    invalidating: Option<LockMode>,
    invs: VecDeque<NetLock>,
    lru: Option<u64>,
}

impl ClientLock {
    fn new(range: LockRange) -> ClientLock {
        ClientLock {
            range,
            mode: LockMode::Null,
            write_seq: 0,
            dirty_trans_seq: 0,
            refresh_gen: 0,
            users: [0; 4],
            request: None,
            invalidating: None,
            invs: VecDeque::new(),
            lru: None,
        }
    }

    /// Users holding the lock in `mode`.
    pub fn users(&self, mode: LockMode) -> u32 {
        self.users[mode as usize]
    }

    /// The mode of the request in flight.
    pub fn requested(&self) -> Option<LockMode> {
        self.request
    }

    /// The mode an invalidation being carried out drops from.
    pub fn invalidating(&self) -> Option<LockMode> {
        self.invalidating
    }

    /// Invalidations received and not finished (the one being carried out included).
    pub fn invalidations_queued(&self) -> usize {
        self.invs.len()
    }

    fn users_match(&self, mode: LockMode) -> bool {
        [
            LockMode::Null,
            LockMode::Read,
            LockMode::Write,
            LockMode::WriteOnly,
        ]
        .iter()
        .all(|m| self.users[*m as usize] == 0 || modes_match(mode, *m))
    }

    fn idle(&self) -> bool {
        self.users == [0; 4]
            && self.request.is_none()
            && self.invalidating.is_none()
            && self.invs.is_empty()
    }
}

/// Counters of what a mount's lock client did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LockClientStats {
    /// Requests sent (NULL requests of shrinking included).
    pub requests: u64,
    /// Grants received.
    pub grants: u64,
    /// Invalidations carried out.
    pub invalidations: u64,
    /// Recovery batches sent.
    pub recover_batches: u64,
    /// Idle locks given up by shrinking.
    pub shrunk: u64,
}

/// A mount's lock state (see the module docs).
#[derive(Debug)]
pub struct LockClient {
    locks: BTreeMap<Key, ClientLock>,
    lru: BTreeMap<u64, Key>,
    next_stamp: u64,
    next_refresh_gen: u64,
    idle_limit: usize,
    /// NULL requests of shrinking in flight.
    shrinking: usize,
    stats: LockClientStats,
}

impl LockClient {
    /// A mount with no locks that keeps up to `idle_limit` locks
    /// ([`DEFAULT_LOCK_IDLE_COUNT`] by default).
    pub fn new(idle_limit: usize) -> LockClient {
        LockClient {
            locks: BTreeMap::new(),
            lru: BTreeMap::new(),
            next_stamp: 0,
            next_refresh_gen: 0,
            idle_limit,
            shrinking: 0,
            stats: LockClientStats::default(),
        }
    }

    /// What the mount did so far.
    pub fn stats(&self) -> LockClientStats {
        self.stats
    }

    /// The lock named `key`, if the mount knows it.
    pub fn lock(&self, key: &Key) -> Option<&ClientLock> {
        self.locks.get(key)
    }

    /// Every lock the mount knows, in key order.
    pub fn locks(&self) -> impl Iterator<Item = &ClientLock> {
        self.locks.values()
    }

    /// A user asks for `range` in `mode` (not NULL).
    pub fn acquire(&mut self, range: LockRange, mode: LockMode) -> Result<Acquire, LockError> {
        if mode == LockMode::Null {
            return Err(LockError::Protocol("a user asked for the NULL mode"));
        }
        let lock = self
            .locks
            .entry(range.start)
            .or_insert_with(|| ClientLock::new(range));
        if lock.range != range {
            return Err(LockError::Protocol("lock asked for with another range"));
        }
        if let Some(stamp) = lock.lru.take() {
            self.lru.remove(&stamp);
        }
        if modes_match(lock.mode, mode) {
            lock.users[mode as usize] += 1;
            return Ok(Acquire::Granted);
        }
        if lock.request.is_some() {
            return Ok(Acquire::Wait { send: None });
        }
        lock.request = Some(mode);
        self.stats.requests += 1;
        Ok(Acquire::Wait {
            send: Some(NetLock {
                key: range.start,
                write_seq: 0,
                old_mode: lock.mode,
                new_mode: mode,
            }),
        })
    }

    /// A user of `need` goes ahead if the lock is held in a mode that serves it by the
    /// mount's operations' rule ([`crate::client::locks::satisfies`]: WRITE also serves
    /// blind writes); it counts as a user of the mode held, which is returned with the
    /// grant's write seq. `None`: the caller asks with [`LockClient::acquire`].
    pub fn try_use(&mut self, key: &Key, need: LockMode) -> Option<(LockMode, u64)> {
        let lock = self.locks.get_mut(key)?;
        if need == LockMode::Null || !crate::client::locks::satisfies(lock.mode, need) {
            return None;
        }
        if let Some(stamp) = lock.lru.take() {
            self.lru.remove(&stamp);
        }
        lock.users[lock.mode as usize] += 1;
        Some((lock.mode, lock.write_seq))
    }

    /// A user that waited gives up (its request, if any, stays in flight).
    pub fn abandon(&mut self, key: &Key) {
        self.put(key);
    }

    /// A user of `mode` lets the lock go.
    pub fn release(&mut self, key: &Key, mode: LockMode) -> Result<(), LockError> {
        let lock = self
            .locks
            .get_mut(key)
            .ok_or(LockError::Protocol("release of an unknown lock"))?;
        let n = &mut lock.users[mode as usize];
        if *n == 0 {
            return Err(LockError::Protocol("release of a mode not held"));
        }
        *n -= 1;
        self.put(key);
        Ok(())
    }

    /// The owner wrote items under lock `key` in transaction `trans_seq`.
    pub fn written(&mut self, key: &Key, trans_seq: u64) {
        if let Some(l) = self.locks.get_mut(key) {
            l.dirty_trans_seq = l.dirty_trans_seq.max(trans_seq);
        }
    }

    /// The server granted a request; `cache` is what the owner caches of the range. A
    /// grant that fits no request in flight, or whose old mode is not the one held, or
    /// that finds items cached that the old or new mode may not read (or any dirty item)
    /// is a protocol error and changes nothing.
    pub fn grant(&mut self, nl: NetLock, cache: CacheState) -> Result<(), LockError> {
        let lock = self
            .locks
            .get_mut(&nl.key)
            .ok_or(LockError::Protocol("grant of an unknown lock"))?;
        if lock.request != Some(nl.new_mode) {
            return Err(LockError::Protocol("grant of a mode not requested"));
        }
        if lock.mode != nl.old_mode {
            return Err(LockError::Protocol("grant from a mode not held"));
        }
        if cache.dirty || (cache.cached && (!can_read(nl.old_mode) || !can_read(nl.new_mode))) {
            return Err(LockError::Protocol(
                "grant finds items cached that its modes may not read",
            ));
        }
        if !can_read(nl.old_mode) && can_read(nl.new_mode) {
            self.next_refresh_gen += 1;
            lock.refresh_gen = self.next_refresh_gen;
        }
        if nl.new_mode == LockMode::Null {
            self.shrinking = self.shrinking.saturating_sub(1);
        }
        lock.request = None;
        lock.mode = nl.new_mode;
        lock.write_seq = nl.write_seq;
        self.stats.grants += 1;
        self.put(&nl.key);
        Ok(())
    }

    /// The request in flight on lock `key` failed (the mount is leaving): none is in
    /// flight any more.
    pub fn request_failed(&mut self, key: &Key) {
        if let Some(l) = self.locks.get_mut(key) {
            if l.request.take() == Some(LockMode::Null) {
                self.shrinking = self.shrinking.saturating_sub(1);
            }
        }
        self.put(key);
    }

    /// The server asks the mount to drop lock `nl.key` to `nl.new_mode`. A lock the mount
    /// does not know is answered at once (it uses no mode of it); otherwise the request
    /// waits its turn ([`LockClient::next_invalidation`]).
    pub fn invalidate(&mut self, nl: NetLock) -> Option<ClientReply> {
        let Some(lock) = self.locks.get_mut(&nl.key) else {
            return Some(ClientReply::Lock(nl));
        };
        if let Some(stamp) = lock.lru.take() {
            self.lru.remove(&stamp);
        }
        lock.invs.push_back(nl);
        None
    }

    /// The first invalidation that can be carried out now, with the lock set to its new
    /// mode. The owner then does what it says and calls
    /// [`LockClient::finish_invalidation`].
    pub fn next_invalidation(&mut self) -> Option<Invalidation> {
        let keys: Vec<Key> = self
            .locks
            .iter()
            .filter(|(_, l)| !l.invs.is_empty() && l.invalidating.is_none())
            .map(|(k, _)| *k)
            .collect();
        keys.iter().find_map(|k| self.start_invalidation(k))
    }

    /// The first invalidation of lock `key`, if it can be carried out now (as
    /// [`LockClient::next_invalidation`], for a caller that handles one lock).
    pub fn start_invalidation(&mut self, key: &Key) -> Option<Invalidation> {
        let lock = self.locks.get_mut(key)?;
        if lock.invalidating.is_some() {
            return None;
        }
        let nl = lock.invs.front().copied()?;
        if lock.request.is_some() && lock.mode != nl.old_mode {
            // The grant this invalidation follows has not been applied yet.
            return None;
        }
        let from = lock.mode;
        let to = if from == nl.old_mode {
            nl.new_mode
        } else {
            // A duplicate: never raise the mode, drop as far as it says.
            match (from, nl.new_mode) {
                (LockMode::Write | LockMode::Read, LockMode::Read) => LockMode::Read,
                _ => LockMode::Null,
            }
        };
        if !lock.users_match(to) {
            return None;
        }
        lock.invalidating = Some(from);
        lock.mode = to;
        self.stats.invalidations += 1;
        Some(Invalidation {
            range: lock.range,
            from,
            to,
            written_in: can_write(from).then_some(lock.dirty_trans_seq),
            drop_cache: !(to == LockMode::Read && matches!(from, LockMode::Write | LockMode::Read)),
        })
    }

    /// The owner carried out the invalidation of lock `key`: the answer for the server.
    pub fn finish_invalidation(&mut self, key: &Key) -> Result<ClientReply, LockError> {
        let lock = self.locks.get_mut(key).ok_or(LockError::Protocol(
            "finished invalidation of an unknown lock",
        ))?;
        let from = lock
            .invalidating
            .take()
            .ok_or(LockError::Protocol("finished an invalidation not started"))?;
        lock.invs.pop_front();
        // The write seq tells a new server how new the items just committed are.
        let reply = ClientReply::Lock(NetLock {
            key: *key,
            write_seq: lock.write_seq,
            old_mode: from,
            new_mode: lock.mode,
        });
        self.put(key);
        Ok(reply)
    }

    /// Whether an invalidation is being carried out (started, not finished). A new
    /// server's recovery waits for none to be: the answer of one goes to the old server
    /// (a transport drops answers to a replaced peer), so the batch must report the
    /// mode it dropped to, not the drop.
    pub fn dropping(&self) -> bool {
        self.locks.values().any(|l| l.invalidating.is_some())
    }

    /// A new server asks for the mount's locks from `key` on: a batch of at most
    /// [`LOCK_RECOVER_BATCH`] in key order (empty: no more). The first request (`key` is
    /// [`Key::MIN`]) also forgets the invalidations the old server sent that were not
    /// started: the new server asks again for what it needs.
    pub fn recover(&mut self, key: &Key) -> ClientReply {
        if *key == Key::MIN {
            let keys: Vec<Key> = self.locks.keys().copied().collect();
            for k in keys {
                if let Some(l) = self.locks.get_mut(&k) {
                    l.invs.truncate(usize::from(l.invalidating.is_some()));
                }
                self.put(&k);
            }
        }
        let batch: Vec<NetLock> = self
            .locks
            .range(*key..)
            .filter(|(_, l)| l.mode != LockMode::Null || l.invalidating.is_some())
            .take(LOCK_RECOVER_BATCH)
            .map(|(k, l)| NetLock {
                key: *k,
                write_seq: l.write_seq,
                old_mode: l.invalidating.unwrap_or(l.mode),
                new_mode: l.mode,
            })
            .collect();
        self.stats.recover_batches += 1;
        ClientReply::LockRecover(batch)
    }

    /// The requests in flight, to send again to a new server.
    pub fn pending_requests(&self) -> Vec<NetLock> {
        self.locks
            .iter()
            .filter_map(|(k, l)| {
                l.request.map(|m| NetLock {
                    key: *k,
                    write_seq: 0,
                    old_mode: l.mode,
                    new_mode: m,
                })
            })
            .collect()
    }

    /// Give up idle locks past the limit, oldest first: NULL requests to send.
    pub fn shrink(&mut self) -> Vec<NetLock> {
        let mut out = Vec::new();
        while self.locks.len().saturating_sub(self.shrinking) > self.idle_limit {
            let Some((_, key)) = self.lru.pop_first() else {
                break;
            };
            let Some(lock) = self.locks.get_mut(&key) else {
                continue;
            };
            lock.lru = None;
            lock.request = Some(LockMode::Null);
            self.shrinking += 1;
            self.stats.requests += 1;
            self.stats.shrunk += 1;
            out.push(NetLock {
                key,
                write_seq: 0,
                old_mode: lock.mode,
                new_mode: LockMode::Null,
            });
        }
        out
    }

    /// A lock that has become idle goes to the LRU, or away if it is NULL.
    fn put(&mut self, key: &Key) {
        let Some(lock) = self.locks.get_mut(key) else {
            return;
        };
        if !lock.idle() {
            return;
        }
        if lock.mode == LockMode::Null {
            if let Some(stamp) = lock.lru {
                self.lru.remove(&stamp);
            }
            self.locks.remove(key);
        } else if lock.lru.is_none() {
            self.next_stamp += 1;
            lock.lru = Some(self.next_stamp);
            self.lru.insert(self.next_stamp, *key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::inode_lock;
    use LockMode::*;

    fn sent(a: Acquire) -> NetLock {
        match a {
            Acquire::Wait { send: Some(nl) } => nl,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn acquire_grant_invalidate_answer() {
        let mut c = LockClient::new(10);
        let r = inode_lock(1);
        let req = sent(c.acquire(r, Write).unwrap());
        assert_eq!((req.old_mode, req.new_mode), (Null, Write));
        assert_eq!(c.acquire(r, Read).unwrap(), Acquire::Wait { send: None });
        let g = NetLock {
            write_seq: 9,
            ..req
        };
        c.grant(g, CacheState::default()).unwrap();
        assert_eq!(
            c.acquire(r, Read).unwrap(),
            Acquire::Granted,
            "WRITE serves readers"
        );
        c.written(&r.start, 5);
        // The server asks for READ while the reader holds it: it waits for no one.
        let inv = NetLock {
            key: r.start,
            write_seq: 0,
            old_mode: Write,
            new_mode: Read,
        };
        assert!(c.invalidate(inv).is_none());
        let i = c
            .next_invalidation()
            .expect("readers are compatible with READ");
        assert_eq!(
            (i.from, i.to, i.written_in, i.drop_cache),
            (Write, Read, Some(5), false)
        );
        // A writer may ask while the drop is under way; the server answers after it.
        let up = sent(c.acquire(r, Write).unwrap());
        assert_eq!((up.old_mode, up.new_mode), (Read, Write));
        let ans = NetLock {
            write_seq: 9,
            ..inv
        };
        assert_eq!(
            c.finish_invalidation(&r.start).unwrap(),
            ClientReply::Lock(ans)
        );
        // A grant that does not fit is refused without harm.
        assert!(c.grant(g, CacheState::default()).is_err());
        assert_eq!(c.lock(&r.start).unwrap().mode, Read);
    }

    #[test]
    fn invalidation_waits_for_users_and_for_the_grant_it_follows() {
        let mut c = LockClient::new(10);
        let r = inode_lock(1);
        let req = sent(c.acquire(r, Read).unwrap());
        // The server's invalidation of the READ it granted arrives before the grant.
        let inv = NetLock {
            key: r.start,
            write_seq: 0,
            old_mode: Read,
            new_mode: Null,
        };
        c.invalidate(inv);
        assert!(c.next_invalidation().is_none(), "waits for the grant");
        c.grant(
            req,
            CacheState {
                cached: false,
                dirty: false,
            },
        )
        .unwrap();
        assert_eq!(c.acquire(r, Read).unwrap(), Acquire::Granted);
        assert!(c.next_invalidation().is_none(), "waits for the reader");
        c.release(&r.start, Read).unwrap();
        let i = c.next_invalidation().unwrap();
        assert!(i.drop_cache && i.written_in.is_none());
        c.finish_invalidation(&r.start).unwrap();
        assert!(c.lock(&r.start).is_none(), "a NULL idle lock goes away");
        // Unknown locks are answered at once.
        assert_eq!(c.invalidate(inv), Some(ClientReply::Lock(inv)));
    }

    #[test]
    fn shrink_recover_and_bad_grants() {
        let mut c = LockClient::new(2);
        for ino in [0, 1024, 2048] {
            let nl = sent(c.acquire(inode_lock(ino), Read).unwrap());
            c.grant(nl, CacheState::default()).unwrap();
            assert_eq!(c.acquire(inode_lock(ino), Read).unwrap(), Acquire::Granted);
            c.release(&nl.key, Read).unwrap();
        }
        let null = c.shrink();
        assert_eq!(null.len(), 1);
        assert_eq!(null[0].key, inode_lock(0).start, "oldest idle first");
        let ClientReply::LockRecover(b) = c.recover(&Key::MIN) else {
            panic!()
        };
        assert_eq!(b.len(), 3);
        assert!(b.windows(2).all(|w| w[0].key < w[1].key));
        let ClientReply::LockRecover(b) = c.recover(&inode_lock(1024).start) else {
            panic!()
        };
        assert_eq!(b.len(), 2);
        // A grant that finds dirty items is a protocol error.
        let r = inode_lock(5000);
        let nl = sent(c.acquire(r, Write).unwrap());
        assert!(c
            .grant(
                nl,
                CacheState {
                    cached: true,
                    dirty: true
                }
            )
            .is_err());
        assert!(c
            .grant(
                nl,
                CacheState {
                    cached: true,
                    dirty: false
                }
            )
            .is_err());
        c.grant(nl, CacheState::default()).unwrap();
        assert_eq!(c.pending_requests(), vec![null[0]]);
    }
}
