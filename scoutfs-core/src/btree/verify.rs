//! Walking every block of a tree, and checking the invariants the tree keeps.

use super::{corrupt, read_node, view, BtreeError, ItemView, Node, Result};
use crate::block::BlockRead;
use crate::format::{BlockRef, BtreeRoot, Key};
use rustc_hash::FxHashSet;

/// One block of a tree, as [`walk_blocks`] shows it.
#[derive(Debug)]
pub struct BlockView<'a> {
    /// The reference that led here.
    pub blk: BlockRef,
    /// 0 for leaves.
    pub level: u8,
    /// First key the block covers.
    pub start: Key,
    /// Last key the block covers.
    pub end: Key,
    node: Node<'a>,
}

impl BlockView<'_> {
    /// Number of items.
    pub fn nr_items(&self) -> usize {
        self.node.nr()
    }

    /// Item `i` (`i < nr_items()`).
    pub fn item(&self, i: usize) -> ItemView<'_> {
        view(&self.node, i)
    }

    /// The child reference of parent item `i`.
    pub fn child(&self, i: usize) -> BlockRef {
        self.node.child(i)
    }

    /// Bytes used by items and their offsets.
    pub fn payload(&self) -> usize {
        self.node.payload()
    }
}

/// Visit every block of the tree, parents before their children, in key order. Fails on
/// the first block that does not verify, sits at the wrong level, holds keys outside the
/// range its parent gives it, or is referenced twice.
pub fn walk_blocks<R: BlockRead + ?Sized>(
    rd: &R,
    root: &BtreeRoot,
    f: &mut dyn FnMut(&BlockView<'_>) -> Result<()>,
) -> Result<()> {
    super::check_height(root)?;
    if root.is_empty() {
        return Ok(());
    }
    let mut seen = FxHashSet::default();
    visit(
        rd,
        root.blk,
        root.height - 1,
        Key::MIN,
        Key::MAX,
        &mut seen,
        f,
    )
}

fn visit<R: BlockRead + ?Sized>(
    rd: &R,
    r: BlockRef,
    level: u8,
    start: Key,
    end: Key,
    seen: &mut FxHashSet<u64>,
    f: &mut dyn FnMut(&BlockView<'_>) -> Result<()>,
) -> Result<()> {
    if !seen.insert(r.blkno) {
        return corrupt(r.blkno, "block referenced twice");
    }
    let g = read_node(rd, r, level)?;
    let node = Node::new(&g);
    for i in 0..node.nr() {
        let k = node.key(i);
        if k < start || k > end {
            return corrupt(r.blkno, "item key outside the block's range");
        }
    }
    f(&BlockView {
        blk: r,
        level,
        start,
        end,
        node,
    })?;
    if level > 0 {
        let mut lo = start;
        for i in 0..node.nr() {
            let k = node.key(i);
            visit(rd, node.child(i), level - 1, lo, k, seen, f)?;
            lo = k.next().unwrap_or(Key::MAX);
        }
    }
    Ok(())
}

/// What [`verify`] counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Levels.
    pub height: u8,
    /// Blocks.
    pub blocks: usize,
    /// Leaf blocks.
    pub leaves: usize,
    /// Items in leaves.
    pub items: usize,
    /// The smallest payload (bytes of items) of any block but the root.
    pub min_payload: usize,
}

/// Walk the whole tree and check its invariants: everything [`walk_blocks`] checks, plus
/// that no block but the root is empty, that the root is not an empty leaf, and that each
/// parent's last key is the end of its range (the right spine carries [`Key::MAX`]).
pub fn verify<R: BlockRead + ?Sized>(rd: &R, root: &BtreeRoot) -> Result<TreeStats> {
    let mut st = TreeStats {
        height: root.height,
        min_payload: usize::MAX,
        ..TreeStats::default()
    };
    walk_blocks(rd, root, &mut |b| {
        let is_root = b.blk == root.blk;
        st.blocks += 1;
        if b.nr_items() == 0 {
            return corrupt(b.blk.blkno, "empty block");
        }
        if b.level == 0 {
            st.leaves += 1;
            st.items += b.nr_items();
        } else if b.item(b.nr_items() - 1).key != b.end {
            return corrupt(b.blk.blkno, "last parent key is not the end of its range");
        }
        if !is_root {
            st.min_payload = st.min_payload.min(b.payload());
        }
        Ok(())
    })?;
    if st.min_payload == usize::MAX {
        st.min_payload = 0;
    }
    Ok(st)
}

/// What [`walk_tolerant`] asks of its caller.
pub trait BlockVisitor {
    /// About to read `r`, a block at `level`: `false` skips it and everything below it.
    fn enter(&mut self, r: BlockRef, level: u8) -> bool;
    /// A block that read and verified, before its children.
    fn block(&mut self, b: &BlockView<'_>);
    /// Something wrong at `r`: it could not be read or does not verify (its subtree is
    /// skipped), or it breaks an invariant of the tree that [`verify`] checks (the walk
    /// goes on below it).
    fn fault(&mut self, r: BlockRef, e: BtreeError);
}

/// Visit every block of the tree that can be read, parents before their children, in key
/// order, checking what [`verify`] checks but without stopping at the first problem: each
/// one goes to [`BlockVisitor::fault`] and the walk goes on with the rest of the tree.
///
/// It keeps no set of the blocks it has seen, so its memory is the depth of the tree; a
/// block referenced twice is entered twice, and a visitor that must not walk a block twice
/// (a damaged tree may reference one block from many parents) refuses it in
/// [`BlockVisitor::enter`].
pub fn walk_tolerant<R: BlockRead + ?Sized>(rd: &R, root: &BtreeRoot, v: &mut dyn BlockVisitor) {
    walk_tolerant_range(rd, root, Key::MIN, Key::MAX, v)
}

/// [`walk_tolerant`] of a subtree that covers the keys from `start` to `end` (a
/// [`super::Parent`] of a bigger tree, or a copy of one).
pub fn walk_tolerant_range<R: BlockRead + ?Sized>(
    rd: &R,
    root: &BtreeRoot,
    start: Key,
    end: Key,
    v: &mut dyn BlockVisitor,
) {
    if let Err(e) = super::check_height(root) {
        v.fault(root.blk, e);
        return;
    }
    if !root.is_empty() {
        visit_tolerant(rd, root.blk, root.height - 1, start, end, v);
    }
}

fn visit_tolerant<R: BlockRead + ?Sized>(
    rd: &R,
    r: BlockRef,
    level: u8,
    start: Key,
    end: Key,
    v: &mut dyn BlockVisitor,
) {
    if !v.enter(r, level) {
        return;
    }
    let g = match read_node(rd, r, level) {
        Ok(g) => g,
        Err(e) => return v.fault(r, e),
    };
    let node = Node::new(&g);
    let nr = node.nr();
    if (0..nr).any(|i| node.key(i) < start || node.key(i) > end) {
        v.fault(
            r,
            corrupt_err(r.blkno, "item key outside the block's range"),
        );
    }
    if nr == 0 {
        v.fault(r, corrupt_err(r.blkno, "empty block"));
    } else if level > 0 && node.key(nr - 1) != end {
        v.fault(
            r,
            corrupt_err(r.blkno, "last parent key is not the end of its range"),
        );
    }
    v.block(&BlockView {
        blk: r,
        level,
        start,
        end,
        node,
    });
    if level > 0 {
        let mut lo = start;
        for i in 0..nr {
            let k = node.key(i);
            visit_tolerant(rd, node.child(i), level - 1, lo, k, v);
            lo = k.next().unwrap_or(Key::MAX);
        }
    }
}

fn corrupt_err(blkno: u64, reason: &'static str) -> BtreeError {
    BtreeError::Corrupt { blkno, reason }
}
