//! The cluster lock service: which mount may read or write which ranges of keys, so that
//! every mount's item cache stays coherent with the others' writes (the original's
//! `lock.c` and `lock_server.c`).
//!
//! A lock covers a range of keys ([`LockRange`]) and is named by its first key. A mount
//! holds each lock in a [`LockMode`]; the server grants modes so that no two mounts hold
//! incompatible ones ([`compatible`]), and takes a mode back by asking its holder to drop
//! to a lower one ([`invalidation_mode`]). Before answering, the holder commits its
//! transaction if it wrote under the lock and, unless it only drops from WRITE to READ,
//! forgets what it cached of the range: a mount caches an item only while it holds a lock
//! that lets it read the item ([`lock_range_of`] names the lock covering a key).
//!
//! Both sides are pure state machines -- [`server::LockServer`] and
//! [`client::LockClient`] take messages and return the messages to send -- so the
//! deterministic simulation (`tests/lock_sim.rs`) drives them with a modelled network.
//! [`cluster`] wraps them for threads: [`cluster::ClusterLocks`] on a mount,
//! [`cluster::ServerLocks`] behind the server's request handlers.
//!
//! Invariants the machines keep (checked by the simulation at every step):
//! - the modes granted to different mounts for one lock are pairwise [`compatible`];
//! - a grant of WRITE or WRITE_ONLY carries a `write_seq` greater than every seq the
//!   server handed out before (after a server restart: greater than every `write_seq`
//!   the mounts recovered), so items written under it are newer than any version another
//!   mount wrote before;
//! - the server grants nothing on a lock while an invalidation of it is unanswered, and
//!   nothing at all while lock recovery is pending.

pub mod client;
pub mod cluster;
pub mod server;

use crate::client::locks::{lock_span, LockSpan, RENAME_LOCK};
use crate::format::{zone, Key};
pub use crate::transport::LockMode;

/// Inodes per inode lock group (and seqs per seq-index lock group): the original's
/// `SCOUTFS_LOCK_INODE_GROUP_NR`.
pub const LOCK_GROUP_NR: u64 = crate::client::locks::LOCK_GROUP;

/// Whether a holder of `mode` may read items (READ and WRITE).
pub fn can_read(mode: LockMode) -> bool {
    matches!(mode, LockMode::Read | LockMode::Write)
}

/// Whether a holder of `mode` may write items (WRITE and WRITE_ONLY).
pub fn can_write(mode: LockMode) -> bool {
    matches!(mode, LockMode::Write | LockMode::WriteOnly)
}

/// Whether a lock held in `granted` lets a user of `wanted` go ahead on the mount: the
/// same mode, or WRITE for a reader (the original's `lock_modes_match`).
pub fn modes_match(granted: LockMode, wanted: LockMode) -> bool {
    granted == wanted || (granted == LockMode::Write && wanted == LockMode::Read)
}

/// Whether the server may grant `requested` to mount `req_rid` while mount `granted_rid`
/// holds `granted` (the original's `client_entries_compatible`): READ with READ and
/// WRITE_ONLY with WRITE_ONLY are shared; a mount may upgrade its own READ to WRITE; NULL
/// goes with anything across mounts but never within one (a mount's NULL request
/// invalidates its own grant, which settles races between shrinking and invalidation).
pub fn compatible(granted: LockMode, granted_rid: u64, requested: LockMode, req_rid: u64) -> bool {
    if granted == requested && matches!(granted, LockMode::Read | LockMode::WriteOnly) {
        return true;
    }
    if granted_rid == req_rid && granted == LockMode::Read && requested == LockMode::Write {
        return true;
    }
    granted_rid != req_rid && (granted == LockMode::Null || requested == LockMode::Null)
}

/// The mode the server asks a holder of `granted` to drop to so that `requested` can be
/// granted: READ when a WRITE holder must make way for a reader (it keeps its cache),
/// NULL otherwise.
pub fn invalidation_mode(granted: LockMode, requested: LockMode) -> LockMode {
    if granted == LockMode::Write && requested == LockMode::Read {
        LockMode::Read
    } else {
        LockMode::Null
    }
}

/// The keys one lock covers, `start..=end`; `start` is the lock's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockRange {
    /// The first key (the lock's name on the wire).
    pub start: Key,
    /// The last key.
    pub end: Key,
}

impl LockRange {
    /// Whether `key` is in the range.
    pub fn contains(&self, key: &Key) -> bool {
        self.start <= *key && *key <= self.end
    }
}

impl From<LockSpan> for LockRange {
    fn from(s: LockSpan) -> LockRange {
        LockRange {
            start: s.start,
            end: s.end,
        }
    }
}

/// The lock that covers item `key` ([`crate::client::locks::lock_span`], the one mapping
/// of keys to locks the mount's operations check against): a mount caches an item only
/// while it holds this lock in a mode that reads.
pub fn lock_range_of(key: &Key) -> LockRange {
    lock_span(key).into()
}

/// The lock of the group of inode `ino`: every item of inodes `ino & !1023 ..= ino |
/// 1023` in the FS zone, all types (the original's `scoutfs_lock_ino`).
pub fn inode_lock(ino: u64) -> LockRange {
    lock_range_of(&Key::new(zone::FS, ino, 0, 0, 0, 0))
}

/// The lock of a group of seq-index items (`crate::format::inode_index_key`): type `ty`
/// (META_SEQ or DATA_SEQ), seqs `major & !1023 ..= major | 1023`, every inode (the
/// original's `scoutfs_lock_get_index_item_range`; updates take it WRITE_ONLY).
pub fn index_lock(ty: u8, major: u64) -> LockRange {
    lock_range_of(&crate::format::inode_index_key(ty, major, 0))
}

/// The lock of a whole zone (orphans, quota rules, `.totl.` totals, `.indx.` entries).
pub fn zone_lock(zone: u8) -> LockRange {
    lock_range_of(&Key::new(zone, 0, 0, 0, 0, 0))
}

/// The single global rename lock ([`crate::client::locks::RENAME_LOCK`], covering no
/// item). A rename between directories takes it WRITE first, so that two renames cannot
/// create a cycle.
pub fn rename_lock() -> LockRange {
    lock_range_of(&RENAME_LOCK)
}

/// Errors of the lock service.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockError {
    /// A peer sent a message that does not fit the lock's state.
    #[error("lock protocol: {0}")]
    Protocol(&'static str),
    /// The server is unreachable, or the mount is leaving.
    #[error("the lock service is unreachable")]
    Disconnected,
    /// A lock was asked for while the caller holds its transaction open (locks are taken
    /// before holding it, or two mounts could wait on each other's commits).
    #[error("lock asked for while holding the transaction")]
    Deadlock,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{dirent_key, inode_index_key, inode_key, item_type, orphan_key};
    use LockMode::*;

    const MODES: [LockMode; 4] = [Null, Read, Write, WriteOnly];

    #[test]
    fn compatibility_across_mounts() {
        // Rows: granted; columns: requested (NULL, READ, WRITE, WO) by another mount.
        let table = [
            [true, true, true, true],
            [true, true, false, false],
            [true, false, false, false],
            [true, false, false, true],
        ];
        for (g, row) in MODES.iter().zip(table) {
            for (r, want) in MODES.iter().zip(row) {
                assert_eq!(compatible(*g, 1, *r, 2), want, "{g:?} then {r:?}");
                assert_eq!(compatible(*r, 2, *g, 1), want, "symmetric {r:?} {g:?}");
            }
        }
    }

    #[test]
    fn compatibility_within_a_mount() {
        for g in MODES {
            for r in MODES {
                let want = (g == r && matches!(g, Read | WriteOnly)) || (g == Read && r == Write);
                assert_eq!(compatible(g, 7, r, 7), want, "{g:?} then {r:?}");
            }
        }
        // NULL is never compatible within a mount: its NULL request invalidates its grant.
        assert!(!compatible(Read, 7, Null, 7));
        assert!(!compatible(Null, 7, Null, 7));
    }

    #[test]
    fn invalidation_targets_and_matching() {
        assert_eq!(invalidation_mode(Write, Read), Read);
        for g in MODES {
            for r in MODES {
                if !(g == Write && r == Read) {
                    assert_eq!(invalidation_mode(g, r), Null);
                }
            }
        }
        for g in MODES {
            for w in MODES {
                assert_eq!(
                    modes_match(g, w),
                    g == w || (g == Write && w == Read),
                    "{g:?} {w:?}"
                );
            }
        }
        assert!(can_read(Read) && can_read(Write) && !can_read(WriteOnly) && !can_read(Null));
        assert!(can_write(Write) && can_write(WriteOnly) && !can_write(Read));
    }

    #[test]
    fn ranges_cover_what_the_original_locks() {
        let r = inode_lock(5000);
        assert_eq!(r.start, Key::new(zone::FS, 4096, 0, 0, 0, 0));
        assert_eq!(r, inode_lock(4096));
        assert_eq!(r, inode_lock(5119));
        assert_ne!(r, inode_lock(5120));
        for key in [
            inode_key(4096),
            inode_key(5119),
            dirent_key(5000, u64::MAX, u64::MAX),
            crate::format::data_extent_key(5119, u64::MAX),
        ] {
            assert!(r.contains(&key), "{key:?}");
            assert_eq!(lock_range_of(&key), r);
        }
        assert!(!r.contains(&inode_key(4095)) && !r.contains(&inode_key(5120)));

        let ix = index_lock(item_type::META_SEQ, 3000);
        assert_eq!(ix.start, inode_index_key(item_type::META_SEQ, 2048, 0));
        assert!(ix.contains(&inode_index_key(item_type::META_SEQ, 3071, u64::MAX)));
        assert!(!ix.contains(&inode_index_key(item_type::META_SEQ, 3072, 0)));
        assert!(!ix.contains(&inode_index_key(item_type::DATA_SEQ, 3000, 0)));
        assert_eq!(
            lock_range_of(&inode_index_key(item_type::DATA_SEQ, 3000, 9)),
            index_lock(item_type::DATA_SEQ, 2048)
        );

        let o = zone_lock(zone::ORPHAN);
        assert_eq!(lock_range_of(&orphan_key(u64::MAX)), o);
        assert!(o.contains(&crate::format::truncate_key(1)));
        assert!(!o.contains(&inode_key(1)));

        let rn = rename_lock();
        assert_eq!(lock_range_of(&rn.start), rn);
        assert!(!rn.contains(&inode_key(0)) && !rn.contains(&orphan_key(0)));
        // Lock ranges never overlap: the identities of neighbouring groups sort apart.
        assert!(inode_lock(0).end < inode_lock(1024).start);
        assert!(
            index_lock(item_type::META_SEQ, u64::MAX).end
                < index_lock(item_type::DATA_SEQ, 0).start
        );
    }
}
