//! Metadata blocks: verification, the bounded cache of clean blocks, and the
//! copy-on-write writer of one transaction.
//!
//! Invariants:
//! - Every block that enters the cache from the device has passed [`verify_block`] (crc,
//!   magic, fsid, blkno and the seq its reference names) and the caller's content
//!   validator. A mismatch of the header is [`BlockError::Stale`]: the reference may name a
//!   block that has since been freed and rewritten. Whether that is a race (retry with
//!   fresh roots) or corruption (the same roots fail twice) is for the caller to decide.
//!   Inconsistent contents behind a good header are [`BlockError::Corrupt`].
//! - Readers never see a block change: a writer modifies only blocks it allocated itself
//!   in this transaction ([`BlockWriter`]), and hands them to the cache only once written.

mod cache;
mod writer;

pub use cache::{BlockCache, CacheStats};
pub use writer::{BlockWriter, WriteStats};

use crate::alloc::AllocError;
use crate::device::DeviceError;
use crate::format::{block_crc, BlockHeader, BlockRef};
use std::sync::Arc;
use zerocopy::FromBytes;

/// Why a block did not match the reference that led to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StaleReason {
    /// The crc does not match the contents.
    Checksum {
        /// crc stored in the block.
        stored: u32,
        /// crc computed over the block.
        computed: u32,
    },
    /// A different kind of block.
    Magic {
        /// Magic found.
        found: u32,
        /// Magic expected.
        expected: u32,
    },
    /// A block of another volume.
    Fsid {
        /// fsid found.
        found: u64,
    },
    /// The block says it lives elsewhere.
    Blkno {
        /// blkno found in the header.
        found: u64,
    },
    /// Another incarnation of the block.
    Seq {
        /// seq found.
        found: u64,
        /// seq the reference names.
        expected: u64,
    },
}

impl std::fmt::Display for StaleReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            StaleReason::Checksum { stored, computed } => {
                write!(
                    f,
                    "checksum {stored:08x} does not match the contents ({computed:08x})"
                )
            }
            StaleReason::Magic { found, expected } => {
                write!(f, "magic {found:08x}, expected {expected:08x}")
            }
            StaleReason::Fsid { found } => write!(f, "belongs to volume {found:016x}"),
            StaleReason::Blkno { found } => write!(f, "header says it is block {found}"),
            StaleReason::Seq { found, expected } => {
                write!(f, "seq {found:016x}, the reference names {expected:016x}")
            }
        }
    }
}

/// Errors of the block layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The device failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The block at `blkno` is not the one the reference names.
    #[error("stale or damaged metadata block {blkno}: {reason}")]
    Stale {
        /// Block number read.
        blkno: u64,
        /// What did not match.
        reason: StaleReason,
    },
    /// A block whose header verifies but whose contents are inconsistent.
    #[error("corrupt metadata block {blkno}: {reason}")]
    Corrupt {
        /// Block number.
        blkno: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// A reference to a block number outside the metadata area of the device.
    #[error("metadata block number {blkno} is outside the device (blocks {first}..{total})")]
    OutOfRange {
        /// The block number.
        blkno: u64,
        /// First metadata block.
        first: u64,
        /// Device size in blocks.
        total: u64,
    },
    /// Allocation failed.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// An earlier write or flush failed; the volume takes no more writes until reopened.
    #[error("the volume had a failed write or flush and must be reopened")]
    Poisoned,
    /// A broken promise inside the engine (a bug), reported instead of panicking.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

/// Result of block operations.
pub type Result<T> = std::result::Result<T, BlockError>;

/// Checks the contents of a block after its header verified; returns what is wrong.
pub type Validator = fn(&[u8]) -> std::result::Result<(), &'static str>;

/// A validator that accepts anything (blocks whose contents are checked where used).
pub fn no_validation(_: &[u8]) -> std::result::Result<(), &'static str> {
    Ok(())
}

/// Where metadata blocks live and whose they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Metadata block size in bytes.
    pub block_size: usize,
    /// The volume's fsid; every block header carries it.
    pub fsid: u64,
    /// The first block number that may hold metadata.
    pub first_blkno: u64,
    /// Size of the device in metadata blocks.
    pub total_blocks: u64,
}

impl Geometry {
    /// Byte offset of `blkno`, or an error if it is outside the metadata area.
    pub fn offset_of(&self, blkno: u64) -> Result<u64> {
        let out = BlockError::OutOfRange {
            blkno,
            first: self.first_blkno,
            total: self.total_blocks,
        };
        if blkno < self.first_blkno || blkno >= self.total_blocks {
            return Err(out);
        }
        blkno.checked_mul(self.block_size as u64).ok_or(out)
    }
}

/// Verify a block's header against the reference that led to it.
pub fn verify_block(
    data: &[u8],
    r: BlockRef,
    magic: u32,
    fsid: u64,
) -> std::result::Result<(), StaleReason> {
    let Ok((hdr, _)) = BlockHeader::read_from_prefix(data) else {
        return Err(StaleReason::Checksum {
            stored: 0,
            computed: 0,
        });
    };
    let computed = block_crc(data);
    if hdr.crc.get() != computed {
        return Err(StaleReason::Checksum {
            stored: hdr.crc.get(),
            computed,
        });
    }
    if hdr.magic.get() != magic {
        return Err(StaleReason::Magic {
            found: hdr.magic.get(),
            expected: magic,
        });
    }
    if hdr.fsid.get() != fsid {
        return Err(StaleReason::Fsid {
            found: hdr.fsid.get(),
        });
    }
    if hdr.blkno.get() != r.blkno {
        return Err(StaleReason::Blkno {
            found: hdr.blkno.get(),
        });
    }
    if hdr.seq.get() != r.seq {
        return Err(StaleReason::Seq {
            found: hdr.seq.get(),
            expected: r.seq,
        });
    }
    Ok(())
}

/// Store the crc of a block in its header.
pub fn seal_block(data: &mut [u8]) {
    let crc = block_crc(data);
    if let Some(b) = data.get_mut(0..4) {
        b.copy_from_slice(&crc.to_le_bytes());
    }
}

/// A block being read: borrowed from a writer's dirty set or shared from the cache.
#[derive(Debug)]
pub enum BlockGuard<'a> {
    /// A block dirtied by the writer this read goes through.
    Dirty(&'a [u8]),
    /// A clean block.
    Clean(Arc<[u8]>),
}

impl std::ops::Deref for BlockGuard<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            BlockGuard::Dirty(b) => b,
            BlockGuard::Clean(b) => b,
        }
    }
}

/// Something metadata blocks can be read through: the cache (committed blocks) or a
/// writer (its dirty blocks, then the cache).
pub trait BlockRead {
    /// Read and verify the block `r` names, with contents checked by `validate` when the
    /// block comes from the device.
    fn read_block(&self, r: BlockRef, magic: u32, validate: Validator) -> Result<BlockGuard<'_>>;
    /// The metadata block size.
    fn block_size(&self) -> usize;
}

/// A 64-bit mixing step (splitmix64): the source of block seqs and of test randomness.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A writer over a zeroed memory device of `total` blocks of `bs` bytes (the first four
/// reserved) and an 8 MiB cache: for unit tests of what writes blocks.
#[cfg(test)]
pub(crate) fn test_writer(bs: usize, total: u64) -> BlockWriter {
    let geo = Geometry {
        block_size: bs,
        fsid: 7,
        first_blkno: 4,
        total_blocks: total,
    };
    let dev = std::sync::Arc::new(crate::device::MemDevice::new(bs as u64 * total));
    BlockWriter::new(std::sync::Arc::new(BlockCache::new(dev, geo, 8 << 20)), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_errors_read_as_messages() {
        let e = BlockError::Stale {
            blkno: 7,
            reason: StaleReason::Checksum {
                stored: 0,
                computed: 0x175a_8a29,
            },
        };
        assert_eq!(
            e.to_string(),
            "stale or damaged metadata block 7: checksum 00000000 does not match the contents (175a8a29)"
        );
        let e = BlockError::Stale {
            blkno: 7,
            reason: StaleReason::Seq {
                found: 1,
                expected: 2,
            },
        };
        assert_eq!(
            e.to_string(),
            "stale or damaged metadata block 7: seq 0000000000000001, the reference names 0000000000000002"
        );
    }
}
