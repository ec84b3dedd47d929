//! Mounts that share one counter under a cluster lock, each caching it as a mount caches
//! items: threads of every mount increment it under WRITE and read it under READ, so a
//! lost increment proves a WRITE that did not exclude the others or an invalidation that
//! did not commit. Used over the in-process hub and over TCP.

use scoutfs_core::lock::client::CacheState;
use scoutfs_core::lock::cluster::{ClusterLocks, LockOwner};
use scoutfs_core::lock::{inode_lock, LockRange};
use scoutfs_core::transport::{
    ClientHandler, ClientReply, LockMode, Request, ServerRequest, Transport,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// A mount's item cache: one counter, cached and dirty.
#[derive(Default)]
pub struct CounterCache {
    pub cached: Option<u64>,
    pub dirty: bool,
    /// The open transaction's seq.
    pub trans: u64,
}

pub struct CounterMount {
    pub locks: Arc<ClusterLocks>,
    pub cache: Mutex<CounterCache>,
    /// The durable counter all mounts share (the volume).
    pub store: Arc<Mutex<u64>>,
    pub commits: AtomicU64,
}

impl CounterMount {
    fn commit(&self, c: &mut CounterCache) {
        if c.dirty {
            *self.store.lock().unwrap() = c.cached.unwrap();
            c.dirty = false;
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        c.trans += 1;
    }
}

impl LockOwner for CounterMount {
    fn sync_if_written(&self, _range: &LockRange, trans_seq: u64) {
        let mut c = self.cache.lock().unwrap();
        if c.trans == trans_seq {
            self.commit(&mut c);
        }
    }
    fn invalidate(&self, _range: &LockRange, _to: LockMode) {
        let mut c = self.cache.lock().unwrap();
        assert!(!c.dirty, "dropping dirty items");
        c.cached = None;
    }
    fn cache_state(&self, _range: &LockRange) -> CacheState {
        let c = self.cache.lock().unwrap();
        CacheState {
            cached: c.cached.is_some(),
            dirty: c.dirty,
        }
    }
}

impl ClientHandler for CounterMount {
    fn handle(&self, req: ServerRequest) -> ClientReply {
        self.locks.handle(&req).unwrap_or(ClientReply::Failed)
    }
}

/// `n` mounts (rids 100, 101...) greeted through the transports `connect` gives, each with
/// its cluster locks and counter cache over `store`; the first keeps no idle lock (it
/// gives up each one it shrinks).
pub fn counter_mounts(
    connect: impl Fn(u64) -> Arc<dyn Transport>,
    n: usize,
    store: &Arc<Mutex<u64>>,
) -> Vec<Arc<CounterMount>> {
    (0..n)
        .map(|i| {
            let rid = 100 + i as u64;
            let t = connect(rid);
            t.call(Request::Greeting {
                rid,
                reconnect: false,
            })
            .unwrap();
            let locks = ClusterLocks::new(t.clone(), usize::from(i > 0));
            let m = Arc::new(CounterMount {
                locks,
                cache: Default::default(),
                store: store.clone(),
                commits: Default::default(),
            });
            let owner: Arc<dyn LockOwner> = m.clone();
            m.locks.set_owner(Arc::downgrade(&owner));
            let handler: Arc<dyn ClientHandler> = m.clone();
            t.set_handler(Arc::downgrade(&handler));
            m
        })
        .collect()
}

/// What [`count_under_locks`] saw.
#[derive(Debug)]
pub struct CounterRun {
    /// The counter at the end, as a reader finds it.
    pub value: u64,
    /// Increments made.
    pub increments: u64,
    /// Commits the mounts made when invalidated.
    pub commits: u64,
    pub elapsed: std::time::Duration,
}

/// `threads` threads of every mount, `rounds` each, increment the counter under WRITE
/// (every third round reads it under READ instead, checking it never goes back).
pub fn count_under_locks(mounts: &[Arc<CounterMount>], threads: u64, rounds: u64) -> CounterRun {
    let range = inode_lock(0);
    let start = std::time::Instant::now();
    std::thread::scope(|s| {
        for m in mounts {
            for th in 0..threads {
                let m = m.clone();
                s.spawn(move || {
                    let mut last = 0;
                    for r in 0..rounds {
                        if (r + th) % 3 == 0 {
                            let g = m.locks.lock(range, LockMode::Read).unwrap();
                            let mut c = m.cache.lock().unwrap();
                            let v = *c.cached.get_or_insert_with(|| *m.store.lock().unwrap());
                            assert!(v >= last, "a read went back from {last} to {v}");
                            last = v;
                            drop(c);
                            drop(g);
                            continue;
                        }
                        let g = m.locks.lock(range, LockMode::Write).unwrap();
                        let mut c = m.cache.lock().unwrap();
                        let v = *c.cached.get_or_insert_with(|| *m.store.lock().unwrap());
                        c.cached = Some(v + 1);
                        c.dirty = true;
                        g.written(c.trans);
                        drop(c);
                        drop(g);
                        if r % 7 == 0 {
                            m.locks.shrink().unwrap();
                        }
                        std::thread::yield_now();
                    }
                });
            }
        }
    });
    let elapsed = start.elapsed();
    let per_mount: u64 = (0..threads)
        .map(|th| (0..rounds).filter(|r| (r + th) % 3 != 0).count() as u64)
        .sum();
    // The last writer's increments may still be dirty in its cache: a reader elsewhere
    // makes it commit.
    let g = mounts[0].locks.lock(range, LockMode::Read).unwrap();
    let value = {
        let mut c = mounts[0].cache.lock().unwrap();
        *c.cached
            .get_or_insert_with(|| *mounts[0].store.lock().unwrap())
    };
    drop(g);
    CounterRun {
        value,
        increments: per_mount * mounts.len() as u64,
        commits: mounts
            .iter()
            .map(|m| m.commits.load(Ordering::Relaxed))
            .sum(),
        elapsed,
    }
}

/// Before a takeover: mount 1 (it keeps its idle locks) writes `v` under WRITE and lets
/// go, still holding the lock with its write dirty; the grant's write seq.
pub fn write_and_hold(mounts: &[Arc<CounterMount>], v: u64) -> u64 {
    let g = mounts[1]
        .locks
        .lock(inode_lock(0), LockMode::Write)
        .unwrap();
    let seq = g.write_seq();
    {
        let mut c = mounts[1].cache.lock().unwrap();
        c.cached = Some(v);
        c.dirty = true;
        g.written(c.trans);
    }
    drop(g);
    seq
}

/// After the takeover and its lock recovery: mount 0 reads `v` once mount 1 has committed
/// it and dropped to READ, then writes under a write seq above the recovered `seq`.
pub fn assert_recovered(mounts: &[Arc<CounterMount>], v: u64, seq: u64) {
    let range = inode_lock(0);
    let g = mounts[0].locks.lock(range, LockMode::Read).unwrap();
    assert_eq!(mounts[1].commits.load(Ordering::Relaxed), 1);
    assert_eq!(*mounts[0].store.lock().unwrap(), v);
    drop(g);
    let w = mounts[0].locks.lock(range, LockMode::Write).unwrap();
    assert!(
        w.write_seq() > seq,
        "write seq {} not above the recovered {seq}",
        w.write_seq()
    );
}
