//! Metadata block allocation.
//!
//! [`MetaAllocator`] is what the copy-on-write writer and the btree allocate from and free
//! into. The rule every implementation keeps: a block freed in a transaction is not handed
//! out again until that transaction has committed, because the stable super may still
//! reference it.
//!
//! [`FreeSet`] is the in-memory allocator a single-writer volume uses today: a set of free
//! extents rebuilt at open from the blocks the super's trees reference. The persistent
//! free-extent trees and alloc-list blocks of the design replace it with the server.

mod free_set;

pub use free_set::FreeSet;

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
}

/// A source of metadata block numbers for one transaction.
pub trait MetaAllocator {
    /// A free block number, not freed earlier in this transaction.
    fn alloc_meta(&mut self) -> Result<u64, AllocError>;
    /// Give back a block number; it becomes allocatable after the transaction commits.
    fn free_meta(&mut self, blkno: u64) -> Result<(), AllocError>;
}
