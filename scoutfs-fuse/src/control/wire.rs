//! The byte layouts of the control channel: the requests `scoutfs` sends a mount's daemon
//! as ioctls on a file or directory of the mount, and the replies.
//!
//! A FUSE mount passes its ioctls to the daemon only *restricted*: the kernel copies
//! `_IOC_SIZE(cmd)` bytes of the caller's argument to the daemon when the command's
//! direction has `_IOC_WRITE`, and copies the daemon's reply (at most that many bytes)
//! back over the argument when it has `_IOC_READ`. The argument can hold no pointers and
//! is at most [`MAX_ARG`] bytes. So every command here is one fixed-size argument (its
//! size is in the command number), lists come back in batches that fit, and `stage` sends
//! file data in chunks of [`STAGE_CHUNK`] bytes. Commands that only act (`_IOW`) answer
//! with the ioctl's return value alone: 0, the bytes staged, or the waiters woken.
//!
//! Every argument starts with a [`Head`] whose `version` must be [`VERSION`] (else the
//! daemon answers `EPROTO`); unknown `flags` bits are `EINVAL`; a command number the
//! daemon does not know is `ENOTTY`, a known one of the wrong size `EINVAL`. All integers
//! are little-endian, all structs `#[repr(C)]` of alignment 1 with explicit padding
//! (which the sender zeroes), sizes asserted at compile time.
//!
//! ```text
//! Head (8 B): version u32, flags u32
//!
//! cmd (magic 0xE8)          dir   argument
//! 0x80 STAT_MORE            RW    StatMoreArg (72 B): Head, meta_seq, data_seq, data_version,
//!                                 online_blocks, offline_blocks, size u64, crtime_sec i64,
//!                                 crtime_nsec u32, pad u32 (filled in by the reply)
//! 0x81 STATFS_MORE          RW    StatfsMoreArg (56 B): Head, fsid, rid, committed_seq,
//!                                 total_meta_blocks, total_data_blocks, reserved_meta_blocks
//! 0x82 WALK_INODES          RW    WalkHead (64 B): Head, index u8 (0 meta_seq, 1 data_seq),
//!                                 pad 3, nr u32, first Pos, last Pos;
//!                                 then WALK_BATCH x Pos (24 B: major u64, minor u32,
//!                                 pad u32, ino u64). In: nr = most entries wanted;
//!                                 out: nr = entries that follow.
//! 0x83 RELEASE              W     ReleaseArg (32 B): Head, offset, length, data_version
//! 0x84 STAGE                W     StageHead (32 B): Head (flag MORE), offset u64,
//!                                 data_version u64, len u32, pad u32; then STAGE_CHUNK
//!                                 bytes of which the first len are the data. Returns len.
//!                                 With MORE the daemon keeps the piece for this open file
//!                                 and stages the pieces (contiguous, one data_version, at
//!                                 most STAGE_GATHER_MAX bytes) as one when the piece
//!                                 without MORE comes.
//! 0x85 SETATTR_MORE         W     SetattrMoreArg (56 B): Head (flags OFFLINE, CTIME,
//!                                 CRTIME), data_version, size, ctime_sec i64,
//!                                 ctime_nsec u32, pad u32, crtime_sec i64, crtime_nsec u32,
//!                                 pad u32
//! 0x86 DATA_WAITING         RW    WaitingHead (32 B): Head, after_ino, after_iblock, nr u32,
//!                                 pad u32; then WAITING_BATCH x WaitingEntry (24 B: ino,
//!                                 iblock u64, ops u8, pad 7)
//! 0x87 DATA_WAIT_ERR        W     DataWaitErrArg (48 B): Head, ino, data_version, offset,
//!                                 count u64, op u8, pad 3, err i32. Returns the waiters
//!                                 woken (at most i32::MAX).
//! 0x88 LIST_HIDDEN_XATTRS   RW    HiddenHead (24 B): Head (out flag MORE), skip u32, nr u32,
//!                                 bytes u32, pad u32; then HIDDEN_BYTES bytes of names, each
//!                                 ended by a NUL. In: skip = names already read.
//! 0x89 SEARCH_XATTRS        RW    SearchHead (288 B): Head (out flag END), next_ino,
//!                                 last_ino u64, name_len u16, pad 2, nr u32, name [u8; 256];
//!                                 then SEARCH_BATCH x u64 inode numbers
//! 0x8a READ_XATTR_TOTALS    RW    TotalsHead (40 B): Head, pos [u64; 3], nr u32, pad u32;
//!                                 then TOTALS_BATCH x Total (40 B: name [u64; 3], total,
//!                                 count u64)
//! 0x8b READ_XATTR_INDEX     RW    IndexHead (64 B): Head, first IndxPos, last IndxPos,
//!                                 nr u32, pad u32; then INDEX_BATCH x IndxPos (24 B:
//!                                 major u8, pad 7, minor u64, ino u64)
//! 0x8c FIEMAP               RW    FiemapHead (32 B): Head, offset, length u64, nr u32,
//!                                 pad u32; then FIEMAP_BATCH x Extent (32 B: logical,
//!                                 physical, length u64, flags u32 (OFFLINE, UNWRITTEN,
//!                                 LAST), pad u32)
//! ```

use zerocopy::byteorder::little_endian::{I32, I64, U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// The ioctl type byte: the original's (0xE8), with our command numbers from 0x80 up so
/// they never meet the original's.
pub const MAGIC: u8 = 0xE8;

/// The version of these layouts; a daemon answers another with `EPROTO`.
pub const VERSION: u32 = 1;

/// The largest argument a restricted ioctl carries (`_IOC_SIZE` has 14 bits).
pub const MAX_ARG: usize = (1 << 14) - 1;

/// The first bytes of every argument.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct Head {
    /// [`VERSION`].
    pub version: U32,
    /// The command's flags; unknown bits are refused.
    pub flags: U32,
}

impl Head {
    /// A head of this version with `flags`.
    pub fn new(flags: u32) -> Head {
        Head {
            version: VERSION.into(),
            flags: flags.into(),
        }
    }
}

/// `stat_more` of the inode the ioctl is made on.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct StatMoreArg {
    pub head: Head,
    pub meta_seq: U64,
    pub data_seq: U64,
    pub data_version: U64,
    pub online_blocks: U64,
    pub offline_blocks: U64,
    pub size: U64,
    pub crtime_sec: I64,
    pub crtime_nsec: U32,
    pub pad: U32,
}

/// `statfs_more` of the mount.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct StatfsMoreArg {
    pub head: Head,
    pub fsid: U64,
    pub rid: U64,
    pub committed_seq: U64,
    pub total_meta_blocks: U64,
    pub total_data_blocks: U64,
    pub reserved_meta_blocks: U64,
}

/// A position in an inode seq index.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct Pos {
    pub major: U64,
    pub minor: U32,
    pub pad: U32,
    pub ino: U64,
}

/// Which seq index a walk reads.
pub const INDEX_META_SEQ: u8 = 0;
/// See [`INDEX_META_SEQ`].
pub const INDEX_DATA_SEQ: u8 = 1;

/// The head of `walk_inodes`, followed by [`WALK_BATCH`] [`Pos`].
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct WalkHead {
    pub head: Head,
    pub index: u8,
    pub pad: [u8; 3],
    pub nr: U32,
    pub first: Pos,
    pub last: Pos,
}

/// `release` of a range of the file the ioctl is made on.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct ReleaseArg {
    pub head: Head,
    pub offset: U64,
    pub length: U64,
    pub data_version: U64,
}

/// The head of `stage`, followed by [`STAGE_CHUNK`] bytes.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct StageHead {
    pub head: Head,
    pub offset: U64,
    pub data_version: U64,
    pub len: U32,
    pub pad: U32,
}

/// `stage` flag: more pieces of this stage follow (see the layout comment).
pub const STAGE_MORE: u32 = 1;

/// The most bytes one `stage` gathers from its pieces (the original's CLI stages its
/// archive in calls of 1 MiB).
pub const STAGE_GATHER_MAX: usize = 1 << 20;

/// `setattr_more` flag: make the new size offline (`SetAttrMore::offline`).
pub const SETATTR_OFFLINE: u32 = 1;
/// `setattr_more` flag: set the ctime.
pub const SETATTR_CTIME: u32 = 2;
/// `setattr_more` flag: set the crtime.
pub const SETATTR_CRTIME: u32 = 4;

/// `setattr_more` of the file the ioctl is made on.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct SetattrMoreArg {
    pub head: Head,
    pub data_version: U64,
    pub size: U64,
    pub ctime_sec: I64,
    pub ctime_nsec: U32,
    pub pad: U32,
    pub crtime_sec: I64,
    pub crtime_nsec: U32,
    pub pad2: U32,
}

/// The head of `data_waiting`, followed by [`WAITING_BATCH`] [`WaitingEntry`].
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct WaitingHead {
    pub head: Head,
    pub after_ino: U64,
    pub after_iblock: U64,
    pub nr: U32,
    pub pad: U32,
}

/// A block something waits for.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct WaitingEntry {
    pub ino: U64,
    pub iblock: U64,
    pub ops: u8,
    pub pad: [u8; 7],
}

/// `data_wait_err`: fail the matching waiters with `err` (a negative errno).
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct DataWaitErrArg {
    pub head: Head,
    pub ino: U64,
    pub data_version: U64,
    pub offset: U64,
    pub count: U64,
    pub op: u8,
    pub pad: [u8; 3],
    pub err: I32,
}

/// `list_hidden_xattrs` out flag: names are left after these.
pub const HIDDEN_MORE: u32 = 1;

/// The head of `list_hidden_xattrs`, followed by [`HIDDEN_BYTES`] bytes of names.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct HiddenHead {
    pub head: Head,
    pub skip: U32,
    pub nr: U32,
    pub bytes: U32,
    pub pad: U32,
}

/// The longest xattr name.
pub const XATTR_NAME_MAX: usize = 255;

/// `search_xattrs` out flag: the search reached `last_ino`.
pub const SEARCH_END: u32 = 1;

/// The head of `search_xattrs`, followed by [`SEARCH_BATCH`] inode numbers.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
pub struct SearchHead {
    pub head: Head,
    pub next_ino: U64,
    pub last_ino: U64,
    pub name_len: U16,
    pub pad: [u8; 2],
    pub nr: U32,
    pub name: [u8; XATTR_NAME_MAX + 1],
}

/// The head of `read_xattr_totals`, followed by [`TOTALS_BATCH`] [`Total`].
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct TotalsHead {
    pub head: Head,
    pub pos: [U64; 3],
    pub nr: U32,
    pub pad: U32,
}

/// The total of one `.totl.` name.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct Total {
    pub name: [U64; 3],
    pub total: U64,
    pub count: U64,
}

/// A position in the `.indx.` xattr index.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct IndxPos {
    pub major: u8,
    pub pad: [u8; 7],
    pub minor: U64,
    pub ino: U64,
}

/// The head of `read_xattr_index`, followed by [`INDEX_BATCH`] [`IndxPos`].
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct IndexHead {
    pub head: Head,
    pub first: IndxPos,
    pub last: IndxPos,
    pub nr: U32,
    pub pad: U32,
}

/// Extent flag: offline (no blocks; the archive has the data).
pub const EXTENT_OFFLINE: u32 = 1;
/// Extent flag: allocated but unwritten.
pub const EXTENT_UNWRITTEN: u32 = 2;
/// Extent flag: the file's last extent.
pub const EXTENT_LAST: u32 = 4;

/// The head of `fiemap`, followed by [`FIEMAP_BATCH`] [`Extent`].
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct FiemapHead {
    pub head: Head,
    pub offset: U64,
    pub length: U64,
    pub nr: U32,
    pub pad: U32,
}

/// An extent of a file, in bytes.
#[repr(C)]
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, Default)]
pub struct Extent {
    pub logical: U64,
    pub physical: U64,
    pub length: U64,
    pub flags: U32,
    pub pad: U32,
}

const _: () = {
    use std::mem::size_of;
    assert!(size_of::<Head>() == 8);
    assert!(size_of::<StatMoreArg>() == 72);
    assert!(size_of::<StatfsMoreArg>() == 56);
    assert!(size_of::<Pos>() == 24);
    assert!(size_of::<WalkHead>() == 64);
    assert!(size_of::<ReleaseArg>() == 32);
    assert!(size_of::<StageHead>() == 32);
    assert!(size_of::<SetattrMoreArg>() == 56);
    assert!(size_of::<WaitingHead>() == 32);
    assert!(size_of::<WaitingEntry>() == 24);
    assert!(size_of::<DataWaitErrArg>() == 48);
    assert!(size_of::<HiddenHead>() == 24);
    assert!(size_of::<SearchHead>() == 288);
    assert!(size_of::<TotalsHead>() == 40);
    assert!(size_of::<Total>() == 40);
    assert!(size_of::<IndxPos>() == 24);
    assert!(size_of::<IndexHead>() == 64);
    assert!(size_of::<FiemapHead>() == 32);
    assert!(size_of::<Extent>() == 32);
    let mut i = 0;
    while i < Cmd::ALL.len() {
        assert!(Cmd::ALL[i].size() <= MAX_ARG);
        i += 1;
    }
};

/// How many `E` fit after a head `H` in the largest argument.
const fn batch<H, E>() -> usize {
    (MAX_ARG - size_of::<H>()) / size_of::<E>()
}

/// Index positions a walk returns at most per call.
pub const WALK_BATCH: usize = batch::<WalkHead, Pos>();
/// Bytes of file data one `stage` call carries: whole 4 KiB blocks, since every call but
/// the one that ends at the file's size must cover whole blocks.
pub const STAGE_CHUNK: usize = (MAX_ARG - size_of::<StageHead>()) / 4096 * 4096;
/// Waiting blocks returned at most per call.
pub const WAITING_BATCH: usize = batch::<WaitingHead, WaitingEntry>();
/// Bytes of hidden xattr names returned at most per call.
pub const HIDDEN_BYTES: usize = batch::<HiddenHead, u8>();
/// Inode numbers a search returns at most per call.
pub const SEARCH_BATCH: usize = batch::<SearchHead, U64>();
/// Totals returned at most per call.
pub const TOTALS_BATCH: usize = batch::<TotalsHead, Total>();
/// Index entries returned at most per call.
pub const INDEX_BATCH: usize = batch::<IndexHead, IndxPos>();
/// Extents returned at most per call.
pub const FIEMAP_BATCH: usize = batch::<FiemapHead, Extent>();

use std::mem::size_of;

/// The commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cmd {
    StatMore,
    StatfsMore,
    WalkInodes,
    Release,
    Stage,
    SetattrMore,
    DataWaiting,
    DataWaitErr,
    ListHiddenXattrs,
    SearchXattrs,
    ReadXattrTotals,
    ReadXattrIndex,
    Fiemap,
}

impl Cmd {
    /// Every command.
    pub const ALL: [Cmd; 13] = [
        Cmd::StatMore,
        Cmd::StatfsMore,
        Cmd::WalkInodes,
        Cmd::Release,
        Cmd::Stage,
        Cmd::SetattrMore,
        Cmd::DataWaiting,
        Cmd::DataWaitErr,
        Cmd::ListHiddenXattrs,
        Cmd::SearchXattrs,
        Cmd::ReadXattrTotals,
        Cmd::ReadXattrIndex,
        Cmd::Fiemap,
    ];

    /// The ioctl number (the `nr` byte).
    pub const fn nr(self) -> u8 {
        match self {
            Cmd::StatMore => 0x80,
            Cmd::StatfsMore => 0x81,
            Cmd::WalkInodes => 0x82,
            Cmd::Release => 0x83,
            Cmd::Stage => 0x84,
            Cmd::SetattrMore => 0x85,
            Cmd::DataWaiting => 0x86,
            Cmd::DataWaitErr => 0x87,
            Cmd::ListHiddenXattrs => 0x88,
            Cmd::SearchXattrs => 0x89,
            Cmd::ReadXattrTotals => 0x8a,
            Cmd::ReadXattrIndex => 0x8b,
            Cmd::Fiemap => 0x8c,
        }
    }

    /// The size of the argument.
    pub const fn size(self) -> usize {
        match self {
            Cmd::StatMore => size_of::<StatMoreArg>(),
            Cmd::StatfsMore => size_of::<StatfsMoreArg>(),
            Cmd::WalkInodes => size_of::<WalkHead>() + WALK_BATCH * size_of::<Pos>(),
            Cmd::Release => size_of::<ReleaseArg>(),
            Cmd::Stage => size_of::<StageHead>() + STAGE_CHUNK,
            Cmd::SetattrMore => size_of::<SetattrMoreArg>(),
            Cmd::DataWaiting => {
                size_of::<WaitingHead>() + WAITING_BATCH * size_of::<WaitingEntry>()
            }
            Cmd::DataWaitErr => size_of::<DataWaitErrArg>(),
            Cmd::ListHiddenXattrs => size_of::<HiddenHead>() + HIDDEN_BYTES,
            Cmd::SearchXattrs => size_of::<SearchHead>() + SEARCH_BATCH * size_of::<U64>(),
            Cmd::ReadXattrTotals => size_of::<TotalsHead>() + TOTALS_BATCH * size_of::<Total>(),
            Cmd::ReadXattrIndex => size_of::<IndexHead>() + INDEX_BATCH * size_of::<IndxPos>(),
            Cmd::Fiemap => size_of::<FiemapHead>() + FIEMAP_BATCH * size_of::<Extent>(),
        }
    }

    /// Whether the daemon's reply is copied back over the argument (`_IOWR`); the others
    /// are `_IOW` and answer with the return value alone.
    pub const fn replies(self) -> bool {
        !matches!(
            self,
            Cmd::Release | Cmd::Stage | Cmd::SetattrMore | Cmd::DataWaitErr
        )
    }

    /// The ioctl request code, encoded for this architecture as the kernel decodes it.
    pub const fn code(self) -> u32 {
        // The encoding fits 32 bits on every architecture (ioctl_num_type is wider on some).
        if self.replies() {
            nix::request_code_readwrite!(MAGIC, self.nr(), self.size()) as u32
        } else {
            nix::request_code_write!(MAGIC, self.nr(), self.size()) as u32
        }
    }

    /// The command of request code `code`, if it is one of ours.
    pub fn from_code(code: u32) -> Option<Cmd> {
        Cmd::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The command whose `nr` byte (of our type byte) `code` has, whatever its size and
    /// direction: to tell a wrong-sized request of ours (`EINVAL`) from one that is not
    /// ours (`ENOTTY`).
    pub fn from_nr(code: u32) -> Option<Cmd> {
        let (ty, nr) = ((code >> 8) as u8, code as u8);
        if ty != MAGIC {
            return None;
        }
        Cmd::ALL.into_iter().find(|c| c.nr() == nr)
    }
}

/// An argument of `size` bytes: `head`, then `entries`, then zeros.
pub fn encode<H: IntoBytes + Immutable, E: IntoBytes + Immutable>(
    head: &H,
    entries: &[E],
    size: usize,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(size);
    buf.extend_from_slice(head.as_bytes());
    buf.extend_from_slice(entries.as_bytes());
    if buf.len() < size {
        buf.resize(size, 0);
    }
    buf
}

/// The head of an argument and the bytes after it; `None` if it is too short.
pub fn decode_head<H: FromBytes + KnownLayout + Immutable>(buf: &[u8]) -> Option<(H, &[u8])> {
    H::read_from_prefix(buf).ok()
}

/// The first `nr` entries of `rest`; `None` if it holds fewer.
pub fn decode_entries<E: FromBytes + KnownLayout + Immutable + Unaligned>(
    rest: &[u8],
    nr: usize,
) -> Option<&[E]> {
    <[E]>::ref_from_prefix_with_elems(rest, nr)
        .ok()
        .map(|(e, _)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_decode_back_with_their_sizes() {
        for c in Cmd::ALL {
            assert_eq!(Cmd::from_code(c.code()), Some(c), "{c:?}");
            assert_eq!(Cmd::from_nr(c.code()), Some(c), "{c:?}");
            assert_eq!(c.code() >> 8 & 0xff, u32::from(MAGIC));
            // The size the kernel reads from the code is the argument's.
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            assert_eq!((c.code() >> 16 & 0x3fff) as usize, c.size(), "{c:?}");
        }
        let mut codes: Vec<u32> = Cmd::ALL.iter().map(|c| c.code()).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), Cmd::ALL.len());
        // Another size of one of our numbers is ours but wrong; another type is not ours.
        let other_size = Cmd::StatMore.code() ^ (1 << 16);
        assert_eq!(Cmd::from_code(other_size), None);
        assert_eq!(Cmd::from_nr(other_size), Some(Cmd::StatMore));
        assert_eq!(Cmd::from_nr(0x5401), None); // TCGETS
    }

    #[test]
    fn batches_fill_the_largest_argument() {
        assert_eq!(STAGE_CHUNK, 12288);
        assert_eq!(
            (WALK_BATCH, SEARCH_BATCH, TOTALS_BATCH, FIEMAP_BATCH),
            (679, 2011, 408, 510)
        );
        for c in Cmd::ALL {
            assert!(c.size() <= MAX_ARG, "{c:?}");
        }
    }

    #[test]
    fn heads_and_entries_round_trip_and_short_buffers_fail() {
        let head = WalkHead {
            head: Head::new(0),
            index: INDEX_DATA_SEQ,
            nr: 2.into(),
            ..WalkHead::default()
        };
        let pos = [
            Pos {
                major: 5.into(),
                ino: 9.into(),
                ..Pos::default()
            },
            Pos {
                major: 6.into(),
                minor: 1.into(),
                ino: 10.into(),
                ..Pos::default()
            },
        ];
        let buf = encode(&head, &pos, Cmd::WalkInodes.size());
        assert_eq!(buf.len(), Cmd::WalkInodes.size());
        let (h, rest) = decode_head::<WalkHead>(&buf).unwrap();
        assert_eq!((h.index, h.nr.get()), (INDEX_DATA_SEQ, 2));
        let e = decode_entries::<Pos>(rest, 2).unwrap();
        assert_eq!(
            (e[1].major.get(), e[1].minor.get(), e[1].ino.get()),
            (6, 1, 10)
        );
        assert!(decode_head::<WalkHead>(&buf[..63]).is_none());
        assert!(decode_entries::<Pos>(&rest[..47], 2).is_none());
        assert!(decode_entries::<Pos>(rest, WALK_BATCH + 1).is_none());
    }
}
