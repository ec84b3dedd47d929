#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Release and stage are atomic across a power cut (issue 14): a power cut before every
//! write and flush of a release (of one transaction, and of many: its steps commit
//! between crash points and the next mount finishes it from its record) and of a stage
//! (into whole offline extents, and into the middle of a long one) leaves the file wholly
//! as before or wholly as after — data_version, online and offline counts, offline
//! extents, the bytes read back — and `check` clean.

mod common;

use common::pattern;
use common::record::{scripted, scripted_peek};
use parking_lot::Mutex;
use scoutfs_core::fs::*;

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};
const BS: u64 = 4096;

fn ino_of(fs: &Fs, name: &[u8]) -> Result<u64, String> {
    fs.lookup(ROOT_INO, name)
        .map(|a| a.ino)
        .map_err(|e| format!("lookup: {e}"))
}

/// (data_version, online, offline) of `ino`.
fn state(fs: &Fs, ino: u64) -> Result<(u64, u64, u64), String> {
    let s = fs.stat_more(ino).map_err(|e| e.to_string())?;
    Ok((s.data_version, s.online_blocks, s.offline_blocks))
}

/// The file's fiemap: (logical block, blocks, offline).
fn extents(fs: &Fs, ino: u64) -> Result<Vec<(u64, u64, bool)>, String> {
    Ok(fs
        .fiemap(ino, 0, u64::MAX)
        .map_err(|e| e.to_string())?
        .iter()
        .map(|e| (e.logical / BS, e.length / BS, e.offline))
        .collect())
}

/// `len` bytes at `off`, which must be readable without waiting.
fn read_online(fs: &Fs, ino: u64, off: u64, len: usize) -> Result<Vec<u8>, String> {
    match fs
        .try_read(ino, off, len as u32)
        .map_err(|e| e.to_string())?
    {
        Waitable::Ready(v) => Ok(v),
        Waitable::Wait(w) => Err(format!("a read at {off} waits for block {}", w.iblock())),
    }
}

/// How many crash points found the file as before and as after the operation.
#[derive(Default)]
struct Seen(Mutex<[usize; 2]>);

impl Seen {
    fn saw(&self, after: bool) -> Result<(), String> {
        self.0.lock()[after as usize] += 1;
        Ok(())
    }

    /// Both states were seen: the sweep crossed the operation's commit.
    fn assert_both(&self, points: usize) {
        let s = *self.0.lock();
        assert!(
            s[0] > 0 && s[1] > 0,
            "{points} crash points: before/after {s:?}"
        );
    }
}

/// Whether a read of the block at `off` waits.
fn waits(fs: &Fs, ino: u64, off: u64) -> Result<bool, String> {
    Ok(matches!(
        fs.try_read(ino, off, 1).map_err(|e| e.to_string())?,
        Waitable::Wait(_)
    ))
}

/// A release of one transaction: a file of three extents (one partly released before),
/// released whole.
#[test]
fn a_release_is_whole_or_absent_at_every_crash_point() {
    let bytes = pattern(12 * BS as usize + 100, 1);
    let v0 = Mutex::new(0);
    let seen = Seen::default();
    let points = scripted(
        |fs| {
            let f = fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap().ino;
            for part in bytes.chunks(5 * BS as usize) {
                let off = part.as_ptr() as usize - bytes.as_ptr() as usize;
                fs.write(f, off as u64, part).unwrap();
            }
            let v = fs.stat_more(f).unwrap().data_version;
            fs.release_data(f, 7 * BS, BS, v).unwrap();
            *v0.lock() = v;
        },
        |fs| {
            let f = fs.lookup(ROOT_INO, b"f").unwrap().ino;
            fs.release_data(f, 0, 13 * BS, *v0.lock()).unwrap();
            fs.sync().unwrap();
            assert_eq!(fs.overruns(), 0);
        },
        |fs| {
            let f = ino_of(fs, b"f")?;
            let v = *v0.lock();
            match state(fs, f)? {
                s if s == (v, 12, 1) => {
                    let mut want = bytes.clone();
                    want.truncate(7 * BS as usize);
                    if read_online(fs, f, 0, want.len())? != want
                        || read_online(fs, f, 8 * BS, bytes.len())? != bytes[8 * BS as usize..]
                        || !waits(fs, f, 7 * BS)?
                    {
                        return Err("the bytes before the release changed".into());
                    }
                    seen.saw(false)
                }
                s if s == (v, 0, 13) => {
                    if extents(fs, f)? != vec![(0, 13, true)] || !waits(fs, f, 0)? {
                        return Err(format!("released: {:?}", extents(fs, f)?));
                    }
                    seen.saw(true)
                }
                s => Err(format!("(data_version, online, offline) {s:?}")),
            }
        },
    );
    seen.assert_both(points);
}

/// A release of 1,500 single-block extents commits between its steps (with a tiny
/// cache): some crash points leave it half done on the device (a read-only mount sees
/// both online and offline blocks), and the next mount finishes it from its record.
#[test]
fn a_release_of_many_extents_is_finished_by_the_next_mount() {
    let n = 1500u64;
    let halfway = Mutex::new(0usize);
    let seen = Seen::default();
    let points = scripted_peek(
        |fs| {
            let f = fs.mknod(ROOT_INO, b"big", 0o100644, 0, C).unwrap().ino;
            for e in 0..n {
                fs.write(f, e * 2 * BS, &[e as u8; 4096]).unwrap();
            }
        },
        |fs| {
            let f = fs.lookup(ROOT_INO, b"big").unwrap().ino;
            let v = fs.stat_more(f).unwrap().data_version;
            fs.release_data(f, 0, 2 * n * BS, v).unwrap();
            fs.sync().unwrap();
            assert_eq!(fs.overruns(), 0);
        },
        |fs| {
            let f = fs.lookup(ROOT_INO, b"big").unwrap().ino;
            let s = fs.stat_more(f).unwrap();
            if s.online_blocks > 0 && s.offline_blocks > 0 {
                *halfway.lock() += 1;
            }
        },
        |fs| {
            let f = ino_of(fs, b"big")?;
            match state(fs, f)? {
                (1500, 1500, 0) => {
                    for e in [0, 777, n - 1] {
                        let b = read_online(fs, f, e * 2 * BS, 4096)?;
                        if b != [e as u8; 4096] {
                            return Err(format!("extent {e} changed"));
                        }
                    }
                    seen.saw(false)
                }
                (1500, 0, 1500) => match (waits(fs, f, 0)?, waits(fs, f, (2 * n - 2) * BS)?) {
                    (true, true) => seen.saw(true),
                    w => Err(format!("released, but reads wait: {w:?}")),
                },
                s => Err(format!("(data_version, online, offline) {s:?}")),
            }
        },
    );
    let halfway = *halfway.lock();
    assert!(
        halfway > 0,
        "no crash point of {points} fell inside the release"
    );
    seen.assert_both(points);
}

/// A stage of 40 blocks into a released file: whole or absent, the bytes those of the
/// file before it was released, the data_version never moving.
#[test]
fn a_stage_is_whole_or_absent_at_every_crash_point() {
    let bytes = pattern(40 * BS as usize, 2);
    let v0 = Mutex::new(0);
    let seen = Seen::default();
    let points = scripted(
        |fs| {
            let f = fs.mknod(ROOT_INO, b"f", 0o100644, 0, C).unwrap().ino;
            fs.write(f, 0, &bytes).unwrap();
            let v = fs.stat_more(f).unwrap().data_version;
            fs.release_data(f, 0, 40 * BS, v).unwrap();
            *v0.lock() = v;
        },
        |fs| {
            let f = fs.lookup(ROOT_INO, b"f").unwrap().ino;
            fs.stage(f, 0, &bytes, *v0.lock()).unwrap();
            fs.sync().unwrap();
            assert_eq!(fs.overruns(), 0);
        },
        |fs| {
            let f = ino_of(fs, b"f")?;
            let v = *v0.lock();
            match state(fs, f)? {
                s if s == (v, 0, 40) => match waits(fs, f, 39 * BS)? {
                    true => seen.saw(false),
                    false => Err("offline, but a read does not wait".into()),
                },
                s if s == (v, 40, 0) => match read_online(fs, f, 0, bytes.len())? == bytes {
                    true => seen.saw(true),
                    false => Err("staged, with other bytes".into()),
                },
                s => Err(format!("(data_version, online, offline) {s:?}")),
            }
        },
    );
    seen.assert_both(points);
}

/// A stage into the middle of a restored file's one long offline extent (setattr_more):
/// the extent is split around the staged blocks, or not at all.
#[test]
fn a_stage_into_a_long_offline_extent_is_whole_or_absent() {
    let bytes = pattern(8 * BS as usize, 3);
    let seen = Seen::default();
    let points = scripted(
        |fs| {
            let f = fs.mknod(ROOT_INO, b"r", 0o100644, 0, C).unwrap().ino;
            let set = SetAttrMore {
                data_version: 9,
                size: 3000 * BS,
                offline: true,
                ..Default::default()
            };
            fs.setattr_more(f, &set).unwrap();
        },
        |fs| {
            let f = fs.lookup(ROOT_INO, b"r").unwrap().ino;
            fs.stage(f, 1500 * BS, &bytes, 9).unwrap();
            fs.sync().unwrap();
            assert_eq!(fs.overruns(), 0);
        },
        |fs| {
            let f = ino_of(fs, b"r")?;
            let ext = extents(fs, f)?;
            match state(fs, f)? {
                (9, 0, 3000) if ext == vec![(0, 3000, true)] => seen.saw(false),
                (9, 8, 2992)
                    if ext == vec![(0, 1500, true), (1500, 8, false), (1508, 1492, true)] =>
                {
                    match read_online(fs, f, 1500 * BS, bytes.len())? == bytes {
                        true => seen.saw(true),
                        false => Err("staged, with other bytes".into()),
                    }
                }
                s => Err(format!(
                    "(data_version, online, offline) {s:?}, extents {ext:?}"
                )),
            }
        },
    );
    seen.assert_both(points);
}
