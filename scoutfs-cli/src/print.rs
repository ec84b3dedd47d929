//! `scoutfs print`: the super block and every btree it references, block by block.

use crate::CmdError;
use scoutfs_core::block::BlockCache;
use scoutfs_core::btree::{self, BlockView};
use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::format::{BtreeRoot, RawAllocListHead, RawAllocRoot, SuperBlock};
use scoutfs_core::volume;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

fn hex(b: &[u8]) -> String {
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}

fn root_str(r: &BtreeRoot) -> String {
    format!(
        "blkno {} seq {:016x} height {}",
        r.blk.blkno, r.blk.seq, r.height
    )
}

fn alloc_root_str(a: &RawAllocRoot) -> String {
    format!(
        "total_len {} flags {:#x} root: {}",
        a.total_len.get(),
        a.flags.get(),
        root_str(&a.root.into())
    )
}

fn list_head_str(h: &RawAllocListHead) -> String {
    format!(
        "blkno {} seq {:016x} total_nr {} first_nr {} flags {:#x}",
        h.blk.blkno.get(),
        h.blk.seq.get(),
        h.total_nr.get(),
        h.first_nr.get(),
        h.flags.get()
    )
}

fn print_super(sb: &SuperBlock) {
    println!("super block:");
    println!("  crc: {:08x}", sb.hdr.crc.get());
    println!("  magic: {:08x}", sb.hdr.magic.get());
    println!("  fsid: {:016x}", sb.hdr.fsid.get());
    println!("  hdr_seq: {}", sb.hdr.seq.get());
    println!("  hdr_blkno: {}", sb.hdr.blkno.get());
    println!("  fmt_vers: {}", sb.fmt_vers.get());
    println!("  flags: {:#x}", sb.flags.get());
    println!("  uuid: {}", hex(&sb.uuid));
    println!("  seq: {}", sb.seq.get());
    println!("  next_ino: {}", sb.next_ino.get());
    println!("  inode_count: {}", sb.inode_count.get());
    println!("  total_meta_blocks: {}", sb.total_meta_blocks.get());
    println!("  total_data_blocks: {}", sb.total_data_blocks.get());
    println!("  meta_block_size: {}", sb.meta_block_size.get());
    for (name, r) in tree_roots(sb) {
        println!("  {name}: {}", root_str(&r));
    }
    for (i, a) in sb.meta_alloc.iter().enumerate() {
        println!("  meta_alloc[{i}]: {}", alloc_root_str(a));
    }
    println!("  data_alloc: {}", alloc_root_str(&sb.data_alloc));
    for (i, h) in sb.server_meta_avail.iter().enumerate() {
        println!("  server_meta_avail[{i}]: {}", list_head_str(h));
    }
    for (i, h) in sb.server_meta_freed.iter().enumerate() {
        println!("  server_meta_freed[{i}]: {}", list_head_str(h));
    }
}

fn tree_roots(sb: &SuperBlock) -> [(&'static str, BtreeRoot); 5] {
    let r = volume::super_roots(sb);
    [
        ("fs_root", r[0]),
        ("logs_root", r[1]),
        ("log_merge", r[2]),
        ("mounted_clients", r[3]),
        ("srch_root", r[4]),
    ]
}

fn print_block(b: &BlockView<'_>) {
    println!(
        "  block blkno {} seq {:016x} level {} items {} range {} .. {}",
        b.blk.blkno,
        b.blk.seq,
        b.level,
        b.nr_items(),
        b.start,
        b.end
    );
    for i in 0..b.nr_items() {
        let it = b.item(i);
        if b.level > 0 {
            let c = b.child(i);
            println!("    {} -> blkno {} seq {:016x}", it.key, c.blkno, c.seq);
        } else {
            let shown = &it.val[..it.val.len().min(16)];
            let more = if it.val.len() > shown.len() { ".." } else { "" };
            println!(
                "    {} seq {} flags {:#x} len {} val {}{more}",
                it.key,
                it.seq,
                it.flags,
                it.val.len(),
                hex(shown)
            );
        }
    }
}

/// Print the volume on `path`; fails (after printing what it could) if anything is damaged.
pub fn print(path: &Path) -> Result<(), CmdError> {
    let dev = FileDevice::open_read_only(path)
        .map_err(|e| CmdError(format!("cannot open {}: {e}", path.display())))?;
    let dev: Arc<dyn BlockDevice> = Arc::new(dev);
    let sb = volume::read_super(&*dev, "meta")?;
    print_super(&sb);
    let geo = volume::geometry(&sb);
    let cache = BlockCache::new(dev, geo, 16 << 20);
    let mut failed = Vec::new();
    for (name, root) in tree_roots(&sb) {
        println!();
        if root.is_empty() {
            println!("{name}: empty");
            continue;
        }
        println!("{name}: {}", root_str(&root));
        let res = btree::walk_blocks(&cache, &root, &mut |b| {
            print_block(b);
            Ok(())
        });
        if let Err(e) = res {
            println!("  error: {e}");
            failed.push(format!("{name}: {e}"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CmdError(format!("damaged trees: {}", failed.join("; "))))
    }
}
