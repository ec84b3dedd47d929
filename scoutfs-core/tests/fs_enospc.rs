#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Freeing space as a mount daemon lives it: nothing but the operations and the
//! periodic [`Fs::background_tick`] (no forced merges), with time moved by a clock the
//! test owns.

use scoutfs_core::check;
use scoutfs_core::device::{BlockDevice, MemDevice};
use scoutfs_core::fs::*;
use scoutfs_core::volume::{mkfs, MkfsOptions};
use std::sync::Arc;

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0o022,
};

/// Seconds between two ticks of the mount daemon (`scoutfs_fuse::SYNC_INTERVAL`).
const TICK: i64 = 10;

/// A clock the test moves.
#[derive(Debug, Default)]
struct TestClock(parking_lot::Mutex<Timespec>);

impl TestClock {
    fn advance(&self, secs: i64) {
        self.0.lock().sec += secs;
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timespec {
        *self.0.lock()
    }
}

struct Vol {
    meta: Arc<dyn BlockDevice>,
    data: Arc<dyn BlockDevice>,
    clock: Arc<TestClock>,
    fs: Fs,
}

/// A fresh volume of `meta_mb` of 4 KiB metadata blocks and `data_mb` of data.
fn volume_of(meta_mb: u64, data_mb: u64) -> Vol {
    let meta: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(meta_mb << 20));
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(data_mb << 20));
    mkfs(
        &meta,
        &data,
        &MkfsOptions {
            meta_block_size: 4096,
            ..Default::default()
        },
    )
    .unwrap();
    let clock = Arc::new(TestClock::default());
    clock.advance(1_700_000_000);
    let opts = FsOptions {
        clock: clock.clone(),
        ..Default::default()
    };
    let fs = Fs::mount_single(meta.clone(), data.clone(), opts).unwrap();
    Vol {
        meta,
        data,
        clock,
        fs,
    }
}

impl Vol {
    fn tick(&self) {
        self.clock.advance(TICK);
        self.fs.background_tick().unwrap();
    }

    /// A file `name` in the root with a `len`-byte xattr.
    fn xattr_file(&self, name: &str, len: usize) -> FsResult<()> {
        let a = self.fs.mknod(ROOT_INO, name.as_bytes(), 0o100644, 0, C)?;
        self.fs
            .setxattr(a.ino, b"user.big", &vec![b'x'; len], XattrSet::Any)
    }

    fn delete_all(&self, names: &[String]) {
        for n in names {
            self.fs.unlink(ROOT_INO, n.as_bytes()).unwrap();
        }
    }

    fn unmount_and_check(self) {
        self.fs.unmount().unwrap();
        let r = check::check(&self.meta, &self.data).unwrap();
        assert!(r.is_clean(), "{:#?}", r.problems);
    }
}

#[test]
fn a_tick_does_the_merge_work_there_is() {
    // Files all over the filesystem root, then all deleted: a tall tree of deletions
    // whose merge touches every subtree of the root (43 units of merge work here, where
    // a tick used to do 16). A tick finishes what it finds.
    let v = volume_of(64, 64);
    let names: Vec<String> = (0..4000).map(|i| format!("f{i}")).collect();
    for n in &names {
        v.xattr_file(n, 2000).unwrap();
    }
    v.fs.merge_all().unwrap();
    v.delete_all(&names);
    for t in 0..2 {
        v.tick();
        assert_eq!(
            v.fs.merge_work(1).unwrap(),
            0,
            "merge work left after tick {t}"
        );
    }
    v.unmount_and_check();
}
