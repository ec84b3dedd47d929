//! FUSE requests to `scoutfs_core::fs::Fs` calls, one method each. No filesystem logic
//! lives here beyond what the kernel's VFS does for a kernel filesystem and FUSE leaves to
//! the daemon: the group of new inodes in set-group-ID directories (the umask and the
//! default ACLs are the filesystem's).
//!
//! Errors become errno in one place, [`errno`], through `FsError::errno`.
//!
//! Reads, writes, size changes and fallocates may have to wait for offline data (an
//! archive agent stages it): they run in the filesystem's non-blocking form and a request
//! that must wait is parked off its request thread until the data is there or its caller
//! is signalled (module `park`, which says how interruption works under fuser 0.18).

use crate::control;
use crate::kcache::{Kernel, Seen, MAX_NEGATIVE};
use crate::park::Parker;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use scoutfs_core::fs::{
    self, Attr, Creds, FileKind, Fs, FsError, SeekTarget, SetAttr, SetTime, Timespec, Waitable,
    XattrSet,
};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may trust attributes and directory entries it was given, by
/// default (mount options `attr_timeout_ms=` and `entry_timeout_ms=`, [`ServeOptions`]).
///
/// A change made through this kernel mount updates or invalidates what the kernel cached
/// for the inodes the request touched (a write marks size, times and blocks for asking
/// again; unlink, rename and setattr take the filesystem's answer). Every other change —
/// another mount's, once this mount's lock on the inodes is lost, or an embedder's
/// release, stage or setattr_more through the `Fs` beside this mount — is told to the
/// kernel before the change can be seen elsewhere: the `Fs` calls the adapter's
/// `KernelCache` (module `kcache`), which has the kernel drop the attributes, pages and
/// names (positive and negative) it may hold of the inodes and directories concerned. So
/// entries and attributes may be kept as long as the kernel keeps their dentries and
/// inodes, as a kernel filesystem's are: an hour stands for "until memory pressure
/// evicts them". Negative entries are cached as long, while the adapter can keep track of
/// them (module `kcache`: past its bound an absent name is answered uncached). Shorter
/// timeouts are only for a kernel whose notifications cannot be relied on.
///
/// [`ServeOptions`]: crate::ServeOptions
pub const TTL: Duration = Duration::from_secs(3600);

/// The one mapping from the filesystem's errors to errno.
fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

/// Replies with `Ok` through `ok`, or the error's errno.
macro_rules! reply {
    ($reply:ident, $res:expr, $ok:expr) => {
        match $res {
            Ok(v) =>
            {
                #[allow(clippy::redundant_closure_call)]
                ($ok)($reply, v)
            }
            Err(e) => $reply.error(errno(&e)),
        }
    };
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

fn system_time(t: Timespec) -> SystemTime {
    let nsec = Duration::from_nanos(u64::from(t.nsec));
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(t.sec.unsigned_abs()) + nsec
    } else {
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + nsec
    }
}

fn timespec(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec {
            sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nsec: d.subsec_nanos(),
        },
        Err(before) => {
            // Before 1970: whole seconds down, nanoseconds up, as in a struct timespec.
            let d = before.duration();
            let mut sec = -i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            let mut nsec = d.subsec_nanos();
            if nsec > 0 {
                sec -= 1;
                nsec = 1_000_000_000 - nsec;
            }
            Timespec { sec, nsec }
        }
    }
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(t) => SetTime::At(timespec(t)),
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: system_time(a.atime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: system_time(a.crtime),
        kind: kind(a.kind),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

/// Inode numbers are never reused, so every inode is generation 0.
const GENERATION: Generation = Generation(0);

/// The attributes of no inode (inode 0), for the entries that have none.
const NO_ATTR: Attr = Attr {
    ino: 0,
    kind: FileKind::File,
    mode: 0,
    nlink: 0,
    uid: 0,
    gid: 0,
    rdev: 0,
    size: 0,
    blocks: 0,
    blksize: 0,
    atime: Timespec { sec: 0, nsec: 0 },
    mtime: Timespec { sec: 0, nsec: 0 },
    ctime: Timespec { sec: 0, nsec: 0 },
    crtime: Timespec { sec: 0, nsec: 0 },
    data_version: 0,
};

fn empty(reply: ReplyEmpty, _: ()) {
    reply.ok();
}

/// Xattr names the adapter refuses: the `system.` namespace but the POSIX ACLs, which
/// the filesystem keeps (or refuses itself, on a `noacl` mount).
fn unsupported_xattr(name: &[u8]) -> bool {
    name.starts_with(b"system.") && name != fs::ACL_ACCESS && name != fs::ACL_DEFAULT
}

/// Whether setting or removing xattr `name` is refused to the caller of `req` (EPERM): a
/// `scoutfs.` tagged name needs CAP_SYS_ADMIN, as in the original. A malformed tagged
/// name goes on to the filesystem, which refuses it (EINVAL) whoever asks, as the
/// original does before it asks for privilege. Reading a tagged xattr needs nothing.
fn tag_refused(req: &Request, name: &[u8]) -> bool {
    matches!(fs::parse_tags(name), Ok(Some(_)))
        && !crate::creds::caller_has_cap(req.pid(), crate::creds::CAP_SYS_ADMIN)
}

/// Asks the kernel, at INIT, for what a mount uses, each only where the kernel offers
/// it (older kernels do without), but the ACLs, which `acls` requires:
/// - READDIRPLUS, AUTO: directory reads carry the entries' attributes when the kernel
///   expects lookups to follow (`ls -l`, `rm -r`), which it then skips;
/// - PARALLEL_DIROPS: lookups and reads in one directory are not serialized by the kernel
///   (the filesystem orders them itself);
/// - CACHE_SYMLINKS: symlink targets stay in the page cache (they never change);
/// - POSIX_ACL and DONT_MASK, with `acls`: the kernel checks permissions against the ACLs
///   (and caches them), and leaves the umask to the filesystem, which applies it only
///   where no default ACL decides instead.
///
/// Public so that another filesystem can be served exactly as a scoutfs mount is (the
/// benchmarks' in-memory FUSE peer).
pub fn request_capabilities(config: &mut KernelConfig, acls: bool) -> std::io::Result<()> {
    if acls {
        for flag in [InitFlags::FUSE_POSIX_ACL, InitFlags::FUSE_DONT_MASK] {
            config.add_capabilities(flag).map_err(|_| {
                std::io::Error::other("the kernel's FUSE has no POSIX ACLs: mount with -o noacl")
            })?;
        }
    }
    for flag in [
        InitFlags::FUSE_DO_READDIRPLUS,
        InitFlags::FUSE_READDIRPLUS_AUTO,
        InitFlags::FUSE_PARALLEL_DIROPS,
        InitFlags::FUSE_CACHE_SYMLINKS,
    ] {
        let _ = config.add_capabilities(flag);
    }
    Ok(())
}

/// The FUSE filesystem: a thin layer over one mounted [`Fs`].
#[derive(Debug)]
pub struct Adapter {
    fs: Arc<Fs>,
    /// Requests waiting for offline data.
    parker: Parker,
    /// What the kernel may cache, and the threads that tell it what changed (module
    /// `kcache`).
    kernel: Arc<Kernel>,
    /// How long the kernel may keep attributes, and entries.
    attr_ttl: Duration,
    entry_ttl: Duration,
    /// The control channel's state (the open files' handles, stages in pieces).
    control: control::Control,
}

impl Adapter {
    /// The adapter for a mounted filesystem, which must count the kernel's references
    /// (mounted with `FsOptions::lookup_counts`; [`crate::mount`] checks it): every
    /// entry the adapter answers with is one.
    /// Starts the thread that watches requests waiting for offline data (module `park`)
    /// and the threads that write notifications to the kernel (module `kcache`); the
    /// kernel may keep attributes and entries as long as `opts` say.
    pub fn new(fs: Arc<Fs>, opts: &crate::ServeOptions) -> std::io::Result<Adapter> {
        let parker = Parker::new(fs.clone())?;
        let kernel = Arc::new(Kernel::new(&fs, MAX_NEGATIVE, opts.notify_timeout)?);
        Ok(Adapter {
            fs,
            parker,
            kernel,
            attr_ttl: opts.attr_timeout,
            entry_ttl: opts.entry_timeout,
            control: control::Control::default(),
        })
    }

    /// The handle of an open with `flags`: they are in it (see `control::caller`), and the
    /// kernel hands it back with the control channel's ioctls.
    fn handle(&self, flags: i32) -> FileHandle {
        FileHandle(self.control.open_handle(flags))
    }

    /// What the kernel may cache of the mount, for the `Fs` to invalidate
    /// (`Fs::set_kernel_cache`): it writes notifications once given the session's
    /// notifier (`Kernel::set_notifier`; the session is made with the adapter, so it
    /// cannot be given at [`Adapter::new`]). Without it, the kernel may show stale
    /// attributes, pages and entries until it asks again.
    pub fn kernel(&self) -> Arc<Kernel> {
        self.kernel.clone()
    }

    fn entry(&self, reply: ReplyEntry, a: &Attr) {
        reply.entry(&self.entry_ttl, &file_attr(a), GENERATION);
    }

    fn attr(&self, reply: ReplyAttr, a: &Attr) {
        reply.attr(&self.attr_ttl, &file_attr(a));
    }

    /// Answer an operation that makes `name` in `parent` (create, mknod, mkdir,
    /// symlink, link) with its result, noting the name the kernel will keep.
    fn made(
        &self,
        reply: ReplyEntry,
        parent: u64,
        name: &OsStr,
        res: Result<Attr, FsError>,
        seen: Seen,
    ) {
        match res {
            Ok(a) => {
                self.kernel
                    .answered(seen, parent, &[(name.as_bytes(), Some(a.ino))]);
                self.entry(reply, &a)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// Requests waiting for offline data now.
    pub fn parked(&self) -> usize {
        self.parker.parked()
    }

    /// Owner of a new inode made by `req` in `parent` (with the umask, which the filesystem
    /// applies unless a default ACL decides), and its mode after the set-group-ID rule (a new inode in a set-group-ID directory takes the directory's
    /// group, and a new directory there is set-group-ID itself) — what the VFS's
    /// `inode_init_owner` does for kernel filesystems.
    fn new_inode(
        &self,
        req: &Request,
        parent: u64,
        mode: u32,
        umask: u32,
        dir: bool,
    ) -> Result<(u32, Creds), FsError> {
        let p = self.fs.getattr(parent)?;
        let mut mode = mode;
        let mut gid = req.gid();
        if p.mode & libc::S_ISGID != 0 {
            gid = p.gid;
            if dir {
                mode |= libc::S_ISGID;
            }
        }
        Ok((
            mode,
            Creds {
                uid: req.uid(),
                gid,
                umask,
            },
        ))
    }

    fn create_node(
        &self,
        req: &Request,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> Result<Attr, FsError> {
        let (mode, creds) = self.new_inode(req, parent, mode, umask, false)?;
        self.fs.mknod(parent, name.as_bytes(), mode, rdev, creds)
    }
}

impl Drop for Adapter {
    /// The session is over: nothing is left to notify.
    fn drop(&mut self) {
        self.kernel.stop();
    }
}

impl Filesystem for Adapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        request_capabilities(config, self.fs.acls())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let (parent, name) = (parent.0, name.as_bytes());
        let seen = self.kernel.before(parent, Some(name));
        match self.fs.lookup(parent, name) {
            Ok(a) => {
                self.kernel.answered(seen, parent, &[(name, Some(a.ino))]);
                self.entry(reply, &a)
            }
            Err(FsError::NotFound) => {
                // "No such name": an entry of inode 0, which the kernel keeps as a
                // negative entry for the timeout, or not at all past the bound of the
                // negatives the adapter keeps track of (module `kcache`).
                let cache = self.kernel.answered(seen, parent, &[(name, None)]);
                let ttl = if cache.first() == Some(&true) {
                    self.entry_ttl
                } else {
                    Duration::ZERO
                };
                reply.entry(&ttl, &file_attr(&NO_ATTR), GENERATION)
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// The kernel lets go of `nlookup` of its references to `ino` (every entry it was
    /// given counted one: the `Fs` counts them, mounted with `lookup_counts`): an inode
    /// without links that is not open goes with its last one. No reply is sent. A
    /// `BATCH_FORGET` arrives here one inode at a time, through fuser's default
    /// `batch_forget` (fuser 0.18 does not export the type of its argument, so it cannot
    /// be overridden).
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if let Err(e) = self.fs.forget(ino.0, nlookup) {
            // Nowhere to answer: the inode stays an orphan (the next mount deletes it).
            eprintln!("scoutfs: deleting unlinked inode {} failed: {e}", ino.0);
        }
        self.kernel.forgot(&self.fs, ino.0);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply!(reply, self.fs.getattr(ino.0), |r, a: Attr| self.attr(r, &a));
    }

    fn setattr(
        &self,
        req: &Request,
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
        let set = SetAttr {
            // The kernel sends the whole i_mode; the type bits are not the caller's to set.
            mode: mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            ctime: ctime.map(timespec),
        };
        let ino = ino.0;
        let ttl = self.attr_ttl;
        let first = with_ttl(self.fs.try_setattr(ino, &set), ttl);
        let retry = || move |fs: &Fs| with_ttl(fs.try_setattr(ino, &set), ttl);
        self.parker.finish(
            req.pid(),
            reply,
            first,
            retry,
            |r: ReplyAttr, (a, ttl): (Attr, Duration)| r.attr(&ttl, &file_attr(&a)),
        );
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        reply!(
            reply,
            self.fs.readlink(ino.0),
            |r: ReplyData, t: Vec<u8>| r.data(&t)
        );
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let seen = self.kernel.before(parent.0, Some(name.as_bytes()));
        let res = self.create_node(req, parent.0, name, mode, umask, rdev);
        self.made(reply, parent.0, name, res, seen);
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
        let seen = self.kernel.before(parent.0, Some(name.as_bytes()));
        let res = self
            .new_inode(req, parent.0, mode, umask, true)
            .and_then(|(mode, creds)| self.fs.mkdir(parent.0, name.as_bytes(), mode, creds));
        self.made(reply, parent.0, name, res, seen);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self.fs.unlink(parent.0, name.as_bytes());
        if res.is_ok() {
            self.kernel.removed(parent.0, name.as_bytes());
        }
        reply!(reply, res, empty);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self.fs.rmdir(parent.0, name.as_bytes());
        if res.is_ok() {
            self.kernel.removed(parent.0, name.as_bytes());
        }
        reply!(reply, res, empty);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let seen = self.kernel.before(parent.0, Some(link_name.as_bytes()));
        let res = self
            .new_inode(req, parent.0, 0o777, 0, false)
            .and_then(|(_, creds)| {
                self.fs.symlink(
                    parent.0,
                    link_name.as_bytes(),
                    target.as_os_str().as_bytes(),
                    creds,
                )
            });
        self.made(reply, parent.0, link_name, res, seen);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let known = RenameFlags::RENAME_NOREPLACE | RenameFlags::RENAME_EXCHANGE;
        if !(flags - known).is_empty() {
            // RENAME_WHITEOUT is for overlay filesystems' upper layers.
            return reply.error(Errno::EINVAL);
        }
        let f = fs::RenameFlags {
            noreplace: flags.contains(RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(RenameFlags::RENAME_EXCHANGE),
        };
        let res = self.fs.rename(
            parent.0,
            name.as_bytes(),
            newparent.0,
            newname.as_bytes(),
            f,
        );
        if res.is_ok() {
            self.kernel.renamed(
                parent.0,
                name.as_bytes(),
                newparent.0,
                newname.as_bytes(),
                f.exchange,
            );
        }
        reply!(reply, res, empty);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let seen = self.kernel.before(newparent.0, Some(newname.as_bytes()));
        let res = self.fs.link(ino.0, newparent.0, newname.as_bytes());
        self.made(reply, newparent.0, newname, res, seen);
    }

    /// Opens a file. The kernel keeps its cached pages (FOPEN_KEEP_CACHE): every change
    /// of contents goes through it, or is told to it (module `kcache`: another mount's
    /// once this mount's lock is lost, a release or setattr_more through the `Fs`).
    /// Without it, every open drops the file's pages first, and waits for any page a
    /// read holds locked: an open (`scoutfs stage`'s own, or `data-waiting -p FILE`'s)
    /// would wait behind a reader parked on offline data until the stage it blocks.
    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        reply!(reply, self.fs.open(ino.0), |r: ReplyOpen, ()| r
            .opened(self.handle(flags.0), FopenFlags::FOPEN_KEEP_CACHE));
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let ino = ino.0;
        let first = self.fs.try_read(ino, offset, size);
        let retry = || move |fs: &Fs| fs.try_read(ino, offset, size);
        self.parker.finish(
            req.pid(),
            reply,
            first,
            retry,
            |r: ReplyData, d: Vec<u8>| r.data(&d),
        );
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let ino = ino.0;
        let first = self.fs.try_write(ino, offset, data);
        // The bytes are copied only for a write that must wait.
        let retry = || {
            let data = data.to_vec();
            move |fs: &Fs| fs.try_write(ino, offset, &data)
        };
        self.parker
            .finish(req.pid(), reply, first, retry, |r: ReplyWrite, n: u32| {
                r.written(n)
            });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() does not commit (as on a kernel filesystem; fsync does), so there is
        // nothing to do. ENOSYS tells the kernel so once: it then stops sending FLUSH on
        // every close (and returns 0 to close), saving a round trip per close.
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.control.released(fh.0);
        reply!(reply, self.fs.release(ino.0), empty);
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply!(reply, self.fs.fsync(ino.0, datasync), empty);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        reply!(reply, self.fs.open(ino.0), |r: ReplyOpen, ()| r
            .opened(self.handle(flags.0), FopenFlags::empty()));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let res = self.fs.readdir(ino.0, offset, &mut |e| {
            // add() says whether the buffer is full; the entry that did not fit is not
            // added, and the kernel asks again from its position.
            !reply.add(
                INodeNo(e.ino),
                e.next_pos,
                kind(e.kind),
                OsStr::from_bytes(&e.name),
            )
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
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
        let seen = self.kernel.before(ino.0, None);
        // The names the kernel will keep, recorded once the `Fs` call is over (the
        // callback runs under the `Fs`'s lock, inside which the adapter takes none of its
        // own).
        let mut names: Vec<(Vec<u8>, u64)> = Vec::new();
        let ttl = self.entry_ttl;
        let res = self.fs.readdir_plus(ino.0, offset, &mut |e, a| {
            // An entry whose inode is missing goes as inode 0: the kernel lists the name
            // without caching an entry for it.
            let attr = match a {
                Some(a) => file_attr(a),
                None => file_attr(&Attr {
                    ino: 0,
                    kind: e.kind,
                    ..NO_ATTR
                }),
            };
            let full = reply.add(
                attr.ino,
                e.next_pos,
                OsStr::from_bytes(&e.name),
                &ttl,
                &attr,
                GENERATION,
            );
            if !full && attr.ino.0 != 0 && e.name != b"." && e.name != b".." {
                names.push((e.name.clone(), attr.ino.0));
            }
            !full
        });
        let named: Vec<(&[u8], Option<u64>)> =
            names.iter().map(|(n, i)| (&n[..], Some(*i))).collect();
        self.kernel.answered(seen, ino.0, &named);
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply!(reply, self.fs.release(ino.0), empty);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply!(reply, self.fs.fsync(ino.0, datasync), empty);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply!(reply, self.fs.statfs(), |r: ReplyStatfs, s: fs::StatFs| r
            .statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ));
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        if unsupported_xattr(name.as_bytes()) {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let how = match flags {
            0 => XattrSet::Any,
            libc::XATTR_CREATE => XattrSet::Create,
            libc::XATTR_REPLACE => XattrSet::Replace,
            _ => return reply.error(Errno::EINVAL),
        };
        if position != 0 {
            // A resource fork offset (macOS only).
            return reply.error(Errno::EINVAL);
        }
        if tag_refused(req, name.as_bytes()) {
            return reply.error(Errno::EPERM);
        }
        reply!(
            reply,
            self.fs.setxattr(ino.0, name.as_bytes(), value, how),
            empty
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        if unsupported_xattr(name.as_bytes()) {
            return reply.error(Errno::EOPNOTSUPP);
        }
        reply!(
            reply,
            self.fs.getxattr(ino.0, name.as_bytes()),
            |r: ReplyXattr, v: Vec<u8>| xattr_reply(r, size, &v)
        );
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        reply!(
            reply,
            self.fs.listxattr(ino.0),
            |r: ReplyXattr, names: Vec<Vec<u8>>| {
                let mut list = Vec::new();
                for n in names {
                    list.extend_from_slice(&n);
                    list.push(0);
                }
                xattr_reply(r, size, &list);
            }
        );
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        if unsupported_xattr(name.as_bytes()) {
            return reply.error(Errno::EOPNOTSUPP);
        }
        if tag_refused(req, name.as_bytes()) {
            return reply.error(Errno::EPERM);
        }
        reply!(reply, self.fs.removexattr(ino.0, name.as_bytes()), empty);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let seen = self.kernel.before(parent.0, Some(name.as_bytes()));
        let res = self
            .create_node(req, parent.0, name, mode, umask, 0)
            .and_then(|a| {
                self.fs.open(a.ino).map(|()| a).inspect_err(|_| {
                    // The kernel is not given the entry: its reference goes back.
                    let _ = self.fs.forget(a.ino, 1);
                })
            });
        if let Ok(a) = &res {
            self.kernel
                .answered(seen, parent.0, &[(name.as_bytes(), Some(a.ino))]);
        }
        reply!(reply, res, |r: ReplyCreate, a: Attr| r.created(
            &self.entry_ttl,
            &file_attr(&a),
            GENERATION,
            self.handle(flags),
            FopenFlags::empty()
        ));
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let keep_size = match mode {
            0 => false,
            libc::FALLOC_FL_KEEP_SIZE => true,
            // Punching holes, collapsing, zeroing and inserting ranges are not offered.
            _ => return reply.error(Errno::EOPNOTSUPP),
        };
        let ino = ino.0;
        let first = self.fs.try_fallocate(ino, offset, length, keep_size);
        let retry = || move |fs: &Fs| fs.try_fallocate(ino, offset, length, keep_size);
        self.parker.finish(req.pid(), reply, first, retry, empty);
    }

    /// The control channel (`scoutfs-fuse`'s `control`): `scoutfs` commands on a file or
    /// directory of the mount.
    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        let request = control::Request {
            ino: ino.0,
            fh: fh.0,
            open: control::open_mode(fh.0),
            cmd,
            input: in_data,
            out_size,
        };
        let pid = req.pid();
        match self
            .control
            .dispatch(&*self.fs, &request, &|| control::sys_admin(pid))
        {
            // What a command changed behind the kernel's back (release, stage,
            // setattr_more) the `Fs` had the kernel drop already (module `kcache`), so
            // that what the caller does next sees the change.
            Ok(r) => reply.ioctl(r.result, &r.data),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    /// `SEEK_DATA` and `SEEK_HOLE` (the kernel answers the other `whence` values itself).
    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let target = match whence {
            libc::SEEK_DATA => SeekTarget::Data,
            libc::SEEK_HOLE => SeekTarget::Hole,
            _ => return reply.error(Errno::EINVAL),
        };
        let Ok(offset) = u64::try_from(offset) else {
            return reply.error(Errno::ENXIO);
        };
        match self.fs.seek_data_hole(ino.0, offset, target) {
            Ok(Some(found)) => match i64::try_from(found) {
                Ok(found) => reply.offset(found),
                Err(_) => reply.error(Errno::ENXIO),
            },
            Ok(None) => reply.error(Errno::ENXIO),
            Err(e) => reply.error(errno(&e)),
        }
    }
}

/// A setattr's result with the attribute timeout to answer with.
fn with_ttl(
    res: Result<Waitable<Attr>, FsError>,
    ttl: Duration,
) -> Result<Waitable<(Attr, Duration)>, FsError> {
    res.map(|w| match w {
        Waitable::Ready(a) => Waitable::Ready((a, ttl)),
        Waitable::Wait(w) => Waitable::Wait(w),
    })
}

/// A getxattr/listxattr answer: the size when asked for it (`size` 0), the bytes when they
/// fit, ERANGE when they do not.
fn xattr_reply(reply: ReplyXattr, size: u32, value: &[u8]) {
    match u32::try_from(value.len()) {
        Ok(len) if size == 0 => reply.size(len),
        Ok(len) if len <= size => reply.data(value),
        _ => reply.error(Errno::ERANGE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_both_ways_around_the_epoch() {
        for (sec, nsec) in [
            (0, 0),
            (1, 5),
            (1_700_000_000, 999_999_999),
            (-1, 0),
            (-1, 500_000_000),
            (-86_400 * 365, 1),
        ] {
            let t = Timespec { sec, nsec };
            assert_eq!(timespec(system_time(t)), t, "{sec}.{nsec}");
        }
    }

    #[test]
    fn every_kind_maps_to_its_fuse_type() {
        assert_eq!(kind(FileKind::File), FileType::RegularFile);
        assert_eq!(kind(FileKind::Dir), FileType::Directory);
        assert_eq!(kind(FileKind::Symlink), FileType::Symlink);
        assert_eq!(kind(FileKind::CharDev), FileType::CharDevice);
        assert_eq!(kind(FileKind::BlockDev), FileType::BlockDevice);
        assert_eq!(kind(FileKind::Fifo), FileType::NamedPipe);
        assert_eq!(kind(FileKind::Socket), FileType::Socket);
    }

    #[test]
    fn system_names_but_acls_are_refused_and_scoutfs_names_pass() {
        // The ACL names go to the filesystem, which keeps them or refuses them itself.
        assert!(!unsupported_xattr(b"system.posix_acl_access"));
        assert!(!unsupported_xattr(b"system.posix_acl_default"));
        assert!(unsupported_xattr(b"system.posix_acl_other"));
        assert!(unsupported_xattr(b"system.nfs4_acl"));
        assert!(!unsupported_xattr(b"scoutfs.hide.x"));
        assert!(!unsupported_xattr(b"user.x"));
    }
}
