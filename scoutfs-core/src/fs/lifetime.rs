//! How long an inode lives: until its last link, its last open handle and, when the
//! embedder counts them ([`FsOptions::lookup_counts`]), the last of the references its
//! caller holds (a kernel's lookup counts) are all gone.
//!
//! An inode whose links are gone while it is still open or referenced keeps its inode
//! item with `nlink` 0 and gets an orphan item in the same transaction as the change
//! that dropped its last link; whichever of [`Fs::release`] and [`Fs::forget`] lets go
//! of the last hold deletes it (items, data and orphan item). A crash in between leaves
//! the orphan item, and the next read-write mount deletes the inode (no one can hold an
//! inode of a mount that is gone), as it does for everything an unmount left holding:
//! the counts live in memory only.
//!
//! The contract with a caller that counts references (a FUSE front-end does: the
//! kernel's `nlookup`): every successful call that hands out an entry — [`Fs::lookup`],
//! [`Fs::mknod`], [`Fs::mkdir`], [`Fs::symlink`], [`Fs::link`], and each entry of
//! [`Fs::readdir_plus`] other than `.` and `..` that its callback takes — counts one
//! reference to the entry's inode, under the same lock as the call, so no other
//! operation can delete the inode between the answer and the count; [`Fs::forget`]
//! gives references back. A caller that never forgets only delays deletions to the next
//! mount; a caller that does not set the option counts nothing and an inode goes at its
//! last link or last release, as before.

use super::*;

/// The holds on inodes a mount keeps in memory: open handles and counted references.
#[derive(Debug, Default)]
pub(super) struct Lifetime {
    /// Whether references are counted ([`FsOptions::lookup_counts`]).
    counting: bool,
    /// Open handles per inode (absent: none).
    opens: HashMap<u64, u32>,
    /// Counted references per inode (absent: none), ordered for the ranges a kernel
    /// invalidation asks about (module `notify`).
    refs: std::collections::BTreeMap<u64, u64>,
}

impl Lifetime {
    /// No holds yet; references are counted if `counting`.
    pub(super) fn new(counting: bool) -> Lifetime {
        Lifetime {
            counting,
            ..Lifetime::default()
        }
    }

    /// Whether anything holds `ino`: an unlinked inode held is orphaned, not deleted.
    pub(super) fn held(&self, ino: u64) -> bool {
        self.opens.contains_key(&ino) || self.refs.contains_key(&ino)
    }

    /// One more open handle of `ino`.
    pub(super) fn open(&mut self, ino: u64) {
        *self.opens.entry(ino).or_insert(0) += 1;
    }

    /// One open handle of `ino` fewer; true if that was its last (false for an inode
    /// that was not open: nothing changes).
    pub(super) fn release(&mut self, ino: u64) -> bool {
        let Some(n) = self.opens.get_mut(&ino) else {
            return false;
        };
        *n -= 1;
        if *n > 0 {
            return false;
        }
        self.opens.remove(&ino);
        true
    }

    /// One reference to the inode of `a` handed out (nothing unless counting).
    pub(super) fn remember(&mut self, a: &Attr) {
        if self.counting && a.ino != 0 {
            *self.refs.entry(a.ino).or_insert(0) += 1;
        }
    }

    /// `n` references to `ino` given back (more than were handed out count as all of
    /// them); true if none are left now and there were some.
    pub(super) fn forget(&mut self, ino: u64, n: u64) -> bool {
        let Some(r) = self.refs.get_mut(&ino) else {
            return false;
        };
        *r = r.saturating_sub(n);
        if *r > 0 {
            return false;
        }
        self.refs.remove(&ino);
        true
    }

    /// References counted to `ino` now.
    pub(super) fn refs(&self, ino: u64) -> u64 {
        self.refs.get(&ino).copied().unwrap_or(0)
    }

    /// The inodes in `first..=last` with references counted, ascending.
    pub(super) fn referenced(&self, first: u64, last: u64) -> Vec<u64> {
        if first > last {
            return Vec::new();
        }
        self.refs.range(first..=last).map(|(&ino, _)| ino).collect()
    }

    /// The inodes in `first..=last` that something holds (open or referenced).
    pub(super) fn in_use(&self, first: u64, last: u64) -> Vec<u64> {
        let mut v = self.referenced(first, last);
        v.extend(
            self.opens
                .keys()
                .filter(|&&i| (first..=last).contains(&i) && !self.refs.contains_key(&i)),
        );
        v
    }
}

impl State {
    /// `ino` was just let go of (its last open handle or reference): delete it if it
    /// has no links and nothing else holds it. A read-only mount leaves it to the next
    /// read-write one (its orphan item is there).
    pub(super) fn let_go(&mut self, ino: u64) -> FsResult<()> {
        if self.live.lock().held(ino) {
            return Ok(());
        }
        match self.inode(ino) {
            Ok(inode) if inode.nlink.get() == 0 && !self.client.is_read_only() => {
                if self.held_anywhere(ino)? {
                    // Another mount deletes it when it lets go.
                    return Ok(());
                }
                self.freeing = true;
                self.begin(deletion_reservation())?;
                self.delete_inode(ino, &inode)
            }
            Ok(_) | Err(FsError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Fs {
    /// Give back `n` references to `ino` counted by the calls that handed out its entry
    /// ([`FsOptions::lookup_counts`]; a FUSE `FORGET`): when none are left, an inode
    /// without links and not open is deleted. References never handed out are ignored
    /// (a forget of an unknown inode does nothing), as is the whole call when the mount
    /// does not count references.
    pub fn forget(&self, ino: u64, n: u64) -> FsResult<()> {
        // The count goes down once, whatever the operation below: it may run more than
        // once (`Fs::op_as`).
        if !self.st.lock().live.lock().forget(ino, n) {
            return Ok(());
        }
        self.op(|st| st.let_go(ino))
    }

    /// [`Fs::forget`] for several inodes at once (a FUSE `BATCH_FORGET`), under one lock.
    /// Every inode is forgotten even when deleting one fails; the first error is returned.
    pub fn forget_many(&self, forgets: &[(u64, u64)]) -> FsResult<()> {
        let gone: Vec<u64> = {
            let st = self.st.lock();
            forgets
                .iter()
                .filter(|&&(ino, n)| st.live.lock().forget(ino, n))
                .map(|&(ino, _)| ino)
                .collect()
        };
        if gone.is_empty() {
            return Ok(());
        }
        self.op(|st| {
            let mut first = Ok(());
            for &ino in &gone {
                // Each deletion is whole by itself: the one before may commit (and an
                // operation run again finds the inodes it deleted gone).
                st.client.step();
                let res = st.let_go(ino);
                if first.is_ok() {
                    first = res;
                }
            }
            first
        })
    }

    /// Whether this mount counts references ([`FsOptions::lookup_counts`]): a front-end
    /// that hands entries to a kernel needs it.
    pub fn counts_lookups(&self) -> bool {
        self.st.lock().live.lock().counting
    }

    /// The references to `ino` counted now (0 when the mount does not count them):
    /// what a caller still holds, for tests and diagnostics.
    pub fn lookup_count(&self, ino: u64) -> u64 {
        self.st.lock().live.lock().refs(ino)
    }
}
