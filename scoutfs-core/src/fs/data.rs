//! File data: extents on the data device, written, unwritten and holes; read, write,
//! fallocate and truncate.

use super::*;

/// Parts of a read's buffer to fill from the data device: (buffer range, device offset).
pub(super) type ReadPlan = Vec<(std::ops::Range<usize>, u64)>;

const BS: u64 = DATA_BLOCK_SIZE;

/// A data extent item: logical blocks `start..start + len` at device block `blkno`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ext {
    start: u64,
    len: u64,
    blkno: u64,
    flags: u64,
}

impl Ext {
    fn end(&self) -> u64 {
        self.start + self.len
    }

    fn unwritten(&self) -> bool {
        self.flags & DATA_EXTENT_FLAG_UNWRITTEN != 0
    }
}

fn data_offset(blkno: u64) -> u64 {
    blkno * BS
}

impl State {
    /// The extents of `ino` that overlap logical blocks `first..=last`, in order.
    fn extents(&self, ino: u64, first: u64, last: u64) -> FsResult<Vec<Ext>> {
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
    fn extents_from(&self, ino: u64, from: u64, limit: usize) -> FsResult<Vec<Ext>> {
        let items = self.client.read_items_limit(
            &data_extent_key(ino, from),
            &data_extent_key(ino, u64::MAX),
            limit,
        )?;
        items.iter().map(|it| self.decode_extent(it)).collect()
    }

    fn decode_extent(&self, it: &crate::btree::Item) -> FsResult<Ext> {
        let d = DataExtent::read_from_bytes(&it.val)
            .map_err(|_| FsError::Corrupt("data extent item of the wrong size"))?;
        let e = Ext {
            start: it.key.second,
            len: d.len.get(),
            blkno: d.blkno.get(),
            flags: d.flags.get(),
        };
        if e.len == 0
            || e.len > MAX_EXTENT_BLOCKS
            || e.start.checked_add(e.len).is_none()
            || e.blkno
                .checked_add(e.len)
                .is_none_or(|end| end > self.data_blocks)
        {
            return Err(FsError::Corrupt("data extent out of range"));
        }
        Ok(e)
    }

    fn put_extent(&mut self, ino: u64, e: &Ext) -> FsResult<()> {
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
    fn split_extent(&mut self, ino: u64, e: &Ext, at: u64) -> FsResult<(Ext, Ext)> {
        let a = Ext {
            len: at - e.start,
            ..*e
        };
        let b = Ext {
            start: at,
            len: e.end() - at,
            blkno: e.blkno + (at - e.start),
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
        for e in self.extents(ino, first, last)? {
            if e.unwritten() {
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
    fn write_data(&self, buf: &[u8], at: u64) -> FsResult<()> {
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
    /// bytes, everything else is zero.
    fn fill_blocks(
        &self,
        e: &Ext,
        b0: u64,
        b1: u64,
        off: u64,
        data: &[u8],
        keep_old: bool,
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
        }
        buf[(lo - b0 * BS) as usize..(hi - b0 * BS) as usize]
            .copy_from_slice(&data[(lo - off) as usize..(hi - off) as usize]);
        Ok(buf)
    }

    /// Write the part of `data` (at file offset `off`) that falls in extent `e` from
    /// block `b` on; returns the block after it.
    fn write_into(
        &mut self,
        ino: u64,
        e: &Ext,
        b: u64,
        last: u64,
        off: u64,
        data: &[u8],
    ) -> FsResult<u64> {
        let b1 = e.end().min(last + 1);
        if e.unwritten() {
            let buf = self.fill_blocks(e, b, b1, off, data, false)?;
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
            let buf = self.fill_blocks(e, b, b1, off, data, true)?;
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
            .fill_blocks(&e, b, e.end(), off, data, false)
            .and_then(|buf| self.write_blocks(&e, b, &buf));
        if let Err(err) = res {
            self.client.free_data(ino, b)?;
            return Err(err);
        }
        *allocated += got.len;
        Ok(e.end())
    }

    pub(super) fn write(&mut self, ino: u64, off: u64, data: &[u8]) -> FsResult<u32> {
        self.file_inode(ino)?;
        if data.is_empty() {
            return Ok(0);
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
        self.client
            .reserve(4 + 3 * ((last - first) / MAX_EXTENT_BLOCKS + 1) as usize + exts.len())?;
        let mut allocated = 0u64;
        let mut short = false;
        let mut b = first;
        let mut i = 0;
        while b <= last {
            let cur = exts.get(i).copied();
            let step = match cur {
                Some(e) if e.start <= b => {
                    i += 1;
                    self.write_into(ino, &e, b, last, off, data)
                }
                _ => self.write_hole(ino, cur, b, last, off, data, &mut allocated),
            };
            match step {
                Ok(next) => b = next,
                // Out of space or a failed device part-way: a short write of what is
                // done, so the size covers every block written past the old end.
                Err(_) if b > first => {
                    short = true;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        // Blocks before `b` hold their bytes now.
        let end = if short { end.min(b * BS) } else { end };
        let mut inode = self.inode(ino)?;
        inode.online_blocks = (inode.online_blocks.get() + allocated).into();
        if end > inode.size.get() {
            inode.size = end.into();
        }
        inode.data_version = (inode.data_version.get() + 1).into();
        inode.data_seq = self.client.trans_seq().into();
        inode.mtime = raw_time(self.now);
        inode.ctime = raw_time(self.now);
        self.put_inode(ino, &mut inode)?;
        Ok((end - off) as u32)
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
        let end = off
            .checked_add(len)
            .filter(|&e| e <= MAX_FILE_SIZE)
            .ok_or(FsError::FileTooBig)?;
        let first = off / BS;
        let last = (end - 1) / BS;
        let exts = self.extents(ino, first, last)?;
        self.client
            .reserve(4 + 2 * ((last - first) / MAX_EXTENT_BLOCKS + 1) as usize)?;
        // First logical block of each extent allocated here, to give back on failure.
        let mut made = Vec::new();
        let done: FsResult<()> = 'change: {
            let mut allocated = 0u64;
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
                        match self.client.alloc_data_flags(ino, b, want, flags) {
                            Ok(got) => {
                                made.push(b);
                                allocated += got.len;
                                b += got.len;
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
            if !keep_size && end > inode.size.get() {
                inode.size = end.into();
                inode.data_version = (inode.data_version.get() + 1).into();
                inode.mtime = raw_time(self.now);
            }
            inode.ctime = raw_time(self.now);
            self.put_inode(ino, &mut inode)
        };
        if done.is_err() {
            // Unwritten extents hold no bytes: freeing them loses nothing.
            for start in made {
                self.client.free_data(ino, start)?;
            }
        }
        done
    }

    /// Set the size of a regular file: shrinking frees the extents past the new end and
    /// zeroes the rest of its last block; growing leaves a hole.
    pub(super) fn truncate(&mut self, ino: u64, size: u64) -> FsResult<()> {
        let mut inode = self.file_inode(ino)?;
        let old = inode.size.get();
        if size < old {
            self.freeing = true;
        }
        inode.size = size.into();
        inode.data_version = (inode.data_version.get() + 1).into();
        inode.data_seq = self.client.trans_seq().into();
        inode.mtime = raw_time(self.now);
        inode.ctime = raw_time(self.now);
        // The size goes first: if the freeing below spans commits, what a crash leaves
        // is blocks past the end, never a size over freed blocks.
        self.put_inode(ino, &mut inode)?;
        if size >= old {
            // Extents past the end (fallocate with keep_size) stay.
            return Ok(());
        }
        let keep = size.div_ceil(BS);
        let mut freed = 0u64;
        // The extent across the new end keeps its head; those after it go whole, read
        // a batch at a time.
        if let Some(e) = self
            .extents(ino, keep, keep)?
            .into_iter()
            .find(|e| e.start < keep)
        {
            self.client.reserve(4)?;
            let tail = self.split_extent(ino, &e, keep)?.1;
            self.client.free_data(ino, tail.start)?;
            freed += tail.len;
        }
        let mut from = keep;
        loop {
            let batch = self.extents_from(ino, from, 256)?;
            let Some(last) = batch.last().copied() else {
                break;
            };
            for e in batch {
                self.client.reserve(2)?;
                self.client.free_data(ino, e.start)?;
                freed += e.len;
            }
            from = last.end();
        }
        // Zero the rest of the new last block.
        if !size.is_multiple_of(BS) {
            let b = size / BS;
            if let Some(e) = self.extents(ino, b, b)?.into_iter().find(|e| e.start <= b) {
                if !e.unwritten() {
                    let mut blk = vec![0u8; BS as usize];
                    let at = data_offset(e.blkno + (b - e.start));
                    self.data.read_at(&mut blk, at)?;
                    blk[(size % BS) as usize..].fill(0);
                    self.write_data(&blk, at)?;
                }
            }
        }
        if freed > 0 {
            let mut inode = self.inode(ino)?;
            inode.online_blocks = inode.online_blocks.get().saturating_sub(freed).into();
            self.put_inode(ino, &mut inode)?;
        }
        Ok(())
    }
}
