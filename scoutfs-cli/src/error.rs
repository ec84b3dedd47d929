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
    /// A system call or the filesystem failed with `errno`. Printed as the original
    /// prints it: `context` (the command's own line about what failed, if any), then
    /// `scoutfs: SUBCOMMAND failed: MESSAGE (ERRNO)`.
    Errno {
        /// The command's line about it, e.g. `release ioctl failed: Stale file handle (116)`.
        context: Option<String>,
        /// The errno.
        errno: i32,
    },
    /// A failure the command has said all of in its own line, `context` (exit status 1):
    /// the original's `stat` and `statfs` print no `scoutfs: ... failed` line after theirs.
    Said {
        /// The command's line, e.g. `ioctl failed: Inappropriate ioctl for device (25)`.
        context: String,
        /// The errno.
        errno: i32,
    },
    /// A usage error found once the arguments were parsed (the original's `argp_error`):
    /// `SUBCOMMAND: MESSAGE` and where to find help, exit status 64 (`EX_USAGE`).
    Usage(String),
}

/// The C library's text for `errno` (what `strerror` says), e.g. `Stale file handle`.
pub fn strerror(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    match s.strip_suffix(&format!(" (os error {errno})")) {
        Some(t) => t.to_string(),
        None => s,
    }
}

/// `MESSAGE (ERRNO)`, as the original prints an errno.
pub fn errno_text(errno: i32) -> String {
    format!("{} ({errno})", strerror(errno))
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
        CmdError::Errno { errno, .. } | CmdError::Said { errno, .. } => errno_text(*errno),
        CmdError::Usage(m) => m.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errnos_read_as_the_c_library_says_them() {
        assert_eq!(errno_text(116), "Stale file handle (116)");
        assert_eq!(errno_text(25), "Inappropriate ioctl for device (25)");
        assert_eq!(strerror(1), "Operation not permitted");
    }
}
