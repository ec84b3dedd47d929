#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Offline data (issue 14): release, stage, setattr_more, stat_more, statfs_more and
//! fiemap with their errors (the original's tests simple-staging, simple-release-extents,
//! setattr_more and basic-block-counts), and operations waiting for offline data
//! (offline-extent-waiting): readers, writers and truncates wait until staging brings the
//! blocks back, `data_waiting` lists them, `data_wait_err` fails them, a cancelled wait
//! returns, and a wait on one file holds up no other.

mod common;

use common::{assert_fs_clean, pattern, volume_of, Devices};
use scoutfs_core::fs::*;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};
const BS: u64 = 4096;

fn mount(devs: &Devices) -> Fs {
    Fs::mount_single(devs.0.clone(), devs.1.clone(), FsOptions::default()).unwrap()
}

fn file(fs: &Fs, name: &str, bytes: &[u8]) -> u64 {
    let ino = fs
        .mknod(ROOT_INO, name.as_bytes(), 0o100644, 0, C)
        .unwrap()
        .ino;
    if !bytes.is_empty() {
        assert_eq!(fs.write(ino, 0, bytes).unwrap() as usize, bytes.len());
    }
    ino
}

fn vers(fs: &Fs, ino: u64) -> u64 {
    fs.stat_more(ino).unwrap().data_version
}

fn counts(fs: &Fs, ino: u64) -> (u64, u64, u64) {
    let s = fs.stat_more(ino).unwrap();
    (
        s.online_blocks,
        s.offline_blocks,
        fs.getattr(ino).unwrap().blocks,
    )
}

fn errno<T: std::fmt::Debug>(r: FsResult<T>) -> i32 {
    r.unwrap_err().errno()
}

/// Fiemap as the original's tests print it: (logical block, physical block or 0,
/// blocks, flags "OUL" with '.' for each flag not set).
fn fiemap(fs: &Fs, ino: u64) -> Vec<(u64, u64, u64, String)> {
    fs.fiemap(ino, 0, u64::MAX)
        .unwrap()
        .iter()
        .map(|e| {
            let f = |on: bool, c: char| if on { c } else { '.' };
            let flags: String = [f(e.offline, 'O'), f(e.unwritten, 'U'), f(e.last, 'L')]
                .iter()
                .collect();
            (e.logical / BS, e.physical / BS, e.length / BS, flags)
        })
        .collect()
}

fn read_now(fs: &Fs, ino: u64, off: u64, len: u32) -> Vec<u8> {
    match fs.try_read(ino, off, len).unwrap() {
        Waitable::Ready(v) => v,
        Waitable::Wait(w) => panic!("read waits for block {}", w.iblock()),
    }
}

/// Poll until `f` holds (a few seconds at most).
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "timed out: {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn release_and_stage_keep_version_seq_times_and_bytes() {
    let devs = volume_of(64, 32, 4096);
    let fs = mount(&devs);
    let bytes = pattern(16 * BS as usize + 1000, 1);
    let ino = file(&fs, "f", &bytes);
    fs.sync().unwrap();
    let before = fs.getattr(ino).unwrap();
    let sm = fs.stat_more(ino).unwrap();
    assert_eq!((sm.online_blocks, sm.offline_blocks), (17, 0));
    assert_eq!(sm.size, bytes.len() as u64);

    fs.release_data(ino, 0, 17 * BS, sm.data_version).unwrap();
    assert_eq!(counts(&fs, ino), (0, 17, 17 * 8));
    assert_eq!(fiemap(&fs, ino), vec![(0, 0, 17, "O.L".into())]);
    assert!(matches!(
        fs.try_read(ino, 0, 10).unwrap(),
        Waitable::Wait(_)
    ));
    // Reads past the size and of nothing do not wait.
    assert!(read_now(&fs, ino, bytes.len() as u64, 10).is_empty());
    assert!(read_now(&fs, ino, 0, 0).is_empty());
    // Released twice, and past the size: nothing changes.
    fs.release_data(ino, 0, 64 * BS, sm.data_version).unwrap();
    assert_eq!(counts(&fs, ino), (0, 17, 17 * 8));
    fs.sync().unwrap();
    let released = fs.stat_more(ino).unwrap();
    assert!(released.meta_seq > sm.meta_seq, "the inode changed");

    fs.stage(ino, 0, &bytes, sm.data_version).unwrap();
    assert_eq!(counts(&fs, ino), (17, 0, 17 * 8));
    assert_eq!(read_now(&fs, ino, 0, bytes.len() as u32 + 10), bytes);
    let after = fs.stat_more(ino).unwrap();
    assert_eq!(
        (after.data_version, after.data_seq),
        (sm.data_version, sm.data_seq)
    );
    assert!(after.meta_seq > released.meta_seq, "stage moves meta_seq");
    let a = fs.getattr(ino).unwrap();
    assert_eq!(
        (a.mtime, a.ctime, a.size),
        (before.mtime, before.ctime, before.size)
    );
    // A second stage of online blocks changes nothing.
    fs.stage(ino, 0, &bytes, sm.data_version).unwrap();
    assert_eq!(counts(&fs, ino), (17, 0, 17 * 8));
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    let fs = mount(&devs);
    assert_eq!(read_now(&fs, ino, 0, bytes.len() as u32), bytes);
    fs.unmount().unwrap();
    assert_fs_clean(&devs.0, &devs.1, "after release and stage");
}

#[test]
fn release_errors() {
    let devs = volume_of(64, 16, 4096);
    let fs = mount(&devs);
    let ino = file(&fs, "f", &pattern(8192, 2));
    let v = vers(&fs, ino);
    assert_eq!(errno(fs.release_data(ino, 1, BS, v)), 22);
    assert_eq!(errno(fs.release_data(ino, 0, 100, v)), 22);
    // Just under the largest offset is fine; over it wraps.
    fs.release_data(ino, u64::MAX - 4095, 4096, v).unwrap();
    assert_eq!(errno(fs.release_data(ino, u64::MAX - 4095, 8192, v)), 22);
    assert_eq!(errno(fs.release_data(ino, 0, BS, v + 1)), 116);
    assert_eq!(errno(fs.release_data(ROOT_INO, 0, BS, 0)), 22);
    let chr = fs.mknod(ROOT_INO, b"c", 0o020644, 0x103, C).unwrap().ino;
    assert_eq!(errno(fs.release_data(chr, 0, BS, 0)), 22);
    assert_eq!(errno(fs.release_data(999_999, 0, BS, 0)), 2);
    // Nothing to release: fine, whatever the version.
    fs.release_data(ino, 0, 0, v + 7).unwrap();
    assert_eq!(counts(&fs, ino), (2, 0, 16));
    fs.release_data(ino, 400 * BS, BS, v).unwrap();
    assert_eq!(counts(&fs, ino), (2, 0, 16));
    fs.unmount().unwrap();
    assert_fs_clean(&devs.0, &devs.1, "after failed releases");
}

/// The original's "verify small release merging": every combination of releasing three
/// single blocks of a five-block file of one extent; offline neighbours merge, the
/// online blocks keep their places.
#[test]
fn small_releases_merge_offline_extents() {
    let devs = volume_of(64, 16, 4096);
    let fs = mount(&devs);
    for a in 0..5u64 {
        for b in 0..5u64 {
            for c in 0..5u64 {
                let ino = file(&fs, "f", &pattern(5 * BS as usize, a * 25 + b * 5 + c));
                let base = fiemap(&fs, ino)[0].1;
                assert_eq!(fiemap(&fs, ino), vec![(0, base, 5, "..L".into())]);
                let v = vers(&fs, ino);
                for r in [a, b, c] {
                    fs.release_data(ino, r * BS, BS, v).unwrap();
                }
                let mut want: Vec<(u64, u64, u64, String)> = Vec::new();
                for blk in 0..5u64 {
                    let off = [a, b, c].contains(&blk);
                    match want.last_mut() {
                        Some(w) if (w.3 == "O..") == off => w.2 += 1,
                        _ => want.push((
                            blk,
                            if off { 0 } else { base + blk },
                            1,
                            if off { "O.." } else { "..." }.into(),
                        )),
                    }
                }
                if let Some(l) = want.last_mut() {
                    l.3.replace_range(2..3, "L");
                }
                assert_eq!(fiemap(&fs, ino), want, "releasing {a} {b} {c}");
                let released: std::collections::BTreeSet<u64> = [a, b, c].into_iter().collect();
                let n = released.len() as u64;
                assert_eq!(counts(&fs, ino), (5 - n, n, 40));
                fs.unlink(ROOT_INO, b"f").unwrap();
            }
        }
    }
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    assert_fs_clean(&devs.0, &devs.1, "after the merging releases");
}

#[test]
fn stage_errors_and_partial_stages() {
    let devs = volume_of(64, 16, 4096);
    let fs = mount(&devs);
    let bytes = pattern(100 * BS as usize, 3);
    let ino = file(&fs, "f", &bytes);
    let v = vers(&fs, ino);
    fs.release_data(ino, 0, 100 * BS, v).unwrap();
    let blk = |i: u64| &bytes[(i * BS) as usize..((i + 1) * BS) as usize];
    // Unaligned offset, unaligned end inside the file, past the size, wrapped.
    assert_eq!(errno(fs.stage(ino, 1, &bytes[1..BS as usize], v)), 22);
    assert_eq!(errno(fs.stage(ino, 0, &bytes[..1024], v)), 22);
    assert_eq!(
        errno(fs.stage(ino, 99 * BS, &bytes[..2 * BS as usize], v)),
        22
    );
    assert_eq!(errno(fs.stage(ino, u64::MAX - 4095, &bytes[..8192], v)), 22);
    assert_eq!(errno(fs.stage(ino, 0, blk(0), v + 1)), 116);
    let chr = fs.mknod(ROOT_INO, b"c", 0o020644, 0x103, C).unwrap().ino;
    assert_eq!(errno(fs.stage(chr, 0, b"x", 0)), 22);
    assert_eq!(errno(fs.stage(ROOT_INO, 0, b"x", 0)), 22);
    // Nothing staged: still all offline.
    fs.stage(ino, 4096, &[], v).unwrap();
    assert_eq!(fiemap(&fs, ino), vec![(0, 0, 100, "O.L".into())]);
    // The middle, then the last block, then the first.
    fs.stage(
        ino,
        40 * BS,
        &bytes[(40 * BS) as usize..(50 * BS) as usize],
        v,
    )
    .unwrap();
    let f = fiemap(&fs, ino);
    assert_eq!(f.len(), 3, "{f:?}");
    assert_eq!((f[0].0, f[0].2, f[0].3.as_str()), (0, 40, "O.."));
    assert_eq!((f[1].0, f[1].2, f[1].3.as_str()), (40, 10, "..."));
    assert_eq!((f[2].0, f[2].2, f[2].3.as_str()), (50, 50, "O.L"));
    assert_eq!(counts(&fs, ino), (10, 90, 800));
    assert_eq!(
        read_now(&fs, ino, 40 * BS, 10 * BS as u32),
        &bytes[(40 * BS) as usize..(50 * BS) as usize]
    );
    assert!(
        matches!(fs.try_read(ino, 39 * BS, 2 * BS as u32).unwrap(), Waitable::Wait(w) if w.iblock() == 39)
    );
    assert!(
        matches!(fs.try_read(ino, 45 * BS, 6 * BS as u32).unwrap(), Waitable::Wait(w) if w.iblock() == 50)
    );
    fs.stage(ino, 99 * BS, blk(99), v).unwrap();
    fs.stage(ino, 0, blk(0), v).unwrap();
    assert_eq!(counts(&fs, ino), (12, 88, 800));
    // The rest, overlapping what is online already.
    fs.stage(ino, 0, &bytes, v).unwrap();
    assert_eq!(counts(&fs, ino), (100, 0, 800));
    assert_eq!(read_now(&fs, ino, 0, bytes.len() as u32), bytes);
    assert_eq!(vers(&fs, ino), v);

    // A partial last block that ends at the size stages; the rest of it reads zero.
    let small = pattern(2048, 4);
    let s = file(&fs, "small", &small);
    let sv = vers(&fs, s);
    fs.release_data(s, 0, BS, sv).unwrap();
    fs.stage(s, 0, &small, sv).unwrap();
    assert_eq!(read_now(&fs, s, 0, 8192), small);
    fs.setattr(
        s,
        &SetAttr {
            size: Some(BS),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(read_now(&fs, s, 2048, 4096), vec![0u8; 2048]);
    // Staging into a file that was never released: nothing happens.
    let e = file(&fs, "empty", &[]);
    assert_eq!(errno(fs.stage(e, 0, &[0u8; 4096], 0)), 22, "past the size");
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    assert_fs_clean(&devs.0, &devs.1, "after the stages");
}

#[test]
fn setattr_more_restores_an_archived_file() {
    let devs = volume_of(64, 16, 4096);
    let fs = mount(&devs);
    let new = |name: &str| file(&fs, name, &[]);
    let set = |data_version, size, offline| SetAttrMore {
        data_version,
        size,
        offline,
        ..Default::default()
    };
    let f = new("a");
    assert_eq!(
        errno(fs.setattr_more(f, &set(0, 1, false))),
        22,
        "size without a version"
    );
    assert_eq!(
        errno(fs.setattr_more(f, &set(1, 0, true))),
        22,
        "offline without a size"
    );
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap().ino;
    assert_eq!(errno(fs.setattr_more(d, &set(1, 1, false))), 21);
    let chr = fs.mknod(ROOT_INO, b"c", 0o020644, 0x103, C).unwrap().ino;
    assert_eq!(errno(fs.setattr_more(chr, &set(1, 1, false))), 22);
    let full = file(&fs, "full", b"contents\n");
    assert_eq!(errno(fs.setattr_more(full, &set(1, 1, false))), 22);
    let trunc = new("trunc");
    for size in [1 << 20, 0] {
        let s = SetAttr {
            size: Some(size),
            ..Default::default()
        };
        fs.setattr(trunc, &s).unwrap();
    }
    assert_eq!(
        errno(fs.setattr_more(trunc, &set(1, 1, true))),
        22,
        "a version"
    );
    let falloc = new("falloc");
    fs.fallocate(falloc, 0, BS, true).unwrap();
    assert_eq!(vers(&fs, falloc), 0);
    assert_eq!(
        errno(fs.setattr_more(falloc, &set(1, BS, true))),
        22,
        "blocks"
    );

    let big = 578_437_695_752_307_201u64;
    let g = new("g");
    fs.setattr_more(g, &set(1, big, false)).unwrap();
    assert_eq!(fs.getattr(g).unwrap().size, big);
    let h = new("h");
    fs.setattr_more(h, &set(big, 1, false)).unwrap();
    let sm = fs.stat_more(h).unwrap();
    assert_eq!((sm.data_version, sm.size), (big, 1));
    assert!(sm.data_seq > 0, "a data_seq with the data_version");
    let t = new("t");
    let ctime = Timespec {
        sec: 67_305_985,
        nsec: 999_999_999,
    };
    let crtime = Timespec {
        sec: 1_725_670_311,
        nsec: 5,
    };
    let s = SetAttrMore {
        ctime: Some(ctime),
        crtime: Some(crtime),
        ..set(1, 1, false)
    };
    fs.setattr_more(t, &s).unwrap();
    assert_eq!(fs.getattr(t).unwrap().ctime, ctime);
    assert_eq!(fs.stat_more(t).unwrap().crtime, crtime);
    // No version and no size: only the times.
    let u = new("u");
    fs.setattr_more(
        u,
        &SetAttrMore {
            crtime: Some(crtime),
            ..set(0, 0, false)
        },
    )
    .unwrap();
    assert_eq!(fs.stat_more(u).unwrap().crtime, crtime);

    let o = new("o");
    fs.setattr_more(o, &set(1, 10007 * BS, true)).unwrap();
    assert_eq!(fiemap(&fs, o), vec![(0, 0, 10007, "O.L".into())]);
    let l = new("l");
    fs.setattr_more(l, &set(1, 4_000_000_000, true)).unwrap();
    assert_eq!(fs.stat_more(l).unwrap().offline_blocks, 976_563);
    assert_eq!(
        errno(fs.setattr_more(l, &set(1, 1, false))),
        22,
        "a version now"
    );

    // Stage blocks deep inside the long offline extent (far past the window a block's
    // extent is looked for in), then read them and release them again.
    let bytes = pattern(3 * BS as usize, 5);
    fs.stage(o, 5000 * BS, &bytes, 1).unwrap();
    assert_eq!(
        fiemap(&fs, o)
            .iter()
            .map(|e| (e.0, e.2, e.3.clone()))
            .collect::<Vec<_>>(),
        vec![
            (0, 5000, "O..".into()),
            (5000, 3, "...".into()),
            (5003, 5004, "O.L".into())
        ]
    );
    assert_eq!(read_now(&fs, o, 5000 * BS, 3 * BS as u32), bytes);
    assert!(
        matches!(fs.try_read(o, 9000 * BS, 1).unwrap(), Waitable::Wait(w) if w.iblock() == 9000)
    );
    assert!(
        matches!(fs.try_read(o, 4999 * BS, 2).unwrap(), Waitable::Wait(w) if w.iblock() == 4999)
    );
    assert_eq!(counts(&fs, o).0, 3);
    fs.release_data(o, 0, 10007 * BS, 1).unwrap();
    assert_eq!(fiemap(&fs, o), vec![(0, 0, 10007, "O.L".into())]);
    // A truncate into the long extent keeps its head.
    fs.setattr(
        o,
        &SetAttr {
            size: Some(0),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(counts(&fs, o), (0, 0, 0));
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    assert_fs_clean(&devs.0, &devs.1, "after setattr_more");
}

/// The original's basic-block-counts: online, offline and st_blocks through writes,
/// releases, stages and truncates.
#[test]
fn block_counts_follow_the_original() {
    let devs = volume_of(64, 16, 4096);
    let fs = mount(&devs);
    let ino = file(&fs, "f", &[0u8; 4096]);
    assert_eq!(counts(&fs, ino), (1, 0, 8));
    fs.write(ino, 0, &[0u8; 4096]).unwrap();
    assert_eq!(counts(&fs, ino), (1, 0, 8));
    fs.write(ino, 4096, &[0u8; 4096]).unwrap();
    assert_eq!(counts(&fs, ino), (2, 0, 16));
    let v = vers(&fs, ino);
    fs.release_data(ino, 0, 8192, v).unwrap();
    assert_eq!(counts(&fs, ino), (0, 2, 16));
    fs.release_data(ino, 0, 8192, v).unwrap();
    assert_eq!(counts(&fs, ino), (0, 2, 16));
    fs.release_data(ino, 0, 65536, v).unwrap();
    assert_eq!(counts(&fs, ino), (0, 2, 16));
    fs.stage(ino, 0, &[0u8; 8192], v).unwrap();
    assert_eq!(counts(&fs, ino), (2, 0, 16));
    fs.stage(ino, 0, &[0u8; 8192], v).unwrap();
    assert_eq!(counts(&fs, ino), (2, 0, 16));
    fs.write(ino, 0, &vec![0u8; 1 << 20]).unwrap();
    assert_eq!(counts(&fs, ino), (256, 0, 2048));
    let half = SetAttr {
        size: Some(512 << 10),
        ..Default::default()
    };
    fs.setattr(ino, &half).unwrap();
    assert_eq!(counts(&fs, ino), (128, 0, 1024));
    fs.unlink(ROOT_INO, b"f").unwrap();
    let sparse = fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap().ino;
    fs.write(sparse, 1024 * BS, &[0u8; 4096]).unwrap();
    assert_eq!(counts(&fs, sparse), (1, 0, 8));
    let empty = file(&fs, "e", &[]);
    assert_eq!(counts(&fs, empty), (0, 0, 0));
    let dir = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap().ino;
    assert_eq!(counts(&fs, dir), (0, 0, 0));
    fs.unmount().unwrap();
    assert_fs_clean(&devs.0, &devs.1, "after the block counts");
}

/// Releasing a file wholly drops what it holds past its size (fallocate's extents kept
/// past it); a file with blocks still online keeps them.
#[test]
fn a_wholly_released_file_drops_its_extents_past_the_size() {
    let devs = volume_of(64, 16, 4096);
    let fs = mount(&devs);
    let ino = file(&fs, "f", &pattern(6144, 6));
    fs.fallocate(ino, 0, 10 * BS, true).unwrap();
    assert_eq!(counts(&fs, ino).0, 10);
    let v = vers(&fs, ino);
    // The straddling last block: offline; everything else stays.
    fs.release_data(ino, BS, BS, v).unwrap();
    assert_eq!(counts(&fs, ino).0, 9);
    // Past the size, with blocks online: dropped (a hole), not made offline.
    fs.release_data(ino, 5 * BS, BS, v).unwrap();
    assert_eq!(counts(&fs, ino), (8, 1, 72));
    fs.release_data(ino, 0, BS, v).unwrap();
    assert_eq!(counts(&fs, ino), (0, 2, 16));
    assert_eq!(fiemap(&fs, ino), vec![(0, 0, 2, "O.L".into())]);
    fs.unmount().unwrap();
    assert_fs_clean(&devs.0, &devs.1, "after the releases");
}

/// A release of many extents goes in steps (its record written first, deleted last):
/// done in one call, the file wholly released, and a remount finds nothing to finish.
#[test]
fn a_release_of_many_extents_goes_in_steps() {
    let devs = volume_of(64, 32, 4096);
    let opts = FsOptions {
        cache_bytes: 384 << 10,
        ..FsOptions::default()
    };
    let fs = Fs::mount_single(devs.0.clone(), devs.1.clone(), opts).unwrap();
    let ino = fs.mknod(ROOT_INO, b"big", 0o100644, 0, C).unwrap().ino;
    for e in 0..3000u64 {
        fs.write(ino, e * 2 * BS, &[7u8; 4096]).unwrap();
    }
    fs.sync().unwrap();
    let v = vers(&fs, ino);
    fs.release_data(ino, 0, 6000 * BS, v).unwrap();
    assert_eq!(counts(&fs, ino), (0, 3000, 24000));
    assert_eq!(
        fiemap(&fs, ino).len(),
        3000,
        "holes between the offline extents"
    );
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    assert_fs_clean(&devs.0, &devs.1, "after a large release");
}

#[test]
fn stat_more_and_statfs_more() {
    let devs = volume_of(64, 16, 4096);
    let fs = mount(&devs);
    let ino = file(&fs, "f", &[1u8; 100]);
    let sm = fs.stat_more(ino).unwrap();
    let a = fs.getattr(ino).unwrap();
    assert_eq!(
        (sm.data_version, sm.size, sm.crtime),
        (a.data_version, 100, a.crtime)
    );
    assert!(sm.meta_seq > 0 && sm.data_seq > 0);
    assert_eq!(errno(fs.stat_more(999_999)), 2);
    let root = fs.stat_more(ROOT_INO).unwrap();
    assert_eq!((root.online_blocks, root.offline_blocks), (0, 0));

    let s0 = fs.statfs_more().unwrap();
    assert_eq!(s0.fsid, 0x5ca1e, "mkfs_on's fsid");
    assert_eq!(s0.rid, fs.rid());
    assert_eq!(s0.total_meta_blocks, (64 << 20) / 4096);
    assert_eq!(s0.total_data_blocks, (16 << 20) / BS);
    assert!(s0.reserved_meta_blocks > 0 && s0.reserved_meta_blocks < s0.total_meta_blocks);
    // The inode's seqs are of the open transaction: not committed yet.
    assert!(sm.meta_seq > s0.committed_seq);
    fs.sync().unwrap();
    let s1 = fs.statfs_more().unwrap();
    assert!(s1.committed_seq >= sm.meta_seq, "{s1:?} {sm:?}");
    fs.unmount().unwrap();
}

#[test]
fn fiemap_reports_written_unwritten_and_offline_extents() {
    let devs = volume_of(64, 16, 4096);
    let fs = mount(&devs);
    let ino = file(&fs, "f", &pattern(3 * BS as usize, 7));
    fs.fallocate(ino, 8 * BS, 2 * BS, false).unwrap();
    let f = fiemap(&fs, ino);
    assert_eq!(f.len(), 2, "{f:?}");
    assert_eq!((f[0].0, f[0].2, f[0].3.as_str()), (0, 3, "..."));
    assert_eq!((f[1].0, f[1].2, f[1].3.as_str()), (8, 2, ".UL"));
    let raw = fs.fiemap(ino, 0, u64::MAX).unwrap();
    assert_eq!(raw[0].length, 3 * BS);
    assert!(raw[0].physical > 0);
    // A range that holds only the first extent: not the last of the file.
    let first = fs.fiemap(ino, 0, BS).unwrap();
    assert_eq!(first.len(), 1);
    assert!(!first[0].last);
    // A range inside a hole and past everything.
    assert!(fs.fiemap(ino, 5 * BS, BS).unwrap().is_empty());
    assert!(fs.fiemap(ino, 100 * BS, BS).unwrap().is_empty());
    assert_eq!(errno(fs.fiemap(ino, 0, 0)), 22);
    assert_eq!(errno(fs.fiemap(ROOT_INO, 0, 1)), 21);
    fs.unmount().unwrap();
}

/// The original's offline-extent-waiting, in threads: readers wait for the blocks they
/// read and are listed once per block, staging wakes them with the bytes, `data_wait_err`
/// fails them with its errno, truncates and writes wait for the whole file, and a file
/// waited on holds up no other.
#[test]
fn operations_wait_for_offline_data() {
    let devs = volume_of(64, 16, 4096);
    let fs = Arc::new(mount(&devs));
    let golden = pattern(256 * BS as usize, 8);
    let ino = file(&fs, "file", &golden);
    let other = file(&fs, "other", &pattern(BS as usize, 9));
    let v = vers(&fs, ino);
    assert!(fs.data_waiting(0, 0, 100).is_empty());
    fs.release_data(ino, 0, 256 * BS, v).unwrap();
    let read = |off: u64, len: u32| {
        let fs = fs.clone();
        thread::spawn(move || fs.read(ino, off, len))
    };
    let waiting = || {
        fs.data_waiting(0, 0, 100)
            .iter()
            .map(|w| (w.ino, w.iblock, w.ops))
            .collect::<Vec<_>>()
    };
    let r1 = read(0, 256 * BS as u32);
    eventually("a reader waits", || {
        waiting() == vec![(ino, 0, DATA_WAIT_READ)]
    });
    let r2 = read(0, 100);
    let r3 = read(BS, BS as u32);
    eventually("three readers of two blocks", || {
        waiting() == vec![(ino, 0, DATA_WAIT_READ), (ino, 1, DATA_WAIT_READ)]
    });
    assert_eq!(fs.data_waiting(ino, 0, 100).len(), 1, "after block 0");
    assert_eq!(fs.data_waiting(0, 0, 1).len(), 1, "the limit");
    // Another file is not held up.
    assert_eq!(read_now(&fs, other, 0, 10).len(), 10);
    fs.write(other, 0, b"still works").unwrap();
    // Staging the first half wakes them: the second reader is done, the others wait on.
    fs.stage(ino, 0, &golden[..128 * BS as usize], v).unwrap();
    assert_eq!(r2.join().unwrap().unwrap(), &golden[..100]);
    assert_eq!(
        r3.join().unwrap().unwrap(),
        &golden[BS as usize..2 * BS as usize]
    );
    eventually("the whole reader waits at the half", || {
        waiting() == vec![(ino, 128, DATA_WAIT_READ)]
    });
    fs.stage(ino, 128 * BS, &golden[128 * BS as usize..], v)
        .unwrap();
    assert_eq!(r1.join().unwrap().unwrap(), golden);
    assert!(waiting().is_empty());

    // data_wait_err fails the readers of its range and ops with its errno.
    fs.release_data(ino, 0, 256 * BS, v).unwrap();
    let r1 = read(0, 10);
    let r2 = read(BS, 10);
    let r3 = read(10 * BS, 10);
    eventually("three readers", || waiting().len() == 3);
    assert_eq!(
        fs.data_wait_err(ino, 0, 2 * BS, DATA_WAIT_WRITE, -5)
            .unwrap(),
        0
    );
    assert_eq!(
        fs.data_wait_err(ino, 0, 2 * BS, DATA_WAIT_READ, -5)
            .unwrap(),
        2
    );
    assert_eq!(errno(r1.join().unwrap()), 5);
    assert_eq!(errno(r2.join().unwrap()), 5);
    assert_eq!(waiting(), vec![(ino, 10, DATA_WAIT_READ)]);
    assert_eq!(
        fs.data_wait_err(ino, 10 * BS, 1, DATA_WAIT_READ, 61)
            .unwrap(),
        1
    );
    assert_eq!(errno(r3.join().unwrap()), 61);
    assert!(waiting().is_empty());
    // Its errors.
    assert_eq!(fs.data_wait_err(ino, 0, 0, DATA_WAIT_READ, -5).unwrap(), 0);
    assert_eq!(errno(fs.data_wait_err(ino, 0, BS, 8, -5)), 22);
    assert_eq!(errno(fs.data_wait_err(ino, 0, BS, DATA_WAIT_READ, 0)), 22);
    assert_eq!(
        errno(fs.data_wait_err(ino, 0, BS, DATA_WAIT_READ, -5000)),
        22
    );
    assert_eq!(
        errno(fs.data_wait_err(ino, u64::MAX, 2, DATA_WAIT_READ, -5)),
        22
    );
    assert_eq!(
        errno(fs.data_wait_err(999_999, 0, BS, DATA_WAIT_READ, -5)),
        116
    );
    assert_eq!(
        errno(fs.data_wait_err(ROOT_INO, 0, BS, DATA_WAIT_READ, -5)),
        22
    );

    // A truncate to the same size does not wait; to another size it waits for the file
    // up to it; a write waits for the whole file.
    let same = SetAttr {
        size: Some(256 * BS),
        ..Default::default()
    };
    fs.setattr(ino, &same).unwrap();
    assert!(waiting().is_empty());
    // (Here a truncate to the same size moves the data_version; the original's does not.)
    let v = vers(&fs, ino);
    let t = {
        let fs = fs.clone();
        thread::spawn(move || {
            let s = SetAttr {
                size: Some(BS),
                ..Default::default()
            };
            fs.setattr(ino, &s)
        })
    };
    eventually("the truncate waits", || {
        waiting() == vec![(ino, 0, DATA_WAIT_CHANGE_SIZE)]
    });
    let new = pattern(BS as usize, 10);
    let w = {
        let fs = fs.clone();
        let new = new.clone();
        thread::spawn(move || fs.write(ino, 0, &new))
    };
    eventually("the write waits", || {
        waiting() == vec![(ino, 0, DATA_WAIT_WRITE | DATA_WAIT_CHANGE_SIZE)]
    });
    assert!(matches!(
        fs.try_fallocate(ino, 0, BS, true).unwrap(),
        Waitable::Wait(w) if w.op() == DATA_WAIT_WRITE
    ));
    // Staging the first block is enough for the truncate, which drops the rest of the
    // file (and wakes the write, which then finds all of it online).
    fs.stage(ino, 0, &golden[..BS as usize], v).unwrap();
    t.join().unwrap().unwrap();
    assert_eq!(w.join().unwrap().unwrap(), BS as u32);
    let a = fs.getattr(ino).unwrap();
    assert_eq!(a.size, BS);
    assert_eq!(read_now(&fs, ino, 0, BS as u32), new);
    assert_eq!(counts(&fs, ino), (1, 0, 8));
    assert!(waiting().is_empty());
    assert_eq!(fs.overruns(), 0);
    Arc::try_unwrap(fs).unwrap().unmount().unwrap();
    assert_fs_clean(&devs.0, &devs.1, "after the waits");
}

#[test]
fn a_cancelled_wait_returns_interrupted_and_withdraws() {
    let devs = volume_of(64, 16, 4096);
    let fs = Arc::new(mount(&devs));
    let ino = file(&fs, "f", &pattern(4 * BS as usize, 11));
    fs.release_data(ino, 0, 4 * BS, vers(&fs, ino)).unwrap();
    let cancel = WaitCancel::new();
    let r = {
        let (fs, cancel) = (fs.clone(), cancel.clone());
        thread::spawn(move || fs.wait_for(Some(&cancel), || fs.try_read(ino, 0, 10)))
    };
    eventually("the reader waits", || fs.data_waiting(0, 0, 10).len() == 1);
    cancel.cancel();
    assert!(matches!(r.join().unwrap(), Err(FsError::Interrupted)));
    assert!(fs.data_waiting(0, 0, 10).is_empty(), "withdrawn");
    // Cancelled before it starts: it does not wait at all.
    assert!(matches!(
        fs.wait_for(Some(&cancel), || fs.try_read(ino, 0, 10)),
        Err(FsError::Interrupted)
    ));
    assert_eq!(FsError::Interrupted.errno(), 4);
    // A ticket dropped withdraws its waiter; one polled after a wake says so.
    let Waitable::Wait(w) = fs.try_read(ino, BS, 1).unwrap() else {
        panic!("no wait")
    };
    assert_eq!((w.ino(), w.iblock(), w.op()), (ino, 1, DATA_WAIT_READ));
    assert!(w.poll().is_none());
    drop(w);
    assert!(fs.data_waiting(0, 0, 10).is_empty());
    let Waitable::Wait(w) = fs.try_read(ino, BS, 1).unwrap() else {
        panic!("no wait")
    };
    fs.data_wait_err(ino, 0, 4 * BS, DATA_WAIT_READ, 5).unwrap();
    assert!(matches!(w.poll(), Some(Err(FsError::DataWaitFailed(5)))));
    Arc::try_unwrap(fs).unwrap().unmount().unwrap();
}

/// A stage of more blocks than the mount holds data extents for commits a step and goes
/// on with the extents the commit brings, as a write does.
#[test]
fn a_stage_larger_than_the_mounts_data_extents_goes_on_after_a_commit() {
    let devs = volume_of(64, 16, 4096);
    let fs = mount(&devs);
    let bytes = pattern(1 << 20, 12);
    let ino = file(&fs, "f", &bytes);
    let v = vers(&fs, ino);
    fs.release_data(ino, 0, 1 << 20, v).unwrap();
    fs.stage(ino, 0, &bytes, v).unwrap();
    assert_eq!(counts(&fs, ino), (256, 0, 2048));
    assert_eq!(read_now(&fs, ino, 0, 1 << 20), bytes);
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    assert_fs_clean(&devs.0, &devs.1, "after a stage in steps");
}
