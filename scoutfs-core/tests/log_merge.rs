#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The log merge end to end: mounts write log trees, the server finalizes them, mounts
//! merge requests into subtrees, the server splices them in. Reads during every phase
//! see the model, and at the end the filesystem root is the model.

use scoutfs_core::btree;
use scoutfs_core::check;
use scoutfs_core::client::Client;
use scoutfs_core::device::{BlockDevice, MemDevice};
use scoutfs_core::format::*;
use scoutfs_core::server::{MergeConfig, MergeStep, Server, ServerCore, ServerOptions};
use scoutfs_core::transport::{LocalTransport, Request, Response, Transport, TransportError};
use scoutfs_core::volume::{mkfs, read_super, MkfsOptions};
use std::collections::BTreeMap;
use std::sync::Arc;

fn key(i: u64) -> Key {
    Key::new(zone::FS, 100 + i, item_type::XATTR, 0, 0, 0)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        scoutfs_core::block::splitmix64(&mut self.0)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Per key: the seq and value of the newest version (None: deleted).
type Model = BTreeMap<Key, (u64, Option<Vec<u8>>)>;

fn visible(m: &Model) -> BTreeMap<Key, Vec<u8>> {
    m.iter()
        .filter_map(|(k, (_, v))| v.clone().map(|v| (*k, v)))
        .collect()
}

struct Rig {
    meta: Arc<dyn BlockDevice>,
    data: Arc<dyn BlockDevice>,
    server: Arc<Server>,
    clients: Vec<Client>,
}

fn rig(nclients: u64, cfg: MergeConfig) -> Rig {
    let meta: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(32 << 20));
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(16 << 20));
    mkfs(
        &meta,
        &data,
        &MkfsOptions {
            meta_block_size: 2048,
            ..Default::default()
        },
    )
    .unwrap();
    let mut core = ServerCore::open(meta.clone(), data.clone(), ServerOptions::default()).unwrap();
    core.set_merge_config(cfg);
    let cache = core.cache().clone();
    let server = Arc::new(Server::new(core));
    let clients = (0..nclients)
        .map(|i| {
            let t = Arc::new(LocalTransport::new(server.clone()));
            Client::mount(t, meta.clone(), cache.clone(), 10 + i, 77 + i).unwrap()
        })
        .collect();
    Rig {
        meta,
        data,
        server,
        clients,
    }
}

/// Random writes by every client, committed, with the model kept by seq.
fn write_some(r: &mut Rig, rng: &mut Rng, model: &mut Model, ops: usize, keys: u64) {
    for _ in 0..ops {
        let c = rng.below(r.clients.len() as u64) as usize;
        let cl = &mut r.clients[c];
        let k = key(rng.below(keys));
        let seq = cl.trans_seq();
        if rng.below(4) == 0 {
            cl.delete(&k).unwrap();
            if model.get(&k).is_none_or(|(s, _)| *s <= seq) {
                model.insert(k, (seq, None));
            }
        } else {
            let v = vec![rng.next() as u8; 1 + rng.below(200) as usize];
            cl.insert(&k, &v).unwrap();
            if model.get(&k).is_none_or(|(s, _)| *s <= seq) {
                model.insert(k, (seq, Some(v)));
            }
        }
        if rng.below(20) == 0 {
            cl.commit().unwrap();
        }
    }
    for cl in &mut r.clients {
        cl.commit().unwrap();
    }
}

fn reads_match(r: &Rig, model: &Model) {
    let want = visible(model);
    for cl in &r.clients {
        let got: BTreeMap<Key, Vec<u8>> = cl
            .read_items(&Key::MIN, &Key::MAX)
            .unwrap()
            .into_iter()
            .filter(|it| it.key.zone == zone::FS && it.key.ty == item_type::XATTR)
            .map(|it| (it.key, it.val))
            .collect();
        assert_eq!(got, want, "mount {} reads", cl.rid());
    }
}

fn fs_root_items(r: &Rig) -> BTreeMap<Key, Vec<u8>> {
    let sb = read_super(&*r.meta, "meta").unwrap();
    r.server.with_core(|c| {
        btree::items(
            c.cache().as_ref(),
            &sb.fs_root.into(),
            &key(0),
            &key(1 << 40),
        )
        .unwrap()
        .into_iter()
        .map(|it| (it.key, it.val))
        .collect()
    })
}

/// Finalize, then let the mounts merge until the merge is over; reads are checked after
/// every unit of work. Returns the number of requests merged.
fn merge_all(r: &mut Rig, model: &Model) -> usize {
    r.server.with_core(|_| ());
    r.server
        .apply(|c| {
            c.force_finalize();
            Ok(())
        })
        .unwrap();
    // Each mount's next commit finalizes its tree; the merge starts with the last.
    for cl in &mut r.clients {
        cl.commit().unwrap();
    }
    assert!(
        r.server.with_core(|c| c.merge_status().unwrap().is_some()),
        "the merge did not start"
    );
    let mut requests = 0;
    let mut idle_rounds = 0;
    for round in 0..100_000 {
        let c = round % r.clients.len();
        if r.clients[c].merge_once().unwrap() {
            requests += 1;
            idle_rounds = 0;
        } else {
            idle_rounds += 1;
        }
        reads_match(r, model);
        let done = r.server.with_core(|c| c.merge_status().unwrap().is_none());
        if done && idle_rounds >= r.clients.len() {
            return requests;
        }
    }
    panic!("the merge never finished");
}

#[test]
fn merged_root_is_the_union_of_what_mounts_committed() {
    let cfg = MergeConfig {
        finalize_height: 20,
        batch: 4,
        request_blocks: 64,
        ..MergeConfig::default()
    };
    let mut r = rig(3, cfg);
    let mut rng = Rng(5);
    let mut model = Model::new();
    for round in 0..3 {
        write_some(&mut r, &mut rng, &mut model, 600, 400);
        reads_match(&r, &model);
        let n = merge_all(&mut r, &model);
        eprintln!(
            "round {round}: {n} requests merged, {} items in the root",
            fs_root_items(&r).len()
        );
        assert!(n >= 1, "round {round}: no request was merged");
        assert_eq!(fs_root_items(&r), visible(&model), "round {round}");
        let rep = check::check(&r.meta, &r.data).unwrap();
        assert!(rep.is_clean(), "round {round}: {:#?}", rep.problems);
    }
    // The merged inputs are gone: only each mount's open tree is left.
    let trees = r.server.with_core(|c| {
        scoutfs_core::server::all_log_trees(c.writer(), &c.roots().logs_root).unwrap()
    });
    assert!(
        trees
            .iter()
            .all(|t| t.flags.get() & LOG_TREES_FLAG_FINALIZED == 0),
        "{trees:?}"
    );
}

/// A small merge (one request covers it, the commit has room for the rest) costs two
/// durable server commits: the request, and the completion with its splice, the end of
/// the merge and the freeing of its inputs.
#[test]
fn a_small_merge_is_two_server_commits() {
    let cfg = MergeConfig {
        finalize_height: 20,
        ..MergeConfig::default()
    };
    let mut r = rig(2, cfg);
    let mut rng = Rng(9);
    let mut model = Model::new();
    write_some(&mut r, &mut rng, &mut model, 300, 200);
    r.server
        .apply(|c| {
            c.force_finalize();
            Ok(())
        })
        .unwrap();
    for cl in &mut r.clients {
        cl.commit().unwrap();
    }
    assert!(r.server.with_core(|c| c.merge_status().unwrap().is_some()));
    let before = r.server.with_core(|c| c.merge_counters());
    let commits_before = r.server.commits();
    assert!(r.clients[0].merge_once().unwrap());
    assert_eq!(r.server.commits() - commits_before, 2);
    // Nothing is left to do: no request, no commit.
    assert!(!r.clients[1].merge_once().unwrap());
    assert!(!r.clients[0].merge_once().unwrap());
    assert_eq!(r.server.commits() - commits_before, 2);
    let after = r.server.with_core(|c| c.merge_counters());
    assert_eq!(
        (
            after.requests - before.requests,
            after.merges - before.merges
        ),
        (1, 1),
        "{after:?}"
    );
    assert_eq!(after.pauses, before.pauses);
    let log_merge = r.server.with_core(|c| {
        btree::items(c.writer(), &c.roots().log_merge, &Key::MIN, &Key::MAX).unwrap()
    });
    assert!(log_merge.is_empty(), "{log_merge:?}");
    reads_match(&r, &model);
    assert_eq!(fs_root_items(&r), visible(&model));
    let rep = check::check(&r.meta, &r.data).unwrap();
    assert!(rep.is_clean(), "{:#?}", rep.problems);
}

/// A filesystem root several levels deep, merged subtree by subtree with small requests
/// (many remainders).
#[test]
fn a_deep_root_merges_in_subtrees_with_remainders() {
    let cfg = MergeConfig {
        finalize_height: 20,
        batch: 4,
        request_blocks: 48,
        ..MergeConfig::default()
    };
    let mut r = rig(2, cfg);
    let mut rng = Rng(11);
    let mut model = Model::new();
    write_some(&mut r, &mut rng, &mut model, 4000, 4000);
    merge_all(&mut r, &model);
    let h = r.server.with_core(|c| c.roots().fs_root.height);
    assert!(h >= 3, "root height {h}");
    let before = r.server.with_core(|c| c.merge_counters());
    write_some(&mut r, &mut rng, &mut model, 2000, 4000);
    let n = merge_all(&mut r, &model);
    let after = r.server.with_core(|c| c.merge_counters());
    eprintln!("height {h}: {n} requests, {:?} -> {:?}", before, after);
    assert!(n > 8, "only {n} requests for a root of height {h}");
    assert_eq!(fs_root_items(&r), visible(&model));
    let rep = check::check(&r.meta, &r.data).unwrap();
    assert!(rep.is_clean(), "{:#?}", rep.problems);
}

/// The seed's scenario: a batch of completions waits, and the commit's room for splicing
/// is too small to splice them in one commit. Splicing spreads over several commits,
/// nothing is lost, and check is clean.
#[test]
fn splicing_spreads_over_many_commits() {
    let cfg = MergeConfig {
        finalize_height: 20,
        batch: 8,
        request_blocks: 64,
        ..MergeConfig::default()
    };
    let mut r = rig(2, cfg);
    let mut rng = Rng(3);
    let mut model = Model::new();
    write_some(&mut r, &mut rng, &mut model, 4000, 4000);
    merge_all(&mut r, &model);
    assert!(r.server.with_core(|c| c.roots().fs_root.height) >= 3);
    // Now the commit may dirty only a few blocks while splicing: a splice of one
    // completion dirties a path through the root, so 8 cannot fit in one commit.
    r.server
        .apply(|c| {
            let mut m = *c.merge_config();
            m.splice_commit_blocks = 6;
            c.set_merge_config(m);
            Ok(())
        })
        .unwrap();
    write_some(&mut r, &mut rng, &mut model, 3000, 4000);
    let before = r.server.with_core(|c| c.merge_counters());
    let commits_before = r.server.commits();
    merge_all(&mut r, &model);
    let after = r.server.with_core(|c| c.merge_counters());
    let spliced = after.spliced - before.spliced;
    let pauses = after.pauses - before.pauses;
    eprintln!(
        "spliced {spliced} completions with {pauses} pauses in {} commits",
        r.server.commits() - commits_before
    );
    assert!(spliced >= 8, "{spliced}");
    // Every splice of up to 8 completions needed at least 2 extra commits.
    assert!(
        pauses >= 2 * (spliced / 8),
        "{pauses} pauses for {spliced} splices"
    );
    assert_eq!(fs_root_items(&r), visible(&model));
    let rep = check::check(&r.meta, &r.data).unwrap();
    assert!(rep.is_clean(), "{:#?}", rep.problems);
}

/// A transport that runs `check` on the device after every server commit of a merge: it
/// drives `GetLogMerge` one unit of work (one commit) at a time, as the server does, and
/// checks after each, and after every completion.
#[derive(Debug)]
struct CheckingTransport {
    server: Arc<Server>,
    meta: Arc<dyn BlockDevice>,
    data: Arc<dyn BlockDevice>,
    checks: Arc<std::sync::atomic::AtomicU64>,
    /// Checks that saw: requests, unspliced completions, spliced completions, freeing.
    seen: Arc<parking_lot::Mutex<[u64; 4]>>,
}

impl CheckingTransport {
    fn check(&self, what: &str) {
        let rep = check::check(&self.meta, &self.data).unwrap();
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(rep.is_clean(), "after {what}: {:#?}", rep.problems);
        let sb = read_super(&*self.meta, "meta").unwrap();
        let items = self.server.with_core(|c| {
            btree::items(
                c.cache().as_ref(),
                &sb.log_merge.into(),
                &Key::MIN,
                &Key::MAX,
            )
            .unwrap()
        });
        let mut seen = self.seen.lock();
        let mut saw = [false; 4];
        for it in items {
            match it.key.zone {
                merge_zone::REQUEST => saw[0] = true,
                merge_zone::COMPLETE => {
                    use zerocopy::FromBytes;
                    let c = LogMergeComplete::read_from_bytes(&it.val).unwrap();
                    if c.flags.get() & MERGE_COMPLETE_FLAG_SPLICED == 0 {
                        saw[1] = true;
                    } else {
                        saw[2] = true;
                    }
                }
                merge_zone::FREEING => saw[3] = true,
                _ => {}
            }
        }
        for (n, s) in seen.iter_mut().zip(saw) {
            *n += s as u64;
        }
    }
}

impl Transport for CheckingTransport {
    fn call(&self, req: Request) -> Result<Response, TransportError> {
        match req {
            Request::GetLogMerge { rid } => loop {
                let step = self.server.apply(|c| c.get_log_merge(rid))?;
                self.check("a unit of merge work");
                match step {
                    MergeStep::InProgress => continue,
                    MergeStep::Request(r) => return Ok(Response::LogMerge(Some(Box::new(r)))),
                    MergeStep::Nothing => return Ok(Response::LogMerge(None)),
                }
            },
            Request::CommitLogMerge(_) => {
                let resp = self.server.handle(req)?;
                self.check("a completion");
                Ok(resp)
            }
            other => Ok(self.server.handle(other)?),
        }
    }
}

/// `check` is clean after every commit of a merge: with requests outstanding (their
/// lists), completions waiting (their subtrees and lists), completions spliced but not
/// yet rebalanced, and input trees partly freed. Splicing and freeing are spread over
/// many small commits (the seed's scenario), with requests small enough to leave
/// remainders.
#[test]
fn check_is_clean_after_every_commit_of_a_merge() {
    let cfg = MergeConfig {
        finalize_height: 20,
        batch: 4,
        request_blocks: 48,
        splice_commit_blocks: 6,
        free_budget: 5,
        ..MergeConfig::default()
    };
    let mut r = rig(2, cfg);
    let checks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = Arc::new(parking_lot::Mutex::new([0u64; 4]));
    // Mounts that merge through the checking transport.
    let cache = r.server.with_core(|c| c.cache().clone());
    for (i, cl) in r.clients.iter_mut().enumerate() {
        let t = Arc::new(CheckingTransport {
            server: r.server.clone(),
            meta: r.meta.clone(),
            data: r.data.clone(),
            checks: checks.clone(),
            seen: seen.clone(),
        });
        let rid = 10 + i as u64;
        let old = std::mem::replace(
            cl,
            Client::mount(t, r.meta.clone(), cache.clone(), rid, 177 + i as u64).unwrap(),
        );
        drop(old);
    }
    let mut rng = Rng(21);
    let mut model = Model::new();
    let mut counters = Vec::new();
    for round in 0..3 {
        write_some(&mut r, &mut rng, &mut model, 2500, 3000);
        merge_all(&mut r, &model);
        assert_eq!(fs_root_items(&r), visible(&model), "round {round}");
        counters.push(r.server.with_core(|c| c.merge_counters()));
    }
    let last = counters[counters.len() - 1];
    let seen = *seen.lock();
    eprintln!(
        "{} checks (with requests, unspliced completions, spliced ones, freeing: {seen:?}); {last:?}",
        checks.load(std::sync::atomic::Ordering::Relaxed),
    );
    assert!(seen.iter().all(|&n| n >= 3), "{seen:?}");
    assert!(r.server.with_core(|c| c.roots().fs_root.height) >= 3);
    assert!(last.spliced >= 8 && last.pauses >= 2, "{last:?}");
    assert!(checks.load(std::sync::atomic::Ordering::Relaxed) >= 50);
}
