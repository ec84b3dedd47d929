//! The embedded default: build a volume in image files, write and commit many items,
//! reopen the volume from the files, verify every item and the tree, and say what happened.
//!
//! ```sh
//! cargo run --release --example embedded [DIR] [ITEMS]
//! ```
//!
//! DIR defaults to `./scoutfs-demo`, ITEMS to 200000. A volume an earlier run left in DIR is
//! reopened and verified before it is written again; images that do not hold a sound
//! volume are left alone, and the demo stops.

use scoutfs_core::btree;
use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::format::Key;
use scoutfs_core::volume::{mkfs, MkfsOptions, OpenOptions, Volume, VolumeError};
use std::error::Error;
use std::ops::ControlFlow;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

const META_IMAGE: &str = "meta.img";
const DATA_IMAGE: &str = "data.img";
const META_SIZE: u64 = 256 << 20;
const DATA_SIZE: u64 = 64 << 20;
const COMMITS: u64 = 8;
const DEFAULT_ITEMS: u64 = 200_000;
/// Items of this demo live in their own zone of the key space.
const DEMO_ZONE: u8 = 200;

type Res<T> = Result<T, Box<dyn Error>>;

/// Item `i` of the demo: a 16-byte key (a hash of `i`, then `i`) and a 32-byte value.
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
    let meta: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(dir.join(META_IMAGE))?);
    let data: Arc<dyn BlockDevice> = Arc::new(FileDevice::open(dir.join(DATA_IMAGE))?);
    Volume::open(meta, data, OpenOptions::default())
}

fn make(dir: &Path) -> Res<Volume> {
    let t = Instant::now();
    let meta: Arc<dyn BlockDevice> = Arc::new(FileDevice::create(dir.join(META_IMAGE), META_SIZE)?);
    let data: Arc<dyn BlockDevice> = Arc::new(FileDevice::create(dir.join(DATA_IMAGE), DATA_SIZE)?);
    let s = mkfs(&meta, &data, &MkfsOptions::default())?;
    println!(
        "made a volume in {}: fsid {:016x}, {} KiB metadata blocks, {META_IMAGE} {} MiB and \
         {DATA_IMAGE} {} MiB (sparse files) ({:.2?})",
        dir.display(),
        s.fsid,
        s.meta_block_size / 1024,
        META_SIZE >> 20,
        DATA_SIZE >> 20,
        t.elapsed()
    );
    Ok(Volume::open(meta, data, OpenOptions::default())?)
}

/// Check the demo items the volume holds by scanning them in key order: each must be
/// `item(i)` for its `i`, and together they must be items `0..count`. Returns `count`.
fn scan_items(vol: &Volume) -> Res<u64> {
    let (mut count, mut last, mut bad) = (0u64, None::<u64>, None);
    vol.scan(
        &Key::new(DEMO_ZONE, 0, 0, 0, 0, 0),
        &Key::new(DEMO_ZONE, u64::MAX, u8::MAX, u64::MAX, u64::MAX, u8::MAX),
        |it| {
            let i = it.key.second;
            let (key, val) = item(i);
            if it.key != key || it.val != val {
                bad = Some(format!("item {} does not hold what was written", it.key));
                return ControlFlow::Break(());
            }
            count += 1;
            last = last.max(Some(i));
            ControlFlow::Continue(())
        },
    )?;
    if let Some(b) = bad {
        return Err(b.into());
    }
    if let Some(l) = last.filter(|&l| l + 1 != count) {
        return Err(format!("{count} items found, but the greatest is item {l}").into());
    }
    Ok(count)
}

/// Check that the volume holds exactly items `0..n`, each looked up by its key, and that
/// the tree keeps its invariants. Returns the tree's statistics.
fn verify(vol: &Volume, n: u64) -> Res<btree::TreeStats> {
    for i in 0..n {
        let (key, val) = item(i);
        match vol.get(&key)? {
            Some(it) if it.val == val => {}
            Some(_) => return Err(format!("item {i} holds the wrong value").into()),
            None => return Err(format!("item {i} is missing").into()),
        }
    }
    let count = scan_items(vol)?;
    if count != n {
        return Err(format!("found {count} items, expected {n}").into());
    }
    Ok(btree::verify(vol.writer(), &vol.root())?)
}

fn run(dir: &Path, n: u64) -> Res<()> {
    let started = Instant::now();
    std::fs::create_dir_all(dir)?;

    // Reuse what an earlier run left, once it checks out; make a new volume otherwise.
    let t = Instant::now();
    let images = [META_IMAGE, DATA_IMAGE].map(|f| dir.join(f).exists());
    let (mut vol, had) = if images.contains(&true) {
        if images.contains(&false) {
            let (have, lack) = match images[0] {
                true => (META_IMAGE, DATA_IMAGE),
                false => (DATA_IMAGE, META_IMAGE),
            };
            return Err(format!(
                "{} holds {have} but no {lack}; remove it to start over",
                dir.display()
            )
            .into());
        }
        let vol = open(dir).map_err(|e| {
            format!(
                "the images in {} do not open ({e}); remove them to start over",
                dir.display()
            )
        })?;
        let had = scan_items(&vol).and_then(|c| {
            btree::verify(vol.writer(), &vol.root())?;
            Ok(c)
        });
        let had = had.map_err(|e| {
            format!(
                "the volume in {} does not verify ({e}); remove its images to start over",
                dir.display()
            )
        })?;
        println!(
            "reopened the volume in {} at commit seq {} and verified its {had} items ({:.2?})",
            dir.display(),
            vol.super_block().seq.get(),
            t.elapsed()
        );
        (vol, had)
    } else {
        (make(dir)?, 0)
    };

    // Write items 0..n (rewriting those an earlier run wrote) in COMMITS transactions.
    let t = Instant::now();
    let per = n.div_ceil(COMMITS).max(1);
    let (mut blocks, mut commits) = (0, 0);
    for start in (0..n).step_by(per as usize) {
        vol.change(|tx, root| {
            for i in start..(start + per).min(n) {
                let (key, val) = item(i);
                tx.force(root, &key, &val)?;
            }
            Ok(())
        })?;
        blocks += vol.commit()?.blocks;
        commits += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "wrote {n} items (16-byte keys, 32-byte values) in {commits} commits: {secs:.2}s, \
         {:.0} items/s, {blocks} metadata blocks written",
        n as f64 / secs.max(1e-9)
    );
    let seq = vol.super_block().seq.get();
    drop(vol);

    let t = Instant::now();
    let vol = open(dir)?;
    if vol.super_block().seq.get() != seq {
        return Err("the reopened volume is not at the last commit".into());
    }
    println!(
        "dropped the volume and reopened it from the image files at commit seq {seq} ({:.2?})",
        t.elapsed()
    );
    let t = Instant::now();
    let expected = n.max(had);
    let st = verify(&vol, expected)?;
    println!(
        "verified all {expected} items (a lookup each and a scan) and the tree in {:.2}s: \
         height {}, {} blocks, {} leaves, {} items in the tree (with the root inode's 2)",
        t.elapsed().as_secs_f64(),
        st.height,
        st.blocks,
        st.leaves,
        st.items
    );
    let cs = vol.cache().stats();
    println!(
        "block cache: {} hits, {} misses, {} blocks, {:.1} MiB of a {:.1} MiB bound",
        cs.hits,
        cs.misses,
        cs.blocks,
        cs.bytes as f64 / (1 << 20) as f64,
        cs.limit as f64 / (1 << 20) as f64
    );
    println!(
        "free metadata blocks: {} of {}",
        vol.free_meta_blocks(),
        vol.super_block().total_meta_blocks.get()
    );
    println!("done in {:.2?}", started.elapsed());
    Ok(())
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "scoutfs-demo".into());
    let n = match args.next().map(|a| a.parse::<u64>()) {
        None => DEFAULT_ITEMS,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("usage: embedded [DIR] [ITEMS]: ITEMS must be a whole number");
            return ExitCode::from(2);
        }
    };
    match run(Path::new(&dir), n) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("embedded: {e}");
            ExitCode::FAILURE
        }
    }
}
