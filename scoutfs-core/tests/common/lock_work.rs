//! The workload and invariants of the lock simulations (`lock_sim`, scoutfs-net's
//! `protocol_sim`): users of a few locks on each mount read under the modes that read
//! and write under those that write; each mount caches the items of a lock it read
//! and keeps its writes dirty until it commits; the committed store keeps for each item
//! the version with the greatest `(write_seq, counter)`.

use super::Rng;
use scoutfs_core::lock::client::{Acquire, LockClient};
use scoutfs_core::lock::server::{LockServer, SeqSource};
use scoutfs_core::lock::{can_read, can_write, compatible, modes_match, LockRange};
use scoutfs_core::transport::{LockMode, NetLock};
use std::collections::BTreeMap;

/// A version: the write seq of the grant it was written under, then a counter.
pub type Ver = (u64, u64);
/// Items of one lock: item to (version, value).
pub type Items = BTreeMap<u64, (Ver, u64)>;

/// The server's seq and what of it is durable.
pub struct Seq {
    pub seq: u64,
    pub durable: u64,
}

impl SeqSource for Seq {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
    fn raise_seq(&mut self, seq: u64) {
        self.seq = self.seq.max(seq);
    }
}

/// A user holding lock `lock` in `mode`.
pub struct User {
    pub lock: usize,
    pub mode: LockMode,
}

/// One mount's lock client, users and items.
pub struct MountWork {
    pub lc: LockClient,
    pub users: Vec<User>,
    /// Users waiting for a lock: (lock, mode).
    pub waiting: Vec<(usize, LockMode)>,
    pub cache: Vec<Option<Items>>,
    pub dirty: Vec<Items>,
    /// The open transaction.
    pub trans: u64,
}

impl MountWork {
    pub fn new(nlocks: usize, idle_limit: usize) -> MountWork {
        MountWork {
            lc: LockClient::new(idle_limit),
            users: Vec::new(),
            waiting: Vec::new(),
            cache: vec![None; nlocks],
            dirty: vec![BTreeMap::new(); nlocks],
            trans: 1,
        }
    }

    /// Retry the waiting users: the requests to send.
    pub fn retry(&mut self, ranges: &[LockRange]) -> Vec<NetLock> {
        let mut send = Vec::new();
        for (l, mode) in std::mem::take(&mut self.waiting) {
            match self.lc.acquire(ranges[l], mode).unwrap() {
                Acquire::Granted => self.users.push(User { lock: l, mode }),
                Acquire::Wait { send: s } => {
                    self.waiting.push((l, mode));
                    send.extend(s);
                }
            }
        }
        send
    }

    /// A new user of a random lock and mode: the requests to send.
    pub fn start_user(&mut self, rng: &mut Rng, ranges: &[LockRange]) -> Vec<NetLock> {
        let l = rng.below(ranges.len() as u64) as usize;
        let mode = match rng.below(10) {
            0..=3 => LockMode::Read,
            4..=7 => LockMode::Write,
            _ => LockMode::WriteOnly,
        };
        self.waiting.push((l, mode));
        self.retry(ranges)
    }

    /// Let every user go (the mount drains or leaves).
    pub fn release_all(&mut self, ranges: &[LockRange]) {
        for u in std::mem::take(&mut self.users) {
            self.lc.release(&ranges[u.lock].start, u.mode).unwrap();
        }
    }
}

/// What all mounts share: the locks, the committed store and the last values written.
pub struct Workload {
    pub ranges: Vec<LockRange>,
    pub store: Vec<Items>,
    pub truth: Vec<BTreeMap<u64, u64>>,
    next_value: u64,
    counter: u64,
    /// The greatest write seq of any version written.
    pub max_written: u64,
    pub reads: u64,
}

impl Workload {
    pub fn new(ranges: Vec<LockRange>) -> Workload {
        let n = ranges.len();
        Workload {
            ranges,
            store: vec![BTreeMap::new(); n],
            truth: vec![BTreeMap::new(); n],
            next_value: 0,
            counter: 0,
            max_written: 0,
            reads: 0,
        }
    }

    /// Mount `rid` reads lock `l`: its cache (filled from the store) must hold the last
    /// values written by anyone.
    pub fn read(&mut self, w: &mut MountWork, rid: u64, l: usize) {
        let cache = w.cache[l].get_or_insert_with(|| self.store[l].clone());
        let seen: BTreeMap<u64, u64> = cache.iter().map(|(k, (_, v))| (*k, *v)).collect();
        assert_eq!(seen, self.truth[l], "mount {rid} read of lock {l}");
        self.reads += 1;
    }

    /// A write under `mode`: WRITE writes the shared item 0, WRITE_ONLY blind-writes the
    /// mount's own item `own`.
    pub fn write(&mut self, w: &mut MountWork, own: u64, l: usize, mode: LockMode) {
        self.next_value += 1;
        self.counter += 1;
        let key = self.ranges[l].start;
        let lock = w.lc.lock(&key).unwrap();
        let ver = (lock.write_seq, self.counter);
        self.max_written = self.max_written.max(lock.write_seq);
        let item = if mode == LockMode::Write {
            if w.cache[l].is_none() {
                w.cache[l] = Some(self.store[l].clone());
            }
            0
        } else {
            own
        };
        if let Some(c) = w.cache[l].as_mut() {
            c.insert(item, (ver, self.next_value));
        }
        w.dirty[l].insert(item, (ver, self.next_value));
        w.lc.written(&key, w.trans);
        self.truth[l].insert(item, self.next_value);
    }

    /// A random user of the mount lets its lock go, writes or reads.
    pub fn user_action(&mut self, rng: &mut Rng, w: &mut MountWork, rid: u64, own: u64) {
        let n = w.users.len() as u64;
        if n == 0 {
            return;
        }
        let u = rng.below(n) as usize;
        let (l, mode) = (w.users[u].lock, w.users[u].mode);
        if rng.below(3) == 0 {
            w.users.swap_remove(u);
            w.lc.release(&self.ranges[l].start, mode).unwrap();
        } else if can_write(mode) && (!can_read(mode) || rng.below(2) == 0) {
            self.write(w, own, l, mode);
        } else {
            self.read(w, rid, l);
        }
    }

    /// Commit items into the store (the greatest version of each item stays).
    pub fn store_items(&mut self, l: usize, items: impl IntoIterator<Item = (u64, (Ver, u64))>) {
        for (item, (ver, val)) in items {
            let e = self.store[l].entry(item).or_insert((ver, val));
            if ver > e.0 {
                *e = (ver, val);
            }
        }
    }

    /// The greatest write seq in the store.
    pub fn stored_seq(&self) -> u64 {
        self.store
            .iter()
            .flat_map(|s| s.values().map(|(v, _)| v.0))
            .max()
            .unwrap_or(0)
    }

    /// The invariants of the mounts that hold locks (`(rid, work)`) and of the server:
    /// users served by their mount's mode, caches and dirty items only under modes
    /// that read and write (or while dropping them), modes compatible across mounts.
    pub fn check<'a>(
        &self,
        mounts: impl Iterator<Item = (u64, &'a MountWork)> + Clone,
        server: &LockServer,
    ) {
        for (l, r) in self.ranges.iter().enumerate() {
            let mut held = Vec::new();
            for (rid, m) in mounts.clone() {
                let lock = m.lc.lock(&r.start);
                let mode = lock.map_or(LockMode::Null, |k| k.mode);
                let dropping = lock.and_then(|k| k.invalidating());
                for u in m.users.iter().filter(|u| u.lock == l) {
                    assert!(
                        modes_match(mode, u.mode),
                        "user {:?} under {mode:?}",
                        u.mode
                    );
                }
                if m.cache[l].is_some() {
                    assert!(
                        can_read(mode) || dropping.is_some(),
                        "mount {rid} caches lock {l} under {mode:?}"
                    );
                }
                if !m.dirty[l].is_empty() {
                    assert!(
                        can_write(mode) || dropping.is_some_and(can_write),
                        "mount {rid} dirty in lock {l} under {mode:?}"
                    );
                }
                held.push((rid, mode));
            }
            for (i, a) in held.iter().enumerate() {
                for b in &held[i + 1..] {
                    assert!(
                        compatible(a.1, a.0, b.1, b.0),
                        "lock {l}: mounts hold {a:?} and {b:?}"
                    );
                }
            }
        }
        let g = server.granted();
        for (i, a) in g.iter().enumerate() {
            for b in g[i + 1..].iter().filter(|b| b.0 == a.0 && b.1 != a.1) {
                assert!(
                    compatible(a.2, a.1, b.2, b.1),
                    "server grants {a:?} and {b:?}"
                );
            }
        }
    }
}

/// One of `choices` with a chance in proportion to its weight.
pub fn pick_weighted<T: Copy>(rng: &mut Rng, choices: &[(T, u64)]) -> Option<T> {
    let total: u64 = choices.iter().map(|c| c.1).sum();
    if total == 0 {
        return None;
    }
    let mut x = rng.below(total);
    for (c, w) in choices {
        if x < *w {
            return Some(*c);
        }
        x -= w;
    }
    None
}
