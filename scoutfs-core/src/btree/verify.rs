//! Walking every block of a tree, and checking the invariants the tree keeps.

use super::{corrupt, read_node, view, ItemView, Node, Result};
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
