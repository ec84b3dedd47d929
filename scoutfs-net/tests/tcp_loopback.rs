#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Mounts of one volume over TCP on the loopback: commits through the network, broken
//! sockets mid-traffic (exactly once to the same server), a server restart (the
//! outstanding request is sent again to the new server), and bad and hostile peers
//! (each loses its socket; the server keeps serving and the volume checks clean).

#[path = "../../scoutfs-core/tests/common/mod.rs"]
mod common;

use common::{assert_clean, volume_bytes, Rng};
use scoutfs_core::block::BlockCache;
use scoutfs_core::client::Client;
use scoutfs_core::device::BlockDevice;
use scoutfs_core::format::*;
use scoutfs_core::server::{Server, ServerCore, ServerOptions};
use scoutfs_core::transport::{
    ClientHandler, ClientReply, LockMode, NetLock, Request, Response, ServerRequest, Transport,
    TransportError,
};
use scoutfs_core::volume::{geometry, read_super};
use scoutfs_net::wire::*;
use scoutfs_net::{NetClient, NetClientOptions, NetServer, NetServerOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use zerocopy::{FromBytes, IntoBytes};

const FSID: u64 = 0x5ca1e;

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn serve(
    meta: &Arc<dyn BlockDevice>,
    data: &Arc<dyn BlockDevice>,
    opts: NetServerOptions,
) -> (Arc<Server>, NetServer) {
    let core = ServerCore::open(meta.clone(), data.clone(), ServerOptions::default()).unwrap();
    let server = Arc::new(Server::new(core));
    let net = NetServer::start(server.clone(), loopback(), opts).unwrap();
    (server, net)
}

/// Counts the calls a mount makes (to compare with the requests the server handled).
#[derive(Debug)]
struct Counting {
    inner: NetClient,
    calls: AtomicU64,
}

impl Transport for Counting {
    fn call(&self, req: Request) -> Result<Response, TransportError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.call(req)
    }
}

fn client_opts(rid: u64) -> NetClientOptions {
    NetClientOptions {
        rid: Some(rid),
        ..NetClientOptions::new(FSID)
    }
}

/// A mount over TCP with its own block cache, as a mount in another process has.
fn mount(
    meta: &Arc<dyn BlockDevice>,
    addr: SocketAddr,
    opts: NetClientOptions,
) -> (Arc<Counting>, Client) {
    let rid = opts.rid.unwrap_or(0x7e57);
    let t = Arc::new(Counting {
        inner: NetClient::connect(addr, opts).unwrap(),
        calls: AtomicU64::new(0),
    });
    let sb = read_super(&**meta, "meta").unwrap();
    let cache = Arc::new(BlockCache::new(meta.clone(), geometry(&sb), 16 << 20));
    let c = Client::mount(t.clone(), meta.clone(), cache, rid, rid ^ 7).unwrap();
    (t, c)
}

fn key(rid: u64, i: u64) -> Key {
    Key::new(zone::FS, rid, item_type::XATTR, i, 0, 0)
}

/// Insert `n` items from `from` on, committing every `every`.
fn write(c: &mut Client, from: u64, n: u64, every: u64) {
    let rid = c.rid();
    for i in from..from + n {
        c.insert(&key(rid, i), &i.to_le_bytes()).unwrap();
        if (i + 1) % every == 0 {
            c.commit().unwrap();
        }
    }
    c.commit().unwrap();
}

fn assert_items(c: &Client, n: u64) {
    let rid = c.rid();
    for i in 0..n {
        let it = c
            .get(&key(rid, i))
            .unwrap()
            .unwrap_or_else(|| panic!("{rid}: item {i} is missing"));
        assert_eq!(it.val, i.to_le_bytes());
    }
}

#[test]
fn mounts_commit_over_tcp() {
    let (meta, data) = volume_bytes(16 << 20, 32 << 20, 4096);
    let (_server, net) = serve(&meta, &data, NetServerOptions::default());
    let addr = net.local_addr();
    let handles: Vec<_> = (1..=3u64)
        .map(|rid| {
            let meta = meta.clone();
            std::thread::spawn(move || {
                // The transport takes the mount's id from its greeting.
                let t = Arc::new(Counting {
                    inner: NetClient::connect(addr, NetClientOptions::new(FSID)).unwrap(),
                    calls: AtomicU64::new(0),
                });
                assert!(
                    t.inner.call(Request::Statfs).is_err(),
                    "a call before the greeting"
                );
                let sb = read_super(&*meta, "meta").unwrap();
                let cache = Arc::new(BlockCache::new(meta.clone(), geometry(&sb), 16 << 20));
                let mut c = Client::mount(t.clone(), meta.clone(), cache, 100 + rid, rid).unwrap();
                assert!(t
                    .inner
                    .call(Request::Greeting {
                        rid: 7,
                        reconnect: false
                    })
                    .is_err());
                write(&mut c, 0, 300, 60);
                assert_items(&c, 300);
                c.unmount().unwrap();
                t.calls.load(Ordering::SeqCst)
            })
        })
        .collect();
    let calls: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    // No socket broke: the server handled each call once (the refused ones, made
    // around the counter, never left the mount).
    assert_eq!(net.stats().requests, calls);
    assert_eq!(net.stats().greeted, 3);
    drop(net);
    assert_clean(&meta, &data, "three mounts over TCP");
}

#[test]
fn broken_sockets_mid_traffic_continue_exactly_once() {
    let (meta, data) = volume_bytes(16 << 20, 32 << 20, 4096);
    let (_server, net) = serve(&meta, &data, NetServerOptions::default());
    let net = Arc::new(net);
    let addr = net.local_addr();
    let mounts: Vec<_> = (1..=2u64)
        .map(|r| mount(&meta, addr, client_opts(200 + r)))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    // Break sockets from both ends while the mounts commit.
    let breaker = {
        let (stop, net) = (stop.clone(), net.clone());
        let ts: Vec<_> = mounts.iter().map(|(t, _)| t.clone()).collect();
        std::thread::spawn(move || {
            let mut rng = Rng(11);
            let mut breaks = 0;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(1 + rng.below(6)));
                match rng.below(3) {
                    0 => net.drop_connections(),
                    n => ts[n as usize - 1].inner.reconnect(),
                }
                breaks += 1;
            }
            breaks
        })
    };
    let workers: Vec<_> = mounts
        .into_iter()
        .map(|(t, mut c)| {
            std::thread::spawn(move || {
                write(&mut c, 0, 600, 4);
                (t, c)
            })
        })
        .collect();
    let mounts: Vec<_> = workers.into_iter().map(|h| h.join().unwrap()).collect();
    stop.store(true, Ordering::SeqCst);
    let breaks = breaker.join().unwrap();
    let reconnects: u64 = mounts.iter().map(|(t, _)| t.inner.stats().connects).sum();
    eprintln!(
        "net: {breaks} breaks, {reconnects} connects, {:?}",
        net.stats()
    );
    assert!(
        reconnects > 4,
        "the sockets did not break ({reconnects} connects)"
    );
    let calls: u64 = mounts
        .iter()
        .map(|(t, _)| t.calls.load(Ordering::SeqCst))
        .sum();
    // Exactly once: every call handled once by the server, however often sockets broke.
    assert_eq!(net.stats().requests, calls);
    for (t, c) in mounts {
        assert_items(&c, 600);
        c.unmount().unwrap();
        assert_eq!(t.inner.stats().term, net.term());
    }
    drop(net);
    assert_clean(&meta, &data, "mounts whose sockets broke");
}

/// A TCP proxy that can hold back the server's bytes and cut every connection.
struct Proxy {
    addr: SocketAddr,
    backend: Arc<Mutex<SocketAddr>>,
    hold: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn new(backend: SocketAddr) -> Proxy {
        let l = TcpListener::bind(loopback()).unwrap();
        let p = Proxy {
            addr: l.local_addr().unwrap(),
            backend: Arc::new(Mutex::new(backend)),
            hold: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        let (backend, hold, conns) = (p.backend.clone(), p.hold.clone(), p.conns.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { return };
                let b = *backend.lock().unwrap();
                let Ok(s) = TcpStream::connect(b) else {
                    continue;
                };
                conns
                    .lock()
                    .unwrap()
                    .extend([c.try_clone().unwrap(), s.try_clone().unwrap()]);
                pump(c.try_clone().unwrap(), s.try_clone().unwrap(), None);
                pump(s, c, Some(hold.clone()));
            }
        });
        p
    }

    fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, hold: Option<Arc<AtomicBool>>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Held bytes are delivered late or, if the connection is cut, never.
            while hold.as_ref().is_some_and(|h| h.load(Ordering::SeqCst)) {
                std::thread::sleep(Duration::from_millis(5));
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

fn bind_again(server: Arc<Server>, addr: SocketAddr) -> NetServer {
    let t0 = Instant::now();
    loop {
        match NetServer::start(server.clone(), addr, NetServerOptions::default()) {
            Ok(n) => return n,
            Err(e) if t0.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("binding {addr} again: {e}"),
        }
    }
}

#[test]
fn server_restart_resends_the_outstanding_request() {
    let (meta, data) = volume_bytes(16 << 20, 32 << 20, 4096);
    let (server, net) = serve(&meta, &data, NetServerOptions::default());
    let backend = net.local_addr();
    let proxy = Proxy::new(backend);
    let (t, mut c) = mount(&meta, proxy.addr, client_opts(301));
    let (t2, mut c2) = mount(&meta, backend, client_opts(302));
    write(&mut c, 0, 100, 50);
    write(&mut c2, 0, 100, 50);
    let first_term = net.term();
    assert_eq!(t.inner.stats().term, first_term);

    // The server handles the commit, but its answer never reaches the mount: the server
    // stops with the mount's request outstanding.
    for i in 100..200 {
        c.insert(&key(301, i), &i.to_le_bytes()).unwrap();
    }
    proxy.hold.store(true, Ordering::SeqCst);
    let commits = server.commits();
    let committer = std::thread::spawn(move || {
        c.commit().unwrap();
        c
    });
    // The server committed the mount's transaction (and opened its next one)...
    wait_for("the server's commit", || server.commits() > commits);
    // ...and stops, its answer held; nothing of it runs any more once its last reference
    // is gone (a handler still running holds one).
    net.shutdown();
    proxy.cut();
    proxy.hold.store(false, Ordering::SeqCst);
    wait_for("the old server to stop", || Arc::strong_count(&server) == 1);
    drop(server);

    // A new server (another term) on the same address.
    let core = ServerCore::open(meta.clone(), data.clone(), ServerOptions::default()).unwrap();
    let server = Arc::new(Server::new(core));
    let net = bind_again(server.clone(), backend);
    assert_ne!(net.term(), first_term);
    let mut c = committer.join().unwrap();
    assert_eq!(
        t.inner.stats().term,
        net.term(),
        "the mount did not move to the new server"
    );
    assert!(
        net.stats().requests >= 1,
        "the outstanding commit was not sent again"
    );
    // Both mounts go on with the new server.
    write(&mut c, 200, 100, 50);
    write(&mut c2, 100, 100, 50);
    assert_items(&c, 300);
    assert_items(&c2, 200);
    assert_eq!(t2.inner.stats().term, net.term());
    c.unmount().unwrap();
    c2.unmount().unwrap();
    drop(net);
    assert_clean(&meta, &data, "after a server restart");
}

// ---------------------------------------------------------------------------------------
// Bad and hostile peers.

fn frame(seq: u64, id: u64, cmd: Cmd, flags: u8, payload: Vec<u8>) -> Vec<u8> {
    Frame {
        seq,
        recv_seq: 0,
        id,
        cmd,
        flags,
        error: NetErrno::None,
        payload,
    }
    .encode()
}

fn read_frame(s: &mut TcpStream) -> std::io::Result<Frame> {
    let mut h = [0u8; HEADER_SIZE];
    s.read_exact(&mut h)?;
    let hd = Header::read_from_bytes(&h).unwrap();
    let mut p = vec![0u8; hd.data_len.get() as usize];
    s.read_exact(&mut p)?;
    let mut all = h.to_vec();
    all.extend(p);
    decode_frame(&all)
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .map(|(f, _)| f)
        .ok_or_else(|| std::io::Error::other("short"))
}

/// A raw socket that has greeted an open server with `g`: the server's answer.
fn raw_greet(addr: SocketAddr, g: Greeting) -> (TcpStream, Frame) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ch = read_frame(&mut s).unwrap();
    assert_eq!(ch.cmd, Cmd::Challenge);
    s.write_all(&frame(0, 0, Cmd::Greeting, 0, g.as_bytes().to_vec()))
        .unwrap();
    let resp = read_frame(&mut s).unwrap();
    (s, resp)
}

fn good_greeting(rid: u64) -> Greeting {
    Greeting {
        fsid: FSID.into(),
        fmt_vers: FORMAT_VERSION.into(),
        rid: rid.into(),
        ..Default::default()
    }
}

/// The server closes `s`: a read sees the end (or a reset) within the time limit.
#[track_caller]
fn assert_closed(s: &mut TcpStream, what: &str) {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("{what}: the server did not close the socket")
            }
            Err(_) => return,
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what}: the server keeps talking"
        );
    }
}

#[test]
fn hostile_peers_lose_their_socket_and_nothing_else() {
    let (meta, data) = volume_bytes(16 << 20, 32 << 20, 4096);
    let opts = NetServerOptions {
        greeting_timeout: Duration::from_millis(300),
        write_timeout: Duration::from_millis(500),
        ..NetServerOptions::default()
    };
    let (_server, net) = serve(&meta, &data, opts);
    let addr = net.local_addr();
    // A good mount works throughout.
    let (_t, mut good) = mount(&meta, addr, client_opts(401));
    let mut written = 0;
    let mut work = |good: &mut Client| {
        write(good, written, 20, 20);
        written += 20;
    };
    work(&mut good);

    // Wrong fsid and wrong format version: refused with an error, then closed.
    for (g, what) in [
        (
            Greeting {
                fsid: (FSID + 1).into(),
                ..good_greeting(402)
            },
            "wrong fsid",
        ),
        (
            Greeting {
                fmt_vers: 99.into(),
                ..good_greeting(402)
            },
            "wrong format version",
        ),
        (
            Greeting {
                flags: 4.into(),
                ..good_greeting(402)
            },
            "unknown greeting flags",
        ),
        (
            Greeting {
                server_term: (net.term()).into(),
                ..good_greeting(499)
            },
            "a reconnect the server has no state of",
        ),
    ] {
        let (mut s, resp) = raw_greet(addr, g);
        assert!(resp.is_response(), "{what}");
        assert_ne!(resp.error, NetErrno::None, "{what}: accepted");
        assert_closed(&mut s, what);
        work(&mut good);
    }

    // After a good handshake, each bad frame closes the socket.
    let frames: Vec<(&str, Vec<u8>)> = vec![
        (
            "garbage",
            b"this is not a scoutfs frame at all, not even close!!".to_vec(),
        ),
        ("unknown cmd", {
            let mut b = frame(1, 1, Cmd::GetRoots, 0, vec![]);
            b[26] = 77;
            b
        }),
        ("oversize data_len", {
            let mut b = frame(1, 1, Cmd::GetRoots, 0, vec![]);
            b[24..26].copy_from_slice(&60000u16.to_le_bytes());
            b
        }),
        (
            "malformed payload",
            frame(1, 1, Cmd::GetLogTrees, 0, vec![1, 2, 3]),
        ),
        (
            "a response to nothing",
            frame(1, 5, Cmd::SyncLogTrees, FLAG_RESPONSE, vec![]),
        ),
        (
            "a second greeting",
            frame(
                0,
                0,
                Cmd::Greeting,
                0,
                good_greeting(403).as_bytes().to_vec(),
            ),
        ),
        ("a zero seq", frame(0, 1, Cmd::GetRoots, 0, vec![])),
        (
            "a server request to the server",
            frame(1, 1, Cmd::SyncLogTrees, 0, vec![]),
        ),
    ];
    for (what, bytes) in frames {
        let (mut s, resp) = raw_greet(addr, good_greeting(403));
        assert_eq!(resp.error, NetErrno::None, "{what}: the handshake failed");
        s.write_all(&bytes).unwrap();
        assert_closed(&mut s, what);
        work(&mut good);
    }

    // A request naming another mount is refused, and the socket stays.
    let (mut s, _) = raw_greet(addr, good_greeting(404));
    s.write_all(&frame(
        1,
        1,
        Cmd::AllocInodes,
        0,
        [401u64.to_le_bytes(), 5u64.to_le_bytes()].concat(),
    ))
    .unwrap();
    let r = read_frame(&mut s).unwrap();
    assert_eq!((r.id, r.error), (1, NetErrno::Inval));
    drop(s);

    // Garbage instead of a greeting, and silence: refused, closed in time.
    let mut s = TcpStream::connect(addr).unwrap();
    let _ = read_frame(&mut s).unwrap();
    s.write_all(&[0xff; 64]).unwrap();
    assert_closed(&mut s, "garbage greeting");
    let mut s = TcpStream::connect(addr).unwrap();
    let t0 = Instant::now();
    assert_closed(&mut s, "silent peer");
    assert!(t0.elapsed() < Duration::from_secs(5));
    work(&mut good);

    // A peer that stops reading: it asks and asks and never reads the answers.
    let dropped = net.stats().dropped;
    let (mut s, _) = raw_greet(addr, good_greeting(405));
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sent = 0u64;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        let b: Vec<u8> = (0..256u64)
            .flat_map(|i| frame(1 + sent + i, 1 + sent + i, Cmd::GetRoots, 0, vec![]))
            .collect();
        if s.write_all(&b).is_err() {
            break;
        }
        sent += 256;
        if net.stats().dropped > dropped {
            break;
        }
    }
    let t0 = Instant::now();
    while net.stats().dropped == dropped {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the deaf peer was not dropped: {:?}",
            net.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    work(&mut good);
    let st = net.stats();
    eprintln!("net: hostile peers: {st:?}, the deaf peer was sent {sent} requests");
    assert!(st.refused >= 6, "{st:?}");
    good.unmount().unwrap();
    drop(net);
    assert_clean(&meta, &data, "after hostile peers");
}

fn secret_file(dir: &std::path::Path, name: &str, contents: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

#[test]
fn the_shared_secret_keeps_strangers_out() {
    let dir = tempfile::tempdir().unwrap();
    let right = secret_file(dir.path(), "right", "correct horse battery staple\n");
    let wrong = secret_file(dir.path(), "wrong", "tr0ub4dor&3\n");
    let (meta, data) = volume_bytes(16 << 20, 32 << 20, 4096);
    let opts = NetServerOptions {
        secret: Some(right.clone()),
        ..NetServerOptions::default()
    };
    let (server, net) = serve(&meta, &data, opts);
    let addr = net.local_addr();

    for (secret, what) in [(Some(wrong.clone()), "a wrong secret"), (None, "no secret")] {
        let t = NetClient::connect(
            addr,
            NetClientOptions {
                secret,
                ..client_opts(501)
            },
        )
        .unwrap();
        let err = t.call(Request::Statfs).unwrap_err();
        assert!(
            matches!(
                err,
                TransportError::Remote { .. } | TransportError::Disconnected
            ),
            "{what}: {err:?}"
        );
        assert_eq!(t.stats().connects, 0, "{what}: joined");
    }
    assert_eq!(net.stats().greeted, 0);
    assert!(net.stats().refused >= 2);

    // The right secret joins.
    let (_t, mut c) = mount(
        &meta,
        addr,
        NetClientOptions {
            secret: Some(right.clone()),
            ..client_opts(502)
        },
    );
    write(&mut c, 0, 50, 25);
    c.unmount().unwrap();
    drop(net);
    drop(server);

    // A client with a secret refuses a server that cannot prove it holds it.
    let (_s2, open) = serve(&meta, &data, NetServerOptions::default());
    let t = NetClient::connect(
        open.local_addr(),
        NetClientOptions {
            secret: Some(right),
            ..client_opts(503)
        },
    )
    .unwrap();
    assert!(t.call(Request::Statfs).is_err());
    drop(t);
    drop(open);
    assert_clean(&meta, &data, "after strangers");
}

/// Records the server requests it is given; lock invalidations of one key must come one
/// at a time and in order.
#[derive(Debug, Default)]
struct Recorder {
    seen: Mutex<Vec<ServerRequest>>,
    active: Mutex<std::collections::HashSet<Key>>,
    overlaps: AtomicU64,
}

impl ClientHandler for Recorder {
    fn handle(&self, req: ServerRequest) -> ClientReply {
        let reply = match &req {
            ServerRequest::LockInvalidate(l) => {
                if !self.active.lock().unwrap().insert(l.key) {
                    self.overlaps.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_micros(300));
                self.active.lock().unwrap().remove(&l.key);
                ClientReply::Lock(*l)
            }
            ServerRequest::OpenInoMap { group_nr } => ClientReply::OpenInoMap {
                group_nr: *group_nr,
                bits: Box::new([*group_nr; 16]),
            },
            _ => ClientReply::Done,
        };
        self.seen.lock().unwrap().push(req);
        reply
    }
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn server_requests_reach_the_mount_in_order_per_lock() {
    let (meta, data) = volume_bytes(16 << 20, 32 << 20, 4096);
    let (_server, net) = serve(&meta, &data, NetServerOptions::default());
    let link = net.link();
    let t = NetClient::connect(net.local_addr(), client_opts(601)).unwrap();
    let inval = |k: u64, i: u64| {
        ServerRequest::LockInvalidate(NetLock {
            key: Key::new(zone::FS, k, 0, 0, 0, 0),
            write_seq: i,
            old_mode: LockMode::Write,
            new_mode: LockMode::Null,
        })
    };
    // Sent before the mount has connected or registered its handler: they wait.
    link.send(601, ServerRequest::SyncLogTrees);
    link.send(601, inval(1, 0));
    wait_for("the mount to connect", || t.stats().connects == 1);
    let rec = Arc::new(Recorder::default());
    let h: Arc<dyn ClientHandler> = rec.clone();
    t.set_handler(Arc::downgrade(&h));
    let mut sent = 2;
    for i in 1..40 {
        for k in 1..=3 {
            link.send(601, inval(k, i));
            sent += 1;
        }
        if i == 20 {
            // Sent while the socket is down: they go once the mount is back.
            net.drop_connections();
        }
        if i % 10 == 0 {
            link.send(601, ServerRequest::OpenInoMap { group_nr: i });
            sent += 1;
        }
    }
    wait_for("every reply", || net.stats().replies >= sent);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        net.stats().replies,
        sent,
        "a server request was handled twice"
    );
    let seen = rec.seen.lock().unwrap().clone();
    assert_eq!(seen.len() as u64, sent);
    for k in 1..=3u64 {
        let order: Vec<u64> = seen
            .iter()
            .filter_map(|r| match r {
                ServerRequest::LockInvalidate(l) if l.key.first == k => Some(l.write_seq),
                _ => None,
            })
            .collect();
        let want: Vec<u64> = if k == 1 {
            (0..40).collect()
        } else {
            (1..40).collect()
        };
        assert_eq!(order, want, "lock {k} out of order");
    }
    assert_eq!(
        rec.overlaps.load(Ordering::SeqCst),
        0,
        "one lock handled twice at once"
    );
    assert!(t.stats().connects >= 2);
}

/// Closes a client's socket every few milliseconds until stopped.
struct Breaker {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Breaker {
    fn start(t: Arc<NetClient>, every_ms: u64) -> Breaker {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(every_ms));
                t.reconnect();
            }
        });
        Breaker { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
    }
}

/// A filesystem mount (`Fs::mount`) over TCP, its sockets breaking while it works: what
/// it wrote is whole, as a single-node mount reads it back.
#[test]
fn a_filesystem_mount_over_tcp() {
    use scoutfs_core::entropy::SeededEntropy;
    use scoutfs_core::fs::{Fs, FsOptions};
    let (meta, data) = common::volume_of(64, 64, 4096);
    let (_server, net) = serve(&meta, &data, NetServerOptions::default());
    let t = Arc::new(NetClient::connect(net.local_addr(), NetClientOptions::new(FSID)).unwrap());
    let opts = FsOptions {
        entropy: Arc::new(SeededEntropy::new(5)),
        ..FsOptions::default()
    };
    let fs = Fs::mount(meta.clone(), data.clone(), t.clone(), opts).unwrap();
    let breaker = Breaker::start(t.clone(), 3);
    common::write_numbered_files(&fs, 40, 9_000, 8);
    fs.sync().unwrap();
    fs.merge_all().unwrap();
    breaker.stop();
    assert!(t.stats().connects > 1, "no socket broke");
    fs.unmount().unwrap();
    drop(net);
    common::assert_fs_clean(&meta, &data, "after a mount over TCP");
    let fs = Fs::mount_single(meta.clone(), data.clone(), FsOptions::default()).unwrap();
    common::assert_numbered_files(&fs, 40, 9_000);
    fs.unmount().unwrap();
    common::assert_fs_clean(&meta, &data, "after the single-node mount");
}

/// Many threads call through one client at once while its socket keeps breaking: every
/// call returns, and the server handled each exactly once.
#[test]
fn many_threads_call_through_one_client() {
    let (meta, data) = volume_bytes(16 << 20, 32 << 20, 4096);
    let (_server, net) = serve(&meta, &data, NetServerOptions::default());
    let t = Arc::new(NetClient::connect(net.local_addr(), client_opts(701)).unwrap());
    let threads = common::env_or(&["SCOUTFS_NET_THREADS"], 16u64);
    let calls = common::env_or(&["SCOUTFS_NET_CALLS"], 150u64);
    let breaker = Breaker::start(t.clone(), 2);
    let hs: Vec<_> = (0..threads)
        .map(|i| {
            let t = t.clone();
            std::thread::spawn(move || {
                for n in 0..calls {
                    let req = match (i + n) % 3 {
                        0 => Request::GetRoots,
                        1 => Request::GetLastSeq,
                        _ => Request::Statfs,
                    };
                    t.call(req).unwrap();
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    breaker.stop();
    eprintln!(
        "net: {} calls from {threads} threads, {:?}, {:?}",
        threads * calls,
        t.stats(),
        net.stats()
    );
    assert_eq!(net.stats().requests, threads * calls);
    assert!(t.stats().connects > 1, "no socket broke");
}

/// Cluster locks over TCP: threads of three mounts increment one counter under WRITE
/// (and read it under READ) while their sockets keep breaking; lock requests, the
/// server's invalidations and the mounts' replies all cross the network, and no
/// increment is lost.
#[test]
fn cluster_locks_over_tcp() {
    let (meta, data) = volume_bytes(16 << 20, 32 << 20, 4096);
    let (server, net) = serve(&meta, &data, NetServerOptions::default());
    let addr = net.local_addr();
    let clients = Mutex::new(Vec::new());
    let store = Arc::new(Mutex::new(0u64));
    let mounts = common::counter_mounts(
        |rid| {
            let t = Arc::new(NetClient::connect(addr, client_opts(rid)).unwrap());
            clients.lock().unwrap().push(t.clone());
            t
        },
        3,
        &store,
    );
    let breakers: Vec<_> = clients
        .lock()
        .unwrap()
        .iter()
        .map(|t| Breaker::start(t.clone(), 5))
        .collect();
    let rounds = common::env_or(&["SCOUTFS_LOCK_THREAD_ROUNDS"], 400u64);
    let run = common::count_under_locks(&mounts, 2, rounds);
    for b in breakers {
        b.stop();
    }
    let st = server.lock_stats();
    let connects: u64 = clients
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.stats().connects)
        .sum();
    eprintln!(
        "net: locks over TCP: {} increments in {:?}, {} invalidations, {} commits at \
         invalidation, {connects} connects, {:?}",
        run.increments,
        run.elapsed,
        st.invalidations,
        run.commits,
        net.stats()
    );
    assert_eq!(run.value, run.increments, "increments lost");
    assert!(st.invalidations > 0 && run.commits > 0);
    assert!(net.stats().replies > 0);
    assert!(connects > 3, "no socket broke");
}

/// A server takes over over TCP: the mounts reconnect to the new server (another term),
/// send their locks again when it asks (lock recovery crosses the network), and a mount
/// that wants the lock gets it once the holder has committed.
#[test]
fn lock_recovery_after_a_server_restart_over_tcp() {
    let (meta, data) = volume_bytes(16 << 20, 32 << 20, 4096);
    let (server, net) = serve(&meta, &data, NetServerOptions::default());
    let addr = net.local_addr();
    let store = Arc::new(Mutex::new(0u64));
    let mounts = common::counter_mounts(
        |rid| Arc::new(NetClient::connect(addr, client_opts(rid)).unwrap()),
        2,
        &store,
    );
    let seq = common::write_and_hold(&mounts, 41);
    server.shutdown_locks();
    net.shutdown();
    wait_for("the old server to stop", || Arc::strong_count(&server) == 1);
    drop(server);
    let core = ServerCore::open(meta.clone(), data.clone(), ServerOptions::default()).unwrap();
    let next = Arc::new(Server::new(core));
    let net = bind_again(next.clone(), addr);
    // Asked before the mounts are back: the requests wait for them.
    assert_eq!(next.start_lock_recovery_of_mounted().unwrap(), 2);
    common::assert_recovered(&mounts, 41, seq);
    let st = next.lock_stats();
    eprintln!("net: lock takeover over TCP: {st:?}, {:?}", net.stats());
    assert!(st.recovered >= 1);
    assert!(
        net.stats().replies >= 2,
        "no lock recovery crossed the network"
    );
}
