//! The mount side: [`NetClient`], a [`Transport`] over TCP.
//!
//! A background task connects (with a time limit, again every 100 ms until the client is
//! dropped), greets, and then carries the client's [`Conn`]: callers of
//! [`Transport::call`] queue a request and block on their own channel, never on the
//! runtime, so any number of threads may call at once. A reconnect to the same server
//! (same term) continues the conversation exactly once; to a new server the unanswered
//! requests are sent again (at least once: server handlers are idempotent).
//!
//! Server requests go to the registered [`ClientHandler`] on tokio's blocking threads;
//! lock invalidations of one key run one at a time in the order they arrived. Requests of
//! a server that has been replaced (a new term) and that have not started are skipped.

use crate::auth::{self, Secret};
use crate::conn::{Conn, Delivery, ReqToken};
use crate::tcp::{read_frame, tune, write_frames, write_loop, NetError};
use crate::wire::*;
use parking_lot::Mutex;
use scoutfs_core::format::{Key, FORMAT_VERSION};
use scoutfs_core::transport::{
    ClientHandler, ClientReply, RemoteErrorKind, Request, Response, ServerRequest, Transport,
    TransportError,
};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use zerocopy::{FromBytes, IntoBytes};

/// How a [`NetClient`] connects.
#[derive(Clone, Debug)]
pub struct NetClientOptions {
    /// The mount's id. `None`: the id the mount greets with (`Request::Greeting`, which
    /// `Client::mount` and `Fs::mount` send first); the client connects once it is known,
    /// and other requests before it are refused. A greeting must name this id.
    pub rid: Option<u64>,
    /// The volume's fsid (the server refuses another volume's mounts).
    pub fsid: u64,
    /// A file holding the shared secret; with one, the client also refuses a server that
    /// cannot prove it holds the same secret.
    pub secret: Option<PathBuf>,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// Pause between connection attempts.
    pub retry_interval: Duration,
    /// How long a write may wait for the server to read.
    pub write_timeout: Duration,
    /// TCP keepalive idle time.
    pub keepalive: Duration,
}

impl NetClientOptions {
    /// The defaults for a mount of volume `fsid` whose id is the one it greets with.
    pub fn new(fsid: u64) -> NetClientOptions {
        NetClientOptions {
            rid: None,
            fsid,
            secret: None,
            connect_timeout: Duration::from_secs(1),
            retry_interval: Duration::from_millis(100),
            write_timeout: Duration::from_secs(30),
            keepalive: Duration::from_secs(24),
        }
    }
}

type Waiter = mpsc::SyncSender<Result<Response, TransportError>>;

#[derive(Debug)]
struct State {
    conn: Conn,
    /// Generation of the socket that may write.
    gen: u64,
    notify: Arc<Notify>,
    /// The term of the server last greeted (0: none yet).
    term: u64,
    waiters: HashMap<u64, Waiter>,
    /// Why the client stopped for good (refused, evicted, dropped).
    failed: Option<(RemoteErrorKind, String)>,
    /// Server requests that arrived before a handler was registered.
    held: Vec<(ReqToken, ServerRequest)>,
    /// Lock invalidations waiting behind one of the same key.
    lock_queues: HashMap<Key, VecDeque<(ReqToken, ServerRequest)>>,
    /// Sockets greeted so far.
    connects: u64,
    /// Sockets whose handshake or traffic failed.
    failures: u64,
    /// Set to close the current socket (it reconnects).
    kick: Arc<Notify>,
    /// The mount's id, once known.
    rid: Option<u64>,
    /// Where server requests go.
    handler: Option<Weak<dyn ClientHandler>>,
}

struct Shared {
    opts: NetClientOptions,
    addr: SocketAddr,
    secret: Option<Secret>,
    st: Mutex<State>,
    /// Wakes the connecting task once the rid is known.
    rid_known: Notify,
    rt: tokio::runtime::Handle,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("addr", &self.addr)
            .field("rid", &self.st.lock().rid)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn fail_all(&self, kind: RemoteErrorKind, msg: String) {
        let mut st = self.st.lock();
        st.failed = Some((kind, msg));
        st.conn.cancel_all();
        for (_, w) in st.waiters.drain() {
            let _ = w.try_send(Err(TransportError::Disconnected));
        }
    }
}

/// Counts of a client's sockets, for tests and statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Handshakes that succeeded.
    pub connects: u64,
    /// Sockets that failed or were closed.
    pub failures: u64,
    /// The term of the server last greeted.
    pub term: u64,
}

/// A [`Transport`] to a server over TCP (see the module doc).
#[derive(Debug)]
pub struct NetClient {
    shared: Arc<Shared>,
    rt: Option<tokio::runtime::Runtime>,
}

impl NetClient {
    /// A client of the server at `addr`; it connects in the background and keeps
    /// reconnecting until dropped. Fails only if the secret file cannot be read or the
    /// runtime cannot start.
    pub fn connect(addr: SocketAddr, opts: NetClientOptions) -> std::io::Result<NetClient> {
        let secret = match &opts.secret {
            Some(p) => Some(Secret::from_file(p).map_err(std::io::Error::other)?),
            None => None,
        };
        let rid = opts.rid;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("scoutfs-net-client")
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            opts,
            addr,
            secret,
            st: Mutex::new(State {
                conn: Conn::new(),
                gen: 0,
                notify: Arc::new(Notify::new()),
                term: 0,
                waiters: HashMap::new(),
                failed: None,
                held: Vec::new(),
                lock_queues: HashMap::new(),
                connects: 0,
                failures: 0,
                kick: Arc::new(Notify::new()),
                handler: None,
                rid,
            }),
            rid_known: Notify::new(),
            rt: rt.handle().clone(),
        });
        rt.spawn(connect_loop(shared.clone()));
        Ok(NetClient {
            shared,
            rt: Some(rt),
        })
    }

    /// Close the current socket; the client connects again and continues (for tests
    /// and operators).
    pub fn reconnect(&self) {
        self.shared.st.lock().kick.notify_one();
    }

    /// Counts of its sockets.
    pub fn stats(&self) -> ClientStats {
        let st = self.shared.st.lock();
        ClientStats {
            connects: st.connects,
            failures: st.failures,
            term: st.term,
        }
    }
}

impl Drop for NetClient {
    fn drop(&mut self) {
        self.shared
            .fail_all(RemoteErrorKind::Io, "the client was dropped".into());
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Transport for NetClient {
    fn call(&self, req: Request) -> Result<Response, TransportError> {
        let protocol = |msg: &str| TransportError::Remote {
            kind: RemoteErrorKind::Protocol,
            msg: msg.into(),
        };
        let (cmd, payload) = encode_request(&req).map_err(|e| protocol(&e.to_string()))?;
        let (tx, rx) = mpsc::sync_channel(1);
        {
            let mut st = self.shared.st.lock();
            if let Some((kind, msg)) = &st.failed {
                return Err(TransportError::Remote {
                    kind: *kind,
                    msg: msg.clone(),
                });
            }
            match (&req, st.rid) {
                (Request::Greeting { rid, .. }, None) => {
                    st.rid = Some(*rid);
                    self.shared.rid_known.notify_one();
                }
                (Request::Greeting { rid, .. }, Some(r)) if *rid != r => {
                    return Err(protocol("the mount's rid is not the transport's"));
                }
                (_, None) => {
                    return Err(protocol("the mount has not greeted: its id is not known"))
                }
                _ => {}
            }
            let id = st.conn.request(cmd, payload);
            st.waiters.insert(id, tx);
            st.notify.notify_one();
        }
        rx.recv().unwrap_or(Err(TransportError::Disconnected))
    }

    fn set_handler(&self, handler: Weak<dyn ClientHandler>) {
        let held = {
            let mut st = self.shared.st.lock();
            st.handler = Some(handler);
            std::mem::take(&mut st.held)
        };
        for (token, req) in held {
            dispatch(&self.shared, token, req);
        }
    }
}

/// Whether a handshake failure is for good (the server will never take us).
fn fatal(e: &NetError) -> bool {
    matches!(e, NetError::Refused(_))
}

async fn connect_loop(sh: Arc<Shared>) {
    loop {
        let rid = {
            let st = sh.st.lock();
            if st.failed.is_some() {
                return;
            }
            st.rid
        };
        if rid.is_none() {
            sh.rid_known.notified().await;
            continue;
        }
        let r = tokio::time::timeout(sh.opts.connect_timeout, TcpStream::connect(sh.addr)).await;
        if let Ok(Ok(s)) = r {
            tune(&s, sh.opts.keepalive);
            match run_socket(&sh, s).await {
                Err(e) if fatal(&e) => {
                    sh.fail_all(RemoteErrorKind::Protocol, e.to_string());
                    return;
                }
                // Closed on purpose ([`NetClient::reconnect`]): connect again at once.
                Ok(true) => continue,
                _ => sh.st.lock().failures += 1,
            }
        }
        tokio::time::sleep(sh.opts.retry_interval).await;
    }
}

async fn handshake(
    sh: &Shared,
    r: &mut tokio::net::tcp::OwnedReadHalf,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    known_term: u64,
    rid: u64,
) -> Result<u64, NetError> {
    let f = read_frame(r).await?;
    if f.cmd != Cmd::Challenge || f.is_response() {
        return Err(NetError::Wire(WireError::WrongCmd(f.cmd)));
    }
    let ch = Challenge::read_from_bytes(&f.payload).map_err(|_| WireError::BadLength {
        cmd: Cmd::Challenge,
        len: f.payload.len(),
    })?;
    let mut g = Greeting {
        fsid: sh.opts.fsid.into(),
        fmt_vers: FORMAT_VERSION.into(),
        server_term: known_term.into(),
        rid: rid.into(),
        flags: 0.into(),
        nonce: auth::nonce()?,
        mac: [0; MAC_LEN],
    };
    if let Some(s) = &sh.secret {
        g.mac = s.sign(true, &ch.nonce, &g);
    }
    let gf = Frame {
        seq: 0,
        recv_seq: 0,
        id: 0,
        cmd: Cmd::Greeting,
        flags: 0,
        error: NetErrno::None,
        payload: g.as_bytes().to_vec(),
    };
    write_frames(w, &[gf], sh.opts.write_timeout).await?;
    let f = read_frame(r).await?;
    if f.cmd != Cmd::Greeting || !f.is_response() {
        return Err(NetError::Wire(WireError::WrongCmd(f.cmd)));
    }
    if f.error != NetErrno::None {
        let e = decode_error(f.error, &f.payload)?;
        return Err(NetError::Refused(format!("{:?}: {e}", f.error)));
    }
    let resp = Greeting::read_from_bytes(&f.payload).map_err(|_| WireError::BadLength {
        cmd: Cmd::Greeting,
        len: f.payload.len(),
    })?;
    if let Some(s) = &sh.secret {
        if resp.nonce != g.nonce || !s.verify(false, &ch.nonce, &resp) {
            return Err(NetError::Refused(
                "the server does not hold the shared secret".into(),
            ));
        }
    }
    if resp.fsid.get() != sh.opts.fsid || resp.fmt_vers.get() != FORMAT_VERSION {
        return Err(NetError::Refused(
            "the server serves another volume or format version".into(),
        ));
    }
    if resp.rid.get() != rid || resp.server_term.get() == 0 {
        return Err(NetError::Wire(WireError::BadValue(
            "a bad greeting response",
        )));
    }
    Ok(resp.server_term.get())
}

/// Greet on `s` and carry the conversation until the socket fails (`Ok(true)`: it was
/// closed on purpose).
async fn run_socket(sh: &Arc<Shared>, s: TcpStream) -> Result<bool, NetError> {
    let (mut r, mut w) = s.into_split();
    let (known, rid) = {
        let st = sh.st.lock();
        (st.term, st.rid.unwrap_or_default())
    };
    let term = tokio::time::timeout(
        sh.opts.connect_timeout.max(Duration::from_secs(5)),
        handshake(sh, &mut r, &mut w, known, rid),
    )
    .await
    .map_err(|_| NetError::Timeout("the server did not greet"))??;
    let notify = Arc::new(Notify::new());
    let kick = Arc::new(Notify::new());
    let gen = {
        let mut st = sh.st.lock();
        if st.failed.is_some() {
            return Ok(false);
        }
        if known != 0 && term != known {
            // A new server: it knows nothing of our seqs or of its predecessor's
            // requests; ours are sent again.
            // Requests of the old server still queued or held are skipped when their
            // turn comes (their epoch is gone); the per-key order still holds.
            st.conn.reset_peer();
            let epoch = st.conn.epoch();
            st.held.retain(|(t, _)| t.epoch == epoch);
        } else {
            st.conn.reconnected();
        }
        st.term = term;
        st.gen += 1;
        st.connects += 1;
        st.notify = notify.clone();
        st.kick = kick.clone();
        notify.notify_one();
        st.gen
    };
    tokio::select! {
        r = reader(sh, gen, &mut r) => r.map(|()| false),
        r = writer(sh, gen, &notify, &mut w) => r.map(|()| false),
        _ = kick.notified() => Ok(true),
    }
}

async fn writer(
    sh: &Shared,
    gen: u64,
    notify: &Notify,
    w: &mut tokio::net::tcp::OwnedWriteHalf,
) -> Result<(), NetError> {
    write_loop(w, notify, sh.opts.write_timeout, || {
        let mut st = sh.st.lock();
        (st.gen == gen).then(|| st.conn.take_outgoing())
    })
    .await
}

async fn reader(
    sh: &Arc<Shared>,
    gen: u64,
    r: &mut tokio::net::tcp::OwnedReadHalf,
) -> Result<(), NetError> {
    loop {
        let f = read_frame(r).await?;
        let mut st = sh.st.lock();
        if st.gen != gen {
            return Ok(());
        }
        match st.conn.receive(f)? {
            Delivery::Duplicate => {}
            Delivery::Response {
                id,
                cmd,
                error,
                payload,
            } => {
                let res = if error != NetErrno::None {
                    decode_error(error, &payload).map(Err)
                } else {
                    decode_response(cmd, &payload).map(Ok)
                };
                let w = st.waiters.remove(&id);
                match res {
                    Ok(res) => {
                        if let Some(w) = w {
                            let _ = w.try_send(res);
                        }
                    }
                    Err(e) => {
                        if let Some(w) = w {
                            let _ = w.try_send(Err(TransportError::Unexpected));
                        }
                        return Err(e.into());
                    }
                }
            }
            Delivery::Request { token, payload } => {
                let req = match decode_server_request(token.cmd, &payload) {
                    Ok(req) => req,
                    Err(e) => {
                        // Failed (so the server does not wait for it) and the socket closed.
                        st.conn
                            .respond(token, NetErrno::Io, truncate_msg(&e.to_string()));
                        return Err(e.into());
                    }
                };
                drop(st);
                dispatch(sh, token, req);
            }
        }
    }
}

/// Hand a server request to the handler (or hold it until one is registered), keeping
/// lock invalidations of one key in order.
fn dispatch(sh: &Arc<Shared>, token: ReqToken, req: ServerRequest) {
    {
        let mut st = sh.st.lock();
        if st.handler.is_none() {
            st.held.push((token, req));
            return;
        }
        if let ServerRequest::LockInvalidate(l) = &req {
            if let Some(q) = st.lock_queues.get_mut(&l.key) {
                q.push_back((token, req));
                return;
            }
            st.lock_queues.insert(l.key, VecDeque::new());
        }
    }
    let sh2 = sh.clone();
    sh.rt.spawn_blocking(move || run_handler(sh2, token, req));
}

fn run_handler(sh: Arc<Shared>, mut token: ReqToken, mut req: ServerRequest) {
    // Lock invalidations of this key queued behind this one run next, on this thread.
    loop {
        let key = match &req {
            ServerRequest::LockInvalidate(l) => Some(l.key),
            _ => None,
        };
        let handler = {
            let st = sh.st.lock();
            // A request of a server that has since been replaced is not carried out.
            (token.epoch == st.conn.epoch()).then(|| st.handler.as_ref().and_then(|h| h.upgrade()))
        };
        let reply = handler.map(|h| match h {
            Some(h) => h.handle(req),
            None => ClientReply::Failed,
        });
        let mut st = sh.st.lock();
        if let Some(reply) = reply {
            let (errno, payload) = encode_client_reply(token.cmd, &reply).unwrap_or_else(|_| {
                (
                    NetErrno::Io,
                    truncate_msg("the mount's reply has no wire form"),
                )
            });
            st.conn.respond(token, errno, payload);
            st.notify.notify_one();
        }
        let Some(k) = key else { return };
        match st.lock_queues.get_mut(&k).and_then(|q| q.pop_front()) {
            Some((t, r)) => (token, req) = (t, r),
            None => {
                st.lock_queues.remove(&k);
                return;
            }
        }
    }
}
