//! The cache of clean metadata blocks.
//!
//! Blocks are kept in shards (by block number), each a CLOCK ring under a read-write
//! lock: a hit takes the shard's read lock and sets a referenced bit, so concurrent readers
//! do not serialise; a miss reads and verifies the block outside any lock and then inserts
//! it, evicting unreferenced blocks until the shard is within its share of the bound.
//! The bound counts block bytes plus a fixed per-entry overhead and is never exceeded: a
//! block that does not fit in its shard is returned without being cached.

use super::{verify_block, BlockError, BlockGuard, BlockRead, Geometry, Result, Validator};
use crate::device::BlockDevice;
use crate::format::{BlockRef, MAGIC_SUPER};
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes charged per cached block beyond its data (map entry, ring slot, Arc header).
const ENTRY_OVERHEAD: usize = 96;
/// Most shards a cache splits into.
const MAX_SHARDS: usize = 16;

#[derive(Debug)]
struct Slot {
    blkno: u64,
    seq: u64,
    magic: u32,
    data: Arc<[u8]>,
    referenced: AtomicBool,
}

#[derive(Debug, Default)]
struct Shard {
    map: FxHashMap<u64, usize>,
    slots: Vec<Slot>,
    hand: usize,
    bytes: usize,
}

impl Shard {
    fn remove_at(&mut self, i: usize) {
        if i >= self.slots.len() {
            return;
        }
        let slot = self.slots.swap_remove(i);
        self.map.remove(&slot.blkno);
        self.bytes -= slot.data.len() + ENTRY_OVERHEAD;
        if let Some(moved) = self.slots.get(i) {
            self.map.insert(moved.blkno, i);
        }
    }

    /// Evict one block by the CLOCK rule; false when empty.
    fn evict_one(&mut self) -> bool {
        // Two sweeps clear every referenced bit, so this ends.
        for _ in 0..=2 * self.slots.len() {
            if self.slots.is_empty() {
                return false;
            }
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            if self.slots[self.hand]
                .referenced
                .swap(false, Ordering::Relaxed)
            {
                self.hand += 1;
                continue;
            }
            self.remove_at(self.hand);
            return true;
        }
        false
    }

    fn insert(&mut self, limit: usize, blkno: u64, seq: u64, magic: u32, data: Arc<[u8]>) {
        let need = data.len() + ENTRY_OVERHEAD;
        if let Some(&i) = self.map.get(&blkno) {
            self.remove_at(i);
        }
        if need > limit {
            return;
        }
        while self.bytes + need > limit {
            if !self.evict_one() {
                return;
            }
        }
        self.bytes += need;
        self.map.insert(blkno, self.slots.len());
        self.slots.push(Slot {
            blkno,
            seq,
            magic,
            data,
            referenced: AtomicBool::new(false),
        });
    }
}

/// Counters of cache activity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads served from memory.
    pub hits: u64,
    /// Reads that went to the device.
    pub misses: u64,
    /// Bytes charged against the bound now.
    pub bytes: usize,
    /// Blocks cached now.
    pub blocks: usize,
    /// The configured bound in bytes.
    pub limit: usize,
}

/// A bounded cache of verified, clean metadata blocks of one device.
#[derive(Debug)]
pub struct BlockCache {
    dev: Arc<dyn BlockDevice>,
    geo: Geometry,
    shards: Box<[RwLock<Shard>]>,
    shard_limit: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl BlockCache {
    /// A cache of the metadata blocks of `dev` holding at most `limit_bytes`.
    pub fn new(dev: Arc<dyn BlockDevice>, geo: Geometry, limit_bytes: usize) -> BlockCache {
        let per_block = geo.block_size + ENTRY_OVERHEAD;
        let nr = (limit_bytes / (64 * per_block)).clamp(1, MAX_SHARDS);
        BlockCache {
            dev,
            geo,
            shards: (0..nr).map(|_| RwLock::new(Shard::default())).collect(),
            shard_limit: limit_bytes / nr,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The device the cache reads.
    pub fn device(&self) -> &Arc<dyn BlockDevice> {
        &self.dev
    }

    /// The block geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geo
    }

    #[inline]
    fn shard(&self, blkno: u64) -> &RwLock<Shard> {
        // Consecutive blocks land in different shards.
        let i = (blkno.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize % self.shards.len();
        &self.shards[i]
    }

    /// Read the block `r` names, verifying it (and validating its contents with
    /// `validate`) if it has to come from the device.
    pub fn read(&self, r: BlockRef, magic: u32, validate: Validator) -> Result<Arc<[u8]>> {
        let shard = self.shard(r.blkno);
        {
            let s = shard.read();
            if let Some(&i) = s.map.get(&r.blkno) {
                let slot = &s.slots[i];
                if slot.seq == r.seq && slot.magic == magic {
                    if !slot.referenced.load(Ordering::Relaxed) {
                        slot.referenced.store(true, Ordering::Relaxed);
                    }
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(slot.data.clone());
                }
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let data = self.read_uncached(r, magic, validate)?;
        shard
            .write()
            .insert(self.shard_limit, r.blkno, r.seq, magic, data.clone());
        Ok(data)
    }

    /// Read and verify a block from the device without consulting or filling the cache.
    pub fn read_uncached(&self, r: BlockRef, magic: u32, validate: Validator) -> Result<Arc<[u8]>> {
        let off = self.geo.offset_of(r.blkno)?;
        let mut buf = vec![0u8; self.geo.block_size];
        self.dev.read_at(&mut buf, off)?;
        verify_block(&buf, r, magic, self.geo.fsid).map_err(|reason| BlockError::Stale {
            blkno: r.blkno,
            reason,
        })?;
        validate(&buf).map_err(|reason| BlockError::Corrupt {
            blkno: r.blkno,
            reason,
        })?;
        Ok(buf.into())
    }

    /// Put a block this process wrote into the cache.
    pub(crate) fn insert_written(&self, blkno: u64, seq: u64, magic: u32, data: Arc<[u8]>) {
        if magic == MAGIC_SUPER {
            return;
        }
        self.shard(blkno)
            .write()
            .insert(self.shard_limit, blkno, seq, magic, data);
    }

    /// Drop any cached copy of `blkno` (it is about to be rewritten, or was found stale).
    pub fn forget(&self, blkno: u64) {
        let mut s = self.shard(blkno).write();
        if let Some(&i) = s.map.get(&blkno) {
            s.remove_at(i);
        }
    }

    /// Drop every cached block.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            *shard.write() = Shard::default();
        }
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let (mut bytes, mut blocks) = (0, 0);
        for shard in self.shards.iter() {
            let s = shard.read();
            bytes += s.bytes;
            blocks += s.slots.len();
        }
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes,
            blocks,
            limit: self.shard_limit * self.shards.len(),
        }
    }
}

impl BlockRead for BlockCache {
    fn read_block(&self, r: BlockRef, magic: u32, validate: Validator) -> Result<BlockGuard<'_>> {
        self.read(r, magic, validate).map(BlockGuard::Clean)
    }

    fn block_size(&self) -> usize {
        self.geo.block_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::{no_validation, seal_block, StaleReason};
    use crate::device::MemDevice;
    use crate::format::{BlockHeader, MAGIC_BTREE};
    use zerocopy::IntoBytes;

    const BS: usize = 512;

    fn geo() -> Geometry {
        Geometry {
            block_size: BS,
            fsid: 7,
            first_blkno: 2,
            total_blocks: 1000,
        }
    }

    fn write_block(dev: &MemDevice, blkno: u64, seq: u64) {
        let mut b = vec![0u8; BS];
        let hdr = BlockHeader {
            crc: 0.into(),
            magic: MAGIC_BTREE.into(),
            fsid: 7.into(),
            seq: seq.into(),
            blkno: blkno.into(),
        };
        b[..32].copy_from_slice(hdr.as_bytes());
        b[100] = blkno as u8;
        seal_block(&mut b);
        dev.write_at(&b, blkno * BS as u64).unwrap();
    }

    #[test]
    fn verifies_and_caches() {
        let dev = Arc::new(MemDevice::new(1000 * BS as u64));
        for b in 2..50 {
            write_block(&dev, b, b * 10);
        }
        let cache = BlockCache::new(dev.clone(), geo(), 1 << 20);
        let r = BlockRef { blkno: 5, seq: 50 };
        assert_eq!(cache.read(r, MAGIC_BTREE, no_validation).unwrap()[100], 5);
        cache.read(r, MAGIC_BTREE, no_validation).unwrap();
        assert_eq!(cache.stats().hits, 1);
        assert_eq!(cache.stats().misses, 1);

        let bad_seq = BlockRef { blkno: 5, seq: 51 };
        assert!(matches!(
            cache.read(bad_seq, MAGIC_BTREE, no_validation),
            Err(BlockError::Stale {
                reason: StaleReason::Seq { .. },
                ..
            })
        ));
        let wrong_blk = BlockRef { blkno: 6, seq: 50 };
        assert!(matches!(
            cache.read(wrong_blk, MAGIC_BTREE, no_validation),
            Err(BlockError::Stale { .. })
        ));
        assert!(matches!(
            cache.read(r, MAGIC_SUPER, no_validation),
            Err(BlockError::Stale {
                reason: StaleReason::Magic { .. },
                ..
            })
        ));
        assert!(matches!(
            cache.read(BlockRef { blkno: 1, seq: 1 }, MAGIC_BTREE, no_validation),
            Err(BlockError::OutOfRange { .. })
        ));
        assert!(matches!(
            cache.read(
                BlockRef {
                    blkno: 5000,
                    seq: 1
                },
                MAGIC_BTREE,
                no_validation
            ),
            Err(BlockError::OutOfRange { .. })
        ));
        dev.with_bytes_mut(|b| b[7 * BS + 200] ^= 1);
        assert!(matches!(
            cache.read(BlockRef { blkno: 7, seq: 70 }, MAGIC_BTREE, no_validation),
            Err(BlockError::Stale {
                reason: StaleReason::Checksum { .. },
                ..
            })
        ));
    }

    #[test]
    fn stays_within_its_bound() {
        let dev = Arc::new(MemDevice::new(1000 * BS as u64));
        for b in 2..1000 {
            write_block(&dev, b, b + 1);
        }
        let limit = 20 * (BS + ENTRY_OVERHEAD);
        let cache = BlockCache::new(dev, geo(), limit);
        for round in 0..3u64 {
            for b in 2..1000u64 {
                let blk = (b * 7 + round) % 998 + 2;
                let data = cache
                    .read(
                        BlockRef {
                            blkno: blk,
                            seq: blk + 1,
                        },
                        MAGIC_BTREE,
                        no_validation,
                    )
                    .unwrap();
                assert_eq!(data[100], blk as u8);
                assert!(cache.stats().bytes <= limit);
            }
        }
        assert!(cache.stats().blocks > 0);
    }

    #[test]
    fn tiny_bound_caches_nothing_but_still_reads() {
        let dev = Arc::new(MemDevice::new(1000 * BS as u64));
        write_block(&dev, 3, 4);
        let cache = BlockCache::new(dev, geo(), 100);
        let r = BlockRef { blkno: 3, seq: 4 };
        cache.read(r, MAGIC_BTREE, no_validation).unwrap();
        cache.read(r, MAGIC_BTREE, no_validation).unwrap();
        assert_eq!(cache.stats().blocks, 0);
        assert_eq!(cache.stats().misses, 2);
    }
}
