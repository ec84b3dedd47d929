//! The embedded default: build a volume in image files, write and commit many items,
//! reopen the volume from the files, verify every item and the tree, and say what happened.
//!
//! ```sh
//! cargo run --release --example embedded [DIR] [ITEMS]
//! ```
//!
//! DIR defaults to `./scoutfs-demo`, ITEMS to 200000. An existing volume in DIR is reopened
//! and verified first, then written again.

use scoutfs_core::btree;
use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::format::Key;
use scoutfs_core::volume::{mkfs, MkfsOptions, OpenOptions, Volume, VolumeError};
use std::error::Error;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const META_SIZE: u64 = 256 << 20;
const DATA_SIZE: u64 = 64 << 20;
const COMMITS: u64 = 8;
/// Items of this demo live in their own zone of the key space.
const DEMO_ZONE: u8 = 200;

/// The demo's 16-byte key `(a, b)` as a btree key, and its 32-byte value.
fn item(i: u64) -> (Key, [u8; 32]) {
    let a = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let key = Key::new(DEMO_ZONE, a, 0, i, 0, 0);
    let mut val = [0u8; 32];
    for (n, chunk) in val.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(a ^ n as u64).to_le_bytes());
    }
    (key, val)
}

fn open(dir: &Path) -> Result<Volume, VolumeError> {
    let meta: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(dir.join("meta.img"))?);
    let data: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(dir.join("data.img"))?);
    Volume::open(meta, data, OpenOptions::default())
}

/// Check that the volume holds exactly items `0..n` of the demo zone.
fn verify(vol: &Volume, n: u64) -> Result<(), Box<dyn Error>> {
    for i in 0..n {
        let (key, val) = item(i);
        match vol.get(&key)? {
            Some(it) if it.val == val => {}
            other => return Err(format!("item {i}: expected its value, found {other:?}").into()),
        }
    }
    let mut count = 0u64;
    vol.scan(
        &Key::new(DEMO_ZONE, 0, 0, 0, 0, 0),
        &Key::new(DEMO_ZONE, u64::MAX, u8::MAX, u64::MAX, u64::MAX, u8::MAX),
        |_| {
            count += 1;
            ControlFlow::Continue(())
        },
    )?;
    if count != n {
        return Err(format!("scan found {count} items, expected {n}").into());
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "scoutfs-demo".into());
    let n: u64 = match args.next() {
        Some(a) => a
            .parse()
            .map_err(|_| format!("ITEMS must be a number, not {a:?}"))?,
        None => 200_000,
    };
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir)?;

    let t = Instant::now();
    let mut vol = match open(dir) {
        Ok(vol) => {
            let had = vol.super_block().seq.get();
            println!(
                "reopened the volume in {} (commit seq {had})",
                dir.display()
            );
            vol
        }
        Err(e) => {
            if dir.join("meta.img").exists() {
                println!(
                    "existing images in {} do not open ({e}); making a new volume",
                    dir.display()
                );
            }
            let meta: Arc<dyn BlockDevice> =
                Arc::new(FileDevice::create(dir.join("meta.img"), META_SIZE)?);
            let data: Arc<dyn BlockDevice> =
                Arc::new(FileDevice::create(dir.join("data.img"), DATA_SIZE)?);
            let opts = MkfsOptions {
                force: true,
                ..MkfsOptions::default()
            };
            let s = mkfs(&meta, &data, &opts)?;
            println!(
                "made a volume in {}: fsid {:016x}, {} KiB metadata blocks, meta.img {} MiB, data.img {} MiB ({:.1?})",
                dir.display(),
                s.fsid,
                s.meta_block_size / 1024,
                META_SIZE >> 20,
                DATA_SIZE >> 20,
                t.elapsed()
            );
            Volume::open(meta, data, OpenOptions::default())?
        }
    };

    // Write items 0..n (replacing what an earlier run left) in COMMITS transactions.
    let t = Instant::now();
    let per = n.div_ceil(COMMITS).max(1);
    let mut blocks = 0;
    let mut commits = 0;
    for start in (0..n).step_by(per as usize) {
        vol.change(|tx, root| {
            for i in start..(start + per).min(n) {
                let (key, val) = item(i);
                tx.force(root, &key, &val)?;
            }
            Ok(())
        })?;
        let c = vol.commit()?;
        blocks += c.blocks;
        commits += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "wrote {n} items (16-byte keys, 32-byte values) in {commits} commits: {:.2}s, {:.0} items/s, {blocks} metadata blocks written",
        secs,
        n as f64 / secs
    );
    let seq = vol.super_block().seq.get();
    drop(vol);

    let t = Instant::now();
    let vol = open(dir)?;
    if vol.super_block().seq.get() != seq {
        return Err("the reopened volume is not at the last commit".into());
    }
    println!(
        "reopened from the image files at commit seq {seq} ({:.1?})",
        t.elapsed()
    );
    let t = Instant::now();
    verify(&vol, n)?;
    let st = btree::verify(vol.writer(), &vol.root())?;
    println!(
        "verified all {n} items and the tree in {:.2}s: height {}, {} blocks, {} leaves, {} items in all",
        t.elapsed().as_secs_f64(),
        st.height,
        st.blocks,
        st.leaves,
        st.items
    );
    let cs = vol.cache().stats();
    println!(
        "block cache: {} hits, {} misses, {} blocks, {} KiB of a {} MiB bound",
        cs.hits,
        cs.misses,
        cs.blocks,
        cs.bytes / 1024,
        cs.limit >> 20
    );
    println!("free metadata blocks: {}", vol.free_meta_blocks());
    Ok(())
}
