//! Harnesses that feed arbitrary bytes to every block decoder and btree read path. The
//! cargo-fuzz targets in `fuzz/` call them, and a property test runs them in `cargo test`.
//! They return nothing: the property is that they return at all, without panicking.

use crate::alloc::FreeSet;
use crate::block::{seal_block, verify_block, BlockCache, BlockWriter, Geometry};
use crate::btree::{self, FreeProgress, TreeTxn};
use crate::device::{BlockDevice, MemDevice};
use crate::format::*;
use crate::volume;
use std::ops::ControlFlow;
use std::sync::Arc;
use zerocopy::{FromBytes, IntoBytes};

const BS: usize = 512;
const FIRST: u64 = 2;
const FSID: u64 = 0xf022;

fn seq_of(blkno: u64) -> u64 {
    blkno.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1
}

/// Every decoder of raw bytes: the super (both slots, via `read_super`), block header
/// verification, btree block validation through the cache (as a btree, a free-extent
/// tree and a srch file), and the format structs.
pub fn decode_blocks(data: &[u8]) {
    // The super: the input placed at the first super slot of an otherwise empty device.
    let mut img = vec![0u8; (SUPER_OFFSET as usize) + SUPER_SIZE * 2];
    let n = data.len().min(SUPER_SIZE * 2);
    img[SUPER_OFFSET as usize..SUPER_OFFSET as usize + n].copy_from_slice(&data[..n]);
    let dev = MemDevice::from_bytes(img.clone());
    let _ = volume::read_super(&dev, "meta");
    // The same with valid checksums, so the checks after the crc are reached too.
    for slot in 0..2 {
        let s = SUPER_OFFSET as usize + slot * SUPER_SIZE;
        seal_block(&mut img[s..s + SUPER_SIZE]);
    }
    let _ = volume::read_super(&MemDevice::from_bytes(img), "meta");

    // Header verification against an arbitrary reference.
    let r = BlockRef {
        blkno: u64::from_le_bytes(
            data.get(..8)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 8]),
        ),
        seq: 1,
    };
    let _ = verify_block(data, r, MAGIC_BTREE, FSID);

    // A btree block: stamp a valid header on the input and read it through the cache.
    let mut blk = vec![0u8; BS];
    let n = data.len().min(BS);
    blk[..n].copy_from_slice(&data[..n]);
    let r = BlockRef {
        blkno: FIRST,
        seq: seq_of(FIRST),
    };
    stamp(&mut blk, r);
    let mut img = vec![0u8; (FIRST as usize + 1) * BS];
    img[FIRST as usize * BS..].copy_from_slice(&blk);
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_bytes(img));
    let geo = Geometry {
        block_size: BS,
        fsid: FSID,
        first_blkno: FIRST,
        total_blocks: FIRST + 1,
    };
    let cache = BlockCache::new(dev, geo, 1 << 16);
    let word = |i: usize| data.get(i).copied().unwrap_or(0) as u64;
    for height in 1..3 {
        let root = BtreeRoot { blk: r, height };
        let _ = btree::lookup(&cache, &root, &Key::MIN);
        let _ = btree::verify(&cache, &root);
        // The same block as a free-extent tree.
        let ar = crate::alloc::AllocRoot {
            total_len: 0,
            flags: 0,
            root,
        };
        let _ = ar.extents(&cache);
        let _ = ar.largest(&cache);
        let _ = ar.best_fit(&cache, 3);
        let _ = ar.first_ending_after(&cache, 7);
        // The same block as a srch file, and as srch_root.
        let f = RawSrchFile {
            root: root.into(),
            ..RawSrchFile::default()
        };
        let hash = r.blkno ^ word(8);
        let _ = crate::srch::search(&cache, &[f, f], hash, 0, u64::MAX, 16);
        let _ = crate::srch::search_files(&cache, &root, [&LogTrees::default()]);
        let _ = crate::srch::stats(&cache, &root, []);
    }

    // An alloc list block with a head that claims counts taken from the input.
    let mut blk = vec![0u8; BS];
    blk[..n].copy_from_slice(&data[..n]);
    stamp_magic(&mut blk, r, MAGIC_ALLOC_LIST);
    let mut img = vec![0u8; (FIRST as usize + 1) * BS];
    img[FIRST as usize * BS..].copy_from_slice(&blk);
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_bytes(img));
    let cache = BlockCache::new(dev, geo, 1 << 16);
    let head = RawAllocListHead {
        blk: r.into(),
        total_nr: (word(40) | word(41) << 8).into(),
        first_nr: (word(42) as u32).into(),
        flags: 0.into(),
    };
    let _ = crate::alloc::list::read_list(&cache, &head);

    // The plain format structs.
    let _ = SuperBlock::read_from_prefix(data);
    let _ = BtreeBlockHeader::read_from_prefix(data);
    let _ = ItemHeader::read_from_prefix(data).map(|(h, _)| Key::from(&h.key));
    let _ = RawAllocRoot::read_from_prefix(data);
    let _ = RawAllocListHead::read_from_prefix(data);
    let _ = Inode::read_from_prefix(data);
    let _ = LogTrees::read_from_prefix(data);
    let _ = DataExtent::read_from_prefix(data);
    let _ = AllocListBlockHeader::read_from_prefix(data);
    let _ = crate::srch::decode_file(data.get(..size_of::<RawSrchFile>()).unwrap_or(data));
    let _ = crate::srch::decode_compact(data.get(..size_of::<SrchCompact>()).unwrap_or(data));
}

/// Give `blk` the header a reference to `r` expects, and a valid crc.
fn stamp(blk: &mut [u8], r: BlockRef) {
    stamp_magic(blk, r, MAGIC_BTREE)
}

/// [`stamp`] with another kind of block.
fn stamp_magic(blk: &mut [u8], r: BlockRef, magic: u32) {
    let hdr = BlockHeader {
        crc: 0.into(),
        magic: magic.into(),
        fsid: FSID.into(),
        seq: r.seq.into(),
        blkno: r.blkno.into(),
    };
    if let Some(h) = blk.get_mut(..BLOCK_HEADER_SIZE) {
        h.copy_from_slice(hdr.as_bytes());
    }
    seal_block(blk);
}

/// Every btree read path over a device made from the input: the input is cut into
/// 512-byte blocks, each stamped with a header that verifies (magic, fsid, its blkno, a
/// seq derived from it) and a valid crc, so the fuzzer explores block contents. Parent
/// items must still name children by those seqs to be followed, which the fuzzer learns
/// from the corpus of real trees.
///
/// Returns the number of items a full scan saw (so tests can tell a readable tree).
pub fn btree_reads(data: &[u8]) -> usize {
    let Some((&h, rest)) = data.split_first() else {
        return 0;
    };
    let nr = rest.len().div_ceil(BS).clamp(1, 64);
    let mut img = vec![0u8; (FIRST as usize + nr) * BS];
    for i in 0..nr {
        let blkno = FIRST + i as u64;
        let s = blkno as usize * BS;
        let src = rest.get(i * BS..).unwrap_or(&[]);
        let n = src.len().min(BS);
        img[s..s + n].copy_from_slice(&src[..n]);
        stamp(
            &mut img[s..s + BS],
            BlockRef {
                blkno,
                seq: seq_of(blkno),
            },
        );
    }
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::from_bytes(img));
    let geo = Geometry {
        block_size: BS,
        fsid: FSID,
        first_blkno: FIRST,
        total_blocks: FIRST + nr as u64,
    };
    let cache = Arc::new(BlockCache::new(dev, geo, 1 << 20));
    let root = BtreeRoot {
        blk: BlockRef {
            blkno: FIRST,
            seq: seq_of(FIRST),
        },
        height: h % (MAX_BTREE_HEIGHT + 1),
    };
    read_everything(&cache, &root, rest)
}

/// Run every read path of `root` (keys to probe taken from `probe`); returns the number of
/// items the forward scan saw.
fn read_everything(cache: &Arc<BlockCache>, root: &BtreeRoot, probe: &[u8]) -> usize {
    let keys: Vec<Key> = probe
        .chunks(32)
        .take(8)
        .filter_map(|c| RawKey::read_from_bytes(c).ok())
        .map(|r| Key::from(&r))
        .chain([Key::MIN, Key::MAX])
        .collect();
    for k in &keys {
        let _ = btree::lookup(&**cache, root, k);
        let _ = btree::next(&**cache, root, k);
        let _ = btree::prev(&**cache, root, k);
        let _ = btree::get_parent(&**cache, root, k);
    }
    let mut budget = 10_000usize;
    let mut seen = 0;
    let _ = btree::scan(&**cache, root, &Key::MIN, &Key::MAX, |_| {
        seen += 1;
        budget -= 1;
        if budget == 0 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    let mut budget = 10_000usize;
    let _ = btree::scan_rev(&**cache, root, &Key::MIN, &Key::MAX, |_| {
        budget -= 1;
        if budget == 0 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    let _ = btree::walk_blocks(&**cache, root, &mut |_| Ok(()));
    let _ = btree::verify(&**cache, root);
    // free_blocks with an allocator that accepts every block of the device.
    let geo = *cache.geometry();
    let mut alloc = FreeSet::from_used(geo.first_blkno, geo.total_blocks, 0..geo.total_blocks);
    let mut wri = BlockWriter::new(cache.clone(), 1);
    let mut t = TreeTxn {
        wri: &mut wri,
        alloc: &mut alloc,
    };
    let mut from = Key::MIN;
    for _ in 0..1000 {
        match btree::free_blocks(&mut t, root, &from, 4) {
            Ok(FreeProgress::More { next, .. }) => from = next,
            _ => break,
        }
    }
    seen
}

/// An image of a real tree in the layout [`btree_reads`] expects (height byte, then the
/// blocks from the first metadata block on): seeds for the fuzzer's corpus and the tests.
pub fn sample_tree_input(items: u32) -> Vec<u8> {
    let nr = 64u64;
    let dev = Arc::new(MemDevice::new((FIRST + nr) * BS as u64));
    let geo = Geometry {
        block_size: BS,
        fsid: FSID,
        first_blkno: FIRST,
        total_blocks: FIRST + nr,
    };
    let cache = Arc::new(BlockCache::new(dev.clone(), geo, 1 << 20));
    let mut alloc = FreeSet::from_used(FIRST, FIRST + nr, []);
    let mut wri = BlockWriter::new(cache, 0);
    let mut root = BtreeRoot::EMPTY;
    let mut t = TreeTxn {
        wri: &mut wri,
        alloc: &mut alloc,
    };
    for i in 0..items {
        let k = Key::new(16, u64::from(i), 1, 0, 0, 0);
        if t.insert(&mut root, &k, &[i as u8; 8]).is_err() {
            break;
        }
    }
    // The harness names the root block FIRST with seq_of(FIRST): rewrite every block's
    // seq that way, and every reference to match, before writing.
    let _ = wri.write_all();
    let mut img = dev.snapshot();
    let mut out = vec![root.height];
    // Blocks are laid out from FIRST in allocation order; the root is the last written, so
    // swap it into FIRST.
    if root.blk.blkno != FIRST && !root.is_empty() {
        let (a, b) = (FIRST as usize * BS, root.blk.blkno as usize * BS);
        for i in 0..BS {
            img.swap(a + i, b + i);
        }
    }
    let swapped = |b: u64| {
        if b == FIRST {
            root.blk.blkno
        } else if b == root.blk.blkno {
            FIRST
        } else {
            b
        }
    };
    for blkno in FIRST..FIRST + nr {
        let s = blkno as usize * BS;
        let blk = &mut img[s..s + BS];
        if let Ok((hdr, _)) = BtreeBlockHeader::read_from_prefix(blk) {
            if hdr.hdr.magic.get() == MAGIC_BTREE && hdr.level > 0 {
                // Point parent items at the harness's seqs (and the swapped root).
                let n = hdr.nr_items.get() as usize;
                for i in 0..n {
                    let o = BTREE_HEADER_SIZE + 2 * i;
                    let off = u16::from_le_bytes([blk[o], blk[o + 1]]) as usize;
                    let v = off + ITEM_HEADER_SIZE;
                    if let Some(rb) = blk.get_mut(v..v + 16) {
                        if let Ok(mut r) = RawBlockRef::read_from_bytes(rb) {
                            let b = swapped(r.blkno.get());
                            r.blkno = b.into();
                            r.seq = seq_of(b).into();
                            rb.copy_from_slice(r.as_bytes());
                        }
                    }
                }
            }
        }
        out.extend_from_slice(blk);
    }
    out
}
