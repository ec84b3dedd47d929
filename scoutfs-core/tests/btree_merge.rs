#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Merging trees against a model: the merge cursor resolves keys across trees (greatest
//! seq wins, deletions hide, deltas sum), and merging into a destination -- whole, or a
//! subtree at a time with splices and rebalances in between, stopping at small dirty
//! limits -- gives the model's result.

mod common;

use common::proptest_cases;
use proptest::prelude::*;
use scoutfs_core::alloc::FreeSet;
use scoutfs_core::block::BlockWriter;
use scoutfs_core::btree::{self, Item, MergeCursor, MergeEnd, MergeLimits, TreeTxn};
use scoutfs_core::format::{
    BtreeRoot, Key, BTREE_HEADER_SIZE, ITEM_FLAG_DELETION, ITEM_FLAG_DELTA, ITEM_HEADER_SIZE,
};
use std::collections::BTreeMap;

const BS: usize = 512;
const BLOCKS: u64 = 1 << 15;

fn key(k: u64) -> Key {
    Key::new(16, k, 1, 0, 0, 0)
}

/// An input version: key number, seq, kind (0 value, 1 deletion, 2 delta), value length.
#[derive(Clone, Debug)]
struct In {
    k: u64,
    seq: u64,
    kind: u8,
    len: usize,
}

fn item(i: &In) -> Item {
    let (flags, val) = match i.kind {
        1 => (ITEM_FLAG_DELETION, vec![]),
        2 => (
            ITEM_FLAG_DELTA,
            ((i.seq % 7) as i64 - 3).to_le_bytes().to_vec(),
        ),
        _ => (0, vec![(i.seq % 251) as u8; i.len]),
    };
    Item {
        key: key(i.k),
        seq: i.seq,
        flags,
        val,
    }
}

struct World {
    wri: BlockWriter,
    alloc: FreeSet,
}

impl World {
    fn new() -> World {
        let (_, _, cache) = common::raw_cache(BS, 1, BLOCKS, 0x3e, 8 << 20);
        World {
            wri: BlockWriter::new(cache, 5),
            alloc: FreeSet::from_used(1, BLOCKS, []),
        }
    }

    fn txn(&mut self) -> TreeTxn<'_> {
        TreeTxn {
            wri: &mut self.wri,
            alloc: &mut self.alloc,
        }
    }

    fn tree(&mut self, items: &[Item]) -> BtreeRoot {
        let mut root = BtreeRoot::EMPTY;
        let mut t = self.txn();
        for it in items {
            t.force_item(&mut root, &it.key, it.seq, it.flags, &it.val)
                .unwrap();
        }
        root
    }

    fn contents(&self, root: &BtreeRoot) -> BTreeMap<Key, (u64, u8, Vec<u8>)> {
        self.contents_in(root, Key::MIN, Key::MAX)
    }

    /// The items of a tree (or of a subtree covering `lo..=hi`) in `lo..=hi`.
    fn contents_in(&self, root: &BtreeRoot, lo: Key, hi: Key) -> BTreeMap<Key, (u64, u8, Vec<u8>)> {
        btree::items(&self.wri, root, &lo, &hi)
            .unwrap()
            .into_iter()
            .map(|it| (it.key, (it.seq, it.flags, it.val)))
            .collect()
    }
}

/// Inputs: distinct seqs (as log trees have), each key at most once per tree, the seqs
/// shuffled across the trees (a tree's versions may be older or newer than another's).
fn inputs() -> impl Strategy<Value = Vec<Vec<In>>> {
    (
        prop::collection::vec(
            prop::collection::btree_map(0..300u64, (0..3u8, 0..60usize), 0..120),
            1..6,
        ),
        any::<u64>(),
    )
        .prop_map(|(trees, mut rng)| {
            let n: usize = trees.iter().map(|t| t.len()).sum();
            let mut seqs: Vec<u64> = (0..n as u64).map(|i| 1000 + 2 * i).collect();
            for i in (1..seqs.len()).rev() {
                let j = (scoutfs_core::block::splitmix64(&mut rng) % (i as u64 + 1)) as usize;
                seqs.swap(i, j);
            }
            let mut seqs = seqs.into_iter();
            trees
                .into_iter()
                .map(|m| {
                    m.into_iter()
                        .map(|(k, (kind, len))| In {
                            k,
                            seq: seqs.next().unwrap_or(0),
                            kind,
                            len,
                        })
                        .collect()
                })
                .collect()
        })
}

/// A key's resolved state in the model: its newest plain value or deletion, and the
/// deltas after it in seq order summed (`reset`: they follow a plain value or deletion).
#[derive(Clone, Debug, PartialEq)]
enum State {
    Plain(u64, Vec<u8>),
    Deleted(u64),
    Total { seq: u64, sum: i64, reset: bool },
}

fn total(v: &[u8]) -> i64 {
    i64::from_le_bytes(v.get(..8).and_then(|s| s.try_into().ok()).unwrap_or([0; 8]))
}

/// The model of resolving, written out rather than folded: per key, sort the versions by
/// seq; the last plain value or deletion stands, and the deltas after it sum.
fn resolve(inputs: &[Vec<In>]) -> BTreeMap<Key, State> {
    let mut by_key: BTreeMap<Key, Vec<Item>> = BTreeMap::new();
    for it in inputs.iter().flatten().map(item) {
        by_key.entry(it.key).or_default().push(it);
    }
    by_key
        .into_iter()
        .map(|(k, mut vs)| {
            vs.sort_by_key(|it| it.seq);
            let last = vs.iter().rposition(|it| it.flags & ITEM_FLAG_DELTA == 0);
            let after = &vs[last.map_or(0, |p| p + 1)..];
            let top = vs.last().map_or(0, |it| it.seq);
            let st = if after.is_empty() {
                let it = &vs[last.unwrap_or(0)];
                if it.flags & ITEM_FLAG_DELETION != 0 {
                    State::Deleted(it.seq)
                } else {
                    State::Plain(it.seq, it.val.clone())
                }
            } else {
                State::Total {
                    seq: top,
                    sum: after.iter().map(|it| total(&it.val)).sum(),
                    reset: last.is_some(),
                }
            };
            (k, st)
        })
        .collect()
}

/// A resolved state as the merge cursor returns it.
fn as_item(k: Key, st: &State) -> Item {
    match st {
        State::Plain(seq, v) => Item {
            key: k,
            seq: *seq,
            flags: 0,
            val: v.clone(),
        },
        State::Deleted(seq) => Item {
            key: k,
            seq: *seq,
            flags: ITEM_FLAG_DELETION,
            val: vec![],
        },
        State::Total { seq, sum, reset } => Item {
            key: k,
            seq: *seq,
            flags: ITEM_FLAG_DELTA | if *reset { btree::ITEM_FLAG_RESET } else { 0 },
            val: sum.to_le_bytes().to_vec(),
        },
    }
}

/// The model of applying resolved states to a destination (whose versions are older):
/// a deletion deletes, a total adds to a stored total unless it follows a deletion or a
/// plain value, and a total of zero is not kept.
fn apply(dest: &mut BTreeMap<Key, (u64, u8, Vec<u8>)>, resolved: &BTreeMap<Key, State>) {
    for (k, st) in resolved {
        match st {
            State::Deleted(_) => {
                dest.remove(k);
            }
            State::Plain(seq, v) => {
                dest.insert(*k, (*seq, 0, v.clone()));
            }
            State::Total { seq, sum, reset } => {
                let base = match dest.get(k) {
                    Some((_, fl, v)) if fl & ITEM_FLAG_DELTA != 0 && !reset => total(v),
                    _ => 0,
                };
                let t = base.wrapping_add(*sum);
                if t == 0 {
                    dest.remove(k);
                } else {
                    dest.insert(*k, (*seq, ITEM_FLAG_DELTA, t.to_le_bytes().to_vec()));
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(64)))]

    #[test]
    fn merge_cursor_resolves_like_the_model(ins in inputs(), a in 0..320u64, b in 0..320u64) {
        let mut w = World::new();
        let roots: Vec<BtreeRoot> = ins
            .iter()
            .map(|t| w.tree(&t.iter().map(item).collect::<Vec<_>>()))
            .collect();
        let (lo, hi) = (a.min(b), a.max(b));
        let want: Vec<Item> = resolve(&ins)
            .iter()
            .filter(|(k, _)| (key(lo)..=key(hi)).contains(*k))
            .map(|(k, st)| as_item(*k, st))
            .collect();
        let mut c = MergeCursor::new(&roots, key(lo), key(hi));
        let mut got = Vec::new();
        while let Some(it) = c.next_item(&w.wri).unwrap() {
            got.push(it);
        }
        prop_assert_eq!(got, want);
    }

    #[test]
    fn merging_subtree_by_subtree_gives_the_model(
        ins in inputs(),
        dest_n in 0..600u64,
        dirty in 1..12usize,
    ) {
        let mut w = World::new();
        // The destination: older items (seqs below every input's).
        let dest_items: Vec<Item> = (0..dest_n)
            .map(|i| {
                let k = i * 7 % 400;
                let delta = k % 5 == 0;
                Item {
                    key: key(k),
                    seq: 1 + i,
                    flags: if delta { ITEM_FLAG_DELTA } else { 0 },
                    val: if delta { 2i64.to_le_bytes().to_vec() } else { vec![k as u8; (k % 60) as usize] },
                }
            })
            .collect();
        let mut root = w.tree(&dest_items);
        let mut model = w.contents(&root);
        let roots: Vec<BtreeRoot> = ins
            .iter()
            .map(|t| w.tree(&t.iter().map(item).collect::<Vec<_>>()))
            .collect();
        apply(&mut model, &resolve(&ins));
        // Everything so far is committed: the merge copies the blocks it changes.
        w.wri.write_all().unwrap();
        w.alloc.commit_done();

        merge_all(&mut w, &mut root, &roots, dirty);
        if !root.is_empty() {
            btree::verify(&w.wri, &root).unwrap();
        }
        prop_assert_eq!(w.contents(&root), model);
    }
}

/// What [`merge_all`] went through.
#[derive(Debug, Default)]
struct Rounds {
    rounds: usize,
    remains: usize,
    subtree_rounds: usize,
}

/// The log merge's loop: take the subtree covering the next key, merge into it up to the
/// dirty limit, splice it back, rebalance, continue from the remainder.
fn merge_all(w: &mut World, root: &mut BtreeRoot, roots: &[BtreeRoot], dirty: usize) -> Rounds {
    let mut st = Rounds::default();
    let mut next = Key::MIN;
    loop {
        st.rounds += 1;
        assert!(st.rounds < 10_000, "no progress");
        let p = btree::get_parent(&w.wri, root, &next).unwrap();
        let subtree = root.height > 2;
        st.subtree_rounds += subtree as usize;
        let mut sub = p.subtree;
        let end = p.end;
        let mut cur = MergeCursor::new(roots, next, end);
        let limits = MergeLimits {
            dirty_blocks: dirty,
            alloc_low: 0,
            subtree,
            per_item_descent: false,
        };
        let res = {
            let World { wri, alloc } = &mut *w;
            // The inputs are never changed here, so they can be read ahead.
            let mut pending: Vec<Item> = Vec::new();
            while let Some(it) = cur.next_item(&*wri).unwrap() {
                pending.push(it);
            }
            let mut iter = pending.into_iter();
            let mut t = TreeTxn { wri, alloc };
            t.merge_items(&mut sub, limits, &mut || Ok(iter.next()))
                .unwrap()
        };
        let mut t = w.txn();
        t.set_parent(root, &next, sub).unwrap();
        t.rebalance(root, &next).unwrap();
        match res {
            MergeEnd::Remain(k) => {
                st.remains += 1;
                next = k
            }
            MergeEnd::Done => match end.next() {
                Some(k) if end != Key::MAX => next = k,
                _ => break,
            },
        }
    }
    st
}

/// A deep destination and small dirty limits: many subtree rounds and remainders.
#[test]
fn a_deep_tree_merges_in_many_subtree_rounds() {
    let mut w = World::new();
    let dest: Vec<Item> = (0..3000u64)
        .map(|k| Item {
            key: key(k * 3),
            seq: 1 + k,
            flags: 0,
            val: vec![1; 40],
        })
        .collect();
    let mut root = w.tree(&dest);
    let mut model = w.contents(&root);
    let ins: Vec<Vec<In>> = (0..4u64)
        .map(|t| {
            (0..400u64)
                .map(|i| {
                    let k = (i * 23 + t * 7) % 9000;
                    let inp = In {
                        k,
                        seq: 10_000 + t * 1000 + i,
                        kind: ((i + t) % 3) as u8,
                        len: (i % 60) as usize,
                    };
                    (k, inp)
                })
                .collect::<BTreeMap<u64, In>>()
                .into_values()
                .collect()
        })
        .collect();
    let roots: Vec<BtreeRoot> = ins
        .iter()
        .map(|t| w.tree(&t.iter().map(item).collect::<Vec<_>>()))
        .collect();
    apply(&mut model, &resolve(&ins));
    w.wri.write_all().unwrap();
    w.alloc.commit_done();
    assert!(root.height >= 3, "height {}", root.height);
    let st = merge_all(&mut w, &mut root, &roots, 4);
    eprintln!("{st:?}, final height {}", root.height);
    assert!(st.subtree_rounds > 10, "{st:?}");
    assert!(st.remains > 10, "{st:?}");
    btree::verify(&w.wri, &root).unwrap();
    assert_eq!(w.contents(&root), model);
}

/// One merge of `roots`' items from `from` to the end of the subtree covering it, into a
/// copy of that subtree, as a mount does it: leaf runs or one descent per item.
/// Returns the merged subtree, how the merge ended, and the subtree's range.
fn merge_one_request(
    w: &mut World,
    root: &BtreeRoot,
    roots: &[BtreeRoot],
    from: Key,
    limits: MergeLimits,
) -> (BtreeRoot, MergeEnd, Key, Key) {
    let p = btree::get_parent(&w.wri, root, &from).unwrap();
    let mut sub = p.subtree;
    let mut cur = MergeCursor::new(roots, from, p.end);
    let mut t = w.txn();
    let end = t.merge_cursor(&mut sub, limits, &mut cur).unwrap();
    (sub, end, p.start, p.end)
}

/// A destination (older items, some deltas) and log trees, everything committed.
fn world_with(ins: &[Vec<In>], dest_n: u64) -> (World, BtreeRoot, Vec<BtreeRoot>) {
    let mut w = World::new();
    let dest_items: Vec<Item> = (0..dest_n)
        .map(|i| {
            let k = i * 7 % 400;
            let delta = k % 5 == 0;
            Item {
                key: key(k),
                seq: 1 + i,
                flags: if delta { ITEM_FLAG_DELTA } else { 0 },
                val: if delta {
                    2i64.to_le_bytes().to_vec()
                } else {
                    vec![k as u8; (k % 60) as usize]
                },
            }
        })
        .collect();
    let root = w.tree(&dest_items);
    let roots: Vec<BtreeRoot> = ins
        .iter()
        .map(|t| w.tree(&t.iter().map(item).collect::<Vec<_>>()))
        .collect();
    w.wri.write_all().unwrap();
    w.alloc.commit_done();
    (w, root, roots)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(proptest_cases(64)))]

    /// Leaf runs (one descent per leaf the items land in) against one descent per item:
    /// each stops with a remainder key (dirty limit, or in subtree mode a root that would
    /// have to change level) before which it applied exactly the model's items and after
    /// which nothing; subtrees keep their level; merges that run to the end agree.
    #[test]
    fn leaf_runs_agree_with_per_item_descents(
        ins in inputs(),
        dest_n in 0..600u64,
        from in 0..320u64,
        dirty in 1..40usize,
        unlimited in any::<bool>(),
    ) {
        let mut ends = Vec::new();
        for per_item_descent in [false, true] {
            let (mut w, mut root, roots) = world_with(&ins, dest_n);
            let subtree = root.height > 2;
            let limits = MergeLimits {
                dirty_blocks: if unlimited { usize::MAX } else { dirty },
                alloc_low: 0,
                subtree,
                per_item_descent,
            };
            let mut model = w.contents(&root);
            let (sub, end, lo, hi) = merge_one_request(&mut w, &root, &roots, key(from), limits);
            let stop = match end {
                MergeEnd::Done => None,
                MergeEnd::Remain(k) => {
                    prop_assert!(k >= key(from) && k <= hi, "remainder {k} outside the request");
                    Some(k)
                }
            };
            prop_assert!(!unlimited || subtree || stop.is_none(), "stopped without a limit");
            if subtree {
                prop_assert_eq!(sub.height, 2, "a subtree changed level");
            }
            // The model: the resolved items from `from` up to the remainder, applied.
            let resolved: BTreeMap<Key, State> = resolve(&ins)
                .into_iter()
                .filter(|(k, _)| *k >= key(from) && *k <= hi && stop.is_none_or(|s| *k < s))
                .collect();
            apply(&mut model, &resolved);
            let in_range: BTreeMap<Key, (u64, u8, Vec<u8>)> =
                model.range(lo..=hi).map(|(k, v)| (*k, v.clone())).collect();
            prop_assert_eq!(w.contents_in(&sub, lo, hi), in_range);
            // Spliced back, the tree verifies (before and after the splice's rebalance)
            // and holds the model.
            let mut t = w.txn();
            t.set_parent(&mut root, &key(from), sub).unwrap();
            if !root.is_empty() {
                btree::verify(&w.wri, &root).unwrap();
            }
            let mut t = w.txn();
            t.rebalance(&mut root, &key(from)).unwrap();
            if !root.is_empty() {
                btree::verify(&w.wri, &root).unwrap();
            }
            prop_assert_eq!(w.contents(&root), model);
            ends.push(end);
        }
        if ends.iter().all(|e| *e == MergeEnd::Done) {
            // Both ran to the end: checked against the same model above.
            prop_assert_eq!(ends[0], ends[1]);
        }
    }
}

/// Sorted items merged into an empty root leave leaves fuller than half (an append splits
/// off only the last quarter), none under the low water mark.
#[test]
fn sorted_merge_into_an_empty_root_fills_leaves() {
    let ins: Vec<Vec<In>> = (0..3u64)
        .map(|t| {
            (0..2000u64)
                .map(|i| In {
                    k: i * 3 + t,
                    seq: 10 + t * 10_000 + i,
                    kind: 0,
                    len: 20,
                })
                .collect()
        })
        .collect();
    for per_item_descent in [false, true] {
        let (mut w, mut root, roots) = world_with(&ins, 0);
        let limits = MergeLimits {
            dirty_blocks: usize::MAX,
            alloc_low: 0,
            subtree: false,
            per_item_descent,
        };
        let mut cur = MergeCursor::new(&roots, Key::MIN, Key::MAX);
        let end = w.txn().merge_cursor(&mut root, limits, &mut cur).unwrap();
        assert_eq!(end, MergeEnd::Done);
        let st = btree::verify(&w.wri, &root).unwrap();
        assert_eq!(st.items, 6000);
        let cap = BS - BTREE_HEADER_SIZE;
        assert!(st.min_payload >= cap / 4, "{st:?}");
        // Splits in the middle would leave 3 of these items in a leaf (45% full); appends
        // that split off the last quarter leave 4 (60%).
        let bytes = st.items * (ITEM_HEADER_SIZE + 20 + 2);
        assert!(bytes * 5 >= st.leaves * cap * 3, "{st:?}");
    }
}
