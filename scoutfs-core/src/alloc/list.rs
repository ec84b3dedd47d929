//! Alloc lists: the single metadata blocks one transaction allocates from and frees into.
//!
//! On disk a list is a chain of alloc list blocks ([`AllocListBlockHeader`] + block numbers)
//! named by a [`RawAllocListHead`]. In memory, a transaction holds its lists as vectors in a
//! [`ListAlloc`]: allocation pops from `avail`, a free appends to `freed`, and a freed block
//! is never handed out again by the same [`ListAlloc`] — the stable super may still
//! reference it. At commit, [`ListAlloc::write_lists`] writes both lists into fresh list
//! blocks taken from `avail` itself and frees the blocks that held the previous lists.

use super::{AllocError, MetaAllocator};
use crate::block::{BlockError, BlockRead, BlockWriter};
use crate::format::{
    alloc_list_capacity, AllocListBlockHeader, BlockRef, RawAllocListHead, ALLOC_LIST_HEADER_SIZE,
    MAGIC_ALLOC_LIST,
};
use rustc_hash::FxHashSet;
use zerocopy::{FromBytes, IntoBytes};

/// Checks an alloc list block's contents (its header already verified).
pub fn validate_list_block(b: &[u8]) -> std::result::Result<(), &'static str> {
    let (h, _) = AllocListBlockHeader::ref_from_prefix(b).map_err(|_| "short alloc list block")?;
    let cap = alloc_list_capacity(b.len()) as u64;
    let (start, nr) = (h.start.get() as u64, h.nr.get() as u64);
    if start + nr > cap {
        return Err("alloc list block holds more than fits");
    }
    Ok(())
}

/// The block numbers in a list block.
pub(crate) fn list_entries(b: &[u8]) -> impl Iterator<Item = u64> + '_ {
    let (start, nr) = AllocListBlockHeader::ref_from_prefix(b)
        .map(|(h, _)| (h.start.get() as usize, h.nr.get() as usize))
        .unwrap_or((0, 0));
    let from = ALLOC_LIST_HEADER_SIZE + start * 8;
    b.get(from..from + nr * 8)
        .unwrap_or(&[])
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
}

/// A list read from disk: its block numbers and the blocks that hold them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListContents {
    /// The free block numbers, in list order.
    pub blknos: Vec<u64>,
    /// The list blocks themselves, first to last.
    pub blocks: Vec<BlockRef>,
}

/// Read the whole list `head` names. Every block is verified; a chain longer than its
/// count claims, or counts that disagree, are [`BlockError::Corrupt`].
pub fn read_list<R: BlockRead + ?Sized>(
    rd: &R,
    head: &RawAllocListHead,
) -> Result<ListContents, BlockError> {
    let mut out = ListContents::default();
    let total = head.total_nr.get();
    let mut r: BlockRef = head.blk.into();
    let cap = alloc_list_capacity(rd.block_size()) as u64;
    // A list is written in the fewest blocks or one more (see `blocks_needed`).
    let max_blocks = if cap == 0 { 0 } else { total.div_ceil(cap) + 1 };
    while !r.is_none() {
        if out.blocks.len() as u64 >= max_blocks {
            return Err(BlockError::Corrupt {
                blkno: r.blkno,
                reason: "alloc list is longer than its count",
            });
        }
        let g = rd.read_block(r, MAGIC_ALLOC_LIST, validate_list_block)?;
        let (h, _) =
            AllocListBlockHeader::ref_from_prefix(&g).map_err(|_| BlockError::Corrupt {
                blkno: r.blkno,
                reason: "short alloc list block",
            })?;
        if out.blocks.is_empty() && h.nr.get() != head.first_nr.get() {
            return Err(BlockError::Corrupt {
                blkno: r.blkno,
                reason: "first alloc list block count differs from its head",
            });
        }
        out.blknos.extend(list_entries(&g));
        out.blocks.push(r);
        r = h.next.into();
    }
    if out.blknos.len() as u64 != total {
        return Err(BlockError::Corrupt {
            blkno: head.blk.blkno.get(),
            reason: "alloc list holds a different number of blocks than its head says",
        });
    }
    Ok(out)
}

/// Hands out pre-taken block numbers (list blocks come from the list being written).
struct Taken(Vec<u64>);

impl MetaAllocator for Taken {
    fn alloc_meta(&mut self) -> Result<u64, AllocError> {
        self.0.pop().ok_or(AllocError::NoSpace)
    }
    fn free_meta(&mut self, blkno: u64) -> Result<(), AllocError> {
        Err(AllocError::BadFree(blkno))
    }
}

/// Write `blknos` as a list into new blocks numbered `blocks` (exactly enough of them);
/// the references of the list blocks are appended to `refs`.
fn write_list(
    wri: &mut BlockWriter,
    blocks: Vec<u64>,
    blknos: &[u64],
    flags: u32,
    refs: &mut Vec<BlockRef>,
) -> Result<RawAllocListHead, BlockError> {
    let cap = alloc_list_capacity(wri.cache().geometry().block_size);
    if cap == 0 {
        return Err(BlockError::Internal("alloc list blocks hold nothing"));
    }
    // Spread the numbers over exactly the blocks given (one more than the minimum may be
    // given, see `blocks_needed`; it then holds fewer or none).
    let per = blknos.len().div_ceil(blocks.len().max(1)).max(1);
    if per > cap || (blocks.is_empty() && !blknos.is_empty()) {
        return Err(BlockError::Internal("too few alloc list blocks"));
    }
    let mut chunks: Vec<&[u64]> = blknos.chunks(per).collect();
    while chunks.len() < blocks.len() {
        chunks.push(&[]);
    }
    let mut taken = Taken(blocks);
    let mut next = BlockRef::NONE;
    let mut first_nr = 0u32;
    for chunk in chunks.iter().rev() {
        let r = wri.new_block(&mut taken, MAGIC_ALLOC_LIST, validate_list_block)?;
        let b = wri.get_mut(r.blkno)?;
        let (h, rest) = AllocListBlockHeader::mut_from_prefix(b)
            .map_err(|_| BlockError::Internal("short alloc list block"))?;
        h.next = next.into();
        h.start = 0.into();
        h.nr = (chunk.len() as u32).into();
        for (dst, v) in rest.chunks_exact_mut(8).zip(chunk.iter()) {
            dst.copy_from_slice(v.as_bytes());
        }
        next = r;
        refs.push(r);
        first_nr = chunk.len() as u32;
    }
    Ok(RawAllocListHead {
        blk: next.into(),
        total_nr: (blknos.len() as u64).into(),
        first_nr: first_nr.into(),
        flags: flags.into(),
    })
}

/// Write `blknos` as a new list in blocks allocated from `alloc`.
pub fn write_new_list(
    wri: &mut BlockWriter,
    alloc: &mut dyn MetaAllocator,
    blknos: &[u64],
    flags: u32,
) -> Result<RawAllocListHead, BlockError> {
    let cap = alloc_list_capacity(wri.cache().geometry().block_size);
    if cap == 0 {
        return Err(BlockError::Internal("alloc list blocks hold nothing"));
    }
    let mut blocks = Vec::new();
    for _ in 0..blknos.len().div_ceil(cap) {
        blocks.push(alloc.alloc_meta()?);
    }
    write_list(wri, blocks, blknos, flags, &mut Vec::new())
}

/// The metadata allocator of one transaction: a list to allocate from and a list of what
/// it freed.
#[derive(Clone, Debug, Default)]
pub struct ListAlloc {
    /// Allocatable blocks; allocation pops from the end.
    avail: Vec<u64>,
    /// Blocks freed in this transaction.
    freed: Vec<u64>,
    freed_set: FxHashSet<u64>,
    /// The blocks holding the lists this allocator was loaded from (freed at commit).
    old_blocks: Vec<BlockRef>,
}

impl ListAlloc {
    /// An allocator over `avail`, with nothing freed yet.
    pub fn new(avail: Vec<u64>) -> ListAlloc {
        let mut a = ListAlloc::default();
        a.add_avail(avail);
        a
    }

    /// Load the lists `avail` and `freed` name. The blocks freed there are carried as freed
    /// (not allocatable) blocks; the list blocks themselves are freed by the next
    /// [`ListAlloc::write_lists`].
    pub fn load<R: BlockRead + ?Sized>(
        rd: &R,
        avail: &RawAllocListHead,
        freed: &RawAllocListHead,
    ) -> Result<ListAlloc, BlockError> {
        let a = read_list(rd, avail)?;
        let f = read_list(rd, freed)?;
        let mut out = ListAlloc::new(a.blknos);
        for b in f.blknos {
            out.free_meta(b)?;
        }
        out.old_blocks = a.blocks.into_iter().chain(f.blocks).collect();
        Ok(out)
    }

    /// Number of allocatable blocks.
    pub fn avail_len(&self) -> usize {
        self.avail.len()
    }

    /// Number of blocks freed in this transaction.
    pub fn freed_len(&self) -> usize {
        self.freed.len()
    }

    /// Add allocatable blocks (kept so that allocation yields ascending numbers).
    pub fn add_avail(&mut self, blknos: impl IntoIterator<Item = u64>) {
        self.avail.extend(blknos);
        // Descending, so pops give low block numbers first: dirty blocks land close together.
        self.avail.sort_unstable_by(|a, b| b.cmp(a));
    }

    /// Take up to `n` allocatable blocks out (the highest numbers).
    pub fn take_avail(&mut self, n: usize) -> Vec<u64> {
        let n = n.min(self.avail.len());
        self.avail.drain(..n).collect()
    }

    /// Take every block freed so far out of the freed list (only for blocks whose free is
    /// already durable, e.g. moving a committed free list elsewhere).
    pub fn take_freed(&mut self) -> Vec<u64> {
        self.freed_set.clear();
        std::mem::take(&mut self.freed)
    }

    /// The allocatable blocks.
    pub fn avail(&self) -> &[u64] {
        &self.avail
    }

    /// The blocks freed in this transaction.
    pub fn freed(&self) -> &[u64] {
        &self.freed
    }

    /// Forget the list blocks this allocator was loaded from: the caller frees them.
    pub fn take_old_blocks(&mut self) -> Vec<BlockRef> {
        std::mem::take(&mut self.old_blocks)
    }

    /// List blocks to take from avail to write the `avail` and `freed` lists: the least
    /// `k` with `k >= freed blocks + avail blocks after taking k`. At that `k` the avail
    /// list may need one block fewer than it is given; it then spreads thinner.
    fn blocks_needed(&self, cap: usize, extra_freed: usize) -> Option<usize> {
        let nf = (self.freed.len() + extra_freed).div_ceil(cap);
        let a = self.avail.len();
        (nf..=a).find(|&k| k >= nf + (a - k).div_ceil(cap))
    }

    /// How many blocks [`ListAlloc::write_lists`] will take from avail (`None`: avail
    /// cannot hold its own lists).
    pub fn commit_cost(&self, block_size: usize) -> Option<usize> {
        let cap = alloc_list_capacity(block_size).max(1);
        self.blocks_needed(cap, self.old_blocks.len())
    }

    /// Write the lists for a commit: free the blocks of the lists this allocator was
    /// loaded from (or last wrote), take list blocks from avail, and write the avail and
    /// freed lists into them. Returns the (avail, freed) heads; `flags` go into both. The
    /// new list blocks are freed by the next call.
    pub fn write_lists(
        &mut self,
        wri: &mut BlockWriter,
        flags: u32,
    ) -> Result<(RawAllocListHead, RawAllocListHead), BlockError> {
        let bs = wri.cache().geometry().block_size;
        let cap = alloc_list_capacity(bs);
        if cap == 0 {
            return Err(BlockError::Internal("alloc list blocks hold nothing"));
        }
        for r in std::mem::take(&mut self.old_blocks) {
            self.free_meta(r.blkno)?;
        }
        let k = self.blocks_needed(cap, 0).ok_or(AllocError::NoSpace)?;
        let nf = self.freed.len().div_ceil(cap);
        let mut blocks = Vec::with_capacity(k);
        for _ in 0..k {
            blocks.push(self.alloc_meta()?);
        }
        let avail_blocks = blocks.split_off(nf);
        let mut refs = Vec::with_capacity(k);
        let freed = write_list(wri, blocks, &self.freed, flags, &mut refs)?;
        let avail = write_list(wri, avail_blocks, &self.avail, flags, &mut refs)?;
        // The next commit frees these: they hold this commit's lists.
        self.old_blocks = refs;
        Ok((avail, freed))
    }
}

impl MetaAllocator for ListAlloc {
    fn alloc_meta(&mut self) -> Result<u64, AllocError> {
        self.avail.pop().ok_or(AllocError::NoSpace)
    }

    fn remaining(&self) -> usize {
        self.avail.len()
    }

    fn free_meta(&mut self, blkno: u64) -> Result<(), AllocError> {
        // A block that is allocatable, already freed, or holds the lists this allocator
        // was loaded from (the next `write_lists` frees those) is free already. Accepting
        // an allocatable one would let this transaction allocate a block it freed.
        let avail = self.avail.binary_search_by(|b| blkno.cmp(b)).is_ok();
        let list_block = self.old_blocks.iter().any(|r| r.blkno == blkno);
        if avail || list_block || !self.freed_set.insert(blkno) {
            return Err(AllocError::BadFree(blkno));
        }
        self.freed.push(blkno);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_writer as writer;

    #[test]
    fn lists_round_trip_through_blocks() {
        let mut wri = writer(1024, 4096);
        let cap = alloc_list_capacity(1024);
        let mut a = ListAlloc::new((1000..1000 + 3 * cap as u64 + 5).collect());
        for b in 10..10 + cap as u64 + 1 {
            a.free_meta(b).unwrap();
        }
        let before_avail = a.avail_len();
        let k = a.commit_cost(1024).unwrap();
        let (ah, fh) = a.write_lists(&mut wri, 0).unwrap();
        assert_eq!(a.avail_len(), before_avail - k);
        wri.write_all().unwrap();
        let cache = wri.cache().clone();
        let back = ListAlloc::load(&*cache, &ah, &fh).unwrap();
        let mut want: Vec<u64> = a.avail().to_vec();
        want.sort_unstable();
        let mut got = back.avail().to_vec();
        got.sort_unstable();
        assert_eq!(got, want);
        assert_eq!(back.freed(), a.freed());
        // The list blocks are neither allocatable nor freed.
        let lists = read_list(&*cache, &ah).unwrap().blocks;
        assert_eq!(lists.len(), back.avail_len().div_ceil(cap));
        for r in lists {
            assert!(!got.contains(&r.blkno) && !back.freed().contains(&r.blkno));
        }
    }

    #[test]
    fn double_free_is_refused_and_freed_is_not_reused() {
        let mut a = ListAlloc::new(vec![5, 6]);
        a.free_meta(9).unwrap();
        assert_eq!(a.free_meta(9), Err(AllocError::BadFree(9)));
        assert_eq!(a.alloc_meta(), Ok(5));
        assert_eq!(a.alloc_meta(), Ok(6));
        assert_eq!(a.alloc_meta(), Err(AllocError::NoSpace));
    }

    /// Freeing an allocatable block or a block of the loaded lists is a double free. Both
    /// were accepted: the first was then allocated by the transaction that freed it, the
    /// second made the next `write_lists` fail half done.
    #[test]
    fn freeing_avail_or_list_blocks_is_refused() {
        let mut wri = writer(1024, 4096);
        let mut a = ListAlloc::new(vec![100, 101, 102]);
        assert_eq!(a.free_meta(101), Err(AllocError::BadFree(101)));
        assert_eq!(a.freed_len(), 0);
        let (ah, fh) = a.write_lists(&mut wri, 0).unwrap();
        wri.write_all().unwrap();
        let cache = wri.cache().clone();
        let mut back = ListAlloc::load(&*cache, &ah, &fh).unwrap();
        assert_eq!(back.avail(), [102, 101]);
        assert_eq!(back.free_meta(102), Err(AllocError::BadFree(102)));
        let lists = read_list(&*cache, &ah).unwrap().blocks;
        assert_eq!(lists.len(), 1);
        for r in &lists {
            assert_eq!(back.free_meta(r.blkno), Err(AllocError::BadFree(r.blkno)));
        }
        assert_eq!(back.freed_len(), 0);
        back.write_lists(&mut wri, 0).unwrap();
        let freed: Vec<u64> = lists.iter().map(|r| r.blkno).collect();
        assert_eq!(back.freed(), freed);
    }

    #[test]
    fn a_list_claiming_more_than_it_holds_is_corrupt() {
        let mut wri = writer(1024, 4096);
        let mut a = ListAlloc::new((100..200).collect());
        let (mut ah, _) = a.write_lists(&mut wri, 0).unwrap();
        wri.write_all().unwrap();
        ah.total_nr = (ah.total_nr.get() + 1).into();
        let cache = wri.cache().clone();
        assert!(matches!(
            read_list(&*cache, &ah),
            Err(BlockError::Corrupt { .. })
        ));
    }
}
