//! A device backed by an image file or a raw block device.

use super::{check_range, BlockDevice, DeviceError, Result};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

/// An image file or a block device, accessed with positional reads and writes; `flush` is
/// `fdatasync`. The size is read once at open.
#[derive(Debug)]
pub struct FileDevice {
    file: File,
    len: u64,
}

fn io(op: &'static str, offset: u64) -> impl FnOnce(std::io::Error) -> DeviceError {
    move |source| DeviceError::Io { op, offset, source }
}

impl FileDevice {
    /// Open an existing image file or block device for reading and writing.
    pub fn open(path: impl AsRef<Path>) -> Result<FileDevice> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io("open", 0))?;
        FileDevice::from_file(file)
    }

    /// Open an existing image file or block device for reading only; writes fail.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<FileDevice> {
        let file = File::open(path).map_err(io("open", 0))?;
        FileDevice::from_file(file)
    }

    /// Create (or truncate) a sparse image file of `size` bytes.
    pub fn create(path: impl AsRef<Path>, size: u64) -> Result<FileDevice> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io("create", 0))?;
        file.set_len(size).map_err(io("set_len", size))?;
        FileDevice::from_file(file)
    }

    /// Use an open file; its size is taken now.
    pub fn from_file(mut file: File) -> Result<FileDevice> {
        let meta = file.metadata().map_err(io("stat", 0))?;
        let ft = meta.file_type();
        let len = if ft.is_block_device() {
            file.seek(SeekFrom::End(0)).map_err(io("seek", 0))?
        } else if ft.is_file() {
            meta.len()
        } else {
            return Err(DeviceError::Io {
                op: "open",
                offset: 0,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a regular file or block device",
                ),
            });
        };
        Ok(FileDevice { file, len })
    }
}

impl BlockDevice for FileDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        check_range("read", offset, buf.len(), self.len)?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(io("read", offset))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        check_range("write", offset, buf.len(), self.len)?;
        self.file
            .write_all_at(buf, offset)
            .map_err(io("write", offset))
    }

    fn flush(&self) -> Result<()> {
        self.file.sync_data().map_err(io("flush", 0))
    }

    fn len(&self) -> u64 {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_sparse_and_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev.img");
        let dev = FileDevice::create(&path, 1 << 30).unwrap();
        assert_eq!(dev.len(), 1 << 30);
        // Sparse: a 1 GiB image takes almost no space.
        let used = std::fs::metadata(&path).map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.blocks() * 512
        });
        assert!(used.unwrap() < 1 << 20);
        dev.write_at(b"hello", 4096).unwrap();
        dev.flush().unwrap();
        let dev = FileDevice::open(&path).unwrap();
        let mut buf = [0u8; 5];
        dev.read_at(&mut buf, 4096).unwrap();
        assert_eq!(&buf, b"hello");
        assert!(matches!(
            dev.read_at(&mut buf, (1 << 30) - 2),
            Err(DeviceError::OutOfRange { .. })
        ));
        assert!(matches!(
            dev.write_at(&buf, u64::MAX - 1),
            Err(DeviceError::OutOfRange { .. })
        ));
        let ro = FileDevice::open_read_only(&path).unwrap();
        ro.read_at(&mut buf, 4096).unwrap();
        assert!(matches!(ro.write_at(&buf, 0), Err(DeviceError::Io { .. })));
    }

    #[test]
    fn refuses_directories_and_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        assert!(FileDevice::open(dir.path()).is_err());
        assert!(FileDevice::open(dir.path().join("missing")).is_err());
    }
}
