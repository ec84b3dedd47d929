#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every kind of operation under cluster locks that are forgotten after each operation
//! (`common::StrictLocks`): operations over inodes of several lock groups (more than
//! 1024 inodes), seq index walks over more than 1024 transactions, `.totl.` totals and
//! `.indx.` entries, offline data, renames across groups, deletions and truncates too
//! large for one transaction, and `readdir_plus` over a directory whose entries span
//! groups. Each scenario runs with and without the locks and must give the same answers
//! and leave a clean volume; under the locks, no operation may be poisoned by finding a
//! lock missing after its first change, and the lock table checks that every lock an
//! operation waited for was taken in key order.

mod common;

use common::{assert_fs_clean, volume_of, StrictLocks};
use scoutfs_core::client::locks::ItemLocks;
use scoutfs_core::fs::*;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0o022,
};

/// Run the scenario and return what it observed.
fn scenario(fs: &Fs) -> Vec<String> {
    let mut log = Vec::new();
    let a = fs.mkdir(ROOT_INO, b"a", 0o755, C).unwrap();
    let mut files = Vec::new();
    // Enough inodes for several lock groups; a commit per few, for many seq groups.
    for i in 0..1300u32 {
        let dir = if i % 2 == 0 { a.ino } else { ROOT_INO };
        let f = fs
            .mknod(dir, format!("f{i}").as_bytes(), 0o644, 0, C)
            .unwrap();
        fs.write(f.ino, 0, &i.to_le_bytes()).unwrap();
        if i % 7 == 0 {
            fs.setxattr(f.ino, b"scoutfs.totl.t.1.2.3", b"5", XattrSet::Any)
                .unwrap();
            fs.setxattr(
                f.ino,
                format!("scoutfs.indx.x.3.{i}").as_bytes(),
                b"",
                XattrSet::Any,
            )
            .unwrap();
        }
        if i % 3 == 0 {
            fs.fsync(f.ino, false).unwrap();
        }
        files.push(f.ino);
    }
    fs.sync().unwrap();
    // Renames across directories and groups, over existing names.
    for i in (0..1300u32).step_by(97) {
        let (from, to) = if i % 2 == 0 {
            (a.ino, ROOT_INO)
        } else {
            (ROOT_INO, a.ino)
        };
        let r = fs.rename(
            from,
            format!("f{i}").as_bytes(),
            to,
            format!("f{}", (i + 1) % 1300).as_bytes(),
            RenameFlags::default(),
        );
        log.push(format!("rename {i}: {:?}", r.map_err(|e| e.errno())));
    }
    // Hard links across groups, then unlinks.
    let l = fs.link(files[5], a.ino, b"link5").unwrap();
    log.push(format!("link nlink {}", l.nlink));
    fs.unlink(a.ino, b"link5").unwrap();
    // A file too large to delete or truncate in one transaction.
    let big = fs.mknod(a.ino, b"big", 0o644, 0, C).unwrap();
    for b in 0..600u64 {
        fs.write(big.ino, b * 8192, &[1u8; 10]).unwrap();
    }
    let t = SetAttr {
        size: Some(4096),
        ..Default::default()
    };
    log.push(format!(
        "truncate {:?}",
        fs.setattr(big.ino, &t).map(|a| a.size)
    ));
    let big2 = fs.mknod(ROOT_INO, b"big2", 0o644, 0, C).unwrap();
    for b in 0..600u64 {
        fs.write(big2.ino, b * 8192, &[2u8; 10]).unwrap();
    }
    fs.unlink(ROOT_INO, b"big2").unwrap();
    // Offline data.
    let o = fs.mknod(ROOT_INO, b"off", 0o644, 0, C).unwrap();
    fs.write(o.ino, 0, &vec![9u8; 65536]).unwrap();
    let dv = fs.stat_more(o.ino).unwrap().data_version;
    fs.release_data(o.ino, 0, 65536, dv).unwrap();
    log.push(format!(
        "offline {:?}",
        fs.stat_more(o.ino).unwrap().offline_blocks
    ));
    fs.stage(o.ino, 0, &vec![8u8; 65536], dv).unwrap();
    log.push(format!("staged {:?}", &fs.read(o.ino, 0, 16).unwrap()));
    fs.sync().unwrap();
    // Reads of every kind.
    let mut n = 0;
    let mut pos = 0;
    loop {
        let mut got = 0;
        fs.readdir_plus(a.ino, pos, &mut |e, attr| {
            assert!(attr.is_some(), "{e:?}");
            pos = e.next_pos;
            got += 1;
            true
        })
        .unwrap();
        if got == 0 {
            break;
        }
        n += got;
    }
    log.push(format!("readdir_plus entries {n}"));
    let totals = fs.read_xattr_totals([0, 0, 0], 10).unwrap();
    log.push(format!("totals {totals:?}"));
    let indx = fs
        .read_xattr_index(
            IndxEntry {
                major: 0,
                minor: 0,
                ino: 0,
            },
            IndxEntry {
                major: 255,
                minor: u64::MAX,
                ino: u64::MAX,
            },
            1000,
        )
        .unwrap();
    log.push(format!("indx {}", indx.len()));
    let mut walked = 0;
    let mut first = IndexPos::default();
    let last = IndexPos {
        major: u64::MAX,
        minor: u32::MAX,
        ino: u64::MAX,
    };
    loop {
        let got = fs.walk_inodes(SeqIndex::Meta, first, last, 100).unwrap();
        let Some(e) = got.last() else { break };
        walked += got.len();
        first = IndexPos {
            major: e.major,
            minor: e.minor,
            ino: e.ino + 1,
        };
    }
    log.push(format!("walked {walked}"));
    // By name: inode numbers differ (an operation run again takes a new one).
    for i in (0..1300u32).step_by(131) {
        let dir = if i % 2 == 0 { a.ino } else { ROOT_INO };
        let got = fs
            .lookup(dir, format!("f{i}").as_bytes())
            .and_then(|at| Ok((at.nlink, at.size, fs.read(at.ino, 0, 8)?)));
        log.push(format!("f{i}: {:?}", got.map_err(|e| e.errno())));
    }
    assert_eq!(files.len(), 1300);
    log
}

fn run(locks: Option<Arc<StrictLocks>>) -> Vec<String> {
    let (meta, data) = volume_of(128, 128, 4096);
    let opts = FsOptions {
        seed: Some(11),
        cache_bytes: 8 << 20,
        item_locks: locks.clone().map(|l| l as Arc<dyn ItemLocks>),
        ..FsOptions::default()
    };
    let fs = Fs::mount_single(meta.clone(), data.clone(), opts.clone()).unwrap();
    let log = scenario(&fs);
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    // The next mount under the same locks finds nothing left to finish.
    let fs = Fs::mount_single(meta.clone(), data.clone(), opts).unwrap();
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "after the scenario");
    log
}

#[test]
fn every_operation_runs_under_the_locks_it_needs() {
    let locks = Arc::new(StrictLocks::default());
    let with = run(Some(locks.clone()));
    let without = run(None);
    assert_eq!(with, without);
    let (waits, hits) = (
        locks.waits.load(Ordering::Relaxed),
        locks.hits.load(Ordering::Relaxed),
    );
    eprintln!("strict locks: {waits} taken by waiting, {hits} used while held");
    assert!(waits > 1300, "{waits}");
}
