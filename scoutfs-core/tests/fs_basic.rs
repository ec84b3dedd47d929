#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The filesystem API on fixed scenarios: large directories and files, orphans after a
//! crash, inode numbers, limits and errno, mount errors.

mod common;

use common::{assert_fs_clean, volume_of, TestClock};
use scoutfs_core::device::{BlockDevice, MemDevice};
use scoutfs_core::fs::*;
use std::collections::BTreeSet;
use std::sync::Arc;

const C: Creds = Creds {
    uid: 1000,
    gid: 100,
    umask: 0,
};

fn mount(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>) -> Fs {
    Fs::mount_single(meta.clone(), data.clone(), FsOptions::default()).unwrap()
}

fn list(fs: &Fs, dir: u64, batch: usize) -> Vec<DirEntry> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let mut n = 0;
        fs.readdir(dir, pos, &mut |e| {
            out.push(e.clone());
            pos = e.next_pos;
            n += 1;
            n < batch
        })
        .unwrap();
        if n == 0 {
            return out;
        }
    }
}

fn names(entries: &[DirEntry]) -> BTreeSet<Vec<u8>> {
    entries
        .iter()
        .filter(|e| e.name != b"." && e.name != b"..")
        .map(|e| e.name.clone())
        .collect()
}

#[test]
fn large_directory_lookup_readdir_unlink_and_remount() {
    let (meta, data) = volume_of(64, 16, 4096);
    let fs = mount(&meta, &data);
    let d = fs.mkdir(ROOT_INO, b"big", 0o755, C).unwrap().ino;
    let n = 2000;
    let mut inos = Vec::new();
    for i in 0..n {
        let a = fs
            .mknod(d, format!("file-{i:05}").as_bytes(), 0o100644, 0, C)
            .unwrap();
        assert_eq!((a.uid, a.gid, a.nlink), (1000, 100, 1));
        inos.push(a.ino);
    }
    // Inode numbers are unique and never the root's.
    assert_eq!(inos.iter().collect::<BTreeSet<_>>().len(), n);
    assert!(inos.iter().all(|&i| i >= 1024));
    let all = list(&fs, d, 97);
    assert_eq!(all.len(), n + 2);
    assert_eq!(names(&all).len(), n);
    for (i, ino) in inos.iter().enumerate().step_by(37) {
        let a = fs.lookup(d, format!("file-{i:05}").as_bytes()).unwrap();
        assert_eq!(a.ino, *ino);
    }
    assert_eq!(fs.lookup(d, b"file-99999").unwrap_err().errno(), 2);
    for i in (0..n).step_by(2) {
        fs.unlink(d, format!("file-{i:05}").as_bytes()).unwrap();
    }
    fs.merge_all().unwrap();
    fs.unmount().unwrap();
    let fs = mount(&meta, &data);
    let left = names(&list(&fs, d, 500));
    let want: BTreeSet<Vec<u8>> = (1..n)
        .step_by(2)
        .map(|i| format!("file-{i:05}").into_bytes())
        .collect();
    assert_eq!(left, want);
    assert_eq!(fs.rmdir(ROOT_INO, b"big").unwrap_err().errno(), 39);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

#[test]
fn large_sparse_file_write_truncate_fallocate() {
    let (meta, data) = volume_of(32, 64, 4096);
    let fs = mount(&meta, &data);
    let f = fs.mknod(ROOT_INO, b"f", 0o100600, 0, C).unwrap().ino;
    let chunk: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let mut want = Vec::new();
    for i in 0..24u64 {
        fs.write(f, i * chunk.len() as u64, &chunk).unwrap();
        want.extend_from_slice(&chunk);
    }
    let a = fs.getattr(f).unwrap();
    assert_eq!(a.size, want.len() as u64);
    assert_eq!(a.blocks, want.len() as u64 / 512);
    assert!(fs.read(f, 0, want.len() as u32).unwrap() == want);
    let got = fs.read(f, 1_000_003, 70_000).unwrap();
    assert!(got == want[1_000_003..1_070_003]);

    // Shrink into the middle of an extent: the tail of the last block is zeroed and
    // the blocks past it freed.
    let cut = 3 * 1024 * 1024 + 100;
    fs.setattr(
        f,
        &SetAttr {
            size: Some(cut),
            ..Default::default()
        },
    )
    .unwrap();
    want.truncate(cut as usize);
    let a = fs.getattr(f).unwrap();
    assert_eq!(a.blocks, cut.div_ceil(4096) * 8);
    // Extending makes a hole: zeros, including the rest of the old last block.
    fs.setattr(
        f,
        &SetAttr {
            size: Some(5 << 20),
            ..Default::default()
        },
    )
    .unwrap();
    want.resize(5 << 20, 0);
    assert_eq!(fs.getattr(f).unwrap().blocks, cut.div_ceil(4096) * 8);
    assert!(fs.read(f, 0, 6 << 20).unwrap() == want);

    // Unwritten extents read as zeros; writing into one converts only what is written.
    fs.fallocate(f, 6 << 20, 1 << 20, false).unwrap();
    want.resize(7 << 20, 0);
    fs.write(f, (6 << 20) + 5000, b"hello").unwrap();
    want[(6 << 20) + 5000..(6 << 20) + 5005].copy_from_slice(b"hello");
    fs.fallocate(f, 8 << 20, 1 << 20, true).unwrap();
    let a = fs.getattr(f).unwrap();
    assert_eq!(a.size, 7 << 20);
    assert_eq!(a.blocks, (cut.div_ceil(4096) + 512) * 8);
    assert!(fs.read(f, 0, 8 << 20).unwrap() == want);
    let before = fs.getattr(f).unwrap().data_version;
    fs.write(f, 0, b"x").unwrap();
    want[0] = b'x';
    assert!(fs.getattr(f).unwrap().data_version > before);

    fs.fsync(f, false).unwrap();
    fs.merge_all().unwrap();
    fs.unmount().unwrap();
    let fs = mount(&meta, &data);
    assert!(fs.read(f, 0, 8 << 20).unwrap() == want);
    fs.unlink(ROOT_INO, b"f").unwrap();
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

#[test]
fn orphans_live_while_open_and_go_after_a_crash() {
    let (meta, data) = volume_of(32, 64, 4096);
    let fs = mount(&meta, &data);
    fs.sync().unwrap();
    let free0 = fs.statfs().unwrap().bfree;
    let f = fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap().ino;
    fs.write(f, 0, &vec![7u8; 1 << 20]).unwrap();
    fs.open(f).unwrap();
    fs.unlink(ROOT_INO, b"f").unwrap();
    // Still readable through the open handle.
    assert_eq!(fs.getattr(f).unwrap().nlink, 0);
    assert_eq!(fs.read(f, 100, 3).unwrap(), vec![7, 7, 7]);
    assert_eq!(fs.lookup(ROOT_INO, b"f").unwrap_err().errno(), 2);
    // A second file released normally is deleted at once.
    let g = fs.mknod(ROOT_INO, b"g", 0o100644, 0, C).unwrap().ino;
    fs.open(g).unwrap();
    fs.unlink(ROOT_INO, b"g").unwrap();
    fs.release(g).unwrap();
    assert_eq!(fs.getattr(g).unwrap_err().errno(), 2);
    fs.sync().unwrap();
    // Crash: the mount goes away without releasing or unmounting.
    drop(fs);

    let fs = mount(&meta, &data);
    assert_eq!(fs.getattr(f).unwrap_err().errno(), 2);
    fs.sync().unwrap();
    fs.sync().unwrap();
    assert_eq!(
        fs.statfs().unwrap().bfree,
        free0,
        "the orphan's data is free again"
    );
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

#[test]
fn inode_numbers_are_never_reused() {
    let (meta, data) = volume_of(16, 16, 4096);
    let mut seen = BTreeSet::new();
    for _ in 0..3 {
        let fs = mount(&meta, &data);
        for i in 0..5 {
            let name = format!("n{i}");
            let a = fs.mknod(ROOT_INO, name.as_bytes(), 0o644, 0, C).unwrap();
            assert!(seen.insert(a.ino), "inode {} handed out twice", a.ino);
            fs.unlink(ROOT_INO, name.as_bytes()).unwrap();
        }
        fs.unmount().unwrap();
    }
}

#[test]
fn names_xattrs_symlinks_and_renames_give_the_right_errno() {
    let (meta, data) = volume_of(16, 16, 4096);
    let fs = mount(&meta, &data);
    let e = |r: FsResult<Attr>| r.unwrap_err().errno();
    assert_eq!(e(fs.mknod(ROOT_INO, &[b'x'; 256], 0o644, 0, C)), 36);
    assert_eq!(e(fs.mknod(ROOT_INO, b"a/b", 0o644, 0, C)), 22);
    assert_eq!(e(fs.mknod(ROOT_INO, b"", 0o644, 0, C)), 22);
    let long = fs.mknod(ROOT_INO, &[b'x'; 255], 0o644, 0, C).unwrap();
    assert_eq!(fs.lookup(ROOT_INO, &[b'x'; 255]).unwrap().ino, long.ino);
    assert_eq!(e(fs.mknod(ROOT_INO, &[b'x'; 255], 0o644, 0, C)), 17);

    // Symlinks: up to 4096 bytes, in chunks.
    let target: Vec<u8> = (0..4096).map(|i| b'a' + (i % 26) as u8).collect();
    let s = fs.symlink(ROOT_INO, b"s", &target, C).unwrap();
    assert_eq!((s.kind, s.size), (FileKind::Symlink, 4096));
    assert_eq!(fs.readlink(s.ino).unwrap(), target);
    assert_eq!(e(fs.symlink(ROOT_INO, b"t", &[b'a'; 4097], C)), 36);

    // Xattrs: names 1..=255 (ERANGE), values up to 64 KiB (E2BIG).
    let big: Vec<u8> = (0..65536).map(|i| (i * 7) as u8).collect();
    fs.setxattr(s.ino, b"user.big", &big, XattrSet::Create)
        .unwrap();
    assert_eq!(fs.getxattr(s.ino, b"user.big").unwrap(), big);
    let err = |r: FsResult<()>| r.unwrap_err().errno();
    assert_eq!(
        err(fs.setxattr(s.ino, b"user.big", b"v", XattrSet::Create)),
        17
    );
    assert_eq!(
        err(fs.setxattr(s.ino, b"user.no", b"v", XattrSet::Replace)),
        61
    );
    assert_eq!(
        err(fs.setxattr(s.ino, &[b'u'; 256], b"v", XattrSet::Any)),
        34
    );
    assert_eq!(
        err(fs
            .setxattr(s.ino, b"user.x", &big[..], XattrSet::Any)
            .and(fs.setxattr(s.ino, b"user.x", &[0; 65537], XattrSet::Any))),
        7
    );
    assert_eq!(fs.getxattr(s.ino, b"user.none").unwrap_err().errno(), 61);
    fs.setxattr(s.ino, b"scoutfs.hide.tag", b"", XattrSet::Any)
        .unwrap();
    // Tagged names: hidden ones are not listed (but read by name); malformed ones are
    // refused; a `scoutfs.` name too short to hold a tag is an ordinary name.
    assert_eq!(fs.getxattr(s.ino, b"scoutfs.hide.tag").unwrap(), b"");
    for bad in [&b"scoutfs.nope.x"[..], b"scoutfs.hide.hide.x"] {
        assert_eq!(err(fs.setxattr(s.ino, bad, b"", XattrSet::Any)), 22);
        assert_eq!(err(fs.removexattr(s.ino, bad)), 22);
    }
    fs.setxattr(s.ino, b"scoutfs.ab", b"v", XattrSet::Any)
        .unwrap();
    let mut names = fs.listxattr(s.ino).unwrap();
    names.sort();
    assert_eq!(
        names,
        vec![
            b"scoutfs.ab".to_vec(),
            b"user.big".to_vec(),
            b"user.x".to_vec()
        ]
    );
    fs.removexattr(s.ino, b"user.big").unwrap();
    assert_eq!(err(fs.removexattr(s.ino, b"user.big")), 61);

    // Rename: a directory under itself is EINVAL; exchange swaps across directories.
    let a = fs.mkdir(ROOT_INO, b"a", 0o755, C).unwrap().ino;
    let b = fs.mkdir(a, b"b", 0o755, C).unwrap().ino;
    let c = fs.mkdir(b, b"c", 0o755, C).unwrap().ino;
    let none = RenameFlags::default();
    assert_eq!(err(fs.rename(ROOT_INO, b"a", c, b"a", none)), 22);
    assert_eq!(err(fs.rename(ROOT_INO, b"a", a, b"x", none)), 22);
    assert_eq!(err(fs.rename(a, b"b", ROOT_INO, b"a", none)), 39);
    let f = fs.mknod(c, b"f", 0o644, 0, C).unwrap().ino;
    let x = RenameFlags {
        exchange: true,
        ..none
    };
    // Swapping an ancestor into its own subtree is a loop.
    assert_eq!(err(fs.rename(c, b"f", ROOT_INO, b"a", x)), 22);
    let z = fs.mkdir(ROOT_INO, b"z", 0o755, C).unwrap().ino;
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 4);
    fs.rename(c, b"f", ROOT_INO, b"z", x).unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"z").unwrap().ino, f);
    assert_eq!(fs.lookup(c, b"f").unwrap().ino, z);
    assert_eq!(fs.lookup(z, b"..").unwrap().ino, c);
    // The root lost a subdirectory and c gained one.
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 3);
    assert_eq!(fs.getattr(c).unwrap().nlink, 3);
    let nr = RenameFlags {
        noreplace: true,
        ..none
    };
    assert_eq!(err(fs.rename(ROOT_INO, b"s", ROOT_INO, b"z", nr)), 17);
    assert_eq!(
        err(fs.rename(
            ROOT_INO,
            b"s",
            ROOT_INO,
            b"a",
            RenameFlags {
                noreplace: true,
                exchange: true
            }
        )),
        22
    );
    assert_eq!(e(fs.link(a, ROOT_INO, b"hard")), 1);
    assert_eq!(err(fs.unlink(c, b"f")), 21);
    assert_eq!(err(fs.rmdir(ROOT_INO, b"z")), 20);

    // Times: creating an entry updates the parent's mtime and ctime.
    let before = fs.getattr(c).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    fs.mknod(c, b"new", 0o644, 0, C).unwrap();
    let after = fs.getattr(c).unwrap();
    assert!(after.mtime > before.mtime && after.ctime > before.ctime);
    let t = Timespec { sec: 1000, nsec: 5 };
    let a2 = fs
        .setattr(
            f,
            &SetAttr {
                atime: Some(SetTime::At(t)),
                mtime: Some(SetTime::At(t)),
                uid: Some(7),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((a2.atime, a2.mtime, a2.uid), (t, t, 7));
    assert!(a2.ctime > t);
    // A new owner drops set-user-ID and set-group-ID (with group execute).
    let sx = fs.mknod(ROOT_INO, b"suid", 0o106755, 0, C).unwrap().ino;
    let chown = SetAttr {
        uid: Some(5),
        ..Default::default()
    };
    assert_eq!(fs.setattr(sx, &chown).unwrap().mode, 0o100755);
    let sg = fs.mknod(ROOT_INO, b"sgid", 0o102644, 0, C).unwrap().ino;
    assert_eq!(fs.setattr(sg, &chown).unwrap().mode, 0o102644);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

#[test]
fn mounting_what_is_not_a_volume_fails_cleanly() {
    let meta: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(8 << 20));
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(8 << 20));
    let e = Fs::mount_single(meta.clone(), data.clone(), FsOptions::default()).unwrap_err();
    assert!(matches!(e, FsError::Volume(_)), "{e}");
    assert!(e.to_string().contains("no scoutfs super"), "{e}");
    // Devices of two different volumes.
    let (m1, _d1) = volume_of(8, 8, 4096);
    let (_m2, d2) = volume_of(8, 8, 4096);
    let e = Fs::mount_single(m1, d2, FsOptions::default()).unwrap_err();
    assert!(e.to_string().contains("same volume"), "{e}");
    // Nothing was written.
    for dev in [&meta, &data] {
        let mut buf = vec![0u8; 1 << 20];
        dev.read_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }
}

#[test]
fn threads_share_one_mount() {
    fn shared<T: Send + Sync>(_: &T) {}
    let (meta, data) = volume_of(32, 32, 4096);
    let fs = mount(&meta, &data);
    shared(&fs);
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let fs = &fs;
            s.spawn(move || {
                let d = fs
                    .mkdir(ROOT_INO, format!("t{t}").as_bytes(), 0o755, C)
                    .unwrap()
                    .ino;
                for i in 0..200u32 {
                    let name = format!("f{i}");
                    let f = fs.mknod(d, name.as_bytes(), 0o644, 0, C).unwrap().ino;
                    let body = vec![t ^ i as u8; 3000 + i as usize];
                    fs.write(f, i as u64, &body).unwrap();
                    assert_eq!(fs.read(f, i as u64, body.len() as u32).unwrap(), body);
                    if i % 3 == 0 {
                        fs.unlink(d, name.as_bytes()).unwrap();
                    }
                    if i % 50 == 0 {
                        fs.sync().unwrap();
                    }
                }
            });
        }
    });
    fs.unmount().unwrap();
    let fs = mount(&meta, &data);
    for t in 0..4u8 {
        let d = fs.lookup(ROOT_INO, format!("t{t}").as_bytes()).unwrap().ino;
        let want: BTreeSet<Vec<u8>> = (0..200)
            .filter(|i| i % 3 != 0)
            .map(|i| format!("f{i}").into_bytes())
            .collect();
        assert_eq!(names(&list(&fs, d, 1000)), want);
    }
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

#[test]
fn data_enospc_is_a_short_write_and_space_comes_back() {
    let (meta, data) = volume_of(16, 4, 4096);
    let fs = mount(&meta, &data);
    let f = fs.mknod(ROOT_INO, b"fill", 0o644, 0, C).unwrap().ino;
    let chunk: Vec<u8> = (0..100_000).map(|i| (i % 239) as u8 | 1).collect();
    let mut size = 0u64;
    let mut full = false;
    for _ in 0..1000 {
        match fs.write(f, size, &chunk) {
            Ok(n) => {
                size += n as u64;
                if (n as usize) < chunk.len() {
                    full = true;
                    break;
                }
            }
            Err(e) => {
                assert_eq!(e.errno(), 28, "{e}");
                full = true;
                break;
            }
        }
    }
    assert!(full, "a 4 MiB data device never filled");
    assert!(size > 2 << 20);
    let a = fs.getattr(f).unwrap();
    assert_eq!(a.size, size);
    // Every byte written reads back; the size covers nothing unwritten.
    let got = fs.read(f, 0, size as u32).unwrap();
    for (i, b) in got.iter().enumerate() {
        assert_eq!(*b, chunk[i % chunk.len()], "byte {i}");
    }
    // Extending exposes zeros only.
    fs.setattr(
        f,
        &SetAttr {
            size: Some(size + 10_000),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(fs.read(f, size, 10_000).unwrap().iter().all(|&b| b == 0));
    // Freed space is usable again once committed.
    fs.unlink(ROOT_INO, b"fill").unwrap();
    fs.sync().unwrap();
    fs.sync().unwrap();
    let g = fs.mknod(ROOT_INO, b"again", 0o644, 0, C).unwrap().ino;
    assert_eq!(fs.write(g, 0, &chunk).unwrap(), chunk.len() as u32);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

#[test]
fn a_failed_data_write_is_a_short_write_that_exposes_nothing() {
    use scoutfs_core::device::{FaultDevice, FaultOp};
    let (meta, raw) = volume_of(32, 64, 4096);
    let fault = Arc::new(FaultDevice::new(raw.clone()));
    let data: Arc<dyn BlockDevice> = fault.clone();
    let fs = Fs::mount_single(meta.clone(), data.clone(), FsOptions::default()).unwrap();
    let f = fs.mknod(ROOT_INO, b"f", 0o644, 0, C).unwrap().ino;
    let body: Vec<u8> = (0..3 << 20).map(|i| (i % 241) as u8 | 1).collect();
    // Extents of 128 blocks: six device writes; the fourth fails.
    fault.fail_nth(FaultOp::Write, 4);
    let n = fs.write(f, 0, &body).unwrap() as usize;
    assert_eq!(n, 3 * 512 * 1024);
    fault.disarm();
    assert_eq!(fs.getattr(f).unwrap().size, n as u64);
    assert_eq!(fs.getattr(f).unwrap().blocks, n as u64 / 512);
    assert!(fs.read(f, 0, n as u32).unwrap() == body[..n]);
    // A failure at the first block is an error, and nothing changes.
    fault.fail_nth(FaultOp::Write, 1);
    assert_eq!(fs.write(f, n as u64, &body[..8192]).unwrap_err().errno(), 5);
    fault.disarm();
    assert_eq!(fs.getattr(f).unwrap().size, n as u64);
    fs.setattr(
        f,
        &SetAttr {
            size: Some(n as u64 + 8192),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(fs.read(f, n as u64, 8192).unwrap().iter().all(|&b| b == 0));
    fs.fsync(f, false).unwrap();
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

#[test]
fn metadata_enospc_then_unlinks_free_space() {
    let (meta, data) = volume_of(3, 8, 4096);
    let fs = mount(&meta, &data);
    let val = vec![5u8; 2000];
    let mut n = 0;
    let err = loop {
        let name = format!("file-{n:06}");
        let r = fs
            .mknod(ROOT_INO, name.as_bytes(), 0o644, 0, C)
            .and_then(|a| fs.setxattr(a.ino, b"user.pad", &val, XattrSet::Any));
        match r {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        if n % 50 == 0 {
            fs.background_tick().unwrap();
        }
        assert!(n < 100_000, "never ran out of metadata space");
    };
    assert_eq!(err.errno(), 28, "{err}");
    assert!(n > 50, "{n}");
    // Unlinks go on from the reserve; the space comes back once they are merged.
    for i in 0..n {
        fs.unlink(ROOT_INO, format!("file-{i:06}").as_bytes())
            .unwrap_or_else(|e| panic!("unlink {i} of {n}: {e}"));
    }
    let mut again = false;
    for _ in 0..20 {
        fs.merge_all().unwrap();
        if fs.mknod(ROOT_INO, b"again", 0o644, 0, C).is_ok() {
            again = true;
            break;
        }
    }
    assert!(again, "no space after unlinking all {n} files");
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

#[test]
fn files_of_many_extents_truncate_and_delete_in_batches() {
    let (meta, data) = volume_of(32, 64, 4096);
    let fs = mount(&meta, &data);
    fs.sync().unwrap();
    let free0 = fs.statfs().unwrap().bfree;
    let mut files = Vec::new();
    for name in [&b"a"[..], b"b"] {
        let f = fs.mknod(ROOT_INO, name, 0o644, 0, C).unwrap().ino;
        // One block every other block: 700 extents.
        for i in 0..700u64 {
            fs.write(f, i * 8192, &[i as u8 | 1; 4096]).unwrap();
        }
        assert_eq!(fs.getattr(f).unwrap().blocks, 700 * 8);
        fs.setxattr(f, b"user.x", &[1; 5000], XattrSet::Any)
            .unwrap();
        files.push(f);
    }
    // Truncate into the middle: 300 extents stay.
    fs.setattr(
        files[0],
        &SetAttr {
            size: Some(300 * 8192 - 100),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(fs.getattr(files[0]).unwrap().blocks, 300 * 8);
    assert_eq!(
        fs.read(files[0], 299 * 8192, 10).unwrap(),
        vec![299u16 as u8 | 1; 10]
    );
    fs.unlink(ROOT_INO, b"a").unwrap();
    fs.open(files[1]).unwrap();
    fs.unlink(ROOT_INO, b"b").unwrap();
    fs.release(files[1]).unwrap();
    for f in &files {
        assert_eq!(fs.getattr(*f).unwrap_err().errno(), 2);
    }
    fs.sync().unwrap();
    fs.sync().unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, free0);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

/// File data is read outside the mount's lock, in parallel: a read still returns what the
/// file held at one instant (never part of a write), and never bytes of blocks that were
/// freed and given to another file while it ran.
#[test]
fn parallel_reads_see_whole_writes_and_never_reused_blocks() {
    let (meta, data) = volume_of(64, 64, 4096);
    // Reads and writes of the data device a block at a time with a pause between, so
    // that a read and a write of the same blocks that were let overlap would interleave.
    #[derive(Debug)]
    struct Slow(Arc<dyn BlockDevice>);
    impl BlockDevice for Slow {
        fn read_at(&self, buf: &mut [u8], off: u64) -> scoutfs_core::device::Result<()> {
            for (i, c) in buf.chunks_mut(4096).enumerate() {
                self.0.read_at(c, off + i as u64 * 4096)?;
                std::thread::yield_now();
            }
            Ok(())
        }
        fn write_at(&self, buf: &[u8], off: u64) -> scoutfs_core::device::Result<()> {
            for (i, c) in buf.chunks(4096).enumerate() {
                self.0.write_at(c, off + i as u64 * 4096)?;
                std::thread::yield_now();
            }
            Ok(())
        }
        fn flush(&self) -> scoutfs_core::device::Result<()> {
            self.0.flush()
        }
        fn len(&self) -> u64 {
            self.0.len()
        }
    }
    let slow: Arc<dyn BlockDevice> = Arc::new(Slow(data.clone()));
    let fs = Arc::new(mount(&meta, &slow));
    let a = fs.mknod(ROOT_INO, b"a", 0o100644, 0, C).unwrap().ino;
    let b = fs.mknod(ROOT_INO, b"b", 0o100644, 0, C).unwrap().ino;
    const LEN: usize = 256 << 10;
    fs.write(a, 0, &vec![1u8; LEN]).unwrap();
    fs.sync().unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (fs, stop) = (fs.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let got = fs.read(a, 0, LEN as u32).unwrap();
                    if got.is_empty() {
                        continue; // between a truncate of a and its rewrite
                    }
                    assert_eq!(got.len(), LEN);
                    let v = got[0];
                    assert!(v != 0 && v != 0xEE, "read {v:#x}");
                    assert!(got.iter().all(|&x| x == v), "a torn read");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for round in 0..60u32 {
        // Rewrite all of a; free b's blocks, commit (they may be handed out again), and
        // fill b anew, perhaps in the blocks a's reads were just told to read.
        fs.write(a, 0, &vec![(round % 200 + 2) as u8; LEN]).unwrap();
        fs.setattr(
            b,
            &SetAttr {
                size: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
        fs.sync().unwrap();
        fs.write(b, 0, &vec![0xEE; LEN]).unwrap();
        if round % 7 == 0 {
            fs.setattr(
                a,
                &SetAttr {
                    size: Some(0),
                    ..Default::default()
                },
            )
            .unwrap();
            fs.write(a, 0, &vec![(round % 200 + 2) as u8; LEN]).unwrap();
            fs.sync().unwrap();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
    assert_eq!(fs.read(a, 0, 1).unwrap(), vec![61u8]); // the last round, 59, wrote 61
    drop(fs);
    assert_fs_clean(&meta, &data, "the volume");
}

fn at(sec: i64) -> Timespec {
    Timespec { sec, nsec: 0 }
}

#[test]
fn reads_update_access_times_as_the_mode_says() {
    const DAY: i64 = 24 * 3600;
    let (meta, data) = volume_of(64, 64, 4096);
    let clock = Arc::new(TestClock::default());
    let mount_with = |atime: AtimeMode, dir_atime: bool| {
        let opts = FsOptions {
            clock: clock.clone(),
            atime,
            dir_atime,
            ..Default::default()
        };
        Fs::mount_single(meta.clone(), data.clone(), opts).unwrap()
    };

    // relatime, the default.
    clock.set(1000);
    let fs = mount_with(AtimeMode::default(), true);
    let dir = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap().ino;
    let f = fs.mknod(dir, b"f", 0o644, 0, C).unwrap().ino;
    let l = fs.symlink(dir, b"l", b"f", C).unwrap().ino;
    clock.set(1010);
    fs.write(f, 0, b"hello").unwrap();
    let atime = |ino| fs.getattr(ino).unwrap().atime;
    assert_eq!(atime(f), at(1000));
    // A read of nothing is no access; a read at or past the end is.
    clock.set(1020);
    fs.read(f, 0, 0).unwrap();
    assert_eq!(atime(f), at(1000));
    fs.read(f, 100, 10).unwrap();
    assert_eq!(atime(f), at(1020), "the file changed after its last access");
    clock.set(1030);
    assert_eq!(fs.read(f, 0, 5).unwrap(), b"hello");
    assert_eq!(atime(f), at(1020), "read since its last change: left alone");
    clock.set(1020 + DAY);
    fs.read(f, 0, 5).unwrap();
    assert_eq!(atime(f), at(1020 + DAY), "a day old");
    clock.set(1040 + DAY);
    fs.write(f, 5, b"!").unwrap();
    clock.set(1050 + DAY);
    fs.read(f, 0, 6).unwrap();
    assert_eq!(atime(f), at(1050 + DAY), "written since");
    // Directory reads and symlink reads count too; the mtime and ctime stay.
    let before = fs.getattr(dir).unwrap();
    assert_eq!(list(&fs, dir, 100).len(), 4);
    let after = fs.getattr(dir).unwrap();
    assert_eq!(after.atime, at(1050 + DAY));
    assert_eq!((after.mtime, after.ctime), (before.mtime, before.ctime));
    assert_eq!(fs.readlink(l).unwrap(), b"f");
    assert_eq!(atime(l), at(1050 + DAY));
    // The access times are committed like any change.
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");

    // strictatime: every read; nodiratime: never a directory's.
    let fs = mount_with(AtimeMode::Always, false);
    let atime = |ino| fs.getattr(ino).unwrap().atime;
    assert_eq!(atime(f), at(1050 + DAY));
    for t in [2000, 2001, 2002] {
        clock.set(t);
        fs.read(f, 0, 1).unwrap();
        assert_eq!(atime(f), at(t));
    }
    list(&fs, dir, 100);
    assert_eq!(atime(dir), at(1050 + DAY));
    fs.unmount().unwrap();

    // noatime: never, even for a file that changed after its access time.
    let fs = mount_with(AtimeMode::Never, true);
    let atime = |ino| fs.getattr(ino).unwrap().atime;
    clock.set(3000);
    fs.write(f, 0, b"H").unwrap();
    clock.set(3010);
    fs.read(f, 0, 1).unwrap();
    list(&fs, dir, 100);
    fs.readlink(l).unwrap();
    assert_eq!(
        (atime(f), atime(dir), atime(l)),
        (at(2002), at(1050 + DAY), at(1050 + DAY))
    );
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

#[test]
fn relatime_rule() {
    let m = AtimeMode::Relative;
    let (t, day) = (at(100_000), 24 * 3600);
    assert!(m.needs_update(t, t, at(0), at(100_001)), "mtime == atime");
    assert!(
        m.needs_update(t, at(0), at(100_000), at(100_001)),
        "ctime == atime"
    );
    assert!(!m.needs_update(t, at(99_999), at(99_999), at(100_000 + day - 1)));
    assert!(m.needs_update(t, at(99_999), at(99_999), at(100_000 + day)));
    assert!(!AtimeMode::Never.needs_update(t, at(200_000), at(200_000), at(300_000)));
    assert!(!AtimeMode::Always.needs_update(t, t, t, t));
    assert!(AtimeMode::Always.needs_update(t, t, t, at(100_001)));
}

#[test]
fn readdir_plus_gives_the_entries_of_readdir_with_their_attributes() {
    let (meta, data) = volume_of(64, 64, 4096);
    let fs = mount(&meta, &data);
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap().ino;
    for i in 0..300u32 {
        let name = format!("e{i}");
        if i % 7 == 0 {
            fs.mkdir(d, name.as_bytes(), 0o700, C).unwrap();
        } else {
            let f = fs.mknod(d, name.as_bytes(), 0o640, 0, C).unwrap().ino;
            fs.write(f, 0, &vec![1; i as usize]).unwrap();
        }
    }
    let plain = list(&fs, d, 1000);
    // In batches of 13, resuming from the position of the last entry taken.
    let mut plus = Vec::new();
    let mut pos = 0;
    loop {
        let mut n = 0;
        fs.readdir_plus(d, pos, &mut |e, a| {
            plus.push((e.clone(), *a.unwrap()));
            pos = e.next_pos;
            n += 1;
            n < 13
        })
        .unwrap();
        if n == 0 {
            break;
        }
    }
    assert_eq!(plain.len(), 302);
    assert_eq!(
        plus.iter().map(|(e, _)| e.clone()).collect::<Vec<_>>(),
        plain
    );
    for (e, a) in &plus {
        let mut want = fs.getattr(e.ino).unwrap();
        // Reading the directory may have moved its access time since.
        if e.ino == d {
            want.atime = a.atime;
        }
        assert_eq!(*a, want, "{:?}", String::from_utf8_lossy(&e.name));
        assert_eq!(a.kind, e.kind);
    }
    assert_eq!(plus[0].1.ino, d);
    assert_eq!(plus[1].1.ino, ROOT_INO);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

/// An ACL xattr value of `(tag, perm, id)` entries.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
fn acls_keep_step_with_the_mode_and_are_inherited() {
    const U: u32 = u32::MAX;
    let (meta, data) = volume_of(64, 64, 4096);
    let fs = mount(&meta, &data);
    let umask = Creds { umask: 0o022, ..C };
    let d = fs.mkdir(ROOT_INO, b"d", 0o777, umask).unwrap();
    assert_eq!(d.mode & 0o7777, 0o755, "no default ACL: the umask applies");
    let d = d.ino;
    let f = fs.mknod(d, b"f", 0o666, 0, umask).unwrap().ino;
    let mode = |ino| fs.getattr(ino).unwrap().mode & 0o7777;
    assert_eq!(mode(f), 0o644);

    // An access ACL with a named user: stored, the group bits are the mask's.
    let full = acl(&[
        (1, 6, U),
        (2, 7, 1000),
        (4, 4, U),
        (0x10, 6, U),
        (0x20, 0, U),
    ]);
    fs.setxattr(f, ACL_ACCESS, &full, XattrSet::Any).unwrap();
    assert_eq!(mode(f), 0o660);
    assert_eq!(fs.getxattr(f, ACL_ACCESS).unwrap(), full);
    // A chmod moves the mask (and owner and others) along.
    fs.setattr(
        f,
        &SetAttr {
            mode: Some(0o640),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        fs.getxattr(f, ACL_ACCESS).unwrap(),
        acl(&[
            (1, 6, U),
            (2, 7, 1000),
            (4, 4, U),
            (0x10, 4, U),
            (0x20, 0, U)
        ])
    );
    // An ACL the mode says all of is not kept: only the mode changes.
    let minimal = acl(&[(1, 7, U), (4, 5, U), (0x20, 1, U)]);
    fs.setxattr(f, ACL_ACCESS, &minimal, XattrSet::Any).unwrap();
    assert_eq!(mode(f), 0o751);
    assert_eq!(err(fs.getxattr(f, ACL_ACCESS)), 61);
    // Invalid ACLs, default ACLs of files, ACLs of symlinks.
    let no_mask = acl(&[(1, 7, U), (2, 7, 5), (4, 5, U), (0x20, 0, U)]);
    assert_eq!(err(fs.setxattr(f, ACL_ACCESS, &no_mask, XattrSet::Any)), 22);
    assert_eq!(err(fs.setxattr(f, ACL_ACCESS, b"jun", XattrSet::Any)), 22);
    // A version other than 2 is not supported (EOPNOTSUPP, as Linux).
    assert_eq!(err(fs.setxattr(f, ACL_ACCESS, b"junk", XattrSet::Any)), 95);
    assert_eq!(err(fs.setxattr(f, ACL_DEFAULT, &full, XattrSet::Any)), 13);
    let l = fs.symlink(d, b"l", b"f", umask).unwrap().ino;
    assert_eq!(err(fs.setxattr(l, ACL_ACCESS, &full, XattrSet::Any)), 95);

    // A default ACL: new files and directories inherit it instead of the umask.
    let def = acl(&[
        (1, 7, U),
        (2, 7, 1000),
        (4, 5, U),
        (8, 4, 50),
        (0x10, 7, U),
        (0x20, 1, U),
    ]);
    fs.setxattr(d, ACL_DEFAULT, &def, XattrSet::Any).unwrap();
    let g = fs.mknod(d, b"g", 0o666, 0, umask).unwrap().ino;
    assert_eq!(mode(g), 0o660);
    assert_eq!(
        fs.getxattr(g, ACL_ACCESS).unwrap(),
        acl(&[
            (1, 6, U),
            (2, 7, 1000),
            (4, 5, U),
            (8, 4, 50),
            (0x10, 6, U),
            (0x20, 0, U)
        ])
    );
    assert_eq!(err(fs.getxattr(g, ACL_DEFAULT)), 61);
    let sub = fs.mkdir(d, b"sub", 0o777, umask).unwrap().ino;
    assert_eq!(mode(sub), 0o771);
    assert_eq!(fs.getxattr(sub, ACL_DEFAULT).unwrap(), def);
    assert_eq!(fs.getxattr(sub, ACL_ACCESS).unwrap(), def);
    let deeper = fs.mknod(sub, b"h", 0o600, 0, umask).unwrap().ino;
    assert_eq!(mode(deeper), 0o600);
    // Removing the default ACL brings the umask back; removing an access ACL leaves
    // the mode.
    fs.removexattr(d, ACL_DEFAULT).unwrap();
    assert_eq!(mode(fs.mknod(d, b"k", 0o666, 0, umask).unwrap().ino), 0o644);
    fs.removexattr(g, ACL_ACCESS).unwrap();
    assert_eq!(mode(g), 0o660);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");

    // Without ACLs (noacl) the names are refused, and the umask always applies.
    let opts = FsOptions {
        acl: false,
        ..Default::default()
    };
    let fs = Fs::mount_single(meta.clone(), data.clone(), opts).unwrap();
    assert!(!fs.acls());
    assert_eq!(err(fs.setxattr(f, ACL_ACCESS, &full, XattrSet::Any)), 95);
    assert_eq!(err(fs.getxattr(sub, ACL_DEFAULT)), 95);
    let m = fs.mknod(sub, b"m", 0o666, 0, umask).unwrap().ino;
    assert_eq!(fs.getattr(m).unwrap().mode & 0o777, 0o644);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

/// The errno of a failed call.
fn err<T: std::fmt::Debug>(r: FsResult<T>) -> i32 {
    r.unwrap_err().errno()
}

/// Every byte of a device.
fn image(dev: &Arc<dyn BlockDevice>) -> Vec<u8> {
    let mut buf = vec![0u8; dev.len() as usize];
    dev.read_at(&mut buf, 0).unwrap();
    buf
}

#[test]
fn read_only_mounts_read_the_last_commit_and_write_nothing() {
    let (meta, data) = volume_of(32, 64, 4096);
    let fs = mount(&meta, &data);
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap().ino;
    let f = fs.mknod(d, b"f", 0o644, 0, C).unwrap().ino;
    fs.write(f, 0, b"committed").unwrap();
    fs.setxattr(f, b"user.x", b"1", XattrSet::Any).unwrap();
    // An orphan: unlinked while open when the mount crashes.
    let o = fs.mknod(d, b"o", 0o644, 0, C).unwrap().ino;
    fs.open(o).unwrap();
    fs.unlink(d, b"o").unwrap();
    fs.sync().unwrap();
    // Not committed: lost with the crash.
    fs.mknod(d, b"late", 0o644, 0, C).unwrap();
    drop(fs);

    let (meta0, data0) = (image(&meta), image(&data));
    let ro = FsOptions {
        read_only: true,
        atime: AtimeMode::Always,
        ..Default::default()
    };
    let fs = Fs::mount_single(meta.clone(), data.clone(), ro).unwrap();
    assert_eq!(fs.lookup(d, b"f").unwrap().ino, f);
    assert_eq!(fs.read(f, 0, 100).unwrap(), b"committed");
    assert_eq!(fs.getxattr(f, b"user.x").unwrap(), b"1");
    assert_eq!(err(fs.lookup(d, b"late")), 2);
    let names: Vec<_> = list(&fs, d, 100).into_iter().map(|e| e.name).collect();
    assert_eq!(names, [&b"."[..], b"..", b"f"]);
    assert_eq!(fs.getattr(o).unwrap().nlink, 0, "the orphan is left alone");
    let atime = fs.getattr(f).unwrap().atime;
    std::thread::sleep(std::time::Duration::from_millis(5));
    fs.read(f, 0, 1).unwrap();
    assert_eq!(fs.getattr(f).unwrap().atime, atime, "no access times");
    // Every change is refused, before it changes anything.
    let set = SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    assert_eq!(err(fs.mknod(d, b"n", 0o644, 0, C)), 30);
    assert_eq!(err(fs.mkdir(d, b"n", 0o755, C)), 30);
    assert_eq!(err(fs.write(f, 0, b"x")), 30);
    assert_eq!(err(fs.setattr(f, &set)), 30);
    assert_eq!(err(fs.unlink(d, b"f")), 30);
    assert_eq!(err(fs.rename(d, b"f", d, b"g", RenameFlags::default())), 30);
    assert_eq!(err(fs.setxattr(f, b"user.y", b"2", XattrSet::Any)), 30);
    assert_eq!(err(fs.removexattr(f, b"user.x")), 30);
    assert_eq!(err(fs.link(f, d, b"h")), 30);
    assert_eq!(err(fs.fallocate(f, 0, 4096, false)), 30);
    assert_eq!(fs.read(f, 0, 100).unwrap(), b"committed");
    fs.open(o).unwrap();
    fs.release(o).unwrap();
    fs.sync().unwrap();
    fs.background_tick().unwrap();
    assert_eq!(fs.merge_work(16).unwrap(), 0);
    fs.unmount().unwrap();
    assert!(image(&meta) == meta0, "the meta device was written");
    assert!(image(&data) == data0, "the data device was written");

    // The next read-write mount takes over: the orphan goes, the volume is clean.
    let fs = mount(&meta, &data);
    assert_eq!(err(fs.getattr(o)), 2);
    assert_eq!(fs.read(f, 0, 100).unwrap(), b"committed");
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}

/// Inodes in use, as statfs says.
fn inodes_used(fs: &Fs) -> u64 {
    let s = fs.statfs().unwrap();
    s.files - s.ffree
}

#[test]
fn statfs_counts_the_inodes_in_use_through_commits_merges_and_crashes() {
    let (meta, data) = volume_of(64, 64, 4096);
    let fs = mount(&meta, &data);
    assert_eq!(inodes_used(&fs), 1, "the root");
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap().ino;
    for i in 0..300 {
        fs.mknod(d, format!("f{i}").as_bytes(), 0o644, 0, C)
            .unwrap();
    }
    fs.symlink(d, b"l", b"f1", C).unwrap();
    // Hard links are not inodes.
    fs.link(fs.lookup(d, b"f2").unwrap().ino, ROOT_INO, b"h")
        .unwrap();
    assert_eq!(inodes_used(&fs), 303, "counted before any commit");
    fs.sync().unwrap();
    assert_eq!(inodes_used(&fs), 303);
    for i in 0..100 {
        fs.unlink(d, format!("f{i}").as_bytes()).unwrap();
    }
    // f2 lives on as h, until h goes too.
    assert_eq!(inodes_used(&fs), 204);
    fs.unlink(ROOT_INO, b"h").unwrap();
    assert_eq!(inodes_used(&fs), 203);
    // An unlinked open inode is still one until its last release.
    let o = fs.lookup(d, b"f150").unwrap().ino;
    fs.open(o).unwrap();
    fs.unlink(d, b"f150").unwrap();
    assert_eq!(inodes_used(&fs), 203);
    fs.release(o).unwrap();
    assert_eq!(inodes_used(&fs), 202);
    fs.sync().unwrap();
    // Merged into the filesystem root: the super holds the count.
    fs.merge_all().unwrap();
    assert_eq!(inodes_used(&fs), 202);
    fs.unmount().unwrap();
    let fs = mount(&meta, &data);
    assert_eq!(inodes_used(&fs), 202);

    // A crash loses the uncommitted creates and their count; an orphan the crash left
    // is deleted (and uncounted) by the next mount.
    let o = fs.lookup(d, b"f151").unwrap().ino;
    fs.open(o).unwrap();
    fs.unlink(d, b"f151").unwrap();
    fs.sync().unwrap();
    for i in 0..10 {
        fs.mknod(d, format!("lost{i}").as_bytes(), 0o644, 0, C)
            .unwrap();
    }
    assert_eq!(inodes_used(&fs), 212);
    drop(fs);
    let fs = mount(&meta, &data);
    assert_eq!(inodes_used(&fs), 201);
    let ro = FsOptions {
        read_only: true,
        ..Default::default()
    };
    fs.unmount().unwrap();
    let fs = Fs::mount_single(meta.clone(), data.clone(), ro).unwrap();
    assert_eq!(inodes_used(&fs), 201);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "the volume");
}
