#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The log merge on a nearly full device.
//!
//! Three mounts write without merging until the metadata device is full (ENOSPC for every
//! one of them) or to lower fill levels, with 2 KiB and 4 KiB blocks (1 KiB blocks cannot
//! hold a mount's log tree record, so no mount runs on them): the merge must then finish
//! -- from the space the volume keeps for it, giving the inputs' space back as it goes --
//! and every mount must write again, read the model, and `check` must be clean.
//!
//! Then each phase of splicing -- phase A (splice and trim), phase B (rebalance) and
//! freeing -- is made to span many commits by low headroom (not by the commit-size
//! bound), and the power is cut at every flush of that merge work (every commit boundary
//! and the instant before each super): each image must check clean, reopen, read the
//! model, and finish the merge to the model.

mod common;

use common::*;
use scoutfs_core::client::ClientError;
use scoutfs_core::device::BlockDevice;
use scoutfs_core::format::*;
use scoutfs_core::server::{MergeConfig, MergePhase};
use std::sync::Arc;

/// Write random items from every mount until `stop` says so or every mount is refused
/// (ENOSPC), committing as it goes; returns whether every mount was refused.
fn fill(
    r: &mut Rig,
    rng: &mut Rng,
    model: &mut Model,
    keys: u64,
    mut stop: impl FnMut(&Rig) -> bool,
) -> bool {
    let n = r.clients.len();
    let mut refused = vec![false; n];
    let mut ops = 0u64;
    while !refused.iter().all(|&x| x) && !stop(r) {
        let c = (ops % n as u64) as usize;
        ops += 1;
        if refused[c] {
            continue;
        }
        let k = key(rng.below(keys));
        let v = vec![rng.next() as u8; 60 + rng.below(200) as usize];
        let cl = &mut r.clients[c];
        match cl.insert(&k, &v) {
            Ok(()) => model.apply(k, tree_of(cl), cl.trans_seq(), Change::Put(v)),
            Err(ClientError::NoSpace) => refused[c] = true,
            Err(e) => panic!("insert: {e}"),
        }
        if rng.below(40) == 0 {
            cl.commit().unwrap();
        }
    }
    for cl in &mut r.clients {
        cl.commit().unwrap();
    }
    refused.iter().all(|&x| x)
}

fn meta_free(r: &Rig) -> u64 {
    r.server.with_core(|c| c.meta_free_blocks())
}

/// How the mounts fill the volume.
#[derive(Clone, Copy, Debug)]
enum Keys {
    /// Every mount writes the same key space, about one key per block of the device:
    /// the log trees hold many versions that the merge collapses.
    Shared,
    /// Every item a new key: the merged root holds all of them. Once merged, the mounts
    /// delete half of them, and that merge gives the space back.
    Distinct,
}

/// One fill level of one block size: fill, merge everything, write again.
fn fill_then_merge(bs: u32, meta_mb: u64, fill_to: f64, keys: Keys, seed: u64) {
    let what = format!("{bs}-byte blocks, {keys:?} keys filled to {fill_to}");
    let (meta, data) = volume(meta_mb, bs);
    let mut r = Rig::start(meta, data, 3, None, seed);
    // No finalization by size: the mounts' trees grow unmerged until the device is full
    // (a LOW mount's tree is finalized all the same, and nobody merges it yet).
    let mut cfg = r.cfg;
    cfg.finalize_height = 20;
    r.cfg = cfg;
    r.server
        .apply(|c| {
            c.set_merge_config(cfg);
            Ok(())
        })
        .unwrap();
    let mut rng = Rng(seed);
    let mut model = Model::default();
    // Fill levels are of the space mounts may take: down to the LOW line.
    let free0 = meta_free(&r);
    let low = r.server.with_core(|c| c.meta_floors().unwrap().1);
    let target = free0 - (free0.saturating_sub(low) as f64 * fill_to) as u64;
    let nkeys = match keys {
        Keys::Shared => (meta_mb << 20) / u64::from(bs),
        Keys::Distinct => 1 << 40,
    };
    let full = fill(&mut r, &mut rng, &mut model, nkeys, |r| {
        fill_to < 1.0 && meta_free(r) <= target
    });
    if fill_to >= 1.0 {
        assert!(full, "{what}: the mounts were never refused");
    }
    let free_full = meta_free(&r);
    let trees_full = r.server.with_core(|c| {
        scoutfs_core::server::all_log_trees(c.writer(), &c.roots().logs_root)
            .unwrap()
            .len()
    });
    let items = model.keys.len();
    let c0 = r.server.with_core(|c| c.merge_counters());
    let commits0 = r.server.commits();
    r.merge_everything(&what);
    let c1 = r.server.with_core(|c| c.merge_counters());
    let free_after = meta_free(&r);
    eprintln!(
        "{what}: {items} keys; free {free0} -> {free_full} at the fill ({trees_full} log \
         trees) -> {free_after} merged; {} requests, {} commits, low-space pauses {:?}, \
         full-commit pauses {:?}, stalls {}, detached {}, max unit {} (estimate {})",
        c1.requests - c0.requests,
        r.server.commits() - commits0,
        c1.low_space_pauses,
        c1.full_commit_pauses,
        c1.stalls - c0.stalls,
        c1.trimmed_subtrees,
        c1.max_unit_blocks,
        c1.unit_estimate,
    );
    assert!(
        c1.max_unit_blocks <= c1.unit_estimate,
        "{what}: a unit used more than its estimate: {c1:?}"
    );
    // The inputs are gone: no log tree holds items.
    assert!(!r.log_trees_hold_items(), "{what}");
    let want = model.visible();
    assert_same(&r.fs_root(), &want, &format!("{what}: the merged root"));
    for i in 0..r.clients.len() {
        assert_same(&r.reads(i), &want, &format!("{what}: mount {i} reads"));
    }
    r.assert_clean(&what);
    if let Keys::Distinct = keys {
        // The root holds every item: deleting half of them and merging gives their
        // space back.
        let ks: Vec<Key> = want.keys().copied().collect();
        for (n, k) in ks.iter().enumerate().filter(|(n, _)| n % 2 == 0) {
            let cl = &mut r.clients[n % 3];
            cl.delete(k).unwrap();
            model.apply(*k, tree_of(cl), cl.trans_seq(), Change::Delete);
        }
        for cl in &mut r.clients {
            cl.commit().unwrap();
        }
        r.merge_everything(&what);
        assert_same(
            &r.fs_root(),
            &model.visible(),
            &format!("{what}: after the deletes"),
        );
        eprintln!("{what}: {} free after deleting half", meta_free(&r));
    }
    // The space came back: mounts are no longer LOW, and every one writes again.
    assert!(
        !r.server.with_core(|c| c.meta_low().unwrap()),
        "{what}: still LOW after the merge ({} free)",
        meta_free(&r)
    );
    for (i, cl) in r.clients.iter_mut().enumerate() {
        let k = key((1 << 40) - 1 - i as u64);
        cl.insert(&k, b"again")
            .unwrap_or_else(|e| panic!("{what}: mount {i} after the merge: {e}"));
        model.apply(
            k,
            tree_of(cl),
            cl.trans_seq(),
            Change::Put(b"again".to_vec()),
        );
        cl.commit().unwrap();
    }
    r.merge_everything(&what);
    assert_same(
        &r.fs_root(),
        &model.visible(),
        &format!("{what}: after writing again"),
    );
    r.assert_clean(&what);
}

#[test]
fn a_volume_full_of_unmerged_log_trees_merges_and_writes_again_2k() {
    for (fill_to, keys, seed) in [
        (0.5, Keys::Shared, 1),
        (0.9, Keys::Shared, 2),
        (1.0, Keys::Shared, 3),
        (1.0, Keys::Distinct, 4),
    ] {
        fill_then_merge(2048, 8, fill_to, keys, seed);
    }
}

#[test]
fn a_volume_full_of_unmerged_log_trees_merges_and_writes_again_4k() {
    for (fill_to, keys, seed) in [
        (0.5, Keys::Shared, 5),
        (0.9, Keys::Shared, 6),
        (1.0, Keys::Shared, 7),
        (1.0, Keys::Distinct, 8),
    ] {
        fill_then_merge(4096, 12, fill_to, keys, seed);
    }
}

/// Deep inputs (many items per mount) over a deep root, merged with a small headroom in
/// every phase so that each phase spans many commits, with the power cut at every flush
/// of that merge work.
#[test]
fn every_phase_pauses_for_low_space_and_survives_a_crash_at_every_commit() {
    let bs: u32 = 2048;
    let fork = Arc::new(Forking::new(8 << 20, 0, 0, usize::MAX));
    let meta: Arc<dyn BlockDevice> = fork.clone();
    let data: Arc<dyn BlockDevice> = Arc::new(scoutfs_core::device::MemDevice::new(16 << 20));
    mkfs_on(&meta, &data, bs);
    let cfg = MergeConfig {
        finalize_height: 20,
        batch: 8,
        request_blocks: 64,
        merge_dirty_blocks: 60,
        splice_commit_blocks: usize::MAX,
        free_budget: 250,
        ..MergeConfig::default()
    };
    let mut r = Rig::start(meta.clone(), data.clone(), 3, Some(cfg), 7);
    let mut rng = Rng(7);
    let mut model = Model::default();
    // A root several levels deep, then dense inputs over it.
    write_some(&mut r, &mut rng, &mut model, 3000, 1500);
    r.merge_everything("first merge");
    assert!(r.server.with_core(|c| c.roots().fs_root.height) >= 3);
    write_some(&mut r, &mut rng, &mut model, 3000, 1500);
    r.finalize();
    // Headroom for about one unit of each phase per commit.
    let limits = r.server.with_core(|c| {
        let inputs: Vec<LogTrees> =
            scoutfs_core::server::all_log_trees(c.writer(), &c.roots().logs_root)
                .unwrap()
                .into_iter()
                .filter(|t| t.flags.get() & LOG_TREES_FLAG_FINALIZED != 0)
                .collect();
        let lm = u64::from(c.roots().log_merge.height) + 2;
        let splice = c.merge_unit_blocks(&inputs);
        let rebalance = 2 * (u64::from(c.roots().fs_root.height) + 2) + 2 * lm;
        let cap = alloc_list_capacity(bs as usize) as u64;
        let free = 2 * lm + 250 / cap + 2;
        [splice + 4, rebalance + 4, free + 3]
    });
    let mut paced = cfg;
    paced.headroom_limit = limits;
    r.cfg = paced;
    r.server
        .apply(|c| {
            c.set_merge_config(paced);
            Ok(())
        })
        .unwrap();
    assert!(r.server.with_core(|c| c.merge_status().unwrap().is_some()));
    let c0 = r.server.with_core(|c| c.merge_counters());
    let commits0 = r.server.commits();
    let want = model.visible();
    // Merge, cutting the power at every flush of the merge work: each image checks
    // clean, reopens (its mounts greeting afresh), reads the model and merges to it.
    let (mut cuts, mut splicing) = (0, 0);
    let mut settled = false;
    for round in 0..100_000 {
        fork.arm(true);
        let worked = r.clients[round % 3].merge_once().unwrap();
        fork.arm(false);
        for img in fork.take_forks() {
            let what = format!("power cut {cuts}");
            img.crash(cuts);
            cuts += 1;
            let m: Arc<dyn BlockDevice> = Arc::new(img);
            assert_clean(&m, &data, &what);
            let st = scoutfs_core::server::ServerCore::open_read_only(
                m.clone(),
                data.clone(),
                Default::default(),
            )
            .unwrap()
            .merge_status()
            .unwrap();
            splicing +=
                st.is_some_and(|s| s.flags.get() & MERGE_STATUS_FLAG_SPLICING != 0) as usize;
            let mut r2 = Rig::start(m, data.clone(), 3, Some(cfg), 100 + cuts);
            assert_same(&r2.reads(0), &want, &format!("{what}: reads"));
            r2.merge_everything(&what);
            assert_same(&r2.fs_root(), &want, &format!("{what}: the merged root"));
            r2.assert_clean(&format!("{what}, merged"));
        }
        let done = r.server.with_core(|c| c.merge_status().unwrap().is_none());
        if done && !worked {
            settled = true;
            break;
        }
    }
    assert!(settled, "the paced merge never finished");
    let c1 = r.server.with_core(|c| c.merge_counters());
    let pauses: Vec<u64> = (0..3)
        .map(|p| c1.low_space_pauses[p] - c0.low_space_pauses[p])
        .collect();
    eprintln!(
        "paced merge (headroom limits {limits:?}): {} commits, low-space pauses {pauses:?} \
         (splice, rebalance, free), detached {}; {cuts} power cuts, {splicing} while \
         splicing",
        r.server.commits() - commits0,
        c1.trimmed_subtrees - c0.trimmed_subtrees,
    );
    for (p, phase) in [MergePhase::Splice, MergePhase::Rebalance, MergePhase::Free]
        .iter()
        .enumerate()
    {
        assert!(
            pauses[p] >= 3,
            "{phase:?} paused {} times: {c1:?}",
            pauses[p]
        );
    }
    assert_eq!(
        c1.full_commit_pauses, c0.full_commit_pauses,
        "the commit-size bound paused"
    );
    assert_eq!(c1.stalls, c0.stalls, "the merge stalled");
    assert!(
        c1.max_unit_blocks <= c1.unit_estimate,
        "a unit used more than its estimate: {c1:?}"
    );
    // Every commit of the merge is two flushes (its blocks, its super).
    let commits = r.server.commits() - commits0;
    assert!(
        cuts >= 2 * commits,
        "{cuts} power cuts for {commits} commits"
    );
    assert!(splicing >= 20, "{splicing} power cuts while splicing");
    assert_same(&r.fs_root(), &want, "the paced merge");
    r.assert_clean("after the paced merge");
}
