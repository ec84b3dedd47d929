//! `fs_compare`: the same file workload on a scoutfs mount and on ext4, in one run, with
//! the ratios (issue #5). Not a test: it prints figures.
//!
//! ```text
//! fs_compare [--files N] [--file-mib M] SCOUTFS-MOUNTPOINT [DAEMON-PID]
//! ```
//!
//! It must run as root: it makes an ext4 file system in an image file in the temporary
//! folder (`mkfs.ext4`), attaches it to a loop device (`losetup`), mounts it, and removes
//! all of that again on exit (also after an error). The scoutfs mount is given; the work
//! runs in a fresh directory on it, removed at the end.
//!
//! Work, on each file system in turn (ext4 first):
//! - **create**: N empty files in one directory (open with O_CREAT|O_EXCL, close), then
//!   `syncfs`, so both file systems have made them durable;
//! - **stat**: every file by path, in creation order;
//! - **miss**: as many names that do not exist, by path (each one a lookup answered
//!   ENOENT: on the mount, one FUSE request whose answer costs the daemon almost nothing,
//!   so its rate is the FUSE round trip's own on this machine, the ceiling of every phase
//!   that needs a request per file);
//! - **readdir**: the whole directory, names only;
//! - **unlink**: every file, then `syncfs`;
//! - **write**: one file of M MiB in 1 MiB writes, then fsync;
//! - **read**: that file in 1 MiB reads.
//!
//! Caches: before stat, readdir and read the program runs `sync` and writes 3 to
//! `/proc/sys/vm/drop_caches`, which empties the kernel's page, dentry and inode caches
//! for both: ext4 then reads its metadata and data from its loop device (whose backing
//! file's pages are dropped too), and every FUSE lookup, getattr and read goes to the
//! scoutfs daemon. What drop_caches cannot empty is the daemon's own block cache (process
//! memory, bounded by the mount's cache size): the scoutfs figures are "kernel cold,
//! daemon warm". Remounting would empty it too, but the program is given a mount, not
//! asked to make one; the cold-daemon case is the remount a user makes rarely.
//!
//! With DAEMON-PID, the daemon's resident and peak memory (VmRSS, VmHWM) are printed
//! before and after the scoutfs run.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

const CHUNK: usize = 1 << 20;

#[derive(Debug)]
struct Args {
    files: usize,
    file_mib: usize,
    scoutfs: PathBuf,
    pid: Option<u32>,
}

fn usage() -> String {
    "usage: fs_compare [--files N] [--file-mib M] SCOUTFS-MOUNTPOINT [DAEMON-PID]".into()
}

fn parse_args() -> Result<Args, String> {
    let mut files = 20_000;
    let mut file_mib = 1024;
    let mut pos = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--files" | "--file-mib" => {
                let v = it.next().ok_or_else(usage)?;
                let n: usize = v.parse().map_err(|_| format!("{a}: not a number: {v}"))?;
                if a == "--files" {
                    files = n;
                } else {
                    file_mib = n;
                }
            }
            "-h" | "--help" => return Err(usage()),
            _ => pos.push(a),
        }
    }
    let (scoutfs, pid) = match pos.as_slice() {
        [m] => (PathBuf::from(m), None),
        [m, p] => (
            PathBuf::from(m),
            Some(p.parse().map_err(|_| format!("not a pid: {p}"))?),
        ),
        _ => return Err(usage()),
    };
    Ok(Args {
        files,
        file_mib,
        scoutfs,
        pid,
    })
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// An ext4 file system on a loop device over an image file; unmounted, detached and
/// removed on drop.
#[derive(Debug, Default)]
struct Ext4 {
    dir: Option<PathBuf>,
    loop_dev: Option<String>,
    mounted: bool,
}

impl Ext4 {
    fn make(size_mib: usize) -> Result<Ext4, String> {
        let mut e = Ext4::default();
        let dir = std::env::temp_dir().join(format!("fs_compare.{}", std::process::id()));
        fs::create_dir(&dir).map_err(|err| format!("{}: {err}", dir.display()))?;
        e.dir = Some(dir.clone());
        let img = dir.join("ext4.img");
        File::create(&img)
            .and_then(|f| f.set_len(size_mib as u64 * CHUNK as u64))
            .map_err(|err| format!("{}: {err}", img.display()))?;
        let img_s = img.to_string_lossy().to_string();
        run("mkfs.ext4", &["-q", "-F", &img_s])?;
        e.loop_dev = Some(run("losetup", &["--find", "--show", &img_s])?);
        let mnt = dir.join("mnt");
        fs::create_dir(&mnt).map_err(|err| format!("{}: {err}", mnt.display()))?;
        let dev = e.loop_dev.clone().unwrap_or_default();
        run("mount", &[&dev, &mnt.to_string_lossy()])?;
        e.mounted = true;
        Ok(e)
    }

    fn mountpoint(&self) -> PathBuf {
        self.dir.clone().unwrap_or_default().join("mnt")
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = run("umount", &[&self.mountpoint().to_string_lossy()]) {
                eprintln!("fs_compare: cleanup: {e}");
            }
        }
        if let Some(dev) = &self.loop_dev {
            if let Err(e) = run("losetup", &["-d", dev]) {
                eprintln!("fs_compare: cleanup: {e}");
            }
        }
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

fn drop_caches() -> Result<(), String> {
    run("sync", &[])?;
    fs::write("/proc/sys/vm/drop_caches", "3").map_err(|e| format!("drop_caches: {e}"))
}

fn syncfs(dir: &Path) -> Result<(), String> {
    run("sync", &["-f", &dir.to_string_lossy()]).map(|_| ())
}

/// Seconds taken by each phase, in the order of `PHASES`.
const PHASES: [&str; 7] = [
    "create", "stat", "miss", "readdir", "unlink", "write", "read",
];

fn io_err(what: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", what.display())
}

fn workload(root: &Path, files: usize, file_mib: usize) -> Result<[Duration; 7], String> {
    let dir = root.join(format!("fs_compare.{}", std::process::id()));
    fs::create_dir(&dir).map_err(io_err(&dir))?;
    let names: Vec<PathBuf> = (0..files).map(|i| dir.join(format!("f{i:08}"))).collect();
    let mut t = [Duration::ZERO; 7];

    let s = Instant::now();
    for p in &names {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p)
            .map_err(io_err(p))?;
    }
    syncfs(&dir)?;
    t[0] = s.elapsed();

    drop_caches()?;
    let s = Instant::now();
    for p in &names {
        let m = fs::symlink_metadata(p).map_err(io_err(p))?;
        if m.len() != 0 {
            return Err(format!("{}: size {} after create", p.display(), m.len()));
        }
    }
    t[1] = s.elapsed();

    let s = Instant::now();
    for i in 0..files {
        let p = dir.join(format!("m{i:08}"));
        match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", p.display())),
            Ok(_) => return Err(format!("{}: exists", p.display())),
        }
    }
    t[2] = s.elapsed();

    drop_caches()?;
    let s = Instant::now();
    let mut n = 0;
    for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
        e.map_err(io_err(&dir))?;
        n += 1;
    }
    t[3] = s.elapsed();
    if n != files {
        return Err(format!("readdir found {n} of {files} files"));
    }

    let s = Instant::now();
    for p in &names {
        fs::remove_file(p).map_err(io_err(p))?;
    }
    syncfs(&dir)?;
    t[4] = s.elapsed();

    let big = dir.join("big");
    let mut buf = vec![0u8; CHUNK];
    let s = Instant::now();
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&big)
            .map_err(io_err(&big))?;
        for i in 0..file_mib {
            // Different bytes in every chunk: nothing below can shortcut zeros.
            buf[..8].copy_from_slice(&(i as u64).to_le_bytes());
            f.write_all(&buf).map_err(io_err(&big))?;
        }
        f.sync_all().map_err(io_err(&big))?;
    }
    t[5] = s.elapsed();

    drop_caches()?;
    let s = Instant::now();
    {
        let mut f = File::open(&big).map_err(io_err(&big))?;
        for i in 0..file_mib {
            f.read_exact(&mut buf).map_err(io_err(&big))?;
            if buf[..8] != (i as u64).to_le_bytes() {
                return Err(format!("{}: chunk {i} reads back wrong", big.display()));
            }
        }
    }
    t[6] = s.elapsed();

    fs::remove_file(&big).map_err(io_err(&big))?;
    fs::remove_dir(&dir).map_err(io_err(&dir))?;
    Ok(t)
}

fn memory(pid: u32) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    format!("VmRSS {}, VmHWM {}", field("VmRSS:"), field("VmHWM:"))
}

fn rate(phase: usize, d: Duration, files: usize, file_mib: usize) -> (f64, &'static str) {
    let secs = d.as_secs_f64().max(1e-9);
    if phase >= 5 {
        (file_mib as f64 / secs, "MiB/s")
    } else {
        (files as f64 / secs, "ops/s")
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match compare(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fs_compare: {e}");
            ExitCode::FAILURE
        }
    }
}

fn compare(args: &Args) -> Result<(), String> {
    let kind = run("stat", &["-f", "-c", "%T", &args.scoutfs.to_string_lossy()])?;
    println!(
        "fs_compare: {} files, a {} MiB file; ext4 on a loop device vs {} ({kind})",
        args.files,
        args.file_mib,
        args.scoutfs.display()
    );
    let ext4 = Ext4::make(args.file_mib * 2 + 1024)?;
    let e = workload(&ext4.mountpoint(), args.files, args.file_mib)?;
    drop(ext4);
    if let Some(pid) = args.pid {
        println!("daemon before: {}", memory(pid));
    }
    let s = workload(&args.scoutfs, args.files, args.file_mib)?;
    if let Some(pid) = args.pid {
        println!("daemon after:  {}", memory(pid));
    }
    println!(
        "{:<8} {:>14} {:>14} {:>7}  {:>7}",
        "phase", "ext4", "scoutfs", "unit", "ratio"
    );
    for (i, name) in PHASES.iter().enumerate() {
        let (er, unit) = rate(i, e[i], args.files, args.file_mib);
        let (sr, _) = rate(i, s[i], args.files, args.file_mib);
        println!(
            "{name:<8} {er:>14.1} {sr:>14.1} {unit:>7}  {:>6.2}x",
            sr / er.max(1e-9)
        );
    }
    println!("ratio = scoutfs rate / ext4 rate (targets: create 0.5, stat 0.8, unlink 0.5, write and read 0.7)");
    Ok(())
}
