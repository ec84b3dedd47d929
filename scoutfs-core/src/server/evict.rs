//! Evicting a mount that is gone without a farewell, and reclaiming orphaned log trees.
//!
//! A mount that crashes and never comes back leaves its last log tree open: its
//! transaction never commits, so the tree is never finalized, and a merge whose
//! finalization it began before waits for it forever; its allocators are never given
//! back; merge requests it was handed stay outstanding. [`ServerCore::evict`] does what
//! the mount's farewell would have, and more (every step is idempotent, so a later
//! server can run it again after a crash):
//!
//! 1. its merge requests are cancelled (their ranges go back, their blocks come back);
//! 2. its last tree's unused metadata list and data extents go back to the server's
//!    pools, what it freed is freed, and its open transaction is closed (what it had not
//!    committed is lost; the transaction seq moves on, so a commit of the old
//!    transaction is refused);
//! 3. the tree, if it holds items, is finalized so the next merge takes it: with the
//!    finalization waiting for its merge to start if the tree began before it (it was
//!    what that merge waited for), or as a new finalization if none waits. While a
//!    merge runs, or if the tree began after a waiting finalization, it stays
//!    unfinalized but idle, and the next finalization takes it like any idle tree (and
//!    a server opened later finalizes it if nothing has);
//! 4. its mounted-client record goes.
//!
//! Its srch compactions go back to PENDING (step 1), and its srch log file is rotated
//! into `srch_root` before step 2.
//!
//! Opening the server evicts every mount that has log trees or merge requests but no
//! mounted-client record ([`ServerCore::evict_orphans`]): what a farewell or an
//! eviction left half done, and the trees of mounts that left (their items are merged).
//!
//! An evicted mount must be dead: its allocators are reused at once. Fencing is what
//! makes sure of that in the original and is not built here; a mount evicted while in
//! fact alive would write its next transaction into blocks that are no longer its own
//! (corrupting the volume) before its commit of that transaction is refused. Greeting
//! the server again mounts an evicted rid afresh: it goes on in a new log tree (or its
//! idle one) with new allocators, like a new mount.

use super::merge::zone_items;
use super::{all_log_trees, latest_log_trees, reclaim_allocators, ServerCore};
use crate::btree;
use crate::format::*;
use crate::volume::Result;
use std::collections::BTreeSet;
use zerocopy::IntoBytes;

impl ServerCore {
    /// Evict mount `rid` (see the module comment). Nothing is changed if there is
    /// nothing to do.
    pub fn evict(&mut self, rid: u64) -> Result<()> {
        self.cancel_log_merge(rid)?;
        self.cancel_srch_compact(rid)?;
        if let Some(lt) = latest_log_trees(&self.wri, &self.roots.logs_root, rid)? {
            self.reclaim_tree(lt)?;
        }
        let key = mounted_client_key(rid);
        if btree::lookup(&self.wri, &self.roots.mounted_clients, &key)?.is_some() {
            self.with_txn(|t, r| t.delete(&mut r.mounted_clients, &key))?;
        }
        Ok(())
    }

    /// Evict every mount with log trees that hold something to reclaim, or merge
    /// requests, but no mounted-client record. Returns the number of mounts evicted.
    pub fn evict_orphans(&mut self) -> Result<usize> {
        let mut rids: BTreeSet<u64> = all_log_trees(&self.wri, &self.roots.logs_root)?
            .iter()
            .filter(|lt| needs_reclaim(lt))
            .map(|lt| lt.rid.get())
            .collect();
        for it in zone_items(&self.wri, &self.roots.log_merge, merge_zone::REQUEST)? {
            rids.insert(it.key.first);
        }
        rids.extend(self.srch_busy_rids()?);
        let mut n = 0;
        for rid in rids {
            let mounted = btree::lookup(
                &self.wri,
                &self.roots.mounted_clients,
                &mounted_client_key(rid),
            )?
            .is_some();
            if !mounted {
                self.evict(rid)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Give back a departed mount's allocators, close its transaction and finalize its
    /// tree (steps 2 and 3 of the module comment).
    fn reclaim_tree(&mut self, lt: LogTrees) -> Result<()> {
        if !needs_reclaim(&lt) {
            return Ok(());
        }
        let mut lt = lt;
        // Its srch log file joins the rotated ones (searches and compactions find it).
        if self.maybe_rotate_srch(&mut lt, true)? {
            let key = log_trees_key(lt.rid.get(), lt.nr.get());
            self.with_txn(|t, r| t.force(&mut r.logs_root, &key, lt.as_bytes()))?;
        }
        let open = lt.get_trans_seq.get() > lt.commit_trans_seq.get();
        let has_allocators = holds_allocators(&lt);
        if open || has_allocators {
            let mut unused = Vec::new();
            let seq = self.next_seq();
            self.with_txn(|t, r| {
                unused = reclaim_allocators(t, &mut r.data_alloc, &mut lt)?;
                if open {
                    // The open transaction is over; a commit of it is refused.
                    lt.get_trans_seq = seq.into();
                    lt.commit_trans_seq = seq.into();
                }
                t.force(
                    &mut r.logs_root,
                    &log_trees_key(lt.rid.get(), lt.nr.get()),
                    lt.as_bytes(),
                )
            })?;
            // The list's blocks were never part of a committed structure.
            self.pool.return_blocks(unused);
        }
        if lt.flags.get() & LOG_TREES_FLAG_FINALIZED != 0
            || BtreeRoot::from(lt.item_root).is_empty()
        {
            return Ok(());
        }
        if self.merge_status()?.is_some() {
            // Finalizations wait for the running merge: a tree finalized now could not
            // join the next merge without items newer than its finalization (trees that
            // began before it go on committing until the merge ends), and a total's
            // older additions merged after newer ones would be lost. The next
            // finalization takes the idle tree like any other.
            return Ok(());
        }
        // The finalization waiting for its merge to start, if any.
        let trees = all_log_trees(&self.wri, &self.roots.logs_root)?;
        let waiting = trees
            .iter()
            .filter(|t| t.flags.get() & LOG_TREES_FLAG_FINALIZED != 0)
            .map(|t| t.finalize_seq.get())
            .min();
        let fseq = match waiting {
            Some(f) if lt.first_trans_seq.get() < super::merge::group_threshold(&trees, f) => f,
            // Began after the waiting finalization: merged with a later one.
            Some(_) => return Ok(()),
            None => self.next_seq(),
        };
        lt.flags = (lt.flags.get() | LOG_TREES_FLAG_FINALIZED).into();
        lt.finalize_seq = fseq.into();
        self.with_txn(|t, r| {
            t.force(
                &mut r.logs_root,
                &log_trees_key(lt.rid.get(), lt.nr.get()),
                lt.as_bytes(),
            )
        })?;
        self.maybe_start_merge()?;
        Ok(())
    }
}

fn holds_allocators(lt: &LogTrees) -> bool {
    !BlockRef::from(lt.meta_avail.blk).is_none()
        || !BlockRef::from(lt.meta_freed.blk).is_none()
        || !BtreeRoot::from(lt.data_avail.root).is_empty()
        || !BtreeRoot::from(lt.data_freed.root).is_empty()
}

/// Whether a departed mount's tree still has something to reclaim: allocators, a srch
/// log file, an open transaction, or items in a tree not finalized.
fn needs_reclaim(lt: &LogTrees) -> bool {
    holds_allocators(lt)
        || super::srch::has_log_file(lt)
        || lt.get_trans_seq.get() > lt.commit_trans_seq.get()
        || (lt.flags.get() & LOG_TREES_FLAG_FINALIZED == 0
            && !BtreeRoot::from(lt.item_root).is_empty())
}
