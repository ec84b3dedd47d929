#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every filesystem operation is atomic across a crash (issue 13): random workloads of
//! creates, writes (in place, extending, sparse, appends that make many-extent files),
//! truncates both ways, unlinks of small and many-extent files, open-unlink-close and
//! orphans left open, renames over targets (many-extent ones among them) and across
//! directories, links, symlinks, xattr sets and removes (`.totl.`, `.indx.` and `.srch.`
//! tagged ones among them), mkdir and rmdir, and syncs —
//! many of them not followed by any sync — run on a pair of devices (meta and data)
//! that record every write and flush. Then, for crash points spread over the whole
//! log (thousands per run), the devices a power cut at that instant leaves (unflushed
//! writes of either device kept, dropped or torn) are mounted, and:
//!
//! - the namespace (every path, kind, size, link count, xattr, symlink target) is the
//!   model's after some prefix of the operations: at least up to the last completed
//!   sync, at most up to the operation in progress — each operation wholly present or
//!   wholly absent;
//! - every file byte is its value in that state, or (written in place to a block the file
//!   had, by an operation after it) its value in a later one;
//! - bytes past each file's size read as zero once the file is extended;
//! - the `.totl.` totals and the `.indx.` index read through the mount are what the
//!   xattrs of its files give;
//! - `check` finds nothing wrong after the mount's recovery.
//!
//! Half of the seeds run with a tiny cache (96 KiB of dirty memory), whose transactions
//! fill inside operations. The mutation tests turn on the old bugs (a commit inside an
//! operation; a truncate that zeroes in place) and require the sweep to catch them.
//!
//! `SCOUTFS_FS_ATOMIC_SEEDS=N` runs N seeds per test (default 8 per test, 4 tests, about 12,000 crash points);
//! `SCOUTFS_FS_ATOMIC_POINTS=P` crash points per seed (default 480).

mod common;

use common::record::{recorded_volume, scripted, Event, Sweep};
use common::Rng;
use parking_lot::Mutex;
use scoutfs_core::check;
use scoutfs_core::device::BlockDevice;
use scoutfs_core::fs::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};
const META: u64 = 16 << 20;
const DATA: u64 = 48 << 20;
const BS: u64 = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    data: Vec<u8>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    target: Vec<u8>,
}

/// The namespace as the operations left it.
#[derive(Clone, Debug, Default)]
struct Model {
    entries: BTreeMap<(u64, Vec<u8>), u64>,
    nodes: BTreeMap<u64, Node>,
}

/// What a path shows, data bytes aside.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    ino: u64,
    kind: u8,
    size: u64,
    nlink: u32,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    target: Vec<u8>,
}

type View = BTreeMap<Vec<u8>, Seen>;

impl Model {
    fn kind(&self, ino: u64) -> Option<&Kind> {
        self.nodes.get(&ino).map(|n| &n.kind)
    }
    fn dirs(&self) -> Vec<u64> {
        let mut v = vec![ROOT_INO];
        v.extend(
            self.entries
                .values()
                .filter(|i| self.kind(**i) == Some(&Kind::Dir)),
        );
        v
    }
    fn files(&self) -> Vec<((u64, Vec<u8>), u64)> {
        self.entries
            .iter()
            .filter(|(_, i)| self.kind(**i) == Some(&Kind::File))
            .map(|(k, i)| (k.clone(), *i))
            .collect()
    }
    fn links(&self, ino: u64) -> u32 {
        self.entries.values().filter(|&&i| i == ino).count() as u32
    }
    fn is_empty_dir(&self, d: u64) -> bool {
        !self.entries.keys().any(|k| k.0 == d)
    }
    /// Whether `d` is `anc` or below it.
    fn is_below(&self, d: u64, anc: u64) -> bool {
        let mut at = d;
        while at != ROOT_INO {
            if at == anc {
                return true;
            }
            at = match self.entries.iter().find(|(_, &i)| i == at) {
                Some((k, _)) => k.0,
                None => return false,
            };
        }
        anc == ROOT_INO
    }
    /// Drop nodes no entry names (unless still open).
    fn collect(&mut self, open: &[u64]) {
        let live: Vec<u64> = self.entries.values().copied().collect();
        self.nodes
            .retain(|i, _| *i == ROOT_INO || live.contains(i) || open.contains(i));
    }

    fn view(&self) -> View {
        let mut out = View::new();
        let mut stack = vec![(ROOT_INO, Vec::new())];
        while let Some((dir, path)) = stack.pop() {
            for ((d, name), &ino) in self.entries.range((dir, Vec::new())..) {
                if *d != dir {
                    break;
                }
                let mut p = path.clone();
                p.push(b'/');
                p.extend_from_slice(name);
                let n = &self.nodes[&ino];
                let (kind, size, nlink) = match n.kind {
                    Kind::File => (0, n.data.len() as u64, self.links(ino)),
                    Kind::Dir => {
                        let subdirs = self
                            .entries
                            .iter()
                            .filter(|(k, i)| k.0 == ino && self.kind(**i) == Some(&Kind::Dir))
                            .count() as u32;
                        stack.push((ino, p.clone()));
                        (1, 0, 2 + subdirs)
                    }
                    Kind::Symlink => (2, n.target.len() as u64, self.links(ino)),
                };
                out.insert(
                    p,
                    Seen {
                        ino,
                        kind,
                        size,
                        nlink,
                        xattrs: n.xattrs.clone(),
                        target: n.target.clone(),
                    },
                );
            }
        }
        out
    }
}

/// The namespace a mount shows.
fn fs_view(fs: &Fs) -> Result<View, String> {
    let mut out = View::new();
    let mut stack = vec![(ROOT_INO, Vec::new())];
    while let Some((dir, path)) = stack.pop() {
        let mut entries = Vec::new();
        fs.readdir(dir, 0, &mut |e| {
            entries.push(e.clone());
            true
        })
        .map_err(|e| format!("readdir {dir}: {e}"))?;
        for e in entries {
            if e.name == b"." || e.name == b".." {
                continue;
            }
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(&e.name);
            let a = fs
                .getattr(e.ino)
                .map_err(|err| format!("{}: entry to inode {}: {err}", show(&p), e.ino))?;
            let mut xattrs = BTreeMap::new();
            for name in fs.listxattr(e.ino).map_err(|err| err.to_string())? {
                let v = fs.getxattr(e.ino, &name).map_err(|err| err.to_string())?;
                xattrs.insert(name, v);
            }
            let (kind, size, target) = match a.kind {
                FileKind::File => (0, a.size, Vec::new()),
                FileKind::Dir => {
                    stack.push((e.ino, p.clone()));
                    (1, 0, Vec::new())
                }
                FileKind::Symlink => {
                    let t = fs.readlink(e.ino).map_err(|err| err.to_string())?;
                    (2, a.size, t)
                }
                k => return Err(format!("{}: unexpected kind {k:?}", show(&p))),
            };
            out.insert(
                p,
                Seen {
                    ino: e.ino,
                    kind,
                    size,
                    nlink: a.nlink,
                    xattrs,
                    target,
                },
            );
        }
    }
    Ok(out)
}

fn show(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

/// One operation of the workload: the log's events it spans, and whether it made
/// everything before it durable.
#[derive(Clone, Debug)]
struct Op {
    what: String,
    ev_start: usize,
    ev_end: usize,
    sync: bool,
}

/// A workload's record: the images before its log, the log, its operations and the
/// model after each (`states[k]`: after the first `k` operations).
struct Run {
    meta0: Vec<u8>,
    data0: Vec<u8>,
    events: Vec<Event>,
    ops: Vec<Op>,
    states: Vec<Model>,
}

fn opts(seed: u64, tiny: bool, mutation: Mutation) -> FsOptions {
    FsOptions {
        cache_bytes: if tiny { 384 << 10 } else { 8 << 20 },
        seed: Some(seed),
        mutation,
        ..FsOptions::default()
    }
}

/// Run a workload of `nops` operations on recording devices.
fn workload(seed: u64, nops: usize, tiny: bool, mutation: Mutation) -> Run {
    let mut rng = Rng(seed ^ 0xa70_111c);
    let (meta, data, log) = recorded_volume(META, DATA);
    let (meta0, data0) = (meta.image(), data.image());
    log.lock().armed = true;
    let events = |log: &Arc<Mutex<common::record::Log>>| log.lock().events.len();
    let mut ops = Vec::new();
    let mut states = vec![Model::default()];
    let mut m = Model::default();
    m.nodes.insert(
        ROOT_INO,
        Node {
            kind: Kind::Dir,
            data: Vec::new(),
            xattrs: BTreeMap::new(),
            target: Vec::new(),
        },
    );
    states[0] = m.clone();
    let ev = events(&log);
    let fs = Fs::mount_single(meta.clone(), data.clone(), opts(seed, tiny, mutation)).unwrap();
    ops.push(Op {
        what: "mount".into(),
        ev_start: ev,
        ev_end: events(&log),
        sync: false,
    });
    states.push(m.clone());
    let names: Vec<Vec<u8>> = (0..6).map(|i| format!("f{i}").into_bytes()).collect();
    let dnames: Vec<Vec<u8>> = (0..3).map(|i| format!("d{i}").into_bytes()).collect();
    let mut open: Vec<u64> = Vec::new();
    // A file being grown by appends into many extents, and how many are left.
    let mut grow: Option<(u64, u32)> = None;
    let mut step = 0u64;
    while ops.len() < nops {
        step += 1;
        let dirs = m.dirs();
        let dir = dirs[rng.below(dirs.len() as u64) as usize];
        let name = names[rng.below(names.len() as u64) as usize].clone();
        let existing = m.entries.get(&(dir, name.clone())).copied();
        let files = m.files();
        let some_file =
            (!files.is_empty()).then(|| files[rng.below(files.len() as u64) as usize].clone());
        let fill = |len: usize, salt: u64| -> Vec<u8> {
            (0..len)
                .map(|i| ((i as u64).wrapping_mul(31) ^ salt ^ step) as u8 | 1)
                .collect()
        };
        let ev = events(&log);
        let mut sync = false;
        let what: String;
        if let Some((ino, left)) = grow.filter(|(ino, _)| m.nodes.contains_key(ino)) {
            // One more single-block extent at the end of the growing file.
            let size = m.nodes[&ino].data.len() as u64;
            let off = size.div_ceil(BS) * BS + BS;
            let bytes = fill(100 + rng.below(3000) as usize, ino);
            fs.write(ino, off, &bytes).unwrap();
            let d = &mut m.nodes.get_mut(&ino).unwrap().data;
            d.resize(off as usize, 0);
            d.extend_from_slice(&bytes);
            grow = (left > 1).then_some((ino, left - 1));
            what = format!("append extent to {ino} at {off}");
        } else {
            grow = None;
            match rng.below(22) {
                0..=2 if existing.is_none() => {
                    let a = fs.mknod(dir, &name, 0o100644, 0, C).unwrap();
                    m.entries.insert((dir, name.clone()), a.ino);
                    m.nodes.insert(
                        a.ino,
                        Node {
                            kind: Kind::File,
                            data: Vec::new(),
                            xattrs: BTreeMap::new(),
                            target: Vec::new(),
                        },
                    );
                    if rng.below(4) == 0 {
                        grow = Some((a.ino, 20 + rng.below(12) as u32));
                    }
                    what = format!("create {dir}/{} = {}", show(&name), a.ino);
                }
                3..=5 if some_file.is_some() => {
                    let (_, ino) = some_file.unwrap();
                    let size = m.nodes[&ino].data.len() as u64;
                    let (off, len) = match rng.below(3) {
                        // In place.
                        0 if size > 0 => {
                            let off = rng.below(size);
                            (off, 1 + rng.below((size - off).min(20_000)))
                        }
                        // Extending.
                        1 => (size.saturating_sub(rng.below(3000)), 1 + rng.below(20_000)),
                        // Sparse, past the end.
                        _ => (size + rng.below(40_000), 1 + rng.below(5000)),
                    };
                    let bytes = fill(len as usize, ino ^ off);
                    assert_eq!(fs.write(ino, off, &bytes).unwrap() as u64, len);
                    let d = &mut m.nodes.get_mut(&ino).unwrap().data;
                    if d.len() < (off + len) as usize {
                        d.resize((off + len) as usize, 0);
                    }
                    d[off as usize..(off + len) as usize].copy_from_slice(&bytes);
                    what = format!("write {ino} {off}+{len} (size {size})");
                }
                6..=7 if some_file.is_some() => {
                    let (_, ino) = some_file.unwrap();
                    let size = m.nodes[&ino].data.len() as u64;
                    let new = if rng.below(2) == 0 {
                        rng.below(size + 1)
                    } else {
                        size + rng.below(30_000)
                    };
                    let set = SetAttr {
                        size: Some(new),
                        ..Default::default()
                    };
                    fs.setattr(ino, &set).unwrap();
                    m.nodes.get_mut(&ino).unwrap().data.resize(new as usize, 0);
                    what = format!("truncate {ino} {size} -> {new}");
                }
                8..=9 if existing.is_some_and(|i| m.kind(i) != Some(&Kind::Dir)) => {
                    let ino = existing.unwrap();
                    if rng.below(3) == 0 {
                        // Open, unlink (an op of its own), and close now or never.
                        fs.open(ino).unwrap();
                        open.push(ino);
                    }
                    fs.unlink(dir, &name).unwrap();
                    m.entries.remove(&(dir, name.clone()));
                    what = format!("unlink {dir}/{} ({ino})", show(&name));
                }
                10 if !open.is_empty() && rng.below(2) == 0 => {
                    let ino = open.remove(rng.below(open.len() as u64) as usize);
                    fs.release(ino).unwrap();
                    what = format!("release {ino}");
                }
                11..=12 if some_file.is_some() => {
                    // Rename a file over another name, in this directory or another.
                    let ((sd, sn), ino) = some_file.unwrap();
                    let nd = if rng.below(2) == 0 { sd } else { dir };
                    let nn = names[rng.below(names.len() as u64) as usize].clone();
                    let target = m.entries.get(&(nd, nn.clone())).copied();
                    if target.is_some_and(|t| m.kind(t) == Some(&Kind::Dir)) {
                        continue;
                    }
                    fs.rename(sd, &sn, nd, &nn, RenameFlags::default()).unwrap();
                    if target != Some(ino) {
                        m.entries.remove(&(sd, sn.clone()));
                        m.entries.insert((nd, nn.clone()), ino);
                    }
                    what = format!(
                        "rename {sd}/{} over {nd}/{} ({target:?})",
                        show(&sn),
                        show(&nn)
                    );
                }
                13 if existing.is_none() && some_file.is_some() => {
                    let (_, ino) = some_file.unwrap();
                    fs.link(ino, dir, &name).unwrap();
                    m.entries.insert((dir, name.clone()), ino);
                    what = format!("link {ino} as {dir}/{}", show(&name));
                }
                14 if existing.is_none() => {
                    let t = fill(1 + rng.below(300) as usize, 7);
                    let t: Vec<u8> = t.iter().map(|b| b'a' + b % 26).collect();
                    let a = fs.symlink(dir, &name, &t, C).unwrap();
                    m.entries.insert((dir, name.clone()), a.ino);
                    m.nodes.insert(
                        a.ino,
                        Node {
                            kind: Kind::Symlink,
                            data: Vec::new(),
                            xattrs: BTreeMap::new(),
                            target: t,
                        },
                    );
                    what = format!("symlink {dir}/{}", show(&name));
                }
                15..=16 if existing.is_some() => {
                    let ino = existing.unwrap();
                    let k = rng.below(5);
                    let xn = match k {
                        0 | 1 => format!("user.x{k}"),
                        2 => format!("scoutfs.totl.t.0.0.{}", rng.below(3)),
                        3 => format!("scoutfs.indx.t.1.{}", rng.below(3)),
                        // Its srch entries are swept with the rest.
                        _ => "scoutfs.srch.s".to_string(),
                    }
                    .into_bytes();
                    if rng.below(3) == 0 {
                        match fs.removexattr(ino, &xn) {
                            Ok(()) => {}
                            Err(e) if e.errno() == 61 => {}
                            Err(e) => panic!("removexattr: {e}"),
                        }
                        m.nodes.get_mut(&ino).unwrap().xattrs.remove(&xn);
                        what = format!("removexattr {ino}");
                    } else {
                        let v = match k {
                            0 | 1 => fill(rng.below(9000) as usize, 3),
                            2 => rng.below(1000).to_string().into_bytes(),
                            _ => Vec::new(),
                        };
                        fs.setxattr(ino, &xn, &v, XattrSet::Any).unwrap();
                        m.nodes.get_mut(&ino).unwrap().xattrs.insert(xn, v);
                        what = format!("setxattr {ino}");
                    }
                }
                17 => {
                    let dn = dnames[rng.below(dnames.len() as u64) as usize].clone();
                    match m.entries.get(&(dir, dn.clone())).copied() {
                        None => {
                            let a = fs.mkdir(dir, &dn, 0o755, C).unwrap();
                            m.entries.insert((dir, dn.clone()), a.ino);
                            m.nodes.insert(
                                a.ino,
                                Node {
                                    kind: Kind::Dir,
                                    data: Vec::new(),
                                    xattrs: BTreeMap::new(),
                                    target: Vec::new(),
                                },
                            );
                            what = format!("mkdir {dir}/{}", show(&dn));
                        }
                        Some(d) if m.kind(d) == Some(&Kind::Dir) && m.is_empty_dir(d) => {
                            fs.rmdir(dir, &dn).unwrap();
                            m.entries.remove(&(dir, dn.clone()));
                            what = format!("rmdir {dir}/{}", show(&dn));
                        }
                        Some(d) if m.kind(d) == Some(&Kind::Dir) => {
                            // Move the directory somewhere not below itself.
                            let nd = dirs[rng.below(dirs.len() as u64) as usize];
                            let nn = dnames[rng.below(dnames.len() as u64) as usize].clone();
                            if m.is_below(nd, d) || m.entries.contains_key(&(nd, nn.clone())) {
                                continue;
                            }
                            fs.rename(dir, &dn, nd, &nn, RenameFlags::default())
                                .unwrap();
                            m.entries.remove(&(dir, dn.clone()));
                            m.entries.insert((nd, nn.clone()), d);
                            what = format!("move dir {d} to {nd}/{}", show(&nn));
                        }
                        Some(_) => continue,
                    }
                }
                18..=19 => {
                    sync = true;
                    match some_file {
                        Some((_, ino)) if rng.below(2) == 0 => {
                            fs.fsync(ino, false).unwrap();
                            what = format!("fsync {ino}");
                        }
                        _ => {
                            fs.sync().unwrap();
                            what = "sync".into();
                        }
                    }
                }
                _ => continue,
            }
        }
        m.collect(&open);
        ops.push(Op {
            what,
            ev_start: ev,
            ev_end: events(&log),
            sync,
        });
        states.push(m.clone());
    }
    assert_eq!(
        fs.overruns(),
        0,
        "seed {seed}: operations changed more than they declared"
    );
    drop(fs);
    let events = std::mem::take(&mut log.lock().events);
    Run {
        meta0,
        data0,
        events,
        ops,
        states,
    }
}

/// The states a power cut before event `i` may leave: `lo..=hi`.
fn allowed(run: &Run, i: usize) -> (usize, usize) {
    let mut lo = 0;
    let mut hi = 0;
    for (n, op) in run.ops.iter().enumerate() {
        if op.ev_end <= i {
            hi = n + 1;
            if op.sync {
                lo = n + 1;
            }
        } else if op.ev_start <= i {
            hi = n + 1;
        }
    }
    (lo, hi)
}

/// Mount the devices a power cut before event `i` leaves and check them.
fn verify(run: &Run, i: usize, sweep: &Sweep, seed: u64, views: &[View]) -> Result<(), String> {
    let (meta, data) = sweep.crash(seed ^ (i as u64).wrapping_mul(0x9e37));
    let md: Arc<dyn BlockDevice> = meta;
    let dd: Arc<dyn BlockDevice> = data;
    let (lo, hi) = allowed(run, i);
    let fs = Fs::mount_single(
        md.clone(),
        dd.clone(),
        opts(seed ^ 5, false, Mutation::None),
    )
    .map_err(|e| format!("remount failed: {e}"))?;
    let got = fs_view(&fs)?;
    // The earliest state the namespace matches (later ones with the same namespace
    // differ in bytes written, which are checked below against all of them).
    let Some(k) = (lo..=hi).find(|&k| views[k] == got) else {
        let near = &views[hi];
        let mut diff = Vec::new();
        for (p, s) in near.iter() {
            if got.get(p) != Some(s) {
                diff.push(format!("{}: want {s:?} got {:?}", show(p), got.get(p)));
            }
        }
        for (p, s) in got.iter() {
            if !near.contains_key(p) {
                diff.push(format!("{}: extra {s:?}", show(p)));
            }
        }
        diff.truncate(6);
        return Err(format!(
            "the namespace is no state {lo}..={hi} allows (ops {:?}); against {hi}: {diff:#?}",
            &run.ops[lo.saturating_sub(1)..hi.min(run.ops.len())]
                .iter()
                .map(|o| &o.what)
                .collect::<Vec<_>>()
        ));
    };
    // File bytes: the state's, or a later one's (written in place, or the namespace of a
    // later state is the same).
    for (p, s) in &got {
        if s.kind != 0 {
            continue;
        }
        let want = &run.states[k].nodes[&s.ino].data;
        let bytes = fs
            .read(s.ino, 0, s.size as u32 + 1)
            .map_err(|e| format!("read {}: {e}", show(p)))?;
        if bytes.len() != want.len() {
            return Err(format!(
                "{}: read {} bytes of {}",
                show(p),
                bytes.len(),
                want.len()
            ));
        }
        for (at, (&b, &w)) in bytes.iter().zip(want).enumerate() {
            if b != w
                && !(k..=hi).any(|j| {
                    run.states[j].nodes.get(&s.ino).and_then(|n| n.data.get(at)) == Some(&b)
                })
            {
                let hist: Vec<String> = run.ops[..hi.min(run.ops.len())]
                    .iter()
                    .enumerate()
                    .filter(|(_, o)| o.what.contains(&s.ino.to_string()) || o.sync)
                    .map(|(n, o)| format!("{}: {}", n + 1, o.what))
                    .collect();
                return Err(format!(
                    "{} (inode {}) byte {at} of {}: {b} where state {k} has {w} (states \
                     {lo}..={hi}); its operations and the syncs: {hist:?}",
                    show(p),
                    s.ino,
                    s.size
                ));
            }
        }
    }
    tags_agree(&fs)?;
    // Bytes past the size are zeros once the file is extended.
    for s in got.values().filter(|s| s.kind == 0).take(3) {
        let set = SetAttr {
            size: Some(s.size + 2 * BS),
            ..Default::default()
        };
        fs.setattr(s.ino, &set).map_err(|e| e.to_string())?;
        let tail = fs
            .read(s.ino, s.size, 2 * BS as u32)
            .map_err(|e| e.to_string())?;
        if let Some(at) = tail.iter().position(|&b| b != 0) {
            return Err(format!(
                "inode {}: byte {} past the old size {} is {} after extending",
                s.ino,
                s.size + at as u64,
                s.size,
                tail[at]
            ));
        }
    }
    fs.unmount().map_err(|e| format!("unmount: {e}"))?;
    let r = check::check(&md, &dd).map_err(|e| format!("check: {e}"))?;
    if !r.is_clean() {
        return Err(format!("check: {:#?}", r.problems));
    }
    Ok(())
}

static POINTS: AtomicU64 = AtomicU64::new(0);

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Sweep `points` crash points of one workload (every event if it has fewer); returns
/// the points verified and the failures (point, why).
fn sweep(seed: u64, tiny: bool, mutation: Mutation, points: u64) -> (u64, Vec<(usize, String)>) {
    let run = workload(seed, 240, tiny, mutation);
    let views: Vec<View> = run.states.iter().map(Model::view).collect();
    let n = run.events.len();
    let mut rng = Rng(seed ^ 0x5eed);
    // Crash points spread over the log: a random one in each of `points` slices, and
    // the very end.
    let mut at: Vec<usize> = (0..points)
        .map(|p| {
            let a = (p as usize * n) / points as usize;
            let b = ((p as usize + 1) * n) / points as usize;
            a + rng.below((b - a).max(1) as u64) as usize
        })
        .chain([n])
        .collect();
    at.dedup();
    let mut sweep = Sweep::new(run.meta0.clone(), run.data0.clone());
    let mut failures = Vec::new();
    let mut next = 0;
    let mut verified = 0;
    for &i in &at {
        while next < i {
            sweep.apply(&run.events[next]);
            next += 1;
        }
        POINTS.fetch_add(1, Ordering::Relaxed);
        verified += 1;
        if let Err(why) = verify(&run, i, &sweep, seed, &views) {
            failures.push((i, why));
            if mutation != Mutation::None {
                break;
            }
        }
    }
    (verified, failures)
}

/// Crash points each of the four sweep tests verifies at least with the default seeds
/// and points: ten thousand in all.
const MIN_POINTS_PER_TEST: u64 = 2500;

fn sweep_seeds(first: u64, tiny: bool) {
    let defaults = std::env::var_os("SCOUTFS_FS_ATOMIC_SEEDS").is_none()
        && std::env::var_os("SCOUTFS_FS_ATOMIC_POINTS").is_none();
    let seeds = env("SCOUTFS_FS_ATOMIC_SEEDS", 8);
    let points = env("SCOUTFS_FS_ATOMIC_POINTS", 480);
    let mut verified = 0;
    for seed in first..first + seeds {
        let (n, f) = sweep(seed, tiny, Mutation::None, points);
        verified += n;
        if let Some((i, why)) = f.first() {
            panic!(
                "seed {seed} (tiny cache {tiny}): {} of the crash points failed; the first, \
                 before event {i}: {why}",
                f.len()
            );
        }
    }
    eprintln!(
        "{verified} crash points verified by this test ({} so far by this binary)",
        POINTS.load(Ordering::Relaxed)
    );
    if defaults {
        assert!(
            verified >= MIN_POINTS_PER_TEST,
            "only {verified} crash points: the workloads have too few device events"
        );
    }
}

#[test]
fn every_operation_is_atomic_across_a_crash() {
    sweep_seeds(1000, false);
}

#[test]
fn every_operation_is_atomic_across_a_crash_with_a_tiny_cache() {
    sweep_seeds(2000, true);
}

#[test]
fn every_operation_is_atomic_across_a_crash_more_seeds() {
    sweep_seeds(3000, false);
}

#[test]
fn every_operation_is_atomic_across_a_crash_with_a_tiny_cache_more_seeds() {
    sweep_seeds(4000, true);
}

/// A mutation must be caught by some seed's sweep.
fn caught(mutation: Mutation, tiny: bool) -> String {
    for seed in 0..12 {
        if let Some((_, why)) = sweep(seed, tiny, mutation, 240).1.into_iter().next() {
            return why;
        }
    }
    panic!("the sweep did not catch {mutation:?}");
}

#[test]
fn a_commit_inside_an_operation_is_caught() {
    let why = caught(Mutation::EarlyCommit, true);
    eprintln!("early commit caught: {why}");
}

#[test]
fn a_truncate_that_zeroes_in_place_is_caught() {
    let why = caught(Mutation::InPlaceTruncateZero, false);
    eprintln!("in-place truncate zeroing caught: {why}");
}

/// The last `n` dot-separated numbers of an xattr name.
fn name_numbers(name: &[u8], n: usize) -> Vec<u64> {
    let s = String::from_utf8_lossy(name);
    let mut v: Vec<u64> = s
        .rsplit('.')
        .take(n)
        .filter_map(|f| f.parse().ok())
        .collect();
    v.reverse();
    v
}

/// The totals and the index a mount reads are what its files' `.totl.` and `.indx.`
/// xattrs (listed and hidden) give.
fn tags_agree(fs: &Fs) -> Result<(), String> {
    let mut inos = BTreeMap::new();
    for s in fs_view(fs)?.values() {
        inos.insert(s.ino, ());
    }
    let mut totals: BTreeMap<Vec<u64>, (u64, u64)> = BTreeMap::new();
    let mut index = Vec::new();
    for &ino in inos.keys() {
        let mut names = fs.listxattr(ino).map_err(|e| e.to_string())?;
        names.extend(fs.list_hidden_xattrs(ino).map_err(|e| e.to_string())?);
        for name in names {
            let Ok(Some((tags, _))) = parse_tags(&name) else {
                continue;
            };
            if tags.totl {
                let v = fs.getxattr(ino, &name).map_err(|e| e.to_string())?;
                let v: u64 = String::from_utf8_lossy(&v).parse().map_err(|_| "a value")?;
                let t = totals.entry(name_numbers(&name, 3)).or_default();
                *t = (t.0 + v, t.1 + 1);
            }
            if tags.indx {
                let p = name_numbers(&name, 2);
                index.push(IndxEntry {
                    major: p[0] as u8,
                    minor: p[1],
                    ino,
                });
            }
        }
    }
    let want: Vec<(Vec<u64>, (u64, u64))> = totals.into_iter().collect();
    let got: Vec<(Vec<u64>, (u64, u64))> = fs
        .read_xattr_totals([0; 3], usize::MAX)
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|t| (t.name.to_vec(), (t.total, t.count)))
        .collect();
    if got != want {
        return Err(format!("totals {got:?}, the xattrs give {want:?}"));
    }
    index.sort();
    index.dedup();
    let last = IndxEntry {
        major: u8::MAX,
        minor: u64::MAX,
        ino: u64::MAX,
    };
    let got = fs
        .read_xattr_index(IndxEntry::default(), last, usize::MAX)
        .map_err(|e| e.to_string())?;
    if got != index {
        return Err(format!("index {got:?}, the xattrs give {index:?}"));
    }
    Ok(())
}

fn lookup(fs: &Fs, name: &[u8]) -> Option<Attr> {
    match fs.lookup(ROOT_INO, name) {
        Ok(a) => Some(a),
        Err(e) if e.errno() == 2 => None,
        Err(e) => panic!("lookup: {e}"),
    }
}

/// A file of `extents` single-block extents (a hole between each two).
fn many_extents(fs: &Fs, name: &[u8], extents: u64, byte: u8) -> u64 {
    let ino = fs.mknod(ROOT_INO, name, 0o100644, 0, C).unwrap().ino;
    for e in 0..extents {
        fs.write(ino, e * 2 * BS, &vec![byte; BS as usize]).unwrap();
    }
    ino
}

/// Finding 1(a): write a temporary file, fsync it, rename it over a target of many
/// extents — at every crash point the target name exists, with the old contents or the
/// new, and the temporary name exists only while the rename is not durable.
#[test]
fn rename_over_a_many_extent_target_is_atomic() {
    let points = scripted(
        |fs| {
            many_extents(fs, b"target", 200, 7);
        },
        |fs| {
            let t = fs.mknod(ROOT_INO, b"tmp", 0o100644, 0, C).unwrap().ino;
            fs.write(t, 0, &[9; 5000]).unwrap();
            fs.fsync(t, false).unwrap();
            fs.rename(
                ROOT_INO,
                b"tmp",
                ROOT_INO,
                b"target",
                RenameFlags::default(),
            )
            .unwrap();
            fs.sync().unwrap();
        },
        |fs| {
            let target = lookup(fs, b"target").ok_or("the target name is gone")?;
            let tmp = lookup(fs, b"tmp");
            let bytes = fs.read(target.ino, 0, 8).map_err(|e| e.to_string())?;
            match (bytes[0], tmp) {
                (9, None) => Ok(()),
                (7, _) => Ok(()),
                (b, t) => Err(format!("target starts with {b}, tmp {t:?}")),
            }
        },
    );
    assert!(points > 10);
}

/// Finding 1(c): unlink a file of many extents (3,000: its deletion steps commit between
/// them) — at every crash point the name and the inode are both there, or both gone
/// with the data freed or orphaned for the next mount to finish (`check` proves no leak).
#[test]
fn unlink_of_a_many_extent_file_is_atomic() {
    scripted(
        |fs| {
            many_extents(fs, b"big", 3000, 3);
        },
        |fs| {
            fs.unlink(ROOT_INO, b"big").unwrap();
            fs.sync().unwrap();
        },
        |fs| match lookup(fs, b"big") {
            Some(a) if a.nlink == 1 && a.blocks == 3000 * BS / 512 => Ok(()),
            Some(a) => Err(format!("half unlinked: {a:?}")),
            None => Ok(()),
        },
    );
}

/// Finding 2: a shrinking truncate never zeroes committed bytes — at every crash point
/// the file has its old size and bytes, or the new size.
#[test]
fn a_shrinking_truncate_keeps_the_old_bytes_until_it_commits() {
    scripted(
        |fs| {
            let f = fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap().ino;
            fs.write(f, 0, &[5; 8000]).unwrap();
        },
        |fs| {
            let f = fs.lookup(ROOT_INO, b"f").unwrap().ino;
            let set = SetAttr {
                size: Some(4),
                ..Default::default()
            };
            fs.setattr(f, &set).unwrap();
            fs.write(f, 6000, &[6; 10]).unwrap();
            fs.sync().unwrap();
        },
        |fs| {
            let a = lookup(fs, b"f").ok_or("f is gone")?;
            let bytes = fs.read(a.ino, 0, 9000).map_err(|e| e.to_string())?;
            let old = vec![5u8; 8000];
            let mut new = vec![0u8; 6010];
            new[..4].fill(5);
            new[6000..].fill(6);
            if bytes == old || bytes == new || bytes == old[..4] {
                Ok(())
            } else {
                Err(format!("size {} with other bytes", bytes.len()))
            }
        },
    );
}

/// Finding 3: an overwrite that grows a fsynced 100-byte file, lost in a crash, leaves
/// no bytes past the size: extending the file shows zeros.
#[test]
fn a_lost_write_leaves_no_bytes_past_the_size() {
    scripted(
        |fs| {
            let f = fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap().ino;
            fs.write(f, 0, &[1; 100]).unwrap();
        },
        |fs| {
            let f = fs.lookup(ROOT_INO, b"f").unwrap().ino;
            fs.write(f, 0, &[2; 2000]).unwrap();
            fs.sync().unwrap();
        },
        |fs| {
            let a = lookup(fs, b"f").ok_or("f is gone")?;
            let set = SetAttr {
                size: Some(4096),
                ..Default::default()
            };
            fs.setattr(a.ino, &set).map_err(|e| e.to_string())?;
            let bytes = fs.read(a.ino, 0, 4096).map_err(|e| e.to_string())?;
            let tail = &bytes[a.size as usize..];
            match tail.iter().position(|&b| b != 0) {
                Some(at) => Err(format!(
                    "size {}: byte {} past it is {}",
                    a.size,
                    a.size as usize + at,
                    tail[at]
                )),
                None => Ok(()),
            }
        },
    );
}

/// A truncate of a file of many extents (3,000: enough that its steps fill transactions
/// and commit between them) goes in steps behind a truncate record: at every crash point
/// the file has its old size or the new one, and `check` (which allows extents past the
/// size only under a truncate record) is clean after the next mount finished what the
/// record said.
#[test]
fn a_truncate_of_many_extents_is_finished_by_the_next_mount() {
    let points = scripted(
        |fs| {
            many_extents(fs, b"big", 3000, 4);
        },
        |fs| {
            let f = fs.lookup(ROOT_INO, b"big").unwrap().ino;
            let set = SetAttr {
                size: Some(3 * BS + 100),
                ..Default::default()
            };
            fs.setattr(f, &set).unwrap();
            fs.sync().unwrap();
        },
        |fs| {
            let a = lookup(fs, b"big").ok_or("the file is gone")?;
            let old = 5999 * BS;
            match a.size {
                s if s == old && a.blocks == 3000 * BS / 512 => Ok(()),
                s if s == 3 * BS + 100 && a.blocks == 2 * BS / 512 => Ok(()),
                s => Err(format!("size {s}, {} sectors", a.blocks)),
            }
        },
    );
    assert!(points > 10, "{points} crash points");
}

/// A shrinking truncate on a full data device cannot copy its last block, so it leaves
/// the block as it is and the next write past the size commits first: at every crash
/// point the file is whole in one of its three states, and bytes past a size read zero.
#[test]
fn a_truncate_on_a_full_data_device_zeroes_only_past_the_committed_size() {
    scripted(
        |fs| {
            let f = fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap().ino;
            fs.write(f, 0, &[5; 8000]).unwrap();
            let fill = fs.mknod(ROOT_INO, b"fill", 0o100644, 0, C).unwrap().ino;
            let chunk = vec![1u8; 1 << 20];
            let mut off = 0;
            while let Ok(n) = fs.write(fill, off, &chunk) {
                if n == 0 {
                    break;
                }
                off += n as u64;
            }
            assert!(
                off > 0 && fs.statfs().unwrap().bavail < 16,
                "the data device is full"
            );
        },
        |fs| {
            let f = fs.lookup(ROOT_INO, b"f").unwrap().ino;
            let set = SetAttr {
                size: Some(100),
                ..Default::default()
            };
            fs.setattr(f, &set).unwrap();
            fs.write(f, 3000, &[6; 10]).unwrap();
            fs.sync().unwrap();
        },
        |fs| {
            let a = lookup(fs, b"f").ok_or("f is gone")?;
            let bytes = fs.read(a.ino, 0, 9000).map_err(|e| e.to_string())?;
            let old = vec![5u8; 8000];
            let mut new = vec![0u8; 3010];
            new[..100].fill(5);
            new[3000..].fill(6);
            if bytes == old || bytes == new || bytes == old[..100] {
                Ok(())
            } else {
                Err(format!("size {} with other bytes", bytes.len()))
            }
        },
    );
}

/// A fallocate past the free space allocates in steps and gives everything back: at
/// every crash point the file is empty (any extents left past its size are counted in
/// it and `check` accepts them), and after the sync its blocks are all given back.
#[test]
fn a_failed_fallocate_is_whole_or_given_back_at_every_crash_point() {
    let points = scripted(
        |fs| {
            fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap();
        },
        |fs| {
            let f = fs.lookup(ROOT_INO, b"f").unwrap().ino;
            let want = (fs.statfs().unwrap().bavail + 64) * BS;
            assert_eq!(fs.fallocate(f, 0, want, false).unwrap_err().errno(), 28);
            fs.sync().unwrap();
        },
        |fs| {
            let a = lookup(fs, b"f").ok_or("f is gone")?;
            if a.size != 0 {
                return Err(format!("size {} after a failed fallocate", a.size));
            }
            Ok(())
        },
    );
    assert!(points > 10, "{points} crash points");
}

fn set_tag(fs: &Fs, ino: u64, name: &str, value: &str) {
    fs.setxattr(ino, name.as_bytes(), value.as_bytes(), XattrSet::Any)
        .unwrap();
}

/// Setting, replacing and removing `.totl.` and `.indx.` xattrs, some of them in one
/// transaction: at every crash point the totals and the index are what the file's
/// xattrs give (each change whole or absent), and `check` agrees.
#[test]
fn tagged_xattr_changes_are_atomic() {
    let points = scripted(
        |fs| {
            let f = fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap().ino;
            set_tag(fs, f, "scoutfs.totl.a.1.2.3", "10");
            set_tag(fs, f, "scoutfs.hide.indx.a.5.100", "");
            let g = fs.mknod(ROOT_INO, b"g", 0o100644, 0, C).unwrap().ino;
            set_tag(fs, g, "scoutfs.totl.b.1.2.3", "1");
        },
        |fs| {
            let f = fs.lookup(ROOT_INO, b"f").unwrap().ino;
            let g = fs.lookup(ROOT_INO, b"g").unwrap().ino;
            set_tag(fs, f, "scoutfs.totl.a.1.2.3", "25");
            set_tag(fs, g, "scoutfs.totl.c.4.5.6", "7");
            fs.sync().unwrap();
            fs.removexattr(f, b"scoutfs.totl.a.1.2.3").unwrap();
            set_tag(fs, g, "scoutfs.hide.indx.b.5.100", "");
            set_tag(fs, g, "scoutfs.indx.c.6.1", "");
            fs.removexattr(f, b"scoutfs.hide.indx.a.5.100").unwrap();
            fs.sync().unwrap();
            for i in 0..40 {
                set_tag(fs, f, &format!("scoutfs.totl.m{i}.{}.0.0", i % 4), "3");
            }
            fs.sync().unwrap();
        },
        tags_agree,
    );
    assert!(points > 10, "{points} crash points");
}

/// Deleting an inode with hundreds of tagged xattrs goes in steps (the orphan item
/// first): at every crash point the file is whole or gone or an orphan the next mount
/// finishes, and the totals and the index agree with the xattrs that are left.
#[test]
fn deleting_an_inode_with_tagged_xattrs_is_atomic() {
    let points = scripted(
        |fs| {
            let keep = fs.mknod(ROOT_INO, b"keep", 0o100644, 0, C).unwrap().ino;
            set_tag(fs, keep, "scoutfs.totl.k.1.0.0", "5");
            set_tag(fs, keep, "scoutfs.indx.k.1.1", "");
            let big = many_extents(fs, b"big", 20, 2);
            for i in 0..300u64 {
                set_tag(
                    fs,
                    big,
                    &format!("scoutfs.totl.b{i}.{}.0.0", i % 5),
                    &i.to_string(),
                );
                if i % 3 == 0 {
                    set_tag(fs, big, &format!("scoutfs.hide.indx.b{i}.1.{i}"), "");
                }
            }
        },
        |fs| {
            fs.unlink(ROOT_INO, b"big").unwrap();
            fs.sync().unwrap();
        },
        |fs| {
            tags_agree(fs)?;
            match lookup(fs, b"big") {
                Some(a) => {
                    let n = fs.listxattr(a.ino).map_err(|e| e.to_string())?.len();
                    if n != 300 {
                        return Err(format!("big has {n} of its 300 listed xattrs"));
                    }
                    Ok(())
                }
                None => Ok(()),
            }
        },
    );
    assert!(points > 10, "{points} crash points");
}
