//! The archive agent's operations on file data: release, stage, setattr_more, stat_more,
//! statfs_more and fiemap (the original's ioctls of the same names).
//!
//! An archive agent copies a file's bytes to an archive, then *releases* them: the data
//! blocks are freed and the extents stay as offline extents ([`DATA_EXTENT_FLAG_OFFLINE`],
//! no blocks, counted in `offline_blocks`). Reading an offline block waits until the agent
//! *stages* the bytes back (module `waits`). A file restored from the archive is made with
//! `setattr_more`: its size and `data_version` set and the whole of it offline.
//!
//! Invariants: both take the `data_version` the agent saw and fail with
//! [`FsError::Stale`] if the file changed since; neither changes it (nor `data_seq`, nor
//! the times: the file's contents are the same), only `meta_seq` moves. Offline extents
//! lie below the block the size ends in: release drops what it frees past the size
//! rather than making it offline (those bytes are not the file's), and everything that
//! could move the size over an offline block waits for the whole file first. An offline
//! extent may be longer than [`MAX_EXTENT_BLOCKS`] (a restored file of any size is one
//! extent item); the extent covering a block is then found by a backward search
//! ([`State::extents_offline`]), which only files with offline blocks need.
//!
//! Crash atomicity: a release of up to a few dozen extents is one transaction. A larger
//! one writes a release record ([`release_key`]) with its first step, moves it on with
//! each step (each leaves the extents and the inode's counts in step), and deletes it with
//! the last: a mount that finds a record finishes the release, so after a power cut the
//! file is wholly as before or wholly released. A stage of up to [`WRITE_STEP`] bytes is
//! one transaction when the mount holds the data extents it needs (its bytes are written
//! to fresh blocks, which the commit makes part of the file); a larger one, or one that
//! fills the transaction, is made of such steps and a crash keeps a prefix of it, each
//! block wholly offline or wholly staged.

use super::data::{one_extent, Ext};
use super::*;

const BS: u64 = DATA_BLOCK_SIZE;

/// What [`Fs::stat_more`] tells of an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatMore {
    /// Transaction seq of its last change.
    pub meta_seq: u64,
    /// Transaction seq of its last change of contents.
    pub data_seq: u64,
    /// Grows whenever its contents may change.
    pub data_version: u64,
    /// Data blocks on the data device (written and unwritten).
    pub online_blocks: u64,
    /// Data blocks released to an archive.
    pub offline_blocks: u64,
    /// Creation time.
    pub crtime: Timespec,
    /// Size in bytes.
    pub size: u64,
}

/// What [`Fs::statfs_more`] tells of the volume and the mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatfsMore {
    /// The volume's id.
    pub fsid: u64,
    /// The mount's id.
    pub rid: u64,
    /// The greatest transaction seq every change of which is committed: inode seqs at or
    /// below it no longer move.
    pub committed_seq: u64,
    /// Metadata blocks of the volume.
    pub total_meta_blocks: u64,
    /// Data blocks of the volume.
    pub total_data_blocks: u64,
    /// Metadata blocks held back for frees and the log merge (mounts are told the volume
    /// is low on space when the free blocks fall to it).
    pub reserved_meta_blocks: u64,
}

/// What [`Fs::setattr_more`] sets on an empty regular file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttrMore {
    /// The data_version (0: left as it is, 0); required with a size.
    pub data_version: u64,
    /// The size.
    pub size: u64,
    /// Make all of `0..size` one offline region (its bytes are in the archive).
    pub offline: bool,
    /// The change time (the operation's time if `None`).
    pub ctime: Option<Timespec>,
    /// The creation time (unchanged if `None`).
    pub crtime: Option<Timespec>,
}

/// One extent of [`Fs::fiemap`], in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FiemapExtent {
    /// Offset in the file.
    pub logical: u64,
    /// Offset on the data device (0 for an offline extent).
    pub physical: u64,
    /// Length.
    pub length: u64,
    /// Released to an archive.
    pub offline: bool,
    /// Allocated but never written (reads as zeros).
    pub unwritten: bool,
    /// The file's last extent.
    pub last: bool,
}

/// An offline extent of blocks `start..end`.
fn offline_ext(start: u64, end: u64) -> Ext {
    Ext {
        start,
        len: end - start,
        blkno: 0,
        flags: DATA_EXTENT_FLAG_OFFLINE,
    }
}

/// What turning one extent offline may change in a release step: two splits, the
/// extent's freeing (an allocator change), the offline extent or the run it extends,
/// and a merge.
fn one_release() -> Reservation {
    Reservation::freeing(8).data(1, 0)
}

/// A step of a release: [`DELETE_STEP`] extents, the inode twice with its index items,
/// the record.
fn release_step() -> Reservation {
    Reservation::freeing(4 + INDEX_ITEMS + 8 * DELETE_STEP).data(DELETE_STEP, 0)
}

impl Fs {
    /// Release the data of `len` bytes at `offset` of regular file `ino` (both multiples
    /// of 4 KiB, [`FsError::Invalid`] otherwise; 0 bytes do nothing) if its
    /// `data_version` is still `data_version` ([`FsError::Stale`] otherwise): the data
    /// blocks are freed and their extents stay as offline extents (holes stay holes;
    /// blocks past the size are dropped); `online_blocks` moves to `offline_blocks`. No
    /// block of the file stays online: the extents past the size go too. The
    /// `data_version`, `data_seq` and times stay; crash-atomic (see the module
    /// documentation). Waiters of the file run again, and the front-end's kernel drops
    /// its cached attributes and pages of the file ([`Fs::invalidate_kernel`]), so that
    /// its reads wait for a stage too.
    ///
    /// (The contract's `Fs::release`: that name is the release of an open handle.)
    pub fn release_data(&self, ino: u64, offset: u64, len: u64, data_version: u64) -> FsResult<()> {
        let res = self.op(|st| st.release_data(ino, offset, len, data_version));
        self.waits.changed(ino);
        self.invalidate_kernel(ino, ino, true);
        res
    }

    /// Write `data` back at `offset` of regular file `ino`, whose `data_version` must
    /// still be `data_version` ([`FsError::Stale`]), into its offline blocks: `offset` a
    /// multiple of 4 KiB and the end too, unless it is the size; the end at most the size
    /// ([`FsError::Invalid`] otherwise). The offline blocks of the range get fresh blocks
    /// with these bytes and come online (zeros after the size in the last block); blocks
    /// of the range that are online or holes are left as they are (at this data_version
    /// they hold these bytes already). The `data_version`, `data_seq` and times stay.
    /// Atomic up to [`WRITE_STEP`] bytes; a larger stage goes in steps of it, and an error
    /// part-way (the data device full) leaves the steps done staged. Waiters of the file
    /// run again, and the front-end's kernel drops its cached attributes of the file
    /// ([`Fs::invalidate_kernel`]).
    pub fn stage(&self, ino: u64, offset: u64, data: &[u8], data_version: u64) -> FsResult<()> {
        let res = self.op(|st| st.stage(ino, offset, data, data_version));
        self.waits.changed(ino);
        self.invalidate_kernel(ino, ino, false);
        res
    }

    /// Restore the attributes of an archived file on a regular file that has never had
    /// contents (`data_version` 0, no data blocks): `data_version` (0: left as it is, and
    /// then `size` must be 0), the size, with `offline` the whole of `0..size` one offline
    /// region (`size` must not be 0), the change time (given, or now) and the creation
    /// time (if given). Anything else is [`FsError::Invalid`] ([`FsError::IsDir`] on a
    /// directory). One transaction. The front-end's kernel drops its cached attributes
    /// and pages of the file ([`Fs::invalidate_kernel`]).
    pub fn setattr_more(&self, ino: u64, set: &SetAttrMore) -> FsResult<()> {
        let res = self.op(|st| st.setattr_more(ino, set));
        self.waits.changed(ino);
        self.invalidate_kernel(ino, ino, true);
        res
    }

    /// The archive attributes of inode `ino` (any kind).
    pub fn stat_more(&self, ino: u64) -> FsResult<StatMore> {
        self.op_read(|st| {
            let i = st.inode(ino)?;
            Ok(StatMore {
                meta_seq: i.meta_seq.get(),
                data_seq: i.data_seq.get(),
                data_version: i.data_version.get(),
                online_blocks: i.online_blocks.get(),
                offline_blocks: i.offline_blocks.get(),
                crtime: api_time(&i.crtime),
                size: i.size.get(),
            })
        })
    }

    /// The volume's ids and sizes, and the committed seq.
    pub fn statfs_more(&self) -> FsResult<StatfsMore> {
        let rid = self.st.lock().rid;
        let committed_seq = self.committed_seq()?;
        let v = self.volume_stats()?;
        Ok(StatfsMore {
            fsid: v.fsid,
            rid,
            committed_seq,
            total_meta_blocks: v.total_meta_blocks,
            total_data_blocks: v.total_data_blocks,
            reserved_meta_blocks: v.reserved_meta_blocks,
        })
    }

    /// The extents of regular file `ino` that overlap `len` bytes at `offset` (0 bytes:
    /// [`FsError::Invalid`]), whole, in order; neighbours of the same kind whose blocks
    /// follow on are reported as one, as the original's extent items are merged.
    pub fn fiemap(&self, ino: u64, offset: u64, len: u64) -> FsResult<Vec<FiemapExtent>> {
        self.op_read(|st| st.fiemap(ino, offset, len))
    }
}

impl Ext {
    pub(super) fn offline(&self) -> bool {
        self.flags & DATA_EXTENT_FLAG_OFFLINE != 0
    }
}

impl State {
    /// [`State::extents`], also finding an offline extent longer than
    /// [`MAX_EXTENT_BLOCKS`] that starts before the range it reads and covers `first`.
    pub(super) fn extents_offline(&self, ino: u64, first: u64, last: u64) -> FsResult<Vec<Ext>> {
        let mut out = self.extents(ino, first, last)?;
        let window = first.saturating_sub(MAX_EXTENT_BLOCKS - 1);
        if window > 0 && out.first().is_none_or(|e| e.start > first) {
            let found = self
                .client
                .read_last(&data_extent_key(ino, 0), &data_extent_key(ino, window - 1))?;
            if let Some(it) = found {
                let e = self.decode_extent(&it)?;
                if e.end() > first {
                    out.insert(0, e);
                }
            }
        }
        Ok(out)
    }

    /// The first offline block of `ino` in `first..=last`, if any (only a file with
    /// offline blocks has one).
    fn first_offline(
        &self,
        ino: u64,
        inode: &Inode,
        first: u64,
        last: u64,
    ) -> FsResult<Option<u64>> {
        if inode.offline_blocks.get() == 0 || first > last {
            return Ok(None);
        }
        if let Some(e) = self.extents_offline(ino, first, first)?.first() {
            if e.offline() {
                return Ok(Some(first));
            }
        }
        let mut from = first;
        loop {
            let batch = self.extents_from(ino, from, DELETE_STEP)?;
            let Some(end) = batch.last().map(Ext::end) else {
                return Ok(None);
            };
            for e in batch {
                if e.start > last {
                    return Ok(None);
                }
                if e.offline() {
                    return Ok(Some(e.start.max(first)));
                }
            }
            from = end;
        }
    }

    /// If bytes `off..off + len` of `ino` touch an offline block, a waiter of `op` for the
    /// first such block, registered while the state lock is held (see module `waits`).
    pub(super) fn offline_wait(
        &self,
        waits: &Arc<waits::Waits>,
        ino: u64,
        inode: &Inode,
        off: u64,
        len: u64,
        op: u8,
    ) -> FsResult<Option<DataWait>> {
        if len == 0 || inode.offline_blocks.get() == 0 {
            return Ok(None);
        }
        let last = off.saturating_add(len - 1) / BS;
        Ok(self
            .first_offline(ino, inode, off / BS, last)?
            .map(|b| waits.register(ino, b, op)))
    }

    /// If regular file `ino` has offline blocks, a waiter of a write for the first (a
    /// write, or anything else that changes the contents, needs the whole file online).
    pub(super) fn whole_file_wait(
        &self,
        waits: &Arc<waits::Waits>,
        ino: u64,
    ) -> FsResult<Option<DataWait>> {
        let inode = self.file_inode(ino)?;
        let size = inode.size.get();
        self.offline_wait(waits, ino, &inode, 0, size, DATA_WAIT_WRITE)
    }

    /// Free the data of extent `e` of `ino` (its blocks, or nothing if offline) and
    /// delete its item; returns the (online, offline) blocks it counted.
    pub(super) fn drop_extent(&mut self, ino: u64, e: &Ext) -> FsResult<(u64, u64)> {
        if e.offline() {
            self.client.delete(&data_extent_key(ino, e.start))?;
            Ok((0, e.len))
        } else {
            self.client.free_data(ino, e.start)?;
            Ok((e.len, 0))
        }
    }

    /// Add `online` and `offline` (either negative) to the counts of `ino`.
    pub(super) fn move_counts(&mut self, ino: u64, online: i64, offline: i64) -> FsResult<()> {
        if online == 0 && offline == 0 {
            return Ok(());
        }
        let mut inode = self.inode(ino)?;
        inode.online_blocks = inode
            .online_blocks
            .get()
            .saturating_add_signed(online)
            .into();
        inode.offline_blocks = inode
            .offline_blocks
            .get()
            .saturating_add_signed(offline)
            .into();
        self.put_inode(ino, &mut inode)
    }

    fn release_data(&mut self, ino: u64, offset: u64, len: u64, data_version: u64) -> FsResult<()> {
        if len == 0 {
            return Ok(());
        }
        let last_byte = offset.checked_add(len - 1).ok_or(FsError::Invalid)?;
        if !offset.is_multiple_of(BS) || !len.is_multiple_of(BS) {
            return Err(FsError::Invalid);
        }
        let inode = self.inode(ino)?;
        if kind_of(&inode)? != FileKind::File {
            return Err(FsError::Invalid);
        }
        if inode.data_version.get() != data_version {
            return Err(FsError::Stale);
        }
        self.release_steps(ino, offset / BS, last_byte / BS, false)
    }

    /// Release blocks `next..=last` of `ino` and then, if no online block is left, drop
    /// the extents past the size, in steps (see the module documentation); `recorded`: a
    /// release record exists already (a mount finishing one).
    fn release_steps(
        &mut self,
        ino: u64,
        mut next: u64,
        last: u64,
        mut recorded: bool,
    ) -> FsResult<()> {
        self.freeing = true;
        let size_blocks = self.inode(ino)?.size.get().div_ceil(BS);
        loop {
            self.begin(release_step())?;
            if self.release_step(ino, &mut next, last, size_blocks)? {
                break;
            }
            let rec = ReleaseRecord {
                next: next.into(),
                last: last.into(),
            };
            self.put(&release_key(ino), rec.as_bytes())?;
            recorded = true;
            self.client.step();
        }
        if recorded {
            self.client.delete(&release_key(ino))?;
        }
        Ok(())
    }

    /// One step of a release; returns whether the release is done.
    fn release_step(
        &mut self,
        ino: u64,
        next: &mut u64,
        last: u64,
        size_blocks: u64,
    ) -> FsResult<bool> {
        let mut budget = DELETE_STEP;
        if *next <= last {
            *next = self.release_part(ino, *next, last, size_blocks, &mut budget)?;
            if *next <= last {
                return Ok(false);
            }
        }
        // Nothing of the file below its size is online: what lies past the size goes too
        // (fallocate's extents kept past it), as the original does (whose unwritten
        // extents are not counted online).
        let online = self.inode(ino)?.online_blocks.get();
        if size_blocks == 0 || online == 0 || online != self.online_from(ino, size_blocks)? {
            return Ok(true);
        }
        let (mut online, mut offline) = (0u64, 0u64);
        let mut done = true;
        for e in self.extents_from(ino, size_blocks, budget + 1)? {
            let started = budget < DELETE_STEP;
            if budget == 0 || (started && !self.client.has_room(&one_release())) {
                done = false;
                break;
            }
            budget -= 1;
            let (on, off) = self.drop_extent(ino, &e)?;
            online += on;
            offline += off;
        }
        self.move_counts(ino, -(online as i64), -(offline as i64))?;
        Ok(done)
    }

    /// The written and unwritten blocks of `ino` from block `from` on.
    fn online_from(&self, ino: u64, mut from: u64) -> FsResult<u64> {
        let mut online = 0;
        loop {
            let batch = self.extents_from(ino, from, DELETE_STEP)?;
            let Some(end) = batch.last().map(Ext::end) else {
                return Ok(online);
            };
            online += batch
                .iter()
                .filter(|e| !e.offline())
                .map(|e| e.len)
                .sum::<u64>();
            from = end;
        }
    }

    /// Turn the written and unwritten extents of `ino` in blocks `from..=last` offline
    /// (below `size_blocks`; dropped past it), merging neighbouring offline extents, up to
    /// `budget` extents or as many as the transaction has room for (one at least);
    /// returns the first block not done (`last + 1` when all are).
    fn release_part(
        &mut self,
        ino: u64,
        from: u64,
        last: u64,
        size_blocks: u64,
        budget: &mut usize,
    ) -> FsResult<u64> {
        // The offline extent that ends where this part starts, to extend.
        let mut run = match from.checked_sub(1) {
            Some(b) => self
                .extents_offline(ino, b, b)?
                .into_iter()
                .find(|e| e.offline() && e.end() == from),
            None => None,
        };
        let mut batch = self.extents_offline(ino, from, from)?;
        batch.retain(|e| e.start < from);
        batch.extend(self.extents_from(ino, from, DELETE_STEP)?);
        let (mut freed, mut made) = (0u64, 0u64);
        let mut b = from;
        let mut first = true;
        'work: while b <= last {
            if batch.is_empty() {
                batch = self.extents_from(ino, b, DELETE_STEP)?;
                if batch.is_empty() {
                    b = last + 1;
                    break;
                }
            }
            for e in std::mem::take(&mut batch) {
                if e.start > last {
                    b = last + 1;
                    break 'work;
                }
                if !first && (*budget == 0 || !self.client.has_room(&one_release())) {
                    break 'work;
                }
                first = false;
                *budget = budget.saturating_sub(1);
                if e.offline() {
                    run = Some(match run {
                        Some(mut r) if r.end() == e.start => {
                            self.client.delete(&data_extent_key(ino, e.start))?;
                            r.len += e.len;
                            self.put_extent(ino, &r)?;
                            r
                        }
                        _ => e,
                    });
                    b = e.end();
                    continue;
                }
                // The part of the extent in the range, split off.
                let (a, c) = (e.start.max(b), e.end().min(last + 1));
                let mut part = e;
                if part.start < a {
                    part = self.split_extent(ino, &part, a)?.1;
                }
                if part.end() > c {
                    part = self.split_extent(ino, &part, c)?.0;
                }
                self.client.free_data(ino, a)?;
                freed += part.len;
                let off_end = c.min(size_blocks).max(a);
                if off_end > a {
                    let off = offline_ext(a, off_end);
                    let r = match run {
                        Some(mut r) if r.end() == a => {
                            r.len += off.len;
                            r
                        }
                        _ => off,
                    };
                    self.put_extent(ino, &r)?;
                    made += off.len;
                    run = Some(r);
                }
                if off_end < c {
                    // Past the size: dropped, a hole now.
                    run = None;
                }
                b = c;
            }
        }
        self.move_counts(ino, -(freed as i64), made as i64)?;
        Ok(b)
    }

    /// Finish a release a crash interrupted (its record `val`).
    pub(super) fn finish_release(&mut self, ino: u64, val: &[u8]) -> FsResult<()> {
        let rec = ReleaseRecord::read_from_bytes(val)
            .map_err(|_| FsError::Corrupt("release record of the wrong size"))?;
        self.client.step();
        self.release_steps(ino, rec.next.get(), rec.last.get(), true)
    }

    fn stage(&mut self, ino: u64, offset: u64, data: &[u8], data_version: u64) -> FsResult<()> {
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::Invalid)?;
        if !offset.is_multiple_of(BS) {
            return Err(FsError::Invalid);
        }
        if data.is_empty() {
            return Ok(());
        }
        let inode = self.inode(ino)?;
        let size = inode.size.get();
        if kind_of(&inode)? != FileKind::File
            || end > size
            || (!end.is_multiple_of(BS) && end != size)
        {
            return Err(FsError::Invalid);
        }
        if inode.data_version.get() != data_version {
            return Err(FsError::Stale);
        }
        for (i, chunk) in data.chunks(WRITE_STEP).enumerate() {
            self.client.step();
            self.stage_step(ino, offset + (i * WRITE_STEP) as u64, chunk)?;
        }
        Ok(())
    }

    /// Stage `data` (non-empty, at block-aligned `off`, within the size) into the offline
    /// blocks it covers: one transaction unless the transaction fills (then in steps).
    fn stage_step(&mut self, ino: u64, off: u64, data: &[u8]) -> FsResult<()> {
        let first = off / BS;
        let last = (off + data.len() as u64 - 1) / BS;
        let offline: Vec<Ext> = self
            .extents_offline(ino, first, last)?
            .into_iter()
            .filter(Ext::offline)
            .collect();
        if offline.is_empty() {
            return Ok(());
        }
        let blocks: u64 = offline
            .iter()
            .map(|e| e.end().min(last + 1) - e.start.max(first))
            .sum();
        let pieces = (blocks / MAX_EXTENT_BLOCKS) as usize + 2 * offline.len();
        let res = Reservation::allocating(4 + INDEX_ITEMS + 3 * offline.len() + 2 * pieces)
            .data(2 * pieces, blocks);
        self.begin(res)?;
        let mut staged = 0u64;
        for o in offline {
            let (a, c) = (o.start.max(first), o.end().min(last + 1));
            // The offline extent gives up `a..c`: its head keeps its key, its tail gets one.
            if o.start < a {
                self.put_extent(
                    ino,
                    &Ext {
                        len: a - o.start,
                        ..o
                    },
                )?;
            } else {
                self.client.delete(&data_extent_key(ino, o.start))?;
            }
            if o.end() > c {
                let tail = Ext {
                    start: c,
                    len: o.end() - c,
                    ..o
                };
                self.put_extent(ino, &tail)?;
            }
            let mut b = a;
            while b < c {
                let full = staged > 0 && !self.client.has_room(&one_extent());
                let res_b = if full {
                    Err(FsError::NoSpace)
                } else {
                    self.stage_blocks(ino, b, c, off, data)
                };
                match res_b {
                    Ok(n) => {
                        b += n;
                        staged += n;
                    }
                    Err(FsError::NoSpace) if staged > 0 => {
                        // The transaction is full, or this mount's data extents are
                        // spent (a commit brings more): what is done is a step, the
                        // rest offline until the next one takes it up.
                        self.put_extent(ino, &offline_ext(b, c))?;
                        self.move_counts(ino, staged as i64, -(staged as i64))?;
                        staged = 0;
                        self.client.step();
                        self.begin(res)?;
                        self.client.delete(&data_extent_key(ino, b))?;
                    }
                    Err(err) => {
                        // What is not staged stays offline; what is, stays staged.
                        self.put_extent(ino, &offline_ext(b, c))?;
                        self.move_counts(ino, staged as i64, -(staged as i64))?;
                        self.client.step();
                        return Err(err);
                    }
                }
            }
        }
        self.move_counts(ino, staged as i64, -(staged as i64))
    }

    /// Allocate an extent at block `b` (up to `end`, fewer blocks if free space is short)
    /// and write into it the bytes of `data` (at `off`) it covers, zeros after them;
    /// returns its length. An extent whose data could not be written is freed.
    fn stage_blocks(&mut self, ino: u64, b: u64, end: u64, off: u64, data: &[u8]) -> FsResult<u64> {
        let got = self
            .client
            .alloc_data(ino, b, (end - b).min(MAX_EXTENT_BLOCKS))?;
        let mut buf = vec![0u8; (got.len * BS) as usize];
        let lo = (b * BS - off) as usize;
        let hi = (((b + got.len) * BS - off) as usize).min(data.len());
        buf[..hi - lo].copy_from_slice(&data[lo..hi]);
        if let Err(err) = self.write_data(&buf, got.start * BS) {
            self.client.free_data(ino, b)?;
            return Err(err);
        }
        Ok(got.len)
    }

    fn setattr_more(&mut self, ino: u64, set: &SetAttrMore) -> FsResult<()> {
        let mut inode = self.file_inode(ino)?;
        if inode.data_version.get() != 0
            || (set.size > 0 && set.data_version == 0)
            || (set.offline
                && (set.size == 0
                    || inode.online_blocks.get() > 0
                    || inode.offline_blocks.get() > 0))
        {
            return Err(FsError::Invalid);
        }
        self.begin(Reservation::allocating(3 + INDEX_ITEMS))?;
        if set.offline {
            let e = offline_ext(0, set.size.div_ceil(BS));
            self.put_extent(ino, &e)?;
            inode.offline_blocks = e.len.into();
        }
        inode.size = set.size.into();
        inode.ctime = raw_time(set.ctime.unwrap_or(self.now));
        if let Some(t) = set.crtime {
            inode.crtime = raw_time(t);
        }
        if set.data_version != 0 {
            // Restored contents: data_seq moves with the version the agent gives.
            inode.data_version = set.data_version.wrapping_sub(1).into();
            return self.put_contents(ino, &mut inode);
        }
        self.put_inode(ino, &mut inode)
    }

    fn fiemap(&self, ino: u64, offset: u64, len: u64) -> FsResult<Vec<FiemapExtent>> {
        self.file_inode(ino)?;
        if len == 0 {
            return Err(FsError::Invalid);
        }
        let first = offset / BS;
        let last = offset.saturating_add(len - 1) / BS;
        let mut out: Vec<FiemapExtent> = Vec::new();
        let mut batch = self.extents_offline(ino, first, first)?;
        batch.retain(|e| e.start < first);
        let mut from = first;
        let mut more = true;
        while more {
            batch.extend(self.extents_from(ino, from, DELETE_STEP)?);
            let Some(end) = batch.last().map(Ext::end) else {
                break;
            };
            for e in std::mem::take(&mut batch) {
                if e.start > last {
                    more = false;
                    break;
                }
                let x = FiemapExtent {
                    logical: e.start * BS,
                    physical: if e.offline() { 0 } else { e.blkno * BS },
                    length: e.len * BS,
                    offline: e.offline(),
                    unwritten: e.unwritten(),
                    last: false,
                };
                match out.last_mut() {
                    Some(p)
                        if p.logical + p.length == x.logical
                            && (p.offline, p.unwritten) == (x.offline, x.unwritten)
                            && (x.offline || p.physical + p.length == x.physical) =>
                    {
                        p.length += x.length;
                    }
                    _ => out.push(x),
                }
            }
            from = end;
        }
        if let Some(l) = out.last_mut() {
            // The last of the file if no extent follows it.
            let end_block = (l.logical + l.length) / BS;
            if self.extents_from(ino, end_block, 1)?.is_empty() {
                l.last = true;
            }
        }
        Ok(out)
    }
}
