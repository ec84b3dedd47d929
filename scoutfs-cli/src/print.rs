//! `scoutfs print`: the super block and every btree it references, block by block.
//!
//! The device is opened read-only. A tree that cannot be read to the end is printed as far
//! as it could be read, followed by the error; the other trees are still printed, and the
//! command then fails.

use crate::error::{self, CmdError};
use scoutfs_core::block::BlockCache;
use scoutfs_core::btree::{self, BlockView, BtreeError};
use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::format::{
    BtreeRoot, RawAllocListHead, RawAllocRoot, SuperBlock, SUPER_FLAG_IS_META_BDEV,
};
use scoutfs_core::volume;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// Bytes of a leaf item's value shown in hex.
const VALUE_PREFIX: usize = 16;

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

/// Every btree the super references, by the name of its field.
fn trees(sb: &SuperBlock) -> Vec<(String, BtreeRoot)> {
    let mut t: Vec<(String, BtreeRoot)> = vec![
        ("fs_root".into(), sb.fs_root.into()),
        ("logs_root".into(), sb.logs_root.into()),
        ("log_merge".into(), sb.log_merge.into()),
        ("mounted_clients".into(), sb.mounted_clients.into()),
        ("srch_root".into(), sb.srch_root.into()),
    ];
    for (i, a) in sb.meta_alloc.iter().enumerate() {
        t.push((format!("meta_alloc[{i}]"), a.root.into()));
    }
    t.push(("data_alloc".into(), sb.data_alloc.root.into()));
    t
}

fn print_super(out: &mut dyn Write, sb: &SuperBlock) -> std::io::Result<()> {
    writeln!(out, "super block:")?;
    writeln!(out, "  crc: {:08x}", sb.hdr.crc.get())?;
    writeln!(out, "  magic: {:08x}", sb.hdr.magic.get())?;
    writeln!(out, "  fsid: {:016x}", sb.hdr.fsid.get())?;
    writeln!(out, "  hdr_seq: {}", sb.hdr.seq.get())?;
    writeln!(out, "  hdr_blkno: {}", sb.hdr.blkno.get())?;
    writeln!(out, "  id: {:016x}", sb.id.get())?;
    writeln!(out, "  fmt_vers: {}", sb.fmt_vers.get())?;
    writeln!(out, "  flags: {:#x}", sb.flags.get())?;
    writeln!(out, "  uuid: {}", hex(&sb.uuid))?;
    writeln!(out, "  seq: {}", sb.seq.get())?;
    writeln!(out, "  next_ino: {}", sb.next_ino.get())?;
    writeln!(out, "  inode_count: {}", sb.inode_count.get())?;
    writeln!(out, "  total_meta_blocks: {}", sb.total_meta_blocks.get())?;
    writeln!(out, "  total_data_blocks: {}", sb.total_data_blocks.get())?;
    writeln!(out, "  meta_block_size: {}", sb.meta_block_size.get())?;
    writeln!(out, "  pad0: {}", sb.pad0.get())?;
    for (name, r) in [
        ("fs_root", sb.fs_root),
        ("logs_root", sb.logs_root),
        ("log_merge", sb.log_merge),
        ("mounted_clients", sb.mounted_clients),
        ("srch_root", sb.srch_root),
    ] {
        writeln!(out, "  {name}: {}", root_str(&r.into()))?;
    }
    for (i, a) in sb.meta_alloc.iter().enumerate() {
        writeln!(out, "  meta_alloc[{i}]: {}", alloc_root_str(a))?;
    }
    writeln!(out, "  data_alloc: {}", alloc_root_str(&sb.data_alloc))?;
    for (i, h) in sb.server_meta_avail.iter().enumerate() {
        writeln!(out, "  server_meta_avail[{i}]: {}", list_head_str(h))?;
    }
    for (i, h) in sb.server_meta_freed.iter().enumerate() {
        writeln!(out, "  server_meta_freed[{i}]: {}", list_head_str(h))?;
    }
    let nonzero = sb.reserved.iter().filter(|&&b| b != 0).count();
    writeln!(
        out,
        "  reserved: {} bytes, {nonzero} not zero",
        sb.reserved.len()
    )
}

fn print_block(out: &mut dyn Write, b: &BlockView<'_>) -> std::io::Result<()> {
    writeln!(
        out,
        "  block blkno {} seq {:016x} level {} nr_items {} range {} .. {}",
        b.blk.blkno,
        b.blk.seq,
        b.level,
        b.nr_items(),
        b.start,
        b.end
    )?;
    for i in 0..b.nr_items() {
        let it = b.item(i);
        write!(
            out,
            "    {} seq {} flags {:#x} len {}",
            it.key,
            it.seq,
            it.flags,
            it.val.len()
        )?;
        if b.level > 0 {
            let c = b.child(i);
            writeln!(out, " -> blkno {} seq {:016x}", c.blkno, c.seq)?;
        } else if it.val.is_empty() {
            writeln!(out)?;
        } else {
            let shown = &it.val[..it.val.len().min(VALUE_PREFIX)];
            let more = if it.val.len() > shown.len() { ".." } else { "" };
            writeln!(out, " val {}{more}", hex(shown))?;
        }
    }
    Ok(())
}

/// Print the volume whose meta device is `path`.
pub fn run(path: &Path, out: &mut dyn Write) -> Result<(), CmdError> {
    let dev = FileDevice::open_read_only(path).map_err(|err| CmdError::Device {
        path: path.into(),
        action: "open",
        err,
    })?;
    let dev: Arc<dyn BlockDevice> = Arc::new(dev);
    let sb = volume::read_super(&*dev, "meta")?;
    print_super(out, &sb)?;
    if sb.flags.get() & SUPER_FLAG_IS_META_BDEV == 0 {
        return Err(CmdError::Other(format!(
            "{} holds the super block of a data device; print reads the meta device",
            path.display()
        )));
    }
    let cache = BlockCache::new(dev, volume::geometry(&sb), 16 << 20);
    let mut damaged = Vec::new();
    for (name, root) in trees(&sb) {
        writeln!(out)?;
        if root.is_empty() {
            writeln!(out, "{name}: empty")?;
            continue;
        }
        writeln!(out, "{name}: {}", root_str(&root))?;
        // A failed write of our output stops the walk; the walk only stops on a btree
        // error, so hand it one and report the output error instead.
        let mut output_err = None;
        let res = btree::walk_blocks(&cache, &root, &mut |b| {
            print_block(out, b).map_err(|e| {
                output_err = Some(e);
                BtreeError::Corrupt {
                    blkno: b.blk.blkno,
                    reason: "output failed",
                }
            })
        });
        if let Some(e) = output_err {
            return Err(CmdError::Output(e));
        }
        if let Err(e) = res {
            writeln!(out, "  error: {}", error::btree(&e))?;
            damaged.push((name, e));
        }
    }
    if damaged.is_empty() {
        Ok(())
    } else {
        Err(CmdError::Damaged(damaged))
    }
}
