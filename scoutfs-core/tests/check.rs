#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `check` against injected damage: each kind is found as its own problem, and a healthy
//! volume is clean with every block accounted for.

use scoutfs_core::block::{seal_block, BlockCache, StaleReason};
use scoutfs_core::btree;
use scoutfs_core::check::{self, ExtentFault, NsFault, Problem, Progress, Run, Space};
use scoutfs_core::client::Client;
use scoutfs_core::device::{BlockDevice, MemDevice};
use scoutfs_core::format::*;
use scoutfs_core::fs::{Creds, Fs, FsOptions, SetAttr, XattrSet, ROOT_INO};
use scoutfs_core::server::{Server, ServerCore, ServerOptions};
use scoutfs_core::transport::LocalTransport;
use scoutfs_core::volume::{self, mkfs, MkfsOptions, OpenOptions, Volume};
use std::sync::Arc;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

mod common;

fn key(i: u64) -> Key {
    Key::new(zone::FS, 5000 + i, item_type::XATTR, 0, 0, 0)
}

fn run(start: u64, len: u64) -> Run {
    Run { start, len }
}

/// A fresh volume of `bs`-byte blocks.
fn fresh(bs: u32) -> (Arc<MemDevice>, Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) {
    let mem = Arc::new(MemDevice::new(8 << 20));
    let meta: Arc<dyn BlockDevice> = mem.clone();
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(8 << 20));
    let opts = MkfsOptions {
        meta_block_size: bs,
        ..Default::default()
    };
    mkfs(&meta, &data, &opts).unwrap();
    (mem, meta, data)
}

/// A volume of 1 KiB blocks with a tree of a few levels in its filesystem root.
fn volume() -> (Arc<MemDevice>, Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) {
    let (mem, meta, data) = fresh(1024);
    let mut vol = Volume::open(meta.clone(), data.clone(), OpenOptions::default()).unwrap();
    for i in 0..600 {
        vol.put(&key(i), &[i as u8; 40]).unwrap();
    }
    vol.commit().unwrap();
    (mem, meta, data)
}

fn open(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>) -> Volume {
    Volume::open(meta.clone(), data.clone(), OpenOptions::default()).unwrap()
}

fn problems(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>) -> Vec<Problem> {
    let r = check::check_blocks(meta, data).unwrap();
    assert_eq!(r.problem_count as usize, r.problems.len());
    r.problems
}

fn assert_clean(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>) -> check::CheckReport {
    let r = check::check_blocks(meta, data).unwrap();
    assert!(r.is_clean(), "{:#?}", r.problems);
    assert_eq!(r.meta.referenced + r.meta.free, r.meta.total);
    assert_eq!(r.data.referenced + r.data.free, r.data.total);
    r
}

/// Change the newest super in place (and reseal it).
fn patch_super(mem: &MemDevice, f: impl FnOnce(&mut SuperBlock)) {
    let sb = volume::read_super(mem, "meta").unwrap();
    let off = SUPER_OFFSET + (sb.hdr.seq.get() % SUPER_SLOTS) * SUPER_SIZE as u64;
    mem.with_bytes_mut(|b| {
        let o = off as usize;
        let (s, _) = SuperBlock::mut_from_prefix(&mut b[o..o + SUPER_SIZE]).unwrap();
        f(s);
        seal_block(&mut b[o..o + SUPER_SIZE]);
    });
}

/// Every (blkno, level) of the filesystem root, parents first.
fn fs_blocks(meta: &Arc<dyn BlockDevice>) -> Vec<(u64, u8)> {
    let sb = volume::read_super(&**meta, "meta").unwrap();
    let cache = BlockCache::new(meta.clone(), volume::geometry(&sb), 1 << 20);
    let mut out = Vec::new();
    btree::walk_blocks(&cache, &sb.fs_root.into(), &mut |b| {
        out.push((b.blk.blkno, b.level));
        Ok(())
    })
    .unwrap();
    out
}

/// Change the server's trees in one commit.
fn server_txn(
    meta: &Arc<dyn BlockDevice>,
    data: &Arc<dyn BlockDevice>,
    f: impl FnOnce(&mut btree::TreeTxn<'_>, &mut scoutfs_core::server::Roots) -> btree::Result<()>,
) {
    let mut vol = open(meta, data);
    vol.server().with_txn(f).unwrap();
    vol.commit().unwrap();
}

#[test]
fn fresh_volumes_are_clean() {
    for bs in [1024, 4096, 64 * 1024] {
        let (_, meta, data) = fresh(bs);
        let r = assert_clean(&meta, &data);
        assert!(r.meta.free > 0 && r.data.free > 0, "{bs}: {r:?}");
        assert_eq!(r.data.referenced, 0);
        assert_eq!(
            r.data.total,
            volume::read_super(&*meta, "meta")
                .unwrap()
                .total_data_blocks
                .get()
                - DATA_START_BLKNO
        );
    }
}

#[test]
fn a_healthy_volume_is_clean_and_every_block_is_counted() {
    let (_, meta, data) = volume();
    let r = assert_clean(&meta, &data);
    assert!(r.meta.referenced > 10, "{:?}", r.meta);
    assert_eq!(r.data.referenced, 0);
    let vol = open(&meta, &data);
    assert_eq!(
        r.meta.free,
        vol.free_meta_blocks(),
        "check and the allocator agree on free space"
    );
}

#[test]
fn volumes_with_mounts_log_trees_and_data_are_clean_after_every_commit() {
    let (_, meta, data) = fresh(2048);
    let core = ServerCore::open(meta.clone(), data.clone(), ServerOptions::default()).unwrap();
    let cache = core.cache().clone();
    let server = Arc::new(Server::new(core));
    let t = Arc::new(LocalTransport::new(server.clone()));
    let mut c = Client::mount(t, meta.clone(), cache, 42, 7).unwrap();
    assert_clean(&meta, &data);
    let mut allocated = 0;
    for round in 0..3u64 {
        for i in 0..200 {
            c.insert(&key(round * 1000 + i), &[round as u8; 60])
                .unwrap();
        }
        for f in 0..5 {
            allocated += c.alloc_data(10_000 + round * 10 + f, 0, 8).unwrap().len;
        }
        c.free_data(10_000 + round * 10, 0).unwrap();
        allocated -= 8;
        c.commit().unwrap();
        let r = assert_clean(&meta, &data);
        assert_eq!(r.data.referenced, allocated, "round {round}");
    }
    c.unmount().unwrap();
    let r = assert_clean(&meta, &data);
    assert_eq!(r.data.referenced, allocated);
}

#[test]
fn a_leaked_block_is_found() {
    let (_, meta, data) = volume();
    let mut vol = open(&meta, &data);
    let b = vol.alloc_meta_block().unwrap();
    vol.commit().unwrap();
    drop(vol);
    assert_eq!(
        problems(&meta, &data),
        vec![Problem::Leaked {
            space: Space::Meta,
            run: run(b, 1)
        }]
    );
}

#[test]
fn a_large_leak_is_one_run() {
    let (_, meta, data) = volume();
    // Data blocks taken from the pool and never referenced.
    let start = DATA_START_BLKNO + 100;
    server_txn(&meta, &data, |t, r| r.data_alloc.remove(t, start, 1000));
    let p = problems(&meta, &data);
    assert_eq!(
        p,
        vec![Problem::Leaked {
            space: Space::Data,
            run: run(start, 1000)
        }]
    );
    assert_eq!(
        p[0].to_string(),
        format!(
            "data blocks {start}..={} (1000) leaked: neither referenced nor free",
            start + 999
        )
    );
}

#[test]
fn a_block_referenced_twice_is_found() {
    let (mem, meta, data) = volume();
    let root: BtreeRoot = volume::read_super(&*mem, "meta").unwrap().fs_root.into();
    // A second tree that is the filesystem tree: the shared root is found, and the
    // subtree below it is not walked a second time.
    patch_super(&mem, |sb| sb.srch_root = sb.fs_root);
    assert_eq!(
        problems(&meta, &data),
        vec![Problem::ReferencedTwice {
            space: Space::Meta,
            run: run(root.blk.blkno, 1)
        }]
    );
}

#[test]
fn a_freed_block_still_referenced_is_found() {
    let (_, meta, data) = volume();
    let mut vol = open(&meta, &data);
    let root = vol.root().blk.blkno;
    vol.server()
        .with_txn(|t, _| {
            t.alloc.free_meta(root).unwrap();
            Ok(())
        })
        .unwrap();
    vol.commit().unwrap();
    drop(vol);
    assert_eq!(
        problems(&meta, &data),
        vec![Problem::FreeAndReferenced {
            space: Space::Meta,
            run: run(root, 1)
        }]
    );
}

#[test]
fn a_block_free_twice_is_found() {
    let (_, meta, data) = volume();
    let last = volume::read_super(&*meta, "meta")
        .unwrap()
        .total_meta_blocks
        .get()
        - 1;
    // The last block is free in the extent tree; free it into the server's list too.
    server_txn(&meta, &data, |t, _| {
        t.alloc.free_meta(last)?;
        Ok(())
    });
    assert_eq!(
        problems(&meta, &data),
        vec![Problem::FreeTwice {
            space: Space::Meta,
            run: run(last, 1)
        }]
    );
}

#[test]
fn a_bit_flip_in_the_root_is_found_and_what_was_below_is_leaked() {
    let (mem, meta, data) = volume();
    let blocks = fs_blocks(&meta);
    let (root, level) = blocks[0];
    assert!(level >= 1);
    let bs = 1024;
    mem.with_bytes_mut(|b| b[root as usize * bs + 300] ^= 0x10);
    let p = problems(&meta, &data);
    assert!(
        matches!(&p[0], Problem::BadBlock { what, blkno, reason: StaleReason::Checksum { .. } }
            if what == "fs_root" && *blkno == root),
        "{p:#?}"
    );
    // The blocks below the damaged root cannot be reached: they read as leaked, and
    // nothing else is wrong.
    let leaked: u64 = p[1..]
        .iter()
        .map(|p| match p {
            Problem::Leaked {
                space: Space::Meta,
                run,
            } => run.len,
            other => panic!("{other}"),
        })
        .sum();
    assert_eq!(leaked, blocks.len() as u64 - 1);
}

#[test]
fn a_bit_flip_in_a_leaf_costs_only_that_leaf() {
    let (mem, meta, data) = volume();
    let blocks = fs_blocks(&meta);
    let leaves: Vec<u64> = blocks.iter().filter(|b| b.1 == 0).map(|b| b.0).collect();
    assert!(leaves.len() > 4);
    let leaf = leaves[leaves.len() / 2];
    mem.with_bytes_mut(|b| b[leaf as usize * 1024 + 700] ^= 1);
    // The rest of the tree is still walked: no leaks, just the bad leaf.
    assert!(
        matches!(&problems(&meta, &data)[..],
            [Problem::BadBlock { what, blkno, reason: StaleReason::Checksum { .. } }]
            if what == "fs_root" && *blkno == leaf),
        "{:#?}",
        problems(&meta, &data)
    );
}

#[test]
fn keys_out_of_order_behind_a_good_checksum_are_found() {
    let (mem, meta, data) = volume();
    let leaf = fs_blocks(&meta).iter().rev().find(|b| b.1 == 0).unwrap().0;
    // Swap the first two item offsets (after the 48-byte header) and reseal.
    mem.with_bytes_mut(|b| {
        let blk = &mut b[leaf as usize * 1024..(leaf as usize + 1) * 1024];
        let first = [blk[48], blk[49]];
        blk.copy_within(50..52, 48);
        blk[50..52].copy_from_slice(&first);
        seal_block(blk);
    });
    assert_eq!(
        problems(&meta, &data),
        vec![Problem::Inconsistent {
            what: "fs_root".into(),
            blkno: leaf,
            reason: "item keys out of order"
        }]
    );
}

#[test]
fn a_stale_reference_is_found() {
    let (mem, meta, data) = volume();
    let sb = volume::read_super(&*mem, "meta").unwrap();
    patch_super(&mem, |sb| {
        sb.fs_root.blk.seq = (sb.fs_root.blk.seq.get() ^ 1).into();
    });
    let p = problems(&meta, &data);
    assert!(
        matches!(&p[0], Problem::BadBlock { what, blkno, reason: StaleReason::Seq { .. } }
            if what == "fs_root" && *blkno == sb.fs_root.blk.blkno.get()),
        "{p:#?}"
    );
}

#[test]
fn references_outside_the_devices_are_found() {
    let (mem, meta, data) = volume();
    let sb = volume::read_super(&*mem, "meta").unwrap();
    let total_data = sb.total_data_blocks.get();
    let ext = DataExtent {
        blkno: (total_data - 2).into(),
        len: 4.into(),
        flags: 0.into(),
    };
    let mut vol = open(&meta, &data);
    vol.put(&data_extent_key(77, 0), ext.as_bytes()).unwrap();
    vol.commit().unwrap();
    drop(vol);
    let far = sb.total_meta_blocks.get() + 10;
    patch_super(&mem, |sb| {
        sb.srch_root.blk.blkno = far.into();
        sb.srch_root.height = 1;
    });
    let p = problems(&meta, &data);
    assert_eq!(
        p,
        vec![
            Problem::OutOfRange {
                space: Space::Data,
                what: format!("fs_root: data extent {}", data_extent_key(77, 0)),
                run: run(total_data - 2, 4)
            },
            Problem::OutOfRange {
                space: Space::Meta,
                what: "srch_root".into(),
                run: run(far, 1)
            },
        ]
    );
}

#[test]
fn data_referenced_while_free_is_found() {
    let (_, meta, data) = volume();
    let mut vol = open(&meta, &data);
    let ext = DataExtent {
        blkno: (DATA_START_BLKNO + 10).into(),
        len: 4.into(),
        flags: 0.into(),
    };
    vol.put(&data_extent_key(77, 0), ext.as_bytes()).unwrap();
    vol.commit().unwrap();
    drop(vol);
    assert_eq!(
        problems(&meta, &data),
        vec![Problem::FreeAndReferenced {
            space: Space::Data,
            run: run(DATA_START_BLKNO + 10, 4)
        }]
    );
}

fn extent_val(start: u64, len: u64) -> Vec<u8> {
    DataExtent {
        blkno: start.into(),
        len: len.into(),
        flags: 0.into(),
    }
    .as_bytes()
    .to_vec()
}

#[test]
fn only_the_newest_version_of_a_data_extent_references_blocks() {
    // Blocks big enough for a log trees record.
    let (_, meta, data) = fresh(2048);
    let b = DATA_START_BLKNO;
    let (a, bk, c) = (
        data_extent_key(9, 0),
        data_extent_key(9, 8),
        data_extent_key(9, 16),
    );
    server_txn(&meta, &data, |t, r| {
        for s in [100, 200, 300, 400, 500] {
            r.data_alloc.remove(t, b + s, 8)?;
        }
        // Filesystem root: three extents.
        t.force_item(&mut r.fs_root, &a, 1, 0, &extent_val(b + 100, 8))?;
        t.force_item(&mut r.fs_root, &bk, 1, 0, &extent_val(b + 200, 8))?;
        t.force_item(&mut r.fs_root, &c, 4, 0, &extent_val(b + 300, 8))?;
        // A log tree: a newer deletion of `a`, a newer `bk`, an older `c`.
        let mut items = BtreeRoot::EMPTY;
        t.insert_item(&mut items, &a, 2, ITEM_FLAG_DELETION, &[])?;
        t.insert_item(&mut items, &bk, 3, 0, &extent_val(b + 400, 8))?;
        t.insert_item(&mut items, &c, 2, 0, &extent_val(b + 500, 8))?;
        let mut lt = LogTrees::new_zeroed();
        lt.rid = 5.into();
        lt.nr = 1.into();
        lt.item_root = items.into();
        t.insert(&mut r.logs_root, &log_trees_key(5, 1), lt.as_bytes())
    });
    // The versions that lost still hold their blocks, which nothing frees: leaked.
    let leaked = |s| Problem::Leaked {
        space: Space::Data,
        run: run(b + s, 8),
    };
    assert_eq!(
        problems(&meta, &data),
        vec![leaked(100), leaked(200), leaked(500)]
    );
}

fn extent_problems(p: &[Problem], tree: &str) -> Vec<ExtentFault> {
    p.iter()
        .filter_map(|p| match p {
            Problem::ExtentTree { what, fault } if what == tree => Some(fault.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_wrong_extent_tree_total_is_found() {
    let (mem, meta, data) = volume();
    let total = volume::read_super(&*mem, "meta")
        .unwrap()
        .data_alloc
        .total_len
        .get();
    patch_super(&mem, |sb| sb.data_alloc.total_len = (total + 1).into());
    assert_eq!(
        problems(&meta, &data),
        vec![Problem::ExtentTree {
            what: "data_alloc".into(),
            fault: ExtentFault::TotalMismatch {
                total: total + 1,
                found: total
            }
        }]
    );
}

#[test]
fn an_extent_without_its_twin_is_found() {
    let (_, meta, data) = volume();
    let b = DATA_START_BLKNO;
    let end = volume::read_super(&*meta, "meta")
        .unwrap()
        .total_data_blocks
        .get();
    let rest = end - (b + 11);
    server_txn(&meta, &data, |t, r| {
        r.data_alloc.remove(t, b + 10, 1)?;
        // (b, 10) loses its by-size item; (b + 11, ..) its by-blkno item.
        t.delete(&mut r.data_alloc.root, &free_extent_order_key(b, 10))?;
        t.delete(&mut r.data_alloc.root, &free_extent_blkno_key(b + 11, rest))
    });
    let p = problems(&meta, &data);
    let faults = extent_problems(&p, "data_alloc");
    assert!(
        faults.contains(&ExtentFault::MissingBySize { run: run(b, 10) }),
        "{p:#?}"
    );
    assert!(
        faults
            .iter()
            .any(|f| matches!(f, ExtentFault::MissingByBlkno { run } if run.start == b + 11)),
        "{p:#?}"
    );
}

#[test]
fn unmerged_and_overlapping_extents_are_found() {
    let (_, meta, data) = volume();
    let b = DATA_START_BLKNO;
    server_txn(&meta, &data, |t, r| {
        // (b, 10) and (b + 11, ..) with (b + 10, 1) put back without merging.
        r.data_alloc.remove(t, b + 10, 1)?;
        t.insert(
            &mut r.data_alloc.root,
            &free_extent_blkno_key(b + 10, 1),
            &[],
        )?;
        t.insert(
            &mut r.data_alloc.root,
            &free_extent_order_key(b + 10, 1),
            &[],
        )?;
        r.data_alloc.total_len += 1;
        // (b + 5, 2) inside (b, 10).
        t.insert(
            &mut r.data_alloc.root,
            &free_extent_blkno_key(b + 5, 2),
            &[],
        )?;
        t.insert(
            &mut r.data_alloc.root,
            &free_extent_order_key(b + 5, 2),
            &[],
        )?;
        r.data_alloc.total_len += 2;
        Ok(())
    });
    let p = problems(&meta, &data);
    let faults = extent_problems(&p, "data_alloc");
    assert_eq!(faults.len(), 3, "{p:#?}");
    assert_eq!(
        faults[0],
        ExtentFault::Overlap {
            first: run(b, 10),
            second: run(b + 5, 2)
        }
    );
    assert!(matches!(faults[1], ExtentFault::Unmerged { second, .. } if second == run(b + 10, 1)));
    assert!(matches!(faults[2], ExtentFault::Unmerged { first, .. } if first == run(b + 10, 1)));
    // The overlap is free twice.
    assert!(p.contains(&Problem::FreeTwice {
        space: Space::Data,
        run: run(b + 5, 2)
    }));
}

#[test]
fn a_list_that_claims_more_than_it_holds_is_found() {
    let (mem, meta, data) = volume();
    let head = volume::read_super(&*mem, "meta").unwrap().server_meta_avail[0];
    let (total, first) = (head.total_nr.get(), head.first_nr.get() as u64);
    assert!(total > 0);
    patch_super(&mem, |sb| {
        let h = &mut sb.server_meta_avail[0];
        h.total_nr = (total + 1).into();
        h.first_nr = (first as u32 - 1).into();
    });
    assert_eq!(
        problems(&meta, &data),
        vec![
            Problem::ListFirstCount {
                what: "server_meta_avail[0]".into(),
                claimed: first - 1,
                found: first
            },
            Problem::ListCount {
                what: "server_meta_avail[0]".into(),
                claimed: total + 1,
                found: total
            },
        ]
    );
}

#[test]
fn progress_is_reported_up_to_the_exact_total() {
    let (_, meta, data) = volume();
    let mut calls: Vec<Progress> = Vec::new();
    let opts = check::CheckOptions { namespace: false };
    let r = check::check_with_options(&meta, &data, opts, &mut |p| calls.push(p)).unwrap();
    assert!(r.is_clean());
    let last = calls.last().unwrap();
    assert_eq!(last.blocks_read, r.blocks_read);
    assert_eq!(last.blocks_expected, r.blocks_read);
    assert_eq!(r.blocks_read, r.meta.referenced);
    assert!(calls
        .windows(2)
        .all(|w| w[0].blocks_read <= w[1].blocks_read));
    assert!(calls.iter().all(|p| p.blocks_read <= p.blocks_expected));
}

#[test]
fn df_agrees_with_check() {
    let (_, meta, data) = volume();
    let r = check::check_blocks(&meta, &data).unwrap();
    let d = check::df(&meta, &data).unwrap();
    assert_eq!(d.meta_free + d.meta_reserved, r.meta.free);
    assert_eq!(d.data_free, r.data.free);
    assert_eq!(d.data_total - DATA_START_BLKNO, r.data.total);
}

// The namespace pass: volumes made by the filesystem, then damaged by writing crafted
// items through a mount of their own (newer than what the filesystem wrote, as a bug in
// an operation would leave them).

const CREDS: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0o022,
};

/// A small filesystem volume (4 KiB metadata blocks, so its trees have a few levels).
fn fs_volume() -> (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) {
    common::volume_of(32, 16, 4096)
}

fn mount(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>) -> Fs {
    Fs::mount_single(meta.clone(), data.clone(), FsOptions::default()).unwrap()
}

/// The inodes of a small tree: `/d/f` with 10,000 bytes and a second link `/hard`, an
/// empty file `/g`, a symlink `/d/s`, and an empty file `/e`.
struct Small {
    d: u64,
    f: u64,
    s: u64,
    g: u64,
    e: u64,
}

fn small_tree(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>) -> Small {
    let fs = mount(meta, data);
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, CREDS).unwrap().ino;
    let f = fs.mknod(d, b"f", 0o644, 0, CREDS).unwrap().ino;
    fs.write(f, 0, &[7u8; 10_000]).unwrap();
    fs.link(f, ROOT_INO, b"hard").unwrap();
    let g = fs.mknod(ROOT_INO, b"g", 0o644, 0, CREDS).unwrap().ino;
    let s = fs.symlink(d, b"s", b"../g", CREDS).unwrap().ino;
    let e = fs.mknod(ROOT_INO, b"e", 0o644, 0, CREDS).unwrap().ino;
    fs.unmount().unwrap();
    common::assert_fs_clean(meta, data, "the small tree");
    Small { d, f, s, g, e }
}

/// Change the volume's items through a mount of its own, committed.
fn damage(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>, f: impl FnOnce(&mut Client)) {
    let core = ServerCore::open(meta.clone(), data.clone(), ServerOptions::default()).unwrap();
    let cache = core.cache().clone();
    let server = Arc::new(Server::new(core));
    let t = Arc::new(LocalTransport::new(server));
    let mut c = Client::mount(t, meta.clone(), cache, 77, 3).unwrap();
    f(&mut c);
    c.commit().unwrap();
    c.unmount().unwrap();
}

fn get_inode(c: &Client, ino: u64) -> Inode {
    Inode::read_from_bytes(&c.get(&inode_key(ino)).unwrap().unwrap().val).unwrap()
}

/// A small tree damaged by `f`: its inodes and the namespace problems found.
fn damaged_tree(f: impl FnOnce(&mut Client, &Small)) -> (Small, Vec<(u64, NsFault)>) {
    let (meta, data) = fs_volume();
    let t = small_tree(&meta, &data);
    damage(&meta, &data, |c| f(c, &t));
    (t, ns_problems(&meta, &data))
}

/// The back-references of `ino` to directory `dir`.
fn backrefs(c: &Client, ino: u64, dir: u64) -> Vec<btree::Item> {
    c.read_items(
        &link_backref_key(ino, dir, 0),
        &link_backref_key(ino, dir, u64::MAX),
    )
    .unwrap()
}

/// The namespace problems of a volume (its blocks must be clean).
fn ns_problems(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>) -> Vec<(u64, NsFault)> {
    let r = check::check(meta, data).unwrap();
    assert!(r.namespace_checked);
    r.problems
        .into_iter()
        .map(|p| match p {
            Problem::Namespace { ino, fault } => (ino, fault),
            other => panic!("not a namespace problem: {other}"),
        })
        .collect()
}

#[test]
fn a_leaked_inode_is_reported_with_its_data_blocks() {
    let (meta, data) = fs_volume();
    small_tree(&meta, &data);
    let leaked = 5000;
    damage(&meta, &data, |c| {
        let i = Inode {
            nlink: 1.into(),
            mode: 0o100644.into(),
            size: (4 * DATA_BLOCK_SIZE).into(),
            next_readdir_pos: 2.into(),
            meta_seq: 9.into(),
            data_seq: 9.into(),
            online_blocks: 4.into(),
            ..Inode::default()
        };
        c.insert(&inode_key(leaked), i.as_bytes()).unwrap();
        for ty in [item_type::META_SEQ, item_type::DATA_SEQ] {
            c.insert(&inode_index_key(ty, 9, leaked), &[]).unwrap();
        }
        c.add_inode_count(1);
        assert_eq!(c.alloc_data(leaked, 0, 4).unwrap().len, 4);
    });
    let p = ns_problems(&meta, &data);
    assert_eq!(
        p,
        vec![(
            leaked,
            NsFault::Unreachable {
                nlink: 1,
                data_blocks: 4
            }
        )]
    );
    let text = Problem::Namespace {
        ino: p[0].0,
        fault: p[0].1.clone(),
    }
    .to_string();
    assert!(text.starts_with("inode 5000: leaked"), "{text}");
}

#[test]
fn a_wrong_link_count_is_reported() {
    let (t, problems) = damaged_tree(|c, t| {
        for (ino, n) in [(t.f, 5u32), (t.d, 7)] {
            let mut i = get_inode(c, ino);
            i.nlink = n.into();
            c.insert(&inode_key(ino), i.as_bytes()).unwrap();
        }
    });
    assert_eq!(
        problems,
        vec![
            (
                t.d,
                NsFault::LinkCount {
                    nlink: 7,
                    expected: 2
                }
            ),
            (
                t.f,
                NsFault::LinkCount {
                    nlink: 5,
                    expected: 2
                }
            ),
        ]
    );
}

#[test]
fn an_entry_to_a_missing_inode_is_reported() {
    let (t, problems) = damaged_tree(|c, t| {
        let i = get_inode(c, t.g);
        c.delete(&inode_key(t.g)).unwrap();
        c.delete(&inode_index_key(item_type::META_SEQ, i.meta_seq.get(), t.g))
            .unwrap();
        c.delete(&inode_index_key(item_type::DATA_SEQ, i.data_seq.get(), t.g))
            .unwrap();
        c.add_inode_count(-1);
        let refs = backrefs(c, t.g, ROOT_INO);
        assert_eq!(refs.len(), 1);
        c.delete(&refs[0].key).unwrap();
    });
    assert_eq!(
        problems,
        vec![(
            t.g,
            NsFault::EntryToMissing {
                dir: ROOT_INO,
                name: "g".into(),
                entries: 1
            }
        )]
    );
}

#[test]
fn a_dangling_back_reference_is_reported() {
    let (t, problems) = damaged_tree(|c, t| {
        let refs = backrefs(c, t.f, t.d);
        let mut val = refs[0].val.clone();
        let (d, _) = Dirent::mut_from_prefix(&mut val).unwrap();
        d.pos = 999.into();
        c.insert(&link_backref_key(t.f, t.d, 999), &val).unwrap();
    });
    assert_eq!(
        problems,
        vec![(t.f, NsFault::DanglingBackref { dir: t.d, pos: 999 })]
    );
}

#[test]
fn an_entry_of_the_wrong_kind_is_reported() {
    let (t, problems) = damaged_tree(|c, t| {
        // The three items of the link /g, rewritten as a symlink's.
        let mut keys = c
            .read_items(&readdir_key(ROOT_INO, 0), &readdir_key(ROOT_INO, u64::MAX))
            .unwrap()
            .into_iter()
            .filter(|it| Dirent::read_from_prefix(&it.val).unwrap().0.ino.get() == t.g)
            .collect::<Vec<_>>();
        assert_eq!(keys.len(), 1);
        let it = keys.pop().unwrap();
        let (d, _) = Dirent::read_from_prefix(&it.val).unwrap();
        let (hash, pos) = (d.hash.get(), d.pos.get());
        let mut val = it.val.clone();
        Dirent::mut_from_prefix(&mut val).unwrap().0.kind = 10;
        for k in [
            dirent_key(ROOT_INO, hash, pos),
            readdir_key(ROOT_INO, pos),
            link_backref_key(t.g, ROOT_INO, pos),
        ] {
            assert!(c.get(&k).unwrap().is_some());
            c.insert(&k, &val).unwrap();
        }
    });
    assert_eq!(
        problems,
        vec![(
            t.g,
            NsFault::EntryKind {
                dir: ROOT_INO,
                entry: "symlink".into(),
                inode: "regular file"
            }
        )]
    );
}

/// The readdir item of `name` in `dir` (key and value).
fn entry_of(c: &Client, dir: u64, name: &[u8]) -> btree::Item {
    c.read_items(&readdir_key(dir, 0), &readdir_key(dir, u64::MAX))
        .unwrap()
        .into_iter()
        .find(|it| Dirent::read_from_prefix(&it.val).unwrap().1 == name)
        .unwrap()
}

#[test]
fn a_second_entry_of_one_name_is_reported() {
    let (t, problems) = damaged_tree(|c, t| {
        // /g linked again under the same name at a new position, with every count kept.
        let it = entry_of(c, ROOT_INO, b"g");
        let mut root = get_inode(c, ROOT_INO);
        let pos = root.next_readdir_pos.get();
        let mut val = it.val.clone();
        let (d, _) = Dirent::mut_from_prefix(&mut val).unwrap();
        d.pos = pos.into();
        let hash = d.hash.get();
        c.insert(&dirent_key(ROOT_INO, hash, pos), &val).unwrap();
        c.insert(&readdir_key(ROOT_INO, pos), &val).unwrap();
        c.insert(&link_backref_key(t.g, ROOT_INO, pos), &val)
            .unwrap();
        root.next_readdir_pos = (pos + 1).into();
        root.size = (root.size.get() + 1).into();
        c.insert(&inode_key(ROOT_INO), root.as_bytes()).unwrap();
        let mut g = get_inode(c, t.g);
        g.nlink = 2.into();
        c.insert(&inode_key(t.g), g.as_bytes()).unwrap();
    });
    let pos = match &problems[..] {
        [(ROOT_INO, NsFault::DuplicateName { name, pos })] if name == "g" => *pos,
        other => panic!("{other:?} (/g is {})", t.g),
    };
    assert!(pos > 2);
}

#[test]
fn an_entry_without_its_readdir_item_is_reported() {
    let (t, problems) = damaged_tree(|c, t| {
        let it = entry_of(c, t.d, b"f");
        c.delete(&it.key).unwrap();
    });
    let pos = problems
        .first()
        .map(|(ino, f)| match f {
            NsFault::EntryItems { pos, reason } if *ino == t.d => {
                assert_eq!(*reason, "an entry by name without its readdir item");
                *pos
            }
            other => panic!("{other:?}"),
        })
        .unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(pos >= 2);
}

#[test]
fn a_directory_cut_off_from_the_root_leaks_what_only_it_names() {
    let (t, problems) = damaged_tree(|c, t| {
        // /d's entry gone with its three items, the root's counts kept in step.
        let it = entry_of(c, ROOT_INO, b"d");
        let (d, _) = Dirent::read_from_prefix(&it.val).unwrap();
        let pos = d.pos.get();
        c.delete(&dirent_key(ROOT_INO, d.hash.get(), pos)).unwrap();
        c.delete(&readdir_key(ROOT_INO, pos)).unwrap();
        c.delete(&link_backref_key(t.d, ROOT_INO, pos)).unwrap();
        let mut root = get_inode(c, ROOT_INO);
        root.size = (root.size.get() - 1).into();
        root.nlink = (root.nlink.get() - 1).into();
        c.insert(&inode_key(ROOT_INO), root.as_bytes()).unwrap();
    });
    // /d/f is linked from the root as well (/hard); /d/s only from /d.
    assert_eq!(
        problems,
        vec![
            (t.d, NsFault::DirEntries { entries: 0 }),
            (
                t.d,
                NsFault::Unreachable {
                    nlink: 2,
                    data_blocks: 0
                }
            ),
            (
                t.s,
                NsFault::Unreachable {
                    nlink: 1,
                    data_blocks: 0
                }
            ),
        ]
    );
}

#[test]
fn a_written_extent_past_the_size_is_reported_unless_a_truncate_is_under_way() {
    let (meta, data) = fs_volume();
    let t = small_tree(&meta, &data);
    damage(&meta, &data, |c| {
        assert_eq!(c.alloc_data(t.e, 0, 2).unwrap().len, 2);
        let mut i = get_inode(c, t.e);
        i.online_blocks = 2.into();
        c.insert(&inode_key(t.e), i.as_bytes()).unwrap();
    });
    assert_eq!(
        ns_problems(&meta, &data),
        vec![(
            t.e,
            NsFault::ExtentPastSize {
                start: 0,
                len: 2,
                size: 0
            }
        )]
    );
    damage(&meta, &data, |c| {
        c.insert(&truncate_key(t.e), &0u64.to_le_bytes()).unwrap();
    });
    common::assert_fs_clean(&meta, &data, "a truncate under way");
}

/// Offline extents (released to an archive) hold no data blocks and count in the
/// inode's offline blocks: a released file is clean; counts that differ from the
/// extents, an offline extent with a block, one past the size, and a release record of
/// no inode are reported.
#[test]
fn offline_extents_hold_no_blocks_and_are_counted() {
    let (meta, data) = fs_volume();
    let t = small_tree(&meta, &data);
    let fs = mount(&meta, &data);
    let v = fs.stat_more(t.f).unwrap().data_version;
    fs.release_data(t.f, 0, 3 * DATA_BLOCK_SIZE, v).unwrap();
    assert_eq!(fs.stat_more(t.f).unwrap().offline_blocks, 3);
    fs.unmount().unwrap();
    common::assert_fs_clean(&meta, &data, "a released file");
    let offline = |len: u64| DataExtent {
        blkno: 0.into(),
        len: len.into(),
        flags: DATA_EXTENT_FLAG_OFFLINE.into(),
    };
    damage(&meta, &data, |c| {
        let mut i = get_inode(c, t.f);
        i.offline_blocks = 2.into();
        c.insert(&inode_key(t.f), i.as_bytes()).unwrap();
        // Past the size of the empty file, and long (offline extents may be).
        c.insert(&data_extent_key(t.e, 0), offline(1000).as_bytes())
            .unwrap();
        let mut e = get_inode(c, t.e);
        e.offline_blocks = 1000.into();
        c.insert(&inode_key(t.e), e.as_bytes()).unwrap();
        c.insert(&release_key(7000), ReleaseRecord::default().as_bytes())
            .unwrap();
    });
    assert_eq!(
        ns_problems(&meta, &data),
        vec![
            (
                t.f,
                NsFault::BlockCounts {
                    online: 0,
                    offline: 2,
                    extents_online: 0,
                    extents_offline: 3
                }
            ),
            (
                t.e,
                NsFault::ExtentPastSize {
                    start: 0,
                    len: 1000,
                    size: 0
                }
            ),
            (7000, NsFault::ReleaseWithoutInode),
        ]
    );
    // An offline extent with a block is a bad record of the block walk.
    damage(&meta, &data, |c| {
        let bad = DataExtent {
            blkno: 100.into(),
            ..offline(1)
        };
        c.insert(&data_extent_key(t.g, 0), bad.as_bytes()).unwrap();
    });
    let r = check::check(&meta, &data).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, Problem::BadRecord { reason, .. } if reason.contains("offline"))),
        "{:#?}",
        r.problems
    );
}

#[test]
fn unlinked_inodes_need_an_orphan_item_and_orphans_an_inode() {
    let (meta, data) = fs_volume();
    let t = small_tree(&meta, &data);
    // Open and unlinked at unmount (a crash would leave the same): an orphan, clean.
    let fs = mount(&meta, &data);
    fs.open(t.e).unwrap();
    fs.unlink(ROOT_INO, b"e").unwrap();
    fs.unmount().unwrap();
    common::assert_fs_clean(&meta, &data, "an open unlinked file");
    damage(&meta, &data, |c| {
        c.delete(&orphan_key(t.e)).unwrap();
        c.insert(&orphan_key(6000), &[]).unwrap();
    });
    assert_eq!(
        ns_problems(&meta, &data),
        vec![
            (t.e, NsFault::UnlinkedNotOrphan),
            (6000, NsFault::OrphanWithoutInode)
        ]
    );
}

#[test]
fn seq_index_items_that_disagree_with_their_inodes_are_reported() {
    let meta_key = |seq, ino| inode_index_key(item_type::META_SEQ, seq, ino);
    let data_key = |seq, ino| inode_index_key(item_type::DATA_SEQ, seq, ino);
    // The seqs of f, g, e and d as the tree left them.
    let mut seqs = (0, 0, 0, 0);
    let (t, mut problems) = damaged_tree(|c, t| {
        let f = get_inode(c, t.f).meta_seq.get();
        let g = get_inode(c, t.g).data_seq.get();
        let d = get_inode(c, t.d).data_seq.get();
        let mut e = get_inode(c, t.e);
        seqs = (f, g, e.meta_seq.get(), d);
        // A stale item left beside the file's own; the other file's missing.
        c.insert(&meta_key(f - 1, t.f), &[]).unwrap();
        c.delete(&data_key(g, t.g)).unwrap();
        // A directory in the data_seq index.
        c.insert(&data_key(d, t.d), &[]).unwrap();
        // An inode item that moved on without its index item.
        e.meta_seq = (e.meta_seq.get() + 5).into();
        c.insert(&inode_key(t.e), e.as_bytes()).unwrap();
        // Items of an inode that does not exist, and one that is not an index item.
        c.insert(&meta_key(3, 7000), &[]).unwrap();
        c.insert(&data_key(4, 7000), &[]).unwrap();
        c.insert(&meta_key(3, 7001), b"x").unwrap();
    });
    let (f, g, e, d) = seqs;
    let n = problems.len();
    problems.retain(|(ino, p)| !(*ino == 7001 && matches!(p, NsFault::BadItem { .. })));
    assert_eq!(
        n,
        problems.len() + 1,
        "the item with a value: {problems:#?}"
    );
    problems.sort_by_key(|(ino, p)| (*ino, p.to_string()));
    let items = |index, seq, found, first| NsFault::IndexItems {
        index,
        seq,
        found,
        first,
    };
    let mut want = vec![
        (t.d, items("data_seq", None, 1, d)),
        (t.f, items("meta_seq", Some(f), 2, f - 1)),
        (t.g, items("data_seq", Some(g), 0, 0)),
        (t.e, items("meta_seq", Some(e + 5), 1, e)),
        (
            7000,
            NsFault::IndexWithoutInode {
                index: "data_seq",
                items: 1,
                first: 4,
            },
        ),
        (
            7000,
            NsFault::IndexWithoutInode {
                index: "meta_seq",
                items: 1,
                first: 3,
            },
        ),
    ];
    want.sort_by_key(|(ino, p)| (*ino, p.to_string()));
    assert_eq!(problems, want);
    let text = Problem::Namespace {
        ino: t.g,
        fault: items("data_seq", Some(g), 0, 0),
    }
    .to_string();
    assert!(
        text.ends_with("but no data_seq index item names it"),
        "{text}"
    );
}

/// Flip one byte in the body of super slot `slot` of a device.
fn flip_super_byte(dev: &Arc<dyn BlockDevice>, slot: u64) {
    let off = SUPER_OFFSET + slot * SUPER_SIZE as u64 + 200;
    let mut b = [0u8; 1];
    dev.read_at(&mut b, off).unwrap();
    b[0] ^= 0x10;
    dev.write_at(&b, off).unwrap();
}

#[test]
fn a_super_slot_that_does_not_verify_is_reported() {
    for (dev_name, slot) in [("meta", 0), ("meta", 1), ("data", 0), ("data", 1)] {
        let (meta, data) = fs_volume();
        small_tree(&meta, &data);
        let dev = if dev_name == "meta" { &meta } else { &data };
        let used = volume::read_super_slots(&**dev, dev_name).unwrap().slot;
        flip_super_byte(dev, slot);
        let r = check::check(&meta, &data).unwrap();
        let damaged = volume::SlotDamage {
            device: dev_name,
            slot,
            reason: "checksum mismatch",
        };
        assert!(
            r.problems.contains(&Problem::SuperSlot(damaged)),
            "{dev_name} {slot}: {:#?}",
            r.problems
        );
        let text = Problem::SuperSlot(damaged).to_string();
        assert_eq!(
            text,
            format!("{dev_name} device super slot {slot} does not verify: checksum mismatch")
        );
        let s = volume::read_super_slots(&**dev, dev_name).unwrap();
        assert_eq!(s.damaged, vec![damaged]);
        assert_eq!(s.slot, 1 - slot, "the other slot is used");
        if slot != used {
            // The older slot: the newest super is read and nothing else is wrong.
            assert_eq!(r.problem_count, 1, "{:#?}", r.problems);
        }
    }
}

#[test]
fn a_clean_volume_of_ten_thousand_files_checks_clean() {
    let (meta, data) = common::volume_of(256, 256, 4096);
    let fs = mount(&meta, &data);
    let mut rng = common::Rng(0x5eed);
    let dirs: Vec<u64> = {
        let mut dirs = vec![ROOT_INO];
        for i in 0..250u64 {
            let parent = dirs[rng.below(dirs.len() as u64) as usize];
            let name = format!("dir{i}");
            dirs.push(fs.mkdir(parent, name.as_bytes(), 0o755, CREDS).unwrap().ino);
        }
        dirs
    };
    let mut files = Vec::new();
    let (mut links, mut symlinks) = (0, 0);
    for i in 0..10_000u64 {
        let dir = dirs[rng.below(dirs.len() as u64) as usize];
        let name = format!("f{i}");
        let ino = match i % 10 {
            0 => {
                symlinks += 1;
                let target = format!("../some/where/{i}");
                fs.symlink(dir, name.as_bytes(), target.as_bytes(), CREDS)
                    .unwrap()
                    .ino
            }
            _ => fs.mknod(dir, name.as_bytes(), 0o644, 0, CREDS).unwrap().ino,
        };
        match i % 10 {
            1 => {
                fs.write(ino, 0, &[i as u8; 5000]).unwrap();
            }
            2 => {
                // Sparse: a block far out.
                fs.write(ino, 1 << 20, b"tail").unwrap();
            }
            3 => fs.fallocate(ino, 0, 3 * DATA_BLOCK_SIZE, true).unwrap(),
            4 => {
                fs.write(ino, 0, &[1; 9000]).unwrap();
                let set = SetAttr {
                    size: Some(100),
                    ..SetAttr::default()
                };
                fs.setattr(ino, &set).unwrap();
            }
            5 => fs
                .setxattr(ino, b"user.tag", &[i as u8; 300], XattrSet::Any)
                .unwrap(),
            6 => {
                let other = dirs[rng.below(dirs.len() as u64) as usize];
                let link = format!("link{i}");
                if fs.link(ino, other, link.as_bytes()).is_ok() {
                    links += 1;
                }
            }
            _ => {}
        }
        files.push(ino);
    }
    // Some removals and renames too.
    for i in (0..10_000u64).step_by(97) {
        let _ = fs.unlink(ROOT_INO, format!("f{i}").as_bytes());
    }
    fs.unmount().unwrap();
    assert!(links > 500 && symlinks == 1000, "{links} {symlinks}");
    let start = std::time::Instant::now();
    let r = common::assert_fs_clean(&meta, &data, "ten thousand files");
    let took = start.elapsed();
    assert!(r.inodes >= 10_000, "{}", r.inodes);
    eprintln!(
        "checked {} inodes, {} metadata blocks, in {took:.2?}",
        r.inodes, r.meta.referenced
    );
}

#[test]
fn random_item_values_are_reported_and_never_panic() {
    let (meta, data) = fs_volume();
    small_tree(&meta, &data);
    let clean: Vec<Vec<u8>> = [&meta, &data]
        .iter()
        .map(|d| {
            let mut b = vec![0u8; d.len() as usize];
            d.read_at(&mut b, 0).unwrap();
            b
        })
        .collect();
    let mut rng = common::Rng(0xbad5eed);
    let (mut runs, mut found) = (0, 0);
    for _ in 0..100 {
        meta.write_at(&clean[0], 0).unwrap();
        data.write_at(&clean[1], 0).unwrap();
        damage(&meta, &data, |c| {
            let items = c
                .read_items(
                    &Key::new(zone::ORPHAN, 0, 0, 0, 0, 0),
                    &Key::new(zone::FS, u64::MAX, u8::MAX, u64::MAX, u64::MAX, u8::MAX),
                )
                .unwrap();
            let it = &items[rng.below(items.len() as u64) as usize];
            // Often the value with a few bytes changed, sometimes random bytes.
            let val: Vec<u8> = if rng.below(3) == 0 {
                (0..rng.below(200)).map(|_| rng.next() as u8).collect()
            } else {
                let mut v = it.val.clone();
                for _ in 0..=rng.below(3) {
                    if !v.is_empty() {
                        let i = rng.below(v.len() as u64) as usize;
                        v[i] ^= 1 << rng.below(8);
                    }
                }
                v
            };
            c.insert(&it.key, &val).unwrap();
        });
        let r = check::check(&meta, &data).unwrap();
        runs += 1;
        found += !r.is_clean() as u32;
    }
    // A flipped bit in a timestamp or an xattr value is no namespace damage; most are.
    assert!(
        found > runs / 2,
        "only {found} of {runs} damaged volumes found wrong"
    );
}

/// A small tree whose `/g` has a `.totl.` xattr (5 in `1.2.3`) and an `.indx.` xattr
/// (at `3.4`), and whose `/e` has a `.totl.` xattr (7 in `1.2.3`).
fn tagged_tree() -> (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>, Small) {
    let (meta, data) = fs_volume();
    let t = small_tree(&meta, &data);
    let fs = mount(&meta, &data);
    let set = |ino, name: &str, v: &str| {
        fs.setxattr(ino, name.as_bytes(), v.as_bytes(), XattrSet::Any)
            .unwrap()
    };
    set(t.g, "scoutfs.totl.a.1.2.3", "5");
    set(t.g, "scoutfs.hide.indx.x.3.4", "");
    set(t.e, "scoutfs.totl.b.1.2.3", "7");
    fs.unmount().unwrap();
    common::assert_fs_clean(&meta, &data, "the tagged tree");
    (meta, data, t)
}

fn zone_items(c: &Client, z: u8) -> Vec<btree::Item> {
    c.read_items(
        &Key::new(z, 0, 0, 0, 0, 0),
        &Key::new(z, u64::MAX, u8::MAX, u64::MAX, u64::MAX, u8::MAX),
    )
    .unwrap()
}

#[test]
fn a_total_that_is_not_its_xattrs_sum_is_reported() {
    let total = Key::new(zone::XATTR_TOTL, 1, 0, 2, 3, 0);
    for (lanes, recorded) in [
        ([1i64, 0], (13, 2)),
        ([-5, -1], (7, 1)),
        ([-12, -2], (0, 0)),
    ] {
        let (meta, data, _) = tagged_tree();
        damage(&meta, &data, |c| c.add_delta(&total, &lanes).unwrap());
        let r = check::check(&meta, &data).unwrap();
        assert_eq!(
            r.problems,
            [Problem::XattrTotal {
                name: [1, 2, 3],
                recorded,
                counted: (12, 2),
            }],
            "{lanes:?}"
        );
        assert!(r.problems[0].to_string().contains("1.2.3"));
    }
}

#[test]
fn index_items_and_their_xattrs_are_matched() {
    let (meta, data, t) = tagged_tree();
    let mut xid = 0;
    damage(&meta, &data, |c| {
        let items = zone_items(c, zone::XATTR_INDX);
        assert_eq!(items.len(), 1, "one index item");
        xid = items[0].key.fourth as u64;
        c.delete(&items[0].key).unwrap();
    });
    let (major, minor) = (3, 4);
    assert_eq!(
        ns_problems(&meta, &data),
        [(t.g, NsFault::IndexItemMissing { major, minor, xid })]
    );
    let (meta, data, t) = tagged_tree();
    damage(&meta, &data, |c| {
        let mut k = zone_items(c, zone::XATTR_INDX)[0].key;
        k.fourth += 1;
        c.insert(&k, &[]).unwrap();
        xid = k.fourth as u64;
    });
    assert_eq!(
        ns_problems(&meta, &data),
        [(t.g, NsFault::IndexItemWithoutXattr { major, minor, xid })]
    );
    // An index item with a value does not decode.
    let (meta, data, _) = tagged_tree();
    damage(&meta, &data, |c| {
        let k = zone_items(c, zone::XATTR_INDX)[0].key;
        c.insert(&k, b"v").unwrap();
    });
    let r = check::check(&meta, &data).unwrap();
    assert!(
        matches!(
            &r.problems[..],
            [
                Problem::BadRecord { .. },
                Problem::Namespace {
                    fault: NsFault::IndexItemMissing { .. },
                    ..
                }
            ]
        ),
        "{:#?}",
        r.problems
    );
}
