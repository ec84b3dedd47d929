//! `cluster_compare`: many mounts of one volume (issue 15), as ratios in one run. Not a
//! test: it prints figures.
//!
//! ```text
//! cargo bench -p scoutfs-benches --bench cluster_compare
//! ```
//!
//! As root (memfs is a FUSE mount; without it the FUSE figure is skipped and said so). In
//! a fresh folder of the temporary directory (removed at the end) it makes a volume in
//! image files and serves it from this process: a [`Server`] behind a [`NetServer`] on
//! 127.0.0.1. Each mount is a process of its own, as real mounts are: this program
//! started again with `--mount` (`Fs::mount` over a [`NetClient`], its own block cache
//! and devices opened by itself), driven by commands on its stdin, one line each, and
//! answering on its stdout. Three such mounts join; a fourth process holds a second volume
//! mounted single-node (`Fs::mount_single`: server and mount in one process over the
//! in-process transport), the baseline the cluster path costs against.
//!
//! 1. **Scaling**: in rounds, the single-node mount then 1, 2 and 3 cluster mounts at
//!    once (interleaved: single, 1, 2, 3, single, 1, 2, 3, …) each create files — a
//!    `mknod` and a 64-byte write — in a fresh directory of their own for a fixed time,
//!    then sync. Rates: files/s of each mount (its count over its own time, sync
//!    included), and the total (all counts over the longest time). Per round the ratios
//!    2/1 and 3/1 of the totals, and 1/single; their medians over the rounds. Between
//!    trials, untimed, the files are unlinked again and every mount runs its background
//!    tick (commit, merge work), as a FUSE mount does every 10 s.
//! 2. **Lock ping-pong**: two of the cluster mounts take turns writing 4 KiB at offset 0 of
//!    one file. Each write needs the file's WRITE lock, which the other mount holds: the
//!    server asks it to give the lock up (an invalidation), it commits its transaction
//!    (the write it made), answers, and the server grants the lock. The time of each
//!    write, measured in the writing mount, is one handoff. Beside it, in each round: one
//!    FUSE round trip (an `lstat` of an absent name on memfs, `memfs.rs`: one LOOKUP
//!    request answered from memory, the fastest request a FUSE mount can be asked on this
//!    machine), the transport's own round trip (`GetRoots` over the same TCP
//!    connection), a write of the same mount while it keeps the lock (no handoff), and a
//!    4 KiB `pwrite` + `fdatasync` on the same disk (a commit makes several). Medians and
//!    p99 per round; the ratio handoff / FUSE round trip per round and its median.
//!
//! After each part the mounts' lock counts and the server's socket counts (requests of
//! the mounts, replies to its own requests) say what the work cost in messages.
//!
//! Longer runs: `CLUSTER_COMPARE_ROUNDS` (default 3), `CLUSTER_COMPARE_SECS` (seconds
//! each mount creates per trial, default 1.5), `CLUSTER_COMPARE_HANDOFFS` (per round,
//! default 100).

use scoutfs_benches::memfs::{self, Op, Requests};
use scoutfs_benches::stats::{median, quantile};
use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::fs::{Creds, Fs, FsOptions, ROOT_INO};
use scoutfs_core::server::{Server, ServerCore, ServerOptions};
use scoutfs_core::transport::{Request, Response, Transport};
use scoutfs_core::volume::{mkfs, MkfsOptions};
use scoutfs_net::{NetClient, NetClientOptions, NetServer, NetServerOptions};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Image sizes (sparse files; the files of each trial are removed again).
const META_BYTES: u64 = 4 << 30;
const DATA_BYTES: u64 = 4 << 30;
/// Each mount's memory for metadata, as a `scoutfs mount` has by default.
const CACHE_BYTES: usize = 256 << 20;
/// The data each created file gets.
const SMALL_WRITE: usize = 64;
/// The write of the ping-pong.
const PING_WRITE: usize = 4096;
/// The shared file of the ping-pong, in the root directory.
const SHARED: &[u8] = b"shared";
/// Samples of the other figures, per round.
const RTTS: usize = 1000;
const HELD_WRITES: usize = 200;
const FSYNCS: usize = 50;
const MISSES: usize = 2000;

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0o022,
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (res, who) = match args.first().map(String::as_str) {
        Some("--mount") => (mount_process(&args[1..]), "cluster_compare mount"),
        _ => (compare(), "cluster_compare"),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{who}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------
// A mount process: mounts, answers commands until told to quit or its stdin closes.

/// `--mount cluster ADDR FSID META DATA INDEX` or `--mount single META DATA INDEX`.
fn mount_process(args: &[String]) -> Result<(), String> {
    let usage = || format!("bad mount arguments: {args:?}");
    let opts = FsOptions {
        cache_bytes: CACHE_BYTES,
        ..FsOptions::default()
    };
    let open = |p: &String| -> Result<Arc<dyn BlockDevice>, String> {
        Ok(Arc::new(FileDevice::open(p).map_err(err(p))?))
    };
    let (fs, net, index) = match args {
        [kind, addr, fsid, meta, data, index] if kind == "cluster" => {
            let addr: SocketAddr = addr.parse().map_err(|_| usage())?;
            let fsid: u64 = fsid.parse().map_err(|_| usage())?;
            let net = Arc::new(
                NetClient::connect(addr, NetClientOptions::new(fsid)).map_err(err("connect"))?,
            );
            let fs =
                Fs::mount(open(meta)?, open(data)?, net.clone(), opts).map_err(err("Fs::mount"))?;
            (fs, Some(net), index)
        }
        [kind, meta, data, index] if kind == "single" => {
            let fs = Fs::mount_single(open(meta)?, open(data)?, opts)
                .map_err(err("Fs::mount_single"))?;
            (fs, None, index)
        }
        _ => return Err(usage()),
    };
    let mut m = Mounted {
        top: fs
            .mkdir(ROOT_INO, format!("m{index}").as_bytes(), 0o755, C)
            .map_err(err("mkdir"))?
            .ino,
        fs,
        net,
        dir: None,
        files: 0,
        shared: None,
    };
    println!("ready");
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line.map_err(err("stdin"))?;
        if line == "quit" {
            break;
        }
        let reply = m.command(&line)?;
        println!("{reply}");
    }
    m.fs.unmount().map_err(err("unmount"))?;
    println!("done");
    Ok(())
}

/// What a mount process keeps between commands.
#[derive(Debug)]
struct Mounted {
    fs: Fs,
    /// The cluster mount's transport (for the round trips it measures).
    net: Option<Arc<NetClient>>,
    /// The mount's own directory in the root.
    top: u64,
    /// The directory of the current trial, and the files made in it.
    dir: Option<(u64, String)>,
    files: u64,
    /// The ping-pong's file.
    shared: Option<u64>,
}

fn nanos(d: Duration) -> String {
    d.as_nanos().to_string()
}

impl Mounted {
    /// One command; its answer, one line.
    fn command(&mut self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |s: &str| s.parse::<u64>().map_err(|_| format!("not a number: {s}"));
        let fs = &self.fs;
        match words.as_slice() {
            // A fresh directory for the trial of round R.
            ["prep", r] => {
                let name = format!("r{r}");
                let d = fs.mkdir(self.top, name.as_bytes(), 0o755, C);
                self.dir = Some((d.map_err(err("mkdir"))?.ino, name));
                self.files = 0;
                Ok("ok".into())
            }
            // Create files for MS milliseconds, then sync: "COUNT NANOS".
            ["create", ms] => {
                let dir = self.dir.as_ref().ok_or("create before prep")?.0;
                let until = Duration::from_millis(num(ms)?);
                let body = [0x5a_u8; SMALL_WRITE];
                let t = Instant::now();
                let mut n = 0u64;
                while !n.is_multiple_of(16) || t.elapsed() < until {
                    let name = format!("f{n:08}");
                    let a = fs.mknod(dir, name.as_bytes(), 0o100644, 0, C);
                    fs.write(a.map_err(err("mknod"))?.ino, 0, &body)
                        .map_err(err("write"))?;
                    n += 1;
                }
                fs.sync().map_err(err("sync"))?;
                self.files = n;
                Ok(format!("{n} {}", nanos(t.elapsed())))
            }
            // Remove the trial's files and directory, and run the background tick.
            ["clean"] => {
                let (dir, name) = self.dir.take().ok_or("clean before prep")?;
                for n in 0..self.files {
                    let f = format!("f{n:08}");
                    fs.unlink(dir, f.as_bytes()).map_err(err("unlink"))?;
                }
                fs.rmdir(self.top, name.as_bytes()).map_err(err("rmdir"))?;
                self.tick()
            }
            ["tick"] => self.tick(),
            // Find or make the shared file.
            ["open"] => {
                let a = match fs.lookup(ROOT_INO, SHARED) {
                    Ok(a) => a,
                    Err(_) => fs
                        .mknod(ROOT_INO, SHARED, 0o100644, 0, C)
                        .map_err(err("mknod shared"))?,
                };
                self.shared = Some(a.ino);
                Ok("ok".into())
            }
            // K writes of 4 KiB of BYTE at offset 0 of the shared file: their times.
            ["write", k, byte] => {
                let ino = self.shared.ok_or("write before open")?;
                let b = u8::try_from(num(byte)?).map_err(|_| "byte out of range")?;
                let buf = [b; PING_WRITE];
                let mut out = Vec::new();
                for _ in 0..num(k)? {
                    let t = Instant::now();
                    let n = fs.write(ino, 0, &buf).map_err(err("write shared"))?;
                    out.push(nanos(t.elapsed()));
                    if n as usize != PING_WRITE {
                        return Err(format!("short write of the shared file: {n}"));
                    }
                }
                Ok(out.join(" "))
            }
            // The shared file must read BYTE throughout (the other mount's last write).
            ["check", byte] => {
                let ino = self.shared.ok_or("check before open")?;
                let got = fs
                    .read(ino, 0, PING_WRITE as u32)
                    .map_err(err("read shared"))?;
                let b = num(byte)?;
                match got.iter().position(|&x| u64::from(x) != b) {
                    None if got.len() == PING_WRITE => Ok("ok".into()),
                    _ => Err(format!(
                        "the shared file does not read the other mount's last write ({b}): \
                         {} bytes, first {:?}",
                        got.len(),
                        got.first()
                    )),
                }
            }
            // K `GetRoots` round trips over the mount's transport: their times.
            ["rtt", k] => {
                let net = self.net.as_ref().ok_or("rtt of a single-node mount")?;
                let mut out = Vec::new();
                for _ in 0..num(k)? {
                    let t = Instant::now();
                    match net.call(Request::GetRoots).map_err(err("GetRoots"))? {
                        Response::Roots(_) => out.push(nanos(t.elapsed())),
                        r => return Err(format!("GetRoots answered {r:?}")),
                    }
                }
                Ok(out.join(" "))
            }
            // The mount's lock counts: "REQUESTS GRANTS INVALIDATIONS".
            ["locks"] => {
                let s = fs
                    .cluster_locks()
                    .map(|l| l.stats())
                    .ok_or("locks of a single-node mount")?;
                Ok(format!("{} {} {}", s.requests, s.grants, s.invalidations))
            }
            _ => Err(format!("unknown command: {line}")),
        }
    }

    fn tick(&self) -> Result<String, String> {
        self.fs.background_tick().map_err(err("background_tick"))?;
        Ok("ok".into())
    }
}

// ---------------------------------------------------------------------------------------
// The driver.

/// A mount process, driven by lines on its stdin.
#[derive(Debug)]
struct MountProc {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl MountProc {
    fn start(name: &str, args: &[String]) -> Result<MountProc, String> {
        let exe = std::env::current_exe().map_err(err("current_exe"))?;
        let mut child = Command::new(exe)
            .arg("--mount")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(err("starting a mount process"))?;
        let (stdin, stdout) = (child.stdin.take(), child.stdout.take());
        let stdout = BufReader::new(stdout.ok_or("no stdout")?);
        let mut p = MountProc {
            name: name.into(),
            child: Some(child),
            stdin,
            stdout,
        };
        let ready = p.recv()?;
        if ready != "ready" {
            return Err(format!("{name}: {ready}"));
        }
        Ok(p)
    }

    fn send(&mut self, cmd: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "{cmd}").map_err(err(&self.name))
    }

    fn recv(&mut self) -> Result<String, String> {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).map_err(err(&self.name))?;
        if n == 0 {
            return Err(format!("{}: the mount process ended", self.name));
        }
        Ok(line.trim_end().to_string())
    }

    fn ask(&mut self, cmd: &str) -> Result<String, String> {
        self.send(cmd)?;
        self.recv()
    }

    fn ask_ok(&mut self, cmd: &str) -> Result<(), String> {
        match self.ask(cmd)?.as_str() {
            "ok" => Ok(()),
            r => Err(format!("{}: {cmd}: {r}", self.name)),
        }
    }

    /// Times in nanoseconds, as microseconds.
    fn ask_times(&mut self, cmd: &str) -> Result<Vec<f64>, String> {
        let reply = self.ask(cmd)?;
        reply
            .split_whitespace()
            .map(|w| w.parse::<f64>().map(|ns| ns / 1e3))
            .collect::<Result<_, _>>()
            .map_err(|_| format!("{}: {cmd}: {reply}", self.name))
    }

    /// Unmount (the process commits and says farewell) and wait for it to end.
    fn quit(mut self) -> Result<(), String> {
        self.send("quit")?;
        let done = self.recv()?;
        self.stdin = None;
        let status = match self.child.take() {
            Some(mut c) => c.wait().map_err(err(&self.name))?,
            None => return Ok(()),
        };
        if done != "done" || !status.success() {
            return Err(format!("{}: unmount: {done} ({status})", self.name));
        }
        Ok(())
    }
}

impl Drop for MountProc {
    fn drop(&mut self) {
        // Closing stdin tells it to unmount; one that does not end soon is killed.
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The work folder, removed on drop.
#[derive(Debug)]
struct Work(PathBuf);

impl Drop for Work {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Makes a volume in `META` and `DATA` image files in `dir`; the paths and the fsid.
fn make_volume(dir: &Path, prefix: &str) -> Result<(String, String, u64), String> {
    let m = dir.join(format!("{prefix}meta.img"));
    let d = dir.join(format!("{prefix}data.img"));
    let meta: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::create(&m, META_BYTES).map_err(err("meta image"))?);
    let data: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::create(&d, DATA_BYTES).map_err(err("data image"))?);
    let opts = MkfsOptions {
        force: true,
        ..Default::default()
    };
    let sum = mkfs(&meta, &data, &opts).map_err(err("mkfs"))?;
    let s = |p: PathBuf| p.to_string_lossy().into_owned();
    Ok((s(m), s(d), sum.fsid))
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn compare() -> Result<(), String> {
    let rounds: usize = env_num("CLUSTER_COMPARE_ROUNDS", 3).max(1);
    let secs: f64 = env_num("CLUSTER_COMPARE_SECS", 1.5);
    let handoffs: usize = env_num("CLUSTER_COMPARE_HANDOFFS", 100).max(2);
    let ms = (secs * 1000.0).max(1.0) as u64;
    let dir = std::env::temp_dir().join(format!("cluster_compare.{}", std::process::id()));
    fs::create_dir(&dir).map_err(err(&dir.to_string_lossy()))?;
    let work = Work(dir);
    println!(
        "cluster_compare: {rounds} rounds, creates for {secs} s a trial, {handoffs} handoffs \
         a round; load average {} at the start",
        loadavg()
    );

    let (meta, data, fsid) = make_volume(&work.0, "")?;
    let open = |p: &String| -> Result<Arc<dyn BlockDevice>, String> {
        Ok(Arc::new(FileDevice::open(p).map_err(err(p))?))
    };
    let core = ServerCore::open(open(&meta)?, open(&data)?, ServerOptions::default())
        .map_err(err("server"))?;
    let server = Arc::new(Server::new(core));
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let net = NetServer::start(server, loopback, NetServerOptions::default())
        .map_err(err("NetServer"))?;
    let addr = net.local_addr().to_string();
    let mut mounts = Vec::new();
    for i in 0..3 {
        let args = [
            "cluster".into(),
            addr.clone(),
            fsid.to_string(),
            meta.clone(),
            data.clone(),
            i.to_string(),
        ];
        mounts.push(MountProc::start(&format!("mount {i}"), &args)?);
    }
    let (smeta, sdata, _) = make_volume(&work.0, "single-")?;
    let mut single = MountProc::start(
        "single-node mount",
        &["single".into(), smeta, sdata, "0".into()],
    )?;

    scaling(rounds, ms, &mut single, &mut mounts)?;
    println!("server sockets after the creates: {:?}", net.stats());
    ping_pong(rounds, handoffs, &work.0, &mut mounts)?;
    println!("server sockets after the ping-pong: {:?}", net.stats());

    single.quit()?;
    for m in mounts {
        m.quit()?;
    }
    net.shutdown();
    println!("load average {} at the end", loadavg());
    Ok(())
}

/// One trial: `procs` create at once; each one's (files, seconds).
fn trial(round: usize, ms: u64, procs: &mut [&mut MountProc]) -> Result<Vec<(f64, f64)>, String> {
    for p in procs.iter_mut() {
        p.ask_ok(&format!("prep {round}"))?;
    }
    for p in procs.iter_mut() {
        p.send(&format!("create {ms}"))?;
    }
    let mut out = Vec::new();
    for p in procs.iter_mut() {
        let reply = p.recv()?;
        let v: Vec<f64> = reply
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        match v.as_slice() {
            [n, ns] => out.push((*n, ns / 1e9)),
            _ => return Err(format!("{}: create: {reply}", p.name)),
        }
    }
    for p in procs.iter_mut() {
        p.send("clean")?;
    }
    for p in procs.iter_mut() {
        match p.recv()?.as_str() {
            "ok" => {}
            r => return Err(format!("{}: clean: {r}", p.name)),
        }
    }
    Ok(out)
}

/// Total files/s of a trial: all files over the longest time.
fn total(t: &[(f64, f64)]) -> f64 {
    let n: f64 = t.iter().map(|&(n, _)| n).sum();
    let s = t.iter().map(|&(_, s)| s).fold(0.0, f64::max);
    n / s.max(1e-9)
}

fn scaling(
    rounds: usize,
    ms: u64,
    single: &mut MountProc,
    mounts: &mut [MountProc],
) -> Result<(), String> {
    println!();
    println!("creates (mknod + {SMALL_WRITE}-byte write, sync at the end), files/s:");
    println!(
        "{:<6} {:>9} {:>9} {:>20} {:>28} {:>7} {:>7} {:>9}",
        "round",
        "single",
        "1 mount",
        "2 mounts (each)",
        "3 mounts (each)",
        "2/1",
        "3/1",
        "1/single"
    );
    let (mut r21, mut r31, mut r1s) = (Vec::new(), Vec::new(), Vec::new());
    let mut rates: [Vec<f64>; 4] = Default::default();
    for round in 0..rounds {
        let s = total(&trial(round * 4, ms, &mut [&mut *single])?);
        let mut t = Vec::new();
        for n in 1..=3 {
            let mut procs: Vec<&mut MountProc> = mounts.iter_mut().take(n).collect();
            t.push(trial(round * 4 + n, ms, &mut procs)?);
        }
        let tot: Vec<f64> = t.iter().map(|x| total(x)).collect();
        let each = |x: &[(f64, f64)]| {
            x.iter()
                .map(|&(n, s)| format!("{:.0}", n / s.max(1e-9)))
                .collect::<Vec<_>>()
                .join("/")
        };
        println!(
            "{round:<6} {s:>9.0} {:>9.0} {:>20} {:>28} {:>6.2}x {:>6.2}x {:>8.2}x",
            tot[0],
            format!("{:.0} ({})", tot[1], each(&t[1])),
            format!("{:.0} ({})", tot[2], each(&t[2])),
            tot[1] / tot[0],
            tot[2] / tot[0],
            tot[0] / s
        );
        r21.push(tot[1] / tot[0]);
        r31.push(tot[2] / tot[0]);
        r1s.push(tot[0] / s);
        rates[0].push(s);
        for (i, v) in tot.iter().enumerate() {
            rates[i + 1].push(*v);
        }
    }
    println!(
        "median {:>9.0} {:>9.0} {:>20.0} {:>28.0} {:>6.2}x {:>6.2}x {:>8.2}x",
        median(&rates[0]),
        median(&rates[1]),
        median(&rates[2]),
        median(&rates[3]),
        median(&r21),
        median(&r31),
        median(&r1s)
    );
    println!("(ratios: medians of the per-round ratios; totals: all files over the longest time)");
    for m in mounts.iter_mut() {
        let reply = m.ask("locks")?;
        println!(
            "{} locks after the creates (requests grants invalidations): {reply}",
            m.name
        );
    }
    Ok(())
}

/// `lstat`s of `n` absent names under `dir`, each timed (microseconds).
fn misses(dir: &Path, round: usize, n: usize) -> Result<Vec<f64>, String> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let p = dir.join(format!("absent-{round}-{i}"));
        let t = Instant::now();
        let r = fs::symlink_metadata(&p);
        out.push(t.elapsed().as_secs_f64() * 1e6);
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", p.display())),
            Ok(_) => return Err(format!("{}: exists", p.display())),
        }
    }
    Ok(out)
}

/// 4 KiB `pwrite` + `fdatasync` on a file in `dir`, each timed (microseconds).
fn fsyncs(dir: &Path, n: usize) -> Result<Vec<f64>, String> {
    let p = dir.join("fsync.probe");
    let f = fs::File::create(&p).map_err(err("fsync probe"))?;
    let buf = [0x33_u8; PING_WRITE];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f.write_all_at(&buf, (i * PING_WRITE) as u64)
            .and_then(|()| f.sync_data())
            .map_err(err("fsync probe"))?;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    drop(f);
    fs::remove_file(&p).map_err(err("fsync probe"))?;
    Ok(out)
}

/// The figures of one kind over the rounds: per round (median, p99).
#[derive(Debug, Default)]
struct Figure {
    med: Vec<f64>,
    p99: Vec<f64>,
}

impl Figure {
    fn add(&mut self, v: &[f64]) {
        self.med.push(median(v));
        self.p99.push(quantile(v, 0.99));
    }
}

fn ping_pong(
    rounds: usize,
    handoffs: usize,
    work: &Path,
    mounts: &mut [MountProc],
) -> Result<(), String> {
    let memfs = match memfs::Mounted::mount() {
        Ok(m) => Some(m),
        Err(e) => {
            eprintln!("skipped: FUSE round trip: memfs does not mount here ({e})");
            None
        }
    };
    let [a, b, ..] = mounts else {
        return Err("two mounts needed".into());
    };
    a.ask_ok("open")?;
    b.ask_ok("open")?;
    let before = [a.ask("locks")?, b.ask("locks")?];
    let mut hand = Figure::default();
    let mut held = Figure::default();
    let mut rtt = Figure::default();
    let mut sync = Figure::default();
    let mut fuse = Figure::default();
    let (mut to_fuse, mut to_rtt) = (Vec::new(), Vec::new());
    let mut byte = 0u8;
    let mut requests = Requests::default();
    println!();
    println!(
        "lock ping-pong: two mounts write {PING_WRITE} B at offset 0 of one file in turn; \
         microseconds, median / p99:"
    );
    let row = |round: &str, cells: [String; 7]| {
        println!(
            "{round:<6} {:>15} {:>13} {:>13} {:>13} {:>13} {:>10} {:>9}",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6]
        );
    };
    row(
        "round",
        [
            "handoff",
            "FUSE lookup",
            "TCP GetRoots",
            "write, held",
            "fdatasync",
            "hand/FUSE",
            "hand/TCP",
        ]
        .map(String::from),
    );
    let cell = |f: &Figure, i: usize| format!("{:.0} / {:.0}", f.med[i], f.p99[i]);
    for round in 0..rounds {
        // Turn 0 is a's write while it holds the lock (the last round ended so): not a
        // handoff. Every later turn takes the lock from the other mount.
        let mut lat = Vec::with_capacity(handoffs);
        for turn in 0..=handoffs {
            byte = byte.wrapping_add(1);
            let p = if turn % 2 == 0 { &mut *a } else { &mut *b };
            let t = p.ask_times(&format!("write 1 {byte}"))?;
            if turn > 0 {
                lat.extend(t);
            }
        }
        // The mount that did not write last reads the other's last write; then a takes
        // the lock and writes while it holds it.
        let reader = if handoffs.is_multiple_of(2) {
            &mut *b
        } else {
            &mut *a
        };
        reader.ask_ok(&format!("check {byte}"))?;
        let w = a.ask_times(&format!("write {} {byte}", HELD_WRITES + 1))?;
        hand.add(&lat);
        held.add(w.get(1..).unwrap_or_default());
        rtt.add(&a.ask_times(&format!("rtt {RTTS}"))?);
        sync.add(&fsyncs(work, FSYNCS)?);
        to_rtt.push(hand.med[round] / rtt.med[round]);
        let fuse_cell = match &memfs {
            Some(m) => {
                let at = m.requests();
                fuse.add(&misses(m.mountpoint(), round, MISSES)?);
                requests = m.requests().since(&at);
                to_fuse.push(hand.med[round] / fuse.med[round]);
                format!("{:.0}x", hand.med[round] / fuse.med[round])
            }
            None => "-".into(),
        };
        row(
            &round.to_string(),
            [
                cell(&hand, round),
                if memfs.is_some() {
                    format!("{:.1} / {:.1}", fuse.med[round], fuse.p99[round])
                } else {
                    "skipped".into()
                },
                cell(&rtt, round),
                format!("{:.1} / {:.1}", held.med[round], held.p99[round]),
                cell(&sync, round),
                fuse_cell,
                format!("{:.0}x", to_rtt[round]),
            ],
        );
    }
    let mid = |f: &Figure, prec: usize| {
        if f.med.is_empty() {
            "skipped".into()
        } else {
            format!("{:.prec$} / {:.prec$}", median(&f.med), median(&f.p99))
        }
    };
    row(
        "median",
        [
            mid(&hand, 0),
            mid(&fuse, 1),
            mid(&rtt, 0),
            mid(&held, 1),
            mid(&sync, 0),
            if to_fuse.is_empty() {
                "-".into()
            } else {
                format!("{:.0}x", median(&to_fuse))
            },
            format!("{:.0}x", median(&to_rtt)),
        ],
    );
    println!(
        "(medians over the rounds of each round's median and p99; ratios: medians of the \
         per-round ratios of medians)"
    );
    let after = [a.ask("locks")?, b.ask("locks")?];
    for (i, p) in [&*a, &*b].iter().enumerate() {
        println!(
            "{} locks (requests grants invalidations): before the ping-pong {}, after {}",
            p.name, before[i], after[i]
        );
    }
    if let Some(m) = memfs {
        let counts: Vec<String> = Op::ALL
            .iter()
            .map(|&op| (op, requests.get(op)))
            .filter(|&(_, n)| n > 0)
            .map(|(op, n)| format!("{} {n}", op.name()))
            .collect();
        println!(
            "memfs requests in the last round's {MISSES} lookups: {}",
            counts.join(", ")
        );
        m.unmount()?;
    }
    Ok(())
}
