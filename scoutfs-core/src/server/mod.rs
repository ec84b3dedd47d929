//! The server: the owner of the super block, its btrees and the allocators.
//!
//! [`ServerCore`] is the pure state machine: requests change the dirty copies of the
//! server's trees in one open transaction, and [`ServerCore::commit`] makes them durable.
//! [`Server`] wraps it for many threads, batching concurrent requests into one commit and
//! replying to each only once the commit that holds its change is durable.
//!
//! A commit, in order (the durability contract of `DESIGN.md`):
//! 1. apply the transaction's claims from and returns to the metadata extent tree, and
//!    write the server's alloc lists ([`pool::MetaPool::prepare_commit`]),
//! 2. write every dirty block (new block numbers only: nothing the stable super
//!    references is overwritten) and flush the meta device,
//! 3. write the super (to the slot its seq selects) and flush again,
//! 4. only then report success, and let the blocks the commit freed be reused.
//!
//! A crash before step 3 completes leaves the previous super, which references only
//! untouched blocks. The previous super stays readable in the other slot, and its blocks
//! stay intact, because blocks freed by commit N are reused only by commit N + 1. A failed
//! write or flush poisons the server: every later change fails until it is reopened.
//!
//! Free space for clients: each mount's [`LogTrees`] record carries the metadata list and
//! data extents its next transaction allocates from, and the lists and extents it freed.
//! [`ServerCore::get_log_trees`] takes back what the client freed, refills it, and marks
//! the lists [`ALLOC_FLAG_LOW`] when the server's pool has fallen into its reserve.

mod evict;
mod group;
pub mod merge;
mod omap;
pub mod pool;
mod srch;

pub use crate::logs::{all_log_trees, latest_log_trees};
pub use group::Server;
pub use merge::{MergeConfig, MergeCounters, MergePhase, MergeStall, MergeStep};

use crate::alloc::list::{read_list, write_new_list};
use crate::alloc::{AllocRoot, ListAlloc};
use crate::block::{BlockCache, BlockWriter};
use crate::btree::{self, BtreeError, TreeTxn};
use crate::device::BlockDevice;
use crate::format::*;
use crate::transport::CommittedRoots;
use crate::volume::{self, Result, VolumeError};
use pool::MetaPool;
use std::sync::Arc;
use zerocopy::{FromZeros, IntoBytes};

/// Sizes that govern how free space moves between the server and its clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocLimits {
    /// Blocks the server keeps in its own alloc list between commits.
    pub server_list_target: usize,
    /// A client's metadata list is refilled when it holds fewer blocks than this...
    pub client_meta_lo: usize,
    /// ...up to this many.
    pub client_meta_target: usize,
    /// Blocks a pass of log merge requests may hold at once (the merge's results before
    /// they are spliced); merge requests are sized from it.
    pub merge_blocks: u64,
    /// Metadata blocks held back for frees and the log merge: clients are marked LOW at
    /// or below it.
    pub meta_reserve: u64,
    /// A client's data extents are refilled when it holds fewer blocks than this...
    pub client_data_lo: u64,
    /// ...up to this many.
    pub client_data_target: u64,
}

impl AllocLimits {
    /// Limits for a volume: lists of one list block (the original's sizes at 64 KiB
    /// blocks), scaled down on small volumes so a test volume has room to fill up. The
    /// reserve holds the server's own list, a pass of merge requests and a client's
    /// list (for frees), at most a quarter of the device.
    pub fn for_volume(sb: &SuperBlock) -> AllocLimits {
        let geo = volume::geometry(sb);
        let meta_blocks = geo.total_blocks.saturating_sub(geo.first_blkno);
        let cap = alloc_list_capacity(geo.block_size).max(1) as u64;
        let client_target = cap.min((meta_blocks / 8).max(64));
        let server_target = cap.min((meta_blocks / 16).max(64));
        // The original's pass: 8 requests of 1028 blocks, or an eighth of the device
        // (fewer requests of at least 32 blocks on a small one).
        let merge_blocks = (8 * 1028).min(meta_blocks / 8).max(32);
        let data_blocks = sb.total_data_blocks.get().saturating_sub(DATA_START_BLKNO);
        // 4 GiB of 4 KiB blocks, as the original, or an eighth of a small device.
        let data_target = (1u64 << 20).min((data_blocks / 8).max(1));
        AllocLimits {
            server_list_target: server_target as usize,
            client_meta_lo: (client_target / 2) as usize,
            client_meta_target: client_target as usize,
            merge_blocks,
            meta_reserve: (server_target + merge_blocks + client_target).min(meta_blocks / 4),
            client_data_lo: (data_target / 4).max(1),
            client_data_target: data_target,
        }
    }
}

/// Options of [`ServerCore::open`].
#[derive(Clone, Copy, Debug)]
pub struct ServerOptions {
    /// Memory bound of the block cache in bytes.
    pub cache_bytes: usize,
    /// Seed of the seqs given to new blocks (random by default; fixed in simulations).
    pub seed: u64,
    /// Allocator sizes; [`AllocLimits::for_volume`] if `None`.
    pub limits: Option<AllocLimits>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            cache_bytes: 64 << 20,
            seed: volume::random_u64(),
            limits: None,
        }
    }
}

/// What a commit did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// The super's seq after the commit.
    pub seq: u64,
    /// Metadata blocks written.
    pub blocks: usize,
    /// Device writes issued for them.
    pub writes: usize,
}

/// The server's btree roots (the dirty copies of the open transaction).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roots {
    /// The merged filesystem btree.
    pub fs_root: BtreeRoot,
    /// Per-mount log tree records.
    pub logs_root: BtreeRoot,
    /// Log merge state.
    pub log_merge: BtreeRoot,
    /// Mounted clients.
    pub mounted_clients: BtreeRoot,
    /// Search files.
    pub srch_root: BtreeRoot,
    /// The data device's free extents.
    pub data_alloc: AllocRoot,
    /// The next inode number to hand out (never reused).
    pub next_ino: u64,
    /// Inodes counted by the log trees merged so far (each log tree adds its
    /// `inode_count_delta` when a merge removes it).
    pub inode_count: u64,
}

impl Roots {
    fn from_super(sb: &SuperBlock) -> Roots {
        Roots {
            fs_root: sb.fs_root.into(),
            logs_root: sb.logs_root.into(),
            log_merge: sb.log_merge.into(),
            mounted_clients: sb.mounted_clients.into(),
            srch_root: sb.srch_root.into(),
            data_alloc: sb.data_alloc.into(),
            next_ino: sb.next_ino.get(),
            inode_count: sb.inode_count.get(),
        }
    }
}

/// Free a list that committed structures name: the blocks holding it always, and the
/// block numbers it holds too if `entries` (they become reusable after this commit).
/// Returns the block numbers it holds when they are not freed.
pub(crate) fn release_list(
    t: &mut TreeTxn<'_>,
    head: &RawAllocListHead,
    entries: bool,
) -> btree::Result<Vec<u64>> {
    let l = read_list(&*t.wri, head)?;
    for r in &l.blocks {
        t.alloc.free_meta(r.blkno)?;
    }
    if !entries {
        return Ok(l.blknos);
    }
    for &b in &l.blknos {
        t.alloc.free_meta(b)?;
    }
    Ok(Vec::new())
}

/// Move every extent of a mount's data extent tree into `pool` and free the tree.
fn drain_extents(
    t: &mut TreeTxn<'_>,
    tree: RawAllocRoot,
    pool: &mut AllocRoot,
) -> btree::Result<()> {
    let ar: AllocRoot = tree.into();
    for e in ar.extents(&*t.wri)? {
        pool.insert(t, e.start, e.len)?;
    }
    btree::free_blocks(t, &ar.root, &Key::MIN, usize::MAX)?;
    Ok(())
}

/// Take back the allocators a mount's log tree record holds (a farewell or an
/// eviction): its freed list and extents are freed, its avail extents go back to the data
/// pool, and the fields are cleared. Returns the block numbers of its avail list, which
/// were never used (the caller returns them to the pool once the commit is made).
pub(crate) fn reclaim_allocators(
    t: &mut TreeTxn<'_>,
    data_pool: &mut AllocRoot,
    lt: &mut LogTrees,
) -> btree::Result<Vec<u64>> {
    release_list(t, &lt.meta_freed, true)?;
    let unused = release_list(t, &lt.meta_avail, false)?;
    drain_extents(t, lt.data_avail, data_pool)?;
    drain_extents(t, lt.data_freed, data_pool)?;
    lt.meta_avail = RawAllocListHead::default();
    lt.meta_freed = RawAllocListHead::default();
    lt.data_avail = RawAllocRoot::default();
    lt.data_freed = RawAllocRoot::default();
    Ok(unused)
}

/// The server's state machine (see the module comment).
#[derive(Debug)]
pub struct ServerCore {
    meta: Arc<dyn BlockDevice>,
    cache: Arc<BlockCache>,
    /// The super as last committed.
    stable: SuperBlock,
    roots: Roots,
    pool: MetaPool,
    wri: BlockWriter,
    limits: AllocLimits,
    /// Last seq handed out.
    seq: u64,
    seed: u64,
    poisoned: bool,
    /// Opened with [`ServerCore::open_read_only`]: it never commits.
    read_only: bool,
    /// Whether the open transaction changed anything.
    dirty: bool,
    /// How the log merge is paced.
    merge: MergeConfig,
    /// Finalize at the next opportunity whatever the trees' size.
    force_finalize: bool,
    merge_counters: merge::MergeCounters,
    /// How far merge work has gone in the open commit.
    merge_pace: merge::MergePace,
    /// The roots of the last commit, for readers in this process.
    published: Arc<parking_lot::RwLock<CommittedRoots>>,
    /// How srch files rotate and compact.
    srch: crate::srch::SrchConfig,
}

impl ServerCore {
    /// Open the volume on `meta` and `data` as its server.
    pub fn open(
        meta: Arc<dyn BlockDevice>,
        data: Arc<dyn BlockDevice>,
        opts: ServerOptions,
    ) -> Result<ServerCore> {
        Self::open_as(meta, data, opts, false)
    }

    /// Open the volume to read it only: the roots and allocators as last committed,
    /// without the eviction of departed mounts that [`ServerCore::open`] commits; every
    /// commit fails with [`VolumeError::ReadOnly`], so nothing is ever written.
    pub fn open_read_only(
        meta: Arc<dyn BlockDevice>,
        data: Arc<dyn BlockDevice>,
        opts: ServerOptions,
    ) -> Result<ServerCore> {
        Self::open_as(meta, data, opts, true)
    }

    fn open_as(
        meta: Arc<dyn BlockDevice>,
        data: Arc<dyn BlockDevice>,
        opts: ServerOptions,
        read_only: bool,
    ) -> Result<ServerCore> {
        let sb = volume::read_volume_supers(&*meta, &*data)?;
        let cache = Arc::new(BlockCache::new(
            meta.clone(),
            volume::geometry(&sb),
            opts.cache_bytes,
        ));
        Self::load(meta, cache, sb, opts, read_only)
    }

    /// A server over an already verified super and a cache of its meta device.
    fn load(
        meta: Arc<dyn BlockDevice>,
        cache: Arc<BlockCache>,
        sb: SuperBlock,
        opts: ServerOptions,
        read_only: bool,
    ) -> Result<ServerCore> {
        let limits = opts.limits.unwrap_or_else(|| AllocLimits::for_volume(&sb));
        let pool = Self::load_pool(&cache, &sb, &limits)?;
        let wri = BlockWriter::new(cache.clone(), opts.seed ^ sb.seq.get());
        let mut core = ServerCore {
            meta,
            roots: Roots::from_super(&sb),
            cache,
            stable: sb,
            pool,
            wri,
            limits,
            seq: sb.seq.get(),
            seed: opts.seed,
            poisoned: false,
            read_only,
            dirty: false,
            merge: MergeConfig::for_limits(&limits),
            force_finalize: false,
            merge_counters: Default::default(),
            merge_pace: Default::default(),
            srch: Default::default(),
            published: Arc::new(parking_lot::RwLock::new(CommittedRoots {
                seq: sb.seq.get(),
                fs_root: sb.fs_root.into(),
                logs_root: sb.logs_root.into(),
                srch_root: sb.srch_root.into(),
                meta_low: false,
                data_low: false,
            })),
        };
        core.publish_space();
        if read_only {
            return Ok(core);
        }
        // Mounts that are gone without a farewell (or whose farewell or eviction a
        // crash cut short) give back what they held; their trees are merged.
        core.evict_orphans()?;
        if core.is_dirty() {
            core.commit()?;
        }
        Ok(core)
    }

    fn load_pool(
        cache: &Arc<BlockCache>,
        sb: &SuperBlock,
        limits: &AllocLimits,
    ) -> Result<MetaPool> {
        let mut list =
            ListAlloc::load(&**cache, &sb.server_meta_avail[0], &sb.server_meta_freed[0])?;
        // The commit that freed these is durable: they may be reused now.
        let freed = list.take_freed();
        list.add_avail(freed);
        Ok(MetaPool::new(
            list,
            sb.meta_alloc[0].into(),
            cache.clone(),
            limits.server_list_target,
        ))
    }

    /// Make a new volume: `sb` is the super mkfs built (sizes and identity, no roots);
    /// the root inode is created, every other block handed to the allocators, and the
    /// super written to every slot of both devices.
    pub(crate) fn format(
        meta: Arc<dyn BlockDevice>,
        data: &Arc<dyn BlockDevice>,
        sb: SuperBlock,
        root_inode: &Inode,
    ) -> Result<()> {
        let geo = volume::geometry(&sb);
        let cache = Arc::new(BlockCache::new(meta.clone(), geo, 256 * geo.block_size));
        // The first blocks bootstrap the server's list; the rest go into the tree at the
        // first commit.
        let boot_end = geo.total_blocks.min(geo.first_blkno + 64);
        let list = ListAlloc::new((geo.first_blkno..boot_end).collect());
        let limits = AllocLimits::for_volume(&sb);
        let mut pool = MetaPool::new(
            list,
            AllocRoot::EMPTY,
            cache.clone(),
            limits.server_list_target,
        );
        if boot_end < geo.total_blocks {
            pool.return_blocks_range(boot_end, geo.total_blocks - boot_end);
        }
        let seed = volume::random_u64();
        let mut core = ServerCore {
            meta,
            wri: BlockWriter::new(cache.clone(), seed),
            cache,
            roots: Roots::from_super(&sb),
            stable: sb,
            pool,
            limits,
            seq: sb.seq.get(),
            seed,
            poisoned: false,
            read_only: false,
            dirty: true,
            merge: MergeConfig::default(),
            force_finalize: false,
            merge_counters: Default::default(),
            merge_pace: Default::default(),
            published: Default::default(),
            srch: Default::default(),
        };
        let total_data = sb.total_data_blocks.get();
        core.with_txn(|t, r| {
            t.insert_item(
                &mut r.fs_root,
                &inode_key(ROOT_INO),
                1,
                0,
                root_inode.as_bytes(),
            )?;
            t.insert_item(
                &mut r.fs_root,
                &inode_index_key(item_type::META_SEQ, 1, ROOT_INO),
                1,
                0,
                &[],
            )?;
            r.data_alloc
                .insert(t, DATA_START_BLKNO, total_data - DATA_START_BLKNO)
        })?;
        core.commit_inner(Some(data))?;
        Ok(())
    }

    /// The super as last committed.
    pub fn super_block(&self) -> &SuperBlock {
        &self.stable
    }

    /// The block cache.
    pub fn cache(&self) -> &Arc<BlockCache> {
        &self.cache
    }

    /// The writer of the open transaction (reads through it see its changes).
    pub fn writer(&self) -> &BlockWriter {
        &self.wri
    }

    /// The roots including the open transaction's changes.
    pub fn roots(&self) -> &Roots {
        &self.roots
    }

    /// The allocator sizes in use.
    pub fn limits(&self) -> &AllocLimits {
        &self.limits
    }

    /// Free metadata blocks the server can hand out (not counting blocks freed in the
    /// open transaction).
    pub fn meta_free_blocks(&self) -> u64 {
        self.pool.free_blocks()
    }

    /// The committed seq horizon (the original's `GET_LAST_SEQ`): the greatest seq
    /// such that every transaction of that seq or lower is committed, so nothing will
    /// ever be written at it or below. It is one less than the seq of the oldest
    /// transaction still open by any mount as the stable super records them (a mount
    /// that crashed with its transaction open is resumed at that seq), or the super's
    /// seq when none is.
    pub fn last_seq(&self) -> Result<u64> {
        let sb = &self.stable;
        let trees = all_log_trees(&self.wri, &BtreeRoot::from(sb.logs_root))?;
        let oldest_open = trees
            .iter()
            .filter(|t| t.get_trans_seq.get() > t.commit_trans_seq.get())
            .map(|t| t.get_trans_seq.get())
            .min();
        Ok(match oldest_open {
            Some(seq) => seq - 1,
            None => sb.seq.get(),
        })
    }

    /// Free data blocks in the server's data pool.
    pub fn data_free_blocks(&self) -> u64 {
        self.roots.data_alloc.total_len
    }

    /// Inodes in the filesystem as of the log trees committed so far: the merged count
    /// and every log tree's `inode_count_delta` (a mount's uncommitted changes are its
    /// own to add).
    pub fn inode_count(&self) -> Result<u64> {
        Ok(all_log_trees(&self.wri, &self.roots.logs_root)?
            .iter()
            .fold(self.roots.inode_count, |n, lt| {
                n.wrapping_add(lt.inode_count_delta.get())
            }))
    }

    /// Whether a failed write or flush (or a broken change) poisoned the server.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Whether the open transaction holds changes.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// A new seq, greater than every seq handed out or committed before.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Change the server's trees in the open transaction. An error that may have left a
    /// change half-made poisons the server; a clean refusal (a key that exists or is
    /// missing, a value too long) does not.
    pub fn with_txn<T>(
        &mut self,
        f: impl FnOnce(&mut TreeTxn<'_>, &mut Roots) -> btree::Result<T>,
    ) -> Result<T> {
        if self.poisoned {
            return Err(VolumeError::Poisoned);
        }
        self.dirty = true;
        let mut t = TreeTxn {
            wri: &mut self.wri,
            alloc: &mut self.pool,
        };
        match f(&mut t, &mut self.roots) {
            Ok(v) => Ok(v),
            Err(e) => {
                if !matches!(
                    e,
                    BtreeError::Exists(_)
                        | BtreeError::NotFound(_)
                        | BtreeError::ValueTooLarge { .. }
                ) {
                    self.poisoned = true;
                }
                Err(e.into())
            }
        }
    }

    /// Where the roots of each commit are published once its super is durable (readers
    /// in this process take them instead of reading the super).
    pub fn published_roots(&self) -> Arc<parking_lot::RwLock<CommittedRoots>> {
        self.published.clone()
    }

    /// Make the open transaction durable (see the module comment for the order).
    pub fn commit(&mut self) -> Result<CommitStats> {
        if self.read_only {
            return Err(VolumeError::ReadOnly);
        }
        if self.poisoned {
            return Err(VolumeError::Poisoned);
        }
        let res = self.commit_inner(None);
        if res.is_err() {
            self.poisoned = true;
        }
        res
    }

    fn commit_inner(&mut self, mkfs_data: Option<&Arc<dyn BlockDevice>>) -> Result<CommitStats> {
        let (avail, freed) = self.pool.prepare_commit(&mut self.wri)?;
        let ws = self.wri.write_all()?;
        self.meta.flush()?;
        let mut sb = self.stable;
        let r = &self.roots;
        sb.fs_root = r.fs_root.into();
        sb.logs_root = r.logs_root.into();
        sb.log_merge = r.log_merge.into();
        sb.mounted_clients = r.mounted_clients.into();
        sb.srch_root = r.srch_root.into();
        sb.data_alloc = r.data_alloc.into();
        sb.next_ino = r.next_ino.into();
        sb.inode_count = r.inode_count.into();
        sb.meta_alloc[0] = self.pool.tree().into();
        sb.server_meta_avail[0] = avail;
        sb.server_meta_freed[0] = freed;
        self.seq += 1;
        sb.seq = self.seq.into();
        sb.hdr.seq = sb.hdr.seq.get().wrapping_add(1).into();
        match mkfs_data {
            None => {
                volume::write_super(&*self.meta, &sb)?;
                self.meta.flush()?;
            }
            Some(data) => {
                let mut dsb = sb;
                dsb.flags = (sb.flags.get() & !SUPER_FLAG_IS_META_BDEV).into();
                volume::write_super_all_slots(&**data, &dsb)?;
                data.flush()?;
                sb.flags = (sb.flags.get() | SUPER_FLAG_IS_META_BDEV).into();
                // No server of an earlier volume on the device is this one's.
                volume::write_server_record(&*self.meta, sb.hdr.fsid.get(), 0, 0, None)?;
                volume::write_super_all_slots(&*self.meta, &sb)?;
                self.meta.flush()?;
            }
        }
        self.stable = sb;
        *self.published.write() = CommittedRoots {
            seq: sb.seq.get(),
            fs_root: sb.fs_root.into(),
            logs_root: sb.logs_root.into(),
            srch_root: sb.srch_root.into(),
            meta_low: false,
            data_low: false,
        };
        self.pool.commit_done();
        self.merge_pace.commit_done();
        self.publish_space();
        self.dirty = false;
        self.wri = BlockWriter::new(self.cache.clone(), self.seed ^ self.seq.rotate_left(32));
        Ok(CommitStats {
            seq: self.seq,
            blocks: ws.blocks,
            writes: ws.writes,
        })
    }

    /// Publish, with the committed roots, whether mounts refilled now would be LOW (if
    /// the log trees cannot be read to tell, they would be).
    fn publish_space(&mut self) {
        let meta_low = self.meta_low().unwrap_or(true);
        let data_low = self.roots.data_alloc.total_len < self.limits.client_data_lo;
        let mut p = self.published.write();
        p.meta_low = meta_low;
        p.data_low = data_low;
    }

    /// Drop the open transaction's changes and return to the last commit.
    pub fn abort(&mut self) -> Result<()> {
        self.wri.discard();
        self.roots = Roots::from_super(&self.stable);
        self.dirty = false;
        match Self::load_pool(&self.cache, &self.stable, &self.limits) {
            Ok(p) => {
                self.pool = p;
                Ok(())
            }
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    // ---- client requests -------------------------------------------------------------

    /// A mount introduces itself: record it as mounted (idempotent). A mount greeting
    /// again that is not `reconnect`ing has restarted and holds no merge work: the
    /// requests given to its id are cancelled (their blocks free once this commit is
    /// durable, which is before the mount hears back). A reconnecting mount keeps them.
    pub fn greeting(&mut self, rid: u64, reconnect: bool) -> Result<()> {
        if btree::max_value_len(self.cache.geometry().block_size) < size_of::<LogTrees>() {
            return Err(VolumeError::Protocol(
                "metadata blocks this small cannot hold a mount's log tree record (2 KiB or more needed)",
            ));
        }
        let key = mounted_client_key(rid);
        if btree::lookup(&self.wri, &self.roots.mounted_clients, &key)?.is_some() {
            if reconnect {
                return Ok(());
            }
            self.cancel_srch_compact(rid)?;
            return self.cancel_log_merge(rid);
        }
        self.with_txn(|t, r| t.insert(&mut r.mounted_clients, &key, &0u64.to_le_bytes()))
    }

    /// [`VolumeError::Protocol`] with `what` unless mount `rid` is mounted.
    fn check_mounted(&self, rid: u64, what: &'static str) -> Result<()> {
        let key = mounted_client_key(rid);
        match btree::lookup(&self.wri, &self.roots.mounted_clients, &key)? {
            Some(_) => Ok(()),
            None => Err(VolumeError::Protocol(what)),
        }
    }

    /// Open the next transaction of mount `rid`: take back what its last committed
    /// transaction freed, refill its metadata list and data extents, and give it a new
    /// transaction seq. A transaction that is already open is returned unchanged (a
    /// resent request).
    pub fn get_log_trees(&mut self, rid: u64) -> Result<LogTrees> {
        self.check_mounted(rid, "log trees requested by an unknown mount")?;
        let lt = match latest_log_trees(&self.wri, &self.roots.logs_root, rid)? {
            Some(lt) => lt,
            None => LogTrees {
                rid: rid.into(),
                nr: 1.into(),
                ..LogTrees::new_zeroed()
            },
        };
        if lt.get_trans_seq.get() > lt.commit_trans_seq.get() {
            return Ok(lt);
        }
        // The committed tree may be finalized for the merge; its allocators move on to
        // the mount's next tree.
        let mut lt = self.finalize_for(lt)?;
        let limits = self.limits;
        let (keep, low_line) = self.meta_floors()?;

        let seq = self.next_seq();
        self.with_txn(|t, r| {
            // What the client freed, and the blocks of its old lists, are free once
            // this commit is durable.
            release_list(t, &lt.meta_freed, true)?;
            let avail = release_list(t, &lt.meta_avail, false)?;
            // Data the client freed goes back to the data pool.
            drain_extents(t, lt.data_freed, &mut r.data_alloc)?;
            lt.data_freed = AllocRoot::EMPTY.into();
            // Refill the data extents; LOW if the pool could not bring them up to `lo`.
            let mut data_avail: AllocRoot = lt.data_avail.into();
            if data_avail.total_len < limits.client_data_lo {
                while data_avail.total_len < limits.client_data_target {
                    let want = limits.client_data_target - data_avail.total_len;
                    let Some(e) = r.data_alloc.alloc(t, want)? else {
                        break;
                    };
                    data_avail.insert(t, e.start, e.len)?;
                }
            }
            data_avail.flags = if data_avail.total_len < limits.client_data_lo {
                ALLOC_FLAG_LOW
            } else {
                0
            };
            lt.data_avail = data_avail.into();
            Ok(avail)
        })
        .and_then(|mut blknos| {
            // Refill the metadata list from the server's pool, keeping what the merge
            // and the server itself need; below the reserve the client is told it is LOW.
            if blknos.len() < limits.client_meta_lo {
                let want = limits.client_meta_target - blknos.len();
                let can = self.pool.free_blocks().saturating_sub(keep);
                let n = (want as u64).min(can) as usize;
                blknos.extend(self.pool.take_blocks(n).map_err(|e| {
                    self.poisoned = true;
                    VolumeError::from(e)
                })?);
            }
            let low = self.pool.free_blocks() <= low_line;
            let flags = if low { ALLOC_FLAG_LOW } else { 0 };
            let key = log_trees_key(lt.rid.get(), lt.nr.get());
            self.with_txn(|t, r| {
                lt.meta_avail = write_new_list(t.wri, t.alloc, &blknos, flags)?;
                lt.meta_freed = RawAllocListHead {
                    flags: flags.into(),
                    ..RawAllocListHead::default()
                };
                lt.get_trans_seq = seq.into();
                // An empty tree holds nothing older than the transaction opening now.
                if lt.first_trans_seq.get() == 0 || BtreeRoot::from(lt.item_root).is_empty() {
                    lt.first_trans_seq = seq.into();
                }
                t.force(&mut r.logs_root, &key, lt.as_bytes())?;
                Ok(lt)
            })
        })
    }

    /// The pool levels that govern mounts: refills never take it below the first (what
    /// the log merge and the server's own commits need, [`ServerCore::merge_unit_blocks`]
    /// for the trees as they are), and mounts are LOW at or below the second (the
    /// volume's reserve, and at least a client's list above the first).
    pub fn meta_floors(&self) -> Result<(u64, u64)> {
        let trees: Vec<LogTrees> = all_log_trees(&self.wri, &self.roots.logs_root)?
            .into_iter()
            .filter(|t| !BtreeRoot::from(t.item_root).is_empty())
            .collect();
        let keep = self.merge_reserve(&trees);
        let low = self
            .limits
            .meta_reserve
            .max(keep + self.limits.client_meta_target as u64);
        Ok((keep, low))
    }

    /// Whether mounts are told their metadata is LOW now: the free blocks at or below the
    /// line [`ServerCore::get_log_trees`] draws.
    pub fn meta_low(&self) -> Result<bool> {
        Ok(self.pool.free_blocks() <= self.meta_floors()?.1)
    }

    /// Record a mount's committed transaction: its log btree and what is left of its
    /// allocators. A resent commit of a transaction already recorded is a no-op.
    pub fn commit_log_trees(&mut self, lt: &LogTrees) -> Result<()> {
        let rid = lt.rid.get();
        let Some(exist) = latest_log_trees(&self.wri, &self.roots.logs_root, rid)? else {
            return Err(VolumeError::Protocol(
                "commit of a log tree that does not exist",
            ));
        };
        if exist.nr.get() != lt.nr.get() || exist.get_trans_seq.get() != lt.get_trans_seq.get() {
            // A resend of a commit that was recorded, and the next transaction opened,
            // before the answer was lost with the connection (or the server).
            let own = btree::lookup(
                &self.wri,
                &self.roots.logs_root,
                &log_trees_key(rid, lt.nr.get()),
            )?;
            if let Some(own) = own {
                let own = crate::logs::decode_log_trees(&own.val)?;
                let seq = lt.get_trans_seq.get();
                if seq != 0 && own.commit_trans_seq.get() >= seq {
                    return Ok(());
                }
            }
            return Err(VolumeError::Protocol(
                "commit of a transaction that is not open",
            ));
        }
        if exist.commit_trans_seq.get() == exist.get_trans_seq.get() {
            return Ok(());
        }
        let mut new = *lt;
        new.commit_trans_seq = new.get_trans_seq;
        new.finalize_seq = exist.finalize_seq;
        self.maybe_rotate_srch(&mut new, false)?;
        let key = log_trees_key(rid, lt.nr.get());
        self.with_txn(|t, r| t.force(&mut r.logs_root, &key, new.as_bytes()))
    }

    /// A mount leaves (having committed its last transaction): its merge requests are
    /// cancelled, its unused allocators go back to the server's pools, its log tree --
    /// which stays, its items being part of the filesystem -- is finalized for the next
    /// merge (or waits for it, as any idle tree), and it is no longer mounted: what an
    /// eviction does ([`ServerCore::evict`]). Finalizing it at once matters when it holds
    /// deletions: their space comes back only once merged, and no later commit of the
    /// departed mount would finalize the tree.
    pub fn farewell(&mut self, rid: u64) -> Result<()> {
        let key = mounted_client_key(rid);
        if btree::lookup(&self.wri, &self.roots.mounted_clients, &key)?.is_none() {
            return Ok(());
        }
        self.evict(rid)
    }

    /// Hand out `count` (1..=[`MAX_INODE_GROUP`]) new inode numbers to mount `rid`: the
    /// first of a run that no one was given before and no one will be given again (the
    /// counter is in the super, so the numbers are durable once the commit is).
    pub fn alloc_inodes(&mut self, rid: u64, count: u64) -> Result<u64> {
        self.check_mounted(rid, "inode numbers requested by an unknown mount")?;
        if count == 0 || count > MAX_INODE_GROUP {
            return Err(VolumeError::Protocol("inode group of a bad size"));
        }
        let first = self.roots.next_ino;
        let Some(next) = first.checked_add(count) else {
            return Err(VolumeError::NoSpace);
        };
        self.with_txn(|_, r| {
            r.next_ino = next;
            Ok(())
        })?;
        Ok(first)
    }
}
