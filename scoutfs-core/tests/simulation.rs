#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Deterministic simulation of a small cluster in one thread: the server and several
//! mounts over the in-process transport, a crash device, and a seeded RNG that picks the
//! work (item writes and deletes, additions to totals kept as delta items, commits) and
//! injects faults -- failed merges, duplicated completions, mounts that vanish
//! mid-merge and restart (half of them evicted by the server first), forced
//! finalizations, tiny request and commit budgets -- and
//! crashes of the whole volume at random device writes while merge work runs (between
//! splice commits among others). After every merge step the mounts' reads must equal the
//! model; at the end the filesystem root must equal the naive union of everything the
//! mounts committed (greatest seq wins, deletions removed), and `check` must be clean --
//! as it must be after every fourth merge step, in the middle of the merge. Every crash
//! image must check clean as the power cut left it (mostly mid-merge) and again once the
//! restarted server has cancelled the requests of the mounts that came back; it is
//! remounted, must read as the model did at that instant, and must finish its merge to
//! the same union.
//!
//! `SCOUTFS_SIM_SEEDS=N` runs N seeds (default 2500) from `SCOUTFS_SIM_FIRST` (default 0);
//! a failure prints its seed and `SCOUTFS_SIM_SEED=S` replays it.

use parking_lot::Mutex;
use scoutfs_core::btree;
use scoutfs_core::check;
use scoutfs_core::client::{Client, MergeFault};
use scoutfs_core::device::{BlockDevice, CrashDevice, MemDevice};
use scoutfs_core::format::*;
use scoutfs_core::server::{all_log_trees, MergeConfig, Server, ServerCore, ServerOptions};
use scoutfs_core::transport::LocalTransport;
use scoutfs_core::volume::{mkfs, read_super, MkfsOptions};
use std::collections::BTreeMap;
use std::sync::Arc;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        scoutfs_core::block::splitmix64(&mut self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn key(i: u64) -> Key {
    Key::new(zone::FS, 100 + i, item_type::XATTR, 0, 0, 0)
}

/// Per key: seq and value of the newest committed version (None: deleted).
type Model = BTreeMap<Key, (u64, Option<Vec<u8>>)>;

/// A mount's uncommitted changes: key, the seq they carry, the value (None: deleted).
type Pending = Vec<(Key, u64, Option<Vec<u8>>)>;

/// The key of a total (delta items only).
fn total_key(i: u64) -> Key {
    Key::new(zone::XATTR_TOTL, 7, 0, i, 0, 0)
}

/// The keys the simulation writes (not the root inode mkfs made).
fn ours(k: &Key) -> bool {
    k.zone == zone::XATTR_TOTL || (k.zone == zone::FS && k.ty == item_type::XATTR)
}

/// Committed totals, and each mount's uncommitted additions.
type Totals = BTreeMap<Key, i64>;

fn totals_visible(t: &Totals) -> BTreeMap<Key, Vec<u8>> {
    t.iter()
        .filter(|(_, v)| **v != 0)
        .map(|(k, v)| (*k, v.to_le_bytes().to_vec()))
        .collect()
}

/// The keys on which two views differ, for failure messages.
fn diff(
    a: &BTreeMap<Key, Vec<u8>>,
    b: &BTreeMap<Key, Vec<u8>>,
) -> Vec<(Key, Option<usize>, Option<usize>)> {
    let mut keys: Vec<Key> = a.keys().chain(b.keys()).copied().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(k) != b.get(k))
        .map(|k| (k, a.get(&k).map(|v| v.len()), b.get(&k).map(|v| v.len())))
        .collect()
}

fn visible(m: &Model) -> BTreeMap<Key, Vec<u8>> {
    m.iter()
        .filter_map(|(k, (_, v))| v.clone().map(|v| (*k, v)))
        .collect()
}

fn apply(m: &mut Model, k: Key, seq: u64, v: Option<Vec<u8>>) {
    if m.get(&k).is_none_or(|(s, _)| *s <= seq) {
        m.insert(k, (seq, v));
    }
}

/// Forks the crash device at random writes while `armed`.
#[derive(Debug)]
struct Forking {
    inner: Arc<CrashDevice>,
    state: Arc<Mutex<ForkState>>,
}

#[derive(Debug, Default)]
struct ForkState {
    armed: bool,
    rng: u64,
    rate: u64,
    limit: usize,
    forks: Vec<CrashDevice>,
}

impl Forking {
    fn maybe_fork(&self) {
        let mut s = self.state.lock();
        if s.armed
            && s.forks.len() < s.limit
            && scoutfs_core::block::splitmix64(&mut s.rng).is_multiple_of(s.rate)
        {
            let f = self.inner.fork();
            s.forks.push(f);
        }
    }
}

impl BlockDevice for Forking {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> scoutfs_core::device::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> scoutfs_core::device::Result<()> {
        self.maybe_fork();
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> scoutfs_core::device::Result<()> {
        self.maybe_fork();
        self.inner.flush()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

struct Cluster {
    meta: Arc<dyn BlockDevice>,
    data: Arc<dyn BlockDevice>,
    server: Arc<Server>,
    clients: Vec<Client>,
    rids: Vec<u64>,
}

impl Cluster {
    fn start(
        meta: Arc<dyn BlockDevice>,
        data: Arc<dyn BlockDevice>,
        rids: &[u64],
        cfg: MergeConfig,
        seed: u64,
    ) -> Cluster {
        let mut core = ServerCore::open(
            meta.clone(),
            data.clone(),
            ServerOptions {
                seed,
                ..ServerOptions::default()
            },
        )
        .unwrap();
        core.set_merge_config(cfg);
        let server = Arc::new(Server::new(core));
        let mut c = Cluster {
            meta,
            data,
            server,
            clients: Vec::new(),
            rids: rids.to_vec(),
        };
        for i in 0..rids.len() {
            let cl = c.mount(i, seed);
            c.clients.push(cl);
        }
        c
    }

    fn mount(&self, i: usize, seed: u64) -> Client {
        let cache = self.server.with_core(|c| c.cache().clone());
        let t = Arc::new(LocalTransport::new(self.server.clone()));
        Client::mount(t, self.meta.clone(), cache, self.rids[i], seed ^ i as u64).unwrap()
    }

    fn reads(&self, i: usize) -> BTreeMap<Key, Vec<u8>> {
        self.clients[i]
            .read_items(&total_key(0), &key(1 << 30))
            .unwrap()
            .into_iter()
            .filter(|it| ours(&it.key))
            .map(|it| (it.key, it.val))
            .collect()
    }

    fn fs_root(&self) -> BTreeMap<Key, Vec<u8>> {
        let sb = read_super(&*self.meta, "meta").unwrap();
        self.server.with_core(|c| {
            btree::items(
                c.cache().as_ref(),
                &sb.fs_root.into(),
                &total_key(0),
                &key(1 << 30),
            )
            .unwrap()
            .into_iter()
            // A zero total is kept in the root as a marker; it reads as absent.
            .filter(|it| {
                ours(&it.key) && !(it.flags & ITEM_FLAG_DELTA != 0 && btree::delta_is_zero(&it.val))
            })
            .map(|it| (it.key, it.val))
            .collect()
        })
    }

    /// Finalize everything committed and merge it all, without faults, until no log
    /// tree holds items (a merge already running finishes first; trees committed during
    /// it go into the next one).
    fn merge_everything(&mut self, what: &str) {
        for _ in 0..20 {
            self.server
                .apply(|c| {
                    c.force_finalize();
                    Ok(())
                })
                .unwrap();
            for cl in &mut self.clients {
                cl.commit().unwrap();
            }
            let mut settled = false;
            for round in 0..100_000 {
                let i = round % self.clients.len();
                let worked = self.clients[i].merge_once().unwrap();
                let done = self
                    .server
                    .with_core(|c| c.merge_status().unwrap().is_none());
                if done && !worked {
                    settled = true;
                    break;
                }
            }
            assert!(settled, "{what}: the merge never finished");
            let left = self.server.with_core(|c| {
                all_log_trees(c.writer(), &c.roots().logs_root)
                    .unwrap()
                    .iter()
                    .any(|t| !BtreeRoot::from(t.item_root).is_empty())
            });
            if !left {
                return;
            }
        }
        panic!("{what}: log trees still hold items after many merges");
    }
}

fn run_seed(seed: u64) -> (usize, usize) {
    let mut rng = Rng(seed);
    let crash = Arc::new(CrashDevice::new(8 << 20));
    let state = Arc::new(Mutex::new(ForkState {
        rng: seed ^ 0xf0c,
        rate: 8 + rng.below(24),
        limit: 2,
        ..ForkState::default()
    }));
    let meta: Arc<dyn BlockDevice> = Arc::new(Forking {
        inner: crash.clone(),
        state: state.clone(),
    });
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(4 << 20));
    mkfs(
        &meta,
        &data,
        &MkfsOptions {
            meta_block_size: 2048,
            fsid: Some(0x51),
            ..Default::default()
        },
    )
    .unwrap();
    let cfg = MergeConfig {
        finalize_height: 2 + rng.below(2) as u8,
        batch: 1 + rng.below(8),
        request_blocks: 24 + rng.below(100) as usize,
        splice_commit_blocks: 4 + rng.below(40) as usize,
        free_budget: 1 + rng.below(16) as usize,
        ..MergeConfig::default()
    };
    let nclients = 1 + rng.below(3) as usize;
    let rids: Vec<u64> = (0..nclients as u64).map(|i| 0x100 + i).collect();
    let mut cl = Cluster::start(meta.clone(), data.clone(), &rids, cfg, seed);
    let mut model = Model::new();
    let mut pending: Vec<Pending> = vec![Vec::new(); nclients];
    let mut totals = Totals::new();
    let mut pending_totals: Vec<Vec<(Key, i64)>> = vec![Vec::new(); nclients];
    let mut fork_models: Vec<BTreeMap<Key, Vec<u8>>> = Vec::new();
    let expected = |m: &Model, t: &Totals| {
        let mut v = visible(m);
        v.extend(totals_visible(t));
        v
    };
    let commit_totals = |t: &mut Totals, p: &mut Vec<(Key, i64)>| {
        for (k, d) in p.drain(..) {
            *t.entry(k).or_insert(0) += d;
        }
    };
    let keys = 40 + rng.below(400);
    let steps = 60 + rng.below(120);
    let commit = |model: &mut Model, p: &mut Pending| {
        for (k, s, v) in p.drain(..) {
            apply(model, k, s, v);
        }
    };
    for step in 0..steps {
        let i = rng.below(nclients as u64) as usize;
        match rng.below(14) {
            0..=5 => {
                let k = key(rng.below(keys));
                let s0 = cl.clients[i].trans_seq();
                let v = if rng.below(4) == 0 {
                    cl.clients[i].delete(&k).unwrap();
                    None
                } else {
                    let v = vec![rng.next() as u8; 1 + rng.below(150) as usize];
                    cl.clients[i].insert(&k, &v).unwrap();
                    Some(v)
                };
                let s1 = cl.clients[i].trans_seq();
                if s1 != s0 {
                    // The mount committed before the change (its list ran low).
                    commit(&mut model, &mut pending[i]);
                    commit_totals(&mut totals, &mut pending_totals[i]);
                }
                pending[i].push((k, s1, v));
            }
            12 | 13 => {
                let k = total_key(rng.below(12));
                let d = rng.below(7) as i64 - 3;
                let s0 = cl.clients[i].trans_seq();
                cl.clients[i].add_delta(&k, &[d]).unwrap();
                if cl.clients[i].trans_seq() != s0 {
                    commit(&mut model, &mut pending[i]);
                    commit_totals(&mut totals, &mut pending_totals[i]);
                }
                pending_totals[i].push((k, d));
            }
            6 | 7 => {
                cl.clients[i].commit().unwrap();
                commit(&mut model, &mut pending[i]);
                commit_totals(&mut totals, &mut pending_totals[i]);
            }
            8 => {
                cl.server
                    .apply(|c| {
                        c.force_finalize();
                        Ok(())
                    })
                    .unwrap();
            }
            _ => {
                let fault = match rng.below(16) {
                    0 => MergeFault::Fail,
                    1 => MergeFault::Duplicate,
                    2 => MergeFault::Vanish,
                    _ => MergeFault::None,
                };
                let forks_before = state.lock().forks.len();
                state.lock().armed = true;
                let r = cl.clients[i].merge_once_with(fault);
                state.lock().armed = false;
                // Forks taken during merge work hold exactly the committed state.
                for _ in forks_before..state.lock().forks.len() {
                    fork_models.push(expected(&model, &totals));
                }
                r.unwrap_or_else(|e| panic!("seed {seed} step {step}: merge: {e}"));
                if (seed ^ step).is_multiple_of(4) {
                    // The volume in the middle of a merge.
                    let rep = check::check(&cl.meta, &cl.data).unwrap();
                    assert!(
                        rep.is_clean(),
                        "seed {seed} step {step}: mid-merge: {:#?}",
                        rep.problems
                    );
                }
                if fault == MergeFault::Vanish {
                    // The mount restarts: its open transaction is lost with it.
                    pending[i].clear();
                    pending_totals[i].clear();
                    if (seed ^ step).is_multiple_of(2) {
                        // Gone for good first: the server evicts it (its request is
                        // cancelled, its tree finalized, its allocators taken back),
                        // and its rid mounts again as a new mount.
                        let rid = cl.rids[i];
                        cl.server
                            .apply(|c| c.evict(rid))
                            .unwrap_or_else(|e| panic!("seed {seed} step {step}: evict: {e}"));
                    }
                    let new = cl.mount(i, seed ^ step);
                    cl.clients[i] = new;
                }
                let want = expected(&model, &totals);
                for (j, p) in pending.iter().enumerate() {
                    if p.is_empty() && pending_totals[j].is_empty() {
                        assert_eq!(
                            cl.reads(j),
                            want,
                            "seed {seed} step {step}: mount {j} reads differ from the model"
                        );
                    }
                }
            }
        }
    }
    for (i, p) in pending.iter_mut().enumerate() {
        cl.clients[i].commit().unwrap();
        commit(&mut model, p);
        commit_totals(&mut totals, &mut pending_totals[i]);
    }
    cl.merge_everything(&format!("seed {seed}"));
    let want = expected(&model, &totals);
    let got = cl.fs_root();
    assert!(
        got == want,
        "seed {seed}: the merged root is not the union: {:?}",
        diff(&got, &want)
    );
    let rep = check::check(&cl.meta, &cl.data).unwrap();
    assert!(rep.is_clean(), "seed {seed}: {:#?}", rep.problems);
    drop(cl);

    // Every crash image: remount, read the model of that instant, finish the merge.
    let forks = std::mem::take(&mut state.lock().forks);
    let n = forks.len();
    for (f, (fork, fm)) in forks.into_iter().zip(fork_models).enumerate() {
        fork.crash(seed.wrapping_add(f as u64));
        let m: Arc<dyn BlockDevice> = Arc::new(fork);
        // The image is as the power cut left it, mostly in the middle of a merge:
        // requests out, completions waiting or half spliced, inputs half freed.
        let rep = check::check(&m, &data).unwrap();
        assert!(
            rep.is_clean(),
            "seed {seed} crash {f}: the crash image: {:#?}",
            rep.problems
        );
        let mut c2 = Cluster::start(m, data.clone(), &rids, cfg, seed + 1);
        // The restart cancelled the requests of the mounts that came back.
        let rep = check::check(&c2.meta, &c2.data).unwrap();
        assert!(
            rep.is_clean(),
            "seed {seed} crash {f}: after the restart: {:#?}",
            rep.problems
        );
        let want = fm;
        let got = c2.reads(0);
        if got != want {
            // Every version of each differing key, tree by tree, for the failure report.
            for (k, _, _) in diff(&got, &want) {
                c2.server.with_core(|c| {
                    let fs = btree::lookup(c.writer(), &c.roots().fs_root, &k).unwrap();
                    eprintln!("fs_root {:?}", fs.map(|i| (i.seq, i.flags, i.val)));
                    for lt in all_log_trees(c.writer(), &c.roots().logs_root).unwrap() {
                        let v = btree::lookup(c.writer(), &lt.item_root.into(), &k).unwrap();
                        eprintln!(
                            "lt {} {} fl {} fseq {} get {} commit {}: {:?}",
                            lt.rid.get(),
                            lt.nr.get(),
                            lt.flags.get(),
                            lt.finalize_seq.get(),
                            lt.get_trans_seq.get(),
                            lt.commit_trans_seq.get(),
                            v.map(|i| (i.seq, i.flags, i.val))
                        );
                    }
                    eprintln!("status {:?}", c.merge_status().unwrap());
                });
            }
        }
        assert!(
            got == want,
            "seed {seed} crash {f}: remounted reads differ: {:?}",
            diff(&got, &want)
        );
        c2.merge_everything(&format!("seed {seed} crash {f}"));
        assert_eq!(
            c2.fs_root(),
            want,
            "seed {seed} crash {f}: the merged root is not the union"
        );
        let rep = check::check(&c2.meta, &c2.data).unwrap();
        assert!(rep.is_clean(), "seed {seed} crash {f}: {:#?}", rep.problems);
    }
    (steps as usize, n)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn simulation() {
    if let Some(seed) = env_u64("SCOUTFS_SIM_SEED") {
        let (steps, crashes) = run_seed(seed);
        eprintln!("seed {seed}: {steps} steps, {crashes} crashes");
        return;
    }
    let seeds = env_u64("SCOUTFS_SIM_SEEDS").unwrap_or(2500);
    let first = env_u64("SCOUTFS_SIM_FIRST").unwrap_or(0);
    let (mut steps, mut crashes) = (0, 0);
    for seed in first..first + seeds {
        match std::panic::catch_unwind(|| run_seed(seed)) {
            Ok((s, c)) => {
                steps += s;
                crashes += c;
            }
            Err(e) => {
                eprintln!("simulation failed at seed {seed}; replay with SCOUTFS_SIM_SEED={seed}");
                std::panic::resume_unwind(e);
            }
        }
    }
    eprintln!("simulation: {seeds} seeds, {steps} steps, {crashes} crash images");
    assert!(crashes > 0);
}

/// A seed replayed: the test a failing seed becomes.
#[test]
fn simulation_replays_a_seed() {
    assert_eq!(run_seed(17), run_seed(17));
}
