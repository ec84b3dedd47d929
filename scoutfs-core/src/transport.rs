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
    /// Ask for a cluster lock in a mode, or give one up ([`NetLock::new_mode`]
    /// [`LockMode::Null`]); answered with [`Response::Lock`] once granted, which may wait
    /// for other mounts to let go (see [`crate::client::locks`]).
    Lock(NetLock),
    /// The roots of the server's last durable commit ([`Response::Roots`]).
    GetRoots,
    /// The committed seq horizon ([`Response::Seq`]): every transaction of that seq or
    /// lower is committed by every mount (the original's `GET_LAST_SEQ`).
    GetLastSeq,
    /// The volume's sizes, free space and inode count ([`Response::Statfs`]).
    Statfs,
    /// Which mounts have inodes of the group `group_nr` (inode number / 1024) open
    /// ([`Response::OpenInoMap`]): a mount deletes an unlinked inode only when no other
    /// mount has it open.
    OpenInoMap {
        /// The inode group.
        group_nr: u64,
    },
    /// Administration of the log merge ([`Response::Merge`] or [`Response::Done`]).
    Merge(MergeAdmin),
}

/// Administration of the log merge, for tests, tools and a mount's background work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MergeAdmin {
    /// Finalize every log tree at the next opportunity, whatever its size
    /// ([`Response::Done`]).
    ForceFinalize,
    /// How the merge stands ([`Response::Merge`]).
    Status,
    /// Pace the merge by this configuration ([`Response::Done`]).
    SetConfig(crate::server::MergeConfig),
}

/// How the log merge stands ([`MergeAdmin::Status`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeStatus {
    /// A merge is running (its requests are being handed out, spliced or freed).
    pub running: bool,
    /// Log trees (finalized or open) that hold items.
    pub logs_with_items: u64,
    /// Why the merge waits for space, if it does.
    pub stall: Option<crate::server::MergeStall>,
}

/// The volume's sizes, free space and inode count, as the server's last commit has
/// them ([`Request::Statfs`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VolumeStats {
    /// The volume's id.
    pub fsid: u64,
    /// Metadata blocks of the volume.
    pub total_meta_blocks: u64,
    /// Data blocks of the volume.
    pub total_data_blocks: u64,
    /// Metadata blocks free in the server's pool (not counting what mounts hold).
    pub meta_free_blocks: u64,
    /// Data blocks free in the server's pool (not counting what mounts hold).
    pub data_free_blocks: u64,
    /// Inodes in use.
    pub inode_count: u64,
    /// Metadata blocks held back for frees and the log merge (mounts are told the
    /// volume is low on space when the free blocks fall to it).
    pub reserved_meta_blocks: u64,
}

/// A cluster lock mode (the original's `enum scoutfs_lock_mode`, same numbers).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum LockMode {
    /// No access: held to give a lock up.
    #[default]
    Null = 0,
    /// Reading, shared with other readers ("PR").
    Read = 1,
    /// Reading and writing, exclusive ("EX").
    Write = 2,
    /// Blind writes shared with other such writers, no reads ("CW").
    WriteOnly = 3,
}

impl LockMode {
    /// The mode of wire value `v` (`None` for an unknown value).
    pub fn from_u8(v: u8) -> Option<LockMode> {
        Some(match v {
            0 => LockMode::Null,
            1 => LockMode::Read,
            2 => LockMode::Write,
            3 => LockMode::WriteOnly,
            _ => return None,
        })
    }
}

/// A lock message (the original's `scoutfs_net_lock`): a mount's request to move its
/// hold of the lock starting at `key` from `old_mode` to `new_mode`, the server's grant,
/// the server's invalidation (the mount is to drop to `new_mode`) and its answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NetLock {
    /// The lock's identity: the first key of its range.
    pub key: crate::format::Key,
    /// In a grant of WRITE or WRITE_ONLY: the seq floor of items written under it.
    pub write_seq: u64,
    /// The mode the mount holds.
    pub old_mode: LockMode,
    /// The mode asked for, granted, or to drop to.
    pub new_mode: LockMode,
}

/// Bits of the open-inode map of one group: bit `ino % 1024` is set when the inode is
/// open (the original's `scoutfs_open_ino_map`).
pub type InoMapBits = [u64; 16];

/// A request from the server to a mount (carried back over the mount's connection).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerRequest {
    /// Commit the open transaction now (a finalization waits for it):
    /// [`ClientReply::Done`].
    SyncLogTrees,
    /// Drop the lock to [`NetLock::new_mode`], committing what was written under it
    /// first: [`ClientReply::Lock`] once done, with the lock's key, the modes it dropped
    /// from and to, and the `write_seq` of the grant it held (a server that took over
    /// raises its seq to it).
    LockInvalidate(NetLock),
    /// A new server rebuilds its lock state: the mount's locks from `key` on, in
    /// batches ([`ClientReply::LockRecover`]); an empty batch ends it.
    LockRecover {
        /// The first lock key of the batch.
        key: crate::format::Key,
    },
    /// Which inodes of group `group_nr` the mount has open ([`ClientReply::OpenInoMap`]).
    OpenInoMap {
        /// The inode group.
        group_nr: u64,
    },
}

/// Most locks in one [`ClientReply::LockRecover`] batch.
pub const LOCK_RECOVER_BATCH: usize = 22;

/// A mount's answer to a [`ServerRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientReply {
    /// Done.
    Done,
    /// The lock was dropped as asked.
    Lock(NetLock),
    /// A batch of at most [`LOCK_RECOVER_BATCH`] locks, in key order, with the modes
    /// the mount holds (a lock mid-invalidation with the mode it is dropping from).
    LockRecover(Vec<NetLock>),
    /// The open inodes of the group asked about.
    OpenInoMap {
        /// The inode group.
        group_nr: u64,
        /// Its inodes the mount has open or handed out.
        bits: Box<InoMapBits>,
    },
    /// The mount could not do it (the server treats the mount as failed).
    Failed,
}

/// What a mount does with the server's requests: the client side of a transport
/// delivers each [`ServerRequest`] to it and sends back the reply.
///
/// A transport calls it on its own threads, never on one that is inside
/// [`Transport::call`]; lock requests for the same key are delivered one at a time, in
/// the order the server sent them, and others may run at once. A handler may block (an
/// invalidation waits for the lock's users and commits).
pub trait ClientHandler: Send + Sync {
    /// Do what `req` asks and say so.
    fn handle(&self, req: ServerRequest) -> ClientReply;
}

/// How the server reaches its mounts: the server side of a transport. The server sends
/// a [`ServerRequest`] with [`ServerLink::send`] and does not wait; the transport
/// delivers the mount's [`ClientReply`] to [`Server::client_reply`]. A request to a
/// mount that is not connected waits for it to reconnect (or is dropped when the mount
/// is evicted).
pub trait ServerLink: Send + Sync + std::fmt::Debug {
    /// Send `req` to mount `rid`.
    fn send(&self, rid: u64, req: ServerRequest);
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
    /// Answer to [`Request::Lock`]: the grant.
    Lock(NetLock),
    /// Answer to [`Request::GetRoots`].
    Roots(CommittedRoots),
    /// Answer to [`Request::GetLastSeq`].
    Seq(u64),
    /// Answer to [`Request::Statfs`].
    Statfs(VolumeStats),
    /// Answer to [`Request::OpenInoMap`]: the union over every other mount.
    OpenInoMap(Box<InoMapBits>),
    /// Answer to [`MergeAdmin::Status`].
    Merge(MergeStatus),
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

    /// Deliver the server's requests to `handler` from now on (a mount registers itself
    /// once it is up). A transport that carries no server requests ignores it.
    fn set_handler(&self, handler: std::sync::Weak<dyn ClientHandler>) {
        let _ = handler;
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

/// An in-process cluster: one server and many mounts in the same process, with the
/// server's requests carried back to each mount's [`ClientHandler`] (the in-process form
/// of the connections the network crate keeps). Requests about one lock reach a mount
/// one at a time and in order, on a thread of their own, so an invalidation waiting for
/// a lock's users never holds up another lock's; the other requests reach it in order
/// on another thread. A request to a mount that has not registered a handler waits for
/// it.
pub struct LocalHub {
    server: parking_lot::RwLock<std::sync::Weak<Server>>,
    mounts: parking_lot::Mutex<std::collections::HashMap<u64, HubMount>>,
    me: std::sync::Weak<LocalHub>,
}

#[derive(Default)]
struct HubMount {
    handler: Option<std::sync::Weak<dyn ClientHandler>>,
    /// Requests per lock key (`None`: the requests about no lock), and whether a thread
    /// is delivering them.
    queues: std::collections::HashMap<
        Option<crate::format::Key>,
        (std::collections::VecDeque<ServerRequest>, bool),
    >,
}

impl std::fmt::Debug for LocalHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalHub")
            .field("mounts", &self.mounts.lock().len())
            .finish()
    }
}

impl LocalHub {
    /// A hub around `server` (which reaches the mounts through it from now on).
    pub fn new(server: &Arc<Server>) -> Arc<LocalHub> {
        let hub = Arc::new_cyclic(|me| LocalHub {
            server: parking_lot::RwLock::new(Arc::downgrade(server)),
            mounts: parking_lot::Mutex::new(std::collections::HashMap::new()),
            me: me.clone(),
        });
        server.set_link(hub.clone());
        hub
    }

    /// A server of the same volume took over: mounts reach it from now on (their
    /// requests in flight at the old one are theirs to send again).
    pub fn reconnect(self: &Arc<Self>, server: &Arc<Server>) {
        *self.server.write() = Arc::downgrade(server);
        server.set_link(self.clone());
    }

    /// A new mount's transport.
    pub fn connect(self: &Arc<Self>) -> Arc<HubTransport> {
        Arc::new(HubTransport {
            hub: self.clone(),
            rid: parking_lot::Mutex::new(None),
            handler: parking_lot::Mutex::new(None),
        })
    }

    /// Mount `rid` is gone: what was queued for it is dropped.
    pub fn disconnect(&self, rid: u64) {
        self.mounts.lock().remove(&rid);
    }

    fn server(&self) -> Option<Arc<Server>> {
        self.server.read().upgrade()
    }

    fn register(&self, rid: u64, handler: std::sync::Weak<dyn ClientHandler>) {
        let mut mounts = self.mounts.lock();
        let m = mounts.entry(rid).or_default();
        m.handler = Some(handler);
        let idle: Vec<_> = m
            .queues
            .iter_mut()
            .filter(|(_, (q, running))| !q.is_empty() && !*running)
            .map(|(k, (_, running))| {
                *running = true;
                *k
            })
            .collect();
        drop(mounts);
        for key in idle {
            self.spawn(rid, key);
        }
    }

    fn spawn(&self, rid: u64, key: Option<crate::format::Key>) {
        let hub = self.me.clone();
        std::thread::spawn(move || {
            if let Some(hub) = hub.upgrade() {
                hub.deliver(rid, key);
            }
        });
    }

    /// Deliver mount `rid`'s requests about `key` until none is left.
    fn deliver(&self, rid: u64, key: Option<crate::format::Key>) {
        loop {
            let (req, handler) = {
                let mut mounts = self.mounts.lock();
                let Some(m) = mounts.get_mut(&rid) else {
                    return;
                };
                let handler = m.handler.as_ref().and_then(std::sync::Weak::upgrade);
                let Some((q, running)) = m.queues.get_mut(&key) else {
                    return;
                };
                let next = handler.and_then(|h| q.pop_front().map(|r| (r, h)));
                let Some((req, handler)) = next else {
                    *running = false;
                    if q.is_empty() {
                        m.queues.remove(&key);
                    }
                    return;
                };
                (req, handler)
            };
            let reply = handler.handle(req);
            if let Some(server) = self.server() {
                server.client_reply(rid, reply);
            }
        }
    }
}

impl ServerLink for LocalHub {
    fn send(&self, rid: u64, req: ServerRequest) {
        let key = match &req {
            ServerRequest::LockInvalidate(nl) => Some(nl.key),
            _ => None,
        };
        let mut mounts = self.mounts.lock();
        let m = mounts.entry(rid).or_default();
        let has_handler = m.handler.is_some();
        let (q, running) = m.queues.entry(key).or_default();
        q.push_back(req);
        if has_handler && !*running {
            *running = true;
            drop(mounts);
            self.spawn(rid, key);
        }
    }
}

/// A mount's transport in a [`LocalHub`]: requests go to the hub's server; the
/// server's requests come to the handler the mount sets.
pub struct HubTransport {
    hub: Arc<LocalHub>,
    rid: parking_lot::Mutex<Option<u64>>,
    handler: parking_lot::Mutex<Option<std::sync::Weak<dyn ClientHandler>>>,
}

impl std::fmt::Debug for HubTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubTransport")
            .field("rid", &*self.rid.lock())
            .finish()
    }
}

impl HubTransport {
    /// The id of the mount that greeted through this transport.
    pub fn rid(&self) -> Option<u64> {
        *self.rid.lock()
    }
}

impl Transport for HubTransport {
    fn call(&self, req: Request) -> Result<Response, TransportError> {
        let server = self.hub.server().ok_or(TransportError::Disconnected)?;
        let greeting = match &req {
            Request::Greeting { rid, .. } => Some(*rid),
            _ => None,
        };
        let conn = *self.rid.lock();
        let resp = server.handle_from(conn, req)?;
        if let Some(rid) = greeting {
            *self.rid.lock() = Some(rid);
            if let Some(h) = self.handler.lock().clone() {
                self.hub.register(rid, h);
            }
        }
        Ok(resp)
    }

    fn committed_roots(&self) -> Option<CommittedRoots> {
        self.hub.server().map(|s| s.committed_roots())
    }

    fn set_handler(&self, handler: std::sync::Weak<dyn ClientHandler>) {
        *self.handler.lock() = Some(handler.clone());
        if let Some(rid) = *self.rid.lock() {
            self.hub.register(rid, handler);
        }
    }
}
