//! A volume: mkfs, reading and checking the supers, and [`Volume`], the single-writer API
//! over the filesystem btree that embedders and benches use.
//!
//! A [`Volume`] is a [`ServerCore`] whose changes go straight into the filesystem root:
//! commits follow the server's protocol (all dirty blocks written and flushed, then the
//! super, then success), and metadata blocks come from the server's persistent
//! allocators. A failed write or flush poisons the volume: every later change fails with
//! [`VolumeError::Poisoned`] until it is reopened from the device.

use crate::block::{BlockCache, BlockError, BlockWriter, Geometry};
use crate::btree::{self, BtreeError, Item, ItemView, TreeTxn};
use crate::device::{BlockDevice, DeviceError};
use crate::format::*;
use crate::server::{ServerCore, ServerOptions};
use std::ops::ControlFlow;
use std::sync::Arc;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// Errors of volume operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VolumeError {
    /// A device failed.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A metadata block failed to read, verify or allocate.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// A btree operation failed.
    #[error(transparent)]
    Btree(#[from] BtreeError),
    /// The device holds no scoutfs super block.
    #[error("{device} device holds no scoutfs super block")]
    NotFormatted {
        /// "meta" or "data".
        device: &'static str,
    },
    /// mkfs found an existing volume and was not forced.
    #[error("{device} device already holds a scoutfs volume (use --force to overwrite)")]
    AlreadyFormatted {
        /// "meta" or "data".
        device: &'static str,
    },
    /// The super block is damaged or inconsistent.
    #[error("{device} device super block is invalid: {reason}")]
    BadSuper {
        /// "meta" or "data".
        device: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A format version this code does not read.
    #[error("format version {0} is not supported (this build reads {FORMAT_VERSION_MIN}..={FORMAT_VERSION})")]
    UnsupportedVersion(u64),
    /// The two devices do not belong together.
    #[error("meta and data devices do not belong to the same volume: {0}")]
    Mismatch(&'static str),
    /// A device is too small for a volume.
    #[error("{device} device is too small: {have} bytes, at least {need} needed")]
    TooSmall {
        /// "meta" or "data".
        device: &'static str,
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// A metadata block size that is not a power of two in the supported range.
    #[error("metadata block size {0} must be a power of two from {MIN_META_BLOCK_SIZE} to {MAX_META_BLOCK_SIZE}")]
    BadBlockSize(u64),
    /// An earlier write or flush failed; reopen the volume.
    #[error("an earlier write or flush failed; the volume must be reopened")]
    Poisoned,
    /// A commit asked of a server opened read-only.
    #[error("the volume is open read-only")]
    ReadOnly,
    /// A request that does not fit the server's state (a stale or unknown transaction).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// No space: the allocators are in their reserve (ENOSPC).
    #[error("no space left on the volume")]
    NoSpace,
}

impl VolumeError {
    /// Whether this is a lack of space (ENOSPC) rather than a failure.
    pub fn is_no_space(&self) -> bool {
        use crate::alloc::AllocError;
        use crate::block::BlockError;
        matches!(
            self,
            VolumeError::NoSpace
                | VolumeError::Block(BlockError::Alloc(AllocError::NoSpace))
                | VolumeError::Btree(BtreeError::Block(BlockError::Alloc(AllocError::NoSpace)))
        )
    }
}

/// Result of volume operations.
pub type Result<T> = std::result::Result<T, VolumeError>;

/// A random u64 from [`crate::entropy::SystemEntropy`], for defaults an embedder did not
/// give (a simulation gives them all).
pub fn random_u64() -> u64 {
    use crate::entropy::Entropy;
    crate::entropy::SystemEntropy::default().next_u64()
}

/// Smallest meta device: the fixed area and 64 metadata blocks.
fn min_meta_bytes(block_size: u32) -> u64 {
    META_START_OFFSET + 64 * block_size as u64
}

/// Smallest data device: the fixed area and 64 data blocks.
pub const MIN_DATA_BYTES: u64 = (DATA_START_BLKNO + 64) * DATA_BLOCK_SIZE;

/// Parameters of [`mkfs`].
#[derive(Clone, Debug)]
pub struct MkfsOptions {
    /// Metadata block size in bytes.
    pub meta_block_size: u32,
    /// Use only this many bytes of the meta device (default: all of it).
    pub meta_size: Option<u64>,
    /// Use only this many bytes of the data device (default: all of it).
    pub data_size: Option<u64>,
    /// Overwrite an existing volume.
    pub force: bool,
    /// Volume identity; random if `None`.
    pub fsid: Option<u64>,
    /// Timestamp of the root inode (seconds since the epoch).
    pub now_secs: u64,
}

impl Default for MkfsOptions {
    fn default() -> Self {
        MkfsOptions {
            meta_block_size: DEFAULT_META_BLOCK_SIZE,
            meta_size: None,
            data_size: None,
            force: false,
            fsid: None,
            now_secs: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        }
    }
}

/// Byte offset of super slot `slot`.
fn super_slot_offset(slot: u64) -> u64 {
    SUPER_OFFSET + slot * SUPER_SIZE as u64
}

/// Decode and check one super slot; `Ok(None)` if it holds no scoutfs super at all.
fn decode_super_slot(
    buf: &[u8],
    slot: u64,
) -> std::result::Result<Option<SuperBlock>, &'static str> {
    let sb = SuperBlock::read_from_bytes(buf).map_err(|_| "short super block")?;
    if sb.hdr.magic.get() != MAGIC_SUPER || sb.id.get() != SUPER_ID {
        return Ok(None);
    }
    if block_crc(buf) != sb.hdr.crc.get() {
        return Err("checksum mismatch");
    }
    if sb.hdr.blkno.get() != super_slot_offset(slot) / SUPER_SIZE as u64 {
        return Err("super block records the wrong location");
    }
    Ok(Some(sb))
}

/// A super slot that does not hold a verified super block while another slot does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotDamage {
    /// "meta" or "data".
    pub device: &'static str,
    /// The slot (0 or 1).
    pub slot: u64,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl std::fmt::Display for SlotDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} device super slot {} does not verify: {}",
            self.device, self.slot, self.reason
        )
    }
}

/// What [`read_super_slots`] found: the super in use and the slots that did not verify.
#[derive(Clone, Debug)]
pub struct SuperSlots {
    /// The valid super with the greatest header seq.
    pub sb: SuperBlock,
    /// The slot it was read from.
    pub slot: u64,
    /// The other slots that hold no verified super (every slot of a volume holds one:
    /// mkfs writes them all). The super in use may be the older one: which of the two a
    /// damaged slot held cannot be told.
    pub damaged: Vec<SlotDamage>,
}

/// Read and check the super block of one device: the valid slot with the greatest
/// header seq.
pub fn read_super(dev: &dyn BlockDevice, device: &'static str) -> Result<SuperBlock> {
    Ok(read_super_slots(dev, device)?.sb)
}

/// [`read_super`], saying which slot it used and which slots did not verify.
pub fn read_super_slots(dev: &dyn BlockDevice, device: &'static str) -> Result<SuperSlots> {
    if dev.len() < super_slot_offset(SUPER_SLOTS) {
        return Err(VolumeError::NotFormatted { device });
    }
    let mut best: Option<(u64, SuperBlock)> = None;
    let mut damaged = Vec::new();
    let mut bad = None;
    for slot in 0..SUPER_SLOTS {
        let mut buf = vec![0u8; SUPER_SIZE];
        dev.read_at(&mut buf, super_slot_offset(slot))?;
        match decode_super_slot(&buf, slot) {
            Ok(Some(sb)) => {
                if best.is_none_or(|(_, b)| sb.hdr.seq.get() > b.hdr.seq.get()) {
                    best = Some((slot, sb));
                }
            }
            Ok(None) => damaged.push(SlotDamage {
                device,
                slot,
                reason: "holds no super block",
            }),
            Err(reason) => {
                bad = Some(reason);
                damaged.push(SlotDamage {
                    device,
                    slot,
                    reason,
                });
            }
        }
    }
    let (slot, sb) = match (best, bad) {
        (Some(b), _) => b,
        (None, Some(reason)) => return Err(VolumeError::BadSuper { device, reason }),
        (None, None) => return Err(VolumeError::NotFormatted { device }),
    };
    let v = sb.fmt_vers.get();
    if !(FORMAT_VERSION_MIN..=FORMAT_VERSION).contains(&v) {
        return Err(VolumeError::UnsupportedVersion(v));
    }
    let bs = sb.meta_block_size.get();
    if !bs.is_power_of_two() || !(MIN_META_BLOCK_SIZE..=MAX_META_BLOCK_SIZE).contains(&bs) {
        return Err(VolumeError::BadBlockSize(bs as u64));
    }
    Ok(SuperSlots { sb, slot, damaged })
}

fn check_block_size(bs: u32) -> Result<()> {
    if !bs.is_power_of_two() || !(MIN_META_BLOCK_SIZE..=MAX_META_BLOCK_SIZE).contains(&bs) {
        return Err(VolumeError::BadBlockSize(bs as u64));
    }
    Ok(())
}

/// Write `sb` to the slot its header seq selects (stamping the slot's location).
pub(crate) fn write_super(dev: &dyn BlockDevice, sb: &SuperBlock) -> Result<()> {
    let slot = sb.hdr.seq.get() % SUPER_SLOTS;
    let mut sb = *sb;
    sb.hdr.blkno = (super_slot_offset(slot) / SUPER_SIZE as u64).into();
    let mut buf = sb.as_bytes().to_vec();
    crate::block::seal_block(&mut buf);
    dev.write_at(&buf, super_slot_offset(slot))?;
    Ok(())
}

/// Where the running server of the volume on `meta` listens: its term and address, from
/// the server record ([`ServerRecord`]); `None` when no server records one (none runs, or
/// the record is damaged: a torn write of it is no worse than no record).
pub fn read_server_record(
    meta: &dyn BlockDevice,
    fsid: u64,
) -> Result<Option<(u64, std::net::SocketAddr)>> {
    let mut buf = vec![0u8; SERVER_RECORD_SIZE];
    meta.read_at(&mut buf, SERVER_RECORD_OFFSET)?;
    let Ok(r) = ServerRecord::read_from_bytes(&buf) else {
        return Ok(None);
    };
    if r.hdr.magic.get() != MAGIC_SERVER_RECORD
        || r.hdr.fsid.get() != fsid
        || block_crc(&buf) != r.hdr.crc.get()
        || r.term.get() == 0
    {
        return Ok(None);
    }
    let ip = std::net::Ipv6Addr::from(r.addr);
    let ip = match ip.to_ipv4_mapped() {
        Some(v4) => std::net::IpAddr::V4(v4),
        None => std::net::IpAddr::V6(ip),
    };
    Ok(Some((
        r.term.get(),
        std::net::SocketAddr::new(ip, r.port.get()),
    )))
}

/// Record that the server of term `term` (mount `rid`) listens at `addr` (`None`: clear
/// the record, the server stops), and flush it so joining mounts find it.
pub fn write_server_record(
    meta: &dyn BlockDevice,
    fsid: u64,
    term: u64,
    rid: u64,
    addr: Option<std::net::SocketAddr>,
) -> Result<()> {
    let mut r = ServerRecord::new_zeroed();
    r.hdr.magic = MAGIC_SERVER_RECORD.into();
    r.hdr.fsid = fsid.into();
    r.hdr.blkno = (SERVER_RECORD_OFFSET / SERVER_RECORD_SIZE as u64).into();
    if let Some(a) = addr {
        r.term = term.into();
        r.rid = rid.into();
        r.addr = match a.ip() {
            std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            std::net::IpAddr::V6(v6) => v6.octets(),
        };
        r.port = a.port().into();
    }
    let mut buf = r.as_bytes().to_vec();
    crate::block::seal_block(&mut buf);
    meta.write_at(&buf, SERVER_RECORD_OFFSET)?;
    meta.flush()?;
    Ok(())
}

/// Write `sb` to every slot (mkfs: no slot may keep a super of an earlier volume).
pub(crate) fn write_super_all_slots(dev: &dyn BlockDevice, sb: &SuperBlock) -> Result<()> {
    let mut sb = *sb;
    for _ in 0..SUPER_SLOTS {
        write_super(dev, &sb)?;
        sb.hdr.seq = sb.hdr.seq.get().wrapping_add(1).into();
    }
    Ok(())
}

/// Where the metadata blocks of the volume `sb` describes live.
pub fn geometry(sb: &SuperBlock) -> Geometry {
    let bs = sb.meta_block_size.get() as usize;
    Geometry {
        block_size: bs,
        fsid: sb.hdr.fsid.get(),
        first_blkno: META_START_OFFSET / bs as u64,
        total_blocks: sb.total_meta_blocks.get(),
    }
}

/// What [`mkfs`] made.
#[derive(Clone, Copy, Debug)]
pub struct MkfsSummary {
    /// Volume identity.
    pub fsid: u64,
    /// Metadata block size.
    pub meta_block_size: u32,
    /// Meta device size in metadata blocks.
    pub total_meta_blocks: u64,
    /// Data device size in data blocks.
    pub total_data_blocks: u64,
}

/// Make a new volume on the two devices: an empty filesystem root holding the root
/// inode, and supers on both devices (data first, then meta, each flushed).
pub fn mkfs(
    meta: &Arc<dyn BlockDevice>,
    data: &Arc<dyn BlockDevice>,
    opts: &MkfsOptions,
) -> Result<MkfsSummary> {
    let bs = opts.meta_block_size;
    check_block_size(bs)?;
    let meta_len = opts.meta_size.unwrap_or(meta.len()).min(meta.len());
    let data_len = opts.data_size.unwrap_or(data.len()).min(data.len());
    if meta_len < min_meta_bytes(bs) {
        return Err(VolumeError::TooSmall {
            device: "meta",
            need: min_meta_bytes(bs),
            have: meta_len,
        });
    }
    if data_len < MIN_DATA_BYTES {
        return Err(VolumeError::TooSmall {
            device: "data",
            need: MIN_DATA_BYTES,
            have: data_len,
        });
    }
    if !opts.force {
        for (dev, name) in [(meta, "meta"), (data, "data")] {
            match read_super(&**dev, name) {
                Err(VolumeError::NotFormatted { .. }) => {}
                Err(VolumeError::Device(e)) => return Err(e.into()),
                _ => return Err(VolumeError::AlreadyFormatted { device: name }),
            }
        }
    }
    let fsid = match opts.fsid {
        Some(f) if f != 0 => f,
        _ => random_u64() | 1,
    };
    let mut sb = SuperBlock::new_zeroed();
    sb.hdr.magic = MAGIC_SUPER.into();
    sb.hdr.fsid = fsid.into();
    sb.hdr.seq = 1.into();
    sb.id = SUPER_ID.into();
    sb.fmt_vers = FORMAT_VERSION.into();
    sb.uuid[..8].copy_from_slice(&fsid.to_le_bytes());
    sb.uuid[8..].copy_from_slice(&random_u64().to_le_bytes());
    // The mkfs commit makes it 1.
    sb.seq = 0.into();
    sb.next_ino = FIRST_FREE_INO.into();
    sb.inode_count = 1.into();
    sb.total_meta_blocks = (meta_len / bs as u64).into();
    sb.total_data_blocks = (data_len / DATA_BLOCK_SIZE).into();
    sb.meta_block_size = bs.into();

    let now = Timespec {
        sec: opts.now_secs.into(),
        nsec: 0.into(),
        pad: 0.into(),
    };
    let inode = Inode {
        nlink: 2.into(),
        mode: (0o040000 | 0o755).into(),
        next_readdir_pos: 2.into(),
        meta_seq: 1.into(),
        atime: now,
        ctime: now,
        mtime: now,
        crtime: now,
        ..Inode::default()
    };
    ServerCore::format(meta.clone(), data, sb, &inode)?;
    Ok(MkfsSummary {
        fsid,
        meta_block_size: bs,
        total_meta_blocks: sb.total_meta_blocks.get(),
        total_data_blocks: sb.total_data_blocks.get(),
    })
}

/// Read both devices' supers and check that they belong together and fit the devices.
pub fn read_volume_supers(meta: &dyn BlockDevice, data: &dyn BlockDevice) -> Result<SuperBlock> {
    Ok(read_volume_super_slots(meta, data)?.0)
}

/// [`read_volume_supers`], with the super slots of either device that did not verify
/// (meta first). A mount or a check that finds any says so: the volume is read as of
/// the previous commit when the newest super is the damaged one.
pub fn read_volume_super_slots(
    meta: &dyn BlockDevice,
    data: &dyn BlockDevice,
) -> Result<(SuperBlock, Vec<SlotDamage>)> {
    let m = read_super_slots(meta, "meta")?;
    let d = read_super_slots(data, "data")?;
    let (sb, dsb) = (m.sb, d.sb);
    let damaged = m.damaged.into_iter().chain(d.damaged).collect();
    if sb.flags.get() & SUPER_FLAG_IS_META_BDEV == 0 {
        return Err(VolumeError::Mismatch(
            "the meta device holds a data device super",
        ));
    }
    if dsb.flags.get() & SUPER_FLAG_IS_META_BDEV != 0 {
        return Err(VolumeError::Mismatch(
            "the data device holds a meta device super",
        ));
    }
    if dsb.uuid != sb.uuid || dsb.hdr.fsid.get() != sb.hdr.fsid.get() {
        return Err(VolumeError::Mismatch("different volume identities"));
    }
    let geo = geometry(&sb);
    if geo.total_blocks > meta.len() / geo.block_size as u64 {
        return Err(VolumeError::TooSmall {
            device: "meta",
            need: geo.total_blocks.saturating_mul(geo.block_size as u64),
            have: meta.len(),
        });
    }
    if sb.total_data_blocks.get() > data.len() / DATA_BLOCK_SIZE {
        return Err(VolumeError::TooSmall {
            device: "data",
            need: sb.total_data_blocks.get().saturating_mul(DATA_BLOCK_SIZE),
            have: data.len(),
        });
    }
    Ok((sb, damaged))
}

/// Options of [`Volume::open`].
#[derive(Clone, Copy, Debug)]
pub struct OpenOptions {
    /// Memory bound of the block cache in bytes.
    pub cache_bytes: usize,
    /// Seed of the seqs given to new blocks (random by default; fixed in simulations).
    pub seed: u64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_bytes: 64 << 20,
            seed: random_u64(),
        }
    }
}

pub use crate::server::CommitStats;

/// An open volume with one transaction on its filesystem btree.
#[derive(Debug)]
pub struct Volume {
    core: ServerCore,
}

impl Volume {
    /// Open a volume: read and cross-check both supers and load the allocators.
    pub fn open(
        meta: Arc<dyn BlockDevice>,
        data: Arc<dyn BlockDevice>,
        opts: OpenOptions,
    ) -> Result<Volume> {
        let core = ServerCore::open(
            meta,
            data,
            ServerOptions {
                cache_bytes: opts.cache_bytes,
                seed: opts.seed,
                limits: None,
            },
        )?;
        Ok(Volume { core })
    }

    /// The server underneath.
    pub fn server(&mut self) -> &mut ServerCore {
        &mut self.core
    }

    /// The committed super block.
    pub fn super_block(&self) -> &SuperBlock {
        self.core.super_block()
    }

    /// The block cache.
    pub fn cache(&self) -> &Arc<BlockCache> {
        self.core.cache()
    }

    /// The filesystem root as of the last commit.
    pub fn committed_root(&self) -> BtreeRoot {
        self.core.super_block().fs_root.into()
    }

    /// The filesystem root including this transaction's changes.
    pub fn root(&self) -> BtreeRoot {
        self.core.roots().fs_root
    }

    /// The writer of the open transaction (reads through it see its changes).
    pub fn writer(&self) -> &BlockWriter {
        self.core.writer()
    }

    /// Free metadata blocks (not counting blocks freed in the open transaction).
    pub fn free_meta_blocks(&self) -> u64 {
        self.core.meta_free_blocks()
    }

    /// Whether a failed write or flush has poisoned the volume.
    pub fn is_poisoned(&self) -> bool {
        self.core.is_poisoned()
    }

    /// Change the filesystem btree within the open transaction.
    pub fn change<T>(
        &mut self,
        f: impl FnOnce(&mut TreeTxn<'_>, &mut BtreeRoot) -> btree::Result<T>,
    ) -> Result<T> {
        self.core.with_txn(|t, r| f(t, &mut r.fs_root))
    }

    /// Insert or replace an item (seq 0, no flags).
    pub fn put(&mut self, key: &Key, val: &[u8]) -> Result<()> {
        self.change(|t, root| t.force(root, key, val))
    }

    /// Delete an item; [`BtreeError::NotFound`] if missing.
    pub fn delete(&mut self, key: &Key) -> Result<()> {
        self.change(|t, root| t.delete(root, key))
    }

    /// The item with `key` as this transaction sees it.
    pub fn get(&self, key: &Key) -> Result<Option<Item>> {
        Ok(btree::lookup(self.core.writer(), &self.root(), key)?)
    }

    /// Pass the items in `start..=end` to `f` in order, as this transaction sees them.
    pub fn scan(
        &self,
        start: &Key,
        end: &Key,
        f: impl FnMut(ItemView<'_>) -> ControlFlow<()>,
    ) -> Result<()> {
        Ok(btree::scan(
            self.core.writer(),
            &self.root(),
            start,
            end,
            f,
        )?)
    }

    /// Make the open transaction durable.
    pub fn commit(&mut self) -> Result<CommitStats> {
        self.core.commit()
    }

    /// Drop the open transaction's changes. If the allocators cannot be read back from
    /// the committed super, the volume is poisoned ([`Volume::is_poisoned`]) and every
    /// later change fails until it is reopened.
    pub fn abort(&mut self) {
        // The error is kept as the poisoned state, which every later call reports.
        let _ = self.core.abort();
    }

    /// Allocate a metadata block directly (tests of allocator pressure); it is leaked
    /// unless the caller references it.
    #[doc(hidden)]
    pub fn alloc_meta_block(&mut self) -> Result<u64> {
        self.core
            .with_txn(|t, _| Ok(t.alloc.alloc_meta().map_err(BlockError::from)?))
    }
}

/// Every btree root a super block references.
pub fn super_roots(sb: &SuperBlock) -> [BtreeRoot; 5] {
    [
        sb.fs_root.into(),
        sb.logs_root.into(),
        sb.log_merge.into(),
        sb.mounted_clients.into(),
        sb.srch_root.into(),
    ]
}
