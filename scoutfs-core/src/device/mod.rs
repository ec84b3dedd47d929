//! Block devices: the only door between the engine and storage.
//!
//! A [`BlockDevice`] reads and writes byte ranges and flushes. Nothing written is durable
//! until a later `flush` returns `Ok`; after a failed flush nothing written since the last
//! successful flush may be assumed durable (callers poison the volume, see `DESIGN.md`).
//!
//! Implementations: [`MemDevice`] (tests, embedding), [`FileDevice`] (image files and raw
//! block devices), [`CrashDevice`] (keeps a live and a durable image and simulates a crash),
//! [`FaultDevice`] (fails the Nth read, write or flush).

mod crash;
mod fault;
mod file;
mod mem;

pub use crash::{CrashDevice, CrashStats, SECTOR_SIZE};
pub use fault::FaultDevice;
pub use file::FileDevice;
pub use mem::MemDevice;

/// Which device operation a fault applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOp {
    /// `read_at`.
    Read,
    /// `write_at`.
    Write,
    /// `flush`.
    Flush,
}

impl std::fmt::Display for FaultOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FaultOp::Read => "read",
            FaultOp::Write => "write",
            FaultOp::Flush => "flush",
        })
    }
}

/// Errors from a block device.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The operating system reported an error.
    #[error("device {op} at byte {offset}: {source}")]
    Io {
        /// "read", "write" or "flush".
        op: &'static str,
        /// Byte offset of the operation (0 for flush).
        offset: u64,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// An access beyond the end of the device.
    #[error("device {op} of {len} bytes at byte {offset} is beyond the device size {size}")]
    OutOfRange {
        /// "read" or "write".
        op: &'static str,
        /// Byte offset.
        offset: u64,
        /// Length of the access.
        len: usize,
        /// Device size in bytes.
        size: u64,
    },
    /// A fault injected by [`FaultDevice`].
    #[error("injected fault on {op} number {nth}")]
    Injected {
        /// The operation that failed.
        op: FaultOp,
        /// Its ordinal.
        nth: u64,
    },
}

/// Result of device operations.
pub type Result<T> = std::result::Result<T, DeviceError>;

/// Storage the engine reads and writes. Implementations must be safe to share between
/// threads; reads and writes of disjoint ranges may run concurrently.
pub trait BlockDevice: Send + Sync + std::fmt::Debug {
    /// Fill `buf` from the bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()>;
    /// Write `buf` at `offset`. Not durable until a later [`BlockDevice::flush`].
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()>;
    /// Make every completed write durable.
    fn flush(&self) -> Result<()>;
    /// Size of the device in bytes.
    fn len(&self) -> u64;
    /// Whether the device has no bytes at all.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Check that `[offset, offset + len)` lies within a device of `size` bytes.
pub(crate) fn check_range(op: &'static str, offset: u64, len: usize, size: u64) -> Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DeviceError::OutOfRange {
            op,
            offset,
            len,
            size,
        }),
    }
}
