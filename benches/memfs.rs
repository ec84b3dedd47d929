//! memfs: a naive in-memory filesystem served through FUSE as a scoutfs mount is, the third
//! file system of `fs_compare`.
//!
//! It does no I/O and almost no work per request (a hash map look-up, a copy of the data
//! read or written), so its rates are what the FUSE transport itself allows on the machine:
//! the ceiling, for the same requests, of any FUSE filesystem served this way, scoutfs's
//! included. To be a fair peer it is served exactly as a scoutfs mount is, in everything that
//! decides which requests the kernel sends and how they reach the filesystem:
//! - the same session ([`scoutfs_fuse::session_config`]: `default_permissions`,
//!   `allow_other`, one clone of `/dev/fuse` per thread) with as many threads
//!   (`ServeOptions::default().threads`), and the same asked of the kernel at INIT
//!   ([`scoutfs_fuse::request_capabilities`]: READDIRPLUS and the rest) but POSIX ACLs,
//!   which memfs does not keep (a scoutfs mount's kernel asks once per directory inode
//!   for its ACL, and caches it);
//! - the same answers where the kernel's next requests depend on them: entries,
//!   negative entries and attributes valid for [`scoutfs_fuse::TTL`]; directory reads
//!   with attributes (READDIRPLUS) when the kernel asks; FLUSH answered ENOSYS (the kernel then stops
//!   sending it on every close); file handle 0 and no open flags (so the page cache of a
//!   file is dropped at open, as on scoutfs); and an absent xattr answered ENODATA (ENOSYS
//!   would make the kernel stop asking for xattrs, which a filesystem that has them cannot
//!   say).
//!
//! The filesystem is one directory tree of regular files and directories behind one
//! `RwLock`: file data in chunks of 1 MiB, allocated when first written (holes read as
//! zeros), directories as maps by name and by `readdir` position. It implements what the
//! workload needs, correctly: lookup, forget, getattr, setattr (mode, owner, size, times),
//! mkdir, unlink, rmdir, open, read, write, flush, release, fsync, opendir, readdir,
//! releasedir, fsyncdir, statfs, create, and getxattr/listxattr of no xattrs. Everything else
//! is answered as fuser's defaults do: ENOSYS (EPERM for symlink and link), EOPNOTSUPP for
//! setting xattrs. An inode lives while a directory entry names it or the kernel holds a
//! reference to it (the FUSE lookup count: an unlinked file stays readable while it is
//! open), and is freed when the kernel forgets it. No atime updates (as `noatime`).
//!
//! It counts the requests it implements, by kind ([`Op`], [`Requests`]), which shows what
//! each phase of the workload costs in requests.

use fuser::{
    BackgroundSession, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, Session, TimeOrNow, WriteFlags,
};
use scoutfs_fuse::{ServeOptions, TTL};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

/// File data is kept in chunks of this many bytes.
const CHUNK: u64 = 1 << 20;
/// The block size reported by stat and statfs.
const BLOCK: u32 = 4096;
/// The longest name a directory takes, in bytes.
const NAME_MAX: usize = 255;
/// The size statfs reports, in blocks (1 TiB: memfs is bounded by memory, not by this).
const STATFS_BLOCKS: u64 = (1 << 40) / BLOCK as u64;
/// The inodes statfs reports.
const STATFS_FILES: u64 = 1 << 32;
/// Inode numbers are never reused, so every inode is generation 0.
const GENERATION: Generation = Generation(0);

/// The requests memfs counts, in the order of their FUSE opcodes. Forgets are counted per
/// inode: one FORGET request or one inode of a BATCH_FORGET.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Mkdir,
    Unlink,
    Rmdir,
    Open,
    Read,
    Write,
    Statfs,
    Release,
    Fsync,
    Getxattr,
    Listxattr,
    Flush,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Fsyncdir,
    Create,
}

impl Op {
    /// Every kind, in the order of [`Requests`].
    pub const ALL: [Op; 22] = [
        Op::Lookup,
        Op::Forget,
        Op::Getattr,
        Op::Setattr,
        Op::Mkdir,
        Op::Unlink,
        Op::Rmdir,
        Op::Open,
        Op::Read,
        Op::Write,
        Op::Statfs,
        Op::Release,
        Op::Fsync,
        Op::Getxattr,
        Op::Listxattr,
        Op::Flush,
        Op::Opendir,
        Op::Readdir,
        Op::Readdirplus,
        Op::Releasedir,
        Op::Fsyncdir,
        Op::Create,
    ];

    /// The FUSE name of the request.
    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "LOOKUP",
            Op::Forget => "FORGET",
            Op::Getattr => "GETATTR",
            Op::Setattr => "SETATTR",
            Op::Mkdir => "MKDIR",
            Op::Unlink => "UNLINK",
            Op::Rmdir => "RMDIR",
            Op::Open => "OPEN",
            Op::Read => "READ",
            Op::Write => "WRITE",
            Op::Statfs => "STATFS",
            Op::Release => "RELEASE",
            Op::Fsync => "FSYNC",
            Op::Getxattr => "GETXATTR",
            Op::Listxattr => "LISTXATTR",
            Op::Flush => "FLUSH",
            Op::Opendir => "OPENDIR",
            Op::Readdir => "READDIR",
            Op::Readdirplus => "READDIRPLUS",
            Op::Releasedir => "RELEASEDIR",
            Op::Fsyncdir => "FSYNCDIR",
            Op::Create => "CREATE",
        }
    }
}

/// Requests counted by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requests([u64; Op::ALL.len()]);

impl Requests {
    /// How many requests of kind `op`.
    pub fn get(&self, op: Op) -> u64 {
        self.0[op as usize]
    }

    /// The requests counted since `earlier` (a snapshot of the same counters).
    pub fn since(&self, earlier: &Requests) -> Requests {
        let mut d = Requests::default();
        for (i, n) in d.0.iter_mut().enumerate() {
            *n = self.0[i].saturating_sub(earlier.0[i]);
        }
        d
    }
}

/// The live counters behind [`Requests`], shared by the serving threads and the mount.
#[derive(Debug, Default)]
struct Counters([AtomicU64; Op::ALL.len()]);

impl Counters {
    fn count(&self, op: Op) {
        self.0[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Requests {
        let mut r = Requests::default();
        for (n, c) in r.0.iter_mut().zip(&self.0) {
            *n = c.load(Ordering::Relaxed);
        }
        r
    }
}

/// The data of a regular file.
#[derive(Debug, Default)]
struct Data {
    size: u64,
    /// Chunk index to its `CHUNK` bytes. Bytes past `size` in a chunk are zero.
    chunks: BTreeMap<u64, Box<[u8]>>,
}

impl Data {
    /// Up to `len` bytes at `offset` (fewer at the end of the file): borrowed when they lie
    /// in one chunk, as a read of the kernel's (page-aligned, at most 1 MiB) always does.
    fn read(&self, offset: u64, len: u32) -> Cow<'_, [u8]> {
        let end = offset.saturating_add(u64::from(len)).min(self.size);
        if offset >= end {
            return Cow::Borrowed(&[]);
        }
        let (first, last) = (offset / CHUNK, (end - 1) / CHUNK);
        let within = (offset % CHUNK) as usize;
        if first == last {
            let n = (end - offset) as usize;
            return match self.chunks.get(&first) {
                Some(c) => Cow::Borrowed(&c[within..within + n]),
                None => Cow::Owned(vec![0; n]),
            };
        }
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut pos = offset;
        while pos < end {
            let (idx, at) = (pos / CHUNK, (pos % CHUNK) as usize);
            let n = (CHUNK - at as u64).min(end - pos) as usize;
            match self.chunks.get(&idx) {
                Some(c) => out.extend_from_slice(&c[at..at + n]),
                None => out.resize(out.len() + n, 0),
            }
            pos += n as u64;
        }
        Cow::Owned(out)
    }

    /// Writes `data` at `offset`, extending the file if it ends past its size.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&e| e <= i64::MAX as u64)
            .ok_or(Errno::EFBIG)?;
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let (idx, at) = (pos / CHUNK, (pos % CHUNK) as usize);
            let n = (CHUNK as usize - at).min(rest.len());
            let chunk = self
                .chunks
                .entry(idx)
                .or_insert_with(|| vec![0; CHUNK as usize].into_boxed_slice());
            chunk[at..at + n].copy_from_slice(&rest[..n]);
            pos += n as u64;
            rest = &rest[n..];
        }
        self.size = self.size.max(end);
        Ok(())
    }

    /// Sets the size; bytes past a smaller size are dropped, so a larger size later reads
    /// them as zeros.
    fn truncate(&mut self, size: u64) {
        if size < self.size {
            drop(self.chunks.split_off(&size.div_ceil(CHUNK)));
            let at = (size % CHUNK) as usize;
            if at != 0 {
                if let Some(c) = self.chunks.get_mut(&(size / CHUNK)) {
                    c[at..].fill(0);
                }
            }
        }
        self.size = size;
    }

    /// 512-byte blocks held.
    fn blocks(&self) -> u64 {
        self.chunks.len() as u64 * (CHUNK / 512)
    }
}

/// A directory entry.
#[derive(Debug)]
struct Entry {
    name: OsString,
    ino: u64,
    kind: FileType,
}

/// A directory's entries, by name and by `readdir` position. Position 0 is ".", 1 is "..",
/// and every entry gets the next position when it is added, so a removal does not move
/// the others and a reader that goes on from a position misses none that stayed.
#[derive(Debug)]
struct Dir {
    parent: u64,
    by_name: HashMap<OsString, u64>,
    by_pos: BTreeMap<u64, Entry>,
    next_pos: u64,
}

impl Dir {
    fn new(parent: u64) -> Dir {
        Dir {
            parent,
            by_name: HashMap::new(),
            by_pos: BTreeMap::new(),
            next_pos: 2,
        }
    }

    fn get(&self, name: &OsStr) -> Option<&Entry> {
        self.by_name.get(name).and_then(|p| self.by_pos.get(p))
    }
}

#[derive(Debug)]
enum Body {
    File(Data),
    Dir(Dir),
}

#[derive(Debug)]
struct Inode {
    perm: u16,
    nlink: u32,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    crtime: SystemTime,
    /// The kernel's references (the FUSE lookup count): each entry given in a reply is
    /// one, and FORGET gives them back. Atomic so that lookups take the lock shared.
    lookups: AtomicU64,
    body: Body,
}

impl Inode {
    fn new(kind: FileType, perm: u16, uid: u32, gid: u32, parent: u64) -> Inode {
        let now = SystemTime::now();
        let (nlink, body) = match kind {
            FileType::Directory => (2, Body::Dir(Dir::new(parent))),
            _ => (1, Body::File(Data::default())),
        };
        Inode {
            perm,
            nlink,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            lookups: AtomicU64::new(0),
            body,
        }
    }

    fn kind(&self) -> FileType {
        match self.body {
            Body::File(_) => FileType::RegularFile,
            Body::Dir(_) => FileType::Directory,
        }
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let (size, blocks) = match &self.body {
            Body::File(d) => (d.size, d.blocks()),
            Body::Dir(_) => (u64::from(BLOCK), 0),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks,
            atime: self.atime,
            mtime: self.mtime,
            ctime: self.ctime,
            crtime: self.crtime,
            kind: self.kind(),
            perm: self.perm,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK,
            flags: 0,
        }
    }

    /// The attributes, counting them as one more reference given to the kernel.
    fn entry(&self, ino: u64) -> FileAttr {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.attr(ino)
    }
}

/// The attribute changes of a SETATTR.
#[derive(Debug, Default)]
struct SetAttr {
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    atime: Option<TimeOrNow>,
    mtime: Option<TimeOrNow>,
    ctime: Option<SystemTime>,
}

/// The whole filesystem.
#[derive(Debug)]
struct Tree {
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
}

fn time(t: TimeOrNow, now: SystemTime) -> SystemTime {
    match t {
        TimeOrNow::Now => now,
        TimeOrNow::SpecificTime(t) => t,
    }
}

impl Tree {
    /// A tree of an empty root directory owned by `uid`:`gid`.
    fn new(uid: u32, gid: u32) -> Tree {
        let root = INodeNo::ROOT.0;
        let mut inodes = HashMap::new();
        inodes.insert(root, Inode::new(FileType::Directory, 0o755, uid, gid, root));
        Tree {
            inodes,
            next_ino: root + 1,
        }
    }

    fn inode(&self, ino: u64) -> Result<&Inode, Errno> {
        self.inodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn inode_mut(&mut self, ino: u64) -> Result<&mut Inode, Errno> {
        self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: u64) -> Result<&Dir, Errno> {
        match &self.inode(ino)?.body {
            Body::Dir(d) => Ok(d),
            Body::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut Dir, Errno> {
        match &mut self.inode_mut(ino)?.body {
            Body::Dir(d) => Ok(d),
            Body::File(_) => Err(Errno::ENOTDIR),
        }
    }

    fn data(&self, ino: u64) -> Result<&Data, Errno> {
        match &self.inode(ino)?.body {
            Body::File(d) => Ok(d),
            Body::Dir(_) => Err(Errno::EISDIR),
        }
    }

    fn data_mut(&mut self, ino: u64) -> Result<&mut Data, Errno> {
        match &mut self.inode_mut(ino)?.body {
            Body::File(d) => Ok(d),
            Body::Dir(_) => Err(Errno::EISDIR),
        }
    }

    fn getattr(&self, ino: u64) -> Result<FileAttr, Errno> {
        Ok(self.inode(ino)?.attr(ino))
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let e = self.dir(parent)?.get(name).ok_or(Errno::ENOENT)?;
        Ok(self.inode(e.ino)?.entry(e.ino))
    }

    /// Makes a file or directory `name` in `parent`, owned by the caller (`caller`: its uid
    /// and gid), with its mode after the umask and the set-group-ID rule (what the VFS's `inode_init_owner` does for
    /// kernel filesystems, as the scoutfs adapter does too).
    fn make(
        &mut self,
        caller: (u32, u32),
        parent: u64,
        name: &OsStr,
        kind: FileType,
        mode: u32,
        umask: u32,
    ) -> Result<FileAttr, Errno> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let p = self.inode(parent)?;
        let Body::Dir(d) = &p.body else {
            return Err(Errno::ENOTDIR);
        };
        if d.by_name.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        let dir = kind == FileType::Directory;
        let (uid, mut gid) = caller;
        let mut perm = mode & !(umask & 0o777) & 0o7777;
        if u32::from(p.perm) & libc::S_ISGID != 0 {
            gid = p.gid;
            if dir {
                perm |= libc::S_ISGID;
            }
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let inode = Inode::new(kind, perm as u16, uid, gid, parent);
        let attr = inode.entry(ino);
        self.inodes.insert(ino, inode);
        let p = self.inode_mut(parent)?;
        p.mtime = attr.ctime;
        p.ctime = attr.ctime;
        if dir {
            p.nlink += 1;
        }
        if let Body::Dir(d) = &mut p.body {
            let pos = d.next_pos;
            d.next_pos += 1;
            d.by_name.insert(name.to_owned(), pos);
            d.by_pos.insert(
                pos,
                Entry {
                    name: name.to_owned(),
                    ino,
                    kind,
                },
            );
        }
        Ok(attr)
    }

    /// Removes the entry `name` of `parent`: a directory, empty, if `dir`, else anything
    /// but a directory.
    fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let e = self.dir(parent)?.get(name).ok_or(Errno::ENOENT)?;
        let ino = e.ino;
        match (&self.inode(ino)?.body, dir) {
            (Body::Dir(d), true) if !d.by_pos.is_empty() => return Err(Errno::ENOTEMPTY),
            (Body::Dir(_), false) => return Err(Errno::EISDIR),
            (Body::File(_), true) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        let now = SystemTime::now();
        let d = self.dir_mut(parent)?;
        if let Some(pos) = d.by_name.remove(name) {
            d.by_pos.remove(&pos);
        }
        let p = self.inode_mut(parent)?;
        p.mtime = now;
        p.ctime = now;
        if dir {
            p.nlink -= 1;
        }
        let i = self.inode_mut(ino)?;
        i.ctime = now;
        i.nlink = if dir { 0 } else { i.nlink.saturating_sub(1) };
        self.free_if_unused(ino);
        Ok(())
    }

    /// The kernel gives back `n` references to `ino`.
    fn forget(&mut self, ino: u64, n: u64) {
        if let Some(i) = self.inodes.get_mut(&ino) {
            let left = i.lookups.get_mut();
            *left = left.saturating_sub(n);
            self.free_if_unused(ino);
        }
    }

    /// Frees `ino` if no entry names it and the kernel holds no reference to it.
    fn free_if_unused(&mut self, ino: u64) {
        let unused = self
            .inodes
            .get_mut(&ino)
            .is_some_and(|i| i.nlink == 0 && *i.lookups.get_mut() == 0);
        if unused && ino != INodeNo::ROOT.0 {
            self.inodes.remove(&ino);
        }
    }

    fn setattr(&mut self, ino: u64, set: &SetAttr) -> Result<FileAttr, Errno> {
        if let Some(size) = set.size {
            if size > i64::MAX as u64 {
                return Err(Errno::EFBIG);
            }
            self.data_mut(ino)?.truncate(size);
        }
        let now = SystemTime::now();
        let i = self.inode_mut(ino)?;
        if let Some(mode) = set.mode {
            i.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = set.uid {
            i.uid = uid;
        }
        if let Some(gid) = set.gid {
            i.gid = gid;
        }
        if let Some(t) = set.atime {
            i.atime = time(t, now);
        }
        if let Some(t) = set.mtime {
            i.mtime = time(t, now);
        }
        i.ctime = set.ctime.unwrap_or(now);
        Ok(i.attr(ino))
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let n = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        self.data_mut(ino)?.write(offset, data)?;
        let now = SystemTime::now();
        let i = self.inode_mut(ino)?;
        i.mtime = now;
        i.ctime = now;
        Ok(n)
    }

    /// Entries of `dir` from position `pos`, each with the position to go on from, until
    /// `full` says the reply is full.
    fn readdir(
        &self,
        dir: u64,
        pos: u64,
        full: &mut dyn FnMut(u64, u64, FileType, &OsStr) -> bool,
    ) -> Result<(), Errno> {
        let d = self.dir(dir)?;
        let dots = [(dir, "."), (d.parent, "..")];
        for (p, &(ino, name)) in dots.iter().enumerate().skip(pos as usize) {
            if full(ino, p as u64 + 1, FileType::Directory, OsStr::new(name)) {
                return Ok(());
            }
        }
        for (&p, e) in d.by_pos.range(pos..) {
            if full(e.ino, p + 1, e.kind, &e.name) {
                break;
            }
        }
        Ok(())
    }

    /// Blocks and inodes in use.
    fn usage(&self) -> (u64, u64) {
        let blocks = self
            .inodes
            .values()
            .map(|i| match &i.body {
                Body::File(d) => d.chunks.len() as u64 * (CHUNK / u64::from(BLOCK)),
                Body::Dir(_) => 1,
            })
            .sum();
        (blocks, self.inodes.len() as u64)
    }
}

/// The FUSE filesystem: the tree and the request counters.
#[derive(Debug)]
struct MemFs {
    tree: RwLock<Tree>,
    counters: Arc<Counters>,
}

/// Replies `Ok` through `ok`, or the error.
macro_rules! reply {
    ($reply:ident, $res:expr, $ok:expr) => {
        match $res {
            Ok(v) =>
            {
                #[allow(clippy::redundant_closure_call)]
                ($ok)($reply, v)
            }
            Err(e) => $reply.error(e),
        }
    };
}

fn entry(reply: ReplyEntry, a: FileAttr) {
    reply.entry(&TTL, &a, GENERATION);
}

fn attr(reply: ReplyAttr, a: FileAttr) {
    reply.attr(&TTL, &a);
}

fn empty(reply: ReplyEmpty, _: ()) {
    reply.ok();
}

fn opened(reply: ReplyOpen, _: ()) {
    reply.opened(FileHandle(0), FopenFlags::empty());
}

impl MemFs {
    /// The tree to read (no request panics while holding it, but a poisoned lock would
    /// still hold a consistent tree: every change is made after its checks).
    fn read(&self) -> RwLockReadGuard<'_, Tree> {
        self.tree.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Tree> {
        self.tree.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, op: Op) {
        self.counters.count(op);
    }
}

impl Filesystem for MemFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // What a scoutfs mount asks for (without ACLs, which memfs does not keep).
        scoutfs_fuse::request_capabilities(config, false)
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.count(Op::Lookup);
        match self.read().lookup(parent.0, name) {
            Ok(a) => entry(reply, a),
            // A negative entry the kernel keeps, as a scoutfs mount answers.
            Err(Errno::ENOENT) => {
                let none = FileAttr {
                    ino: INodeNo(0),
                    ..Inode::new(FileType::RegularFile, 0, 0, 0, 0).attr(0)
                };
                entry(reply, none)
            }
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.count(Op::Forget);
        self.write().forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.count(Op::Getattr);
        reply!(reply, self.read().getattr(ino.0), attr);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.count(Op::Setattr);
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime,
            mtime,
            ctime,
        };
        reply!(reply, self.write().setattr(ino.0, &set), attr);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.count(Op::Mkdir);
        let res = self.write().make(
            (req.uid(), req.gid()),
            parent.0,
            name,
            FileType::Directory,
            mode,
            umask,
        );
        reply!(reply, res, entry);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.count(Op::Unlink);
        reply!(reply, self.write().remove(parent.0, name, false), empty);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.count(Op::Rmdir);
        reply!(reply, self.write().remove(parent.0, name, true), empty);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.count(Op::Open);
        // The kernel truncates with a SETATTR before the OPEN (the session does not ask for
        // FUSE_ATOMIC_O_TRUNC), but an O_TRUNC here would mean the same.
        let res = if flags.0 & libc::O_TRUNC != 0 {
            self.write().data_mut(ino.0).map(|d| d.truncate(0))
        } else {
            self.read().data(ino.0).map(|_| ())
        };
        reply!(reply, res, opened);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.count(Op::Read);
        // The reply is sent under the shared lock: its bytes are copied from the chunk
        // straight into the kernel's buffer.
        let tree = self.read();
        reply!(reply, tree.data(ino.0), |r: ReplyData, d: &Data| r
            .data(&d.read(offset, size)));
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.count(Op::Write);
        reply!(
            reply,
            self.write().write(ino.0, offset, data),
            |r: ReplyWrite, n: u32| r.written(n)
        );
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Flush);
        // As the scoutfs adapter: nothing to do at close, and ENOSYS tells the kernel so
        // once, after which it stops sending FLUSH.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Release);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Fsync);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.count(Op::Opendir);
        reply!(reply, self.read().dir(ino.0).map(|_| ()), opened);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.count(Op::Readdir);
        let res = self
            .read()
            .readdir(ino.0, offset, &mut |ino, next, kind, name| {
                // add() says whether the buffer is full; the entry that did not fit is not
                // added, and the kernel asks again from its position.
                reply.add(INodeNo(ino), next, kind, name)
            });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.count(Op::Readdirplus);
        let tree = self.read();
        let res = tree.readdir(ino.0, offset, &mut |ino, next, _kind, name| {
            let Ok(inode) = tree.inode(ino) else {
                return false;
            };
            let full = reply.add(INodeNo(ino), next, name, &TTL, &inode.attr(ino), GENERATION);
            // The kernel takes a reference to every entry it was given but "." and "..".
            if !full && name != "." && name != ".." {
                inode.lookups.fetch_add(1, Ordering::Relaxed);
            }
            full
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Releasedir);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.count(Op::Fsyncdir);
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.count(Op::Statfs);
        let (blocks, files) = self.read().usage();
        let bfree = STATFS_BLOCKS.saturating_sub(blocks);
        let ffree = STATFS_FILES.saturating_sub(files);
        reply.statfs(
            STATFS_BLOCKS,
            bfree,
            bfree,
            STATFS_FILES,
            ffree,
            BLOCK,
            NAME_MAX as u32,
            BLOCK,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EOPNOTSUPP);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        self.count(Op::Getxattr);
        let res = self.read().inode(ino.0).map(|_| ());
        reply!(reply, res, |r: ReplyXattr, ()| r.error(Errno::NO_XATTR));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.count(Op::Listxattr);
        let res = self.read().inode(ino.0).map(|_| ());
        reply!(reply, res, |r: ReplyXattr, ()| if size == 0 {
            r.size(0)
        } else {
            r.data(&[])
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        self.count(Op::Create);
        let res = self.write().make(
            (req.uid(), req.gid()),
            parent.0,
            name,
            FileType::RegularFile,
            mode,
            umask,
        );
        reply!(reply, res, |r: ReplyCreate, a: FileAttr| r.created(
            &TTL,
            &a,
            GENERATION,
            FileHandle(0),
            FopenFlags::empty()
        ));
    }
}

/// A memfs mounted on a temporary directory of its own, served on background threads;
/// unmounted, and the directory removed, by [`Mounted::unmount`] or on drop (also after
/// an error).
#[derive(Debug)]
pub struct Mounted {
    dir: Option<PathBuf>,
    session: Option<BackgroundSession>,
    counters: Arc<Counters>,
}

impl Mounted {
    /// Makes the directory and mounts an empty memfs on it, its root owned as the directory
    /// is (by the caller).
    pub fn mount() -> Result<Mounted, String> {
        let dir = std::env::temp_dir().join(format!("fs_compare.{}.memfs", std::process::id()));
        fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut m = Mounted {
            dir: Some(dir.clone()),
            session: None,
            counters: Arc::default(),
        };
        let meta = fs::metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let fs = MemFs {
            tree: RwLock::new(Tree::new(meta.uid(), meta.gid())),
            counters: m.counters.clone(),
        };
        let opts = ServeOptions {
            fsname: "memfs".into(),
            ..ServeOptions::default()
        };
        let config = scoutfs_fuse::session_config(&opts, "memfs");
        let session = Session::new(fs, &dir, &config)
            .and_then(Session::spawn)
            .map_err(|e| format!("mounting memfs on {}: {e}", dir.display()))?;
        m.session = Some(session);
        Ok(m)
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        self.dir.as_deref().unwrap_or(Path::new(""))
    }

    /// The requests served so far.
    pub fn requests(&self) -> Requests {
        self.counters.snapshot()
    }

    /// Unmounts, waits for the serving threads to end (which frees the tree) and removes
    /// the directory.
    pub fn unmount(mut self) -> Result<(), String> {
        self.release()
    }

    fn release(&mut self) -> Result<(), String> {
        let mut res = Ok(());
        if let Some(session) = self.session.take() {
            if let Err(e) = session.umount_and_join() {
                let dir = self.mountpoint().display().to_string();
                res = Err(format!("unmounting memfs at {dir}: {e}"));
                // Detached, the mount goes away (and the serving threads end) once its
                // last user lets go.
                if let Ok(out) = Command::new("umount").args(["-l", &dir]).output() {
                    if !out.status.success() {
                        let err = String::from_utf8_lossy(&out.stderr);
                        res = Err(format!("{dir}: umount -l: {}", err.trim()));
                    }
                }
            }
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = fs::remove_dir(&dir) {
                res = res.and(Err(format!("{}: {e}", dir.display())));
            }
        }
        res
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            eprintln!("fs_compare: cleanup: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Tree {
        Tree::new(0, 0)
    }

    const ROOT: u64 = 1;
    const ME: (u32, u32) = (1000, 1000);

    #[test]
    fn data_reads_back_across_chunks_and_holes() {
        let mut d = Data::default();
        let bytes: Vec<u8> = (0..3 * CHUNK as usize / 2).map(|i| i as u8).collect();
        d.write(CHUNK / 2, &bytes).unwrap();
        assert_eq!(d.size, 2 * CHUNK);
        assert_eq!(d.chunks.len(), 2);
        assert_eq!(&*d.read(0, 16), &[0; 16]);
        assert_eq!(&*d.read(CHUNK / 2, 4096), &bytes[..4096]);
        let across = d.read(CHUNK - 10, 20);
        assert_eq!(&*across, &bytes[CHUNK as usize / 2 - 10..][..20]);
        assert_eq!(d.read(2 * CHUNK - 4, 100).len(), 4, "short at the end");
        assert!(d.read(5 * CHUNK, 100).is_empty(), "nothing past the end");

        // A write far past the end leaves a hole of zeros.
        d.write(4 * CHUNK + 1, b"x").unwrap();
        assert_eq!(d.chunks.len(), 3);
        let hole = d.read(2 * CHUNK - 1, CHUNK as u32 + 2);
        assert_eq!(hole[0], bytes[bytes.len() - 1]);
        assert!(hole[1..].iter().all(|&b| b == 0));
        assert_eq!(d.write(u64::MAX - 1, b"xy"), Err(Errno::EFBIG));
    }

    #[test]
    fn truncate_drops_what_is_past_the_size_and_growing_reads_zeros() {
        let mut d = Data::default();
        d.write(0, &vec![7; 2 * CHUNK as usize + 10]).unwrap();
        d.truncate(CHUNK + 3);
        assert_eq!(d.chunks.len(), 2);
        d.truncate(3 * CHUNK);
        assert_eq!(&*d.read(CHUNK, 3), &[7, 7, 7]);
        assert!(d.read(CHUNK + 3, 4096).iter().all(|&b| b == 0));
        assert!(d.read(2 * CHUNK, 4096).iter().all(|&b| b == 0));
        d.truncate(0);
        assert!(d.chunks.is_empty());
        assert_eq!(d.blocks(), 0);
    }

    #[test]
    fn make_lookup_remove_and_forget() {
        let mut t = tree();
        let d = t
            .make(ME, ROOT, OsStr::new("d"), FileType::Directory, 0o777, 0o022)
            .unwrap();
        assert_eq!((d.perm, d.uid, d.nlink), (0o755, 1000, 2));
        assert_eq!(t.getattr(ROOT).unwrap().nlink, 3);
        let dir = d.ino.0;
        let f = t
            .make(ME, dir, OsStr::new("f"), FileType::RegularFile, 0o644, 0)
            .unwrap();
        let f = f.ino.0;
        assert_eq!(
            t.make(ME, dir, OsStr::new("f"), FileType::RegularFile, 0o644, 0),
            Err(Errno::EEXIST)
        );
        let long = OsString::from("n".repeat(NAME_MAX + 1));
        assert_eq!(
            t.make(ME, dir, &long, FileType::RegularFile, 0o644, 0),
            Err(Errno::ENAMETOOLONG)
        );
        assert_eq!(t.lookup(dir, OsStr::new("f")).unwrap().ino.0, f);
        assert_eq!(t.lookup(dir, OsStr::new("g")), Err(Errno::ENOENT));
        assert_eq!(t.remove(ROOT, OsStr::new("d"), true), Err(Errno::ENOTEMPTY));
        assert_eq!(t.remove(ROOT, OsStr::new("d"), false), Err(Errno::EISDIR));
        assert_eq!(t.remove(dir, OsStr::new("f"), true), Err(Errno::ENOTDIR));

        // Unlinked, the file lives on until the kernel forgets both references it was
        // given (by create and by the lookup).
        t.write(f, 0, b"data").unwrap();
        t.remove(dir, OsStr::new("f"), false).unwrap();
        assert_eq!(t.lookup(dir, OsStr::new("f")), Err(Errno::ENOENT));
        assert_eq!(t.getattr(f).unwrap().nlink, 0);
        t.forget(f, 1);
        assert_eq!(&*t.data(f).unwrap().read(0, 10), b"data");
        t.forget(f, 1);
        assert_eq!(t.getattr(f), Err(Errno::ENOENT));

        t.remove(ROOT, OsStr::new("d"), true).unwrap();
        assert_eq!(t.getattr(ROOT).unwrap().nlink, 2);
        assert!(t.getattr(dir).is_ok(), "the kernel still holds it");
        t.forget(dir, 1);
        assert_eq!(t.getattr(dir), Err(Errno::ENOENT));
        t.forget(ROOT, 1);
        assert!(t.getattr(ROOT).is_ok(), "the root stays");
    }

    #[test]
    fn set_group_id_directories_pass_their_group_on() {
        let mut t = tree();
        let d = t
            .make(
                (5, 6),
                ROOT,
                OsStr::new("d"),
                FileType::Directory,
                0o2775,
                0,
            )
            .unwrap();
        let sub = t
            .make(ME, d.ino.0, OsStr::new("s"), FileType::Directory, 0o755, 0)
            .unwrap();
        assert_eq!(
            (sub.gid, u32::from(sub.perm) & libc::S_ISGID),
            (6, libc::S_ISGID)
        );
        let f = t
            .make(
                ME,
                d.ino.0,
                OsStr::new("f"),
                FileType::RegularFile,
                0o644,
                0,
            )
            .unwrap();
        assert_eq!((f.gid, f.perm), (6, 0o644));
    }

    #[test]
    fn readdir_goes_on_from_a_position_after_removals() {
        let mut t = tree();
        for n in ["a", "b", "c", "d"] {
            t.make(ME, ROOT, OsStr::new(n), FileType::RegularFile, 0o644, 0)
                .unwrap();
        }
        let list = |t: &Tree, pos: u64, max: usize| {
            let mut out = Vec::new();
            t.readdir(ROOT, pos, &mut |_, next, _, name| {
                if out.len() == max {
                    return true;
                }
                out.push((name.to_string_lossy().into_owned(), next));
                false
            })
            .unwrap();
            out
        };
        let first = list(&t, 0, 3);
        let names: Vec<&str> = first.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, [".", "..", "a"]);
        t.remove(ROOT, OsStr::new("b"), false).unwrap();
        let rest = list(&t, first[2].1, usize::MAX);
        let names: Vec<&str> = rest.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["c", "d"]);
        assert!(list(&t, rest[1].1, usize::MAX).is_empty());
    }

    #[test]
    fn setattr_changes_what_it_is_given() {
        let mut t = tree();
        let f = t
            .make(ME, ROOT, OsStr::new("f"), FileType::RegularFile, 0o644, 0)
            .unwrap()
            .ino
            .0;
        t.write(f, 0, &[1; 100]).unwrap();
        let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
        let set = SetAttr {
            mode: Some(0o100600),
            size: Some(10),
            mtime: Some(TimeOrNow::SpecificTime(when)),
            ..SetAttr::default()
        };
        let a = t.setattr(f, &set).unwrap();
        assert_eq!((a.perm, a.size, a.mtime, a.uid), (0o600, 10, when, 1000));
        let size = SetAttr {
            size: Some(1),
            ..SetAttr::default()
        };
        assert_eq!(t.setattr(ROOT, &size), Err(Errno::EISDIR));
    }
}
