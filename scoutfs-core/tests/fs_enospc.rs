#![allow(clippy::unwrap_used, clippy::expect_used)]
//! ENOSPC and recovery as a mount daemon lives them: nothing but the operations and the
//! periodic [`Fs::background_tick`] (no forced merges), with time moved by a clock the
//! test owns. Metadata is filled to ENOSPC with large xattrs (and data too), every file is
//! deleted, and within a minute of ticks creates and writes must succeed again and
//! statfs must show the space back -- the in-process twin of
//! `.ci/mount-tests/enospc.sh`.

mod common;

use common::{assert_fs_clean, TestClock};

use scoutfs_core::device::BlockDevice;
use scoutfs_core::fs::*;
use std::sync::Arc;

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0o022,
};

/// Seconds between two ticks of the mount daemon (`scoutfs_fuse::SYNC_INTERVAL`).
const TICK: i64 = 10;

struct Vol {
    meta: Arc<dyn BlockDevice>,
    data: Arc<dyn BlockDevice>,
    clock: Arc<TestClock>,
    fs: Fs,
    /// statfs of the fresh mount.
    fresh: StatFs,
}

/// A fresh volume of 4,096 metadata blocks of 4 KiB (as many blocks as 256M of 64 KiB
/// blocks, so the allocators have the sizes they have there) and `data_mb` of data.
fn volume(data_mb: u64) -> Vol {
    volume_of(16, data_mb)
}

fn volume_of(meta_mb: u64, data_mb: u64) -> Vol {
    let (meta, data) = common::volume_of(meta_mb, data_mb, 4096);
    let clock = Arc::new(TestClock::default());
    clock.advance(1_700_000_000);
    let opts = FsOptions {
        clock: clock.clone(),
        ..Default::default()
    };
    let fs = Fs::mount_single(meta.clone(), data.clone(), opts).unwrap();
    let fresh = fs.statfs().unwrap();
    Vol {
        meta,
        data,
        clock,
        fs,
        fresh,
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

    /// Files with `len`-byte xattrs until ENOSPC (a tick every `per_tick` files); returns
    /// their names, with the file whose xattr failed, if it was made.
    fn fill_xattrs(&self, prefix: &str, len: usize, per_tick: usize) -> Vec<String> {
        let mut names = Vec::new();
        loop {
            let name = format!("{prefix}{}", names.len());
            let r = self.xattr_file(&name, len);
            if self.fs.lookup(ROOT_INO, name.as_bytes()).is_ok() {
                names.push(name);
            }
            match r {
                Ok(()) => {}
                Err(e) if e.errno() == 28 => return names,
                Err(e) => panic!("file {}: {e}", names.len()),
            }
            assert!(names.len() < 100_000, "never ran out of metadata space");
            if names.len() % per_tick == 0 {
                self.tick();
            }
        }
    }

    /// Files of `mb` MiB until ENOSPC; returns their names (the last one short).
    fn fill_data(&self, mb: usize) -> Vec<String> {
        let chunk = vec![7u8; 1 << 20];
        let mut names = Vec::new();
        loop {
            let name = format!("d{}", names.len());
            let a = self
                .fs
                .mknod(ROOT_INO, name.as_bytes(), 0o100644, 0, C)
                .unwrap();
            names.push(name);
            for i in 0..mb {
                match self.fs.write(a.ino, (i << 20) as u64, &chunk) {
                    Ok(n) if n as usize == chunk.len() => {}
                    Ok(_) => return names,
                    Err(e) if e.errno() == 28 => return names,
                    Err(e) => panic!("write: {e}"),
                }
            }
            self.tick();
        }
    }

    fn delete_all(&self, names: &[String]) {
        for n in names {
            self.fs.unlink(ROOT_INO, n.as_bytes()).unwrap();
        }
    }

    /// Ticks (up to a minute's) until `ok` holds; the ticks it took.
    fn ticks_until(&self, what: &str, mut ok: impl FnMut(&Vol) -> bool) -> i64 {
        for t in 0..=60 / TICK {
            if ok(self) {
                eprintln!("{what}: after {t} ticks");
                return t;
            }
            self.tick();
        }
        let s = self.fs.statfs().unwrap();
        panic!(
            "{what}: not within a minute of ticks after every file was deleted ({s:?}, fresh {:?})",
            self.fresh
        );
    }

    fn unmount_and_check(self) {
        self.fs.unmount().unwrap();
        assert_fs_clean(&self.meta, &self.data, "after the unmount");
    }
}

/// 90% of what was free on the fresh mount is free again.
fn back(now: u64, fresh: u64) -> bool {
    now * 10 >= fresh * 9
}

#[test]
fn metadata_enospc_recovers_within_a_minute_of_ticks() {
    let v = volume(64);
    let fresh = v.fresh;
    let names = v.fill_xattrs("x", 16 << 10, 50);
    assert!(names.len() > 50, "{}", names.len());
    v.delete_all(&names);
    let mut n = 0;
    v.ticks_until("a file with a 16 KiB xattr", |v| {
        n += 1;
        let name = format!("again{n}");
        let ok = v.xattr_file(&name, 16 << 10).is_ok();
        let _ = v.fs.unlink(ROOT_INO, name.as_bytes());
        ok
    });
    v.ticks_until("the metadata space back in statfs", |v| {
        back(v.fs.statfs().unwrap().ffree, fresh.ffree)
    });
    // And the volume holds as much again.
    let again = v.fill_xattrs("y", 16 << 10, 50);
    assert!(
        again.len() * 10 >= names.len() * 9,
        "{} files the second time, {} the first",
        again.len(),
        names.len()
    );
    v.delete_all(&again);
    v.unmount_and_check();
}

#[test]
fn data_and_metadata_enospc_recover_within_a_minute_of_ticks() {
    let v = volume(32);
    let fresh = v.fresh;
    let data = v.fill_data(4);
    assert!(v.fs.statfs().unwrap().bfree < fresh.bfree / 10);
    let names = v.fill_xattrs("x", 16 << 10, 50);
    v.delete_all(&data);
    v.delete_all(&names);
    v.ticks_until("a file with a 16 KiB xattr", |v| {
        let ok = v.xattr_file("again", 16 << 10).is_ok();
        let _ = v.fs.unlink(ROOT_INO, b"again");
        ok
    });
    // Half the data device written again.
    let half = (fresh.bfree * 4096 / 2) as usize;
    v.ticks_until("half the data device written again", |v| {
        let Ok(a) = v.fs.mknod(ROOT_INO, b"data", 0o100644, 0, C) else {
            return false;
        };
        let chunk = vec![1u8; 1 << 20];
        let mut ok = true;
        for off in (0..half).step_by(chunk.len()) {
            if !matches!(v.fs.write(a.ino, off as u64, &chunk), Ok(n) if n as usize == chunk.len())
            {
                ok = false;
                break;
            }
        }
        v.fs.unlink(ROOT_INO, b"data").unwrap();
        ok
    });
    v.ticks_until("the data and metadata space back in statfs", |v| {
        let s = v.fs.statfs().unwrap();
        back(s.ffree, fresh.ffree) && back(s.bfree, fresh.bfree)
    });
    v.unmount_and_check();
}

#[test]
fn a_low_mount_with_nothing_to_commit_asks_the_server_again() {
    let v = volume(64);
    let names = v.fill_xattrs("x", 16 << 10, 50);
    // No merge left running: the deletes' commit below finalizes their tree.
    while v.fs.merge_work(64).unwrap() > 0 {}
    v.delete_all(&names);
    // The deletes are committed while the volume is still short of space: the mount's
    // next transaction is marked LOW. Then they are merged without the mount committing
    // again: the space is back on the server's side, and the mount has nothing to commit.
    v.fs.sync().unwrap();
    while v.fs.merge_work(64).unwrap() > 0 {}
    assert!(
        back(v.fs.statfs().unwrap().ffree, v.fresh.ffree),
        "setup: the deletes were not merged by merge work alone"
    );
    // A second later, the next create asks the server again instead of refusing on the
    // old answer.
    v.clock.advance(1);
    v.xattr_file("again", 16 << 10).unwrap();
    v.unmount_and_check();
}

#[test]
fn deletions_reach_the_root_once_the_mount_is_idle() {
    let v = volume(64);
    // Items of the largest values (xattr parts), whose deletion items are small: a
    // tenth of the volume, freed by a tree of deletions two levels high.
    let names: Vec<String> = (0..120).map(|i| format!("f{i}")).collect();
    for n in &names {
        v.xattr_file(n, 16 << 10).unwrap();
    }
    // In the filesystem root, as if merged long ago.
    v.fs.merge_all().unwrap();
    let full = v.fs.statfs().unwrap().ffree;
    let used = v.fresh.ffree - full;
    assert!(used * 10 > v.fresh.ffree, "{used} of {}", v.fresh.ffree);
    // Far from ENOSPC: the mount is never told LOW, and the tree of deletions stays small.
    v.delete_all(&names);
    v.ticks_until("the space of the deleted files back", |v| {
        v.fs.statfs().unwrap().ffree * 10 >= v.fresh.ffree * 10 - used
    });
    v.unmount_and_check();
}

#[test]
fn a_tick_does_the_merge_work_there_is() {
    // Files all over the filesystem root, then all deleted: a tall tree of deletions
    // whose merge touches every subtree of the root (43 units of merge work here, where
    // a tick used to do 16). A tick finishes what it finds,
    // and the next one shows the space back.
    let v = volume_of(64, 64);
    let names: Vec<String> = (0..4000).map(|i| format!("f{i}")).collect();
    for n in &names {
        v.xattr_file(n, 2000).unwrap();
    }
    v.fs.merge_all().unwrap();
    let full = v.fs.statfs().unwrap().ffree;
    v.delete_all(&names);
    for t in 0..2 {
        v.tick();
        assert_eq!(
            v.fs.merge_work(1).unwrap(),
            0,
            "merge work left after tick {t}"
        );
    }
    v.tick();
    let s = v.fs.statfs().unwrap();
    assert!(
        s.ffree * 10 >= v.fresh.ffree * 10 - (v.fresh.ffree - full),
        "{s:?}, fresh {:?}",
        v.fresh
    );
    v.unmount_and_check();
}

// Two reproductions of causes inside the server (issue 12), deterministic and quick.

/// 8,192 blocks of 4 KiB, 60,000-byte xattrs (60 items each), a tick every 50 files. The
/// merge of the last finalized tree of creations starts at ENOSPC; before the merge kept a
/// reserve and trimmed its inputs as it spliced, it stalled with the server's pool at ~270
/// blocks (`take_pool_blocks` kept `server_list_target / 2` and wanted 24 more) while the
/// LOW mount held ~250 blocks in its list; the tree of deletions waited for that merge,
/// and nothing changed in 2,000 ticks.
#[test]
fn the_merge_finishes_after_enospc_in_mid_merge() {
    let v = volume_of(32, 64);
    let names = v.fill_xattrs("x", 60000, 50);
    v.delete_all(&names);
    let mut n = 0;
    v.ticks_until("a file with a 60,000-byte xattr", |v| {
        n += 1;
        let name = format!("again{n}");
        let ok = v.xattr_file(&name, 60000).is_ok();
        let _ = v.fs.unlink(ROOT_INO, name.as_bytes());
        ok
    });
    v.ticks_until("the metadata space back in statfs", |v| {
        back(v.fs.statfs().unwrap().ffree, v.fresh.ffree)
    });
    v.unmount_and_check();
}

/// 16,384 blocks of 4 KiB, 60,000-byte xattrs, a tick every 200 files: ENOSPC after 401
/// files; the deletes, committed as they go, take blocks for their tree. Before a LOW
/// mount short of space did merge work and refused a change it could not write, the
/// 144th unlink's commit ran the mount's list dry (an allocator ENOSPC inside the commit)
/// and poisoned the mount, so every later change and sync failed and the deletes were
/// lost.
#[test]
fn unlinks_at_enospc_never_poison_the_mount() {
    let v = volume_of(64, 64);
    let names = v.fill_xattrs("x", 60000, 200);
    for (i, n) in names.iter().enumerate() {
        if let Err(e) = v.fs.unlink(ROOT_INO, n.as_bytes()) {
            panic!("unlink {i} of {}: {e}", names.len());
        }
    }
    v.ticks_until("a file with a 60,000-byte xattr", |v| {
        let ok = v.xattr_file("again", 60000).is_ok();
        let _ = v.fs.unlink(ROOT_INO, b"again");
        ok
    });
    v.unmount_and_check();
}
