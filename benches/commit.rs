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
//! After the criterion groups (only under `cargo bench`) it prints a summary measured
//! outside criterion, for the ratios criterion does not compute:
//! - what one small commit writes, block by block (the trees and lists its super names);
//! - the raw peer, small commits, and raw writes shaped like a commit (its blocks +
//!   fdatasync, then 4 KiB + fdatasync, i.e. the two flushes of the durability contract
//!   without the CPU work), timed in interleaved rounds, with `commit/fsync ratio`; small
//!   commits also on a preallocated meta image and in memory (the CPU part alone);
//! - large commits into an empty tree and into a tree of 100,000 items, with the blocks
//!   they write; commits per batched request.
//!
//! `cargo bench -p scoutfs-benches --features peers --bench commit`; see BENCHMARKS.md.

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use scoutfs_core::alloc::list::read_list;
use scoutfs_core::btree;
use scoutfs_core::device::{BlockDevice, DeviceError, FileDevice, MemDevice};
use scoutfs_core::format::{BtreeRoot, Key, SuperBlock, SUPER_OFFSET, SUPER_SIZE, SUPER_SLOTS};
use scoutfs_core::server::{Server, ServerCore, ServerOptions};
use scoutfs_core::volume::{mkfs, MkfsOptions, OpenOptions, Volume};
use std::collections::BTreeMap;
use std::fs::File;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};
use tempfile::TempDir;

fn rng(s: &mut u64) -> u64 {
    scoutfs_core::block::splitmix64(s)
}

fn key(a: u64, b: u64) -> Key {
    Key::new(16, a, 0, b, 0, 0)
}

fn devices(dir: &Path, bs: u32) -> (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) {
    let meta: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::create(dir.join("meta.img"), 1 << 30).expect("meta image"));
    let data: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::create(dir.join("data.img"), 64 << 20).expect("data image"));
    let opts = MkfsOptions {
        meta_block_size: bs,
        ..Default::default()
    };
    mkfs(&meta, &data, &opts).expect("mkfs");
    (meta, data)
}

fn volume(dir: &Path, bs: u32) -> Volume {
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
        let mut vol = volume(vdir.path(), bs);
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

fn server(dir: &Path) -> Arc<Server> {
    let (meta, data) = devices(dir, 64 * 1024);
    let core = ServerCore::open(meta, data, ServerOptions::default()).expect("open");
    Arc::new(Server::new(core))
}

/// Request `i` of thread `n`: one item changed, answered once durable.
fn request(s: &Server, n: u64, i: u64) {
    s.apply(|c| c.with_txn(|t, r| t.force(&mut r.fs_root, &key(n, i % 1000), &[1; 32])))
        .expect("request");
}

/// `iters` requests from `threads` threads; the time they took.
fn run_batched(server: &Arc<Server>, threads: u64, iters: u64) -> Duration {
    let t = Instant::now();
    let hs: Vec<_> = (0..threads)
        .map(|n| {
            let s = server.clone();
            let per = iters / threads + u64::from(n < iters % threads);
            std::thread::spawn(move || {
                for i in 0..per {
                    request(&s, n, i);
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
    let mut batching = Vec::new();
    for threads in [4u64, 16] {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = server(dir.path());
        let (c0, mut requests) = (s.commits(), 0);
        g.bench_function(format!("scoutfs_{threads}_threads"), |b| {
            b.iter_custom(|iters| {
                requests += iters;
                run_batched(&s, threads, iters)
            })
        });
        batching.push((threads, requests, s.commits() - c0));
    }
    g.finish();
    for (threads, requests, commits) in batching.into_iter().filter(|b| b.1 > 0) {
        println!(
            "batched, {threads} threads: {requests} requests in {commits} commits, {:.2} commits per request",
            commits as f64 / requests.max(1) as f64
        );
    }
}

fn large_commit(c: &mut Criterion) {
    let mut g = c.benchmark_group("large_commit");
    // The same number of iterations in every sample: 10 iterations at least, not the 55
    // of linear sampling (each one also grows the tree).
    g.sampling_mode(SamplingMode::Flat);
    for n in [1_000u64, 10_000, 100_000] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut vol = volume(dir.path(), 64 * 1024);
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

/// A [`BlockDevice`] that counts the bytes written and the flushes, and can log the
/// writes (for the census of a small commit).
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn BlockDevice>,
    bytes: AtomicU64,
    writes: AtomicU64,
    flushes: AtomicU64,
    log: Mutex<Option<Vec<(u64, usize)>>>,
}

impl Counting {
    fn new(inner: Arc<dyn BlockDevice>) -> Arc<Counting> {
        Arc::new(Counting {
            inner,
            bytes: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            log: Mutex::new(None),
        })
    }

    /// Bytes written, device writes and flushes so far.
    fn counts(&self) -> [u64; 3] {
        [
            self.bytes.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
            self.flushes.load(Ordering::Relaxed),
        ]
    }

    /// Start (`true`) or stop logging writes; returns what was logged.
    fn log(&self, on: bool) -> Vec<(u64, usize)> {
        let mut l = self.log.lock().expect("log");
        let out = l.take().unwrap_or_default();
        *l = on.then(Vec::new);
        out
    }
}

impl BlockDevice for Counting {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        self.inner.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DeviceError> {
        self.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.writes.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = self.log.lock().expect("log").as_mut() {
            l.push((offset, buf.len()));
        }
        self.inner.write_at(buf, offset)
    }

    fn flush(&self) -> Result<(), DeviceError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.inner.flush()
    }

    fn len(&self) -> u64 {
        self.inner.len()
    }
}

/// A file of `bytes` bytes written through once and synced, so later writes overwrite
/// allocated blocks (as on a block device) instead of allocating file extents.
fn preallocated(path: &Path, bytes: u64) -> File {
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .expect("image");
    let chunk = vec![0u8; 1 << 20];
    for off in (0..bytes).step_by(chunk.len()) {
        let n = (bytes - off).min(chunk.len() as u64) as usize;
        f.write_all_at(&chunk[..n], off).expect("fill");
    }
    f.sync_all().expect("sync");
    f
}

/// The meta image of a small-commit volume in the summary.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Image {
    /// A sparse file, as in the criterion groups.
    Sparse,
    /// A file written through first.
    Preallocated,
    /// Memory: the commit's CPU work alone.
    Memory,
}

const SUMMARY_META_BYTES: u64 = 64 << 20;

/// A small-commit volume with 1,000 items in place, on a counting meta device.
fn summary_volume(dir: &Path, bs: u32, image: Image) -> (Arc<Counting>, Volume) {
    let inner: Arc<dyn BlockDevice> = match image {
        Image::Sparse => Arc::new(
            FileDevice::create(dir.join("meta.img"), SUMMARY_META_BYTES).expect("meta image"),
        ),
        Image::Preallocated => Arc::new(
            FileDevice::from_file(preallocated(&dir.join("meta.img"), SUMMARY_META_BYTES))
                .expect("meta image"),
        ),
        Image::Memory => Arc::new(MemDevice::new(SUMMARY_META_BYTES)),
    };
    let meta = Counting::new(inner);
    let data: Arc<dyn BlockDevice> = match image {
        Image::Memory => Arc::new(MemDevice::new(64 << 20)),
        _ => Arc::new(FileDevice::create(dir.join("data.img"), 64 << 20).expect("data image")),
    };
    let m: Arc<dyn BlockDevice> = meta.clone();
    let opts = MkfsOptions {
        meta_block_size: bs,
        ..Default::default()
    };
    mkfs(&m, &data, &opts).expect("mkfs");
    let opts = OpenOptions {
        cache_bytes: 256 << 20,
        seed: 1,
    };
    let mut vol = Volume::open(m, data, opts).expect("open");
    for i in 0..1000 {
        vol.put(&key(i, 0), &i.to_le_bytes()).expect("put");
    }
    vol.commit().expect("commit");
    (meta, vol)
}

/// A raw durable write of `first` bytes, then (if `second` > 0) one of `second` bytes,
/// each followed by fdatasync: the shape of a commit (blocks, flush, super, flush)
/// without its CPU work. All shapes share one preallocated file, each in its own region.
struct RawShape {
    file: Arc<File>,
    base: u64,
    first: Vec<u8>,
    second: Vec<u8>,
    n: u64,
}

/// Bytes of the shared raw file each shape cycles through.
const RAW_REGION: u64 = 16 << 20;

impl RawShape {
    fn new(file: &Arc<File>, region: u64, first: usize, second: usize) -> RawShape {
        RawShape {
            file: file.clone(),
            base: region * RAW_REGION,
            first: vec![7u8; first],
            second: vec![8u8; second],
            n: 0,
        }
    }

    fn step(&mut self) {
        let slots = RAW_REGION >> 20;
        // The first write cycles through the region's 1 MiB slots but its first, the
        // second through two 4 KiB ones in that first slot (as the super's two slots lie
        // apart from the blocks).
        let off = self.base + ((1 + self.n % (slots - 1)) << 20);
        self.file.write_all_at(&self.first, off).expect("pwrite");
        self.file.sync_data().expect("fdatasync");
        if !self.second.is_empty() {
            let off = self.base + (self.n % 2) * 4096;
            self.file.write_all_at(&self.second, off).expect("pwrite");
            self.file.sync_data().expect("fdatasync");
        }
        self.n += 1;
    }
}

/// One row of the summary's interleaved measurement.
struct Probe<'a> {
    name: String,
    /// Does a round's work (`n` operations, or `n` requests per thread) and returns the
    /// number of operations done.
    round: Box<dyn FnMut(u64) -> u64 + 'a>,
    rates: Vec<f64>,
}

impl<'a> Probe<'a> {
    /// A probe that repeats `step` `n` times per round.
    fn each(name: String, mut step: impl FnMut() + 'a) -> Probe<'a> {
        Probe {
            name,
            round: Box::new(move |n| {
                for _ in 0..n {
                    step();
                }
                n
            }),
            rates: Vec::new(),
        }
    }
}

/// Threads sending one-item requests to a server, started once and driven in rounds, so
/// that batched requests can be timed between the other probes.
struct Workers {
    threads: u64,
    go: Arc<Barrier>,
    /// Requests per thread in the next round; `u64::MAX` stops the threads.
    per: Arc<AtomicU64>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    fn new(server: &Arc<Server>, threads: u64) -> Workers {
        let go = Arc::new(Barrier::new(threads as usize + 1));
        let per = Arc::new(AtomicU64::new(0));
        let handles = (0..threads)
            .map(|n| {
                let (s, go, per) = (server.clone(), go.clone(), per.clone());
                std::thread::spawn(move || {
                    let mut i = 0;
                    loop {
                        go.wait();
                        let k = per.load(Ordering::Relaxed);
                        if k == u64::MAX {
                            return;
                        }
                        for _ in 0..k {
                            request(&s, n, i);
                            i += 1;
                        }
                        go.wait();
                    }
                })
            })
            .collect();
        Workers {
            threads,
            go,
            per,
            handles,
        }
    }

    /// `n` requests from every thread; the number of requests.
    fn round(&self, n: u64) -> u64 {
        self.per.store(n, Ordering::Relaxed);
        self.go.wait();
        self.go.wait();
        n * self.threads
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.per.store(u64::MAX, Ordering::Relaxed);
        self.go.wait();
        for h in self.handles.drain(..) {
            h.join().expect("worker");
        }
    }
}

/// Median of per-round rates.
fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// What the blocks a commit wrote are, by the trees and lists of the super it wrote.
fn census(vol: &Volume, log: &[(u64, usize)]) -> BTreeMap<&'static str, usize> {
    let sb: SuperBlock = *vol.super_block();
    let cache = vol.cache().clone();
    let bs = u64::from(sb.meta_block_size.get());
    let mut kinds: BTreeMap<u64, &'static str> = BTreeMap::new();
    for (root, name) in [
        (BtreeRoot::from(sb.fs_root), "fs btree"),
        (sb.meta_alloc[0].root.into(), "meta extent tree"),
        (sb.data_alloc.root.into(), "data extent tree"),
    ] {
        btree::walk_blocks(&*cache, &root, &mut |v| {
            kinds.insert(v.blk.blkno, name);
            Ok(())
        })
        .expect("walk");
    }
    for (head, name) in [
        (sb.server_meta_avail[0], "avail list"),
        (sb.server_meta_freed[0], "freed list"),
    ] {
        for r in read_list(&*cache, &head).expect("list").blocks {
            kinds.insert(r.blkno, name);
        }
    }
    let supers = SUPER_OFFSET..SUPER_OFFSET + SUPER_SLOTS * SUPER_SIZE as u64;
    let mut out = BTreeMap::new();
    for &(off, len) in log {
        if supers.contains(&off) {
            *out.entry("super").or_default() += 1;
            continue;
        }
        for blk in off / bs..(off + len as u64) / bs {
            *out.entry(kinds.get(&blk).copied().unwrap_or("other"))
                .or_default() += 1;
        }
    }
    out
}

/// Rates measured outside criterion, for the ratios criterion does not print. The raw
/// peers and the small commits are timed in interleaved rounds, so that a change in the
/// device's speed during the run (it moves by tens of percent on a shared VM) moves them
/// all alike; each rate is the median of its rounds.
fn summary() {
    const ROUNDS: usize = 60;
    const PER_ROUND: u64 = 10;
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = |name: &str| {
        let p = dir.path().join(name);
        std::fs::create_dir(&p).expect("dir");
        p
    };

    // What one small commit writes, to shape the raw peers like it.
    let mut shapes = Vec::new();
    for bs in [64 * 1024, 4096] {
        let (meta, mut vol) = summary_volume(&sub(&format!("census-{bs}")), bs, Image::Memory);
        const N: u64 = 50;
        let before = meta.counts();
        for i in 1..N {
            vol.put(&key(i % 1000, 0), &i.to_le_bytes()).expect("put");
            vol.commit().expect("commit");
        }
        meta.log(true);
        vol.put(&key(0, 0), &[1]).expect("put");
        vol.commit().expect("commit");
        let log = meta.log(false);
        let after = meta.counts();
        let per = |k: usize| (after[k] - before[k]) as f64 / N as f64;
        println!(
            "small commit, {} KiB blocks: {:.1} KiB in {:.1} device writes, {:.1} flushes per commit; \
             the last one wrote {:?}",
            bs / 1024,
            per(0) / 1024.0,
            per(1),
            per(2),
            census(&vol, &log)
        );
        // Bytes before the first flush: all but the 4 KiB super.
        let blocks = (per(0) as usize).saturating_sub(SUPER_SIZE);
        shapes.push((bs, blocks.div_ceil(4096) * 4096));
    }

    let mut probes: Vec<Probe<'_>> = Vec::new();
    let file = Arc::new(preallocated(&dir.path().join("raw.img"), 5 * RAW_REGION));
    let mut raw = RawShape::new(&file, 0, 4096, 0);
    probes.push(Probe::each(
        "raw 4 KiB write + fdatasync (the peer)".into(),
        move || raw.step(),
    ));
    let mut two = RawShape::new(&file, 1, 4096, 4096);
    probes.push(Probe::each(
        "2 x (4 KiB write + fdatasync)".into(),
        move || two.step(),
    ));
    for (region, &(bs, bytes)) in (2..).zip(&shapes) {
        let mut shaped = RawShape::new(&file, region, bytes, 4096);
        probes.push(Probe::each(
            format!(
                "{} KiB + fdatasync, 4 KiB + fdatasync (a {} KiB-block commit's writes)",
                bytes / 1024,
                bs / 1024
            ),
            move || shaped.step(),
        ));
    }
    let mut leaf = RawShape::new(&file, 4, 64 * 1024, 4096);
    probes.push(Probe::each(
        "64 KiB + fdatasync, 4 KiB + fdatasync (the leaf and the super alone)".into(),
        move || leaf.step(),
    ));
    for bs in [64 * 1024, 4096] {
        for image in [Image::Sparse, Image::Preallocated, Image::Memory] {
            let (_meta, mut vol) = summary_volume(&sub(&format!("vol-{bs}-{image:?}")), bs, image);
            let mut i = 0u64;
            let name = format!(
                "small commit, {} KiB blocks, {} meta image",
                bs / 1024,
                match image {
                    Image::Sparse => "sparse",
                    Image::Preallocated => "preallocated",
                    Image::Memory => "in-memory",
                }
            );
            probes.push(Probe::each(name, move || {
                i += 1;
                vol.put(&key(i % 1000, 0), &i.to_le_bytes()).expect("put");
                black_box(vol.commit().expect("commit"));
            }));
        }
    }
    let mut servers = Vec::new();
    for threads in [4u64, 16] {
        let s = server(&sub(&format!("server-{threads}")));
        // Every thread's items in place first: the measured requests overwrite.
        run_batched(&s, threads, 1000 * threads);
        servers.push((threads, s.clone(), s.commits()));
        let workers = Workers::new(&s, threads);
        probes.push(Probe {
            name: format!("batched requests, {threads} threads ({PER_ROUND} per thread a round)"),
            round: Box::new(move |n| workers.round(n)),
            rates: Vec::new(),
        });
    }
    // A warm-up round, then the measured ones, each in a new random order (so that no
    // probe always follows the same one).
    let mut order: Vec<usize> = (0..probes.len()).collect();
    let mut seed = 5u64;
    for round in 0..=ROUNDS {
        for k in (1..order.len()).rev() {
            order.swap(k, (rng(&mut seed) % (k as u64 + 1)) as usize);
        }
        for &k in &order {
            let p = &mut probes[k];
            let t = Instant::now();
            let done = (p.round)(PER_ROUND);
            if round > 0 {
                p.rates.push(done as f64 / t.elapsed().as_secs_f64());
            }
        }
    }
    let raw = median(&probes[0].rates);
    println!("\nmedians of {ROUNDS} interleaved rounds of {PER_ROUND}:");
    for p in &probes {
        let r = median(&p.rates);
        println!(
            "  {:<76} {r:>8.0}/s {:>6.2}x raw {:>8.1} us each",
            p.name,
            r / raw,
            1e6 / r
        );
    }
    let rate = |name: &str| {
        probes
            .iter()
            .find(|p| p.name == name)
            .map(|p| median(&p.rates))
            .unwrap_or(0.0)
    };
    let two = rate("2 x (4 KiB write + fdatasync)");
    let (c64, c4) = (
        rate("small commit, 64 KiB blocks, sparse meta image"),
        rate("small commit, 4 KiB blocks, sparse meta image"),
    );
    println!(
        "commit/fsync ratio: {:.2} (64 KiB blocks), {:.2} (4 KiB blocks); \
         against two 4 KiB write + fdatasync (the contract's floor): {:.2}, {:.2}\n",
        c64 / raw,
        c4 / raw,
        c64 / two,
        c4 / two
    );
    drop(probes);
    for (threads, s, c0) in servers {
        let requests = (ROUNDS as u64 + 1) * PER_ROUND * threads;
        println!(
            "batched, {threads} threads: {:.2} commits per request",
            (s.commits() - c0) as f64 / requests as f64
        );
    }

    // Large commits of random keys, into an empty tree and into one of 100,000 items.
    let mut seed = 99u64;
    let mut fill = |vol: &mut Volume, n: u64| {
        let ks: Vec<(u64, u64)> = (0..n).map(|_| (rng(&mut seed), rng(&mut seed))).collect();
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
    let vdir = tempfile::tempdir().expect("tempdir");
    let mut big = volume(vdir.path(), 64 * 1024);
    fill(&mut big, 100_000);
    for n in [1_000u64, 10_000, 100_000] {
        let edir = tempfile::tempdir().expect("tempdir");
        let mut empty = volume(edir.path(), 64 * 1024);
        for (vol, what) in [
            (&mut empty, "an empty tree"),
            (&mut big, "a 100k+ item tree"),
        ] {
            let (d, st) = fill(vol, n);
            println!(
                "large commit of {n} random items into {what}: {:.0} items/s; {} blocks ({:.1} MiB) in {} writes, {:.1} items per block written",
                n as f64 / d.as_secs_f64(),
                st.blocks,
                st.blocks as f64 * 64.0 / 1024.0,
                st.writes,
                n as f64 / st.blocks as f64
            );
        }
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
    // `cargo bench` passes `--bench`; `cargo test --benches` runs each bench once, as a
    // test, and needs no summary.
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
}
