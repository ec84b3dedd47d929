//! Times calls over the loopback: a server on memory devices, `NetClient`s calling it
//! from one and from several threads, and a mount's commits over TCP against the same
//! commits in-process. Prints a table; asserts nothing about speed.
//!
//! `cargo run --release -p scoutfs-net --example net_calls [calls]`

use scoutfs_core::block::BlockCache;
use scoutfs_core::client::Client;
use scoutfs_core::device::{BlockDevice, MemDevice};
use scoutfs_core::format::{item_type, zone, Key};
use scoutfs_core::server::{Server, ServerCore, ServerOptions};
use scoutfs_core::transport::{LocalTransport, Request, Transport};
use scoutfs_core::volume::{geometry, mkfs, read_super, MkfsOptions};
use scoutfs_net::{NetClient, NetClientOptions, NetServer, NetServerOptions};
use std::sync::Arc;
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    let calls: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let meta: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(64 << 20));
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(64 << 20));
    let fsid = 0x5ca1e;
    mkfs(
        &meta,
        &data,
        &MkfsOptions {
            meta_block_size: 4096,
            fsid: Some(fsid),
            ..Default::default()
        },
    )?;
    let server = Arc::new(Server::new(ServerCore::open(
        meta.clone(),
        data.clone(),
        ServerOptions::default(),
    )?));
    let net = NetServer::start(
        server.clone(),
        "127.0.0.1:0".parse()?,
        NetServerOptions::default(),
    )?;
    let addr = net.local_addr();
    let opts = |rid| NetClientOptions {
        rid: Some(rid),
        ..NetClientOptions::new(fsid)
    };

    println!("{:<40} {:>12} {:>12}", "what", "per second", "µs each");
    let row = |what: &str, n: u64, t: Instant| {
        let s = t.elapsed().as_secs_f64();
        println!(
            "{what:<40} {:>12.0} {:>12.1}",
            n as f64 / s,
            s * 1e6 / n as f64
        );
    };

    let t = NetClient::connect(addr, opts(1))?;
    t.call(Request::GetRoots)?;
    let t0 = Instant::now();
    for _ in 0..calls {
        t.call(Request::GetRoots)?;
    }
    row("GetRoots, 1 thread", calls, t0);

    for threads in [4u64, 16] {
        let t = Arc::new(NetClient::connect(addr, opts(1 + threads))?);
        t.call(Request::GetRoots)?;
        let t0 = Instant::now();
        let hs: Vec<_> = (0..threads)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for _ in 0..calls / threads {
                        let _ = t.call(Request::GetRoots);
                    }
                })
            })
            .collect();
        for h in hs {
            let _ = h.join();
        }
        row(
            &format!("GetRoots, {threads} threads, one client"),
            calls / threads * threads,
            t0,
        );
    }

    // A mount's commits (one item each) over TCP and in-process.
    let commits = (calls / 20).max(100);
    let sb = read_super(&*meta, "meta")?;
    for tcp in [false, true] {
        let rid = if tcp { 100 } else { 101 };
        let transport: Arc<dyn Transport> = if tcp {
            Arc::new(NetClient::connect(addr, NetClientOptions::new(fsid))?)
        } else {
            Arc::new(LocalTransport::new(server.clone()))
        };
        let cache = Arc::new(BlockCache::new(meta.clone(), geometry(&sb), 16 << 20));
        let mut c = Client::mount(transport, meta.clone(), cache, rid, rid)?;
        let t0 = Instant::now();
        for i in 0..commits {
            c.insert(&Key::new(zone::FS, rid, item_type::XATTR, i, 0, 0), b"v")?;
            c.commit()?;
        }
        row(
            if tcp {
                "commit, over TCP"
            } else {
                "commit, in-process"
            },
            commits,
            t0,
        );
        c.unmount()?;
    }
    Ok(())
}
