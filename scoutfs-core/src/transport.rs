//! Messages between a mount (client) and the server, and the [`Transport`] that carries
//! them.
//!
//! The core never opens sockets: a client calls [`Transport::call`] and gets the server's
//! answer. [`LocalTransport`] calls a [`Server`] in the same process (the single-node
//! mount and the embedded default); the network crate carries the same messages between
//! hosts. Every request is idempotent on the server, so a transport may resend one after
//! a lost reply.

use crate::format::BtreeRoot;
use crate::format::{LogMergeComplete, LogMergeRequest, LogTrees, SrchCompact};
use crate::server::Server;
use crate::volume::VolumeError;
use std::sync::Arc;

/// A request from a mount to the server.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Request {
    /// A mount introduces itself (random id `rid`); the connection is that mount's from
    /// then on.
    Greeting {
        /// The mount's id.
        rid: u64,
        /// The mount is reconnecting and goes on with the work it holds (its merge
        /// requests stay valid); otherwise it is mounting afresh and holds none (merge
        /// requests the server gave its id before are cancelled).
        reconnect: bool,
    },
    /// Open the mount's next transaction: refilled allocators and a transaction seq.
    GetLogTrees {
        /// The mount's id.
        rid: u64,
    },
    /// Record the mount's committed transaction and open its next one, in one server
    /// commit (answered with [`Response::LogTrees`], as [`Request::GetLogTrees`] is).
    CommitLogTrees(Box<LogTrees>),
    /// Ask for a log merge request to work on.
    GetLogMerge {
        /// The mount's id.
        rid: u64,
    },
    /// A merge request's result.
    CommitLogMerge(Box<LogMergeComplete>),
    /// Ask for a step of srch compaction work (see [`crate::srch`]).
    GetSrchCompact {
        /// The mount's id.
        rid: u64,
    },
    /// The result of a step of srch compaction: its progress, the whole output
    /// (`SRCH_COMPACT_FLAG_DONE`), or a failure (`SRCH_COMPACT_FLAG_ERROR`).
    CommitSrchCompact(Box<SrchCompact>),
    /// Hand out a run of new inode numbers.
    AllocInodes {
        /// The mount's id.
        rid: u64,
        /// How many (1..=`MAX_INODE_GROUP`).
        count: u64,
    },
    /// The mount leaves; its unused allocators go back to the server.
    Farewell {
        /// The mount's id.
        rid: u64,
    },
}

/// The server's answer to a [`Request`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Response {
    /// Answer to [`Request::Greeting`].
    Greeting {
        /// The volume's fsid.
        fsid: u64,
    },
    /// Answer to [`Request::GetLogTrees`] and [`Request::CommitLogTrees`]: the mount's
    /// open transaction.
    LogTrees(Box<LogTrees>),
    /// Answer to [`Request::GetLogMerge`]: a request, or none to work on now.
    LogMerge(Option<Box<LogMergeRequest>>),
    /// Answer to [`Request::GetSrchCompact`]: a compaction to step, or none now.
    SrchCompact(Option<Box<SrchCompact>>),
    /// Answer to [`Request::AllocInodes`]: inode numbers `first..first + count` are the
    /// mount's.
    Inodes {
        /// The first number.
        first: u64,
        /// How many.
        count: u64,
    },
    /// The request is done (and durable).
    Done,
}

/// What kind of failure the server reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoteErrorKind {
    /// No space (ENOSPC).
    NoSpace,
    /// The request does not fit the server's state.
    Protocol,
    /// The server's commit failed; it must be restarted.
    Io,
}

/// Errors of a transport call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The server handled the request and failed it.
    #[error("server: {msg}")]
    Remote {
        /// The kind of failure.
        kind: RemoteErrorKind,
        /// The server's message.
        msg: String,
    },
    /// The server is unreachable.
    #[error("the server is unreachable")]
    Disconnected,
    /// The server answered with a response that does not fit the request.
    #[error("unexpected response from the server")]
    Unexpected,
}

impl From<VolumeError> for TransportError {
    fn from(e: VolumeError) -> Self {
        let kind = if e.is_no_space() {
            RemoteErrorKind::NoSpace
        } else if matches!(e, VolumeError::Protocol(_)) {
            RemoteErrorKind::Protocol
        } else {
            RemoteErrorKind::Io
        };
        TransportError::Remote {
            kind,
            msg: e.to_string(),
        }
    }
}

/// The shared roots of the server's last commit, as its super on the device holds them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommittedRoots {
    /// Seq of the commit (the super's `seq`).
    pub seq: u64,
    /// The filesystem btree.
    pub fs_root: BtreeRoot,
    /// The btree of log tree records.
    pub logs_root: BtreeRoot,
    /// The btree of srch files and compactions.
    pub srch_root: BtreeRoot,
    /// Whether a mount refilled now would be told its metadata is LOW (a mount that was
    /// told so asks again once this clears: space came back).
    pub meta_low: bool,
    /// Whether the data pool is too short to refill a mount's data extents.
    pub data_low: bool,
}

/// Carries requests to the server.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// Send `req` and wait for the server's answer.
    fn call(&self, req: Request) -> Result<Response, TransportError>;

    /// The roots of the server's last commit, if this transport can tell them without a
    /// request (a server in the same process publishes them after each commit). `None`:
    /// readers read the super from the device.
    fn committed_roots(&self) -> Option<CommittedRoots> {
        None
    }
}

/// A transport to a server in the same process. The connection belongs to the mount
/// that greeted through it.
#[derive(Debug)]
pub struct LocalTransport {
    server: parking_lot::RwLock<Arc<Server>>,
    rid: parking_lot::Mutex<Option<u64>>,
}

impl LocalTransport {
    /// A transport to `server`.
    pub fn new(server: Arc<Server>) -> LocalTransport {
        LocalTransport {
            server: parking_lot::RwLock::new(server),
            rid: parking_lot::Mutex::new(None),
        }
    }

    /// Send later requests to `server`, a server of the same volume that took over (one
    /// restarted after a crash): the in-process form of reconnecting. The connection
    /// stays its mount's; nothing is sent.
    pub fn reconnect(&self, server: Arc<Server>) {
        *self.server.write() = server;
    }
}

impl Transport for LocalTransport {
    fn call(&self, req: Request) -> Result<Response, TransportError> {
        let server = self.server.read().clone();
        let greeting = match &req {
            Request::Greeting { rid, .. } => Some(*rid),
            _ => None,
        };
        let conn = *self.rid.lock();
        let resp = server.handle_from(conn, req)?;
        if greeting.is_some() {
            *self.rid.lock() = greeting;
        }
        Ok(resp)
    }

    fn committed_roots(&self) -> Option<CommittedRoots> {
        Some(self.server.read().committed_roots())
    }
}
