//! The reference agent against a volume on memory devices: a pass archives and releases
//! exactly the changed files, the next pass only what changed since, a file written
//! while it is copied keeps its data, staging brings back the bytes at the same
//! data_version, and a blocked reader is released by `stage_waiting`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use scoutfs_core::check;
use scoutfs_core::device::{BlockDevice, MemDevice};
use scoutfs_core::fs::{Creds, Fs, FsOptions, ROOT_INO};
use scoutfs_core::volume::{mkfs, MkfsOptions};
use scoutfs_examples::agent::{archive_pass, stage_file, stage_waiting, Position};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn volume() -> (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) {
    let meta: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(64 << 20));
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(64 << 20));
    mkfs(&meta, &data, &MkfsOptions::default()).unwrap();
    (meta, data)
}

fn contents(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

fn file(fs: &Fs, name: &str, body: &[u8]) -> u64 {
    let ino = fs
        .mknod(ROOT_INO, name.as_bytes(), 0o100644, 0, Creds::default())
        .unwrap()
        .ino;
    fs.write(ino, 0, body).unwrap();
    ino
}

#[test]
fn passes_archive_what_changed_and_staging_brings_it_back() {
    let (meta, data) = volume();
    let fs = Fs::mount_single(meta.clone(), data.clone(), FsOptions::default()).unwrap();
    let archive = tempfile::tempdir().unwrap();
    let sizes = [1, 4096, 4097, 100_000, 1 << 20];
    let inos: Vec<u64> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| file(&fs, &format!("f{i}"), &contents(i, n)))
        .collect();
    let empty = file(&fs, "empty", b"");
    fs.mkdir(ROOT_INO, b"dir", 0o755, Creds::default()).unwrap();
    fs.sync().unwrap();

    let mut pos = Position::default();
    let s = archive_pass(&fs, archive.path(), &mut pos, &mut |_| {}).unwrap();
    assert_eq!(
        (s.archived, s.released),
        (sizes.len() as u64, sizes.len() as u64)
    );
    assert_eq!(s.archived_bytes, sizes.iter().sum::<usize>() as u64);
    assert_eq!(
        s.skipped, 1,
        "the empty file (directories are not in data_seq)"
    );
    for &ino in &inos {
        let m = fs.stat_more(ino).unwrap();
        assert_eq!(m.online_blocks, 0, "inode {ino} released");
        assert!(m.offline_blocks > 0);
    }
    assert_eq!(fs.stat_more(empty).unwrap().offline_blocks, 0);

    // Nothing changed: the next pass finds nothing (the releases moved meta_seq only).
    fs.sync().unwrap();
    let s = archive_pass(&fs, archive.path(), &mut pos, &mut |_| {}).unwrap();
    assert_eq!((s.changed, s.archived), (0, 0));

    // One file is staged back, rewritten (a new data_version), and archived again alone.
    let dv = fs.stat_more(inos[3]).unwrap().data_version;
    assert_eq!(
        stage_file(&fs, archive.path(), inos[3]).unwrap(),
        sizes[3] as u64
    );
    assert_eq!(
        fs.stat_more(inos[3]).unwrap().data_version,
        dv,
        "stage keeps it"
    );
    assert_eq!(fs.read(inos[3], 0, 1 << 21).unwrap(), contents(3, sizes[3]));
    fs.write(inos[3], 10, b"changed").unwrap();
    fs.sync().unwrap();
    let s = archive_pass(&fs, archive.path(), &mut pos, &mut |_| {}).unwrap();
    assert_eq!((s.changed, s.archived, s.released), (1, 1, 1));

    // Every file stages back to what it held when it was archived.
    for (i, &ino) in inos.iter().enumerate() {
        stage_file(&fs, archive.path(), ino).unwrap();
        let mut want = contents(i, sizes[i]);
        if i == 3 {
            want[10..17].copy_from_slice(b"changed");
        }
        assert_eq!(fs.read(ino, 0, 1 << 21).unwrap(), want, "file {i}");
    }
    fs.unmount().unwrap();
    let rep = check::check(&meta, &data).unwrap();
    assert!(rep.is_clean(), "{:#?}", rep.problems);
}

#[test]
fn a_damaged_copy_is_not_staged() {
    let (meta, data) = volume();
    let fs = Fs::mount_single(meta, data, FsOptions::default()).unwrap();
    let archive = tempfile::tempdir().unwrap();
    let ino = file(&fs, "f", &contents(1, 8192));
    fs.sync().unwrap();
    archive_pass(&fs, archive.path(), &mut Position::default(), &mut |_| {}).unwrap();
    let dv = fs.stat_more(ino).unwrap().data_version;
    let copy = archive.path().join(ino.to_string()).join(dv.to_string());
    let mut bytes = std::fs::read(&copy).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&copy, bytes).unwrap();
    let e = stage_file(&fs, archive.path(), ino).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
    assert_eq!(fs.stat_more(ino).unwrap().online_blocks, 0);
}

#[test]
fn a_waiting_reader_is_served_by_stage_waiting() {
    let (meta, data) = volume();
    let fs = Arc::new(Fs::mount_single(meta, data, FsOptions::default()).unwrap());
    let archive = tempfile::tempdir().unwrap();
    let body = contents(7, 50_000);
    let ino = file(&fs, "f", &body);
    fs.sync().unwrap();
    archive_pass(&fs, archive.path(), &mut Position::default(), &mut |_| {}).unwrap();
    let reader = {
        let fs = fs.clone();
        std::thread::spawn(move || fs.read(ino, 0, 1 << 20))
    };
    let t = Instant::now();
    while fs.data_waiting(0, 0, 16).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the reader never waited"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        stage_waiting(&fs, archive.path()).unwrap(),
        (1, body.len() as u64)
    );
    assert_eq!(reader.join().unwrap().unwrap(), body);
    assert!(fs.data_waiting(0, 0, 16).is_empty());
}
