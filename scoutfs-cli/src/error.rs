//! Why a subcommand failed, and the one place errors of the core become the messages the
//! user reads (`scoutfs: SUBCOMMAND: MESSAGE`).

use scoutfs_core::block::BlockError;
use scoutfs_core::btree::BtreeError;
use scoutfs_core::device::DeviceError;
use scoutfs_core::volume::VolumeError;
use std::path::PathBuf;

/// A failed subcommand.
#[derive(Debug)]
pub enum CmdError {
    /// Opening or creating a device or image file failed.
    Device {
        /// The path given.
        path: PathBuf,
        /// "open" or "create".
        action: &'static str,
        /// What the device layer said.
        err: DeviceError,
    },
    /// The core refused or failed.
    Volume(VolumeError),
    /// Trees that `print` could not read to the end, by name.
    Damaged(Vec<(String, BtreeError)>),
    /// `check` found this many problems.
    Problems(u64),
    /// A failure the command noticed itself.
    Other(String),
    /// Writing our own output failed.
    Output(std::io::Error),
    /// The reason was already printed (by the mount daemon); exit with this status.
    Quiet(u8),
}

impl From<VolumeError> for CmdError {
    fn from(e: VolumeError) -> Self {
        CmdError::Volume(e)
    }
}

impl From<std::io::Error> for CmdError {
    fn from(e: std::io::Error) -> Self {
        CmdError::Output(e)
    }
}

/// The message the user reads for `e`.
pub fn message(e: &CmdError) -> String {
    match e {
        CmdError::Device {
            path,
            action,
            err: DeviceError::Io { source, .. },
        } => format!("cannot {action} {}: {source}", path.display()),
        CmdError::Device { path, action, err } => {
            format!("cannot {action} {}: {}", path.display(), device(err))
        }
        CmdError::Volume(e) => volume(e),
        CmdError::Damaged(trees) => {
            let each: Vec<String> = trees
                .iter()
                .map(|(name, e)| format!("{name}: {}", btree(e)))
                .collect();
            format!("damaged trees: {}", each.join("; "))
        }
        CmdError::Problems(n) => format!("{} found", crate::check::problems(*n)),
        CmdError::Other(m) => m.clone(),
        CmdError::Output(e) => format!("writing output: {e}"),
        CmdError::Quiet(status) => format!("failed with status {status}"),
    }
}

/// Errors of the core, layer by layer down to the device.
pub fn volume(e: &VolumeError) -> String {
    match e {
        VolumeError::Device(d) => device(d),
        VolumeError::Block(b) => block(b),
        VolumeError::Btree(b) => btree(b),
        other => other.to_string(),
    }
}

/// A btree error as the user reads it.
pub fn btree(e: &BtreeError) -> String {
    match e {
        BtreeError::Block(b) => block(b),
        other => other.to_string(),
    }
}

fn block(e: &BlockError) -> String {
    match e {
        BlockError::Device(d) => device(d),
        other => other.to_string(),
    }
}

fn device(e: &DeviceError) -> String {
    match e {
        DeviceError::OutOfRange {
            op: "read",
            offset,
            len,
            size,
        } => format!(
            "read of {len} bytes at byte {offset} is past the end of the device ({size} bytes); \
             is it truncated?"
        ),
        other => other.to_string(),
    }
}
