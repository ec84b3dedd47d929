#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `SEEK_DATA`/`SEEK_HOLE` against a block model of a file (written blocks are data;
//! holes, unwritten extents and everything from the size on are holes), and `fallocate`
//! that runs out of space giving back what it allocated.

mod common;

use common::Rng;
use scoutfs_core::device::BlockDevice;
use scoutfs_core::format::{DATA_BLOCK_SIZE as BS, ROOT_INO};
use scoutfs_core::fs::*;
use std::sync::Arc;
use SeekTarget::{Data, Hole};

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0o022,
};

fn mount(meta_mb: u64, data_mb: u64) -> (Arc<dyn BlockDevice>, Arc<dyn BlockDevice>, Fs) {
    let (meta, data) = common::volume_of(meta_mb, data_mb, 4096);
    let fs = Fs::mount_single(meta.clone(), data.clone(), FsOptions::default()).unwrap();
    (meta, data, fs)
}

fn file(fs: &Fs, name: &str) -> u64 {
    fs.mknod(ROOT_INO, name.as_bytes(), 0o100644, 0, C)
        .unwrap()
        .ino
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    Hole,
    Unwritten,
    Written,
}

/// What the file should hold, block by block.
struct Model {
    blocks: Vec<Block>,
    size: u64,
}

impl Model {
    fn block(&self, b: u64) -> Block {
        self.blocks.get(b as usize).copied().unwrap_or(Block::Hole)
    }

    fn set(&mut self, b: u64, v: Block) {
        if self.blocks.len() <= b as usize {
            self.blocks.resize(b as usize + 1, Block::Hole);
        }
        self.blocks[b as usize] = v;
    }

    fn write(&mut self, off: u64, len: u64) {
        for b in off / BS..=(off + len - 1) / BS {
            self.set(b, Block::Written);
        }
        self.size = self.size.max(off + len);
    }

    fn fallocate(&mut self, off: u64, len: u64, keep: bool) {
        for b in off / BS..=(off + len - 1) / BS {
            if self.block(b) == Block::Hole {
                self.set(b, Block::Unwritten);
            }
        }
        if !keep {
            self.size = self.size.max(off + len);
        }
    }

    fn truncate(&mut self, size: u64) {
        if size < self.size {
            for b in size.div_ceil(BS)..self.blocks.len() as u64 {
                self.set(b, Block::Hole);
            }
        }
        self.size = size;
    }

    fn seek(&self, off: u64, target: SeekTarget) -> Option<u64> {
        if off >= self.size {
            return None;
        }
        let end = self.size.div_ceil(BS);
        for b in off / BS..end {
            let data = self.block(b) == Block::Written;
            if data == (target == SeekTarget::Data) {
                return Some((b * BS).max(off).min(self.size));
            }
        }
        match target {
            SeekTarget::Data => None,
            SeekTarget::Hole => Some(self.size),
        }
    }
}

/// Every block boundary, bytes inside every seventh block and the bytes around the size.
fn offsets(m: &Model) -> Vec<u64> {
    let mut v = Vec::new();
    for b in 0..m.size.div_ceil(BS) + 2 {
        v.push(b * BS);
        if b % 7 == 0 {
            v.extend([b * BS + 1, b * BS + BS - 1]);
        }
    }
    v.extend([m.size.saturating_sub(1), m.size, m.size + 1, u64::MAX]);
    v
}

fn assert_seeks(fs: &Fs, ino: u64, m: &Model, what: &str) {
    for off in offsets(m) {
        for t in [SeekTarget::Data, SeekTarget::Hole] {
            let got = fs.seek_data_hole(ino, off, t).unwrap();
            assert_eq!(
                got,
                m.seek(off, t),
                "{what}: {t:?} from {off} (size {})",
                m.size
            );
        }
    }
}

/// Each `(off, target, answer)` of `cases` is what seeking file `ino` gives.
fn expect_seeks(fs: &Fs, ino: u64, cases: &[(u64, SeekTarget, Option<u64>)]) {
    for &(off, t, want) in cases {
        assert_eq!(
            fs.seek_data_hole(ino, off, t).unwrap(),
            want,
            "{t:?} from {off}"
        );
    }
}

#[test]
fn seek_finds_holes_and_data_of_a_sparse_file() {
    let (_m, _d, fs) = mount(16, 16);
    let f = file(&fs, "sparse");
    let mut m = Model {
        blocks: Vec::new(),
        size: 0,
    };
    // An empty file: ENXIO for both.
    expect_seeks(&fs, f, &[(0, Data, None), (0, Hole, None)]);
    // Data, a hole, data, an unwritten extent, and a partial last block.
    fs.write(f, 0, &[1; 5000]).unwrap();
    m.write(0, 5000);
    fs.write(f, 10 * BS + 7, &[2; 100]).unwrap();
    m.write(10 * BS + 7, 100);
    fs.fallocate(f, 20 * BS, 3 * BS, false).unwrap();
    m.fallocate(20 * BS, 3 * BS, false);
    fs.write(f, 30 * BS, &[3; 10]).unwrap();
    m.write(30 * BS, 10);
    assert_seeks(&fs, f, &m, "sparse file");
    expect_seeks(
        &fs,
        f,
        &[(0, Hole, Some(2 * BS)), (2 * BS, Data, Some(10 * BS))],
    );
    // The unwritten extent is a hole; the size is where the last hole starts.
    expect_seeks(
        &fs,
        f,
        &[
            (20 * BS, Data, Some(30 * BS)),
            (30 * BS, Hole, Some(30 * BS + 10)),
        ],
    );
    // Unwritten extents past the size (keep_size) change nothing.
    fs.fallocate(f, 40 * BS, 4 * BS, true).unwrap();
    m.fallocate(40 * BS, 4 * BS, true);
    assert_seeks(&fs, f, &m, "fallocated past the end");
    // Runs longer than one scan's batch of extent items: 300 one-block written extents
    // end to end (SEEK_HOLE reads past the batch), then 300 one-block unwritten ones
    // before the next data (SEEK_DATA does).
    let g = file(&fs, "runs");
    for b in 0..300 {
        fs.write(g, b * BS, &[1; BS as usize]).unwrap();
    }
    for b in 300..600 {
        fs.fallocate(g, b * BS, BS, false).unwrap();
    }
    fs.write(g, 600 * BS, &[2; 10]).unwrap();
    expect_seeks(
        &fs,
        g,
        &[
            (0, Hole, Some(300 * BS)),
            (5, Data, Some(5)),
            (300 * BS, Data, Some(600 * BS)),
            (300 * BS, Hole, Some(300 * BS)),
            (600 * BS, Hole, Some(600 * BS + 10)),
        ],
    );
    // Not a regular file.
    assert_eq!(
        fs.seek_data_hole(ROOT_INO, 0, SeekTarget::Data)
            .unwrap_err()
            .errno(),
        21
    );
    assert_eq!(
        fs.seek_data_hole(12345, 0, SeekTarget::Data)
            .unwrap_err()
            .errno(),
        2
    );
}

/// Random writes, fallocates and truncates over hundreds of small extents (more than one
/// scan's batch), every answer compared with the model.
#[test]
fn seek_matches_a_model_over_many_extents() {
    let (_m, _d, fs) = mount(32, 32);
    for seed in 1..=2u64 {
        let mut rng = Rng(seed);
        let f = file(&fs, &format!("f{seed}"));
        let mut m = Model {
            blocks: Vec::new(),
            size: 0,
        };
        // Every other block of the first 700 written: 350 one-block extents.
        for b in (0..700).step_by(2) {
            fs.write(f, b * BS, &[9; 16]).unwrap();
            m.write(b * BS, 16);
        }
        assert_seeks(&fs, f, &m, &format!("seed {seed}: striped"));
        for step in 0..40 {
            let off = rng.below(900 * BS);
            let len = 1 + rng.below(20 * BS);
            match rng.below(4) {
                0 => {
                    fs.write(f, off, &vec![5; len as usize]).unwrap();
                    m.write(off, len);
                }
                1 | 2 => {
                    let keep = rng.below(2) == 0;
                    fs.fallocate(f, off, len, keep).unwrap();
                    m.fallocate(off, len, keep);
                }
                _ => {
                    let size = rng.below(900 * BS);
                    fs.setattr(
                        f,
                        &SetAttr {
                            size: Some(size),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                    m.truncate(size);
                }
            }
            if step % 20 == 19 {
                assert_seeks(&fs, f, &m, &format!("seed {seed} step {step}"));
            }
        }
    }
}

/// `fallocate` past the free space fails with ENOSPC and leaves the file and the free
/// space as they were (once the mount has committed: freed blocks come back to the free
/// count with the commit that frees them), and the volume checks clean.
#[test]
fn fallocate_out_of_space_gives_back_what_it_allocated() {
    let (meta, data, fs) = mount(16, 16);
    let f = file(&fs, "f");
    fs.write(f, 3 * BS, &[7; 5000]).unwrap();
    fs.sync().unwrap();
    let before = fs.statfs().unwrap();
    let attr = fs.getattr(f).unwrap();
    for (off, keep) in [(0, false), (0, true), (1 << 20, false)] {
        let err = fs.fallocate(f, off, 64 << 20, keep).unwrap_err();
        assert_eq!(err.errno(), 28, "{err}");
        let now = fs.getattr(f).unwrap();
        assert_eq!((now.size, now.blocks), (attr.size, attr.blocks));
        assert_eq!(
            fs.read(f, 0, 16 * BS as u32).unwrap().len(),
            attr.size as usize
        );
        assert_eq!(
            fs.read(f, 3 * BS, 5000).unwrap(),
            vec![7; 5000],
            "bytes kept"
        );
        // No unwritten extent left behind: past the data, all hole.
        assert_eq!(
            fs.seek_data_hole(f, 0, SeekTarget::Hole).unwrap(),
            Some(0),
            "the hole before the data"
        );
        fs.sync().unwrap();
        assert_eq!(fs.statfs().unwrap().bfree, before.bfree, "free space");
    }
    // The space given back is usable: a fallocate that fits succeeds.
    fs.fallocate(f, 0, before.bfree * BS / 2, false).unwrap();
    fs.unmount().unwrap();
    common::assert_fs_clean(&meta, &data, "after the failed fallocates");
}

/// A fallocate of more extents than a transaction's metadata list covers, past the free
/// space: it steps as the transaction fills, and gives everything back in steps too —
/// the mount goes on (before, giving back a thousand extents at once ran the list dry
/// and stopped the mount's changes).
#[test]
fn a_fallocate_of_many_extents_past_the_free_space_gives_back_in_steps() {
    let (meta, data) = common::volume_of(64, 512, 65536);
    let fs = Fs::mount_single(meta.clone(), data.clone(), FsOptions::default()).unwrap();
    let f = file(&fs, "big");
    fs.sync().unwrap();
    let before = fs.statfs().unwrap();
    let err = fs
        .fallocate(f, 0, (before.bavail + 4096) * BS, false)
        .unwrap_err();
    assert_eq!(err.errno(), 28, "{err}");
    let a = fs.getattr(f).unwrap();
    assert_eq!((a.size, a.blocks), (0, 0));
    fs.fsync(f, false).unwrap();
    assert_eq!(fs.statfs().unwrap().bfree, before.bfree, "free space");
    fs.fallocate(f, 0, before.bfree * BS / 2, false).unwrap();
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    common::assert_fs_clean(&meta, &data, "after the failed fallocate");
}
