//! The `scoutfs` binary, driven as a script would drive it.

// Tests fail loudly: unwrapping in their helpers is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::format::Key;
use scoutfs_core::fs::{Creds, Fs, FsOptions, ROOT_INO};
use scoutfs_core::volume::{OpenOptions, Volume};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

fn scoutfs<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
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

/// Run and expect success; the standard output.
fn ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = scoutfs(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// Run and expect a runtime failure (status 1) with a `scoutfs: SUBCOMMAND: ` message
/// and no panic; the standard output and the message.
fn fails(args: &[&str]) -> (String, String) {
    let out = scoutfs(args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(
        err.starts_with(&format!("scoutfs: {}: ", args[0])),
        "{args:?}: {err}"
    );
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    (text(&out.stdout), err)
}

/// mkfs a small volume (4 KiB blocks) in two new image files.
fn small_volume(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (meta, data) = (dir.join("meta.img"), dir.join("data.img"));
    ok(&[
        "mkfs",
        "-m",
        "64M",
        "-d",
        "64M",
        "-b",
        "4K",
        s(&meta),
        s(&data),
    ]);
    (meta, data)
}

/// The blkno a `NAME: blkno N ...` line of print's super dump gives.
fn root_blkno(print: &str, name: &str) -> u64 {
    let prefix = format!("  {name}: blkno ");
    let line = print.lines().find(|l| l.starts_with(&prefix)).unwrap();
    line[prefix.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Flip a byte inside metadata block `blkno` of a volume with 4 KiB blocks.
fn damage_block(meta: &Path, blkno: u64) {
    let mut bytes = std::fs::read(meta).unwrap();
    bytes[(blkno * 4096 + 100) as usize] ^= 0xff;
    std::fs::write(meta, &bytes).unwrap();
}

#[test]
fn mkfs_creates_sparse_images_and_print_shows_the_root_inode() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = (dir.path().join("meta.img"), dir.path().join("data.img"));
    let out = ok(&["mkfs", "-m", "1G", "-d", "2G", s(&meta), s(&data)]);
    assert!(out.contains("meta block size:   65536"), "{out}");
    assert!(out.contains("total meta blocks: 16384 (1 GiB)"), "{out}");
    assert!(out.contains("total data blocks: 524288 (2 GiB)"), "{out}");
    let fsid = out
        .lines()
        .find_map(|l| l.strip_prefix("  fsid:"))
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(fsid.len(), 16, "{out}");
    assert_eq!(std::fs::metadata(&meta).unwrap().len(), 1 << 30);
    assert_eq!(std::fs::metadata(&data).unwrap().len(), 2 << 30);
    // Sparse: far less than a gigabyte is allocated.
    assert!(std::fs::metadata(&meta).unwrap().blocks() * 512 < 8 << 20);
    assert!(std::fs::metadata(&data).unwrap().blocks() * 512 < 8 << 20);

    let p = ok(&["print", s(&meta)]);
    for field in [
        "super block:",
        &format!("  fsid: {fsid}"),
        "  id: 00736674756f6373",
        "  fmt_vers: 2",
        "  flags: 0x1",
        "  seq: 1",
        "  next_ino: 1024",
        "  inode_count: 1",
        "  total_meta_blocks: 16384",
        "  total_data_blocks: 524288",
        "  meta_block_size: 65536",
        "  data_alloc: total_len 524224 ",
        "  server_meta_freed[1]: blkno 0",
        "  reserved: 3608 bytes, 0 not zero",
        "logs_root: empty",
        "log_merge: empty",
        "mounted_clients: empty",
        "srch_root: empty",
        "\nmeta_alloc[0]: blkno ",
    ] {
        assert!(p.contains(field), "{field:?} missing from:\n{p}");
    }
    assert!(
        p.lines()
            .any(|l| l.starts_with("  uuid: ") && l.len() == "  uuid: ".len() + 32),
        "{p}"
    );
    // The filesystem root is one leaf holding the root inode (zone 16, ino 1, type 4)
    // and its meta seq index item (zone 4, type 4, seq 1, ino 1).
    assert!(
        p.contains(" level 0 nr_items 2 range 0.0.0.0.0.0 .. "),
        "{p}"
    );
    assert!(
        p.contains("\n    16.1.4.0.0.0 seq 1 flags 0x0 len 160 val "),
        "{p}"
    );
    assert!(
        p.contains("\n    4.0.4.1.1.0 seq 1 flags 0x0 len 0\n"),
        "{p}"
    );
}

#[test]
fn mkfs_refuses_an_existing_volume_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = small_volume(dir.path());
    let args = ["mkfs", "-b", "4K", s(&meta), s(&data)];
    let (_, err) = fails(&args);
    assert!(err.contains("already holds a scoutfs volume"), "{err}");
    assert!(err.contains("--force"), "{err}");
    let before = root_blkno(&ok(&["print", s(&meta)]), "fs_root");
    assert!(before > 0);

    let out = ok(&["mkfs", "-f", "-b", "4K", s(&meta), s(&data)]);
    assert!(out.contains("total meta blocks: 16384 (64 MiB)"), "{out}");
    let out = ok(&["mkfs", "--force", "-b", "1K", s(&meta), s(&data)]);
    assert!(out.contains("meta block size:   1024"), "{out}");
    assert!(ok(&["print", s(&meta)]).contains("meta_block_size: 1024"));
    // -m limits how much of an existing device is used.
    let out = ok(&["mkfs", "-f", "-m", "8M", s(&meta), s(&data)]);
    assert!(out.contains("total meta blocks: 128 (8 MiB)"), "{out}");
}

#[test]
fn mkfs_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = (dir.path().join("m"), dir.path().join("d"));
    let same = format!("{}/./m", s(dir.path()));
    let missing_dir = dir.path().join("no/such/dir/m");
    let cases: [(&[&str], &str); 8] = [
        (
            &["mkfs", "-m", "100K", "-d", "64M", s(&meta), s(&data)],
            "meta device is too small: 102400 bytes, at least",
        ),
        (
            &["mkfs", "-m", "64M", "-d", "64K", s(&meta), s(&data)],
            "data device is too small",
        ),
        (
            &["mkfs", s(&meta), s(&data)],
            "does not exist; give its size with --max-meta-size",
        ),
        (
            &["mkfs", "-m", "64M", s(&meta), s(&data)],
            "does not exist; give its size with --max-data-size",
        ),
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
            &["mkfs", "-m", "64M", "-d", "64M", s(&meta), &same],
            "must differ",
        ),
        (
            &["mkfs", "-m", "64M", "-d", "64M", s(&missing_dir), s(&data)],
            "cannot create",
        ),
    ];
    for (args, msg) in cases {
        let (_, err) = fails(args);
        assert!(err.contains(msg), "{args:?}: {err}");
        // A failed mkfs leaves no image files behind.
        assert!(!meta.exists() && !data.exists(), "{args:?} left files");
    }
    // A directory is not a device, and an existing device is not removed on failure.
    std::fs::write(&data, vec![0u8; 256 << 10]).unwrap();
    let (_, err) = fails(&["mkfs", "-m", "64M", s(dir.path()), s(&data)]);
    assert!(err.contains("cannot open"), "{err}");
    let (_, err) = fails(&["mkfs", "-m", "64M", s(&meta), s(&data)]);
    assert!(err.contains("data device is too small"), "{err}");
    assert!(data.exists() && !meta.exists());
}

#[test]
fn bad_sizes_and_usage_are_usage_errors() {
    let cases: [(&[&str], &str); 12] = [
        (&["mkfs", "-m", "12Q", "a", "b"], "invalid size '12Q'"),
        (&["mkfs", "-m", "0", "a", "b"], "must be greater than zero"),
        (&["mkfs", "-d", "0K", "a", "b"], "must be greater than zero"),
        (&["mkfs", "-m", "", "a", "b"], "invalid size ''"),
        (&["mkfs", "-m", "1.5G", "a", "b"], "invalid size '1.5G'"),
        (&["mkfs", "-m", "-1", "a", "b"], "unexpected argument '-1'"),
        (&["mkfs", "-m", "99999999P", "a", "b"], "too large"),
        (&["mkfs", "-b", "64KK", "a", "b"], "invalid size '64KK'"),
        (&["mkfs", "a"], "DATA_DEVICE"),
        (&["print"], "META_DEVICE"),
        (&["print", "a", "b"], "unexpected argument"),
        (&["nope"], "unrecognized subcommand"),
    ];
    for (args, msg) in cases {
        let out = scoutfs(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(msg), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    assert!(!Path::new("a").exists() && !Path::new("b").exists());
}

#[test]
fn print_fails_cleanly_on_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk");
    std::fs::write(&junk, vec![0x5au8; 300_000]).unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    for (p, msg) in [
        (junk.clone(), "holds no scoutfs super block"),
        (empty, "holds no scoutfs super block"),
        (dir.path().join("missing"), "cannot open"),
        (dir.path().to_path_buf(), "cannot open"),
    ] {
        let (_, err) = fails(&["print", s(&p)]);
        assert!(err.contains(msg), "{p:?}: {err}");
    }

    let (meta, data) = small_volume(dir.path());
    // The data device's super is not the meta device's.
    let (out, err) = fails(&["print", s(&data)]);
    assert!(out.contains("  flags: 0x0"), "{out}");
    assert!(err.contains("super block of a data device"), "{err}");
    // A truncated image: the super is there, the blocks are not.
    let bytes = std::fs::read(&meta).unwrap();
    let trunc = dir.path().join("trunc");
    std::fs::write(&trunc, &bytes[..80 * 1024]).unwrap();
    let (out, err) = fails(&["print", s(&trunc)]);
    assert!(out.contains("meta_block_size: 4096"), "{out}");
    assert!(err.contains("fs_root: read of 4096 bytes"), "{err}");
    assert!(err.contains("is it truncated?"), "{err}");
    // A damaged super (both slots): no super to print.
    let mut bytes = bytes;
    bytes[64 * 1024 + 200] ^= 1;
    bytes[68 * 1024 + 200] ^= 1;
    std::fs::write(&trunc, &bytes).unwrap();
    let (out, err) = fails(&["print", s(&trunc)]);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("super block is invalid: checksum mismatch"),
        "{err}"
    );
}

#[test]
fn print_reports_a_damaged_root_block() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, _) = small_volume(dir.path());
    let blkno = root_blkno(&ok(&["print", s(&meta)]), "fs_root");
    damage_block(&meta, blkno);
    let (out, err) = fails(&["print", s(&meta)]);
    assert!(
        out.contains(&format!(
            "  error: stale or damaged metadata block {blkno}: checksum"
        )),
        "{out}"
    );
    // The other trees are still printed after the damaged one.
    assert!(out.contains("\ndata_alloc: blkno "), "{out}");
    assert!(
        err.starts_with(&format!(
            "scoutfs: print: damaged trees: fs_root: stale or damaged metadata block {blkno}"
        )),
        "{err}"
    );
}

/// A volume with 4 KiB blocks whose filesystem tree has parents: 3000 items besides the
/// root inode.
fn deep_volume(dir: &Path) -> std::path::PathBuf {
    let (meta, data) = small_volume(dir);
    let m: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&meta).unwrap());
    let d: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&data).unwrap());
    let mut vol = Volume::open(m, d, OpenOptions::default()).unwrap();
    for i in 0..3000u64 {
        vol.put(&Key::new(200, i, 0, 0, 0, 0), &[i as u8; 40])
            .unwrap();
    }
    vol.commit().unwrap();
    meta
}

#[test]
fn print_walks_parents_and_stops_at_a_damaged_leaf() {
    let dir = tempfile::tempdir().unwrap();
    let meta = deep_volume(dir.path());
    let p = ok(&["print", s(&meta)]);
    assert!(p.contains("  fs_root: blkno "), "{p}");
    assert!(p.contains(" level 1 nr_items "), "{p}");
    assert!(
        p.contains(
            "\n    200.0.0.0.0.0 seq 0 flags 0x0 len 40 val 00000000000000000000000000000000..\n"
        ),
        "{p}"
    );
    assert!(p.contains("\n    200.2999.0.0.0.0 seq 0 flags 0x0 len 40 val b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7b7..\n"), "{p}");
    // A parent item: its key, then the child it leads to.
    let child: u64 = p
        .lines()
        .filter(|l| l.contains(" len 16 -> blkno "))
        .nth(3)
        .unwrap()
        .split(" -> blkno ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let leaves = p.matches(" level 0 ").count();
    assert!(leaves > 10, "{p}");

    damage_block(&meta, child);
    let (out, err) = fails(&["print", s(&meta)]);
    // What was read before the damaged leaf is printed: the parent and the leaves before it.
    assert!(out.contains(" level 1 nr_items "), "{out}");
    assert!(out.contains(" level 0 ") && out.matches(" level 0 ").count() < leaves);
    assert!(
        out.contains(&format!("  error: stale or damaged metadata block {child}")),
        "{out}"
    );
    assert!(err.contains("damaged trees: fs_root"), "{err}");
}

#[test]
fn print_to_a_closed_pipe_stops_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let meta = deep_volume(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_scoutfs"))
        .args(["print", s(&meta)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before reading anything (`scoutfs print | head -0`).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(err.is_empty(), "{err}");
}

/// Damage inside blocks whose checksums are then fixed up, so the damage gets past
/// verification into the decoding of the tree: print may fail, never panic.
#[test]
fn print_survives_damage_behind_valid_checksums() {
    let dir = tempfile::tempdir().unwrap();
    let meta = deep_volume(dir.path());
    let clean = std::fs::read(&meta).unwrap();
    let p = ok(&["print", s(&meta)]);
    let blknos: Vec<u64> = p
        .lines()
        .filter_map(|l| l.strip_prefix("  block blkno "))
        .map(|l| l.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(blknos.len() > 10);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let file = std::fs::OpenOptions::new().write(true).open(&meta).unwrap();
    let (mut failed, runs) = (0, 150);
    for _ in 0..runs {
        let blkno = blknos[next(blknos.len() as u64) as usize];
        let at = blkno as usize * 4096;
        let mut block = clean[at..at + 4096].to_vec();
        // Mostly the header and item offsets at the front, sometimes the item heap.
        for _ in 0..=next(3) {
            let i = if next(2) == 0 {
                32 + next(64)
            } else {
                32 + next(4064)
            };
            block[i as usize] = next(256) as u8;
        }
        scoutfs_core::block::seal_block(&mut block);
        file.write_all_at(&block, at as u64).unwrap();
        let out = scoutfs(&["print", s(&meta)]);
        file.write_all_at(&clean[at..at + 4096], at as u64).unwrap();
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "block {blkno}: {err}");
        match out.status.code() {
            Some(0) => assert!(err.is_empty(), "{err}"),
            Some(1) => {
                assert!(err.starts_with("scoutfs: print: "), "{err}");
                failed += 1;
            }
            other => panic!("block {blkno}: status {other:?}: {err}"),
        }
    }
    // Most of that damage is noticed.
    assert!(failed > runs / 2, "only {failed} of {runs} runs failed");
}

/// Run `check` and expect the volume to be clean: the summary line, nothing on stderr.
fn check_clean(meta: &Path, data: &Path) -> String {
    let out = scoutfs(&["check", s(meta), s(data)]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    // No progress bar when stderr is not a terminal.
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.ends_with("; 0 problems\n"), "{stdout}");
    stdout
}

/// Mount the volume in the image files in this process, make 100 files and write
/// `blocks` data blocks into the first, and unmount.
fn write_through_a_mount(meta: &Path, data: &Path, blocks: u64) {
    let fs = mount_in_process(meta, data);
    let first = fs.mknod(ROOT_INO, b"f0", 0o644, 0, CREDS).unwrap().ino;
    for i in 1..100 {
        fs.mknod(ROOT_INO, format!("f{i}").as_bytes(), 0o644, 0, CREDS)
            .unwrap();
    }
    let chunk = vec![0x5a; 1 << 20];
    let mut off = 0;
    while off < blocks * 4096 {
        let n = (blocks * 4096 - off).min(chunk.len() as u64) as usize;
        fs.write(first, off, &chunk[..n]).unwrap();
        off += n as u64;
    }
    fs.unmount().unwrap();
}

const CREDS: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0o022,
};

/// The filesystem on the image files, mounted in this process.
fn mount_in_process(meta: &Path, data: &Path) -> Fs {
    let m: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(meta).unwrap());
    let d: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(data).unwrap());
    Fs::mount_single(m, d, FsOptions::default()).unwrap()
}

#[test]
fn check_passes_fresh_and_written_volumes() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = small_volume(dir.path());
    let out = check_clean(&meta, &data);
    assert!(
        out.contains("data blocks: 0 referenced, 16320 free, 16320 total"),
        "{out}"
    );
    write_through_a_mount(&meta, &data, 100);
    let out = check_clean(&meta, &data);
    assert!(
        out.contains("data blocks: 100 referenced, 16220 free, 16320 total"),
        "{out}"
    );
}

#[test]
fn check_reports_problems_one_per_line_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = small_volume(dir.path());

    // A leaked metadata block.
    let leaked = {
        let m: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&meta).unwrap());
        let d: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&data).unwrap());
        let mut vol = Volume::open(m, d, OpenOptions::default()).unwrap();
        let b = vol.alloc_meta_block().unwrap();
        vol.commit().unwrap();
        b
    };
    assert_eq!(
        check_one_problem(&meta, &data),
        format!("metadata block {leaked} leaked: neither referenced nor free")
    );

    // And a bit flip in the filesystem root.
    let blkno = root_blkno(&ok(&["print", s(&meta)]), "fs_root");
    damage_block(&meta, blkno);
    let (out, err) = fails(&["check", s(&meta), s(&data)]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "fs_root: metadata block {blkno} does not verify: checksum "
        )),
        "{out}"
    );
    assert!(
        lines[1].contains(&format!("block {leaked} leaked")),
        "{out}"
    );
    assert!(lines[2].ends_with("; 2 problems"), "{out}");
    assert_eq!(err, "scoutfs: check: 2 problems found\n");
}

#[test]
fn check_names_the_inode_of_a_namespace_problem() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = small_volume(dir.path());
    write_through_a_mount(&meta, &data, 10);
    // Unlink f0 with its 10 blocks while it is open, then take its orphan item away (as
    // an unlink that committed half would): a leak of an inode and its data.
    let fs = mount_in_process(&meta, &data);
    let ino = fs.lookup(ROOT_INO, b"f0").unwrap().ino;
    fs.open(ino).unwrap();
    fs.unlink(ROOT_INO, b"f0").unwrap();
    fs.unmount().unwrap();
    let out = check_clean(&meta, &data);
    assert!(out.contains("; 101 inodes; "), "{out}");
    {
        use scoutfs_core::client::Client;
        use scoutfs_core::format::orphan_key;
        use scoutfs_core::server::{Server, ServerCore, ServerOptions};
        use scoutfs_core::transport::LocalTransport;
        let m: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&meta).unwrap());
        let d: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(&data).unwrap());
        let core = ServerCore::open(m.clone(), d, ServerOptions::default()).unwrap();
        let cache = core.cache().clone();
        let t = Arc::new(LocalTransport::new(Arc::new(Server::new(core))));
        let mut c = Client::mount(t, m, cache, 9, 1).unwrap();
        c.delete(&orphan_key(ino)).unwrap();
        c.commit().unwrap();
        c.unmount().unwrap();
    }
    assert_eq!(
        check_one_problem(&meta, &data),
        format!("inode {ino}: no links and no orphan item")
    );
}

/// Run `check` and expect it to find one problem: its line.
fn check_one_problem(meta: &Path, data: &Path) -> String {
    let (out, err) = fails(&["check", s(meta), s(data)]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[1].ends_with("; 1 problem"), "{out}");
    assert_eq!(err, "scoutfs: check: 1 problem found\n");
    lines[0].to_string()
}

#[test]
fn check_that_cannot_run_exits_8() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = small_volume(dir.path());
    let code = |args: &[&str]| {
        let o = scoutfs(args);
        let err = text(&o.stderr);
        assert!(o.stdout.is_empty() && !err.contains("panicked"), "{err}");
        (o.status.code(), err)
    };
    let (c, err) = code(&["check", s(&dir.path().join("missing.img")), s(&data)]);
    assert_eq!(c, Some(8), "{err}");
    assert!(err.starts_with("scoutfs: check: cannot open "), "{err}");
    // The devices the wrong way round.
    let (c, err) = code(&["check", s(&data), s(&meta)]);
    assert_eq!(c, Some(8), "{err}");
    assert!(
        err.contains("meta device holds a data device super"),
        "{err}"
    );
    // No volume at all.
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0u8; 1 << 20]).unwrap();
    let (c, err) = code(&["check", s(&junk), s(&data)]);
    assert_eq!(c, Some(8), "{err}");
    assert!(err.contains("holds no scoutfs super block"), "{err}");
    // Usage errors are 2, as for every subcommand.
    let (c, _) = code(&["check", s(&meta)]);
    assert_eq!(c, Some(2));
}

#[test]
fn df_prints_the_original_table() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = small_volume(dir.path());
    let out = ok(&["df", s(&meta), s(&data)]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], ["Type", "Size", "Total", "Used", "Free", "Use%"]);
    assert_eq!(lines[1][..3], ["MetaData", "4KB", "16384"], "{out}");
    assert_eq!(
        lines[2],
        ["Data", "4KB", "16384", "64", "16320", "1%"],
        "{out}"
    );
    // Used + free = total, and the reserve is counted as used.
    let (used, free): (u64, u64) = (lines[1][3].parse().unwrap(), lines[1][4].parse().unwrap());
    assert_eq!(used + free, 16384);
    assert!(used > 4, "the reserve is not free: {out}");

    let plain = lines.clone();

    let out = ok(&["df", "-h", s(&meta), s(&data)]);
    assert_eq!(out, ok(&["df", "--human-readable", s(&meta), s(&data)]));
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["Type", "Size", "Total", "Used", "Free", "Use%"]);
    assert_eq!(lines[1][..3], ["MetaData", "4KB", "64M"], "{out}");
    assert_eq!(lines[1][5], plain[1][5], "{out}");
    assert_eq!(
        lines[2],
        ["Data", "4KB", "64M", "256K", "64M", "1%"],
        "{out}"
    );

    // Data written through a mount is used space.
    write_through_a_mount(&meta, &data, 4096);
    let out = ok(&["df", s(&meta), s(&data)]);
    assert_eq!(
        out.lines()
            .nth(2)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["Data", "4KB", "16384", "4160", "12224", "26%"],
        "{out}"
    );
    let out = ok(&["df", "-h", s(&meta), s(&data)]);
    assert_eq!(
        out.lines()
            .nth(2)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["Data", "4KB", "64M", "16M", "48M", "26%"],
        "{out}"
    );
}

/// The fsid `print` shows for a volume's meta device.
fn fsid(meta: &Path) -> String {
    let out = ok(&["print", s(meta)]);
    let line = out.lines().find(|l| l.starts_with("  fsid: ")).unwrap();
    line["  fsid: ".len()..].to_string()
}

/// An exclusive `flock` on `path`, as a mount's daemon holds its devices.
fn hold(path: &Path) -> nix::fcntl::Flock<std::fs::File> {
    let f = std::fs::File::open(path).unwrap();
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap()
}

#[test]
fn mkfs_and_check_refuse_devices_held_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = small_volume(dir.path());
    let before = fsid(&meta);
    for held in [&meta, &data] {
        let lock = hold(held);
        for force in [&["-f"][..], &[]] {
            let mut args = vec!["mkfs"];
            args.extend_from_slice(force);
            args.extend(["-b", "4K", s(&meta), s(&data)]);
            let (_, err) = fails(&args);
            // Named, with its holder (this test's process), whatever -f says.
            assert!(err.contains(&format!("{} is in use", s(held))), "{err}");
            assert!(
                err.contains(&format!("pid {}", std::process::id())),
                "{err}"
            );
            assert!(err.contains("-f does not override"), "{err}");
        }
        assert_eq!(fsid(&meta), before, "the volume was formatted again");
        drop(lock);
    }
    // A data device held by someone else: check says so instead of reading a device
    // that changes (after a short wait for a mount of this volume going away).
    let lock = hold(&data);
    let o = scoutfs(&["check", s(&meta), s(&data)]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(8), "{err}");
    assert!(
        err.contains(&format!("DATA-DEVICE {} is in use", s(&data))),
        "{err}"
    );
    drop(lock);
    // Let go: both work again.
    check_clean(&meta, &data);
    ok(&["mkfs", "-f", "-b", "4K", s(&meta), s(&data)]);
    assert_ne!(fsid(&meta), before);
}

#[test]
fn check_names_the_two_volumes_of_mismatched_devices() {
    let dir = tempfile::tempdir().unwrap();
    let (meta, _) = small_volume(dir.path());
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let (other_meta, other_data) = small_volume(&other);
    let o = scoutfs(&["check", s(&meta), s(&other_data)]);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(8), "{err}");
    assert!(err.contains("belong to two volumes"), "{err}");
    assert!(err.contains(&fsid(&meta)), "{err}");
    assert!(err.contains(&fsid(&other_meta)), "{err}");
}

/// The agent commands' usage errors found after parsing: the original's argp lines,
/// exit status 64, before anything is opened.
#[test]
fn agent_usage_errors_are_the_originals() {
    let cases: [(&[&str], &str, &str); 18] = [
        (&["stat"], "stat", "missing operand"),
        (&["release"], "release", "must provide file path"),
        (
            &["release", "f"],
            "release",
            "must provide file version --data-version",
        ),
        (
            &["release", "f", "-V", "0"],
            "release",
            "must provide file version --data-version",
        ),
        (&["stage"], "stage", "must provide archive file path"),
        (&["stage", "a"], "stage", "must provide to-stage file path"),
        (
            &["stage", "a", "f", "-l", "4K"],
            "stage",
            "must provide file version with --data-version",
        ),
        (
            &["setattr", "-V", "0", "-s", "1", "f"],
            "setattr",
            "data version must not be 0",
        ),
        (
            &["setattr", "-V", "1", "-o", "-s", "0", "f"],
            "setattr",
            "must provide size if using --offline option",
        ),
        (
            &["setattr", "-s", "1", "f"],
            "setattr",
            "must provide data-version if using --size option",
        ),
        (&["setattr"], "setattr", "no filename given"),
        (
            &["data-waiting", "-I", "1"],
            "data-waiting",
            "no blkno given",
        ),
        (
            &[
                "data-wait-err",
                "-I",
                "1",
                "-V",
                "1",
                "-F",
                "0",
                "-C",
                "1",
                "-O",
                "read",
            ],
            "data-wait-err",
            "no error given",
        ),
        (
            &["data-wait-err", "-E", "5"],
            "data-wait-err",
            "errno out of range",
        ),
        (
            &["get-fiemap", "-P", "-L", "f"],
            "get-fiemap",
            "can't pass both -P and -L options",
        ),
        (
            &["walk-inodes", "meta_seq", "0"],
            "walk-inodes",
            "no last entry given",
        ),
        (
            &["search-xattrs"],
            "search-xattrs",
            "must provide xattr containing .srch. scoutfs tag",
        ),
        (
            &["list-hidden-xattrs"],
            "list-hidden-xattrs",
            "must specify filename",
        ),
    ];
    for (args, name, msg) in cases {
        let out = scoutfs(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert_eq!(
            text(&out.stderr),
            format!(
                "{name}: {msg}\nTry `{name} --help' or `{name} --usage' for more information.\n"
            ),
            "{args:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let usage = ok(&["release", "--usage"]);
    assert!(usage.starts_with("Usage: release "), "{usage}");
}

/// Bad values of the agent commands' options are parse errors (status 2) naming the value,
/// and devices go in pairs, never with -p.
#[test]
fn agent_bad_values_are_parse_errors() {
    let cases: [(&[&str], &str); 8] = [
        (&["release", "f", "-V", "x"], "invalid 64bit value: 'x'"),
        (
            &["release", "f", "-V", "1", "-o", "4Q"],
            "unknown suffix: 'Q'",
        ),
        (
            &["setattr", "-t", "12", "f"],
            "invalid timespec string: '12'",
        ),
        (
            &["setattr", "-t", "1.1000000000", "f"],
            "invalid timespec nsec value",
        ),
        (
            &["data-waiting", "-I", "-", "-B", "0"],
            "invalid 64bit value",
        ),
        (&["data-wait-err", "-E", "x"], "invalid 64bit value: 'x'"),
        (
            &["walk-inodes", "--meta-device", "m", "meta_seq", "0", "-1"],
            "--data-device",
        ),
        (
            &["statfs", "--meta-device", "m", "--data-device", "d"],
            "unexpected argument",
        ),
    ];
    for (args, msg) in cases {
        let out = scoutfs(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(msg), "{args:?}: {err}");
    }
    let out = scoutfs(&[
        "read-xattr-totals",
        "-p",
        "/",
        "--meta-device",
        "m",
        "--data-device",
        "d",
    ]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).contains("-p names a mount"));
}

/// Errors the agent commands find in their arguments are the original's lines and errno,
/// and `--json` adds the error document on stdout.
#[test]
fn agent_argument_errors_print_the_originals_lines() {
    let cases: [(&[&str], &str, &str); 6] = [
        (
            &["walk-inodes", "bogus", "0", "-1"],
            "walk-inodes",
            "unknown index 'bogus', try 'meta_seq' or 'data_seq'\n",
        ),
        (
            &["walk-inodes", "meta_seq", "1.x", "-1"],
            "walk-inodes",
            "invalid first position '1.x', try '1.2.3' or '-1'\n",
        ),
        (
            &["stat", "-s", "bogus", "f"],
            "stat",
            "unknown field: 'bogus'\n",
        ),
        (
            &["statfs", "-s", "crtime"],
            "statfs",
            "unknown field: 'crtime'\n",
        ),
        (
            &["read-xattr-index", "2.0.0", "1.0.0"],
            "read-xattr-index",
            "first index position 2.0.0 must be less than last index position 1.0.0\n",
        ),
        (
            &[
                "data-wait-err",
                "-I",
                "1",
                "-V",
                "1",
                "-F",
                "0",
                "-C",
                "1",
                "-O",
                "bogus",
                "-E",
                "-5",
            ],
            "data-wait-err",
            "invalid data wait op: 'bogus'\n",
        ),
    ];
    for (args, name, line) in cases {
        let out = scoutfs(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.ends_with(&format!(
                "{line}scoutfs: {name} failed: Invalid argument (22)\n"
            )),
            "{args:?}: {err}"
        );
    }
    let out = scoutfs(&["read-xattr-index", "256.0.0", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("initial major index position '256' must be between"));
    assert_eq!(
        text(&out.stdout),
        "{\"error\":{\"errno\":22,\"name\":\"EINVAL\",\
         \"message\":\"read-xattr-index: Invalid argument\"}}\n"
    );
}

/// `walk-inodes`, `read-xattr-totals`, `read-xattr-index` and `list-hidden-xattrs` of the
/// committed state of an unmounted volume (the devices given instead of a mount), in the
/// original's text and as JSON; refused while another process holds the devices.
#[test]
fn agent_reads_of_an_unmounted_volume() {
    use scoutfs_core::fs::XattrSet;
    let dir = tempfile::tempdir().unwrap();
    let (meta, data) = small_volume(dir.path());
    let fs = mount_in_process(&meta, &data);
    let mut inos = Vec::new();
    for i in 0..30 {
        inos.push(
            fs.mknod(ROOT_INO, format!("f{i}").as_bytes(), 0o100644, 0, CREDS)
                .unwrap()
                .ino,
        );
    }
    for (ino, v) in [(inos[0], "5"), (inos[1], "7")] {
        fs.setxattr(ino, b"scoutfs.totl.t.1.2.3", v.as_bytes(), XattrSet::Any)
            .unwrap();
    }
    fs.setxattr(inos[2], b"scoutfs.indx.x.9.77", b"", XattrSet::Any)
        .unwrap();
    for &ino in &inos[3..6] {
        fs.setxattr(ino, b"scoutfs.srch.agent", b"1", XattrSet::Any)
            .unwrap();
    }
    fs.unmount().unwrap();
    let dev = ["--meta-device", s(&meta), "--data-device", s(&data)];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter()
            .chain(dev.iter())
            .map(|a| a.to_string())
            .collect()
    };

    let walk = ok(&with(&["walk-inodes", "meta_seq", "0", "-1"]));
    let rows: Vec<&str> = walk.lines().filter(|l| !l.starts_with('#')).collect();
    let headers = walk.lines().filter(|l| l.starts_with('#')).count();
    assert_eq!(headers, rows.len().div_ceil(25), "{walk}");
    assert!(walk.starts_with("#                    major"), "{walk}");
    let walked: Vec<u64> = rows
        .iter()
        .map(|r| r.split_whitespace().nth(3).unwrap().parse().unwrap())
        .collect();
    for (n, r) in rows.iter().enumerate() {
        assert_eq!(r.split_whitespace().next(), Some(n.to_string().as_str()));
    }
    for ino in &inos {
        assert!(walked.contains(ino), "{ino} not walked: {walk}");
    }
    let json: serde_json::Value = serde_json::from_str(&ok(&with(&[
        "walk-inodes",
        "meta_seq",
        "0",
        "-1",
        "--json",
    ])))
    .unwrap();
    assert_eq!(json["index"], "meta_seq");
    let jinos: Vec<u64> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ino"].as_u64().unwrap())
        .collect();
    assert_eq!(jinos, walked);
    // The data_seq index has no directories: not the root.
    let dwalk = ok(&with(&["walk-inodes", "data_seq", "0", "-1"]));
    assert!(!dwalk
        .lines()
        .any(|l| l.split_whitespace().nth(3) == Some("1")));

    assert_eq!(ok(&with(&["read-xattr-totals"])), "1.2.3 = 12, 2\n");
    assert_eq!(
        ok(&with(&["read-xattr-index", "9.0.0", "9.-1.-1"])),
        format!("9.77 = {}\n", inos[2])
    );
    assert_eq!(ok(&with(&["read-xattr-index", "10.0.0"])), "");
    let found = ok(&with(&["search-xattrs", "scoutfs.srch.agent"]));
    for ino in &inos[3..6] {
        assert!(
            found.lines().any(|l| l == ino.to_string()),
            "{ino}: {found}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&ok(&with(&[
        "search-xattrs",
        "scoutfs.srch.agent",
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        json["inodes"].as_array().unwrap().len(),
        found.lines().count()
    );
    let out = scoutfs(&with(&["search-xattrs", "user.agent"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("search_xattrs ioctl failed: Invalid argument (22)"),
        "{}",
        text(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&with(&["read-xattr-totals", "--json"]))).unwrap();
    assert_eq!(
        json["totals"],
        serde_json::json!([{"name": [1, 2, 3], "total": 12, "count": 2}])
    );

    // stat takes an inode number offline.
    let stat = ok(&with(&["stat", &inos[0].to_string()]));
    let names: Vec<&str> = stat.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        names,
        [
            "meta_seq",
            "data_seq",
            "data_version",
            "online_blocks",
            "offline_blocks",
            "crtime"
        ]
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&with(&["stat", "--json", &inos[0].to_string()]))).unwrap();
    assert_eq!(json["ino"].as_u64(), Some(inos[0]));
    assert_eq!(
        ok(&with(&[
            "stat",
            "-s",
            "offline_blocks",
            &inos[0].to_string()
        ])),
        "0\n"
    );
    let out = scoutfs(&with(&["stat", "99999999"]));
    assert_eq!(out.status.code(), Some(1));
    // The original's stat says it in its own line alone.
    assert_eq!(
        text(&out.stderr),
        "ioctl failed: No such file or directory (2)\n"
    );
    let out = scoutfs(&with(&["stat", "f0"]));
    assert_eq!(out.status.code(), Some(64));

    // Held by another process (as a mount holds it): refused at once, nothing read.
    let lock = hold(&meta);
    let out = scoutfs(&with(&["read-xattr-totals", "--json"]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is mounted"), "{err}");
    assert!(text(&out.stdout).starts_with("{\"error\":"), "{err}");
    drop(lock);
    check_clean(&meta, &data);
}

/// Offline reads of devices that hold no volume fail with a message, never a panic.
#[test]
fn agent_offline_reads_of_garbage_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (m, d) = (dir.path().join("m"), dir.path().join("d"));
    std::fs::write(&m, vec![0x5au8; 1 << 20]).unwrap();
    std::fs::write(&d, vec![0u8; 1 << 20]).unwrap();
    for args in [
        &["walk-inodes", "meta_seq", "0", "-1"][..],
        &["read-xattr-totals"],
        &["read-xattr-index"],
    ] {
        let out = scoutfs(&[args, &["--meta-device", s(&m), "--data-device", s(&d)]].concat());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("cannot open the volume"), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}
