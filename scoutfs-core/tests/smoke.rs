//! A quick end-to-end run of the btree through a volume: deep tree, deletes, commits, reopen.

// Tests fail loudly: unwrapping in their helpers is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::volume_of;
use scoutfs_core::alloc::list::read_list;
use scoutfs_core::btree;
use scoutfs_core::format::Key;
use scoutfs_core::volume::{OpenOptions, Volume};
use std::collections::BTreeMap;

fn key(i: u64) -> Key {
    Key::new(16, i, 1, i * 7, 0, 0)
}

#[test]
fn smoke_insert_delete_commit_reopen() {
    let (meta, data) = volume_of(64, 8, 1024);
    let mut vol = Volume::open(meta.clone(), data.clone(), OpenOptions::default()).unwrap();
    let mut model = BTreeMap::new();
    let mut s = 1u64;
    for n in 0..20000u64 {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let i = (s >> 33) % 3000;
        if n % 3 == 2 {
            let r = vol.delete(&key(i));
            assert_eq!(r.is_ok(), model.remove(&i).is_some(), "delete {i} {r:?}");
        } else {
            let v = vec![(i % 251) as u8; (i % 60) as usize];
            vol.put(&key(i), &v).unwrap();
            model.insert(i, v);
        }
        if n % 2000 == 0 {
            let st = btree::verify(vol.writer(), &vol.root()).unwrap();
            assert_eq!(st.items, model.len() + 2);
            vol.commit().unwrap();
        }
    }
    let st = btree::verify(vol.writer(), &vol.root()).unwrap();
    println!("{st:?}");
    assert!(st.height >= 4);
    vol.commit().unwrap();
    drop(vol);
    let vol = Volume::open(meta, data, OpenOptions::default()).unwrap();
    for (i, v) in &model {
        assert_eq!(&vol.get(&key(*i)).unwrap().unwrap().val, v);
    }
    let all = btree::items(
        vol.writer(),
        &vol.root(),
        &Key::new(16, 0, 1, 0, 0, 0),
        &Key::new(16, u64::MAX, 1, u64::MAX, 0, 0),
    )
    .unwrap();
    assert_eq!(
        all.len(),
        model.len() + 1,
        "model items plus the root inode"
    );
}

/// Leaves that hold a single item of a quarter block or more are not under the low water
/// mark; deleting their item must not leave an empty block behind.
#[test]
fn large_values_delete_all_keeps_invariants() {
    let (meta, data) = volume_of(16, 8, 1024);
    let mut vol = Volume::open(meta, data, OpenOptions::default()).unwrap();
    let max = btree::max_value_len(1024);
    let mut keys: Vec<u64> = (0..400).collect();
    for &i in &keys {
        let len = if i % 3 == 0 {
            max
        } else {
            (i as usize * 37) % max
        };
        vol.put(&key(i), &vec![i as u8; len]).unwrap();
    }
    btree::verify(vol.writer(), &vol.root()).unwrap();
    let mut s = 7u64;
    for n in (1..keys.len()).rev() {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
        keys.swap(n, (s >> 33) as usize % (n + 1));
    }
    for (n, &i) in keys.iter().enumerate() {
        vol.delete(&key(i)).unwrap();
        let st = btree::verify(vol.writer(), &vol.root())
            .unwrap_or_else(|e| panic!("after deleting {n} items: {e}"));
        assert_eq!(st.items, keys.len() - n - 1 + 2);
    }
}

/// Deleting down to mkfs's two items shrinks the tree back to one leaf: no root parent with
/// a single child is left behind, and every other block is free again after the commit.
#[test]
fn deleting_down_to_one_leaf_collapses_the_root() {
    let (meta, data) = volume_of(16, 8, 1024);
    let mut vol = Volume::open(meta, data, OpenOptions::default()).unwrap();
    vol.commit().unwrap();
    let after_mkfs = not_fs_blocks(&vol);
    let max = btree::max_value_len(1024);
    let mut keys: Vec<u64> = (0..2000).collect();
    for &i in &keys {
        vol.put(&key(i), &vec![i as u8; (i as usize * 37) % max])
            .unwrap();
    }
    vol.commit().unwrap();
    assert!(btree::verify(vol.writer(), &vol.root()).unwrap().height >= 3);
    let mut s = 5u64;
    for n in (1..keys.len()).rev() {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
        keys.swap(n, (s >> 33) as usize % (n + 1));
    }
    for &i in &keys {
        vol.delete(&key(i)).unwrap();
    }
    let st = btree::verify(vol.writer(), &vol.root()).unwrap();
    assert_eq!((st.height, st.blocks, st.items), (1, 1, 2));
    vol.commit().unwrap();
    assert_eq!(not_fs_blocks(&vol), after_mkfs);
}

/// Free metadata blocks plus the blocks the allocators occupy: every block that is not
/// part of the filesystem tree.
fn not_fs_blocks(vol: &Volume) -> u64 {
    let sb = vol.super_block();
    let cache = vol.cache();
    let mut n = vol.free_meta_blocks();
    for root in [sb.meta_alloc[0].root.into(), sb.data_alloc.root.into()] {
        btree::walk_blocks(&**cache, &root, &mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
    }
    for head in [&sb.server_meta_avail[0], &sb.server_meta_freed[0]] {
        n += read_list(&**cache, head).unwrap().blocks.len() as u64;
    }
    n
}
