//! The filesystem: POSIX operations over a mount's items, the API an embedder or the
//! FUSE front-end calls.
//!
//! An [`Fs`] is one mount. Every operation takes `&self`, locks the mount's state (one
//! mutex: simple first) and turns the request into item changes in the mount's open
//! transaction (see [`crate::client`]). The items, all in [`zone::FS`] unless said:
//!
//! - an inode item per inode ([`inode_key`], value [`Inode`]); inode numbers come from
//!   the server in runs ([`Request::AllocInodes`]) and are never reused; the root is 1;
//! - each link stored three times with the same [`Dirent`] value: by name hash in its
//!   directory ([`dirent_key`]: lookups read only the entries whose names share the
//!   hash), by readdir position ([`readdir_key`]: each new entry takes the directory's
//!   next position, so a position handed to readdir stays valid whatever changes), and
//!   as a back-reference from the inode ([`link_backref_key`]: a directory's parent);
//! - xattrs split into parts of at most one item value ([`xattr_key`]: name hash, id,
//!   part), the first part starting with [`XattrHeader`] and the name; the `scoutfs.`
//!   tags of a name (module `tags`) hide it from `listxattr`, count its value in a total
//!   (zone XATTR_TOTL, module `totl`) or index its inode (zone XATTR_INDX, module `indx`);
//! - symlink targets in chunks ([`symlink_key`]);
//! - file data in extents on the data device ([`data_extent_key`] at the extent's first
//!   logical block, value [`DataExtent`]); an extent is at most [`MAX_EXTENT_BLOCKS`]
//!   long so the extent covering a block is found by reading a bounded key range;
//!   extents flagged [`DATA_EXTENT_FLAG_UNWRITTEN`] (fallocate) and holes read as zeros;
//!   extents flagged [`DATA_EXTENT_FLAG_OFFLINE`] were released to an archive (module
//!   `archive`) and reading them waits until they are staged back (module `waits`);
//! - an orphan item ([`orphan_key`], zone ORPHAN) for an unlinked inode that is still
//!   open or referenced: its last release or forget deletes it (module `lifetime`), and
//!   a mount deletes the orphans it finds (a crash left them);
//! - the inode seq indexes ([`inode_index_key`], zone INODE_INDEX): an item per inode at
//!   its meta_seq, and per regular file at its data_seq, moved with every update of the
//!   inode item in the same transaction; [`Fs::walk_inodes`] reads them up to the
//!   committed horizon, and data_version counts content changes (module `index`).
//!
//! Outside the items: a change of a `scoutfs.srch.` xattr logs srch entries in the
//! mount's srch log file in the same transaction (module `srch`), which
//! [`Fs::search_xattrs`] reads once committed.
//!
//! Invariants: every operation is one transaction — it declares what it will change
//! before its first change (a [`Reservation`]), the transaction commits before it if it
//! could not hold that, and nothing commits while it runs, so a crash keeps the whole
//! operation or none of it. Operations too large for one transaction are made of steps
//! that each leave the filesystem consistent: deleting an inode of more than a few items
//! writes its orphan item with the step that unlinks it and deletes the rest in steps
//! (the next mount finishes what a crash interrupted); a truncate freeing many extents
//! writes a truncate record ([`truncate_key`]) with the new size, a release of many
//! extents a release record ([`release_key`]); a write larger than
//! [`WRITE_STEP`] commits in prefixes. File data is written to the data device before
//! the metadata commit that references it (the client flushes the data device first in
//! every commit), and committed bytes are never rewritten in place except by a write of
//! the caller's own data: bytes past a file's size are not assumed zero (a shrinking
//! truncate leaves them), so what makes them readable zeroes them first (see module
//! `data`).
//!
//! Lifecycle: [`Fs::mount_single`] opens the volume (server and client in this process),
//! [`Fs::unmount`] commits and leaves. The mount runs no threads and no timers: its
//! owner calls [`Fs::background_tick`] every few seconds (the periodic commit of the
//! original's 10 s timer, deletions handed to a merge once the mount is idle, log merge
//! work so log trees do not pile up and freed space comes back, and srch compaction so
//! searches read few files).
//!
//! Access times follow [`FsOptions::atime`] (`relatime` by default) for file reads,
//! directory reads and symlink reads. POSIX ACLs ([`FsOptions::acl`], on by default) are
//! xattrs the filesystem validates and keeps in step with the mode, and new inodes
//! inherit their directory's default ACL (module `acl`); checking permissions against
//! them is the caller's (the kernel's, for a FUSE mount).
//!
//! Not yet: cluster locks (one mount per volume).

mod acl;
mod archive;
mod cluster;
mod data;
mod dir;
mod index;
mod indx;
mod lifetime;
mod notify;
mod seek;
mod srch;
mod tags;
#[cfg(test)]
mod tests;
mod totl;
mod types;
mod waits;
mod xattr;

pub use acl::{ACL_ACCESS, ACL_DEFAULT};
pub use archive::{FiemapExtent, SetAttrMore, StatMore, StatfsMore};
use index::INDEX_ITEMS;
pub use index::{IndexEntry, IndexPos, SeqIndex};
pub use indx::IndxEntry;
pub(crate) use indx::{decode_indx_key, indx_key};
pub use notify::KernelCache;
pub use seek::SeekTarget;
pub use srch::SearchXattrs;
pub use tags::{parse_tags, XattrTags, TAG_PREFIX};
pub(crate) use tags::{tag_effects, tagged_part};
pub(crate) use totl::decode_total;
pub use totl::XattrTotal;
pub use types::Timespec;
pub use types::*;
pub use waits::{
    DataWait, DataWaiting, WaitCancel, Waitable, DATA_WAIT_CHANGE_SIZE, DATA_WAIT_READ,
    DATA_WAIT_WRITE,
};

use crate::btree::{self, Item};
use crate::client::locks::ItemLocks;
use crate::client::{Client, ClientError, Reservation};
use crate::device::BlockDevice;
use crate::format::*;
use crate::server::{Server, ServerCore, ServerOptions};
use crate::transport::{
    LocalTransport, LockMode, MergeAdmin, Request, Response, Transport, TransportError,
};
use crate::volume::VolumeError;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use zerocopy::{FromBytes, IntoBytes};

/// The root directory's inode number.
pub const ROOT_INO: u64 = crate::format::ROOT_INO;
/// The longest name of a directory entry or an xattr.
pub const NAME_MAX: usize = 255;
/// The longest symlink target.
pub const SYMLINK_MAX: usize = 4096;
/// The largest xattr value.
pub const XATTR_VALUE_MAX: usize = 65536;
/// The most links an inode may have.
pub const LINK_MAX: u32 = 65000;
/// The largest file size (16 TiB).
pub const MAX_FILE_SIZE: u64 = 1 << 44;
/// The longest data extent in blocks.
pub const MAX_EXTENT_BLOCKS: u64 = 128;
/// Items (data extents among them) of an inode deleted in the transaction of the
/// operation that lets go of it (an unlink, a rename over it, its last release); a
/// larger inode is orphaned there and deleted in steps of [`DELETE_STEP`] items.
const DELETE_INLINE: usize = 16;
/// Items deleted (or extents freed) per step of a large deletion or truncate.
const DELETE_STEP: usize = 64;
/// The largest write made in one transaction (see [`Fs::write`]).
pub const WRITE_STEP: usize = 8 << 20;
/// Most locks one operation may need (a rename over an existing name in another
/// directory needs a handful; more is a bug).
const MAX_OP_LOCKS: usize = 64;
/// Inode numbers asked of the server at a time: one inode lock group, so that (every run
/// starting at a group boundary) a mount's new inodes share no lock with another's.
const INODE_BATCH: u64 = crate::client::locks::LOCK_GROUP;

/// What deleting one item (a data extent's, its blocks freed) costs a transaction.
fn one_deletion() -> Reservation {
    Reservation::freeing(1).data(1, 0)
}

/// What deleting `it`, an item of an inode being deleted, costs: [`one_deletion`], and
/// for the first part of a tagged xattr what its tags add (module `tags`).
fn item_deletion(it: &Item) -> Reservation {
    let tags = tagged_part(&it.key, &it.val).map_or_else(XattrTags::default, |t| t.tags);
    one_deletion().and(tags::tag_reservation(&tags))
}

/// Room an operation that may let go of an inode reserves for deleting it (see
/// `State::delete_inode`): its inline items and data extents, the inode and orphan items
/// and the inode's index items (or, when it is kept, its update).
fn deletion_reservation() -> Reservation {
    Reservation::freeing(DELETE_INLINE + 3 + INDEX_ITEMS).data(DELETE_INLINE, 0)
}

const S_IFMT: u32 = 0o170000;
const S_IFSOCK: u32 = 0o140000;
const S_IFLNK: u32 = 0o120000;
const S_IFREG: u32 = 0o100000;
const S_IFBLK: u32 = 0o060000;
const S_IFDIR: u32 = 0o040000;
const S_IFCHR: u32 = 0o020000;
const S_IFIFO: u32 = 0o010000;
const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_IXGRP: u32 = 0o0010;

impl FileKind {
    /// The kind the type bits of `mode` give (`None` if they name no kind).
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & S_IFMT {
            S_IFREG => FileKind::File,
            S_IFDIR => FileKind::Dir,
            S_IFLNK => FileKind::Symlink,
            S_IFCHR => FileKind::CharDev,
            S_IFBLK => FileKind::BlockDev,
            S_IFIFO => FileKind::Fifo,
            S_IFSOCK => FileKind::Socket,
            _ => return None,
        })
    }

    /// The type bits of `st_mode` for this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::File => S_IFREG,
            FileKind::Dir => S_IFDIR,
            FileKind::Symlink => S_IFLNK,
            FileKind::CharDev => S_IFCHR,
            FileKind::BlockDev => S_IFBLK,
            FileKind::Fifo => S_IFIFO,
            FileKind::Socket => S_IFSOCK,
        }
    }

    /// The `DT_*` value of dirent(5).
    pub fn dtype(self) -> u8 {
        match self {
            FileKind::Fifo => 1,
            FileKind::CharDev => 2,
            FileKind::Dir => 4,
            FileKind::BlockDev => 6,
            FileKind::File => 8,
            FileKind::Symlink => 10,
            FileKind::Socket => 12,
        }
    }

    fn from_dtype(t: u8) -> FsResult<FileKind> {
        Ok(match t {
            1 => FileKind::Fifo,
            2 => FileKind::CharDev,
            4 => FileKind::Dir,
            6 => FileKind::BlockDev,
            8 => FileKind::File,
            10 => FileKind::Symlink,
            12 => FileKind::Socket,
            _ => return Err(FsError::Corrupt("directory entry of an unknown kind")),
        })
    }
}

/// One mount's filesystem (see the module comment).
#[derive(Debug)]
pub struct Fs {
    st: Arc<Mutex<State>>,
    /// The same lock as [`State`]'s `data_io`, for reads outside the state lock.
    data_io: Arc<RwLock<()>>,
    /// How the mount reaches the server (the same as [`State`]'s, for calls made
    /// without the state lock).
    transport: Arc<dyn Transport>,
    /// The mount's cluster locks, if its operations take them.
    locks: Option<Arc<dyn ItemLocks>>,
    clock: Arc<dyn Clock>,
    geo_bs: usize,
    total_data_blocks: u64,
    /// Operations waiting for offline data (module `waits`).
    waits: Arc<waits::Waits>,
    /// Input entries a srch compaction step merges at most.
    srch_step: u64,
    /// What the front-end's kernel caches (module `notify`).
    kernel: Arc<notify::KernelHook>,
    /// The mount's part in a cluster (module `cluster`); `None` when alone.
    cluster: Option<cluster::Cluster>,
}

/// The part of [`FsOptions::cache_bytes`] the open transaction (its dirty items and the
/// blocks their commit writes) may take, and as much again a unit of log merge work's
/// dirty blocks: one in this many bytes each; the block cache has the other half.
const DIRTY_SHARE: usize = 4;

/// The mount's state behind the lock.
#[derive(Debug)]
struct State {
    client: Client,
    transport: Arc<dyn Transport>,
    data: Arc<dyn BlockDevice>,
    /// Held shared by reads of file data done after the state lock is let go, and
    /// exclusively by every write to the data device (made under the state lock): a
    /// block a read was told to read is not rewritten until the read is done, so a read
    /// returns what the file held when it looked up its extents, however many readers
    /// run at once.
    data_io: Arc<RwLock<()>>,
    rid: u64,
    /// Open handles and counted references per inode (an unlinked inode lives, an
    /// orphan, until both are gone: module `lifetime`).
    live: Arc<Mutex<lifetime::Lifetime>>,
    /// Other mounts may share the volume (module `cluster`).
    clustered: bool,
    /// Inode numbers the server gave this mount: `ino_next..ino_end`.
    ino_next: u64,
    ino_end: u64,
    /// Longest item value (xattr parts, symlink chunks).
    part_len: usize,
    /// Size of the data device in data blocks.
    data_blocks: u64,
    /// The time of the operation in progress.
    now: Timespec,
    /// The operation in progress frees space (unlink, rmdir, removexattr, a shrinking
    /// truncate, deleting an inode): its item updates may use the reserve when LOW.
    freeing: bool,
    /// When reads update access times ([`AtimeMode::Never`] on a read-only mount).
    atime: AtimeMode,
    /// Whether directory reads update access times.
    dir_atime: bool,
    /// POSIX ACLs ([`FsOptions::acl`]).
    acl: bool,
    /// The number of this mount's log tree that holds deletions not yet given to a merge
    /// (see [`Fs::background_tick`]).
    freed_in: Option<u64>,
    /// A deliberate bug for mutation tests ([`FsOptions::mutation`]).
    mutation: Mutation,
    /// Files whose shrinking truncate in the open transaction (of this seq) could not
    /// copy the new last block (the data device was full) and left bytes past the size
    /// in it: zeroing them in place must wait for a commit (see `State::settle_tail`).
    unzeroed: HashMap<u64, u64>,
}

/// Log merge work one [`Fs::background_tick`] does at most: units, and time by the
/// mount's clock (half the FUSE mount's 10 s tick).
const TICK_MERGE_UNITS: usize = 1024;
const TICK_MERGE_NS: i128 = 5_000_000_000;

/// Whether `later` is at least `ns` nanoseconds after `earlier` (or before it: a clock
/// that went back counts as time passed).
fn elapsed(earlier: Timespec, later: Timespec, ns: i128) -> bool {
    let t = |t: Timespec| t.sec as i128 * 1_000_000_000 + t.nsec as i128;
    let d = t(later) - t(earlier);
    d < 0 || d >= ns
}

fn raw_time(t: Timespec) -> crate::format::Timespec {
    crate::format::Timespec {
        sec: (t.sec as u64).into(),
        nsec: t.nsec.into(),
        pad: 0.into(),
    }
}

fn api_time(t: &crate::format::Timespec) -> Timespec {
    Timespec {
        sec: t.sec.get() as i64,
        nsec: t.nsec.get(),
    }
}

/// Check a directory entry name.
fn check_name(name: &[u8]) -> FsResult<()> {
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(FsError::Invalid);
    }
    Ok(())
}

/// Check the name of an entry an operation creates or removes ("." and ".." are not
/// entries that can be changed).
fn check_entry_name(name: &[u8]) -> FsResult<()> {
    check_name(name)?;
    if name == b"." || name == b".." {
        return Err(FsError::Invalid);
    }
    Ok(())
}

/// The 64-bit hash of a name: a crc32c and a second crc32c (seeded differently) as a
/// fingerprint above it.
pub(crate) fn name_hash(name: &[u8]) -> u64 {
    #[cfg(test)]
    if tests::COLLIDE.with(|c| c.get()) {
        return 42;
    }
    let lo = crc32c::crc32c(name) as u64;
    let hi = crc32c::crc32c_append(0x5c0f_75a5, name) as u64;
    lo | (hi << 32)
}

impl Fs {
    /// Mount the volume on `meta` and `data` single-node: a server and one client in
    /// this process over the in-process transport. Orphans a crashed mount left are
    /// deleted before it returns. A device that holds no volume, another volume's
    /// device, or a damaged super gives [`FsError::Volume`] and changes nothing.
    ///
    /// A mount record left by a mount that did not unmount (a crash) is taken over: its
    /// open transaction is resumed. Two processes must not mount the same devices at
    /// once; the front-end that opens the devices keeps them exclusive.
    pub fn mount_single(
        meta: Arc<dyn BlockDevice>,
        data: Arc<dyn BlockDevice>,
        opts: FsOptions,
    ) -> FsResult<Fs> {
        let seed = opts.seed.unwrap_or_else(|| opts.entropy.next_u64());
        let server_opts = ServerOptions {
            cache_bytes: opts.cache_bytes - 2 * (opts.cache_bytes / DIRTY_SHARE),
            seed,
            limits: None,
        };
        let mut core = if opts.read_only {
            ServerCore::open_read_only(meta.clone(), data.clone(), server_opts)?
        } else {
            ServerCore::open(meta.clone(), data.clone(), server_opts)?
        };
        core.set_srch_config(opts.srch);
        let cache = core.cache().clone();
        // Mount records left behind (the previous single-node mount crashed).
        let mut left = Vec::new();
        btree::scan(
            core.writer(),
            &core.roots().mounted_clients,
            &Key::MIN,
            &Key::MAX,
            |it| {
                left.push(it.key.first);
                ControlFlow::Continue(())
            },
        )
        .map_err(|e| FsError::Volume(e.into()))?;
        let server = Arc::new(Server::new(core));
        let transport: Arc<dyn Transport> = Arc::new(LocalTransport::new(server));
        let rid = if opts.read_only {
            // An id no mount has: every log tree, a crashed mount's too, is read as
            // another mount's.
            let mut rid = opts.entropy.next_u64() | 1;
            while left.contains(&rid) {
                rid = opts.entropy.next_u64() | 1;
            }
            rid
        } else {
            for &other in left.iter().skip(1) {
                match transport.call(Request::Farewell { rid: other })? {
                    Response::Done => {}
                    _ => return Err(TransportError::Unexpected.into()),
                }
            }
            match left.first() {
                Some(&r) => r,
                None => opts.entropy.next_u64() | 1,
            }
        };
        // The server in this process commits to the same device (the same `meta`),
        // flushing it before each super.
        Fs::attach(meta, data, transport, cache, rid, seed, true, false, opts)
    }

    /// Mount the volume on `meta` and `data` as a client of the server `transport`
    /// reaches (a server in another process or host, or one in this process over
    /// [`LocalTransport`]): the mount reads the devices itself and reaches the server
    /// only through `transport`. The mount's id and seeds come from `opts`; orphans a
    /// crashed mount left are deleted before it returns, as [`Fs::mount_single`] does.
    ///
    /// Other mounts may share the volume: every operation takes the cluster locks of
    /// what it reads and changes, and the mount serves its server's requests (module
    /// `cluster`).
    pub fn mount(
        meta: Arc<dyn BlockDevice>,
        data: Arc<dyn BlockDevice>,
        transport: Arc<dyn Transport>,
        opts: FsOptions,
    ) -> FsResult<Fs> {
        let seed = opts.seed.unwrap_or_else(|| opts.entropy.next_u64());
        let sb = crate::volume::read_volume_supers(&*meta, &*data)?;
        let cache = Arc::new(crate::block::BlockCache::new(
            meta.clone(),
            crate::volume::geometry(&sb),
            opts.cache_bytes - 2 * (opts.cache_bytes / DIRTY_SHARE),
        ));
        let rid = opts.entropy.next_u64() | 1;
        Fs::attach(meta, data, transport, cache, rid, seed, false, true, opts)
    }

    /// The mount of `rid` over `transport`, reading `meta` through `cache`: greet, open
    /// the first transaction and finish what a crash interrupted; with cluster locks if
    /// `clustered`.
    #[allow(clippy::too_many_arguments)]
    fn attach(
        meta: Arc<dyn BlockDevice>,
        data: Arc<dyn BlockDevice>,
        transport: Arc<dyn Transport>,
        cache: Arc<crate::block::BlockCache>,
        rid: u64,
        seed: u64,
        server_flushes_meta: bool,
        clustered: bool,
        opts: FsOptions,
    ) -> FsResult<Fs> {
        let bs = cache.geometry().block_size;
        let part_len = btree::max_value_len(bs);
        if part_len < size_of::<Dirent>() + NAME_MAX + 16 {
            return Err(FsError::Volume(VolumeError::BadBlockSize(bs as u64)));
        }
        let total_data_blocks = crate::volume::read_super(&*data, "data")?
            .total_data_blocks
            .get();
        let mut client = if opts.read_only {
            Client::open_read_only(transport.clone(), meta, cache, rid)
        } else {
            let mut c = Client::mount(transport.clone(), meta, cache, rid, seed)?;
            c.set_server_flushes_meta(server_flushes_meta);
            c
        };
        client.set_data_device(data.clone());
        client.set_dirty_limit(opts.cache_bytes / DIRTY_SHARE);
        client.set_early_commit(opts.mutation == Mutation::EarlyCommit);
        let cluster_locks = clustered.then(|| {
            crate::lock::cluster::ClusterLocks::new(transport.clone(), opts.lock_idle_count)
        });
        let item_locks = opts
            .item_locks
            .clone()
            .or_else(|| cluster_locks.clone().map(|l| l as Arc<dyn ItemLocks>));
        if let Some(l) = &item_locks {
            client.set_item_locks(l.clone());
        }
        let data_io = Arc::new(RwLock::new(()));
        let fs = Fs {
            data_io: data_io.clone(),
            st: Arc::new(Mutex::new(State {
                client,
                transport: transport.clone(),
                data,
                data_io: data_io.clone(),
                rid,
                live: Arc::new(Mutex::new(lifetime::Lifetime::new(opts.lookup_counts))),
                clustered,
                ino_next: 0,
                ino_end: 0,
                part_len,
                data_blocks: total_data_blocks,
                now: opts.clock.now(),
                freeing: false,
                atime: if opts.read_only {
                    AtimeMode::Never
                } else {
                    opts.atime
                },
                dir_atime: opts.dir_atime,
                acl: opts.acl,
                freed_in: None,
                mutation: opts.mutation,
                unzeroed: HashMap::new(),
            })),
            transport: transport.clone(),
            locks: item_locks,
            clock: opts.clock,
            geo_bs: bs,
            total_data_blocks,
            waits: Arc::default(),
            srch_step: opts.srch.step_entries,
            kernel: Default::default(),
            cluster: None,
        };
        let fs = match cluster_locks {
            None => fs,
            Some(locks) => {
                let owner = Arc::new(cluster::MountOwner {
                    st: Arc::downgrade(&fs.st),
                    kernel: fs.kernel.clone(),
                });
                let weak_owner: std::sync::Weak<dyn crate::lock::cluster::LockOwner> =
                    Arc::downgrade(&owner) as _;
                locks.set_owner(weak_owner);
                let handler = Arc::new(cluster::MountHandler {
                    st: Arc::downgrade(&fs.st),
                    live: fs.st.lock().live.clone(),
                    locks: locks.clone(),
                });
                let weak_handler: std::sync::Weak<dyn crate::transport::ClientHandler> =
                    Arc::downgrade(&handler) as _;
                transport.set_handler(weak_handler);
                Fs {
                    cluster: Some(cluster::Cluster {
                        locks,
                        _owner: owner,
                        _handler: handler,
                    }),
                    ..fs
                }
            }
        };
        if fs
            .op_read(|st| Ok(st.client.get(&inode_key(ROOT_INO))?))?
            .is_none()
        {
            return Err(FsError::Corrupt("the volume has no root inode"));
        }
        if !opts.read_only {
            fs.op(|st| st.finish_interrupted())?;
        }
        Ok(fs)
    }

    /// Send `req` to the server and take its answer.
    fn call(&self, req: Request) -> FsResult<Response> {
        Ok(self.transport.call(req)?)
    }

    /// How the log merge stands, as the server tells it.
    fn merge_status(&self) -> FsResult<crate::transport::MergeStatus> {
        match self.call(Request::Merge(MergeAdmin::Status))? {
            Response::Merge(m) => Ok(m),
            _ => Err(TransportError::Unexpected.into()),
        }
    }

    /// Ask the server for `req`, answered with [`Response::Done`].
    fn call_done(&self, req: Request) -> FsResult<()> {
        match self.call(req)? {
            Response::Done => Ok(()),
            _ => Err(TransportError::Unexpected.into()),
        }
    }

    /// The volume's sizes and free space as the server's last commit has them.
    fn volume_stats(&self) -> FsResult<crate::transport::VolumeStats> {
        match self.call(Request::Statfs)? {
            Response::Statfs(v) => Ok(v),
            _ => Err(TransportError::Unexpected.into()),
        }
    }

    /// Commit and leave: the last transaction is made durable and the server takes back
    /// the mount's unused space.
    pub fn unmount(self) -> FsResult<()> {
        // The last transaction commits while the mount still answers its server (an
        // invalidation meanwhile may need this commit); then it stops answering, and
        // leaves (the server drops its locks with its farewell).
        {
            let mut st = self.st.lock();
            if !st.client.is_read_only() && st.client.is_dirty() {
                st.client.commit()?;
            }
        }
        let Fs { st, cluster, .. } = self;
        drop(cluster);
        let mut st = st;
        let st = loop {
            // A server request being handled may hold the state for a moment.
            match Arc::try_unwrap(st) {
                Ok(m) => break m.into_inner(),
                Err(a) => {
                    st = a;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        };
        st.client.unmount()?;
        Ok(())
    }

    /// Changes of operations beyond what they declared, or made with the transaction's
    /// list shorter than their commit may need (see [`Client::overruns`]): a sizing bug,
    /// which tests require never happens.
    pub fn overruns(&self) -> u64 {
        self.st.lock().client.overruns()
    }

    /// The mount's id.
    pub fn rid(&self) -> u64 {
        self.st.lock().rid
    }

    /// Run `f`, an operation that changes the filesystem, on the locked state with the
    /// operation's time set (see [`Fs::op_as`]).
    fn op<T>(&self, f: impl FnMut(&mut State) -> FsResult<T>) -> FsResult<T> {
        self.op_as(true, f)
    }

    /// Run `f`, an operation that only reads (if it finds it must write after all, an
    /// access time, it runs again under the locks writing needs): see [`Fs::op_as`].
    fn op_read<T>(&self, f: impl FnMut(&mut State) -> FsResult<T>) -> FsResult<T> {
        self.op_as(false, f)
    }

    /// Run `f` on the locked state with the operation's time set.
    ///
    /// The operation holds the mount's transaction: nothing commits while `f` runs
    /// except between the steps of an operation too large for one transaction (see
    /// [`crate::client::Client::begin`]).
    ///
    /// With cluster locks ([`crate::client::locks`]), `f` runs under the locks it found
    /// it needs: an attempt that needs one this mount does not hold fails before its
    /// first change, the locks every attempt needed are taken in key order outside the
    /// state lock, and `f` runs again.
    fn op_as<T>(&self, writes: bool, mut f: impl FnMut(&mut State) -> FsResult<T>) -> FsResult<T> {
        let Some(locks) = &self.locks else {
            return self.op_once(writes, Vec::new(), &mut f).0;
        };
        let mut want: Vec<(Key, Key, LockMode)> = Vec::new();
        loop {
            let mut uses = Vec::with_capacity(want.len());
            for (start, end, mode) in &want {
                match locks.use_waiting(start, end, *mode) {
                    Ok(h) => uses.push((*start, h)),
                    Err(e) => {
                        for (k, h) in uses {
                            locks.unuse(&k, h.mode);
                        }
                        return Err(e.into());
                    }
                }
            }
            let (res, used) = self.op_once(writes, uses, &mut f);
            for (k, m) in used {
                locks.unuse(&k, m);
            }
            match res {
                Err(FsError::Client(ClientError::NeedLock { start, end, mode })) => {
                    match want.iter_mut().find(|w| w.0 == start) {
                        // Asked for in two modes: WRITE does what both do.
                        Some(w) => w.2 = LockMode::Write,
                        None => want.push((start, end, mode)),
                    }
                    want.sort_by_key(|w| w.0);
                    if want.len() > MAX_OP_LOCKS {
                        return Err(FsError::Corrupt("an operation needs too many locks"));
                    }
                }
                r => return r,
            }
        }
    }

    /// One attempt of an operation using the locks `uses`; returns its result and the
    /// locks it used (to let go of).
    fn op_once<T>(
        &self,
        writes: bool,
        uses: Vec<(Key, crate::client::locks::Held)>,
        f: &mut impl FnMut(&mut State) -> FsResult<T>,
    ) -> (FsResult<T>, Vec<(Key, LockMode)>) {
        let mut st = self.st.lock();
        st.now = self.clock.now();
        st.freeing = false;
        st.client.enter_op();
        st.client.set_op_locks(uses, writes);
        let res = f(&mut st);
        if res.is_err() {
            // Nothing half done: what it changed since its last consistent step goes.
            st.client.abort_op();
        }
        st.client.leave_op();
        let used = st.client.take_op_locks();
        if st.freeing {
            // Its deletions wait in this tree (the tree may have changed in the
            // operation, by an early commit: the last ones are in the current one).
            st.freed_in = Some(st.client.log_trees().nr.get());
        }
        (res, used)
    }

    /// The attributes of `name` in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> FsResult<Attr> {
        self.op_read(|st| {
            check_name(name)?;
            let dir = st.inode(parent)?;
            if kind_of(&dir)? != FileKind::Dir {
                return Err(FsError::NotDir);
            }
            let ino = match name {
                b"." => parent,
                b".." => st.parent_of(parent)?,
                _ => st
                    .find_entry(parent, name)?
                    .ok_or(FsError::NotFound)?
                    .0
                    .ino
                    .get(),
            };
            let a = st.attr(ino)?;
            st.live.lock().remember(&a);
            Ok(a)
        })
    }

    /// The attributes of inode `ino`.
    pub fn getattr(&self, ino: u64) -> FsResult<Attr> {
        self.op_read(|st| st.attr(ino))
    }

    /// Change attributes; a size change truncates or extends the file (a hole). A size
    /// change of a file with offline blocks below the new size waits until they are
    /// staged (see [`Fs::try_setattr`]).
    pub fn setattr(&self, ino: u64, set: &SetAttr) -> FsResult<Attr> {
        waits::block_on(None, || self.try_setattr(ino, set))
    }

    /// [`Fs::setattr`], or the wait it must make first (module `waits`).
    pub fn try_setattr(&self, ino: u64, set: &SetAttr) -> FsResult<Waitable<Attr>> {
        let res = self.op(|st| {
            let mut inode = st.inode(ino)?;
            let kind = kind_of(&inode)?;
            if let Some(size) = set.size {
                match kind {
                    FileKind::File => {}
                    FileKind::Dir => return Err(FsError::IsDir),
                    _ => return Err(FsError::Invalid),
                }
                if size > MAX_FILE_SIZE {
                    return Err(FsError::FileTooBig);
                }
                if size > 0 && size != inode.size.get() {
                    let wait = DATA_WAIT_CHANGE_SIZE;
                    if let Some(w) = st.offline_wait(&self.waits, ino, &inode, 0, size, wait)? {
                        return Ok(Waitable::Wait(w));
                    }
                }
            }
            // A chmod carries the access ACL along, in the same transaction.
            let acl = match set.mode {
                Some(m) => st.chmod_acl(ino, m)?,
                None => None,
            };
            let attrs = Reservation::freeing(
                2 + INDEX_ITEMS + acl.as_ref().map_or(0, |(_, old)| 2 * old.keys.len()),
            )
            .bytes(acl.as_ref().map_or(0, |(a, _)| a.len()));
            if let Some(size) = set.size {
                // Every step of the truncate has room for the attributes: they land with
                // its last one.
                st.truncate(ino, size, attrs)?;
                inode = st.inode(ino)?;
            } else {
                st.begin(attrs)?;
            }
            let now = st.now;
            if let Some(mode) = set.mode {
                inode.mode = ((inode.mode.get() & S_IFMT) | (mode & !S_IFMT)).into();
            }
            let owner_changes = set.uid.is_some_and(|u| u != inode.uid.get())
                || set.gid.is_some_and(|g| g != inode.gid.get());
            if owner_changes && set.mode.is_none() && kind != FileKind::Dir {
                // As Linux: a new owner or group drops set-user-ID, and set-group-ID
                // where it means "setgid" (group execute set).
                let mut m = inode.mode.get() & !S_ISUID;
                if m & S_IXGRP != 0 {
                    m &= !S_ISGID;
                }
                inode.mode = m.into();
            }
            if let Some(uid) = set.uid {
                inode.uid = uid.into();
            }
            if let Some(gid) = set.gid {
                inode.gid = gid.into();
            }
            let pick = |t: &SetTime| match t {
                SetTime::Now => now,
                SetTime::At(t) => *t,
            };
            if let Some(t) = &set.atime {
                inode.atime = raw_time(pick(t));
            }
            if let Some(t) = &set.mtime {
                inode.mtime = raw_time(pick(t));
            }
            inode.ctime = raw_time(set.ctime.unwrap_or(now));
            st.put_inode(ino, &mut inode)?;
            if let Some((acl, old)) = acl {
                st.write_xattr(ino, ACL_ACCESS, &acl, Some(old))?;
            }
            st.attr(ino).map(Waitable::Ready)
        });
        if set.size.is_some() && !matches!(res, Ok(Waitable::Wait(_))) {
            self.waits.changed(ino);
        }
        res
    }

    /// Create a non-directory inode (regular file, device, fifo or socket, by the type
    /// bits of `mode`; none means a regular file) named `name` in `parent`.
    pub fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u32,
        creds: Creds,
    ) -> FsResult<Attr> {
        let kind = match mode & S_IFMT {
            0 => FileKind::File,
            _ => FileKind::from_mode(mode).ok_or(FsError::Invalid)?,
        };
        if matches!(kind, FileKind::Dir | FileKind::Symlink) {
            return Err(FsError::Invalid);
        }
        let rdev = match kind {
            FileKind::CharDev | FileKind::BlockDev => rdev,
            _ => 0,
        };
        self.op(|st| {
            st.create(parent, name, kind, mode, rdev, creds, None)
                .inspect(|a| st.live.lock().remember(a))
        })
    }

    /// Create a directory.
    pub fn mkdir(&self, parent: u64, name: &[u8], mode: u32, creds: Creds) -> FsResult<Attr> {
        self.op(|st| {
            st.create(parent, name, FileKind::Dir, mode, 0, creds, None)
                .inspect(|a| st.live.lock().remember(a))
        })
    }

    /// Create a symlink to `target` (1..=4096 bytes).
    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8], creds: Creds) -> FsResult<Attr> {
        if target.is_empty() {
            return Err(FsError::NotFound);
        }
        if target.len() > SYMLINK_MAX {
            return Err(FsError::NameTooLong);
        }
        self.op(|st| {
            st.create(
                parent,
                name,
                FileKind::Symlink,
                0o777,
                0,
                creds,
                Some(target),
            )
            .inspect(|a| st.live.lock().remember(a))
        })
    }

    /// The target of a symlink.
    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.op_read(|st| {
            let target = st.readlink(ino)?;
            st.touch_atime(ino)?;
            Ok(target)
        })
    }

    /// Give inode `ino` another name.
    pub fn link(&self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        self.op(|st| {
            st.link(ino, newparent, newname)
                .inspect(|a| st.live.lock().remember(a))
        })
    }

    /// Remove a non-directory entry; an inode left without links is deleted, or made an
    /// orphan while it is open.
    pub fn unlink(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.op(|st| st.unlink(parent, name))
    }

    /// Remove an empty directory.
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> FsResult<()> {
        self.op(|st| st.rmdir(parent, name))
    }

    /// Rename, replacing what the new name held unless `flags.noreplace`, or swapping
    /// the two entries with `flags.exchange`.
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: RenameFlags,
    ) -> FsResult<()> {
        self.op(|st| st.rename(parent, name, newparent, newname, flags))
    }

    /// Count an open of `ino` (an unlinked inode lives until its last release).
    pub fn open(&self, ino: u64) -> FsResult<()> {
        self.op_read(|st| {
            st.inode(ino)?;
            st.live.lock().open(ino);
            Ok(())
        })
    }

    /// Release an open of `ino`; the last release of an unlinked inode that nothing else
    /// holds deletes it (see [`Fs::forget`]).
    pub fn release(&self, ino: u64) -> FsResult<()> {
        // The count goes down once, whatever the operation below: it may run more than
        // once (`Fs::op_as`).
        if !self.st.lock().live.lock().release(ino) {
            return Ok(());
        }
        self.op(|st| st.let_go(ino))
    }

    /// Entries of `dir` from position `pos` (0 = start; "." is at 0 and ".." at 1): `f`
    /// gets each with the position to continue from and returns false to stop.
    pub fn readdir(
        &self,
        dir: u64,
        pos: u64,
        f: &mut dyn FnMut(&DirEntry) -> bool,
    ) -> FsResult<()> {
        // The access time first: if updating it needs a lock taken first (the operation
        // runs again), no entry has been handed out yet.
        self.op_read(|st| {
            st.touch_atime(dir)?;
            st.readdir(dir, pos, f)
        })
    }

    /// [`Fs::readdir`] with each entry's attributes (of the directory itself for ".",
    /// of its parent for ".."), read under the same lock: what `ls -l` would otherwise
    /// ask entry by entry. An entry whose inode is missing (a damaged volume; `check`
    /// reports it) comes with `None`, so the rest of the directory can still be listed.
    pub fn readdir_plus(
        &self,
        dir: u64,
        pos: u64,
        f: &mut dyn FnMut(&DirEntry, Option<&Attr>) -> bool,
    ) -> FsResult<()> {
        // Entries are handed out as they are read, so the operation must not run again
        // after the first: the access time goes first, and an entry whose inode is under
        // a cluster lock the mount does not hold ends the batch there (the caller goes on
        // from it, and that call takes the lock before it hands out anything).
        self.op_read(|st| {
            st.touch_atime(dir)?;
            let mut failed = None;
            let mut taken = Vec::new();
            let mut given = 0usize;
            st.readdir(dir, pos, &mut |e| match st.attr(e.ino) {
                Ok(a) => {
                    let took = f(e, Some(&a));
                    given += 1;
                    if took && e.name != b"." && e.name != b".." {
                        taken.push(a);
                    }
                    took
                }
                Err(FsError::NotFound) => {
                    given += 1;
                    f(e, None)
                }
                Err(FsError::Client(ClientError::NeedLock { .. })) if given > 0 => false,
                Err(err) => {
                    failed = Some(err);
                    false
                }
            })?;
            if let Some(err) = failed {
                return Err(err);
            }
            // Handed out only now: a failed call gives the caller no entries.
            for a in &taken {
                st.live.lock().remember(a);
            }
            Ok(())
        })
    }

    /// Read up to `len` bytes at `off` (short at the end of the file).
    ///
    /// The extents are looked up under the mount's lock; the file data is read from the
    /// data device after it is let go, so reads of file data run in parallel with each
    /// other and with other operations (writes to the data device wait for them). A read
    /// of offline blocks waits until they are staged (see [`Fs::try_read`]).
    pub fn read(&self, ino: u64, off: u64, len: u32) -> FsResult<Vec<u8>> {
        waits::block_on(None, || self.try_read(ino, off, len))
    }

    /// [`Fs::read`], or the wait it must make first (module `waits`).
    pub fn try_read(&self, ino: u64, off: u64, len: u32) -> FsResult<Waitable<Vec<u8>>> {
        let planned = self.op_read(|st| {
            let inode = st.file_inode(ino)?;
            let want = inode.size.get().saturating_sub(off).min(len as u64);
            let wait = st.offline_wait(&self.waits, ino, &inode, off, want, DATA_WAIT_READ)?;
            if let Some(w) = wait {
                return Ok(Err(w));
            }
            let (out, plan) = st.read_plan(&inode, ino, off, len)?;
            if len > 0 {
                st.touch_atime_of(ino, inode)?;
            }
            // Taken before the state lock is let go: a write takes the state lock
            // first, so none can slip in between the plan and the read.
            let reading = (!plan.is_empty()).then(|| self.data_io.read());
            Ok(Ok((out, plan, st.data.clone(), reading)))
        })?;
        let (mut out, plan, data, _reading) = match planned {
            Err(w) => return Ok(Waitable::Wait(w)),
            Ok(p) => p,
        };
        for (range, dev_off) in plan {
            data.read_at(&mut out[range], dev_off)?;
        }
        Ok(Waitable::Ready(out))
    }

    /// Write `data` at `off`; returns the bytes written (all of them, or fewer if the
    /// data device filled part-way).
    ///
    /// A write of up to [`WRITE_STEP`] bytes is one transaction when the mount holds the
    /// data extents it needs: a crash keeps all of it or none (bytes overwritten in
    /// blocks the file already had may be the old or the new ones, as on any filesystem
    /// that writes data in place). A larger write, or one that needs more extents than
    /// the server hands a mount at a time, is made of such steps, each committed with the
    /// size that covers it, so a crash keeps a prefix of it.
    ///
    /// A write to a file with offline blocks (below its size) waits until the whole file
    /// is staged (see [`Fs::try_write`]).
    pub fn write(&self, ino: u64, off: u64, data: &[u8]) -> FsResult<u32> {
        waits::block_on(None, || self.try_write(ino, off, data))
    }

    /// [`Fs::write`], or the wait it must make first (module `waits`).
    pub fn try_write(&self, ino: u64, off: u64, data: &[u8]) -> FsResult<Waitable<u32>> {
        if data.len() > u32::MAX as usize {
            return Err(FsError::Invalid);
        }
        self.op(|st| {
            if let Some(w) = st.whole_file_wait(&self.waits, ino)? {
                return Ok(Waitable::Wait(w));
            }
            let mut done = 0usize;
            while done < data.len() {
                let chunk = &data[done..data.len().min(done + WRITE_STEP)];
                st.client.step();
                // A step that comes up short ran out of this mount's data extents: the
                // next one asks for more (a commit) and goes on; one that can write
                // nothing ends the write.
                match st.write(ino, off + done as u64, chunk) {
                    Ok((n, spent)) => {
                        done += n as usize;
                        if (n as usize) < chunk.len() && !spent {
                            // The data device failed: a short write.
                            break;
                        }
                    }
                    // What the earlier steps wrote stays: a short write.
                    Err(_) if done > 0 => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(Waitable::Ready(done as u32))
        })
    }

    /// Allocate unwritten extents (they read as zeros) for `off..off + len`; the size
    /// grows to cover them unless `keep_size`. Waits, as a write does, until a file with
    /// offline blocks is wholly staged (see [`Fs::try_fallocate`]).
    pub fn fallocate(&self, ino: u64, off: u64, len: u64, keep_size: bool) -> FsResult<()> {
        waits::block_on(None, || self.try_fallocate(ino, off, len, keep_size))
    }

    /// [`Fs::fallocate`], or the wait it must make first (module `waits`).
    pub fn try_fallocate(
        &self,
        ino: u64,
        off: u64,
        len: u64,
        keep_size: bool,
    ) -> FsResult<Waitable<()>> {
        self.op(|st| {
            if len > 0 {
                if let Some(w) = st.whole_file_wait(&self.waits, ino)? {
                    return Ok(Waitable::Wait(w));
                }
            }
            st.fallocate(ino, off, len, keep_size).map(Waitable::Ready)
        })
    }

    /// Make everything done so far durable (a transaction commit; the data device is
    /// flushed first).
    pub fn fsync(&self, ino: u64, _datasync: bool) -> FsResult<()> {
        self.op(|st| {
            st.inode(ino)?;
            st.sync()
        })
    }

    /// Make everything done so far durable.
    pub fn sync(&self) -> FsResult<()> {
        self.op(|st| st.sync())
    }

    /// Set an xattr. The ACL names ([`ACL_ACCESS`], [`ACL_DEFAULT`]) take valid ACLs
    /// only ([`FsError::Invalid`]) and only with [`FsOptions::acl`]; an access ACL sets
    /// the mode's permission bits, and is not kept when the mode says all it says.
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], how: XattrSet) -> FsResult<()> {
        self.op(|st| {
            if acl::is_acl_name(name) {
                st.set_acl(ino, name, value, how)
            } else {
                st.setxattr(ino, name, value, how)
            }
        })
    }

    /// The value of an xattr ([`FsError::NoData`] if it has none).
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        self.op_read(|st| {
            if acl::is_acl_name(name) && !st.acl {
                return Err(FsError::NotSupported);
            }
            st.getxattr(ino, name)
        })
    }

    /// The names of an inode's xattrs.
    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<Vec<u8>>> {
        self.op_read(|st| st.listxattr(ino))
    }

    /// Remove an xattr (removing an access ACL leaves the mode as it is).
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> FsResult<()> {
        self.op(|st| {
            if acl::is_acl_name(name) && !st.acl {
                return Err(FsError::NotSupported);
            }
            st.removexattr(ino, name)
        })
    }

    /// The names of the `.hide.` xattrs of `ino`, which [`Fs::listxattr`] leaves out.
    pub fn list_hidden_xattrs(&self, ino: u64) -> FsResult<Vec<Vec<u8>>> {
        self.op_read(|st| st.list_hidden_xattrs(ino))
    }

    /// Up to `limit` totals of `.totl.` xattrs whose names are `from` or after it, in
    /// name order (module `totl`): the filesystem's, this mount's uncommitted changes
    /// included. A name no xattr has has no total.
    pub fn read_xattr_totals(&self, from: [u64; 3], limit: usize) -> FsResult<Vec<XattrTotal>> {
        self.op_read(|st| st.read_xattr_totals(from, limit))
    }

    /// Up to `limit` entries of the `.indx.` index from `first` to `last` (both
    /// included), in order, each `(major, minor, ino)` once (module `indx`); this
    /// mount's uncommitted changes included. [`FsError::Invalid`] if `first` is after
    /// `last`.
    pub fn read_xattr_index(
        &self,
        first: IndxEntry,
        last: IndxEntry,
        limit: usize,
    ) -> FsResult<Vec<IndxEntry>> {
        self.op_read(|st| st.read_xattr_index(first, last, limit))
    }

    /// Whether the mount keeps POSIX ACLs ([`FsOptions::acl`]).
    pub fn acls(&self) -> bool {
        self.st.lock().acl
    }

    /// The mount's periodic duty: commit what is pending, hand deletions to a merge once
    /// the mount is idle, and do the log merge work and then the srch compaction work
    /// there is (each within a budget: 1,024 units or 5 s of the mount's clock).
    ///
    /// Deletions free metadata space only once a merge has taken them into the
    /// filesystem root, and a log tree is finalized for a merge only when it has grown
    /// tall or its mount is short of space: a tree of deletions stays small, so without
    /// more the space of every file deleted since the last merge (a whole volume's, after
    /// an `rm -r`) stays used, and an ENOSPC outlives the files that caused it. So when a
    /// tick finds nothing to commit (the mount idle for a tick's interval) and the
    /// mount's log tree holds deletions, the tree is finalized and merged.
    pub fn background_tick(&self) -> FsResult<()> {
        let idle = self.op(|st| {
            let idle = !st.client.is_dirty();
            st.sync()?;
            Ok(idle)
        })?;
        if idle {
            self.merge_deletions()?;
        }
        // Idle cluster locks past the mount's limit go back to the server.
        if let Some(locks) = self.cluster_locks() {
            if let Err(e) = locks.shrink() {
                eprintln!("scoutfs: giving back idle locks failed: {e}");
            }
        }
        // Merge work until there is none, within a budget: the merge is what gives
        // space back and keeps reads from visiting many log trees, and a few units per
        // tick (each a bounded subtree) leave a large merge running for hours.
        let start = self.clock.now();
        for _ in 0..TICK_MERGE_UNITS {
            if self.merge_work(1)? == 0 || elapsed(start, self.clock.now(), TICK_MERGE_NS) {
                break;
            }
        }
        // srch compaction the same way: steps until there is none, within a budget.
        let start = self.clock.now();
        for _ in 0..TICK_MERGE_UNITS {
            if self.srch_compact_work(1)? == 0 || elapsed(start, self.clock.now(), TICK_MERGE_NS) {
                break;
            }
        }
        Ok(())
    }

    /// Do up to `steps` steps of srch compaction for the server (a mount's background
    /// duty: without it rotated log files pile up and searches read more of them).
    /// Returns the steps done; 0 means there was nothing to do. Steps run outside the
    /// mount's lock, beside its operations.
    pub fn srch_compact_work(&self, steps: usize) -> FsResult<usize> {
        let Some(c) = self.srch_compactor() else {
            return Ok(0);
        };
        for n in 0..steps {
            if !c.step()? {
                return Ok(n);
            }
        }
        Ok(steps)
    }

    /// The worker that does this mount's srch compaction steps (`None` on a read-only
    /// mount): [`Fs::srch_compact_work`] uses it, tests inject faults through it.
    pub fn srch_compactor(&self) -> Option<crate::client::SrchCompactor> {
        self.st.lock().client.srch_compactor(self.srch_step)
    }

    /// The inodes of `next_ino..=last_ino` that have the `.srch.` xattr `name`, at most
    /// `limit` of them, in inode order, as the last commit has them (a sync makes the
    /// mount's changes visible): candidates, since different names may share the hash
    /// the files keep, so the caller checks the xattr; never missing an inode whose xattr
    /// is committed. If not `complete`, search again from the last inode returned plus
    /// one. A name without the `srch.` tag is [`FsError::Invalid`].
    pub fn search_xattrs(
        &self,
        name: &[u8],
        next_ino: u64,
        last_ino: u64,
        limit: usize,
    ) -> FsResult<SearchXattrs> {
        self.op_read(|st| st.search_xattrs(name, next_ino, last_ino, limit))
    }

    /// What `srch_root` and the log trees hold of srch files and compactions, including
    /// the server's open commit (tests and tools).
    pub fn srch_stats(&self) -> FsResult<crate::srch::SrchStats> {
        Ok(self.st.lock().client.srch_stats()?)
    }

    /// Finalize this mount's log tree if it holds deletions and no merge is running (one
    /// is started: [`Fs::merge_work`] does it).
    fn merge_deletions(&self) -> FsResult<()> {
        let mut st = self.st.lock();
        let Some(nr) = st.freed_in else {
            return Ok(());
        };
        if st.client.log_trees().nr.get() != nr {
            // Finalized since (it grew, or the mount ran short of space).
            st.freed_in = None;
            return Ok(());
        }
        if st.client.is_read_only() || self.merge_status()?.running {
            // The running merge goes first; this tree joins the next one.
            return Ok(());
        }
        self.call_done(Request::Merge(MergeAdmin::ForceFinalize))?;
        // The commit gives the server the tree to finalize (the mount goes on in a fresh
        // one), and the merge starts.
        st.client.commit()?;
        if st.client.log_trees().nr.get() != nr {
            st.freed_in = None;
        }
        Ok(())
    }

    /// Do up to `units` units of log merge work for the server (a mount's background
    /// duty: without it the mount's finalized log trees pile up and reads slow down).
    /// Returns the units done; 0 means there was nothing to do.
    ///
    /// The mount's lock is taken for one unit at a time, so operations go on between
    /// units.
    pub fn merge_work(&self, units: usize) -> FsResult<usize> {
        for n in 0..units {
            if !self.st.lock().client.merge_once()? {
                return Ok(n);
            }
        }
        Ok(units)
    }

    /// Commit, finalize every log tree and merge them all into the filesystem root
    /// (tests, and an administrator forcing a merge).
    pub fn merge_all(&self) -> FsResult<()> {
        for _ in 0..20 {
            self.call_done(Request::Merge(MergeAdmin::ForceFinalize))?;
            self.st.lock().client.commit()?;
            for _ in 0..100_000 {
                let worked = self.merge_work(1)? > 0;
                if !worked && !self.merge_status()?.running {
                    break;
                }
            }
            let logs_with_items = self.merge_status()?.logs_with_items;
            // Ours too: a merge that was running when this began left it unfinalized
            // (finalization waits for the running merge), and the next round takes it.
            if logs_with_items == 0 {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Pace the log merge by `cfg` (tests that need a merge spread over many units of
    /// [`Fs::merge_work`]).
    #[doc(hidden)]
    pub fn set_merge_config(&self, cfg: crate::server::MergeConfig) -> FsResult<()> {
        self.call_done(Request::Merge(MergeAdmin::SetConfig(cfg)))
    }

    /// Why the log merge is waiting for space, if it is (see
    /// [`crate::server::ServerCore::merge_stall`]): a front-end reports it.
    pub fn merge_stall(&self) -> FsResult<Option<crate::server::MergeStall>> {
        Ok(self.merge_status()?.stall)
    }

    /// Space and inode counts.
    pub fn statfs(&self) -> FsResult<StatFs> {
        let v = self.volume_stats()?;
        let (data_free, meta_free, inodes) =
            (v.data_free_blocks, v.meta_free_blocks, v.inode_count);
        let st = self.st.lock();
        let inodes = inodes.wrapping_add_signed(st.client.pending_inode_count());
        let bfree = data_free + st.client.data_avail();
        let ffree = (meta_free + st.client.meta_avail() as u64) * (self.geo_bs as u64 / 512);
        Ok(StatFs {
            blocks: self.total_data_blocks.saturating_sub(DATA_START_BLKNO),
            bfree,
            bavail: bfree,
            files: inodes.saturating_add(ffree),
            ffree,
            bsize: DATA_BLOCK_SIZE as u32,
            namelen: NAME_MAX as u32,
            frsize: DATA_BLOCK_SIZE as u32,
        })
    }
}

fn kind_of(inode: &Inode) -> FsResult<FileKind> {
    FileKind::from_mode(inode.mode.get()).ok_or(FsError::Corrupt("inode of an unknown kind"))
}

fn decode_inode(it: &Item) -> FsResult<Inode> {
    Inode::read_from_bytes(&it.val).map_err(|_| FsError::Corrupt("inode item of the wrong size"))
}

impl State {
    fn inode(&self, ino: u64) -> FsResult<Inode> {
        match self.client.get(&inode_key(ino))? {
            Some(it) => decode_inode(&it),
            None => Err(FsError::NotFound),
        }
    }

    /// Insert or replace an item (from the reserve when the operation frees space).
    fn put(&mut self, key: &Key, val: &[u8]) -> FsResult<()> {
        if self.freeing {
            self.client.insert_freeing(key, val)?;
        } else {
            self.client.insert(key, val)?;
        }
        Ok(())
    }

    fn attr(&self, ino: u64) -> FsResult<Attr> {
        let i = self.inode(ino)?;
        Ok(Attr {
            ino,
            kind: kind_of(&i)?,
            mode: i.mode.get(),
            nlink: i.nlink.get(),
            uid: i.uid.get(),
            gid: i.gid.get(),
            rdev: i.rdev.get(),
            size: i.size.get(),
            blocks: (i.online_blocks.get() + i.offline_blocks.get()) * (DATA_BLOCK_SIZE / 512),
            blksize: DATA_BLOCK_SIZE as u32,
            atime: api_time(&i.atime),
            mtime: api_time(&i.mtime),
            ctime: api_time(&i.ctime),
            crtime: api_time(&i.crtime),
            data_version: i.data_version.get(),
        })
    }

    /// Update the access time of `ino`, which was just read, as the mount's
    /// [`AtimeMode`] says. Best effort, as Linux's: a read does not fail for its access
    /// time. When the volume is short of metadata space the update is skipped; when the
    /// commit it brings on fails, the mount refuses changes from then on (the client is
    /// poisoned) and the next change reports it.
    fn touch_atime(&mut self, ino: u64) -> FsResult<()> {
        if self.atime != AtimeMode::Never {
            let inode = self.inode(ino)?;
            self.touch_atime_of(ino, inode)?;
        }
        Ok(())
    }

    /// [`State::touch_atime`] of an inode the caller has read already. Best effort:
    /// the only error is [`ClientError::NeedLock`] (a read-only operation found that it
    /// must write: it runs again under the locks writing needs), before any change.
    fn touch_atime_of(&mut self, ino: u64, mut inode: Inode) -> FsResult<()> {
        if self.atime == AtimeMode::Never {
            return Ok(());
        }
        if !self.dir_atime && FileKind::from_mode(inode.mode.get()) == Some(FileKind::Dir) {
            return Ok(());
        }
        let now = self.now;
        let (atime, mtime, ctime) = (
            api_time(&inode.atime),
            api_time(&inode.mtime),
            api_time(&inode.ctime),
        );
        if !self.atime.needs_update(atime, mtime, ctime, now) {
            return Ok(());
        }
        if self.client.meta_low() || self.begin(Reservation::freeing(1 + INDEX_ITEMS)).is_err() {
            return Ok(());
        }
        inode.atime = raw_time(now);
        // Best effort (see above): a failure here is a failed commit, which poisons the
        // mount, and the next change reports it. The inode item is written first, so a
        // lock found missing stops it before it changed anything.
        match self.put_inode(ino, &mut inode) {
            Err(e @ FsError::Client(ClientError::NeedLock { .. })) => Err(e),
            _ => Ok(()),
        }
    }

    /// A new inode number (a run is asked of the server when this mount's is used up).
    fn alloc_ino(&mut self) -> FsResult<u64> {
        if self.ino_next >= self.ino_end {
            match self.transport.call(Request::AllocInodes {
                rid: self.rid,
                count: INODE_BATCH,
            })? {
                Response::Inodes { first, count } => {
                    self.ino_next = first;
                    self.ino_end = first + count;
                }
                _ => return Err(TransportError::Unexpected.into()),
            }
        }
        let ino = self.ino_next;
        self.ino_next += 1;
        Ok(ino)
    }

    fn sync(&mut self) -> FsResult<()> {
        if self.client.is_dirty() {
            self.client.commit()?;
        }
        Ok(())
    }

    /// Declare what the operation (or its step) will change (see
    /// [`crate::client::Client::begin`]).
    fn begin(&mut self, r: Reservation) -> FsResult<()> {
        self.client.begin(r)?;
        Ok(())
    }

    /// Delete inode `ino` (`inode`: the caller's copy of its item), which has no links
    /// and no users: its items, its index items, its data and its orphan item. The caller's operation reserved [`deletion_reservation`]: a small
    /// inode goes in its transaction, whole. A larger one gets its orphan item there (if
    /// it has none) and the operation's changes so far end a step; the rest is deleted in
    /// steps that commit as the transaction fills, the inode item last, so a crash
    /// part-way leaves an orphan that the next mount finishes — never items without their
    /// inode, never a leak.
    fn delete_inode(&mut self, ino: u64, inode: &Inode) -> FsResult<()> {
        let mut start = Key::new(zone::FS, ino, item_type::INODE, 0, 0, 0)
            .next()
            .ok_or(FsError::Corrupt("inode number out of range"))?;
        let end = Key::new(zone::FS, ino, u8::MAX, u64::MAX, u64::MAX, u8::MAX);
        let mut orphaned = self.client.get(&orphan_key(ino))?.is_some();
        let items = self
            .client
            .read_items_limit(&start, &end, DELETE_INLINE + 1)?;
        let inline: usize = items.iter().map(|it| item_deletion(it).items).sum();
        if !orphaned && inline > DELETE_INLINE {
            self.put(&orphan_key(ino), &[])?;
            orphaned = true;
        }
        if orphaned {
            self.client.step();
            loop {
                self.begin(Reservation::freeing(DELETE_STEP).data(DELETE_STEP, 0))?;
                let items = self.client.read_items_limit(&start, &end, DELETE_STEP)?;
                let Some(last) = self.delete_items(ino, items, true)? else {
                    break;
                };
                self.client.step();
                match last.next() {
                    Some(k) => start = k,
                    None => break,
                }
            }
            self.begin(Reservation::freeing(2 + INDEX_ITEMS))?;
        } else {
            self.delete_items(ino, items, false)?;
        }
        self.delete_inode_item(ino, inode)?;
        self.client.add_inode_count(-1);
        if orphaned {
            self.client.delete(&orphan_key(ino))?;
        }
        Ok(())
    }

    /// Delete items of inode `ino`, freeing the data of its extents and taking what
    /// its tagged xattrs add away with them; a `step` of a large deletion stops early
    /// (after one at least) when the transaction is full or the step has made its
    /// [`DELETE_STEP`] changes. Returns the key of the last item deleted.
    fn delete_items(&mut self, ino: u64, items: Vec<Item>, step: bool) -> FsResult<Option<Key>> {
        let mut last = None;
        let mut changes = 0;
        for it in items {
            let cost = item_deletion(&it);
            changes += cost.items;
            if step && last.is_some() && (changes > DELETE_STEP || !self.client.has_room(&cost)) {
                break;
            }
            if let Some(t) = tagged_part(&it.key, &it.val) {
                self.tagged_xattr_changed(ino, t.id, t.name, &t.tags, Some(t.value), None)?;
            }
            if it.key.ty == item_type::DATA_EXTENT {
                let e = self.decode_extent(&it)?;
                self.drop_extent(ino, &e)?;
            } else {
                self.client.delete(&it.key)?;
            }
            last = Some(it.key);
        }
        Ok(last)
    }

    /// One link of `ino` gone (`all`: a directory's links all gone): the inode is
    /// deleted when none are left, unless open (then it becomes an orphan). The caller
    /// reserved [`deletion_reservation`] beside its own changes.
    fn drop_link(&mut self, ino: u64, all: bool) -> FsResult<()> {
        let mut inode = self.inode(ino)?;
        let n = if all {
            0
        } else {
            inode.nlink.get().saturating_sub(1)
        };
        inode.nlink = n.into();
        inode.ctime = raw_time(self.now);
        if n > 0 {
            return self.put_inode(ino, &mut inode);
        }
        if self.held_anywhere(ino)? {
            self.put_inode(ino, &mut inode)?;
            self.put(&orphan_key(ino), &[])?;
            return Ok(());
        }
        self.delete_inode(ino, &inode)
    }

    /// Whether `ino` is held open or handed out by this mount, or, in a cluster, by any
    /// other mount (the open-inode map: module `cluster`): an unlinked inode held
    /// anywhere is an orphan, deleted when the last mount lets go of it.
    fn held_anywhere(&mut self, ino: u64) -> FsResult<bool> {
        if self.live.lock().held(ino) {
            return Ok(true);
        }
        if !self.clustered {
            return Ok(false);
        }
        let group = crate::client::locks::LOCK_GROUP;
        match self.transport.call(Request::OpenInoMap {
            group_nr: ino / group,
        })? {
            Response::OpenInoMap(bits) => {
                let b = (ino % group) as usize;
                Ok(bits[b / 64] & (1 << (b % 64)) != 0)
            }
            _ => Err(TransportError::Unexpected.into()),
        }
    }

    /// At mount, finish what a crash interrupted: delete the inodes of orphan items (no
    /// one has them open) and finish the truncates and releases of truncate and release
    /// records; then commit.
    fn finish_interrupted(&mut self) -> FsResult<()> {
        let start = orphan_key(0);
        let end = release_key(u64::MAX);
        let records = self.client.read_items(&start, &end)?;
        if records.is_empty() {
            return Ok(());
        }
        self.freeing = true;
        for it in records {
            let ino = it.key.second;
            self.client.step();
            self.begin(deletion_reservation())?;
            let inode = match self.inode(ino) {
                Ok(i) => Some(i),
                Err(FsError::NotFound) => None,
                Err(e) => return Err(e),
            };
            match (it.key.ty, inode) {
                // Another mount may hold it open (it deletes it when it lets go).
                (ORPHAN_TYPE, Some(_)) if self.held_anywhere(ino)? => {}
                (ORPHAN_TYPE, Some(inode)) => self.delete_inode(ino, &inode)?,
                (TRUNCATE_TYPE, Some(inode)) => {
                    let size = inode.size.get();
                    self.free_past(ino, size.div_ceil(DATA_BLOCK_SIZE), Reservation::default())?;
                }
                (RELEASE_TYPE, Some(_)) => self.finish_release(ino, &it.val)?,
                _ => self.client.delete(&it.key)?,
            }
        }
        self.client.step();
        self.sync()
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        parent: u64,
        name: &[u8],
        kind: FileKind,
        mode: u32,
        rdev: u32,
        creds: Creds,
        target: Option<&[u8]>,
    ) -> FsResult<Attr> {
        check_entry_name(name)?;
        let dir = self.inode(parent)?;
        if kind_of(&dir)? != FileKind::Dir {
            return Err(FsError::NotDir);
        }
        if dir.nlink.get() == 0 {
            return Err(FsError::NotFound);
        }
        if self.find_entry(parent, name)?.is_some() {
            return Err(FsError::Exists);
        }
        if kind == FileKind::Dir && dir.nlink.get() >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        let chunks = target.map_or(0, |t| t.len().div_ceil(self.part_len));
        let acl::NewMode {
            mode,
            access,
            default,
        } = self.new_mode(parent, kind, mode, creds.umask)?;
        let acl_parts = access
            .iter()
            .chain(&default)
            .map(|v| 1 + v.len() / self.part_len);
        let acl_bytes = access.iter().chain(&default).map(Vec::len).sum::<usize>();
        self.begin(
            Reservation::allocating(8 + 2 * INDEX_ITEMS + chunks + acl_parts.sum::<usize>())
                .bytes(target.map_or(0, <[u8]>::len) + acl_bytes + NAME_MAX),
        )?;
        let ino = self.alloc_ino()?;
        let now = raw_time(self.now);
        let mut inode = Inode {
            nlink: if kind == FileKind::Dir { 2 } else { 1 }.into(),
            uid: creds.uid.into(),
            gid: creds.gid.into(),
            mode: (kind.mode_bits() | (mode & !S_IFMT)).into(),
            rdev: rdev.into(),
            size: (target.map_or(0, |t| t.len()) as u64).into(),
            next_readdir_pos: 2.into(),
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            ..Inode::default()
        };
        self.put_inode(ino, &mut inode)?;
        self.client.add_inode_count(1);
        if let Some(t) = target {
            for (nr, chunk) in t.chunks(self.part_len).enumerate() {
                self.client.insert(&symlink_key(ino, nr as u64), chunk)?;
            }
        }
        if let Some(a) = access {
            self.write_xattr(ino, ACL_ACCESS, &a, None)?;
        }
        if let Some(d) = default {
            self.write_xattr(ino, ACL_DEFAULT, &d, None)?;
        }
        self.add_entry(parent, name, ino, kind)?;
        if kind == FileKind::Dir {
            let mut dir = self.inode(parent)?;
            dir.nlink = (dir.nlink.get() + 1).into();
            self.put_inode(parent, &mut dir)?;
        }
        self.attr(ino)
    }

    fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let inode = self.inode(ino)?;
        if kind_of(&inode)? != FileKind::Symlink {
            return Err(FsError::Invalid);
        }
        let items = self
            .client
            .read_items(&symlink_key(ino, 0), &symlink_key(ino, u64::MAX))?;
        let mut out = Vec::with_capacity((inode.size.get() as usize).min(SYMLINK_MAX));
        for it in items {
            out.extend_from_slice(&it.val);
        }
        if out.len() as u64 != inode.size.get() {
            return Err(FsError::Corrupt("symlink target of the wrong length"));
        }
        Ok(out)
    }
}

impl From<ClientError> for FsError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::NoSpace => FsError::NoSpace,
            ClientError::ReadOnly => FsError::ReadOnly,
            e => FsError::Client(e),
        }
    }
}

impl From<TransportError> for FsError {
    fn from(e: TransportError) -> Self {
        match e {
            TransportError::Remote {
                kind: crate::transport::RemoteErrorKind::NoSpace,
                ..
            } => FsError::NoSpace,
            e => FsError::Client(ClientError::Transport(e)),
        }
    }
}
