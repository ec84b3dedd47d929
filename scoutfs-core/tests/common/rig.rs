//! A server and mounts on one volume, with transports that can hold back merge
//! completions.

use super::{assert_clean, key, ours, total_key};
use scoutfs_core::btree;
use scoutfs_core::client::Client;
use scoutfs_core::device::BlockDevice;
use scoutfs_core::format::*;
use scoutfs_core::server::{all_log_trees, MergeConfig, Server, ServerCore, ServerOptions};
use scoutfs_core::transport::{
    CommittedRoots, LocalTransport, Request, Response, Transport, TransportError,
};
use scoutfs_core::volume::read_super;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

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

/// Whether any log tree the server knows holds items (a merge has work left).
pub fn log_trees_hold_items(server: &Server) -> bool {
    server.with_core(|c| {
        all_log_trees(c.writer(), &c.roots().logs_root)
            .unwrap()
            .iter()
            .any(|t| !BtreeRoot::from(t.item_root).is_empty())
    })
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
        log_trees_hold_items(&self.server)
    }

    pub fn assert_clean(&self, what: &str) {
        assert_clean(&self.meta, &self.data, what);
    }
}
