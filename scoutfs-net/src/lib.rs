//! scoutfs-net carries the messages of `scoutfs_core::transport` between mounts and the
//! server over TCP.
//!
//! * [`wire`]: the frame format and the payload of every message;
//! * [`conn`]: the reliable connection as a state machine without I/O (seqs, acks,
//!   resends after a reconnect: exactly once to the same server, at least once to a new
//!   one);
//! * [`auth`]: the shared secret's challenge-response;
//! * [`NetClient`], a [`scoutfs_core::transport::Transport`], and [`NetServer`], which
//!   serves an `Arc<scoutfs_core::server::Server>`: the TCP transport, on tokio.
//!
//! ```no_run
//! use scoutfs_net::{NetClient, NetClientOptions};
//! use scoutfs_core::transport::{Request, Transport};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fsid = 0x5ca1e; // the volume's, from its super block
//! let opts = NetClientOptions { rid: Some(42), ..NetClientOptions::new(fsid) };
//! let t = NetClient::connect("127.0.0.1:7000".parse()?, opts)?;
//! let stats = t.call(Request::Statfs)?;
//! # let _ = stats;
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod client;
pub mod conn;
pub mod fuzzing;
pub mod server;
pub mod tcp;
pub mod wire;

pub use client::{ClientStats, NetClient, NetClientOptions};
pub use server::{NetServer, NetServerOptions, ServerStats};
