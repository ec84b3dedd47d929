#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A mount's item cache (dirty items written at commit, what they will cost), its bloom
//! filters (reads skip log trees that cannot hold the keys), and seq floors.

mod common;

use common::{assert_clean, volume_bytes};
use proptest::prelude::*;
use scoutfs_core::bloom;
use scoutfs_core::client::{Client, ClientError};
use scoutfs_core::device::BlockDevice;
use scoutfs_core::format::*;
use scoutfs_core::server::{all_log_trees, Server, ServerCore, ServerOptions};
use scoutfs_core::transport::LocalTransport;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Test keys start at inode 2^20 (a multiple of the bloom group size), clear of what mkfs
/// writes.
const BASE: u64 = 1 << 20;

fn key(i: u64) -> Key {
    Key::new(zone::FS, BASE + i, item_type::XATTR, 0, 0, 0)
}

/// Every test item.
fn all(c: &Client) -> Vec<scoutfs_core::btree::Item> {
    c.read_items(&key(0), &key(u64::MAX - BASE)).unwrap()
}

struct Rig {
    server: Arc<Server>,
    cache: Arc<scoutfs_core::block::BlockCache>,
    t: Arc<LocalTransport>,
    meta: Arc<dyn BlockDevice>,
}

fn rig(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>) -> Rig {
    let core = ServerCore::open(meta.clone(), data.clone(), ServerOptions::default()).unwrap();
    let cache = core.cache().clone();
    let server = Arc::new(Server::new(core));
    let t = Arc::new(LocalTransport::new(server.clone()));
    Rig {
        server,
        cache,
        t,
        meta: meta.clone(),
    }
}

impl Rig {
    fn mount(&self, rid: u64) -> Client {
        Client::mount(
            self.t.clone(),
            self.meta.clone(),
            self.cache.clone(),
            rid,
            rid,
        )
        .unwrap()
    }
}

#[test]
fn dirty_items_are_read_before_the_commit_and_written_by_it() {
    let (meta, data) = volume_bytes(16 << 20, 16 << 20, 4096);
    let r = rig(&meta, &data);
    let mut c = r.mount(1);
    let root_before = c.item_root();
    for i in 0..300 {
        c.insert(&key(i), &i.to_le_bytes()).unwrap();
    }
    c.delete(&key(7)).unwrap();
    c.add_delta(&key(1000), &[5, -1]).unwrap();
    c.add_delta(&key(1000), &[2, 1]).unwrap();
    assert_eq!(c.dirty_items(), 301);
    // Nothing reached the log btree yet; reads see the cache.
    assert_eq!(c.item_root(), root_before);
    assert_eq!(c.get(&key(3)).unwrap().unwrap().val, 3u64.to_le_bytes());
    assert!(c.get(&key(7)).unwrap().is_none());
    let total = c.get(&key(1000)).unwrap().unwrap();
    assert_eq!(total.val, [7i64.to_le_bytes(), 0i64.to_le_bytes()].concat());
    // A key with a total holds totals only, and a plain key takes no deltas.
    assert!(matches!(
        c.add_delta(&key(3), &[1]),
        Err(ClientError::Btree(_))
    ));
    c.commit().unwrap();
    assert_eq!(c.dirty_items(), 0);
    assert_ne!(c.item_root(), root_before);
    // The next transaction's delta joins the committed one in the log btree.
    c.add_delta(&key(1000), &[-7]).unwrap();
    assert!(
        c.get(&key(1000)).unwrap().is_none(),
        "a zero total reads as absent"
    );
    c.commit().unwrap();
    assert!(c.get(&key(1000)).unwrap().is_none());
    assert_eq!(all(&c).len(), 299);
    c.unmount().unwrap();
    drop(r);
    assert_clean(&meta, &data, "the volume");
}

#[test]
fn the_dirty_limit_bounds_the_cache() {
    let (meta, data) = volume_bytes(64 << 20, 16 << 20, 65536);
    let r = rig(&meta, &data);
    let mut c = r.mount(1);
    // Copies of a leaf and its path are 64 KiB blocks each: a few hundred items a time.
    const LIMIT: usize = 1 << 20;
    c.set_dirty_limit(LIMIT);
    let first = c.trans_seq();
    let val = [0xabu8; 800];
    for i in 0..1000 {
        c.insert(&key(i), &val).unwrap();
        // A change commits first when the transaction holds its limit: at most one item
        // (and the leaf it may start) over.
        assert!(
            c.dirty_bytes() <= LIMIT + 65536 + 1024,
            "{} bytes in {} dirty items",
            c.dirty_bytes(),
            c.dirty_items()
        );
        // The count covers at least the values themselves and the leaves they fill.
        assert!(c.dirty_bytes() >= c.dirty_items() * 800 * 2);
    }
    // 800 KB of values and as many again of leaves, in transactions under 1 MiB (the
    // transaction seq moves a few steps for each commit).
    let commits = c.trans_seq() - first;
    assert!((2..=60).contains(&commits), "{commits} transaction seqs");
    c.unmount().unwrap();
    drop(r);
    assert_clean(&meta, &data, "the volume");
}

#[test]
fn sequential_inserts_share_leaves_in_the_estimate() {
    // 64 MiB of 64 KiB blocks: a mount's list holds about 128 blocks. Counting every
    // item as its own path would commit every ~30 items; counting leaves once lets
    // thousands of sequential items wait for one commit.
    let (meta, data) = volume_bytes(64 << 20, 16 << 20, 65536);
    let r = rig(&meta, &data);
    let mut c = r.mount(1);
    for i in 0..2000 {
        c.insert(&key(i), &i.to_le_bytes()).unwrap();
    }
    c.commit().unwrap();
    let first = c.trans_seq();
    for i in 0..20_000 {
        c.insert(&key(i), &(i + 1).to_le_bytes()).unwrap();
    }
    let commits = c.trans_seq() - first;
    assert!(
        commits <= 10,
        "{commits} commits for 20,000 sequential items"
    );
    for i in (0..20_000).step_by(997) {
        assert_eq!(c.get(&key(i)).unwrap().unwrap().val, (i + 1).to_le_bytes());
    }
    c.unmount().unwrap();
    drop(r);
    assert_clean(&meta, &data, "the volume");
}

#[derive(Clone, Debug)]
enum Op {
    Insert(u64, usize),
    Delete(u64),
    Delta(u64, i64),
    Commit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        300 => (0u64..3000, 0usize..400).prop_map(|(k, n)| Op::Insert(k, n)),
        100 => (0u64..3000).prop_map(Op::Delete),
        100 => (3000u64..3100, -5i64..5).prop_map(|(k, d)| Op::Delta(k, d)),
        1 => Just(Op::Commit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Small blocks and a small volume: the commit-cost estimate must hold for any mix of
    /// items, or a commit would run its list dry (an error that poisons the mount). Reads
    /// equal the model throughout, and the volume checks clean.
    #[test]
    fn the_commit_estimate_never_runs_the_list_dry(ops in prop::collection::vec(op(), 500..3000)) {
        let (meta, data) = volume_bytes(24 << 20, 16 << 20, 2048);
        let r = rig(&meta, &data);
        let mut c = r.mount(1);
        let mut model: BTreeMap<Key, Vec<u8>> = BTreeMap::new();
        let mut totals: BTreeMap<Key, i64> = BTreeMap::new();
        for (n, op) in ops.iter().enumerate() {
            match op {
                Op::Insert(k, len) => {
                    let v: Vec<u8> = (0..*len).map(|i| (i as u64 ^ k ^ n as u64) as u8).collect();
                    c.insert(&key(*k), &v).unwrap();
                    model.insert(key(*k), v);
                }
                Op::Delete(k) => {
                    c.delete(&key(*k)).unwrap();
                    model.remove(&key(*k));
                }
                Op::Delta(k, d) => {
                    c.add_delta(&key(*k), &[*d]).unwrap();
                    *totals.entry(key(*k)).or_default() += d;
                }
                Op::Commit => c.commit().unwrap(),
            }
        }
        for (k, t) in &totals {
            if *t != 0 {
                model.insert(*k, t.to_le_bytes().to_vec());
            }
        }
        let got: BTreeMap<Key, Vec<u8>> = all(&c)
            .into_iter()
            .map(|it| (it.key, it.val))
            .collect();
        prop_assert_eq!(&got, &model);
        c.unmount().unwrap();
        drop(r);
        assert_clean(&meta, &data, "the volume");
    }
}

/// Overwrite a metadata block on the device with garbage (and drop it from the cache).
fn smash(meta: &Arc<dyn BlockDevice>, cache: &scoutfs_core::block::BlockCache, blkno: u64) {
    let bs = cache.geometry().block_size;
    meta.write_at(&vec![0x5a; bs], blkno * bs as u64).unwrap();
    cache.forget(blkno);
}

#[test]
fn reads_skip_log_trees_whose_bloom_filter_rules_the_keys_out() {
    let (meta, data) = volume_bytes(32 << 20, 16 << 20, 4096);
    let r = rig(&meta, &data);
    let mut a = r.mount(1);
    let mut b = r.mount(2);
    // Mount A writes inodes in group 0 only; B writes group 8.
    for i in 1..200 {
        a.insert(&key(i), b"a").unwrap();
        b.insert(&key(8 * bloom::GROUP_INODES + i), b"b").unwrap();
    }
    a.commit().unwrap();
    b.commit().unwrap();
    let lts = r
        .server
        .with_core(|core| all_log_trees(core.writer(), &core.roots().logs_root).unwrap());
    let lt_a = lts.iter().find(|lt| lt.rid.get() == 1).unwrap();
    let bloom_a: BlockRef = lt_a.bloom_ref.into();
    assert!(
        !bloom_a.is_none(),
        "a committed tree with items has a bloom block"
    );
    let root_a: BtreeRoot = lt_a.item_root.into();

    // Break A's log btree on the device: B's reads of its own group never touch it.
    smash(&meta, &r.cache, root_a.blk.blkno);
    let k = key(8 * bloom::GROUP_INODES + 5);
    assert_eq!(b.get(&k).unwrap().unwrap().val, b"b");
    let mine = b
        .read_items(
            &key(8 * bloom::GROUP_INODES),
            &key(9 * bloom::GROUP_INODES - 1),
        )
        .unwrap();
    assert_eq!(mine.len(), 199);
    // A read of A's group must visit A's tree, and finds the damage.
    assert!(b.get(&key(5)).is_err());
    // So does a read too wide to filter.
    assert!(b.read_items(&Key::MIN, &Key::MAX).is_err());
}

#[test]
fn a_seq_floor_makes_a_mounts_versions_newer() {
    let (meta, data) = volume_bytes(32 << 20, 16 << 20, 4096);
    let r = rig(&meta, &data);
    let mut a = r.mount(1);
    let mut b = r.mount(2);
    // B opened its transaction after A: B's seq is greater, so without a floor B's
    // version of a key wins over A's whatever the order of the writes.
    assert!(b.trans_seq() > a.trans_seq());
    b.insert(&key(1), b"b").unwrap();
    b.commit().unwrap();
    a.insert(&key(1), b"a-unfloored").unwrap();
    a.commit().unwrap();
    assert_eq!(a.get(&key(1)).unwrap().unwrap().val, b"b");
    // A lock grant would give A a floor above B's versions: A's next write wins.
    let floor = b.trans_seq() + 1;
    a.grant_seq_floor(floor);
    a.grant_seq_floor(1); // never goes down
    assert_eq!(a.seq_floor(), floor);
    assert_eq!(a.item_seq(), floor.max(a.trans_seq()));
    a.insert(&key(1), b"a").unwrap();
    let it = a.get(&key(1)).unwrap().unwrap();
    assert_eq!((it.seq, &it.val[..]), (a.item_seq(), &b"a"[..]));
    a.commit().unwrap();
    assert_eq!(b.get(&key(1)).unwrap().unwrap().val, b"a");
    let lt = r.server.with_core(|core| {
        all_log_trees(core.writer(), &core.roots().logs_root)
            .unwrap()
            .into_iter()
            .find(|lt| lt.rid.get() == 1)
            .unwrap()
    });
    assert!(lt.max_item_seq.get() >= floor);
    a.unmount().unwrap();
    b.unmount().unwrap();
    drop(r);
    assert_clean(&meta, &data, "the volume");
}
