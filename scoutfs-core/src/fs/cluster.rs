//! A mount's part in a cluster: its locks, and what it does with its server's requests.
//!
//! A mount made with [`Fs::mount`] reaches its server through a transport that other
//! mounts share: every operation takes the cluster locks that cover the items it reads
//! and changes ([`crate::client::locks`]), and the mount serves the server's requests
//! ([`MountHandler`], registered with [`crate::transport::Transport::set_handler`]):
//!
//! - a lock invalidation ([`crate::lock::cluster::ClusterLocks::handle`]) waits for the
//!   lock's users, commits the open transaction if the lock was written in it
//!   ([`MountOwner::sync_if_written`]: the items must be durable before another mount
//!   reads them), tells the front-end's kernel to drop what it cached of the lock's inode
//!   group ([`MountOwner::invalidate`]), and answers;
//! - a request to commit (a finalization of the log trees waits for it) commits;
//! - an open-inode map request answers which inodes of a group this mount has open or
//!   handed out (another mount deletes an unlinked inode only when no mount holds it).
//!
//! The mount caches no clean items (every read walks the trees the server last committed,
//! read again after each commit), so dropping a lock drops nothing of the mount's own; the
//! kernel's caches are what must go.
//!
//! Deadlocks: the handler takes the mount's state lock only to commit, and only for a
//! lock that was written in the open transaction; see [`crate::client::locks`] for why
//! no operation waits for such a lock while it holds the state lock.

use super::*;
use crate::client::locks::LOCK_GROUP;
use crate::lock::cluster::{ClusterLocks, LockOwner};
use crate::lock::LockRange;
use crate::transport::{ClientHandler, ClientReply, InoMapBits, ServerRequest};
use std::sync::Weak;

/// What the mount does for its locks (see the module comment).
#[derive(Debug)]
pub(super) struct MountOwner {
    pub(super) st: Weak<Mutex<State>>,
    pub(super) kernel: Arc<notify::KernelHook>,
}

impl LockOwner for MountOwner {
    fn sync_if_written(&self, range: &LockRange, trans_seq: u64) {
        let Some(st) = self.st.upgrade() else { return };
        let mut st = st.lock();
        if st.client.trans_seq() == trans_seq && st.client.is_dirty() {
            // A failed commit poisons the mount: what it wrote is lost as in a crash,
            // and the lock may go (another mount reads what was last committed).
            if let Err(e) = st.client.commit() {
                eprintln!(
                    "scoutfs: commit for the lock at {:?} failed: {e}",
                    range.start
                );
            }
        }
    }

    fn invalidate(&self, range: &LockRange, to: LockMode) {
        // Only inode groups cover what a kernel caches; and a mount that keeps READ
        // (a WRITE given down to another mount's reader) keeps what its kernel cached:
        // nothing can change under a READ it holds.
        if range.start.zone != zone::FS || to == LockMode::Read {
            return;
        }
        self.kernel
            .invalidate(range.start.first, range.end.first, true);
    }
}

/// What the mount does with its server's requests (see the module comment).
#[derive(Debug)]
pub(super) struct MountHandler {
    pub(super) st: Weak<Mutex<State>>,
    pub(super) live: Arc<Mutex<lifetime::Lifetime>>,
    pub(super) locks: Arc<ClusterLocks>,
}

impl ClientHandler for MountHandler {
    fn handle(&self, req: ServerRequest) -> ClientReply {
        if let Some(r) = self.locks.handle(&req) {
            return r;
        }
        let Some(st) = self.st.upgrade() else {
            return ClientReply::Failed;
        };
        match req {
            ServerRequest::SyncLogTrees => {
                // Even a clean transaction: its commit closes it, which is what the
                // merge waits for.
                let mut st = st.lock();
                if st.client.is_read_only() {
                    return ClientReply::Done;
                }
                match st.client.commit() {
                    Ok(()) => ClientReply::Done,
                    Err(_) => ClientReply::Failed,
                }
            }
            ServerRequest::OpenInoMap { group_nr } => {
                // From the holds alone, never the state: the mount asking may be one
                // whose operation waits for this answer holding its own state, and this
                // mount may be doing the same.
                let first = group_nr.saturating_mul(LOCK_GROUP);
                let mut bits: InoMapBits = [0; 16];
                for ino in self.live.lock().in_use(first, first + (LOCK_GROUP - 1)) {
                    let b = (ino - first) as usize;
                    bits[b / 64] |= 1 << (b % 64);
                }
                ClientReply::OpenInoMap {
                    group_nr,
                    bits: Box::new(bits),
                }
            }
            _ => ClientReply::Failed,
        }
    }
}

impl Fs {
    /// The mount's cluster locks, for its background work (shrinking idle locks) and
    /// statistics; `None` for a mount alone on its volume.
    pub fn cluster_locks(&self) -> Option<&Arc<ClusterLocks>> {
        self.cluster.as_ref().map(|c| &c.locks)
    }
}

/// What a clustered mount keeps of its part in the cluster.
#[derive(Debug)]
pub(super) struct Cluster {
    pub(super) locks: Arc<ClusterLocks>,
    /// Kept alive here: the lock client and the transport hold them weakly.
    pub(super) _owner: Arc<MountOwner>,
    pub(super) _handler: Arc<MountHandler>,
}
