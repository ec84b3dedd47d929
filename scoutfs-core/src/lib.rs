//! scoutfs-core: the engine of scoutfs-rs.
//!
//! Layers, bottom up (see `DESIGN.md`):
//! - [`mod@format`]: the on-disk structures, byte for byte.
//! - [`device`]: the [`device::BlockDevice`] trait, the only way the engine touches storage.
//! - [`block`]: the bounded block cache that verifies every block it reads, and the
//!   copy-on-write block writer of a transaction.
//! - [`alloc`]: free-extent trees and alloc lists.
//! - [`btree`]: the copy-on-write B+tree of items and its splicing primitives.
//! - [`server`]: the server's state machine: commits, allocators, client free space.
//! - [`logs`]: what mounts and the server both read of the shared structures (log tree
//!   records, a merge request's inputs): a mount links no server code.
//! - [`transport`]: the messages between mounts and the server, and the [`transport::Transport`] seam.
//! - [`lock`]: the cluster lock service: which mount may read or write which key ranges,
//!   and the invalidations that keep their caches coherent.
//! - [`client`]: a mount's transactions: its item cache, log btree and allocators.
//! - [`bloom`]: the per-log-tree bloom filters that let reads skip log trees.
//! - [`srch`]: the files of `.srch.` xattr entries that searches read, and their compaction.
//! - [`fs`]: the filesystem API (inodes, directories, xattrs, file data, orphans).
//! - [`check`]: the offline consistency check and space report.
//! - [`entropy`]: randomness the embedder gives (replayable in simulations).
//! - [`volume`]: mkfs, the supers, and a single-writer volume over the server.
//!
//! The crate does no I/O of its own except through [`device::BlockDevice`].

pub mod alloc;
pub mod block;
pub mod bloom;
pub mod btree;
pub mod check;
pub mod client;
pub mod device;
pub mod entropy;
pub mod format;
pub mod fs;
#[doc(hidden)]
pub mod fuzzing;
pub mod lock;
pub mod logs;
pub mod server;
pub mod srch;
pub mod transport;
pub mod volume;
