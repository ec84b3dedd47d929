//! The server side: [`NetServer`] listens, greets and serves an `Arc<Server>`.
//!
//! Each mount (rid) has one [`Conn`] that outlives its sockets: a mount that reconnects
//! to this server (same term) takes it over, so the conversation continues exactly once;
//! the old socket's tasks are aborted and can no longer take frames (each socket has a
//! generation). Requests run on tokio's blocking threads (`Server::handle_from` waits for
//! the commit); a socket takes at most [`MAX_HANDLERS`] requests at once and stops reading
//! until one is answered. Server requests ([`ServerLink::send`]) are queued in the mount's
//! `Conn` and written when it is connected.
//!
//! A peer that breaks the protocol, sends a malformed frame, does not greet in time, or
//! does not read what it is sent in time loses its socket and nothing else.

use crate::auth::{self, Secret};
use crate::conn::{Conn, Delivery, ReqToken};
use crate::tcp::{read_frame, tune, write_frames, write_loop, NetError};
use crate::wire::*;
use parking_lot::Mutex;
use scoutfs_core::server::Server;
use scoutfs_core::transport::{ClientReply, Request, ServerLink, ServerRequest, TransportError};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::AbortHandle;
use zerocopy::{FromBytes, IntoBytes};

/// Requests of one socket being handled at once.
pub const MAX_HANDLERS: usize = 64;
/// Frames kept for a mount (unanswered server requests and unacknowledged responses)
/// past which its socket is closed: an honest mount acknowledges with every frame.
pub const MAX_KEPT: usize = 4096;

/// How a [`NetServer`] runs.
#[derive(Clone, Debug)]
pub struct NetServerOptions {
    /// A file holding the shared secret mounts must prove they hold; `None`: the server
    /// is open to any host that can reach it.
    pub secret: Option<PathBuf>,
    /// The server's term (`None`: a random one). A mount that reconnects with another
    /// term knows it talks to a new server.
    pub term: Option<u64>,
    /// How long a new socket may take to greet.
    pub greeting_timeout: Duration,
    /// How long a write may wait for the peer to read.
    pub write_timeout: Duration,
    /// TCP keepalive idle time.
    pub keepalive: Duration,
    /// Threads of the runtime (blocking handlers run on their own pool).
    pub worker_threads: usize,
}

impl Default for NetServerOptions {
    fn default() -> Self {
        NetServerOptions {
            secret: None,
            term: None,
            greeting_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(24),
            worker_threads: 2,
        }
    }
}

/// Counts of what a server's sockets did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Sockets accepted.
    pub accepted: u64,
    /// Handshakes that succeeded.
    pub greeted: u64,
    /// Handshakes refused or failed (bad secret, fsid, version, timeouts, garbage).
    pub refused: u64,
    /// Sockets closed after the handshake for breaking the protocol or not reading (or
    /// that broke mid-frame).
    pub dropped: u64,
    /// Frames dropped as already received (resent after a reconnect).
    pub duplicates: u64,
    /// Requests handled.
    pub requests: u64,
    /// Mounts' replies to server requests, passed to `Server::client_reply`.
    pub replies: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    greeted: AtomicU64,
    refused: AtomicU64,
    dropped: AtomicU64,
    duplicates: AtomicU64,
    requests: AtomicU64,
    replies: AtomicU64,
}

/// A mount's conversation and the socket that carries it now.
#[derive(Debug)]
struct Mount {
    conn: Conn,
    /// Generation of the socket that may write (one per accepted socket).
    gen: u64,
    notify: Arc<Notify>,
    task: Option<AbortHandle>,
}

type MountRef = Arc<Mutex<Mount>>;

#[derive(Debug)]
struct Shared {
    server: Arc<Server>,
    opts: NetServerOptions,
    secret: Option<Secret>,
    term: u64,
    fsid: u64,
    fmt_vers: u64,
    mounts: Mutex<HashMap<u64, MountRef>>,
    next_gen: AtomicU64,
    counters: Counters,
}

impl Shared {
    fn mount(&self, rid: u64) -> MountRef {
        self.mounts
            .lock()
            .entry(rid)
            .or_insert_with(|| {
                Arc::new(Mutex::new(Mount {
                    conn: Conn::new(),
                    gen: 0,
                    notify: Arc::new(Notify::new()),
                    task: None,
                }))
            })
            .clone()
    }
}

/// The server side of the link: `Server` sends its requests through it.
#[derive(Debug)]
struct Link(std::sync::Weak<Shared>);

impl ServerLink for Link {
    fn send(&self, rid: u64, req: ServerRequest) {
        let Some(sh) = self.0.upgrade() else { return };
        let Ok((cmd, payload)) = encode_server_request(&req) else {
            return;
        };
        let m = sh.mount(rid);
        let mut m = m.lock();
        m.conn.request(cmd, payload);
        m.notify.notify_one();
    }
}

/// A TCP server of a volume's [`Server`].
#[derive(Debug)]
pub struct NetServer {
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
    addr: SocketAddr,
}

impl NetServer {
    /// Listen on `addr` and serve `server`, which sends its requests to mounts through
    /// this server from now on (`Server::set_link`).
    pub fn start(
        server: Arc<Server>,
        addr: SocketAddr,
        opts: NetServerOptions,
    ) -> std::io::Result<NetServer> {
        let secret = match &opts.secret {
            Some(p) => Some(Secret::from_file(p).map_err(std::io::Error::other)?),
            None => None,
        };
        let term = match opts.term {
            Some(t) => t,
            None => auth::random_u64()?,
        };
        let (fsid, fmt_vers) = server.with_core(|c| {
            let sb = c.super_block();
            (sb.hdr.fsid.get(), sb.fmt_vers.get())
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.worker_threads.max(1))
            .thread_name("scoutfs-net-server")
            .enable_all()
            .build()?;
        let listener = rt.block_on(TcpListener::bind(addr))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            server: server.clone(),
            opts,
            secret,
            term,
            fsid,
            fmt_vers,
            mounts: Mutex::new(HashMap::new()),
            next_gen: AtomicU64::new(1),
            counters: Counters::default(),
        });
        server.set_link(Arc::new(Link(Arc::downgrade(&shared))));
        rt.spawn(accept_loop(shared.clone(), listener));
        Ok(NetServer {
            shared,
            rt: Some(rt),
            addr,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's term.
    pub fn term(&self) -> u64 {
        self.shared.term
    }

    /// What its sockets did so far.
    pub fn stats(&self) -> ServerStats {
        let c = &self.shared.counters;
        ServerStats {
            accepted: c.accepted.load(Ordering::Relaxed),
            greeted: c.greeted.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            replies: c.replies.load(Ordering::Relaxed),
        }
    }

    /// The link the server sends its requests through (the one `start` gave it).
    pub fn link(&self) -> Arc<dyn ServerLink> {
        Arc::new(Link(Arc::downgrade(&self.shared)))
    }

    /// Close every mount's socket (they reconnect and continue): for tests and
    /// operators.
    pub fn drop_connections(&self) {
        for m in self.shared.mounts.lock().values() {
            if let Some(t) = m.lock().task.take() {
                t.abort();
            }
        }
    }

    /// Stop listening and close every socket. Requests being handled finish on their
    /// own (their answers go nowhere); the `Server` is free once they have.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for NetServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn accept_loop(sh: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((s, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        sh.counters.accepted.fetch_add(1, Ordering::Relaxed);
        let sh = sh.clone();
        tokio::spawn(async move {
            tune(&s, sh.opts.keepalive);
            serve_socket(sh, s).await;
        });
    }
}

async fn refuse(w: &mut tokio::net::tcp::OwnedWriteHalf, errno: NetErrno, msg: &str, t: Duration) {
    let f = Frame {
        seq: 0,
        recv_seq: 0,
        id: 0,
        cmd: Cmd::Greeting,
        flags: FLAG_RESPONSE,
        error: errno,
        payload: truncate_msg(msg),
    };
    let _ = write_frames(w, &[f], t).await;
}

/// The handshake: the mount's rid and its conversation, or why it was refused.
async fn handshake(
    sh: &Shared,
    r: &mut tokio::net::tcp::OwnedReadHalf,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
) -> Result<(u64, MountRef, u64, bool), NetError> {
    let wt = sh.opts.write_timeout;
    let server_nonce = auth::nonce()?;
    let ch = Frame {
        seq: 0,
        recv_seq: 0,
        id: 0,
        cmd: Cmd::Challenge,
        flags: 0,
        error: NetErrno::None,
        payload: Challenge {
            nonce: server_nonce,
        }
        .as_bytes()
        .to_vec(),
    };
    write_frames(w, &[ch], wt).await?;
    let f = read_frame(r).await?;
    if f.cmd != Cmd::Greeting || f.is_response() || f.seq != 0 || f.id != 0 {
        refuse(w, NetErrno::Inval, "expected a greeting", wt).await;
        return Err(NetError::Refused("no greeting".into()));
    }
    let g = Greeting::read_from_bytes(&f.payload).map_err(|_| WireError::BadLength {
        cmd: Cmd::Greeting,
        len: f.payload.len(),
    })?;
    macro_rules! no {
        ($errno:expr, $msg:expr) => {{
            refuse(w, $errno, $msg, wt).await;
            return Err(NetError::Refused($msg.to_string()));
        }};
    }
    if let Some(s) = &sh.secret {
        if !s.verify(true, &server_nonce, &g) {
            no!(NetErrno::Access, "the shared secret does not match")
        }
    }
    if g.flags.get() & !GREETING_FLAGS_KNOWN != 0 {
        no!(NetErrno::Inval, "unknown greeting flags")
    }
    if g.fsid.get() != sh.fsid {
        no!(NetErrno::Inval, "the mount's fsid is not this volume's")
    }
    if g.fmt_vers.get() != sh.fmt_vers {
        no!(
            NetErrno::Inval,
            "the mount's format version is not the volume's"
        )
    }
    let rid = g.rid.get();
    let gen = sh.next_gen.fetch_add(1, Ordering::Relaxed);
    // First contact with this server: a mount new to it, or one that talked to a server
    // before us (or an earlier incarnation of itself); its conversation starts afresh
    // when this socket takes it over. Otherwise it continues exactly once.
    let first_contact = g.server_term.get() != sh.term;
    let mref = if first_contact {
        sh.mount(rid)
    } else {
        let Some(m) = sh.mounts.lock().get(&rid).cloned() else {
            no!(NetErrno::NoLink, "this server holds no state of the mount")
        };
        m
    };
    let mut resp = Greeting {
        fsid: sh.fsid.into(),
        fmt_vers: sh.fmt_vers.into(),
        server_term: sh.term.into(),
        rid: rid.into(),
        flags: 0.into(),
        nonce: g.nonce,
        mac: [0; MAC_LEN],
    };
    if let Some(s) = &sh.secret {
        resp.mac = s.sign(false, &server_nonce, &resp);
    }
    let rf = Frame {
        seq: 0,
        recv_seq: 0,
        id: 0,
        cmd: Cmd::Greeting,
        flags: FLAG_RESPONSE,
        error: NetErrno::None,
        payload: resp.as_bytes().to_vec(),
    };
    write_frames(w, &[rf], wt).await?;
    Ok((rid, mref, gen, first_contact))
}

async fn serve_socket(sh: Arc<Shared>, s: TcpStream) {
    let (mut r, mut w) = s.into_split();
    let hs = tokio::time::timeout(sh.opts.greeting_timeout, handshake(&sh, &mut r, &mut w)).await;
    let (rid, mref, gen, first_contact) = match hs {
        Ok(Ok(v)) => v,
        _ => {
            sh.counters.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    sh.counters.greeted.fetch_add(1, Ordering::Relaxed);
    let notify = Arc::new(Notify::new());
    // One step under the mount's lock: the old socket's tasks, which check the
    // generation under this lock, take nothing in from now on.
    let mut m = mref.lock();
    if let Some(old) = m.task.take() {
        old.abort();
    }
    m.gen = gen;
    m.notify = notify.clone();
    if first_contact {
        m.conn.reset_peer();
    } else {
        m.conn.reconnected();
    }
    let sh2 = sh.clone();
    let m2 = mref.clone();
    let n2 = notify.clone();
    let task = tokio::spawn(async move {
        let res = tokio::select! {
            r = reader(&sh2, rid, &m2, gen, &mut r) => r,
            r = writer(&sh2, &m2, gen, &n2, &mut w) => r,
        };
        if !matches!(res, Ok(()) | Err(NetError::Closed)) {
            sh2.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    });
    m.task = Some(task.abort_handle());
    notify.notify_one();
}

async fn writer(
    sh: &Shared,
    m: &MountRef,
    gen: u64,
    notify: &Notify,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
) -> Result<(), NetError> {
    write_loop(w, notify, sh.opts.write_timeout, || {
        let mut m = m.lock();
        (m.gen == gen).then(|| m.conn.take_outgoing())
    })
    .await
}

async fn reader(
    sh: &Arc<Shared>,
    rid: u64,
    m: &MountRef,
    gen: u64,
    r: &mut tokio::net::tcp::OwnedReadHalf,
) -> Result<(), NetError> {
    let slots = Arc::new(Semaphore::new(MAX_HANDLERS));
    loop {
        let f = read_frame(r).await?;
        let d = {
            let mut g = m.lock();
            if g.gen != gen {
                return Ok(());
            }
            let d = g.conn.receive(f)?;
            if g.conn.kept() > MAX_KEPT {
                return Err(NetError::Overrun);
            }
            d
        };
        match d {
            Delivery::Duplicate => {
                sh.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            Delivery::Request { token, payload } => {
                let req = match decode_request(token.cmd, &payload) {
                    Ok(req) => req,
                    Err(e) => {
                        // Answered (the answer waits for the mount's next socket, so a
                        // resend is not left hanging) and the socket closed.
                        let mut g = m.lock();
                        g.conn
                            .respond(token, NetErrno::Inval, truncate_msg(&e.to_string()));
                        return Err(e.into());
                    }
                };
                let permit = slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| NetError::Timeout("closed"))?;
                sh.counters.requests.fetch_add(1, Ordering::Relaxed);
                let (sh, m) = (sh.clone(), m.clone());
                tokio::task::spawn_blocking(move || {
                    let (errno, payload) = handle(&sh.server, rid, token, req);
                    let mut g = m.lock();
                    g.conn.respond(token, errno, payload);
                    g.notify.notify_one();
                    drop(permit);
                });
            }
            Delivery::Response {
                cmd,
                error,
                payload,
                ..
            } => {
                // A reply that does not decode is a failure of the mount (the server is
                // not left waiting for it), and the socket is closed.
                let decoded = decode_client_reply(cmd, error, &payload);
                let reply = decoded.clone().unwrap_or(ClientReply::Failed);
                sh.counters.replies.fetch_add(1, Ordering::Relaxed);
                let sh = sh.clone();
                tokio::task::spawn_blocking(move || sh.server.client_reply(rid, reply));
                decoded?;
            }
        }
    }
}

/// The rid a request names, if it names one.
fn named_rid(req: &Request) -> Option<u64> {
    match req {
        Request::Greeting { rid, .. }
        | Request::GetLogTrees { rid }
        | Request::GetLogMerge { rid }
        | Request::GetSrchCompact { rid }
        | Request::AllocInodes { rid, .. }
        | Request::Farewell { rid } => Some(*rid),
        Request::CommitLogTrees(lt) => Some(lt.rid.get()),
        _ => None,
    }
}

/// Run a request on the server: the response's error and payload.
fn handle(server: &Server, rid: u64, token: ReqToken, req: Request) -> (NetErrno, Vec<u8>) {
    if named_rid(&req).is_some_and(|r| r != rid) {
        return (
            NetErrno::Inval,
            truncate_msg("the request names another mount than the connection's"),
        );
    }
    match server.handle_from(Some(rid), req) {
        Ok(resp) => match encode_response(token.cmd, &resp) {
            Ok(p) => (NetErrno::None, p),
            Err(e) => (NetErrno::Inval, truncate_msg(&e.to_string())),
        },
        Err(e) => encode_error(&TransportError::from(e)),
    }
}
