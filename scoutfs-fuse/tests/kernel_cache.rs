//! The kernel's caches through a real FUSE mount served by this process, changed behind
//! the kernel's back through the `Fs` (as another mount's changes are, once this mount
//! loses its lock): without `Fs::invalidate_kernel` the kernel shows what it cached, with
//! it the change at once — attributes, pages, positive and negative entries — and a storm
//! of invalidations among many kernel requests ends in bounded time.
//!
//! Mounting needs root and `/dev/fuse`; without them the tests say they are skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use scoutfs_core::fs::{Creds, RenameFlags, SetAttr, XattrSet, ROOT_INO};
use scoutfs_fuse::ServeOptions;
use std::io::ErrorKind;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

fn absent(p: &Path) -> bool {
    matches!(std::fs::metadata(p), Err(e) if e.kind() == ErrorKind::NotFound)
}

fn pread(f: &std::fs::File, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len + 16];
    let n = f.read_at(&mut buf, 0).unwrap();
    buf.truncate(n);
    buf
}

/// The inode group (the original's lock range) of `ino`.
fn group(ino: u64) -> (u64, u64) {
    (ino & !1023, ino | 1023)
}

#[test]
fn changes_behind_the_kernel_are_seen_once_invalidated() {
    let fs = support::volume();
    let c = Creds::default();
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, c).unwrap().ino;
    let f = fs.mknod(d, b"f", 0o100644, 0, c).unwrap().ino;
    fs.write(f, 0, b"old contents").unwrap();
    let gone = fs.mknod(d, b"gone", 0o100644, 0, c).unwrap().ino;
    assert!(group(d) == group(f) && group(f) == group(gone));
    let Some(m) = support::serve(fs.clone(), &ServeOptions::default()) else {
        return;
    };

    // The kernel caches a file's attributes, pages and entry, another entry, and a
    // negative entry.
    let file = std::fs::File::open(m.path("d/f")).unwrap();
    assert_eq!(pread(&file, 12), b"old contents");
    let before = std::fs::metadata(m.path("d/f")).unwrap();
    assert!(std::fs::metadata(m.path("d/gone")).is_ok());
    assert!(absent(&m.path("d/absent")));

    // Behind its back.
    thread::sleep(Duration::from_millis(20)); // a ctime the kernel cannot have
    fs.write(f, 0, b"new contents").unwrap();
    fs.setxattr(f, b"user.k", b"v", XattrSet::Any).unwrap();
    fs.rename(d, b"f", d, b"moved", RenameFlags::default())
        .unwrap();
    fs.unlink(d, b"gone").unwrap();
    fs.mknod(d, b"absent", 0o100644, 0, c).unwrap();

    // Not told, the kernel shows what it cached (long timeouts): what the test relies
    // on to fail.
    assert_eq!(pread(&file, 12), b"old contents");
    let stale = std::fs::metadata(m.path("d/f")).expect("the cached entry");
    assert_eq!(
        (stale.ino(), stale.ctime(), stale.ctime_nsec()),
        (before.ino(), before.ctime(), before.ctime_nsec())
    );
    assert!(std::fs::metadata(m.path("d/gone")).is_ok());
    assert!(absent(&m.path("d/absent")));

    let (first, last) = group(d);
    let start = Instant::now();
    fs.invalidate_kernel(first, last, true);
    let took = start.elapsed();

    // Told: the change at once.
    assert!(absent(&m.path("d/f")), "a renamed name stays");
    let now = std::fs::metadata(m.path("d/moved")).unwrap();
    assert_eq!(now.ino(), before.ino());
    assert!(
        (now.ctime(), now.ctime_nsec()) > (before.ctime(), before.ctime_nsec()),
        "old attributes stay"
    );
    assert_eq!(pread(&file, 12), b"new contents", "old pages stay");
    assert!(absent(&m.path("d/gone")), "an unlinked name stays");
    assert!(
        std::fs::metadata(m.path("d/absent")).is_ok(),
        "a negative entry stays"
    );
    assert!(
        took < Duration::from_secs(2),
        "the invalidation took {took:?}"
    );

    // A truncate behind its back: the size the open file sees, and its pages.
    assert_eq!(file.metadata().unwrap().len(), 12);
    let set = SetAttr {
        size: Some(3),
        ..SetAttr::default()
    };
    fs.setattr(f, &set).unwrap();
    assert_eq!(file.metadata().unwrap().len(), 12, "told nothing, it asks");
    fs.invalidate_kernel(f, f, true);
    assert_eq!(file.metadata().unwrap().len(), 3);
    assert_eq!(pread(&file, 12), b"new");

    drop(file);
    drop(fs);
    m.finish();
}

#[test]
fn an_invalidation_storm_among_kernel_requests_ends() {
    let fs = support::volume();
    let serve = ServeOptions {
        threads: 4,
        ..ServeOptions::default()
    };
    let Some(m) = support::serve(fs.clone(), &serve) else {
        return;
    };
    let secs: u64 = std::env::var("SCOUTFS_STORM_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let dir = m.path(&format!("w{w}"));
            let (stop, ops) = (stop.clone(), ops.clone());
            std::fs::create_dir(&dir).unwrap();
            thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let p = dir.join(format!("f{}", i % 8));
                    std::fs::write(&p, i.to_le_bytes()).unwrap();
                    assert_eq!(std::fs::read(&p).unwrap(), i.to_le_bytes());
                    assert!(absent(&dir.join(format!("none{}", i % 16))));
                    assert!(std::fs::read_dir(&dir).unwrap().count() <= 8);
                    if i.is_multiple_of(3) {
                        std::fs::remove_file(&p).unwrap();
                    }
                    i += 1;
                    ops.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let end = Instant::now() + Duration::from_secs(secs);
    let (mut n, mut slowest) = (0u64, Duration::ZERO);
    while Instant::now() < end {
        let t = Instant::now();
        fs.invalidate_kernel(0, u64::MAX, n.is_multiple_of(2));
        slowest = slowest.max(t.elapsed());
        n += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("a worker");
    }
    eprintln!(
        "{n} invalidations among {} workers' rounds, the slowest {slowest:?}",
        ops.load(Ordering::Relaxed)
    );
    assert!(n > 10 && ops.load(Ordering::Relaxed) > 10);
    // No invalidation waited for the bound: none was stuck behind a request.
    assert!(
        slowest < scoutfs_fuse::kcache::NOTIFY_BOUND,
        "an invalidation took {slowest:?}"
    );
    drop(fs);
    m.finish();
}

#[test]
fn an_invalidation_the_kernel_cannot_take_goes_on_after_the_bound() {
    let fs = support::volume();
    let c = Creds::default();
    let f = fs.mknod(ROOT_INO, b"f", 0o100644, 0, c).unwrap().ino;
    let bytes = vec![7u8; 64 << 10];
    fs.write(f, 0, &bytes).unwrap();
    let v = fs.stat_more(f).unwrap().data_version;
    fs.release_data(f, 0, 64 << 10, v).unwrap();
    let bound = Duration::from_millis(300);
    let serve = ServeOptions {
        notify_timeout: bound,
        ..ServeOptions::default()
    };
    let Some(m) = support::serve(fs.clone(), &serve) else {
        return;
    };
    // A reader parked on the offline file holds its pages locked until it is answered:
    // dropping them waits for it.
    let path = m.path("f");
    let reader = thread::spawn(move || std::fs::read(path).unwrap());
    support::eventually("the reader waits", || {
        fs.data_waiting(0, 0, 10).iter().any(|w| w.ino == f)
    });
    let start = Instant::now();
    fs.invalidate_kernel(f, f, true);
    let took = start.elapsed();
    assert!(
        took >= bound && took < bound * 10,
        "the invalidation took {took:?}, not the bound"
    );
    // Attributes are not behind the pages: another invalidation of them is prompt
    // (the other notification thread writes it).
    let start = Instant::now();
    fs.invalidate_kernel(f, f, false);
    assert!(start.elapsed() < bound, "attributes waited for pages");
    // Staged, the reader is answered and the stuck notification goes through.
    fs.stage(f, 0, &bytes, v).unwrap();
    assert_eq!(reader.join().unwrap(), bytes);
    let start = Instant::now();
    fs.invalidate_kernel(f, f, true);
    assert!(start.elapsed() < bound, "the kernel stays stuck");
    drop(fs);
    m.finish();
}
