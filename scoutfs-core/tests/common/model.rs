//! A model of what mounts committed through the log merge tests' keys: plain items,
//! deletions and totals, resolved in seq order as readers and the merge resolve them; and
//! a random workload that keeps it.

use super::{Rig, Rng};
use scoutfs_core::btree;
use scoutfs_core::client::Client;
use scoutfs_core::format::*;
use std::collections::BTreeMap;

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
