//! Shared support of the log merge tests: a seeded RNG, keys, a model of what mounts
//! committed (plain items, deletions and totals, resolved in seq order as readers and the
//! merge resolve them), a rig of a server and mounts on one volume, and a transport that
//! can hold back merge completions.
//!
//! Each test binary uses part of it.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::type_complexity
)]

pub mod record;

use parking_lot::Mutex;
use scoutfs_core::btree;
use scoutfs_core::check;
use scoutfs_core::client::Client;
use scoutfs_core::device::{BlockDevice, CrashDevice, MemDevice};
use scoutfs_core::format::*;
use scoutfs_core::server::{all_log_trees, MergeConfig, Server, ServerCore, ServerOptions};
use scoutfs_core::transport::{
    CommittedRoots, LocalTransport, Request, Response, Transport, TransportError,
};
use scoutfs_core::volume::{mkfs, read_super, MkfsOptions};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A seeded RNG (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        scoutfs_core::block::splitmix64(&mut self.0)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Key `i` of the plain items the tests write.
pub fn key(i: u64) -> Key {
    Key::new(zone::FS, 100 + i, item_type::XATTR, 0, 0, 0)
}

/// Key `i` of the totals (delta items) the tests keep.
pub fn total_key(i: u64) -> Key {
    Key::new(zone::XATTR_TOTL, 7, 0, i, 0, 0)
}

/// The keys the tests write (not mkfs's root inode).
pub fn ours(k: &Key) -> bool {
    k.zone == zone::XATTR_TOTL || (k.zone == zone::FS && k.ty == item_type::XATTR)
}

/// One committed change of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Put(Vec<u8>),
    Delete,
    Add(i64),
}

/// Every committed change, per key, with the log tree it went into (the mount's id and
/// the tree's number) and its seq. The model resolves them as the volume stores them: a
/// log tree holds one version of a key -- its last plain value or deletion, or its
/// additions to a total summed, at the seq of the latest -- and a key's versions fold in
/// seq order, the last plain value or deletion standing and the totals after it summing.
/// (A deletion in one tree between two additions of another tree resets both: the
/// other tree's version carries its latest seq.)
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub keys: BTreeMap<Key, Vec<((u64, u64), u64, Change)>>,
}

/// One stored version: its seq, and a plain value, a deletion or a total.
#[derive(Clone, Debug)]
enum Version {
    Put(Vec<u8>),
    Delete,
    Sum(i64),
}

impl Model {
    /// A change by a mount whose open transaction writes into log tree `tree`.
    pub fn apply(&mut self, k: Key, tree: (u64, u64), seq: u64, c: Change) {
        self.keys.entry(k).or_default().push((tree, seq, c));
    }

    /// What a key reads as.
    pub fn resolve(changes: &[((u64, u64), u64, Change)]) -> Option<Vec<u8>> {
        let mut trees: BTreeMap<(u64, u64), (u64, Version)> = BTreeMap::new();
        for (t, seq, c) in changes {
            let v = match (c, trees.get(t)) {
                (Change::Put(val), _) => Version::Put(val.clone()),
                (Change::Delete, _) => Version::Delete,
                (Change::Add(d), Some((_, Version::Sum(s)))) => Version::Sum(s.wrapping_add(*d)),
                (Change::Add(d), _) => Version::Sum(*d),
            };
            trees.insert(*t, (*seq, v));
        }
        let mut vs: Vec<(u64, Version)> = trees.into_values().collect();
        vs.sort_by_key(|(s, _)| *s);
        let mut plain: Option<Option<Vec<u8>>> = None;
        let mut sum: Option<i64> = None;
        for (_, v) in vs {
            match v {
                Version::Put(val) => (plain, sum) = (Some(Some(val)), None),
                Version::Delete => (plain, sum) = (Some(None), None),
                Version::Sum(d) => sum = Some(sum.unwrap_or(0).wrapping_add(d)),
            }
        }
        match sum {
            Some(0) => None,
            Some(s) => Some(s.to_le_bytes().to_vec()),
            None => plain.flatten(),
        }
    }

    /// Every key that reads as something, with what it reads as.
    pub fn visible(&self) -> BTreeMap<Key, Vec<u8>> {
        self.keys
            .iter()
            .filter_map(|(k, cs)| Self::resolve(cs).map(|v| (*k, v)))
            .collect()
    }
}

/// The log tree a mount's open transaction writes into.
pub fn tree_of(c: &Client) -> (u64, u64) {
    (c.rid(), c.log_trees().nr.get())
}

/// The keys on which two views differ, for failure messages.
pub fn diff(
    a: &BTreeMap<Key, Vec<u8>>,
    b: &BTreeMap<Key, Vec<u8>>,
) -> Vec<(Key, Option<Vec<u8>>, Option<Vec<u8>>)> {
    let mut keys: Vec<Key> = a.keys().chain(b.keys()).copied().collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(k) != b.get(k))
        .map(|k| (k, a.get(&k).cloned(), b.get(&k).cloned()))
        .collect()
}

/// Random changes by random mounts -- plain items put and deleted among `keys` keys,
/// totals added to and deleted among a few -- recorded in the model with the seq each
/// carries, and committed now and then and at the end.
pub fn write_some(r: &mut Rig, rng: &mut Rng, model: &mut Model, ops: usize, keys: u64) {
    for _ in 0..ops {
        let c = rng.below(r.clients.len() as u64) as usize;
        let cl = &mut r.clients[c];
        match rng.below(12) {
            0..=6 => {
                let k = key(rng.below(keys));
                let v = vec![rng.next() as u8; 1 + rng.below(200) as usize];
                cl.insert(&k, &v).unwrap();
                model.apply(k, tree_of(cl), cl.trans_seq(), Change::Put(v));
            }
            7 | 8 => {
                let k = key(rng.below(keys));
                cl.delete(&k).unwrap();
                model.apply(k, tree_of(cl), cl.trans_seq(), Change::Delete);
            }
            9 | 10 => {
                let k = total_key(rng.below(8));
                let d = rng.below(7) as i64 - 3;
                match cl.add_delta(&k, &[d]) {
                    Ok(()) => model.apply(k, tree_of(cl), cl.trans_seq(), Change::Add(d)),
                    // This mount deleted the total in its tree: it may not add to it
                    // there (another mount, or its next tree, may).
                    Err(scoutfs_core::client::ClientError::Btree(btree::BtreeError::Exists(_))) => {
                    }
                    Err(e) => panic!("add: {e}"),
                }
            }
            _ => {
                let k = total_key(rng.below(8));
                cl.delete(&k).unwrap();
                model.apply(k, tree_of(cl), cl.trans_seq(), Change::Delete);
            }
        }
        if rng.below(20) == 0 {
            cl.commit().unwrap();
        }
    }
    for cl in &mut r.clients {
        cl.commit().unwrap();
    }
}

/// Two views of the tests' keys are the same; on failure, the first keys that differ.
#[track_caller]
pub fn assert_same(got: &BTreeMap<Key, Vec<u8>>, want: &BTreeMap<Key, Vec<u8>>, what: &str) {
    if got != want {
        let d = diff(got, want);
        let show: Vec<_> = d
            .iter()
            .take(8)
            .map(|(k, g, w)| {
                (
                    k,
                    g.as_ref().map(|v| (v.len(), v.first())),
                    w.as_ref().map(|v| (v.len(), v.first())),
                )
            })
            .collect();
        panic!("{what}: {} keys differ (got, want): {show:?}", d.len());
    }
}

/// A transport to a server in this process that can hold back merge completions (as a
/// lost reply would: the mount keeps its completion and sends it again).
#[derive(Debug)]
pub struct HoldingTransport {
    pub inner: LocalTransport,
    /// While set, merge completions are not delivered (the call fails as if the
    /// connection dropped).
    pub hold: AtomicBool,
}

impl HoldingTransport {
    pub fn new(server: Arc<Server>) -> HoldingTransport {
        HoldingTransport {
            inner: LocalTransport::new(server),
            hold: AtomicBool::new(false),
        }
    }
}

impl Transport for HoldingTransport {
    fn call(&self, req: Request) -> Result<Response, TransportError> {
        if matches!(req, Request::CommitLogMerge(_)) && self.hold.load(Ordering::SeqCst) {
            return Err(TransportError::Disconnected);
        }
        self.inner.call(req)
    }
    fn committed_roots(&self) -> Option<CommittedRoots> {
        self.inner.committed_roots()
    }
}

/// The seed of a server's block seqs, well mixed: servers of one volume opened with
/// related seeds (a test's seed and seed + 1, say) must not give blocks the same seqs --
/// a block's (number, seq) is its identity to every cache that holds it.
fn server_seed(seed: u64) -> u64 {
    let mut s = seed ^ 0x5e_4e_5e_ed;
    scoutfs_core::block::splitmix64(&mut s)
}

/// A server and mounts on one volume.
pub struct Rig {
    pub meta: Arc<dyn BlockDevice>,
    pub data: Arc<dyn BlockDevice>,
    pub server: Arc<Server>,
    pub transports: Vec<Arc<HoldingTransport>>,
    pub clients: Vec<Client>,
    pub rids: Vec<u64>,
    pub cfg: MergeConfig,
}

/// Make a volume on `meta` and `data` with `bs`-byte metadata blocks.
pub fn mkfs_on(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>, bs: u32) {
    mkfs(
        meta,
        data,
        &MkfsOptions {
            meta_block_size: bs,
            fsid: Some(0x5ca1e),
            ..Default::default()
        },
    )
    .unwrap();
}

/// A fresh volume on memory devices: `meta_mb` MiB of `bs`-byte metadata blocks and
/// `data_mb` MiB of data.
pub fn volume_of(
    meta_mb: u64,
    data_mb: u64,
    bs: u32,
) -> (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) {
    let meta: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(meta_mb << 20));
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(data_mb << 20));
    mkfs_on(&meta, &data, bs);
    (meta, data)
}

/// [`volume_of`] with 16 MiB of data.
pub fn volume(meta_mb: u64, bs: u32) -> (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) {
    volume_of(meta_mb, 16, bs)
}

impl Rig {
    /// Open the volume's server with `cfg` (a config of `None` keeps the server's own,
    /// sized for the volume) and mount `nclients` mounts.
    pub fn start(
        meta: Arc<dyn BlockDevice>,
        data: Arc<dyn BlockDevice>,
        nclients: u64,
        cfg: Option<MergeConfig>,
        seed: u64,
    ) -> Rig {
        let mut core = ServerCore::open(
            meta.clone(),
            data.clone(),
            ServerOptions {
                seed: server_seed(seed),
                ..ServerOptions::default()
            },
        )
        .unwrap();
        if let Some(cfg) = cfg {
            core.set_merge_config(cfg);
        }
        let cfg = *core.merge_config();
        let server = Arc::new(Server::new(core));
        let mut r = Rig {
            meta,
            data,
            server,
            transports: Vec::new(),
            clients: Vec::new(),
            rids: (0..nclients).map(|i| 10 + i).collect(),
            cfg,
        };
        for i in 0..nclients as usize {
            let t = Arc::new(HoldingTransport::new(r.server.clone()));
            r.transports.push(t.clone());
            let cl = r.mount_on(t, i, seed);
            r.clients.push(cl);
        }
        r
    }

    fn mount_on(&self, t: Arc<HoldingTransport>, i: usize, seed: u64) -> Client {
        let cache = self.server.with_core(|c| c.cache().clone());
        Client::mount(
            t,
            self.meta.clone(),
            cache,
            self.rids[i],
            seed ^ 77 ^ i as u64,
        )
        .unwrap()
    }

    /// Mount `i` restarts (its old self is gone): a new connection, a fresh greeting.
    pub fn remount(&mut self, i: usize, seed: u64) {
        let t = Arc::new(HoldingTransport::new(self.server.clone()));
        self.clients[i] = self.mount_on(t.clone(), i, seed);
        self.transports[i] = t;
    }

    /// Restart the server from the device (what a crash and a new server would find),
    /// with the mounts still up: their transports reconnect to it without greeting.
    pub fn restart_server(&mut self, seed: u64) {
        let mut core = ServerCore::open(
            self.meta.clone(),
            self.data.clone(),
            ServerOptions {
                seed: server_seed(seed),
                ..ServerOptions::default()
            },
        )
        .unwrap();
        core.set_merge_config(self.cfg);
        self.server = Arc::new(Server::new(core));
        for t in &self.transports {
            t.inner.reconnect(self.server.clone());
        }
    }

    /// What mount `i` reads of the tests' keys.
    pub fn reads(&self, i: usize) -> BTreeMap<Key, Vec<u8>> {
        self.clients[i]
            .read_items(&total_key(0), &key(1 << 40))
            .unwrap()
            .into_iter()
            .filter(|it| ours(&it.key))
            .map(|it| (it.key, it.val))
            .collect()
    }

    /// The tests' items in the committed filesystem root. A total of zero is never kept
    /// there (checked here).
    pub fn fs_root(&self) -> BTreeMap<Key, Vec<u8>> {
        let sb = read_super(&*self.meta, "meta").unwrap();
        self.server.with_core(|c| {
            btree::items(
                c.cache().as_ref(),
                &sb.fs_root.into(),
                &total_key(0),
                &key(1 << 40),
            )
            .unwrap()
            .into_iter()
            .filter(|it| ours(&it.key))
            .inspect(|it| {
                assert!(
                    !(it.flags & ITEM_FLAG_DELTA != 0 && btree::delta_is_zero(&it.val)),
                    "a zero total in the root: {:?}",
                    it.key
                );
                assert_eq!(it.flags & ITEM_FLAG_DELETION, 0, "a deletion in the root");
            })
            .map(|it| (it.key, it.val))
            .collect()
        })
    }

    /// Finalize every log tree: each mount's next commit finalizes its tree (a merge
    /// starts with the last, unless one is running).
    pub fn finalize(&mut self) {
        self.server
            .apply(|c| {
                c.force_finalize();
                Ok(())
            })
            .unwrap();
        for cl in &mut self.clients {
            cl.commit().unwrap();
        }
    }

    /// Finalize everything committed and merge it all (a merge already running finishes
    /// first), until no log tree holds items. Returns the merge work done.
    pub fn merge_everything(&mut self, what: &str) -> usize {
        let mut units = 0;
        for _ in 0..20 {
            self.finalize();
            let mut settled = false;
            for round in 0..100_000 {
                let i = round % self.clients.len();
                let worked = self.clients[i]
                    .merge_once()
                    .unwrap_or_else(|e| panic!("{what}: merge: {e}"));
                units += worked as usize;
                let done = self
                    .server
                    .with_core(|c| c.merge_status().unwrap().is_none());
                if done && !worked {
                    settled = true;
                    break;
                }
            }
            assert!(settled, "{what}: the merge never finished");
            if !self.log_trees_hold_items() {
                return units;
            }
        }
        panic!("{what}: log trees still hold items after many merges");
    }

    pub fn log_trees_hold_items(&self) -> bool {
        self.server.with_core(|c| {
            all_log_trees(c.writer(), &c.roots().logs_root)
                .unwrap()
                .iter()
                .any(|t| !BtreeRoot::from(t.item_root).is_empty())
        })
    }

    pub fn assert_clean(&self, what: &str) {
        assert_clean(&self.meta, &self.data, what);
    }
}

/// `check` finds nothing wrong with the blocks of a volume of raw items (the namespace
/// pass is left out: these items are not a filesystem).
pub fn assert_clean(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>, what: &str) {
    let rep = check::check_blocks(meta, data).unwrap();
    assert!(rep.is_clean(), "{what}: {:#?}", rep.problems);
}

/// `check`, its namespace pass included, finds nothing wrong with a filesystem volume.
pub fn assert_fs_clean(
    meta: &Arc<dyn BlockDevice>,
    data: &Arc<dyn BlockDevice>,
    what: &str,
) -> check::CheckReport {
    let rep = check::check(meta, data).unwrap();
    assert!(rep.is_clean(), "{what}: {:#?}", rep.problems);
    assert!(
        rep.namespace_checked,
        "{what}: the namespace pass did not run"
    );
    rep
}

/// A crash device that forks itself (a copy of what a power cut at that instant could
/// leave, once crashed) at writes and flushes while armed: at random ones (`rate`: one in
/// that many), or at every flush.
#[derive(Debug)]
pub struct Forking {
    pub inner: Arc<CrashDevice>,
    pub state: Arc<Mutex<ForkState>>,
}

#[derive(Debug, Default)]
pub struct ForkState {
    pub armed: bool,
    pub rng: u64,
    /// Fork at one in `rate` writes and flushes (0: at every flush instead).
    pub rate: u64,
    pub limit: usize,
    pub forks: Vec<CrashDevice>,
}

impl Forking {
    pub fn new(size: u64, rng: u64, rate: u64, limit: usize) -> Forking {
        Forking {
            inner: Arc::new(CrashDevice::new(size)),
            state: Arc::new(Mutex::new(ForkState {
                rng,
                rate,
                limit,
                ..ForkState::default()
            })),
        }
    }

    fn maybe_fork(&self, flush: bool) {
        let mut s = self.state.lock();
        if !s.armed || s.forks.len() >= s.limit {
            return;
        }
        let take = if s.rate == 0 {
            flush
        } else {
            let rate = s.rate;
            scoutfs_core::block::splitmix64(&mut s.rng).is_multiple_of(rate)
        };
        if take {
            let f = self.inner.fork();
            s.forks.push(f);
        }
    }

    pub fn arm(&self, on: bool) {
        self.state.lock().armed = on;
    }

    pub fn forks(&self) -> usize {
        self.state.lock().forks.len()
    }

    pub fn take_forks(&self) -> Vec<CrashDevice> {
        std::mem::take(&mut self.state.lock().forks)
    }
}

impl BlockDevice for Forking {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> scoutfs_core::device::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> scoutfs_core::device::Result<()> {
        self.maybe_fork(false);
        self.inner.write_at(buf, offset)
    }
    fn flush(&self) -> scoutfs_core::device::Result<()> {
        self.maybe_fork(true);
        self.inner.flush()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
}
