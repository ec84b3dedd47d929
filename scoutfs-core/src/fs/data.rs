//! File data: extents on the data device, written, unwritten and holes; read, write,
//! fallocate and truncate.
//!
//! Committed bytes are never overwritten in place except by the caller's own data, and
//! bytes past a file's size are not assumed zero on the device (a crash can leave bytes
//! of a lost write there). A shrinking truncate to the middle of a block copies that
//! block's bytes before the new size to a fresh block, zeros after them (the old block
//! is freed with the transaction), so a crash before its commit finds the old block and
//! the old size whole. Whatever makes bytes past the size readable — a write past it, a
//! truncate or fallocate that grows the file — zeroes the last block from the size on,
//! and a write that reads back the edge blocks it covers in part zeroes their bytes past
//! the size: in place, safe because those bytes are past the committed size too (or in a
//! fresh block a truncate of this transaction made). When the data device is too full
//! for the truncate's copy, the old block stays, and the next operation that would zero
//! in it commits first (`State::settle_tail`).

use super::*;

/// Parts of a read's buffer to fill from the data device: (buffer range, device offset).
pub(super) type ReadPlan = Vec<(std::ops::Range<usize>, u64)>;

const BS: u64 = DATA_BLOCK_SIZE;

/// A data extent item: logical blocks `start..start + len` at device block `blkno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ext {
    pub(super) start: u64,
    pub(super) len: u64,
    pub(super) blkno: u64,
    pub(super) flags: u64,
}

impl Ext {
    pub(super) fn end(&self) -> u64 {
        self.start + self.len
    }

    pub(super) fn unwritten(&self) -> bool {
        self.flags & DATA_EXTENT_FLAG_UNWRITTEN != 0
    }
}

/// What one more data extent costs a transaction (its item, the allocators' change, and
/// the inode's update with its index items), checked before each extent of a write or
/// fallocate of many.
pub(super) fn one_extent() -> Reservation {
    Reservation::allocating(3 + INDEX_ITEMS).data(2, MAX_EXTENT_BLOCKS)
}

fn data_offset(blkno: u64) -> u64 {
    blkno * BS
}

impl State {
    /// The extents of `ino` that overlap logical blocks `first..=last`, in order.
    pub(super) fn extents(&self, ino: u64, first: u64, last: u64) -> FsResult<Vec<Ext>> {
        let from = first.saturating_sub(MAX_EXTENT_BLOCKS - 1);
        let items = self
            .client
            .read_items(&data_extent_key(ino, from), &data_extent_key(ino, last))?;
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            let e = self.decode_extent(&it)?;
            if e.end() > first {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// At most `limit` extents of `ino` that start at block `from` or later.
    pub(super) fn extents_from(&self, ino: u64, from: u64, limit: usize) -> FsResult<Vec<Ext>> {
        let items = self.client.read_items_limit(
            &data_extent_key(ino, from),
            &data_extent_key(ino, u64::MAX),
            limit,
        )?;
        items.iter().map(|it| self.decode_extent(it)).collect()
    }

    pub(super) fn decode_extent(&self, it: &crate::btree::Item) -> FsResult<Ext> {
        let d = DataExtent::read_from_bytes(&it.val)
            .map_err(|_| FsError::Corrupt("data extent item of the wrong size"))?;
        let e = Ext {
            start: it.key.second,
            len: d.len.get(),
            blkno: d.blkno.get(),
            flags: d.flags.get(),
        };
        // An offline extent holds no blocks and may be longer (module `archive`).
        let blocks_ok = if e.offline() {
            e.flags == DATA_EXTENT_FLAG_OFFLINE && e.blkno == 0
        } else {
            e.len <= MAX_EXTENT_BLOCKS
                && e.blkno
                    .checked_add(e.len)
                    .is_some_and(|end| end <= self.data_blocks)
        };
        if e.len == 0 || e.start.checked_add(e.len).is_none() || !blocks_ok {
            return Err(FsError::Corrupt("data extent out of range"));
        }
        Ok(e)
    }

    pub(super) fn put_extent(&mut self, ino: u64, e: &Ext) -> FsResult<()> {
        let v = DataExtent {
            blkno: e.blkno.into(),
            len: e.len.into(),
            flags: e.flags.into(),
        };
        self.client
            .insert(&data_extent_key(ino, e.start), v.as_bytes())?;
        Ok(())
    }

    /// Split `e` so that an extent item starts at `at` (inside it); returns the two parts.
    pub(super) fn split_extent(&mut self, ino: u64, e: &Ext, at: u64) -> FsResult<(Ext, Ext)> {
        let a = Ext {
            len: at - e.start,
            ..*e
        };
        let b = Ext {
            start: at,
            len: e.end() - at,
            blkno: if e.offline() {
                0
            } else {
                e.blkno + (at - e.start)
            },
            flags: e.flags,
        };
        self.put_extent(ino, &a)?;
        self.put_extent(ino, &b)?;
        Ok((a, b))
    }

    pub(super) fn file_inode(&self, ino: u64) -> FsResult<Inode> {
        let i = self.inode(ino)?;
        match kind_of(&i)? {
            FileKind::File => Ok(i),
            FileKind::Dir => Err(FsError::IsDir),
            _ => Err(FsError::Invalid),
        }
    }

    /// What a read of `len` bytes at `off` returns: a buffer of the bytes the file holds
    /// there (zeros so far: holes and unwritten extents stay so) and the parts of it to
    /// fill from the data device (buffer range, device offset).
    pub(super) fn read_plan(
        &self,
        inode: &Inode,
        ino: u64,
        off: u64,
        len: u32,
    ) -> FsResult<(Vec<u8>, ReadPlan)> {
        let size = inode.size.get();
        if off >= size || len == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let end = size.min(off + len as u64);
        let out = vec![0u8; (end - off) as usize];
        let first = off / BS;
        let last = (end - 1) / BS;
        let mut plan = Vec::new();
        let exts = if inode.offline_blocks.get() > 0 {
            self.extents_offline(ino, first, last)?
        } else {
            self.extents(ino, first, last)?
        };
        for e in exts {
            // Offline blocks: the caller waited for them (`State::offline_wait`).
            if e.unwritten() || e.offline() {
                continue;
            }
            let b0 = e.start.max(first);
            let b1 = e.end().min(last + 1);
            if b0 >= b1 {
                continue;
            }
            // Bytes of the file this part of the extent holds, clipped to the request.
            let lo = (b0 * BS).max(off);
            let hi = (b1 * BS).min(end);
            let dev_off = data_offset(e.blkno + (b0 - e.start)) + (lo - b0 * BS);
            plan.push(((lo - off) as usize..(hi - off) as usize, dev_off));
        }
        Ok((out, plan))
    }

    /// Write `buf` to the data device at `at`, once no read of file data is in flight
    /// (see `State::data_io`).
    pub(super) fn write_data(&self, buf: &[u8], at: u64) -> FsResult<()> {
        let _writing = self.data_io.write();
        self.data.write_at(buf, at)?;
        Ok(())
    }

    /// Write `buf` (whole blocks) at logical block `b` of extent `e`.
    fn write_blocks(&self, e: &Ext, b: u64, buf: &[u8]) -> FsResult<()> {
        self.write_data(buf, data_offset(e.blkno + (b - e.start)))
    }

    /// Fill `buf`, the blocks `b0..b1` of the file, with the bytes of `data` (at file
    /// offset `off`) that fall in them; edge blocks of a written extent keep their old
    /// bytes before the file's `size`, everything else is zero.
    #[allow(clippy::too_many_arguments)]
    fn fill_blocks(
        &self,
        e: &Ext,
        b0: u64,
        b1: u64,
        off: u64,
        data: &[u8],
        keep_old: bool,
        size: u64,
    ) -> FsResult<Vec<u8>> {
        let mut buf = vec![0u8; ((b1 - b0) * BS) as usize];
        let lo = (b0 * BS).max(off);
        let hi = (b1 * BS).min(off + data.len() as u64);
        if keep_old {
            // Only edge blocks that the write covers partly need their old bytes.
            if lo > b0 * BS {
                self.data.read_at(
                    &mut buf[..BS as usize],
                    data_offset(e.blkno + (b0 - e.start)),
                )?;
            }
            if hi < b1 * BS {
                let at = ((b1 - 1 - b0) * BS) as usize;
                self.data.read_at(
                    &mut buf[at..at + BS as usize],
                    data_offset(e.blkno + (b1 - 1 - e.start)),
                )?;
            }
            // What lies past the size is not the file's: it reads as zeros.
            if size < b1 * BS {
                buf[(size.max(b0 * BS) - b0 * BS) as usize..].fill(0);
            }
        }
        buf[(lo - b0 * BS) as usize..(hi - b0 * BS) as usize]
            .copy_from_slice(&data[(lo - off) as usize..(hi - off) as usize]);
        Ok(buf)
    }

    /// Write the part of `data` (at file offset `off`) that falls in extent `e` from
    /// block `b` on; returns the block after it.
    #[allow(clippy::too_many_arguments)]
    fn write_into(
        &mut self,
        ino: u64,
        e: &Ext,
        b: u64,
        last: u64,
        off: u64,
        data: &[u8],
        size: u64,
    ) -> FsResult<u64> {
        let b1 = e.end().min(last + 1);
        if e.unwritten() {
            let buf = self.fill_blocks(e, b, b1, off, data, false, size)?;
            self.write_blocks(e, b, &buf)?;
            // The written part becomes its own written extent.
            let mut rest = *e;
            if rest.start < b {
                rest = self.split_extent(ino, &rest, b)?.1;
            }
            if rest.end() > b1 {
                rest = self.split_extent(ino, &rest, b1)?.0;
            }
            rest.flags &= !DATA_EXTENT_FLAG_UNWRITTEN;
            self.put_extent(ino, &rest)?;
        } else {
            let buf = self.fill_blocks(e, b, b1, off, data, true, size)?;
            self.write_blocks(e, b, &buf)?;
        }
        Ok(b1)
    }

    /// Allocate an extent in the hole at block `b` (up to the next extent `next`, fewer
    /// blocks if free space is short) and write the part of `data` that falls in it;
    /// returns the block after it. An extent whose data could not be written is freed.
    #[allow(clippy::too_many_arguments)]
    fn write_hole(
        &mut self,
        ino: u64,
        next: Option<Ext>,
        b: u64,
        last: u64,
        off: u64,
        data: &[u8],
        allocated: &mut u64,
    ) -> FsResult<u64> {
        let gap_end = next.map_or(last + 1, |e| e.start.min(last + 1));
        let want = (gap_end - b).min(MAX_EXTENT_BLOCKS);
        let got = self.client.alloc_data(ino, b, want)?;
        let e = Ext {
            start: b,
            len: got.len,
            blkno: got.start,
            flags: 0,
        };
        let res = self
            .fill_blocks(&e, b, e.end(), off, data, false, 0)
            .and_then(|buf| self.write_blocks(&e, b, &buf));
        if let Err(err) = res {
            self.client.free_data(ino, b)?;
            return Err(err);
        }
        *allocated += got.len;
        Ok(e.end())
    }

    /// Before an operation that may zero bytes past the size of `ino` in place: if a
    /// truncate of the open transaction left committed bytes there (it could not copy
    /// its block), commit first, so that they are past the committed size.
    fn settle_tail(&mut self, ino: u64) -> FsResult<()> {
        let seq = self.client.trans_seq();
        self.unzeroed.retain(|_, s| *s == seq);
        if self.unzeroed.remove(&ino).is_some() {
            self.client.commit()?;
        }
        Ok(())
    }

    /// Write `data` at `off` in one transaction (the caller splits larger writes); a
    /// short count if the data device filled part-way or failed, with whether it was this
    /// mount's data extents that ran out (a commit may bring more).
    pub(super) fn write(&mut self, ino: u64, off: u64, data: &[u8]) -> FsResult<(u32, bool)> {
        self.settle_tail(ino)?;
        let size = self.file_inode(ino)?.size.get();
        if data.is_empty() {
            return Ok((0, false));
        }
        if data.len() > u32::MAX as usize {
            return Err(FsError::Invalid);
        }
        let end = off
            .checked_add(data.len() as u64)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        let first = off / BS;
        let last = (end - 1) / BS;
        let exts = self.extents(ino, first, last)?;
        if exts.iter().any(Ext::offline) {
            // A write waits until the whole file is online (`State::offline_wait`).
            return Err(FsError::Corrupt(
                "an offline extent where the file is online",
            ));
        }
        let holes = (last - first) / MAX_EXTENT_BLOCKS + 1 + exts.len() as u64;
        let covered: u64 = exts
            .iter()
            .map(|e| e.end().min(last + 1) - e.start.max(first))
            .sum();
        self.begin(
            Reservation::allocating(4 + INDEX_ITEMS + 2 * holes as usize + 5 * exts.len()).data(
                2 * holes as usize,
                (last + 1 - first).saturating_sub(covered),
            ),
        )?;
        if off > size {
            self.zero_tail(ino, size, first)?;
        }
        let mut allocated = 0u64;
        let mut short = false;
        let mut spent = false;
        let mut b = first;
        let mut i = 0;
        while b <= last {
            let cur = exts.get(i).copied();
            if b > first && !self.client.has_room(&one_extent()) {
                // The transaction is full (a write of many extents): what is done is a
                // step, and the caller goes on in the next (as when data runs out).
                short = true;
                spent = true;
                break;
            }
            let step = match cur {
                Some(e) if e.start <= b => {
                    i += 1;
                    self.write_into(ino, &e, b, last, off, data, size)
                }
                _ => self.write_hole(ino, cur, b, last, off, data, &mut allocated),
            };
            match step {
                Ok(next) => b = next,
                // Out of space or a failed device part-way: a short write of what is
                // done, so the size covers every block written past the old end.
                Err(e) if b > first => {
                    short = true;
                    spent = matches!(e, FsError::NoSpace);
                    break;
                }
                Err(e) => {
                    // Nothing written: an extent allocated for it was freed again, which
                    // leaves the file as it was (the allocators' changes are kept).
                    self.client.step();
                    return Err(e);
                }
            }
        }
        // Blocks before `b` hold their bytes now.
        let end = if short { end.min(b * BS) } else { end };
        let mut inode = self.inode(ino)?;
        inode.online_blocks = (inode.online_blocks.get() + allocated).into();
        if end > inode.size.get() {
            inode.size = end.into();
        }
        inode.mtime = raw_time(self.now);
        inode.ctime = raw_time(self.now);
        self.put_contents(ino, &mut inode)?;
        Ok(((end - off) as u32, spent))
    }

    /// Allocate unwritten extents over the holes of `off..off + len`. All or nothing:
    /// if an allocation or the inode's update fails part-way (out of space), the extents
    /// this call allocated are freed again and the inode is left as it was, so the space
    /// is as before.
    pub(super) fn fallocate(
        &mut self,
        ino: u64,
        off: u64,
        len: u64,
        keep_size: bool,
    ) -> FsResult<()> {
        self.file_inode(ino)?;
        if len == 0 {
            return Err(FsError::Invalid);
        }
        self.settle_tail(ino)?;
        let end = off
            .checked_add(len)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        let first = off / BS;
        let last = (end - 1) / BS;
        let exts = self.extents(ino, first, last)?;
        let holes = (last - first) / MAX_EXTENT_BLOCKS + 1 + exts.len() as u64;
        // Each extent allocated may be given back.
        let res = Reservation::allocating(4 + INDEX_ITEMS + 2 * holes as usize)
            .data(2 * holes as usize, last + 1 - first);
        self.begin(res)?;
        let old_size = self.inode(ino)?.size.get();
        if !keep_size && end > old_size {
            self.zero_tail(ino, old_size, u64::MAX)?;
        }
        // First logical block of each extent allocated here, to give back on failure.
        // Each extent allocated here (first block, length), to give back on failure,
        // and the blocks of them not yet counted in the inode.
        let mut made = Vec::new();
        let mut allocated = 0u64;
        let done: FsResult<()> = 'change: {
            let mut b = first;
            let mut i = 0;
            while b <= last {
                match exts.get(i).copied() {
                    Some(e) if e.start <= b => {
                        b = e.end();
                        i += 1;
                    }
                    cur => {
                        let gap_end = cur.map_or(last + 1, |e| e.start.min(last + 1));
                        let want = (gap_end - b).min(MAX_EXTENT_BLOCKS);
                        let flags = DATA_EXTENT_FLAG_UNWRITTEN;
                        if allocated > 0 && !self.client.has_room(&one_extent()) {
                            // The transaction is full: end a step.
                            if let Err(e) = self.fallocate_step(ino, &mut allocated, res) {
                                break 'change Err(e);
                            }
                        }
                        match self.client.alloc_data_flags(ino, b, want, flags) {
                            Ok(got) => {
                                made.push((b, got.len));
                                allocated += got.len;
                                b += got.len;
                            }
                            // This mount's data extents are spent: end a step and go
                            // on after the commit that asks for more.
                            Err(ClientError::NoSpace) if allocated > 0 => {
                                if let Err(e) = self.fallocate_step(ino, &mut allocated, res) {
                                    break 'change Err(e);
                                }
                            }
                            Err(e) => break 'change Err(e.into()),
                        }
                    }
                }
            }
            let mut inode = match self.inode(ino) {
                Ok(inode) => inode,
                Err(e) => break 'change Err(e),
            };
            inode.online_blocks = (inode.online_blocks.get() + allocated).into();
            inode.ctime = raw_time(self.now);
            if !keep_size && end > inode.size.get() {
                inode.size = end.into();
                inode.mtime = raw_time(self.now);
                self.put_contents(ino, &mut inode)
            } else {
                self.put_inode(ino, &mut inode)
            }
        };
        if done.is_err() {
            // Give back every extent made here (unwritten: they hold no bytes), in steps
            // as the transaction fills, the inode counting what is left at each.
            self.count_blocks(ino, allocated as i64)?;
            let mut freed = 0u64;
            let n = made.len();
            for (nr, (start, len)) in made.into_iter().enumerate() {
                if freed > 0 && !self.client.has_room(&one_deletion()) {
                    self.count_blocks(ino, -(freed as i64))?;
                    freed = 0;
                    self.client.step();
                    let left = n - nr;
                    self.begin(Reservation::freeing(left + 1 + INDEX_ITEMS).data(left, 0))?;
                }
                self.client.free_data(ino, start)?;
                freed += len;
            }
            self.count_blocks(ino, -(freed as i64))?;
            // The file is as it was: nothing of this operation is left to undo.
            self.client.step();
        }
        done
    }

    /// End a step of a fallocate of many extents: count the `allocated` blocks of this
    /// step in the inode (the extents past its size until the last step sets it) and
    /// begin the next step, committing first if the transaction needs it.
    fn fallocate_step(&mut self, ino: u64, allocated: &mut u64, res: Reservation) -> FsResult<()> {
        self.count_blocks(ino, *allocated as i64)?;
        *allocated = 0;
        self.client.step();
        self.begin(res)
    }

    /// Zero the bytes of the block holding file offset `size` (the file's size) from
    /// there to the block's end, if a written extent holds it and it is before block
    /// `before`: done before a change that makes bytes past the size readable (a crash
    /// may have left other bytes there). In place, but past the committed size too (see
    /// the module comment): no committed byte of the file changes.
    fn zero_tail(&mut self, ino: u64, size: u64, before: u64) -> FsResult<()> {
        let b = size / BS;
        if size.is_multiple_of(BS) || b >= before {
            return Ok(());
        }
        if let Some(e) = self.extents(ino, b, b)?.into_iter().find(|e| e.start <= b) {
            if !e.unwritten() && !e.offline() {
                let mut blk = vec![0u8; BS as usize];
                let at = data_offset(e.blkno + (b - e.start));
                self.data.read_at(&mut blk, at)?;
                blk[(size % BS) as usize..].fill(0);
                self.write_data(&blk, at)?;
            }
        }
        Ok(())
    }

    /// Set the size of a regular file: shrinking frees the extents past the new end (the
    /// rest of its last block is left as it is: see the module comment); growing leaves
    /// a hole. Every step has room for `extra` as well (the caller's other changes,
    /// made after).
    ///
    /// A truncate that frees more extents than fit one transaction writes a truncate
    /// record ([`truncate_key`]) with the new size and frees the rest in steps; a crash
    /// in between is finished by the next mount.
    pub(super) fn truncate(&mut self, ino: u64, size: u64, extra: Reservation) -> FsResult<()> {
        self.settle_tail(ino)?;
        self.begin(
            Reservation::freeing(10 + INDEX_ITEMS + DELETE_INLINE)
                .data(4 + DELETE_INLINE, 1)
                .and(extra),
        )?;
        let mut inode = self.file_inode(ino)?;
        let old = inode.size.get();
        inode.size = size.into();
        inode.mtime = raw_time(self.now);
        inode.ctime = raw_time(self.now);
        if size == old {
            // The contents stay: no data_version of theirs changes.
            return self.put_inode(ino, &mut inode);
        }
        if size > old {
            // Extents past the end (fallocate with keep_size) stay.
            self.zero_tail(ino, old, u64::MAX)?;
            return self.put_contents(ino, &mut inode);
        }
        self.freeing = true;
        if self.mutation == Mutation::InPlaceTruncateZero && !size.is_multiple_of(BS) {
            // The old bug, for the mutation test: zero the rest of the new last block
            // in place, under the committed size, before the commit of the new one.
            self.zero_tail(ino, size, u64::MAX)?;
        } else if !size.is_multiple_of(BS) {
            self.copy_tail(ino, size)?;
        }
        let keep = size.div_ceil(BS);
        // The extent across the new end keeps its head.
        let across = if inode.offline_blocks.get() > 0 {
            self.extents_offline(ino, keep, keep)?
        } else {
            self.extents(ino, keep, keep)?
        };
        if let Some(e) = across.into_iter().find(|e| e.start < keep) {
            let tail = self.split_extent(ino, &e, keep)?.1;
            let freed = self.drop_extent(ino, &tail)?;
            uncount(&mut inode, freed);
        }
        if self.extents_from(ino, keep, DELETE_INLINE + 1)?.len() > DELETE_INLINE {
            // Too many for this transaction: the record goes with the new size.
            self.put(&truncate_key(ino), &size.to_le_bytes())?;
            self.put_contents(ino, &mut inode)?;
            return self.free_past(ino, keep, extra);
        }
        let freed = self.free_extents(ino, keep, DELETE_INLINE, false)?;
        uncount(&mut inode, freed);
        self.put_contents(ino, &mut inode)
    }

    /// Count `blocks` more (or, negative, fewer) data blocks in the inode of `ino`.
    fn count_blocks(&mut self, ino: u64, blocks: i64) -> FsResult<()> {
        self.move_counts(ino, blocks, 0)
    }

    /// The block holding file offset `size` (a new, smaller size), if a written extent
    /// holds it: copied to a fresh block with zeros after `size` (the old block freed
    /// with the transaction), so the old bytes stay whole until the truncate commits.
    /// With no data block free the old block stays as it is (see `State::settle_tail`).
    fn copy_tail(&mut self, ino: u64, size: u64) -> FsResult<()> {
        let b = size / BS;
        let Some(e) = self.extents(ino, b, b)?.into_iter().find(|e| e.start <= b) else {
            return Ok(());
        };
        if e.unwritten() || e.offline() {
            return Ok(());
        }
        if self.client.data_avail() == 0 {
            self.unzeroed.insert(ino, self.client.trans_seq());
            return Ok(());
        }
        let mut blk = vec![0u8; BS as usize];
        self.data
            .read_at(&mut blk, data_offset(e.blkno + (b - e.start)))?;
        blk[(size % BS) as usize..].fill(0);
        let mut one = e;
        if one.start < b {
            one = self.split_extent(ino, &one, b)?.1;
        }
        if one.end() > b + 1 {
            one = self.split_extent(ino, &one, b + 1)?.0;
        }
        self.client.free_data(ino, one.start)?;
        let got = self.client.alloc_data(ino, b, 1)?;
        self.write_data(&blk, data_offset(got.start))
    }

    /// Free up to `limit` extents of `ino` from block `from` on (offline ones are only
    /// deleted); returns the (online, offline) blocks they counted. A `step` of a large
    /// truncate stops early (after one extent at least) when the transaction is full.
    fn free_extents(
        &mut self,
        ino: u64,
        from: u64,
        limit: usize,
        step: bool,
    ) -> FsResult<(u64, u64)> {
        let mut freed = (0, 0);
        for e in self.extents_from(ino, from, limit)? {
            if step && freed != (0, 0) && !self.client.has_room(&one_deletion()) {
                break;
            }
            let (on, off) = self.drop_extent(ino, &e)?;
            freed = (freed.0 + on, freed.1 + off);
        }
        Ok(freed)
    }

    /// The steps of a large truncate after the first (which wrote the truncate record):
    /// free the extents from block `keep` on a step at a time, each step counting them
    /// off the inode, then delete the record. Each step has room for `extra` too.
    pub(super) fn free_past(&mut self, ino: u64, keep: u64, extra: Reservation) -> FsResult<()> {
        self.freeing = true;
        loop {
            self.client.step();
            self.begin(
                Reservation::freeing(2 + INDEX_ITEMS + DELETE_STEP)
                    .data(DELETE_STEP, 0)
                    .and(extra),
            )?;
            let freed = self.free_extents(ino, keep, DELETE_STEP, true)?;
            if freed == (0, 0) {
                break;
            }
            let mut inode = self.inode(ino)?;
            uncount(&mut inode, freed);
            self.put_inode(ino, &mut inode)?;
        }
        self.client.delete(&truncate_key(ino))?;
        Ok(())
    }
}

/// Take `(online, offline)` blocks freed off the counts of `inode`.
fn uncount(inode: &mut Inode, (online, offline): (u64, u64)) {
    inode.online_blocks = inode.online_blocks.get().saturating_sub(online).into();
    inode.offline_blocks = inode.offline_blocks.get().saturating_sub(offline).into();
}
