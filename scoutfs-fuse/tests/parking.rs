//! Requests that wait for offline data, through a real FUSE mount of an in-memory volume
//! served by this process: readers of a released file wait (more of them than the mount
//! has request threads) while other requests are answered, staging completes them with
//! the file's bytes, and a signal to a waiting reader ends its read at once.
//!
//! Mounting needs root and `/dev/fuse`; without them the test says it is skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use nix::fcntl::{posix_fadvise, PosixFadviseAdvice};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use scoutfs_core::device::{BlockDevice, MemDevice};
use scoutfs_core::fs::{Creds, Fs, FsOptions, ROOT_INO};
use scoutfs_core::volume::{mkfs, MkfsOptions};
use scoutfs_fuse::ServeOptions;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn skip(why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {}: {why}",
        thread::current().name().unwrap_or("a parking test")
    );
}

/// Unmounts (lazily) when dropped, so a failed test leaves no mount behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "timed out: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

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
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root || !Path::new("/dev/fuse").exists() {
        skip("not root, or no /dev/fuse: nothing checked");
        return;
    }
    let meta: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(64 << 20));
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(16 << 20));
    let mk = MkfsOptions {
        meta_block_size: 4096,
        ..Default::default()
    };
    mkfs(&meta, &data, &mk).unwrap();
    let opts = FsOptions {
        lookup_counts: true,
        ..FsOptions::default()
    };
    let fs = Arc::new(Fs::mount_single(meta, data, opts).unwrap());
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

    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().canonicalize().unwrap().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let serve = ServeOptions {
        threads: 2,
        ..ServeOptions::default()
    };
    let mounted = match scoutfs_fuse::mount(fs.clone(), &mnt, &serve) {
        Ok(m) => m,
        Err(e) => {
            skip(&format!("cannot mount FUSE here ({e}): nothing checked"));
            return;
        }
    };
    let guard = Unmount(mnt.clone());
    let server = thread::spawn(move || mounted.run());

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
    // behind the kernel's back: the daemon's control path (`scoutfs release`) drops the
    // kernel's cached pages of the file, a core call does not, so the test drops them
    // (files are opened keeping the kernel's cache).
    fs.release_data(f, 0, 1 << 20, v).unwrap();
    let cached = std::fs::File::open(mnt.join("f")).unwrap();
    posix_fadvise(&cached, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).unwrap();
    drop(cached);
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

    drop(guard);
    server.join().unwrap().unwrap();
    let fs = Arc::try_unwrap(fs).expect("the mount let go of the filesystem");
    fs.unmount().unwrap();
}
