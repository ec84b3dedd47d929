//! One btree block: reading it, validating it, and changing it in place.
//!
//! Layout (see `format`): a 48-byte header, then `nr_items` u16 offsets sorted by key,
//! then free space, then item records (48-byte header + value) packed towards the end of
//! the block. Lookups binary-search the offsets. Records of deleted items are "dead" bytes
//! until a compaction repacks the heap.
//!
//! Every block read from a device is validated once by [`validate`] before it is cached,
//! so the accessors below can rely on in-range offsets; they still use checked slicing and
//! return defaults rather than panic if that promise were ever broken.

use crate::format::{
    BlockRef, Key, RawBlockRef, RawKey, BTREE_HEADER_SIZE, ITEM_FLAGS_KNOWN, ITEM_HEADER_SIZE,
    MAX_BTREE_HEIGHT, MAX_VAL_LEN,
};
use zerocopy::{FromBytes, IntoBytes};

const OFF_NR: usize = 32;
const OFF_LEVEL: usize = 34;
const OFF_FLAGS: usize = 35;
const OFF_HEAP: usize = 36;
const OFF_DEAD: usize = 40;

/// Bytes a parent item takes: record header, a block reference, its offset slot.
pub(crate) const PARENT_ITEM_BYTES: usize = ITEM_HEADER_SIZE + 16 + 2;

/// The largest value a leaf of `block_size` bytes accepts: at most [`MAX_VAL_LEN`], and
/// small enough that four such items fit in one block (so a split always makes room).
pub fn max_value_len(block_size: usize) -> usize {
    let cap = block_size.saturating_sub(BTREE_HEADER_SIZE);
    (cap / 4)
        .saturating_sub(ITEM_HEADER_SIZE + 2)
        .min(MAX_VAL_LEN)
}

/// Bytes an item with a value of `val_len` bytes takes in a block.
#[inline]
pub(crate) fn item_bytes(val_len: usize) -> usize {
    ITEM_HEADER_SIZE + val_len + 2
}

#[inline]
fn rd16(b: &[u8], off: usize) -> usize {
    match b.get(off..off + 2) {
        Some(s) => u16::from_le_bytes([s[0], s[1]]) as usize,
        None => 0,
    }
}

#[inline]
fn rd32(b: &[u8], off: usize) -> usize {
    match b.get(off..off + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize,
        None => 0,
    }
}

#[inline]
fn wr16(b: &mut [u8], off: usize, v: usize) {
    if let Some(s) = b.get_mut(off..off + 2) {
        s.copy_from_slice(&(v as u16).to_le_bytes());
    }
}

#[inline]
fn wr32(b: &mut [u8], off: usize, v: usize) {
    if let Some(s) = b.get_mut(off..off + 4) {
        s.copy_from_slice(&(v as u32).to_le_bytes());
    }
}

#[inline]
fn rd64(b: &[u8], off: usize) -> u64 {
    match b.get(off..off + 8) {
        Some(s) => u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]),
        None => 0,
    }
}

/// Decode the key of the record at `off`.
#[inline]
fn key_at(b: &[u8], off: usize) -> Key {
    // RawKey: first, second, third (u64 each), fourth, zone, type.
    Key {
        zone: b.get(off + 25).copied().unwrap_or(0),
        first: rd64(b, off),
        ty: b.get(off + 26).copied().unwrap_or(0),
        second: rd64(b, off + 8),
        third: rd64(b, off + 16),
        fourth: b.get(off + 24).copied().unwrap_or(0),
    }
}

/// A read-only view of a btree block.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Node<'a> {
    b: &'a [u8],
}

impl<'a> Node<'a> {
    #[inline]
    pub fn new(b: &'a [u8]) -> Node<'a> {
        Node { b }
    }

    #[inline]
    pub fn nr(&self) -> usize {
        rd16(self.b, OFF_NR)
    }

    #[inline]
    pub fn level(&self) -> u8 {
        self.b.get(OFF_LEVEL).copied().unwrap_or(0)
    }

    #[inline]
    fn heap_start(&self) -> usize {
        rd32(self.b, OFF_HEAP)
    }

    #[inline]
    fn dead(&self) -> usize {
        rd32(self.b, OFF_DEAD)
    }

    #[inline]
    fn off(&self, i: usize) -> usize {
        rd16(self.b, BTREE_HEADER_SIZE + 2 * i)
    }

    #[inline]
    pub fn key(&self, i: usize) -> Key {
        key_at(self.b, self.off(i))
    }

    #[inline]
    pub fn seq(&self, i: usize) -> u64 {
        rd64(self.b, self.off(i) + 32)
    }

    #[inline]
    fn val_len(&self, i: usize) -> usize {
        rd16(self.b, self.off(i) + 40)
    }

    #[inline]
    pub fn flags(&self, i: usize) -> u8 {
        self.b.get(self.off(i) + 42).copied().unwrap_or(0)
    }

    #[inline]
    pub fn val(&self, i: usize) -> &'a [u8] {
        let start = self.off(i) + ITEM_HEADER_SIZE;
        self.b.get(start..start + self.val_len(i)).unwrap_or(&[])
    }

    /// The child reference held by parent item `i`.
    #[inline]
    pub fn child(&self, i: usize) -> BlockRef {
        match RawBlockRef::read_from_bytes(self.val(i)) {
            Ok(r) => r.into(),
            Err(_) => BlockRef::NONE,
        }
    }

    /// Whether item `i`'s key is less than `key`, decoding only the fields needed.
    #[inline(always)]
    fn key_less(&self, i: usize, key: &Key) -> bool {
        let off = self.off(i);
        let Some(raw) = self
            .b
            .get(off..off + 32)
            .and_then(|s| <&[u8; 32]>::try_from(s).ok())
        else {
            return false;
        };
        // RawKey: first, second, third (u64 LE), fourth, zone, type.
        let le = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&raw[at..at + 8]);
            u64::from_le_bytes(w)
        };
        if raw[25] != key.zone {
            return raw[25] < key.zone;
        }
        let first = le(0);
        if first != key.first {
            return first < key.first;
        }
        if raw[26] != key.ty {
            return raw[26] < key.ty;
        }
        let second = le(8);
        if second != key.second {
            return second < key.second;
        }
        let third = le(16);
        if third != key.third {
            return third < key.third;
        }
        raw[24] < key.fourth
    }

    /// Binary search: `Ok(i)` if item `i` has `key`, else `Err(i)` where it would go.
    /// The loop has no data-dependent branch (the halving step compiles to a conditional
    /// move), so random lookups do not pay for mispredictions.
    #[inline]
    pub fn search(&self, key: &Key) -> Result<usize, usize> {
        let mut size = self.nr();
        if size == 0 {
            return Err(0);
        }
        let mut base = 0;
        while size > 1 {
            let half = size / 2;
            let mid = base + half;
            base = if self.key_less(mid, key) { mid } else { base };
            size -= half;
        }
        // base is the last item < key, or 0.
        let i = base + usize::from(self.key_less(base, key));
        if i < self.nr() && self.key(i) == *key {
            Ok(i)
        } else {
            Err(i)
        }
    }

    /// [`Node::search`], first trying the end of the block (where sorted loads go).
    #[inline]
    pub fn search_append(&self, key: &Key) -> Result<usize, usize> {
        let nr = self.nr();
        if nr > 0 && self.key_less(nr - 1, key) {
            return Err(nr);
        }
        self.search(key)
    }

    /// Index of the first item whose key is >= `key` (the child covering `key` in a parent).
    #[inline]
    pub fn lower_bound(&self, key: &Key) -> usize {
        match self.search(key) {
            Ok(i) | Err(i) => i,
        }
    }

    /// Bytes not available for items (header, offsets, live records).
    pub fn used(&self) -> usize {
        self.b.len().saturating_sub(self.free())
    }

    /// Bytes of live items (records and offsets).
    pub fn payload(&self) -> usize {
        self.used().saturating_sub(BTREE_HEADER_SIZE)
    }

    /// Bytes available for new items, counting dead bytes a compaction would reclaim.
    pub fn free(&self) -> usize {
        (self.heap_start() + self.dead()).saturating_sub(BTREE_HEADER_SIZE + 2 * self.nr())
    }

    fn contiguous_free(&self) -> usize {
        self.heap_start()
            .saturating_sub(BTREE_HEADER_SIZE + 2 * self.nr())
    }
}

/// Check everything a reader relies on in a block whose header has verified.
pub(crate) fn validate(b: &[u8]) -> Result<(), &'static str> {
    let len = b.len();
    if !(BTREE_HEADER_SIZE..=65536).contains(&len) {
        return Err("btree block size out of range");
    }
    let n = Node::new(b);
    let nr = n.nr();
    let heap = n.heap_start();
    let level = n.level();
    if level >= MAX_BTREE_HEIGHT {
        return Err("impossible btree block level");
    }
    if b.get(OFF_FLAGS).copied() != Some(0) {
        return Err("unknown btree block flags");
    }
    if BTREE_HEADER_SIZE + 2 * nr > heap || heap > len {
        return Err("item offsets overlap the item heap");
    }
    let max_val = max_value_len(len);
    let mut live = 0usize;
    let mut prev: Option<Key> = None;
    for i in 0..nr {
        let off = n.off(i);
        if off < heap || off + ITEM_HEADER_SIZE > len {
            return Err("item offset outside the item heap");
        }
        let vlen = n.val_len(i);
        if off + ITEM_HEADER_SIZE + vlen > len {
            return Err("item value runs past the block end");
        }
        if level > 0 {
            if vlen != 16 || n.flags(i) != 0 {
                return Err("parent item is not a block reference");
            }
            if n.child(i).blkno == 0 {
                return Err("parent item references block 0");
            }
        } else {
            if vlen > max_val {
                return Err("item value longer than the maximum");
            }
            if n.flags(i) & !ITEM_FLAGS_KNOWN != 0 {
                return Err("unknown item flags");
            }
        }
        let key = n.key(i);
        if let Some(p) = prev {
            if p >= key {
                return Err("item keys out of order");
            }
        }
        prev = Some(key);
        live += ITEM_HEADER_SIZE + vlen;
    }
    if live + n.dead() != len - heap {
        return Err("item heap accounting does not add up");
    }
    Ok(())
}

/// Format `b` as an empty block of `level` (the block header is left as it is).
pub(crate) fn init(b: &mut [u8], level: u8) {
    let len = b.len();
    if let Some(h) = b.get_mut(OFF_NR..BTREE_HEADER_SIZE) {
        h.fill(0);
    }
    if let Some(l) = b.get_mut(OFF_LEVEL) {
        *l = level;
    }
    wr32(b, OFF_HEAP, len);
}

/// Repack the live records at the end of the block, reclaiming dead bytes.
fn compact(b: &mut [u8]) {
    let copy = b.to_vec();
    let old = Node::new(&copy);
    let mut top = b.len();
    for i in 0..old.nr() {
        let off = old.off(i);
        let rec = ITEM_HEADER_SIZE + old.val_len(i);
        top -= rec;
        if let (Some(dst), Some(src)) = (b.get_mut(top..top + rec), copy.get(off..off + rec)) {
            dst.copy_from_slice(src);
        }
        wr16(b, BTREE_HEADER_SIZE + 2 * i, top);
    }
    wr32(b, OFF_HEAP, top);
    wr32(b, OFF_DEAD, 0);
}

/// Insert an item at position `i` (the caller has found the position and made room).
/// Returns false if the block lacks room (nothing is changed then).
pub(crate) fn insert_at(
    b: &mut [u8],
    i: usize,
    key: &Key,
    seq: u64,
    flags: u8,
    val: &[u8],
) -> bool {
    let n = Node::new(b);
    let nr = n.nr();
    if n.free() < item_bytes(val.len()) || i > nr {
        return false;
    }
    if n.contiguous_free() < item_bytes(val.len()) {
        compact(b);
    }
    let rec = ITEM_HEADER_SIZE + val.len();
    let top = Node::new(b).heap_start() - rec;
    let hdr = crate::format::ItemHeader {
        key: RawKey::from(key),
        seq: seq.into(),
        val_len: (val.len() as u16).into(),
        flags,
        pad: [0; 5],
    };
    if let Some(dst) = b.get_mut(top..top + ITEM_HEADER_SIZE) {
        dst.copy_from_slice(hdr.as_bytes());
    }
    if let Some(dst) = b.get_mut(top + ITEM_HEADER_SIZE..top + rec) {
        dst.copy_from_slice(val);
    }
    let offs = BTREE_HEADER_SIZE + 2 * i;
    let offs_end = BTREE_HEADER_SIZE + 2 * nr;
    b.copy_within(offs..offs_end, offs + 2);
    wr16(b, offs, top);
    wr16(b, OFF_NR, nr + 1);
    wr32(b, OFF_HEAP, top);
    true
}

/// Remove item `i`.
pub(crate) fn delete_at(b: &mut [u8], i: usize) {
    let n = Node::new(b);
    let nr = n.nr();
    if i >= nr {
        return;
    }
    let off = n.off(i);
    let rec = ITEM_HEADER_SIZE + n.val_len(i);
    if off == n.heap_start() {
        wr32(b, OFF_HEAP, off + rec);
    } else {
        let dead = n.dead() + rec;
        wr32(b, OFF_DEAD, dead);
    }
    let offs = BTREE_HEADER_SIZE + 2 * i;
    b.copy_within(offs + 2..BTREE_HEADER_SIZE + 2 * nr, offs);
    wr16(b, OFF_NR, nr - 1);
}

/// Replace item `i`'s seq, flags and value, keeping its key. Returns false (and changes
/// nothing) if the block lacks room for the new value.
pub(crate) fn update_at(b: &mut [u8], i: usize, seq: u64, flags: u8, val: &[u8]) -> bool {
    let n = Node::new(b);
    if i >= n.nr() {
        return false;
    }
    let off = n.off(i);
    if n.val_len(i) == val.len() {
        let start = off + ITEM_HEADER_SIZE;
        if let Some(dst) = b.get_mut(start..start + val.len()) {
            dst.copy_from_slice(val);
        }
        if let Some(s) = b.get_mut(off + 32..off + 40) {
            s.copy_from_slice(&seq.to_le_bytes());
        }
        if let Some(f) = b.get_mut(off + 42) {
            *f = flags;
        }
        return true;
    }
    if n.free() + n.val_len(i) < val.len() {
        return false;
    }
    let key = n.key(i);
    delete_at(b, i);
    insert_at(b, i, &key, seq, flags, val)
}

/// Overwrite the key of item `i` (the caller keeps the order).
pub(crate) fn set_key_at(b: &mut [u8], i: usize, key: &Key) {
    let off = Node::new(b).off(i);
    if let Some(dst) = b.get_mut(off..off + 32) {
        dst.copy_from_slice(RawKey::from(key).as_bytes());
    }
}

/// Overwrite the child reference of parent item `i`.
pub(crate) fn set_child_at(b: &mut [u8], i: usize, r: BlockRef) {
    let start = Node::new(b).off(i) + ITEM_HEADER_SIZE;
    if let Some(dst) = b.get_mut(start..start + 16) {
        dst.copy_from_slice(RawBlockRef::from(r).as_bytes());
    }
}

/// Append a copy of item `i` of `src` at the end of `dst` (whose last key is below it),
/// copying its record whole. Returns false if `dst` lacks contiguous room.
fn append_record(dst: &mut [u8], src: &Node<'_>, i: usize) -> bool {
    let off = src.off(i);
    let rec = ITEM_HEADER_SIZE + src.val_len(i);
    let d = Node::new(dst);
    let nr = d.nr();
    if d.contiguous_free() < rec + 2 {
        return false;
    }
    let top = d.heap_start() - rec;
    match (dst.get_mut(top..top + rec), src.b.get(off..off + rec)) {
        (Some(to), Some(from)) => to.copy_from_slice(from),
        _ => return false,
    }
    wr16(dst, BTREE_HEADER_SIZE + 2 * nr, top);
    wr16(dst, OFF_NR, nr + 1);
    wr32(dst, OFF_HEAP, top);
    true
}

/// Rebuild `left` and `right` (blocks of one level) from the items of both, in key order,
/// putting the first `split` of them in `left`. `left_src`/`right_src` are copies of their
/// contents before the call. Returns false if the items do not fit.
pub(crate) fn redistribute(
    left: &mut [u8],
    right: &mut [u8],
    left_src: &[u8],
    right_src: &[u8],
    split: usize,
) -> bool {
    let (l, r) = (Node::new(left_src), Node::new(right_src));
    let level = l.level();
    init(left, level);
    init(right, level);
    let mut idx = 0;
    for src in [l, r] {
        for i in 0..src.nr() {
            let dst: &mut [u8] = if idx < split { &mut *left } else { &mut *right };
            if !append_record(dst, &src, i) {
                return false;
            }
            idx += 1;
        }
    }
    true
}

/// Split the items of `src` (a copy of `right` before the call): the first `split` go to
/// the empty block `left`, the rest stay, repacked, in `right`.
pub(crate) fn split_into(left: &mut [u8], right: &mut [u8], src: &[u8], split: usize) -> bool {
    let s = Node::new(src);
    init(left, s.level());
    init(right, s.level());
    for i in 0..s.nr() {
        let dst: &mut [u8] = if i < split { &mut *left } else { &mut *right };
        if !append_record(dst, &s, i) {
            return false;
        }
    }
    true
}

/// Move the items of `src` from index `split` on to the empty block `dst` (of the same
/// level). Returns false if they do not fit (`dst` is then partly filled).
pub(crate) fn move_tail(src: &mut [u8], dst: &mut [u8], split: usize) -> bool {
    let (nr, level) = {
        let n = Node::new(src);
        (n.nr(), n.level())
    };
    init(dst, level);
    for i in split..nr {
        if !append_record(dst, &Node::new(src), i) {
            return false;
        }
    }
    // From the end: records appended in key order sit at the heap's start and give their
    // bytes straight back.
    for i in (split..nr).rev() {
        delete_at(src, i);
    }
    true
}

/// Where to split a full block that is being appended to (the new key sorts after its
/// last item): as few trailing items as bring the right block to a quarter of the block
/// or more (the low water mark), so that sorted appends leave blocks about three quarters
/// full rather than half. In `1..nr` (for `nr >= 2`).
pub(crate) fn append_split_point(n: Node<'_>, low_water: usize) -> usize {
    let nr = n.nr();
    let mut acc = 0;
    let mut i = nr;
    while i > 1 && acc < low_water {
        i -= 1;
        acc += item_bytes(n.val_len(i));
    }
    i.clamp(1, nr.saturating_sub(1).max(1))
}

/// The number of leading items of `n` whose bytes come closest to half of its total, in
/// `1..nr` (for `nr >= 2`).
pub(crate) fn split_point(n: Node<'_>) -> usize {
    let half = n.payload() / 2;
    let mut acc = 0;
    for i in 0..n.nr() {
        let sz = item_bytes(n.val(i).len());
        if acc + sz / 2 >= half {
            return i.clamp(1, n.nr().saturating_sub(1).max(1));
        }
        acc += sz;
    }
    n.nr().saturating_sub(1).max(1)
}

/// The number of leading items of `a` followed by `b` whose bytes come closest to half of
/// their total, kept within `1..total_items` when possible.
pub(crate) fn balance_point(a: Node<'_>, b: Node<'_>) -> usize {
    let total = a.payload() + b.payload();
    let count = a.nr() + b.nr();
    let mut acc = 0;
    let mut i = 0;
    for n in [a, b] {
        for j in 0..n.nr() {
            let sz = item_bytes(n.val(j).len());
            if acc + sz / 2 >= total / 2 {
                return i.clamp(1, count.saturating_sub(1).max(1));
            }
            acc += sz;
            i += 1;
        }
    }
    i.clamp(1, count.saturating_sub(1).max(1))
}
