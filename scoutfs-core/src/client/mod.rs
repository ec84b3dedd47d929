//! A mount's transactions: its log btree, the allocators the server gave it, the commit
//! that hands both back to the server, reads of the whole filesystem, and merge work.
//!
//! A [`Client`] holds one open transaction at a time. Its changes go into its own log
//! btree, every item stamped with the transaction's seq; a delete writes a deletion item
//! that hides older versions wherever they are. Blocks come from its metadata alloc list;
//! file data from its data extents. [`Client::commit`] writes the lists and every dirty
//! block, flushes, and only then sends `COMMIT_LOG_TREES`; the server's reply to the
//! following `GET_LOG_TREES` opens the next transaction with refilled allocators (and, if
//! the tree was finalized for a merge, a fresh tree).
//!
//! Reads ([`Client::read_items`]) merge the filesystem root and every log tree as the
//! server last committed them with this mount's open transaction. [`Client::merge_once`]
//! does one unit of log merge work for the server.
//!
//! Space: when the server marks the metadata list LOW, operations that grow the tree
//! ([`Client::insert`], [`Client::alloc_data`]) fail with [`ClientError::NoSpace`] while
//! freeing ones ([`Client::delete`], [`Client::free_data`]) go on from the reserve; the
//! space comes back when the log tree is merged (LOW finalizes it). Data is the same: with
//! no extents left and the data flag LOW, [`Client::alloc_data`] fails with ENOSPC; with
//! none left and not LOW it commits to get more.
//!
//! Totals ([`Client::add_delta`]) are delta items, summed within the log btree, by the
//! merge and by readers.
//!
//! Not yet: the item cache (changes go straight into the log btree), the seq floor a lock
//! grants, and bloom filters (a read visits every log tree).

use crate::alloc::{AllocError, AllocRoot, Extent, ListAlloc};
use crate::block::{BlockCache, BlockError, BlockWriter};
use crate::btree::{self, BtreeError, Item, TreeTxn};
use crate::device::BlockDevice;
use crate::format::*;
use crate::transport::{RemoteErrorKind, Request, Response, Transport, TransportError};
use std::sync::Arc;
use zerocopy::{FromBytes, IntoBytes};

/// Errors of a client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No space for an allocating operation (ENOSPC).
    #[error("no space left on the volume")]
    NoSpace,
    /// A block or btree operation failed.
    #[error(transparent)]
    Btree(#[from] BtreeError),
    /// The device failed.
    #[error(transparent)]
    Device(#[from] crate::device::DeviceError),
    /// The server could not be reached or failed the request.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Reading the volume's super failed.
    #[error(transparent)]
    Volume(#[from] crate::volume::VolumeError),
    /// An extent item that is not one.
    #[error("no data extent at inode {ino} block {iblock}")]
    NoExtent {
        /// Inode.
        ino: u64,
        /// Logical block.
        iblock: u64,
    },
    /// An earlier commit failed; the mount must be restarted.
    #[error("an earlier commit failed; the mount must be restarted")]
    Poisoned,
}

impl From<BlockError> for ClientError {
    fn from(e: BlockError) -> Self {
        ClientError::Btree(e.into())
    }
}

/// Result of client operations.
pub type Result<T> = std::result::Result<T, ClientError>;

fn is_stale(e: &BtreeError) -> bool {
    matches!(e, BtreeError::Block(BlockError::Stale { .. }))
}

fn is_no_space(e: &BtreeError) -> bool {
    matches!(e, BtreeError::Block(BlockError::Alloc(AllocError::NoSpace)))
}

/// A fault to inject into a unit of merge work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeFault {
    /// No fault.
    None,
    /// The merge fails: an error completion is sent.
    Fail,
    /// The completion is sent twice (a resend after a lost reply).
    Duplicate,
    /// The mount vanishes after merging: no completion is sent.
    Vanish,
}

/// A mount's transaction state (see the module comment).
#[derive(Debug)]
pub struct Client {
    rid: u64,
    transport: Arc<dyn Transport>,
    meta: Arc<dyn BlockDevice>,
    cache: Arc<BlockCache>,
    seed: u64,
    lt: LogTrees,
    wri: BlockWriter,
    alloc: ListAlloc,
    item_root: BtreeRoot,
    data_avail: AllocRoot,
    data_freed: AllocRoot,
    dirty: bool,
    poisoned: bool,
    /// File data written for this transaction's items; flushed before its commit.
    data_dev: Option<Arc<dyn BlockDevice>>,
}

impl Client {
    /// Mount as `rid`: greet the server and open the first transaction. `cache` reads the
    /// meta device (it may be shared with a server in the same process).
    pub fn mount(
        transport: Arc<dyn Transport>,
        meta: Arc<dyn BlockDevice>,
        cache: Arc<BlockCache>,
        rid: u64,
        seed: u64,
    ) -> Result<Client> {
        match transport.call(Request::Greeting { rid })? {
            Response::Greeting { fsid } if fsid == cache.geometry().fsid => {}
            Response::Greeting { .. } => {
                return Err(TransportError::Remote {
                    kind: RemoteErrorKind::Protocol,
                    msg: "the server serves another volume".into(),
                }
                .into())
            }
            _ => return Err(TransportError::Unexpected.into()),
        }
        let lt = Self::get_log_trees(&*transport, rid)?;
        let mut c = Client {
            rid,
            wri: BlockWriter::new(cache.clone(), seed ^ lt.get_trans_seq.get()),
            transport,
            meta,
            cache,
            seed,
            lt,
            alloc: ListAlloc::default(),
            item_root: BtreeRoot::EMPTY,
            data_avail: AllocRoot::EMPTY,
            data_freed: AllocRoot::EMPTY,
            dirty: false,
            poisoned: false,
            data_dev: None,
        };
        c.load(lt)?;
        Ok(c)
    }

    fn get_log_trees(t: &dyn Transport, rid: u64) -> Result<LogTrees> {
        match t.call(Request::GetLogTrees { rid })? {
            Response::LogTrees(lt) => Ok(*lt),
            _ => Err(TransportError::Unexpected.into()),
        }
    }

    fn load(&mut self, lt: LogTrees) -> Result<()> {
        self.alloc = ListAlloc::load(&*self.cache, &lt.meta_avail, &lt.meta_freed)?;
        self.item_root = lt.item_root.into();
        self.data_avail = lt.data_avail.into();
        self.data_freed = lt.data_freed.into();
        self.wri = BlockWriter::new(
            self.cache.clone(),
            self.seed ^ lt.get_trans_seq.get().rotate_left(17),
        );
        self.lt = lt;
        self.dirty = false;
        Ok(())
    }

    /// The mount's id.
    pub fn rid(&self) -> u64 {
        self.rid
    }

    /// The seq of the open transaction (the seq of every item it writes).
    pub fn trans_seq(&self) -> u64 {
        self.lt.get_trans_seq.get()
    }

    /// The log tree record of the open transaction as the server gave it.
    pub fn log_trees(&self) -> &LogTrees {
        &self.lt
    }

    /// The log btree including this transaction's changes.
    pub fn item_root(&self) -> BtreeRoot {
        self.item_root
    }

    /// The writer of the open transaction.
    pub fn writer(&self) -> &BlockWriter {
        &self.wri
    }

    /// Metadata blocks left in this transaction's list.
    pub fn meta_avail(&self) -> usize {
        self.alloc.avail_len()
    }

    /// Data blocks left in this transaction's extents.
    pub fn data_avail(&self) -> u64 {
        self.data_avail.total_len
    }

    /// Whether the server marked the metadata list LOW.
    pub fn meta_low(&self) -> bool {
        self.lt.meta_avail.flags.get() & ALLOC_FLAG_LOW != 0
    }

    /// Whether the server marked the data extents LOW.
    pub fn data_low(&self) -> bool {
        self.data_avail.flags & ALLOC_FLAG_LOW != 0
    }

    /// Whether the open transaction holds changes.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Blocks one change may allocate: a path through each tree it touches, split at
    /// every level, plus what the commit needs for the lists.
    fn op_budget(&self) -> usize {
        let h = [
            self.item_root.height,
            self.data_avail.root.height,
            self.data_freed.root.height,
        ]
        .into_iter()
        .max()
        .unwrap_or(0) as usize
            + 2;
        let bs = self.cache.geometry().block_size;
        6 * h + self.alloc.commit_cost(bs).unwrap_or(0) + 2
    }

    /// Before a change: commit early if the list may run dry within it; refuse an
    /// allocating change when the server said LOW.
    fn hold(&mut self, allocating: bool) -> Result<()> {
        if self.poisoned {
            return Err(ClientError::Poisoned);
        }
        // The server refills from its reserve even when LOW, so commit for more either way.
        if self.alloc.avail_len() < self.op_budget() {
            self.commit()?;
        }
        if allocating && self.meta_low() {
            return Err(ClientError::NoSpace);
        }
        Ok(())
    }

    fn change<T>(
        &mut self,
        f: impl FnOnce(
            &mut TreeTxn<'_>,
            &mut BtreeRoot,
            &mut AllocRoot,
            &mut AllocRoot,
        ) -> btree::Result<T>,
    ) -> Result<T> {
        self.dirty = true;
        let mut t = TreeTxn {
            wri: &mut self.wri,
            alloc: &mut self.alloc,
        };
        match f(
            &mut t,
            &mut self.item_root,
            &mut self.data_avail,
            &mut self.data_freed,
        ) {
            Ok(v) => Ok(v),
            Err(
                e @ (BtreeError::Exists(_)
                | BtreeError::NotFound(_)
                | BtreeError::ValueTooLarge { .. }),
            ) => Err(e.into()),
            Err(e) => {
                // A change that stopped half-way cannot be committed.
                self.poisoned = true;
                if is_no_space(&e) {
                    Err(ClientError::NoSpace)
                } else {
                    Err(e.into())
                }
            }
        }
    }

    /// Insert or replace an item in the log btree (an allocating operation).
    pub fn insert(&mut self, key: &Key, val: &[u8]) -> Result<()> {
        self.hold(true)?;
        let seq = self.trans_seq();
        self.change(|t, root, _, _| t.force_item(root, key, seq, 0, val))
    }

    /// Add `lanes` (little-endian i64s) to the total kept at `key` (an allocating
    /// operation). Totals are delta items: each transaction's additions are summed in the
    /// log btree, and readers and the merge sum the deltas of every tree; a total that
    /// sums to zero reads as absent. A key holds totals only, never plain values
    /// ([`BtreeError::Exists`] otherwise).
    pub fn add_delta(&mut self, key: &Key, lanes: &[i64]) -> Result<()> {
        self.hold(true)?;
        let seq = self.trans_seq();
        let add: Vec<u8> = lanes.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.change(|t, root, _, _| {
            let val = match btree::lookup(&*t.wri, root, key)? {
                Some(old) if old.flags & ITEM_FLAG_DELTA != 0 => btree::add_deltas(&old.val, &add),
                Some(_) => return Err(BtreeError::Exists(*key)),
                None => add.clone(),
            };
            t.force_item(root, key, seq, ITEM_FLAG_DELTA, &val)
        })
    }

    /// Delete an item: a deletion item in the log btree, which hides every older
    /// version and deletes the key from the filesystem root when merged (a freeing
    /// operation: allowed when LOW).
    pub fn delete(&mut self, key: &Key) -> Result<()> {
        self.hold(false)?;
        let seq = self.trans_seq();
        self.change(|t, root, _, _| t.force_item(root, key, seq, ITEM_FLAG_DELETION, &[]))
    }

    /// The item with `key` as the filesystem holds it for this mount (see
    /// [`Client::read_items`]).
    pub fn get(&self, key: &Key) -> Result<Option<Item>> {
        Ok(self.read_items(key, key)?.pop())
    }

    /// The items of `start..=end` as the filesystem holds them for this mount: the
    /// filesystem root and every log tree as last committed by the server, and this
    /// mount's open transaction, merged (greatest seq wins, deletions hide, deltas sum;
    /// log versions already merged into the root are not counted twice).
    ///
    /// The roots come from the super on the device. A block that turns out stale (freed
    /// and reused since those roots were read) means newer roots exist: the read starts
    /// again with them; the same roots going stale twice is corruption.
    pub fn read_items(&self, start: &Key, end: &Key) -> Result<Vec<Item>> {
        self.read_items_limit(start, end, usize::MAX)
    }

    fn read_items_limit_inner(&self, start: &Key, end: &Key, limit: usize) -> Result<Vec<Item>> {
        let mut stale_roots: Option<Vec<BtreeRoot>> = None;
        loop {
            let sb = crate::volume::read_super(&*self.meta, "meta")?;
            let logs: BtreeRoot = sb.logs_root.into();
            let mut roots: Vec<BtreeRoot> = vec![sb.fs_root.into()];
            let trees = match crate::server::all_log_trees(&self.wri, &logs) {
                Ok(t) => t,
                Err(crate::volume::VolumeError::Btree(e)) if is_stale(&e) => {
                    if stale_roots.as_ref() == Some(&roots) {
                        return Err(ClientError::Btree(e));
                    }
                    stale_roots = Some(roots);
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            for t in trees {
                if t.rid.get() == self.rid && t.nr.get() == self.lt.nr.get() {
                    continue;
                }
                roots.push(t.item_root.into());
            }
            roots.push(self.item_root);
            match self.read_roots(&roots, start, end, limit) {
                Ok(v) => return Ok(v),
                Err(e) if is_stale(&e) => {
                    if stale_roots.as_ref() == Some(&roots) {
                        return Err(ClientError::Btree(e));
                    }
                    stale_roots = Some(roots);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn read_roots(
        &self,
        roots: &[BtreeRoot],
        start: &Key,
        end: &Key,
        limit: usize,
    ) -> btree::Result<Vec<Item>> {
        let mut cur = btree::MergeCursor::new(roots, *start, *end);
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(vs) = cur.next_versions(&self.wri)? else {
                break;
            };
            let mut base = None;
            let mut logs = Vec::new();
            for (i, it) in vs {
                if i == 0 {
                    base = Some(it);
                } else {
                    logs.push(it);
                }
            }
            if let Some(it) = btree::resolve(base, logs) {
                let zero_total = it.flags & ITEM_FLAG_DELTA != 0 && btree::delta_is_zero(&it.val);
                if it.flags & ITEM_FLAG_DELETION == 0 && !zero_total {
                    out.push(it);
                }
            }
        }
        Ok(out)
    }

    /// Allocate up to `len` data blocks for inode `ino` at logical block `iblock` and
    /// record them as a data extent item (fewer blocks if no free extent is that long).
    pub fn alloc_data(&mut self, ino: u64, iblock: u64, len: u64) -> Result<Extent> {
        self.alloc_data_flags(ino, iblock, len, 0)
    }

    /// Free the data extent of inode `ino` at logical block `iblock` (a freeing
    /// operation). Its blocks are reusable once this transaction is committed and the
    /// server has taken them back.
    pub fn free_data(&mut self, ino: u64, iblock: u64) -> Result<Extent> {
        self.hold(false)?;
        let key = data_extent_key(ino, iblock);
        let Some(it) = self.get(&key)? else {
            return Err(ClientError::NoExtent { ino, iblock });
        };
        let de = DataExtent::read_from_bytes(&it.val).map_err(|_| {
            ClientError::Btree(BtreeError::Corrupt {
                blkno: 0,
                reason: "data extent item of the wrong size",
            })
        })?;
        let e = Extent {
            start: de.blkno.get(),
            len: de.len.get(),
        };
        let seq = self.trans_seq();
        self.change(|t, root, _, freed| {
            t.force_item(root, &key, seq, ITEM_FLAG_DELETION, &[])?;
            freed.insert(t, e.start, e.len)?;
            Ok(e)
        })
    }

    /// Commit the open transaction: write the lists and every dirty block, flush, record
    /// the new roots with the server, and open the next transaction. A failure poisons
    /// the client.
    pub fn commit(&mut self) -> Result<()> {
        if self.poisoned {
            return Err(ClientError::Poisoned);
        }
        let res = self.commit_inner();
        if res.is_err() {
            self.poisoned = true;
        }
        res
    }

    fn commit_inner(&mut self) -> Result<()> {
        // File data before the metadata that references it.
        if let Some(d) = &self.data_dev {
            d.flush()?;
        }
        let mut lt = self.lt;
        let flags = lt.meta_avail.flags.get();
        let (avail, freed) = self.alloc.write_lists(&mut self.wri, flags)?;
        lt.meta_avail = avail;
        lt.meta_freed = freed;
        lt.item_root = self.item_root.into();
        lt.data_avail = self.data_avail.into();
        lt.data_freed = self.data_freed.into();
        lt.max_item_seq = lt.get_trans_seq;
        self.wri.write_all()?;
        self.meta.flush()?;
        match self.transport.call(Request::CommitLogTrees(Box::new(lt)))? {
            Response::Done => {}
            _ => return Err(TransportError::Unexpected.into()),
        }
        let next = Self::get_log_trees(&*self.transport, self.rid)?;
        self.load(next)
    }

    /// Do one unit of log merge work, if the server has some: merge a request's inputs
    /// into a private copy of its subtree with the request's blocks, write and flush it,
    /// and send the completion. Returns whether there was a request. A merge that fails
    /// is reported to the server as failed (its range is merged again later) and the
    /// error is returned.
    pub fn merge_once(&mut self) -> Result<bool> {
        self.merge_once_with(MergeFault::None)
    }

    /// [`Client::merge_once`] with a fault injected (simulation and tests).
    pub fn merge_once_with(&mut self, fault: MergeFault) -> Result<bool> {
        let req = match self
            .transport
            .call(Request::GetLogMerge { rid: self.rid })?
        {
            Response::LogMerge(Some(r)) => *r,
            Response::LogMerge(None) => return Ok(false),
            _ => return Err(TransportError::Unexpected.into()),
        };
        let res = match fault {
            MergeFault::Fail => Err(ClientError::Poisoned),
            _ => self.merge_request(&req),
        };
        if fault == MergeFault::Vanish {
            // The merge's work is lost with the mount; its restart cancels the request.
            return Ok(true);
        }
        let comp = match &res {
            Ok(c) => *c,
            Err(_) => LogMergeComplete {
                rid: req.rid,
                seq: req.seq,
                flags: MERGE_COMPLETE_FLAG_ERROR.into(),
                ..LogMergeComplete::default()
            },
        };
        let sends = if fault == MergeFault::Duplicate { 2 } else { 1 };
        for _ in 0..sends {
            match self
                .transport
                .call(Request::CommitLogMerge(Box::new(comp)))?
            {
                Response::Done => {}
                _ => return Err(TransportError::Unexpected.into()),
            }
        }
        match (res, fault) {
            (Err(_), MergeFault::Fail) => Ok(true),
            (r, _) => r.map(|_| true),
        }
    }

    fn merge_request(&mut self, req: &LogMergeRequest) -> Result<LogMergeComplete> {
        let bs = self.cache.geometry().block_size;
        let mut wri = BlockWriter::new(
            self.cache.clone(),
            self.seed ^ req.seq.get().rotate_left(29),
        );
        let mut alloc = ListAlloc::load(&*self.cache, &req.meta_avail, &req.meta_freed)?;
        let have = alloc.avail_len();
        // Room kept for writing the lists at the end, and for one more change (a path
        // copied and split at every level of the subtree).
        let h = BtreeRoot::from(req.root).height as usize + 2;
        let reserve = 2 * have.div_ceil(alloc_list_capacity(bs).max(1)) + 2 + 3 * h;
        let (root, end) = {
            let mut t = TreeTxn {
                wri: &mut wri,
                alloc: &mut alloc,
            };
            crate::server::merge::merge_request(&mut t, req, usize::MAX, reserve)?
        };
        let (meta_avail, meta_freed) = alloc.write_lists(&mut wri, 0)?;
        wri.write_all()?;
        self.meta.flush()?;
        let (flags, remain) = match end {
            btree::MergeEnd::Done => (0, Key::MIN),
            btree::MergeEnd::Remain(k) => (MERGE_COMPLETE_FLAG_REMAIN, k),
        };
        Ok(LogMergeComplete {
            meta_avail,
            meta_freed,
            root: root.into(),
            start: req.start,
            end: req.end,
            remain: (&remain).into(),
            rid: req.rid,
            seq: req.seq,
            flags: flags.into(),
        })
    }

    /// Commit and leave: the server takes back this mount's unused allocators.
    pub fn unmount(mut self) -> Result<()> {
        if self.dirty {
            self.commit()?;
        }
        match self.transport.call(Request::Farewell { rid: self.rid })? {
            Response::Done => Ok(()),
            _ => Err(TransportError::Unexpected.into()),
        }
    }

    /// Flush `data` (the data device file data is written to) before every commit, so
    /// no committed extent item refers to data that is not durable.
    pub fn set_data_device(&mut self, data: Arc<dyn BlockDevice>) {
        self.data_dev = Some(data);
    }

    /// At most `limit` items of `start..=end`, the first ones in key order, as
    /// [`Client::read_items`] reads them (a bounded scan: its cost follows `limit`, not
    /// the size of the range).
    pub fn read_items_limit(&self, start: &Key, end: &Key, limit: usize) -> Result<Vec<Item>> {
        self.read_items_limit_inner(start, end, limit)
    }

    /// Before an operation of about `changes` item changes that should land in one
    /// transaction: commit now if the metadata list might run dry within it (so the
    /// operation's changes are not split by an early commit). Operations larger than
    /// a transaction's list can hold may still be split.
    pub fn reserve(&mut self, changes: usize) -> Result<()> {
        if self.poisoned {
            return Err(ClientError::Poisoned);
        }
        // Each change dirties at most a path of the log btree and a split block per
        // level; blocks it already dirtied are not allocated again.
        let path = 2 * (self.item_root.height as usize + 2);
        let need = self.op_budget() + changes.saturating_mul(path);
        if self.alloc.avail_len() < need && self.dirty {
            self.commit()?;
        }
        Ok(())
    }

    /// [`Client::alloc_data`] with the extent item's `DATA_EXTENT_FLAG_*` flags set in
    /// the same change (an unwritten extent must never be visible as a written one).
    pub fn alloc_data_flags(
        &mut self,
        ino: u64,
        iblock: u64,
        len: u64,
        flags: u64,
    ) -> Result<Extent> {
        self.hold(true)?;
        if self.data_avail.total_len == 0 {
            if self.data_low() {
                return Err(ClientError::NoSpace);
            }
            self.commit()?;
            if self.data_avail.total_len == 0 {
                return Err(ClientError::NoSpace);
            }
            self.hold(true)?;
        }
        let key = data_extent_key(ino, iblock);
        let seq = self.trans_seq();
        self.change(|t, root, avail, _| {
            // A deletion item of an extent freed earlier may hold the key (it is
            // replaced); a live extent may not.
            if let Some(old) = btree::lookup(&*t.wri, root, &key)? {
                if old.flags & ITEM_FLAG_DELETION == 0 {
                    return Err(BtreeError::Exists(key));
                }
            }
            let Some(e) = avail.alloc(t, len)? else {
                return Err(AllocError::NoSpace.into());
            };
            let val = DataExtent {
                blkno: e.start.into(),
                len: e.len.into(),
                flags: flags.into(),
            };
            t.force_item(root, &key, seq, 0, val.as_bytes())?;
            Ok(e)
        })
    }

    /// [`Client::insert`] as part of an operation that frees more than it adds (an
    /// unlink updating its directory's inode): allowed when LOW, from the reserve.
    pub fn insert_freeing(&mut self, key: &Key, val: &[u8]) -> Result<()> {
        self.hold(false)?;
        let seq = self.trans_seq();
        self.change(|t, root, _, _| t.force_item(root, key, seq, 0, val))
    }
}
