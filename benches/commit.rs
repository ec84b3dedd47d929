//! Commit throughput, with the device's own durable write rate as the peer:
//! - `raw_4k_write_fdatasync`: a 4 KiB pwrite and `fdatasync` of a file in the same
//!   directory as the volume (the cost of one durable write on this device);
//! - `small_commit`: one item changed and committed per iteration (`Volume::put` +
//!   `commit`), with 64 KiB and 4 KiB metadata blocks;
//! - `batched`: 4 and 16 threads sending requests to one `Server`, which batches the
//!   requests that arrive while a commit is being written into the next commit;
//! - `large_commit`: 1,000 / 10,000 / 100,000 items (16-byte keys, 32-byte values) in
//!   one commit, durable commit included.
//!
//! After the criterion groups it prints a summary measured outside criterion: the small
//! commit rate over the raw write+fdatasync rate, commits per batched request, and blocks
//! and device writes per commit.
//!
//! `cargo bench -p scoutfs-benches --bench commit`; see BENCHMARKS.md.

use criterion::{BatchSize, Criterion, Throughput};
use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::format::Key;
use scoutfs_core::server::{Server, ServerCore, ServerOptions};
use scoutfs_core::volume::{mkfs, MkfsOptions, OpenOptions, Volume};
use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

fn rng(s: &mut u64) -> u64 {
    scoutfs_core::block::splitmix64(s)
}

fn key(a: u64, b: u64) -> Key {
    Key::new(16, a, 0, b, 0, 0)
}

fn devices(dir: &TempDir, bs: u32) -> (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) {
    let meta: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::create(dir.path().join("meta.img"), 1 << 30).expect("meta image"));
    let data: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::create(dir.path().join("data.img"), 64 << 20).expect("data image"));
    let opts = MkfsOptions {
        meta_block_size: bs,
        ..Default::default()
    };
    mkfs(&meta, &data, &opts).expect("mkfs");
    (meta, data)
}

fn volume(dir: &TempDir, bs: u32) -> Volume {
    let (meta, data) = devices(dir, bs);
    let opts = OpenOptions {
        cache_bytes: 256 << 20,
        seed: 1,
    };
    Volume::open(meta, data, opts).expect("open")
}

/// A file for raw durable writes, preallocated so the writes overwrite blocks.
fn raw_file(dir: &TempDir) -> File {
    let f = File::create(dir.path().join("raw.img")).expect("raw file");
    f.write_all_at(&vec![1u8; 1 << 20], 0).expect("fill");
    f.sync_all().expect("sync");
    f
}

fn raw_write(f: &File, i: u64, buf: &[u8]) {
    f.write_all_at(buf, (i % 256) * 4096).expect("pwrite");
    f.sync_data().expect("fdatasync");
}

fn small_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = raw_file(&dir);
    let buf = vec![7u8; 4096];
    let mut g = c.benchmark_group("small_commit");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("raw_4k_write_fdatasync", |b| {
        b.iter(|| {
            i += 1;
            raw_write(&f, i, &buf)
        })
    });
    for bs in [64 * 1024, 4096] {
        let vdir = tempfile::tempdir().expect("tempdir");
        let mut vol = volume(&vdir, bs);
        let mut s = 1u64;
        g.bench_function(format!("scoutfs_put_commit_{}k_blocks", bs / 1024), |b| {
            b.iter(|| {
                let k = rng(&mut s) % 10_000;
                vol.put(&key(k, 0), &k.to_le_bytes()).expect("put");
                black_box(vol.commit().expect("commit"))
            })
        });
    }
    g.finish();
}

fn server(dir: &TempDir) -> Arc<Server> {
    let (meta, data) = devices(dir, 64 * 1024);
    let core = ServerCore::open(meta, data, ServerOptions::default()).expect("open");
    Arc::new(Server::new(core))
}

/// `iters` requests from `threads` threads; the time they took.
fn run_batched(server: &Arc<Server>, threads: u64, iters: u64) -> Duration {
    let per = iters.div_ceil(threads);
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|n| {
            let s = server.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    s.apply(|c| {
                        c.with_txn(|t, r| t.force(&mut r.fs_root, &key(n, i % 1000), &[1; 32]))
                    })
                    .expect("request");
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("thread");
    }
    t.elapsed()
}

fn batched(c: &mut Criterion) {
    let mut g = c.benchmark_group("batched");
    g.throughput(Throughput::Elements(1));
    for threads in [4u64, 16] {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = server(&dir);
        g.bench_function(format!("scoutfs_{threads}_threads"), |b| {
            b.iter_custom(|iters| run_batched(&s, threads, iters.max(threads)))
        });
    }
    g.finish();
}

fn large_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("large_commit");
    for n in [1_000u64, 10_000, 100_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vol = volume(&dir, 64 * 1024);
        let mut s = n;
        g.throughput(Throughput::Elements(n));
        g.bench_function(format!("scoutfs_{n}_items"), |b| {
            b.iter_batched(
                || {
                    (0..n)
                        .map(|_| (rng(&mut s), rng(&mut s)))
                        .collect::<Vec<_>>()
                },
                |ks| {
                    vol.change(|t, root| {
                        for &(a, b) in &ks {
                            t.force(root, &key(a, b), &[9u8; 32])?;
                        }
                        Ok(())
                    })
                    .expect("insert");
                    black_box(vol.commit().expect("commit"))
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

/// Rates measured outside criterion, for the ratios criterion does not print.
fn summary() {
    const N: u64 = 300;
    let dir = tempfile::tempdir().expect("tempdir");
    let f = raw_file(&dir);
    let buf = vec![7u8; 4096];
    let t = Instant::now();
    for i in 0..N {
        raw_write(&f, i, &buf);
    }
    let raw = N as f64 / t.elapsed().as_secs_f64();
    println!("raw 4 KiB write + fdatasync: {raw:.0}/s");
    for bs in [64 * 1024, 4096] {
        let vdir = tempfile::tempdir().expect("tempdir");
        let mut vol = volume(&vdir, bs);
        let (mut blocks, mut writes) = (0, 0);
        let t = Instant::now();
        for i in 0..N {
            vol.put(&key(i % 1000, 0), &i.to_le_bytes()).expect("put");
            let st = vol.commit().expect("commit");
            blocks += st.blocks;
            writes += st.writes;
        }
        let rate = N as f64 / t.elapsed().as_secs_f64();
        println!(
            "small commits, {} KiB blocks: {rate:.0}/s = {:.2}x raw; per commit {:.1} blocks in {:.1} writes + the super, 2 flushes",
            bs / 1024,
            rate / raw,
            blocks as f64 / N as f64,
            writes as f64 / N as f64
        );
    }
    // Large commits of random keys into a tree that already holds 100,000 items.
    let vdir = tempfile::tempdir().expect("tempdir");
    let mut vol = volume(&vdir, 64 * 1024);
    let mut s = 99u64;
    let mut fill = |vol: &mut Volume, n: u64| {
        let ks: Vec<(u64, u64)> = (0..n).map(|_| (rng(&mut s), rng(&mut s))).collect();
        let t = Instant::now();
        vol.change(|t, root| {
            for &(a, b) in &ks {
                t.force(root, &key(a, b), &[9u8; 32])?;
            }
            Ok(())
        })
        .expect("insert");
        let st = vol.commit().expect("commit");
        (t.elapsed(), st)
    };
    fill(&mut vol, 100_000);
    for n in [1_000u64, 10_000, 100_000] {
        let (d, st) = fill(&mut vol, n);
        println!(
            "large commit of {n} random items into a 100k+ item tree: {:.0} items/s; {} blocks ({:.1} MiB) in {} writes, {:.1} items per block written",
            n as f64 / d.as_secs_f64(),
            st.blocks,
            st.blocks as f64 * 64.0 / 1024.0,
            st.writes,
            n as f64 / st.blocks as f64
        );
    }
    for threads in [4u64, 16] {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = server(&dir);
        let c0 = s.commits();
        let n = 2000;
        let d = run_batched(&s, threads, n);
        let commits = s.commits() - c0;
        println!(
            "batched, {threads} threads: {:.0} requests/s = {:.2}x raw; {:.2} commits per request",
            n as f64 / d.as_secs_f64(),
            n as f64 / d.as_secs_f64() / raw,
            commits as f64 / n as f64
        );
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    small_commit(&mut c);
    batched(&mut c);
    large_commit(&mut c);
    c.final_summary();
    summary();
}
