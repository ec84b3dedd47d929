//! The types of the filesystem API: attributes, requests, options and errors.

use crate::client::ClientError;
use crate::volume::VolumeError;
use std::sync::Arc;

/// A point in time: seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timespec {
    /// Seconds.
    pub sec: i64,
    /// Nanoseconds (0..1e9).
    pub nsec: u32,
}

/// The kind of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

/// The attributes of an inode (stat(2)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Kind.
    pub kind: FileKind,
    /// Full `st_mode`, type bits included.
    pub mode: u32,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number (device inodes).
    pub rdev: u32,
    /// Size in bytes.
    pub size: u64,
    /// Allocated space in 512-byte units.
    pub blocks: u64,
    /// Preferred I/O size.
    pub blksize: u32,
    /// Access time.
    pub atime: Timespec,
    /// Modification time.
    pub mtime: Timespec,
    /// Change time.
    pub ctime: Timespec,
    /// Creation time.
    pub crtime: Timespec,
    /// Grows whenever the contents may have changed.
    pub data_version: u64,
}

/// A time to set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    /// The time of the operation.
    Now,
    /// This time.
    At(Timespec),
}

/// The attributes [`super::Fs::setattr`] changes (`None`: unchanged).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// Permission bits (the type bits are kept).
    pub mode: Option<u32>,
    /// Owner.
    pub uid: Option<u32>,
    /// Group.
    pub gid: Option<u32>,
    /// Size: truncate or extend.
    pub size: Option<u64>,
    /// Access time.
    pub atime: Option<SetTime>,
    /// Modification time.
    pub mtime: Option<SetTime>,
    /// Change time (the operation's time if `None`).
    pub ctime: Option<Timespec>,
}

/// The owner of new inodes (permissions are checked by the caller, e.g. the kernel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Creds {
    /// User.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// The creating process's umask: its permission bits are cleared from a new inode's
    /// mode, unless the directory has a default ACL, which then narrows the mode instead
    /// (as on Linux).
    pub umask: u32,
}

/// A directory entry as readdir returns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number.
    pub ino: u64,
    /// Kind of the inode.
    pub kind: FileKind,
    /// Name.
    pub name: Vec<u8>,
    /// The position to continue reading after this entry.
    pub next_pos: u64,
}

/// Flags of rename.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RenameFlags {
    /// Fail with EEXIST if the new name exists.
    pub noreplace: bool,
    /// Swap the two entries (both must exist).
    pub exchange: bool,
}

/// How setxattr treats an existing xattr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XattrSet {
    /// Create or replace.
    Any,
    /// Only create (EEXIST if it exists).
    Create,
    /// Only replace (ENODATA if it does not exist).
    Replace,
}

/// statfs(2) figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    /// Data blocks of `frsize` bytes.
    pub blocks: u64,
    /// Free data blocks.
    pub bfree: u64,
    /// Free data blocks for unprivileged users.
    pub bavail: u64,
    /// Inodes: those in use (the volume's inode count: the super's, every log tree's
    /// delta and this mount's open transaction's) and `ffree`.
    pub files: u64,
    /// Free inodes (an estimate from free metadata space).
    pub ffree: u64,
    /// Block size.
    pub bsize: u32,
    /// Longest name.
    pub namelen: u32,
    /// Fragment size.
    pub frsize: u32,
}

/// Where the filesystem gets the time of its operations.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The time now.
    fn now(&self) -> Timespec;
}

/// The system's real-time clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timespec {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timespec {
                sec: d.as_secs() as i64,
                nsec: d.subsec_nanos(),
            },
            Err(_) => Timespec::default(),
        }
    }
}

/// Options of a mount.
#[derive(Clone, Debug)]
pub struct FsOptions {
    /// Memory bound of the mount's metadata in bytes: a quarter for the open
    /// transaction (its dirty items and the blocks their commit writes: it commits when
    /// they reach it), a quarter for the dirty blocks of a unit of log merge work, half
    /// for the cache of clean metadata blocks.
    pub cache_bytes: usize,
    /// Seed of block seqs (from [`FsOptions::entropy`] if `None`; fixed in tests).
    pub seed: Option<u64>,
    /// The clock of timestamps.
    pub clock: Arc<dyn Clock>,
    /// Where the mount's random numbers come from (its id, seeds): the system's by
    /// default, a [`crate::entropy::SeededEntropy`] in a simulation that replays by seed.
    pub entropy: Arc<dyn crate::entropy::Entropy>,
    /// When reads update access times (`relatime` by default, as Linux mounts).
    pub atime: AtimeMode,
    /// Whether reading a directory updates its access time too (`nodiratime` clears it).
    pub dir_atime: bool,
    /// POSIX ACLs (`acl`, the default as in the original; `noacl` clears it): the xattrs
    /// `system.posix_acl_access` and `system.posix_acl_default` are checked and kept in
    /// step with the mode, and new inodes inherit their directory's default ACL. Without
    /// them those names are refused ([`FsError::NotSupported`]).
    pub acl: bool,
    /// Mount read-only: nothing is written to either device (no mount record, no
    /// commits, no merge work, no access times, orphans left for the next read-write
    /// mount), and every change fails with [`FsError::ReadOnly`]. The volume is read as
    /// its last commit left it, a crashed mount's committed changes included.
    pub read_only: bool,
    /// Count the references a caller holds to the inodes whose entries it was given (a
    /// FUSE front-end: the kernel's lookup counts), and keep an unlinked inode until they
    /// are given back with [`super::Fs::forget`] as well as its open handles released (module
    /// `lifetime` has the contract). Off by default: nothing is counted, and an inode goes
    /// at its last link or its last release.
    pub lookup_counts: bool,
    /// How `.srch.` xattr entries are kept: the size at which a mount's log file is
    /// rotated, and the size of a compaction step (see [`crate::srch`]); tests make them
    /// small.
    pub srch: crate::srch::SrchConfig,
    /// Idle cluster locks a mount made with [`super::Fs::mount`] keeps before it gives
    /// the oldest back (the original's `lock_idle_count`).
    pub lock_idle_count: usize,
    /// Cluster locks every operation takes (see [`crate::client::locks`]); `None` for a
    /// mount that is alone on its volume. Tests give a checking implementation.
    #[doc(hidden)]
    pub item_locks: Option<Arc<dyn crate::client::locks::ItemLocks>>,
    /// A deliberate bug, for the mutation tests that prove the crash tests can fail
    /// ([`Mutation::None`] always, outside those tests).
    #[doc(hidden)]
    pub mutation: Mutation,
}

/// A deliberate bug a mutation test turns on to prove a crash test catches it.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mutation {
    /// No bug.
    #[default]
    None,
    /// The transaction may commit between two changes of one operation (the rule that
    /// an operation holds its transaction is broken).
    EarlyCommit,
    /// A shrinking truncate zeroes the tail of the new last block in place, under the
    /// committed size.
    InPlaceTruncateZero,
    /// `.srch.` xattr changes log no srch entries.
    SrchUnlogged,
}

impl Default for FsOptions {
    fn default() -> Self {
        FsOptions {
            cache_bytes: 64 << 20,
            seed: None,
            clock: Arc::new(SystemClock),
            entropy: Arc::new(crate::entropy::SystemEntropy::default()),
            atime: AtimeMode::default(),
            dir_atime: true,
            acl: true,
            read_only: false,
            lookup_counts: false,
            srch: crate::srch::SrchConfig::default(),
            lock_idle_count: crate::lock::client::DEFAULT_LOCK_IDLE_COUNT,
            item_locks: None,
            mutation: Mutation::None,
        }
    }
}

/// When reading a file (its data, a directory's entries, a symlink's target) updates the
/// inode's access time: the Linux mount options of the same names. Archive agents pick
/// the files to release by it, so the default keeps it meaningful at little cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AtimeMode {
    /// Never (`noatime`): reads change nothing. A read-only mount behaves so whatever
    /// its mode.
    Never,
    /// `relatime`: when the access time is not later than the modification or change
    /// time, or is a day old or more. At most one update per file per day while nothing
    /// writes it, and "was it read since it last changed?" can still be answered.
    #[default]
    Relative,
    /// `strictatime`: on every read.
    Always,
}

impl AtimeMode {
    /// Whether a read at `now` moves an access time `atime` of an inode last modified at
    /// `mtime` and changed at `ctime`.
    pub fn needs_update(
        self,
        atime: Timespec,
        mtime: Timespec,
        ctime: Timespec,
        now: Timespec,
    ) -> bool {
        match self {
            AtimeMode::Never => false,
            AtimeMode::Always => atime != now,
            AtimeMode::Relative => {
                mtime >= atime || ctime >= atime || now.sec.saturating_sub(atime.sec) >= 24 * 3600
            }
        }
    }
}

/// Errors of filesystem operations; [`FsError::errno`] maps them to errno.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// No such entry or inode (ENOENT).
    #[error("no such file or directory")]
    NotFound,
    /// The name exists (EEXIST).
    #[error("file exists")]
    Exists,
    /// Not a directory (ENOTDIR).
    #[error("not a directory")]
    NotDir,
    /// Is a directory (EISDIR).
    #[error("is a directory")]
    IsDir,
    /// Directory not empty (ENOTEMPTY).
    #[error("directory not empty")]
    NotEmpty,
    /// Invalid argument (EINVAL).
    #[error("invalid argument")]
    Invalid,
    /// Name or symlink target too long (ENAMETOOLONG).
    #[error("name too long")]
    NameTooLong,
    /// No such xattr (ENODATA).
    #[error("no such attribute")]
    NoData,
    /// Xattr name of a bad length (ERANGE).
    #[error("attribute name out of range")]
    Range,
    /// Xattr value too large (E2BIG).
    #[error("attribute value too large")]
    TooBig,
    /// Across volumes (EXDEV).
    #[error("cross-device link")]
    CrossDevice,
    /// Too many links (EMLINK).
    #[error("too many links")]
    TooManyLinks,
    /// File too large (EFBIG).
    #[error("file too large")]
    FileTooBig,
    /// No space (ENOSPC).
    #[error("no space left on the volume")]
    NoSpace,
    /// The mount is read-only (EROFS).
    #[error("read-only filesystem")]
    ReadOnly,
    /// Operation not permitted (EPERM): a hard link to a directory.
    #[error("operation not permitted")]
    NotPermitted,
    /// Permission denied (EACCES): a default ACL on what is not a directory.
    #[error("permission denied")]
    AccessDenied,
    /// Operation not supported (EOPNOTSUPP).
    #[error("operation not supported")]
    NotSupported,
    /// A stale handle (ESTALE).
    #[error("stale file handle")]
    Stale,
    /// The volume is mounted by another process (EBUSY): the front-end that opens the
    /// devices detects it (e.g. with an exclusive lock on the meta device) before
    /// calling [`super::Fs::mount_single`], which cannot tell a live mount's record
    /// from a crashed one's.
    #[error("the volume is already mounted")]
    AlreadyMounted,
    /// A wait for offline data was given up (EINTR): its [`super::WaitCancel`] was
    /// cancelled.
    #[error("interrupted while waiting for offline data")]
    Interrupted,
    /// A wait for offline data was failed by an archive agent
    /// ([`super::Fs::data_wait_err`]) with this errno (positive).
    #[error("waiting for offline data failed: errno {0}")]
    DataWaitFailed(i32),
    /// Items that do not decode (EIO).
    #[error("filesystem item damaged: {0}")]
    Corrupt(&'static str),
    /// The mount's transaction or its server failed (EIO, or ENOSPC).
    #[error(transparent)]
    Client(ClientError),
    /// The data device failed (EIO).
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    /// The volume could not be opened: missing, foreign or damaged devices (EIO).
    #[error(transparent)]
    Volume(#[from] VolumeError),
}

/// Result of filesystem operations.
pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// The errno of this error (Linux numbers) — the one place errors map to errno.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => 2,
            FsError::Exists => 17,
            FsError::NotDir => 20,
            FsError::IsDir => 21,
            FsError::NotEmpty => 39,
            FsError::Invalid => 22,
            FsError::NameTooLong => 36,
            FsError::NoData => 61,
            FsError::Range => 34,
            FsError::TooBig => 7,
            FsError::CrossDevice => 18,
            FsError::TooManyLinks => 31,
            FsError::FileTooBig => 27,
            FsError::NoSpace => 28,
            FsError::ReadOnly => 30,
            FsError::NotPermitted => 1,
            FsError::NotSupported => 95,
            FsError::AccessDenied => 13,
            FsError::Stale => 116,
            FsError::AlreadyMounted => 16,
            FsError::Interrupted => 4,
            FsError::DataWaitFailed(errno) => *errno,
            FsError::Volume(e) if e.is_no_space() => 28,
            FsError::Corrupt(_) | FsError::Device(_) | FsError::Client(_) | FsError::Volume(_) => 5,
        }
    }
}
