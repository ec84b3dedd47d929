//! Waiting for offline data: the mount's table of waiters, in memory.
//!
//! An operation that needs blocks an archive agent released ([`DATA_EXTENT_FLAG_OFFLINE`]
//! extents) must wait until they are staged back: a read for the offline blocks it
//! reads, a write, fallocate or size change for the whole file (an offline block
//! anywhere below the size: every block of a file shares its `data_version`). The check
//! is made under the mount's state lock; when it finds an offline block it registers a
//! waiter — `(ino, iblock, op)`, `iblock` the first offline block it met — before the lock
//! is let go, so no change made after the check can be missed, and hands back a
//! [`DataWait`] ticket. Whatever changes a file's extents (a stage, a release, a
//! truncate, `setattr_more`) wakes every waiter of that inode afterwards, and the woken
//! operations simply run again: they find the data online, or register again.
//!
//! Archive agents see the waiters with [`super::Fs::data_waiting`] (in `(ino, iblock)`
//! order, the ops of one block together) and fail them with
//! [`super::Fs::data_wait_err`]: the waiting operations then return
//! [`FsError::DataWaitFailed`] with the agent's errno.
//!
//! Two ways to wait, for two kinds of callers:
//!
//! - blocking: [`super::Fs::read`], [`super::Fs::write`], [`super::Fs::setattr`] and
//!   [`super::Fs::fallocate`] wait in the calling thread until the data is online (or a
//!   `data_wait_err` fails them). To be able to give up, call the `try_` form inside
//!   [`super::Fs::wait_for`] with a [`WaitCancel`]: [`WaitCancel::cancel`], from any
//!   thread, makes the wait return [`FsError::Interrupted`];
//! - non-blocking: the `try_` forms ([`super::Fs::try_read`] and the others) never wait:
//!   they return [`Waitable::Wait`] with the ticket, which an event-driven caller (the FUSE
//!   adapter) keeps with its pending request; [`DataWait::on_wake`] tells it when to run
//!   the operation again, and dropping the ticket withdraws the waiter.
//!
//! A wait never holds the mount's state lock: the table has its own lock (taken after the
//! state lock, never before it), and each waiter its own condition variable.

use super::*;
use parking_lot::Condvar;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// [`DataWaiting::ops`]: a read waits for the offline blocks it reads.
pub const DATA_WAIT_READ: u8 = 1;
/// [`DataWaiting::ops`]: a write (or fallocate) waits for the whole file.
pub const DATA_WAIT_WRITE: u8 = 2;
/// [`DataWaiting::ops`]: a size change (truncate) waits for the file up to the new size.
pub const DATA_WAIT_CHANGE_SIZE: u8 = 4;
/// Every op bit.
const DATA_WAIT_ALL: u8 = DATA_WAIT_READ | DATA_WAIT_WRITE | DATA_WAIT_CHANGE_SIZE;

/// The waiters of one block ([`super::Fs::data_waiting`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataWaiting {
    /// Inode.
    pub ino: u64,
    /// The logical block (of [`DATA_BLOCK_SIZE`] bytes) they wait for.
    pub iblock: u64,
    /// What waits: `DATA_WAIT_*` bits, of every waiter of the block.
    pub ops: u8,
}

/// What an operation that may need offline data gives: its result, or the ticket of the
/// wait it must make before it is run again (see the module documentation).
#[derive(Debug)]
pub enum Waitable<T> {
    /// The operation is done.
    Ready(T),
    /// The operation needs offline data: nothing was changed; run it again once the
    /// ticket is woken.
    Wait(DataWait),
}

/// How a woken waiter was woken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Woken {
    /// The inode's extents changed: run again.
    Changed,
    /// An agent failed the wait with this errno.
    Failed(i32),
}

type Notify = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct SlotState {
    woken: Option<Woken>,
    notify: Option<Notify>,
}

/// One waiter's state, shared by its ticket and the table.
#[derive(Default)]
struct Slot {
    st: Mutex<SlotState>,
    cv: Condvar,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("woken", &self.st.lock().woken)
            .finish()
    }
}

impl Slot {
    /// Wake it (the first wake counts); returns its callback to call once no lock is held.
    fn wake(&self, how: Woken) -> Option<Notify> {
        let mut st = self.st.lock();
        if st.woken.is_none() {
            st.woken = Some(how);
        }
        self.cv.notify_all();
        st.notify.take()
    }
}

#[derive(Debug)]
struct Waiter {
    op: u8,
    slot: Arc<Slot>,
}

/// The waiters of a mount, by `(ino, iblock, id)`.
#[derive(Debug, Default)]
pub(super) struct Waits {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    waiters: BTreeMap<(u64, u64, u64), Waiter>,
    next_id: u64,
}

impl Waits {
    /// Register a waiter of `op` for block `iblock` of `ino` (called under the state lock,
    /// by the check that found the block offline).
    pub(super) fn register(self: &Arc<Self>, ino: u64, iblock: u64, op: u8) -> DataWait {
        let slot = Arc::new(Slot::default());
        let mut t = self.table.lock();
        t.next_id += 1;
        let id = t.next_id;
        t.waiters.insert(
            (ino, iblock, id),
            Waiter {
                op,
                slot: slot.clone(),
            },
        );
        DataWait {
            ino,
            iblock,
            op,
            id,
            waits: self.clone(),
            slot,
        }
    }

    /// Wake (and withdraw) the waiters of `ino` whose block is in `first..=last` and whose
    /// op is one of `ops`; returns how many.
    fn wake_matching(&self, ino: u64, first: u64, last: u64, ops: u8, how: Woken) -> u64 {
        let mut notify = Vec::new();
        let mut n = 0;
        {
            let mut t = self.table.lock();
            let keys: Vec<_> = t
                .waiters
                .range((ino, first, 0)..=(ino, last, u64::MAX))
                .filter(|(_, w)| w.op & ops != 0)
                .map(|(k, _)| *k)
                .collect();
            for k in keys {
                if let Some(w) = t.waiters.remove(&k) {
                    notify.extend(w.slot.wake(how));
                    n += 1;
                }
            }
        }
        for f in notify {
            f();
        }
        n
    }

    /// The extents of `ino` changed: every waiter of it runs again.
    pub(super) fn changed(&self, ino: u64) {
        self.wake_matching(ino, 0, u64::MAX, DATA_WAIT_ALL, Woken::Changed);
    }

    /// See [`super::Fs::data_wait_err`] (`errno` already checked).
    pub(super) fn fail(&self, ino: u64, first: u64, last: u64, ops: u8, errno: i32) -> u64 {
        self.wake_matching(ino, first, last, ops, Woken::Failed(errno))
    }

    /// See [`super::Fs::data_waiting`].
    pub(super) fn waiting(
        &self,
        after_ino: u64,
        after_iblock: u64,
        limit: usize,
    ) -> Vec<DataWaiting> {
        let from = match after_iblock.checked_add(1) {
            Some(b) => (after_ino, b, 0),
            None => match after_ino.checked_add(1) {
                Some(i) => (i, 0, 0),
                None => return Vec::new(),
            },
        };
        let t = self.table.lock();
        let mut out: Vec<DataWaiting> = Vec::new();
        for (&(ino, iblock, _), w) in t.waiters.range(from..) {
            if let Some(l) = out
                .last_mut()
                .filter(|l| (l.ino, l.iblock) == (ino, iblock))
            {
                l.ops |= w.op;
                continue;
            }
            if out.len() == limit {
                break;
            }
            out.push(DataWaiting {
                ino,
                iblock,
                ops: w.op,
            });
        }
        out
    }

    fn withdraw(&self, ino: u64, iblock: u64, id: u64) {
        self.table.lock().waiters.remove(&(ino, iblock, id));
    }
}

/// A registered wait for offline data: the ticket an operation that must wait returns
/// ([`Waitable::Wait`]). While it lives, [`super::Fs::data_waiting`] lists it (until it is
/// woken); dropping it withdraws the waiter.
#[derive(Debug)]
pub struct DataWait {
    ino: u64,
    iblock: u64,
    op: u8,
    id: u64,
    waits: Arc<Waits>,
    slot: Arc<Slot>,
}

impl DataWait {
    /// The inode waited on.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// The offline block waited for.
    pub fn iblock(&self) -> u64 {
        self.iblock
    }

    /// What waits (`DATA_WAIT_*`).
    pub fn op(&self) -> u8 {
        self.op
    }

    /// Whether it was woken, and how: `Some(Ok(()))` to run the operation again,
    /// `Some(Err(`[`FsError::DataWaitFailed`]`))` if an agent failed it, `None` while it
    /// still waits. Never blocks.
    pub fn poll(&self) -> Option<FsResult<()>> {
        self.slot.st.lock().woken.map(outcome)
    }

    /// Call `f` once when it is woken (at once if it was already): from the thread that
    /// wakes it (a stage, a release, a `data_wait_err`), with no lock of the filesystem
    /// held. `f` should only hand the news on (a channel send), not run the operation.
    /// Replaces a callback set before.
    pub fn on_wake(&self, f: impl FnOnce() + Send + 'static) {
        let mut st = self.slot.st.lock();
        if st.woken.is_some() {
            drop(st);
            f();
        } else {
            st.notify = Some(Box::new(f));
        }
    }

    /// Block until it is woken ([`DataWait::poll`]'s answer), or `cancel` is cancelled
    /// ([`FsError::Interrupted`]).
    pub fn wait(&self, cancel: Option<&WaitCancel>) -> FsResult<()> {
        if let Some(c) = cancel {
            *c.0.waiting.lock() = Some(self.slot.clone());
        }
        let res = {
            let mut st = self.slot.st.lock();
            loop {
                if let Some(w) = st.woken {
                    break outcome(w);
                }
                if cancel.is_some_and(WaitCancel::is_cancelled) {
                    break Err(FsError::Interrupted);
                }
                self.slot.cv.wait(&mut st);
            }
        };
        if let Some(c) = cancel {
            *c.0.waiting.lock() = None;
        }
        res
    }
}

fn outcome(w: Woken) -> FsResult<()> {
    match w {
        Woken::Changed => Ok(()),
        Woken::Failed(errno) => Err(FsError::DataWaitFailed(errno)),
    }
}

impl Drop for DataWait {
    fn drop(&mut self) {
        self.waits.withdraw(self.ino, self.iblock, self.id);
    }
}

/// A way to give up a wait for offline data from another thread (see
/// [`super::Fs::wait_for`]): clones share it; once cancelled it stays so.
#[derive(Clone, Debug, Default)]
pub struct WaitCancel(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    cancelled: AtomicBool,
    /// The waiter blocked under this token, to wake.
    waiting: Mutex<Option<Arc<Slot>>>,
}

impl WaitCancel {
    /// A token not cancelled yet.
    pub fn new() -> WaitCancel {
        WaitCancel::default()
    }

    /// Cancel: a wait under this token returns [`FsError::Interrupted`] (now, if one is
    /// blocked; else when it starts).
    pub fn cancel(&self) {
        self.0.cancelled.store(true, Ordering::SeqCst);
        let slot = self.0.waiting.lock().clone();
        if let Some(slot) = slot {
            // Under the slot's lock: a waiter that has not seen the flag is in its wait.
            let _st = slot.st.lock();
            slot.cv.notify_all();
        }
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::SeqCst)
    }
}

impl Fs {
    /// Run `op`, a `try_` operation of this mount (e.g. `|| fs.try_read(ino, 0, 4096)`),
    /// until it is done, waiting in this thread whenever it needs offline data; with
    /// `cancel`, [`WaitCancel::cancel`] from another thread gives up the wait
    /// ([`FsError::Interrupted`]). The blocking operations ([`Fs::read`] and the others)
    /// are this without a `cancel`.
    ///
    /// A reader of released data, and the archive agent that stages it back:
    ///
    /// ```
    /// use scoutfs_core::device::{BlockDevice, MemDevice};
    /// use scoutfs_core::fs::*;
    /// use scoutfs_core::volume::{mkfs, MkfsOptions};
    /// use std::sync::Arc;
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let meta: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(16 << 20));
    /// let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(16 << 20));
    /// let mk = MkfsOptions { meta_block_size: 4096, ..Default::default() };
    /// mkfs(&meta, &data, &mk)?;
    /// let fs = Arc::new(Fs::mount_single(meta, data, FsOptions::default())?);
    /// let ino = fs.mknod(ROOT_INO, b"f", 0o100644, 0, Creds::default())?.ino;
    /// fs.write(ino, 0, b"archived bytes")?;
    /// // The agent copied the file to its archive: it frees the blocks.
    /// let version = fs.stat_more(ino)?.data_version;
    /// fs.release_data(ino, 0, 4096, version)?;
    ///
    /// // A reader that can be told to give up (`cancel.cancel()`).
    /// let cancel = WaitCancel::new();
    /// let reader = {
    ///     let (fs, cancel) = (fs.clone(), cancel.clone());
    ///     std::thread::spawn(move || fs.wait_for(Some(&cancel), || fs.try_read(ino, 0, 100)))
    /// };
    /// // The agent sees it waiting, and stages the bytes back.
    /// while fs.data_waiting(0, 0, 10).is_empty() {
    ///     std::thread::yield_now();
    /// }
    /// fs.stage(ino, 0, b"archived bytes", version)?;
    /// assert_eq!(reader.join().expect("the reader")?, b"archived bytes");
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait_for<T>(
        &self,
        cancel: Option<&WaitCancel>,
        op: impl FnMut() -> FsResult<Waitable<T>>,
    ) -> FsResult<T> {
        block_on(cancel, op)
    }

    /// The blocks operations of this mount wait for, in `(ino, iblock)` order from the
    /// first after `(after_ino, after_iblock)`, at most `limit`, each with the ops of all
    /// its waiters (the original's `data-waiting`; this mount's waiters only).
    pub fn data_waiting(
        &self,
        after_ino: u64,
        after_iblock: u64,
        limit: usize,
    ) -> Vec<DataWaiting> {
        self.waits.waiting(after_ino, after_iblock, limit)
    }

    /// Fail the waiters of regular file `ino` that wait for a block of `count` bytes at
    /// `offset` (0 bytes: none) with one of the `ops` (`DATA_WAIT_*` bits), with `errno`
    /// (a Linux errno, negative as the original takes it, or positive): their operations
    /// return [`FsError::DataWaitFailed`]. Returns how many were failed. Bad `ops`,
    /// `errno` or a range past the largest offset: [`FsError::Invalid`]; no such inode:
    /// [`FsError::Stale`] (as the original, which looks in its inode cache).
    pub fn data_wait_err(
        &self,
        ino: u64,
        offset: u64,
        count: u64,
        ops: u8,
        errno: i32,
    ) -> FsResult<u64> {
        if count == 0 {
            return Ok(0);
        }
        check_ops(ops)?;
        let errno = check_errno(errno)?;
        let last = offset.checked_add(count - 1).ok_or(FsError::Invalid)?;
        self.op(|st| match st.inode(ino) {
            Ok(i) if kind_of(&i)? == FileKind::File => Ok(()),
            Ok(_) => Err(FsError::Invalid),
            Err(FsError::NotFound) => Err(FsError::Stale),
            Err(e) => Err(e),
        })?;
        let bs = DATA_BLOCK_SIZE;
        Ok(self.waits.fail(ino, offset / bs, last / bs, ops, errno))
    }
}

/// Run `op` (a `try_` operation of [`super::Fs`]) until it is done, waiting in this thread
/// while it needs offline data, until `cancel` (if any) is cancelled.
pub(super) fn block_on<T>(
    cancel: Option<&WaitCancel>,
    mut op: impl FnMut() -> FsResult<Waitable<T>>,
) -> FsResult<T> {
    loop {
        if cancel.is_some_and(WaitCancel::is_cancelled) {
            return Err(FsError::Interrupted);
        }
        match op()? {
            Waitable::Ready(v) => return Ok(v),
            Waitable::Wait(w) => w.wait(cancel)?,
        }
    }
}

/// Check the `errno` an agent fails waiters with: a Linux errno, negative as the
/// original's ioctl takes it or positive; returns it positive.
pub(super) fn check_errno(errno: i32) -> FsResult<i32> {
    match errno.unsigned_abs() {
        e @ 1..=4095 => Ok(e as i32),
        _ => Err(FsError::Invalid),
    }
}

/// Check the `ops` of a `data_wait_err`.
pub(super) fn check_ops(ops: u8) -> FsResult<()> {
    if ops & !DATA_WAIT_ALL != 0 {
        return Err(FsError::Invalid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::unwrap_used)]
    fn waiting_lists_blocks_in_order_with_their_ops_together() {
        let w = Arc::new(Waits::default());
        let a = w.register(5, 3, DATA_WAIT_READ);
        let b = w.register(5, 3, DATA_WAIT_WRITE);
        let c = w.register(2, 9, DATA_WAIT_CHANGE_SIZE);
        let d = w.register(5, 1, DATA_WAIT_READ);
        let all = w.waiting(0, 0, 10);
        let got: Vec<_> = all.iter().map(|e| (e.ino, e.iblock, e.ops)).collect();
        assert_eq!(got, vec![(2, 9, 4), (5, 1, 1), (5, 3, 3)]);
        assert_eq!(w.waiting(5, 1, 10).len(), 1, "strictly after the position");
        assert_eq!(w.waiting(0, 0, 2).len(), 2, "the limit");
        assert_eq!(w.waiting(u64::MAX, u64::MAX, 2).len(), 0);
        // Failing the writers of block 3 leaves its reader.
        assert_eq!(w.fail(5, 0, 3, DATA_WAIT_WRITE, 5), 1);
        assert!(matches!(b.poll(), Some(Err(FsError::DataWaitFailed(5)))));
        assert!(a.poll().is_none());
        drop(d);
        assert_eq!(
            w.waiting(5, 0, 10),
            vec![DataWaiting {
                ino: 5,
                iblock: 3,
                ops: 1
            }]
        );
        w.changed(5);
        assert!(matches!(a.poll(), Some(Ok(()))));
        assert!(c.poll().is_none());
        assert_eq!(w.waiting(0, 0, 10).len(), 1);
        drop(c);
        assert!(w.waiting(0, 0, 10).is_empty());
    }

    #[test]
    fn a_callback_runs_once_at_the_wake_or_at_once_if_woken_already() {
        let w = Arc::new(Waits::default());
        let t = w.register(1, 0, DATA_WAIT_READ);
        let hits = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let h = hits.clone();
        t.on_wake(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 0);
        w.changed(1);
        w.changed(1);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        let h = hits.clone();
        t.on_wake(move || {
            h.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn bad_errnos_and_ops_are_refused() {
        assert_eq!(check_errno(-5).ok(), Some(5));
        assert_eq!(check_errno(5).ok(), Some(5));
        assert!(check_errno(0).is_err());
        assert!(check_errno(-4096).is_err());
        assert!(check_errno(i32::MIN).is_err());
        assert!(check_ops(DATA_WAIT_ALL).is_ok());
        assert!(check_ops(8).is_err());
    }
}
