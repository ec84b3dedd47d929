//! Copy-on-write snapshots: a committed root keeps reading its old contents while a new
//! transaction changes the tree, and after its commit; once later commits reuse the blocks
//! the old root referenced, reads through it fail as `Stale` rather than return other data.

// Tests fail loudly: unwrapping in their helpers is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use scoutfs_core::block::{BlockError, BlockRead};
use scoutfs_core::btree::{self, BtreeError, Item};
use scoutfs_core::device::{BlockDevice, MemDevice};
use scoutfs_core::format::{BtreeRoot, Key};
use scoutfs_core::volume::{mkfs, MkfsOptions, OpenOptions, Volume};
use std::sync::Arc;

fn key(i: u16) -> Key {
    Key::new(60, u64::from(i), 0, 0, 0, 0)
}

fn all<R: BlockRead + ?Sized>(rd: &R, root: &BtreeRoot) -> btree::Result<Vec<Item>> {
    btree::items(rd, root, &Key::MIN, &Key::MAX)
}

fn volume() -> Volume {
    let meta: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(16 << 20));
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(1 << 20));
    let opts = MkfsOptions {
        meta_block_size: 1024,
        ..Default::default()
    };
    mkfs(&meta, &data, &opts).unwrap();
    Volume::open(meta, data, OpenOptions::default()).unwrap()
}

fn change(vol: &mut Volume, ops: &[(u16, Option<u8>)]) {
    for &(k, v) in ops {
        match v {
            Some(len) => vol.put(&key(k), &vec![len; len as usize]).unwrap(),
            None => {
                let _ = vol.delete(&key(k));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn old_root_reads_old_contents(
        first in prop::collection::vec((0..800u16, prop::option::weighted(0.8, 0..120u8)), 1..800),
        second in prop::collection::vec((0..800u16, prop::option::weighted(0.6, 0..120u8)), 1..800),
    ) {
        let mut vol = volume();
        change(&mut vol, &first);
        vol.commit().unwrap();
        let old_root = vol.committed_root();
        let old = all(&**vol.cache(), &old_root).unwrap();

        change(&mut vol, &second);
        // Mid-transaction: the old root, through the cache and through the writer.
        prop_assert_eq!(&all(&**vol.cache(), &old_root).unwrap(), &old);
        prop_assert_eq!(&all(vol.writer(), &old_root).unwrap(), &old);
        let new = all(vol.writer(), &vol.root()).unwrap();

        vol.commit().unwrap();
        // After the commit: blocks the new commit freed are not reused before the next one.
        prop_assert_eq!(&all(&**vol.cache(), &old_root).unwrap(), &old);
        vol.cache().clear();
        prop_assert_eq!(&all(&**vol.cache(), &old_root).unwrap(), &old);
        prop_assert_eq!(all(&**vol.cache(), &vol.committed_root()).unwrap(), new);
    }
}

#[test]
fn reused_blocks_make_old_roots_stale_never_wrong() {
    let mut vol = volume();
    let ops: Vec<(u16, Option<u8>)> = (0..600).map(|i| (i, Some(40))).collect();
    change(&mut vol, &ops);
    vol.commit().unwrap();
    let old_root = vol.committed_root();
    let old = all(&**vol.cache(), &old_root).unwrap();
    // Rewrite everything, several commits in a row, so freed blocks are reused.
    for round in 0..3u8 {
        let ops: Vec<(u16, Option<u8>)> = (0..600).map(|i| (i, Some(41 + round))).collect();
        change(&mut vol, &ops);
        vol.commit().unwrap();
    }
    vol.cache().clear();
    let mut stale = 0;
    for i in 0..600u16 {
        match btree::lookup(&**vol.cache(), &old_root, &key(i)) {
            Ok(got) => assert_eq!(got.as_ref(), old.iter().find(|it| it.key == key(i))),
            Err(BtreeError::Block(BlockError::Stale { .. })) => stale += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    match all(&**vol.cache(), &old_root) {
        Ok(items) => assert_eq!(items, old),
        Err(BtreeError::Block(BlockError::Stale { .. })) => stale += 1,
        Err(e) => panic!("unexpected error {e}"),
    }
    assert!(
        stale > 0,
        "later commits never reused the old tree's blocks"
    );
}
