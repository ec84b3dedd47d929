//! The on-disk format.
//!
//! Every structure here is `#[repr(C)]`, built only from byte arrays and little-endian
//! integer types (alignment 1, no padding the compiler could insert), and has its size
//! asserted at compile time. Decoding is done with `zerocopy`, so a short or garbled buffer
//! is an error, never a panic.
//!
//! ```text
//! Devices (all offsets in bytes)
//!   meta device: 0 .. 64 KiB      unused (room for a partition label)
//!                64 KiB .. 72 KiB two super block slots of 4 KiB (SUPER_OFFSET, SUPER_SIZE);
//!                                  a write goes to slot `hdr.seq % 2`, open takes the valid
//!                                  slot with the greater `hdr.seq`, so a torn super write
//!                                  leaves the previous commit readable
//!                72 KiB .. 76 KiB the server record (SERVER_RECORD_OFFSET): where the
//!                                  running server listens, for mounts that join it
//!                76 KiB .. 128 KiB reserved (quorum blocks)
//!                128 KiB ..        metadata blocks of `meta_block_size` bytes;
//!                                  metadata blkno N lives at byte N * meta_block_size
//!   data device: 64 KiB .. 72 KiB  copies of the super (without IS_META_BDEV)
//!                256 KiB ..        file data in 4 KiB blocks (DATA_BLOCK_SIZE)
//!
//! BlockHeader (32 B, first bytes of every metadata block and of the super)
//!   0  crc   u32   crc32c over the whole block except these 4 bytes
//!   4  magic u32   which kind of block (MAGIC_*)
//!   8  fsid  u64   the volume this block belongs to
//!  16  seq   u64   nonce of this incarnation of the block; a reference names (blkno, seq)
//!  24  blkno u64   where the block was written
//!
//! BtreeBlock (metadata block, magic MAGIC_BTREE)
//!   0   BtreeBlockHeader (48 B): BlockHeader, nr_items u16, level u8, flags u8,
//!       heap_start u32, dead_bytes u32, pad u32
//!   48  item offsets: nr_items x u16, sorted by the key of the item they point at
//!       .. free space ..
//!   heap_start .. block end: item records, allocated downwards from the block end:
//!       ItemHeader (48 B: key 32, seq u64, val_len u16, flags u8, pad 5) + value bytes
//!   `dead_bytes` counts heap bytes of deleted or replaced records, reclaimed by compaction.
//!   Leaves (level 0) hold values up to `max_value_len`; parents (level > 0) hold one item
//!   per child whose key is the greatest key that may be found below that child and whose
//!   value is the child's 16-byte BlockRef. The right spine carries Key::MAX.
//!
//! Key (32 B on disk): first u64, second u64, third u64, fourth u8, zone u8, type u8, pad 5.
//!   Keys sort as (zone, first, type, second, third, fourth) -- not in struct order.
//! ```

use zerocopy::byteorder::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The version of the on-disk format this code writes and reads.
///
/// 2: every inode has its inode seq index items ([`inode_index_key`]; a volume of
/// version 1 has them for the root only, and stale). Version 1 volumes are not read: a
/// walk of their index would miss inodes and `check` would report every one, and
/// nothing rebuilds the index on mount.
pub const FORMAT_VERSION: u64 = 2;
/// The oldest format version this code can read.
pub const FORMAT_VERSION_MIN: u64 = 2;

/// Byte offset of the first super block slot on both devices.
pub const SUPER_OFFSET: u64 = 64 * 1024;
/// Number of super block slots, written alternately.
pub const SUPER_SLOTS: u64 = 2;
/// Size of the super block; its crc covers all of it.
pub const SUPER_SIZE: usize = 4096;
/// Byte offset of the server record ([`ServerRecord`]) on the meta device.
pub const SERVER_RECORD_OFFSET: u64 = 72 * 1024;
/// Size of the server record block; its crc covers all of it.
pub const SERVER_RECORD_SIZE: usize = 4096;
/// First byte of the meta device that holds metadata blocks.
pub const META_START_OFFSET: u64 = 128 * 1024;
/// Size of a data block on the data device.
pub const DATA_BLOCK_SIZE: u64 = 4096;
/// First data block that file data may use.
pub const DATA_START_BLKNO: u64 = 64;

/// Default metadata block size.
pub const DEFAULT_META_BLOCK_SIZE: u32 = 64 * 1024;
/// Smallest metadata block size mkfs accepts: the root inode must fit in a leaf with room
/// for three more such items (tests use it to grow deep trees from few items).
pub const MIN_META_BLOCK_SIZE: u32 = 1024;
/// Largest metadata block size: item offsets are 16 bits.
pub const MAX_META_BLOCK_SIZE: u32 = 64 * 1024;

/// The largest value any btree item may hold (blocks of 4 KiB and more).
pub const MAX_VAL_LEN: usize = 896;
/// The deepest btree we will build or follow.
pub const MAX_BTREE_HEIGHT: u8 = 20;

/// Magic of the super block.
pub const MAGIC_SUPER: u32 = 0x103c_428b;
/// Magic of btree blocks.
pub const MAGIC_BTREE: u32 = 0xe597_f96d;
/// Magic of bloom filter blocks.
pub const MAGIC_BLOOM: u32 = 0x3199_5604;
/// Magic of allocator list blocks.
pub const MAGIC_ALLOC_LIST: u32 = 0x8a93_ac83;
/// Magic of the server record.
pub const MAGIC_SERVER_RECORD: u32 = 0x5e4f_e12d;

/// `SuperBlock::id`: "scoutfs\0" read as a little-endian u64.
pub const SUPER_ID: u64 = u64::from_le_bytes(*b"scoutfs\0");
/// Super flag: this copy lives on the metadata device.
pub const SUPER_FLAG_IS_META_BDEV: u64 = 1;

/// Header at the start of every metadata block and of the super.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct BlockHeader {
    /// crc32c (seed !0) over the block except this field.
    pub crc: U32,
    /// Kind of block.
    pub magic: U32,
    /// Volume identity.
    pub fsid: U64,
    /// Nonce of this incarnation of the block.
    pub seq: U64,
    /// Block number the block was written at.
    pub blkno: U64,
}
const _: () = assert!(size_of::<BlockHeader>() == 32);

/// Size of [`BlockHeader`].
pub const BLOCK_HEADER_SIZE: usize = size_of::<BlockHeader>();

/// The crc32c of a block: over everything but the leading crc field.
pub fn block_crc(block: &[u8]) -> u32 {
    crc32c::crc32c(block.get(4..).unwrap_or(&[]))
}

/// A reference to one incarnation of a metadata block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// Block number.
    pub blkno: u64,
    /// The seq the block must carry; anything else is a different incarnation.
    pub seq: u64,
}

impl BlockRef {
    /// The null reference (no block).
    pub const NONE: BlockRef = BlockRef { blkno: 0, seq: 0 };

    /// Whether this references nothing.
    pub fn is_none(&self) -> bool {
        self.blkno == 0
    }
}

/// On-disk form of [`BlockRef`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct RawBlockRef {
    /// Block number.
    pub blkno: U64,
    /// Incarnation nonce.
    pub seq: U64,
}
const _: () = assert!(size_of::<RawBlockRef>() == 16);

impl From<RawBlockRef> for BlockRef {
    fn from(r: RawBlockRef) -> Self {
        BlockRef {
            blkno: r.blkno.get(),
            seq: r.seq.get(),
        }
    }
}

impl From<BlockRef> for RawBlockRef {
    fn from(r: BlockRef) -> Self {
        RawBlockRef {
            blkno: r.blkno.into(),
            seq: r.seq.into(),
        }
    }
}

/// A btree item key. Field order is the sort order: zone, first, type, second, third, fourth.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// Coarse namespace (inode index, orphans, fs items, server items...).
    pub zone: u8,
    /// Primary field (usually an inode number).
    pub first: u64,
    /// Item type within the zone.
    pub ty: u8,
    /// Secondary field.
    pub second: u64,
    /// Tertiary field.
    pub third: u64,
    /// Last, small field.
    pub fourth: u8,
}

impl Key {
    /// The smallest key.
    pub const MIN: Key = Key {
        zone: 0,
        first: 0,
        ty: 0,
        second: 0,
        third: 0,
        fourth: 0,
    };
    /// The largest key; parents on the right spine of a tree carry it.
    pub const MAX: Key = Key {
        zone: u8::MAX,
        first: u64::MAX,
        ty: u8::MAX,
        second: u64::MAX,
        third: u64::MAX,
        fourth: u8::MAX,
    };

    /// A key from its fields, in sort order.
    pub const fn new(zone: u8, first: u64, ty: u8, second: u64, third: u64, fourth: u8) -> Key {
        Key {
            zone,
            first,
            ty,
            second,
            third,
            fourth,
        }
    }

    /// The next key in sort order, or `None` after [`Key::MAX`].
    pub fn next(&self) -> Option<Key> {
        let mut k = *self;
        if let Some(v) = k.fourth.checked_add(1) {
            k.fourth = v;
            return Some(k);
        }
        k.fourth = 0;
        if let Some(v) = k.third.checked_add(1) {
            k.third = v;
            return Some(k);
        }
        k.third = 0;
        if let Some(v) = k.second.checked_add(1) {
            k.second = v;
            return Some(k);
        }
        k.second = 0;
        if let Some(v) = k.ty.checked_add(1) {
            k.ty = v;
            return Some(k);
        }
        k.ty = 0;
        if let Some(v) = k.first.checked_add(1) {
            k.first = v;
            return Some(k);
        }
        k.first = 0;
        k.zone = k.zone.checked_add(1)?;
        Some(k)
    }

    /// The previous key in sort order, or `None` before [`Key::MIN`].
    pub fn prev(&self) -> Option<Key> {
        let mut k = *self;
        if let Some(v) = k.fourth.checked_sub(1) {
            k.fourth = v;
            return Some(k);
        }
        k.fourth = u8::MAX;
        if let Some(v) = k.third.checked_sub(1) {
            k.third = v;
            return Some(k);
        }
        k.third = u64::MAX;
        if let Some(v) = k.second.checked_sub(1) {
            k.second = v;
            return Some(k);
        }
        k.second = u64::MAX;
        if let Some(v) = k.ty.checked_sub(1) {
            k.ty = v;
            return Some(k);
        }
        k.ty = u8::MAX;
        if let Some(v) = k.first.checked_sub(1) {
            k.first = v;
            return Some(k);
        }
        k.first = u64::MAX;
        k.zone = k.zone.checked_sub(1)?;
        Some(k)
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{}.{}.{}.{}.{}",
            self.zone, self.first, self.ty, self.second, self.third, self.fourth
        )
    }
}

/// On-disk form of [`Key`] (struct order differs from sort order).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct RawKey {
    /// [`Key::first`].
    pub first: U64,
    /// [`Key::second`].
    pub second: U64,
    /// [`Key::third`].
    pub third: U64,
    /// [`Key::fourth`].
    pub fourth: u8,
    /// [`Key::zone`].
    pub zone: u8,
    /// [`Key::ty`].
    pub ty: u8,
    /// Zero.
    pub pad: [u8; 5],
}
const _: () = assert!(size_of::<RawKey>() == 32);

impl From<&RawKey> for Key {
    #[inline]
    fn from(r: &RawKey) -> Self {
        Key {
            zone: r.zone,
            first: r.first.get(),
            ty: r.ty,
            second: r.second.get(),
            third: r.third.get(),
            fourth: r.fourth,
        }
    }
}

impl From<&Key> for RawKey {
    #[inline]
    fn from(k: &Key) -> Self {
        RawKey {
            first: k.first.into(),
            second: k.second.into(),
            third: k.third.into(),
            fourth: k.fourth,
            zone: k.zone,
            ty: k.ty,
            pad: [0; 5],
        }
    }
}

/// The root of a btree: a reference to its top block and the tree's height
/// (0 = empty tree, 1 = a single leaf).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct BtreeRoot {
    /// The top block.
    pub blk: BlockRef,
    /// Number of levels.
    pub height: u8,
}

impl BtreeRoot {
    /// The empty tree.
    pub const EMPTY: BtreeRoot = BtreeRoot {
        blk: BlockRef::NONE,
        height: 0,
    };

    /// Whether the tree holds no blocks.
    pub fn is_empty(&self) -> bool {
        self.height == 0
    }
}

/// On-disk form of [`BtreeRoot`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct RawBtreeRoot {
    /// Top block.
    pub blk: RawBlockRef,
    /// Height.
    pub height: u8,
    /// Zero.
    pub pad: [u8; 7],
}
const _: () = assert!(size_of::<RawBtreeRoot>() == 24);

impl From<RawBtreeRoot> for BtreeRoot {
    fn from(r: RawBtreeRoot) -> Self {
        BtreeRoot {
            blk: r.blk.into(),
            height: r.height,
        }
    }
}

impl From<BtreeRoot> for RawBtreeRoot {
    fn from(r: BtreeRoot) -> Self {
        RawBtreeRoot {
            blk: r.blk.into(),
            height: r.height,
            pad: [0; 7],
        }
    }
}

/// Header of a btree block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct BtreeBlockHeader {
    /// Common block header.
    pub hdr: BlockHeader,
    /// Number of items (and of entries in the offset array).
    pub nr_items: U16,
    /// 0 for leaves; a parent's level is one more than its children's.
    pub level: u8,
    /// Zero.
    pub flags: u8,
    /// Offset of the lowest item record; records fill `heap_start..block_size`.
    pub heap_start: U32,
    /// Bytes of the heap held by no live item.
    pub dead_bytes: U32,
    /// Zero.
    pub pad: U32,
}
const _: () = assert!(size_of::<BtreeBlockHeader>() == 48);

/// Size of [`BtreeBlockHeader`].
pub const BTREE_HEADER_SIZE: usize = size_of::<BtreeBlockHeader>();

/// Item flag: a deletion marker (hides older versions in other trees).
pub const ITEM_FLAG_DELETION: u8 = 1;
/// Item flag: a delta whose value combines with older versions instead of replacing them.
pub const ITEM_FLAG_DELTA: u8 = 2;
/// All item flags this format knows.
pub const ITEM_FLAGS_KNOWN: u8 = ITEM_FLAG_DELETION | ITEM_FLAG_DELTA;

/// Header of an item record in a btree block; the value follows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct ItemHeader {
    /// The item's key.
    pub key: RawKey,
    /// Version of the item (greater wins when trees are merged).
    pub seq: U64,
    /// Length of the value that follows.
    pub val_len: U16,
    /// `ITEM_FLAG_*`.
    pub flags: u8,
    /// Zero.
    pub pad: [u8; 5],
}
const _: () = assert!(size_of::<ItemHeader>() == 48);

/// Size of [`ItemHeader`].
pub const ITEM_HEADER_SIZE: usize = size_of::<ItemHeader>();

/// Root of a free-extent allocator: its btree and the number of free blocks it holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct RawAllocRoot {
    /// Free blocks recorded in the tree.
    pub total_len: U64,
    /// `ALLOC_FLAG_*`.
    pub flags: U32,
    /// Zero.
    pub pad: U32,
    /// The extent btree.
    pub root: RawBtreeRoot,
}
const _: () = assert!(size_of::<RawAllocRoot>() == 40);

/// Head of a list of single free metadata blocks.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct RawAllocListHead {
    /// First list block.
    pub blk: RawBlockRef,
    /// Blocks held by the whole list.
    pub total_nr: U64,
    /// Blocks held by the first list block.
    pub first_nr: U32,
    /// `ALLOC_FLAG_*`.
    pub flags: U32,
}
const _: () = assert!(size_of::<RawAllocListHead>() == 32);

/// Allocator flag: the pool behind this allocator is in its reserve; allocating
/// operations must fail with ENOSPC while freeing ones go on.
pub const ALLOC_FLAG_LOW: u32 = 1;

/// Header of an alloc list block (magic [`MAGIC_ALLOC_LIST`]), followed by `nr` little-endian
/// u64 block numbers from byte [`ALLOC_LIST_HEADER_SIZE`] + 8 × `start`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct AllocListBlockHeader {
    /// Common header.
    pub hdr: BlockHeader,
    /// The next block of the list, or none.
    pub next: RawBlockRef,
    /// Index of the first block number held.
    pub start: U32,
    /// Number of block numbers held.
    pub nr: U32,
}
const _: () = assert!(size_of::<AllocListBlockHeader>() == 56);

/// Size of [`AllocListBlockHeader`].
pub const ALLOC_LIST_HEADER_SIZE: usize = size_of::<AllocListBlockHeader>();

/// How many block numbers an alloc list block of `block_size` bytes holds.
pub const fn alloc_list_capacity(block_size: usize) -> usize {
    block_size.saturating_sub(ALLOC_LIST_HEADER_SIZE) / 8
}

/// Header of a log tree's bloom filter block (magic [`MAGIC_BLOOM`]), followed by the
/// filter's bits as little-endian u64 words to the end of the block (see [`crate::bloom`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct BloomBlockHeader {
    /// Common header.
    pub hdr: BlockHeader,
    /// Number of bits set.
    pub total_set: U64,
}
const _: () = assert!(size_of::<BloomBlockHeader>() == 40);

/// Size of [`BloomBlockHeader`].
pub const BLOOM_HEADER_SIZE: usize = size_of::<BloomBlockHeader>();

/// How many bits the bloom filter in a block of `block_size` bytes has.
pub const fn bloom_bits(block_size: usize) -> u64 {
    (block_size.saturating_sub(BLOOM_HEADER_SIZE) / 8 * 64) as u64
}

/// The key of a free extent in the by-blkno zone of an extent tree (zero-length value).
pub fn free_extent_blkno_key(start: u64, len: u64) -> Key {
    Key::new(zone::FREE_EXTENT_BLKNO, start, 0, len, 0, 0)
}

/// The key of a free extent in the by-size zone of an extent tree: larger extents sort
/// first, then lower block numbers.
pub fn free_extent_order_key(start: u64, len: u64) -> Key {
    Key::new(zone::FREE_EXTENT_ORDER, !len, 0, start, 0, 0)
}

/// The per-mount log tree record (value of a [`zone::LOG_TREES`] item in `logs_root`,
/// key [`log_trees_key`]): the mount's log btree and the allocators of its transactions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct LogTrees {
    /// Metadata blocks the mount allocates from.
    pub meta_avail: RawAllocListHead,
    /// Metadata blocks the mount freed (returned to the server at its next refill).
    pub meta_freed: RawAllocListHead,
    /// The mount's log btree of items.
    pub item_root: RawBtreeRoot,
    /// The bloom filter block of the log btree.
    pub bloom_ref: RawBlockRef,
    /// Data extents the mount allocates from.
    pub data_avail: RawAllocRoot,
    /// Data extents the mount freed.
    pub data_freed: RawAllocRoot,
    /// Seq of the transaction the server last opened for the mount.
    pub get_trans_seq: U64,
    /// Seq of the transaction the mount last committed.
    pub commit_trans_seq: U64,
    /// Greatest item seq in the log btree.
    pub max_item_seq: U64,
    /// Seq at which the tree was finalized (0: open).
    pub finalize_seq: U64,
    /// The mount's random id.
    pub rid: U64,
    /// Which of the mount's trees this is.
    pub nr: U64,
    /// `LOG_TREES_FLAG_*`.
    pub flags: U64,
    /// Change of the inode count by this tree's items (two's complement).
    pub inode_count_delta: U64,
    /// Seq of the first transaction written into this tree: every item in it is at
    /// least this new (0: unknown, taken as older than everything).
    pub first_trans_seq: U64,
    /// The mount's current srch log file: the `.srch.` xattr entries its transactions
    /// logged since the file was last rotated into `srch_root` (see [`crate::srch`]).
    pub srch_file: RawSrchFile,
    /// Zero; room for later fields.
    pub reserved: [U64; 2],
}
const _: () = assert!(size_of::<LogTrees>() == 312);

/// The key of the log tree `nr` of mount `rid`.
pub fn log_trees_key(rid: u64, nr: u64) -> Key {
    Key::new(zone::LOG_TREES, rid, 0, nr, 0, 0)
}

/// A srch file (see [`crate::srch`]): a btree of entries `{hash, ino, id}`, one item
/// each (key [`srch_entry_key`], no value), and how many it holds.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct RawSrchFile {
    /// The btree of entries.
    pub root: RawBtreeRoot,
    /// Entries (items) the btree holds.
    pub entries: U64,
    /// The file's id in `srch_root` (a server seq, given at rotation or when a compaction
    /// writes it; 0 for a mount's current log file).
    pub id: U64,
}
const _: () = assert!(size_of::<RawSrchFile>() == 40);

/// Item types of the `srch_root` btree (zone [`zone::SRCH`]; `first` is always 0 so the
/// types sort apart).
pub mod srch_type {
    /// A rotated log file, key `(id)`, value [`super::RawSrchFile`].
    pub const LOG: u8 = 4;
    /// A compacted file, key `(tier, id)`, value [`super::RawSrchFile`].
    pub const SORTED: u8 = 8;
    /// A compaction waiting for a mount, key `(id)`, value [`super::SrchCompact`].
    pub const PENDING: u8 = 12;
    /// A compaction a mount is doing, key `(rid, id)`, value [`super::SrchCompact`].
    pub const BUSY: u8 = 16;
    /// An input file of a finished compaction being freed, key `(id)`, value
    /// [`super::LogMergeFreeing`] (the tree and the key freeing resumes from).
    pub const FREEING: u8 = 20;
}

/// The key of the srch entry `{hash, ino, id}` in a srch file: entries sort by name
/// hash, then inode, then xattr id.
pub fn srch_entry_key(hash: u64, ino: u64, id: u64) -> Key {
    Key::new(zone::SRCH, hash, 0, ino, id, 0)
}

/// The key of a `srch_root` item of type `ty` (a [`srch_type`]).
pub fn srch_root_key(ty: u8, second: u64, third: u64) -> Key {
    Key::new(zone::SRCH, 0, ty, second, third, 0)
}

/// Most input files of one srch compaction (the original's `SCOUTFS_SRCH_COMPACT_NR`).
pub const SRCH_COMPACT_NR: usize = 4;

/// A srch compaction (value of the [`srch_type::PENDING`] and [`srch_type::BUSY`] items):
/// merge the entries of `nr` input files into one sorted file, dropping cancelled pairs,
/// a step at a time from `next`, with blocks of `meta_avail`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct SrchCompact {
    /// Blocks the compaction writes its output with.
    pub meta_avail: RawAllocListHead,
    /// Blocks its last step freed (empty as the server stores it).
    pub meta_freed: RawAllocListHead,
    /// The input files (the first `nr`).
    pub inputs: [RawSrchFile; SRCH_COMPACT_NR],
    /// The output so far: the entries before `next`.
    pub out: RawSrchFile,
    /// The first entry key not merged yet.
    pub next: RawKey,
    /// The compaction's id (a server seq).
    pub id: U64,
    /// The seq of the hand-out to a mount (a step's result names it).
    pub seq: U64,
    /// The mount it is handed to (BUSY), or 0.
    pub rid: U64,
    /// Number of inputs.
    pub nr: U64,
    /// `SRCH_COMPACT_FLAG_*`.
    pub flags: U64,
}
const _: () = assert!(size_of::<SrchCompact>() == 336);

/// Compaction flag: the inputs are rotated log files (else sorted files).
pub const SRCH_COMPACT_FLAG_LOG: u64 = 1;
/// Compaction flag (a step's result): every input entry is merged; `out` is complete.
pub const SRCH_COMPACT_FLAG_DONE: u64 = 2;
/// Compaction flag (a step's result): the step failed; the work goes back as it was.
pub const SRCH_COMPACT_FLAG_ERROR: u64 = 4;

/// The key of a mounted client's record in `mounted_clients`.
pub fn mounted_client_key(rid: u64) -> Key {
    Key::new(zone::MOUNTED_CLIENT, rid, 0, 0, 0, 0)
}

/// A file data extent (value of an [`item_type::DATA_EXTENT`] item, key
/// [`data_extent_key`]): `len` data blocks from `blkno` on the data device.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct DataExtent {
    /// First data block.
    pub blkno: U64,
    /// Number of blocks.
    pub len: U64,
    /// `DATA_EXTENT_FLAG_*`.
    pub flags: U64,
}
const _: () = assert!(size_of::<DataExtent>() == 24);

/// The key of the data extent of inode `ino` that starts at logical block `iblock`.
pub fn data_extent_key(ino: u64, iblock: u64) -> Key {
    Key::new(zone::FS, ino, item_type::DATA_EXTENT, iblock, 0, 0)
}

/// `LogTrees::flags`: the tree is finalized; it takes no more items and is an input of
/// the next log merge.
pub const LOG_TREES_FLAG_FINALIZED: u64 = 1;

/// Key zones of the server's `log_merge` btree.
pub mod merge_zone {
    /// The merge status (one item while a merge runs).
    pub const STATUS: u8 = 44;
    /// Key ranges still to merge.
    pub const RANGE: u8 = 48;
    /// Requests handed to mounts.
    pub const REQUEST: u8 = 52;
    /// Completed requests waiting to be spliced.
    pub const COMPLETE: u8 = 56;
    /// Input log trees being freed.
    pub const FREEING: u8 = 60;
}

/// The state of a running log merge (value of the [`merge_zone::STATUS`] item).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct LogMergeStatus {
    /// Requests are handed out for ranges from this key on.
    pub next_range_key: RawKey,
    /// Requests handed out and not completed.
    pub nr_requests: U64,
    /// Completions waiting to be spliced.
    pub nr_complete: U64,
    /// The merge's seq: its inputs are the finalized log trees with a smaller
    /// `finalize_seq`.
    pub seq: U64,
    /// `MERGE_STATUS_FLAG_*`.
    pub flags: U64,
}
const _: () = assert!(size_of::<LogMergeStatus>() == 64);

/// Status flag: the completions are being spliced (no requests may be handed out).
pub const MERGE_STATUS_FLAG_SPLICING: u64 = 1;

/// A key range still to merge (value of a [`merge_zone::RANGE`] item).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct LogMergeRange {
    /// First key.
    pub start: RawKey,
    /// Last key.
    pub end: RawKey,
}
const _: () = assert!(size_of::<LogMergeRange>() == 64);

/// A merge request handed to a mount (value of a [`merge_zone::REQUEST`] item, key
/// `(rid, seq)`): merge the finalized inputs in `start..=end` into a private copy of
/// `root` with the blocks of `meta_avail`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct LogMergeRequest {
    /// Blocks the merge allocates from.
    pub meta_avail: RawAllocListHead,
    /// Empty; the merge frees into a list it writes.
    pub meta_freed: RawAllocListHead,
    /// The log trees (inputs are its finalized trees with `finalize_seq < input_seq`).
    pub logs_root: RawBtreeRoot,
    /// The subtree of the filesystem root to merge into (or the whole root).
    pub root: RawBtreeRoot,
    /// First key to merge.
    pub start: RawKey,
    /// Last key to merge.
    pub end: RawKey,
    /// The merge's seq.
    pub input_seq: U64,
    /// The mount the request went to.
    pub rid: U64,
    /// The request's seq (unique).
    pub seq: U64,
    /// `MERGE_REQUEST_FLAG_*`.
    pub flags: U64,
}
const _: () = assert!(size_of::<LogMergeRequest>() == 208);

/// Request flag: `root` is a subtree's parent block that must keep its level.
pub const MERGE_REQUEST_FLAG_SUBTREE: u64 = 1;

/// A completed request (value of a [`merge_zone::COMPLETE`] item, key `seq`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct LogMergeComplete {
    /// What is left of the request's blocks (zeroed once spliced).
    pub meta_avail: RawAllocListHead,
    /// Blocks the merge freed (zeroed once spliced).
    pub meta_freed: RawAllocListHead,
    /// The merged subtree.
    pub root: RawBtreeRoot,
    /// First key of the request.
    pub start: RawKey,
    /// Last key of the request.
    pub end: RawKey,
    /// With `MERGE_COMPLETE_FLAG_REMAIN`: the first key not merged.
    pub remain: RawKey,
    /// The mount that merged.
    pub rid: U64,
    /// The request's seq.
    pub seq: U64,
    /// `MERGE_COMPLETE_FLAG_*`.
    pub flags: U64,
}
const _: () = assert!(size_of::<LogMergeComplete>() == 208);

/// Completion flag: the merge failed; the range goes back to be merged again.
pub const MERGE_COMPLETE_FLAG_ERROR: u64 = 1;
/// Completion flag: the merge stopped early at `remain`.
pub const MERGE_COMPLETE_FLAG_REMAIN: u64 = 2;
/// Completion flag: the subtree has been spliced into the filesystem root.
pub const MERGE_COMPLETE_FLAG_SPLICED: u64 = 4;

/// An input log tree being freed (value of a [`merge_zone::FREEING`] item, key `seq`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct LogMergeFreeing {
    /// The tree.
    pub root: RawBtreeRoot,
    /// Freeing resumes from this key.
    pub key: RawKey,
    /// The item's seq.
    pub seq: U64,
}
const _: () = assert!(size_of::<LogMergeFreeing>() == 64);

/// The key of an item of the `log_merge` tree.
pub fn log_merge_key(zone: u8, first: u64, second: u64) -> Key {
    Key::new(zone, first, 0, second, 0, 0)
}

/// Where the running server of the volume listens (4 KiB at [`SERVER_RECORD_OFFSET`] on
/// the meta device, sealed like a metadata block: `hdr.blkno` is the offset / 4096). The
/// server writes it when it starts listening and clears it (a zero `term`) when it stops;
/// a mount joining the volume reads it to find the server. A record left by a server that
/// crashed names an address nobody answers at, or a later server's, which the greeting
/// tells apart by its term.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct ServerRecord {
    /// Header (magic [`MAGIC_SERVER_RECORD`]).
    pub hdr: BlockHeader,
    /// The server's term (0: no server runs).
    pub term: U64,
    /// The server mount's id.
    pub rid: U64,
    /// The address: an IPv6 address, or an IPv4 one mapped into IPv6.
    pub addr: [u8; 16],
    /// The TCP port.
    pub port: U16,
    /// Reserved, zero.
    pub pad: [u8; 6],
    /// Reserved, zero.
    pub rest: [u8; 4096 - 72],
}
const _: () = assert!(size_of::<ServerRecord>() == SERVER_RECORD_SIZE);

/// The super block (4 KiB, in one of [`SUPER_SLOTS`] slots from [`SUPER_OFFSET`] on both
/// devices; `hdr.blkno` is its offset in 4 KiB units).
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct SuperBlock {
    /// Common header; `seq` grows by one with every write of the super.
    pub hdr: BlockHeader,
    /// [`SUPER_ID`].
    pub id: U64,
    /// Format version the volume was made with.
    pub fmt_vers: U64,
    /// `SUPER_FLAG_*`.
    pub flags: U64,
    /// Random identity shared by both devices' supers.
    pub uuid: [u8; 16],
    /// Sequence number of the last committed server transaction.
    pub seq: U64,
    /// Next inode number to hand out.
    pub next_ino: U64,
    /// Number of inodes in the merged filesystem.
    pub inode_count: U64,
    /// Size of the meta device in metadata blocks.
    pub total_meta_blocks: U64,
    /// Size of the data device in data blocks.
    pub total_data_blocks: U64,
    /// Metadata block size in bytes (a power of two).
    pub meta_block_size: U32,
    /// Zero.
    pub pad0: U32,
    /// The merged filesystem btree.
    pub fs_root: RawBtreeRoot,
    /// Per-mount log trees.
    pub logs_root: RawBtreeRoot,
    /// Log merge state.
    pub log_merge: RawBtreeRoot,
    /// Mounted clients.
    pub mounted_clients: RawBtreeRoot,
    /// Search (srch) files.
    pub srch_root: RawBtreeRoot,
    /// The server's metadata free-extent tree (`[0]`; `[1]` is zero in this format
    /// version, kept to mirror the original's layout).
    pub meta_alloc: [RawAllocRoot; 2],
    /// The data device's free-extent tree.
    pub data_alloc: RawAllocRoot,
    /// The list the server allocates its own metadata blocks from (`[0]`; `[1]` zero).
    pub server_meta_avail: [RawAllocListHead; 2],
    /// Blocks freed by the server commit that wrote this super (`[0]`; `[1]` zero): free,
    /// but not reused before the next commit.
    pub server_meta_freed: [RawAllocListHead; 2],
    /// Zero; room for later fields without moving the ones above.
    pub reserved: [u8; 3608],
}
const _: () = assert!(size_of::<SuperBlock>() == SUPER_SIZE);

/// The root inode's number.
pub const ROOT_INO: u64 = 1;
/// The first inode number mkfs hands out after the root.
pub const FIRST_FREE_INO: u64 = 1024;
/// The most inode numbers one request hands out (one lock group of the original).
pub const MAX_INODE_GROUP: u64 = 1024;

/// Key zones (first byte of the sort order).
pub mod zone {
    /// Inode seq indexes.
    pub const INODE_INDEX: u8 = 4;
    /// Orphaned inodes.
    pub const ORPHAN: u8 = 8;
    /// Quota rules.
    pub const QUOTA: u8 = 10;
    /// `.totl.` xattr totals.
    pub const XATTR_TOTL: u8 = 12;
    /// `.indx.` xattr index.
    pub const XATTR_INDX: u8 = 14;
    /// Filesystem items (inodes, dirents, xattrs, extents...).
    pub const FS: u8 = 16;
    /// Per-mount log trees (server).
    pub const LOG_TREES: u8 = 24;
    /// Mounted clients (server).
    pub const MOUNTED_CLIENT: u8 = 28;
    /// Search files (server).
    pub const SRCH: u8 = 32;
    /// Free extents by block number.
    pub const FREE_EXTENT_BLKNO: u8 = 36;
    /// Free extents by size order.
    pub const FREE_EXTENT_ORDER: u8 = 40;
    /// Log merge status.
    pub const LOG_MERGE_STATUS: u8 = 44;
}

/// Item types within [`zone::FS`] and [`zone::INODE_INDEX`].
pub mod item_type {
    /// Inode index by meta seq.
    pub const META_SEQ: u8 = 4;
    /// Inode index by data seq.
    pub const DATA_SEQ: u8 = 8;
    /// An inode.
    pub const INODE: u8 = 4;
    /// An xattr part.
    pub const XATTR: u8 = 8;
    /// Directory entry by name hash.
    pub const DIRENT: u8 = 12;
    /// Directory entry by readdir position.
    pub const READDIR: u8 = 16;
    /// Link back-reference.
    pub const LINK_BACKREF: u8 = 20;
    /// Symlink target chunk.
    pub const SYMLINK: u8 = 24;
    /// File data extent.
    pub const DATA_EXTENT: u8 = 28;
}

/// A timestamp.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct Timespec {
    /// Seconds since the epoch.
    pub sec: U64,
    /// Nanoseconds.
    pub nsec: U32,
    /// Zero.
    pub pad: U32,
}
const _: () = assert!(size_of::<Timespec>() == 16);

/// The value of an inode item.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct Inode {
    /// File size in bytes.
    pub size: U64,
    /// Transaction seq of the last metadata change.
    pub meta_seq: U64,
    /// Transaction seq of the last data change.
    pub data_seq: U64,
    /// Incremented whenever the contents may change.
    pub data_version: U64,
    /// Data blocks present on the data device.
    pub online_blocks: U64,
    /// Data blocks released to the archive.
    pub offline_blocks: U64,
    /// Next readdir position (directories).
    pub next_readdir_pos: U64,
    /// Next xattr id.
    pub next_xattr_id: U64,
    /// Link count.
    pub nlink: U32,
    /// Owner.
    pub uid: U32,
    /// Group.
    pub gid: U32,
    /// Type and permission bits.
    pub mode: U32,
    /// Device number (device inodes).
    pub rdev: U32,
    /// `INODE_FLAG_*`.
    pub flags: U32,
    /// Access time.
    pub atime: Timespec,
    /// Change time.
    pub ctime: Timespec,
    /// Modification time.
    pub mtime: Timespec,
    /// Creation time.
    pub crtime: Timespec,
    /// Project id (0 = none).
    pub proj: U64,
}
const _: () = assert!(size_of::<Inode>() == 160);

/// `DataExtent::flags`: the blocks were released to an archive (`Fs::release`, or
/// `Fs::setattr_more` restoring an archived file): no data blocks (`blkno` 0), counted in
/// the inode's `offline_blocks`, and a read of them waits until they are staged back. The
/// only flag of such an extent, which may be longer than `fs::MAX_EXTENT_BLOCKS` (it holds
/// no blocks), and lies below the block the size ends in.
pub const DATA_EXTENT_FLAG_OFFLINE: u64 = 1;
/// `DataExtent::flags`: the blocks are allocated but never written; they read as zeros.
pub const DATA_EXTENT_FLAG_UNWRITTEN: u64 = 2;

/// Item type of an orphan item in [`zone::ORPHAN`].
pub const ORPHAN_TYPE: u8 = 4;

/// The orphan item of inode `ino`: the inode has no links left and is deleted when its
/// last user lets go of it (or by the next mount after a crash). No value.
pub fn orphan_key(ino: u64) -> Key {
    Key::new(zone::ORPHAN, 0, ORPHAN_TYPE, ino, 0, 0)
}

/// Item type of a truncate record in [`zone::ORPHAN`].
pub const TRUNCATE_TYPE: u8 = 8;

/// The truncate record of inode `ino`: a truncate too large for one transaction is under
/// way. Its first step sets the inode's new size and writes this record; later steps
/// free the extents past the size; the last deletes the record. While it exists, extents
/// past the inode's size are expected (a mount that finds the record finishes the
/// truncate). Value: the size the truncate cuts to (`U64`, little-endian).
pub fn truncate_key(ino: u64) -> Key {
    Key::new(zone::ORPHAN, 0, TRUNCATE_TYPE, ino, 0, 0)
}

/// Item type of a release record in [`zone::ORPHAN`].
pub const RELEASE_TYPE: u8 = 12;

/// The release record of inode `ino`: a release (`Fs::release`) too large for one
/// transaction is under way. Its first step writes this record; each step turns the
/// written and unwritten extents of a part of the range offline (their blocks freed) and
/// moves the record's `next` past it; the last drops the extents past the size if no
/// online block is left, and deletes the record. A mount that finds it finishes the
/// release. Value: [`ReleaseRecord`].
pub fn release_key(ino: u64) -> Key {
    Key::new(zone::ORPHAN, 0, RELEASE_TYPE, ino, 0, 0)
}

/// The value of a release record ([`release_key`]): the logical blocks `next..=last`
/// are still to be released.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct ReleaseRecord {
    /// First block not yet released.
    pub next: U64,
    /// Last block of the range.
    pub last: U64,
}
const _: () = assert!(size_of::<ReleaseRecord>() == 16);

/// A directory entry: the value of the [`item_type::DIRENT`], [`item_type::READDIR`] and
/// [`item_type::LINK_BACKREF`] items of one link; the name's bytes follow it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct Dirent {
    /// The inode the entry names.
    pub ino: U64,
    /// Hash of the name ([`item_type::DIRENT`] keys sort by it).
    pub hash: U64,
    /// Readdir position of the entry in its directory.
    pub pos: U64,
    /// Kind of the inode (`DT_*` of dirent(5)).
    pub kind: u8,
    /// Zero.
    pub pad: [u8; 7],
}
const _: () = assert!(size_of::<Dirent>() == 32);

/// The key of a directory entry in `dir` by name hash (entries whose names collide in
/// `hash` differ in `pos`).
pub fn dirent_key(dir: u64, hash: u64, pos: u64) -> Key {
    Key::new(zone::FS, dir, item_type::DIRENT, hash, pos, 0)
}

/// The key of a directory entry in `dir` by readdir position.
pub fn readdir_key(dir: u64, pos: u64) -> Key {
    Key::new(zone::FS, dir, item_type::READDIR, pos, 0, 0)
}

/// The key of the back-reference from inode `ino` to its entry at `pos` in `dir`.
pub fn link_backref_key(ino: u64, dir: u64, pos: u64) -> Key {
    Key::new(zone::FS, ino, item_type::LINK_BACKREF, dir, pos, 0)
}

/// The key of chunk `nr` of a symlink's target.
pub fn symlink_key(ino: u64, nr: u64) -> Key {
    Key::new(zone::FS, ino, item_type::SYMLINK, nr, 0, 0)
}

/// Header of an xattr: the start of the value of its part 0; the name follows it, then
/// the value, continued in parts 1, 2... of the same `(hash, id)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct XattrHeader {
    /// Length of the value in bytes.
    pub val_len: U32,
    /// Length of the name in bytes.
    pub name_len: u8,
    /// Zero.
    pub pad: [u8; 3],
}
const _: () = assert!(size_of::<XattrHeader>() == 8);

/// The key of part `part` of the xattr `id` whose name hashes to `hash` on inode `ino`.
pub fn xattr_key(ino: u64, hash: u64, id: u64, part: u8) -> Key {
    Key::new(zone::FS, ino, item_type::XATTR, hash, id, part)
}

/// The key of an inode item.
pub fn inode_key(ino: u64) -> Key {
    Key::new(zone::FS, ino, item_type::INODE, 0, 0, 0)
}

/// The key of an inode's meta or data seq index item.
pub fn inode_index_key(ty: u8, seq: u64, ino: u64) -> Key {
    Key::new(zone::INODE_INDEX, 0, ty, seq, ino, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_order_is_zone_first_type_second_third_fourth() {
        let a = Key::new(1, 9, 9, 9, 9, 9);
        let b = Key::new(2, 0, 0, 0, 0, 0);
        assert!(a < b);
        assert!(Key::new(1, 1, 9, 9, 9, 9) < Key::new(1, 2, 0, 0, 0, 0));
        assert!(Key::new(1, 1, 1, 9, 9, 9) < Key::new(1, 1, 2, 0, 0, 0));
        assert!(Key::new(1, 1, 1, 1, 9, 9) < Key::new(1, 1, 1, 2, 0, 0));
        assert!(Key::new(1, 1, 1, 1, 1, 9) < Key::new(1, 1, 1, 1, 2, 0));
    }

    #[test]
    fn key_next_prev_carry_in_sort_order() {
        let k = Key::new(3, 7, 255, u64::MAX, u64::MAX, 255);
        let n = k.next().unwrap();
        assert_eq!(n, Key::new(3, 8, 0, 0, 0, 0));
        assert_eq!(n.prev().unwrap(), k);
        assert_eq!(Key::MAX.next(), None);
        assert_eq!(Key::MIN.prev(), None);
        assert_eq!(Key::MIN.next().unwrap().prev().unwrap(), Key::MIN);
    }

    #[test]
    fn raw_key_round_trips() {
        let k = Key::new(16, 1234, 12, 0xdead_beef, 42, 7);
        let r = RawKey::from(&k);
        assert_eq!(Key::from(&r), k);
        assert_eq!(r.as_bytes().len(), 32);
    }
}
