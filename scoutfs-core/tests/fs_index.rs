#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The inode seq indexes and data_version (issue 14) against a model.
//!
//! The property test runs random creates (files, directories, symlinks), writes,
//! truncates, fallocates, chmods, xattr sets, links, renames, unlinks and rmdirs with
//! syncs and remounts interleaved, and after every operation walks both indexes whole (in
//! pages of a few entries, each resumed from the last entry's `next_pos`) and from a
//! position saved earlier. A single mount's open transaction has the seq
//! `committed_seq() + 1`, so the model knows each inode's meta_seq and data_seq exactly:
//! a walk must return every live inode whose seq is past the position and at most the
//! horizon, exactly once, at its seq, in `(seq, ino)` order — none of an inode that is
//! gone, no directory or symlink in the data_seq index — and every file's data_version
//! must have moved exactly on the operations that may change its contents.
//!
//! The unit tests pin the clamp to the committed horizon, the position arithmetic of a
//! walk, data_version and data_seq per operation, and walks after a remount, on a
//! read-only mount, and across a crash whose open transaction the next mount resumes.

mod common;

use common::{assert_fs_clean, proptest_cases, volume_of, Devices};
use proptest::prelude::*;
use scoutfs_core::fs::*;
use std::collections::BTreeMap;

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};

fn opts() -> FsOptions {
    FsOptions {
        seed: Some(11),
        // Reads would move meta_seq (an access time is an inode change): none here
        // read, and none should.
        atime: AtimeMode::Never,
        ..FsOptions::default()
    }
}

fn mount((meta, data): &Devices) -> Fs {
    Fs::mount_single(meta.clone(), data.clone(), opts()).unwrap()
}

fn mount_ro((meta, data): &Devices) -> Fs {
    let o = FsOptions {
        read_only: true,
        ..opts()
    };
    Fs::mount_single(meta.clone(), data.clone(), o).unwrap()
}

/// A whole walk of `index` from `first`, in pages of `page` entries.
fn walk_from(fs: &Fs, index: SeqIndex, first: IndexPos, page: usize) -> Vec<IndexEntry> {
    let mut out = Vec::new();
    let mut pos = first;
    loop {
        let got = fs.walk_inodes(index, pos, IndexPos::MAX, page).unwrap();
        assert!(got.len() <= page);
        out.extend(&got);
        match got.last() {
            Some(e) if got.len() == page => pos = e.next_pos(),
            _ => return out,
        }
    }
}

fn walk(fs: &Fs, index: SeqIndex) -> Vec<IndexEntry> {
    walk_from(fs, index, IndexPos::MIN, 1000)
}

/// The entry of `ino` in a walk.
fn seq_in(entries: &[IndexEntry], ino: u64) -> Option<u64> {
    entries.iter().find(|e| e.ino == ino).map(|e| e.major)
}

fn size(n: u64) -> SetAttr {
    SetAttr {
        size: Some(n),
        ..Default::default()
    }
}

/// What the model knows of an inode.
#[derive(Clone, Debug)]
struct Node {
    kind: FileKind,
    nlink: u32,
    size: u64,
    meta_seq: u64,
    data_seq: u64,
    data_version: u64,
}

#[derive(Debug, Default)]
struct Model {
    nodes: BTreeMap<u64, Node>,
    /// Directory entries: (directory, name) → inode.
    entries: BTreeMap<(u64, Vec<u8>), u64>,
}

impl Model {
    fn of_kind(&self, k: FileKind) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.kind == k)
            .map(|(i, _)| *i)
            .collect()
    }

    fn names(&self) -> Vec<(u64, Vec<u8>)> {
        self.entries.keys().cloned().collect()
    }

    fn parent(&self, dir: u64) -> Option<u64> {
        self.entries
            .iter()
            .find(|(_, i)| **i == dir)
            .map(|((d, _), _)| *d)
    }

    /// Whether `d` is `anc` or below it.
    fn is_below(&self, mut d: u64, anc: u64) -> bool {
        loop {
            if d == anc {
                return true;
            }
            match self.parent(d) {
                Some(p) => d = p,
                None => return false,
            }
        }
    }

    fn is_empty_dir(&self, d: u64) -> bool {
        !self.entries.keys().any(|(p, _)| *p == d)
    }

    fn touch(&mut self, ino: u64, seq: u64) {
        if let Some(n) = self.nodes.get_mut(&ino) {
            n.meta_seq = seq;
        }
    }

    fn contents(&mut self, ino: u64, seq: u64) {
        let n = self.nodes.get_mut(&ino).unwrap();
        n.meta_seq = seq;
        n.data_seq = seq;
        n.data_version += 1;
    }

    /// One link of `ino` gone (`all`: a directory's): deleted when none are left.
    fn drop_link(&mut self, ino: u64, all: bool, seq: u64) {
        let n = self.nodes.get_mut(&ino).unwrap();
        n.nlink = if all { 0 } else { n.nlink - 1 };
        if n.nlink == 0 {
            self.nodes.remove(&ino);
        } else {
            n.meta_seq = seq;
        }
    }

    /// The entries a walk of `index` from `after` (exclusive) to `horizon` returns.
    fn expect(&self, index: SeqIndex, after: u64, horizon: u64) -> Vec<IndexEntry> {
        let mut v: Vec<IndexEntry> = self
            .nodes
            .iter()
            .filter_map(|(&ino, n)| {
                let seq = match index {
                    SeqIndex::Meta => n.meta_seq,
                    SeqIndex::Data if n.kind == FileKind::File => n.data_seq,
                    SeqIndex::Data => return None,
                };
                (seq > after && seq <= horizon).then_some(IndexEntry {
                    major: seq,
                    minor: 0,
                    ino,
                })
            })
            .collect();
        v.sort();
        v
    }
}

#[derive(Clone, Debug)]
enum Op {
    Create(u8, u8, u8),
    Write(u8, u32, u16),
    /// A file, a size, and whether to keep the size the file has.
    Truncate(u8, u32, bool),
    Fallocate(u8, u32, u16, bool),
    Chmod(u8),
    SetXattr(u8, u8),
    Link(u8, u8, u8),
    Rename(u8, u8, u8),
    Unlink(u8),
    Rmdir(u8),
    Sync,
    Remount,
    SavePos,
}

fn op() -> impl Strategy<Value = Op> {
    let n = any::<u8>();
    prop_oneof![
        10 => (n, n, 0u8..3).prop_map(|(a, b, k)| Op::Create(a, b, k)),
        5 => (n, 0u32..200_000, 0u16..20_000).prop_map(|(a, o, l)| Op::Write(a, o, l)),
        3 => (n, 0u32..200_000, any::<bool>()).prop_map(|(a, s, k)| Op::Truncate(a, s, k)),
        2 => (n, 0u32..200_000, 1u16..20_000, any::<bool>())
            .prop_map(|(a, o, l, k)| Op::Fallocate(a, o, l, k)),
        2 => n.prop_map(Op::Chmod),
        2 => (n, n).prop_map(|(a, b)| Op::SetXattr(a, b)),
        2 => (n, n, n).prop_map(|(a, b, c)| Op::Link(a, b, c)),
        3 => (n, n, n).prop_map(|(a, b, c)| Op::Rename(a, b, c)),
        2 => n.prop_map(Op::Unlink),
        1 => n.prop_map(Op::Rmdir),
        3 => Just(Op::Sync),
        1 => Just(Op::Remount),
        2 => Just(Op::SavePos),
    ]
}

fn pick<T: Clone>(v: &[T], i: u8) -> Option<T> {
    (!v.is_empty()).then(|| v[i as usize % v.len()].clone())
}

fn name(i: u8) -> Vec<u8> {
    format!("n{}", i % 12).into_bytes()
}

struct Harness {
    dev: Devices,
    fs: Option<Fs>,
    m: Model,
    /// A horizon saved earlier: walks resume after it.
    saved: u64,
    page: usize,
}

impl Harness {
    fn fs(&self) -> &Fs {
        self.fs.as_ref().unwrap()
    }

    /// The seq of the transaction the last operation changed things in (the one open
    /// now: nothing commits after an operation's changes).
    fn open_seq(&self) -> u64 {
        self.fs().committed_seq().unwrap() + 1
    }

    fn step(&mut self, op: &Op) {
        let m = &self.m;
        let dirs = m.of_kind(FileKind::Dir);
        let files = m.of_kind(FileKind::File);
        let all: Vec<u64> = m.nodes.keys().copied().collect();
        match op.clone() {
            Op::Create(d, nm, k) => {
                let dir = pick(&dirs, d).unwrap();
                let name = name(nm);
                if m.entries.contains_key(&(dir, name.clone())) {
                    return;
                }
                let (kind, a) = match k {
                    0 => (FileKind::File, self.fs().mknod(dir, &name, 0o644, 0, C)),
                    1 => (FileKind::Dir, self.fs().mkdir(dir, &name, 0o755, C)),
                    _ => (
                        FileKind::Symlink,
                        self.fs().symlink(dir, &name, b"target", C),
                    ),
                };
                let a = a.unwrap();
                assert_eq!(a.data_version, 0, "a new inode's data_version");
                let seq = self.open_seq();
                self.m.nodes.insert(
                    a.ino,
                    Node {
                        kind,
                        nlink: if kind == FileKind::Dir { 2 } else { 1 },
                        size: a.size,
                        meta_seq: seq,
                        data_seq: seq,
                        data_version: 0,
                    },
                );
                self.m.entries.insert((dir, name), a.ino);
                self.m.touch(dir, seq);
                if kind == FileKind::Dir {
                    self.m.nodes.get_mut(&dir).unwrap().nlink += 1;
                }
            }
            Op::Write(f, off, len) => {
                let Some(ino) = pick(&files, f) else { return };
                let data = vec![0x5a; len as usize];
                assert_eq!(self.fs().write(ino, off as u64, &data).unwrap(), len as u32);
                if len > 0 {
                    let seq = self.open_seq();
                    self.m.contents(ino, seq);
                    let n = self.m.nodes.get_mut(&ino).unwrap();
                    n.size = n.size.max(off as u64 + len as u64);
                }
            }
            Op::Truncate(f, s, keep) => {
                let Some(ino) = pick(&files, f) else { return };
                let old = self.m.nodes[&ino].size;
                let s = if keep { old } else { s as u64 };
                self.fs().setattr(ino, &size(s)).unwrap();
                let seq = self.open_seq();
                if old != s {
                    self.m.contents(ino, seq);
                    self.m.nodes.get_mut(&ino).unwrap().size = s;
                } else {
                    self.m.touch(ino, seq);
                }
            }
            Op::Fallocate(f, off, len, keep) => {
                let Some(ino) = pick(&files, f) else { return };
                let (off, len) = (off as u64, len as u64);
                self.fs().fallocate(ino, off, len, keep).unwrap();
                let seq = self.open_seq();
                if !keep && off + len > self.m.nodes[&ino].size {
                    self.m.contents(ino, seq);
                    self.m.nodes.get_mut(&ino).unwrap().size = off + len;
                } else {
                    self.m.touch(ino, seq);
                }
            }
            Op::Chmod(i) => {
                let ino = pick(&all, i).unwrap();
                let set = SetAttr {
                    mode: Some(0o600),
                    ..Default::default()
                };
                self.fs().setattr(ino, &set).unwrap();
                let seq = self.open_seq();
                self.m.touch(ino, seq);
            }
            Op::SetXattr(i, v) => {
                let ino = pick(&all, i).unwrap();
                self.fs()
                    .setxattr(ino, b"user.x", &[v; 20], XattrSet::Any)
                    .unwrap();
                let seq = self.open_seq();
                self.m.touch(ino, seq);
            }
            Op::Link(f, d, nm) => {
                let (Some(ino), Some(dir)) = (pick(&files, f), pick(&dirs, d)) else {
                    return;
                };
                let name = name(nm);
                if m.entries.contains_key(&(dir, name.clone())) {
                    return;
                }
                self.fs().link(ino, dir, &name).unwrap();
                let seq = self.open_seq();
                self.m.entries.insert((dir, name), ino);
                self.m.nodes.get_mut(&ino).unwrap().nlink += 1;
                self.m.touch(ino, seq);
                self.m.touch(dir, seq);
            }
            Op::Rename(s, d, nm) => self.rename(s, d, nm),
            Op::Unlink(e) => {
                let names: Vec<_> = m
                    .names()
                    .into_iter()
                    .filter(|k| m.nodes[&m.entries[k]].kind != FileKind::Dir)
                    .collect();
                let Some((dir, name)) = pick(&names, e) else {
                    return;
                };
                self.fs().unlink(dir, &name).unwrap();
                let seq = self.open_seq();
                let ino = self.m.entries.remove(&(dir, name)).unwrap();
                self.m.touch(dir, seq);
                self.m.drop_link(ino, false, seq);
            }
            Op::Rmdir(e) => {
                let names: Vec<_> = m
                    .names()
                    .into_iter()
                    .filter(|k| {
                        let i = m.entries[k];
                        m.nodes[&i].kind == FileKind::Dir && m.is_empty_dir(i)
                    })
                    .collect();
                let Some((dir, name)) = pick(&names, e) else {
                    return;
                };
                self.fs().rmdir(dir, &name).unwrap();
                let seq = self.open_seq();
                let ino = self.m.entries.remove(&(dir, name)).unwrap();
                self.m.nodes.get_mut(&dir).unwrap().nlink -= 1;
                self.m.touch(dir, seq);
                self.m.drop_link(ino, true, seq);
            }
            Op::Sync => self.fs().sync().unwrap(),
            Op::Remount => {
                self.fs.take().unwrap().unmount().unwrap();
                self.fs = Some(mount(&self.dev));
            }
            Op::SavePos => self.saved = self.fs().committed_seq().unwrap(),
        }
    }

    fn rename(&mut self, s: u8, d: u8, nm: u8) {
        let m = &self.m;
        let Some((sdir, sname)) = pick(&m.names(), s) else {
            return;
        };
        let src = m.entries[&(sdir, sname.clone())];
        let skind = m.nodes[&src].kind;
        let ddir = pick(&m.of_kind(FileKind::Dir), d).unwrap();
        let dname = name(nm);
        let dst = m.entries.get(&(ddir, dname.clone())).copied();
        if skind == FileKind::Dir && m.is_below(ddir, src) {
            return;
        }
        if let Some(t) = dst {
            if t == src {
                // Two names of one inode: nothing happens, nothing changes.
                self.fs()
                    .rename(sdir, &sname, ddir, &dname, RenameFlags::default())
                    .unwrap();
                return;
            }
            let tkind = m.nodes[&t].kind;
            if (skind == FileKind::Dir) != (tkind == FileKind::Dir)
                || (tkind == FileKind::Dir && !m.is_empty_dir(t))
            {
                return;
            }
        }
        self.fs()
            .rename(sdir, &sname, ddir, &dname, RenameFlags::default())
            .unwrap();
        let seq = self.open_seq();
        let m = &mut self.m;
        m.entries.remove(&(sdir, sname));
        m.entries.insert((ddir, dname), src);
        for ino in [sdir, ddir, src] {
            m.touch(ino, seq);
        }
        if skind == FileKind::Dir && sdir != ddir {
            m.nodes.get_mut(&sdir).unwrap().nlink -= 1;
            m.nodes.get_mut(&ddir).unwrap().nlink += 1;
        }
        if let Some(t) = dst {
            let is_dir = m.nodes[&t].kind == FileKind::Dir;
            if is_dir {
                m.nodes.get_mut(&ddir).unwrap().nlink -= 1;
            }
            m.drop_link(t, is_dir, seq);
        }
    }

    /// Every walk returns what the model says, and every file its data_version.
    fn verify(&self, after: &Op) {
        let fs = self.fs();
        let horizon = fs.committed_seq().unwrap();
        for index in [SeqIndex::Meta, SeqIndex::Data] {
            let got = walk_from(fs, index, IndexPos::MIN, self.page);
            assert_eq!(
                got,
                self.m.expect(index, 0, horizon),
                "{index:?} walk after {after:?}"
            );
            let first = IndexPos {
                major: self.saved + 1,
                ..IndexPos::MIN
            };
            let since = walk_from(fs, index, first, self.page);
            assert_eq!(
                since,
                self.m.expect(index, self.saved, horizon),
                "{index:?} walk from {} after {after:?}",
                self.saved
            );
        }
        for ino in self.m.of_kind(FileKind::File) {
            assert_eq!(
                fs.getattr(ino).unwrap().data_version,
                self.m.nodes[&ino].data_version,
                "data_version of {ino} after {after:?}"
            );
        }
    }
}

fn run(ops: &[Op], page: usize) {
    let dev = volume_of(32, 16, 4096);
    let fs = mount(&dev);
    let root_seq = walk(&fs, SeqIndex::Meta)[0].major;
    let mut h = Harness {
        dev,
        fs: Some(fs),
        m: Model::default(),
        saved: 0,
        page,
    };
    h.m.nodes.insert(
        ROOT_INO,
        Node {
            kind: FileKind::Dir,
            nlink: 2,
            size: 0,
            meta_seq: root_seq,
            data_seq: 0,
            data_version: 0,
        },
    );
    for op in ops.iter().chain([&Op::Sync]) {
        h.step(op);
        h.verify(op);
    }
    assert_eq!(h.fs().overruns(), 0);

    h.fs.take().unwrap().unmount().unwrap();
    assert_fs_clean(&h.dev.0, &h.dev.1, "after the operations");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: proptest_cases(96),
        max_shrink_iters: 500,
        ..ProptestConfig::default()
    })]

    #[test]
    fn walks_and_data_versions_match_the_model(
        ops in proptest::collection::vec(op(), 1..120),
        page in 1usize..6,
    ) {
        run(&ops, page);
    }
}

#[test]
fn a_walk_stops_at_the_committed_horizon() {
    let dev = volume_of(32, 16, 4096);
    let fs = mount(&dev);
    fs.sync().unwrap();
    let before = fs.committed_seq().unwrap();
    let a = fs.mknod(ROOT_INO, b"a", 0o644, 0, C).unwrap().ino;
    // Changed in the open transaction: neither the file nor the root (which moved out
    // of its old seq) shows, however far the walk asks.
    let w = walk(&fs, SeqIndex::Meta);
    assert!(w.iter().all(|e| e.major <= before), "{w:?}");
    assert_eq!(seq_in(&w, a), None);
    assert_eq!(seq_in(&w, ROOT_INO), None);
    assert_eq!(walk(&fs, SeqIndex::Data), vec![]);
    fs.sync().unwrap();
    // Committed: both at the seq of the transaction they were changed in, the one that
    // was open — one past the horizon then.
    let after = fs.committed_seq().unwrap();
    assert!(after > before);
    let w = walk(&fs, SeqIndex::Meta);
    assert_eq!(seq_in(&w, a), Some(before + 1));
    assert_eq!(seq_in(&w, ROOT_INO), Some(before + 1));
    assert_eq!(
        walk(&fs, SeqIndex::Data),
        vec![IndexEntry {
            major: before + 1,
            minor: 0,
            ino: a
        }]
    );
    // A last position past the horizon is clamped; one below it is kept.
    let upto = |major| {
        fs.walk_inodes(
            SeqIndex::Meta,
            IndexPos::MIN,
            IndexPos {
                major,
                ..IndexPos::MAX
            },
            100,
        )
        .unwrap()
    };
    assert_eq!(upto(u64::MAX), upto(after));
    assert_eq!(upto(before).iter().find(|e| e.ino == a), None);
    fs.unmount().unwrap();
    assert_fs_clean(&dev.0, &dev.1, "after the walks");
}

#[test]
fn walk_positions_name_entries_by_seq_then_inode() {
    let dev = volume_of(32, 16, 4096);
    let fs = mount(&dev);
    let inos: Vec<u64> = (0..5u8)
        .map(|i| {
            fs.mknod(ROOT_INO, &[b'f', b'0' + i], 0o644, 0, C)
                .unwrap()
                .ino
        })
        .collect();
    let seq = fs.committed_seq().unwrap() + 1;
    fs.sync().unwrap();
    let w = |first: IndexPos, last: IndexPos, limit| {
        fs.walk_inodes(SeqIndex::Data, first, last, limit)
            .unwrap()
            .iter()
            .map(|e| (e.major, e.minor, e.ino))
            .collect::<Vec<_>>()
    };
    let at = |major, minor, ino| IndexPos { major, minor, ino };
    let all: Vec<_> = inos.iter().map(|&i| (seq, 0, i)).collect();
    assert_eq!(w(IndexPos::MIN, IndexPos::MAX, 100), all);
    // From an inode on, up to an inode.
    assert_eq!(w(at(seq, 0, inos[1]), at(seq, 0, inos[3]), 100), all[1..4]);
    // A minor past 0 is after every entry of its major: as a first position it skips
    // them all, as a last one it takes them all.
    assert_eq!(w(at(seq, 1, 0), IndexPos::MAX, 100), vec![]);
    assert_eq!(w(IndexPos::MIN, at(seq, 1, 0), 100), all);
    assert_eq!(w(IndexPos::MIN, at(seq, 0, 0), 100), vec![]);
    // Backwards, empty, and limited.
    assert_eq!(w(at(seq, 0, inos[3]), at(seq, 0, inos[1]), 100), vec![]);
    assert_eq!(w(IndexPos::MIN, IndexPos::MAX, 0), vec![]);
    assert_eq!(w(IndexPos::MIN, IndexPos::MAX, 2), all[..2]);
    assert_eq!(w(IndexPos::MAX, IndexPos::MAX, 100), vec![]);
    let e = IndexEntry {
        major: 7,
        minor: 0,
        ino: u64::MAX,
    };
    assert_eq!(e.next_pos(), at(7, 1, 0));
    fs.unmount().unwrap();
}

#[test]
fn data_version_and_data_seq_move_on_content_changes_only() {
    let dev = volume_of(32, 16, 4096);
    let fs = mount(&dev);
    let f = fs.mknod(ROOT_INO, b"f", 0o644, 0, C).unwrap().ino;
    // Each case: what it does, and whether the contents may have changed.
    type Change = Box<dyn Fn(&Fs)>;
    let cases: Vec<(&str, Change, bool)> = vec![
        (
            "write",
            Box::new(move |fs| assert_eq!(fs.write(f, 0, b"hello").unwrap(), 5)),
            true,
        ),
        (
            "empty write",
            Box::new(move |fs| assert_eq!(fs.write(f, 9, b"").unwrap(), 0)),
            false,
        ),
        (
            "truncate down",
            Box::new(move |fs| assert_eq!(fs.setattr(f, &size(2)).unwrap().size, 2)),
            true,
        ),
        (
            "truncate up",
            Box::new(move |fs| assert_eq!(fs.setattr(f, &size(10_000)).unwrap().size, 10_000)),
            true,
        ),
        (
            "truncate to the same size",
            Box::new(move |fs| assert_eq!(fs.setattr(f, &size(10_000)).unwrap().size, 10_000)),
            false,
        ),
        (
            "fallocate within the size",
            Box::new(move |fs| fs.fallocate(f, 0, 8192, false).unwrap()),
            false,
        ),
        (
            "fallocate past the size, keeping it",
            Box::new(move |fs| fs.fallocate(f, 0, 1 << 20, true).unwrap()),
            false,
        ),
        (
            "fallocate that grows the size",
            Box::new(move |fs| fs.fallocate(f, 0, 2 << 20, false).unwrap()),
            true,
        ),
        (
            "chmod",
            Box::new(move |fs| {
                let set = SetAttr {
                    mode: Some(0o600),
                    ..Default::default()
                };
                fs.setattr(f, &set).unwrap();
            }),
            false,
        ),
        (
            "setxattr",
            Box::new(move |fs| fs.setxattr(f, b"user.a", b"v", XattrSet::Any).unwrap()),
            false,
        ),
        (
            "link",
            Box::new(move |fs| assert_eq!(fs.link(f, ROOT_INO, b"g").unwrap().nlink, 2)),
            false,
        ),
        (
            "rename",
            Box::new(move |fs| {
                fs.rename(ROOT_INO, b"g", ROOT_INO, b"h", RenameFlags::default())
                    .unwrap()
            }),
            false,
        ),
        (
            "write in place",
            Box::new(move |fs| assert_eq!(fs.write(f, 0, b"HELLO").unwrap(), 5)),
            true,
        ),
    ];
    fs.sync().unwrap();
    for (what, change, contents) in cases {
        let before = fs.getattr(f).unwrap().data_version;
        let data_seq = seq_in(&walk(&fs, SeqIndex::Data), f).unwrap();
        let meta_seq = seq_in(&walk(&fs, SeqIndex::Meta), f).unwrap();
        change(&fs);
        let open = fs.committed_seq().unwrap() + 1;
        fs.sync().unwrap();
        let after = fs.getattr(f).unwrap().data_version;
        assert_eq!(after, before + u64::from(contents), "data_version: {what}");
        let want_data = if contents { open } else { data_seq };
        assert_eq!(
            seq_in(&walk(&fs, SeqIndex::Data), f),
            Some(want_data),
            "data_seq: {what}"
        );
        let meta = seq_in(&walk(&fs, SeqIndex::Meta), f).unwrap();
        if what == "empty write" {
            assert_eq!(meta, meta_seq, "meta_seq: {what}");
        } else {
            assert_eq!(meta, open, "meta_seq: {what}");
        }
    }
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    assert_fs_clean(&dev.0, &dev.1, "after the changes");
}

#[test]
fn walks_survive_remounts_read_only_mounts_and_crashes() {
    let dev = volume_of(32, 16, 4096);
    let fs = mount(&dev);
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap().ino;
    for i in 0..20u8 {
        let f = fs
            .mknod(d, format!("f{i}").as_bytes(), 0o644, 0, C)
            .unwrap()
            .ino;
        fs.write(f, 0, &[i; 100]).unwrap();
        if i % 7 == 0 {
            fs.sync().unwrap();
        }
    }
    fs.unmount().unwrap();
    // Unmounted: a read-only mount's horizon is the super's seq, and it sees all.
    let ro = mount_ro(&dev);
    let meta = walk(&ro, SeqIndex::Meta);
    let data = walk(&ro, SeqIndex::Data);
    assert_eq!(meta.len(), 22);
    assert_eq!(data.len(), 20);
    assert!(meta.iter().all(|e| e.major <= ro.committed_seq().unwrap()));
    drop(ro);
    // A read-write mount sees the same.
    let fs = mount(&dev);
    assert_eq!(walk(&fs, SeqIndex::Meta), meta);
    assert_eq!(walk(&fs, SeqIndex::Data), data);
    // Changes left open by a crash (the mount is dropped without unmounting).
    fs.sync().unwrap();
    let lost = fs.mknod(d, b"lost", 0o644, 0, C).unwrap().ino;
    let open = fs.committed_seq().unwrap() + 1;
    drop(fs);
    // The crashed mount's transaction is still open in the super: a read-only mount's
    // horizon stays below it, though no mount is running...
    let ro = mount_ro(&dev);
    let horizon = ro.committed_seq().unwrap();
    assert_eq!(horizon, open - 1);
    assert_eq!(walk(&ro, SeqIndex::Meta), meta);
    drop(ro);
    // ...because the next mount resumes that transaction: what it writes has the open
    // seq, past the horizon a walker saw, never before it.
    let fs = mount(&dev);
    let again = fs.mknod(d, b"again", 0o644, 0, C).unwrap().ino;
    fs.sync().unwrap();
    let w = walk(&fs, SeqIndex::Meta);
    assert_eq!(seq_in(&w, lost), None);
    let seq = seq_in(&w, again).unwrap();
    assert!(seq > horizon, "{seq} after a horizon of {horizon}");
    let since = walk_from(
        &fs,
        SeqIndex::Meta,
        IndexPos {
            major: horizon + 1,
            ..IndexPos::MIN
        },
        3,
    );
    let inos: Vec<u64> = since.iter().map(|e| e.ino).collect();
    assert_eq!(inos, vec![d, again]);
    fs.unmount().unwrap();
    assert_fs_clean(&dev.0, &dev.1, "after the crash");
}
