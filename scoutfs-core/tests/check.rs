#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `check` against injected damage: each kind is found as its own problem, and a healthy
//! volume is clean with every block accounted for.

use scoutfs_core::block::seal_block;
use scoutfs_core::check::{self, Problem, Space};
use scoutfs_core::device::{BlockDevice, MemDevice};
use scoutfs_core::format::*;
use scoutfs_core::volume::{self, mkfs, MkfsOptions, OpenOptions, Volume};
use std::sync::Arc;
use zerocopy::{FromBytes, IntoBytes};

fn key(i: u64) -> Key {
    Key::new(zone::FS, 5000 + i, item_type::XATTR, 0, 0, 0)
}

/// A volume of 1 KiB blocks with a tree of a few levels in its filesystem root.
fn volume() -> (Arc<MemDevice>, Arc<dyn BlockDevice>, Arc<dyn BlockDevice>) {
    let mem = Arc::new(MemDevice::new(8 << 20));
    let meta: Arc<dyn BlockDevice> = mem.clone();
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(8 << 20));
    let opts = MkfsOptions {
        meta_block_size: 1024,
        ..Default::default()
    };
    mkfs(&meta, &data, &opts).unwrap();
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
    let r = check::check(meta, data).unwrap();
    assert_eq!(r.problem_count as usize, r.problems.len());
    r.problems
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

#[test]
fn a_healthy_volume_is_clean_and_every_block_is_counted() {
    let (_, meta, data) = volume();
    let r = check::check(&meta, &data).unwrap();
    assert!(r.is_clean(), "{:#?}", r.problems);
    assert_eq!(r.meta.referenced + r.meta.free, r.meta.total);
    assert_eq!(r.data.referenced + r.data.free, r.data.total);
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
fn a_leaked_block_is_found() {
    let (_, meta, data) = volume();
    let mut vol = open(&meta, &data);
    let b = vol.alloc_meta_block().unwrap();
    vol.commit().unwrap();
    drop(vol);
    let p = problems(&meta, &data);
    assert_eq!(
        p,
        vec![Problem::Leaked {
            space: Space::Meta,
            run: check::Run { start: b, len: 1 }
        }]
    );
}

#[test]
fn a_block_referenced_twice_is_found() {
    let (mem, meta, data) = volume();
    // A second tree that is the filesystem tree.
    patch_super(&mem, |sb| sb.srch_root = sb.fs_root);
    let p = problems(&meta, &data);
    assert!(!p.is_empty());
    assert!(
        p.iter().all(|p| matches!(
            p,
            Problem::ReferencedTwice {
                space: Space::Meta,
                ..
            }
        )),
        "{p:#?}"
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
    let p = problems(&meta, &data);
    assert_eq!(
        p,
        vec![Problem::FreeAndReferenced {
            space: Space::Meta,
            run: check::Run {
                start: root,
                len: 1
            }
        }]
    );
}

#[test]
fn a_bit_flip_in_any_tree_block_is_found() {
    let (mem, meta, data) = volume();
    let sb = volume::read_super(&*mem, "meta").unwrap();
    let root: BtreeRoot = sb.fs_root.into();
    assert!(root.height >= 2);
    let bs = sb.meta_block_size.get() as usize;
    mem.with_bytes_mut(|b| b[root.blk.blkno as usize * bs + 300] ^= 0x10);
    let p = problems(&meta, &data);
    assert!(
        p.iter()
            .any(|p| matches!(p, Problem::Unreadable { what, error }
            if what == "fs_root" && error.contains("checksum"))),
        "{p:#?}"
    );
    // The blocks below the damaged root cannot be reached, so they read as leaked.
    assert!(
        p.iter().any(|p| matches!(p, Problem::Leaked { .. })),
        "{p:#?}"
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
    let p = problems(&meta, &data);
    assert_eq!(
        p,
        vec![Problem::FreeAndReferenced {
            space: Space::Data,
            run: check::Run {
                start: DATA_START_BLKNO + 10,
                len: 4
            }
        }]
    );
}

#[test]
fn a_wrong_extent_tree_total_is_found() {
    let (mem, meta, data) = volume();
    patch_super(&mem, |sb| {
        sb.data_alloc.total_len = (sb.data_alloc.total_len.get() + 1).into()
    });
    let p = problems(&meta, &data);
    assert!(
        matches!(&p[..], [Problem::ExtentTree { what, reason }]
            if what == "data_alloc" && reason.contains("total")),
        "{p:#?}"
    );
}

#[test]
fn a_list_that_claims_more_than_it_holds_is_found() {
    let (mem, meta, data) = volume();
    patch_super(&mem, |sb| {
        let h = &mut sb.server_meta_avail[0];
        h.total_nr = (h.total_nr.get() + 1).into();
    });
    let p = problems(&meta, &data);
    assert!(
        p.iter()
            .any(|p| matches!(p, Problem::Unreadable { what, .. }
            if what == "server_meta_avail[0]")),
        "{p:#?}"
    );
}

#[test]
fn df_agrees_with_check() {
    let (_, meta, data) = volume();
    let r = check::check(&meta, &data).unwrap();
    let d = check::df(&meta, &data).unwrap();
    assert_eq!(d.meta_free + d.meta_reserved, r.meta.free);
    assert_eq!(d.data_free, r.data.free);
    assert_eq!(d.data_total - DATA_START_BLKNO, r.data.total);
}
