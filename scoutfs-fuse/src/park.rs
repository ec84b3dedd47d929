//! Requests that wait for offline data, parked off the request threads.
//!
//! A read of offline blocks, or a write, truncate or fallocate of a file with offline
//! blocks, waits until an archive agent stages the data (scoutfs_core's module `waits`).
//! Such a request must not hold one of the session's few request threads meanwhile (a
//! handful of waiting readers would stop the whole mount), so the adapter runs every
//! such operation in its non-blocking form (`Fs::try_read` and the others): when it must
//! wait, its reply (fuser's replies are `Send`) is parked here with the wait's ticket and
//! the request thread returns at once. One watcher thread owns the parked requests: when
//! a ticket is woken (the data changed, or `data_wait_err` failed it) the watcher runs the
//! operation again and replies, or parks it again. A parked request holds up nothing
//! else: not other requests, not other files.
//!
//! Interruption. fuser 0.18 answers `FUSE_INTERRUPT` with ENOSYS itself (its request
//! dispatch has "TODO: handle FUSE_INTERRUPT"), after which the kernel sends no more
//! interrupts for the connection, and a caller whose request the daemon has received
//! stays blocked until the daemon replies, whatever signal it gets (a fatal one
//! included). So the watcher watches each parked request's caller itself: the request's
//! pid is the caller's thread id, and every [`POLL`] the watcher reads
//! `/proc/<tid>/status`; when it shows a pending signal that is not blocked (`SigPnd` or
//! `ShdPnd`, and not `SigBlk`), or the thread is gone, the request is answered EINTR and
//! its waiter withdrawn. A request of no caller (pid 0) is never interrupted.

use fuser::{Errno, ReplyAttr, ReplyData, ReplyEmpty, ReplyWrite};
use scoutfs_core::fs::{DataWait, Fs, FsResult, Waitable};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often the callers of parked requests are looked at for signals.
pub const POLL: Duration = Duration::from_millis(100);

/// A reply that can carry an error (every fuser reply type).
pub trait ErrorReply: Send + 'static {
    /// Reply with `e`.
    fn fail(self, e: Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => {$(
        impl ErrorReply for $t {
            fn fail(self, e: Errno) {
                self.error(e)
            }
        }
    )*};
}
error_reply!(ReplyAttr, ReplyData, ReplyEmpty, ReplyWrite);

/// An operation run again until it is done.
pub type Retry<T> = Box<dyn FnMut(&Fs) -> FsResult<Waitable<T>> + Send>;

/// A parked request: its reply and how to run it again.
trait Job: Send {
    /// Run the operation again: replied (`None`), or the next wait.
    fn run(&mut self, fs: &Fs) -> Option<DataWait>;
    /// Reply with `e`.
    fn fail(&mut self, e: Errno);
}

struct Pending<R, T> {
    reply: Option<R>,
    op: Retry<T>,
    ok: fn(R, T),
}

impl<R: ErrorReply, T: 'static> Job for Pending<R, T> {
    fn run(&mut self, fs: &Fs) -> Option<DataWait> {
        match (self.op)(fs) {
            Ok(Waitable::Wait(w)) => Some(w),
            Ok(Waitable::Ready(v)) => {
                if let Some(r) = self.reply.take() {
                    (self.ok)(r, v);
                }
                None
            }
            Err(e) => {
                self.fail(Errno::from_i32(e.errno()));
                None
            }
        }
    }

    fn fail(&mut self, e: Errno) {
        if let Some(r) = self.reply.take() {
            r.fail(e);
        }
    }
}

struct Parked {
    tid: u32,
    wait: DataWait,
    job: Box<dyn Job>,
}

enum Msg {
    /// A request was parked: the watcher polls its caller from now on.
    Parked,
    Woken(u64),
    Stop,
}

struct Shared {
    parked: Mutex<HashMap<u64, Parked>>,
    next: AtomicU64,
    tx: Sender<Msg>,
}

impl Shared {
    fn park(&self, p: Parked) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let tx = self.tx.clone();
        let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
        // Told under the lock: a wake that came already is seen once the entry is in.
        p.wait.on_wake(move || {
            let _ = tx.send(Msg::Woken(id));
        });
        parked.insert(id, p);
        let _ = self.tx.send(Msg::Parked);
    }

    fn take(&self, id: u64) -> Option<Parked> {
        self.parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
    }
}

/// The parked requests of a mount and their watcher thread (stopped when dropped; the
/// requests still parked are then answered EIO).
pub struct Parker {
    shared: Arc<Shared>,
    watcher: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Parker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parker")
            .field("parked", &self.parked())
            .finish()
    }
}

impl Parker {
    /// Start the watcher of `fs`'s parked requests.
    pub fn new(fs: Arc<Fs>) -> std::io::Result<Parker> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            parked: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            tx,
        });
        let s = shared.clone();
        let watcher = thread::Builder::new()
            .name("scoutfs-waits".into())
            .spawn(move || watch(&fs, &s, &rx))?;
        Ok(Parker {
            shared,
            watcher: Some(watcher),
        })
    }

    /// Requests parked now.
    pub fn parked(&self) -> usize {
        self.shared
            .parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// Reply to a request of caller thread `tid` whose first run gave `first`: at once,
    /// or once the data it waits for is there (running it again with `retry()`'s
    /// operation, made only if it must wait).
    pub fn finish<R, T, F>(
        &self,
        tid: u32,
        reply: R,
        first: FsResult<Waitable<T>>,
        retry: impl FnOnce() -> F,
        ok: fn(R, T),
    ) where
        R: ErrorReply,
        T: 'static,
        F: FnMut(&Fs) -> FsResult<Waitable<T>> + Send + 'static,
    {
        match first {
            Ok(Waitable::Ready(v)) => ok(reply, v),
            Err(e) => reply.fail(Errno::from_i32(e.errno())),
            Ok(Waitable::Wait(wait)) => self.shared.park(Parked {
                tid,
                wait,
                job: Box::new(Pending {
                    reply: Some(reply),
                    op: Box::new(retry()),
                    ok,
                }),
            }),
        }
    }
}

impl Drop for Parker {
    fn drop(&mut self) {
        let _ = self.shared.tx.send(Msg::Stop);
        if let Some(w) = self.watcher.take() {
            let _ = w.join();
        }
    }
}

/// The watcher: run woken requests again, answer interrupted ones.
fn watch(fs: &Fs, shared: &Shared, rx: &mpsc::Receiver<Msg>) {
    let mut scanned = Instant::now();
    loop {
        // Nothing parked: nothing to poll, sleep until a request is.
        let idle = shared
            .parked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        let msg = if idle {
            rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            rx.recv_timeout(POLL)
        };
        match msg {
            Ok(Msg::Woken(id)) => {
                if let Some(p) = shared.take(id) {
                    rerun(fs, shared, p);
                }
            }
            Ok(Msg::Parked) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
        }
        if scanned.elapsed() >= POLL {
            scanned = Instant::now();
            interrupt_signalled(shared);
        }
    }
    // The mount is going: what is left is answered EIO (a dropped reply).
    shared
        .parked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
}

fn rerun(fs: &Fs, shared: &Shared, mut p: Parked) {
    match p.wait.poll() {
        None => shared.park(p),
        Some(Err(e)) => p.job.fail(Errno::from_i32(e.errno())),
        Some(Ok(())) => {
            let Parked { tid, wait, mut job } = p;
            drop(wait);
            if let Some(wait) = job.run(fs) {
                shared.park(Parked { tid, wait, job });
            }
        }
    }
}

/// Answer EINTR to the parked requests whose callers have a signal to take, or are gone.
fn interrupt_signalled(shared: &Shared) {
    let tids: Vec<(u64, u32)> = shared
        .parked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(id, p)| (*id, p.tid))
        .collect();
    for (id, tid) in tids {
        if tid != 0 && caller_interrupted(tid) {
            if let Some(mut p) = shared.take(id) {
                p.job.fail(Errno::EINTR);
            }
        }
    }
}

/// Whether thread `tid` has a pending signal it does not block, or is gone.
pub fn caller_interrupted(tid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{tid}/status")) {
        Ok(status) => signal_to_take(&status),
        Err(_) => true,
    }
}

/// Whether a `/proc/<tid>/status` text shows a pending signal (thread's or process's)
/// that the thread does not block.
fn signal_to_take(status: &str) -> bool {
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = field("SigPnd:") | field("ShdPnd:");
    pending & !field("SigBlk:") != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_signals_count_unless_blocked() {
        let status = |pnd: &str, shd: &str, blk: &str| {
            format!(
                "Name:\tcat\nState:\tS (sleeping)\nSigQ:\t0/1\nSigPnd:\t{pnd}\nShdPnd:\t{shd}\n\
                 SigBlk:\t{blk}\nSigIgn:\t0000000000000000\n"
            )
        };
        let z = "0000000000000000";
        assert!(!signal_to_take(&status(z, z, z)));
        // SIGINT (2) to the thread; SIGTERM (15) to the process.
        assert!(signal_to_take(&status("0000000000000002", z, z)));
        assert!(signal_to_take(&status(z, "0000000000004000", z)));
        assert!(!signal_to_take(&status(
            z,
            "0000000000004000",
            "0000000000004000"
        )));
        assert!(signal_to_take(&status(
            "0000000000000100",
            "0000000000004000",
            "0000000000004000"
        )));
    }

    #[test]
    fn a_gone_thread_counts_as_interrupted_and_this_one_does_not() {
        assert!(caller_interrupted(u32::MAX - 7));
        let Ok(me) = std::fs::read_to_string("/proc/thread-self/status") else {
            eprintln!(
                "skipped: a_gone_thread_counts_as_interrupted_and_this_one_does_not: no /proc"
            );
            return;
        };
        // The thread's own id is its "Pid:" there.
        let tid: u32 = me
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("a Pid line");
        assert!(!caller_interrupted(tid));
    }
}
