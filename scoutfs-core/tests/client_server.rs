#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A client and the server in one process over the in-process transport.

mod common;

use common::{assert_clean, volume_bytes};
use scoutfs_core::check;
use scoutfs_core::client::{Client, ClientError};
use scoutfs_core::device::BlockDevice;
use scoutfs_core::format::*;
use scoutfs_core::server::{latest_log_trees, Server, ServerCore, ServerOptions};
use scoutfs_core::transport::LocalTransport;
use std::sync::Arc;

fn key(i: u64) -> Key {
    Key::new(zone::FS, i, item_type::XATTR, 0, 0, 0)
}

fn start(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>) -> (Arc<Server>, Client) {
    let core = ServerCore::open(meta.clone(), data.clone(), ServerOptions::default()).unwrap();
    let cache = core.cache().clone();
    let server = Arc::new(Server::new(core));
    let t = Arc::new(LocalTransport::new(server.clone()));
    let c = Client::mount(t, meta.clone(), cache, 42, 7).unwrap();
    (server, c)
}

#[test]
fn items_and_data_survive_commit_and_remount() {
    let (meta, data) = volume_bytes(8 << 20, 64 << 20, 2048);
    let (server, mut c) = start(&meta, &data);
    for i in 0..500 {
        c.insert(&key(i), &i.to_le_bytes()).unwrap();
    }
    let e = c.alloc_data(5000, 0, 16).unwrap();
    assert_eq!(e.len, 16);
    c.commit().unwrap();
    let seq = c.trans_seq();
    drop(c);
    drop(server);

    let (server, c) = start(&meta, &data);
    // The transaction the server opened before the restart is still open: same seq.
    assert_eq!(c.trans_seq(), seq);
    for i in 0..500 {
        assert_eq!(c.get(&key(i)).unwrap().unwrap().val, i.to_le_bytes());
    }
    let it = c.get(&data_extent_key(5000, 0)).unwrap().unwrap();
    assert_eq!(it.val.len(), 24);
    c.unmount().unwrap();
    server.with_core(|core| {
        let lt = latest_log_trees(core.writer(), &core.roots().logs_root, 42)
            .unwrap()
            .unwrap();
        assert_eq!(lt.meta_avail.total_nr.get(), 0);
        assert_eq!(lt.data_avail.total_len.get(), 0);
    });
    assert_clean(&meta, &data, "the volume");
}

/// Merge work, as a mount's merge worker does it between transactions.
fn merge_some(c: &mut Client) {
    for _ in 0..10_000 {
        if !c.merge_once().unwrap() {
            return;
        }
    }
    panic!("merge work did not settle");
}

#[test]
fn metadata_enospc_then_frees_then_space_again() {
    let (meta, data) = volume_bytes(2 << 20, 16 << 20, 2048);
    let (_server, mut c) = start(&meta, &data);
    let val = [7u8; 200];
    let mut n = 0;
    // Fill the volume, merging log trees into the filesystem root as a mount does.
    let err = loop {
        match c.insert(&key(n), &val) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
        if n % 64 == 0 {
            c.commit().unwrap();
            merge_some(&mut c);
        }
        assert!(n < 100_000);
    };
    assert!(matches!(err, ClientError::NoSpace), "{err}");
    assert!(c.meta_low());
    eprintln!("metadata full after {n} items");
    assert!(n > 100, "{n}");
    // Frees still work: deletion items, written from the reserve.
    for i in 0..n / 2 {
        c.delete(&key(i)).unwrap();
    }
    // The space comes back once the deletions are merged (LOW finalizes the log tree)
    // and the blocks they free are reusable.
    let mut ok = false;
    for _ in 0..20 {
        c.commit().unwrap();
        merge_some(&mut c);
        if !c.meta_low() {
            ok = true;
            break;
        }
    }
    assert!(ok, "still LOW after deleting half of {n} items");
    // The deleted half is gone, the rest is there.
    assert!(c.get(&key(0)).unwrap().is_none());
    assert_eq!(c.get(&key(n - 1)).unwrap().unwrap().val, val);
    c.insert(&key(0), &val).unwrap();
    c.commit().unwrap();
    assert_clean(&meta, &data, "the volume");
    c.unmount().unwrap();
    assert_clean(&meta, &data, "the volume");
}

#[test]
fn data_enospc_then_frees_then_space_again() {
    // 1 MiB of data blocks past the fixed area: 256 blocks.
    let (meta, data) = volume_bytes(8 << 20, (DATA_START_BLKNO + 256) * DATA_BLOCK_SIZE, 2048);
    let (server, mut c) = start(&meta, &data);
    let mut got = 0u64;
    let mut ino = 0;
    let err = loop {
        match c.alloc_data(ino, 0, 7) {
            Ok(e) => {
                got += e.len;
                ino += 1;
            }
            Err(e) => break e,
        }
        assert!(ino < 1000);
    };
    assert!(matches!(err, ClientError::NoSpace), "{err}");
    assert!(c.data_low());
    // Every data block was handed out, none twice.
    assert_eq!(got, 256, "allocated {got} of 256 blocks");
    assert_eq!(server.with_core(|s| s.data_free_blocks()), 0);
    // Metadata allocation is unaffected.
    c.insert(&key(1), b"still fine").unwrap();
    // Frees still work, and the space comes back once they are committed.
    for i in 0..ino / 2 {
        c.free_data(i, 0).unwrap();
    }
    let mut ok = false;
    for _ in 0..3 {
        c.commit().unwrap();
        if !c.data_low() {
            ok = true;
            break;
        }
    }
    assert!(ok, "data still LOW after freeing half");
    let e = c.alloc_data(5000, 0, 7).unwrap();
    assert!(e.len > 0);
    c.commit().unwrap();
    assert_clean(&meta, &data, "the volume");
    c.unmount().unwrap();
    assert_clean(&meta, &data, "the volume");
}

#[test]
fn check_counts_inode_items_against_the_recorded_count() {
    let (meta, data) = volume_bytes(8 << 20, 64 << 20, 2048);
    let (server, mut c) = start(&meta, &data);
    // The root inode mkfs made is counted; so is one a mount makes and counts.
    c.insert(&inode_key(100), b"an inode").unwrap();
    c.add_inode_count(1);
    c.commit().unwrap();
    assert_clean(&meta, &data, "the volume");
    assert_eq!(server.with_core(|s| s.inode_count()).unwrap(), 2);
    // Deleted and counted down: a deletion item in the log tree hides nothing counted.
    c.delete(&inode_key(100)).unwrap();
    c.add_inode_count(-1);
    c.commit().unwrap();
    assert_clean(&meta, &data, "the volume");
    // An inode item nobody counted is a problem.
    c.insert(&inode_key(101), b"an inode").unwrap();
    c.commit().unwrap();
    let r = check::check_blocks(&meta, &data).unwrap();
    assert_eq!(
        r.problems,
        [check::Problem::InodeCount {
            counted: 2,
            recorded: 1
        }]
    );
}

/// A commit sent again after its answer was lost (the transport resends it, perhaps to a
/// restarted server) is answered with the transaction that commit opened, not refused.
#[test]
fn a_resent_commit_is_answered_again() {
    use scoutfs_core::transport::{Request, Response};
    let (meta, data) = volume_bytes(8 << 20, 64 << 20, 2048);
    let (server, mut c) = start(&meta, &data);
    c.insert(&key(1), b"one").unwrap();
    let sent = *c.log_trees();
    let next = |r| match r {
        Response::LogTrees(lt) => *lt,
        other => panic!("{other:?}"),
    };
    let first = next(
        server
            .handle_from(Some(42), Request::CommitLogTrees(Box::new(sent)))
            .unwrap(),
    );
    assert!(first.get_trans_seq.get() > sent.get_trans_seq.get());
    // The same commit again, to this server and to a restarted one.
    let again = next(
        server
            .handle_from(Some(42), Request::CommitLogTrees(Box::new(sent)))
            .unwrap(),
    );
    assert_eq!(again.get_trans_seq.get(), first.get_trans_seq.get());
    drop(c);
    drop(server);
    let core = ServerCore::open(meta.clone(), data.clone(), ServerOptions::default()).unwrap();
    let server = Server::new(core);
    let after = next(
        server
            .handle_from(Some(42), Request::CommitLogTrees(Box::new(sent)))
            .unwrap(),
    );
    assert_eq!(after.get_trans_seq.get(), first.get_trans_seq.get());
    // A commit of a transaction that was never opened is still refused.
    let mut bogus = sent;
    bogus.get_trans_seq = (first.get_trans_seq.get() + 5).into();
    assert!(server
        .handle_from(Some(42), Request::CommitLogTrees(Box::new(bogus)))
        .is_err());
}
