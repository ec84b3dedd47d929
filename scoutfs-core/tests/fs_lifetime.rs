#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Inode lifetime: an unlinked inode lives until its last open handle and its last
//! counted reference ([`FsOptions::lookup_counts`], a kernel's lookup counts) are gone,
//! in whichever order they go, and a crash meanwhile is finished by the next mount.

mod common;

use common::{assert_fs_clean, volume_of};
use scoutfs_core::device::BlockDevice;
use scoutfs_core::fs::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};

fn counting(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>) -> Fs {
    let opts = FsOptions {
        lookup_counts: true,
        seed: Some(7),
        ..FsOptions::default()
    };
    Fs::mount_single(meta.clone(), data.clone(), opts).unwrap()
}

fn gone(fs: &Fs, ino: u64) -> bool {
    matches!(fs.getattr(ino), Err(FsError::NotFound))
}

/// Free data blocks once deletions are committed and merged (two syncs, as in
/// `fs_basic`'s orphan test: the second hands the first's frees back).
fn free_blocks(fs: &Fs) -> u64 {
    fs.sync().unwrap();
    fs.sync().unwrap();
    fs.statfs().unwrap().bfree
}

#[test]
fn calls_that_hand_out_entries_count_references() {
    let (meta, data) = volume_of(32, 16, 4096);
    let fs = counting(&meta, &data);
    let f = fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap().ino;
    assert_eq!(fs.lookup_count(f), 1, "create");
    fs.lookup(ROOT_INO, b"f").unwrap();
    assert_eq!(fs.lookup_count(f), 2, "lookup");
    fs.link(f, ROOT_INO, b"g").unwrap();
    assert_eq!(fs.lookup_count(f), 3, "link");
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap().ino;
    let s = fs.symlink(ROOT_INO, b"s", b"f", C).unwrap().ino;
    assert_eq!((fs.lookup_count(d), fs.lookup_count(s)), (1, 1));
    // A failed lookup and a negative one count nothing.
    assert!(fs.lookup(ROOT_INO, b"nothing").is_err());
    // readdir_plus: every entry taken but "." and ".." (the root itself is not counted
    // for them); an entry the callback refuses is not counted.
    let root0 = fs.lookup_count(ROOT_INO);
    let mut seen = Vec::new();
    fs.readdir_plus(ROOT_INO, 0, &mut |e, _| {
        seen.push(e.name.clone());
        e.name != b"s"
    })
    .unwrap();
    assert!(seen.contains(&b"s".to_vec()));
    assert_eq!(fs.lookup_count(ROOT_INO), root0, ". and ..");
    assert_eq!(fs.lookup_count(s), 1, "the refused entry");
    assert_eq!(fs.lookup_count(d), 2);
    // f is listed once or twice (two names) depending on where the buffer stopped.
    assert!(fs.lookup_count(f) >= 4);
    // Forgetting more than was counted forgets all; unknown inodes are ignored.
    fs.forget(f, u64::MAX).unwrap();
    fs.forget(123_456, 3).unwrap();
    fs.forget_many(&[(d, 1), (s, 1)]).unwrap();
    assert_eq!(
        (fs.lookup_count(f), fs.lookup_count(d), fs.lookup_count(s)),
        (0, 1, 0)
    );
    // Nothing is deleted by forgetting an inode that has links.
    assert!(!gone(&fs, f) && !gone(&fs, d) && !gone(&fs, s));
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "after counting");
}

#[test]
fn an_unlinked_inode_goes_when_both_opens_and_references_are_gone() {
    let (meta, data) = volume_of(32, 64, 4096);
    let fs = counting(&meta, &data);
    let free0 = free_blocks(&fs);
    for release_first in [true, false] {
        let f = fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap().ino;
        fs.write(f, 0, &vec![5u8; 1 << 20]).unwrap();
        fs.open(f).unwrap();
        fs.unlink(ROOT_INO, b"f").unwrap();
        assert_eq!(fs.getattr(f).unwrap().nlink, 0);
        assert!(fs.lookup(ROOT_INO, b"f").is_err());
        if release_first {
            fs.release(f).unwrap();
            // Still referenced: the kernel may open it again through its dentry.
            assert_eq!(fs.read(f, 10, 2).unwrap(), vec![5, 5]);
            fs.open(f).unwrap();
            fs.release(f).unwrap();
            assert!(!gone(&fs, f), "released but referenced");
            fs.forget(f, 1).unwrap();
        } else {
            fs.forget(f, 1).unwrap();
            assert_eq!(fs.read(f, 10, 2).unwrap(), vec![5, 5]);
            assert!(!gone(&fs, f), "forgotten but open");
            fs.release(f).unwrap();
        }
        assert!(gone(&fs, f), "release_first {release_first}");
        assert_eq!(free_blocks(&fs), free0, "release_first {release_first}");
    }
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "after both orders");
}

#[test]
fn rename_over_and_rmdir_keep_referenced_targets_until_forgotten() {
    let (meta, data) = volume_of(32, 16, 4096);
    let fs = counting(&meta, &data);
    let a = fs.mknod(ROOT_INO, b"a", 0o100644, 0, C).unwrap().ino;
    let b = fs.mknod(ROOT_INO, b"b", 0o100644, 0, C).unwrap().ino;
    fs.write(b, 0, b"old").unwrap();
    fs.rename(ROOT_INO, b"a", ROOT_INO, b"b", RenameFlags::default())
        .unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"b").unwrap().ino, a);
    // The replaced inode: unlinked, still there for whoever holds it.
    assert_eq!(fs.getattr(b).unwrap().nlink, 0);
    fs.open(b).unwrap();
    assert_eq!(fs.read(b, 0, 3).unwrap(), b"old");
    fs.release(b).unwrap();
    fs.forget(b, 1).unwrap();
    assert!(gone(&fs, b));

    let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap().ino;
    fs.rmdir(ROOT_INO, b"d").unwrap();
    assert_eq!(fs.getattr(d).unwrap().nlink, 0);
    fs.forget(d, 1).unwrap();
    assert!(gone(&fs, d));
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "after rename and rmdir");
}

#[test]
fn without_lookup_counts_an_inode_goes_at_its_last_link_or_release() {
    let (meta, data) = volume_of(32, 16, 4096);
    let fs = Fs::mount_single(meta.clone(), data.clone(), FsOptions::default()).unwrap();
    let f = fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap().ino;
    fs.lookup(ROOT_INO, b"f").unwrap();
    assert_eq!(fs.lookup_count(f), 0);
    fs.unlink(ROOT_INO, b"f").unwrap();
    assert!(gone(&fs, f), "no opens: deleted with its last link");
    let g = fs.mknod(ROOT_INO, b"g", 0o100644, 0, C).unwrap().ino;
    fs.open(g).unwrap();
    fs.unlink(ROOT_INO, b"g").unwrap();
    fs.forget(g, 1).unwrap();
    assert!(!gone(&fs, g), "forget means nothing without lookup_counts");
    fs.release(g).unwrap();
    assert!(gone(&fs, g));
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "without counting");
}

#[test]
fn a_crash_or_an_unmount_with_a_referenced_unlinked_inode_is_finished_by_the_next_mount() {
    let (meta, data) = volume_of(32, 64, 4096);
    let fs = counting(&meta, &data);
    let free0 = free_blocks(&fs);
    let f = fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap().ino;
    fs.write(f, 0, &vec![9u8; 1 << 20]).unwrap();
    fs.unlink(ROOT_INO, b"f").unwrap();
    assert_eq!(fs.getattr(f).unwrap().nlink, 0, "referenced: an orphan");
    fs.sync().unwrap();
    // Crash: the mount goes away holding its reference.
    drop(fs);
    let fs = counting(&meta, &data);
    assert!(gone(&fs, f), "the next mount deletes the orphan");
    assert_eq!(free_blocks(&fs), free0, "and frees its data");

    // An unmount while the kernel still holds an unlinked inode (an unmount forgets
    // nothing by itself): the orphan stays for the next mount, which deletes it.
    let g = fs.mknod(ROOT_INO, b"g", 0o100644, 0, C).unwrap().ino;
    fs.write(g, 0, &vec![3u8; 1 << 20]).unwrap();
    fs.open(g).unwrap();
    fs.unlink(ROOT_INO, b"g").unwrap();
    fs.unmount().unwrap();
    let fs = counting(&meta, &data);
    assert!(gone(&fs, g));
    assert_eq!(free_blocks(&fs), free0);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "after the orphans were finished");
}

/// The race of a kernel's name cache against rename-over: one thread replaces `f` again
/// and again (create `tmp`, rename it over `f`, forget its reference, as the kernel does
/// when it drops the old dentry), another looks `f` up and opens the inode it was given,
/// as the kernel does for `open(2)`. With references counted, the open never finds the
/// inode deleted.
#[test]
fn an_inode_looked_up_is_never_deleted_before_it_is_opened() {
    let (meta, data) = volume_of(64, 16, 4096);
    let fs = Arc::new(counting(&meta, &data));
    let first = fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap().ino;
    let stop = Arc::new(AtomicBool::new(false));
    let replacer = {
        let (fs, stop) = (fs.clone(), stop.clone());
        std::thread::spawn(move || {
            // The reference of the create that made what `f` names now.
            let mut held = first;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 1000 {
                let t = fs.mknod(ROOT_INO, b"tmp", 0o100644, 0, C).unwrap().ino;
                fs.rename(ROOT_INO, b"tmp", ROOT_INO, b"f", RenameFlags::default())
                    .unwrap();
                // The kernel drops the replaced inode's dentry: its reference goes.
                fs.forget(held, 1).unwrap();
                held = t;
                n += 1;
            }
            n
        })
    };
    let mut opens = 0u64;
    while !replacer.is_finished() {
        let a = fs.lookup(ROOT_INO, b"f").unwrap();
        fs.open(a.ino)
            .unwrap_or_else(|e| panic!("open of {} looked up as f: {e}", a.ino));
        fs.release(a.ino).unwrap();
        fs.forget(a.ino, 1).unwrap();
        opens += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let n = replacer.join().unwrap();
    assert!(opens > 0 && n > 0, "{opens} opens, {n} replacements");
    // Forget what is left; every replaced inode is gone then.
    let f = fs.lookup(ROOT_INO, b"f").unwrap().ino;
    let fs = Arc::try_unwrap(fs).unwrap();
    fs.forget(f, u64::MAX).unwrap();
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "after the race");
}

/// A kernel cache that records what it is told.
#[derive(Debug, Default)]
struct Told(std::sync::Mutex<Vec<(u64, u64, bool)>>);

impl KernelCache for Told {
    fn invalidate(&self, first_ino: u64, last_ino: u64, data: bool) {
        self.0.lock().unwrap().push((first_ino, last_ino, data));
    }
}

#[test]
fn the_kernel_cache_hears_of_changes_behind_its_back_and_knows_what_it_holds() {
    let (meta, data) = volume_of(32, 16, 4096);
    let fs = counting(&meta, &data);
    let f = fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap().ino;
    fs.write(f, 0, &[5u8; 8192]).unwrap();
    let g = fs.mknod(ROOT_INO, b"g", 0o100644, 0, C).unwrap().ino;
    // Nothing to tell yet: no cache.
    fs.invalidate_kernel(0, u64::MAX, true);
    let told = Arc::new(Told::default());
    fs.set_kernel_cache(told.clone());
    let v = fs.stat_more(f).unwrap().data_version;
    fs.release_data(f, 0, 8192, v).unwrap();
    fs.stage(f, 0, &[5u8; 8192], v).unwrap();
    let set = SetAttrMore {
        data_version: 9,
        size: 4096,
        offline: true,
        ..SetAttrMore::default()
    };
    fs.setattr_more(g, &set).unwrap();
    fs.invalidate_kernel(1, 1023, false);
    assert_eq!(
        *told.0.lock().unwrap(),
        vec![(f, f, true), (f, f, false), (g, g, true), (1, 1023, false)]
    );
    // What the kernel may hold: the inodes it was handed entries of, in the range asked.
    assert_eq!(fs.referenced_inodes(0, u64::MAX), vec![f, g]);
    assert_eq!(fs.referenced_inodes(g, g), vec![g]);
    assert!(fs.referenced_inodes(g + 1, u64::MAX).is_empty());
    assert!(fs.referenced_inodes(5, 4).is_empty());
    fs.forget(f, 1).unwrap();
    assert_eq!(fs.referenced_inodes(0, u64::MAX), vec![g]);
    fs.unmount().unwrap();
}
