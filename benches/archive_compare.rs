//! `archive_compare`: what the archive interface saves an agent, against the tools it
//! replaces, in one run (issue 14). Not a test: it prints figures.
//!
//! ```text
//! archive_compare [--files N] [--changed N] [--file-kib K] [--rounds R] SCOUTFS WORKDIR
//! ```
//!
//! SCOUTFS is the `scoutfs` program (target/release/scoutfs). As root, in WORKDIR (made
//! fresh; removed at the end unless `--keep`):
//! 1. A volume is made in image files and filled in-process through the core API: N files
//!    (default 1,000,000) in directories of 1,000, each with K KiB of data (default 4),
//!    and a `scoutfs.srch.archive` xattr on every hundredth. Then, a second later, C files
//!    (default N/100, spread evenly) are rewritten: the changed files.
//! 2. The volume is mounted with `scoutfs mount`; in R interleaved rounds (default 3),
//!    each after `sync` and `drop_caches` (the kernel's caches are emptied; the daemon's
//!    block cache stays warm):
//!    - **changed files**: `find MNT -type f -newer REF` (REF a file whose mtime is
//!      between the two steps) against `scoutfs walk-inodes data_seq SEQ -1 -p MNT`
//!      (SEQ the committed seq between the two steps); both must list C files;
//!    - **tagged files**: `getfattr -R -n scoutfs.srch.archive MNT` against
//!      `scoutfs search-xattrs scoutfs.srch.archive -p MNT`; both must find N/100;
//!    - **copying the changed files**: `rsync -a --files-from=LIST MNT/ COPY/` over the
//!      mount (COPY on the same disk).
//! 3. Unmounted, the reference agent (`scoutfs_examples::agent`) makes an archive pass
//!    in-process from SEQ: it copies the same C files with their SHA-256, syncs each
//!    copy, and releases the files' data. Against the median rsync round.
//!
//! Medians of the rounds, and the ratio peer/scoutfs (how many times faster scoutfs is).

use scoutfs_benches::cmd::{drop_caches, run};
use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::fs::{Creds, Fs, FsOptions, XattrSet, ROOT_INO};
use scoutfs_core::volume::{mkfs, MkfsOptions};
use scoutfs_examples::agent::{self, Position};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PER_DIR: usize = 1000;
const TAG: &str = "scoutfs.srch.archive";

#[derive(Debug)]
struct Args {
    files: usize,
    changed: usize,
    file_kib: usize,
    rounds: usize,
    keep: bool,
    scoutfs: PathBuf,
    work: PathBuf,
}

fn usage() -> String {
    "usage: archive_compare [--files N] [--changed N] [--file-kib K] [--rounds R] [--keep] \
     SCOUTFS WORKDIR"
        .to_string()
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        files: 1_000_000,
        changed: 0,
        file_kib: 4,
        rounds: 3,
        keep: false,
        scoutfs: PathBuf::new(),
        work: PathBuf::new(),
    };
    let mut pos = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number\n{}", usage()))
        };
        match s.as_str() {
            "--files" => a.files = num("--files")?,
            "--changed" => a.changed = num("--changed")?,
            "--file-kib" => a.file_kib = num("--file-kib")?,
            "--rounds" => a.rounds = num("--rounds")?.max(1),
            "--keep" => a.keep = true,
            _ if s.starts_with('-') => return Err(usage()),
            _ => pos.push(PathBuf::from(s)),
        }
    }
    let [scoutfs, work] = <[PathBuf; 2]>::try_from(pos).map_err(|_| usage())?;
    a.scoutfs = scoutfs;
    a.work = work;
    if a.changed == 0 {
        a.changed = (a.files / 100).max(1);
    }
    if a.files == 0 || a.changed > a.files {
        return Err(format!("need 0 < changed <= files\n{}", usage()));
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let res = compare(&args);
    if !args.keep {
        let _ = fs::remove_dir_all(&args.work);
    }
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archive_compare: {e}");
            ExitCode::FAILURE
        }
    }
}

fn err<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> String + '_ {
    move |e| format!("{what}: {e}")
}

fn open(work: &Path, create: bool, files: usize) -> Result<Fs, String> {
    let (m, d) = (work.join("meta.img"), work.join("data.img"));
    let (meta, data): (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) = if create {
        // Room for the inodes' items several times over, and the files' data twice.
        let meta_size = ((files as u64 * 4096).max(1 << 30)).next_power_of_two();
        let data_size = ((files as u64 * 64 * 1024).max(1 << 30)).next_power_of_two();
        let meta = Arc::new(FileDevice::create(&m, meta_size).map_err(err("meta.img"))?);
        let data = Arc::new(FileDevice::create(&d, data_size).map_err(err("data.img"))?);
        (meta, data)
    } else {
        (
            Arc::new(FileDevice::open(&m).map_err(err("meta.img"))?),
            Arc::new(FileDevice::open(&d).map_err(err("data.img"))?),
        )
    };
    if create {
        let opts = MkfsOptions {
            force: true,
            ..Default::default()
        };
        mkfs(&meta, &data, &opts).map_err(err("mkfs"))?;
    }
    let opts = FsOptions {
        cache_bytes: 1 << 30,
        ..Default::default()
    };
    Fs::mount_single(meta, data, opts).map_err(err("mount"))
}

/// The inode numbers of the files, in creation order, and the committed seq after the
/// first step.
fn fill(args: &Args) -> Result<(Vec<u64>, u64), String> {
    let fs = open(&args.work, true, args.files)?;
    let c = Creds::default();
    let body: Vec<u8> = (0..args.file_kib * 1024).map(|i| (i % 251) as u8).collect();
    let mut inos = Vec::with_capacity(args.files);
    let t = Instant::now();
    let mut dir = 0;
    for i in 0..args.files {
        if i % PER_DIR == 0 {
            let name = format!("d{:05}", i / PER_DIR);
            dir = fs
                .mkdir(ROOT_INO, name.as_bytes(), 0o755, c)
                .map_err(err("mkdir"))?
                .ino;
        }
        let name = format!("f{:07}", i);
        let ino = fs
            .mknod(dir, name.as_bytes(), 0o100644, 0, c)
            .map_err(err("mknod"))?
            .ino;
        if !body.is_empty() {
            fs.write(ino, 0, &body).map_err(err("write"))?;
        }
        if i % 100 == 0 {
            fs.setxattr(ino, TAG.as_bytes(), b"", XattrSet::Any)
                .map_err(err("setxattr"))?;
        }
        inos.push(ino);
        if i % 4096 == 0 {
            fs.background_tick().map_err(err("tick"))?;
        }
    }
    fs.sync().map_err(err("sync"))?;
    let seq = fs.committed_seq().map_err(err("committed_seq"))?;
    eprintln!(
        "made {} files ({} KiB each, every 100th tagged) in {:.1?}",
        args.files,
        args.file_kib,
        t.elapsed()
    );
    fs.merge_all().map_err(err("merge"))?;
    fs.unmount().map_err(err("unmount"))?;
    Ok((inos, seq))
}

/// Rewrite the changed files (a second after the reference time).
fn change(args: &Args, inos: &[u64]) -> Result<Vec<usize>, String> {
    let fs = open(&args.work, false, args.files)?;
    let step = args.files / args.changed;
    let picked: Vec<usize> = (0..args.changed).map(|i| i * step).collect();
    let body: Vec<u8> = (0..args.file_kib.max(1) * 1024)
        .map(|i| (i % 241) as u8)
        .collect();
    for &i in &picked {
        fs.write(inos[i], 0, &body).map_err(err("write"))?;
    }
    fs.sync().map_err(err("sync"))?;
    fs.merge_all().map_err(err("merge"))?;
    fs.unmount().map_err(err("unmount"))?;
    Ok(picked)
}

/// A scoutfs mount of the work volume, unmounted on drop.
struct Mounted {
    mnt: PathBuf,
    scoutfs: PathBuf,
}

impl Mounted {
    fn new(args: &Args) -> Result<Mounted, String> {
        let mnt = args.work.join("mnt");
        fs::create_dir_all(&mnt).map_err(err("mkdir mnt"))?;
        let s = |p: &Path| p.to_string_lossy().into_owned();
        run(
            &s(&args.scoutfs),
            &[
                "mount",
                "-o",
                "cache_size=1G",
                &s(&args.work.join("meta.img")),
                &s(&args.work.join("data.img")),
                &s(&mnt),
            ],
        )?;
        Ok(Mounted {
            mnt,
            scoutfs: args.scoutfs.clone(),
        })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let m = self.mnt.to_string_lossy().into_owned();
        if let Err(e) = run(&self.scoutfs.to_string_lossy(), &["umount", &m]) {
            eprintln!("archive_compare: cleanup: {e}");
        }
    }
}

/// Run a shell pipeline with caches dropped first; the time and its output.
fn timed(sh: &str) -> Result<(Duration, String), String> {
    drop_caches()?;
    let t = Instant::now();
    let out = Command::new("sh")
        .args(["-c", sh])
        .output()
        .map_err(err("sh"))?;
    let d = t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{sh}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok((d, String::from_utf8_lossy(&out.stdout).into_owned()))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn compare(args: &Args) -> Result<(), String> {
    if !nix_is_root() {
        return Err("must run as root (mounts, drop_caches)".into());
    }
    if args.work.exists() {
        return Err(format!(
            "{}: exists; give a fresh folder",
            args.work.display()
        ));
    }
    fs::create_dir_all(&args.work).map_err(err("workdir"))?;
    let (inos, seq) = fill(args)?;
    let reference = args.work.join("reference");
    fs::write(&reference, b"").map_err(err("reference"))?;
    std::thread::sleep(Duration::from_millis(1100));
    let picked = change(args, &inos)?;
    let list = args.work.join("changed.list");
    let names: String = picked
        .iter()
        .map(|&i| format!("d{:05}/f{:07}\n", i / PER_DIR, i))
        .collect();
    fs::write(&list, names).map_err(err("list"))?;
    let copy = args.work.join("copy");

    let m = Mounted::new(args)?;
    let (mnt, sc) = (m.mnt.to_string_lossy(), args.scoutfs.to_string_lossy());
    let tagged = args.files.div_ceil(100);
    let mut rows: Vec<(&str, Vec<Duration>, Vec<Duration>, usize)> = vec![
        (
            "changed files: find -newer / walk-inodes",
            vec![],
            vec![],
            args.changed,
        ),
        (
            "tagged files: getfattr -R / search-xattrs",
            vec![],
            vec![],
            tagged,
        ),
    ];
    let mut rsync = Vec::new();
    for round in 0..args.rounds {
        let peers = [
            format!("find {mnt} -type f -newer {}", reference.display()),
            format!("getfattr -R --absolute-names -n {TAG} {mnt} 2>/dev/null | grep -c '^# file'"),
        ];
        let ours = [
            format!(
                "{sc} walk-inodes data_seq {} -1 -p {mnt} | grep -v '^#'",
                seq + 1
            ),
            format!("{sc} search-xattrs {TAG} -p {mnt}"),
        ];
        for (i, row) in rows.iter_mut().enumerate() {
            let (pd, pout) = timed(&peers[i])?;
            let (od, oout) = timed(&ours[i])?;
            // The getfattr pipeline prints a count, the others a line per file.
            let pn = if i == 1 {
                pout.trim().parse().map_err(err("getfattr count"))?
            } else {
                pout.lines().count()
            };
            let on = oout.lines().count();
            if pn != row.3 || on < row.3 {
                return Err(format!(
                    "round {round}: {}: expected {} files, the peer found {pn}, scoutfs {on}",
                    row.0, row.3
                ));
            }
            row.1.push(pd);
            row.2.push(od);
        }
        let _ = fs::remove_dir_all(&copy);
        let (d, _) = timed(&format!(
            "rsync -a --files-from={} {mnt}/ {}/",
            list.display(),
            copy.display()
        ))?;
        rsync.push(d);
    }
    drop(m);

    let fs = open(&args.work, false, args.files)?;
    let archive = args.work.join("archive");
    fs::create_dir_all(&archive).map_err(err("archive"))?;
    drop_caches()?;
    let t = Instant::now();
    let mut pos = Position {
        seq: seq + 1,
        ino: 0,
    };
    let sum = agent::archive_pass(&fs, &archive, &mut pos, &mut |_| {}).map_err(err("agent"))?;
    let agent_time = t.elapsed();
    fs.unmount().map_err(err("unmount"))?;
    if sum.archived as usize != args.changed || sum.released as usize != args.changed {
        return Err(format!(
            "the agent archived {} and released {} of {} changed files",
            sum.archived, sum.released, args.changed
        ));
    }

    println!(
        "{} files of {} KiB in directories of {PER_DIR}, {} changed, {} tagged; medians of {} \
         rounds, kernel caches dropped before each",
        args.files, args.file_kib, args.changed, tagged, args.rounds
    );
    println!(
        "| {:<44} | {:>10} | {:>10} | {:>8} |",
        "work", "peer", "scoutfs", "ratio"
    );
    println!("|{:-<46}|{:->12}|{:->12}|{:->10}|", "", "", "", "");
    for (name, p, o, _) in rows {
        let (p, o) = (median(p), median(o));
        println!(
            "| {name:<44} | {:>8.3} s | {:>8.3} s | {:>7.1}× |",
            p.as_secs_f64(),
            o.as_secs_f64(),
            p.as_secs_f64() / o.as_secs_f64()
        );
    }
    let r = median(rsync);
    println!(
        "| {:<44} | {:>8.3} s | {:>8.3} s | {:>7.2}× |",
        "archive pass: rsync (copy) / agent (copy+sha256+sync+release)",
        r.as_secs_f64(),
        agent_time.as_secs_f64(),
        r.as_secs_f64() / agent_time.as_secs_f64()
    );
    Ok(())
}

fn nix_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
