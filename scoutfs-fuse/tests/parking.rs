//! Requests that wait for offline data, through a real FUSE mount of an in-memory volume
//! served by this process: readers of a released file wait (more of them than the mount
//! has request threads) while other requests are answered, staging completes them with
//! the file's bytes, and a signal to a waiting reader ends its read at once.
//!
//! Mounting needs root and `/dev/fuse`; without them the test says it is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use scoutfs_core::fs::{Creds, ROOT_INO};
use scoutfs_fuse::ServeOptions;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use support::eventually;

fn cat(path: &Path) -> Child {
    Command::new("cat")
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn waiting_reads_are_parked_woken_by_staging_and_ended_by_signals() {
    let fs = support::volume();
    // Written before the mount: the kernel caches none of it.
    let c = Creds::default();
    let bytes: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    let f = fs.mknod(ROOT_INO, b"f", 0o100644, 0, c).unwrap().ino;
    fs.write(f, 0, &bytes).unwrap();
    let g = fs.mknod(ROOT_INO, b"g", 0o100644, 0, c).unwrap().ino;
    fs.write(g, 0, b"another file").unwrap();
    let v = fs.stat_more(f).unwrap().data_version;
    fs.release_data(f, 0, 1 << 20, v).unwrap();

    let serve = ServeOptions {
        threads: 2,
        ..ServeOptions::default()
    };
    let Some(m) = support::serve(fs.clone(), &serve) else {
        return;
    };
    let mnt = m.mnt.clone();

    // More waiting readers than request threads.
    let readers: Vec<Child> = (0..4).map(|_| cat(&mnt.join("f"))).collect();
    eventually("the readers wait", || {
        fs.data_waiting(0, 0, 10).iter().any(|w| w.ino == f)
    });
    thread::sleep(Duration::from_millis(100));
    // The request threads are free: another file reads, the directory lists.
    assert_eq!(std::fs::read(mnt.join("g")).unwrap(), b"another file");
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 2);
    fs.stage(f, 0, &bytes, v).unwrap();
    for r in readers {
        let out = r.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == bytes, "a reader read other bytes");
    }
    assert!(fs.data_waiting(0, 0, 10).is_empty());

    // A signalled reader is answered EINTR; a killed one goes. Released in-process,
    // behind the kernel's back, which held the file's pages (files are opened keeping
    // the kernel's cache): the release has the kernel drop them, so readers wait.
    fs.release_data(f, 0, 1 << 20, v).unwrap();
    for sig in [Signal::SIGINT, Signal::SIGKILL] {
        let mut r = cat(&mnt.join("f"));
        eventually("the reader waits", || !fs.data_waiting(0, 0, 10).is_empty());
        let start = Instant::now();
        kill(Pid::from_raw(r.id() as i32), sig).unwrap();
        let status = r.wait().unwrap();
        assert!(!status.success(), "{sig}: {status}");
        assert!(start.elapsed() < Duration::from_secs(5), "{sig}: slow");
        eventually("the waiter is withdrawn", || {
            fs.data_waiting(0, 0, 10).is_empty()
        });
    }

    drop(fs);
    m.finish();
}
