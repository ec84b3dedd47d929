//! `scoutfs mount` of a volume other mounts share: the first mount serves it, later ones
//! join.
//!
//! A mount that takes the volume's devices (their `flock`: one server per volume) with
//! `server_addr=IP:PORT` runs the volume's server in its process, listens there
//! (`scoutfs_net::NetServer`), records the address in the volume's server record
//! (`scoutfs_core::volume::write_server_record`) and mounts itself as a client over
//! TCP like any other. A mount that finds the devices taken reads the record (or takes
//! `server_addr=`) and joins as a client: it reads and writes the devices itself and
//! reaches the server only through the network (`Fs::mount`).
//!
//! The server has no successor yet (quorum and failover are issue 16's): when its own
//! mount is unmounted, the process goes on serving until every other mount has left,
//! then clears the record and exits.

use crate::error::CmdError;
use crate::mount::MountOptions;
use scoutfs_core::device::BlockDevice;
use scoutfs_core::fs::{Fs, FsOptions};
use scoutfs_core::server::{Server, ServerCore, ServerOptions};
use scoutfs_core::transport::{Request, Transport};
use scoutfs_net::{NetClient, NetClientOptions, NetServer, NetServerOptions};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

/// How long a joining mount waits for its server to answer before it gives up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The server a serving mount runs.
#[derive(Debug)]
pub struct Serving {
    server: Arc<Server>,
    net: NetServer,
    meta: Arc<dyn BlockDevice>,
    fsid: u64,
}

fn fsid_of(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>) -> Result<u64, CmdError> {
    let sb = scoutfs_core::volume::read_volume_supers(&**meta, &**data)
        .map_err(|e| CmdError::Other(format!("cannot read the volume: {e}")))?;
    Ok(sb.hdr.fsid.get())
}

fn client_options(opts: &MountOptions, fsid: u64) -> NetClientOptions {
    NetClientOptions {
        secret: opts.secret_file.clone(),
        ..NetClientOptions::new(fsid)
    }
}

/// Mount over a new connection to `addr`, giving up after [`JOIN_TIMEOUT`].
fn mount_over(
    meta: Arc<dyn BlockDevice>,
    data: Arc<dyn BlockDevice>,
    addr: std::net::SocketAddr,
    opts: &MountOptions,
    fs_opts: FsOptions,
    fsid: u64,
) -> Result<Fs, CmdError> {
    let net = NetClient::connect(addr, client_options(opts, fsid))
        .map_err(|e| CmdError::Other(format!("cannot reach the server at {addr}: {e}")))?;
    let transport: Arc<dyn Transport> = Arc::new(net);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(Fs::mount(meta, data, transport, fs_opts));
    });
    match rx.recv_timeout(JOIN_TIMEOUT) {
        Ok(Ok(fs)) => Ok(fs),
        Ok(Err(e)) => Err(CmdError::Other(format!(
            "cannot mount through the server at {addr}: {e}"
        ))),
        Err(_) => Err(CmdError::Other(format!(
            "the server at {addr} did not answer within {} s",
            JOIN_TIMEOUT.as_secs()
        ))),
    }
}

/// Serve the volume at `opts.server_addr` and mount it as this server's first client.
pub fn serve_and_mount(
    meta: Arc<dyn BlockDevice>,
    data: Arc<dyn BlockDevice>,
    opts: &MountOptions,
    fs_opts: FsOptions,
) -> Result<(Fs, Serving), CmdError> {
    let Some(listen) = opts.server_addr else {
        return Err(CmdError::Other("no server_addr to serve at".into()));
    };
    let fsid = fsid_of(&meta, &data)?;
    let server_opts = ServerOptions {
        cache_bytes: usize::try_from(opts.cache_bytes / 2).unwrap_or(usize::MAX),
        ..ServerOptions::default()
    };
    let mut core = ServerCore::open(meta.clone(), data.clone(), server_opts)
        .map_err(|e| CmdError::Other(format!("cannot open the volume: {e}")))?;
    core.set_srch_config(fs_opts.srch);
    // Mounts that did not unmount (their process died with the last server): nothing
    // can reach them, so their allocators are taken back and their log trees go to the
    // merge (the original fences and reclaims them; issue 16 brings that).
    let mut left = Vec::new();
    scoutfs_core::btree::scan(
        core.writer(),
        &core.roots().mounted_clients,
        &scoutfs_core::format::Key::MIN,
        &scoutfs_core::format::Key::MAX,
        |it| {
            left.push(it.key.first);
            ControlFlow::Continue(())
        },
    )
    .map_err(|e| CmdError::Other(format!("cannot read the mounted clients: {e}")))?;
    let server = Arc::new(Server::new(core));
    for rid in left {
        server
            .handle_from(None, Request::Farewell { rid })
            .map_err(|e| CmdError::Other(format!("cannot reclaim mount {rid:016x}: {e}")))?;
    }
    let net = NetServer::start(
        server.clone(),
        listen,
        NetServerOptions {
            secret: opts.secret_file.clone(),
            ..NetServerOptions::default()
        },
    )
    .map_err(|e| CmdError::Other(format!("cannot serve at {listen}: {e}")))?;
    let addr = net.local_addr();
    scoutfs_core::volume::write_server_record(&*meta, fsid, net.term(), 0, Some(addr))
        .map_err(|e| CmdError::Other(format!("cannot record the server: {e}")))?;
    let fs = mount_over(meta.clone(), data, addr, opts, fs_opts, fsid)?;
    Ok((
        fs,
        Serving {
            server,
            net,
            meta,
            fsid,
        },
    ))
}

/// Join the server of the volume (at `opts.server_addr`, or where its record says);
/// `None` when no server serves it.
pub fn join(
    meta: Arc<dyn BlockDevice>,
    data: Arc<dyn BlockDevice>,
    opts: &MountOptions,
    fs_opts: FsOptions,
) -> Result<Option<Fs>, CmdError> {
    // Devices that are no volume's pair are no server's either: the caller reports why
    // it could not take them.
    let Ok(fsid) = fsid_of(&meta, &data) else {
        return Ok(None);
    };
    let addr = match opts.server_addr {
        Some(a) => a,
        None => match scoutfs_core::volume::read_server_record(&*meta, fsid)
            .map_err(|e| CmdError::Other(format!("cannot read the server record: {e}")))?
        {
            Some((_, a)) => a,
            None => return Ok(None),
        },
    };
    mount_over(meta, data, addr, opts, fs_opts, fsid).map(Some)
}

impl Serving {
    /// The server's own mount is gone: serve the other mounts until they have all left,
    /// then clear the server record and stop.
    pub fn linger(self) {
        let mut said = false;
        loop {
            let others = self
                .server
                .with_core(|c| {
                    scoutfs_core::btree::items(
                        c.writer(),
                        &c.roots().mounted_clients,
                        &scoutfs_core::format::Key::MIN,
                        &scoutfs_core::format::Key::MAX,
                    )
                    .map(|v| v.len())
                })
                .unwrap_or(0);
            if others == 0 {
                break;
            }
            if !said {
                eprintln!("scoutfs: serving {others} other mount(s) until they unmount");
                said = true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Err(e) =
            scoutfs_core::volume::write_server_record(&*self.meta, self.fsid, 0, 0, None)
        {
            eprintln!("scoutfs: cannot clear the server record: {e}");
        }
        self.net.shutdown();
    }
}
