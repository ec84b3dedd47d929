//! `scoutfs mount` for real: FUSE mounts of image-file volumes, driven as a user would,
//! with an unmount guard so a failed test leaves no dead mount behind.
//!
//! Mounting needs root (mount(2) of a FUSE file system); run as another user these tests
//! say so and return without checking anything.

// Tests fail loudly: unwrapping in their helpers is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

fn scoutfs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_scoutfs"))
        .args(args)
        .output()
        .expect("run scoutfs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Say that this test (or a part of it) checks nothing here, and why: "skipped: TEST:
/// WHY" on the process's stderr itself, which the test harness does not capture, so that
/// `cargo test` shows it beside the "ok" of a test that could not run.
fn skip(why: &str) {
    let t = std::thread::current();
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {}: {why}",
        t.name().unwrap_or("a mount test")
    );
}

/// Whether this can mount: FUSE mounts are made with mount(2), as root. If not, the test
/// says it is skipped.
fn is_root() -> bool {
    let root = fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if !root {
        skip("not root (FUSE mounts are made with mount(2)); nothing checked");
    }
    root
}

/// Whether `mnt` is a mount point now.
fn mounted(mnt: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().any(|l| l.split(' ').nth(4) == Some(s(mnt)))
}

/// Whether process `pid` runs (not gone, not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// The process holding `path` open (the mount daemon holds its meta device).
fn holder(path: &Path) -> Option<u32> {
    for p in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).ok().as_deref() == Some(path) {
                return Some(pid);
            }
        }
    }
    None
}

fn wait_gone(pid: u32) {
    let start = Instant::now();
    while alive(pid) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "daemon {pid} did not exit"
        );
        sleep(Duration::from_millis(20));
    }
}

/// A volume of image files and a mount point in a temporary directory.
struct Volume {
    _dir: tempfile::TempDir,
    meta: PathBuf,
    data: PathBuf,
    mnt: PathBuf,
}

impl Volume {
    fn new() -> Volume {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let (meta, data, mnt) = (
            root.join("meta.img"),
            root.join("data.img"),
            root.join("mnt"),
        );
        fs::create_dir(&mnt).unwrap();
        let out = scoutfs(&["mkfs", "-m", "256M", "-d", "1G", s(&meta), s(&data)]);
        assert!(out.status.success(), "mkfs: {}", text(&out.stderr));
        Volume {
            _dir: dir,
            meta,
            data,
            mnt,
        }
    }

    /// `scoutfs mount` (returning once mounted); the guard that unmounts.
    fn mount(&self, opts: &[&str]) -> Mount<'_> {
        self.mount_saying(opts).0
    }

    /// [`Volume::mount`], and what the mount said on stderr.
    fn mount_saying(&self, opts: &[&str]) -> (Mount<'_>, String) {
        let mut args = vec!["mount"];
        args.extend_from_slice(opts);
        args.extend([s(&self.meta), s(&self.data), s(&self.mnt)]);
        let out = scoutfs(&args);
        assert!(out.status.success(), "mount: {}", text(&out.stderr));
        assert!(mounted(&self.mnt), "mount returned before the mount was up");
        let pid = holder(&self.meta).expect("a daemon holds the meta device");
        (Mount { vol: self, pid }, text(&out.stderr))
    }

    fn check_clean(&self) {
        let out = scoutfs(&["check", s(&self.meta), s(&self.data)]);
        assert!(
            out.status.success(),
            "check: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

/// A mounted volume; dropping it unmounts (lazily if it must) and waits for the daemon.
struct Mount<'a> {
    vol: &'a Volume,
    pid: u32,
}

impl Mount<'_> {
    fn path(&self, rel: &str) -> PathBuf {
        self.vol.mnt.join(rel)
    }

    /// `umount MOUNTPOINT`, then the daemon commits and exits.
    fn umount(self) {
        let st = Command::new("umount").arg(&self.vol.mnt).status().unwrap();
        assert!(st.success(), "umount failed");
        wait_gone(self.pid);
        assert!(!mounted(&self.vol.mnt));
    }
}

impl Drop for Mount<'_> {
    fn drop(&mut self) {
        if mounted(&self.vol.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.vol.mnt).status();
        }
        let start = Instant::now();
        while alive(self.pid) && start.elapsed() < Duration::from_secs(30) {
            sleep(Duration::from_millis(20));
        }
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn files_written_through_a_mount_are_there_after_a_remount() {
    if !is_root() {
        return;
    }
    let vol = Volume::new();
    let m = vol.mount(&[]);
    fs::create_dir_all(m.path("a/b")).unwrap();
    for i in 0..50u64 {
        fs::write(m.path(&format!("a/b/f{i}")), pattern(i, (i as usize) * 997)).unwrap();
    }
    let big = pattern(1000, 3 << 20);
    fs::write(m.path("big"), &big).unwrap();
    std::os::unix::fs::symlink("a/b/f7", m.path("link")).unwrap();
    fs::hard_link(m.path("a/b/f8"), m.path("hard")).unwrap();
    let setx = Command::new("setfattr")
        .args(["-n", "user.color", "-v", "blue", s(&m.path("big"))])
        .status();
    let have_setfattr = setx.map(|s| s.success()).unwrap_or(false);
    m.umount();
    vol.check_clean();

    let m = vol.mount(&[]);
    for i in 0..50u64 {
        let got = fs::read(m.path(&format!("a/b/f{i}"))).unwrap();
        assert_eq!(got, pattern(i, (i as usize) * 997), "a/b/f{i}");
    }
    assert_eq!(fs::read(m.path("big")).unwrap(), big);
    assert_eq!(fs::read_link(m.path("link")).unwrap(), Path::new("a/b/f7"));
    assert_eq!(fs::read(m.path("link")).unwrap(), pattern(7, 7 * 997));
    assert_eq!(fs::metadata(m.path("hard")).unwrap().nlink(), 2);
    if !have_setfattr {
        skip("setfattr did not run (apt-get install attr): the xattr is not checked");
    } else {
        let out = Command::new("getfattr")
            .args(["--only-values", "-n", "user.color", s(&m.path("big"))])
            .output()
            .unwrap();
        assert_eq!(text(&out.stdout), "blue");
    }
    let mut names: Vec<String> = fs::read_dir(m.path("a/b"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 50);
    m.umount();
    vol.check_clean();
}

#[test]
fn a_damaged_super_slot_is_reported_by_check_and_the_mount() {
    if !is_root() {
        return;
    }
    let vol = Volume::new();
    let m = vol.mount(&[]);
    fs::write(m.path("f"), b"x").unwrap();
    m.umount();
    // A flipped byte in the body of the meta device's super slot 0.
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&vol.meta)
            .unwrap();
        let at = 64 * 1024 + 200;
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x10], at).unwrap();
    }
    let said = "meta device super slot 0 does not verify: checksum mismatch";
    let out = scoutfs(&["check", s(&vol.meta), s(&vol.data)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains(said), "{}", text(&out.stdout));
    let (m, stderr) = vol.mount_saying(&[]);
    assert!(stderr.contains(&format!("warning: {said}")), "{stderr}");
    m.umount();
}

#[test]
fn sigterm_unmounts_commits_and_exits_zero() {
    if !is_root() {
        return;
    }
    let vol = Volume::new();
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_scoutfs"))
        .args([
            "mount",
            "--foreground",
            s(&vol.meta),
            s(&vol.data),
            s(&vol.mnt),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !mounted(&vol.mnt) {
        assert!(start.elapsed() < Duration::from_secs(30), "never mounted");
        assert!(child.try_wait().unwrap().is_none(), "daemon exited");
        sleep(Duration::from_millis(10));
    }
    let guard = Mount {
        vol: &vol,
        pid: child.id(),
    };
    fs::write(guard.path("kept"), b"after sigterm").unwrap();
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "daemon: {}", text(&out.stderr));
    assert!(!mounted(&vol.mnt));
    drop(guard);
    vol.check_clean();
    let m = vol.mount(&[]);
    assert_eq!(fs::read(m.path("kept")).unwrap(), b"after sigterm");
    m.umount();
}

/// What shows whether a device image was written: its modification time and its first
/// MiB (the super blocks and the first metadata blocks).
fn fingerprint(p: &Path) -> (i64, i64, Vec<u8>) {
    use std::io::Read;
    let m = fs::metadata(p).unwrap();
    let mut head = Vec::new();
    fs::File::open(p)
        .unwrap()
        .take(1 << 20)
        .read_to_end(&mut head)
        .unwrap();
    (m.mtime(), m.mtime_nsec(), head)
}

/// Runs `scoutfs mount` expecting failure; its message.
fn mount_fails(args: &[&str]) -> String {
    let mut all = vec!["mount"];
    all.extend_from_slice(args);
    let out = scoutfs(&all);
    let err = text(&out.stderr);
    if out.status.success() {
        // It mounted after all: take it down before failing.
        if let Some(mnt) = args.last() {
            let _ = Command::new("umount").arg("-l").arg(mnt).status();
        }
    }
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert!(err.starts_with("scoutfs: mount: "), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    err
}

#[test]
fn bad_devices_options_and_a_second_mount_fail_clearly_and_touch_nothing() {
    if !is_root() {
        return;
    }
    let vol = Volume::new();
    let (meta, data, mnt) = (s(&vol.meta), s(&vol.data), s(&vol.mnt));
    let dir = vol.meta.parent().unwrap();

    let missing = dir.join("missing.img");
    let e = mount_fails(&[s(&missing), data, mnt]);
    assert!(e.contains("missing.img"), "{e}");

    let e = mount_fails(&["-o", "nosuchoption", meta, data, mnt]);
    assert!(e.contains("nosuchoption"), "{e}");

    // A file that is not a scoutfs volume, and a volume whose super block is damaged:
    // refused, and not one byte written.
    let foreign = dir.join("foreign.img");
    fs::write(&foreign, pattern(5, 4 << 20)).unwrap();
    let e = mount_fails(&[s(&foreign), data, mnt]);
    assert!(!mounted(&vol.mnt), "{e}");
    assert_eq!(fs::read(&foreign).unwrap(), pattern(5, 4 << 20));

    let damaged = dir.join("damaged.img");
    fs::copy(&vol.meta, &damaged).unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new().write(true).open(&damaged).unwrap();
        // Scribble over both super block slots (4 KiB each from 64 KiB on).
        f.write_all_at(&pattern(9, 8 << 10), 64 << 10).unwrap();
    }
    let before = fingerprint(&damaged);
    let e = mount_fails(&[s(&damaged), data, mnt]);
    assert!(!mounted(&vol.mnt), "{e}");
    assert_eq!(fingerprint(&damaged), before);

    // The data device of another volume.
    let other_vol = Volume::new();
    let data_before = fingerprint(&other_vol.data);
    let e = mount_fails(&[meta, s(&other_vol.data), mnt]);
    assert!(e.contains("same volume"), "{e}");
    assert_eq!(fingerprint(&other_vol.data), data_before);

    // Already mounted: the second mount is refused by the volume's lock.
    let m = vol.mount(&[]);
    let other = dir.join("mnt2");
    fs::create_dir(&other).unwrap();
    // (The lock is taken before the devices are opened; the first mount's periodic sync
    // may write the images at any time, so they are not compared here.)
    let e = mount_fails(&[meta, data, s(&other)]);
    assert!(e.contains("already mounted"), "{e}");
    assert!(!mounted(&other));
    m.umount();
    vol.check_clean();
}

#[test]
fn check_right_after_umount_waits_for_the_final_commit() {
    if !is_root() {
        return;
    }
    let vol = Volume::new();
    let m = vol.mount(&[]);
    for i in 0..500 {
        fs::write(m.path(&format!("f{i}")), pattern(i, 100)).unwrap();
    }
    let pid = m.pid;
    // umount returns before the daemon's final commit; check must wait for it (the
    // mount's lock) and see the volume as the commit left it, not the commit before.
    let st = Command::new("umount").arg(&vol.mnt).status().unwrap();
    assert!(st.success());
    let right_after = scoutfs(&["check", s(&vol.meta), s(&vol.data)]);
    wait_gone(pid);
    let at_rest = scoutfs(&["check", s(&vol.meta), s(&vol.data)]);
    assert!(at_rest.status.success(), "{}", text(&at_rest.stdout));
    assert_eq!(text(&right_after.stdout), text(&at_rest.stdout));
    drop(m);
    let m = vol.mount(&[]);
    assert_eq!(fs::read_dir(&vol.mnt).unwrap().count(), 500);
    m.umount();
}

#[test]
fn a_read_only_mount_reads_and_writes_nothing() {
    if !is_root() {
        return;
    }
    let vol = Volume::new();
    let m = vol.mount(&[]);
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/f"), pattern(5, 100_000)).unwrap();
    m.umount();
    let before = (fingerprint(&vol.meta), fingerprint(&vol.data));
    // Some time for a write to show in the images' modification times.
    sleep(Duration::from_millis(20));

    let m = vol.mount(&["-o", "ro"]);
    assert_eq!(fs::read(m.path("d/f")).unwrap(), pattern(5, 100_000));
    let e = fs::write(m.path("d/g"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(EROFS), "{e}");
    assert!(fs::remove_file(m.path("d/f")).is_err());
    m.umount();
    assert!(
        (fingerprint(&vol.meta), fingerprint(&vol.data)) == before,
        "a read-only mount wrote to its devices"
    );
    vol.check_clean();
}

const EROFS: i32 = 30;

/// Whether loop devices can be attached here (root, and the kernel has them); says why
/// not.
fn root_with_loop_devices() -> bool {
    if !is_root() {
        return false;
    }
    let there = Path::new("/dev/loop-control").exists();
    if !there {
        skip("no loop devices (/dev/loop-control); nothing checked");
    }
    there
}

/// A loop device over `file` (detached on drop).
struct Loop(String);

impl Loop {
    fn attach(file: &Path) -> Loop {
        let out = Command::new("losetup")
            .args(["-f", "--show", s(file)])
            .output()
            .expect("run losetup");
        assert!(out.status.success(), "losetup: {}", text(&out.stderr));
        Loop(text(&out.stdout).trim().to_string())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn a_volume_mounted_through_its_image_or_a_loop_device_over_it_is_mounted_once() {
    if !root_with_loop_devices() {
        return;
    }
    let vol = Volume::new();
    let (lm, ld) = (Loop::attach(&vol.meta), Loop::attach(&vol.data));
    let other = vol.mnt.with_file_name("mnt2");
    fs::create_dir(&other).unwrap();

    // A loop device over the data image given as the meta device: one file twice.
    let err = mount_fails(&[&ld.0, s(&vol.data), s(&other)]);
    assert!(err.contains("are the same file"), "{err}");

    let m = vol.mount(&[]);
    let err = mount_fails(&[&lm.0, &ld.0, s(&other)]);
    assert!(err.contains("already mounted"), "{err}");
    m.umount();

    let out = scoutfs(&["mount", &lm.0, &ld.0, s(&other)]);
    assert!(out.status.success(), "mount: {}", text(&out.stderr));
    let err = mount_fails(&[s(&vol.meta), s(&vol.data), s(&vol.mnt)]);
    assert!(err.contains("already mounted"), "{err}");
    let pid = holder(Path::new(&lm.0)).expect("a daemon holds the loop device");
    assert!(Command::new("umount")
        .arg(&other)
        .status()
        .unwrap()
        .success());
    wait_gone(pid);
    vol.check_clean();
}

#[test]
fn mkfs_and_a_mount_of_a_copied_meta_image_are_refused_while_mounted() {
    if !is_root() {
        return;
    }
    let vol = Volume::new();
    let m = vol.mount(&[]);
    fs::write(m.path("f"), pattern(3, 200_000)).unwrap();
    // A copy of the metadata image as it is now: the same volume's identity, the same
    // data device.
    let copy = vol.meta.with_file_name("copy.img");
    fs::copy(&vol.meta, &copy).unwrap();
    let (meta, data) = (s(&vol.meta), s(&vol.data));
    for args in [["mkfs", "-f", meta, data], ["mkfs", "-f", s(&copy), data]] {
        let out = scoutfs(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("is in use: held by the scoutfs mount of"),
            "{err}"
        );
        assert!(err.contains("-f does not override"), "{err}");
    }
    let other = vol.mnt.with_file_name("mnt2");
    fs::create_dir(&other).unwrap();
    let e = mount_fails(&[s(&copy), data, s(&other)]);
    assert!(
        e.contains(&format!("DATA-DEVICE {data} is already in use")),
        "{e}"
    );
    assert!(e.contains("no two mounts may share a data device"), "{e}");
    assert!(!mounted(&other));
    let out = scoutfs(&["check", s(&copy), data]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(8), "{err}");
    assert!(err.contains("two volumes claim DATA-DEVICE"), "{err}");
    // The mounted volume goes on as if nothing happened.
    assert_eq!(fs::read(m.path("f")).unwrap(), pattern(3, 200_000));
    m.umount();
    vol.check_clean();
    let m = vol.mount(&[]);
    assert_eq!(fs::read(m.path("f")).unwrap(), pattern(3, 200_000));
    m.umount();
}

#[test]
fn mkfs_refuses_a_block_device_the_kernel_has_mounted() {
    if !root_with_loop_devices() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ext, data, mnt) = (
        dir.path().join("ext4.img"),
        dir.path().join("data.img"),
        dir.path().join("mnt"),
    );
    fs::File::create(&ext).unwrap().set_len(64 << 20).unwrap();
    match Command::new("mkfs.ext4")
        .args(["-q", "-F", s(&ext)])
        .status()
    {
        Ok(st) if st.success() => {}
        other => {
            skip(&format!("mkfs.ext4 did not make an ext4 image ({other:?})"));
            return;
        }
    }
    let lo = Loop::attach(&ext);
    fs::create_dir(&mnt).unwrap();
    assert!(Command::new("mount")
        .args([&lo.0, s(&mnt)])
        .status()
        .unwrap()
        .success());
    let out = scoutfs(&["mkfs", "-f", &lo.0, s(&data), "-d", "64M"]);
    let _ = Command::new("umount").arg(&mnt).status();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{} is in use: held by the kernel", lo.0)),
        "{err}"
    );
    assert!(!data.exists(), "the image mkfs created is removed again");
}

/// The agent commands reach the mount's daemon by the path they are given (`-p`,
/// `$SCOUTFS_MOUNT_PATH`, the working directory, a file), read what the mount holds, and
/// the daemon refuses an unprivileged caller what the original refuses.
#[test]
fn agent_commands_reach_the_mount_by_path_and_refuse_the_unprivileged() {
    use std::os::unix::fs::PermissionsExt;
    if !is_root() {
        return;
    }
    let vol = Volume::new();
    // nobody must reach the mount point and a copy of the program.
    let top = vol.mnt.parent().unwrap().to_path_buf();
    fs::set_permissions(&top, fs::Permissions::from_mode(0o755)).unwrap();
    let prog = top.join("scoutfs");
    fs::copy(env!("CARGO_BIN_EXE_scoutfs"), &prog).unwrap();
    let m = vol.mount(&[]);
    fs::create_dir(m.path("d")).unwrap();
    let mut inos = Vec::new();
    for i in 0..30 {
        let p = m.path(&format!("d/f{i}"));
        fs::write(&p, b"x").unwrap();
        inos.push(fs::metadata(&p).unwrap().ino());
    }
    let out = scoutfs(&["sync", s(&vol.mnt)]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let walk = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let bin = env!("CARGO_BIN_EXE_scoutfs");
    let by_p =
        walk(Command::new(bin).args(["walk-inodes", "meta_seq", "0", "-1", "-p", s(&vol.mnt)]));
    for ino in &inos {
        assert!(
            by_p.lines()
                .any(|l| l.split_whitespace().nth(3) == Some(&ino.to_string())),
            "{ino}: {by_p}"
        );
    }
    let by_env = walk(
        Command::new(bin)
            .args(["walk-inodes", "meta_seq", "0", "-1"])
            .env("SCOUTFS_MOUNT_PATH", &vol.mnt),
    );
    let by_cwd = walk(
        Command::new(bin)
            .args(["walk-inodes", "meta_seq", "0", "-1"])
            .env_remove("SCOUTFS_MOUNT_PATH")
            .current_dir(m.path("d")),
    );
    let by_file = walk(Command::new(bin).args([
        "walk-inodes",
        "meta_seq",
        "0",
        "-1",
        "-p",
        s(&m.path("d/f3")),
    ]));
    assert_eq!(by_env, by_p);
    assert_eq!(by_cwd, by_p);
    assert_eq!(by_file, by_p);

    // A path on another filesystem is not a mount of ours.
    let out = scoutfs(&["read-xattr-totals", "-p", "/proc"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("'/proc' is not on a scoutfs mount"), "{err}");
    assert!(
        err.ends_with("scoutfs: read-xattr-totals failed: Inappropriate ioctl for device (25)\n"),
        "{err}"
    );

    // nobody may walk the index, and may not read the totals or the .indx. index.
    let nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&prog)
            .args(args)
            .output()
    };
    match nobody(&["walk-inodes", "meta_seq", "0", "-1", "-p", s(&vol.mnt)]) {
        Err(e) => skip(&format!(
            "no setpriv ({e}): the unprivileged caller is not checked"
        )),
        Ok(out) => {
            assert!(out.status.success(), "{}", text(&out.stderr));
            assert_eq!(text(&out.stdout), by_p);
            for (cmd, line) in [
                ("read-xattr-totals", "read_xattr_totals"),
                ("read-xattr-index", "read_xattr_index"),
            ] {
                let out = nobody(&[cmd, "-p", s(&vol.mnt)]).unwrap();
                assert_eq!(out.status.code(), Some(1));
                assert_eq!(
                    text(&out.stderr),
                    format!(
                        "{line} ioctl failed: Operation not permitted (1)\n\
                         scoutfs: {cmd} failed: Operation not permitted (1)\n"
                    )
                );
            }
        }
    }
    m.umount();
    vol.check_clean();
}

/// `release` then `stage` of a file of several archive chunks (1 MiB each, sent in calls
/// of 12 KiB) through the mount: offline in between, whole again after, its data_version
/// kept; `stat` and `get-fiemap` by path say so.
#[test]
fn agent_release_and_stage_through_the_mount() {
    if !is_root() {
        return;
    }
    let vol = Volume::new();
    let m = vol.mount(&[]);
    let len = (3 << 20) + 100;
    let bytes = pattern(77, len);
    let archive = vol.mnt.parent().unwrap().join("archive");
    fs::write(&archive, &bytes).unwrap();
    let f = m.path("f");
    fs::write(&f, &bytes).unwrap();
    let field = |name: &str| {
        let out = scoutfs(&["stat", "-s", name, s(&f)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().parse::<u64>().unwrap()
    };
    let blocks = (len as u64).div_ceil(4096);
    let v = field("data_version");
    assert_eq!(
        (field("online_blocks"), field("offline_blocks")),
        (blocks, 0)
    );
    let out = scoutfs(&["release", s(&f), "-V", &v.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        (field("online_blocks"), field("offline_blocks")),
        (0, blocks)
    );
    let out = scoutfs(&["get-fiemap", s(&f)]);
    assert_eq!(
        text(&out.stdout),
        format!("0: offset: 0 0 length: {blocks} flags: O.L\nextents: 1\n")
    );
    let start = Instant::now();
    let out = scoutfs(&["stage", s(&archive), s(&f), "-V", &v.to_string()]);
    let took = start.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    eprintln!(
        "note: staged {len} bytes in {took:?} ({:.0} MB/s, debug build)",
        len as f64 / took.as_secs_f64() / 1e6
    );
    assert_eq!(
        (field("online_blocks"), field("offline_blocks")),
        (blocks, 0)
    );
    assert_eq!(field("data_version"), v);
    assert_eq!(fs::read(&f).unwrap(), bytes);
    m.umount();
    vol.check_clean();
}
