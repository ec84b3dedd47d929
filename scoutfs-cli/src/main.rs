//! The `scoutfs` command: a thin front-end over scoutfs-core. Errors are printed as
//! `scoutfs: SUBCOMMAND: MESSAGE` on stderr with exit status 1; usage errors exit 2.

mod agent;
mod check;
mod cluster;
mod error;
mod mkfs;
mod mount;
mod print;
mod size;
mod umount;
mod utab;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use error::CmdError;
use scoutfs_core::format::DEFAULT_META_BLOCK_SIZE;
use std::io::{BufWriter, ErrorKind, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(name = "scoutfs", version, about = "scoutfs-rs volume tools")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Print a short usage message of the subcommand (as the original's argp offers).
    #[arg(long = "usage", global = true, hide = true)]
    usage: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Make a new volume on a metadata and a data device.
    ///
    /// A device path that does not exist is created as a sparse image file of the size
    /// given with --max-meta-size or --max-data-size.
    Mkfs {
        /// Overwrite an existing volume (never a device a mount holds).
        #[arg(short = 'f', long)]
        force: bool,
        /// Use at most this much of the meta device (K/M/G/T/P suffixes, powers of 1024);
        /// the size of the image file to create if META_DEVICE does not exist.
        #[arg(short = 'm', long = "max-meta-size", value_name = "SIZE",
              value_parser = size::parse_size)]
        max_meta_size: Option<u64>,
        /// Use at most this much of the data device; the size of the image file to create
        /// if DATA_DEVICE does not exist.
        #[arg(short = 'd', long = "max-data-size", value_name = "SIZE",
              value_parser = size::parse_size)]
        max_data_size: Option<u64>,
        /// Metadata block size (a power of two from 1K to 64K).
        #[arg(short = 'b', long = "meta-block-size", value_name = "SIZE",
              value_parser = size::parse_size,
              default_value_t = DEFAULT_META_BLOCK_SIZE as u64)]
        meta_block_size: u64,
        /// The metadata device or image file.
        meta_device: PathBuf,
        /// The data device or image file.
        data_device: PathBuf,
    },
    /// Check a volume offline: every block verified, every block referenced once or free
    /// once. Exit status 0: clean; 1: problems found; 8: the check could not run.
    Check {
        /// The metadata device or image file (opened read-only).
        meta_device: PathBuf,
        /// The data device or image file (opened read-only).
        data_device: PathBuf,
    },
    /// Show used and free metadata and data blocks of a volume (offline).
    // -h is --human-readable, as in the original; help is --help only.
    #[command(disable_help_flag = true)]
    Df {
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        /// Sizes in K/M/G instead of block counts.
        #[arg(short = 'h', long = "human-readable")]
        human_readable: bool,
        /// The metadata device or image file (opened read-only).
        meta_device: PathBuf,
        /// The data device or image file (opened read-only).
        data_device: PathBuf,
    },
    /// Mount a volume single-node: the server and the mount in this process, served to
    /// the kernel through FUSE.
    ///
    /// Returns once the mount is ready; a daemon serves it until `umount MOUNTPOINT` (or
    /// `fusermount3 -u`, or SIGTERM), then commits and exits (`scoutfs umount`
    /// waits for that commit). Options (-o, comma-separated):
    /// cache_size=SIZE (the bound of the metadata in memory, default 256M),
    /// sync_interval_ms=N (the periodic commit and background work, default 10000),
    /// srch_log_entries=N (srch log rotation, default 16384), attr_timeout_ms=N and
    /// entry_timeout_ms=N (how long the kernel keeps attributes and entries, default
    /// 3600000: it is told of changes it did not make), ro (nothing is
    /// written to the devices, which are opened read-only), rw, relatime (the
    /// default; atime too), noatime, strictatime, nodiratime, diratime, acl (the default:
    /// POSIX ACLs), noacl, metadev_path=META-DEVICE. The other options of scoutfs(5) are
    /// checked against their ranges and do not act yet (data_prealloc_blocks,
    /// data_prealloc_contig_only, ino_alloc_per_lock, orphan_scan_delay_ms,
    /// log_merge_wait_timeout_ms) or have nothing to act on in a single-node mount
    /// (lock_idle_count, quorum_heartbeat_timeout_ms, tcp_keepalive_timeout_ms);
    /// quorum_slot_nr is refused.
    Mount {
        /// Mount options, comma-separated (repeatable).
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
        /// Serve in this process until unmounted instead of returning once mounted.
        #[arg(short = 'f', long)]
        foreground: bool,
        /// (Internal) write a line when the mount is ready, then log to the kernel log.
        #[arg(long, hide = true)]
        notify_ready: bool,
        /// The metadata device or image file.
        meta_device: PathBuf,
        /// The data device or image file.
        data_device: PathBuf,
        /// The directory to mount on.
        mountpoint: PathBuf,
    },
    /// Unmount a scoutfs mount and wait for its final commit: when this returns 0,
    /// everything written before it is on the devices.
    ///
    /// Installed as /sbin/umount.fuse.scoutfs (a symbolic link to this program), it is
    /// the helper that `umount MOUNTPOINT` runs for scoutfs mounts, which then waits too.
    /// Exit status 1 if the daemon ended without its final commit (it was killed, or the
    /// commit failed: see the kernel log).
    Umount {
        /// Detach now and do not wait: the mount goes, and its daemon commits, when its
        /// last user lets go.
        #[arg(short = 'l', long)]
        lazy: bool,
        /// Force the unmount (requests in flight fail).
        #[arg(short = 'f', long)]
        force: bool,
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Commit the mount that holds PATH now (what `sync -f` does for a kernel
    /// filesystem; syncfs(2) does not reach a FUSE daemon).
    Sync {
        /// A file or directory on the mount.
        path: PathBuf,
    },
    /// Print the super block and every btree it references, block by block.
    Print {
        /// The metadata device or image file (opened read-only).
        meta_device: PathBuf,
    },
    #[command(flatten)]
    Agent(agent::AgentCmd),
}

/// The name under which umount(8) runs us as its helper for scoutfs mounts.
const UMOUNT_HELPER: &str = "umount.fuse.scoutfs";

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let argv0 = argv.next().map(PathBuf::from);
    if argv0
        .as_deref()
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == UMOUNT_HELPER)
    {
        let args: Vec<_> = argv.collect();
        let res = umount::helper_args(&args).and_then(|a| umount::run(&a));
        return finish("umount", res);
    }
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    if cli.usage {
        let mut cmd = Cli::command();
        let sub = matches
            .subcommand_name()
            .and_then(|n| cmd.find_subcommand_mut(n));
        let usage = match sub {
            Some(c) => c.render_usage(),
            None => Cli::command().render_usage(),
        };
        let _ = writeln!(std::io::stdout(), "{usage}");
        return ExitCode::SUCCESS;
    }
    let mut out = BufWriter::new(std::io::stdout().lock());
    let (name, res) = match cli.cmd {
        Cmd::Mkfs {
            force,
            max_meta_size,
            max_data_size,
            meta_block_size,
            meta_device,
            data_device,
        } => {
            let args = mkfs::Args {
                force,
                max_meta_size,
                max_data_size,
                meta_block_size,
                meta_device,
                data_device,
            };
            ("mkfs", mkfs::run(&args, &mut out))
        }
        Cmd::Mount {
            options,
            foreground,
            notify_ready,
            meta_device,
            data_device,
            mountpoint,
        } => {
            let args = mount::Args {
                options,
                foreground,
                notify_ready,
                meta_device,
                data_device,
                mountpoint,
            };
            ("mount", mount::run(&args))
        }
        Cmd::Print { meta_device } => ("print", print::run(&meta_device, &mut out)),
        Cmd::Umount {
            lazy,
            force,
            mountpoint,
        } => {
            let args = umount::Args {
                target: mountpoint,
                lazy,
                force,
            };
            ("umount", umount::run(&args))
        }
        Cmd::Sync { path } => ("sync", umount::sync(&path)),
        Cmd::Check {
            meta_device,
            data_device,
        } => (
            "check",
            check::run_check(&meta_device, &data_device, &mut out),
        ),
        Cmd::Agent(a) => agent::run(a, &mut out),
        Cmd::Df {
            help: _,
            human_readable,
            meta_device,
            data_device,
        } => (
            "df",
            check::run_df(&meta_device, &data_device, human_readable, &mut out),
        ),
    };
    // Whatever was printed goes out before the error that follows it.
    let flushed = out.flush().map_err(CmdError::Output);
    finish(name, res.and(flushed))
}

/// The exit status of subcommand `name`, after printing its error if it failed.
fn finish(name: &str, res: Result<(), CmdError>) -> ExitCode {
    match res {
        Ok(()) => ExitCode::SUCCESS,
        // The reader went away (`scoutfs print | head`): stop quietly.
        Err(CmdError::Output(e)) if e.kind() == ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(CmdError::Quiet(status)) => ExitCode::from(status),
        Err(CmdError::Errno { context, errno }) => {
            let mut err = std::io::stderr();
            if let Some(c) = context {
                let _ = writeln!(err, "{c}");
            }
            let _ = writeln!(err, "scoutfs: {name} failed: {}", error::errno_text(errno));
            ExitCode::FAILURE
        }
        Err(CmdError::Said { context, .. }) => {
            let _ = writeln!(std::io::stderr(), "{context}");
            ExitCode::FAILURE
        }
        Err(CmdError::Usage(m)) => {
            let _ = writeln!(
                std::io::stderr(),
                "{name}: {m}\nTry `{name} --help' or `{name} --usage' for more information."
            );
            ExitCode::from(64)
        }
        Err(e) => {
            // Not eprintln!: it panics if stderr is a closed pipe.
            let _ = writeln!(std::io::stderr(), "scoutfs: {name}: {}", error::message(&e));
            match (name, &e) {
                // check: 1 means the volume has problems; a check that could not run is 8
                // (as fsck's "operational error").
                ("check", CmdError::Problems(_)) => ExitCode::FAILURE,
                ("check", _) => ExitCode::from(8),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
