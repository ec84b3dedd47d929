//! Damaged metadata never panics a reader, and every read path that touches the damage
//! returns an error:
//! - every byte of every block of a tree flipped in turn (the checksum catches it);
//! - bytes changed and the block re-sealed so its header verifies (contents validation,
//!   levels and key ranges catch what they can; nothing panics or hangs);
//! - targeted structural damage: bad item offsets, keys out of order, impossible levels,
//!   references to the wrong block or to a block of the wrong level, a block referenced
//!   twice.

// Tests fail loudly: unwrapping in their helpers is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use scoutfs_core::alloc::FreeSet;
use scoutfs_core::block::{seal_block, BlockCache, BlockError, BlockWriter, Geometry};
use scoutfs_core::btree::{self, BtreeError, FreeProgress, Item, TreeTxn};
use scoutfs_core::device::MemDevice;
use scoutfs_core::format::{BlockRef, BtreeRoot, Key, RawBlockRef};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;
use zerocopy::IntoBytes;

const BS: usize = 512;
const FIRST: u64 = 8;
const TOTAL: u64 = 4096;
const FSID: u64 = 0xfeed;

fn geo() -> Geometry {
    Geometry {
        block_size: BS,
        fsid: FSID,
        first_blkno: FIRST,
        total_blocks: TOTAL,
    }
}

fn key(i: u64) -> Key {
    Key::new(16, i, 1, i ^ 0x55, 0, 0)
}

/// A committed tree of `n` items; returns the device, the root and its items.
fn build(n: u64) -> (Arc<MemDevice>, BtreeRoot, Vec<Item>) {
    let dev = Arc::new(MemDevice::new(TOTAL * BS as u64));
    let cache = Arc::new(BlockCache::new(dev.clone(), geo(), 1 << 20));
    let mut alloc = FreeSet::from_used(FIRST, TOTAL, []);
    let mut wri = BlockWriter::new(cache.clone(), 1);
    let mut root = BtreeRoot::EMPTY;
    {
        let mut t = TreeTxn {
            wri: &mut wri,
            alloc: &mut alloc,
        };
        for i in 0..n {
            let v = vec![i as u8; (i % 50) as usize];
            t.insert_item(&mut root, &key(i), i, 0, &v).unwrap();
        }
    }
    wri.write_all().unwrap();
    let items = btree::items(&*cache, &root, &Key::MIN, &Key::MAX).unwrap();
    assert_eq!(items.len() as u64, n);
    (dev, root, items)
}

/// Every block of the tree: (reference, first key it covers, last key it covers, level).
fn blocks(dev: &Arc<MemDevice>, root: &BtreeRoot) -> Vec<(BlockRef, Key, Key, u8)> {
    let cache = BlockCache::new(dev.clone(), geo(), 1 << 20);
    let mut out = Vec::new();
    btree::walk_blocks(&cache, root, &mut |b| {
        out.push((b.blk, b.start, b.end, b.level));
        Ok(())
    })
    .unwrap();
    out
}

/// What every read path returned.
#[derive(Debug)]
struct Outcome {
    lookups: Vec<btree::Result<Option<Item>>>,
    scan: btree::Result<Vec<Item>>,
    scan_rev: btree::Result<Vec<Item>>,
    next_prev: Vec<btree::Result<Option<Item>>>,
    parents: Vec<btree::Result<btree::Parent>>,
    walk: btree::Result<()>,
    verify: btree::Result<btree::TreeStats>,
    free: btree::Result<FreeProgress>,
    tolerant: Tolerant,
}

/// What `walk_tolerant` saw: blocks visited and the blocks it reported faults at (a
/// block entered twice counts as a fault, as `walk_blocks` has it).
#[derive(Debug, Default)]
struct Tolerant {
    seen: std::collections::HashSet<u64>,
    visited: usize,
    faults: Vec<u64>,
}

impl btree::BlockVisitor for Tolerant {
    fn enter(&mut self, r: BlockRef, _level: u8) -> bool {
        if !self.seen.insert(r.blkno) {
            self.faults.push(r.blkno);
            return false;
        }
        true
    }
    fn block(&mut self, _b: &btree::BlockView<'_>) {
        self.visited += 1;
    }
    fn fault(&mut self, r: BlockRef, _e: BtreeError) {
        self.faults.push(r.blkno);
    }
}

/// Run every read path over the tree on `dev` through a fresh cache.
fn read_all(dev: &Arc<MemDevice>, root: &BtreeRoot, n: u64) -> Outcome {
    let cache = Arc::new(BlockCache::new(dev.clone(), geo(), 1 << 20));
    let lookups = (0..n)
        .map(|i| btree::lookup(&*cache, root, &key(i)))
        .collect();
    let scan = btree::items(&*cache, root, &Key::MIN, &Key::MAX);
    let mut rev = Vec::new();
    let scan_rev = btree::scan_rev(&*cache, root, &Key::MIN, &Key::MAX, |it| {
        rev.push(it.to_item());
        ControlFlow::Continue(())
    })
    .map(|()| rev);
    let next_prev = (0..n)
        .step_by(17)
        .flat_map(|i| {
            [
                btree::next(&*cache, root, &key(i)),
                btree::prev(&*cache, root, &key(i)),
            ]
        })
        .collect();
    let parents = (0..n)
        .step_by(29)
        .map(|i| btree::get_parent(&*cache, root, &key(i)))
        .collect();
    let walk = btree::walk_blocks(&*cache, root, &mut |_| Ok(()));
    let verify = btree::verify(&*cache, root);
    let mut tolerant = Tolerant::default();
    btree::walk_tolerant(&*cache, root, &mut tolerant);
    // Free the whole tree into a scratch allocator, a few blocks at a time.
    let mut alloc = FreeSet::from_used(FIRST, TOTAL, 0..TOTAL);
    let mut wri = BlockWriter::new(cache.clone(), 2);
    let mut t = TreeTxn {
        wri: &mut wri,
        alloc: &mut alloc,
    };
    let mut from = Key::MIN;
    let free = loop {
        match btree::free_blocks(&mut t, root, &from, 3) {
            Ok(FreeProgress::More { next, .. }) => from = next,
            other => break other,
        }
    };
    Outcome {
        lookups,
        scan,
        scan_rev,
        next_prev,
        parents,
        walk,
        verify,
        free,
        tolerant,
    }
}

fn flip(dev: &MemDevice, at: usize, mask: u8, reseal: Option<u64>) {
    dev.with_bytes_mut(|b| {
        b[at] ^= mask;
        if let Some(blkno) = reseal {
            let s = (blkno as usize) * BS;
            seal_block(&mut b[s..s + BS]);
        }
    });
}

#[test]
fn every_flipped_byte_of_every_block_is_an_error_on_every_path_through_it() {
    let n = 160;
    let (dev, root, items) = build(n);
    let blks = blocks(&dev, &root);
    assert!(
        blks.iter().any(|b| b.3 >= 2),
        "the tree has at least three levels"
    );
    let clean = read_all(&dev, &root, n);
    assert_eq!(clean.scan.as_ref().unwrap(), &items);
    assert!(clean.verify.is_ok() && clean.walk.is_ok() && clean.free.is_ok());

    let mut cases = 0;
    for &(r, start, end, level) in &blks {
        for byte in 0..BS {
            let at = r.blkno as usize * BS + byte;
            flip(&dev, at, 0xff, None);
            let o = read_all(&dev, &root, n);
            flip(&dev, at, 0xff, None);
            cases += 1;
            let ctx = format!("block {} byte {byte}", r.blkno);
            // Paths that visit every block fail.
            assert!(o.scan.is_err(), "{ctx}: scan");
            assert!(o.scan_rev.is_err(), "{ctx}: scan_rev");
            assert!(o.walk.is_err(), "{ctx}: walk_blocks");
            assert!(o.verify.is_err(), "{ctx}: verify");
            // The tolerant walk reports the damaged block and visits every block but
            // the damaged one and those below it.
            assert_eq!(o.tolerant.faults, vec![r.blkno], "{ctx}: walk_tolerant");
            let below = blks
                .iter()
                .filter(|b| b.0 == r || (b.3 < level && b.1 >= start && b.2 <= end))
                .count();
            assert_eq!(o.tolerant.visited, blks.len() - below, "{ctx}");
            // Lookups through the damaged block fail; the others are right.
            for (i, got) in o.lookups.iter().enumerate() {
                let k = key(i as u64);
                if (start..=end).contains(&k) {
                    assert!(
                        matches!(got, Err(BtreeError::Block(BlockError::Stale { .. }))),
                        "{ctx}: lookup {i} gave {got:?}"
                    );
                } else {
                    assert_eq!(got.as_ref().unwrap().as_ref(), Some(&items[i]), "{ctx}");
                }
            }
            // next/prev and get_parent either fail or give the undamaged answer.
            for (got, want) in o.next_prev.iter().zip(&clean.next_prev) {
                if let Ok(got) = got {
                    assert_eq!(got, want.as_ref().unwrap(), "{ctx}: next/prev");
                }
            }
            for (got, want) in o.parents.iter().zip(&clean.parents) {
                if let Ok(got) = got {
                    assert_eq!(got, want.as_ref().unwrap(), "{ctx}: get_parent");
                }
            }
            // free_blocks reads only parents: it fails exactly when a parent is damaged.
            let is_parent = blks.iter().any(|b| b.0 == r && b.3 > 0);
            assert_eq!(
                o.free.is_err(),
                is_parent,
                "{ctx}: free_blocks {:?}",
                o.free
            );
        }
    }
    assert_eq!(cases, blks.len() * BS);
}

/// Damage behind a valid checksum: every path returns (Ok or Err) without panicking or
/// hanging, whatever was changed, and every change to the block header (magic, fsid, seq,
/// blkno, item count, level, flags, heap start, dead bytes) is detected. Changes to value
/// bytes, item seqs, free space or key bytes that keep the order are legal contents.
#[test]
fn resealed_damage_never_panics_or_hangs() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let n = 120;
        let (dev, root, _) = build(n);
        let blks = blocks(&dev, &root);
        let (mut cases, mut detected) = (0usize, 0usize);
        let mut missed_header = Vec::new();
        for &(r, ..) in &blks {
            let base = r.blkno as usize * BS;
            let before = dev.with_bytes_mut(|b| b[base..base + BS].to_vec());
            for byte in 4..BS {
                for mask in [0xffu8, 0x01] {
                    flip(&dev, base + byte, mask, Some(r.blkno));
                    let o = read_all(&dev, &root, n);
                    dev.with_bytes_mut(|b| b[base..base + BS].copy_from_slice(&before));
                    cases += 1;
                    // The tolerant walk finds a fault exactly when verify fails.
                    assert_eq!(
                        o.verify.is_err(),
                        !o.tolerant.faults.is_empty(),
                        "block {} byte {byte} mask {mask:#x}: {:?} vs {:?}",
                        r.blkno,
                        o.verify,
                        o.tolerant.faults
                    );
                    if o.verify.is_err() {
                        detected += 1;
                    } else if byte < 44 {
                        missed_header.push((r.blkno, byte, mask));
                    }
                    // Whatever passes the whole-tree check reads as many items as it counts.
                    if let (Ok(st), Ok(items)) = (&o.verify, &o.scan) {
                        assert_eq!(st.items, items.len());
                    }
                }
            }
        }
        tx.send((cases, detected, missed_header)).unwrap();
    });
    let (cases, detected, missed) = rx
        .recv_timeout(Duration::from_secs(300))
        .expect("reads of resealed damage finished (no hang, no panic)");
    assert!(missed.is_empty(), "header changes not detected: {missed:?}");
    eprintln!("{detected} of {cases} resealed single-byte changes detected");
}

/// Rewrite block `blkno` with `f` and re-seal it.
fn edit(dev: &MemDevice, blkno: u64, f: impl FnOnce(&mut [u8])) {
    dev.with_bytes_mut(|b| {
        let s = blkno as usize * BS;
        f(&mut b[s..s + BS]);
        seal_block(&mut b[s..s + BS]);
    });
}

fn rd16(b: &[u8], off: usize) -> usize {
    u16::from_le_bytes([b[off], b[off + 1]]) as usize
}

fn expect_corrupt(dev: &Arc<MemDevice>, root: &BtreeRoot, n: u64, what: &str) {
    let o = read_all(dev, root, n);
    assert!(o.verify.is_err(), "{what}: verify passed");
    assert!(o.walk.is_err(), "{what}: walk passed");
    assert!(o.scan.is_err(), "{what}: scan passed");
    assert!(
        o.lookups.iter().any(|l| l.is_err()),
        "{what}: every lookup passed"
    );
    assert!(
        !o.tolerant.faults.is_empty(),
        "{what}: walk_tolerant passed"
    );
}

#[test]
fn structural_damage_is_reported() {
    let n = 200;
    let (dev, root, _) = build(n);
    let blks = blocks(&dev, &root);
    let leaf = blks.iter().find(|b| b.3 == 0).unwrap().0;
    let leaf2 = blks.iter().filter(|b| b.3 == 0).nth(1).unwrap().0;
    let parent = blks.iter().find(|b| b.3 == 1).unwrap().0;
    let grand = blks.iter().find(|b| b.3 == 2).unwrap().0;
    let pristine = dev.snapshot();
    let reset = || dev.with_bytes_mut(|b| b.copy_from_slice(&pristine));

    // An item offset beyond the block.
    edit(&dev, leaf.blkno, |b| {
        b[48..50].copy_from_slice(&0xfff0u16.to_le_bytes())
    });
    expect_corrupt(&dev, &root, n, "offset out of range");
    reset();

    // Keys out of order: swap the first two offsets.
    edit(&dev, leaf.blkno, |b| {
        let (a, c) = (rd16(b, 48), rd16(b, 50));
        b[48..50].copy_from_slice(&(c as u16).to_le_bytes());
        b[50..52].copy_from_slice(&(a as u16).to_le_bytes());
    });
    expect_corrupt(&dev, &root, n, "keys out of order");
    reset();

    // An impossible level, and a level that does not fit the block's place.
    edit(&dev, leaf.blkno, |b| b[34] = 200);
    expect_corrupt(&dev, &root, n, "impossible level");
    reset();
    edit(&dev, leaf.blkno, |b| b[34] = 1);
    expect_corrupt(&dev, &root, n, "wrong level");
    reset();

    // A parent item whose child is a block of the wrong level (the grandparent points
    // straight at a leaf, with the leaf's true seq).
    edit(&dev, grand.blkno, |b| {
        let off = rd16(b, 48) + 48;
        b[off..off + 16].copy_from_slice(RawBlockRef::from(leaf).as_bytes());
    });
    expect_corrupt(&dev, &root, n, "child of the wrong level");
    reset();

    // A reference to the wrong block: the seq of one leaf with the blkno of another.
    edit(&dev, parent.blkno, |b| {
        let off = rd16(b, 48) + 48;
        let wrong = BlockRef {
            blkno: leaf2.blkno,
            seq: leaf.seq,
        };
        b[off..off + 16].copy_from_slice(RawBlockRef::from(wrong).as_bytes());
    });
    let o = read_all(&dev, &root, n);
    assert!(matches!(
        o.verify,
        Err(BtreeError::Block(BlockError::Stale { .. }))
    ));
    reset();

    // A block referenced twice: a parent's second child points at its first child.
    edit(&dev, parent.blkno, |b| {
        let first = b[rd16(b, 48) + 48..][..16].to_vec();
        let off = rd16(b, 50) + 48;
        b[off..off + 16].copy_from_slice(&first);
    });
    expect_corrupt(&dev, &root, n, "block referenced twice");
    reset();

    // A root whose height does not match its block, and a height beyond the maximum.
    let tall = BtreeRoot {
        height: root.height + 1,
        ..root
    };
    assert!(btree::verify(&BlockCache::new(dev.clone(), geo(), 1 << 20), &tall).is_err());
    let absurd = BtreeRoot {
        height: 200,
        ..root
    };
    let o = read_all(&dev, &absurd, n);
    assert!(o.verify.is_err() && o.scan.is_err() && o.free.is_err());
    assert!(o.lookups.iter().all(|l| l.is_err()));
    reset();
    assert!(read_all(&dev, &root, n).verify.is_ok());
}
