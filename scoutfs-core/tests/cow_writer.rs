//! The copy-on-write writer's promises: a transaction never reuses a block number it freed
//! and never overwrites a block the committed tree references.

// Tests fail loudly: unwrapping in their helpers is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use scoutfs_core::alloc::{AllocError, FreeSet, MetaAllocator};
use scoutfs_core::block::{BlockCache, BlockError, BlockWriter, Geometry, StaleReason};
use scoutfs_core::btree::{self, BtreeError, TreeTxn};
use scoutfs_core::device::{BlockDevice, MemDevice};
use scoutfs_core::format::{BtreeRoot, Key};
use std::collections::HashSet;
use std::sync::Arc;

/// Records, in order, every allocation (true) and free (false) of a transaction.
struct Recording {
    inner: FreeSet,
    events: Vec<(bool, u64)>,
}

impl MetaAllocator for Recording {
    fn alloc_meta(&mut self) -> Result<u64, AllocError> {
        let b = self.inner.alloc_meta()?;
        self.events.push((true, b));
        Ok(b)
    }
    fn free_meta(&mut self, blkno: u64) -> Result<(), AllocError> {
        self.events.push((false, blkno));
        self.inner.free_meta(blkno)
    }
}

fn key(i: u64) -> Key {
    Key::new(16, i, 1, 0, 0, 0)
}

#[test]
fn freed_blocks_are_not_reused_in_the_freeing_transaction() {
    const BS: usize = 512;
    let dev = Arc::new(MemDevice::new(4096 * BS as u64));
    let geo = Geometry {
        block_size: BS,
        fsid: 9,
        first_blkno: 4,
        total_blocks: 4096,
    };
    let cache = Arc::new(BlockCache::new(dev.clone(), geo, 1 << 20));
    let mut alloc = Recording {
        inner: FreeSet::from_used(4, 4096, []),
        events: vec![],
    };
    let mut root = BtreeRoot::EMPTY;
    let mut committed_blocks: HashSet<u64> = HashSet::new();
    let mut s = 3u64;
    for round in 0..6 {
        let mut wri = BlockWriter::new(cache.clone(), round);
        alloc.events.clear();
        {
            let mut t = TreeTxn {
                wri: &mut wri,
                alloc: &mut alloc,
            };
            for _ in 0..400 {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                let i = (s >> 40) % 500;
                if (s >> 20).is_multiple_of(3) {
                    let _ = t.delete(&mut root, &key(i));
                } else {
                    t.force(&mut root, &key(i), &[i as u8; 20]).unwrap();
                }
            }
        }
        let mut freed = HashSet::new();
        let mut allocated = HashSet::new();
        for &(is_alloc, b) in &alloc.events {
            if is_alloc {
                assert!(
                    !freed.contains(&b),
                    "round {round}: block {b} reused after being freed in the same transaction"
                );
                assert!(
                    allocated.insert(b),
                    "round {round}: block {b} allocated twice"
                );
                assert!(
                    !committed_blocks.contains(&b),
                    "round {round}: block {b} of the committed tree was allocated again"
                );
            } else {
                freed.insert(b);
            }
        }
        if round > 0 {
            assert!(
                alloc.events.iter().any(|e| !e.0),
                "the workload freed blocks"
            );
        }
        wri.write_all().unwrap();
        dev.flush().unwrap();
        alloc.inner.commit_done();
        committed_blocks.clear();
        btree::walk_blocks(&*cache, &root, &mut |b| {
            committed_blocks.insert(b.blk.blkno);
            Ok(())
        })
        .unwrap();
    }
}

/// A dirty block that the engine left inconsistent is refused at write time, so it can
/// never be committed.
#[test]
fn write_all_refuses_a_malformed_dirty_block() {
    const BS: usize = 512;
    let dev = Arc::new(MemDevice::new(1024 * BS as u64));
    let geo = Geometry {
        block_size: BS,
        fsid: 3,
        first_blkno: 4,
        total_blocks: 1024,
    };
    let cache = Arc::new(BlockCache::new(dev, geo, 1 << 20));
    let mut alloc = FreeSet::from_used(4, 1024, []);
    let mut wri = BlockWriter::new(cache, 1);
    let mut root = BtreeRoot::EMPTY;
    TreeTxn {
        wri: &mut wri,
        alloc: &mut alloc,
    }
    .insert(&mut root, &key(1), b"one")
    .unwrap();
    // Claim more items than the block holds.
    wri.get_mut(root.blk.blkno).unwrap()[32] = 200;
    match wri.write_all() {
        Err(scoutfs_core::block::BlockError::Corrupt { blkno, .. }) => {
            assert_eq!(blkno, root.blk.blkno)
        }
        other => panic!("expected a corrupt block error, got {other:?}"),
    }
}

/// A reference into an old tree whose block this transaction reused is stale, through the
/// writer as through the cache: a reader of an old root must learn that its root is out of
/// date, not meet an internal error.
#[test]
fn reading_a_reused_block_through_the_writer_is_stale() {
    const BS: usize = 512;
    let dev = Arc::new(MemDevice::new(4096 * BS as u64));
    let geo = Geometry {
        block_size: BS,
        fsid: 9,
        first_blkno: 4,
        total_blocks: 4096,
    };
    let cache = Arc::new(BlockCache::new(dev, geo, 1 << 20));
    let mut alloc = FreeSet::from_used(4, 4096, []);
    let mut root = BtreeRoot::EMPTY;
    let mut old = BtreeRoot::EMPTY;
    for round in 0..3u8 {
        let mut wri = BlockWriter::new(cache.clone(), u64::from(round));
        TreeTxn {
            wri: &mut wri,
            alloc: &mut alloc,
        }
        .force(&mut root, &key(1), &[round; 8])
        .unwrap();
        if round == 2 {
            // The block of the first commit's root was freed by the second and is dirty
            // again here, under another seq.
            assert!(wri.is_dirty(old.blk.blkno));
            let r = btree::lookup(&wri, &old, &key(1));
            assert!(
                matches!(
                    r,
                    Err(BtreeError::Block(BlockError::Stale {
                        reason: StaleReason::Seq { .. },
                        ..
                    }))
                ),
                "{r:?}"
            );
            let mut t = TreeTxn {
                wri: &mut wri,
                alloc: &mut alloc,
            };
            let r = t.force(&mut old, &key(2), &[9]);
            assert!(
                matches!(r, Err(BtreeError::Block(BlockError::Stale { .. }))),
                "{r:?}"
            );
        }
        wri.write_all().unwrap();
        alloc.commit_done();
        if round == 0 {
            old = root;
        }
    }
}
