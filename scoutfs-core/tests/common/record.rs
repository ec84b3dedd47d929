//! Crash points without copies: a pair of devices (meta and data) that record every write
//! and flush in one log, in the order they were issued, and the images a power cut
//! before any event of that log would leave, built as overlays over a shared durable
//! image (so ten thousand crash points of one workload cost no image copies).
//!
//! A [`Sweep`] walks the log: before each event it can hand out the devices a power cut
//! at that instant leaves (each write since its device's last flush kept, dropped or torn
//! at 512-byte sectors, by seed), then it applies the event (a flush makes its device's
//! pending writes durable in the base image).
//!
//! [`scripted`] sweeps a scripted filesystem workload with them: a power cut before every
//! event of its log.

use parking_lot::Mutex;
use scoutfs_core::block::splitmix64;
use scoutfs_core::check;
use scoutfs_core::device::{BlockDevice, DeviceError, Result as DevResult, SECTOR_SIZE};
use scoutfs_core::fs::{Fs, FsOptions};
use std::collections::HashMap;
use std::sync::Arc;

/// A device write or flush, as issued.
#[derive(Clone, Debug)]
pub enum Event {
    /// `data` written at `off` of device `dev` (0 meta, 1 data).
    Write {
        dev: usize,
        off: u64,
        data: Arc<[u8]>,
    },
    /// Device `dev` flushed.
    Flush { dev: usize },
}

/// The shared log of a device pair.
#[derive(Debug, Default)]
pub struct Log {
    /// Whether events are recorded.
    pub armed: bool,
    pub events: Vec<Event>,
}

/// An in-memory device whose writes and flushes go to a shared [`Log`].
#[derive(Debug)]
pub struct Recorder {
    dev: usize,
    img: Mutex<Vec<u8>>,
    log: Arc<Mutex<Log>>,
}

impl Recorder {
    /// A zeroed meta device and data device sharing one log (disarmed).
    pub fn pair(meta_len: u64, data_len: u64) -> (Arc<Recorder>, Arc<Recorder>, Arc<Mutex<Log>>) {
        let log = Arc::new(Mutex::new(Log::default()));
        let mk = |dev, len: u64| {
            Arc::new(Recorder {
                dev,
                img: Mutex::new(vec![0; len as usize]),
                log: log.clone(),
            })
        };
        (mk(0, meta_len), mk(1, data_len), log)
    }

    /// A copy of what reads see now.
    pub fn image(&self) -> Vec<u8> {
        self.img.lock().clone()
    }
}

fn range(
    op: &'static str,
    offset: u64,
    len: usize,
    size: u64,
) -> DevResult<std::ops::Range<usize>> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(offset as usize..end as usize),
        _ => Err(DeviceError::OutOfRange {
            op,
            offset,
            len,
            size,
        }),
    }
}

impl BlockDevice for Recorder {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> DevResult<()> {
        let img = self.img.lock();
        let r = range("read", offset, buf.len(), img.len() as u64)?;
        buf.copy_from_slice(&img[r]);
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> DevResult<()> {
        let mut img = self.img.lock();
        let r = range("write", offset, buf.len(), img.len() as u64)?;
        img[r].copy_from_slice(buf);
        let mut log = self.log.lock();
        if log.armed {
            log.events.push(Event::Write {
                dev: self.dev,
                off: offset,
                data: buf.into(),
            });
        }
        Ok(())
    }
    fn flush(&self) -> DevResult<()> {
        let mut log = self.log.lock();
        if log.armed {
            log.events.push(Event::Flush { dev: self.dev });
        }
        Ok(())
    }
    fn len(&self) -> u64 {
        self.img.lock().len() as u64
    }
}

const SECTOR: usize = SECTOR_SIZE as usize;

/// A device that reads a shared base image where it has not been written: the sectors
/// written (by a crash's surviving writes, or by a mount after it) are kept aside.
#[derive(Debug)]
pub struct Overlay {
    base: Arc<Vec<u8>>,
    over: Mutex<HashMap<usize, Box<[u8; SECTOR]>>>,
}

impl Overlay {
    pub fn new(base: Arc<Vec<u8>>) -> Overlay {
        Overlay {
            base,
            over: Mutex::new(HashMap::new()),
        }
    }

    /// Each sector-sized piece of `[r.start, r.end)` with its sector and offset in it.
    fn pieces(r: std::ops::Range<usize>) -> impl Iterator<Item = (usize, usize, usize, usize)> {
        let mut at = r.start;
        std::iter::from_fn(move || {
            if at >= r.end {
                return None;
            }
            let sector = at / SECTOR;
            let in_sec = at % SECTOR;
            let n = (SECTOR - in_sec).min(r.end - at);
            let piece = (sector, in_sec, at - r.start, n);
            at += n;
            Some(piece)
        })
    }
}

impl BlockDevice for Overlay {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> DevResult<()> {
        let r = range("read", offset, buf.len(), self.base.len() as u64)?;
        let over = self.over.lock();
        for (sector, in_sec, at, n) in Overlay::pieces(r.clone()) {
            let src = match over.get(&sector) {
                Some(s) => &s[in_sec..in_sec + n],
                None => &self.base[sector * SECTOR + in_sec..sector * SECTOR + in_sec + n],
            };
            buf[at..at + n].copy_from_slice(src);
        }
        Ok(())
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> DevResult<()> {
        let r = range("write", offset, buf.len(), self.base.len() as u64)?;
        let mut over = self.over.lock();
        for (sector, in_sec, at, n) in Overlay::pieces(r) {
            let s = over.entry(sector).or_insert_with(|| {
                let mut s = Box::new([0u8; SECTOR]);
                s.copy_from_slice(&self.base[sector * SECTOR..(sector + 1) * SECTOR]);
                s
            });
            s[in_sec..in_sec + n].copy_from_slice(&buf[at..at + n]);
        }
        Ok(())
    }
    fn flush(&self) -> DevResult<()> {
        Ok(())
    }
    fn len(&self) -> u64 {
        self.base.len() as u64
    }
}

/// The durable images of a device pair as a walk through its log reaches them.
#[derive(Debug)]
pub struct Sweep {
    base: [Arc<Vec<u8>>; 2],
    pending: [Vec<(u64, Arc<[u8]>)>; 2],
}

impl Sweep {
    /// Starting from durable images `meta` and `data` (the log's first event comes next).
    pub fn new(meta: Vec<u8>, data: Vec<u8>) -> Sweep {
        Sweep {
            base: [Arc::new(meta), Arc::new(data)],
            pending: [Vec::new(), Vec::new()],
        }
    }

    /// The devices a power cut that loses every unflushed write leaves.
    pub fn durable(&self) -> (Arc<Overlay>, Arc<Overlay>) {
        (
            Arc::new(Overlay::new(self.base[0].clone())),
            Arc::new(Overlay::new(self.base[1].clone())),
        )
    }

    /// Writes not yet flushed, of both devices.
    pub fn unflushed(&self) -> usize {
        self.pending[0].len() + self.pending[1].len()
    }

    /// The meta and data devices a power cut now leaves: each unflushed write kept,
    /// dropped or torn at sectors as the RNG seeded with `seed` decides.
    pub fn crash(&self, seed: u64) -> (Arc<Overlay>, Arc<Overlay>) {
        let mut rng = seed ^ 0x0c7a_54ed_0c7a_54ed;
        let mut devs = self.base.iter().zip(&self.pending).map(|(base, pending)| {
            let o = Overlay::new(base.clone());
            for (off, data) in pending {
                match splitmix64(&mut rng) % 3 {
                    0 => o.write_at(data, *off).expect("a logged write is in range"),
                    1 => {}
                    _ => {
                        for (i, s) in data.chunks(SECTOR).enumerate() {
                            if splitmix64(&mut rng) & 1 == 1 {
                                let at = *off + (i * SECTOR) as u64;
                                o.write_at(s, at).expect("a logged write is in range");
                            }
                        }
                    }
                }
            }
            Arc::new(o)
        });
        let meta = devs.next().expect("two devices");
        let data = devs.next().expect("two devices");
        (meta, data)
    }

    /// Apply the next event of the log.
    pub fn apply(&mut self, e: &Event) {
        match e {
            Event::Write { dev, off, data } => self.pending[*dev].push((*off, data.clone())),
            Event::Flush { dev } => {
                let base = Arc::make_mut(&mut self.base[*dev]);
                for (off, data) in self.pending[*dev].drain(..) {
                    base[off as usize..off as usize + data.len()].copy_from_slice(&data);
                }
            }
        }
    }
}

/// A fresh volume of 4 KiB metadata blocks on recording devices of `meta` and `data`
/// bytes (not recording yet).
pub fn recorded_volume(meta: u64, data: u64) -> (Arc<Recorder>, Arc<Recorder>, Arc<Mutex<Log>>) {
    let (m, d, log) = Recorder::pair(meta, data);
    let md: Arc<dyn BlockDevice> = m.clone();
    let dd: Arc<dyn BlockDevice> = d.clone();
    super::mkfs_on(&md, &dd, 4096);
    (m, d, log)
}

/// The options of a mount of a sweep: `tiny`, a cache whose transactions fill inside
/// operations (96 KiB of dirty memory).
pub fn sweep_opts(seed: u64, tiny: bool) -> FsOptions {
    FsOptions {
        cache_bytes: if tiny { 384 << 10 } else { 8 << 20 },
        seed: Some(seed),
        ..FsOptions::default()
    }
}

/// Run `setup` and then `work` on recording devices (16 MiB of metadata, 48 MiB of data,
/// a tiny cache), then mount what a power cut before each event of `work` (and after its
/// last) leaves, with every unflushed write dropped and then with them kept or torn by
/// seed, and hand each mount to `verify`; `check` must be clean after. Returns the crash
/// points.
pub fn scripted(
    setup: impl FnOnce(&Fs),
    work: impl FnOnce(&Fs),
    verify: impl Fn(&Fs) -> Result<(), String>,
) -> usize {
    sweep_script(setup, work, None, verify)
}

/// [`scripted`], with a read-only mount of each crash point handed to `peek` first: what
/// the power cut left committed, before a mount finishes what it interrupted.
pub fn scripted_peek(
    setup: impl FnOnce(&Fs),
    work: impl FnOnce(&Fs),
    peek: impl Fn(&Fs),
    verify: impl Fn(&Fs) -> Result<(), String>,
) -> usize {
    sweep_script(setup, work, Some(&peek), verify)
}

fn sweep_script(
    setup: impl FnOnce(&Fs),
    work: impl FnOnce(&Fs),
    peek: Option<&dyn Fn(&Fs)>,
    verify: impl Fn(&Fs) -> Result<(), String>,
) -> usize {
    let (meta, data, log) = recorded_volume(16 << 20, 48 << 20);
    let fs = Fs::mount_single(meta.clone(), data.clone(), sweep_opts(9, true)).unwrap();
    setup(&fs);
    fs.sync().unwrap();
    let (meta0, data0) = (meta.image(), data.image());
    log.lock().armed = true;
    work(&fs);
    assert_eq!(
        fs.overruns(),
        0,
        "operations changed more than they declared"
    );
    drop(fs);
    let events = std::mem::take(&mut log.lock().events);
    let mut sweep = Sweep::new(meta0, data0);
    for i in 0..=events.len() {
        for seed in [u64::MAX, i as u64] {
            // First with every unflushed write lost, then as a seed decides.
            let (m, d) = if seed == u64::MAX {
                sweep.durable()
            } else {
                sweep.crash(seed)
            };
            let md: Arc<dyn BlockDevice> = m;
            let dd: Arc<dyn BlockDevice> = d;
            if let Some(peek) = peek {
                let ro = FsOptions {
                    read_only: true,
                    ..sweep_opts(7, false)
                };
                let fs = Fs::mount_single(md.clone(), dd.clone(), ro)
                    .unwrap_or_else(|e| panic!("point {i}: read-only mount: {e}"));
                peek(&fs);
            }
            let fs = Fs::mount_single(md.clone(), dd.clone(), sweep_opts(7, false))
                .unwrap_or_else(|e| panic!("point {i}: remount: {e}"));
            if let Err(why) = verify(&fs) {
                panic!("power cut before event {i} of {}: {why}", events.len());
            }
            fs.unmount().unwrap();
            let r = check::check(&md, &dd).unwrap();
            assert!(r.is_clean(), "point {i}: {:#?}", r.problems);
        }
        if i < events.len() {
            sweep.apply(&events[i]);
        }
    }
    events.len() + 1
}
