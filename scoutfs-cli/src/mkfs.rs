//! `scoutfs mkfs`: open (or create, as sparse image files) the two devices, lock them as a
//! mount does (a device a mount holds is refused, `-f` or not), and hand them to the
//! core's mkfs.

use crate::error::CmdError;
use crate::size::format_size;
use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::volume::{self, MkfsOptions, VolumeError};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `scoutfs mkfs` was asked to do.
#[derive(Debug)]
pub struct Args {
    pub force: bool,
    pub max_meta_size: Option<u64>,
    pub max_data_size: Option<u64>,
    pub meta_block_size: u64,
    pub meta_device: PathBuf,
    pub data_device: PathBuf,
}

/// Image files this run created; removed again unless the volume was made.
#[derive(Debug, Default)]
struct Created(Vec<PathBuf>);

impl Created {
    fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn open_or_create(
    path: &Path,
    size: Option<u64>,
    what: &str,
    created: &mut Created,
) -> Result<FileDevice, CmdError> {
    if path.exists() {
        return FileDevice::open(path).map_err(|err| CmdError::Device {
            path: path.into(),
            action: "open",
            err,
        });
    }
    let size = size.ok_or_else(|| {
        CmdError::Other(format!(
            "{what} device {} does not exist; give its size with --max-{what}-size to create it \
             as an image file",
            path.display()
        ))
    })?;
    let dev = FileDevice::create(path, size).map_err(|err| CmdError::Device {
        path: path.into(),
        action: "create",
        err,
    })?;
    created.0.push(path.into());
    Ok(dev)
}

/// Whether two paths name the same file or block device.
fn same_device(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => {
            (x.dev() == y.dev() && x.ino() == y.ino())
                || (x.file_type().is_block_device()
                    && y.file_type().is_block_device()
                    && x.rdev() == y.rdev())
        }
        _ => false,
    }
}

pub fn run(a: &Args, out: &mut dyn Write) -> Result<(), CmdError> {
    let meta_block_size = u32::try_from(a.meta_block_size)
        .map_err(|_| VolumeError::BadBlockSize(a.meta_block_size))?;
    let mut created = Created::default();
    let meta = open_or_create(&a.meta_device, a.max_meta_size, "meta", &mut created)?;
    let data = open_or_create(&a.data_device, a.max_data_size, "data", &mut created)?;
    if same_device(&a.meta_device, &a.data_device) {
        return Err(CmdError::Other(format!(
            "{} and {} are the same device; the meta and data devices must differ",
            a.meta_device.display(),
            a.data_device.display()
        )));
    }
    // Held while formatting: a device a mount (or another mkfs) holds is refused, with
    // or without -f.
    let _locks = crate::mount::lock_devices(
        &a.meta_device,
        &a.data_device,
        crate::mount::Exclusive::Mkfs,
    )?;
    let meta: Arc<dyn BlockDevice> = Arc::new(meta);
    let data: Arc<dyn BlockDevice> = Arc::new(data);
    let opts = MkfsOptions {
        meta_block_size,
        meta_size: a.max_meta_size,
        data_size: a.max_data_size,
        force: a.force,
        ..MkfsOptions::default()
    };
    let s = volume::mkfs(&meta, &data, &opts)?;
    created.keep();
    let meta_bytes = s.total_meta_blocks * u64::from(s.meta_block_size);
    let data_bytes = s.total_data_blocks * scoutfs_core::format::DATA_BLOCK_SIZE;
    writeln!(out, "Created scoutfs volume:")?;
    writeln!(out, "  fsid:              {:016x}", s.fsid)?;
    writeln!(out, "  meta block size:   {}", s.meta_block_size)?;
    writeln!(
        out,
        "  total meta blocks: {} ({})",
        s.total_meta_blocks,
        format_size(meta_bytes)
    )?;
    writeln!(
        out,
        "  total data blocks: {} ({})",
        s.total_data_blocks,
        format_size(data_bytes)
    )?;
    Ok(())
}
