//! Log merge throughput: K finalized log trees (K = 1, 4, 16, 64) holding 64,000 items in
//! all (16-byte random keys, 32-byte values) merged into the filesystem root, empty or
//! already holding 200,000 items; and a merge where few leaves of a large root change
//! (200 items into 200,000).
//!
//! In the same groups, the peers do the same work: fjall's major compaction of the same
//! items written as K tables, and a bare in-memory K-way heap merge of the same sorted
//! runs (greatest seq wins).
//!
//! The scoutfs merge is the whole protocol on image files: mounts ask for requests, merge
//! subtrees with their blocks, write them, the server splices and commits (durably), and
//! the input trees are freed. Setup (writing the log trees and finalizing them) is not
//! timed. After the groups, a summary prints metadata blocks written per item merged.
//!
//! `cargo bench -p scoutfs-benches --features peers --bench merge`; see BENCHMARKS.md. `--once K ROOT`
//! times one merge (for callgrind), `--full K [LIMIT]` one merge on a device filled to
//! ENOSPC.

use criterion::{Criterion, Throughput};
use scoutfs_core::client::Client;
use scoutfs_core::device::{BlockDevice, DeviceError, FileDevice};
use scoutfs_core::format::Key;
use scoutfs_core::server::{MergeConfig, Server, ServerCore, ServerOptions};
use scoutfs_core::transport::LocalTransport;
use scoutfs_core::volume::{mkfs, MkfsOptions};
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

const TOTAL: usize = 64_000;
const BIG_ROOT: usize = 200_000;

type Kv = ([u8; 16], [u8; 32]);

fn rng(s: &mut u64) -> u64 {
    scoutfs_core::block::splitmix64(s)
}

/// `k` runs of random items, `total` items in all.
fn runs(k: usize, total: usize, seed: u64) -> Vec<Vec<Kv>> {
    let mut s = seed;
    (0..k)
        .map(|_| {
            (0..total / k)
                .map(|_| {
                    let mut key = [0u8; 16];
                    key[..8].copy_from_slice(&rng(&mut s).to_be_bytes());
                    key[8..].copy_from_slice(&rng(&mut s).to_be_bytes());
                    let mut v = [0u8; 32];
                    v[..16].copy_from_slice(&key);
                    (key, v)
                })
                .collect()
        })
        .collect()
}

fn skey(k: &[u8; 16]) -> Key {
    let a = u64::from_be_bytes(k[..8].try_into().unwrap_or_default());
    let b = u64::from_be_bytes(k[8..].try_into().unwrap_or_default());
    Key::new(16, a, 0, b, 0, 0)
}

/// Counts bytes written to the device under it.
#[derive(Debug)]
struct Counting {
    inner: FileDevice,
    written: AtomicU64,
}

impl BlockDevice for Counting {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<(), DeviceError> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<(), DeviceError> {
        self.written.fetch_add(buf.len() as u64, Ordering::Relaxed);
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> Result<(), DeviceError> {
        self.inner.flush()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}

/// A volume with `k` mounts whose finalized log trees hold `inputs`, over a root that
/// already holds `root` (merged before). The meta image is a 64 GiB sparse file: every
/// mount holds a full alloc list (8,185 blocks of 64 KiB, as the original's per-mount
/// reserve), so 64 mounts need 32 GiB of metadata device.
struct Rig {
    _dir: TempDir,
    meta: Arc<Counting>,
    server: Arc<Server>,
    clients: Vec<Client>,
}

impl Rig {
    fn new(inputs: &[Vec<Kv>], root: &[Kv]) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = Arc::new(Counting {
            inner: FileDevice::create(dir.path().join("meta.img"), 64 << 30).expect("meta"),
            written: AtomicU64::new(0),
        });
        let m: Arc<dyn BlockDevice> = meta.clone();
        let data: Arc<dyn BlockDevice> =
            Arc::new(FileDevice::create(dir.path().join("data.img"), 64 << 20).expect("data"));
        mkfs(&m, &data, &MkfsOptions::default()).expect("mkfs");
        let mut core = ServerCore::open(
            m.clone(),
            data,
            ServerOptions {
                cache_bytes: 512 << 20,
                seed: 1,
                limits: None,
            },
        )
        .expect("open");
        core.set_merge_config(MergeConfig {
            finalize_height: 20,
            ..MergeConfig::default()
        });
        let cache = core.cache().clone();
        let server = Arc::new(Server::new(core));
        let n = inputs.len().max(1);
        let clients: Vec<Client> = (0..n)
            .map(|i| {
                let t = Arc::new(LocalTransport::new(server.clone()));
                Client::mount(t, m.clone(), cache.clone(), 1 + i as u64, 9 + i as u64)
                    .expect("mount")
            })
            .collect();
        let mut r = Rig {
            _dir: dir,
            meta,
            server,
            clients,
        };
        if !root.is_empty() {
            for (k, v) in root {
                r.clients[0].insert(&skey(k), v).expect("insert");
            }
            r.finalize();
            r.merge();
        }
        for (c, run) in r.clients.iter_mut().zip(inputs) {
            for (k, v) in run {
                c.insert(&skey(k), v).expect("insert");
            }
        }
        r.finalize();
        r
    }

    fn finalize(&mut self) {
        self.server
            .apply(|c| {
                c.force_finalize();
                Ok(())
            })
            .expect("finalize");
        for c in &mut self.clients {
            c.commit().expect("commit");
        }
    }

    /// Run the merge to its end: mounts take turns at requests.
    fn merge(&mut self) {
        let mut idle = 0;
        let mut i = 0;
        while idle < self.clients.len() {
            let n = self.clients.len();
            if self.clients[i % n].merge_once().expect("merge") {
                idle = 0;
            } else {
                idle += 1;
            }
            i += 1;
        }
        assert!(self
            .server
            .with_core(|c| c.merge_status().expect("status").is_none()));
    }
}

/// The bare in-memory K-way merge of sorted runs (greatest seq -- the later run -- wins).
#[inline(never)]
fn heap_merge(sorted: &[Vec<Kv>]) -> Vec<Kv> {
    let mut heap = BinaryHeap::new();
    for (i, r) in sorted.iter().enumerate() {
        if let Some(first) = r.first() {
            heap.push(std::cmp::Reverse((first.0, usize::MAX - i, 0usize)));
        }
    }
    let mut out: Vec<Kv> = Vec::with_capacity(sorted.iter().map(Vec::len).sum());
    while let Some(std::cmp::Reverse((key, ri, pos))) = heap.pop() {
        let run = usize::MAX - ri;
        let item = sorted[run][pos];
        if out.last().is_none_or(|l| l.0 != key) {
            out.push(item);
        }
        if let Some(next) = sorted[run].get(pos + 1) {
            heap.push(std::cmp::Reverse((next.0, ri, pos + 1)));
        }
    }
    out
}

fn fjall_tables(dir: &TempDir, inputs: &[Vec<Kv>]) -> (fjall::Database, fjall::Keyspace) {
    let db = fjall::Database::builder(dir.path()).open().expect("fjall");
    let ks = db
        .keyspace("merge", fjall::KeyspaceCreateOptions::default)
        .expect("keyspace");
    for run in inputs {
        for (k, v) in run {
            ks.insert(&k[..], &v[..]).expect("insert");
        }
        ks.rotate_memtable_and_wait().expect("flush");
    }
    (db, ks)
}

fn merge_group(c: &mut Criterion, name: &str, k_values: &[usize], root: usize, total: usize) {
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(total as u64));
    let root_items = runs(1, root.max(1), 77).remove(0);
    let root_items = if root == 0 { Vec::new() } else { root_items };
    for &k in k_values {
        let inputs = runs(k, total, 5 + k as u64);
        g.bench_function(format!("scoutfs_k{k}"), |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let mut rig = Rig::new(&inputs, &root_items);
                    let start = Instant::now();
                    rig.merge();
                    t += start.elapsed();
                }
                t
            })
        });
        g.bench_function(format!("fjall_major_compaction_k{k}"), |b| {
            b.iter_custom(|iters| {
                let mut t = Duration::ZERO;
                for _ in 0..iters {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let mut all = vec![root_items.clone()];
                    all.extend(inputs.iter().cloned());
                    let (_db, ks) = fjall_tables(&dir, &all);
                    let start = Instant::now();
                    fjall_compact(&ks);
                    t += start.elapsed();
                }
                t
            })
        });
        let mut sorted: Vec<Vec<Kv>> = inputs.clone();
        for r in &mut sorted {
            r.sort_unstable_by_key(|x| x.0);
            r.dedup_by_key(|x| x.0);
        }
        g.bench_function(format!("heap_merge_k{k}"), |b| {
            b.iter(|| black_box(heap_merge(&sorted)).len())
        });
    }
    g.finish();
}

fn summary() {
    for (what, k, root, total) in [
        ("k16 into an empty root", 16usize, 0usize, TOTAL),
        ("k16 into 200,000 items", 16, BIG_ROOT, TOTAL),
        ("200 items into 200,000", 1, BIG_ROOT, 200),
    ] {
        let inputs = runs(k, total, 5 + k as u64);
        let root_items = if root == 0 {
            Vec::new()
        } else {
            runs(1, root, 77).remove(0)
        };
        let mut rig = Rig::new(&inputs, &root_items);
        let before = rig.meta.written.load(Ordering::Relaxed);
        let c0 = rig.server.with_core(|c| c.merge_counters());
        let t = Instant::now();
        rig.merge();
        let d = t.elapsed();
        let bytes = rig.meta.written.load(Ordering::Relaxed) - before;
        let c1 = rig.server.with_core(|c| c.merge_counters());
        println!(
            "merge {what}: {:.0} items/s, {:.3} metadata blocks (64 KiB) written per item, {} requests",
            total as f64 / d.as_secs_f64(),
            bytes as f64 / 65536.0 / total as f64,
            c1.requests - c0.requests
        );
    }
}

/// `--once K ROOT`: one merge of K trees into a root of ROOT items, timed, without
/// criterion (for profiling under callgrind).
fn once(args: &[String]) {
    let k: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(16);
    let root: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let inputs = runs(k, TOTAL, 5 + k as u64);
    let root_items = if root == 0 {
        Vec::new()
    } else {
        runs(1, root, 77).remove(0)
    };
    let mut rig = Rig::new(&inputs, &root_items);
    let commits = rig.server.commits();
    let c0 = rig.server.with_core(|c| c.merge_counters());
    eprintln!("merge starts");
    let t = Instant::now();
    rig.merge();
    let d = t.elapsed();
    let c1 = rig.server.with_core(|c| c.merge_counters());
    println!(
        "merge k{k} into {root} items: {:.0} items/s, {} server commits, {} requests, {} pauses",
        TOTAL as f64 / d.as_secs_f64(),
        rig.server.commits() - commits,
        c1.requests - c0.requests,
        c1.pauses() - c0.pauses(),
    );
}

/// `--full K [LIMIT]`: one merge of K trees of 64,000 items in all on a metadata device of
/// 4 KiB blocks that one more mount filled to ENOSPC after the trees were finalized: the
/// merge runs from the space the volume keeps for it (paced as if its headroom were at
/// most LIMIT blocks, if given). Prints the server commits, requests, pauses by phase and
/// cause, and stalls.
fn full(args: &[String]) {
    let k: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(16);
    let inputs = runs(k, TOTAL, 5 + k as u64);
    let dir = tempfile::tempdir().expect("tempdir");
    let meta: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::create(dir.path().join("meta.img"), 256 << 20).expect("meta"));
    let data: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::create(dir.path().join("data.img"), 64 << 20).expect("data"));
    mkfs(
        &meta,
        &data,
        &MkfsOptions {
            meta_block_size: 4096,
            ..Default::default()
        },
    )
    .expect("mkfs");
    let mut core = ServerCore::open(
        meta.clone(),
        data,
        ServerOptions {
            cache_bytes: 512 << 20,
            seed: 1,
            limits: None,
        },
    )
    .expect("open");
    let mut cfg = *core.merge_config();
    cfg.finalize_height = 20;
    if let Some(limit) = args.get(1).and_then(|a| a.parse().ok()) {
        cfg.headroom_limit = [limit; 3];
    }
    core.set_merge_config(cfg);
    let cache = core.cache().clone();
    let server = Arc::new(Server::new(core));
    let mut clients: Vec<Client> = (0..=k)
        .map(|i| {
            let t = Arc::new(LocalTransport::new(server.clone()));
            Client::mount(t, meta.clone(), cache.clone(), 1 + i as u64, 9 + i as u64)
                .expect("mount")
        })
        .collect();
    for (c, run) in clients.iter_mut().zip(&inputs) {
        for (kk, v) in run {
            c.insert(&skey(kk), v).expect("insert");
        }
    }
    server
        .apply(|c| {
            c.force_finalize();
            Ok(())
        })
        .expect("finalize");
    for c in &mut clients {
        c.commit().expect("commit");
    }
    // The last mount fills the device with items of its own (not the merge's inputs).
    let mut s = 99u64;
    let mut filled = 0u64;
    let filler = clients.last_mut().expect("a filler");
    loop {
        let key = Key::new(16, rng(&mut s), 1, rng(&mut s), 0, 0);
        match filler.insert(&key, &[7u8; 200]) {
            Ok(()) => filled += 1,
            Err(scoutfs_core::client::ClientError::NoSpace) => break,
            Err(e) => panic!("fill: {e}"),
        }
    }
    filler.commit().expect("commit");
    let free = server.with_core(|c| c.meta_free_blocks());
    let commits = server.commits();
    let c0 = server.with_core(|c| c.merge_counters());
    let t = Instant::now();
    let mut idle = 0;
    let mut i = 0;
    while idle < k || server.with_core(|c| c.merge_status().expect("status").is_some()) {
        if clients[i % k].merge_once().expect("merge") {
            idle = 0;
        } else {
            idle += 1;
        }
        i += 1;
    }
    let d = t.elapsed();
    let c1 = server.with_core(|c| c.merge_counters());
    let pauses = |a: [u64; 3], b: [u64; 3]| [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    println!(
        "merge k{k} on a full device ({filled} filler items, {free} blocks free at the start): \
         {:.0} items/s, {} server commits, {} requests, low-space pauses {:?} and \
         full-commit pauses {:?} (splice, rebalance, free), {} stalls, {} blocks free after",
        TOTAL as f64 / d.as_secs_f64(),
        server.commits() - commits,
        c1.requests - c0.requests,
        pauses(c1.low_space_pauses, c0.low_space_pauses),
        pauses(c1.full_commit_pauses, c0.full_commit_pauses),
        c1.stalls - c0.stalls,
        server.with_core(|c| c.meta_free_blocks()),
    );
}

/// fjall's major compaction of the tables, out of line so a profiler can single it out.
#[inline(never)]
fn fjall_compact(ks: &fjall::Keyspace) {
    ks.major_compact().expect("compact");
}

/// `--once-peers K`: fjall's major compaction and the heap merge of `once`'s items, each
/// timed once (for profiling under callgrind: `fjall_compact` and `heap_merge`).
fn once_peers(args: &[String]) {
    let k: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(16);
    let inputs = runs(k, TOTAL, 5 + k as u64);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_db, ks) = fjall_tables(&dir, &inputs);
    let t = Instant::now();
    fjall_compact(&ks);
    let d = t.elapsed();
    let mut sorted: Vec<Vec<Kv>> = inputs.clone();
    for r in &mut sorted {
        r.sort_unstable_by_key(|x| x.0);
        r.dedup_by_key(|x| x.0);
    }
    let t = Instant::now();
    let n = black_box(heap_merge(&sorted)).len();
    let h = t.elapsed();
    println!(
        "k{k}: fjall major compaction {:.0} items/s, heap merge {:.0} items/s ({n} items)",
        TOTAL as f64 / d.as_secs_f64(),
        TOTAL as f64 / h.as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--once") {
        once(&args[i + 1..]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--full") {
        full(&args[i + 1..]);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--once-peers") {
        once_peers(&args[i + 1..]);
        return;
    }
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    merge_group(&mut c, "merge_into_empty_root", &[1, 4, 16, 64], 0, TOTAL);
    merge_group(&mut c, "merge_into_200k_root", &[16], BIG_ROOT, TOTAL);
    merge_group(&mut c, "merge_few_leaves_of_200k_root", &[1], BIG_ROOT, 200);
    c.final_summary();
    summary();
}
