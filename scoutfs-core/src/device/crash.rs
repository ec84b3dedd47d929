//! A device that simulates losing power.
//!
//! It keeps two images: *live* (what reads see) and *durable* (what survives a crash), and
//! the writes issued since the last flush, in order. A flush makes them durable. A crash
//! decides, for each unflushed write and by a seeded RNG, whether it reached the media
//! whole, not at all, or torn (some of its 512-byte sectors written, the others not);
//! then the durable image becomes the live one, as after a reboot.

use super::{check_range, BlockDevice, Result};
use crate::block::splitmix64;
use parking_lot::Mutex;

/// The unit a torn write is torn at.
pub const SECTOR_SIZE: u64 = 512;

/// What a crash did to the unflushed writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashStats {
    /// Writes not yet flushed when the crash came.
    pub unflushed: usize,
    /// Writes that reached the media whole.
    pub kept: usize,
    /// Writes lost entirely.
    pub dropped: usize,
    /// Writes of which only some sectors reached the media.
    pub torn: usize,
}

#[derive(Debug)]
struct Images {
    live: Vec<u8>,
    durable: Vec<u8>,
    unflushed: Vec<(u64, Vec<u8>)>,
}

/// An in-memory device with a live and a durable image.
pub struct CrashDevice {
    images: Mutex<Images>,
}

impl std::fmt::Debug for CrashDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let i = self.images.lock();
        f.debug_struct("CrashDevice")
            .field("len", &i.live.len())
            .field("unflushed", &i.unflushed.len())
            .finish()
    }
}

impl CrashDevice {
    /// A zeroed device of `size` bytes.
    pub fn new(size: u64) -> CrashDevice {
        CrashDevice::from_bytes(vec![0; usize::try_from(size).unwrap_or(usize::MAX)])
    }

    /// A device whose live and durable images are `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> CrashDevice {
        CrashDevice {
            images: Mutex::new(Images {
                live: bytes.clone(),
                durable: bytes,
                unflushed: Vec::new(),
            }),
        }
    }

    /// An independent copy of this device, unflushed writes included: crash the copy to
    /// see what a power cut at this instant would leave, while this one goes on.
    pub fn fork(&self) -> CrashDevice {
        let i = self.images.lock();
        CrashDevice {
            images: Mutex::new(Images {
                live: i.live.clone(),
                durable: i.durable.clone(),
                unflushed: i.unflushed.clone(),
            }),
        }
    }

    /// A copy of what would survive a crash that loses every unflushed write.
    pub fn durable_snapshot(&self) -> Vec<u8> {
        self.images.lock().durable.clone()
    }

    /// A copy of what reads see now.
    pub fn live_snapshot(&self) -> Vec<u8> {
        self.images.lock().live.clone()
    }

    /// Writes issued since the last flush.
    pub fn unflushed_writes(&self) -> usize {
        self.images.lock().unflushed.len()
    }

    /// Lose power: each unflushed write is kept, dropped or torn as the RNG seeded with
    /// `seed` decides; afterwards reads see what reached the media.
    pub fn crash(&self, seed: u64) -> CrashStats {
        let mut rng = seed ^ 0x5c0f_7f5c_0f7f_5c0f;
        let mut guard = self.images.lock();
        let imgs = &mut *guard;
        let mut st = CrashStats {
            unflushed: imgs.unflushed.len(),
            ..CrashStats::default()
        };
        for (off, data) in imgs.unflushed.drain(..) {
            let start = off as usize;
            let choice = splitmix64(&mut rng) % 3;
            let sectors = sectors_of(off, data.len());
            if choice == 2 && sectors.len() > 1 {
                st.torn += 1;
                for (s, e) in sectors {
                    if splitmix64(&mut rng) & 1 == 1 {
                        imgs.durable[start + s..start + e].copy_from_slice(&data[s..e]);
                    }
                }
            } else if choice == 0 {
                st.kept += 1;
                imgs.durable[start..start + data.len()].copy_from_slice(&data);
            } else {
                st.dropped += 1;
            }
        }
        imgs.live.clone_from(&imgs.durable);
        st
    }

    /// Lose power with every unflushed write lost.
    pub fn crash_all_lost(&self) -> CrashStats {
        let mut imgs = self.images.lock();
        let st = CrashStats {
            unflushed: imgs.unflushed.len(),
            dropped: imgs.unflushed.len(),
            ..CrashStats::default()
        };
        imgs.unflushed.clear();
        let durable = imgs.durable.clone();
        imgs.live = durable;
        st
    }
}

/// The sector-aligned pieces of a write at `off` of `len` bytes, as ranges within the write.
fn sectors_of(off: u64, len: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < len {
        let abs = off + pos as u64;
        let next_boundary = (abs / SECTOR_SIZE + 1) * SECTOR_SIZE;
        let end = ((next_boundary - off) as usize).min(len);
        out.push((pos, end));
        pos = end;
    }
    out
}

impl BlockDevice for CrashDevice {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let imgs = self.images.lock();
        check_range("read", offset, buf.len(), imgs.live.len() as u64)?;
        let start = offset as usize;
        buf.copy_from_slice(&imgs.live[start..start + buf.len()]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        let mut imgs = self.images.lock();
        check_range("write", offset, buf.len(), imgs.live.len() as u64)?;
        let start = offset as usize;
        imgs.live[start..start + buf.len()].copy_from_slice(buf);
        imgs.unflushed.push((offset, buf.to_vec()));
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let mut guard = self.images.lock();
        let imgs = &mut *guard;
        for (off, data) in imgs.unflushed.drain(..) {
            let start = off as usize;
            imgs.durable[start..start + data.len()].copy_from_slice(&data);
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.images.lock().live.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flushed_writes_survive_every_crash() {
        for seed in 0..200 {
            let dev = CrashDevice::new(64 * 1024);
            dev.write_at(&[7u8; 4096], 8192).unwrap();
            dev.flush().unwrap();
            dev.write_at(&[9u8; 4096], 0).unwrap();
            dev.crash(seed);
            let mut b = [0u8; 4096];
            dev.read_at(&mut b, 8192).unwrap();
            assert_eq!(b, [7u8; 4096]);
            assert_eq!(dev.live_snapshot(), dev.durable_snapshot());
            assert_eq!(dev.unflushed_writes(), 0);
        }
    }

    #[test]
    fn unflushed_writes_are_kept_dropped_or_torn_by_sector() {
        let mut total = CrashStats::default();
        for seed in 0..300 {
            let dev = CrashDevice::new(64 * 1024);
            // Unaligned writes straddle sector boundaries.
            dev.write_at(&[1u8; 3000], 100).unwrap();
            dev.write_at(&[2u8; 4096], 8192).unwrap();
            dev.write_at(&[3u8; 10], 20000).unwrap();
            let st = dev.crash(seed);
            assert_eq!(st.unflushed, 3);
            assert_eq!(st.kept + st.dropped + st.torn, 3);
            total.kept += st.kept;
            total.dropped += st.dropped;
            total.torn += st.torn;
            let img = dev.live_snapshot();
            // Every sector piece of a write is all old (0) or all new.
            for (off, len, v) in [(100u64, 3000usize, 1u8), (8192, 4096, 2)] {
                for (s, e) in sectors_of(off, len) {
                    let piece = &img[off as usize + s..off as usize + e];
                    assert!(piece.iter().all(|&b| b == 0) || piece.iter().all(|&b| b == v));
                }
            }
            // A write within one sector is never torn.
            let small = &img[20000..20010];
            assert!(small.iter().all(|&b| b == 0) || small.iter().all(|&b| b == 3));
            // The same seed gives the same result.
            let again = CrashDevice::new(64 * 1024);
            again.write_at(&[1u8; 3000], 100).unwrap();
            again.write_at(&[2u8; 4096], 8192).unwrap();
            again.write_at(&[3u8; 10], 20000).unwrap();
            assert_eq!(again.crash(seed), st);
            assert_eq!(again.live_snapshot(), img);
        }
        assert!(
            total.kept > 0 && total.dropped > 0 && total.torn > 0,
            "{total:?}"
        );
    }

    #[test]
    fn crash_all_lost_drops_everything_unflushed() {
        let dev = CrashDevice::new(4096);
        dev.write_at(&[5], 0).unwrap();
        dev.flush().unwrap();
        dev.write_at(&[6], 0).unwrap();
        assert_eq!(dev.crash_all_lost().dropped, 1);
        let mut b = [0u8];
        dev.read_at(&mut b, 0).unwrap();
        assert_eq!(b, [5]);
    }
}
