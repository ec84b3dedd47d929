//! `scoutfs print`: the super block and every btree it references, block by block; the
//! server's records (log tree records, the log merge's status, ranges, requests,
//! completions and freeing items, srch files, compactions and freeing items) are decoded
//! field by field under their items.
//!
//! The device is opened read-only. A tree that cannot be read to the end is printed as far
//! as it could be read, followed by the error; the other trees are still printed, and the
//! command then fails.

use crate::error::{self, CmdError};
use scoutfs_core::block::BlockCache;
use scoutfs_core::btree::{self, BlockView, BtreeError};
use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::format::{
    merge_zone, srch_type, zone, BtreeRoot, Key, LogMergeComplete, LogMergeFreeing, LogMergeRange,
    LogMergeRequest, LogMergeStatus, LogTrees, RawAllocListHead, RawAllocRoot, RawKey, RawSrchFile,
    SrchCompact, SuperBlock, SUPER_FLAG_IS_META_BDEV,
};
use scoutfs_core::volume;
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use zerocopy::FromBytes;

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

fn key_str(k: &RawKey) -> String {
    Key::from(k).to_string()
}

/// The fields of a server record (a log tree record, an item of the log merge), on the
/// lines after its item: what the value's hex prefix does not show. `None` for other
/// items, and for values of the wrong size (their prefix is all there is to show).
fn describe(it: &btree::ItemView<'_>) -> Option<String> {
    let v = it.val;
    let mut s = String::new();
    if it.key.zone == zone::LOG_TREES {
        let lt = LogTrees::read_from_bytes(v).ok()?;
        let _ = write!(
            s,
            "      log trees rid {:016x} nr {} flags {:#x} finalize_seq {} first_trans_seq {} \
             get_trans_seq {} commit_trans_seq {} max_item_seq {} inode_count_delta {}\n      \
             item_root: {}\n      bloom_ref: blkno {}\n      meta_avail: {}\n      \
             meta_freed: {}\n      data_avail: {}\n      data_freed: {}\n      srch_file: {}",
            lt.rid.get(),
            lt.nr.get(),
            lt.flags.get(),
            lt.finalize_seq.get(),
            lt.first_trans_seq.get(),
            lt.get_trans_seq.get(),
            lt.commit_trans_seq.get(),
            lt.max_item_seq.get(),
            lt.inode_count_delta.get() as i64,
            root_str(&lt.item_root.into()),
            lt.bloom_ref.blkno.get(),
            list_head_str(&lt.meta_avail),
            list_head_str(&lt.meta_freed),
            alloc_root_str(&lt.data_avail),
            alloc_root_str(&lt.data_freed),
            srch_file_str(&lt.srch_file),
        );
        return Some(s);
    }
    if it.key.zone == zone::SRCH {
        return describe_srch(it);
    }
    match it.key.zone {
        merge_zone::STATUS => {
            let st = LogMergeStatus::read_from_bytes(v).ok()?;
            let _ = write!(
                s,
                "      merge status seq {} nr_requests {} nr_complete {} flags {:#x} \
                 next_range_key {}",
                st.seq.get(),
                st.nr_requests.get(),
                st.nr_complete.get(),
                st.flags.get(),
                key_str(&st.next_range_key)
            );
        }
        merge_zone::RANGE => {
            let r = LogMergeRange::read_from_bytes(v).ok()?;
            let _ = write!(
                s,
                "      merge range {} .. {}",
                key_str(&r.start),
                key_str(&r.end)
            );
        }
        merge_zone::REQUEST => {
            let r = LogMergeRequest::read_from_bytes(v).ok()?;
            let _ = write!(
                s,
                "      merge request rid {:016x} seq {} input_seq {} flags {:#x} {} .. {}\n      \
                 root: {}\n      meta_avail: {}\n      meta_freed: {}",
                r.rid.get(),
                r.seq.get(),
                r.input_seq.get(),
                r.flags.get(),
                key_str(&r.start),
                key_str(&r.end),
                root_str(&r.root.into()),
                list_head_str(&r.meta_avail),
                list_head_str(&r.meta_freed),
            );
        }
        merge_zone::COMPLETE => {
            let c = LogMergeComplete::read_from_bytes(v).ok()?;
            let _ = write!(
                s,
                "      merge completion rid {:016x} seq {} flags {:#x} {} .. {} remain {}\n      \
                 root: {}\n      meta_avail: {}\n      meta_freed: {}",
                c.rid.get(),
                c.seq.get(),
                c.flags.get(),
                key_str(&c.start),
                key_str(&c.end),
                key_str(&c.remain),
                root_str(&c.root.into()),
                list_head_str(&c.meta_avail),
                list_head_str(&c.meta_freed),
            );
        }
        merge_zone::FREEING => {
            let f = LogMergeFreeing::read_from_bytes(v).ok()?;
            let _ = write!(
                s,
                "      merge freeing seq {} from {} root: {}",
                f.seq.get(),
                key_str(&f.key),
                root_str(&f.root.into())
            );
        }
        _ => return None,
    }
    Some(s)
}

fn srch_file_str(f: &RawSrchFile) -> String {
    format!(
        "id {} entries {} root {}",
        f.id.get(),
        f.entries.get(),
        root_str(&f.root.into())
    )
}

/// The fields of a `srch_root` record.
fn describe_srch(it: &btree::ItemView<'_>) -> Option<String> {
    let v = it.val;
    let mut s = String::new();
    match it.key.ty {
        srch_type::LOG | srch_type::SORTED => {
            let f = RawSrchFile::read_from_bytes(v).ok()?;
            let _ = write!(s, "      srch file {}", srch_file_str(&f));
        }
        srch_type::PENDING | srch_type::BUSY => {
            let c = SrchCompact::read_from_bytes(v).ok()?;
            let _ = write!(
                s,
                "      srch compaction id {} seq {} rid {:016x} nr {} flags {:#x} next {}\n      \
                 out: {}\n      meta_avail: {}\n      meta_freed: {}",
                c.id.get(),
                c.seq.get(),
                c.rid.get(),
                c.nr.get(),
                c.flags.get(),
                key_str(&c.next),
                srch_file_str(&c.out),
                list_head_str(&c.meta_avail),
                list_head_str(&c.meta_freed),
            );
            for f in c.inputs.iter().take(c.nr.get() as usize) {
                let _ = write!(s, "\n      input: {}", srch_file_str(f));
            }
        }
        srch_type::FREEING => {
            let f = LogMergeFreeing::read_from_bytes(v).ok()?;
            let _ = write!(
                s,
                "      srch freeing id {} from {} root: {}",
                f.seq.get(),
                key_str(&f.key),
                root_str(&f.root.into())
            );
        }
        _ => return None,
    }
    Some(s)
}

fn print_block(out: &mut dyn Write, b: &BlockView<'_>, records: bool) -> std::io::Result<()> {
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
            if records {
                if let Some(d) = describe(&it) {
                    writeln!(out, "{d}")?;
                }
            }
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
        // The server's records are decoded; file system items are not.
        let records = name == "logs_root" || name == "log_merge" || name == "srch_root";
        // A failed write of our output stops the walk; the walk only stops on a btree
        // error, so hand it one and report the output error instead.
        let mut output_err = None;
        let res = btree::walk_blocks(&cache, &root, &mut |b| {
            print_block(out, b, records).map_err(|e| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use scoutfs_core::format::{log_merge_key, log_trees_key, LOG_TREES_FLAG_FINALIZED};
    use zerocopy::IntoBytes;

    fn view(key: Key, val: &[u8]) -> btree::ItemView<'_> {
        btree::ItemView {
            key,
            seq: 0,
            flags: 0,
            val,
        }
    }

    #[test]
    fn server_records_are_decoded() {
        let lt = LogTrees {
            rid: 0xab.into(),
            nr: 3.into(),
            flags: LOG_TREES_FLAG_FINALIZED.into(),
            finalize_seq: 77.into(),
            inode_count_delta: (-5i64 as u64).into(),
            ..LogTrees::default()
        };
        let d = describe(&view(log_trees_key(0xab, 3), lt.as_bytes())).unwrap();
        assert!(
            d.contains("rid 00000000000000ab nr 3 flags 0x1 finalize_seq 77 "),
            "{d}"
        );
        assert!(d.contains("inode_count_delta -5\n"), "{d}");
        let st = LogMergeStatus {
            seq: 9.into(),
            nr_requests: 2.into(),
            ..LogMergeStatus::default()
        };
        let key = log_merge_key(merge_zone::STATUS, 0, 0);
        let d = describe(&view(key, st.as_bytes())).unwrap();
        assert!(
            d.contains("merge status seq 9 nr_requests 2 nr_complete 0"),
            "{d}"
        );
        // A value of the wrong size shows as its prefix only.
        assert!(describe(&view(key, &[1, 2, 3])).is_none());
        let f = RawSrchFile {
            entries: 12.into(),
            id: 40.into(),
            ..RawSrchFile::default()
        };
        let key = scoutfs_core::format::srch_root_key(srch_type::LOG, 40, 0);
        let d = describe(&view(key, f.as_bytes())).unwrap();
        assert!(d.contains("srch file id 40 entries 12 root "), "{d}");
        let c = SrchCompact {
            id: 41.into(),
            nr: 1.into(),
            inputs: [f; 4],
            ..SrchCompact::default()
        };
        let key = scoutfs_core::format::srch_root_key(srch_type::PENDING, 41, 0);
        let d = describe(&view(key, c.as_bytes())).unwrap();
        assert!(d.contains("srch compaction id 41 seq 0"), "{d}");
        assert_eq!(d.matches("input: id 40 entries 12").count(), 1, "{d}");
    }
}
