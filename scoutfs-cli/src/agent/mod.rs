//! The archive-agent commands of the original `scoutfs` (`utils/src/*.c`): the same
//! subcommands, flags, output and error lines, plus `--json`.
//!
//! A command reaches the mount that holds its FILE or `-p PATH` (default
//! `$SCOUTFS_MOUNT_PATH`, then the working directory) through the daemon's control
//! channel (see [`target`]); `stat`, `walk-inodes`, `search-xattrs`, `read-xattr-totals`
//! and `read-xattr-index` also read an unmounted volume's devices (`--meta-device M
//! --data-device D`).
//!
//! Failures print what the original prints: the command's own line (`release ioctl
//! failed: Stale file handle (116)`), then `scoutfs: release failed: Stale file handle
//! (116)`, exit status 1. Usage errors the original finds after parsing (`must provide
//! file version with --data-version`) exit 64 as its argp does.

mod commands;
mod format;
mod output;
mod parse;
mod target;

pub use commands::{run, AgentCmd};
