//! The copy-on-write writer of one transaction.
//!
//! To change a block, a transaction *dirties* it: the writer allocates a new block number,
//! copies the block there, gives it a fresh random seq, and frees the old block number into
//! the allocator. The old block stays intact on the device (the stable super may still
//! reference it) and the allocator does not hand a freed block out again before a commit
//! has made the free durable. Blocks already dirty in this transaction are changed in place.
//!
//! At commit, [`BlockWriter::write_all`] validates every dirty block with the validator of
//! its kind (a block the engine built wrong is never committed), seals (crcs) it, and
//! writes the blocks in block-number order, coalescing neighbours into large writes. It
//! does not flush: the caller flushes, then writes the super, then flushes again.

use super::{
    seal_block, BlockCache, BlockError, BlockGuard, BlockRead, Geometry, Result, StaleReason,
    Validator,
};
use crate::alloc::MetaAllocator;
use crate::format::{BlockHeader, BlockRef};
use rustc_hash::FxHashMap;
use std::sync::Arc;
use zerocopy::{FromBytes, IntoBytes};

/// Largest single device write `write_all` issues.
const MAX_WRITE_BYTES: usize = 1 << 20;

/// What a call to [`BlockWriter::write_all`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Blocks written.
    pub blocks: usize,
    /// Device writes issued.
    pub writes: usize,
}

#[derive(Debug)]
struct Dirty {
    magic: u32,
    validate: Validator,
    data: Arc<[u8]>,
}

impl Dirty {
    /// Whether this is the incarnation `r` names. A reference into an older tree can name
    /// a block number that was freed since and is dirty again in this transaction: like a
    /// header mismatch on the device, that is [`BlockError::Stale`].
    fn check(&self, r: BlockRef, magic: u32) -> Result<()> {
        let (h, _) = BlockHeader::ref_from_prefix(&self.data)
            .map_err(|_| BlockError::Internal("dirty block smaller than its header"))?;
        let reason = if self.magic != magic {
            StaleReason::Magic {
                found: self.magic,
                expected: magic,
            }
        } else if h.seq.get() != r.seq {
            StaleReason::Seq {
                found: h.seq.get(),
                expected: r.seq,
            }
        } else {
            return Ok(());
        };
        Err(BlockError::Stale {
            blkno: r.blkno,
            reason,
        })
    }
}

/// The dirty blocks of one transaction.
#[derive(Debug)]
pub struct BlockWriter {
    cache: Arc<BlockCache>,
    geo: Geometry,
    dirty: FxHashMap<u64, Dirty>,
    seq_state: u64,
}

impl BlockWriter {
    /// A writer whose blocks will be read through and cached in `cache`. `seed` seeds the
    /// seqs given to new blocks; give every writer of a volume a different one.
    pub fn new(cache: Arc<BlockCache>, seed: u64) -> BlockWriter {
        let geo = *cache.geometry();
        BlockWriter {
            cache,
            geo,
            dirty: FxHashMap::default(),
            seq_state: seed ^ geo.fsid.rotate_left(17),
        }
    }

    /// The cache this writer reads through.
    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    /// Number of dirty blocks.
    pub fn dirty_blocks(&self) -> usize {
        self.dirty.len()
    }

    /// Bytes held by dirty blocks.
    pub fn dirty_bytes(&self) -> usize {
        self.dirty.len() * self.geo.block_size
    }

    /// Whether `blkno` is dirty in this writer.
    pub fn is_dirty(&self, blkno: u64) -> bool {
        self.dirty.contains_key(&blkno)
    }

    fn next_seq(&mut self) -> u64 {
        loop {
            let s = super::splitmix64(&mut self.seq_state);
            if s != 0 {
                return s;
            }
        }
    }

    fn header(&self, magic: u32, blkno: u64, seq: u64) -> BlockHeader {
        BlockHeader {
            crc: 0.into(),
            magic: magic.into(),
            fsid: self.geo.fsid.into(),
            seq: seq.into(),
            blkno: blkno.into(),
        }
    }

    /// A new zeroed block with only its header set; `validate` checks it before it is
    /// written.
    pub fn new_block(
        &mut self,
        alloc: &mut dyn MetaAllocator,
        magic: u32,
        validate: Validator,
    ) -> Result<BlockRef> {
        let blkno = alloc.alloc_meta()?;
        self.geo.offset_of(blkno)?;
        let seq = self.next_seq();
        let mut data = vec![0u8; self.geo.block_size];
        self.header(magic, blkno, seq)
            .write_to_prefix(&mut data)
            .map_err(|_| BlockError::Internal("block smaller than its header"))?;
        self.cache.forget(blkno);
        self.dirty.insert(
            blkno,
            Dirty {
                magic,
                validate,
                data: data.into(),
            },
        );
        Ok(BlockRef { blkno, seq })
    }

    /// Make the block `r` names writable in this transaction: if it is not dirty yet, copy
    /// it to a newly allocated block, free the old one and update `r`.
    pub fn dirty_ref(
        &mut self,
        alloc: &mut dyn MetaAllocator,
        r: &mut BlockRef,
        magic: u32,
        validate: Validator,
    ) -> Result<()> {
        if let Some(d) = self.dirty.get(&r.blkno) {
            return d.check(*r, magic);
        }
        let old = self.cache.read(*r, magic, validate)?;
        let blkno = alloc.alloc_meta()?;
        self.geo.offset_of(blkno)?;
        let seq = self.next_seq();
        let mut data: Arc<[u8]> = Arc::from(&old[..]);
        let buf = Arc::get_mut(&mut data).ok_or(BlockError::Internal("fresh block shared"))?;
        self.header(magic, blkno, seq)
            .write_to_prefix(buf)
            .map_err(|_| BlockError::Internal("block smaller than its header"))?;
        alloc.free_meta(r.blkno)?;
        self.cache.forget(blkno);
        self.dirty.insert(
            blkno,
            Dirty {
                magic,
                validate,
                data,
            },
        );
        *r = BlockRef { blkno, seq };
        Ok(())
    }

    /// The contents of a dirty block.
    pub fn get(&self, blkno: u64) -> Option<&[u8]> {
        self.dirty.get(&blkno).map(|d| &d.data[..])
    }

    /// The contents of a dirty block, writable.
    pub fn get_mut(&mut self, blkno: u64) -> Result<&mut [u8]> {
        self.dirty
            .get_mut(&blkno)
            .and_then(|d| Arc::get_mut(&mut d.data))
            .ok_or(BlockError::Internal("block is not dirty in this writer"))
    }

    /// Two different dirty blocks, writable at once.
    pub fn get_pair_mut(&mut self, a: u64, b: u64) -> Result<(&mut [u8], &mut [u8])> {
        if a == b {
            return Err(BlockError::Internal("pair of one block"));
        }
        let [x, y] = self.dirty.get_disjoint_mut([&a, &b]);
        match (
            x.and_then(|d| Arc::get_mut(&mut d.data)),
            y.and_then(|d| Arc::get_mut(&mut d.data)),
        ) {
            (Some(x), Some(y)) => Ok((x, y)),
            _ => Err(BlockError::Internal("block is not dirty in this writer")),
        }
    }

    /// Free the block `r` names: a dirty block is dropped, a clean one is left intact on
    /// the device. Either way its number goes back to the allocator.
    pub fn free_block(&mut self, alloc: &mut dyn MetaAllocator, r: BlockRef) -> Result<()> {
        self.dirty.remove(&r.blkno);
        alloc.free_meta(r.blkno)?;
        Ok(())
    }

    /// Validate, seal and write every dirty block, then move them into the cache. Does
    /// not flush. On error the dirty blocks are kept; the caller must treat the volume as
    /// poisoned.
    pub fn write_all(&mut self) -> Result<WriteStats> {
        let mut blknos: Vec<u64> = self.dirty.keys().copied().collect();
        blknos.sort_unstable();
        let bs = self.geo.block_size;
        let mut stats = WriteStats::default();
        let mut run: Vec<u8> = Vec::with_capacity(MAX_WRITE_BYTES.max(bs));
        let mut run_start = 0u64;
        for &blkno in &blknos {
            let d = self
                .dirty
                .get_mut(&blkno)
                .ok_or(BlockError::Internal("dirty block vanished"))?;
            (d.validate)(&d.data).map_err(|reason| BlockError::Corrupt { blkno, reason })?;
            let data =
                Arc::get_mut(&mut d.data).ok_or(BlockError::Internal("dirty block shared"))?;
            seal_block(data);
            let contiguous = !run.is_empty() && run_start + (run.len() / bs) as u64 == blkno;
            if !run.is_empty() && (!contiguous || run.len() + bs > MAX_WRITE_BYTES) {
                self.write_run(run_start, &run)?;
                stats.writes += 1;
                run.clear();
            }
            if run.is_empty() {
                run_start = blkno;
            }
            run.extend_from_slice(self.get(blkno).unwrap_or(&[]));
            stats.blocks += 1;
        }
        if !run.is_empty() {
            self.write_run(run_start, &run)?;
            stats.writes += 1;
        }
        for (blkno, d) in self.dirty.drain() {
            let seq = BlockHeader::ref_from_prefix(&d.data)
                .map(|(h, _)| h.seq.get())
                .unwrap_or(0);
            self.cache.insert_written(blkno, seq, d.magic, d.data);
        }
        Ok(stats)
    }

    fn write_run(&self, blkno: u64, bytes: &[u8]) -> Result<()> {
        let off = self.geo.offset_of(blkno)?;
        self.cache.device().write_at(bytes, off)?;
        Ok(())
    }

    /// Drop every dirty block (an aborted transaction).
    pub fn discard(&mut self) {
        self.dirty.clear();
    }
}

impl BlockRead for BlockWriter {
    #[inline]
    fn read_block(&self, r: BlockRef, magic: u32, validate: Validator) -> Result<BlockGuard<'_>> {
        if let Some(d) = self.dirty.get(&r.blkno) {
            d.check(r, magic)?;
            return Ok(BlockGuard::Dirty(&d.data));
        }
        self.cache.read(r, magic, validate).map(BlockGuard::Clean)
    }

    fn block_size(&self) -> usize {
        self.geo.block_size
    }
}
