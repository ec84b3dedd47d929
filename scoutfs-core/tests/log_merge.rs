#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The log merge end to end: mounts write log trees, the server finalizes them, mounts
//! merge requests into subtrees, the server splices them in. Reads during every phase
//! see the model, and at the end the filesystem root is the model. The protocol's edges:
//! completions that do not fit their request are refused and change nothing; requests
//! outstanding side by side complete in any order; a completion reaches a restarted
//! server without a new greeting, and one whose commit failed is sent again; a mount
//! that reconnects keeps its requests, one that mounts afresh gives them up.

mod common;

use common::*;
use scoutfs_core::btree;
use scoutfs_core::client::Client;
use scoutfs_core::device::{BlockDevice, FaultDevice, FaultOp, MemDevice};
use scoutfs_core::format::*;
use scoutfs_core::server::{MergeConfig, MergeStep, Server};
use scoutfs_core::transport::{LocalTransport, Request, Response, Transport, TransportError};
use scoutfs_core::volume::read_super;
use std::sync::atomic::Ordering;
use std::sync::Arc;

fn rig(nclients: u64, cfg: MergeConfig) -> Rig {
    let (meta, data) = volume(32, 2048);
    Rig::start(meta, data, nclients, Some(cfg), 5)
}

fn reads_match(r: &Rig, model: &Model) {
    let want = model.visible();
    for i in 0..r.clients.len() {
        assert_same(&r.reads(i), &want, &format!("mount {i} reads"));
    }
}

/// Finalize, then let the mounts merge until the merge is over; reads are checked after
/// every unit of work. Returns the number of requests merged.
fn merge_all(r: &mut Rig, model: &Model) -> usize {
    r.finalize();
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
    let mut model = Model::default();
    for round in 0..3 {
        write_some(&mut r, &mut rng, &mut model, 600, 400);
        reads_match(&r, &model);
        let n = merge_all(&mut r, &model);
        eprintln!(
            "round {round}: {n} requests merged, {} items in the root",
            r.fs_root().len()
        );
        assert!(n >= 1, "round {round}: no request was merged");
        assert_same(&r.fs_root(), &model.visible(), &format!("round {round}"));
        r.assert_clean(&format!("round {round}"));
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
    let mut model = Model::default();
    write_some(&mut r, &mut rng, &mut model, 300, 200);
    r.finalize();
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
    assert_eq!(after.pauses(), before.pauses());
    let log_merge = r.server.with_core(|c| {
        btree::items(c.writer(), &c.roots().log_merge, &Key::MIN, &Key::MAX).unwrap()
    });
    assert!(log_merge.is_empty(), "{log_merge:?}");
    reads_match(&r, &model);
    assert_same(&r.fs_root(), &model.visible(), "the root");
    r.assert_clean("after the merge");
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
    let mut model = Model::default();
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
    assert_same(&r.fs_root(), &model.visible(), "the root");
    r.assert_clean("after the merge");
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
    let mut model = Model::default();
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
    let pauses = after.pauses() - before.pauses();
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
    assert_same(&r.fs_root(), &model.visible(), "the root");
    r.assert_clean("after the merge");
}

/// A transport that runs `check` on the device after every server commit of a merge: it
/// drives `GetLogMerge` one unit of work (one commit) at a time, as the server does, and
/// checks after each, and after every completion.
#[derive(Debug)]
struct CheckingTransport {
    server: Arc<Server>,
    inner: LocalTransport,
    meta: Arc<dyn BlockDevice>,
    data: Arc<dyn BlockDevice>,
    checks: Arc<std::sync::atomic::AtomicU64>,
    /// Checks that saw: requests, unspliced completions, spliced completions, freeing.
    seen: Arc<parking_lot::Mutex<[u64; 4]>>,
}

impl CheckingTransport {
    fn check(&self, what: &str) {
        assert_clean(&self.meta, &self.data, &format!("after {what}"));
        self.checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
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
                let resp = self.inner.call(req)?;
                self.check("a completion");
                Ok(resp)
            }
            other => self.inner.call(other),
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
            inner: LocalTransport::new(r.server.clone()),
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
    let mut model = Model::default();
    let mut counters = Vec::new();
    for round in 0..3 {
        write_some(&mut r, &mut rng, &mut model, 2500, 3000);
        merge_all(&mut r, &model);
        assert_same(&r.fs_root(), &model.visible(), &format!("round {round}"));
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
    assert!(last.spliced >= 8 && last.pauses() >= 2, "{last:?}");
    assert!(checks.load(std::sync::atomic::Ordering::Relaxed) >= 50);
}

/// A rig with a root of three levels and finalized inputs over it, so that requests cover
/// one parent each and several can be outstanding at once.
fn deep_rig(meta: Arc<dyn BlockDevice>, data: Arc<dyn BlockDevice>) -> (Rig, Model) {
    let cfg = MergeConfig {
        finalize_height: 20,
        batch: 4,
        request_blocks: 48,
        ..MergeConfig::default()
    };
    let mut r = Rig::start(meta, data, 2, Some(cfg), 31);
    let mut rng = Rng(31);
    let mut model = Model::default();
    write_some(&mut r, &mut rng, &mut model, 4000, 4000);
    merge_all(&mut r, &model);
    assert!(r.server.with_core(|c| c.roots().fs_root.height) >= 3);
    write_some(&mut r, &mut rng, &mut model, 1500, 4000);
    r.finalize();
    (r, model)
}

/// Mount `i` takes a request and merges it, and its completion is held back (as a lost
/// reply would leave it): it stays outstanding. Returns the completion.
fn take_and_hold(r: &mut Rig, i: usize) -> LogMergeComplete {
    r.transports[i].hold.store(true, Ordering::SeqCst);
    let res = r.clients[i].merge_once();
    r.transports[i].hold.store(false, Ordering::SeqCst);
    assert!(
        matches!(res, Err(scoutfs_core::client::ClientError::Transport(_))),
        "{res:?}"
    );
    *r.clients[i].unsent_completion().expect("a held completion")
}

/// A connection of mount `rid` to the server (greeting as a reconnecting mount: its
/// requests stay).
fn connection(r: &Rig, rid: u64) -> LocalTransport {
    let t = LocalTransport::new(r.server.clone());
    t.call(Request::Greeting {
        rid,
        reconnect: true,
    })
    .unwrap();
    t
}

fn finish(r: &mut Rig, model: &Model, what: &str) {
    let n = r.clients.len();
    for round in 0..100_000 {
        let worked = r.clients[round % n].merge_once().unwrap();
        if !worked && r.server.with_core(|c| c.merge_status().unwrap().is_none()) {
            break;
        }
    }
    assert!(
        r.server.with_core(|c| c.merge_status().unwrap().is_none()),
        "{what}"
    );
    assert_same(&r.fs_root(), &model.visible(), what);
    reads_match(r, model);
    r.assert_clean(what);
}

#[test]
fn bad_completions_are_refused_and_change_nothing() {
    let (meta, data) = volume(32, 2048);
    let (mut r, model) = deep_rig(meta, data);
    let good = take_and_hold(&mut r, 0);
    let (ra, rb) = (r.rids[0], r.rids[1]);
    let roots = |r: &Rig| {
        r.server.with_core(|c| {
            let reqs: Vec<u64> = c
                .merge_requests()
                .unwrap()
                .iter()
                .map(|q| q.seq.get())
                .collect();
            (format!("{:?}", c.roots()), reqs)
        })
    };
    let before = roots(&r);
    let commits = r.server.commits();
    let refused = |t: &dyn Transport, c: LogMergeComplete, why: &str| match t
        .call(Request::CommitLogMerge(Box::new(c)))
    {
        Err(TransportError::Remote { kind, msg }) => {
            assert_eq!(
                kind,
                scoutfs_core::transport::RemoteErrorKind::Protocol,
                "{why}: {msg}"
            )
        }
        other => panic!("{why}: accepted: {other:?}"),
    };
    let a = connection(&r, ra);
    let b = connection(&r, rb);
    // Another mount sends it (as it is, or as its own).
    refused(&b, good, "another mount's completion");
    let mut theirs = good;
    theirs.rid = rb.into();
    refused(&b, theirs, "a request given to another mount");
    // A connection that never greeted.
    refused(&LocalTransport::new(r.server.clone()), good, "no greeting");
    // A remainder outside the request's range.
    let end: Key = (&good.end).into();
    let start: Key = (&good.start).into();
    for remain in [end.next(), start.prev()].into_iter().flatten() {
        let mut c = good;
        c.flags = MERGE_COMPLETE_FLAG_REMAIN.into();
        c.remain = (&remain).into();
        refused(&a, c, "a remainder outside the range");
    }
    // A subtree of the wrong height, unknown flags, lists that do not read.
    let mut c = good;
    c.root.height = 3;
    refused(&a, c, "a subtree of the wrong height");
    let mut c = good;
    c.flags = 0x40.into();
    refused(&a, c, "unknown flags");
    let mut c = good;
    c.meta_freed.blk.blkno = 3.into();
    c.meta_freed.total_nr = 1.into();
    c.meta_freed.first_nr = 1.into();
    refused(&a, c, "lists that do not read");
    assert_eq!(
        roots(&r),
        before,
        "a refused completion changed the server's trees"
    );
    assert_eq!(
        r.server.commits(),
        commits,
        "a refused completion was committed"
    );
    // Every refusal but the connection's that never greeted (refused before it reaches
    // the server's state) is counted.
    let refusals = r.server.with_core(|c| c.merge_counters().refused);
    assert_eq!(refusals, 7);
    // The real one goes through (sent again by its mount); sent once more it is a resend
    // of one already processed, and changes nothing.
    finish(&mut r, &model, "after the refusals");
    let commits = r.server.commits();
    let roots_now = roots(&r);
    assert!(matches!(
        a.call(Request::CommitLogMerge(Box::new(good))),
        Ok(Response::Done)
    ));
    assert_eq!(roots(&r), roots_now);
    assert_eq!(r.server.commits(), commits);
}

#[test]
fn requests_outstanding_side_by_side_complete_in_any_order() {
    let (meta, data) = volume(32, 2048);
    let (mut r, model) = deep_rig(meta, data);
    take_and_hold(&mut r, 0);
    let second = take_and_hold(&mut r, 1);
    let out = r.server.with_core(|c| c.merge_requests().unwrap());
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(Key::from(&out[0].start) != Key::from(&out[1].start));
    // The second completes first: it is recorded, and nothing is spliced while the first
    // is out (the parents' bounds must not move under it).
    let spliced = r.server.with_core(|c| c.merge_counters().spliced);
    assert!(matches!(
        r.transports[1].call(Request::CommitLogMerge(Box::new(second))),
        Ok(Response::Done)
    ));
    let st = r.server.with_core(|c| c.merge_status().unwrap().unwrap());
    assert_eq!(
        (st.nr_requests.get(), st.nr_complete.get()),
        (1, 1),
        "{st:?}"
    );
    assert_eq!(r.server.with_core(|c| c.merge_counters().spliced), spliced);
    finish(&mut r, &model, "two requests in reverse order");
}

#[test]
fn a_completion_reaches_a_restarted_server_without_a_greeting() {
    let (meta, data) = volume(32, 2048);
    let (mut r, model) = deep_rig(meta, data);
    let held = take_and_hold(&mut r, 0);
    r.restart_server(99);
    // The request survived in the last commit; the mount sends its completion to the new
    // server on its connection, with no new greeting.
    let reqs = r.server.with_core(|c| c.merge_requests().unwrap());
    assert!(reqs.iter().any(|q| q.seq == held.seq), "{reqs:?}");
    r.clients[0].merge_once().unwrap();
    assert!(r.clients[0].unsent_completion().is_none());
    let reqs = r.server.with_core(|c| c.merge_requests().unwrap());
    assert!(!reqs.iter().any(|q| q.seq == held.seq), "{reqs:?}");
    assert!(r.server.with_core(|c| c.merge_counters().refused) == 0);
    finish(&mut r, &model, "after the restart");
}

/// The server fails writing the commit that records (and splices) a completion: it is
/// poisoned and the completion is lost with the commit, while its request survives. The
/// mount keeps its completion, the server restarts, and the completion goes through.
#[test]
fn a_completion_whose_commit_failed_is_sent_again() {
    let mem: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(32 << 20));
    let fault = Arc::new(FaultDevice::new(mem));
    let meta: Arc<dyn BlockDevice> = fault.clone();
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(16 << 20));
    mkfs_on(&meta, &data, 2048);
    let (mut r, model) = deep_rig(meta, data);
    let held = take_and_hold(&mut r, 0);
    fault.fail_nth(FaultOp::Write, 1);
    let res = r.clients[0].merge_once();
    assert!(res.is_err(), "{res:?}");
    assert!(r.server.with_core(|c| c.is_poisoned()));
    assert_eq!(
        r.clients[0].unsent_completion().map(|c| c.seq),
        Some(held.seq)
    );
    fault.disarm();
    r.restart_server(77);
    r.clients[0].merge_once().unwrap();
    assert!(r.clients[0].unsent_completion().is_none());
    finish(&mut r, &model, "after the failed commit");
}

#[test]
fn a_reconnecting_mount_keeps_its_requests_and_a_fresh_one_gives_them_up() {
    let (meta, data) = volume(32, 2048);
    let (mut r, model) = deep_rig(meta, data);
    let held = take_and_hold(&mut r, 0);
    let outstanding = |r: &Rig| {
        r.server
            .with_core(|c| c.merge_requests().unwrap())
            .iter()
            .any(|q| q.seq == held.seq)
    };
    // Greeting again to reconnect: the request stays valid and its completion counts.
    r.transports[0]
        .call(Request::Greeting {
            rid: r.rids[0],
            reconnect: true,
        })
        .unwrap();
    assert!(outstanding(&r));
    // Mounting afresh (a restarted mount): its old requests are cancelled -- their blocks
    // free once that commit is durable, before the mount hears back -- and the old
    // completion, if it ever arrives, changes nothing.
    let held2 = {
        r.clients[0].merge_once().unwrap();
        take_and_hold(&mut r, 0)
    };
    r.remount(0, 3);
    assert!(!r
        .server
        .with_core(|c| c.merge_requests().unwrap())
        .iter()
        .any(|q| q.seq == held2.seq));
    let commits = r.server.commits();
    assert!(matches!(
        r.transports[0].call(Request::CommitLogMerge(Box::new(held2))),
        Ok(Response::Done)
    ));
    assert_eq!(r.server.commits(), commits);
    finish(&mut r, &model, "after the remount");
}
