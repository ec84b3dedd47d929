#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The filesystem API against an in-memory reference filesystem: random sequences of
//! namespace, data and xattr operations with commits and remounts interleaved. Every
//! result is compared (errors by errno), and after every remount (and at the end) the
//! whole tree: names, kinds, modes, sizes, contents, allocated blocks, link counts,
//! xattrs and symlink targets.

mod common;

use common::{assert_fs_clean, volume_of, StrictLocks};
use proptest::prelude::*;
use scoutfs_core::device::BlockDevice;
use scoutfs_core::fs::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

const BS: u64 = 4096;
const NAMES: [&str; 6] = ["a", "b", "c", "dd", "e", "a-much-longer-name-for-variety"];
const XNAMES: [&str; 4] = ["user.x", "user.y", "trusted.zz", "scoutfs.hide.q"];

/// A model inode.
#[derive(Clone, Debug, PartialEq)]
struct Node {
    kind: FileKind,
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    rdev: u32,
    data: Vec<u8>,
    /// Allocated logical blocks (the fs allocates exactly the blocks written or
    /// fallocated and frees those past a truncated end).
    blocks: BTreeSet<u64>,
    target: Vec<u8>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Directory entries.
    entries: BTreeMap<Vec<u8>, u64>,
    parent: u64,
}

impl Node {
    fn new(kind: FileKind, mode: u32, parent: u64) -> Node {
        Node {
            kind,
            mode,
            uid: 0,
            gid: 0,
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
            rdev: 0,
            data: Vec::new(),
            blocks: BTreeSet::new(),
            target: Vec::new(),
            xattrs: BTreeMap::new(),
            entries: BTreeMap::new(),
            parent,
        }
    }
}

type R<T> = Result<T, i32>;
const ENOENT: i32 = 2;
const EEXIST: i32 = 17;
const ENOTDIR: i32 = 20;
const EISDIR: i32 = 21;
const EINVAL: i32 = 22;
const ENOTEMPTY: i32 = 39;
const ENODATA: i32 = 61;
const EPERM: i32 = 1;

#[derive(Debug, Default)]
struct Model {
    nodes: HashMap<u64, Node>,
    /// Open counts.
    opens: HashMap<u64, u32>,
}

impl Model {
    fn new() -> Model {
        let mut m = Model::default();
        m.nodes
            .insert(ROOT_INO, Node::new(FileKind::Dir, 0o40755, ROOT_INO));
        m
    }

    fn dirs(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.kind == FileKind::Dir && n.nlink > 0)
            .map(|(&i, _)| i)
            .collect();
        v.sort();
        v
    }

    fn live(&self, kind: Option<FileKind>) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, n)| kind.is_none_or(|k| n.kind == k))
            .map(|(&i, _)| i)
            .collect();
        v.sort();
        v
    }

    fn node(&mut self, ino: u64) -> &mut Node {
        self.nodes.get_mut(&ino).unwrap()
    }

    fn is_ancestor(&self, anc: u64, mut ino: u64) -> bool {
        loop {
            if ino == anc {
                return true;
            }
            if ino == ROOT_INO {
                return false;
            }
            ino = self.nodes[&ino].parent;
        }
    }

    /// One link of `ino` gone (all of a directory's).
    fn drop_link(&mut self, ino: u64) {
        let n = self.node(ino);
        if n.kind == FileKind::Dir {
            n.nlink = 0;
        } else {
            n.nlink -= 1;
        }
        if n.nlink == 0 && self.opens.get(&ino).copied().unwrap_or(0) == 0 {
            self.nodes.remove(&ino);
        }
    }

    fn check_create(&self, parent: u64, name: &[u8]) -> R<()> {
        if self.nodes[&parent].entries.contains_key(name) {
            return Err(EEXIST);
        }
        Ok(())
    }

    fn add(&mut self, parent: u64, name: &[u8], ino: u64, node: Node) {
        let is_dir = node.kind == FileKind::Dir;
        self.nodes.insert(ino, node);
        let p = self.node(parent);
        p.entries.insert(name.to_vec(), ino);
        if is_dir {
            p.nlink += 1;
        }
    }

    fn unlink(&mut self, parent: u64, name: &[u8]) -> R<()> {
        let Some(&ino) = self.nodes[&parent].entries.get(name) else {
            return Err(ENOENT);
        };
        if self.nodes[&ino].kind == FileKind::Dir {
            return Err(EISDIR);
        }
        self.node(parent).entries.remove(name);
        self.drop_link(ino);
        Ok(())
    }

    fn rmdir(&mut self, parent: u64, name: &[u8]) -> R<()> {
        let Some(&ino) = self.nodes[&parent].entries.get(name) else {
            return Err(ENOENT);
        };
        if self.nodes[&ino].kind != FileKind::Dir {
            return Err(ENOTDIR);
        }
        if !self.nodes[&ino].entries.is_empty() {
            return Err(ENOTEMPTY);
        }
        self.node(parent).entries.remove(name);
        self.node(parent).nlink -= 1;
        self.drop_link(ino);
        Ok(())
    }

    fn link(&mut self, ino: u64, parent: u64, name: &[u8]) -> R<()> {
        if self.nodes[&ino].kind == FileKind::Dir {
            return Err(EPERM);
        }
        self.check_create(parent, name)?;
        self.node(parent).entries.insert(name.to_vec(), ino);
        self.node(ino).nlink += 1;
        Ok(())
    }

    fn rename(&mut self, p: u64, name: &[u8], np: u64, nn: &[u8], f: RenameFlags) -> R<()> {
        if f.noreplace && f.exchange {
            return Err(EINVAL);
        }
        let Some(&src) = self.nodes[&p].entries.get(name) else {
            return Err(ENOENT);
        };
        let dst = self.nodes[&np].entries.get(nn).copied();
        let src_dir = self.nodes[&src].kind == FileKind::Dir;
        if f.exchange {
            let Some(dst) = dst else {
                return Err(ENOENT);
            };
            if src == dst {
                return Ok(());
            }
            let dst_dir = self.nodes[&dst].kind == FileKind::Dir;
            if p != np {
                if src_dir && self.is_ancestor(src, np) {
                    return Err(EINVAL);
                }
                if dst_dir && self.is_ancestor(dst, p) {
                    return Err(EINVAL);
                }
            }
            self.node(p).entries.insert(name.to_vec(), dst);
            self.node(np).entries.insert(nn.to_vec(), src);
            if src_dir {
                self.node(src).parent = np;
            }
            if dst_dir {
                self.node(dst).parent = p;
            }
            if p != np {
                let d = i32::from(src_dir) - i32::from(dst_dir);
                let n = self.node(np);
                n.nlink = n.nlink.checked_add_signed(d).unwrap();
                let n = self.node(p);
                n.nlink = n.nlink.checked_add_signed(-d).unwrap();
            }
            return Ok(());
        }
        if let Some(dst) = dst {
            if f.noreplace {
                return Err(EEXIST);
            }
            if dst == src {
                return Ok(());
            }
        }
        if src_dir && np != p && self.is_ancestor(src, np) {
            return Err(EINVAL);
        }
        if let Some(dst) = dst {
            let dst_dir = self.nodes[&dst].kind == FileKind::Dir;
            match (src_dir, dst_dir) {
                (true, false) => return Err(ENOTDIR),
                (false, true) => return Err(EISDIR),
                (true, true) if !self.nodes[&dst].entries.is_empty() => return Err(ENOTEMPTY),
                _ => {}
            }
            self.node(np).entries.remove(nn);
            if dst_dir {
                self.node(np).nlink -= 1;
            }
            self.drop_link(dst);
        }
        self.node(p).entries.remove(name);
        self.node(np).entries.insert(nn.to_vec(), src);
        if src_dir {
            self.node(src).parent = np;
            if p != np {
                self.node(p).nlink -= 1;
                self.node(np).nlink += 1;
            }
        }
        Ok(())
    }

    fn write(&mut self, ino: u64, off: u64, data: &[u8]) {
        let n = self.node(ino);
        if data.is_empty() {
            // A write of nothing changes nothing, wherever it points.
            return;
        }
        let end = off as usize + data.len();
        if n.data.len() < end {
            n.data.resize(end, 0);
        }
        n.data[off as usize..end].copy_from_slice(data);
        if !data.is_empty() {
            for b in off / BS..=(end as u64 - 1) / BS {
                n.blocks.insert(b);
            }
        }
    }

    fn truncate(&mut self, ino: u64, size: u64) {
        let n = self.node(ino);
        if size < n.data.len() as u64 {
            let keep = size.div_ceil(BS);
            n.blocks.retain(|&b| b < keep);
        }
        n.data.resize(size as usize, 0);
    }

    fn fallocate(&mut self, ino: u64, off: u64, len: u64, keep: bool) {
        let n = self.node(ino);
        for b in off / BS..=(off + len - 1) / BS {
            n.blocks.insert(b);
        }
        if !keep && (off + len) as usize > n.data.len() {
            n.data.resize((off + len) as usize, 0);
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Create(u8, u8, u16),
    Mkdir(u8, u8),
    Mknod(u8, u8, u8),
    Symlink(u8, u8, u16),
    Link(u8, u8, u8),
    Unlink(u8, u8),
    Rmdir(u8, u8),
    Rename(u8, u8, u8, u8, u8),
    Write(u8, u32, u16, u8),
    Read(u8, u32, u16),
    Truncate(u8, u32),
    Fallocate(u8, u32, u16, bool),
    SetXattr(u8, u8, u16, u8),
    RemoveXattr(u8, u8),
    Chmod(u8, u16),
    Chown(u8, u8, u8),
    OpenUnlink(u8),
    WriteOpen(u8, u32, u16),
    Release(u8),
    Readdir(u8, u8),
    Sync,
    Merge,
    Remount,
}

fn op() -> impl Strategy<Value = Op> {
    let n = any::<u8>();
    prop_oneof![
        6 => (n, n, any::<u16>()).prop_map(|(a, b, c)| Op::Create(a, b, c)),
        4 => (n, n).prop_map(|(a, b)| Op::Mkdir(a, b)),
        1 => (n, n, n).prop_map(|(a, b, c)| Op::Mknod(a, b, c)),
        2 => (n, n, 1u16..5000).prop_map(|(a, b, c)| Op::Symlink(a, b, c)),
        2 => (n, n, n).prop_map(|(a, b, c)| Op::Link(a, b, c)),
        3 => (n, n).prop_map(|(a, b)| Op::Unlink(a, b)),
        2 => (n, n).prop_map(|(a, b)| Op::Rmdir(a, b)),
        4 => (n, n, n, n, 0u8..4).prop_map(|(a, b, c, d, e)| Op::Rename(a, b, c, d, e)),
        8 => (n, 0u32..300_000, 0u16..20_000, n).prop_map(|(a, b, c, d)| Op::Write(a, b, c, d)),
        3 => (n, 0u32..300_000, 0u16..20_000).prop_map(|(a, b, c)| Op::Read(a, b, c)),
        3 => (n, 0u32..300_000).prop_map(|(a, b)| Op::Truncate(a, b)),
        2 => (n, 0u32..300_000, 1u16..30_000, any::<bool>())
            .prop_map(|(a, b, c, d)| Op::Fallocate(a, b, c, d)),
        3 => (n, n, 0u16..3000, 0u8..4).prop_map(|(a, b, c, d)| Op::SetXattr(a, b, c, d)),
        1 => (n, n).prop_map(|(a, b)| Op::RemoveXattr(a, b)),
        1 => (n, any::<u16>()).prop_map(|(a, b)| Op::Chmod(a, b)),
        1 => (n, 0u8..3, 0u8..3).prop_map(|(a, b, c)| Op::Chown(a, b, c)),
        1 => n.prop_map(Op::OpenUnlink),
        1 => (n, 0u32..100_000, 0u16..10_000).prop_map(|(a, b, c)| Op::WriteOpen(a, b, c)),
        1 => n.prop_map(Op::Release),
        1 => (n, 1u8..5).prop_map(|(a, b)| Op::Readdir(a, b)),
        1 => Just(Op::Sync),
        1 => Just(Op::Merge),
        1 => Just(Op::Remount),
    ]
}

fn pick<T: Copy>(v: &[T], i: u8) -> Option<T> {
    if v.is_empty() {
        None
    } else {
        Some(v[i as usize % v.len()])
    }
}

fn name(i: u8) -> &'static [u8] {
    NAMES[i as usize % NAMES.len()].as_bytes()
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1)
        .collect()
}

fn errno<T>(r: FsResult<T>) -> R<T> {
    r.map_err(|e| e.errno())
}

struct Harness {
    meta: Arc<dyn BlockDevice>,
    data: Arc<dyn BlockDevice>,
    fs: Option<Fs>,
    m: Model,
}

thread_local! {
    /// Mounts of this thread check their cluster locks with [`StrictLocks`].
    static STRICT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn opts() -> FsOptions {
    FsOptions {
        cache_bytes: 4 << 20,
        seed: Some(7),
        item_locks: STRICT.with(|s| s.get()).then(|| {
            Arc::new(StrictLocks::default()) as Arc<dyn scoutfs_core::client::locks::ItemLocks>
        }),
        ..FsOptions::default()
    }
}

const CREDS: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};

impl Harness {
    fn new() -> Harness {
        let (meta, data) = volume_of(32, 64, 4096);
        let fs = Fs::mount_single(meta.clone(), data.clone(), opts()).unwrap();
        Harness {
            meta,
            data,
            fs: Some(fs),
            m: Model::new(),
        }
    }

    fn fs(&self) -> &Fs {
        self.fs.as_ref().unwrap()
    }

    fn remount(&mut self) {
        self.fs.take().unwrap().unmount().unwrap();
        // Open inodes are let go by the unmount; their orphans go at the next mount.
        let orphans: Vec<u64> = self
            .m
            .nodes
            .iter()
            .filter(|(_, n)| n.nlink == 0)
            .map(|(&i, _)| i)
            .collect();
        for i in &orphans {
            self.m.nodes.remove(i);
        }
        self.m.opens.clear();
        self.fs = Some(Fs::mount_single(self.meta.clone(), self.data.clone(), opts()).unwrap());
        for i in orphans {
            assert_eq!(
                errno(self.fs().getattr(i)).unwrap_err(),
                ENOENT,
                "orphan {i}"
            );
        }
        self.compare_tree();
    }

    /// Compare the whole tree with the model.
    fn compare_tree(&self) {
        let fs = self.fs();
        let mut seen = BTreeSet::new();
        let mut stack = vec![ROOT_INO];
        while let Some(dir) = stack.pop() {
            let mut got = BTreeMap::new();
            let mut pos = 0;
            // Read in small batches to exercise resuming from positions.
            loop {
                let mut batch = Vec::new();
                fs.readdir(dir, pos, &mut |e| {
                    batch.push(e.clone());
                    batch.len() < 3
                })
                .unwrap();
                if batch.is_empty() {
                    break;
                }
                for e in &batch {
                    if e.name == b"." {
                        assert_eq!(e.ino, dir);
                    } else if e.name == b".." {
                        assert_eq!(e.ino, self.m.nodes[&dir].parent);
                    } else {
                        assert!(got.insert(e.name.clone(), (e.ino, e.kind)).is_none());
                    }
                    assert!(e.next_pos > pos);
                    pos = e.next_pos;
                }
            }
            let want: BTreeMap<Vec<u8>, (u64, FileKind)> = self.m.nodes[&dir]
                .entries
                .iter()
                .map(|(n, &i)| (n.clone(), (i, self.m.nodes[&i].kind)))
                .collect();
            assert_eq!(got, want, "entries of dir {dir}");
            for (_, (ino, kind)) in want {
                if kind == FileKind::Dir {
                    stack.push(ino);
                }
                seen.insert(ino);
            }
        }
        seen.insert(ROOT_INO);
        for (&ino, n) in &self.m.nodes {
            self.compare_node(ino, n);
        }
        let live: BTreeSet<u64> = self
            .m
            .nodes
            .iter()
            .filter(|(_, n)| n.nlink > 0)
            .map(|(&i, _)| i)
            .collect();
        assert_eq!(seen, live);
    }

    fn compare_node(&self, ino: u64, n: &Node) {
        let fs = self.fs();
        let a = fs.getattr(ino).unwrap();
        assert_eq!(a.kind, n.kind, "kind of {ino}");
        assert_eq!(a.mode, n.mode, "mode of {ino}");
        assert_eq!((a.uid, a.gid), (n.uid, n.gid), "owner of {ino}");
        assert_eq!(a.nlink, n.nlink, "nlink of {ino}");
        assert_eq!(a.rdev, n.rdev, "rdev of {ino}");
        match n.kind {
            FileKind::File => {
                assert_eq!(a.size, n.data.len() as u64, "size of {ino}");
                assert_eq!(a.blocks, n.blocks.len() as u64 * 8, "blocks of {ino}");
                let got = fs.read(ino, 0, n.data.len() as u32 + 10).unwrap();
                assert!(got == n.data, "contents of {ino}");
            }
            FileKind::Symlink => {
                assert_eq!(fs.readlink(ino).unwrap(), n.target);
                assert_eq!(a.size, n.target.len() as u64);
            }
            _ => {}
        }
        // `.hide.` names are listed apart.
        let hidden = |k: &[u8]| matches!(parse_tags(k), Ok(Some((t, _))) if t.hide);
        for (listed, want_hidden) in [
            (fs.listxattr(ino).unwrap(), false),
            (fs.list_hidden_xattrs(ino).unwrap(), true),
        ] {
            let mut names = listed;
            names.sort();
            let want: Vec<Vec<u8>> = n
                .xattrs
                .keys()
                .filter(|k| hidden(k) == want_hidden)
                .cloned()
                .collect();
            assert_eq!(names, want, "xattr names of {ino} (hidden: {want_hidden})");
        }
        for (k, v) in &n.xattrs {
            assert!(&fs.getxattr(ino, k).unwrap() == v, "xattr value of {ino}");
        }
    }

    fn step(&mut self, op: &Op) {
        let dirs = self.m.dirs();
        let files = self.m.live(Some(FileKind::File));
        let all = self.m.live(None);
        match *op {
            Op::Create(d, nm, mode) => {
                let d = pick(&dirs, d).unwrap();
                let mode = 0o100000 | (mode as u32 & 0o7777);
                let got = errno(self.fs().mknod(d, name(nm), mode, 0, CREDS));
                let want = self.m.check_create(d, name(nm));
                assert_eq!(got.as_ref().err().copied(), want.err(), "{op:?}");
                if let Ok(a) = got {
                    assert_eq!(a.size, 0);
                    self.m
                        .add(d, name(nm), a.ino, Node::new(FileKind::File, mode, d));
                }
            }
            Op::Mkdir(d, nm) => {
                let d = pick(&dirs, d).unwrap();
                let got = errno(self.fs().mkdir(d, name(nm), 0o755, CREDS));
                let want = self.m.check_create(d, name(nm));
                assert_eq!(got.as_ref().err().copied(), want.err(), "{op:?}");
                if let Ok(a) = got {
                    self.m
                        .add(d, name(nm), a.ino, Node::new(FileKind::Dir, 0o40755, d));
                }
            }
            Op::Mknod(d, nm, k) => {
                let d = pick(&dirs, d).unwrap();
                let (kind, bits) = [
                    (FileKind::Fifo, 0o010000),
                    (FileKind::Socket, 0o140000),
                    (FileKind::CharDev, 0o020000),
                    (FileKind::BlockDev, 0o060000),
                ][k as usize % 4];
                let rdev = if bits & 0o020000 != 0 { 0x0801 } else { 0 };
                let got = errno(self.fs().mknod(d, name(nm), bits | 0o640, rdev, CREDS));
                let want = self.m.check_create(d, name(nm));
                assert_eq!(got.as_ref().err().copied(), want.err(), "{op:?}");
                if let Ok(a) = got {
                    let mut n = Node::new(kind, bits | 0o640, d);
                    n.rdev = rdev;
                    self.m.add(d, name(nm), a.ino, n);
                }
            }
            Op::Symlink(d, nm, len) => {
                let d = pick(&dirs, d).unwrap();
                let target = bytes(len as usize, nm);
                let got = errno(self.fs().symlink(d, name(nm), &target, CREDS));
                let want = if len as usize > 4096 {
                    Err(36)
                } else {
                    self.m.check_create(d, name(nm))
                };
                assert_eq!(got.as_ref().err().copied(), want.err(), "{op:?}");
                if let Ok(a) = got {
                    let mut n = Node::new(FileKind::Symlink, 0o120777, d);
                    n.target = target;
                    self.m.add(d, name(nm), a.ino, n);
                }
            }
            Op::Link(i, d, nm) => {
                let ino = pick(&all, i).unwrap();
                if self.m.nodes[&ino].nlink == 0 {
                    return;
                }
                let d = pick(&dirs, d).unwrap();
                let got = errno(self.fs().link(ino, d, name(nm)));
                let want = self.m.link(ino, d, name(nm));
                assert_eq!(got.as_ref().err().copied(), want.err(), "{op:?}");
                if let Ok(a) = got {
                    assert_eq!(a.nlink, self.m.nodes[&ino].nlink);
                }
            }
            Op::Unlink(d, nm) => {
                let d = pick(&dirs, d).unwrap();
                let got = errno(self.fs().unlink(d, name(nm)));
                assert_eq!(got, self.m.unlink(d, name(nm)), "{op:?}");
            }
            Op::Rmdir(d, nm) => {
                let d = pick(&dirs, d).unwrap();
                let got = errno(self.fs().rmdir(d, name(nm)));
                assert_eq!(got, self.m.rmdir(d, name(nm)), "{op:?}");
            }
            Op::Rename(d, nm, d2, nm2, fl) => {
                let d = pick(&dirs, d).unwrap();
                let d2 = pick(&dirs, d2).unwrap();
                let f = RenameFlags {
                    noreplace: fl & 1 != 0,
                    exchange: fl & 2 != 0,
                };
                let got = errno(self.fs().rename(d, name(nm), d2, name(nm2), f));
                let want = self.m.rename(d, name(nm), d2, name(nm2), f);
                assert_eq!(got, want, "{op:?}");
            }
            Op::Write(i, off, len, seed) => {
                let Some(ino) = pick(&files, i) else { return };
                let data = bytes(len as usize, seed);
                let got = errno(self.fs().write(ino, off as u64, &data));
                assert_eq!(got, Ok(len as u32), "{op:?}");
                self.m.write(ino, off as u64, &data);
            }
            Op::WriteOpen(i, off, len) => {
                let open: Vec<u64> = self
                    .m
                    .opens
                    .keys()
                    .copied()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let Some(ino) = pick(&open, i) else { return };
                if self.m.nodes[&ino].kind != FileKind::File {
                    return;
                }
                let data = bytes(len as usize, i);
                assert_eq!(
                    errno(self.fs().write(ino, off as u64, &data)),
                    Ok(len as u32)
                );
                self.m.write(ino, off as u64, &data);
                let n = &self.m.nodes[&ino];
                let got = self.fs().read(ino, 0, n.data.len() as u32).unwrap();
                assert!(got == n.data, "open file contents");
            }
            Op::Read(i, off, len) => {
                let Some(ino) = pick(&files, i) else { return };
                let got = self.fs().read(ino, off as u64, len as u32).unwrap();
                let d = &self.m.nodes[&ino].data;
                let lo = (off as usize).min(d.len());
                let hi = (off as usize + len as usize).min(d.len());
                assert!(got == d[lo..hi], "{op:?}");
            }
            Op::Truncate(i, size) => {
                let Some(ino) = pick(&files, i) else { return };
                let set = SetAttr {
                    size: Some(size as u64),
                    ..Default::default()
                };
                let a = self.fs().setattr(ino, &set).unwrap();
                assert_eq!(a.size, size as u64);
                self.m.truncate(ino, size as u64);
            }
            Op::Fallocate(i, off, len, keep) => {
                let Some(ino) = pick(&files, i) else { return };
                self.fs()
                    .fallocate(ino, off as u64, len as u64, keep)
                    .unwrap();
                self.m.fallocate(ino, off as u64, len as u64, keep);
            }
            Op::SetXattr(i, x, len, how) => {
                let ino = pick(&all, i).unwrap();
                let xn = XNAMES[x as usize % XNAMES.len()].as_bytes();
                // Now and then a value near the largest.
                let len = if len % 97 == 0 {
                    65536 - len as usize
                } else {
                    len as usize
                };
                let val = bytes(len, x);
                let how = [
                    XattrSet::Any,
                    XattrSet::Create,
                    XattrSet::Replace,
                    XattrSet::Any,
                ][how as usize % 4];
                let got = errno(self.fs().setxattr(ino, xn, &val, how));
                let n = self.m.node(ino);
                let want = match (n.xattrs.contains_key(xn), how) {
                    (true, XattrSet::Create) => Err(EEXIST),
                    (false, XattrSet::Replace) => Err(ENODATA),
                    _ => {
                        n.xattrs.insert(xn.to_vec(), val);
                        Ok(())
                    }
                };
                assert_eq!(got, want, "{op:?}");
            }
            Op::RemoveXattr(i, x) => {
                let ino = pick(&all, i).unwrap();
                let xn = XNAMES[x as usize % XNAMES.len()].as_bytes();
                let got = errno(self.fs().removexattr(ino, xn));
                let want = match self.m.node(ino).xattrs.remove(xn) {
                    Some(_) => Ok(()),
                    None => Err(ENODATA),
                };
                assert_eq!(got, want, "{op:?}");
            }
            Op::Chmod(i, mode) => {
                let ino = pick(&all, i).unwrap();
                let set = SetAttr {
                    mode: Some(mode as u32 & 0o7777),
                    ..Default::default()
                };
                let a = self.fs().setattr(ino, &set).unwrap();
                let n = self.m.node(ino);
                n.mode = (n.mode & 0o170000) | (mode as u32 & 0o7777);
                assert_eq!(a.mode, n.mode);
            }
            Op::Chown(i, uid, gid) => {
                let ino = pick(&all, i).unwrap();
                let (uid, gid) = (uid as u32, gid as u32);
                let set = SetAttr {
                    uid: Some(uid),
                    gid: Some(gid),
                    ..Default::default()
                };
                let a = self.fs().setattr(ino, &set).unwrap();
                let n = self.m.node(ino);
                if (uid != n.uid || gid != n.gid) && n.kind != FileKind::Dir {
                    n.mode &= !0o4000;
                    if n.mode & 0o010 != 0 {
                        n.mode &= !0o2000;
                    }
                }
                n.uid = uid;
                n.gid = gid;
                assert_eq!((a.mode, a.uid, a.gid), (n.mode, uid, gid), "{op:?}");
            }
            Op::OpenUnlink(i) => {
                // Open a file and unlink one of its names.
                let Some(ino) = pick(&files, i) else { return };
                let Some((d, nm)) = self.m.nodes.iter().find_map(|(&d, n)| {
                    n.entries
                        .iter()
                        .find(|(_, &c)| c == ino)
                        .map(|(nm, _)| (d, nm.clone()))
                }) else {
                    return;
                };
                self.fs().open(ino).unwrap();
                *self.m.opens.entry(ino).or_insert(0) += 1;
                assert_eq!(errno(self.fs().unlink(d, &nm)), self.m.unlink(d, &nm));
                let a = self.fs().getattr(ino).unwrap();
                assert_eq!(a.nlink, self.m.nodes[&ino].nlink);
            }
            Op::Release(i) => {
                let open: Vec<u64> = self
                    .m
                    .opens
                    .keys()
                    .copied()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let Some(ino) = pick(&open, i) else { return };
                self.fs().release(ino).unwrap();
                let c = self.m.opens.get_mut(&ino).unwrap();
                *c -= 1;
                if *c == 0 {
                    self.m.opens.remove(&ino);
                    if self.m.nodes[&ino].nlink == 0 {
                        self.m.nodes.remove(&ino);
                        assert_eq!(errno(self.fs().getattr(ino)).unwrap_err(), ENOENT);
                    }
                }
            }
            Op::Readdir(d, batch) => {
                // Readdir while changing the directory: positions stay valid and no
                // entry that stays is skipped or repeated.
                let d = pick(&dirs, d).unwrap();
                let mut first = Vec::new();
                self.fs()
                    .readdir(d, 0, &mut |e| {
                        first.push(e.clone());
                        first.len() < 2 + batch as usize
                    })
                    .unwrap();
                let pos = first.last().unwrap().next_pos;
                let fresh = b"fresh-entry".as_slice();
                let created = self.m.check_create(d, fresh).is_ok();
                if created {
                    let a = self.fs().mknod(d, fresh, 0o100644, 0, CREDS).unwrap();
                    self.m
                        .add(d, fresh, a.ino, Node::new(FileKind::File, 0o100644, d));
                }
                let mut rest = Vec::new();
                self.fs()
                    .readdir(d, pos, &mut |e| {
                        rest.push(e.name.clone());
                        true
                    })
                    .unwrap();
                let mut names: Vec<Vec<u8>> = first.iter().map(|e| e.name.clone()).collect();
                names.extend(rest);
                let uniq: BTreeSet<&Vec<u8>> = names.iter().collect();
                assert_eq!(uniq.len(), names.len(), "readdir repeated an entry");
                for n in self.m.nodes[&d].entries.keys() {
                    if n.as_slice() != fresh {
                        assert!(uniq.contains(n), "readdir skipped an entry");
                    }
                }
                if created {
                    // The new entry took a position after every other: it is seen.
                    assert!(uniq.contains(&fresh.to_vec()));
                }
            }
            Op::Sync => self.fs().sync().unwrap(),
            Op::Merge => self.fs().merge_all().unwrap(),
            Op::Remount => self.remount(),
        }
    }
}

fn run(ops: &[Op]) {
    let mut h = Harness::new();
    for op in ops {
        h.step(op);
    }
    h.compare_tree();
    h.remount();
    let meta = h.meta.clone();
    let data = h.data.clone();
    h.fs.take().unwrap().unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

proptest! {
    #![proptest_config(ProptestConfig {
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn fs_matches_model(ops in proptest::collection::vec(op(), 1..160)) {
        run(&ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 1000,
        ..ProptestConfig::default()
    })]

    /// The same under cluster locks that are forgotten after every operation: every
    /// operation reads and changes items only under locks it took (in key order), and
    /// none finds it needs a lock after its first change.
    #[test]
    fn fs_matches_model_under_locks(ops in proptest::collection::vec(op(), 1..160)) {
        STRICT.with(|s| s.set(true));
        run(&ops);
    }
}

/// Deep directory trees, many entries and a large sparse file through remounts.
#[test]
fn fixed_sequence_with_remounts() {
    let mut ops = Vec::new();
    for i in 0..40u8 {
        ops.push(Op::Mkdir(i, i));
        ops.push(Op::Create(i, i.wrapping_add(1), 0o644));
        ops.push(Op::Write(i, i as u32 * 7919, 5000, i));
        if i % 10 == 9 {
            ops.push(Op::Remount);
        }
        ops.push(Op::Rename(
            i,
            i,
            i.wrapping_mul(3),
            i.wrapping_add(2),
            i % 3,
        ));
        ops.push(Op::Truncate(i, i as u32 * 1000));
    }
    run(&ops);
}

/// Operations on one file, fsx-like, at offsets and lengths that cross extents (up to
/// 128 blocks each) and their splits.
#[derive(Clone, Debug)]
enum DataOp {
    Write(u32, u32, u8),
    Read(u32, u32),
    Truncate(u32),
    Fallocate(u32, u32, bool),
    Remount,
}

fn data_op() -> impl Strategy<Value = DataOp> {
    const SPAN: u32 = 4 << 20;
    prop_oneof![
        6 => (0..SPAN, 1u32..(1 << 20), any::<u8>()).prop_map(|(o, l, s)| DataOp::Write(o, l, s)),
        3 => (0..SPAN, 1u32..(1 << 20)).prop_map(|(o, l)| DataOp::Read(o, l)),
        2 => (0..SPAN).prop_map(DataOp::Truncate),
        2 => (0..SPAN, 1u32..(2 << 20), any::<bool>()).prop_map(|(o, l, k)| DataOp::Fallocate(o, l, k)),
        1 => Just(DataOp::Remount),
    ]
}

fn run_data(ops: &[DataOp]) {
    let mut h = Harness::new();
    let ino = h
        .fs()
        .mknod(ROOT_INO, b"f", 0o100644, 0, CREDS)
        .unwrap()
        .ino;
    h.m.add(
        ROOT_INO,
        b"f",
        ino,
        Node::new(FileKind::File, 0o100644, ROOT_INO),
    );
    for op in ops {
        match *op {
            DataOp::Write(off, len, seed) => {
                let data = bytes(len as usize, seed);
                assert_eq!(h.fs().write(ino, off as u64, &data).unwrap(), len);
                h.m.write(ino, off as u64, &data);
            }
            DataOp::Read(off, len) => {
                let got = h.fs().read(ino, off as u64, len).unwrap();
                let d = &h.m.nodes[&ino].data;
                let lo = (off as usize).min(d.len());
                let hi = (off as usize + len as usize).min(d.len());
                assert!(got == d[lo..hi], "{op:?}");
            }
            DataOp::Truncate(size) => {
                let set = SetAttr {
                    size: Some(size as u64),
                    ..Default::default()
                };
                h.fs().setattr(ino, &set).unwrap();
                h.m.truncate(ino, size as u64);
            }
            DataOp::Fallocate(off, len, keep) => {
                h.fs().fallocate(ino, off as u64, len as u64, keep).unwrap();
                h.m.fallocate(ino, off as u64, len as u64, keep);
            }
            DataOp::Remount => h.remount(),
        }
        let a = h.fs().getattr(ino).unwrap();
        let n = &h.m.nodes[&ino];
        assert_eq!(a.size, n.data.len() as u64, "size after {op:?}");
        assert_eq!(a.blocks, n.blocks.len() as u64 * 8, "blocks after {op:?}");
    }
    h.compare_tree();
    let (meta, data) = (h.meta.clone(), h.data.clone());
    h.fs.take().unwrap().unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 500,
        ..ProptestConfig::default()
    })]

    #[test]
    fn file_data_matches_model(ops in proptest::collection::vec(data_op(), 1..40)) {
        run_data(&ops);
    }

    #[test]
    fn file_data_matches_model_under_locks(ops in proptest::collection::vec(data_op(), 1..40)) {
        STRICT.with(|s| s.set(true));
        run_data(&ops);
    }
}
