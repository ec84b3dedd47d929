#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A mount that reaches its server only through a transport (`Fs::mount`): the server
//! runs beside it with its own block cache, every request the mount makes is seen on the
//! transport (statfs, the committed seq, merge administration among them), the volume it
//! leaves is whole, and a mount's randomness comes from the entropy it is given.

mod common;

use common::{assert_fs_clean, assert_numbered_files, volume_of, write_numbered_files};
use scoutfs_core::device::BlockDevice;
use scoutfs_core::entropy::SeededEntropy;
use scoutfs_core::fs::*;
use scoutfs_core::server::{Server, ServerCore, ServerOptions};
use scoutfs_core::transport::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A transport that counts the requests it carries by kind.
#[derive(Debug)]
struct Counting {
    inner: LocalTransport,
    seen: parking_lot::Mutex<BTreeMap<&'static str, u64>>,
}

fn kind(req: &Request) -> &'static str {
    match req {
        Request::Greeting { .. } => "greeting",
        Request::GetLogTrees { .. } => "get_log_trees",
        Request::CommitLogTrees(_) => "commit_log_trees",
        Request::GetLogMerge { .. } => "get_log_merge",
        Request::CommitLogMerge(_) => "commit_log_merge",
        Request::AllocInodes { .. } => "alloc_inodes",
        Request::Farewell { .. } => "farewell",
        Request::GetLastSeq => "get_last_seq",
        Request::Statfs => "statfs",
        Request::Merge(MergeAdmin::Status) => "merge_status",
        Request::Merge(MergeAdmin::ForceFinalize) => "force_finalize",
        _ => "other",
    }
}

impl Transport for Counting {
    fn call(&self, req: Request) -> Result<Response, TransportError> {
        *self.seen.lock().entry(kind(&req)).or_default() += 1;
        self.inner.call(req)
    }
    // No `committed_roots`: the mount reads the committed super from the device, as a
    // mount in another process does.
}

fn serve(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>) -> Arc<Counting> {
    let core = ServerCore::open(meta.clone(), data.clone(), ServerOptions::default()).unwrap();
    Arc::new(Counting {
        inner: LocalTransport::new(Arc::new(Server::new(core))),
        seen: Default::default(),
    })
}

fn opts(seed: u64) -> FsOptions {
    FsOptions {
        entropy: Arc::new(SeededEntropy::new(seed)),
        ..FsOptions::default()
    }
}

#[test]
fn a_mount_reaches_its_server_only_through_the_transport() {
    let (meta, data) = volume_of(64, 64, 4096);
    let t = serve(&meta, &data);
    let fs = Fs::mount(meta.clone(), data.clone(), t.clone(), opts(1)).unwrap();
    write_numbered_files(&fs, 50, 10_000, 0);
    fs.sync().unwrap();
    let sf = fs.statfs().unwrap();
    assert!(sf.bfree < sf.blocks, "{sf:?}");
    let more = fs.statfs_more().unwrap();
    assert_eq!(more.rid, fs.rid());
    assert!(more.committed_seq > 0);
    assert_eq!(fs.committed_seq().unwrap(), more.committed_seq);
    fs.merge_all().unwrap();
    let seen = t.seen.lock().clone();
    for k in [
        "greeting",
        "get_log_trees",
        "commit_log_trees",
        "alloc_inodes",
        "statfs",
        "get_last_seq",
        "force_finalize",
        "merge_status",
        "get_log_merge",
        "commit_log_merge",
    ] {
        assert!(seen.get(k).copied().unwrap_or(0) > 0, "no {k}: {seen:?}");
    }
    fs.unmount().unwrap();
    assert_eq!(t.seen.lock().get("farewell"), Some(&1));
    drop(t);
    assert_fs_clean(&meta, &data, "after the remote mount");

    // What it wrote, as a single-node mount reads it back.
    let fs = Fs::mount_single(meta.clone(), data.clone(), FsOptions::default()).unwrap();
    assert_numbered_files(&fs, 50, 10_000);
    fs.unmount().unwrap();
    assert_fs_clean(&meta, &data, "after the single-node mount");
}

#[test]
fn a_mounts_id_comes_from_its_entropy() {
    let rids: Vec<u64> = (0..3)
        .map(|n| {
            let (meta, data) = volume_of(32, 16, 4096);
            let t = serve(&meta, &data);
            let seed = if n == 2 { 9 } else { 8 };
            let fs = Fs::mount(meta, data, t, opts(seed)).unwrap();
            let rid = fs.rid();
            fs.unmount().unwrap();
            rid
        })
        .collect();
    assert_eq!(rids[0], rids[1], "the same seed replays the same mount id");
    assert_ne!(rids[0], rids[2]);
}

#[test]
fn a_server_of_another_volume_is_refused() {
    let (meta, data) = volume_of(32, 16, 4096);
    let (meta2, data2) = {
        let m: Arc<dyn BlockDevice> = Arc::new(scoutfs_core::device::MemDevice::new(32 << 20));
        let d: Arc<dyn BlockDevice> = Arc::new(scoutfs_core::device::MemDevice::new(16 << 20));
        scoutfs_core::volume::mkfs(
            &m,
            &d,
            &scoutfs_core::volume::MkfsOptions {
                fsid: Some(0xbad),
                ..Default::default()
            },
        )
        .unwrap();
        (m, d)
    };
    let t = serve(&meta2, &data2);
    let e = Fs::mount(meta.clone(), data.clone(), t, opts(3)).unwrap_err();
    assert!(e.to_string().contains("another volume"), "{e}");
    assert_fs_clean(&meta, &data, "untouched");
}

#[test]
fn the_server_record_names_the_running_server() {
    use scoutfs_core::volume::{read_server_record, write_server_record};
    let (meta, data) = volume_of(32, 16, 4096);
    let fsid = scoutfs_core::volume::read_super(&*meta, "meta")
        .unwrap()
        .hdr
        .fsid
        .get();
    assert_eq!(read_server_record(&*meta, fsid).unwrap(), None, "mkfs");
    for addr in ["127.0.0.1:7001", "[fd00::1]:7002"] {
        let a: std::net::SocketAddr = addr.parse().unwrap();
        write_server_record(&*meta, fsid, 9, 3, Some(a)).unwrap();
        assert_eq!(read_server_record(&*meta, fsid).unwrap(), Some((9, a)));
        // Another volume's record is none of this one's.
        assert_eq!(read_server_record(&*meta, fsid ^ 1).unwrap(), None);
    }
    // A damaged record is no record.
    let mut b = [0u8; 1];
    meta.read_at(&mut b, 72 * 1024 + 100).unwrap();
    meta.write_at(&[b[0] ^ 0xff], 72 * 1024 + 100).unwrap();
    assert_eq!(read_server_record(&*meta, fsid).unwrap(), None);
    write_server_record(&*meta, fsid, 9, 3, None).unwrap();
    assert_eq!(read_server_record(&*meta, fsid).unwrap(), None, "cleared");
    assert_fs_clean(&meta, &data, "the record is outside the metadata");
}
