#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Eviction of a mount that vanished without a farewell: its open tree is finalized and
//! merged, its allocators come back, nothing leaks, and its rid can mount again. And
//! the reclaim of orphaned trees when the server opens.

mod common;

use common::{assert_clean, key, log_trees_hold_items, volume_of};
use scoutfs_core::btree;
use scoutfs_core::client::Client;
use scoutfs_core::device::BlockDevice;
use scoutfs_core::format::*;
use scoutfs_core::server::{
    all_log_trees, latest_log_trees, MergeConfig, Server, ServerCore, ServerOptions,
};
use scoutfs_core::transport::{LocalTransport, Request};
use scoutfs_core::volume::read_super;
use std::collections::BTreeMap;
use std::sync::Arc;

type Model = BTreeMap<Key, Vec<u8>>;

struct Rig {
    meta: Arc<dyn BlockDevice>,
    data: Arc<dyn BlockDevice>,
    server: Arc<Server>,
}

fn cfg() -> MergeConfig {
    MergeConfig {
        finalize_height: 20,
        batch: 4,
        request_blocks: 64,
        ..MergeConfig::default()
    }
}

fn rig() -> Rig {
    let (meta, data) = volume_of(32, 16, 2048);
    let server = open_server(&meta, &data);
    Rig { meta, data, server }
}

fn open_server(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>) -> Arc<Server> {
    let mut core = ServerCore::open(meta.clone(), data.clone(), ServerOptions::default()).unwrap();
    core.set_merge_config(cfg());
    Arc::new(Server::new(core))
}

impl Rig {
    fn mount(&self, rid: u64) -> Client {
        let cache = self.server.with_core(|c| c.cache().clone());
        let t = Arc::new(LocalTransport::new(self.server.clone()));
        Client::mount(t, self.meta.clone(), cache, rid, rid ^ 0x55).unwrap()
    }

    fn fs_root(&self) -> Model {
        let sb = read_super(&*self.meta, "meta").unwrap();
        self.server.with_core(|c| {
            btree::items(
                c.cache().as_ref(),
                &sb.fs_root.into(),
                &key(0),
                &key(1 << 40),
            )
            .unwrap()
            .into_iter()
            .map(|it| (it.key, it.val))
            .collect()
        })
    }

    fn merging(&self) -> bool {
        self.server
            .with_core(|c| c.merge_status().unwrap().is_some())
    }

    /// Force a finalization, commit every mount and merge until no log tree holds
    /// items. Returns whether a merge ran.
    fn merge_everything(&self, clients: &mut [Client]) -> bool {
        let mut merged = false;
        for _ in 0..10 {
            self.server
                .apply(|c| {
                    c.force_finalize();
                    Ok(())
                })
                .unwrap();
            for cl in clients.iter_mut() {
                cl.commit().unwrap();
            }
            for round in 0..10_000 {
                let worked = clients[round % clients.len()].merge_once().unwrap();
                merged |= worked;
                if !worked && !self.merging() {
                    break;
                }
            }
            if !log_trees_hold_items(&self.server) {
                return merged;
            }
        }
        panic!("log trees still hold items");
    }
}

fn write(cl: &mut Client, model: Option<&mut Model>, from: u64, n: u64, tag: u8) {
    let mut m = model;
    for i in from..from + n {
        let v = vec![tag; 20 + (i % 50) as usize];
        cl.insert(&key(i), &v).unwrap();
        if let Some(m) = m.as_deref_mut() {
            m.insert(key(i), v);
        }
    }
}

#[test]
fn a_vanished_mount_is_evicted_and_its_committed_items_merged() {
    let r = rig();
    let mut model = Model::new();
    let mut live = vec![r.mount(1), r.mount(2)];
    let mut gone = r.mount(3);
    write(&mut live[0], Some(&mut model), 0, 300, 1);
    write(&mut live[1], Some(&mut model), 300, 300, 2);
    // The vanishing mount commits some items, then writes more that it never commits.
    write(&mut gone, Some(&mut model), 600, 300, 3);
    gone.commit().unwrap();
    write(&mut gone, None, 900, 50, 4);
    for cl in &mut live {
        cl.commit().unwrap();
    }
    // Without eviction the merge waits for the vanished mount's open transaction.
    r.server
        .apply(|c| {
            c.force_finalize();
            Ok(())
        })
        .unwrap();
    for cl in &mut live {
        cl.commit().unwrap();
    }
    for cl in &mut live {
        assert!(!cl.merge_once().unwrap());
    }
    assert!(!r.merging(), "the merge started with an open transaction");
    let open_tree = r.server.with_core(|c| {
        latest_log_trees(c.writer(), &c.roots().logs_root, 3)
            .unwrap()
            .unwrap()
    });
    let free_before = r.server.with_core(|c| c.meta_free_blocks());
    r.server.apply(|c| c.evict(3)).unwrap();
    let free_after = r.server.with_core(|c| c.meta_free_blocks());
    assert!(
        free_after > free_before,
        "eviction gave back no blocks: {free_before} -> {free_after}"
    );
    // Evicting again changes nothing.
    let commits = r.server.commits();
    r.server.apply(|c| c.evict(3)).unwrap();
    assert_eq!(r.server.commits(), commits);
    assert_clean(&r.meta, &r.data, "after the eviction");
    assert!(r.merge_everything(&mut live));
    assert_eq!(r.fs_root(), model);
    assert_clean(&r.meta, &r.data, "after the merge");
    // Were the mount alive after all, its commit of the transaction it had open would
    // be refused. (Its blocks went back to the pool: an evicted mount must be dead, as
    // fencing would make sure; a live one writing them would corrupt the volume.)
    drop(gone);
    let mut commit = open_tree;
    commit.commit_trans_seq = commit.get_trans_seq;
    assert!(
        r.server
            .handle_from(None, Request::CommitLogTrees(Box::new(commit)))
            .is_err(),
        "a commit of an evicted mount's transaction was accepted"
    );
    assert_clean(&r.meta, &r.data, "after the refused commit");
    // Its rid greets again and is a new mount: it reads the filesystem, writes, and its
    // items are merged.
    let mut back = r.mount(3);
    let got: Model = back
        .read_items(&key(0), &key(1 << 40))
        .unwrap()
        .into_iter()
        .map(|it| (it.key, it.val))
        .collect();
    assert_eq!(got, model);
    write(&mut back, Some(&mut model), 1000, 100, 6);
    live.push(back);
    assert!(r.merge_everything(&mut live));
    assert_eq!(r.fs_root(), model);
    assert_clean(&r.meta, &r.data, "after the evicted rid came back");
}

/// A mount that vanishes while it holds a merge request: eviction cancels the request
/// and the other mounts finish the merge.
#[test]
fn eviction_cancels_the_merge_requests_of_a_vanished_mount() {
    let r = rig();
    let mut model = Model::new();
    let mut live = vec![r.mount(1)];
    let mut gone = r.mount(2);
    write(&mut live[0], Some(&mut model), 0, 2000, 1);
    write(&mut gone, Some(&mut model), 2000, 2000, 2);
    live[0].commit().unwrap();
    gone.commit().unwrap();
    r.server
        .apply(|c| {
            c.force_finalize();
            Ok(())
        })
        .unwrap();
    live[0].commit().unwrap();
    gone.commit().unwrap();
    assert!(r.merging());
    // The vanishing mount takes a request and is never heard from again.
    assert!(gone
        .merge_once_with(scoutfs_core::client::MergeFault::Vanish)
        .unwrap());
    assert_eq!(r.server.with_core(|c| c.merge_requests().unwrap().len()), 1);
    drop(gone);
    r.server.apply(|c| c.evict(2)).unwrap();
    assert_eq!(r.server.with_core(|c| c.merge_requests().unwrap().len()), 0);
    assert_clean(&r.meta, &r.data, "after the eviction");
    r.merge_everything(&mut live);
    assert_eq!(r.fs_root(), model);
    assert_clean(&r.meta, &r.data, "after the merge");
}

/// Opening the server reclaims the trees of mounts without a mounted-client record: a
/// mount that left is merged without anyone forcing a finalization, and a volume whose
/// eviction was cut short (here: the mounted-client record deleted, nothing else)
/// finishes it.
#[test]
fn opening_the_server_reclaims_orphaned_trees() {
    let r = rig();
    let mut model = Model::new();
    let mut a = r.mount(1);
    let mut b = r.mount(2);
    write(&mut a, Some(&mut model), 0, 300, 1);
    write(&mut b, Some(&mut model), 300, 300, 2);
    a.commit().unwrap();
    b.commit().unwrap();
    write(&mut b, None, 600, 20, 3);
    // a leaves; b's record is lost (as if its eviction stopped after that step).
    a.unmount().unwrap();
    r.server
        .apply(|c| {
            c.with_txn(|t, roots| t.delete(&mut roots.mounted_clients, &mounted_client_key(2)))?;
            Ok(())
        })
        .unwrap();
    drop(b);
    let Rig { meta, data, server } = r;
    drop(server);
    let server = open_server(&meta, &data);
    let r = Rig { meta, data, server };
    let trees = r
        .server
        .with_core(|c| all_log_trees(c.writer(), &c.roots().logs_root).unwrap());
    for t in &trees {
        assert!(
            t.flags.get() & LOG_TREES_FLAG_FINALIZED != 0,
            "tree {}.{} not finalized",
            t.rid.get(),
            t.nr.get()
        );
        assert!(BlockRef::from(t.meta_avail.blk).is_none());
        assert!(t.get_trans_seq.get() <= t.commit_trans_seq.get());
    }
    assert!(r.merging(), "the merge of the orphaned trees did not start");
    assert_clean(&r.meta, &r.data, "after the open");
    let mut c = vec![r.mount(3)];
    r.merge_everything(&mut c);
    assert_eq!(r.fs_root(), model);
    assert_clean(&r.meta, &r.data, "after the merge");
}
