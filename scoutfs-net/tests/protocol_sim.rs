#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Deterministic simulation of the lock protocol as it travels: one [`LockServer`] and
//! several mounts' [`LockClient`]s, every message between them a wire frame (encoded and
//! decoded by `scoutfs_net::wire`) carried by a [`Conn`] on each side over a link that
//! delays, duplicates and loses frames, breaks sockets and restarts the server.
//!
//! The link of a mount is one socket at a time: frames arrive in order (TCP), some twice;
//! a lost frame breaks the socket. A broken socket still yields a random prefix of what
//! was in flight until the mount reconnects (the rest is lost); reconnecting to the same
//! server continues the conversation exactly once ([`Conn::reconnected`]), to a restarted
//! server (a new term) at least once ([`Conn::reset_peer`]) with lock recovery. What a
//! `Conn` delivers waits in an inbox and is handled in random order, as the transports'
//! handler threads do: on the mount, invalidations of one lock in order (the client
//! transport queues them per key), a new server's recovery request once no invalidation
//! is being carried out (`ClusterLocks` waits so) and after the grants delivered before
//! it (which the threaded client does NOT ensure, see below), the rest in any order;
//! requests and replies in any order on the server. Links of different mounts
//! interleave at random. Mounts leave (commit, wait for the acknowledgements and their
//! lock requests, farewell) and fresh ones join; a restarted server recovers the mounts
//! with a mounted-client record.
//!
//! Each mount caches items per lock and writes under WRITE and WRITE_ONLY, as
//! `scoutfs-core/tests/lock_sim.rs` does; a commit writes the mount's log (durable on the
//! shared device) and sends a `CommitLogTrees` that the server applies to the committed
//! store before answering; an invalidation of a lock written in the open transaction
//! commits and answers only once that commit is acknowledged. At every step:
//! - the modes mounts hold are compatible across mounts, each user's mode is served by
//!   its mount's mode, and the server's grants are compatible;
//! - a mount caches items of a lock only while its mode reads (or while dropping it) and
//!   holds dirty items only while its mode writes (or while dropping it);
//! - every read returns the last value written by anyone (committed and made visible by
//!   the invalidation that let the reader in);
//! - every WRITE/WRITE_ONLY grant's `write_seq` is above every version written before;
//! - every commit a mount saw acknowledged is in the committed store (which outlives
//!   server restarts);
//! - every frame decodes and no `Conn` refuses one.
//!
//! The run ends by draining: sockets reconnect, no new users, everything in flight is
//! delivered and handled; no user may be left waiting (no deadlock) and no request
//! unanswered.
//!
//! `SCOUTFS_PSIM_SEEDS=N` runs N seeds (default 8000) from `SCOUTFS_PSIM_FIRST` (default
//! 0); a failure prints its seed and step, and `SCOUTFS_PSIM_SEED=S` replays it
//! (`SCOUTFS_PSIM_TRACE=1` prints what every handler takes). `SCOUTFS_PSIM_GRANT_RACE=1`
//! lets a new server's recovery request overtake a grant of the old one on the mount, as
//! the threaded client can (a known bug: the new server misses the grant).

#[path = "../../scoutfs-core/tests/common/mod.rs"]
mod common;

use common::lock_work::{pick_weighted, MountWork, Seq, Ver, Workload};
use common::{env_num, env_or, for_each_seed, Rng};
use scoutfs_core::format::{Key, LogTrees};
use scoutfs_core::lock::client::CacheState;
use scoutfs_core::lock::server::{LockOutput, LockServer, SeqSource};
use scoutfs_core::lock::{can_write, inode_lock};
use scoutfs_core::transport::{ClientReply, LockMode, NetLock, Request, Response, ServerRequest};
use scoutfs_net::conn::{Conn, Delivery, ReqToken};
use scoutfs_net::wire::{
    decode_client_reply, decode_frame, decode_request, decode_response, decode_server_request,
    encode_client_reply, encode_request, encode_response, encode_server_request, Cmd, Frame,
    NetErrno,
};
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap, VecDeque};
use zerocopy::FromZeros;

/// A commit's items as the mount's log holds them: (lock, item, version, value).
type Log = Vec<(usize, u64, Ver, u64)>;

thread_local! {
    /// The step the running seed is at, for the failure message.
    static STEP: Cell<u64> = const { Cell::new(0) };
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Stats {
    steps: u64,
    frames: u64,
    lost: u64,
    duplicated: u64,
    reordered: u64,
    breaks: u64,
    reconnects: u64,
    restarts: u64,
    grants: u64,
    invalidations: u64,
    recovered: u64,
    commits: u64,
    reads: u64,
    departures: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.steps += o.steps;
        self.frames += o.frames;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.reordered += o.reordered;
        self.breaks += o.breaks;
        self.reconnects += o.reconnects;
        self.restarts += o.restarts;
        self.grants += o.grants;
        self.invalidations += o.invalidations;
        self.recovered += o.recovered;
        self.commits += o.commits;
        self.reads += o.reads;
        self.departures += o.departures;
    }
}

/// What a mount's `Conn` delivered, waiting for a handler.
#[derive(Debug)]
enum MountIn {
    /// The answer to a lock request.
    Granted(NetLock),
    /// A lock request the server gave up on.
    Failed(Key),
    /// A commit acknowledged: its transaction.
    Committed(u64),
    /// The server handled the farewell.
    FarewellDone,
    /// A request of the server.
    Req(ReqToken, ServerRequest),
}

/// What the server's `Conn`s delivered, waiting for a handler.
enum ServerIn {
    Req(u64, ReqToken, Request),
    Reply(u64, ClientReply),
}

/// One socket of a mount (frames as bytes, in order each way) and whether it is open.
#[derive(Default)]
struct Link {
    up: bool,
    to_server: VecDeque<Vec<u8>>,
    to_mount: VecDeque<Vec<u8>>,
}

struct Mount {
    rid: u64,
    conn: Conn,
    /// The server term the mount last talked to.
    term: u64,
    link: Link,
    leaving: bool,
    farewell_sent: bool,
    /// Its lock client, users and items.
    w: MountWork,
    /// Transaction of each commit sent and not acknowledged.
    unacked: BTreeSet<u64>,
    /// Lock request ids in flight (for a failed answer).
    lock_ids: HashMap<u64, Key>,
    /// Commit request ids in flight: their transaction.
    commit_ids: HashMap<u64, u64>,
    /// Tokens of the invalidations handed to the lock client, per lock, in order.
    inv_tokens: Vec<VecDeque<ReqToken>>,
    /// Locks whose invalidation is started and not finished.
    started: Vec<usize>,
    inbox: Vec<MountIn>,
    weight: u64,
}

struct Sim {
    rng: Rng,
    work: Workload,
    server: LockServer,
    term: u64,
    /// The server's side of each mount's conversation.
    sconns: HashMap<u64, Conn>,
    /// Lock requests waiting for the lock server, by its token: (rid, frame token).
    swaiters: HashMap<u64, (u64, ReqToken)>,
    sinbox: Vec<ServerIn>,
    /// The mounted-client records (durable: a new server recovers these mounts).
    mounted: BTreeSet<u64>,
    seq: Seq,
    mounts: Vec<Mount>,
    /// The mounts' logs on the shared device: (rid, trans) to (lock, item, ver, value).
    logs: HashMap<(u64, u64), Log>,
    /// Commits the mounts saw acknowledged: (rid, trans).
    acked: Vec<(u64, u64)>,
    next_rid: u64,
    next_token: u64,
    stats: Stats,
    idle_limit: usize,
    /// Let a new server's recovery request overtake grants of the old one.
    grant_race: bool,
    /// Print what the handlers take (`SCOUTFS_PSIM_TRACE`, with a replayed seed).
    trace: bool,
}

/// A frame through its bytes, as a socket carries it.
fn decode(b: &[u8]) -> Frame {
    let (f, n) = decode_frame(b)
        .expect("a frame that does not decode")
        .expect("a short frame");
    assert_eq!(n, b.len(), "frame length");
    f
}

impl Sim {
    fn new_mount(&mut self) -> Mount {
        self.next_rid += 1;
        self.sconns.insert(self.next_rid, Conn::new());
        self.mounted.insert(self.next_rid);
        Mount {
            rid: self.next_rid,
            conn: Conn::new(),
            term: self.term,
            link: Link {
                up: true,
                ..Link::default()
            },
            leaving: false,
            farewell_sent: false,
            w: MountWork::new(self.work.ranges.len(), self.idle_limit),
            unacked: BTreeSet::new(),
            lock_ids: HashMap::new(),
            commit_ids: HashMap::new(),
            inv_tokens: vec![VecDeque::new(); self.work.ranges.len()],
            started: Vec::new(),
            inbox: Vec::new(),
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

    // ---- the server ----

    fn route(&mut self, out: Vec<LockOutput>) {
        for o in out {
            match o {
                LockOutput::Grant { token, nl, .. } => {
                    if can_write(nl.new_mode) {
                        assert!(
                            nl.write_seq > self.work.max_written,
                            "grant write_seq {} not above written {}",
                            nl.write_seq,
                            self.work.max_written
                        );
                    }
                    let Some((rid, t)) = self.swaiters.remove(&token) else {
                        continue;
                    };
                    let p = encode_response(Cmd::Lock, &Response::Lock(nl)).unwrap();
                    if let Some(c) = self.sconns.get_mut(&rid) {
                        c.respond(t, NetErrno::None, p);
                    }
                }
                LockOutput::Cancel { token, .. } => {
                    let Some((rid, t)) = self.swaiters.remove(&token) else {
                        continue;
                    };
                    if let Some(c) = self.sconns.get_mut(&rid) {
                        c.respond(t, NetErrno::Io, b"cancelled".to_vec());
                    }
                }
                LockOutput::Send { rid, req } => {
                    let (cmd, p) = encode_server_request(&req).unwrap();
                    if let Some(c) = self.sconns.get_mut(&rid) {
                        c.request(cmd, p);
                    }
                }
            }
        }
    }

    /// A frame reaches the server's side of mount `m`'s conversation.
    fn server_receive(&mut self, m: usize, b: &[u8]) {
        let rid = self.mounts[m].rid;
        let f = decode(b);
        let Some(c) = self.sconns.get_mut(&rid) else {
            return;
        };
        match c.receive(f).unwrap() {
            Delivery::Duplicate => {}
            Delivery::Request { token, payload } => {
                let req = decode_request(token.cmd, &payload).unwrap();
                self.sinbox.push(ServerIn::Req(rid, token, req));
            }
            Delivery::Response {
                cmd,
                error,
                payload,
                ..
            } => {
                let r = decode_client_reply(cmd, error, &payload).unwrap();
                self.sinbox.push(ServerIn::Reply(rid, r));
            }
        }
    }

    /// A server handler runs one delivered message.
    fn server_handle(&mut self) -> bool {
        if self.sinbox.is_empty() {
            return false;
        }
        let i = self.rng.below(self.sinbox.len() as u64) as usize;
        if i != 0 {
            self.stats.reordered += 1;
        }
        let msg = self.sinbox.remove(i);
        if self.trace {
            match &msg {
                ServerIn::Req(rid, t, r) => eprintln!("server <- mount {rid}: {t:?} {r:?}"),
                ServerIn::Reply(rid, r) => eprintln!("server <- mount {rid}: reply {r:?}"),
            }
        }
        match msg {
            ServerIn::Req(rid, t, Request::Lock(nl)) => {
                self.next_token += 1;
                self.swaiters.insert(self.next_token, (rid, t));
                let out = self.server.request(rid, self.next_token, nl, &mut self.seq);
                self.route(out);
            }
            ServerIn::Req(rid, t, Request::CommitLogTrees(lt)) => {
                assert_eq!(lt.rid.get(), rid);
                let trans = lt.nr.get();
                for (l, item, ver, val) in
                    self.logs.get(&(rid, trans)).cloned().into_iter().flatten()
                {
                    self.work.store_items(l, [(item, (ver, val))]);
                }
                self.seq.raise_seq(lt.max_item_seq.get());
                self.seq.durable = self.seq.seq;
                let p = encode_response(t.cmd, &Response::LogTrees(lt)).unwrap();
                if let Some(c) = self.sconns.get_mut(&rid) {
                    c.respond(t, NetErrno::None, p);
                }
            }
            ServerIn::Req(rid, t, Request::Farewell { rid: r }) => {
                assert_eq!(r, rid);
                let out = self.server.farewell(rid, &mut self.seq);
                self.mounted.remove(&rid);
                self.swaiters.retain(|_, (w, _)| *w != rid);
                let p = encode_response(t.cmd, &Response::Done).unwrap();
                if let Some(c) = self.sconns.get_mut(&rid) {
                    c.respond(t, NetErrno::None, p);
                }
                self.route(out);
            }
            ServerIn::Req(_, _, other) => panic!("unexpected request {other:?}"),
            ServerIn::Reply(rid, ClientReply::Lock(nl)) => {
                let out = self.server.invalidated(rid, nl, &mut self.seq).unwrap();
                self.route(out);
            }
            ServerIn::Reply(rid, ClientReply::LockRecover(b)) => {
                let out = self.server.recover(rid, &b, &mut self.seq).unwrap();
                self.route(out);
            }
            ServerIn::Reply(_, other) => panic!("unexpected reply {other:?}"),
        }
        true
    }

    // ---- the mounts ----

    fn send_lock(&mut self, m: usize, nl: NetLock) {
        let (cmd, p) = encode_request(&Request::Lock(nl)).unwrap();
        let id = self.mounts[m].conn.request(cmd, p);
        self.mounts[m].lock_ids.insert(id, nl.key);
    }

    /// Commit mount `m`'s open transaction: its dirty items go to its log, and the
    /// server is asked to make them part of the committed store.
    fn commit(&mut self, m: usize) {
        let mount = &mut self.mounts[m];
        let trans = mount.w.trans;
        mount.w.trans += 1;
        let mut log = Vec::new();
        for (l, d) in mount.w.dirty.iter_mut().enumerate() {
            for (item, (ver, val)) in std::mem::take(d) {
                log.push((l, item, ver, val));
            }
        }
        if log.is_empty() {
            return;
        }
        let mut lt = LogTrees::new_zeroed();
        lt.rid = mount.rid.into();
        lt.nr = trans.into();
        lt.commit_trans_seq = trans.into();
        lt.max_item_seq = log.iter().map(|e| e.2 .0).max().unwrap_or(0).into();
        let (cmd, p) = encode_request(&Request::CommitLogTrees(Box::new(lt))).unwrap();
        let id = mount.conn.request(cmd, p);
        mount.commit_ids.insert(id, trans);
        mount.unacked.insert(trans);
        self.logs.insert((mount.rid, trans), log);
        self.stats.commits += 1;
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

    /// A frame reaches mount `m`.
    fn mount_receive(&mut self, m: usize, b: &[u8]) {
        let f = decode(b);
        let mount = &mut self.mounts[m];
        match mount.conn.receive(f).unwrap() {
            Delivery::Duplicate => {}
            Delivery::Request { token, payload } => {
                let req = decode_server_request(token.cmd, &payload).unwrap();
                mount.inbox.push(MountIn::Req(token, req));
            }
            Delivery::Response {
                id,
                cmd,
                error,
                payload,
            } => {
                let msg = match cmd {
                    Cmd::Lock => {
                        let key = mount.lock_ids.remove(&id).unwrap();
                        if error != NetErrno::None {
                            MountIn::Failed(key)
                        } else {
                            let Response::Lock(nl) = decode_response(cmd, &payload).unwrap() else {
                                panic!("lock answered with another response")
                            };
                            assert_eq!(nl.key, key);
                            MountIn::Granted(nl)
                        }
                    }
                    Cmd::CommitLogTrees => {
                        assert_eq!(error, NetErrno::None);
                        decode_response(cmd, &payload).unwrap();
                        MountIn::Committed(mount.commit_ids.remove(&id).unwrap())
                    }
                    Cmd::Farewell => MountIn::FarewellDone,
                    other => panic!("a response to {other:?}"),
                };
                mount.inbox.push(msg);
            }
        }
    }

    fn respond(&mut self, m: usize, t: ReqToken, r: &ClientReply) {
        let (errno, p) = encode_client_reply(t.cmd, r).unwrap();
        self.mounts[m].conn.respond(t, errno, p);
    }

    /// Whether a handler of mount `m` may take inbox entry `i` now.
    fn mount_may_handle(&self, m: usize, i: usize) -> bool {
        let mount = &self.mounts[m];
        match &mount.inbox[i] {
            // The client transport runs the invalidations of one lock in order.
            MountIn::Req(_, ServerRequest::LockInvalidate(nl)) => !mount.inbox[..i].iter().any(
                |x| matches!(x, MountIn::Req(_, ServerRequest::LockInvalidate(o)) if o.key == nl.key),
            ),
            MountIn::Req(t, ServerRequest::LockRecover { .. }) if t.epoch == mount.conn.epoch() => {
                // The recovery handler waits for the invalidations being carried out:
                // their answers go to the old server, the new one learns the mode they
                // dropped to.
                // And grants the old server sent are applied before the new one learns
                // the mount's locks (else the batch misses a grant, and the new server
                // grants a conflicting mode). NOTE: the threaded client does not ensure
                // this: see `SCOUTFS_PSIM_GRANT_RACE`.
                let earlier_grant = mount.inbox[..i]
                    .iter()
                    .any(|x| matches!(x, MountIn::Granted(_) | MountIn::Failed(_)));
                !mount.w.lc.dropping() && (self.grant_race || !earlier_grant)
            }
            _ => true,
        }
    }

    /// A handler of mount `m` runs one delivered message: any of them, but the
    /// invalidations of one lock in the order they came.
    fn mount_handle(&mut self, m: usize) -> bool {
        let ready: Vec<usize> = (0..self.mounts[m].inbox.len())
            .filter(|&i| self.mount_may_handle(m, i))
            .collect();
        if ready.is_empty() {
            return false;
        }
        let i = ready[self.rng.below(ready.len() as u64) as usize];
        if i != 0 {
            self.stats.reordered += 1;
        }
        let msg = self.mounts[m].inbox.remove(i);
        if self.trace {
            eprintln!("mount {} <- {msg:?}", self.mounts[m].rid);
        }
        match msg {
            MountIn::Committed(trans) => {
                let mount = &mut self.mounts[m];
                mount.unacked.remove(&trans);
                self.acked.push((mount.rid, trans));
            }
            MountIn::FarewellDone => {
                assert!(self.mounts[m].leaving);
                let rid = self.mounts[m].rid;
                self.sconns.remove(&rid);
                self.stats.departures += 1;
                let fresh = self.new_mount();
                self.mounts[m] = fresh;
            }
            _ if self.mounts[m].farewell_sent => {}
            MountIn::Granted(nl) => {
                let l = self.lock_idx(&nl.key);
                let cs = CacheState {
                    cached: self.mounts[m].w.cache[l].is_some(),
                    dirty: !self.mounts[m].w.dirty[l].is_empty(),
                };
                self.mounts[m].w.lc.grant(nl, cs).unwrap();
                self.stats.grants += 1;
            }
            MountIn::Failed(key) => self.mounts[m].w.lc.request_failed(&key),
            MountIn::Req(t, _) if t.epoch != self.mounts[m].conn.epoch() => {
                // A request of a server since replaced is not carried out.
            }
            MountIn::Req(t, ServerRequest::LockInvalidate(nl)) => {
                let l = self.lock_idx(&nl.key);
                match self.mounts[m].w.lc.invalidate(nl) {
                    Some(r) => self.respond(m, t, &r),
                    None => self.mounts[m].inv_tokens[l].push_back(t),
                }
            }
            MountIn::Req(t, ServerRequest::LockRecover { key }) => {
                let r = self.mounts[m].w.lc.recover(&key);
                if key == Key::MIN {
                    // The invalidations of the old server not started are forgotten.
                    let mount = &mut self.mounts[m];
                    for (l, q) in mount.inv_tokens.iter_mut().enumerate() {
                        let keep = mount
                            .w
                            .lc
                            .lock(&self.work.ranges[l].start)
                            .map_or(0, |k| k.invalidations_queued());
                        q.truncate(keep);
                    }
                }
                self.respond(m, t, &r);
            }
            MountIn::Req(_, other) => panic!("unexpected server request {other:?}"),
        }
        self.retry(m);
        true
    }

    fn start_invalidation(&mut self, m: usize) -> bool {
        if self.mounts[m].farewell_sent {
            return false;
        }
        let Some(inv) = self.mounts[m].w.lc.next_invalidation() else {
            return false;
        };
        let l = self.lock_idx(&inv.range.start);
        if inv.written_in == Some(self.mounts[m].w.trans) {
            self.commit(m);
        }
        self.mounts[m].started.push(l);
        self.stats.invalidations += 1;
        true
    }

    /// Finish a started invalidation whose commit is acknowledged: drop the cache and
    /// answer the server.
    fn finish_invalidation(&mut self, m: usize) -> bool {
        let mount = &self.mounts[m];
        let ready: Vec<usize> = (0..mount.started.len())
            .filter(|&i| {
                let key = self.work.ranges[mount.started[i]].start;
                let lock = mount.w.lc.lock(&key).unwrap();
                !can_write(lock.invalidating().unwrap())
                    || mount
                        .unacked
                        .first()
                        .is_none_or(|t| *t > lock.dirty_trans_seq)
            })
            .collect();
        if ready.is_empty() {
            return false;
        }
        let i = ready[self.rng.below(ready.len() as u64) as usize];
        let l = self.mounts[m].started.swap_remove(i);
        let key = self.work.ranges[l].start;
        let lock = self.mounts[m].w.lc.lock(&key).unwrap();
        let (from, to) = (lock.invalidating().unwrap(), lock.mode);
        if !(to == LockMode::Read && matches!(from, LockMode::Write | LockMode::Read)) {
            self.mounts[m].w.cache[l] = None;
        }
        let reply = self.mounts[m].w.lc.finish_invalidation(&key).unwrap();
        let t = self.mounts[m].inv_tokens[l].pop_front().unwrap();
        self.respond(m, t, &reply);
        self.retry(m);
        true
    }

    fn shrink(&mut self, m: usize) -> bool {
        if self.mounts[m].leaving {
            return false;
        }
        let nls = self.mounts[m].w.lc.shrink();
        let any = !nls.is_empty();
        for nl in nls {
            self.send_lock(m, nl);
        }
        any
    }

    /// Mount `m` starts leaving: its users go, it commits, and once every commit is
    /// acknowledged and no lock request or invalidation is in flight it says farewell
    /// (until then it answers the server as before).
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
    }

    fn farewell(&mut self, m: usize) -> bool {
        let mount = &mut self.mounts[m];
        if !mount.leaving
            || mount.farewell_sent
            || !mount.unacked.is_empty()
            || !mount.lock_ids.is_empty()
            || mount.w.lc.dropping()
        {
            return false;
        }
        let (cmd, p) = encode_request(&Request::Farewell { rid: mount.rid }).unwrap();
        mount.conn.request(cmd, p);
        mount.farewell_sent = true;
        true
    }

    // ---- the links ----

    /// Mount `m`'s conn and the server's write what they have on the socket.
    fn flush(&mut self, m: usize) -> bool {
        let rid = self.mounts[m].rid;
        let mount = &mut self.mounts[m];
        if !mount.link.up {
            return false;
        }
        let mut any = false;
        for f in mount.conn.take_outgoing() {
            mount.link.to_server.push_back(f.encode());
            self.stats.frames += 1;
            any = true;
        }
        if let Some(c) = self.sconns.get_mut(&rid) {
            for f in c.take_outgoing() {
                mount.link.to_mount.push_back(f.encode());
                self.stats.frames += 1;
                any = true;
            }
        }
        any
    }

    /// One frame in flight on mount `m`'s socket arrives (maybe twice), or is lost and
    /// breaks the socket.
    fn deliver(&mut self, m: usize, to_server: bool) {
        let link = &mut self.mounts[m].link;
        let q = if to_server {
            &mut link.to_server
        } else {
            &mut link.to_mount
        };
        let Some(b) = q.pop_front() else {
            return;
        };
        if link.up && self.rng.below(60) == 0 {
            // Nothing behind a lost frame arrives on this socket (TCP).
            self.stats.lost += 1 + q.len() as u64;
            q.clear();
            self.break_socket(m);
            return;
        }
        let twice = self.rng.below(16) == 0;
        for _ in 0..1 + u64::from(twice) {
            if to_server {
                self.server_receive(m, &b);
            } else {
                self.mount_receive(m, &b);
            }
        }
        self.stats.duplicated += u64::from(twice);
    }

    /// Mount `m`'s socket breaks: a prefix of what is in flight each way may still
    /// arrive, the rest is lost.
    fn break_socket(&mut self, m: usize) {
        let link = &mut self.mounts[m].link;
        if !link.up {
            return;
        }
        link.up = false;
        let a = self.rng.below(link.to_server.len() as u64 + 1) as usize;
        let b = self.rng.below(link.to_mount.len() as u64 + 1) as usize;
        self.stats.lost += (link.to_server.len() - a + link.to_mount.len() - b) as u64;
        link.to_server.truncate(a);
        link.to_mount.truncate(b);
        self.stats.breaks += 1;
    }

    /// Mount `m` connects a new socket: to the same server the conversation goes on, to a
    /// new one it starts over (and the server knows the mount from its record).
    fn reconnect(&mut self, m: usize) -> bool {
        let rid = self.mounts[m].rid;
        let mount = &mut self.mounts[m];
        if mount.link.up {
            return false;
        }
        mount.link = Link {
            up: true,
            ..Link::default()
        };
        let c = self.sconns.entry(rid).or_default();
        if mount.term != self.term {
            mount.term = self.term;
            mount.conn.reset_peer();
            c.reset_peer();
        } else {
            mount.conn.reconnected();
            c.reconnected();
        }
        self.stats.reconnects += 1;
        true
    }

    /// The server restarts: a new term and lock server, whose seq starts from what was
    /// durable; the old one's work in progress and sockets are gone; the mounts' locks
    /// are recovered.
    fn restart(&mut self) {
        if self.trace {
            eprintln!("server restarts");
        }
        self.stats.restarts += 1;
        self.stats.recovered += self.server.stats().recovered;
        for m in 0..self.mounts.len() {
            self.break_socket(m);
            // What the old server sent and the mount reads before it notices.
            while let Some(b) = self.mounts[m].link.to_mount.pop_front() {
                if self.rng.below(2) == 0 {
                    self.mount_receive(m, &b);
                }
            }
            self.mounts[m].link.to_server.clear();
        }
        self.term += 1;
        self.server = LockServer::new();
        self.sinbox.clear();
        self.swaiters.clear();
        let stored = self.work.stored_seq();
        self.seq.seq = self.seq.durable.max(stored);
        self.sconns = self.mounts.iter().map(|m| (m.rid, Conn::new())).collect();
        let out = self.server.start_recovery(self.mounted.clone());
        self.route(out);
    }

    // ---- the invariants ----

    fn check(&self) {
        let live = self.mounts.iter().filter(|m| !m.farewell_sent);
        self.work
            .check(live.clone().map(|m| (m.rid, &m.w)), &self.server);
        for m in live {
            for (l, r) in self.work.ranges.iter().enumerate() {
                let lock = m.w.lc.lock(&r.start);
                assert_eq!(
                    m.inv_tokens[l].len(),
                    lock.map_or(0, |k| k.invalidations_queued()),
                    "mount {} invalidations of lock {l}",
                    m.rid
                );
            }
        }
        for (rid, trans) in &self.acked {
            for (l, item, ver, _) in &self.logs[&(*rid, *trans)] {
                let kept = self.work.store[*l].get(item).map(|e| e.0);
                assert!(
                    kept.is_some_and(|k| k >= *ver),
                    "mount {rid}'s acknowledged commit {trans} lost item {item} of lock {l}"
                );
            }
        }
    }

    fn pick_link(&mut self) -> Option<(usize, bool)> {
        let links: Vec<((usize, bool), u64)> = self
            .mounts
            .iter()
            .enumerate()
            .flat_map(|(i, m)| {
                [
                    (!m.link.to_server.is_empty()).then_some(((i, true), m.weight)),
                    (!m.link.to_mount.is_empty()).then_some(((i, false), m.weight)),
                ]
            })
            .flatten()
            .collect();
        pick_weighted(&mut self.rng, &links)
    }
}

fn step_no(n: u64) {
    STEP.with(|s| s.set(n));
}

fn run_seed(seed: u64) -> Stats {
    let mut rng = Rng(seed ^ 0x9051_3a11);
    let nmounts = 2 + rng.below(3) as usize;
    let nlocks = 1 + rng.below(4) as usize;
    let idle_limit = rng.below(3) as usize;
    let mut sim = Sim {
        rng,
        work: Workload::new((0..nlocks as u64).map(|i| inode_lock(i * 1024)).collect()),
        server: LockServer::new(),
        term: 1,
        sconns: HashMap::new(),
        swaiters: HashMap::new(),
        sinbox: Vec::new(),
        mounted: BTreeSet::new(),
        seq: Seq { seq: 0, durable: 0 },
        mounts: Vec::new(),
        logs: HashMap::new(),
        acked: Vec::new(),
        next_rid: 0,
        next_token: 0,
        stats: Stats::default(),
        idle_limit,
        grant_race: env_num::<u8>(&["SCOUTFS_PSIM_GRANT_RACE"]).is_some_and(|v| v != 0),
        trace: env_num::<u8>(&["SCOUTFS_PSIM_TRACE"]).is_some_and(|v| v != 0),
    };
    for _ in 0..nmounts {
        let m = sim.new_mount();
        sim.mounts.push(m);
    }
    let steps = 400 + sim.rng.below(500);
    for _ in 0..steps {
        sim.stats.steps += 1;
        step_no(sim.stats.steps);
        let m = sim.rng.below(nmounts as u64) as usize;
        let x = sim.rng.below(1000);
        match x {
            0..=139 if !sim.mounts[m].leaving => sim.start_user(m),
            0..=139 => {}
            140..=319 => sim.user_action(m),
            320..=499 => {
                if let Some((i, s)) = sim.pick_link() {
                    sim.deliver(i, s);
                }
            }
            500..=589 => {
                sim.flush(m);
            }
            590..=689 => {
                sim.mount_handle(m);
            }
            690..=769 => {
                sim.server_handle();
            }
            770..=829 => {
                sim.start_invalidation(m);
            }
            830..=889 => {
                sim.finish_invalidation(m);
            }
            890..=914 if !sim.mounts[m].leaving => sim.commit(m),
            890..=914 => {}
            915..=929 => {
                sim.shrink(m);
            }
            930..=939 => {
                sim.farewell(m);
            }
            940..=949 => sim.break_socket(m),
            950..=979 => {
                sim.reconnect(m);
            }
            980..=982 => sim.restart(),
            983..=987 => sim.depart(m),
            _ => sim.user_action(m),
        }
        sim.check();
    }
    // Drain: users finish, no new ones; sockets come back; everything in flight is
    // delivered and handled.
    let mut idle_rounds = 0;
    for _ in 0..100_000 {
        sim.stats.steps += 1;
        step_no(sim.stats.steps);
        let mut progress = false;
        for m in 0..nmounts {
            if let Some(u) = sim.mounts[m].w.users.pop() {
                let key = sim.work.ranges[u.lock].start;
                sim.mounts[m].w.lc.release(&key, u.mode).unwrap();
                progress = true;
            }
            progress |= sim.reconnect(m);
            progress |= sim.flush(m);
            progress |= sim.farewell(m);
        }
        if let Some((i, s)) = sim.pick_link() {
            sim.deliver(i, s);
            progress = true;
        }
        progress |= sim.server_handle();
        for m in 0..nmounts {
            progress |= sim.mount_handle(m);
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
            m.w.waiting.is_empty(),
            "mount {} users wait forever: {:?}",
            m.rid,
            m.w.waiting
        );
        assert_eq!(
            m.conn.unanswered(),
            0,
            "mount {} requests unanswered",
            m.rid
        );
        assert!(m.unacked.is_empty() && m.inbox.is_empty());
    }
    for (rid, c) in &sim.sconns {
        assert_eq!(
            c.unanswered(),
            0,
            "server requests to mount {rid} unanswered"
        );
    }
    assert!(!sim.server.recovering(), "recovery never ended");
    assert_eq!(
        sim.server.waiting(),
        0,
        "requests left waiting at the server"
    );
    sim.stats.recovered += sim.server.stats().recovered;
    sim.stats.reads = sim.work.reads;
    sim.stats
}

/// Run one seed; a failure names its step before it goes on.
fn run_named(seed: u64) -> Stats {
    match std::panic::catch_unwind(|| run_seed(seed)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "protocol sim: seed {seed} failed at step {}",
                STEP.with(Cell::get)
            );
            std::panic::resume_unwind(e)
        }
    }
}

#[test]
fn protocol_simulation() {
    if let Some(seed) = env_num(&["SCOUTFS_PSIM_SEED"]) {
        eprintln!("seed {seed}: {:?}", run_named(seed));
        return;
    }
    let seeds: u64 = env_or(&["SCOUTFS_PSIM_SEEDS"], 8000);
    let first: u64 = env_or(&["SCOUTFS_PSIM_FIRST"], 0);
    let mut t = Stats::default();
    for_each_seed(first, seeds, "SCOUTFS_PSIM_SEED", |seed| {
        t.add(&run_named(seed));
    });
    eprintln!(
        "protocol simulation: {seeds} seeds, {} steps, {} frames ({} lost, {} duplicated, \
         {} handled out of order), {} sockets broken, {} reconnects, {} server restarts, \
         {} grants, {} invalidations, {} locks recovered, {} commits, {} reads checked, \
         {} departures",
        t.steps,
        t.frames,
        t.lost,
        t.duplicated,
        t.reordered,
        t.breaks,
        t.reconnects,
        t.restarts,
        t.grants,
        t.invalidations,
        t.recovered,
        t.commits,
        t.reads,
        t.departures
    );
    // Enough seeds must reach every path the simulation is there for.
    if seeds >= 500 {
        assert!(t.grants > seeds && t.invalidations > seeds && t.reads > seeds);
        assert!(t.lost > 0 && t.duplicated > 0 && t.reordered > 0 && t.reconnects > 0);
        assert!(t.restarts > 0 && t.recovered > 0 && t.commits > 0 && t.departures > 0);
    }
}

#[test]
fn protocol_simulation_replays_a_seed() {
    assert_eq!(run_seed(23), run_seed(23));
}
