//! A lock table for one mount alone that checks how the filesystem takes its cluster
//! locks: it grants whatever is asked at once, forgets every lock no operation uses (so
//! each operation must find and take all it needs afresh: the worst case, a mount whose
//! locks other mounts keep taking away), and panics if a thread waits for an inode lock
//! that sorts before one it already uses (waits out of key order can deadlock between
//! mounts; only blind-write locks may be waited for out of order, see
//! `scoutfs_core::client::locks`).

use parking_lot::{Condvar, Mutex};
use scoutfs_core::client::locks::{lock_span, satisfies, Held, ItemLocks};
use scoutfs_core::client::ClientError;
use scoutfs_core::format::Key;
use scoutfs_core::transport::LockMode;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

thread_local! {
    /// The locks this thread uses now.
    static USING: RefCell<Vec<Key>> = const { RefCell::new(Vec::new()) };
}

/// A grant of `mode` (one mount alone needs no seq floor).
fn held(mode: LockMode) -> Held {
    Held { mode, write_seq: 0 }
}

/// See the module comment.
#[derive(Debug, Default)]
pub struct StrictLocks {
    held: Mutex<HashMap<Key, (LockMode, usize)>>,
    cv: Condvar,
    /// Locks taken by waiting (each a round trip to the server in a cluster).
    pub waits: AtomicU64,
    /// Uses of locks already held.
    pub hits: AtomicU64,
}

impl StrictLocks {
    fn used(&self, start: &Key) {
        USING.with(|u| u.borrow_mut().push(*start));
    }
}

impl ItemLocks for StrictLocks {
    fn try_use(&self, start: &Key, mode: LockMode) -> Option<Held> {
        let mut h = self.held.lock();
        match h.get_mut(start) {
            Some((m, n)) if satisfies(*m, mode) => {
                *n += 1;
                self.hits.fetch_add(1, Ordering::Relaxed);
                let m = *m;
                drop(h);
                self.used(start);
                Some(held(m))
            }
            _ => None,
        }
    }

    fn use_waiting(&self, start: &Key, end: &Key, mode: LockMode) -> Result<Held, ClientError> {
        assert_eq!(lock_span(start).start, *start, "not a lock's first key");
        assert_eq!(lock_span(start).end, *end, "not the lock's range");
        if !lock_span(start).blind || mode != LockMode::WriteOnly {
            USING.with(|u| {
                if let Some(last) = u.borrow().iter().max() {
                    assert!(
                        last < start,
                        "waited for {start:?} while using {last:?}: out of key order"
                    );
                }
            });
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        let mut h = self.held.lock();
        loop {
            match h.get_mut(start) {
                None => {
                    h.insert(*start, (mode, 1));
                    break;
                }
                Some((m, n)) if satisfies(*m, mode) => {
                    *n += 1;
                    let m = *m;
                    drop(h);
                    self.used(start);
                    return Ok(held(m));
                }
                Some((m, 0)) => {
                    *m = LockMode::Write;
                    break;
                }
                Some(_) => self.cv.wait(&mut h),
            }
        }
        let m = h[start].0;
        drop(h);
        self.used(start);
        Ok(held(m))
    }

    fn unuse(&self, start: &Key, mode: LockMode) {
        let mut h = self.held.lock();
        let (m, n) = h
            .get_mut(start)
            .expect("a lock let go of that was not used");
        assert_eq!(*m, mode, "let go of in another mode than it was used");
        *n -= 1;
        if *n == 0 {
            h.remove(start);
        }
        self.cv.notify_all();
        USING.with(|u| {
            let mut u = u.borrow_mut();
            let i = u
                .iter()
                .position(|k| k == start)
                .expect("not used by this thread");
            u.swap_remove(i);
        });
    }
}
