//! Volumes on memory devices, the check every test ends with, and a clock the test moves.

use scoutfs_core::block::{BlockCache, Geometry};
use scoutfs_core::check;
use scoutfs_core::device::{BlockDevice, MemDevice};
use scoutfs_core::fs::{Clock, Timespec};
use scoutfs_core::volume::{mkfs, MkfsOptions, OpenOptions, Volume};
use std::sync::Arc;

/// A volume's metadata and data devices.
pub type Devices = (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>);

/// Make a volume on `meta` and `data` with `bs`-byte metadata blocks (and a fixed fsid,
/// so that a seed replays the same blocks).
pub fn mkfs_on(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>, bs: u32) {
    mkfs(
        meta,
        data,
        &MkfsOptions {
            meta_block_size: bs,
            fsid: Some(0x5ca1e),
            ..Default::default()
        },
    )
    .unwrap();
}

/// A fresh volume on memory devices: `meta_mb` MiB of `bs`-byte metadata blocks and
/// `data_mb` MiB of data.
pub fn volume_of(meta_mb: u64, data_mb: u64, bs: u32) -> Devices {
    volume_bytes(meta_mb << 20, data_mb << 20, bs)
}

/// [`volume_of`] with 16 MiB of data.
pub fn volume(meta_mb: u64, bs: u32) -> Devices {
    volume_of(meta_mb, 16, bs)
}

/// [`volume_of`] sized in bytes.
pub fn volume_bytes(meta_bytes: u64, data_bytes: u64, bs: u32) -> Devices {
    let meta: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(meta_bytes));
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(data_bytes));
    mkfs_on(&meta, &data, bs);
    (meta, data)
}

/// A fresh volume of [`volume_of`], opened with the default options.
pub fn open_volume(meta_mb: u64, data_mb: u64, bs: u32) -> Volume {
    let (meta, data) = volume_of(meta_mb, data_mb, bs);
    Volume::open(meta, data, OpenOptions::default()).unwrap()
}

/// `check` finds nothing wrong with the blocks of the volume (its namespace pass left
/// out: a volume of raw items is not a filesystem); on failure, `what` and every problem.
#[track_caller]
pub fn assert_clean(meta: &Arc<dyn BlockDevice>, data: &Arc<dyn BlockDevice>, what: &str) {
    let rep = check::check_blocks(meta, data).unwrap();
    assert!(rep.is_clean(), "{what}: {:#?}", rep.problems);
}

/// `check`, its namespace pass included, finds nothing wrong with a filesystem volume.
#[track_caller]
pub fn assert_fs_clean(
    meta: &Arc<dyn BlockDevice>,
    data: &Arc<dyn BlockDevice>,
    what: &str,
) -> check::CheckReport {
    let rep = check::check(meta, data).unwrap();
    assert!(rep.is_clean(), "{what}: {:#?}", rep.problems);
    assert!(
        rep.namespace_checked,
        "{what}: the namespace pass did not run"
    );
    rep
}

/// A clock the test sets and moves.
#[derive(Debug, Default)]
pub struct TestClock(parking_lot::Mutex<Timespec>);

impl TestClock {
    pub fn set(&self, sec: i64) {
        *self.0.lock() = Timespec { sec, nsec: 0 };
    }
    pub fn advance(&self, secs: i64) {
        self.0.lock().sec += secs;
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timespec {
        *self.0.lock()
    }
}

/// A bare block cache of `cache_bytes` over a zeroed memory device of `total_blocks`
/// blocks of `block_size` bytes, the blocks before `first_blkno` reserved: for tests of
/// the btree and the allocators below a volume.
pub fn raw_cache(
    block_size: usize,
    first_blkno: u64,
    total_blocks: u64,
    fsid: u64,
    cache_bytes: usize,
) -> (Arc<dyn BlockDevice>, Geometry, Arc<BlockCache>) {
    let geo = Geometry {
        block_size,
        fsid,
        first_blkno,
        total_blocks,
    };
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(total_blocks * block_size as u64));
    let cache = Arc::new(BlockCache::new(dev.clone(), geo, cache_bytes));
    (dev, geo, cache)
}
