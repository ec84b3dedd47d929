//! Copy-on-write snapshots: a committed root keeps reading exactly its old contents, through
//! the cache and through the writer, while a new transaction changes the tree and after that
//! transaction commits. Blocks a commit frees are reused only by the transaction after it,
//! so a root can go out of date only after two more commits (through the cache) or once the
//! transaction after the next commit reuses its blocks (through that transaction's writer);
//! even then a read through it fails as `Stale` and never returns other data.
//!
//! `SCOUTFS_PROPTEST_CASES=N` runs N cases of the property test.

// Tests fail loudly: unwrapping in their helpers is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{open_volume, proptest_cases};
use proptest::prelude::*;
use scoutfs_core::block::{BlockError, BlockRead};
use scoutfs_core::btree::{self, BtreeError, Item};
use scoutfs_core::format::{BtreeRoot, Key, ITEM_FLAG_DELETION, ITEM_FLAG_DELTA};
use scoutfs_core::volume::{Volume, VolumeError};
use std::collections::BTreeMap;

const BS: u32 = 1024;
const KEYS: u16 = 800;

fn key(i: u16) -> Key {
    Key::new(60, u64::from(i), 0, 0, 0, 0)
}

fn all<R: BlockRead + ?Sized>(rd: &R, root: &BtreeRoot) -> btree::Result<Vec<Item>> {
    btree::items(rd, root, &Key::MIN, &Key::MAX)
}

fn volume() -> Volume {
    open_volume(16, 1, BS)
}

#[derive(Clone, Debug)]
enum Change {
    /// Force key, seq, flags, value length.
    Put(u16, u64, u8, usize),
    Delete(u16),
}

fn change() -> impl Strategy<Value = Change> {
    let flags = prop_oneof![Just(0u8), Just(ITEM_FLAG_DELETION), Just(ITEM_FLAG_DELTA)];
    prop_oneof![
        3 => (0..KEYS, any::<u64>(), flags, 0..=btree::max_value_len(BS as usize))
            .prop_map(|(k, s, f, l)| Change::Put(k, s, f, l)),
        1 => (0..KEYS).prop_map(Change::Delete),
    ]
}

/// The tree's contents, kept beside it.
type Model = BTreeMap<Key, Item>;

fn apply(vol: &mut Volume, model: &mut Model, changes: &[Change]) {
    for c in changes {
        match *c {
            Change::Put(k, seq, flags, len) => {
                let val = vec![seq as u8; len];
                vol.change(|t, root| t.force_item(root, &key(k), seq, flags, &val))
                    .unwrap();
                let item = Item {
                    key: key(k),
                    seq,
                    flags,
                    val,
                };
                model.insert(key(k), item);
            }
            Change::Delete(k) => {
                let r = vol.delete(&key(k));
                if model.remove(&key(k)).is_some() {
                    r.unwrap();
                } else {
                    assert!(
                        matches!(r, Err(VolumeError::Btree(BtreeError::NotFound(_)))),
                        "{r:?}"
                    );
                }
            }
        }
    }
}

/// Read every item through `root`: true if the read failed as stale, false if it returned
/// exactly `want`; anything else fails the test.
fn exact_or_stale<R: BlockRead + ?Sized>(rd: &R, root: &BtreeRoot, want: &[Item]) -> bool {
    match all(rd, root) {
        Ok(items) => {
            assert_eq!(items, want, "an old root read other contents");
            false
        }
        Err(BtreeError::Block(BlockError::Stale { .. })) => true,
        Err(e) => panic!("an old root failed with {e}, not as stale"),
    }
}

/// Check every committed root of `history` (oldest first, the last is the volume's
/// committed root) through the cache and through the writer. `open` says whether a
/// transaction has changed the tree since the last commit. Returns the stale reads.
fn check_history(vol: &Volume, history: &[(BtreeRoot, Vec<Item>)], open: bool) -> usize {
    let newest = history.len() - 1;
    assert_eq!(history[newest].0, vol.committed_root());
    let mut stale = 0;
    for (i, (root, want)) in history.iter().enumerate() {
        let age = newest - i;
        // The blocks the commit after this root freed are not written over before the
        // commit after that.
        let via_cache = exact_or_stale(&**vol.cache(), root, want);
        assert!(
            !(via_cache && age <= 1),
            "root {age} commits old is stale through the cache"
        );
        // The open transaction may already hold those blocks, dirty, under new seqs.
        let via_writer = exact_or_stale(vol.writer(), root, want);
        assert!(
            !(via_writer && (age == 0 || (age == 1 && !open))),
            "root {age} commits old is stale through the writer (open transaction: {open})"
        );
        stale += usize::from(via_cache) + usize::from(via_writer);
    }
    stale
}

proptest! {
    #![proptest_config(ProptestConfig { cases: proptest_cases(64), ..ProptestConfig::default() })]

    #[test]
    fn old_roots_read_their_old_contents(
        rounds in prop::collection::vec(prop::collection::vec(change(), 1..400), 2..7),
    ) {
        let mut vol = volume();
        let mut model: Model = all(vol.writer(), &vol.root())
            .unwrap()
            .into_iter()
            .map(|it| (it.key, it))
            .collect();
        let mut history = vec![(vol.committed_root(), model.values().cloned().collect())];
        for changes in &rounds {
            apply(&mut vol, &mut model, changes);
            let now: Vec<Item> = model.values().cloned().collect();
            prop_assert_eq!(all(vol.writer(), &vol.root()).unwrap(), now.clone());
            check_history(&vol, &history, true);

            vol.commit().unwrap();
            history.push((vol.committed_root(), now));
            check_history(&vol, &history, false);
            vol.cache().clear();
            check_history(&vol, &history, false);
        }
    }
}

/// Rewrite every item of a tree, commit after commit, until the blocks of the first root
/// are reused: reads through it stay exact for as long as the blocks are guaranteed, then
/// fail as stale, through the writer first (its dirty blocks) and then through the cache
/// (once written) — and never return other data.
#[test]
fn reused_blocks_make_old_roots_stale_never_wrong() {
    let mut vol = volume();
    let mut model = Model::new();
    let rewrite = |round: u8| -> Vec<Change> {
        (0..600)
            .map(|k| Change::Put(k, u64::from(round), 0, 40))
            .collect()
    };
    apply(&mut vol, &mut model, &rewrite(0));
    vol.commit().unwrap();
    let old_root = vol.committed_root();
    let old = all(&**vol.cache(), &old_root).unwrap();
    assert!(old.len() > 600 && btree::verify(&**vol.cache(), &old_root).unwrap().height >= 3);

    // Count stale and exact lookups of each key through the old root.
    let lookups = |rd: &dyn BlockRead| -> usize {
        let mut stale = 0;
        for it in &old {
            match btree::lookup(rd, &old_root, &it.key) {
                Ok(got) => assert_eq!(got.as_ref(), Some(it)),
                Err(BtreeError::Block(BlockError::Stale { .. })) => stale += 1,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        stale
    };

    // The next transaction frees the old root's blocks; they stay intact.
    apply(&mut vol, &mut model, &rewrite(1));
    assert_eq!(lookups(&**vol.cache()) + lookups(vol.writer()), 0);
    vol.commit().unwrap();
    vol.cache().clear();
    assert_eq!(lookups(&**vol.cache()) + lookups(vol.writer()), 0);

    // The one after reuses them: dirty in its writer, still intact on the device.
    apply(&mut vol, &mut model, &rewrite(2));
    assert_eq!(lookups(&**vol.cache()), 0);
    assert!(
        lookups(vol.writer()) > 0,
        "the transaction did not reuse the old tree's blocks"
    );
    assert!(exact_or_stale(vol.writer(), &old_root, &old));

    // Once written, they are stale through the cache too, cached or read from the device.
    vol.commit().unwrap();
    let cached = lookups(&**vol.cache());
    vol.cache().clear();
    let from_device = lookups(&**vol.cache());
    assert!(
        cached > 0 && from_device > 0,
        "later commits never reused the old tree's blocks ({cached}, {from_device})"
    );
    assert!(exact_or_stale(&**vol.cache(), &old_root, &old));
}
