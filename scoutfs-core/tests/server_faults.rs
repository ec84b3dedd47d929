#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Fault injection in server commits: a write or flush that fails during a commit fails
//! every request batched into it, the server refuses every later change until it is
//! reopened, and reopening finds the previous commit intact.

mod common;

use common::{assert_clean, mkfs_on};
use scoutfs_core::btree;
use scoutfs_core::device::{BlockDevice, FaultDevice, FaultOp, MemDevice};
use scoutfs_core::format::*;
use scoutfs_core::server::{Server, ServerCore, ServerOptions};
use scoutfs_core::volume::VolumeError;
use std::sync::{Arc, Barrier};
use std::time::Duration;

fn key(i: u64) -> Key {
    Key::new(zone::FS, 10_000 + i, item_type::XATTR, 0, 0, 0)
}

fn put(server: &Server, i: u64) -> Result<(), VolumeError> {
    server.apply(|c| c.with_txn(|t, r| t.force(&mut r.fs_root, &key(i), &i.to_le_bytes())))
}

fn fs_keys(core: &ServerCore) -> Vec<u64> {
    let root = core.super_block().fs_root.into();
    btree::items(core.cache().as_ref(), &root, &key(0), &key(u64::MAX / 2))
        .unwrap()
        .iter()
        .map(|it| it.key.first - 10_000)
        .collect()
}

/// `threads` requests that all land in one commit: the first holds the commit open
/// (inside its change) until the others have taken their holds.
fn batched(server: &Arc<Server>, first: u64, threads: u64) -> Vec<Result<(), VolumeError>> {
    let barrier = Arc::new(Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|n| {
            let (s, b) = (server.clone(), barrier.clone());
            std::thread::spawn(move || {
                if n == 0 {
                    s.apply(|c| {
                        b.wait();
                        std::thread::sleep(Duration::from_millis(100));
                        c.with_txn(|t, r| t.force(&mut r.fs_root, &key(first), &[1]))
                    })
                } else {
                    b.wait();
                    std::thread::sleep(Duration::from_millis(20));
                    put(&s, first + n)
                }
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn run(op: FaultOp, nth_from_end: Option<u64>, nth: u64) {
    let mem = Arc::new(MemDevice::new(16 << 20));
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(16 << 20));
    let m: Arc<dyn BlockDevice> = mem.clone();
    mkfs_on(&m, &data, 4096);
    let fault = Arc::new(FaultDevice::new(m.clone()));
    let core = ServerCore::open(fault.clone(), data.clone(), ServerOptions::default()).unwrap();
    let server = Arc::new(Server::new(core));
    for i in 0..100 {
        put(&server, i).unwrap();
    }
    // A batched commit without faults, to count the writes and flushes of one.
    let before = fault.counts();
    let c0 = server.commits();
    let ok = batched(&server, 200, 4);
    assert!(ok.iter().all(|r| r.is_ok()), "{ok:?}");
    assert_eq!(
        server.commits() - c0,
        1,
        "four concurrent requests, one commit"
    );
    let after = fault.counts();
    let (writes, flushes) = (after.1 - before.1, after.2 - before.2);
    assert_eq!(flushes, 2, "a commit flushes twice: blocks, then the super");
    let commits = server.commits();

    let n = match nth_from_end {
        Some(back) => writes.saturating_sub(back).max(1),
        None => nth,
    };
    fault.fail_nth(op, n);
    let res = batched(&server, 300, 4);
    assert!(fault.fired(), "{op} {n} did not fire");
    assert_eq!(res.len(), 4);
    for r in &res {
        assert!(
            r.is_err(),
            "a request in the failed commit succeeded: {res:?}"
        );
    }
    assert_eq!(
        server.commits(),
        commits,
        "the failed commit counted as written"
    );
    // Poisoned: no more changes, even with the device healthy again.
    fault.disarm();
    assert!(matches!(put(&server, 999), Err(VolumeError::Poisoned)));
    drop(server);

    // Reopen from the device itself: the previous commit, intact and consistent.
    let m2 = m.clone();
    let core = ServerCore::open(m, data.clone(), ServerOptions::default()).unwrap();
    let mut want: Vec<u64> = (0..100).collect();
    want.extend(200..204);
    let got = fs_keys(&core);
    if op == FaultOp::Flush && n == 2 {
        // The super was written before its flush failed: the device may hold the failed
        // commit whole (its blocks were flushed first), or the previous one; never a mix.
        let mut new = want.clone();
        new.extend(300..304);
        assert!(got == want || got == new, "{op} {n}: {got:?}");
    } else {
        assert_eq!(got, want, "{op} {n}");
    }
    btree::verify(core.cache().as_ref(), &core.super_block().fs_root.into()).unwrap();
    drop(core);
    assert_clean(&m2, &data, &format!("{op} {n}"));
}

#[test]
fn failed_first_block_write_fails_every_holder() {
    run(FaultOp::Write, None, 1);
}

#[test]
fn failed_super_write_fails_every_holder() {
    // The super is the last write of a commit.
    run(FaultOp::Write, Some(0), 0);
}

#[test]
fn failed_block_flush_fails_every_holder() {
    run(FaultOp::Flush, None, 1);
}

#[test]
fn failed_super_flush_fails_every_holder() {
    run(FaultOp::Flush, None, 2);
}
