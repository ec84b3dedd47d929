//! What a front-end's kernel caches of the mount, and telling it when that may be stale.
//!
//! A FUSE front-end's kernel keeps attributes, file pages and directory entries (names
//! that exist and names that do not) of the inodes it was given, for as long as the
//! front-end let it. Every change made through that kernel updates what it cached; a
//! change made any other way — by another mount of the volume, or through this API by an
//! embedder beside the kernel mount (an archive agent's release and stage) — must be
//! told to it, or it shows the old state. The front-end implements [`KernelCache`] and
//! hands it to [`Fs::set_kernel_cache`]; the filesystem calls it:
//!
//! - when the mount loses a cluster lock ([`Fs::invalidate_kernel`], called by the lock
//!   code for the lock's inode range once the lock's users are done and before it answers
//!   the server: what the kernel cached under the lock goes before another mount may
//!   change it);
//! - after [`Fs::release_data`] and [`Fs::setattr_more`] (attributes and pages of the
//!   inode) and [`Fs::stage`] (attributes: staged blocks were offline, so the kernel holds
//!   no page of them).
//!
//! Ranges are inode numbers: the original's locks cover inode groups (`ino & !1023 ..=
//! ino | 1023`), and a directory's entries are items under the directory's inode number,
//! so a range covers the attributes and pages of its inodes and the entries in its
//! directories.
//!
//! Invariants: the hook is called without the mount's state lock held (it may wait for
//! the kernel, which may be waiting for a request that needs the lock), and it returns
//! only once the kernel has dropped what it was told to (or a bound the front-end sets
//! passed: see its documentation). The lock code calls it only once every operation
//! that read under the lock has returned, and lets none read under it again before it
//! is granted anew: what the front-end answered from the old lock is then what it
//! knows of when the call comes. Only the locks of inode groups cover what the kernel
//! caches (attributes, xattrs, data and entries are items under an inode number).

use super::*;
use std::fmt::Debug;

/// A front-end's kernel caches of the mount (implemented by the FUSE adapter).
pub trait KernelCache: Send + Sync + Debug {
    /// The attributes of inodes `first_ino..=last_ino`, their cached file pages too if
    /// `data`, and the directory entries (positive and negative) in any of them that are
    /// directories may have changed: the kernel drops what it cached of them before this
    /// returns. Called without the mount's state lock held.
    fn invalidate(&self, first_ino: u64, last_ino: u64, data: bool);
}

/// The mount's hook to its front-end's kernel, if any.
#[derive(Debug, Default)]
pub(super) struct KernelHook(RwLock<Option<Arc<dyn KernelCache>>>);

impl KernelHook {
    /// [`KernelCache::invalidate`] of the cache set, if any.
    pub(super) fn invalidate(&self, first: u64, last: u64, data: bool) {
        let cache = self.0.read().clone();
        if let Some(c) = cache {
            c.invalidate(first, last, data);
        }
    }
}

impl Fs {
    /// Tell the filesystem what its front-end's kernel caches (a FUSE mount does this
    /// when it mounts): from now on changes made behind the kernel's back are told to
    /// `cache` (see the module `notify`). Replaces a cache set before.
    pub fn set_kernel_cache(&self, cache: Arc<dyn KernelCache>) {
        *self.kernel.0.write() = Some(cache);
    }

    /// Have the front-end's kernel drop what it cached of inodes `first..=last`
    /// (attributes, file pages if `data`, entries in those that are directories), and
    /// wait until it has: [`KernelCache::invalidate`]. The lock code calls it when the
    /// mount loses a lock, for the lock's inode range (pages only when the lock allowed
    /// the kernel to cache contents that another mount may now change), after the lock's
    /// users are done and before it answers the server; tests call it to stand for that.
    /// Nothing happens without a kernel cache. Never call it holding the state lock.
    pub fn invalidate_kernel(&self, first: u64, last: u64, data: bool) {
        self.kernel.invalidate(first, last, data);
    }

    /// The inodes in `first..=last` whose entries the caller holds references to (counted
    /// with [`FsOptions::lookup_counts`]; none without): the inodes a front-end's kernel
    /// may cache, ascending.
    pub fn referenced_inodes(&self, first: u64, last: u64) -> Vec<u64> {
        self.st.lock().live.lock().referenced(first, last)
    }
}
