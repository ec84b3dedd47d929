//! The wire form of the protocol: frames and the payload of every message.
//!
//! ```text
//! Frame = Header (32 B) + payload (data_len B, at most MAX_PAYLOAD)
//!
//! Header (the original's scoutfs_net_header)
//!   0  seq       u64  the sender's message counter (0 only in the handshake)
//!   8  recv_seq  u64  the greatest seq the sender has received (an ack)
//!  16  id        u64  the request's id; a response carries its request's (0 only in
//!                     the handshake)
//!  24  data_len  u16  payload bytes that follow
//!  26  cmd       u8   Cmd
//!  27  flags     u8   FLAG_RESPONSE
//!  28  error     u8   NetErrno (only in responses)
//!  29  pad       [u8; 3], zero
//! ```
//!
//! Payloads are little-endian structs of fixed size, chosen by `cmd` and by whether the
//! frame is a request or a response; the on-disk structs of `scoutfs_core::format`
//! (`LogTrees`, `LogMergeRequest`, `LogMergeComplete`, `SrchCompact`) travel as they are
//! stored. A response with an error carries a short UTF-8 message (at most
//! [`MAX_ERROR_MSG`] bytes) instead of its payload. An option is an empty payload (none)
//! or the struct (some); a lock recovery batch is up to `LOCK_RECOVER_BATCH` lock
//! messages back to back.
//!
//! Handshake (frames of seq 0 and id 0, before any other): the server speaks first with
//! [`Cmd::Challenge`] (its nonce); the client answers [`Cmd::Greeting`] ([`Greeting`]:
//! fsid, format version, the server term it last knew, its rid, its nonce and a MAC over
//! both nonces); the server answers a greeting response (its fsid, format version and
//! term, and its own MAC) or an error response, and closes the connection after an error.
//!
//! Decoding never panics: every bad length, unknown number or trailing byte is a
//! [`WireError`].

use scoutfs_core::format::{
    Key, LogMergeComplete, LogMergeRequest, LogTrees, RawBtreeRoot, RawKey, SrchCompact,
};
use scoutfs_core::server::{MergeConfig, MergePhase, MergeStall};
use scoutfs_core::transport::{
    ClientReply, CommittedRoots, InoMapBits, LockMode, MergeAdmin, MergeStatus, NetLock,
    RemoteErrorKind, Request, Response, ServerRequest, TransportError, VolumeStats,
    LOCK_RECOVER_BATCH,
};
use zerocopy::byteorder::little_endian::{U16, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Bytes of a frame header.
pub const HEADER_SIZE: usize = 32;
/// The most payload bytes a frame may carry (the original's `SCOUTFS_NET_MAX_DATA_LEN`):
/// every message fits (asserted below), so a peer cannot make us allocate more.
pub const MAX_PAYLOAD: usize = 1100;
/// The longest error message carried in an error response.
pub const MAX_ERROR_MSG: usize = 256;
/// Header flag: the frame is a response.
pub const FLAG_RESPONSE: u8 = 1;
/// Bytes of a handshake nonce.
pub const NONCE_LEN: usize = 32;
/// Bytes of a handshake MAC (HMAC-SHA256).
pub const MAC_LEN: usize = 32;

/// The frame header (the original's `scoutfs_net_header`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct Header {
    /// The sender's message counter.
    pub seq: U64,
    /// The greatest seq the sender has received.
    pub recv_seq: U64,
    /// The request's id.
    pub id: U64,
    /// Payload bytes.
    pub data_len: U16,
    /// [`Cmd`].
    pub cmd: u8,
    /// [`FLAG_RESPONSE`].
    pub flags: u8,
    /// [`NetErrno`].
    pub error: u8,
    /// Zero.
    pub pad: [u8; 3],
}
const _: () = assert!(size_of::<Header>() == HEADER_SIZE);

/// Commands (the original's `enum scoutfs_net_cmd` where one exists, new ones after).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Cmd {
    /// Handshake: the client's [`Greeting`] and the server's answer.
    Greeting = 0,
    /// [`Request::AllocInodes`].
    AllocInodes = 1,
    /// [`Request::GetLogTrees`].
    GetLogTrees = 2,
    /// [`Request::CommitLogTrees`].
    CommitLogTrees = 3,
    /// [`ServerRequest::SyncLogTrees`].
    SyncLogTrees = 4,
    /// [`Request::GetRoots`].
    GetRoots = 5,
    /// [`Request::GetLastSeq`].
    GetLastSeq = 6,
    /// [`Request::Lock`] and [`ServerRequest::LockInvalidate`].
    Lock = 7,
    /// [`ServerRequest::LockRecover`].
    LockRecover = 8,
    /// [`Request::GetSrchCompact`].
    SrchGetCompact = 9,
    /// [`Request::CommitSrchCompact`].
    SrchCommitCompact = 10,
    /// [`Request::GetLogMerge`].
    GetLogMerge = 11,
    /// [`Request::CommitLogMerge`].
    CommitLogMerge = 12,
    /// [`Request::OpenInoMap`] and [`ServerRequest::OpenInoMap`].
    OpenInoMap = 13,
    /// [`Request::Statfs`].
    Statfs = 18,
    /// [`Request::Farewell`].
    Farewell = 19,
    /// [`Request::Greeting`]: the mount greets the server's core (the original folds
    /// this into its greeting; here the handshake belongs to the connection and this to
    /// the mount).
    Mount = 20,
    /// [`Request::Merge`].
    MergeAdmin = 21,
    /// Handshake: the server's nonce, the first frame on a connection.
    Challenge = 22,
}

impl Cmd {
    /// The command of wire value `v`.
    pub fn from_u8(v: u8) -> Option<Cmd> {
        use Cmd::*;
        Some(match v {
            0 => Greeting,
            1 => AllocInodes,
            2 => GetLogTrees,
            3 => CommitLogTrees,
            4 => SyncLogTrees,
            5 => GetRoots,
            6 => GetLastSeq,
            7 => Lock,
            8 => LockRecover,
            9 => SrchGetCompact,
            10 => SrchCommitCompact,
            11 => GetLogMerge,
            12 => CommitLogMerge,
            13 => OpenInoMap,
            18 => Statfs,
            19 => Farewell,
            20 => Mount,
            21 => MergeAdmin,
            22 => Challenge,
            _ => return None,
        })
    }

    /// Whether this command is part of the handshake.
    pub fn is_handshake(self) -> bool {
        matches!(self, Cmd::Greeting | Cmd::Challenge)
    }
}

/// Errors on the wire (the original's small enum, `EACCES` added for the secret).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum NetErrno {
    /// No error.
    #[default]
    None = 0,
    /// ENOENT.
    NoEnt = 1,
    /// ENOMEM.
    NoMem = 2,
    /// EIO: the server's commit failed, or the mount could not do what it was asked.
    Io = 3,
    /// ENOSPC.
    NoSpace = 4,
    /// EINVAL: the request does not fit (wrong fsid or format version in a greeting).
    Inval = 5,
    /// ENOLINK: the server holds no state of this mount (it was forgotten or evicted).
    NoLink = 6,
    /// EACCES: the peer does not hold the shared secret.
    Access = 7,
}

impl NetErrno {
    /// The error of wire value `v`.
    pub fn from_u8(v: u8) -> Option<NetErrno> {
        use NetErrno::*;
        Some(match v {
            0 => None,
            1 => NoEnt,
            2 => NoMem,
            3 => Io,
            4 => NoSpace,
            5 => Inval,
            6 => NoLink,
            7 => Access,
            _ => return Option::None,
        })
    }

    /// The wire error of a server failure.
    pub fn of_kind(kind: RemoteErrorKind) -> NetErrno {
        match kind {
            RemoteErrorKind::NoSpace => NetErrno::NoSpace,
            RemoteErrorKind::Io => NetErrno::Io,
            _ => NetErrno::Inval,
        }
    }

    /// The server failure of a wire error.
    pub fn kind(self) -> RemoteErrorKind {
        match self {
            NetErrno::NoSpace => RemoteErrorKind::NoSpace,
            NetErrno::Io | NetErrno::NoMem => RemoteErrorKind::Io,
            _ => RemoteErrorKind::Protocol,
        }
    }
}

/// What is wrong with bytes from a peer (or with a message that has no wire form).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// An unknown command number.
    #[error("unknown command {0}")]
    UnknownCmd(u8),
    /// Unknown header flags.
    #[error("unknown flags {0:#x}")]
    UnknownFlags(u8),
    /// An unknown error number.
    #[error("unknown error number {0}")]
    UnknownErrno(u8),
    /// The header's pad is not zero.
    #[error("nonzero header pad")]
    Pad,
    /// A payload longer than [`MAX_PAYLOAD`].
    #[error("payload of {0} bytes is too long")]
    Oversize(usize),
    /// A payload of the wrong length for its command.
    #[error("{cmd:?} payload of {len} bytes")]
    BadLength {
        /// The command.
        cmd: Cmd,
        /// The payload's length.
        len: usize,
    },
    /// A field holds a value outside its range (a lock mode, a flag, a merge phase).
    #[error("{0}")]
    BadValue(&'static str),
    /// The command is not one of this direction and kind (a response or request that
    /// has no such command).
    #[error("{0:?} is not valid here")]
    WrongCmd(Cmd),
    /// A request frame carries an error.
    #[error("a request carries an error")]
    ErrorInRequest,
    /// A message that has no wire form (a variant this version does not know).
    #[error("no wire form for this message")]
    Unencodable,
}

/// One frame: a header's fields and its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// [`Header::seq`].
    pub seq: u64,
    /// [`Header::recv_seq`].
    pub recv_seq: u64,
    /// [`Header::id`].
    pub id: u64,
    /// The command.
    pub cmd: Cmd,
    /// [`FLAG_RESPONSE`] or 0.
    pub flags: u8,
    /// The error (only in responses).
    pub error: NetErrno,
    /// At most [`MAX_PAYLOAD`] bytes.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The frame of a header that [`check_header`] found good (its `cmd` and `error`).
    pub fn of_header(h: &Header, cmd: Cmd, error: NetErrno, payload: Vec<u8>) -> Frame {
        Frame {
            seq: h.seq.get(),
            recv_seq: h.recv_seq.get(),
            id: h.id.get(),
            cmd,
            flags: h.flags,
            error,
            payload,
        }
    }

    /// Whether the frame is a response.
    pub fn is_response(&self) -> bool {
        self.flags & FLAG_RESPONSE != 0
    }

    /// The frame's bytes (header and payload).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_SIZE + self.payload.len());
        self.encode_into(&mut out);
        out
    }

    /// Append the frame's bytes to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let h = Header {
            seq: self.seq.into(),
            recv_seq: self.recv_seq.into(),
            id: self.id.into(),
            // Frames are built only from encoded messages, all of which fit.
            data_len: (self.payload.len().min(MAX_PAYLOAD) as u16).into(),
            cmd: self.cmd as u8,
            flags: self.flags,
            error: self.error as u8,
            pad: [0; 3],
        };
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&self.payload[..self.payload.len().min(MAX_PAYLOAD)]);
    }
}

/// Check a header: its command, error and the payload length it announces, or why it is
/// refused.
pub fn check_header(h: &Header) -> Result<(Cmd, NetErrno, usize), WireError> {
    let cmd = Cmd::from_u8(h.cmd).ok_or(WireError::UnknownCmd(h.cmd))?;
    if h.flags & !FLAG_RESPONSE != 0 {
        return Err(WireError::UnknownFlags(h.flags));
    }
    let errno = NetErrno::from_u8(h.error).ok_or(WireError::UnknownErrno(h.error))?;
    if h.flags & FLAG_RESPONSE == 0 && errno != NetErrno::None {
        return Err(WireError::ErrorInRequest);
    }
    if h.pad != [0; 3] {
        return Err(WireError::Pad);
    }
    let len = h.data_len.get() as usize;
    if len > MAX_PAYLOAD {
        return Err(WireError::Oversize(len));
    }
    Ok((cmd, errno, len))
}

/// Decode the frame at the start of `buf`: `Ok(None)` when more bytes are needed, else the
/// frame and the bytes it took. A bad header is refused as soon as its 32 bytes are in,
/// before any payload is waited for.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    let Some(hb) = buf.get(..HEADER_SIZE) else {
        return Ok(None);
    };
    let Ok(h) = Header::read_from_bytes(hb) else {
        return Ok(None);
    };
    let (cmd, error, len) = check_header(&h)?;
    let Some(payload) = buf.get(HEADER_SIZE..HEADER_SIZE + len) else {
        return Ok(None);
    };
    Ok(Some((
        Frame::of_header(&h, cmd, error, payload.to_vec()),
        HEADER_SIZE + len,
    )))
}

// ---------------------------------------------------------------------------------------
// Payload structs.

/// A `u64` payload (a rid, a count, a seq, an fsid, a group number).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct WireU64 {
    /// The value.
    pub v: U64,
}
const _: () = assert!(size_of::<WireU64>() == 8);

/// Two `u64`s ([`Request::AllocInodes`], [`Response::Inodes`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct WirePair {
    /// The first value (a rid, the first inode).
    pub a: U64,
    /// The second (a count).
    pub b: U64,
}
const _: () = assert!(size_of::<WirePair>() == 16);

/// Mount flag of [`WireMount`]: the mount is reconnecting.
pub const MOUNT_FLAG_RECONNECT: u8 = 1;

/// [`Request::Greeting`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct WireMount {
    /// The mount's id.
    pub rid: U64,
    /// [`MOUNT_FLAG_RECONNECT`].
    pub flags: u8,
    /// Zero.
    pub pad: [u8; 7],
}
const _: () = assert!(size_of::<WireMount>() == 16);

/// A lock message (the original's `scoutfs_net_lock`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct WireLock {
    /// The lock's first key.
    pub key: RawKey,
    /// [`NetLock::write_seq`].
    pub write_seq: U64,
    /// [`LockMode`].
    pub old_mode: u8,
    /// [`LockMode`].
    pub new_mode: u8,
    /// Zero.
    pub pad: [u8; 6],
}
const _: () = assert!(size_of::<WireLock>() == 48);

/// [`CommittedRoots`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct WireRoots {
    /// The commit's seq.
    pub seq: U64,
    /// The filesystem btree.
    pub fs_root: RawBtreeRoot,
    /// The log trees btree.
    pub logs_root: RawBtreeRoot,
    /// The srch btree.
    pub srch_root: RawBtreeRoot,
    /// 0 or 1.
    pub meta_low: u8,
    /// 0 or 1.
    pub data_low: u8,
    /// Zero.
    pub pad: [u8; 6],
}
const _: () = assert!(size_of::<WireRoots>() == 88);

/// [`VolumeStats`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct WireStatfs {
    /// The volume's id.
    pub fsid: U64,
    /// Metadata blocks.
    pub total_meta_blocks: U64,
    /// Data blocks.
    pub total_data_blocks: U64,
    /// Free metadata blocks.
    pub meta_free_blocks: U64,
    /// Free data blocks.
    pub data_free_blocks: U64,
    /// Inodes.
    pub inode_count: U64,
    /// Metadata blocks held back for frees and the merge.
    pub reserved_meta_blocks: U64,
}
const _: () = assert!(size_of::<WireStatfs>() == 56);

/// [`InoMapBits`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct WireInoMap {
    /// The bits.
    pub bits: [U64; 16],
}
const _: () = assert!(size_of::<WireInoMap>() == 128);

/// A mount's [`ClientReply::OpenInoMap`]: the group it answers about and its bits (the
/// original's `scoutfs_open_ino_map` with its group number).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct WireInoMapReply {
    /// The inode group.
    pub group_nr: U64,
    /// The bits.
    pub bits: [U64; 16],
}
const _: () = assert!(size_of::<WireInoMapReply>() == 136);

/// [`MergeAdmin`] ops of [`WireMergeAdmin::op`].
pub const MERGE_OP_FORCE_FINALIZE: u8 = 0;
/// Status.
pub const MERGE_OP_STATUS: u8 = 1;
/// Set the configuration.
pub const MERGE_OP_SET_CONFIG: u8 = 2;

/// [`Request::Merge`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct WireMergeAdmin {
    /// `MERGE_OP_*`.
    pub op: u8,
    /// [`MergeConfig::finalize_height`] (zero unless `op` sets the configuration, as
    /// every field below).
    pub finalize_height: u8,
    /// Zero.
    pub pad: [u8; 6],
    /// [`MergeConfig::batch`].
    pub batch: U64,
    /// [`MergeConfig::request_blocks`].
    pub request_blocks: U64,
    /// [`MergeConfig::merge_dirty_blocks`].
    pub merge_dirty_blocks: U64,
    /// [`MergeConfig::splice_commit_blocks`].
    pub splice_commit_blocks: U64,
    /// [`MergeConfig::free_budget`].
    pub free_budget: U64,
    /// [`MergeConfig::headroom_limit`].
    pub headroom_limit: [U64; 3],
}
const _: () = assert!(size_of::<WireMergeAdmin>() == 72);

/// [`MergeStatus`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct WireMergeStatus {
    /// 0 or 1.
    pub running: u8,
    /// 0: no stall; else 1 + the stalled [`MergePhase`].
    pub stall_phase: u8,
    /// Zero.
    pub pad: [u8; 6],
    /// [`MergeStatus::logs_with_items`].
    pub logs_with_items: U64,
    /// [`MergeStall::headroom`].
    pub headroom: U64,
    /// [`MergeStall::need`].
    pub need: U64,
}
const _: () = assert!(size_of::<WireMergeStatus>() == 32);

/// Greeting flags: none are defined yet; a greeting with any set is refused.
pub const GREETING_FLAGS_KNOWN: u64 = 0;

/// The handshake's greeting, in both directions (the original's `scoutfs_net_greeting`
/// with the nonce and MAC of the shared secret).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct Greeting {
    /// The volume's fsid.
    pub fsid: U64,
    /// The format version the sender speaks (the server: its volume's).
    pub fmt_vers: U64,
    /// From the client: the term of the server it last talked to (0: none yet); from
    /// the server: its term.
    pub server_term: U64,
    /// The mount's rid (the server echoes it).
    pub rid: U64,
    /// `GREETING_FLAGS_KNOWN`.
    pub flags: U64,
    /// The sender's nonce (the server repeats its challenge's).
    pub nonce: [u8; NONCE_LEN],
    /// HMAC-SHA256 of the shared secret over the handshake (zero without a secret).
    pub mac: [u8; MAC_LEN],
}
const _: () = assert!(size_of::<Greeting>() == 104);

/// The handshake's challenge: the server's nonce.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
pub struct Challenge {
    /// The server's nonce.
    pub nonce: [u8; NONCE_LEN],
}
const _: () = assert!(size_of::<Challenge>() == 32);

// Every message fits a frame.
const _: () = assert!(size_of::<LogTrees>() <= MAX_PAYLOAD);
const _: () = assert!(size_of::<LogMergeRequest>() <= MAX_PAYLOAD);
const _: () = assert!(size_of::<LogMergeComplete>() <= MAX_PAYLOAD);
const _: () = assert!(size_of::<SrchCompact>() <= MAX_PAYLOAD);
const _: () = assert!(LOCK_RECOVER_BATCH * size_of::<WireLock>() <= MAX_PAYLOAD);
const _: () = assert!(size_of::<WireMergeAdmin>() <= MAX_PAYLOAD);
const _: () = assert!(size_of::<Greeting>() <= MAX_PAYLOAD);
const _: () = assert!(MAX_ERROR_MSG <= MAX_PAYLOAD);

// ---------------------------------------------------------------------------------------
// Messages.

fn read<T: FromBytes>(cmd: Cmd, p: &[u8]) -> Result<T, WireError> {
    T::read_from_bytes(p).map_err(|_| WireError::BadLength { cmd, len: p.len() })
}

fn empty(cmd: Cmd, p: &[u8]) -> Result<(), WireError> {
    if p.is_empty() {
        Ok(())
    } else {
        Err(WireError::BadLength { cmd, len: p.len() })
    }
}

fn u64_of(cmd: Cmd, p: &[u8]) -> Result<u64, WireError> {
    Ok(read::<WireU64>(cmd, p)?.v.get())
}

fn u64_bytes(v: u64) -> Vec<u8> {
    WireU64 { v: v.into() }.as_bytes().to_vec()
}

fn mode(v: u8) -> Result<LockMode, WireError> {
    LockMode::from_u8(v).ok_or(WireError::BadValue("unknown lock mode"))
}

fn bool_of(v: u8, what: &'static str) -> Result<bool, WireError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(WireError::BadValue(what)),
    }
}

fn pad_zero(p: &[u8], what: &'static str) -> Result<(), WireError> {
    if p.iter().all(|&b| b == 0) {
        Ok(())
    } else {
        Err(WireError::BadValue(what))
    }
}

/// The wire form of a lock message.
pub fn lock_to_wire(l: &NetLock) -> WireLock {
    WireLock {
        key: RawKey::from(&l.key),
        write_seq: l.write_seq.into(),
        old_mode: l.old_mode as u8,
        new_mode: l.new_mode as u8,
        pad: [0; 6],
    }
}

/// A lock message of its wire form.
pub fn lock_of_wire(w: &WireLock) -> Result<NetLock, WireError> {
    pad_zero(&w.pad, "nonzero lock pad")?;
    pad_zero(&w.key.pad, "nonzero key pad")?;
    Ok(NetLock {
        key: Key::from(&w.key),
        write_seq: w.write_seq.get(),
        old_mode: mode(w.old_mode)?,
        new_mode: mode(w.new_mode)?,
    })
}

fn lock_of(cmd: Cmd, p: &[u8]) -> Result<NetLock, WireError> {
    lock_of_wire(&read::<WireLock>(cmd, p)?)
}

fn inomap_bytes(bits: &InoMapBits) -> Vec<u8> {
    let w = WireInoMap {
        bits: bits.map(U64::new),
    };
    w.as_bytes().to_vec()
}

fn inomap_of(cmd: Cmd, p: &[u8]) -> Result<Box<InoMapBits>, WireError> {
    let w = read::<WireInoMap>(cmd, p)?;
    Ok(Box::new(w.bits.map(|b| b.get())))
}

fn usize_of(v: U64) -> Result<usize, WireError> {
    usize::try_from(v.get()).map_err(|_| WireError::BadValue("merge configuration too large"))
}

fn merge_admin_bytes(m: &MergeAdmin) -> Result<Vec<u8>, WireError> {
    let w = match m {
        MergeAdmin::ForceFinalize => WireMergeAdmin {
            op: MERGE_OP_FORCE_FINALIZE,
            ..Default::default()
        },
        MergeAdmin::Status => WireMergeAdmin {
            op: MERGE_OP_STATUS,
            ..Default::default()
        },
        MergeAdmin::SetConfig(c) => WireMergeAdmin {
            op: MERGE_OP_SET_CONFIG,
            finalize_height: c.finalize_height,
            pad: [0; 6],
            batch: c.batch.into(),
            request_blocks: (c.request_blocks as u64).into(),
            merge_dirty_blocks: (c.merge_dirty_blocks as u64).into(),
            splice_commit_blocks: (c.splice_commit_blocks as u64).into(),
            free_budget: (c.free_budget as u64).into(),
            headroom_limit: c.headroom_limit.map(U64::new),
        },
        _ => return Err(WireError::Unencodable),
    };
    Ok(w.as_bytes().to_vec())
}

fn merge_admin_of(p: &[u8]) -> Result<MergeAdmin, WireError> {
    let w = read::<WireMergeAdmin>(Cmd::MergeAdmin, p)?;
    pad_zero(&w.pad, "nonzero merge pad")?;
    let rest_zero = || pad_zero(&w.as_bytes()[1..], "merge fields without a configuration");
    match w.op {
        MERGE_OP_FORCE_FINALIZE => {
            rest_zero()?;
            Ok(MergeAdmin::ForceFinalize)
        }
        MERGE_OP_STATUS => {
            rest_zero()?;
            Ok(MergeAdmin::Status)
        }
        MERGE_OP_SET_CONFIG => Ok(MergeAdmin::SetConfig(MergeConfig {
            finalize_height: w.finalize_height,
            batch: w.batch.get(),
            request_blocks: usize_of(w.request_blocks)?,
            merge_dirty_blocks: usize_of(w.merge_dirty_blocks)?,
            splice_commit_blocks: usize_of(w.splice_commit_blocks)?,
            free_budget: usize_of(w.free_budget)?,
            headroom_limit: w.headroom_limit.map(|v| v.get()),
        })),
        _ => Err(WireError::BadValue("unknown merge op")),
    }
}

fn merge_status_bytes(s: &MergeStatus) -> Vec<u8> {
    let (stall_phase, headroom, need) = match s.stall {
        Some(st) => (1 + st.phase as u8, st.headroom, st.need),
        None => (0, 0, 0),
    };
    WireMergeStatus {
        running: s.running as u8,
        stall_phase,
        pad: [0; 6],
        logs_with_items: s.logs_with_items.into(),
        headroom: headroom.into(),
        need: need.into(),
    }
    .as_bytes()
    .to_vec()
}

fn merge_status_of(p: &[u8]) -> Result<MergeStatus, WireError> {
    let w = read::<WireMergeStatus>(Cmd::MergeAdmin, p)?;
    pad_zero(&w.pad, "nonzero merge status pad")?;
    let phase = |p: u8| match p {
        0 => Ok(MergePhase::Splice),
        1 => Ok(MergePhase::Rebalance),
        2 => Ok(MergePhase::Free),
        _ => Err(WireError::BadValue("unknown merge phase")),
    };
    let stall = match w.stall_phase {
        0 => {
            pad_zero(&w.as_bytes()[16..], "stall fields without a stall")?;
            None
        }
        n => Some(MergeStall {
            phase: phase(n - 1)?,
            headroom: w.headroom.get(),
            need: w.need.get(),
        }),
    };
    Ok(MergeStatus {
        running: bool_of(w.running, "merge running is not 0 or 1")?,
        logs_with_items: w.logs_with_items.get(),
        stall,
    })
}

/// The command and payload of a request.
pub fn encode_request(req: &Request) -> Result<(Cmd, Vec<u8>), WireError> {
    Ok(match req {
        Request::Greeting { rid, reconnect } => (
            Cmd::Mount,
            WireMount {
                rid: (*rid).into(),
                flags: if *reconnect { MOUNT_FLAG_RECONNECT } else { 0 },
                pad: [0; 7],
            }
            .as_bytes()
            .to_vec(),
        ),
        Request::GetLogTrees { rid } => (Cmd::GetLogTrees, u64_bytes(*rid)),
        Request::CommitLogTrees(lt) => (Cmd::CommitLogTrees, lt.as_bytes().to_vec()),
        Request::GetLogMerge { rid } => (Cmd::GetLogMerge, u64_bytes(*rid)),
        Request::CommitLogMerge(c) => (Cmd::CommitLogMerge, c.as_bytes().to_vec()),
        Request::GetSrchCompact { rid } => (Cmd::SrchGetCompact, u64_bytes(*rid)),
        Request::CommitSrchCompact(sc) => (Cmd::SrchCommitCompact, sc.as_bytes().to_vec()),
        Request::AllocInodes { rid, count } => (
            Cmd::AllocInodes,
            WirePair {
                a: (*rid).into(),
                b: (*count).into(),
            }
            .as_bytes()
            .to_vec(),
        ),
        Request::Farewell { rid } => (Cmd::Farewell, u64_bytes(*rid)),
        Request::Lock(l) => (Cmd::Lock, lock_to_wire(l).as_bytes().to_vec()),
        Request::GetRoots => (Cmd::GetRoots, Vec::new()),
        Request::GetLastSeq => (Cmd::GetLastSeq, Vec::new()),
        Request::Statfs => (Cmd::Statfs, Vec::new()),
        Request::OpenInoMap { group_nr } => (Cmd::OpenInoMap, u64_bytes(*group_nr)),
        Request::Merge(m) => (Cmd::MergeAdmin, merge_admin_bytes(m)?),
        _ => return Err(WireError::Unencodable),
    })
}

/// The request of a (client to server) request frame's command and payload.
pub fn decode_request(cmd: Cmd, p: &[u8]) -> Result<Request, WireError> {
    Ok(match cmd {
        Cmd::Mount => {
            let w = read::<WireMount>(cmd, p)?;
            pad_zero(&w.pad, "nonzero mount pad")?;
            if w.flags & !MOUNT_FLAG_RECONNECT != 0 {
                return Err(WireError::BadValue("unknown mount flags"));
            }
            Request::Greeting {
                rid: w.rid.get(),
                reconnect: w.flags & MOUNT_FLAG_RECONNECT != 0,
            }
        }
        Cmd::GetLogTrees => Request::GetLogTrees {
            rid: u64_of(cmd, p)?,
        },
        Cmd::CommitLogTrees => Request::CommitLogTrees(Box::new(read(cmd, p)?)),
        Cmd::GetLogMerge => Request::GetLogMerge {
            rid: u64_of(cmd, p)?,
        },
        Cmd::CommitLogMerge => Request::CommitLogMerge(Box::new(read(cmd, p)?)),
        Cmd::SrchGetCompact => Request::GetSrchCompact {
            rid: u64_of(cmd, p)?,
        },
        Cmd::SrchCommitCompact => Request::CommitSrchCompact(Box::new(read(cmd, p)?)),
        Cmd::AllocInodes => {
            let w = read::<WirePair>(cmd, p)?;
            Request::AllocInodes {
                rid: w.a.get(),
                count: w.b.get(),
            }
        }
        Cmd::Farewell => Request::Farewell {
            rid: u64_of(cmd, p)?,
        },
        Cmd::Lock => Request::Lock(lock_of(cmd, p)?),
        Cmd::GetRoots => {
            empty(cmd, p)?;
            Request::GetRoots
        }
        Cmd::GetLastSeq => {
            empty(cmd, p)?;
            Request::GetLastSeq
        }
        Cmd::Statfs => {
            empty(cmd, p)?;
            Request::Statfs
        }
        Cmd::OpenInoMap => Request::OpenInoMap {
            group_nr: u64_of(cmd, p)?,
        },
        Cmd::MergeAdmin => Request::Merge(merge_admin_of(p)?),
        Cmd::Greeting | Cmd::Challenge | Cmd::SyncLogTrees | Cmd::LockRecover => {
            return Err(WireError::WrongCmd(cmd))
        }
    })
}

/// The payload of `resp`, the answer to a request of command `cmd`; a response that does
/// not answer such a request has no wire form.
pub fn encode_response(cmd: Cmd, resp: &Response) -> Result<Vec<u8>, WireError> {
    Ok(match (cmd, resp) {
        (Cmd::Mount, Response::Greeting { fsid }) => u64_bytes(*fsid),
        (Cmd::GetLogTrees | Cmd::CommitLogTrees, Response::LogTrees(lt)) => lt.as_bytes().to_vec(),
        (Cmd::GetLogMerge, Response::LogMerge(m)) => m
            .as_ref()
            .map(|m| m.as_bytes().to_vec())
            .unwrap_or_default(),
        (Cmd::SrchGetCompact, Response::SrchCompact(s)) => s
            .as_ref()
            .map(|s| s.as_bytes().to_vec())
            .unwrap_or_default(),
        (Cmd::AllocInodes, Response::Inodes { first, count }) => WirePair {
            a: (*first).into(),
            b: (*count).into(),
        }
        .as_bytes()
        .to_vec(),
        (
            Cmd::CommitLogMerge | Cmd::SrchCommitCompact | Cmd::Farewell | Cmd::MergeAdmin,
            Response::Done,
        ) => Vec::new(),
        (Cmd::Lock, Response::Lock(l)) => lock_to_wire(l).as_bytes().to_vec(),
        (Cmd::GetRoots, Response::Roots(r)) => WireRoots {
            seq: r.seq.into(),
            fs_root: r.fs_root.into(),
            logs_root: r.logs_root.into(),
            srch_root: r.srch_root.into(),
            meta_low: r.meta_low as u8,
            data_low: r.data_low as u8,
            pad: [0; 6],
        }
        .as_bytes()
        .to_vec(),
        (Cmd::GetLastSeq, Response::Seq(s)) => u64_bytes(*s),
        (Cmd::Statfs, Response::Statfs(s)) => WireStatfs {
            fsid: s.fsid.into(),
            total_meta_blocks: s.total_meta_blocks.into(),
            total_data_blocks: s.total_data_blocks.into(),
            meta_free_blocks: s.meta_free_blocks.into(),
            data_free_blocks: s.data_free_blocks.into(),
            inode_count: s.inode_count.into(),
            reserved_meta_blocks: s.reserved_meta_blocks.into(),
        }
        .as_bytes()
        .to_vec(),
        (Cmd::OpenInoMap, Response::OpenInoMap(bits)) => inomap_bytes(bits),
        (Cmd::MergeAdmin, Response::Merge(s)) => merge_status_bytes(s),
        _ => return Err(WireError::Unencodable),
    })
}

fn root_of(r: &RawBtreeRoot) -> Result<scoutfs_core::format::BtreeRoot, WireError> {
    pad_zero(&r.pad, "nonzero root pad")?;
    Ok((*r).into())
}

/// The response of a (successful) response frame to a request of command `cmd`.
pub fn decode_response(cmd: Cmd, p: &[u8]) -> Result<Response, WireError> {
    Ok(match cmd {
        Cmd::Mount => Response::Greeting {
            fsid: u64_of(cmd, p)?,
        },
        Cmd::GetLogTrees | Cmd::CommitLogTrees => Response::LogTrees(Box::new(read(cmd, p)?)),
        Cmd::GetLogMerge if p.is_empty() => Response::LogMerge(None),
        Cmd::GetLogMerge => Response::LogMerge(Some(Box::new(read(cmd, p)?))),
        Cmd::SrchGetCompact if p.is_empty() => Response::SrchCompact(None),
        Cmd::SrchGetCompact => Response::SrchCompact(Some(Box::new(read(cmd, p)?))),
        Cmd::AllocInodes => {
            let w = read::<WirePair>(cmd, p)?;
            Response::Inodes {
                first: w.a.get(),
                count: w.b.get(),
            }
        }
        Cmd::CommitLogMerge | Cmd::SrchCommitCompact | Cmd::Farewell => {
            empty(cmd, p)?;
            Response::Done
        }
        Cmd::MergeAdmin if p.is_empty() => Response::Done,
        Cmd::MergeAdmin => Response::Merge(merge_status_of(p)?),
        Cmd::Lock => Response::Lock(lock_of(cmd, p)?),
        Cmd::GetRoots => {
            let w = read::<WireRoots>(cmd, p)?;
            pad_zero(&w.pad, "nonzero roots pad")?;
            Response::Roots(CommittedRoots {
                seq: w.seq.get(),
                fs_root: root_of(&w.fs_root)?,
                logs_root: root_of(&w.logs_root)?,
                srch_root: root_of(&w.srch_root)?,
                meta_low: bool_of(w.meta_low, "meta_low is not 0 or 1")?,
                data_low: bool_of(w.data_low, "data_low is not 0 or 1")?,
            })
        }
        Cmd::GetLastSeq => Response::Seq(u64_of(cmd, p)?),
        Cmd::Statfs => {
            let w = read::<WireStatfs>(cmd, p)?;
            Response::Statfs(VolumeStats {
                fsid: w.fsid.get(),
                total_meta_blocks: w.total_meta_blocks.get(),
                total_data_blocks: w.total_data_blocks.get(),
                meta_free_blocks: w.meta_free_blocks.get(),
                data_free_blocks: w.data_free_blocks.get(),
                inode_count: w.inode_count.get(),
                reserved_meta_blocks: w.reserved_meta_blocks.get(),
            })
        }
        Cmd::OpenInoMap => Response::OpenInoMap(inomap_of(cmd, p)?),
        Cmd::Greeting | Cmd::Challenge | Cmd::SyncLogTrees | Cmd::LockRecover => {
            return Err(WireError::WrongCmd(cmd))
        }
    })
}

/// The command and payload of a server request.
pub fn encode_server_request(req: &ServerRequest) -> Result<(Cmd, Vec<u8>), WireError> {
    Ok(match req {
        ServerRequest::SyncLogTrees => (Cmd::SyncLogTrees, Vec::new()),
        ServerRequest::LockInvalidate(l) => (Cmd::Lock, lock_to_wire(l).as_bytes().to_vec()),
        ServerRequest::LockRecover { key } => {
            (Cmd::LockRecover, RawKey::from(key).as_bytes().to_vec())
        }
        ServerRequest::OpenInoMap { group_nr } => (Cmd::OpenInoMap, u64_bytes(*group_nr)),
        _ => return Err(WireError::Unencodable),
    })
}

/// The server request of a (server to client) request frame.
pub fn decode_server_request(cmd: Cmd, p: &[u8]) -> Result<ServerRequest, WireError> {
    Ok(match cmd {
        Cmd::SyncLogTrees => {
            empty(cmd, p)?;
            ServerRequest::SyncLogTrees
        }
        Cmd::Lock => ServerRequest::LockInvalidate(lock_of(cmd, p)?),
        Cmd::LockRecover => {
            let k = read::<RawKey>(cmd, p)?;
            pad_zero(&k.pad, "nonzero key pad")?;
            ServerRequest::LockRecover { key: Key::from(&k) }
        }
        Cmd::OpenInoMap => ServerRequest::OpenInoMap {
            group_nr: u64_of(cmd, p)?,
        },
        _ => return Err(WireError::WrongCmd(cmd)),
    })
}

/// The payload of a mount's reply to a server request of command `cmd`, or the error it
/// is sent as ([`ClientReply::Failed`]).
pub fn encode_client_reply(cmd: Cmd, r: &ClientReply) -> Result<(NetErrno, Vec<u8>), WireError> {
    Ok(match (cmd, r) {
        (_, ClientReply::Failed) => (NetErrno::Io, b"the mount failed the request".to_vec()),
        (Cmd::SyncLogTrees, ClientReply::Done) => (NetErrno::None, Vec::new()),
        (Cmd::Lock, ClientReply::Lock(l)) => (NetErrno::None, lock_to_wire(l).as_bytes().to_vec()),
        (Cmd::LockRecover, ClientReply::LockRecover(locks)) => {
            if locks.len() > LOCK_RECOVER_BATCH {
                return Err(WireError::Unencodable);
            }
            let mut out = Vec::with_capacity(locks.len() * size_of::<WireLock>());
            for l in locks {
                out.extend_from_slice(lock_to_wire(l).as_bytes());
            }
            (NetErrno::None, out)
        }
        (Cmd::OpenInoMap, ClientReply::OpenInoMap { group_nr, bits }) => {
            let w = WireInoMapReply {
                group_nr: U64::new(*group_nr),
                bits: bits.map(U64::new),
            };
            (NetErrno::None, w.as_bytes().to_vec())
        }
        _ => return Err(WireError::Unencodable),
    })
}

/// The reply of a response frame to a server request of command `cmd` (an error frame
/// is [`ClientReply::Failed`]).
pub fn decode_client_reply(cmd: Cmd, errno: NetErrno, p: &[u8]) -> Result<ClientReply, WireError> {
    if errno != NetErrno::None {
        check_error_msg(p)?;
        return Ok(ClientReply::Failed);
    }
    Ok(match cmd {
        Cmd::SyncLogTrees => {
            empty(cmd, p)?;
            ClientReply::Done
        }
        Cmd::Lock => ClientReply::Lock(lock_of(cmd, p)?),
        Cmd::LockRecover => {
            let n = size_of::<WireLock>();
            if !p.len().is_multiple_of(n) || p.len() / n > LOCK_RECOVER_BATCH {
                return Err(WireError::BadLength { cmd, len: p.len() });
            }
            let locks = p
                .chunks_exact(n)
                .map(|c| lock_of(cmd, c))
                .collect::<Result<Vec<_>, _>>()?;
            ClientReply::LockRecover(locks)
        }
        Cmd::OpenInoMap => {
            let w = read::<WireInoMapReply>(cmd, p)?;
            ClientReply::OpenInoMap {
                group_nr: w.group_nr.get(),
                bits: Box::new(w.bits.map(|b| b.get())),
            }
        }
        _ => return Err(WireError::WrongCmd(cmd)),
    })
}

/// The error and message payload of a transport error sent as a response.
pub fn encode_error(e: &TransportError) -> (NetErrno, Vec<u8>) {
    let (errno, msg) = match e {
        TransportError::Remote { kind, msg } => (NetErrno::of_kind(*kind), msg.clone()),
        other => (NetErrno::Io, other.to_string()),
    };
    (errno, truncate_msg(&msg))
}

/// `msg` cut to at most [`MAX_ERROR_MSG`] bytes on a character boundary.
pub fn truncate_msg(msg: &str) -> Vec<u8> {
    let mut end = msg.len().min(MAX_ERROR_MSG);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    msg.as_bytes()[..end].to_vec()
}

fn check_error_msg(p: &[u8]) -> Result<&str, WireError> {
    if p.len() > MAX_ERROR_MSG {
        return Err(WireError::Oversize(p.len()));
    }
    std::str::from_utf8(p).map_err(|_| WireError::BadValue("error message is not UTF-8"))
}

/// The transport error of an error response.
pub fn decode_error(errno: NetErrno, p: &[u8]) -> Result<TransportError, WireError> {
    let msg = check_error_msg(p)?;
    Ok(TransportError::Remote {
        kind: errno.kind(),
        msg: msg.to_string(),
    })
}

/// Decode the payload of any non-handshake frame, checking everything the decoders
/// check: for the fuzz target and the "never panics" tests. `from_server` tells which
/// side sent it.
pub fn decode_any(frame: &Frame, from_server: bool) -> Result<(), WireError> {
    let (cmd, errno) = (frame.cmd, frame.error);
    if cmd.is_handshake() {
        return match cmd {
            Cmd::Challenge => read::<Challenge>(cmd, &frame.payload).map(drop),
            _ if errno != NetErrno::None => decode_error(errno, &frame.payload).map(drop),
            _ => read::<Greeting>(cmd, &frame.payload).map(drop),
        };
    }
    match (frame.is_response(), from_server) {
        (false, false) => decode_request(cmd, &frame.payload).map(drop),
        (false, true) => decode_server_request(cmd, &frame.payload).map(drop),
        (true, true) if errno != NetErrno::None => decode_error(errno, &frame.payload).map(drop),
        (true, true) => decode_response(cmd, &frame.payload).map(drop),
        (true, false) => decode_client_reply(cmd, errno, &frame.payload).map(drop),
    }
}
