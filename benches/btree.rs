//! The btree against redb, doing the same work in the same criterion groups:
//! - bulk insert of N items in one transaction, including the durable commit;
//! - cached random gets of existing keys;
//! - range scans of 1000 consecutive items from random starting keys.
//!
//! Keys are 16 random bytes and values 32 bytes. A 16-byte key `(a, b)` (two big-endian
//! u64 halves) is the scoutfs key `Key::new(16, a, 0, b, 0, 0)`. Both engines work on files
//! in a temporary directory; scoutfs uses its default 64 KiB metadata blocks and a
//! 256 MiB block cache.
//!
//! `cargo bench -p scoutfs-benches --features peers --bench btree`; see BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use redb::{Database, ReadableDatabase, TableDefinition};
use scoutfs_core::btree;
use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::format::{BtreeRoot, Key};
use scoutfs_core::volume::{mkfs, MkfsOptions, OpenOptions, Volume};
use std::hint::black_box;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

const N: usize = 100_000;
const GETS: usize = 10_000;
const SCANS: usize = 20;
const SCAN_LEN: usize = 1000;
const CACHE_BYTES: usize = 256 << 20;
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("bench");

fn rng(s: &mut u64) -> u64 {
    scoutfs_core::block::splitmix64(s)
}

fn keys(n: usize, seed: u64) -> Vec<[u8; 16]> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            let mut k = [0u8; 16];
            k[..8].copy_from_slice(&rng(&mut s).to_be_bytes());
            k[8..].copy_from_slice(&rng(&mut s).to_be_bytes());
            k
        })
        .collect()
}

fn skey(k: &[u8; 16]) -> Key {
    let a = u64::from_be_bytes(k[..8].try_into().unwrap_or_default());
    let b = u64::from_be_bytes(k[8..].try_into().unwrap_or_default());
    Key::new(16, a, 0, b, 0, 0)
}

fn value(k: &[u8; 16]) -> [u8; 32] {
    let mut v = [0u8; 32];
    v[..16].copy_from_slice(k);
    v[16..].copy_from_slice(k);
    v
}

fn scoutfs_volume(dir: &TempDir) -> Volume {
    let meta: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::create(dir.path().join("meta.img"), 4 << 30).expect("meta image"));
    let data: Arc<dyn BlockDevice> =
        Arc::new(FileDevice::create(dir.path().join("data.img"), 64 << 20).expect("data image"));
    mkfs(&meta, &data, &MkfsOptions::default()).expect("mkfs");
    let opts = OpenOptions {
        cache_bytes: CACHE_BYTES,
        seed: 1,
    };
    Volume::open(meta, data, opts).expect("open")
}

fn scoutfs_fill(vol: &mut Volume, keys: &[[u8; 16]]) {
    vol.change(|t, root| {
        for k in keys {
            t.force(root, &skey(k), &value(k))?;
        }
        Ok(())
    })
    .expect("insert");
    vol.commit().expect("commit");
}

fn redb_db(dir: &TempDir) -> Database {
    Database::create(dir.path().join("redb")).expect("redb create")
}

fn redb_fill(db: &Database, keys: &[[u8; 16]]) {
    let tx = db.begin_write().expect("begin");
    {
        let mut t = tx.open_table(TABLE).expect("table");
        for k in keys {
            t.insert(&k[..], &value(k)[..]).expect("insert");
        }
    }
    tx.commit().expect("commit");
}

fn bulk_insert(c: &mut Criterion) {
    let ks = keys(N, 1);
    let mut g = c.benchmark_group("bulk_insert_100k_one_txn");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("scoutfs", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let vol = scoutfs_volume(&dir);
                (dir, vol)
            },
            |(dir, mut vol)| {
                scoutfs_fill(&mut vol, &ks);
                (dir, vol)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("redb", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let db = redb_db(&dir);
                (dir, db)
            },
            |(dir, db)| {
                redb_fill(&db, &ks);
                (dir, db)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn cached_get(c: &mut Criterion) {
    let ks = keys(N, 2);
    let mut s = 99u64;
    let probes: Vec<[u8; 16]> = (0..GETS).map(|_| ks[rng(&mut s) as usize % N]).collect();

    let sdir = tempfile::tempdir().expect("tempdir");
    let mut vol = scoutfs_volume(&sdir);
    scoutfs_fill(&mut vol, &ks);
    let root = vol.committed_root();
    let cache = vol.cache().clone();
    let rdir = tempfile::tempdir().expect("tempdir");
    let db = redb_db(&rdir);
    redb_fill(&db, &ks);

    let mut g = c.benchmark_group("cached_random_get_100k");
    g.throughput(Throughput::Elements(GETS as u64));
    g.bench_function("scoutfs", |b| {
        b.iter(|| {
            let mut total = 0;
            for k in &probes {
                total += btree::lookup_with(&*cache, &root, &skey(k), |it| it.val.len())
                    .expect("lookup")
                    .expect("present");
            }
            black_box(total)
        })
    });
    let rtx = db.begin_read().expect("read");
    let table = rtx.open_table(TABLE).expect("table");
    g.bench_function("redb", |b| {
        b.iter(|| {
            let mut total = 0;
            for k in &probes {
                total += table
                    .get(&k[..])
                    .expect("get")
                    .expect("present")
                    .value()
                    .len();
            }
            black_box(total)
        })
    });
    g.finish();
    let st = cache.stats();
    println!(
        "scoutfs block cache after gets: {} blocks, {} bytes of a {} byte bound ({} hits, {} misses)",
        st.blocks, st.bytes, st.limit, st.hits, st.misses
    );
    assert!(st.bytes <= st.limit, "block cache over its bound");
}

fn range_scan(c: &mut Criterion) {
    let ks = keys(N, 3);
    let mut sorted = ks.clone();
    sorted.sort();
    let mut s = 7u64;
    let starts: Vec<[u8; 16]> = (0..SCANS)
        .map(|_| sorted[rng(&mut s) as usize % (N - SCAN_LEN)])
        .collect();

    let sdir = tempfile::tempdir().expect("tempdir");
    let mut vol = scoutfs_volume(&sdir);
    scoutfs_fill(&mut vol, &ks);
    let root: BtreeRoot = vol.committed_root();
    let cache = vol.cache().clone();
    let rdir = tempfile::tempdir().expect("tempdir");
    let db = redb_db(&rdir);
    redb_fill(&db, &ks);

    let mut g = c.benchmark_group("range_scan_1000_of_100k");
    g.throughput(Throughput::Elements((SCANS * SCAN_LEN) as u64));
    g.bench_function("scoutfs", |b| {
        b.iter(|| {
            let mut total = 0usize;
            for k in &starts {
                let mut n = 0;
                btree::scan(&*cache, &root, &skey(k), &Key::MAX, |it| {
                    total += it.val.len();
                    n += 1;
                    if n == SCAN_LEN {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })
                .expect("scan");
            }
            black_box(total)
        })
    });
    let rtx = db.begin_read().expect("read");
    let table = rtx.open_table(TABLE).expect("table");
    g.bench_function("redb", |b| {
        b.iter(|| {
            let mut total = 0usize;
            for k in &starts {
                for e in table.range(&k[..]..).expect("range").take(SCAN_LEN) {
                    let (_, v) = e.expect("entry");
                    total += v.value().len();
                }
            }
            black_box(total)
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bulk_insert, cached_get, range_scan
}
criterion_main!(benches);
