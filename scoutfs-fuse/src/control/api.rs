//! What the control channel asks of a filesystem: the archive-agent operations of the
//! core's contract, as a trait so the daemon's dispatch can be tested against a model and
//! the command can run the same operations on an unmounted volume.
//!
//! The types are the core's (`scoutfs_core::fs`).

use scoutfs_core::fs::{Fs, FsError, FsResult};

pub use scoutfs_core::fs::{
    DataWaiting, FiemapExtent, IndexEntry, IndexPos, IndxEntry, SearchXattrs, SeqIndex,
    SetAttrMore, StatMore, StatfsMore, XattrTotal, DATA_WAIT_CHANGE_SIZE, DATA_WAIT_READ,
    DATA_WAIT_WRITE,
};

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

/// The operations of an `Fs` (mounted, or opened read-only by the command itself).
impl Agent for Fs {
    fn stat_more(&self, ino: u64) -> FsResult<StatMore> {
        Fs::stat_more(self, ino)
    }
    fn statfs_more(&self) -> FsResult<StatfsMore> {
        Fs::statfs_more(self)
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
    fn release(&self, ino: u64, offset: u64, len: u64, data_version: u64) -> FsResult<()> {
        // The contract's `release`; `Fs::release` is the release of an open handle.
        Fs::release_data(self, ino, offset, len, data_version)
    }
    fn stage(&self, ino: u64, offset: u64, data: &[u8], data_version: u64) -> FsResult<()> {
        Fs::stage(self, ino, offset, data, data_version)
    }
    fn setattr_more(&self, ino: u64, set: &SetAttrMore) -> FsResult<()> {
        Fs::setattr_more(self, ino, set)
    }
    fn fiemap(&self, ino: u64, offset: u64, len: u64) -> FsResult<Vec<FiemapExtent>> {
        Fs::fiemap(self, ino, offset, len)
    }
    fn data_waiting(&self, after_ino: u64, after_iblock: u64, limit: usize) -> Vec<DataWaiting> {
        Fs::data_waiting(self, after_ino, after_iblock, limit)
    }
    fn data_wait_err(
        &self,
        ino: u64,
        offset: u64,
        count: u64,
        ops: u8,
        errno: i32,
    ) -> FsResult<u64> {
        Fs::data_wait_err(self, ino, offset, count, ops, errno)
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
        name: &[u8],
        next_ino: u64,
        last_ino: u64,
        limit: usize,
    ) -> FsResult<SearchXattrs> {
        Fs::search_xattrs(self, name, next_ino, last_ino, limit)
    }
}
