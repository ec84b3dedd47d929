//! The `scoutfs` binary, driven as a script would drive it.

// Tests fail loudly: unwrapping in their helpers is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

fn scoutfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scoutfs"))
        .args(args)
        .output()
        .expect("run scoutfs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn mkfs_creates_sparse_images_and_print_shows_the_root_inode() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = (dir.path().join("meta.img"), dir.path().join("data.img"));
    let out = scoutfs(&["mkfs", "-m", "1G", "-d", "2G", s(&meta), s(&data)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("total meta blocks: 16384"));
    assert_eq!(std::fs::metadata(&meta).unwrap().len(), 1 << 30);
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 2 << 30);
    // Sparse: far less than a gigabyte is allocated.
    assert!(std::fs::metadata(&meta).unwrap().blocks() * 512 < 8 << 20);

    let out = scoutfs(&["print", s(&meta)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let p = text(&out.stdout);
    assert!(p.contains("meta_block_size: 65536"), "{p}");
    assert!(p.contains("next_ino: 1024"), "{p}");
    assert!(p.contains("logs_root: empty"), "{p}");
    // The root inode: zone 16, ino 1, type 4.
    assert!(
        p.contains("    16.1.4.0.0.0 seq 1 flags 0x0 len 160"),
        "{p}"
    );
    // Its meta seq index item: zone 4, type 4, seq 1, ino 1.
    assert!(p.contains("    4.0.4.1.1.0 seq 1"), "{p}");
}

#[test]
fn mkfs_refuses_an_existing_volume_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = (dir.path().join("m"), dir.path().join("d"));
    let args = [
        "mkfs",
        "-m",
        "64M",
        "-d",
        "64M",
        "-b",
        "4K",
        s(&meta),
        s(&data),
    ];
    assert!(scoutfs(&args).status.success());
    let out = scoutfs(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("scoutfs: mkfs: "), "{err}");
    assert!(err.contains("already holds a scoutfs volume"), "{err}");
    let mut forced = args.to_vec();
    forced.insert(1, "-f");
    let out = scoutfs(&forced);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&scoutfs(&["print", s(&meta)]).stdout).contains("meta_block_size: 4096"));
}

#[test]
fn mkfs_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = (dir.path().join("m"), dir.path().join("d"));
    let cases: [(&[&str], &str); 6] = [
        (
            &["mkfs", "-m", "100K", "-d", "64M", s(&meta), s(&data)],
            "too small",
        ),
        (
            &["mkfs", "-m", "64M", "-d", "64K", s(&meta), s(&data)],
            "too small",
        ),
        (&["mkfs", s(&meta), s(&data)], "does not exist"),
        (
            &[
                "mkfs",
                "-m",
                "64M",
                "-d",
                "64M",
                "-b",
                "3000",
                s(&meta),
                s(&data),
            ],
            "power of two",
        ),
        (
            &[
                "mkfs",
                "-m",
                "64M",
                "-d",
                "64M",
                "-b",
                "512",
                s(&meta),
                s(&data),
            ],
            "power of two",
        ),
        (
            &["mkfs", "-m", "64M", "-d", "64M", s(&meta), s(&meta)],
            "must differ",
        ),
    ];
    for (args, msg) in cases {
        let _ = std::fs::remove_file(&meta);
        let _ = std::fs::remove_file(&data);
        let out = scoutfs(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(msg), "{args:?}: {err}");
    }
    // Usage errors come from the argument parser with status 2.
    for args in [
        &["mkfs", "-m", "12Q", "a", "b"][..],
        &["mkfs", "-m", "0", "a", "b"],
        &["nope"],
    ] {
        let out = scoutfs(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    // A directory is not a device.
    let out = scoutfs(&["mkfs", "-m", "64M", "-d", "64M", s(dir.path()), s(&data)]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn print_fails_cleanly_on_garbage_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0x5au8; 300_000]).unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    for p in [
        &junk,
        &empty,
        &dir.path().join("missing"),
        &dir.path().to_path_buf(),
    ] {
        let out = scoutfs(&["print", s(p)]);
        assert_eq!(out.status.code(), Some(1), "{p:?}");
        assert!(text(&out.stderr).starts_with("scoutfs: print: "));
    }

    // Damage the filesystem root's block: print reports it and fails.
    let (meta, data) = (dir.path().join("m"), dir.path().join("d"));
    assert!(scoutfs(&[
        "mkfs",
        "-m",
        "64M",
        "-d",
        "64M",
        "-b",
        "4K",
        s(&meta),
        s(&data)
    ])
    .status
    .success());
    let p = text(&scoutfs(&["print", s(&meta)]).stdout);
    let line = p
        .lines()
        .find(|l| l.starts_with("  fs_root: blkno "))
        .unwrap();
    let blkno: u64 = line.split_whitespace().nth(2).unwrap().parse().unwrap();
    let mut bytes = std::fs::read(&meta).unwrap();
    bytes[(blkno * 4096 + 100) as usize] ^= 0xff;
    std::fs::write(&meta, &bytes).unwrap();
    let out = scoutfs(&["print", s(&meta)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("error: stale or damaged metadata block"));
    assert!(text(&out.stderr).contains("damaged trees: fs_root"));
}
