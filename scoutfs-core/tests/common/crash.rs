//! Crash devices the tests share: one that forks itself at chosen writes and flushes,
//! and a meta and data pair whose power goes out together.

use super::mkfs_on;
use parking_lot::Mutex;
use scoutfs_core::device::{BlockDevice, CrashDevice, CrashStats, DeviceError, FaultOp};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Crash devices under a volume's meta and data devices whose power goes out together:
/// every write and every flush to either spends one unit of a shared budget, and once it
/// is spent every write and flush fails (as an injected fault: the caller sees EIO).
/// What was not flushed is then decided by [`PowerCut::crash`].
///
/// Make the volume on [`PowerCut::raw`], mount it on [`PowerCut::devices`], set the
/// budget with [`PowerCut::cut_after`], run until an operation fails, then crash and
/// mount [`PowerCut::raw`] again.
#[derive(Debug)]
pub struct PowerCut {
    pub meta: Arc<CrashDevice>,
    pub data: Arc<CrashDevice>,
    budget: Arc<AtomicU64>,
}

impl PowerCut {
    /// Fresh crash devices of these sizes, with an unlimited budget.
    pub fn new(meta_bytes: u64, data_bytes: u64) -> PowerCut {
        PowerCut {
            meta: Arc::new(CrashDevice::new(meta_bytes)),
            data: Arc::new(CrashDevice::new(data_bytes)),
            budget: Arc::new(AtomicU64::new(u64::MAX)),
        }
    }

    /// [`PowerCut::new`] with a volume made on it (by [`mkfs_on`], `bs`-byte metadata
    /// blocks) and flushed.
    pub fn volume(meta_bytes: u64, data_bytes: u64, bs: u32) -> PowerCut {
        let p = PowerCut::new(meta_bytes, data_bytes);
        let (meta, data) = p.raw();
        mkfs_on(&meta, &data, bs);
        meta.flush().unwrap();
        data.flush().unwrap();
        p
    }

    /// The devices as a mount should use them: their writes and flushes spend the budget.
    pub fn devices(&self) -> (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) {
        let cut = |dev: &Arc<CrashDevice>| -> Arc<dyn BlockDevice> {
            Arc::new(CutDevice {
                dev: dev.clone(),
                budget: self.budget.clone(),
            })
        };
        (cut(&self.meta), cut(&self.data))
    }

    /// The crash devices themselves, which spend nothing: for mkfs before the workload,
    /// and the mount and `check` after the crash.
    pub fn raw(&self) -> (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) {
        (self.meta.clone(), self.data.clone())
    }

    /// Cut the power after `n` more writes and flushes (`u64::MAX`: never).
    pub fn cut_after(&self, n: u64) {
        self.budget.store(n, Ordering::SeqCst);
    }

    /// Writes and flushes left before the power goes.
    pub fn left(&self) -> u64 {
        self.budget.load(Ordering::SeqCst)
    }

    /// Whether the power is gone.
    pub fn is_cut(&self) -> bool {
        self.left() == 0
    }

    /// Lose what was not flushed on both devices (kept, dropped or torn by `seed`).
    pub fn crash(&self, seed: u64) -> (CrashStats, CrashStats) {
        (self.meta.crash(seed), self.data.crash(seed ^ 1))
    }
}

/// One device of a [`PowerCut`].
#[derive(Debug)]
struct CutDevice {
    dev: Arc<CrashDevice>,
    budget: Arc<AtomicU64>,
}

impl CutDevice {
    fn spend(&self, op: FaultOp) -> Result<(), DeviceError> {
        self.budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                left.checked_sub(1)
            })
            .map(|_| ())
            .map_err(|_| DeviceError::Injected { op, nth: 0 })
    }
}

impl BlockDevice for CutDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        self.dev.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DeviceError> {
        self.spend(FaultOp::Write)?;
        self.dev.write_at(buf, offset)
    }
    fn flush(&self) -> Result<(), DeviceError> {
        self.spend(FaultOp::Flush)?;
        self.dev.flush()
    }
    fn len(&self) -> u64 {
        self.dev.len()
    }
}

/// A crash device that forks itself (a copy of what a power cut at that instant could
/// leave, once crashed) at writes and flushes while armed: at random ones (`rate`: one in
/// that many), or at every flush.
#[derive(Debug)]
pub struct Forking {
    pub inner: Arc<CrashDevice>,
    pub state: Arc<Mutex<ForkState>>,
}

#[derive(Debug, Default)]
pub struct ForkState {
    pub armed: bool,
    pub rng: u64,
    /// Fork at one in `rate` writes and flushes (0: at every flush instead).
    pub rate: u64,
    pub limit: usize,
    pub forks: Vec<CrashDevice>,
}

impl Forking {
    pub fn new(size: u64, rng: u64, rate: u64, limit: usize) -> Forking {
        Forking {
            inner: Arc::new(CrashDevice::new(size)),
            state: Arc::new(Mutex::new(ForkState {
                rng,
                rate,
                limit,
                ..ForkState::default()
            })),
        }
    }

    fn maybe_fork(&self, flush: bool) {
        let mut s = self.state.lock();
        if !s.armed || s.forks.len() >= s.limit {
            return;
        }
        let take = if s.rate == 0 {
            flush
        } else {
            let rate = s.rate;
            scoutfs_core::block::splitmix64(&mut s.rng).is_multiple_of(rate)
        };
        if take {
            let f = self.inner.fork();
            s.forks.push(f);
        }
    }

    pub fn arm(&self, on: bool) {
        self.state.lock().armed = on;
    }

    pub fn forks(&self) -> usize {
        self.state.lock().forks.len()
    }

    pub fn take_forks(&self) -> Vec<CrashDevice> {
        std::mem::take(&mut self.state.lock().forks)
    }
}

impl BlockDevice for Forking {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> scoutfs_core::device::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> scoutfs_core::device::Result<()> {
        self.maybe_fork(false);
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> scoutfs_core::device::Result<()> {
        self.maybe_fork(true);
        self.inner.flush()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}
