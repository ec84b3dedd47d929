//! Which cluster lock covers an item, and the check that an operation reads and changes
//! items only under locks its mount holds.
//!
//! Items fall into lock ranges by key (the original's choices, see the design notes
//! §7): the items of an inode group — inode numbers `ino & !1023 ..= ino | 1023` of
//! [`zone::FS`], every type — under one lock; the seq index items of a group of 1024 seqs
//! of one index type under one lock; the orphan zone (orphans, truncate and release
//! records), the `.totl.` and `.indx.` zones and the quota zone each under one lock.
//!
//! Two kinds of lock, by how an operation may come to need one:
//! - *Inode locks* ([`zone::FS`], and reads of every zone): taken before the operation
//!   holds its mount's state, in key order (so two mounts never wait on each other in a
//!   cycle). An operation that finds it needs one it does not hold fails with
//!   [`ClientError::NeedLock`] before it changed anything; the filesystem then takes
//!   every lock the operation needed, in order, and runs it again.
//! - *Blind-write locks* (changes of the seq index, orphan, `.totl.`, `.indx.` and quota
//!   zones): their writers only add and delete items without reading them, under
//!   [`LockMode::WriteOnly`], which many mounts hold at once; an operation waits for one
//!   while it holds its mount's state. That cannot deadlock: what such a wait waits for
//!   is other mounts giving up READ holds of the range, and a READ hold is never written
//!   in a transaction, so giving it up never needs a mount's state.
//!
//! Outside an operation (a mount reading its root before it is up, merge work, which
//! reads committed trees as the original's does) nothing is checked.

use super::{ClientError, Result};
use crate::format::{zone, Key};
use crate::transport::LockMode;

/// Inode numbers (or seqs) per lock group.
pub const LOCK_GROUP: u64 = 1024;

/// The zone of the cluster's global locks (the rename lock): no item lives in it.
pub const LOCK_ZONE: u8 = 2;

/// The lock that serialises renames across directories (the original's rename lock):
/// the first key of [`LOCK_ZONE`], whose range is the whole zone.
pub const RENAME_LOCK: Key = Key {
    zone: LOCK_ZONE,
    first: 0,
    ty: 0,
    second: 0,
    third: 0,
    fourth: 0,
};

/// A lock's range of keys, and whether writes in it are blind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockSpan {
    /// The lock's identity: its first key.
    pub start: Key,
    /// Its last key.
    pub end: Key,
    /// Writes in it are blind (see the module comment): [`LockMode::WriteOnly`].
    pub blind: bool,
}

fn group(n: u64) -> (u64, u64) {
    (n & !(LOCK_GROUP - 1), n | (LOCK_GROUP - 1))
}

fn whole_zone(z: u8, blind: bool) -> LockSpan {
    LockSpan {
        start: Key::new(z, 0, 0, 0, 0, 0),
        end: Key::new(z, u64::MAX, u8::MAX, u64::MAX, u64::MAX, u8::MAX),
        blind,
    }
}

/// The lock covering `key`.
pub fn lock_span(key: &Key) -> LockSpan {
    match key.zone {
        zone::FS => {
            let (lo, hi) = group(key.first);
            LockSpan {
                start: Key::new(zone::FS, lo, 0, 0, 0, 0),
                end: Key::new(zone::FS, hi, u8::MAX, u64::MAX, u64::MAX, u8::MAX),
                blind: false,
            }
        }
        zone::INODE_INDEX => {
            let (lo, hi) = group(key.second);
            LockSpan {
                start: Key::new(zone::INODE_INDEX, key.first, key.ty, lo, 0, 0),
                end: Key::new(zone::INODE_INDEX, key.first, key.ty, hi, u64::MAX, u8::MAX),
                blind: true,
            }
        }
        zone::ORPHAN | zone::XATTR_TOTL | zone::XATTR_INDX | zone::QUOTA => {
            whole_zone(key.zone, true)
        }
        // Keys of no other zone are items of a mount's trees; a lock per zone keeps the
        // mapping total.
        z => whole_zone(z, false),
    }
}

/// Whether holding `held` lets an operation do what `need` asks.
pub fn satisfies(held: LockMode, need: LockMode) -> bool {
    held == need || (held == LockMode::Write && need != LockMode::Null)
}

/// A lock a mount holds, as its operations use it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// The mode held.
    pub mode: LockMode,
    /// The seq floor its grant carried (0 for READ): items written under it must carry
    /// at least this seq ([`super::Client::grant_seq_floor`]).
    pub write_seq: u64,
}

/// What a mount's locks offer its operations: implemented by the cluster lock client.
pub trait ItemLocks: Send + Sync + std::fmt::Debug {
    /// If this mount holds the lock starting at `start` in a mode that satisfies `mode`
    /// now, count one more user of it (which keeps it from being invalidated) and say
    /// how it is held; `None` without waiting otherwise.
    fn try_use(&self, start: &Key, mode: LockMode) -> Option<Held>;
    /// Wait until this mount holds the lock starting at `start` (range `start..=end`) in
    /// a mode that satisfies `mode`, then count one more user of it.
    fn use_waiting(&self, start: &Key, end: &Key, mode: LockMode) -> Result<Held>;
    /// One user of the lock starting at `start` in `mode` (as [`ItemLocks::try_use`] or
    /// [`ItemLocks::use_waiting`] returned it) is done.
    fn unuse(&self, start: &Key, mode: LockMode);
    /// Items were written under the lock starting at `start` in the transaction of seq
    /// `trans_seq` (its invalidation must commit that transaction first if it is still
    /// open). Told once per lock and transaction.
    fn written(&self, start: &Key, trans_seq: u64) {
        let _ = (start, trans_seq);
    }
}

/// The locks the running operation uses: (start, mode held).
#[derive(Debug, Default)]
pub(super) struct OpLocks {
    pub(super) uses: Vec<(Key, LockMode)>,
    /// The operation changes the filesystem: reads of inode locks ask for WRITE, so that
    /// it never finds it needs more after its first change.
    pub(super) writes: bool,
}

impl OpLocks {
    fn held(&self, start: &Key) -> Option<LockMode> {
        self.uses.iter().find(|(k, _)| k == start).map(|&(_, m)| m)
    }
}

impl super::Client {
    /// Check the locks of every operation against `locks` from now on.
    pub fn set_item_locks(&mut self, locks: std::sync::Arc<dyn ItemLocks>) {
        self.item_locks = Some(locks);
    }

    /// The operation about to run uses the locks `uses` (taken for it, in key order) and
    /// changes the filesystem if `writes`.
    pub fn set_op_locks(&mut self, uses: Vec<(Key, Held)>, writes: bool) {
        for (_, h) in &uses {
            self.grant_seq_floor(h.write_seq);
        }
        let uses = uses.into_iter().map(|(k, h)| (k, h.mode)).collect();
        *self.op_locks.lock() = OpLocks { uses, writes };
    }

    /// The locks the operation used, given back for the caller to let go of.
    pub fn take_op_locks(&mut self) -> Vec<(Key, LockMode)> {
        std::mem::take(&mut self.op_locks.lock().uses)
    }

    /// Whether the lock starting at `start` was written in the open transaction (its
    /// invalidation must commit first).
    pub fn lock_written(&self, start: &Key) -> bool {
        self.written_locks.lock().contains(start)
    }

    /// Make sure the running operation may read (`write` false) or change `start..=end`,
    /// a range within one lock, as the module comment says.
    fn cover_one(&self, span: LockSpan, write: bool) -> Result<()> {
        let Some(locks) = &self.item_locks else {
            return Ok(());
        };
        if self.op.is_none() {
            return Ok(());
        }
        let mut ol = self.op_locks.lock();
        let need = match (write, span.blind) {
            (true, true) => LockMode::WriteOnly,
            (true, false) => LockMode::Write,
            (false, false) if ol.writes => LockMode::Write,
            (false, _) => LockMode::Read,
        };
        if let Some(h) = ol.held(&span.start) {
            if satisfies(h, need) {
                return self.note_write(&span, write);
            }
            // Held in a mode that does not do (a blind lock read and written by one
            // operation): the whole operation runs again under WRITE.
            return Err(ClientError::NeedLock {
                start: span.start,
                end: span.end,
                mode: LockMode::Write,
            });
        }
        if let Some(h) = locks.try_use(&span.start, need) {
            ol.uses.push((span.start, h.mode));
            self.raise_floor(h.write_seq);
            return self.note_write(&span, write);
        }
        if write && span.blind {
            let h = locks.use_waiting(&span.start, &span.end, need)?;
            ol.uses.push((span.start, h.mode));
            self.raise_floor(h.write_seq);
            return self.note_write(&span, write);
        }
        Err(ClientError::NeedLock {
            start: span.start,
            end: span.end,
            mode: need,
        })
    }

    fn note_write(&self, span: &LockSpan, write: bool) -> Result<()> {
        if write && self.written_locks.lock().insert(span.start) {
            if let Some(l) = &self.item_locks {
                l.written(&span.start, self.trans_seq());
            }
        }
        Ok(())
    }

    /// The running operation needs the lock starting at `start` for writing, though it
    /// writes no item under it (the rename lock).
    pub fn need_lock(&self, start: &Key) -> Result<()> {
        if self.item_locks.is_none() {
            return Ok(());
        }
        let mut span = lock_span(start);
        // Taken before the operation holds anything of its own, never waited for in place.
        span.blind = false;
        self.cover_one(span, true)
    }

    /// [`Client::cover_one`] for an item write.
    pub(super) fn cover_write(&self, key: &Key) -> Result<()> {
        if self.item_locks.is_none() {
            return Ok(());
        }
        self.cover_one(lock_span(key), true)
    }

    /// [`Client::cover_one`] for reading `start..=end`, every lock it spans.
    pub(super) fn cover_read(&self, start: &Key, end: &Key) -> Result<()> {
        if self.item_locks.is_none() || self.op.is_none() {
            return Ok(());
        }
        let mut at = *start;
        loop {
            let span = lock_span(&at);
            self.cover_one(span, false)?;
            if span.end >= *end {
                return Ok(());
            }
            match span.end.next() {
                Some(k) => at = k,
                None => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{inode_index_key, inode_key, item_type, orphan_key};

    #[test]
    fn spans_group_inodes_and_seqs() {
        let a = lock_span(&inode_key(5));
        assert_eq!(a, lock_span(&inode_key(1023)));
        assert_ne!(a, lock_span(&inode_key(1024)));
        assert!(!a.blind);
        assert!(a.start <= inode_key(5) && inode_key(1023) <= a.end);
        let m = lock_span(&inode_index_key(item_type::META_SEQ, 2047, 9));
        assert_eq!(m, lock_span(&inode_index_key(item_type::META_SEQ, 1024, 1)));
        assert_ne!(m, lock_span(&inode_index_key(item_type::DATA_SEQ, 1024, 1)));
        assert!(m.blind);
        assert_eq!(lock_span(&orphan_key(1)), lock_span(&orphan_key(u64::MAX)));
        assert_eq!(lock_span(&RENAME_LOCK).start, RENAME_LOCK);
    }

    #[test]
    fn write_satisfies_read_and_blind_writes_only() {
        use LockMode::*;
        assert!(satisfies(Write, Read) && satisfies(Write, WriteOnly));
        assert!(!satisfies(Read, Write) && !satisfies(WriteOnly, Read));
        assert!(!satisfies(Read, WriteOnly) && satisfies(Read, Read));
    }
}
