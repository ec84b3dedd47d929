//! srch: finding the inodes that have a `.srch.` xattr without walking the namespace.
//!
//! Every creation and every deletion of a `scoutfs.srch.` xattr logs an *entry* `{hash of
//! the xattr's name, inode, xattr id}` in the same transaction as the xattr change. An
//! xattr id is used once per inode and inode numbers are never reused, so an entry is
//! logged at most twice: when the xattr is made and when it goes. A second identical
//! entry is the deletion: pairs cancel, and an entry is live when it appears an odd
//! number of times across all the files that hold entries.
//!
//! Where entries live, all of them *srch files* ([`RawSrchFile`]):
//!
//! - each mount's current **log file** (its log trees record's `srch_file`): the entries
//!   of its transactions since the file was last rotated, written at each commit;
//! - **rotated log files** (`srch_root` items [`srch_type::LOG`]): the server moves a
//!   mount's log file there, at the server commit of the mount's commit, once it holds
//!   [`SrchConfig::log_entries`] entries (or when the mount leaves or is evicted);
//! - **sorted files** ([`srch_type::SORTED`], keyed by a size tier): compactions merge
//!   [`SRCH_COMPACT_NR`] log files, or sorted files of one tier, into one, dropping the
//!   pairs that cancel.
//!
//! ## Layout: a srch file is a btree
//!
//! The original writes srch files as a radix of blocks of delta-encoded entries (a log
//! unsorted, sorted files binary-searched block by block). Here a srch file is one of our
//! copy-on-write btrees, an item per entry (key [`srch_entry_key`]: hash, inode, id; no
//! value). Why:
//!
//! - its blocks are btree blocks, which the block cache verifies, the allocators and
//!   `check` already understand, and [`crate::btree::free_blocks`] frees a budget at a
//!   time: no new block kind, walker or free path;
//! - a log file is sorted too: a mount applies its transaction's entries at commit, and
//!   an entry already in the file is *removed* rather than added (the pair cancels at
//!   once), so every file is a set, and every search is a bounded range read of every
//!   file in key order ([`crate::btree::MergeCursor`]) that counts each entry's copies:
//!   no table of found entries, memory bounded by the answer;
//! - compaction is the same range read, resumable from any key, writing in key order
//!   (appends leave the blocks three quarters full).
//!
//! The price is space: an entry takes 50 bytes of a leaf (the item header and its key)
//! where the original's delta encoding takes a few, so the srch files of a volume are
//! about a third of the size of the xattr items they index. Packing runs of entries into
//! one item is the way to win that back if it matters.
//!
//! ## Compaction, handed out by the server
//!
//! The server keeps the work in `srch_root`: [`ServerCore::get_srch_compact`] hands a
//! mount a PENDING compaction, or starts one (rotated logs first, [`SRCH_COMPACT_NR`] of
//! them; else the smallest tier with as many sorted files), as a BUSY item naming the
//! mount, with a list of blocks to write with. The mount does a bounded step in the
//! background ([`crate::fs::Fs::background_tick`], never inside an operation): it merges
//! the inputs from the saved key into the output, writes the blocks, and hands back the
//! output so far, the next key and its lists ([`ServerCore::commit_srch_compact`]). A step
//! that is not the last goes back to PENDING with its progress; the last one (DONE) swaps
//! the output in for the inputs in one commit and queues the inputs' blocks for freeing
//! ([`srch_type::FREEING`], a budget per server request); a failed step (ERROR) puts the
//! work back as it was. A BUSY compaction whose mount restarts or is evicted goes back
//! to PENDING. Every step is one server commit, so a crash anywhere leaves either the
//! state before it or after it: the next mount resumes the PENDING work from its last
//! committed key (blocks a lost step wrote are still free in its list).
//!
//! ## Searches
//!
//! [`search`] reads the files of one committed super (every file item of `srch_root` and
//! every log tree record's `srch_file`): uncommitted entries are not seen, and a file
//! being compacted is read either as its inputs or as its output, never both. A
//! candidate is an inode with an entry of the name's hash that appears an odd number of
//! times; different names of one hash give false positives, so callers check the xattr.
//! An inode whose xattr is committed is never missed. A block that turns out reused (a
//! compaction freed it since) means newer roots exist: the search starts again with them.

#[cfg(doc)]
use crate::server::ServerCore;

use crate::alloc::list::ListAlloc;
use crate::block::{BlockRead, BlockWriter};
use crate::btree::{self, BtreeError, MergeCursor, TreeTxn};
use crate::format::*;
use std::ops::ControlFlow;
use zerocopy::FromBytes;

/// The default rotation limit of a mount's log file, in entries: about the original's
/// 1 MiB (16 blocks of 64 KiB) of log, counted in our leaves.
pub const SRCH_LOG_ENTRIES: u64 = 16 * 1024;

/// How srch files rotate and compact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrchConfig {
    /// A mount's log file is rotated into `srch_root` at the server commit of the mount's
    /// commit that brings it to this many entries.
    pub log_entries: u64,
    /// Metadata blocks a compaction step is given to write with (its output, copied
    /// paths and lists).
    pub compact_blocks: usize,
    /// Input entries one compaction step merges at most (a step is also bounded by its
    /// blocks).
    pub step_entries: u64,
}

impl Default for SrchConfig {
    fn default() -> Self {
        SrchConfig {
            log_entries: SRCH_LOG_ENTRIES,
            compact_blocks: 256,
            step_entries: 256 * 1024,
        }
    }
}

/// What a search found: candidate inodes in inode order, and whether the range was
/// searched to its end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SearchXattrs {
    /// Inodes that may have the xattr (each at most once, ascending): the caller checks
    /// the xattr, as different names may share a hash.
    pub inos: Vec<u64>,
    /// Whether every inode of the range was considered: if not, search again from the
    /// last inode returned plus one.
    pub complete: bool,
}

/// The last key a srch file may hold.
pub const LAST_ENTRY_KEY: Key = Key {
    zone: zone::SRCH,
    first: u64::MAX,
    ty: 0,
    second: u64::MAX,
    third: u64::MAX,
    fourth: 0,
};

/// The first key a srch file may hold.
pub const FIRST_ENTRY_KEY: Key = Key {
    zone: zone::SRCH,
    first: 0,
    ty: 0,
    second: 0,
    third: 0,
    fourth: 0,
};

/// Whether `key`, with `flags` and a value of `val_len` bytes, is a srch entry.
pub fn is_entry(key: &Key, flags: u8, val_len: usize) -> bool {
    key.zone == zone::SRCH && key.ty == 0 && key.fourth == 0 && flags == 0 && val_len == 0
}

/// Whether an entry found `copies` times across files is live (pairs cancel).
pub fn is_live(copies: usize) -> bool {
    !copies.is_multiple_of(2)
}

/// The size tier of a sorted file of `entries` entries: files within a factor of four
/// of each other share a tier (the original's `fls64(blocks) / 2`).
pub fn tier(entries: u64) -> u64 {
    u64::from(64 - entries.leading_zeros()) / 2
}

/// The `srch_root` key of a file: a rotated log by id, a sorted file by tier and id.
pub fn file_key(log: bool, f: &RawSrchFile) -> Key {
    if log {
        srch_root_key(srch_type::LOG, f.id.get(), 0)
    } else {
        srch_root_key(srch_type::SORTED, tier(f.entries.get()), f.id.get())
    }
}

fn corrupt(reason: &'static str) -> BtreeError {
    BtreeError::Corrupt { blkno: 0, reason }
}

/// A srch file record from an item value.
pub fn decode_file(val: &[u8]) -> btree::Result<RawSrchFile> {
    RawSrchFile::read_from_bytes(val).map_err(|_| corrupt("srch file item of the wrong size"))
}

/// A compaction record from an item value.
pub fn decode_compact(val: &[u8]) -> btree::Result<SrchCompact> {
    let sc = SrchCompact::read_from_bytes(val)
        .map_err(|_| corrupt("srch compaction item of the wrong size"))?;
    if sc.nr.get() == 0 || sc.nr.get() > SRCH_COMPACT_NR as u64 {
        return Err(corrupt("srch compaction of a bad number of inputs"));
    }
    Ok(sc)
}

/// The inputs of a compaction.
pub fn inputs(sc: &SrchCompact) -> &[RawSrchFile] {
    let n = (sc.nr.get() as usize).min(SRCH_COMPACT_NR);
    &sc.inputs[..n]
}

/// Toggle `keys` in the log file `file`: an entry the file holds is removed (the pair
/// cancels), any other is added; `file.entries` follows. Keys must be srch entries.
pub fn apply_log(
    t: &mut TreeTxn<'_>,
    file: &mut RawSrchFile,
    keys: impl IntoIterator<Item = Key>,
) -> btree::Result<()> {
    let mut root: BtreeRoot = file.root.into();
    let mut entries = file.entries.get();
    for k in keys {
        if btree::lookup(&*t.wri, &root, &k)?.is_some() {
            t.delete(&mut root, &k)?;
            entries = entries
                .checked_sub(1)
                .ok_or(corrupt("srch log file holds more entries than it counts"))?;
        } else {
            t.insert(&mut root, &k, &[])?;
            entries += 1;
        }
    }
    file.root = root.into();
    file.entries = entries.into();
    Ok(())
}

/// The files a search reads: every file item of `srch_root` (rotated logs and sorted
/// files) and the current log file of every log tree record in `trees`.
pub fn search_files<'a, R: BlockRead + ?Sized>(
    rd: &R,
    srch_root: &BtreeRoot,
    trees: impl IntoIterator<Item = &'a LogTrees>,
) -> btree::Result<Vec<RawSrchFile>> {
    let mut out = Vec::new();
    let mut bad = None;
    btree::scan(
        rd,
        srch_root,
        &srch_root_key(srch_type::LOG, 0, 0),
        &srch_root_key(srch_type::SORTED, u64::MAX, u64::MAX),
        |it| match decode_file(it.val) {
            Ok(f) => {
                out.push(f);
                ControlFlow::Continue(())
            }
            Err(e) => {
                bad = Some(e);
                ControlFlow::Break(())
            }
        },
    )?;
    if let Some(e) = bad {
        return Err(e);
    }
    out.extend(trees.into_iter().map(|lt| lt.srch_file));
    out.retain(|f| !BtreeRoot::from(f.root).is_empty());
    Ok(out)
}

/// Search `files` for the inodes in `next_ino..=last_ino` that have an entry of `hash`
/// (an odd number of copies of one `{hash, ino, id}`), in inode order, at most `limit`
/// of them (see [`SearchXattrs`]).
pub fn search<R: BlockRead + ?Sized>(
    rd: &R,
    files: &[RawSrchFile],
    hash: u64,
    next_ino: u64,
    last_ino: u64,
    limit: usize,
) -> btree::Result<SearchXattrs> {
    let mut out = SearchXattrs::default();
    if next_ino > last_ino {
        out.complete = true;
        return Ok(out);
    }
    if limit == 0 {
        return Ok(out);
    }
    let roots: Vec<BtreeRoot> = files.iter().map(|f| f.root.into()).collect();
    let start = srch_entry_key(hash, next_ino, 0);
    let end = srch_entry_key(hash, last_ino, u64::MAX);
    let mut cur = MergeCursor::new(&roots, start, end);
    while cur.advance(rd)? {
        if !is_live(cur.versions()) {
            continue;
        }
        let Some(it) = cur.current() else { continue };
        if !is_entry(&it.key, it.flags, it.val.len()) {
            return Err(corrupt("an item of a srch file that is not an entry"));
        }
        let ino = it.key.second;
        if out.inos.last() == Some(&ino) {
            continue;
        }
        if out.inos.len() == limit {
            // Another inode is in the range: the caller goes on from the last one.
            return Ok(out);
        }
        out.inos.push(ino);
    }
    out.complete = true;
    Ok(out)
}

/// Blocks a compaction step must keep to write its lists and one more entry into an
/// output tree of `height`: the path copied and split at every level.
fn step_reserve(alloc: &ListAlloc, height: u8, block_size: usize) -> Option<usize> {
    Some(alloc.commit_cost(block_size)? + 3 * (height as usize + 2))
}

/// One step of a compaction: merge the entries of `inputs` from `next` on into `out`
/// (those appearing an odd number of times across the inputs; cancelled pairs are
/// dropped), at most `max_entries` input entries and as many as `alloc` has blocks for
/// (keeping what writing its lists needs). Returns whether every input entry is merged;
/// if not, `next` is the first one that is not. A step that cannot merge even one entry
/// fails ([`crate::alloc::AllocError::NoSpace`]).
pub fn compact_step(
    wri: &mut BlockWriter,
    alloc: &mut ListAlloc,
    inputs: &[RawSrchFile],
    out: &mut RawSrchFile,
    next: &mut Key,
    max_entries: u64,
) -> btree::Result<bool> {
    let bs = wri.cache().geometry().block_size;
    let roots: Vec<BtreeRoot> = inputs.iter().map(|f| f.root.into()).collect();
    let mut root: BtreeRoot = out.root.into();
    let mut entries = out.entries.get();
    let mut cur = MergeCursor::new(&roots, *next, LAST_ENTRY_KEY);
    let mut seen = 0u64;
    let res = loop {
        if !cur.advance(&*wri)? {
            break Ok(true);
        }
        let (key, odd) = match cur.current() {
            Some(it) if is_entry(&it.key, it.flags, it.val.len()) => {
                (it.key, is_live(cur.versions()))
            }
            Some(_) => break Err(corrupt("an item of a srch file that is not an entry")),
            None => continue,
        };
        let room = step_reserve(alloc, root.height, bs).is_some_and(|r| alloc.avail_len() >= r);
        if seen >= max_entries.max(1) || !room {
            if seen == 0 {
                break Err(crate::alloc::AllocError::NoSpace.into());
            }
            *next = key;
            break Ok(false);
        }
        seen += 1;
        if odd {
            let mut t = TreeTxn {
                wri: &mut *wri,
                alloc: &mut *alloc,
            };
            t.insert(&mut root, &key, &[])?;
            entries += 1;
        }
    };
    out.root = root.into();
    out.entries = entries.into();
    res
}

/// The srch state of a volume: what `srch_root` and the log trees hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SrchStats {
    /// Rotated log files.
    pub log_files: usize,
    /// Sorted files.
    pub sorted_files: usize,
    /// Mounts' current log files that hold blocks.
    pub current_logs: usize,
    /// Entries in all of these files.
    pub entries: u64,
    /// Compactions waiting for a mount.
    pub pending: usize,
    /// Compactions mounts are doing.
    pub busy: usize,
    /// Input files of finished compactions still being freed.
    pub freeing: usize,
}

/// The [`SrchStats`] of `srch_root` and the log tree records `trees`.
pub fn stats<'a, R: BlockRead + ?Sized>(
    rd: &R,
    srch_root: &BtreeRoot,
    trees: impl IntoIterator<Item = &'a LogTrees>,
) -> btree::Result<SrchStats> {
    let mut s = SrchStats::default();
    let lo = srch_root_key(0, 0, 0);
    let hi = Key::new(zone::SRCH, 0, u8::MAX, u64::MAX, u64::MAX, u8::MAX);
    for it in btree::items(rd, srch_root, &lo, &hi)? {
        match it.key.ty {
            srch_type::LOG | srch_type::SORTED => {
                let f = decode_file(&it.val)?;
                s.entries += f.entries.get();
                if it.key.ty == srch_type::LOG {
                    s.log_files += 1;
                } else {
                    s.sorted_files += 1;
                }
            }
            srch_type::PENDING => s.pending += 1,
            srch_type::BUSY => s.busy += 1,
            srch_type::FREEING => s.freeing += 1,
            _ => return Err(corrupt("an item of srch_root of an unknown type")),
        }
    }
    for lt in trees {
        if !BtreeRoot::from(lt.srch_file.root).is_empty() {
            s.current_logs += 1;
            s.entries += lt.srch_file.entries.get();
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::test_writer as writer;
    use std::collections::BTreeMap;

    fn e(hash: u64, ino: u64, id: u64) -> Key {
        srch_entry_key(hash, ino, id)
    }

    /// A log file holding the toggles of `keys`, written with blocks from `avail`.
    fn log_file(
        wri: &mut BlockWriter,
        avail: &mut ListAlloc,
        keys: &[Key],
    ) -> btree::Result<RawSrchFile> {
        let mut f = RawSrchFile::default();
        let mut t = TreeTxn { wri, alloc: avail };
        apply_log(&mut t, &mut f, keys.iter().copied())?;
        Ok(f)
    }

    fn all_entries(wri: &BlockWriter, f: &RawSrchFile) -> Vec<Key> {
        btree::items(wri, &f.root.into(), &FIRST_ENTRY_KEY, &LAST_ENTRY_KEY)
            .unwrap()
            .into_iter()
            .map(|it| it.key)
            .collect()
    }

    #[test]
    fn a_second_entry_cancels_the_first_in_a_log_file() {
        let mut wri = writer(1024, 4096);
        let mut a = ListAlloc::new((100..4000).collect());
        let f = log_file(
            &mut wri,
            &mut a,
            &[e(7, 10, 1), e(7, 11, 1), e(7, 10, 1), e(8, 10, 2)],
        )
        .unwrap();
        assert_eq!(f.entries.get(), 2);
        assert_eq!(all_entries(&wri, &f), vec![e(7, 11, 1), e(8, 10, 2)]);
        // Cancelling every entry leaves no blocks.
        let mut f2 = f;
        let mut t = TreeTxn {
            wri: &mut wri,
            alloc: &mut a,
        };
        apply_log(&mut t, &mut f2, [e(7, 11, 1), e(8, 10, 2)]).unwrap();
        assert_eq!(f2.entries.get(), 0);
        assert!(BtreeRoot::from(f2.root).is_empty());
    }

    #[test]
    fn search_counts_copies_across_files_and_resumes() {
        let mut wri = writer(1024, 8192);
        let mut a = ListAlloc::new((100..8000).collect());
        // Inode 5's xattr made in file 0 and removed in file 1; inode 6's made in file 1;
        // many inodes in file 2; another name's hash in between.
        let f0 = log_file(&mut wri, &mut a, &[e(3, 5, 1), e(4, 5, 2)]).unwrap();
        let f1 = log_file(&mut wri, &mut a, &[e(3, 5, 1), e(3, 6, 1)]).unwrap();
        let many: Vec<Key> = (100..400).map(|i| e(3, i, 7)).collect();
        let f2 = log_file(&mut wri, &mut a, &many).unwrap();
        let files = [f0, f1, f2];
        let r = search(&wri, &files, 3, 0, u64::MAX, usize::MAX).unwrap();
        let mut want = vec![6];
        want.extend(100..400);
        assert_eq!(r.inos, want);
        assert!(r.complete);
        // The other name's hash, and a range.
        assert_eq!(search(&wri, &files, 4, 0, 9, 10).unwrap().inos, vec![5]);
        let r = search(&wri, &files, 3, 150, 160, usize::MAX).unwrap();
        assert_eq!(r.inos, (150..=160).collect::<Vec<_>>());
        // In pages of 7, each resuming after the last returned inode.
        let mut got: Vec<u64> = Vec::new();
        let mut next = 0u64;
        loop {
            let r = search(&wri, &files, 3, next, u64::MAX, 7).unwrap();
            assert!(r.inos.len() <= 7);
            got.extend(&r.inos);
            if r.complete {
                break;
            }
            next = r.inos.last().unwrap() + 1;
        }
        assert_eq!(got, want);
        assert!(!search(&wri, &files, 3, 0, u64::MAX, 0).unwrap().complete);
        assert!(search(&wri, &files, 3, 9, 8, 10).unwrap().complete);
    }

    #[test]
    fn compaction_drops_cancelled_pairs_and_resumes_from_its_key() {
        let mut wri = writer(1024, 16384);
        let mut a = ListAlloc::new((100..16000).collect());
        let mut model: BTreeMap<Key, usize> = BTreeMap::new();
        let mut files = Vec::new();
        for f in 0..4u64 {
            let keys: Vec<Key> = (0..200u64)
                .filter(|i| (i + f) % 3 != 0)
                .map(|i| e(i % 5, 1000 + i, 1))
                .collect();
            for k in &keys {
                *model.entry(*k).or_default() += 1;
            }
            files.push(log_file(&mut wri, &mut a, &keys).unwrap());
        }
        let want: Vec<Key> = model
            .iter()
            .filter(|(_, n)| **n % 2 == 1)
            .map(|(k, _)| *k)
            .collect();
        assert!(want.len() < model.len(), "some pairs cancel");
        // Steps of 37 entries, each with its own allocator as a mount's step has.
        let mut out = RawSrchFile::default();
        let mut next = FIRST_ENTRY_KEY;
        let mut steps = 0;
        loop {
            steps += 1;
            let mut step_alloc = ListAlloc::new(a.take_avail(64));
            let done =
                compact_step(&mut wri, &mut step_alloc, &files, &mut out, &mut next, 37).unwrap();
            if done {
                break;
            }
        }
        assert!(steps > 5);
        assert_eq!(all_entries(&wri, &out), want);
        assert_eq!(out.entries.get(), want.len() as u64);
        // A step without blocks to write with fails rather than doing nothing.
        let mut none = ListAlloc::new(Vec::new());
        let mut o2 = RawSrchFile::default();
        let mut n2 = FIRST_ENTRY_KEY;
        assert!(compact_step(&mut wri, &mut none, &files, &mut o2, &mut n2, 10).is_err());
    }

    #[test]
    fn tiers_group_files_within_a_factor_of_four() {
        assert_eq!(tier(0), 0);
        assert_eq!(tier(1), 0);
        assert_eq!(tier(3), 1);
        assert_eq!(tier(4), 1);
        assert_eq!(tier(15), 2);
        assert_eq!(tier(16), 2);
        assert_eq!(tier(u64::MAX), 32);
    }
}
