//! The check of srch files (see [`crate::srch`]): whose blocks they are, that they hold
//! what their records say, and that they agree with the `.srch.` xattrs.
//!
//! Blocks: `srch_root`'s own; each file item's tree (rotated logs, sorted files); each
//! log tree record's current log file; each compaction's output so far and its lists
//! (list blocks referenced, entries free); each freeing record's tree from its progress
//! key on. An input of a compaction is a file item still, and counted there only.
//!
//! Contents: every item of a file is an entry (zone SRCH, type 0, no value, no flags)
//! and a file holds as many as its record says; file items sit under the key their
//! record gives; compaction inputs are files of `srch_root`.
//!
//! Agreement (when the namespace pass ran and every srch tree read): across the files a
//! search reads, an entry appearing an odd number of times is live, and the live entries
//! are exactly `{name hash, inode, xattr id}` of the `.srch.` xattrs the namespace holds:
//! a live xattr without one would be missed by searches ([`SrchFault::Missing`]); a live
//! entry without its xattr is a false positive this filesystem never commits
//! ([`SrchFault::NoXattr`]). Memory: the live `.srch.` xattrs (24 bytes each).

use super::*;
use crate::srch;

/// How a `.srch.` xattr and the srch files disagree (see [`Problem::SrchEntry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SrchFault {
    /// The xattr exists but no live entry names it: searches miss the inode.
    Missing,
    /// A live entry names no existing xattr (a false positive for searches).
    NoXattr,
}

impl fmt::Display for SrchFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SrchFault::Missing => "has no live srch entry: searches miss it",
            SrchFault::NoXattr => "has a live srch entry but no such xattr",
        })
    }
}

/// The records of `srch_root`.
#[derive(Debug, Default)]
pub(super) struct SrchRecords {
    files: Vec<(Key, RawSrchFile)>,
    compactions: Vec<(Key, SrchCompact)>,
    freeing: Vec<LogMergeFreeing>,
}

impl Walker<'_> {
    /// A leaf item of `srch_root`.
    pub(super) fn srch_record(&mut self, it: &ItemView<'_>, out: &mut SrchRecords) {
        let what = || format!("srch_root item {}", it.key);
        let k = it.key;
        if k.zone != zone::SRCH || k.first != 0 || k.fourth != 0 {
            return self.report.push(Problem::BadRecord {
                what: what(),
                reason: "not a srch_root item".into(),
            });
        }
        let res = match k.ty {
            srch_type::LOG | srch_type::SORTED => srch::decode_file(it.val).map(|f| {
                let want = srch::file_key(k.ty == srch_type::LOG, &f);
                if want != k {
                    self.report.push(Problem::BadRecord {
                        what: what(),
                        reason: format!("holds the record of file {} (key {want})", f.id.get()),
                    });
                }
                out.files.push((k, f));
            }),
            srch_type::PENDING | srch_type::BUSY => srch::decode_compact(it.val).map(|sc| {
                let owner = if k.ty == srch_type::BUSY { k.second } else { 0 };
                if sc.rid.get() != owner {
                    self.report.push(Problem::BadRecord {
                        what: what(),
                        reason: format!("a compaction of mount {:016x}", sc.rid.get()),
                    });
                }
                out.compactions.push((k, sc));
            }),
            srch_type::FREEING => LogMergeFreeing::read_from_bytes(it.val)
                .map(|f| out.freeing.push(f))
                .map_err(|_| BtreeError::Corrupt {
                    blkno: 0,
                    reason: "srch freeing item of the wrong size",
                }),
            _ => Err(BtreeError::Corrupt {
                blkno: 0,
                reason: "an item of an unknown type",
            }),
        };
        if let Err(e) = res {
            self.report.push(Problem::BadRecord {
                what: what(),
                reason: e.to_string(),
            });
        }
    }

    /// A leaf item of a srch file: an entry, counted.
    pub(super) fn srch_entry(&mut self, what: &str, it: &ItemView<'_>, count: &mut u64) {
        if !srch::is_entry(&it.key, it.flags, it.val.len()) {
            self.report.push(Problem::BadRecord {
                what: format!("{what} item {}", it.key),
                reason: "not a srch entry".into(),
            });
        }
        *count += 1;
    }

    /// Walk a srch file: its blocks referenced, its entries counted against its record.
    /// Returns the faults of the walk.
    fn srch_file(&mut self, what: &str, f: &RawSrchFile) -> u64 {
        let mut count = 0;
        let faults = self.tree(what, &f.root.into(), Leaves::SrchFile(&mut count));
        if faults == 0 && count != f.entries.get() {
            self.report.push(Problem::BadRecord {
                what: what.to_string(),
                reason: format!(
                    "holds {count} entries but its record says {}",
                    f.entries.get()
                ),
            });
        }
        faults
    }

    /// `srch_root`, its files, compactions and freeing records, and the log trees'
    /// current log files (see the module comment). Returns the faults of the walks and
    /// the files a search reads.
    pub(super) fn srch(&mut self, root: &BtreeRoot, trees: &[LogTrees]) -> (u64, Vec<BtreeRoot>) {
        let mut recs = SrchRecords::default();
        let mut faults = self.tree("srch_root", root, Leaves::SrchRecords(&mut recs));
        let mut search = Vec::new();
        for (k, f) in &recs.files {
            faults += self.srch_file(&format!("srch file {k}"), f);
            search.push(f.root.into());
        }
        for lt in trees {
            let f = &lt.srch_file;
            if !BtreeRoot::from(f.root).is_empty() {
                let what = format!("log tree {:016x}.{} srch file", lt.rid.get(), lt.nr.get());
                faults += self.srch_file(&what, f);
                search.push(f.root.into());
            }
        }
        for (k, sc) in &recs.compactions {
            let name = format!("srch compaction {k}");
            faults += self.srch_file(&format!("{name} output"), &sc.out);
            self.list(&format!("{name} meta_avail"), &sc.meta_avail);
            self.list(&format!("{name} meta_freed"), &sc.meta_freed);
            for input in srch::inputs(sc) {
                let log = sc.flags.get() & SRCH_COMPACT_FLAG_LOG != 0;
                let key = srch::file_key(log, input);
                if !recs.files.iter().any(|(fk, f)| {
                    *fk == key && BtreeRoot::from(f.root) == BtreeRoot::from(input.root)
                }) {
                    self.report.push(Problem::BadRecord {
                        what: name.clone(),
                        reason: format!("its input {key} is not a file of srch_root"),
                    });
                }
            }
        }
        for f in &recs.freeing {
            self.tree_blocks(
                &format!("srch freeing {}", f.seq.get()),
                &f.root.into(),
                (Key::MIN, Key::MAX),
                Leaves::Ignore,
                Blocks::FromKey((&f.key).into()),
            );
        }
        search.retain(|r: &BtreeRoot| !r.is_empty());
        (faults, search)
    }

    /// Compare the live entries of the `files` a search reads with the live `.srch.`
    /// xattrs `xattrs` (`(hash, ino, id)`, any order).
    pub(super) fn srch_agree(&mut self, files: &[BtreeRoot], mut xattrs: Vec<(u64, u64, u64)>) {
        xattrs.sort_unstable();
        xattrs.dedup();
        let mut want = xattrs.into_iter().peekable();
        let push = |report: &mut CheckReport, (hash, ino, id): (u64, u64, u64), fault| {
            report.push(Problem::SrchEntry {
                ino,
                id,
                hash,
                fault,
            })
        };
        let mut cur = btree::MergeCursor::new(files, srch::FIRST_ENTRY_KEY, srch::LAST_ENTRY_KEY);
        loop {
            match cur.advance(self.cache) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    let blk = files.first().map(|r| r.blk).unwrap_or_default();
                    return self.report.push(tree_problem("srch files", blk, e));
                }
            }
            let Some(it) = cur.current() else { continue };
            if !srch::is_live(cur.versions()) {
                continue;
            }
            let live = (it.key.first, it.key.second, it.key.third);
            while let Some(x) = want.next_if(|x| *x < live) {
                push(&mut self.report, x, SrchFault::Missing);
            }
            if want.next_if(|x| *x == live).is_none() {
                push(&mut self.report, live, SrchFault::NoXattr);
            }
        }
        for x in want {
            push(&mut self.report, x, SrchFault::Missing);
        }
    }
}

impl Namespace<'_> {
    /// An xattr item of the namespace: the first part of a `.srch.` xattr is remembered.
    pub(super) fn srch_xattr(&mut self, it: &ItemView<'_>) {
        let k = it.key;
        if k.fourth != 0 {
            return;
        }
        let Ok((hdr, rest)) = XattrHeader::read_from_prefix(it.val) else {
            return;
        };
        let Some(name) = rest.get(..hdr.name_len as usize) else {
            return;
        };
        if matches!(crate::fs::parse_tags(name), Ok(Some((t, _))) if t.srch) {
            self.srch.push((k.second, k.first, k.third));
        }
    }
}
