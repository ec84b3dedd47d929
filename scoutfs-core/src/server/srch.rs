//! The server's side of srch (see [`crate::srch`]): rotating mounts' log files into
//! `srch_root`, handing out compaction work, taking its results, and freeing the files
//! compactions replaced.
//!
//! Every change here is one server transaction, and each is idempotent or refused when
//! repeated: a hand-out (PENDING → BUSY) and a step's result (BUSY → PENDING, or the swap
//! of a DONE one) name the hand-out's seq, so a result sent again, or for work since
//! cancelled, changes nothing. The items of `srch_root` are changed only through
//! [`strict`], so a missing or doubled item poisons the server rather than letting half
//! of a change commit.

use super::{all_log_trees, release_list, ServerCore};
use crate::alloc::list::{read_list, write_new_list};
use crate::btree::{self, BtreeError, FreeProgress, TreeTxn};
use crate::format::*;
use crate::srch::{self, SrchConfig};
use crate::volume::{Result, VolumeError};
use std::collections::BTreeSet;
use std::ops::ControlFlow;
use zerocopy::{FromBytes, FromZeros, IntoBytes};

/// A change of `srch_root` whose key must exist (or must not): a refusal means the tree
/// disagrees with what was read from it moments before, which is corruption (and poisons
/// the server) rather than a clean refusal.
fn strict<T>(r: btree::Result<T>) -> btree::Result<T> {
    r.map_err(|e| match e {
        BtreeError::Exists(_) | BtreeError::NotFound(_) => BtreeError::Corrupt {
            blkno: 0,
            reason: "srch_root changed under the server",
        },
        e => e,
    })
}

/// Whether a log tree record holds a srch log file with blocks.
pub(crate) fn has_log_file(lt: &LogTrees) -> bool {
    !BtreeRoot::from(lt.srch_file.root).is_empty()
}

/// Move the log file of `lt` into `srch_root` as rotated log file `id` (a fresh seq);
/// `lt` is left with no log file. The caller writes `lt` in the same transaction.
pub(crate) fn rotate_log(
    t: &mut TreeTxn<'_>,
    srch_root: &mut BtreeRoot,
    lt: &mut LogTrees,
    id: u64,
) -> btree::Result<()> {
    let mut f = lt.srch_file;
    f.id = id.into();
    strict(t.insert(srch_root, &srch::file_key(true, &f), f.as_bytes()))?;
    lt.srch_file = RawSrchFile::default();
    Ok(())
}

fn busy_key(rid: u64, id: u64) -> Key {
    srch_root_key(srch_type::BUSY, rid, id)
}

fn pending_key(id: u64) -> Key {
    srch_root_key(srch_type::PENDING, id, 0)
}

fn freeing_key(id: u64) -> Key {
    srch_root_key(srch_type::FREEING, id, 0)
}

/// The items of `srch_root` of type `ty`.
fn type_items<R: crate::block::BlockRead + ?Sized>(
    rd: &R,
    root: &BtreeRoot,
    ty: u8,
) -> Result<Vec<btree::Item>> {
    Ok(btree::items(
        rd,
        root,
        &srch_root_key(ty, 0, 0),
        &srch_root_key(ty, u64::MAX, u64::MAX),
    )?)
}

impl ServerCore {
    /// How srch files rotate and compact.
    pub fn srch_config(&self) -> SrchConfig {
        self.srch
    }

    /// Change how srch files rotate and compact (a mount option; tests use small files).
    pub fn set_srch_config(&mut self, cfg: SrchConfig) {
        self.srch = SrchConfig {
            log_entries: cfg.log_entries.max(1),
            compact_blocks: cfg.compact_blocks.max(16),
            step_entries: cfg.step_entries.max(1),
        };
    }

    /// Rotate the log file of `lt` (the record a mount commits) into `srch_root` if it
    /// holds [`SrchConfig::log_entries`] entries, or whatever it holds if `force`.
    /// Returns whether it did; the caller writes `lt` in the same transaction.
    pub(super) fn maybe_rotate_srch(&mut self, lt: &mut LogTrees, force: bool) -> Result<bool> {
        if !has_log_file(lt) || (!force && lt.srch_file.entries.get() < self.srch.log_entries) {
            return Ok(false);
        }
        let id = self.next_seq();
        self.with_txn(|t, r| rotate_log(t, &mut r.srch_root, lt, id))?;
        Ok(true)
    }

    /// Hand mount `rid` a step of srch compaction work: the compaction it holds already
    /// (its last result was lost), else a pending one, else a new one if there are
    /// enough files of a kind; `None` if there is nothing to do, or not the space to do
    /// it with. The work is BUSY under the mount's id with a fresh hand-out seq and a
    /// list of [`SrchConfig::compact_blocks`] blocks. A unit of freeing goes first.
    pub fn get_srch_compact(&mut self, rid: u64) -> Result<Option<SrchCompact>> {
        self.check_mounted(rid, "srch compaction requested by an unknown mount")?;
        self.free_srch_some()?;
        let root = self.roots.srch_root;
        let mine = btree::next(&self.wri, &root, &busy_key(rid, 0))?
            .filter(|it| it.key <= busy_key(rid, u64::MAX));
        let pending = type_items(&self.wri, &root, srch_type::PENDING)?;
        let (old_key, mut sc) = if let Some(it) = mine {
            (Some(it.key), srch::decode_compact(&it.val)?)
        } else if let Some(it) = pending.first() {
            (Some(it.key), srch::decode_compact(&it.val)?)
        } else {
            match self.new_srch_compact()? {
                Some(sc) => (None, sc),
                None => return Ok(None),
            }
        };
        // Top the compaction's list up, within what mounts are not told is LOW.
        let have = read_list(&self.wri, &sc.meta_avail)?.blknos.len();
        let need = self.srch.compact_blocks.saturating_sub(have);
        let (_, low) = self.meta_floors()?;
        if self.pool.free_blocks() < low + need as u64 {
            return Ok(None);
        }
        let extra = self.pool.take_blocks(need).map_err(|e| {
            self.poisoned = true;
            VolumeError::from(e)
        })?;
        let seq = self.next_seq();
        self.with_txn(|t, r| {
            release_list(t, &sc.meta_freed, true)?;
            let mut blknos = release_list(t, &sc.meta_avail, false)?;
            blknos.extend(extra);
            sc.meta_avail = write_new_list(t.wri, t.alloc, &blknos, 0)?;
            sc.meta_freed = RawAllocListHead::default();
            sc.rid = rid.into();
            sc.seq = seq.into();
            if let Some(k) = old_key {
                strict(t.delete(&mut r.srch_root, &k))?;
            }
            t.force(&mut r.srch_root, &busy_key(rid, sc.id.get()), sc.as_bytes())
        })?;
        Ok(Some(sc))
    }

    /// A new compaction, if there is work: [`SRCH_COMPACT_NR`] rotated log files (the
    /// oldest), else as many sorted files of the smallest tier that has them; files
    /// that are inputs of other compactions are left out.
    fn new_srch_compact(&mut self) -> Result<Option<SrchCompact>> {
        let root = self.roots.srch_root;
        let mut busy = BTreeSet::new();
        for ty in [srch_type::PENDING, srch_type::BUSY] {
            for it in type_items(&self.wri, &root, ty)? {
                let sc = srch::decode_compact(&it.val)?;
                busy.extend(srch::inputs(&sc).iter().map(|f| f.id.get()));
            }
        }
        let free_files = |ty: u8| -> Result<Vec<(u64, RawSrchFile)>> {
            let mut out = Vec::new();
            for it in type_items(&self.wri, &root, ty)? {
                let f = srch::decode_file(&it.val)?;
                if !busy.contains(&f.id.get()) {
                    out.push((it.key.second, f));
                }
            }
            Ok(out)
        };
        let logs = free_files(srch_type::LOG)?;
        let (flags, chosen) = if logs.len() >= SRCH_COMPACT_NR {
            (SRCH_COMPACT_FLAG_LOG, logs)
        } else {
            let sorted = free_files(srch_type::SORTED)?;
            let mut pick = Vec::new();
            for (tier, f) in sorted {
                if pick.first().is_some_and(|(t, _)| *t != tier) {
                    pick.clear();
                }
                pick.push((tier, f));
                if pick.len() == SRCH_COMPACT_NR {
                    break;
                }
            }
            if pick.len() < SRCH_COMPACT_NR {
                return Ok(None);
            }
            (0, pick)
        };
        let mut sc = SrchCompact::new_zeroed();
        for (slot, (_, f)) in sc.inputs.iter_mut().zip(chosen) {
            *slot = f;
        }
        sc.nr = (SRCH_COMPACT_NR as u64).into();
        sc.next = (&srch::FIRST_ENTRY_KEY).into();
        sc.id = self.next_seq().into();
        sc.flags = flags.into();
        Ok(Some(sc))
    }

    /// Take the result of a step of srch compaction from mount `rid` (see
    /// [`crate::srch`]): a failure puts the work back as it was, a step goes back to
    /// PENDING with its progress, and the last step swaps the output in for the inputs,
    /// queues the inputs for freeing and gives the compaction's blocks back. A result
    /// for work the mount no longer holds (sent again, or cancelled) changes nothing.
    pub fn commit_srch_compact(&mut self, rid: u64, res: &SrchCompact) -> Result<()> {
        let key = busy_key(rid, res.id.get());
        let Some(it) = btree::lookup(&self.wri, &self.roots.srch_root, &key)? else {
            return Ok(());
        };
        let busy = srch::decode_compact(&it.val)?;
        if busy.seq.get() != res.seq.get() {
            return Ok(());
        }
        let flags = res.flags.get();
        if flags & SRCH_COMPACT_FLAG_ERROR != 0 {
            // Its blocks are still free in the list the work holds as committed.
            let mut back = busy;
            back.rid = 0.into();
            return self.with_txn(|t, r| {
                strict(t.delete(&mut r.srch_root, &key))?;
                strict(t.insert(
                    &mut r.srch_root,
                    &pending_key(back.id.get()),
                    back.as_bytes(),
                ))
            });
        }
        if flags & SRCH_COMPACT_FLAG_DONE == 0 {
            let mut next = busy;
            next.out = res.out;
            next.next = res.next;
            next.meta_avail = res.meta_avail;
            next.meta_freed = RawAllocListHead::default();
            next.rid = 0.into();
            return self.with_txn(|t, r| {
                // What the step freed (the output's old paths, its old lists) is free
                // once this commit is durable.
                release_list(t, &res.meta_freed, true)?;
                strict(t.delete(&mut r.srch_root, &key))?;
                strict(t.insert(
                    &mut r.srch_root,
                    &pending_key(next.id.get()),
                    next.as_bytes(),
                ))
            });
        }
        let log = busy.flags.get() & SRCH_COMPACT_FLAG_LOG != 0;
        let mut out = res.out;
        let out_id = self.next_seq();
        let mut unused = Vec::new();
        self.with_txn(|t, r| {
            for f in srch::inputs(&busy) {
                strict(t.delete(&mut r.srch_root, &srch::file_key(log, f)))?;
                if !BtreeRoot::from(f.root).is_empty() {
                    let fr = LogMergeFreeing {
                        root: f.root,
                        key: (&Key::MIN).into(),
                        seq: f.id,
                    };
                    strict(t.insert(&mut r.srch_root, &freeing_key(f.id.get()), fr.as_bytes()))?;
                }
            }
            if !BtreeRoot::from(out.root).is_empty() {
                out.id = out_id.into();
                strict(t.insert(
                    &mut r.srch_root,
                    &srch::file_key(false, &out),
                    out.as_bytes(),
                ))?;
            }
            release_list(t, &res.meta_freed, true)?;
            unused = release_list(t, &res.meta_avail, false)?;
            strict(t.delete(&mut r.srch_root, &key))
        })?;
        // The list's entries were free in the committed list.
        self.pool.return_blocks(unused);
        self.free_srch_some()
    }

    /// Put the compactions mount `rid` holds back as PENDING, with the progress they
    /// committed (the mount restarted, or is evicted).
    pub fn cancel_srch_compact(&mut self, rid: u64) -> Result<()> {
        let mine: Vec<btree::Item> = btree::items(
            &self.wri,
            &self.roots.srch_root,
            &busy_key(rid, 0),
            &busy_key(rid, u64::MAX),
        )?;
        if mine.is_empty() {
            return Ok(());
        }
        let recs = mine
            .iter()
            .map(|it| Ok((it.key, srch::decode_compact(&it.val)?)))
            .collect::<Result<Vec<_>>>()?;
        self.with_txn(|t, r| {
            for (k, mut sc) in recs {
                sc.rid = 0.into();
                strict(t.delete(&mut r.srch_root, &k))?;
                strict(t.insert(&mut r.srch_root, &pending_key(sc.id.get()), sc.as_bytes()))?;
            }
            Ok(())
        })
    }

    /// The mounts holding srch compactions (eviction looks for departed ones).
    pub(super) fn srch_busy_rids(&self) -> Result<BTreeSet<u64>> {
        Ok(
            type_items(&self.wri, &self.roots.srch_root, srch_type::BUSY)?
                .iter()
                .map(|it| it.key.second)
                .collect(),
        )
    }

    /// Free a budget ([`SrchConfig::compact_blocks`]) of the blocks of files that
    /// compactions replaced, resuming each from its saved key.
    fn free_srch_some(&mut self) -> Result<()> {
        let mut left = self.srch.compact_blocks;
        let mut recs = Vec::new();
        btree::scan(
            &self.wri,
            &self.roots.srch_root,
            &freeing_key(0),
            &freeing_key(u64::MAX),
            |it| {
                recs.push(it.to_item());
                if recs.len() >= 16 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )?;
        for it in recs {
            if left == 0 {
                break;
            }
            let f = LogMergeFreeing::read_from_bytes(&it.val).map_err(|_| {
                VolumeError::Btree(BtreeError::Corrupt {
                    blkno: 0,
                    reason: "srch freeing item of the wrong size",
                })
            })?;
            let freed = self.with_txn(|t, r| {
                let from: Key = (&f.key).into();
                match btree::free_blocks(t, &f.root.into(), &from, left)? {
                    FreeProgress::Done { freed } => {
                        strict(t.delete(&mut r.srch_root, &it.key))?;
                        Ok(freed)
                    }
                    FreeProgress::More { freed, next } => {
                        let mut g = f;
                        g.key = (&next).into();
                        t.force(&mut r.srch_root, &it.key, g.as_bytes())?;
                        Ok(freed)
                    }
                }
            })?;
            left = left.saturating_sub(freed.max(1));
        }
        Ok(())
    }

    /// The srch state of the open transaction (tests and tools).
    pub fn srch_stats(&self) -> Result<srch::SrchStats> {
        let trees = all_log_trees(&self.wri, &self.roots.logs_root)?;
        Ok(srch::stats(&self.wri, &self.roots.srch_root, &trees)?)
    }
}
