//! Freeing a whole tree a budget at a time.
//!
//! The walk reads only parent blocks: leaves are freed by the references their parents
//! hold. Progress is a key: every leaf whose range ends before it has been freed, and a
//! parent is freed in the same call that frees its last child. A resumed call descends to
//! the key again, so it only ever reads blocks that have not been freed yet; the tree can
//! be freed across many commits.

use super::{corrupt, read_node, step, Node, Result, TreeTxn};
use crate::format::{BlockRef, BtreeRoot, Key};

/// How far [`free_blocks`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeProgress {
    /// Every block of the tree is freed.
    Done {
        /// Blocks freed by this call.
        freed: usize,
    },
    /// Call again with `next`.
    More {
        /// Blocks freed by this call.
        freed: usize,
        /// Where to resume.
        next: Key,
    },
}

/// Free the blocks of `root` from the leaf covering `from` onwards, at most `budget`
/// blocks (a budget below the tree's height still frees one leaf and its finished
/// ancestors, so every call makes progress). Start with [`Key::MIN`].
pub fn free_blocks(
    t: &mut TreeTxn<'_>,
    root: &BtreeRoot,
    from: &Key,
    budget: usize,
) -> Result<FreeProgress> {
    super::check_height(root)?;
    if root.is_empty() {
        return Ok(FreeProgress::Done { freed: 0 });
    }
    if root.height == 1 {
        t.wri.free_block(&mut *t.alloc, root.blk)?;
        return Ok(FreeProgress::Done { freed: 1 });
    }
    let mut next = *from;
    let mut freed = 0;
    loop {
        // Parents on the path to `next`: (block, index of the child taken, item count).
        let mut path: Vec<(BlockRef, usize, usize)> = Vec::new();
        let mut leaves: Vec<(Key, BlockRef)> = Vec::new();
        let (mut lo, mut hi) = (Key::MIN, Key::MAX);
        let mut r = root.blk;
        for level in (1..root.height).rev() {
            let g = read_node(&*t.wri, r, level)?;
            let n = Node::new(&g);
            let i = n.lower_bound(&next);
            if i >= n.nr() {
                return corrupt(r.blkno, "parent block does not cover the key");
            }
            path.push((r, i, n.nr()));
            if level == 1 {
                leaves = (i..n.nr()).map(|j| (n.key(j), n.child(j))).collect();
                break;
            }
            r = step(&n, r.blkno, &next, &mut lo, &mut hi)?;
        }
        // Keep room in the budget for the ancestors this call may finish.
        let mut limit = budget.saturating_sub(freed + path.len());
        if limit == 0 {
            if freed > 0 {
                return Ok(FreeProgress::More { freed, next });
            }
            limit = 1;
        }
        let mut taken = 0;
        for (k, c) in leaves.iter().take(limit) {
            t.wri.free_block(&mut *t.alloc, *c)?;
            freed += 1;
            taken += 1;
            if let Some(n) = k.next() {
                next = n;
            }
        }
        if taken < leaves.len() {
            return Ok(FreeProgress::More { freed, next });
        }
        // The last-level parent is finished; so is every ancestor whose finished child was
        // its last one.
        let mut depth = path.len();
        while depth > 0 {
            depth -= 1;
            let (blk, _, _) = path[depth];
            t.wri.free_block(&mut *t.alloc, blk)?;
            freed += 1;
            if depth == 0 {
                return Ok(FreeProgress::Done { freed });
            }
            let (_, pi, pnr) = path[depth - 1];
            if pi + 1 < pnr {
                break;
            }
        }
        // Resume after the finished last-level parent's range, whose end is its last key.
        let end = leaves.last().map(|(k, _)| *k).unwrap_or(hi);
        next = match end.next() {
            Some(n) => n,
            None => return corrupt(root.blk.blkno, "right spine ends before the root"),
        };
        if freed >= budget {
            return Ok(FreeProgress::More { freed, next });
        }
    }
}
