//! Cutting a key range out of a tree.
//!
//! The log merge takes out of its input trees each range it has spliced into the
//! filesystem root, in the commit that splices it: readers then never see a merged range
//! twice, and the inputs' space comes back as the merge goes instead of at its end.
//!
//! [`TreeTxn::trim`] copies only the (at most two) paths that straddle the ends of the
//! range -- and the right edge below a parent that lost its last child, and a root left
//! with one child -- and deletes the items of the range from their leaves. Every subtree that lies
//! wholly inside the range is detached without being read: its reference leaves its
//! parent and it is handed back to the caller, who frees it later a budget at a time
//! ([`super::free_blocks`] frees a subtree as it frees a tree). Blocks left empty are
//! freed, a parent that loses its last child gives its range to the child before it, and
//! a root left with one child collapses. Blocks along the edges may end up under the low
//! water mark: a trimmed tree is an input of a merge, only read and trimmed again until
//! it is freed, never changed otherwise.

use super::node::{self, Node};
use super::{corrupt, Result, TreeTxn};
use crate::format::{BlockRef, BtreeRoot, Key};

impl TreeTxn<'_> {
    /// Remove every item from `lo` to `hi` (inclusive) from `root` (see the module
    /// comment). Subtrees wholly inside the range are appended to `detached` (each with
    /// its height); the caller owns their blocks.
    pub fn trim(
        &mut self,
        root: &mut BtreeRoot,
        lo: &Key,
        hi: &Key,
        detached: &mut Vec<BtreeRoot>,
    ) -> Result<()> {
        super::check_height(root)?;
        if root.is_empty() || lo > hi {
            return Ok(());
        }
        let mut r = root.blk;
        let gone = self.trim_block(
            &mut r,
            root.height - 1,
            Key::MIN,
            Key::MAX,
            lo,
            hi,
            detached,
        )?;
        if gone {
            *root = BtreeRoot::EMPTY;
            return Ok(());
        }
        root.blk = r;
        self.collapse_root(root)
    }

    /// Trim the block `r` (at `level`, covering `start..=end`); true if it is gone
    /// (detached, or emptied and freed). `r` is updated when the block is copied.
    #[expect(
        clippy::too_many_arguments,
        reason = "a block, its place, and the range"
    )]
    fn trim_block(
        &mut self,
        r: &mut BlockRef,
        level: u8,
        start: Key,
        end: Key,
        lo: &Key,
        hi: &Key,
        detached: &mut Vec<BtreeRoot>,
    ) -> Result<bool> {
        if end < *lo || start > *hi {
            return Ok(false);
        }
        if *lo <= start && end <= *hi {
            detached.push(BtreeRoot {
                blk: *r,
                height: level + 1,
            });
            return Ok(true);
        }
        self.dirty(r)?;
        let blk = r.blkno;
        if self.node(blk)?.level() != level {
            return corrupt(blk, "block level does not match its place in the tree");
        }
        if level == 0 {
            let b = self.wri.get_mut(blk)?;
            let i = Node::new(b).lower_bound(lo);
            while i < Node::new(b).nr() && Node::new(b).key(i) <= *hi {
                node::delete_at(b, i);
            }
            return self.drop_if_empty(*r);
        }
        // The children overlapping the range: from the first whose last key is at or
        // after `lo`, while they start at or before `hi`.
        let nr = self.node(blk)?.nr();
        let mut i = self.node(blk)?.lower_bound(lo);
        let mut child_start = match i.checked_sub(1) {
            Some(p) => self.node(blk)?.key(p).next().unwrap_or(Key::MAX),
            None => start,
        };
        let mut gone = Vec::new();
        while i < nr && child_start <= *hi {
            let (child_end, mut c) = {
                let n = self.node(blk)?;
                (n.key(i), n.child(i))
            };
            if child_end < child_start || child_end > end {
                return corrupt(blk, "parent keys out of order");
            }
            let old = c;
            if self.trim_block(&mut c, level - 1, child_start, child_end, lo, hi, detached)? {
                gone.push(i);
            } else if c != old {
                node::set_child_at(self.wri.get_mut(blk)?, i, c);
            }
            match child_end.next() {
                Some(k) if child_end < end => child_start = k,
                _ => break,
            }
            i += 1;
        }
        let lost_last = gone.last() == Some(&(nr - 1));
        let b = self.wri.get_mut(blk)?;
        for &g in gone.iter().rev() {
            node::delete_at(b, g);
        }
        let left = Node::new(b).nr();
        if lost_last && left > 0 {
            // The new last child takes the range up to this block's end, and so does the
            // last block of every level below it.
            node::set_key_at(b, left - 1, &end);
            let c = Node::new(b).child(left - 1);
            self.extend_right_edge(blk, left - 1, c, level - 1, &end)?;
        }
        self.drop_if_empty(*r)
    }

    /// Free the dirty block `r` if it holds nothing; true if it did.
    fn drop_if_empty(&mut self, r: BlockRef) -> Result<bool> {
        if self.node(r.blkno)?.nr() > 0 {
            return Ok(false);
        }
        self.wri.free_block(&mut *self.alloc, r)?;
        Ok(true)
    }

    /// The child `c` (at `level`, index `i` of dirty `parent`) now covers keys up to `end`:
    /// a parent's last key must be the end of its range, so the last key of each parent
    /// on the right edge below becomes `end`.
    fn extend_right_edge(
        &mut self,
        parent: u64,
        i: usize,
        mut c: BlockRef,
        level: u8,
        end: &Key,
    ) -> Result<()> {
        let (mut parent, mut i, mut level) = (parent, i, level);
        while level > 0 {
            let old = c;
            self.dirty(&mut c)?;
            if c != old {
                node::set_child_at(self.wri.get_mut(parent)?, i, c);
            }
            let b = self.wri.get_mut(c.blkno)?;
            let n = Node::new(b);
            if n.level() != level || n.nr() == 0 {
                return corrupt(c.blkno, "block level does not match its place in the tree");
            }
            let last = n.nr() - 1;
            node::set_key_at(b, last, end);
            let next = Node::new(b).child(last);
            (parent, i, level) = (c.blkno, last, level - 1);
            c = next;
        }
        Ok(())
    }
}
