#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Deterministic simulation of the lock service: one [`LockServer`], several mounts'
//! [`LockClient`]s, and a network of one connection per mount (FIFO each way, as the
//! reliable layer gives; links are served in random order with per-link weights, so
//! messages of different links reorder). A seeded RNG picks the work: users take and let
//! go of READ, WRITE and WRITE_ONLY on a few locks, write values under the modes that
//! write and read under those that read; invalidations are carried out in two steps
//! (start, then commit-and-drop); mounts commit, shrink their idle locks, leave (after
//! a last commit) and are replaced; the server fails over: of what it had sent, a
//! prefix per connection arrives and the rest is lost, everything sent to it is lost,
//! the mounts send their unanswered requests again (some twice) and lock recovery runs,
//! with the new server's seq starting from what was durable.
//!
//! Each mount has an item cache per lock (values it read, readable only under READ or
//! WRITE) and dirty items (its writes, durable once it commits); the shared store keeps
//! for each item the version with the greatest `(write_seq, counter)`, so a grant whose
//! `write_seq` were not above older writes would lose them. At every step:
//! - the modes the mounts hold, and those the server granted, are pairwise compatible
//!   across mounts, and every user's mode is served by its mount's mode;
//! - a mount caches items of a lock only while its mode reads (or while it drops it),
//!   and holds dirty items only while its mode writes (or while it drops it);
//! - every read equals the last values written by anyone (writes reach the store at
//!   the invalidation that lets the reader in);
//! - every WRITE/WRITE_ONLY grant's `write_seq` is above every version written before.
//!
//! The run ends by draining: no new users, every message delivered; every waiting user
//! must be granted (no deadlock).
//!
//! `SCOUTFS_LOCK_SIM_SEEDS=N` runs N seeds (default 3000) from `SCOUTFS_LOCK_SIM_FIRST`
//! (default 0); a failure prints its seed and `SCOUTFS_LOCK_SIM_SEED=S` replays it.

mod common;

use common::lock_work::{pick_weighted, MountWork, Seq, Workload};
use common::{
    assert_recovered, count_under_locks, counter_mounts, env_num, env_or, for_each_seed,
    write_and_hold, Rng,
};
use scoutfs_core::format::Key;
use scoutfs_core::lock::client::CacheState;
use scoutfs_core::lock::server::{LockOutput, LockServer, SeqSource};
use scoutfs_core::lock::{can_write, inode_lock};
use scoutfs_core::server::{Server, ServerCore, ServerOptions};
use scoutfs_core::transport::{ClientReply, LocalHub, LockMode, NetLock, ServerRequest};
use std::collections::VecDeque;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stats {
    steps: u64,
    grants: u64,
    invalidations: u64,
    failovers: u64,
    recovered: u64,
    recovered_dropping: u64,
    shrunk: u64,
    departures: u64,
    reads: u64,
}

enum ToServer {
    Lock(u64, NetLock),
    Reply(ClientReply),
    Farewell,
}

enum ToClient {
    Grant(NetLock),
    Req(ServerRequest),
}

struct Mount {
    rid: u64,
    leaving: bool,
    /// Its lock client, users and items.
    w: MountWork,
    /// Locks whose invalidation is started and not finished.
    started: Vec<usize>,
    to_server: VecDeque<ToServer>,
    to_client: VecDeque<ToClient>,
    weight: u64,
}

struct Sim {
    rng: Rng,
    work: Workload,
    server: LockServer,
    seq: Seq,
    mounts: Vec<Mount>,
    next_rid: u64,
    next_token: u64,
    stats: Stats,
    idle_limit: usize,
}

impl Sim {
    fn new_mount(&mut self) -> Mount {
        self.next_rid += 1;
        Mount {
            rid: self.next_rid,
            leaving: false,
            w: MountWork::new(self.work.ranges.len(), self.idle_limit),
            started: Vec::new(),
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            weight: 1 + self.rng.below(4),
        }
    }

    fn lock_idx(&self, key: &Key) -> usize {
        self.work
            .ranges
            .iter()
            .position(|r| r.start == *key)
            .unwrap()
    }

    fn mount_of(&self, rid: u64) -> Option<usize> {
        self.mounts.iter().position(|m| m.rid == rid)
    }

    fn route(&mut self, out: Vec<LockOutput>) {
        for o in out {
            match o {
                LockOutput::Grant { rid, nl, .. } => {
                    if can_write(nl.new_mode) {
                        assert!(
                            nl.write_seq > self.work.max_written,
                            "grant write_seq {} not above written {}",
                            nl.write_seq,
                            self.work.max_written
                        );
                    }
                    if let Some(m) = self.mount_of(rid) {
                        self.mounts[m].to_client.push_back(ToClient::Grant(nl));
                    }
                }
                LockOutput::Send { rid, req } => {
                    if let Some(m) = self.mount_of(rid) {
                        self.mounts[m].to_client.push_back(ToClient::Req(req));
                    }
                }
                LockOutput::Cancel { .. } => {}
            }
        }
    }

    fn send_lock(&mut self, m: usize, nl: NetLock) {
        self.next_token += 1;
        let t = self.next_token;
        self.mounts[m].to_server.push_back(ToServer::Lock(t, nl));
    }

    /// Commit mount `m`'s transaction: its dirty items reach the store, and the server
    /// (which records the commit) keeps its seq above their versions.
    fn commit(&mut self, m: usize) {
        let mount = &mut self.mounts[m];
        for (l, d) in mount.w.dirty.iter_mut().enumerate() {
            let items = std::mem::take(d);
            for (ver, _) in items.values() {
                self.seq.raise_seq(ver.0);
            }
            self.work.store_items(l, items);
        }
        mount.w.trans += 1;
    }

    fn retry(&mut self, m: usize) {
        for nl in self.mounts[m].w.retry(&self.work.ranges) {
            self.send_lock(m, nl);
        }
    }

    fn start_user(&mut self, m: usize) {
        for nl in self.mounts[m]
            .w
            .start_user(&mut self.rng, &self.work.ranges)
        {
            self.send_lock(m, nl);
        }
    }

    fn user_action(&mut self, m: usize) {
        let mount = &mut self.mounts[m];
        self.work
            .user_action(&mut self.rng, &mut mount.w, mount.rid, m as u64 + 1);
    }

    fn deliver(&mut self, m: usize, to_server: bool) {
        if to_server {
            let Some(msg) = self.mounts[m].to_server.pop_front() else {
                return;
            };
            let rid = self.mounts[m].rid;
            let out = match msg {
                ToServer::Lock(token, nl) => self.server.request(rid, token, nl, &mut self.seq),
                ToServer::Reply(ClientReply::Lock(nl)) => {
                    self.server.invalidated(rid, nl, &mut self.seq).unwrap()
                }
                ToServer::Reply(ClientReply::LockRecover(b)) => {
                    self.server.recover(rid, &b, &mut self.seq).unwrap()
                }
                ToServer::Reply(other) => panic!("unexpected reply {other:?}"),
                ToServer::Farewell => {
                    let out = self.server.farewell(rid, &mut self.seq);
                    let fresh = self.new_mount();
                    self.mounts[m] = fresh;
                    out
                }
            };
            self.route(out);
        } else {
            let Some(msg) = self.mounts[m].to_client.pop_front() else {
                return;
            };
            self.client_receive(m, msg);
        }
    }

    fn client_receive(&mut self, m: usize, msg: ToClient) {
        if self.mounts[m].leaving {
            return;
        }
        match msg {
            ToClient::Grant(nl) => {
                let l = self.lock_idx(&nl.key);
                let cs = CacheState {
                    cached: self.mounts[m].w.cache[l].is_some(),
                    dirty: !self.mounts[m].w.dirty[l].is_empty(),
                };
                self.mounts[m].w.lc.grant(nl, cs).unwrap();
                self.stats.grants += 1;
            }
            ToClient::Req(ServerRequest::LockInvalidate(nl)) => {
                if let Some(r) = self.mounts[m].w.lc.invalidate(nl) {
                    self.mounts[m].to_server.push_back(ToServer::Reply(r));
                }
            }
            ToClient::Req(ServerRequest::LockRecover { key }) => {
                let r = self.mounts[m].w.lc.recover(&key);
                self.mounts[m].to_server.push_back(ToServer::Reply(r));
            }
            ToClient::Req(other) => panic!("unexpected request {other:?}"),
        }
        self.retry(m);
    }

    fn start_invalidation(&mut self, m: usize) -> bool {
        if self.mounts[m].leaving {
            return false;
        }
        let Some(inv) = self.mounts[m].w.lc.next_invalidation() else {
            return false;
        };
        let l = self.lock_idx(&inv.range.start);
        self.mounts[m].started.push(l);
        self.stats.invalidations += 1;
        true
    }

    fn finish_invalidation(&mut self, m: usize) -> bool {
        let n = self.mounts[m].started.len() as u64;
        if n == 0 {
            return false;
        }
        let l = self.mounts[m]
            .started
            .swap_remove(self.rng.below(n) as usize);
        let key = self.work.ranges[l].start;
        let lock = self.mounts[m].w.lc.lock(&key).unwrap();
        let (from, to) = (lock.invalidating().unwrap(), lock.mode);
        if can_write(from) && lock.dirty_trans_seq == self.mounts[m].w.trans {
            self.commit(m);
        }
        if !(to == LockMode::Read && matches!(from, LockMode::Write | LockMode::Read)) {
            self.mounts[m].w.cache[l] = None;
        }
        let reply = self.mounts[m].w.lc.finish_invalidation(&key).unwrap();
        self.mounts[m].to_server.push_back(ToServer::Reply(reply));
        self.retry(m);
        true
    }

    fn shrink(&mut self, m: usize) -> bool {
        if self.mounts[m].leaving {
            return false;
        }
        let nls = self.mounts[m].w.lc.shrink();
        self.stats.shrunk += nls.len() as u64;
        let any = !nls.is_empty();
        for nl in nls {
            self.send_lock(m, nl);
        }
        any
    }

    fn depart(&mut self, m: usize) {
        if self.mounts[m].leaving || !self.mounts[m].started.is_empty() {
            return;
        }
        self.mounts[m].w.release_all(&self.work.ranges);
        self.mounts[m].w.waiting.clear();
        self.commit(m);
        let mount = &mut self.mounts[m];
        mount.w.cache.iter_mut().for_each(|c| *c = None);
        mount.leaving = true;
        mount.to_server.push_back(ToServer::Farewell);
        self.stats.departures += 1;
    }

    fn failover(&mut self) {
        self.stats.failovers += 1;
        self.stats.recovered += self.server.stats().recovered;
        self.stats.recovered_dropping += self.server.stats().recovered_dropping;
        for m in 0..self.mounts.len() {
            let n = self.mounts[m].to_client.len() as u64;
            let arrive = self.rng.below(n + 1);
            for _ in 0..arrive {
                let msg = self.mounts[m].to_client.pop_front().unwrap();
                self.client_receive(m, msg);
            }
            self.mounts[m].to_client.clear();
            self.mounts[m].to_server.clear();
        }
        self.server = LockServer::new();
        let stored = self.work.stored_seq();
        self.seq.seq = self.seq.durable.max(stored);
        let mut rids = Vec::new();
        for m in 0..self.mounts.len() {
            if self.mounts[m].leaving {
                self.mounts[m].to_server.push_back(ToServer::Farewell);
            } else {
                for nl in self.mounts[m].w.lc.pending_requests() {
                    self.send_lock(m, nl);
                    if self.rng.below(4) == 0 {
                        self.send_lock(m, nl);
                    }
                }
            }
            rids.push(self.mounts[m].rid);
        }
        let out = self.server.start_recovery(rids);
        self.route(out);
    }

    fn check(&self) {
        let live = self.mounts.iter().filter(|m| !m.leaving);
        self.work.check(live.map(|m| (m.rid, &m.w)), &self.server);
    }

    fn pick_link(&mut self) -> Option<(usize, bool)> {
        let links: Vec<((usize, bool), u64)> = self
            .mounts
            .iter()
            .enumerate()
            .flat_map(|(i, m)| {
                [
                    (!m.to_server.is_empty()).then_some(((i, true), m.weight)),
                    (!m.to_client.is_empty()).then_some(((i, false), m.weight)),
                ]
            })
            .flatten()
            .collect();
        pick_weighted(&mut self.rng, &links)
    }
}

fn run_seed(seed: u64) -> Stats {
    let mut rng = Rng(seed ^ 0x0010_c51d);
    let nmounts = 2 + rng.below(3) as usize;
    let nlocks = 1 + rng.below(4) as usize;
    let idle_limit = rng.below(3) as usize;
    let mut sim = Sim {
        rng,
        work: Workload::new((0..nlocks as u64).map(|i| inode_lock(i * 1024)).collect()),
        server: LockServer::new(),
        seq: Seq { seq: 0, durable: 0 },
        mounts: Vec::new(),
        next_rid: 0,
        next_token: 0,
        stats: Stats::default(),
        idle_limit,
    };
    for _ in 0..nmounts {
        let m = sim.new_mount();
        sim.mounts.push(m);
    }
    let steps = 200 + sim.rng.below(200);
    for _ in 0..steps {
        sim.stats.steps += 1;
        let m = sim.rng.below(nmounts as u64) as usize;
        let x = sim.rng.below(1000);
        match x {
            0..=219 if !sim.mounts[m].leaving => sim.start_user(m),
            0..=219 => {}
            220..=449 => sim.user_action(m),
            450..=749 => {
                if let Some((i, s)) = sim.pick_link() {
                    sim.deliver(i, s);
                }
            }
            750..=849 => {
                sim.start_invalidation(m);
            }
            850..=939 => {
                sim.finish_invalidation(m);
            }
            940..=964 if !sim.mounts[m].leaving => sim.commit(m),
            940..=964 => {}
            965..=979 => {
                sim.shrink(m);
            }
            980..=987 => sim.seq.durable = sim.seq.seq,
            988..=992 => sim.failover(),
            _ => sim.depart(m),
        }
        sim.check();
    }
    // Drain: users finish, no new ones; everything in flight is delivered.
    let mut idle_rounds = 0;
    for _ in 0..100_000 {
        sim.stats.steps += 1;
        let mut progress = false;
        for m in 0..nmounts {
            if !sim.mounts[m].w.users.is_empty() {
                let u = sim.mounts[m].w.users.pop().unwrap();
                let key = sim.work.ranges[u.lock].start;
                sim.mounts[m].w.lc.release(&key, u.mode).unwrap();
                progress = true;
            }
        }
        if let Some((i, s)) = sim.pick_link() {
            sim.deliver(i, s);
            progress = true;
        }
        for m in 0..nmounts {
            progress |= sim.start_invalidation(m);
            progress |= sim.finish_invalidation(m);
        }
        sim.check();
        if !progress {
            for m in 0..nmounts {
                progress |= sim.shrink(m);
            }
        }
        if progress {
            idle_rounds = 0;
        } else {
            idle_rounds += 1;
            if idle_rounds > 2 {
                break;
            }
        }
    }
    for m in &sim.mounts {
        assert!(
            m.leaving || m.w.waiting.is_empty(),
            "mount {} users wait forever: {:?}",
            m.rid,
            m.w.waiting
        );
    }
    assert!(!sim.server.recovering(), "recovery never ended");
    assert_eq!(
        sim.server.waiting(),
        0,
        "requests left waiting at the server"
    );
    sim.stats.recovered += sim.server.stats().recovered;
    sim.stats.recovered_dropping += sim.server.stats().recovered_dropping;
    sim.stats.reads = sim.work.reads;
    sim.stats
}

#[test]
fn lock_simulation() {
    if let Some(seed) = env_num(&["SCOUTFS_LOCK_SIM_SEED"]) {
        eprintln!("seed {seed}: {:?}", run_seed(seed));
        return;
    }
    let seeds: u64 = env_or(&["SCOUTFS_LOCK_SIM_SEEDS"], 3000);
    let first: u64 = env_or(&["SCOUTFS_LOCK_SIM_FIRST"], 0);
    let mut t = Stats::default();
    for_each_seed(first, seeds, "SCOUTFS_LOCK_SIM_SEED", |seed| {
        let s = run_seed(seed);
        t.steps += s.steps;
        t.grants += s.grants;
        t.invalidations += s.invalidations;
        t.failovers += s.failovers;
        t.recovered += s.recovered;
        t.recovered_dropping += s.recovered_dropping;
        t.shrunk += s.shrunk;
        t.departures += s.departures;
        t.reads += s.reads;
    });
    eprintln!(
        "lock simulation: {seeds} seeds, {} steps, {} grants, {} invalidations, {} failovers \
         ({} locks recovered, {} of them mid-invalidation), {} idle locks shrunk, {} departures, \
         {} reads checked",
        t.steps,
        t.grants,
        t.invalidations,
        t.failovers,
        t.recovered,
        t.recovered_dropping,
        t.shrunk,
        t.departures,
        t.reads
    );
    // Enough seeds must reach every path the simulation is there for.
    if seeds >= 1000 {
        assert!(t.grants > seeds && t.invalidations > 0 && t.failovers > 0 && t.recovered > 0);
        assert!(t.shrunk > 0 && t.departures > 0 && t.reads > seeds && t.recovered_dropping > 0);
    }
}

#[test]
fn lock_simulation_replays_a_seed() {
    assert_eq!(run_seed(17), run_seed(17));
}

/// A server takes over from one that granted locks: the mounts send their locks again,
/// the new server's seq goes above the recovered write seq, and a mount that wants the
/// lock gets it once the holder has committed.
#[test]
fn lock_recovery_after_takeover() {
    use std::sync::Arc;
    let (meta, data) = common::volume(64, 4096);
    let open = || {
        let core = ServerCore::open(meta.clone(), data.clone(), ServerOptions::default()).unwrap();
        Arc::new(Server::new(core))
    };
    let server = open();
    let hub = LocalHub::new(&server);
    let store = Arc::new(std::sync::Mutex::new(0u64));
    let mounts = counter_mounts(|_| hub.connect(), 2, &store);
    let seq = write_and_hold(&mounts, 41);
    server.shutdown_locks();
    let next = open();
    hub.reconnect(&next);
    assert_eq!(next.start_lock_recovery_of_mounted().unwrap(), 2);
    // Mount 0 waits for recovery, then for mount 1 to commit and drop to READ.
    assert_recovered(&mounts, 41, seq);
    let st = next.lock_stats();
    eprintln!(
        "lock takeover: {} locks recovered, {} invalidations",
        st.recovered, st.invalidations
    );
    assert!(st.recovered >= 1);
}

/// Mounts in one process over a [`LocalHub`] and a real server: threads of every mount
/// increment one counter under WRITE (read under READ by others); no increment may be
/// lost, so every WRITE must exclude the others and every invalidation must commit.
#[test]
fn lock_threads_over_a_hub() {
    use std::sync::Arc;
    let (meta, data) = common::volume(64, 4096);
    let core = ServerCore::open(meta, data, ServerOptions::default()).unwrap();
    let server = Arc::new(Server::new(core));
    let hub = LocalHub::new(&server);
    let store = Arc::new(std::sync::Mutex::new(0u64));
    let nmounts = 3;
    let (threads, rounds) = (2, env_or(&["SCOUTFS_LOCK_THREAD_ROUNDS"], 200u64));
    let mounts = counter_mounts(|_| hub.connect(), nmounts, &store);
    let run = count_under_locks(&mounts, threads, rounds);
    let st = server.lock_stats();
    eprintln!(
        "lock threads: {nmounts} mounts x {threads} threads, {} increments in {:?}; \
         server: {} requests, {} grants, {} invalidations; {} commits at invalidation",
        run.increments, run.elapsed, st.requests, st.grants, st.invalidations, run.commits
    );
    assert_eq!(run.value, run.increments, "increments lost");
    assert!(st.invalidations > 0 && run.commits > 0);
}
