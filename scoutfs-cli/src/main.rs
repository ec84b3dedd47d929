//! The `scoutfs` command: a thin front-end over scoutfs-core. Errors are printed as
//! `scoutfs: SUBCOMMAND: MESSAGE` on stderr with exit status 1; usage errors exit 2.

mod print;
mod size;

use clap::{Parser, Subcommand};
use scoutfs_core::device::{BlockDevice, DeviceError, FileDevice};
use scoutfs_core::format::DEFAULT_META_BLOCK_SIZE;
use scoutfs_core::volume::{self, MkfsOptions, VolumeError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(name = "scoutfs", version, about = "scoutfs-rs volume tools")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Make a new volume on a metadata and a data device.
    Mkfs {
        /// Overwrite an existing volume.
        #[arg(short = 'f', long)]
        force: bool,
        /// Use at most this much of the meta device (K/M/G/T/P suffixes); required to
        /// create a missing image file.
        #[arg(short = 'm', long = "max-meta-size", value_parser = size::parse_size)]
        max_meta_size: Option<u64>,
        /// Use at most this much of the data device; required to create a missing image
        /// file.
        #[arg(short = 'd', long = "max-data-size", value_parser = size::parse_size)]
        max_data_size: Option<u64>,
        /// Metadata block size (a power of two from 1K to 64K).
        #[arg(short = 'b', long = "meta-block-size", value_parser = size::parse_size,
              default_value_t = DEFAULT_META_BLOCK_SIZE as u64)]
        meta_block_size: u64,
        /// The metadata device or image file.
        meta_device: PathBuf,
        /// The data device or image file.
        data_device: PathBuf,
    },
    /// Print the super block and every btree it references.
    Print {
        /// The metadata device or image file.
        meta_device: PathBuf,
    },
}

/// An error of a subcommand, as the user sees it.
#[derive(Debug)]
struct CmdError(String);

impl From<VolumeError> for CmdError {
    fn from(e: VolumeError) -> Self {
        CmdError(describe(&e))
    }
}

impl From<DeviceError> for CmdError {
    fn from(e: DeviceError) -> Self {
        CmdError(e.to_string())
    }
}

/// The one place errors of the core become messages.
fn describe(e: &VolumeError) -> String {
    match e {
        VolumeError::Device(d) => format!("device error: {d}"),
        other => other.to_string(),
    }
}

fn open_or_create(path: &Path, size: Option<u64>, what: &str) -> Result<FileDevice, CmdError> {
    if path.exists() {
        return FileDevice::open(path)
            .map_err(|e| CmdError(format!("cannot open {what} device {}: {e}", path.display())));
    }
    let size = size.ok_or_else(|| {
        CmdError(format!(
            "{what} device {} does not exist; give its size with --max-{what}-size to create it",
            path.display()
        ))
    })?;
    FileDevice::create(path, size).map_err(|e| {
        CmdError(format!(
            "cannot create {what} device {}: {e}",
            path.display()
        ))
    })
}

fn mkfs(
    force: bool,
    max_meta: Option<u64>,
    max_data: Option<u64>,
    block_size: u64,
    meta_path: &Path,
    data_path: &Path,
) -> Result<(), CmdError> {
    let meta_block_size = u32::try_from(block_size)
        .map_err(|_| CmdError::from(VolumeError::BadBlockSize(block_size)))?;
    if meta_path == data_path {
        return Err(CmdError("the meta and data devices must differ".into()));
    }
    let meta: Arc<dyn BlockDevice> = Arc::new(open_or_create(meta_path, max_meta, "meta")?);
    let data: Arc<dyn BlockDevice> = Arc::new(open_or_create(data_path, max_data, "data")?);
    let opts = MkfsOptions {
        meta_block_size,
        meta_size: max_meta,
        data_size: max_data,
        force,
        ..MkfsOptions::default()
    };
    let s = volume::mkfs(&meta, &data, &opts)?;
    println!("Created scoutfs volume:");
    println!("  fsid:              {:016x}", s.fsid);
    println!("  meta block size:   {}", s.meta_block_size);
    println!("  total meta blocks: {}", s.total_meta_blocks);
    println!("  total data blocks: {}", s.total_data_blocks);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (name, res) = match cli.cmd {
        Cmd::Mkfs {
            force,
            max_meta_size,
            max_data_size,
            meta_block_size,
            meta_device,
            data_device,
        } => (
            "mkfs",
            mkfs(
                force,
                max_meta_size,
                max_data_size,
                meta_block_size,
                &meta_device,
                &data_device,
            ),
        ),
        Cmd::Print { meta_device } => ("print", print::print(&meta_device)),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(CmdError(msg)) => {
            eprintln!("scoutfs: {name}: {msg}");
            ExitCode::FAILURE
        }
    }
}
