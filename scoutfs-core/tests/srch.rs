#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `.srch.` xattrs and searches (`Fs::search_xattrs`): entries logged with xattr changes,
//! pairs cancelling in a transaction, in a log file and in compaction, log files rotating
//! at their limit, compaction handed out by the server and done a step at a time by
//! background ticks; a property test against a model of which inodes have which tags,
//! through commits, rotations, compactions and remounts; and a crash sweep of a workload
//! whose compactions span many steps, every crash point mounted, checked and searched.

mod common;

use common::record::{Event, Recorder, Sweep};
use common::{assert_fs_clean, proptest_cases, volume_of, Rng};
use proptest::prelude::*;
use scoutfs_core::client::MergeFault;
use scoutfs_core::device::BlockDevice;
use scoutfs_core::fs::*;
use scoutfs_core::srch::{SrchConfig, SrchStats};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};

const SXA: &[u8] = b"scoutfs.srch.test-srch-basic-functionality";

fn opts(log_entries: u64, step_entries: u64) -> FsOptions {
    FsOptions {
        seed: Some(7),
        srch: SrchConfig {
            log_entries,
            compact_blocks: 16,
            step_entries,
        },
        ..FsOptions::default()
    }
}

fn mount(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>, o: FsOptions) -> Fs {
    Fs::mount_single(meta.clone(), data.clone(), o).unwrap()
}

/// Every inode a search of `name` returns, in pages of `page`.
fn search_all(fs: &Fs, name: &[u8], page: usize) -> Vec<u64> {
    let mut out = Vec::new();
    let mut next = 0;
    loop {
        let r = fs.search_xattrs(name, next, u64::MAX, page).unwrap();
        assert!(r.inos.len() <= page);
        assert!(r.inos.windows(2).all(|w| w[0] < w[1]), "{:?}", r.inos);
        if let (Some(&first), Some(&last)) = (r.inos.first(), out.last()) {
            assert!(first > last);
        }
        out.extend(&r.inos);
        if r.complete {
            return out;
        }
        next = *r.inos.last().expect("an incomplete page holds inodes") + 1;
    }
}

fn files(fs: &Fs, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| {
            fs.mknod(ROOT_INO, format!("f{i}").as_bytes(), 0o100644, 0, C)
                .unwrap()
                .ino
        })
        .collect()
}

/// The first part of the golden test srch-basic-functionality: creates, an update, a
/// removal, files removed with their xattrs; only what is committed is found.
#[test]
fn search_finds_what_is_committed() {
    let (meta, data) = volume_of(16, 16, 4096);
    let fs = mount(&meta, &data, FsOptions::default());
    let f = files(&fs, 3);
    let (create, update, late) = (f[0], f[1], f[2]);
    for ino in [create, update] {
        fs.setxattr(ino, SXA, b"1", XattrSet::Any).unwrap();
    }
    // Not committed yet: not found.
    assert_eq!(search_all(&fs, SXA, 10), Vec::<u64>::new());
    fs.sync().unwrap();
    assert_eq!(search_all(&fs, SXA, 10), vec![create, update]);
    fs.setxattr(update, SXA, b"2", XattrSet::Replace).unwrap();
    fs.sync().unwrap();
    assert_eq!(search_all(&fs, SXA, 1), vec![create, update]);
    fs.removexattr(create, SXA).unwrap();
    fs.sync().unwrap();
    assert_eq!(search_all(&fs, SXA, 10), vec![update]);
    // Removed but not committed: still found (a candidate the caller checks).
    fs.unlink(ROOT_INO, b"f1").unwrap();
    assert_eq!(search_all(&fs, SXA, 10), vec![update]);
    fs.sync().unwrap();
    assert_eq!(search_all(&fs, SXA, 10), Vec::<u64>::new());
    // Other names, the range, and names that are not srch names.
    fs.setxattr(late, b"scoutfs.srch.other", b"", XattrSet::Any)
        .unwrap();
    fs.setxattr(late, b"user.plain", b"", XattrSet::Any)
        .unwrap();
    fs.sync().unwrap();
    assert_eq!(search_all(&fs, b"scoutfs.srch.other", 10), vec![late]);
    assert_eq!(search_all(&fs, SXA, 10), Vec::<u64>::new());
    let r = fs
        .search_xattrs(b"scoutfs.srch.other", late + 1, u64::MAX, 10)
        .unwrap();
    assert!(r.inos.is_empty() && r.complete);
    for bad in [&b"user.plain"[..], b"scoutfs.hide.x", b"", &[b'a'; 300]] {
        assert!(matches!(
            fs.search_xattrs(bad, 0, u64::MAX, 10),
            Err(FsError::Invalid)
        ));
    }
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "after the searches");
    // A read-only mount searches what was committed.
    let ro = FsOptions {
        read_only: true,
        ..FsOptions::default()
    };
    let fs = mount(&meta, &data, ro);
    assert_eq!(search_all(&fs, b"scoutfs.srch.other", 10), vec![late]);
}

/// A log file rotates into `srch_root` at the commit that brings it to the limit, and
/// when its mount leaves.
#[test]
fn a_log_file_rotates_at_its_limit_and_at_unmount() {
    let (meta, data) = volume_of(16, 16, 4096);
    let fs = mount(&meta, &data, opts(10, 1000));
    let f = files(&fs, 16);
    for &ino in &f[..9] {
        fs.setxattr(ino, SXA, b"", XattrSet::Any).unwrap();
    }
    fs.sync().unwrap();
    let s = fs.srch_stats().unwrap();
    assert_eq!((s.log_files, s.current_logs, s.entries), (0, 1, 9), "{s:?}");
    fs.setxattr(f[9], SXA, b"", XattrSet::Any).unwrap();
    fs.sync().unwrap();
    let s = fs.srch_stats().unwrap();
    assert_eq!(
        (s.log_files, s.current_logs, s.entries),
        (1, 0, 10),
        "{s:?}"
    );
    for &ino in &f[10..] {
        fs.setxattr(ino, SXA, b"", XattrSet::Any).unwrap();
    }
    fs.sync().unwrap();
    assert_eq!(search_all(&fs, SXA, 4), f);
    fs.unmount().unwrap();
    let fs = mount(&meta, &data, opts(10, 1000));
    let s = fs.srch_stats().unwrap();
    assert_eq!(
        (s.log_files, s.current_logs, s.entries),
        (2, 0, 16),
        "{s:?}"
    );
    assert_eq!(search_all(&fs, SXA, 100), f);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "after the rotations");
}

/// Pairs cancel in the transaction, in a log file, and in compaction; compaction runs in
/// steps from background ticks and leaves no entry of a removed xattr.
#[test]
fn pairs_cancel_and_compaction_drops_them() {
    let (meta, data) = volume_of(16, 16, 4096);
    let fs = mount(&meta, &data, opts(8, 5));
    let f = files(&fs, 8);
    // Set and removed in one transaction: nothing is written.
    fs.setxattr(f[0], SXA, b"", XattrSet::Any).unwrap();
    fs.removexattr(f[0], SXA).unwrap();
    fs.sync().unwrap();
    assert_eq!(fs.srch_stats().unwrap(), SrchStats::default());
    // Set and removed in two commits of one log file: the file empties.
    fs.setxattr(f[0], SXA, b"", XattrSet::Any).unwrap();
    fs.sync().unwrap();
    assert_eq!(fs.srch_stats().unwrap().entries, 1);
    fs.removexattr(f[0], SXA).unwrap();
    fs.sync().unwrap();
    assert_eq!(fs.srch_stats().unwrap(), SrchStats::default());
    // Made in log files that rotate, removed in later ones: every pair spans files.
    for round in 0..4 {
        for &ino in &f {
            fs.setxattr(ino, SXA, &[round], XattrSet::Any).unwrap();
        }
        fs.sync().unwrap();
        if round < 3 {
            for &ino in &f {
                fs.removexattr(ino, SXA).unwrap();
            }
            fs.sync().unwrap();
        }
        assert_eq!(
            search_all(&fs, SXA, 3),
            if round < 3 { vec![] } else { f.clone() }
        );
    }
    let s = fs.srch_stats().unwrap();
    assert_eq!(s.log_files, 7, "{s:?}");
    assert_eq!(s.entries, 7 * 8, "{s:?}");
    // Background ticks compact them, in steps, until a tier has too few files.
    let mut ticks = 0;
    while fs.srch_stats().unwrap().log_files >= 4 {
        fs.background_tick().unwrap();
        ticks += 1;
        assert!(ticks < 50, "compaction does not finish");
    }
    // The four oldest files (two rounds of sets and removals) cancel to nothing: no
    // sorted file is written, and their blocks are freed.
    let s = fs.srch_stats().unwrap();
    assert_eq!(search_all(&fs, SXA, 3), f);
    assert_eq!(
        (s.log_files, s.sorted_files, s.pending, s.busy),
        (3, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.entries, 3 * 8, "{s:?}");
    // Four more log files, each of another name: the oldest four files now hold the
    // last round of `SXA` and the first other name, 16 live entries, which a compaction
    // writes into a sorted file.
    for round in 0..4 {
        let name = format!("scoutfs.srch.other{round}");
        for &ino in &f {
            fs.setxattr(ino, name.as_bytes(), b"", XattrSet::Any)
                .unwrap();
        }
        fs.sync().unwrap();
    }
    while fs.srch_compact_work(1).unwrap() > 0 {}
    let s = fs.srch_stats().unwrap();
    assert_eq!(
        (s.log_files, s.sorted_files, s.entries),
        (3, 1, 16 + 3 * 8),
        "{s:?}"
    );
    for round in 0..4 {
        let name = format!("scoutfs.srch.other{round}");
        assert_eq!(search_all(&fs, name.as_bytes(), 5), f);
    }
    assert_eq!(search_all(&fs, SXA, 3), f);
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "after compaction");
}

/// Deleting an inode logs the removal of each of its srch xattrs, in its transaction
/// or, for an inode too large for one, in the steps that delete it.
#[test]
fn deleted_inodes_leave_no_live_entries() {
    let (meta, data) = volume_of(16, 16, 4096);
    let fs = mount(&meta, &data, opts(1000, 1000));
    let f = files(&fs, 3);
    // A small inode, and two with more srch xattrs than one deletion takes inline.
    for (i, &ino) in f.iter().enumerate() {
        for x in 0..[2, 12, 40][i] {
            let name = format!("scoutfs.srch.n{x}");
            fs.setxattr(ino, name.as_bytes(), b"v", XattrSet::Any)
                .unwrap();
        }
    }
    fs.sync().unwrap();
    assert_eq!(search_all(&fs, b"scoutfs.srch.n1", 10), f);
    assert_eq!(search_all(&fs, b"scoutfs.srch.n30", 10), vec![f[2]]);
    fs.open(f[2]).unwrap();
    for i in 0..3 {
        fs.unlink(ROOT_INO, format!("f{i}").as_bytes()).unwrap();
    }
    fs.sync().unwrap();
    assert_eq!(search_all(&fs, b"scoutfs.srch.n1", 10), vec![f[2]]);
    fs.release(f[2]).unwrap();
    fs.sync().unwrap();
    for x in 0..40 {
        let name = format!("scoutfs.srch.n{x}");
        assert_eq!(search_all(&fs, name.as_bytes(), 10), Vec::<u64>::new());
    }
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "after the deletions");
}

/// Failed, lost and repeated compaction steps: the work goes back and is finished.
#[test]
fn failed_lost_and_repeated_steps_are_harmless() {
    let (meta, data) = volume_of(16, 16, 4096);
    let fs = mount(&meta, &data, opts(4, 3));
    let f = files(&fs, 24);
    for (i, &ino) in f.iter().enumerate() {
        fs.setxattr(ino, SXA, b"", XattrSet::Any).unwrap();
        if i % 4 == 3 {
            fs.sync().unwrap();
        }
    }
    assert_eq!(fs.srch_stats().unwrap().log_files, 6);
    let c = fs.srch_compactor().unwrap();
    // A failed step, a duplicated one, a lost one: then the rest.
    assert!(c.step_with(MergeFault::Fail).unwrap());
    assert!(c.step_with(MergeFault::Duplicate).unwrap());
    assert!(c.step_with(MergeFault::Vanish).unwrap());
    assert_eq!(fs.srch_stats().unwrap().busy, 1);
    // The mount asks again: it is handed the work it lost.
    let mut steps = 0;
    while fs.srch_compact_work(1).unwrap() > 0 {
        steps += 1;
        assert!(steps < 100);
    }
    let s = fs.srch_stats().unwrap();
    assert_eq!(
        (s.log_files, s.sorted_files, s.busy, s.pending),
        (2, 1, 0, 0),
        "{s:?}"
    );
    assert_eq!(search_all(&fs, SXA, 5), f);
    // Lost again, and the mount restarts: the work goes back to pending and is finished
    // by the next mount.
    for &ino in &f[..8] {
        fs.removexattr(ino, SXA).unwrap();
        fs.sync().unwrap();
    }
    let c = fs.srch_compactor().unwrap();
    assert!(c.step_with(MergeFault::Vanish).unwrap());
    drop(fs);
    let fs = mount(&meta, &data, opts(4, 3));
    let s = fs.srch_stats().unwrap();
    assert_eq!((s.busy, s.pending), (0, 1), "{s:?}");
    while fs.srch_compact_work(1).unwrap() > 0 {}
    assert_eq!(search_all(&fs, SXA, 5), f[8..].to_vec());
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "after the faults");
}

/// The check proves srch files agree with the xattrs: with entries not logged, it finds
/// the xattrs searches would miss, and the entries whose xattrs are gone.
#[test]
fn check_finds_missing_and_stale_entries() {
    use scoutfs_core::check::{self, Problem, SrchFault};
    let (meta, data) = volume_of(16, 16, 4096);
    let fs = mount(&meta, &data, FsOptions::default());
    let f = files(&fs, 2);
    fs.setxattr(f[0], SXA, b"", XattrSet::Any).unwrap();
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "before the mutation");
    let bad = FsOptions {
        mutation: Mutation::SrchUnlogged,
        ..FsOptions::default()
    };
    let fs = mount(&meta, &data, bad);
    fs.removexattr(f[0], SXA).unwrap();
    fs.setxattr(f[1], SXA, b"", XattrSet::Any).unwrap();
    fs.unmount().unwrap();
    let rep = check::check(&meta, &data).unwrap();
    let faults: Vec<(u64, SrchFault)> = rep
        .problems
        .iter()
        .filter_map(|p| match p {
            Problem::SrchEntry { ino, fault, .. } => Some((*ino, *fault)),
            _ => None,
        })
        .collect();
    assert_eq!(
        faults,
        vec![(f[0], SrchFault::NoXattr), (f[1], SrchFault::Missing)],
        "{:#?}",
        rep.problems
    );
    assert_eq!(rep.problem_count, 2, "{:#?}", rep.problems);
}

/// The names the model tests use: three `.srch.` names (one hidden too) and one that is
/// not.
const NAMES: [&[u8]; 4] = [
    b"scoutfs.srch.a",
    b"scoutfs.srch.b",
    b"scoutfs.hide.srch.c",
    b"user.d",
];
const FILES: usize = 24;

#[derive(Clone, Debug)]
enum Op {
    Create(usize),
    Set(usize, usize),
    Remove(usize, usize),
    Unlink(usize),
    Sync,
    Tick,
    Compact(usize),
    Remount,
}

fn op() -> impl Strategy<Value = Op> {
    let f = 0..FILES;
    let n = 0..NAMES.len();
    prop_oneof![
        3 => f.clone().prop_map(Op::Create),
        12 => (f.clone(), n.clone()).prop_map(|(f, n)| Op::Set(f, n)),
        5 => (f.clone(), n).prop_map(|(f, n)| Op::Remove(f, n)),
        1 => f.prop_map(Op::Unlink),
        4 => Just(Op::Sync),
        1 => Just(Op::Tick),
        3 => (1..4usize).prop_map(Op::Compact),
        1 => Just(Op::Remount),
    ]
}

/// Which inodes have which names: now, as of the last commit of everything, and which
/// ones lost a name (or their inode) since.
#[derive(Debug, Default)]
struct Model {
    inos: BTreeMap<usize, u64>,
    live: BTreeSet<(u64, usize)>,
    committed: BTreeSet<(u64, usize)>,
    /// Every (inode, name) live at some point since the last commit of everything.
    since: BTreeSet<(u64, usize)>,
    /// Those removed at some point since.
    removed: BTreeSet<(u64, usize)>,
}

impl Model {
    fn committed_all(&mut self) {
        self.committed = self.live.clone();
        self.since = self.live.clone();
        self.removed.clear();
    }
}

/// Run `ops`; after each, every search holds every inode whose name was committed and
/// not removed since, and nothing never set since the last full commit; after a full
/// commit it is exact.
fn run_model(ops: &[Op], log_entries: u64, step_entries: u64) {
    let (meta, data) = volume_of(16, 16, 4096);
    let o = || opts(log_entries, step_entries);
    let mut fs = mount(&meta, &data, o());
    let mut m = Model::default();
    for i in 0..FILES / 2 {
        let a = fs
            .mknod(ROOT_INO, format!("f{i}").as_bytes(), 0o100644, 0, C)
            .unwrap();
        m.inos.insert(i, a.ino);
    }
    for (at, op) in ops.iter().enumerate() {
        let mut exact = false;
        match *op {
            Op::Create(i) => {
                if let std::collections::btree_map::Entry::Vacant(e) = m.inos.entry(i) {
                    let a = fs
                        .mknod(ROOT_INO, format!("f{i}").as_bytes(), 0o100644, 0, C)
                        .unwrap();
                    e.insert(a.ino);
                }
            }
            Op::Set(i, n) => {
                if let Some(&ino) = m.inos.get(&i) {
                    fs.setxattr(ino, NAMES[n], &[i as u8], XattrSet::Any)
                        .unwrap();
                    m.live.insert((ino, n));
                    m.since.insert((ino, n));
                }
            }
            Op::Remove(i, n) => {
                if let Some(&ino) = m.inos.get(&i) {
                    let r = fs.removexattr(ino, NAMES[n]);
                    assert_eq!(r.is_ok(), m.live.remove(&(ino, n)), "{op:?}: {r:?}");
                    m.removed.insert((ino, n));
                }
            }
            Op::Unlink(i) => {
                if let Some(ino) = m.inos.remove(&i) {
                    fs.unlink(ROOT_INO, format!("f{i}").as_bytes()).unwrap();
                    for n in 0..NAMES.len() {
                        if m.live.remove(&(ino, n)) {
                            m.removed.insert((ino, n));
                        }
                    }
                }
            }
            Op::Sync => {
                fs.sync().unwrap();
                exact = true;
            }
            Op::Tick => {
                fs.background_tick().unwrap();
                exact = true;
            }
            Op::Compact(k) => {
                fs.srch_compact_work(k).unwrap();
            }
            Op::Remount => {
                assert_eq!(fs.overruns(), 0);
                fs.unmount().unwrap();
                fs = mount(&meta, &data, o());
                exact = true;
            }
        }
        if exact {
            m.committed_all();
        }
        for (n, name) in NAMES.iter().enumerate() {
            if n == 3 {
                assert!(fs.search_xattrs(name, 0, u64::MAX, 10).is_err());
                continue;
            }
            let got: BTreeSet<u64> = search_all(&fs, name, 1 + at % 7).into_iter().collect();
            for &(ino, _) in m.committed.iter().filter(|x| x.1 == n) {
                if !m.removed.contains(&(ino, n)) {
                    assert!(got.contains(&ino), "op {at} {op:?}: name {n}: missed {ino}");
                }
            }
            for &ino in &got {
                assert!(
                    m.since.contains(&(ino, n)),
                    "op {at} {op:?}: name {n}: {ino} was never set since the last commit"
                );
            }
            if exact {
                let want: BTreeSet<u64> = m.live.iter().filter(|x| x.1 == n).map(|x| x.0).collect();
                assert_eq!(got, want, "op {at} {op:?}: name {n} after a full commit");
            }
        }
    }
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "after the model's operations");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: proptest_cases(32),
        max_shrink_iters: 500,
        ..ProptestConfig::default()
    })]

    #[test]
    fn search_never_misses_a_committed_tag(
        ops in proptest::collection::vec(op(), 1..300),
        log_entries in 1..6u64,
        step_entries in 1..8u64,
    ) {
        run_model(&ops, log_entries, step_entries);
    }
}

/// The srch settings of the crash sweep: log files of a few entries, compactions of
/// many small steps.
fn crash_opts(seed: u64) -> FsOptions {
    FsOptions {
        seed: Some(seed),
        cache_bytes: 8 << 20,
        srch: SrchConfig {
            log_entries: 4,
            compact_blocks: 16,
            step_entries: 3,
        },
        ..FsOptions::default()
    }
}

const CRASH_NAMES: [&[u8]; 2] = [b"scoutfs.srch.x", b"scoutfs.srch.y"];

/// A recorded workload: the images before its log, the log, and the log's ranges that
/// background ticks (compaction steps among their work) span.
struct Recorded {
    meta0: Vec<u8>,
    data0: Vec<u8>,
    events: Vec<Event>,
    ticks: Vec<(usize, usize)>,
}

/// Random `.srch.` xattr sets, replacements and removals over a few dozen files, file
/// deletions, syncs, and background ticks that compact, on recording devices; the mount
/// is dropped at the end without unmounting.
fn recorded_workload(seed: u64, nops: usize, mutation: Mutation) -> Recorded {
    let (meta, data, log) = Recorder::pair(16 << 20, 16 << 20);
    let (m, d): (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) = (meta.clone(), data.clone());
    common::mkfs_on(&m, &d, 4096);
    let (meta0, data0) = (meta.image(), data.image());
    log.lock().armed = true;
    let events = || log.lock().events.len();
    let fs = mount(
        &m,
        &d,
        FsOptions {
            mutation,
            ..crash_opts(seed)
        },
    );
    let mut rng = Rng(seed ^ 0x5c4c);
    let mut live: BTreeMap<u64, u64> = BTreeMap::new();
    let mut next_name = 0u64;
    let mut ticks = Vec::new();
    for op in 0..nops {
        if live.len() < 8 || rng.below(12) == 0 {
            let a = fs
                .mknod(ROOT_INO, format!("f{next_name}").as_bytes(), 0o100644, 0, C)
                .unwrap();
            live.insert(a.ino, next_name);
            next_name += 1;
        }
        let inos: Vec<u64> = live.keys().copied().collect();
        let ino = inos[rng.below(inos.len() as u64) as usize];
        let name = CRASH_NAMES[rng.below(2) as usize];
        match rng.below(10) {
            0..=5 => fs
                .setxattr(ino, name, &op.to_le_bytes(), XattrSet::Any)
                .unwrap(),
            6..=8 => match fs.removexattr(ino, name) {
                Ok(()) | Err(FsError::NoData) => {}
                Err(e) => panic!("removexattr: {e}"),
            },
            _ => {
                let n = live.remove(&ino).unwrap();
                fs.unlink(ROOT_INO, format!("f{n}").as_bytes()).unwrap();
            }
        }
        if op % 3 == 2 {
            fs.sync().unwrap();
        }
        if op % 16 == 15 {
            let start = events();
            fs.background_tick().unwrap();
            ticks.push((start, events()));
        }
    }
    assert_eq!(fs.overruns(), 0);
    drop(fs);
    let events = std::mem::take(&mut log.lock().events);
    Recorded {
        meta0,
        data0,
        events,
        ticks,
    }
}

/// Which inodes have each of [`CRASH_NAMES`], by the namespace.
fn tagged(fs: &Fs) -> Result<Vec<Vec<u64>>, String> {
    let mut entries = Vec::new();
    fs.readdir(ROOT_INO, 0, &mut |e| {
        entries.push(e.ino);
        true
    })
    .map_err(|e| format!("readdir: {e}"))?;
    let mut out = vec![Vec::new(); CRASH_NAMES.len()];
    for ino in entries.into_iter().filter(|&i| i != ROOT_INO) {
        for (n, name) in CRASH_NAMES.iter().enumerate() {
            match fs.getxattr(ino, name) {
                Ok(_) => out[n].push(ino),
                Err(FsError::NoData) => {}
                Err(e) => return Err(format!("getxattr {ino}: {e}")),
            }
        }
    }
    for v in &mut out {
        v.sort_unstable();
    }
    Ok(out)
}

/// Mount what a power cut before event `i` leaves: searches find exactly the tagged
/// inodes, the compaction the cut interrupted is finished by the mount, searches still
/// agree, and `check` finds nothing wrong. Returns whether a compaction was under way.
fn verify_crash(i: usize, sweep: &Sweep, seed: u64) -> Result<bool, String> {
    let (meta, data) = sweep.crash(seed ^ (i as u64).wrapping_mul(0x9e37_79b9));
    let (md, dd): (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) = (meta, data);
    let fs = Fs::mount_single(md.clone(), dd.clone(), crash_opts(seed ^ 5))
        .map_err(|e| format!("remount: {e}"))?;
    let st = fs.srch_stats().map_err(|e| e.to_string())?;
    let under_way = st.pending + st.busy > 0;
    let want = tagged(&fs)?;
    let agree = |what: &str| -> Result<(), String> {
        for (n, name) in CRASH_NAMES.iter().enumerate() {
            let got = search_all(&fs, name, 1 + i % 5);
            if got != want[n] {
                return Err(format!(
                    "{what}: search of {} found {got:?}, the namespace has {:?} ({:?})",
                    String::from_utf8_lossy(name),
                    want[n],
                    fs.srch_stats()
                ));
            }
        }
        Ok(())
    };
    agree("after the crash")?;
    let mut steps = 0;
    while fs.srch_compact_work(1).map_err(|e| e.to_string())? > 0 {
        steps += 1;
        if steps > 10_000 {
            return Err("compaction does not finish".into());
        }
    }
    let st = fs.srch_stats().map_err(|e| e.to_string())?;
    if st.pending + st.busy > 0 {
        return Err(format!("compaction left unfinished: {st:?}"));
    }
    agree("after finishing compaction")?;
    fs.unmount().map_err(|e| format!("unmount: {e}"))?;
    let r = scoutfs_core::check::check(&md, &dd).map_err(|e| format!("check: {e}"))?;
    if !r.is_clean() {
        return Err(format!("check: {:#?}", r.problems));
    }
    Ok(under_way)
}

/// Crash points spread over the whole log and packed into the background ticks (where
/// compaction steps commit): every one mounts clean, searches never miss, and the
/// compaction the crash interrupted resumes and finishes. `SCOUTFS_SRCH_CRASH_SEEDS` and
/// `SCOUTFS_SRCH_CRASH_POINTS` scale it.
#[test]
fn compaction_resumes_after_a_crash_at_every_point() {
    let seeds: u64 = common::env_or(&["SCOUTFS_SRCH_CRASH_SEEDS"], 4);
    let points: usize = common::env_or(&["SCOUTFS_SRCH_CRASH_POINTS"], 400);
    let (mut verified, mut resumed) = (0, 0);
    for seed in 0..seeds {
        let run = recorded_workload(seed, 160, Mutation::None);
        let n = run.events.len();
        let tick_events: Vec<usize> = run.ticks.iter().flat_map(|&(a, b)| a..b).collect();
        assert!(!tick_events.is_empty(), "the ticks wrote nothing");
        let mut rng = Rng(seed ^ 0xc4a5);
        let half = (points / 2).max(1);
        let mut at: Vec<usize> = (0..half)
            .map(|p| p * n / half + rng.below((n / half).max(1) as u64) as usize)
            .collect();
        for _ in 0..half {
            at.push(tick_events[rng.below(tick_events.len() as u64) as usize]);
        }
        at.push(n);
        at.sort_unstable();
        at.dedup();
        let mut sweep = Sweep::new(run.meta0.clone(), run.data0.clone());
        let mut next = 0;
        for &i in &at {
            while next < i.min(n) {
                sweep.apply(&run.events[next]);
                next += 1;
            }
            match verify_crash(i, &sweep, seed) {
                Ok(under_way) => resumed += usize::from(under_way),
                Err(why) => panic!("seed {seed}, crash before event {i} of {n}: {why}"),
            }
            verified += 1;
        }
    }
    eprintln!("{verified} crash points verified, {resumed} with a compaction under way");
    assert!(
        resumed * 10 >= verified,
        "only {resumed} of {verified} crash points interrupted a compaction"
    );
}

/// The sweep can fail: with xattr changes that log no entries, the first crash point
/// after a commit of one is caught.
#[test]
fn the_crash_sweep_catches_unlogged_entries() {
    let run = recorded_workload(9, 24, Mutation::SrchUnlogged);
    let mut sweep = Sweep::new(run.meta0.clone(), run.data0.clone());
    for e in &run.events {
        sweep.apply(e);
    }
    let err = verify_crash(run.events.len(), &sweep, 9).unwrap_err();
    assert!(err.contains("search of"), "{err}");
}
