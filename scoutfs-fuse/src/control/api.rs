//! What the control channel asks of a filesystem: the archive-agent operations of the
//! core's contract, as a trait so the daemon's dispatch can be tested against a model and
//! the command can run the same operations on an unmounted volume.
//!
//! PROVISIONAL: the types below are copies of the contract's, for the operations whose
//! core implementation has not landed yet; each goes (replaced by a re-export of
//! `scoutfs_core::fs`'s, as the seq index and tagged xattr types are) when it lands, and
//! [`landed`] says which have.

use super::wire::Cmd;
use scoutfs_core::fs::{Fs, FsError, FsResult, Timespec};

pub use scoutfs_core::fs::{IndexEntry, IndexPos, IndxEntry, SeqIndex, XattrTotal};

/// What `stat_more` tells of an inode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatMore {
    pub meta_seq: u64,
    pub data_seq: u64,
    pub data_version: u64,
    pub online_blocks: u64,
    pub offline_blocks: u64,
    pub crtime: Timespec,
    pub size: u64,
}

/// What `statfs_more` tells of the volume and the mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatfsMore {
    pub fsid: u64,
    pub rid: u64,
    pub committed_seq: u64,
    pub total_meta_blocks: u64,
    pub total_data_blocks: u64,
    pub reserved_meta_blocks: u64,
}

/// What `setattr_more` sets on an empty regular file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttrMore {
    pub data_version: u64,
    pub size: u64,
    pub offline: bool,
    pub ctime: Option<Timespec>,
    pub crtime: Option<Timespec>,
}

/// An extent of a file, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FiemapExtent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub offline: bool,
    pub unwritten: bool,
    pub last: bool,
}

/// A read waits for offline data.
pub const DATA_WAIT_READ: u8 = 1;
/// A write waits for offline data.
pub const DATA_WAIT_WRITE: u8 = 2;
/// A size change waits for offline data.
pub const DATA_WAIT_CHANGE_SIZE: u8 = 4;

/// A block of a file that operations wait for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataWaiting {
    pub ino: u64,
    pub iblock: u64,
    pub ops: u8,
}

/// One batch of `search_xattrs`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchXattrs {
    /// Candidate inodes, ascending.
    pub inos: Vec<u64>,
    /// Whether the search reached its last inode.
    pub complete: bool,
}

/// The archive-agent operations (`scoutfs_core::fs`'s contract). They trust their caller:
/// permissions are checked by the control channel before it calls them.
pub trait Agent {
    /// See `Fs::stat_more`.
    fn stat_more(&self, ino: u64) -> FsResult<StatMore>;
    /// See `Fs::statfs_more`.
    fn statfs_more(&self) -> FsResult<StatfsMore>;
    /// See `Fs::walk_inodes`.
    fn walk_inodes(
        &self,
        index: SeqIndex,
        first: IndexPos,
        last: IndexPos,
        limit: usize,
    ) -> FsResult<Vec<IndexEntry>>;
    /// See `Fs::release`.
    fn release(&self, ino: u64, offset: u64, len: u64, data_version: u64) -> FsResult<()>;
    /// See `Fs::stage`.
    fn stage(&self, ino: u64, offset: u64, data: &[u8], data_version: u64) -> FsResult<()>;
    /// See `Fs::setattr_more`.
    fn setattr_more(&self, ino: u64, set: &SetAttrMore) -> FsResult<()>;
    /// See `Fs::fiemap`.
    fn fiemap(&self, ino: u64, offset: u64, len: u64) -> FsResult<Vec<FiemapExtent>>;
    /// See `Fs::data_waiting`.
    fn data_waiting(&self, after_ino: u64, after_iblock: u64, limit: usize) -> Vec<DataWaiting>;
    /// See `Fs::data_wait_err`.
    fn data_wait_err(
        &self,
        ino: u64,
        offset: u64,
        count: u64,
        ops: u8,
        errno: i32,
    ) -> FsResult<u64>;
    /// See `Fs::list_hidden_xattrs`.
    fn list_hidden_xattrs(&self, ino: u64) -> FsResult<Vec<Vec<u8>>>;
    /// See `Fs::read_xattr_totals`.
    fn read_xattr_totals(&self, from: [u64; 3], limit: usize) -> FsResult<Vec<XattrTotal>>;
    /// See `Fs::read_xattr_index`.
    fn read_xattr_index(
        &self,
        first: IndxEntry,
        last: IndxEntry,
        limit: usize,
    ) -> FsResult<Vec<IndxEntry>>;
    /// See `Fs::search_xattrs`.
    fn search_xattrs(
        &self,
        name: &[u8],
        next_ino: u64,
        last_ino: u64,
        limit: usize,
    ) -> FsResult<SearchXattrs>;
}

/// A name `search_xattrs` may be asked for: one with the `scoutfs.srch.` tag (else
/// [`FsError::Invalid`], as the original's ioctl refuses it).
pub fn check_srch_name(name: &[u8]) -> FsResult<()> {
    match scoutfs_core::fs::parse_tags(name)? {
        Some((tags, _)) if tags.srch => Ok(()),
        _ => Err(FsError::Invalid),
    }
}

/// Whether the core implements the operation behind `cmd` yet. The daemon answers the
/// others `ENOTTY` (as for a command it does not know), and `scoutfs` refuses them before
/// asking, saying they are not supported yet.
pub const fn landed(cmd: Cmd) -> bool {
    match cmd {
        Cmd::WalkInodes | Cmd::ListHiddenXattrs | Cmd::ReadXattrTotals | Cmd::ReadXattrIndex => {
            true
        }
        Cmd::StatMore
        | Cmd::StatfsMore
        | Cmd::Release
        | Cmd::Stage
        | Cmd::SetattrMore
        | Cmd::DataWaiting
        | Cmd::DataWaitErr
        | Cmd::SearchXattrs
        | Cmd::Fiemap => false,
    }
}

/// The operations on a mounted `Fs`. Until an operation lands in the core (see
/// [`landed`]), it is `EOPNOTSUPP` here, and never reached: the channel refuses it first.
impl Agent for Fs {
    fn stat_more(&self, _ino: u64) -> FsResult<StatMore> {
        Err(FsError::NotSupported)
    }
    fn statfs_more(&self) -> FsResult<StatfsMore> {
        Err(FsError::NotSupported)
    }
    fn walk_inodes(
        &self,
        index: SeqIndex,
        first: IndexPos,
        last: IndexPos,
        limit: usize,
    ) -> FsResult<Vec<IndexEntry>> {
        Fs::walk_inodes(self, index, first, last, limit)
    }
    fn release(&self, _ino: u64, _offset: u64, _len: u64, _data_version: u64) -> FsResult<()> {
        Err(FsError::NotSupported)
    }
    fn stage(&self, _ino: u64, _offset: u64, _data: &[u8], _data_version: u64) -> FsResult<()> {
        Err(FsError::NotSupported)
    }
    fn setattr_more(&self, _ino: u64, _set: &SetAttrMore) -> FsResult<()> {
        Err(FsError::NotSupported)
    }
    fn fiemap(&self, _ino: u64, _offset: u64, _len: u64) -> FsResult<Vec<FiemapExtent>> {
        Err(FsError::NotSupported)
    }
    fn data_waiting(&self, _after_ino: u64, _after_iblock: u64, _limit: usize) -> Vec<DataWaiting> {
        Vec::new()
    }
    fn data_wait_err(
        &self,
        _ino: u64,
        _offset: u64,
        _count: u64,
        _ops: u8,
        _errno: i32,
    ) -> FsResult<u64> {
        Err(FsError::NotSupported)
    }
    fn list_hidden_xattrs(&self, ino: u64) -> FsResult<Vec<Vec<u8>>> {
        Fs::list_hidden_xattrs(self, ino)
    }
    fn read_xattr_totals(&self, from: [u64; 3], limit: usize) -> FsResult<Vec<XattrTotal>> {
        Fs::read_xattr_totals(self, from, limit)
    }
    fn read_xattr_index(
        &self,
        first: IndxEntry,
        last: IndxEntry,
        limit: usize,
    ) -> FsResult<Vec<IndxEntry>> {
        Fs::read_xattr_index(self, first, last, limit)
    }
    fn search_xattrs(
        &self,
        _name: &[u8],
        _next_ino: u64,
        _last_ino: u64,
        _limit: usize,
    ) -> FsResult<SearchXattrs> {
        Err(FsError::NotSupported)
    }
}
