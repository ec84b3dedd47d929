//! Times the filesystem API in-process (no FUSE) on image files: creates, lookups and
//! stats, readdir, renames and unlinks of one large directory, then a large sequential
//! write (with fsync) and read. Two directory sizes are run so the cost per operation can be
//! compared: it should not grow with the size of the directory.
//!
//! ```sh
//! cargo run --release --example fs_ops [DIR] [FILES] [--namespace-only]
//! ```
//!
//! DIR (default `./scoutfs-fs-ops`) receives fresh `meta.img` and `data.img` files each
//! run; FILES defaults to 20000 (the small run uses a quarter of it). `--namespace-only`
//! leaves out the data run (for instruction counts under callgrind).

use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::fs::{Creds, Fs, FsOptions, RenameFlags, ROOT_INO};
use scoutfs_core::volume::{mkfs, MkfsOptions};
use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

type Res<T> = Result<T, Box<dyn Error>>;

const META_SIZE: u64 = 1 << 30;
const DATA_SIZE: u64 = 2 << 30;
const BIG_FILE: u64 = 512 << 20;
const CHUNK: usize = 1 << 20;

fn per_op(label: &str, n: usize, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    println!(
        "  {label:<10} {n:>7} in {s:>7.3} s  {:>8.1} us/op  {:>9.0} ops/s",
        s * 1e6 / n as f64,
        n as f64 / s
    );
}

fn fresh(dir: &Path) -> Res<Fs> {
    std::fs::create_dir_all(dir)?;
    let meta: Arc<dyn BlockDevice> = Arc::new(FileDevice::create(dir.join("meta.img"), META_SIZE)?);
    let data: Arc<dyn BlockDevice> = Arc::new(FileDevice::create(dir.join("data.img"), DATA_SIZE)?);
    mkfs(
        &meta,
        &data,
        &MkfsOptions {
            force: true,
            ..Default::default()
        },
    )?;
    Ok(Fs::mount_single(meta, data, FsOptions::default())?)
}

fn namespace(dir: &Path, n: usize) -> Res<()> {
    let fs = fresh(dir)?;
    let c = Creds::default();
    println!("directory of {n} files:");
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, c)?.ino;
    let names: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("file-{i:08}").into_bytes())
        .collect();
    let t = Instant::now();
    let mut inos = Vec::with_capacity(n);
    for name in &names {
        inos.push(fs.mknod(d, name, 0o100644, 0, c)?.ino);
    }
    fs.sync()?;
    per_op("create", n, t);
    let t = Instant::now();
    for (name, &ino) in names.iter().zip(&inos) {
        let a = fs.lookup(d, name)?;
        if a.ino != ino || fs.getattr(ino)?.nlink != 1 {
            return Err("lookup found the wrong inode".into());
        }
    }
    per_op("lookup+stat", n, t);
    let t = Instant::now();
    let mut seen = 0;
    fs.readdir(d, 0, &mut |_| {
        seen += 1;
        true
    })?;
    if seen != n + 2 {
        return Err(format!("readdir saw {seen} entries").into());
    }
    per_op("readdir", n, t);
    let t = Instant::now();
    let renamed: Vec<Vec<u8>> = (0..n)
        .map(|i| format!("renamed-{i:08}").into_bytes())
        .collect();
    for (old, new) in names.iter().zip(&renamed) {
        fs.rename(d, old, d, new, RenameFlags::default())?;
    }
    fs.sync()?;
    per_op("rename", n, t);
    let t = Instant::now();
    for name in &renamed {
        fs.unlink(d, name)?;
    }
    fs.sync()?;
    per_op("unlink", n, t);
    fs.unmount()?;
    Ok(())
}

fn data(dir: &Path) -> Res<()> {
    let fs = fresh(dir)?;
    let f = fs
        .mknod(ROOT_INO, b"big", 0o100644, 0, Creds::default())?
        .ino;
    let buf: Vec<u8> = (0..CHUNK).map(|i| (i % 253) as u8).collect();
    let t = Instant::now();
    let mut off = 0;
    while off < BIG_FILE {
        fs.write(f, off, &buf)?;
        off += CHUNK as u64;
    }
    fs.fsync(f, false)?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "sequential write of {} MiB in 1 MiB writes + fsync: {:.0} MiB/s",
        BIG_FILE >> 20,
        (BIG_FILE >> 20) as f64 / s
    );
    let t = Instant::now();
    let mut off = 0;
    while off < BIG_FILE {
        let got = fs.read(f, off, CHUNK as u32)?;
        if got != buf {
            return Err("read back other bytes".into());
        }
        off += CHUNK as u64;
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "sequential read of {} MiB in 1 MiB reads: {:.0} MiB/s",
        BIG_FILE >> 20,
        (BIG_FILE >> 20) as f64 / s
    );
    fs.unmount()?;
    Ok(())
}

fn main() -> Res<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "scoutfs-fs-ops".into());
    let n: usize = match args.next() {
        Some(s) => s.parse()?,
        None => 20_000,
    };
    let namespace_only = args.next().as_deref() == Some("--namespace-only");
    let dir = Path::new(&dir);
    namespace(dir, n / 4)?;
    namespace(dir, n)?;
    if !namespace_only {
        data(dir)?;
    }
    std::fs::remove_file(dir.join("meta.img"))?;
    std::fs::remove_file(dir.join("data.img"))?;
    Ok(())
}
