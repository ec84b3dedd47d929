//! The copy-on-write B+tree of items.
//!
//! Items are `(key, seq, flags, value)`; keys are unique within a tree. Leaves hold items;
//! parents hold one item per child whose key is the greatest key that may be found below
//! that child (the right spine carries [`Key::MAX`]), so a child covers the keys after its
//! left neighbour's key up to its own. There are no separator keys.
//!
//! Reads take a [`BlockRead`]: the block cache for committed trees, or a transaction's
//! [`BlockWriter`] to also see its dirty blocks. Changes take a [`TreeTxn`] (the writer and
//! the allocator of one transaction) and copy every block they touch on the way down
//! (copy-on-write), splitting blocks that could not take the change and joining blocks
//! that fell under a quarter full, before descending into them (so a change never has to
//! walk back up).
//!
//! Splicing primitives for the log merge: [`get_parent`] names the subtree (rooted at the
//! last parent level) that covers a key, [`TreeTxn::set_parent`] replaces that subtree's reference,
//! [`TreeTxn::rebalance`] splits/joins along a path after a splice, and [`free_blocks`] frees a
//! whole tree a budget at a time, resuming from a saved key.
//!
//! Every block comes through verification (`block`) and node validation, levels must
//! step down by one, and the key range of each block must sit inside its parent's; any
//! mismatch is an error. Descents are bounded by the height (at most
//! [`MAX_BTREE_HEIGHT`]); scans advance their cursor strictly, so they always end.

mod free;
mod merge;
mod node;
mod trim;
mod verify;

pub use free::{free_blocks, FreeProgress};
pub use merge::{
    add_deltas, combine, delta_is_zero, resolve, MergeCursor, MergeEnd, MergeLimits,
    ITEM_FLAG_RESET,
};
pub use node::max_value_len;
pub use verify::{
    verify, walk_blocks, walk_tolerant, walk_tolerant_range, BlockView, BlockVisitor, TreeStats,
};

use crate::alloc::MetaAllocator;
use crate::block::{BlockError, BlockGuard, BlockRead, BlockWriter};
use crate::format::{
    BlockRef, BtreeRoot, Key, RawBlockRef, BTREE_HEADER_SIZE, MAGIC_BTREE, MAX_BTREE_HEIGHT,
};
use node::{item_bytes, Node, PARENT_ITEM_BYTES};
use std::ops::ControlFlow;
use zerocopy::IntoBytes;

/// Errors of btree operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BtreeError {
    /// Reading, writing or allocating a block failed.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// Blocks that verify but do not fit together.
    #[error("corrupt btree at block {blkno}: {reason}")]
    Corrupt {
        /// The block where the problem was seen.
        blkno: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// `insert` of a key that exists.
    #[error("key {0} already exists")]
    Exists(Key),
    /// `update` or `delete` of a key that does not exist.
    #[error("key {0} not found")]
    NotFound(Key),
    /// A value longer than this tree's blocks accept.
    #[error("value of {len} bytes is longer than the maximum of {max}")]
    ValueTooLarge {
        /// Length given.
        len: usize,
        /// Maximum for the block size.
        max: usize,
    },
    /// The tree would grow past the maximum height.
    #[error("btree would exceed the maximum height")]
    TooDeep,
    /// A change to a subtree being merged would have to grow or collapse the subtree's
    /// root; the merge stops before it and the splice's rebalance makes room.
    #[error("the subtree's root cannot take this change")]
    SubtreeFull,
    /// A subtree handed to [`TreeTxn::set_parent`] that cannot replace a parent reference.
    #[error("a spliced subtree must have height 2, not {0}")]
    BadSubtree(u8),
}

impl From<crate::alloc::AllocError> for BtreeError {
    fn from(e: crate::alloc::AllocError) -> Self {
        BtreeError::Block(BlockError::Alloc(e))
    }
}

/// Result of btree operations.
pub type Result<T> = std::result::Result<T, BtreeError>;

/// An item borrowed from a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemView<'a> {
    /// Key.
    pub key: Key,
    /// Version.
    pub seq: u64,
    /// `ITEM_FLAG_*`.
    pub flags: u8,
    /// Value.
    pub val: &'a [u8],
}

impl ItemView<'_> {
    /// An owned copy.
    pub fn to_item(&self) -> Item {
        Item {
            key: self.key,
            seq: self.seq,
            flags: self.flags,
            val: self.val.to_vec(),
        }
    }
}

/// An owned item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// Key.
    pub key: Key,
    /// Version.
    pub seq: u64,
    /// `ITEM_FLAG_*`.
    pub flags: u8,
    /// Value.
    pub val: Vec<u8>,
}

impl Item {
    /// A view borrowing the value.
    pub fn view(&self) -> ItemView<'_> {
        ItemView {
            key: self.key,
            seq: self.seq,
            flags: self.flags,
            val: &self.val,
        }
    }
}

fn view<'a>(n: &Node<'a>, i: usize) -> ItemView<'a> {
    ItemView {
        key: n.key(i),
        seq: n.seq(i),
        flags: n.flags(i),
        val: n.val(i),
    }
}

fn corrupt<T>(blkno: u64, reason: &'static str) -> Result<T> {
    Err(BtreeError::Corrupt { blkno, reason })
}

/// Bytes of items under which a non-root block is joined with a sibling.
fn low_water(block_size: usize) -> usize {
    (block_size - BTREE_HEADER_SIZE) / 4
}

/// Two siblings whose items fit in this many bytes are merged into one block.
fn merge_limit(block_size: usize) -> usize {
    (block_size - BTREE_HEADER_SIZE) * 3 / 4
}

fn read_node<R: BlockRead + ?Sized>(rd: &R, r: BlockRef, level: u8) -> Result<BlockGuard<'_>> {
    let g = rd.read_block(r, MAGIC_BTREE, node::validate)?;
    if Node::new(&g).level() != level {
        return corrupt(r.blkno, "block level does not match its place in the tree");
    }
    Ok(g)
}

fn check_height(root: &BtreeRoot) -> Result<()> {
    if root.height > MAX_BTREE_HEIGHT {
        return corrupt(root.blk.blkno, "tree height above the maximum");
    }
    Ok(())
}

/// The leaf covering a key, with the inclusive key range the parents give it.
struct Leaf<'r> {
    blk: BlockGuard<'r>,
    blkno: u64,
    lo: Key,
    hi: Key,
}

/// Step from parent block `n` (range `lo..=hi`) towards `key`: returns the child's
/// reference and narrows the range to the child's.
fn step(n: &Node<'_>, blkno: u64, key: &Key, lo: &mut Key, hi: &mut Key) -> Result<BlockRef> {
    let i = n.lower_bound(key);
    if i >= n.nr() {
        return corrupt(blkno, "parent block does not cover the key");
    }
    if n.key(0) < *lo {
        return corrupt(blkno, "parent key before the block's range");
    }
    let k = n.key(i);
    if k > *hi {
        return corrupt(blkno, "parent key beyond the block's range");
    }
    *hi = k;
    if i > 0 {
        // Keys are sorted and the first is >= lo, so this is too; p < k <= MAX, so p has
        // a successor.
        *lo = n.key(i - 1).next().unwrap_or(Key::MAX);
    }
    Ok(n.child(i))
}

fn find_leaf<'r, R: BlockRead + ?Sized>(
    rd: &'r R,
    root: &BtreeRoot,
    key: &Key,
) -> Result<Option<Leaf<'r>>> {
    if root.is_empty() {
        return Ok(None);
    }
    check_height(root)?;
    let (mut lo, mut hi) = (Key::MIN, Key::MAX);
    let mut r = root.blk;
    for level in (1..root.height).rev() {
        let g = read_node(rd, r, level)?;
        r = step(&Node::new(&g), r.blkno, key, &mut lo, &mut hi)?;
    }
    let blk = read_node(rd, r, 0)?;
    let n = Node::new(&blk);
    if n.nr() > 0 && (n.key(0) < lo || n.key(n.nr() - 1) > hi) {
        return corrupt(r.blkno, "leaf keys outside the range its parents give it");
    }
    Ok(Some(Leaf {
        blk,
        blkno: r.blkno,
        lo,
        hi,
    }))
}

/// The blocks a change of `key` would copy: the path from the root to the leaf covering
/// it, and the key range that leaf covers (`None` for an empty tree). A transaction that
/// buffers its changes uses it to count what writing them will cost.
pub fn leaf_path<R: BlockRead + ?Sized>(
    rd: &R,
    root: &BtreeRoot,
    key: &Key,
) -> Result<Option<(Vec<u64>, Key, Key)>> {
    if root.is_empty() {
        return Ok(None);
    }
    check_height(root)?;
    let (mut lo, mut hi) = (Key::MIN, Key::MAX);
    let mut r = root.blk;
    let mut path = Vec::with_capacity(root.height as usize);
    for level in (1..root.height).rev() {
        path.push(r.blkno);
        let g = read_node(rd, r, level)?;
        r = step(&Node::new(&g), r.blkno, key, &mut lo, &mut hi)?;
    }
    path.push(r.blkno);
    Ok(Some((path, lo, hi)))
}

/// Look up `key` and pass the item, if any, to `f` without copying its value.
pub fn lookup_with<R, T>(
    rd: &R,
    root: &BtreeRoot,
    key: &Key,
    f: impl FnOnce(ItemView<'_>) -> T,
) -> Result<Option<T>>
where
    R: BlockRead + ?Sized,
{
    let Some(leaf) = find_leaf(rd, root, key)? else {
        return Ok(None);
    };
    let n = Node::new(&leaf.blk);
    Ok(n.search(key).ok().map(|i| f(view(&n, i))))
}

/// The item with `key`, if any.
pub fn lookup<R: BlockRead + ?Sized>(rd: &R, root: &BtreeRoot, key: &Key) -> Result<Option<Item>> {
    lookup_with(rd, root, key, |v| v.to_item())
}

/// The first item whose key is `>= key`.
pub fn next<R: BlockRead + ?Sized>(rd: &R, root: &BtreeRoot, key: &Key) -> Result<Option<Item>> {
    let mut found = None;
    scan(rd, root, key, &Key::MAX, |it| {
        found = Some(it.to_item());
        ControlFlow::Break(())
    })?;
    Ok(found)
}

/// The last item whose key is `<= key`.
pub fn prev<R: BlockRead + ?Sized>(rd: &R, root: &BtreeRoot, key: &Key) -> Result<Option<Item>> {
    let mut found = None;
    scan_rev(rd, root, &Key::MIN, key, |it| {
        found = Some(it.to_item());
        ControlFlow::Break(())
    })?;
    Ok(found)
}

/// Pass every item with a key in `start..=end` to `f`, in ascending key order, until `f`
/// breaks.
pub fn scan<R, F>(rd: &R, root: &BtreeRoot, start: &Key, end: &Key, mut f: F) -> Result<()>
where
    R: BlockRead + ?Sized,
    F: FnMut(ItemView<'_>) -> ControlFlow<()>,
{
    let mut k = *start;
    while k <= *end {
        let Some(leaf) = find_leaf(rd, root, &k)? else {
            return Ok(());
        };
        let n = Node::new(&leaf.blk);
        for i in n.lower_bound(&k)..n.nr() {
            let it = view(&n, i);
            if it.key > leaf.hi {
                return corrupt(leaf.blkno, "leaf item beyond the leaf's range");
            }
            if it.key > *end || f(it).is_break() {
                return Ok(());
            }
        }
        // The leaf's range ends at or after k: the cursor always moves forward.
        match leaf.hi.next() {
            Some(nk) => k = nk,
            None => return Ok(()),
        }
    }
    Ok(())
}

/// Pass every item with a key in `start..=end` to `f`, in descending key order, until `f`
/// breaks.
pub fn scan_rev<R, F>(rd: &R, root: &BtreeRoot, start: &Key, end: &Key, mut f: F) -> Result<()>
where
    R: BlockRead + ?Sized,
    F: FnMut(ItemView<'_>) -> ControlFlow<()>,
{
    let mut k = *end;
    while k >= *start {
        let Some(leaf) = find_leaf(rd, root, &k)? else {
            return Ok(());
        };
        let n = Node::new(&leaf.blk);
        let top = match n.search(&k) {
            Ok(i) => i + 1,
            Err(i) => i,
        };
        for i in (0..top).rev() {
            let it = view(&n, i);
            if it.key < leaf.lo {
                return corrupt(leaf.blkno, "leaf item before the leaf's range");
            }
            if it.key < *start || f(it).is_break() {
                return Ok(());
            }
        }
        match leaf.lo.prev() {
            Some(pk) => k = pk,
            None => return Ok(()),
        }
    }
    Ok(())
}

/// Every item with a key in `start..=end`, in order.
pub fn items<R: BlockRead + ?Sized>(
    rd: &R,
    root: &BtreeRoot,
    start: &Key,
    end: &Key,
) -> Result<Vec<Item>> {
    let mut out = Vec::new();
    scan(rd, root, start, end, |it| {
        out.push(it.to_item());
        ControlFlow::Continue(())
    })?;
    Ok(out)
}

/// What changing a tree needs: the transaction's dirty blocks and its allocator.
pub struct TreeTxn<'a> {
    /// Dirty blocks of the transaction.
    pub wri: &'a mut BlockWriter,
    /// Where new blocks come from and freed ones go.
    pub alloc: &'a mut dyn MetaAllocator,
}

impl std::fmt::Debug for TreeTxn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeTxn").field("wri", &self.wri).finish()
    }
}

/// How a descent prepares the path for a change.
#[derive(Clone, Copy)]
struct WalkOpts {
    /// Make room in the target block for an item of this many bytes.
    need: Option<usize>,
    /// Join blocks under the low water mark with a sibling.
    join: bool,
    /// Stop at the block of this level (0: the leaf).
    stop_level: u8,
    /// The root is a subtree's parent block that will be spliced back into a larger
    /// tree: it must keep its level, so it is neither grown nor collapsed
    /// ([`BtreeError::SubtreeFull`] instead of a new root).
    subtree: bool,
}

/// A dirty parent block and the index of a child in it.
type ParentSlot = (u64, usize);

/// Where a walk ended: the dirty block reached, its dirty parent and its index there
/// (`None` when the block is the root), and the last key the block covers.
struct Walked {
    blk: u64,
    parent: Option<ParentSlot>,
    hi: Key,
}

/// Each level fixes up (splits/joins) its child at most this often per descent.
const MAX_FIXUPS: usize = 4;

impl TreeTxn<'_> {
    fn bs(&self) -> usize {
        self.wri.block_size()
    }

    fn node(&self, blkno: u64) -> Result<Node<'_>> {
        Ok(Node::new(
            self.wri
                .get(blkno)
                .ok_or(BlockError::Internal("walk lost a dirty block"))?,
        ))
    }

    fn dirty(&mut self, r: &mut BlockRef) -> Result<()> {
        self.wri
            .dirty_ref(&mut *self.alloc, r, MAGIC_BTREE, node::validate)?;
        Ok(())
    }

    fn new_node(&mut self, level: u8) -> Result<BlockRef> {
        let r = self
            .wri
            .new_block(&mut *self.alloc, MAGIC_BTREE, node::validate)?;
        node::init(self.wri.get_mut(r.blkno)?, level);
        Ok(r)
    }

    /// Copy the path to `key` for writing, preparing each block for the change described
    /// by `opts`. Returns the dirty block at `opts.stop_level`, or `None` for an empty
    /// tree that the change does not grow.
    fn walk(&mut self, root: &mut BtreeRoot, key: &Key, opts: WalkOpts) -> Result<Option<u64>> {
        Ok(self.walk_path(root, key, opts)?.map(|w| w.blk))
    }

    /// [`TreeTxn::walk`], also returning the dirty parent of the block reached, the index
    /// of the block in it, and the last key the block covers.
    fn walk_path(
        &mut self,
        root: &mut BtreeRoot,
        key: &Key,
        opts: WalkOpts,
    ) -> Result<Option<Walked>> {
        check_height(root)?;
        if root.is_empty() {
            if opts.need.is_none() {
                return Ok(None);
            }
            *root = BtreeRoot {
                blk: self.new_node(0)?,
                height: 1,
            };
        }
        self.dirty(&mut root.blk)?;
        if self.node(root.blk.blkno)?.level() + 1 != root.height {
            return corrupt(root.blk.blkno, "root level does not match the tree height");
        }
        if opts.join && !opts.subtree {
            self.collapse_root(root)?;
        }
        // A full root grows a new root above it; the loop below splits the old root.
        if let Some(need) = opts.need {
            let n = self.node(root.blk.blkno)?;
            let want = if root.height - 1 == opts.stop_level {
                need
            } else {
                PARENT_ITEM_BYTES
            };
            if n.free() < want {
                if opts.subtree {
                    return Err(BtreeError::SubtreeFull);
                }
                if root.height >= MAX_BTREE_HEIGHT {
                    return Err(BtreeError::TooDeep);
                }
                let top = self.new_node(root.height)?;
                let val = RawBlockRef::from(root.blk);
                if !node::insert_at(
                    self.wri.get_mut(top.blkno)?,
                    0,
                    &Key::MAX,
                    0,
                    0,
                    val.as_bytes(),
                ) {
                    return Err(BlockError::Internal("new root has no room").into());
                }
                *root = BtreeRoot {
                    blk: top,
                    height: root.height + 1,
                };
            }
        }

        let mut cur = root.blk.blkno;
        let mut parent = None;
        let mut hi = Key::MAX;
        let mut level = root.height - 1;
        let mut fixups = 0;
        while level > opts.stop_level {
            let (i, mut child, child_hi) = {
                let n = self.node(cur)?;
                let i = n.lower_bound(key);
                if i >= n.nr() {
                    return corrupt(cur, "parent block does not cover the key");
                }
                (i, n.child(i), n.key(i))
            };
            let old = child;
            self.dirty(&mut child)?;
            if child != old {
                node::set_child_at(self.wri.get_mut(cur)?, i, child);
            }
            let cn = self.node(child.blkno)?;
            if cn.level() + 1 != level {
                return corrupt(
                    child.blkno,
                    "block level does not match its place in the tree",
                );
            }
            if fixups < MAX_FIXUPS {
                let want = match opts.need {
                    Some(need) if level - 1 == opts.stop_level => need,
                    Some(_) => PARENT_ITEM_BYTES,
                    None => 0,
                };
                if opts.need.is_some() && cn.free() < want {
                    // An append past the block's last key (a sorted load) keeps most of
                    // the block on the left.
                    let append = cn.nr() > 0 && *key > cn.key(cn.nr() - 1);
                    self.split_child(cur, i, child, append)?;
                    fixups += 1;
                    continue;
                }
                if opts.join
                    && cn.payload() < low_water(self.bs())
                    && self.node(cur)?.nr() > 1
                    && self.join_child(cur, i)?
                {
                    fixups += 1;
                    continue;
                }
            }
            parent = Some((cur, i));
            cur = child.blkno;
            hi = child_hi;
            level -= 1;
            fixups = 0;
        }
        Ok(Some(Walked {
            blk: cur,
            parent,
            hi,
        }))
    }

    /// A dirty root parent with one child gives way to the child, level by level.
    fn collapse_root(&mut self, root: &mut BtreeRoot) -> Result<()> {
        while root.height > 1 && self.node(root.blk.blkno)?.nr() == 1 {
            let mut child = self.node(root.blk.blkno)?.child(0);
            self.wri.free_block(&mut *self.alloc, root.blk)?;
            self.dirty(&mut child)?;
            *root = BtreeRoot {
                blk: child,
                height: root.height - 1,
            };
            if self.node(child.blkno)?.level() + 1 != root.height {
                return corrupt(
                    child.blkno,
                    "block level does not match its place in the tree",
                );
            }
        }
        Ok(())
    }

    /// Split the dirty child at index `i` of dirty `parent`: its first half moves to a new
    /// left sibling whose reference is inserted before it. For an `append` (a sorted load
    /// past the child's last key), only the child's last quarter moves, to a new right
    /// sibling, so that sorted loads leave blocks three quarters full and copy little.
    fn split_child(&mut self, parent: u64, i: usize, child: BlockRef, append: bool) -> Result<()> {
        if append {
            return self.split_child_tail(parent, i, child);
        }
        let src = self
            .wri
            .get(child.blkno)
            .ok_or(BlockError::Internal("split of a clean block"))?
            .to_vec();
        let sn = Node::new(&src);
        if sn.nr() < 2 {
            return Err(BlockError::Internal("block too full with one item").into());
        }
        let split = node::split_point(sn);
        let left = self.new_node(sn.level())?;
        let (lb, cb) = self.wri.get_pair_mut(left.blkno, child.blkno)?;
        if !node::split_into(lb, cb, &src, split) {
            return Err(BlockError::Internal("split halves do not fit").into());
        }
        let ln = Node::new(lb);
        let lkey = ln.key(ln.nr() - 1);
        let val = RawBlockRef::from(left);
        if !node::insert_at(self.wri.get_mut(parent)?, i, &lkey, 0, 0, val.as_bytes()) {
            return Err(BlockError::Internal("parent has no room for a split").into());
        }
        Ok(())
    }

    /// [`TreeTxn::split_child`] of an append: the child's last items, a quarter block's
    /// worth, move to a new right sibling that takes over the end of the child's range.
    fn split_child_tail(&mut self, parent: u64, i: usize, child: BlockRef) -> Result<()> {
        let (split, level) = {
            let n = self.node(child.blkno)?;
            if n.nr() < 2 {
                return Err(BlockError::Internal("block too full with one item").into());
            }
            (node::append_split_point(n, low_water(self.bs())), n.level())
        };
        let right = self.new_node(level)?;
        let (rb, cb) = self.wri.get_pair_mut(right.blkno, child.blkno)?;
        if !node::move_tail(cb, rb, split) {
            return Err(BlockError::Internal("split halves do not fit").into());
        }
        let ckey = Node::new(cb).key(split - 1);
        let pb = self.wri.get_mut(parent)?;
        let end = Node::new(pb).key(i);
        node::set_key_at(pb, i, &ckey);
        let val = RawBlockRef::from(right);
        if !node::insert_at(pb, i + 1, &end, 0, 0, val.as_bytes()) {
            return Err(BlockError::Internal("parent has no room for a split").into());
        }
        Ok(())
    }

    /// Join the child at index `i` of dirty `parent` with a sibling: merge the two if they
    /// fit comfortably in one block, else even out their bytes. False if nothing changed.
    fn join_child(&mut self, parent: u64, i: usize) -> Result<bool> {
        let (li, ri) = if i > 0 { (i - 1, i) } else { (i, i + 1) };
        let (mut lref, mut rref) = {
            let p = self.node(parent)?;
            if ri >= p.nr() {
                return Ok(false);
            }
            (p.child(li), p.child(ri))
        };
        let level = self.node(parent)?.level() - 1;
        let lsrc = read_node(&*self.wri, lref, level)?.to_vec();
        let rsrc = read_node(&*self.wri, rref, level)?.to_vec();
        let (ln, rn) = (Node::new(&lsrc), Node::new(&rsrc));
        if ln.payload() + rn.payload() <= merge_limit(self.bs()) {
            let old = rref;
            self.dirty(&mut rref)?;
            if rref != old {
                node::set_child_at(self.wri.get_mut(parent)?, ri, rref);
            }
            let mut scratch = vec![0u8; lsrc.len()];
            let rb = self.wri.get_mut(rref.blkno)?;
            if !node::redistribute(&mut scratch, rb, &lsrc, &rsrc, 0) {
                return Err(BlockError::Internal("merged blocks do not fit").into());
            }
            node::delete_at(self.wri.get_mut(parent)?, li);
            self.wri.free_block(&mut *self.alloc, lref)?;
            return Ok(true);
        }
        let split = node::balance_point(ln, rn);
        if split == ln.nr() {
            return Ok(false);
        }
        for (idx, r) in [(li, &mut lref), (ri, &mut rref)] {
            let old = *r;
            self.dirty(r)?;
            if *r != old {
                node::set_child_at(self.wri.get_mut(parent)?, idx, *r);
            }
        }
        let (lb, rb) = self.wri.get_pair_mut(lref.blkno, rref.blkno)?;
        if !node::redistribute(lb, rb, &lsrc, &rsrc, split) {
            return Err(BlockError::Internal("balanced blocks do not fit").into());
        }
        let ln = Node::new(lb);
        let lkey = ln.key(ln.nr() - 1);
        node::set_key_at(self.wri.get_mut(parent)?, li, &lkey);
        Ok(true)
    }

    fn check_val(&self, val: &[u8]) -> Result<()> {
        let max = max_value_len(self.bs());
        if val.len() > max {
            return Err(BtreeError::ValueTooLarge {
                len: val.len(),
                max,
            });
        }
        Ok(())
    }

    fn put(&mut self, root: &mut BtreeRoot, key: &Key, it: Put<'_>) -> Result<()> {
        self.put_in(root, key, it, false)
    }

    fn put_in(
        &mut self,
        root: &mut BtreeRoot,
        key: &Key,
        it: Put<'_>,
        subtree: bool,
    ) -> Result<()> {
        self.put_walk(root, key, it, subtree).map(|_| ())
    }

    /// [`TreeTxn::put_in`], returning the dirty leaf that took the item and the last key
    /// that leaf covers.
    fn put_walk(
        &mut self,
        root: &mut BtreeRoot,
        key: &Key,
        it: Put<'_>,
        subtree: bool,
    ) -> Result<(u64, Key)> {
        self.check_val(it.val)?;
        if it.mode == PutMode::Update && root.is_empty() {
            return Err(BtreeError::NotFound(*key));
        }
        let opts = WalkOpts {
            need: Some(item_bytes(it.val.len())),
            join: false,
            stop_level: 0,
            subtree,
        };
        let w = self
            .walk_path(root, key, opts)?
            .ok_or(BlockError::Internal("walk made no leaf"))?;
        put_at_leaf(self.wri.get_mut(w.blk)?, key, &it)?;
        Ok((w.blk, w.hi))
    }

    /// [`TreeTxn::force_item`]; with `subtree`, `root` is a subtree's parent block that
    /// must keep its level (see [`BtreeError::SubtreeFull`]); with `newer_only`, a stored
    /// version with a greater seq is left alone (a merge applying an older input).
    #[expect(
        clippy::too_many_arguments,
        reason = "the put modes of a merge, spelled out"
    )]
    pub(crate) fn force_item_in(
        &mut self,
        root: &mut BtreeRoot,
        key: &Key,
        seq: u64,
        flags: u8,
        val: &[u8],
        subtree: bool,
        newer_only: bool,
    ) -> Result<()> {
        let mode = if newer_only {
            PutMode::ForceNewer
        } else {
            PutMode::Force
        };
        self.put_in(root, key, Put::new(mode, seq, flags, val), subtree)
    }

    /// Insert a new item (seq 0, no flags); [`BtreeError::Exists`] if the key exists.
    pub fn insert(&mut self, root: &mut BtreeRoot, key: &Key, val: &[u8]) -> Result<()> {
        self.insert_item(root, key, 0, 0, val)
    }

    /// Insert a new item with its seq and flags.
    pub fn insert_item(
        &mut self,
        root: &mut BtreeRoot,
        key: &Key,
        seq: u64,
        flags: u8,
        val: &[u8],
    ) -> Result<()> {
        self.put(root, key, Put::new(PutMode::Insert, seq, flags, val))
    }

    /// Replace an existing item's value; [`BtreeError::NotFound`] if it does not exist.
    pub fn update(&mut self, root: &mut BtreeRoot, key: &Key, val: &[u8]) -> Result<()> {
        self.update_item(root, key, 0, 0, val)
    }

    /// Replace an existing item's seq, flags and value.
    pub fn update_item(
        &mut self,
        root: &mut BtreeRoot,
        key: &Key,
        seq: u64,
        flags: u8,
        val: &[u8],
    ) -> Result<()> {
        self.put(root, key, Put::new(PutMode::Update, seq, flags, val))
    }

    /// Insert the item, or replace it if the key exists.
    pub fn force(&mut self, root: &mut BtreeRoot, key: &Key, val: &[u8]) -> Result<()> {
        self.force_item(root, key, 0, 0, val)
    }

    /// Insert or replace an item with its seq and flags.
    pub fn force_item(
        &mut self,
        root: &mut BtreeRoot,
        key: &Key,
        seq: u64,
        flags: u8,
        val: &[u8],
    ) -> Result<()> {
        self.put(root, key, Put::new(PutMode::Force, seq, flags, val))
    }

    /// Delete an item; [`BtreeError::NotFound`] if it does not exist.
    pub fn delete(&mut self, root: &mut BtreeRoot, key: &Key) -> Result<()> {
        self.delete_in(root, key, false)
    }

    /// [`TreeTxn::delete`]; with `subtree`, `root` is a subtree's parent block that must
    /// keep its level (see [`BtreeError::SubtreeFull`]).
    pub(crate) fn delete_in(
        &mut self,
        root: &mut BtreeRoot,
        key: &Key,
        subtree: bool,
    ) -> Result<()> {
        let opts = WalkOpts {
            need: None,
            join: true,
            stop_level: 0,
            subtree,
        };
        let Some(Walked {
            blk: leaf, parent, ..
        }) = self.walk_path(root, key, opts)?
        else {
            return Err(BtreeError::NotFound(*key));
        };
        let b = self.wri.get_mut(leaf)?;
        let Ok(i) = Node::new(b).search(key) else {
            // The walk's joins may have left the root with one child.
            if !subtree {
                self.collapse_root(root)?;
            }
            return Err(BtreeError::NotFound(*key));
        };
        if subtree && Node::new(b).nr() == 1 {
            // The leaf would empty; a subtree's parent must keep a child with items.
            if let Some((p, _)) = parent {
                if self.node(p)?.nr() == 1 {
                    return Err(BtreeError::SubtreeFull);
                }
            }
        }
        let b = self.wri.get_mut(leaf)?;
        node::delete_at(b, i);
        if Node::new(b).nr() == 0 {
            match parent {
                None => {
                    self.wri.free_block(&mut *self.alloc, root.blk)?;
                    *root = BtreeRoot::EMPTY;
                }
                // A leaf holding one item of a quarter block or more was not under the low
                // water mark, so the walk did not join it; now that it is empty, drop it.
                // If it was its parent's last child, its left neighbour takes over its
                // range.
                Some((p, idx)) if self.node(p)?.nr() > 1 => {
                    let pb = self.wri.get_mut(p)?;
                    let pn = Node::new(pb);
                    let (gone, last) = (pn.child(idx), pn.nr() - 1);
                    if idx == last {
                        let end = pn.key(idx);
                        node::set_key_at(pb, idx - 1, &end);
                    }
                    node::delete_at(pb, idx);
                    self.wri.free_block(&mut *self.alloc, gone)?;
                }
                Some(_) => {}
            }
        }
        // A join on the way down, or the drop of an emptied leaf, can leave the root with
        // one child: the tree would keep a level, and a block, it no longer needs.
        if subtree {
            return Ok(());
        }
        self.collapse_root(root)
    }

    /// Split and join blocks along the path to `key` as an insert of the largest value
    /// and a delete would, so that blocks a splice left too full or too empty are brought
    /// back between the water marks.
    pub fn rebalance(&mut self, root: &mut BtreeRoot, key: &Key) -> Result<()> {
        if root.is_empty() {
            return Ok(());
        }
        let opts = WalkOpts {
            need: Some(item_bytes(max_value_len(self.bs()))),
            join: true,
            stop_level: 0,
            subtree: false,
        };
        self.walk(root, key, opts)?;
        Ok(())
    }

    /// Replace the subtree that [`get_parent`] returned for `key` with `sub` (the merged
    /// copy of that subtree). For trees of height 2 or less, `sub` replaces the whole tree.
    /// Blocks of the replaced subtree are not freed here: whoever built `sub` by copying
    /// them has already freed them.
    pub fn set_parent(&mut self, root: &mut BtreeRoot, key: &Key, sub: BtreeRoot) -> Result<()> {
        check_height(root)?;
        if root.height <= 2 {
            *root = sub;
            return Ok(());
        }
        if sub.height != 2 {
            return Err(BtreeError::BadSubtree(sub.height));
        }
        let opts = WalkOpts {
            need: None,
            join: false,
            stop_level: 2,
            subtree: false,
        };
        let blk = self.walk(root, key, opts)?.ok_or(BlockError::Internal(
            "walk of a non-empty tree found nothing",
        ))?;
        let b = self.wri.get_mut(blk)?;
        let i = Node::new(b).lower_bound(key);
        if i >= Node::new(b).nr() {
            return corrupt(blk, "parent block does not cover the key");
        }
        node::set_child_at(b, i, sub.blk);
        Ok(())
    }
}

/// Put an item in a leaf the walk made room in.
fn put_at_leaf(b: &mut [u8], key: &Key, it: &Put<'_>) -> Result<()> {
    let done = match (Node::new(b).search_append(key), it.mode) {
        (Ok(_), PutMode::Insert) => return Err(BtreeError::Exists(*key)),
        (Ok(i), PutMode::ForceNewer) if Node::new(b).seq(i) > it.seq => return Ok(()),
        (Err(_), PutMode::Update) => return Err(BtreeError::NotFound(*key)),
        (Err(i), _) => node::insert_at(b, i, key, it.seq, it.flags, it.val),
        (Ok(i), _) => node::update_at(b, i, it.seq, it.flags, it.val),
    };
    if !done {
        return Err(BlockError::Internal("leaf has no room after the walk").into());
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PutMode {
    Insert,
    Update,
    Force,
    /// Force, unless the stored version is newer (a merge applying an older input).
    ForceNewer,
}

struct Put<'v> {
    mode: PutMode,
    seq: u64,
    flags: u8,
    val: &'v [u8],
}

impl<'v> Put<'v> {
    fn new(mode: PutMode, seq: u64, flags: u8, val: &'v [u8]) -> Self {
        Put {
            mode,
            seq,
            flags,
            val,
        }
    }
}

/// The last key a tree (or a subtree a trim detached) covers: its root parent's last
/// key; [`Key::MAX`] for a leaf or an empty tree.
pub fn covered_end<R: BlockRead + ?Sized>(rd: &R, root: &BtreeRoot) -> Result<Key> {
    check_height(root)?;
    if root.height < 2 {
        return Ok(Key::MAX);
    }
    let g = read_node(rd, root.blk, root.height - 1)?;
    let n = Node::new(&g);
    match n.nr() {
        0 => corrupt(root.blk.blkno, "empty block"),
        nr => Ok(n.key(nr - 1)),
    }
}

/// The subtree covering a key, as [`get_parent`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parent {
    /// The subtree: the last-level parent block (height 2), or the whole tree when the
    /// tree is 2 or fewer levels high.
    pub subtree: BtreeRoot,
    /// First key the subtree covers.
    pub start: Key,
    /// Last key the subtree covers.
    pub end: Key,
}

/// The subtree rooted at the last parent level (level 1) that covers `key`, and the key
/// range it covers; the whole tree (covering every key) if the tree has 2 levels or fewer.
pub fn get_parent<R: BlockRead + ?Sized>(rd: &R, root: &BtreeRoot, key: &Key) -> Result<Parent> {
    check_height(root)?;
    let (mut lo, mut hi) = (Key::MIN, Key::MAX);
    if root.height <= 2 {
        return Ok(Parent {
            subtree: *root,
            start: lo,
            end: hi,
        });
    }
    let mut r = root.blk;
    for level in (2..root.height).rev() {
        let g = read_node(rd, r, level)?;
        r = step(&Node::new(&g), r.blkno, key, &mut lo, &mut hi)?;
    }
    Ok(Parent {
        subtree: BtreeRoot { blk: r, height: 2 },
        start: lo,
        end: hi,
    })
}
