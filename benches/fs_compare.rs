//! `fs_compare`: the same file workload on ext4, on a naive in-memory FUSE filesystem
//! (memfs) and on a scoutfs mount, in one run, with the ratios (issue #5). Not a test: it
//! prints figures.
//!
//! ```text
//! fs_compare [--files N] [--file-mib M] [--no-memfs] SCOUTFS-MOUNTPOINT [DAEMON-PID]
//! ```
//!
//! It must run as root: it makes an ext4 file system in an image file in the temporary
//! folder (`mkfs.ext4`), attaches it to a loop device (`losetup`), mounts it, and removes
//! all of that again on exit (also after an error); likewise it mounts memfs on a
//! temporary directory and serves it from this process. The scoutfs mount is given; the
//! work runs in a fresh directory on it, removed at the end.
//!
//! memfs (`memfs.rs`) keeps everything in memory and does no I/O, and is served through
//! FUSE exactly as a scoutfs mount is (the same session settings, threads, timeouts and
//! answers that decide which requests the kernel sends): its rates are what the FUSE
//! transport itself allows on the machine, the ceiling of any FUSE filesystem served this
//! way. So `memfs/ext4` is as near to ext4 as a FUSE filesystem can come here at all, and
//! `scoutfs/memfs` how near scoutfs comes to that ceiling (its own cost per request). For
//! write and read memfs copies memory where the others go to their devices: there its
//! figures are the transport's bandwidth. Served in this process rather than in one of its
//! own, a switch between the caller and a memfs thread keeps the address space (a little
//! cheaper than switching to the scoutfs daemon): if anything, the ceiling is a little high.
//! memfs counts the requests it serves; the table is followed by each phase's requests per
//! file (per MiB for write and read), the same as reach a scoutfs mount (the kernel chooses
//! them from the same answers). `--no-memfs` leaves memfs out.
//!
//! Work, on each file system in turn (ext4 first, then memfs, unmounted once done so that
//! its memory and threads are gone, then scoutfs, last as before memfs was added, with the
//! daemon's memory printed around its run):
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
//! Caches: before each file system's run the program runs `sync`, so that nothing written
//! before (mkfs.ext4 leaves tens of MB dirty in the image file) is written back during its
//! creates; before stat, readdir and read it runs `sync` and writes 3 to
//! `/proc/sys/vm/drop_caches`, which empties the kernel's page, dentry and inode caches
//! for all: ext4 then reads its metadata and data from its loop device (whose backing
//! file's pages are dropped too), and every FUSE lookup, getattr and read goes to the
//! scoutfs daemon (or memfs). What drop_caches cannot empty is the daemon's own block cache
//! (process memory, bounded by the mount's cache size): the scoutfs figures are "kernel
//! cold, daemon warm". Remounting would empty it too, but the program is given a mount, not
//! asked to make one; the cold-daemon case is the remount a user makes rarely.
//!
//! With DAEMON-PID, the daemon's resident and peak memory (VmRSS, VmHWM) are printed
//! before and after the scoutfs run.

use scoutfs_benches::cmd::{drop_caches, run};

use scoutfs_benches::memfs::{self, Op, Requests};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const CHUNK: usize = 1 << 20;

#[derive(Debug)]
struct Args {
    files: usize,
    file_mib: usize,
    memfs: bool,
    scoutfs: PathBuf,
    pid: Option<u32>,
}

fn usage() -> String {
    "usage: fs_compare [--files N] [--file-mib M] [--no-memfs] SCOUTFS-MOUNTPOINT [DAEMON-PID]"
        .into()
}

fn parse_args() -> Result<Args, String> {
    let mut files = 20_000;
    let mut file_mib = 1024;
    let mut memfs = true;
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
            "--no-memfs" => memfs = false,
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
        memfs,
        scoutfs,
        pid,
    })
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

fn syncfs(dir: &Path) -> Result<(), String> {
    run("sync", &["-f", &dir.to_string_lossy()]).map(|_| ())
}

/// The phases of the workload.
const PHASES: [&str; 7] = [
    "create", "stat", "miss", "readdir", "unlink", "write", "read",
];

/// What the workload measured on one file system, per phase (in the order of `PHASES`):
/// the time taken, and the requests memfs served meanwhile (none counted elsewhere).
#[derive(Debug, Default)]
struct Measured {
    time: [Duration; 7],
    requests: [Requests; 7],
}

fn io_err(what: &Path) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("{}: {e}", what.display())
}

/// Runs the workload in a fresh directory of `root`; `requests` reads the request counters
/// of the file system (memfs's; zeros for the others).
fn workload(
    root: &Path,
    files: usize,
    file_mib: usize,
    requests: &dyn Fn() -> Requests,
) -> Result<Measured, String> {
    let dir = root.join(format!("fs_compare.{}", std::process::id()));
    fs::create_dir(&dir).map_err(io_err(&dir))?;
    let names: Vec<PathBuf> = (0..files).map(|i| dir.join(format!("f{i:08}"))).collect();
    let mut m = Measured::default();
    // Nothing written before (mkfs.ext4 leaves tens of MB dirty) is written back during
    // this file system's creates.
    run("sync", &[])?;
    let start = || (Instant::now(), requests());
    let mut stop = |phase: usize, (at, before): (Instant, Requests)| {
        m.time[phase] = at.elapsed();
        m.requests[phase] = requests().since(&before);
    };

    let s = start();
    for p in &names {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(p)
            .map_err(io_err(p))?;
    }
    syncfs(&dir)?;
    stop(0, s);

    drop_caches()?;
    let s = start();
    for p in &names {
        let m = fs::symlink_metadata(p).map_err(io_err(p))?;
        if m.len() != 0 {
            return Err(format!("{}: size {} after create", p.display(), m.len()));
        }
    }
    stop(1, s);

    let s = start();
    for i in 0..files {
        let p = dir.join(format!("m{i:08}"));
        match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", p.display())),
            Ok(_) => return Err(format!("{}: exists", p.display())),
        }
    }
    stop(2, s);

    drop_caches()?;
    let s = start();
    let mut n = 0;
    for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
        e.map_err(io_err(&dir))?;
        n += 1;
    }
    stop(3, s);
    if n != files {
        return Err(format!("readdir found {n} of {files} files"));
    }

    let s = start();
    for p in &names {
        fs::remove_file(p).map_err(io_err(p))?;
    }
    syncfs(&dir)?;
    stop(4, s);

    let big = dir.join("big");
    let mut buf = vec![0u8; CHUNK];
    let s = start();
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
    stop(5, s);

    drop_caches()?;
    let s = start();
    {
        let mut f = File::open(&big).map_err(io_err(&big))?;
        for i in 0..file_mib {
            f.read_exact(&mut buf).map_err(io_err(&big))?;
            if buf[..8] != (i as u64).to_le_bytes() {
                return Err(format!("{}: chunk {i} reads back wrong", big.display()));
            }
        }
    }
    stop(6, s);

    fs::remove_file(&big).map_err(io_err(&big))?;
    fs::remove_dir(&dir).map_err(io_err(&dir))?;
    Ok(m)
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
        "fs_compare: {} files, a {} MiB file; ext4 on a loop device{} vs {} ({kind})",
        args.files,
        args.file_mib,
        if args.memfs { ", memfs" } else { "" },
        args.scoutfs.display()
    );
    let no_requests = Requests::default;
    let ext4 = Ext4::make(args.file_mib * 2 + 1024)?;
    let e = workload(&ext4.mountpoint(), args.files, args.file_mib, &no_requests)?;
    drop(ext4);
    let m = if args.memfs {
        let memfs = memfs::Mounted::mount()?;
        let m = workload(memfs.mountpoint(), args.files, args.file_mib, &|| {
            memfs.requests()
        })?;
        memfs.unmount()?;
        Some(m)
    } else {
        None
    };
    if let Some(pid) = args.pid {
        println!("daemon before: {}", memory(pid));
    }
    let s = workload(&args.scoutfs, args.files, args.file_mib, &no_requests)?;
    if let Some(pid) = args.pid {
        println!("daemon after:  {}", memory(pid));
    }
    match &m {
        Some(m) => table_with_memfs(args, &e, m, &s),
        None => table(args, &e, &s),
    }
    println!(
        "ratio = rate / rate (scoutfs/ext4 targets: create 0.5, stat 0.8, unlink 0.5, write and read 0.7)"
    );
    if let Some(m) = &m {
        println!(
            "memfs/ext4: the FUSE ceiling here (memfs does no I/O: its write and read copy memory)"
        );
        requests_per_phase(args, m);
    }
    Ok(())
}

fn ratio(a: f64, b: f64) -> f64 {
    a / b.max(1e-9)
}

fn table(args: &Args, e: &Measured, s: &Measured) {
    println!(
        "{:<8} {:>12} {:>12} {:>6}  {:>12}",
        "phase", "ext4", "scoutfs", "unit", "scoutfs/ext4"
    );
    for (i, name) in PHASES.iter().enumerate() {
        let (er, unit) = rate(i, e.time[i], args.files, args.file_mib);
        let (sr, _) = rate(i, s.time[i], args.files, args.file_mib);
        println!(
            "{name:<8} {er:>12.1} {sr:>12.1} {unit:>6}  {:>11.2}x",
            ratio(sr, er)
        );
    }
}

fn table_with_memfs(args: &Args, e: &Measured, m: &Measured, s: &Measured) {
    println!(
        "{:<8} {:>12} {:>12} {:>12} {:>6}  {:>10}  {:>12}  {:>13}",
        "phase", "ext4", "memfs", "scoutfs", "unit", "memfs/ext4", "scoutfs/ext4", "scoutfs/memfs"
    );
    for (i, name) in PHASES.iter().enumerate() {
        let (er, unit) = rate(i, e.time[i], args.files, args.file_mib);
        let (mr, _) = rate(i, m.time[i], args.files, args.file_mib);
        let (sr, _) = rate(i, s.time[i], args.files, args.file_mib);
        println!(
            "{name:<8} {er:>12.1} {mr:>12.1} {sr:>12.1} {unit:>6}  {:>9.2}x  {:>11.2}x  {:>12.2}x",
            ratio(mr, er),
            ratio(sr, er),
            ratio(sr, mr)
        );
    }
}

/// memfs's requests in each phase, and per file (per MiB for write and read).
fn requests_per_phase(args: &Args, m: &Measured) {
    println!(
        "memfs requests in each phase (per file, per MiB for write and read; FORGETs are not waited for):"
    );
    for (i, name) in PHASES.iter().enumerate() {
        let per = if i >= 5 { args.file_mib } else { args.files }.max(1) as f64;
        let counts: Vec<String> = Op::ALL
            .iter()
            .map(|&op| (op, m.requests[i].get(op)))
            .filter(|&(_, n)| n > 0)
            .map(|(op, n)| format!("{} {n} ({:.2})", op.name(), n as f64 / per))
            .collect();
        println!("{name:<8} {}", counts.join("  "));
    }
}
