//! A mount's transactions: its log btree, the allocators the server gave it, and the
//! commit that hands both back to the server.
//!
//! A [`Client`] holds one open transaction at a time. Its changes go into its own log
//! btree with blocks from its metadata alloc list; file data comes from its data extents.
//! [`Client::commit`] writes the lists and every dirty block, flushes, and only then sends
//! `COMMIT_LOG_TREES`; the server's reply to the following `GET_LOG_TREES` opens the next
//! transaction with refilled allocators.
//!
//! Space: when the server marks the metadata list LOW, operations that grow the tree
//! ([`Client::insert`], [`Client::alloc_data`]) fail with [`ClientError::NoSpace`] while
//! freeing ones ([`Client::delete`], [`Client::free_data`]) go on, so space can be
//! recovered. Data is the same: with no extents left and the data flag LOW,
//! [`Client::alloc_data`] fails with ENOSPC; with none left and not LOW it commits to get
//! more.

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

fn is_no_space(e: &BtreeError) -> bool {
    matches!(e, BtreeError::Block(BlockError::Alloc(AllocError::NoSpace)))
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

    /// Delete an item from the log btree (a freeing operation: allowed when LOW).
    pub fn delete(&mut self, key: &Key) -> Result<()> {
        self.hold(false)?;
        self.change(|t, root, _, _| t.delete(root, key))
    }

    /// The item with `key` in the log btree as this transaction sees it.
    pub fn get(&self, key: &Key) -> Result<Option<Item>> {
        Ok(btree::lookup(&self.wri, &self.item_root, key)?)
    }

    /// Allocate up to `len` data blocks for inode `ino` at logical block `iblock` and
    /// record them as a data extent item (fewer blocks if no free extent is that long).
    pub fn alloc_data(&mut self, ino: u64, iblock: u64, len: u64) -> Result<Extent> {
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
            let Some(e) = avail.alloc(t, len)? else {
                return Err(AllocError::NoSpace.into());
            };
            let val = DataExtent {
                blkno: e.start.into(),
                len: e.len.into(),
                flags: 0.into(),
            };
            t.insert_item(root, &key, seq, 0, val.as_bytes())?;
            Ok(e)
        })
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
        self.change(|t, root, _, freed| {
            t.delete(root, &key)?;
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
}
