//! A mount's transactions: its log btree, the allocators the server gave it, the commit
//! that hands both back to the server, reads of the whole filesystem, and merge work.
//!
//! A [`Client`] holds one open transaction at a time. Its changes wait in an item cache of
//! dirty items, each stamped with [`Client::item_seq`] (the transaction's seq or the seq
//! floor a lock granted, whichever is greater); a delete is a deletion item that hides
//! older versions wherever they are. The cache counts, as items arrive, the log btree
//! blocks writing them will copy.
//!
//! Operations hold the transaction: an operation declares what it will change before its
//! first change ([`Client::begin`] with a [`Reservation`]: items, value bytes, data extent
//! changes, data blocks), and the transaction commits *then*, before the operation, if its
//! metadata list might not cover the dirty items and the reservation, or the dirty memory
//! would pass its bound. Between [`Client::enter_op`] and [`Client::leave_op`] nothing
//! commits: an operation's changes all land in one commit, or none do. An operation too
//! large for one transaction is made of steps, each leaving the filesystem consistent
//! ([`Client::step`]; the next `begin` may commit). Changes made outside an operation
//! (an embedder using the client directly) are each an operation of their own: the
//! transaction commits before one when it is short. [`Client::commit`]
//! writes the items into the log btree in key order, sets their groups' bits in the
//! tree's bloom filter, writes the lists and every dirty block, flushes, and only then
//! sends `COMMIT_LOG_TREES`; the server's reply to the
//! following `GET_LOG_TREES` opens the next transaction with refilled allocators (and, if
//! the tree was finalized for a merge, a fresh tree).
//!
//! Reads ([`Client::read_items`]) merge the filesystem root and the log trees as the
//! server last committed them (skipping trees whose bloom filter rules the keys out) with
//! this mount's log tree and dirty items. [`Client::merge_once`]
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
//! Not yet: a cache of clean items (every read walks the trees; the blocks are cached),
//! and the locks that would grant seq floors and keep such a cache coherent.

use crate::alloc::{AllocError, AllocRoot, Extent, ListAlloc};
use crate::block::{BlockCache, BlockError, BlockRead, BlockWriter};
use crate::btree::{self, BtreeError, Item, TreeTxn};
use crate::device::BlockDevice;
use crate::format::*;
use crate::transport::{RemoteErrorKind, Request, Response, Transport, TransportError};
use std::sync::Arc;
use zerocopy::{FromBytes, IntoBytes};

mod cache;
pub mod locks;
mod srch;

pub use srch::SrchCompactor;

/// Default memory bound of a transaction: the dirty items and the blocks their commit
/// will write, in bytes, after which the transaction commits.
pub const DEFAULT_DIRTY_LIMIT: usize = 32 << 20;

/// Key neighbourhoods (runs of adjacent keys) one operation's items fall in at most:
/// see `Client::reservation_blocks`. The most is a rename across directories over an
/// open target (which becomes an orphan): each directory's inode item, entries by name
/// and entries by position (6), the two inodes' items (2) and the orphan item (1);
/// and in the seq indexes the old items of the four inodes' meta_seq and of the two
/// files' data_seq (6) and the runs of the transaction's new meta_seq and data_seq items
/// (2).
const OP_NEIGHBOURHOODS: usize = 17;

/// Fewest dirty blocks a merge request may use however small the dirty limit (a path
/// through a deep subtree and its splits), so that every request makes progress.
const MIN_MERGE_BLOCKS: usize = 32;

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
    /// A change asked of a read-only mount.
    #[error("the mount is read-only")]
    ReadOnly,
    /// The operation needs a cluster lock its mount does not hold (see [`locks`]): it
    /// changed nothing yet, and runs again once the lock is taken.
    #[error("the operation needs the cluster lock at {start:?} in mode {mode:?}")]
    NeedLock {
        /// The lock's first key.
        start: Key,
        /// Its last key.
        end: Key,
        /// The mode it needs.
        mode: crate::transport::LockMode,
    },
}

impl ClientError {
    /// Whether this is a read of a block that was freed and reused since its reference
    /// was read (newer roots exist).
    pub fn is_stale(&self) -> bool {
        match self {
            ClientError::Btree(e) | ClientError::Volume(crate::volume::VolumeError::Btree(e)) => {
                is_stale(e)
            }
            _ => false,
        }
    }
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

/// What an operation will change, declared before its first change ([`Client::begin`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reservation {
    /// Item changes: inserts, replacements, deletions, totals, data extents allocated or
    /// freed (each call of the client that changes an item counts one).
    pub items: usize,
    /// Bytes of the values it writes.
    pub bytes: usize,
    /// Changes of the data extent allocators (extents allocated or freed).
    pub data_changes: usize,
    /// Data blocks it may allocate.
    pub data_blocks: u64,
    /// Whether it grows the metadata (refused when the server says LOW); an operation
    /// that frees more than it adds (an unlink, a truncate) may use the reserve.
    pub allocating: bool,
}

impl Reservation {
    /// `items` item changes that grow the metadata.
    pub fn allocating(items: usize) -> Reservation {
        Reservation {
            items,
            allocating: true,
            ..Reservation::default()
        }
    }

    /// `items` item changes of an operation that frees more than it adds.
    pub fn freeing(items: usize) -> Reservation {
        Reservation {
            items,
            ..Reservation::default()
        }
    }

    /// With `bytes` of values.
    pub fn bytes(self, bytes: usize) -> Reservation {
        Reservation { bytes, ..self }
    }

    /// With `changes` data extent changes allocating up to `blocks` data blocks.
    pub fn data(self, changes: usize, blocks: u64) -> Reservation {
        Reservation {
            data_changes: changes,
            data_blocks: blocks,
            ..self
        }
    }

    /// Both reservations together.
    pub fn and(self, o: Reservation) -> Reservation {
        Reservation {
            items: self.items + o.items,
            bytes: self.bytes + o.bytes,
            data_changes: self.data_changes + o.data_changes,
            data_blocks: self.data_blocks + o.data_blocks,
            allocating: self.allocating || o.allocating,
        }
    }
}

/// The operation holding the transaction (see [`Client::enter_op`]).
#[derive(Clone, Debug, Default)]
struct OpHold {
    /// Changes made since the operation began or its last step.
    changes: usize,
    /// What it declared since then.
    reserved: Reservation,
    /// Whether it declared anything since then.
    begun: bool,
    /// What the items it changed since then held before, oldest first, to undo them
    /// if it fails ([`Client::abort_op`]).
    undo: Vec<(Key, Option<cache::Dirty>)>,
    /// Inode count changes since then.
    inode_delta: i64,
    /// Whether it changed the data allocators since then (which cannot be undone).
    data_changed: bool,
    /// What the srch entries it logged since then held before, oldest first.
    srch_undo: Vec<(Key, Option<cache::Dirty>)>,
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
    items: cache::ItemCache,
    /// The srch entries logged in the open transaction (module `srch`).
    srch: cache::ItemCache,
    /// The mount's srch log file as the open transaction began.
    srch_file: RawSrchFile,
    seq_floor: std::sync::atomic::AtomicU64,
    dirty_limit: usize,
    dirty: bool,
    poisoned: bool,
    /// Opened with [`Client::open_read_only`]: no log tree, no changes, no requests that
    /// change the volume.
    read_only: bool,
    /// The log tree's `inode_count_delta` as the server has it (at the last load).
    loaded_inode_delta: u64,
    /// See [`Client::set_server_flushes_meta`].
    server_flushes_meta: bool,
    /// File data written for this transaction's items; flushed before its commit.
    data_dev: Option<Arc<dyn BlockDevice>>,
    /// The shared roots reads last started from.
    snap: parking_lot::Mutex<Option<Arc<Snapshot>>>,
    /// A merge completion the server has not acknowledged (its reply was lost, or the
    /// server failed before its commit): sent again before new merge work.
    unsent_completion: Option<LogMergeComplete>,
    /// The super seq at which this mount last asked the server again for space it was
    /// refused (with transports that do not publish the server's space).
    space_asked_seq: u64,
    /// The operation holding the transaction, if one does.
    op: Option<OpHold>,
    /// The mount's cluster locks, if operations are checked against them ([`locks`]).
    item_locks: Option<Arc<dyn locks::ItemLocks>>,
    /// The locks the running operation uses.
    op_locks: parking_lot::Mutex<locks::OpLocks>,
    /// Locks written in the open transaction (by their first key).
    written_locks: parking_lot::Mutex<std::collections::HashSet<Key>>,
    /// Operations that changed more items than they declared.
    overruns: u64,
    /// A deliberate bug for mutation tests: changes inside an operation may commit.
    early_commit: bool,
}

/// Every log tree record with its bloom block, if it has one.
type TreeBlooms = Vec<(LogTrees, Option<Arc<[u8]>>)>;

/// The shared roots of one server commit, with what reads need of its log trees.
#[derive(Debug)]
struct Snapshot {
    seq: u64,
    fs_root: BtreeRoot,
    logs_root: BtreeRoot,
    srch_root: BtreeRoot,
    /// Every log tree record and its bloom block.
    trees: TreeBlooms,
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
        match transport.call(Request::Greeting {
            rid,
            reconnect: false,
        })? {
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
        let mut c = Self::new(transport, meta, cache, rid, seed, lt, false);
        c.load(lt)?;
        Ok(c)
    }

    fn new(
        transport: Arc<dyn Transport>,
        meta: Arc<dyn BlockDevice>,
        cache: Arc<BlockCache>,
        rid: u64,
        seed: u64,
        lt: LogTrees,
        read_only: bool,
    ) -> Client {
        Client {
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
            items: cache::ItemCache::default(),
            srch: cache::ItemCache::default(),
            srch_file: lt.srch_file,
            seq_floor: Default::default(),
            dirty_limit: DEFAULT_DIRTY_LIMIT,
            dirty: false,
            poisoned: false,
            read_only,
            loaded_inode_delta: lt.inode_count_delta.get(),
            server_flushes_meta: false,
            data_dev: None,
            snap: Default::default(),
            unsent_completion: None,
            space_asked_seq: 0,
            op: None,
            item_locks: None,
            op_locks: Default::default(),
            written_locks: Default::default(),
            overruns: 0,
            early_commit: false,
        }
    }

    /// A client that only reads: it asks the server for nothing that changes the volume
    /// (no greeting, no log tree of its own, no merge work, no farewell), reads the roots
    /// of the last committed super (or of a server in the same process, which a read-only
    /// mount never makes commit), and refuses every change with [`ClientError::ReadOnly`].
    /// `rid` must be no mount's id, so that every log tree is read as another mount's.
    pub fn open_read_only(
        transport: Arc<dyn Transport>,
        meta: Arc<dyn BlockDevice>,
        cache: Arc<BlockCache>,
        rid: u64,
    ) -> Client {
        Self::new(transport, meta, cache, rid, 0, LogTrees::default(), true)
    }

    /// Count `delta` inodes made (or, negative, deleted) in the open transaction: its log
    /// tree's `inode_count_delta`, committed with the items that made or deleted them.
    pub fn add_inode_count(&mut self, delta: i64) {
        if let Some(op) = &mut self.op {
            op.inode_delta += delta;
        }
        let d = self.lt.inode_count_delta.get().wrapping_add_signed(delta);
        self.lt.inode_count_delta = d.into();
    }

    /// The inodes the open transaction made less those it deleted (what the server's
    /// [`crate::server::ServerCore::inode_count`] does not count yet).
    pub fn pending_inode_count(&self) -> i64 {
        self.lt
            .inode_count_delta
            .get()
            .wrapping_sub(self.loaded_inode_delta) as i64
    }

    /// Say that the server writes its super to this client's meta device (the same
    /// device, written through the same descriptor: a server in this process) and
    /// flushes it before, as every server commit does. The blocks the client wrote are then
    /// durable before any super that references them without a flush of the client's own:
    /// a commit costs one flush of the meta device less (four in all with the data
    /// device's, not five). Without it (the default) the client flushes before every
    /// request that hands the server blocks it wrote.
    pub fn set_server_flushes_meta(&mut self, yes: bool) {
        self.server_flushes_meta = yes;
    }

    /// Make the blocks written so far durable before the server is told of them, unless
    /// the server's own flush of the same device does (see
    /// [`Client::set_server_flushes_meta`]).
    fn flush_meta(&self) -> Result<()> {
        if !self.server_flushes_meta {
            self.meta.flush()?;
        }
        Ok(())
    }

    /// Whether the client was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
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
        self.loaded_inode_delta = lt.inode_count_delta.get();
        self.items = cache::ItemCache::default();
        self.srch = cache::ItemCache::default();
        self.srch_file = lt.srch_file;
        self.dirty = false;
        // What was written under locks is committed: their invalidation need not commit.
        self.written_locks.lock().clear();
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

    /// The seq floor the mount was granted (see [`Client::grant_seq_floor`]).
    pub fn seq_floor(&self) -> u64 {
        self.seq_floor.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Raise the seq floor: every item written from now on carries at least `seq`
    /// ([`Client::item_seq`]). A lock grant gives a mount the floor that makes its new
    /// versions beat every version another mount wrote before the grant; the floor must
    /// come from the server's one counter of seqs, so that it stays below every
    /// transaction seq the server opens after the grant (finalization relies on that).
    /// A floor never goes down.
    pub fn grant_seq_floor(&mut self, seq: u64) {
        self.raise_floor(seq);
    }

    /// [`Client::grant_seq_floor`] through a shared reference (a lock taken while an
    /// operation reads).
    fn raise_floor(&self, seq: u64) {
        self.seq_floor
            .fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
    }

    /// The seq of the items written now: the transaction's seq or the floor, whichever
    /// is greater.
    pub fn item_seq(&self) -> u64 {
        self.trans_seq().max(self.seq_floor())
    }

    /// Memory of a transaction after which it commits: its dirty items and the blocks
    /// their commit will write (leaves and paths copied, new leaves filled). Log merge
    /// work stops a request at as many dirty blocks (and returns the rest of its range).
    pub fn set_dirty_limit(&mut self, bytes: usize) {
        self.dirty_limit = bytes.max(1);
    }

    /// Dirty items waiting in the item cache.
    pub fn dirty_items(&self) -> usize {
        self.items.len()
    }

    /// Memory the open transaction holds by the count the dirty limit is checked
    /// against: its dirty items and the blocks their commit will write.
    pub fn dirty_bytes(&self) -> usize {
        let bs = self.cache.geometry().block_size;
        self.items.memory(bs) + self.srch.memory(bs)
    }

    /// Blocks one direct change (of the data extent trees) may allocate: a path through
    /// each tree it touches, split at every level, plus what the commit needs for the
    /// lists.
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

    /// Blocks the commit may need for the dirty items, with room for one more.
    fn cache_budget(&self) -> usize {
        let h = self.item_root.height as usize + 2;
        let bs = self.cache.geometry().block_size;
        let srch = if self.srch.len() == 0 {
            0
        } else {
            let hs = self.srch_root().height as usize + 2;
            self.srch.commit_blocks(hs, bs) + 3 * hs
        };
        self.items.commit_blocks(h, bs) + 3 * h + srch
    }

    /// The srch log file's tree as the open transaction began.
    fn srch_root(&self) -> BtreeRoot {
        self.srch_file.root.into()
    }

    /// Before a change: commit early if the list may not cover writing the dirty items and
    /// this change, or the item cache holds its limit; refuse an allocating change when the
    /// server said LOW.
    fn hold(&mut self, allocating: bool) -> Result<()> {
        if self.read_only {
            return Err(ClientError::ReadOnly);
        }
        if self.poisoned {
            return Err(ClientError::Poisoned);
        }
        if let Some(op) = &mut self.op {
            // Inside an operation nothing commits: it declared its changes at `begin`,
            // which made room for them.
            debug_assert!(op.begun, "a change in an operation that declared nothing");
            op.changes += 1;
            if op.changes > op.reserved.items {
                self.overruns += 1;
            }
            if self.alloc.avail_len() < self.cache_budget() + self.op_budget() {
                // The list may not cover this change's commit: the reservation was
                // too small. Counted (tests require none); the change goes on.
                self.overruns += 1;
            }
            if !self.early_commit {
                return Ok(());
            }
        }
        // The server refills from its reserve even when LOW, so commit for more either way.
        let short = self.alloc.avail_len() < self.cache_budget() + self.op_budget();
        if short || self.dirty_bytes() >= self.dirty_limit {
            self.commit_for_room()?;
        }
        if allocating {
            self.check_space()?;
        }
        Ok(())
    }

    /// Whether a change that allocates metadata may go on: [`ClientError::NoSpace`] if
    /// the server marked this mount LOW and still does. A mount told LOW asks again (a
    /// commit, which opens the next transaction with the server's present answer) when
    /// the server may have space back, so the space frees gave back reaches a mount that
    /// has nothing to commit. Operations check it before their first change.
    pub fn check_space(&mut self) -> Result<()> {
        if !self.meta_low() {
            return Ok(());
        }
        if self.space_may_be_back(|r| !r.meta_low)? {
            self.commit()?;
        }
        if self.meta_low() {
            return Err(ClientError::NoSpace);
        }
        Ok(())
    }

    /// After the server said LOW: whether space may have come back since, so that asking
    /// again (a commit, which opens the next transaction with the server's present
    /// answer) is worth it. A server in this process publishes the answer (`back` reads
    /// it); otherwise the mount asks once per server commit.
    fn space_may_be_back(
        &mut self,
        back: impl Fn(&crate::transport::CommittedRoots) -> bool,
    ) -> Result<bool> {
        if let Some(r) = self.transport.committed_roots() {
            return Ok(back(&r));
        }
        let seq = crate::volume::read_super(&*self.meta, "meta")?.seq.get();
        if seq == self.space_asked_seq {
            return Ok(false);
        }
        self.space_asked_seq = seq;
        Ok(true)
    }

    /// Put a dirty item into the cache, counting what writing it will cost.
    fn stage(&mut self, key: &Key, flags: u8, val: Vec<u8>) -> Result<()> {
        self.cover_write(key)?;
        let max = btree::max_value_len(self.cache.geometry().block_size);
        if val.len() > max {
            return Err(BtreeError::ValueTooLarge {
                len: val.len(),
                max,
            }
            .into());
        }
        self.items.account(&self.wri, &self.item_root, key)?;
        let seq = self.item_seq();
        let old = self.items.put(*key, cache::Dirty { seq, flags, val });
        if let Some(op) = &mut self.op {
            op.undo.push((*key, old));
        }
        self.dirty = true;
        Ok(())
    }

    /// A direct change of the data extent trees.
    fn change<T>(
        &mut self,
        f: impl FnOnce(&mut TreeTxn<'_>, &mut AllocRoot, &mut AllocRoot) -> btree::Result<T>,
    ) -> Result<T> {
        self.dirty = true;
        if let Some(op) = &mut self.op {
            op.data_changed = true;
        }
        let mut t = TreeTxn {
            wri: &mut self.wri,
            alloc: &mut self.alloc,
        };
        match f(&mut t, &mut self.data_avail, &mut self.data_freed) {
            Ok(v) => Ok(v),
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

    /// The version of `key` in this mount's own log tree and item cache, newest first.
    fn own_version(&self, key: &Key) -> Result<Option<(u8, Vec<u8>)>> {
        if let Some(d) = self.items.get(key) {
            return Ok(Some((d.flags, d.val.clone())));
        }
        Ok(btree::lookup(&self.wri, &self.item_root, key)?.map(|it| (it.flags, it.val)))
    }

    /// Insert or replace an item (an allocating operation).
    pub fn insert(&mut self, key: &Key, val: &[u8]) -> Result<()> {
        self.hold(true)?;
        self.stage(key, 0, val.to_vec())
    }

    /// Add `lanes` (little-endian i64s) to the total kept at `key` (an allocating
    /// operation). Totals are delta items: each transaction's additions are summed in the
    /// item cache and the log btree, and readers and the merge sum the deltas of every
    /// tree; a total that sums to zero reads as absent. A key holds totals only, never
    /// plain values ([`BtreeError::Exists`] if this mount's newest version of it is not a
    /// total).
    pub fn add_delta(&mut self, key: &Key, lanes: &[i64]) -> Result<()> {
        self.hold(true)?;
        let add: Vec<u8> = lanes.iter().flat_map(|v| v.to_le_bytes()).collect();
        let val = match (self.items.get(key), self.own_version(key)?) {
            (Some(d), _) if d.flags & ITEM_FLAG_DELTA != 0 => btree::add_deltas(&d.val, &add),
            (None, None) => add,
            (None, Some((flags, _))) if flags & ITEM_FLAG_DELTA != 0 => add,
            _ => return Err(BtreeError::Exists(*key).into()),
        };
        self.stage(key, ITEM_FLAG_DELTA, val)
    }

    /// Delete an item: a deletion item, which hides every older version and deletes the
    /// key from the filesystem root when merged (a freeing operation: allowed when LOW).
    pub fn delete(&mut self, key: &Key) -> Result<()> {
        self.hold(false)?;
        self.stage(key, ITEM_FLAG_DELETION, Vec::new())
    }

    /// The open transaction's own version of `key`, if it changed the item: `Some(None)`
    /// if it deleted it, `Some(Some(value))` if it wrote it. A lookup in the dirty items
    /// only (no tree is read).
    pub fn dirty_value(&self, key: &Key) -> Option<Option<&[u8]>> {
        self.items.get(key).map(|d| {
            if d.flags & ITEM_FLAG_DELETION != 0 {
                None
            } else {
                Some(&d.val[..])
            }
        })
    }

    /// The item with `key` as the filesystem holds it for this mount (see
    /// [`Client::read_items`]).
    pub fn get(&self, key: &Key) -> Result<Option<Item>> {
        Ok(self.read_items(key, key)?.pop())
    }

    /// The items of `start..=end` as the filesystem holds them for this mount: the
    /// filesystem root and the log trees as last committed by the server (those whose
    /// bloom filter may hold the range), this mount's log tree and its dirty items,
    /// merged (greatest seq wins, deletions hide, deltas sum; log versions already merged
    /// into the root are not counted twice).
    ///
    /// The roots are those of the server's last commit: published by a server in this
    /// process, else read from the super on the device; the log tree records and bloom
    /// blocks they lead to are kept until a commit replaces them. A block that turns out
    /// stale (freed and reused since those roots were read) means newer roots exist: the
    /// read starts again with them; the same roots going stale twice is corruption.
    pub fn read_items(&self, start: &Key, end: &Key) -> Result<Vec<Item>> {
        self.read_items_limit(start, end, usize::MAX)
    }

    /// At most `limit` items of `start..=end`, the first ones in key order, as
    /// [`Client::read_items`] reads them (a bounded scan: its cost follows `limit`, not
    /// the size of the range).
    pub fn read_items_limit(&self, start: &Key, end: &Key, limit: usize) -> Result<Vec<Item>> {
        self.cover_read(start, end)?;
        let mut stale_seq = None;
        loop {
            let snap = self.snapshot()?;
            let roots = self.forest_roots(&snap, start, end);
            match self.read_roots(&roots, start, end, limit) {
                Err(e) if is_stale(&e) => {
                    if stale_seq == Some(snap.seq) {
                        return Err(e.into());
                    }
                    stale_seq = Some(snap.seq);
                }
                r => return Ok(r?),
            }
        }
    }

    /// The last item of `start..=end` as [`Client::read_items`] reads it: a backward
    /// search, whose cost follows the versions it passes over (deletions not yet merged
    /// into the root) rather than the size of the range.
    pub fn read_last(&self, start: &Key, end: &Key) -> Result<Option<Item>> {
        self.cover_read(start, end)?;
        let mut hi = *end;
        while hi >= *start {
            let mut stale_seq = None;
            let last = loop {
                let snap = self.snapshot()?;
                let roots = self.forest_roots(&snap, start, &hi);
                match self.last_key(&roots, start, &hi) {
                    Err(e) if is_stale(&e) => {
                        if stale_seq == Some(snap.seq) {
                            return Err(e.into());
                        }
                        stale_seq = Some(snap.seq);
                    }
                    r => break r?,
                }
            };
            let Some(key) = last else {
                return Ok(None);
            };
            // The newest version of the last key of any tree: a deletion (or a total of
            // zero) hides it, and the search goes on below it.
            if let Some(it) = self.get(&key)? {
                return Ok(Some(it));
            }
            match key.prev() {
                Some(k) => hi = k,
                None => break,
            }
        }
        Ok(None)
    }

    /// The greatest key of `start..=end` in any of `roots` or the dirty items, whatever
    /// its version says.
    fn last_key(&self, roots: &[BtreeRoot], start: &Key, end: &Key) -> btree::Result<Option<Key>> {
        let mut last = self.items.range(start, end).next_back().map(|(k, _)| *k);
        for root in roots {
            if let Some(it) = btree::prev(&self.wri, root, end)? {
                if it.key >= *start && last.is_none_or(|k| it.key > k) {
                    last = Some(it.key);
                }
            }
        }
        Ok(last)
    }

    /// The shared roots of the server's last commit with their log tree records and
    /// bloom blocks, read again only when a new commit has replaced them.
    fn snapshot(&self) -> Result<Arc<Snapshot>> {
        let mut stale_seq = None;
        loop {
            let (seq, fs_root, logs_root, srch_root) = match self.transport.committed_roots() {
                Some(r) => (r.seq, r.fs_root, r.logs_root, r.srch_root),
                None => {
                    let sb = crate::volume::read_super(&*self.meta, "meta")?;
                    (
                        sb.seq.get(),
                        sb.fs_root.into(),
                        sb.logs_root.into(),
                        sb.srch_root.into(),
                    )
                }
            };
            if let Some(s) = &*self.snap.lock() {
                if (s.seq, s.fs_root, s.logs_root, s.srch_root)
                    == (seq, fs_root, logs_root, srch_root)
                {
                    return Ok(s.clone());
                }
            }
            let load = || -> Result<TreeBlooms> {
                let mut trees = Vec::new();
                for t in crate::logs::all_log_trees(&self.wri, &logs_root)? {
                    let bloom: BlockRef = t.bloom_ref.into();
                    let blk = if bloom.is_none() {
                        None
                    } else {
                        Some(
                            self.cache
                                .read(bloom, MAGIC_BLOOM, crate::bloom::validate)?,
                        )
                    };
                    trees.push((t, blk));
                }
                Ok(trees)
            };
            match load() {
                Ok(trees) => {
                    let s = Arc::new(Snapshot {
                        seq,
                        fs_root,
                        logs_root,
                        srch_root,
                        trees,
                    });
                    *self.snap.lock() = Some(s.clone());
                    return Ok(s);
                }
                Err(e) if e.is_stale() && stale_seq != Some(seq) => stale_seq = Some(seq),
                Err(e) => return Err(e),
            }
        }
    }

    /// The roots a read of `start..=end` visits: the filesystem root first, then every
    /// other log tree whose bloom filter may hold the range, then this mount's.
    fn forest_roots(&self, snap: &Snapshot, start: &Key, end: &Key) -> Vec<BtreeRoot> {
        let mut roots: Vec<BtreeRoot> = vec![snap.fs_root];
        let groups = crate::bloom::groups_of_range(start, end);
        for (t, bloom) in &snap.trees {
            if t.rid.get() == self.rid && t.nr.get() == self.lt.nr.get() {
                continue;
            }
            let root: BtreeRoot = t.item_root.into();
            if root.is_empty() {
                continue;
            }
            if let (Some(groups), Some(blk)) = (&groups, bloom) {
                if !groups.iter().any(|g| crate::bloom::may_contain(blk, *g)) {
                    continue;
                }
            }
            roots.push(root);
        }
        roots.push(self.item_root);
        roots
    }

    fn read_roots(
        &self,
        roots: &[BtreeRoot],
        start: &Key,
        end: &Key,
        limit: usize,
    ) -> btree::Result<Vec<Item>> {
        let mut cur = btree::MergeCursor::new(roots, *start, *end);
        let mut dirty = self.items.range(start, end).peekable();
        let mut out = Vec::new();
        let emit = |out: &mut Vec<Item>, it: Option<Item>| {
            if let Some(it) = it {
                let zero_total = it.flags & ITEM_FLAG_DELTA != 0 && btree::delta_is_zero(&it.val);
                if it.flags & ITEM_FLAG_DELETION == 0 && !zero_total {
                    out.push(it);
                }
            }
        };
        while out.len() < limit {
            let Some(vs) = cur.next_versions(&self.wri)? else {
                break;
            };
            let Some(key) = vs.first().map(|(_, it)| it.key) else {
                continue;
            };
            while let Some((k, d)) = dirty.next_if(|(k, _)| **k < key) {
                emit(&mut out, btree::resolve(None, vec![d.to_item(*k)]));
            }
            let mut base = None;
            let mut logs = Vec::new();
            for (i, it) in vs {
                if i == 0 {
                    base = Some(it);
                } else {
                    logs.push(it);
                }
            }
            // The dirty version is this mount's newest: it goes last among equal seqs.
            if let Some((k, d)) = dirty.next_if(|(k, _)| **k == key) {
                logs.push(d.to_item(*k));
            }
            emit(&mut out, btree::resolve(base, logs));
        }
        for (k, d) in dirty {
            if out.len() >= limit {
                break;
            }
            emit(&mut out, btree::resolve(None, vec![d.to_item(*k)]));
        }
        out.truncate(limit);
        Ok(out)
    }

    /// Allocate up to `len` data blocks for inode `ino` at logical block `iblock` and
    /// record them as a data extent item (fewer blocks if no free extent is that long).
    pub fn alloc_data(&mut self, ino: u64, iblock: u64, len: u64) -> Result<Extent> {
        self.alloc_data_flags(ino, iblock, len, 0)
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
        if self.op.is_some() {
            // An operation asked for its data blocks at `begin`; it does not commit
            // for more.
            self.hold(true)?;
            if self.data_avail.total_len == 0 {
                return Err(ClientError::NoSpace);
            }
        } else {
            self.hold(true)?;
            if self.data_avail.total_len == 0 {
                if self.data_low() && !self.space_may_be_back(|r| !r.data_low)? {
                    return Err(ClientError::NoSpace);
                }
                self.commit()?;
                if self.data_avail.total_len == 0 {
                    return Err(ClientError::NoSpace);
                }
                self.hold(true)?;
            }
        }
        let key = data_extent_key(ino, iblock);
        // A deletion item of an extent freed earlier may hold the key (it is replaced);
        // a live extent may not.
        if let Some((flags, _)) = self.own_version(&key)? {
            if flags & ITEM_FLAG_DELETION == 0 {
                return Err(BtreeError::Exists(key).into());
            }
        }
        // Count the item's cost before the extent leaves the allocator.
        self.items.account(&self.wri, &self.item_root, &key)?;
        let e = self.change(|t, avail, _| match avail.alloc(t, len)? {
            Some(e) => Ok(e),
            None => Err(AllocError::NoSpace.into()),
        })?;
        let val = DataExtent {
            blkno: e.start.into(),
            len: e.len.into(),
            flags: flags.into(),
        };
        self.stage(&key, 0, val.as_bytes().to_vec())?;
        Ok(e)
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
        self.stage(&key, ITEM_FLAG_DELETION, Vec::new())?;
        self.change(|t, _, freed| freed.insert(t, e.start, e.len))?;
        Ok(e)
    }

    /// Commit the open transaction: write the dirty items into the log btree and its
    /// bloom filter, write the lists and every dirty block, flush, record the new roots
    /// with the server, and open the next transaction. A failure poisons the client.
    pub fn commit(&mut self) -> Result<()> {
        if self.read_only {
            return Err(ClientError::ReadOnly);
        }
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
        let max_seq = self.items.max_seq();
        self.write_items(&mut lt)?;
        self.write_srch(&mut lt)?;
        let flags = lt.meta_avail.flags.get();
        let (avail, freed) = self.alloc.write_lists(&mut self.wri, flags)?;
        lt.meta_avail = avail;
        lt.meta_freed = freed;
        lt.item_root = self.item_root.into();
        lt.data_avail = self.data_avail.into();
        lt.data_freed = self.data_freed.into();
        lt.max_item_seq = lt
            .max_item_seq
            .get()
            .max(lt.get_trans_seq.get())
            .max(max_seq)
            .into();
        self.wri.write_all()?;
        self.flush_meta()?;
        let next = match self.transport.call(Request::CommitLogTrees(Box::new(lt)))? {
            Response::LogTrees(next) => *next,
            _ => return Err(TransportError::Unexpected.into()),
        };
        self.load(next)
    }

    /// Write the item cache into the log btree in key order (a total joins this tree's
    /// older delta of its key) and set the bits of their groups in the tree's bloom block.
    fn write_items(&mut self, lt: &mut LogTrees) -> Result<()> {
        let items = self.items.take();
        if items.is_empty() {
            return Ok(());
        }
        let mut root = self.item_root;
        let mut t = TreeTxn {
            wri: &mut self.wri,
            alloc: &mut self.alloc,
        };
        for (k, d) in &items {
            if d.flags & ITEM_FLAG_DELTA != 0 {
                let val = match btree::lookup(&*t.wri, &root, k)? {
                    Some(old) if old.flags & ITEM_FLAG_DELTA != 0 => {
                        btree::add_deltas(&old.val, &d.val)
                    }
                    _ => d.val.clone(),
                };
                t.force_item(&mut root, k, d.seq, d.flags, &val)?;
            } else {
                t.force_item(&mut root, k, d.seq, d.flags, &d.val)?;
            }
        }
        self.item_root = root;
        let mut groups: Vec<(u8, u64)> = items.keys().map(crate::bloom::group_of).collect();
        groups.dedup();
        let mut bloom: BlockRef = lt.bloom_ref.into();
        if !bloom.is_none() {
            let blk = self
                .wri
                .read_block(bloom, MAGIC_BLOOM, crate::bloom::validate)?;
            groups.retain(|g| !crate::bloom::may_contain(&blk, *g));
        }
        if groups.is_empty() {
            return Ok(());
        }
        if bloom.is_none() {
            bloom = self
                .wri
                .new_block(&mut self.alloc, MAGIC_BLOOM, crate::bloom::validate)?;
        } else {
            self.wri.dirty_ref(
                &mut self.alloc,
                &mut bloom,
                MAGIC_BLOOM,
                crate::bloom::validate,
            )?;
        }
        let buf = self.wri.get_mut(bloom.blkno)?;
        for g in groups {
            crate::bloom::set_group(buf, g);
        }
        lt.bloom_ref = bloom.into();
        Ok(())
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
        if self.read_only {
            return Ok(false);
        }
        if let Some(comp) = self.unsent_completion {
            self.send_completion(comp)?;
        }
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
            self.send_completion(comp)?;
        }
        match (res, fault) {
            (Err(_), MergeFault::Fail) => Ok(true),
            (r, _) => r.map(|_| true),
        }
    }

    /// Send a merge completion; until the server acknowledges it, it is kept and sent
    /// again by the next [`Client::merge_once`] (the blocks it names stay written, and
    /// the server keeps its request until a completion or an eviction). A completion the
    /// server refuses is dropped: it will never fit.
    fn send_completion(&mut self, comp: LogMergeComplete) -> Result<()> {
        self.unsent_completion = Some(comp);
        match self.transport.call(Request::CommitLogMerge(Box::new(comp))) {
            Ok(Response::Done) => {}
            Ok(_) => return Err(TransportError::Unexpected.into()),
            Err(e) => {
                if matches!(
                    e,
                    TransportError::Remote {
                        kind: RemoteErrorKind::Protocol,
                        ..
                    }
                ) {
                    self.unsent_completion = None;
                }
                return Err(e.into());
            }
        }
        self.unsent_completion = None;
        Ok(())
    }

    /// The merge completion waiting to be sent again, if any.
    pub fn unsent_completion(&self) -> Option<&LogMergeComplete> {
        self.unsent_completion.as_ref()
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
            // The merge's dirty blocks are memory too: no more than a transaction's.
            let dirty_blocks = (self.dirty_limit / bs).max(MIN_MERGE_BLOCKS);
            crate::logs::merge_request(&mut t, req, dirty_blocks, reserve)?
        };
        let (meta_avail, meta_freed) = alloc.write_lists(&mut wri, 0)?;
        wri.write_all()?;
        self.flush_meta()?;
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
        if self.read_only {
            return Ok(());
        }
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

    /// An operation starts: until [`Client::leave_op`] nothing commits, and its changes
    /// must be declared ([`Client::begin`]) before they are made.
    pub fn enter_op(&mut self) {
        self.op = Some(OpHold::default());
    }

    /// The operation is done: the transaction may commit again.
    pub fn leave_op(&mut self) {
        self.op = None;
    }

    /// A step of an operation too large for one transaction is done, and what it changed
    /// leaves the filesystem consistent: the next [`Client::begin`] may commit.
    pub fn step(&mut self) {
        if self.op.is_some() {
            self.op = Some(OpHold::default());
        }
    }

    /// The operation failed: undo its changes since it began or since its last step
    /// (those steps left the filesystem consistent), so that a failed operation leaves
    /// nothing half done. Changes of the data allocators cannot be undone: if it made
    /// any, the mount refuses changes from now on ([`ClientError::Poisoned`]; its
    /// transaction is never committed, and the volume stays as last committed).
    pub fn abort_op(&mut self) {
        let Some(op) = self.op.take() else {
            return;
        };
        if op.data_changed {
            self.poisoned = true;
        } else {
            for (key, old) in op.undo.into_iter().rev() {
                self.items.restore(key, old);
            }
            for (key, old) in op.srch_undo.into_iter().rev() {
                self.srch.restore(key, old);
            }
            self.add_inode_count(-op.inode_delta);
        }
        self.op = Some(OpHold::default());
    }

    /// Changes of operations beyond what they declared, or made with the list shorter
    /// than their commit may need: a sizing bug (tests require none).
    pub fn overruns(&self) -> u64 {
        self.overruns
    }

    /// A deliberate bug for mutation tests: the hold rule is off — an operation's
    /// `begin` makes no room, and its changes commit the transaction whenever it is
    /// short or full, as if no operation held it.
    #[doc(hidden)]
    pub fn set_early_commit(&mut self, yes: bool) {
        self.early_commit = yes;
    }

    /// Declare what the operation (or its step) will change, before its first change:
    /// the transaction is committed first if its list might not cover writing the dirty
    /// items and these changes, or if its dirty memory would pass the bound (a soft bound:
    /// one operation may pass it); an allocating operation is refused
    /// ([`ClientError::NoSpace`]) when the server said LOW; one that allocates data blocks
    /// commits first for more if this mount holds fewer. Declaring more after a change
    /// adds to the reservation without committing (nothing may split the operation).
    pub fn begin(&mut self, r: Reservation) -> Result<()> {
        if self.read_only {
            return Err(ClientError::ReadOnly);
        }
        if self.poisoned {
            return Err(ClientError::Poisoned);
        }
        let changed = self.op.as_ref().is_some_and(|op| op.changes > 0);
        if !changed {
            if !self.early_commit {
                self.make_room(&r)?;
            }
            if r.allocating {
                self.check_space()?;
            }
            if r.data_blocks > 0 {
                self.data_room(r.data_blocks)?;
            }
        }
        if let Some(op) = &mut self.op {
            op.reserved = op.reserved.and(r);
            op.begun = true;
        }
        Ok(())
    }

    /// Whether the open transaction has room for `r` without a commit.
    pub fn has_room(&self, r: &Reservation) -> bool {
        self.alloc.avail_len() >= self.base_need() + self.reservation_blocks(r)
            && !self.memory_full(r)
    }

    /// Blocks the transaction needs before any reservation: its dirty items' commit and
    /// one direct change.
    fn base_need(&self) -> usize {
        self.cache_budget() + self.op_budget()
    }

    /// Blocks `r` may add to the commit. An operation's items fall in a few key
    /// neighbourhoods (an inode's items are adjacent; an operation touches at most a few
    /// inodes and directories): each of up to [`OP_NEIGHBOURHOODS`] of them a new leaf
    /// path of the log btree, the leaf and a split; the leaves its bytes fill, twice
    /// over; and for data extent changes a path through each data allocator tree and a
    /// split per eight changes.
    fn reservation_blocks(&self, r: &Reservation) -> usize {
        // An item may be a srch entry, which goes to the log file's tree.
        let h = self.item_root.height.max(self.srch_root().height) as usize;
        let hd = self.data_avail.root.height.max(self.data_freed.root.height) as usize;
        let half = (self.cache.geometry().block_size / 2).max(1);
        let bytes = r
            .bytes
            .saturating_add(r.items.saturating_mul(cache::ITEM_COST));
        let data = if r.data_changes > 0 {
            2 * (hd + 3) + 2 * r.data_changes.div_ceil(8)
        } else {
            0
        };
        r.items.min(OP_NEIGHBOURHOODS) * (h + 3) + 2 * bytes.div_ceil(half) + data
    }

    /// Whether the transaction's dirty memory with `r` would pass its bound.
    fn memory_full(&self, r: &Reservation) -> bool {
        let bs = self.cache.geometry().block_size;
        let add = r.bytes + r.items * 128 + bs;
        self.dirty && self.dirty_bytes() + add > self.dirty_limit
    }

    /// Commit before an operation if the transaction may not hold it (see
    /// [`Client::begin`]). When the transaction is short and the server LOW, do log merge
    /// work to get space back; refuse with [`ClientError::NoSpace`] if there is none.
    fn make_room(&mut self, r: &Reservation) -> Result<()> {
        let avail = self.alloc.avail_len();
        let base = self.base_need();
        let short = avail < base || (self.dirty && avail < base + self.reservation_blocks(r));
        if !short && !self.memory_full(r) {
            return Ok(());
        }
        self.commit_for_room()
    }

    /// Commit to get room. Short, LOW, and the server had nothing more to give (its
    /// reserve for mounts is spent): the log merge is what gives space back, so do some
    /// of it and ask again; if there is none to do, refuse the change before it is made
    /// ([`ClientError::NoSpace`]) rather than fail the commit that would write it.
    fn commit_for_room(&mut self) -> Result<()> {
        let mut before = self.alloc.avail_len();
        self.commit()?;
        while self.alloc.avail_len() < self.base_need()
            && self.meta_low()
            && self.alloc.avail_len() <= before
        {
            if !self.merge_once()? {
                return Err(ClientError::NoSpace);
            }
            before = self.alloc.avail_len();
            self.commit()?;
        }
        Ok(())
    }

    /// Before an operation that may allocate `blocks` data blocks: commit for more if this
    /// mount holds fewer (unless the server said data is LOW and has not got more since).
    fn data_room(&mut self, blocks: u64) -> Result<()> {
        if self.data_avail.total_len >= blocks {
            return Ok(());
        }
        if self.data_low() && !self.space_may_be_back(|r| !r.data_low)? {
            return Ok(());
        }
        if self.dirty || self.data_avail.total_len == 0 {
            self.commit()?;
        }
        Ok(())
    }

    /// [`Client::insert`] as part of an operation that frees more than it adds (an
    /// unlink updating its directory's inode): allowed when LOW, from the reserve.
    pub fn insert_freeing(&mut self, key: &Key, val: &[u8]) -> Result<()> {
        self.hold(false)?;
        self.stage(key, 0, val.to_vec())
    }
}
