#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Issue #4: a read during any phase of a merge returns the same items as the model.
//!
//! Mounts write, delete and add to totals; the server finalizes and the mounts merge,
//! one unit of work at a time: each request handed out, each completion (with
//! remainders from small requests), each commit of splicing (small splice budgets spread
//! it over many), each commit of freeing input trees. After every single step a mount
//! that writes nothing reads random ranges and single keys through `Client::read_items`
//! and `Client::get`, which must equal the model of what was committed: per key, the
//! versions in seq order, the last plain value or deletion standing and the totals after
//! it summing (a total of zero reads as absent). Totals are added to and deleted by both
//! mounts, so a key's deletion and its deltas lie in different trees in any seq order.
//!
//! `PROPTEST_CASES` (or `SCOUTFS_PROPTEST_CASES`) sets the number of cases.

mod common;

use common::{
    assert_clean, diff, key, ours, proptest_cases, total_key, tree_of, volume_of, Change, Model,
};
use proptest::prelude::*;
use scoutfs_core::client::{Client, ClientError};
use scoutfs_core::format::*;
use scoutfs_core::server::{MergeConfig, MergeStep, Server, ServerCore, ServerOptions};
use scoutfs_core::transport::{LocalTransport, Request, Response, Transport, TransportError};
use std::collections::BTreeMap;
use std::sync::Arc;

const KEYS: u64 = 160;
const TOTALS: u64 = 6;

/// Every key the test writes, sorted: ranges are read between two of them.
fn universe() -> Vec<Key> {
    let mut u: Vec<Key> = (0..KEYS)
        .map(key)
        .chain((0..TOTALS).map(total_key))
        .collect();
    u.sort();
    u
}

/// A mount's uncommitted changes, with the log tree and seq each goes in with.
#[derive(Debug, Default, Clone)]
struct Pending(Vec<(Key, (u64, u64), u64, Change)>);

impl Pending {
    fn commit_into(&mut self, m: &mut Model) {
        for (k, t, s, c) in self.0.drain(..) {
            m.apply(k, t, s, c);
        }
    }
}

/// The model, the reading mount and the read pattern, shared with the transports that
/// read after every step.
struct Shared {
    model: Model,
    reader: Option<Client>,
    rng: u64,
    reads: u64,
    steps: u64,
    universe: Vec<Key>,
    server: Arc<Server>,
    /// Steps read after, by kind.
    phases: BTreeMap<&'static str, u64>,
}

impl Shared {
    fn below(&mut self, n: u64) -> u64 {
        scoutfs_core::block::splitmix64(&mut self.rng) % n.max(1)
    }

    /// Every version of the keys that differ, for the failure report.
    #[allow(clippy::type_complexity)]
    fn dump(&self, d: &[(Key, Option<Vec<u8>>, Option<Vec<u8>>)]) {
        let sb = scoutfs_core::volume::read_super(
            &*self.server.with_core(|c| c.cache().device().clone()),
            "meta",
        )
        .unwrap();
        self.server.with_core(|c| {
            for (k, _, _) in d {
                let fs = scoutfs_core::btree::lookup(c.writer(), &sb.fs_root.into(), k).unwrap();
                eprintln!("{k}: model {:?}", self.model.keys.get(k));
                eprintln!("  fs_root {:?}", fs.map(|i| (i.seq, i.flags, i.val.len())));
                for lt in
                    scoutfs_core::server::all_log_trees(c.writer(), &sb.logs_root.into()).unwrap()
                {
                    let v =
                        scoutfs_core::btree::lookup(c.writer(), &lt.item_root.into(), k).unwrap();
                    eprintln!(
                        "  lt {} {} fl {} fseq {} get {} commit {}: {:?}",
                        lt.rid.get(),
                        lt.nr.get(),
                        lt.flags.get(),
                        lt.finalize_seq.get(),
                        lt.get_trans_seq.get(),
                        lt.commit_trans_seq.get(),
                        v.map(|i| (i.seq, i.flags, i.val.len()))
                    );
                }
            }
            eprintln!("status {:?}", c.merge_status().unwrap());
        });
    }

    /// Random ranges and single keys through the reading mount, against the model.
    fn verify(&mut self, what: &str) {
        self.steps += 1;
        let want = self.model.visible();
        let n = self.universe.len() as u64;
        for _ in 0..3 {
            let (a, b) = (self.below(n) as usize, self.below(n) as usize);
            let (lo, hi) = (self.universe[a.min(b)], self.universe[a.max(b)]);
            let reader = self.reader.as_ref().unwrap();
            let got: BTreeMap<Key, Vec<u8>> = reader
                .read_items(&lo, &hi)
                .unwrap()
                .into_iter()
                .filter(|it| ours(&it.key))
                .map(|it| (it.key, it.val))
                .collect();
            let w: BTreeMap<Key, Vec<u8>> =
                want.range(lo..=hi).map(|(k, v)| (*k, v.clone())).collect();
            if got != w {
                self.dump(&diff(&got, &w));
            }
            assert!(
                got == w,
                "after {what} (step {}): range {lo}..={hi}: {:?}",
                self.steps,
                diff(&got, &w)
            );
            self.reads += 1;
        }
        for _ in 0..2 {
            let i = self.below(n) as usize;
            let k = self.universe[i];
            let got = self.reader.as_ref().unwrap().get(&k).unwrap();
            assert_eq!(
                got.map(|it| it.val),
                want.get(&k).cloned(),
                "after {what}: key {k}"
            );
            self.reads += 1;
        }
    }
}

/// The transport of the writing mounts: merge work one commit at a time, with reads
/// after each.
struct Stepping {
    server: Arc<Server>,
    inner: LocalTransport,
    shared: Arc<parking_lot::Mutex<Shared>>,
}

impl std::fmt::Debug for Stepping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stepping")
    }
}

impl Transport for Stepping {
    fn call(&self, req: Request) -> Result<Response, TransportError> {
        match req {
            Request::GetLogMerge { rid } => loop {
                let step = self.server.apply(|c| c.get_log_merge(rid))?;
                let what = match &step {
                    MergeStep::InProgress => "a commit of splicing or freeing",
                    MergeStep::Request(_) => "a request",
                    MergeStep::Nothing => "no merge work",
                };
                let mut sh = self.shared.lock();
                *sh.phases.entry(what).or_insert(0) += 1;
                sh.verify(what);
                match step {
                    MergeStep::InProgress => continue,
                    MergeStep::Request(r) => return Ok(Response::LogMerge(Some(Box::new(r)))),
                    MergeStep::Nothing => return Ok(Response::LogMerge(None)),
                }
            },
            Request::CommitLogMerge(comp) => {
                let what = if comp.flags.get() & MERGE_COMPLETE_FLAG_REMAIN != 0 {
                    "a completion with a remainder"
                } else {
                    "a completion"
                };
                let resp = self.inner.call(Request::CommitLogMerge(comp))?;
                let mut sh = self.shared.lock();
                *sh.phases.entry(what).or_insert(0) += 1;
                sh.verify(what);
                Ok(resp)
            }
            other => self.inner.call(other),
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Put { c: usize, k: u64, len: usize },
    Delete { c: usize, k: u64 },
    Add { c: usize, t: u64, d: i64 },
    DeleteTotal { c: usize, t: u64 },
    Commit { c: usize },
    Finalize,
    Merge { c: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..2usize, 0..KEYS, 1..200usize).prop_map(|(c, k, len)| Op::Put { c, k, len }),
        2 => (0..2usize, 0..KEYS).prop_map(|(c, k)| Op::Delete { c, k }),
        2 => (0..2usize, 0..TOTALS, -3..4i64).prop_map(|(c, t, d)| Op::Add { c, t, d }),
        1 => (0..2usize, 0..TOTALS).prop_map(|(c, t)| Op::DeleteTotal { c, t }),
        2 => (0..2usize).prop_map(|c| Op::Commit { c }),
        1 => Just(Op::Finalize),
        4 => (0..2usize).prop_map(|c| Op::Merge { c }),
    ]
}

#[derive(Clone, Debug)]
struct Pacing {
    batch: u64,
    request_blocks: usize,
    splice_commit_blocks: usize,
    free_budget: usize,
}

fn pacing() -> impl Strategy<Value = Pacing> {
    (1..5u64, 24..40usize, 3..24usize, 1..8usize).prop_map(
        |(batch, request_blocks, splice_commit_blocks, free_budget)| Pacing {
            batch,
            request_blocks,
            splice_commit_blocks,
            free_budget,
        },
    )
}

fn run(pace: &Pacing, ops: &[Op], seed: u64) -> (u64, u64, BTreeMap<&'static str, u64>) {
    let (meta, data) = volume_of(16, 8, 2048);
    let mut core = ServerCore::open(meta.clone(), data.clone(), ServerOptions::default()).unwrap();
    core.set_merge_config(MergeConfig {
        finalize_height: 2,
        batch: pace.batch,
        request_blocks: pace.request_blocks,
        splice_commit_blocks: pace.splice_commit_blocks,
        free_budget: pace.free_budget,
        ..MergeConfig::default()
    });
    let cache = core.cache().clone();
    let server = Arc::new(Server::new(core));
    let reader = Client::mount(
        Arc::new(LocalTransport::new(server.clone())),
        meta.clone(),
        cache.clone(),
        99,
        seed,
    )
    .unwrap();
    let shared = Arc::new(parking_lot::Mutex::new(Shared {
        model: Model::default(),
        reader: Some(reader),
        rng: seed,
        reads: 0,
        steps: 0,
        universe: universe(),
        phases: BTreeMap::new(),
        server: server.clone(),
    }));
    let mut writers: Vec<Client> = (0..2u64)
        .map(|i| {
            let t = Arc::new(Stepping {
                server: server.clone(),
                inner: LocalTransport::new(server.clone()),
                shared: shared.clone(),
            });
            Client::mount(t, meta.clone(), cache.clone(), 10 + i, seed ^ i).unwrap()
        })
        .collect();
    let mut pending = vec![Pending::default(); writers.len()];
    let mut value = 0u8;
    // A commit the mount made by itself (its allocators ran low) moves its seq on.
    let committed_before = |s0: u64, cl: &Client, p: &mut Pending, sh: &mut Shared| {
        if cl.trans_seq() != s0 {
            p.commit_into(&mut sh.model);
        }
    };
    for (n, op) in ops.iter().enumerate() {
        match *op {
            Op::Put { c, k, len } => {
                value = value.wrapping_add(1);
                let v = vec![value; len];
                let s0 = writers[c].trans_seq();
                writers[c].insert(&key(k), &v).unwrap();
                committed_before(s0, &writers[c], &mut pending[c], &mut shared.lock());
                pending[c].0.push((
                    key(k),
                    tree_of(&writers[c]),
                    writers[c].trans_seq(),
                    Change::Put(v),
                ));
            }
            Op::Delete { c, k } | Op::DeleteTotal { c, t: k } => {
                let k = match op {
                    Op::Delete { .. } => key(k),
                    _ => total_key(k),
                };
                let s0 = writers[c].trans_seq();
                writers[c].delete(&k).unwrap();
                committed_before(s0, &writers[c], &mut pending[c], &mut shared.lock());
                pending[c].0.push((
                    k,
                    tree_of(&writers[c]),
                    writers[c].trans_seq(),
                    Change::Delete,
                ));
            }
            Op::Add { c, t, d } => {
                let s0 = writers[c].trans_seq();
                match writers[c].add_delta(&total_key(t), &[d]) {
                    Ok(()) => {}
                    // This mount deleted the total in its tree: it may not add to it
                    // there (the other mount, or its next tree, may).
                    Err(ClientError::Btree(scoutfs_core::btree::BtreeError::Exists(_))) => continue,
                    Err(e) => panic!("add: {e}"),
                }
                committed_before(s0, &writers[c], &mut pending[c], &mut shared.lock());
                pending[c].0.push((
                    total_key(t),
                    tree_of(&writers[c]),
                    writers[c].trans_seq(),
                    Change::Add(d),
                ));
            }
            Op::Commit { c } => {
                writers[c].commit().unwrap();
                pending[c].commit_into(&mut shared.lock().model);
            }
            Op::Finalize => {
                server
                    .apply(|c| {
                        c.force_finalize();
                        Ok(())
                    })
                    .unwrap();
                for (cl, p) in writers.iter_mut().zip(&mut pending) {
                    cl.commit().unwrap();
                    p.commit_into(&mut shared.lock().model);
                }
                // The reader's empty transaction must not hold the merge back.
                let mut sh = shared.lock();
                sh.reader.as_mut().unwrap().commit().unwrap();
            }
            Op::Merge { c } => {
                writers[c].merge_once().unwrap();
            }
        }
        shared.lock().verify(&format!("op {n}: {op:?}"));
    }
    // Everything committed and merged; the root is the model and check is clean.
    for _ in 0..10 {
        server
            .apply(|c| {
                c.force_finalize();
                Ok(())
            })
            .unwrap();
        for (cl, p) in writers.iter_mut().zip(&mut pending) {
            cl.commit().unwrap();
            p.commit_into(&mut shared.lock().model);
        }
        shared.lock().reader.as_mut().unwrap().commit().unwrap();
        for round in 0..10_000 {
            let worked = writers[round % 2].merge_once().unwrap();
            if !worked && server.with_core(|c| c.merge_status().unwrap().is_none()) {
                break;
            }
        }
        let left = server.with_core(|c| {
            scoutfs_core::server::all_log_trees(c.writer(), &c.roots().logs_root)
                .unwrap()
                .iter()
                .any(|t| !BtreeRoot::from(t.item_root).is_empty())
        });
        if !left {
            break;
        }
    }
    shared.lock().verify("the last merge");
    assert_clean(&meta, &data, "after the last merge");
    let sh = shared.lock();
    (sh.steps, sh.reads, sh.phases.clone())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: proptest_cases(48), ..ProptestConfig::default() })]

    #[test]
    fn reads_during_every_phase_of_a_merge_match_the_model(
        pace in pacing(),
        ops in prop::collection::vec(op(), 100..1200),
        seed in any::<u64>(),
    ) {
        let (steps, _, phases) = run(&pace, &ops, seed);
        if std::env::var("SCOUTFS_MERGE_READS_VERBOSE").is_ok() {
            eprintln!("{} ops, {steps} steps: {phases:?}", ops.len());
        }
    }
}

/// One fixed run that must reach every phase: requests, completions with remainders,
/// splicing spread over commits, freeing.
#[test]
fn a_fixed_run_reads_through_every_phase() {
    let pace = Pacing {
        batch: 3,
        request_blocks: 24,
        splice_commit_blocks: 4,
        free_budget: 2,
    };
    let mut ops = Vec::new();
    let mut s = 7u64;
    for i in 0..900u64 {
        let r = scoutfs_core::block::splitmix64(&mut s);
        let c = (r % 2) as usize;
        ops.push(match r % 23 {
            0..=11 => Op::Put {
                c,
                k: (r >> 8) % KEYS,
                len: 1 + ((r >> 20) % 150) as usize,
            },
            12..=14 => Op::Delete {
                c,
                k: (r >> 8) % KEYS,
            },
            15..=17 => Op::Add {
                c,
                t: (r >> 8) % TOTALS,
                d: ((r >> 16) % 7) as i64 - 3,
            },
            18 if i % 3 == 0 => Op::DeleteTotal {
                c,
                t: (r >> 8) % TOTALS,
            },
            18 => Op::Commit { c },
            19 if i % 5 == 0 => Op::Finalize,
            _ => Op::Merge { c },
        });
    }
    let (steps, reads, phases) = run(&pace, &ops, 3);
    eprintln!("{steps} steps, {reads} reads: {phases:?}");
    assert!(steps > 900, "{steps}");
    for what in [
        "a request",
        "a completion",
        "a completion with a remainder",
        "a commit of splicing or freeing",
    ] {
        assert!(
            phases.get(what).is_some_and(|&n| n >= 3),
            "{what}: {phases:?}"
        );
    }
}
