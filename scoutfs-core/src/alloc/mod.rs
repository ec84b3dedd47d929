//! Metadata block allocation.
//!
//! [`MetaAllocator`] is what the copy-on-write writer and the btree allocate from and free
//! into. The rule every implementation keeps: a block freed in a transaction is not handed
//! out again until that transaction has committed, because the stable super may still
//! reference it.
//!
//! - [`extent`]: free-extent btrees (by blkno and by size) holding a device's free space:
//!   the server's metadata pool, the data device's pool, and each mount's data extents.
//! - [`list`]: alloc lists of single metadata blocks that one transaction allocates from
//!   and frees into ([`ListAlloc`]).
//! - [`FreeSet`]: a plain in-memory set of free blocks, for tests that build trees without
//!   a volume.

pub mod extent;
mod free_set;
pub mod list;

pub use extent::{AllocRoot, Extent};
pub use free_set::FreeSet;
pub use list::ListAlloc;

/// Errors of the allocators.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocError {
    /// No free metadata block is left.
    #[error("no free metadata blocks")]
    NoSpace,
    /// A block was freed that is outside the device or already free.
    #[error("block {0} freed twice or outside the device")]
    BadFree(u64),
    /// The free-extent tree behind an allocator could not be read.
    #[error("the free-extent tree could not be read")]
    PoolUnreadable,
}

/// A source of metadata block numbers for one transaction.
pub trait MetaAllocator {
    /// A free block number, not freed earlier in this transaction.
    fn alloc_meta(&mut self) -> Result<u64, AllocError>;
    /// Give back a block number; it becomes allocatable after the transaction commits.
    fn free_meta(&mut self, blkno: u64) -> Result<(), AllocError>;
    /// How many blocks can still be allocated (a bound for work that must stop before the
    /// allocator runs dry; `usize::MAX` if the allocator cannot tell).
    fn remaining(&self) -> usize {
        usize::MAX
    }
}
