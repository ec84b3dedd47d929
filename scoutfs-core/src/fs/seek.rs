//! `lseek(2)` with `SEEK_DATA` and `SEEK_HOLE`, answered from a file's data extent items.
//!
//! What counts as data: the blocks of a written extent (flags 0) below the size. Holes,
//! unwritten extents (fallocate: they read as zeros) and offline extents (released to an
//! archive; an offline extent that starts more than `MAX_EXTENT_BLOCKS` blocks before
//! `off` is not seen, which makes no difference: it is a hole either way) are holes, and so is everything
//! from the size on (the implicit hole at the end of every file). Linux leaves the
//! choice for unwritten extents to the filesystem: ext4 and XFS report them as holes
//! unless the page cache holds dirty pages over them. Here every write reaches the
//! filesystem before it returns (the FUSE mount has no writeback cache), so an unwritten
//! extent has never been written: a hole. (The one exception is a shared writable mmap
//! whose dirty pages the kernel has not yet written back: the kernel does not flush
//! them before it asks `FUSE_LSEEK`, so those pages read as a hole until it does.)
//!
//! The answer is in whole data blocks ([`DATA_BLOCK_SIZE`]): an offset inside a block of
//! data is data, inside a block of hole is a hole, and a hole found after `off` starts at
//! a block boundary (or at the size, which is always a hole).

use super::*;

const BS: u64 = DATA_BLOCK_SIZE;

/// Extent items read per btree scan while looking for the answer.
const BATCH: usize = 256;

/// What [`Fs::seek_data_hole`] looks for: the `whence` of `lseek(2)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekTarget {
    /// `SEEK_DATA`: the first offset at or after `off` that holds data.
    Data,
    /// `SEEK_HOLE`: the first offset at or after `off` in a hole (the size at the latest).
    Hole,
}

impl Fs {
    /// `lseek(fd, off, SEEK_DATA | SEEK_HOLE)` on regular file `ino`: the offset found,
    /// or `None` when `off` is at or past the size, or (`SEEK_DATA`) no data follows it
    /// -- the caller's `ENXIO`. See the module documentation for what is data. Not a
    /// regular file: [`FsError::IsDir`] or [`FsError::Invalid`].
    pub fn seek_data_hole(&self, ino: u64, off: u64, target: SeekTarget) -> FsResult<Option<u64>> {
        self.op_read(|st| st.seek_data_hole(ino, off, target))
    }
}

impl State {
    fn seek_data_hole(&self, ino: u64, off: u64, target: SeekTarget) -> FsResult<Option<u64>> {
        let size = self.file_inode(ino)?.size.get();
        if off >= size {
            return Ok(None);
        }
        let first = off / BS;
        // Blocks from here on are past the size: a hole whatever extents they have.
        let end_block = size.div_ceil(BS);
        // The first block not yet known to be data, from `first` on.
        let mut hole_from = first;
        // An extent item starts at most MAX_EXTENT_BLOCKS - 1 blocks before a block it
        // covers.
        let mut from = first.saturating_sub(MAX_EXTENT_BLOCKS - 1);
        'scan: loop {
            let items = self.client.read_items_limit(
                &data_extent_key(ino, from),
                &data_extent_key(ino, u64::MAX),
                BATCH,
            )?;
            if items.is_empty() {
                break;
            }
            for it in &items {
                let (start, end, flags) = extent_span(it)?;
                from = end;
                if end <= hole_from {
                    continue;
                }
                if start >= end_block {
                    break 'scan;
                }
                if flags != 0 {
                    // Unwritten or offline: a hole, passed over by both searches.
                    continue;
                }
                match target {
                    SeekTarget::Data => return Ok(Some((start * BS).max(off))),
                    SeekTarget::Hole if start > hole_from => break 'scan,
                    SeekTarget::Hole => hole_from = end,
                }
            }
            if from == u64::MAX {
                break;
            }
        }
        Ok(match target {
            SeekTarget::Data => None,
            SeekTarget::Hole => Some(hole_from.saturating_mul(BS).max(off).min(size)),
        })
    }
}

/// Logical blocks `start..end` and flags of data extent item `it`.
fn extent_span(it: &Item) -> FsResult<(u64, u64, u64)> {
    let d = DataExtent::read_from_bytes(&it.val)
        .map_err(|_| FsError::Corrupt("data extent item of the wrong size"))?;
    let start = it.key.second;
    let (len, flags) = (d.len.get(), d.flags.get());
    // An offline extent may be longer (module `archive`).
    let long_ok = flags == DATA_EXTENT_FLAG_OFFLINE;
    match start.checked_add(len) {
        Some(end) if len > 0 && (len <= MAX_EXTENT_BLOCKS || long_ok) => Ok((start, end, flags)),
        _ => Err(FsError::Corrupt("data extent out of range")),
    }
}
