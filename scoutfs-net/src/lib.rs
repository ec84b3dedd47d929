//! scoutfs-net carries the messages of `scoutfs_core::transport` between a mount and the
//! server over TCP.
//!
//! * [`wire`]: the frame format and the payload of every message;
//! * [`conn`]: the reliable connection as a state machine without I/O (sequence numbers,
//!   acks, resend after a reconnect, exactly once to the same server);
//! * [`auth`]: the shared secret's challenge-response;
//! * [`NetClient`] (a [`scoutfs_core::transport::Transport`]) and [`NetServer`] (serves an
//!   `Arc<scoutfs_core::server::Server>`): the TCP transport, on tokio.

pub mod auth;
pub mod conn;
pub mod fuzzing;
pub mod wire;
