//! The inode seq indexes and data_version: how an archive agent finds the inodes that
//! changed since it last looked, without walking the namespace, and tells whether a
//! file's contents changed under it.
//!
//! Every inode item carries two seqs: `meta_seq`, the seq of the last transaction that
//! changed the inode at all, and `data_seq`, of the last one that changed its contents.
//! Each is indexed by an item of [`zone::INODE_INDEX`] without a value,
//! [`inode_index_key`]`(META_SEQ | DATA_SEQ, seq, ino)`, so index items sort by
//! `(seq, ino)` and the inodes changed in a range of transactions are a range of keys
//! ([`Fs::walk_inodes`]). Every inode has its META_SEQ item; only regular files have a
//! DATA_SEQ item (as the original: `inode_has_index` indexes data_seq for `S_ISREG`
//! alone, so directories, symlinks and devices never show up in a data_seq walk).
//!
//! Invariant (`check` proves it at every crash point the sweeps try): each inode has
//! exactly the index items its seqs name, and no index item names an inode that does not
//! exist or a seq its inode does not have. It is kept by writing inode items in one
//! place: [`State::put_inode`] (a metadata change) and [`State::put_contents`] (a content
//! change) here, and [`State::delete_inode_item`] for a deletion. A seq moves at most once
//! per inode per transaction, to the transaction's seq; when it does, the old index item
//! is deleted and the new one inserted in the same transaction as the inode item (the
//! original's `update_index_items`). An inode written for the first time (a new one:
//! `meta_seq` 0) starts both seqs at the transaction's.
//!
//! data_version counts content changes: +1 for every operation that may change what a
//! read returns or the size — a write, a truncate either way, a size change of setattr, a
//! fallocate that grows the size — together with data_seq ([`State::put_contents`]).
//! An operation that changes the data but not the contents an agent archived (stage,
//! which writes back the archived bytes of offline extents) is not a content change: it
//! writes the inode with [`State::put_inode`], so data_version and data_seq stay and the
//! agent's data_version still names the file's contents.
//!
//! Visibility: a walk returns only entries at seqs up to the committed horizon
//! ([`Fs::committed_seq`]): the greatest seq such that every transaction of that seq or
//! lower is committed. Index items of an open transaction carry its seq, above the
//! horizon, so an entry never appears later at a seq at or below a horizon a walker has
//! seen: an agent that walks up to the horizon and resumes after it misses nothing.

use super::*;

/// Item changes one inode's update may add to the index besides its inode item: the
/// old item deleted and the new one inserted, for each of its two seqs.
pub(super) const INDEX_ITEMS: usize = 4;

/// One of the two inode seq indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SeqIndex {
    /// By `meta_seq`: every inode, at the seq of its last change of any kind.
    Meta,
    /// By `data_seq`: regular files, at the seq of their last content change.
    Data,
}

impl SeqIndex {
    fn item_type(self) -> u8 {
        match self {
            SeqIndex::Meta => item_type::META_SEQ,
            SeqIndex::Data => item_type::DATA_SEQ,
        }
    }
}

/// A position in a seq index: entries sort by `(major, minor, ino)`. Inode index
/// entries have the seq as their major and a minor of 0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IndexPos {
    /// The seq.
    pub major: u64,
    /// Always 0 in the inode seq indexes (positions with a greater minor fall after
    /// every entry of their major).
    pub minor: u32,
    /// The inode number.
    pub ino: u64,
}

impl IndexPos {
    /// The first position of an index.
    pub const MIN: IndexPos = IndexPos {
        major: 0,
        minor: 0,
        ino: 0,
    };
    /// The last position of an index.
    pub const MAX: IndexPos = IndexPos {
        major: u64::MAX,
        minor: u32::MAX,
        ino: u64::MAX,
    };
}

/// An entry of a seq index: inode `ino` is at seq `major`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IndexEntry {
    /// The seq.
    pub major: u64,
    /// Always 0 in the inode seq indexes.
    pub minor: u32,
    /// The inode number.
    pub ino: u64,
}

impl IndexEntry {
    /// The position just after this entry: where a walk resumes.
    pub fn next_pos(&self) -> IndexPos {
        match self.ino.checked_add(1) {
            Some(ino) => IndexPos {
                major: self.major,
                minor: self.minor,
                ino,
            },
            None => IndexPos {
                major: self.major,
                minor: self.minor.saturating_add(1),
                ino: 0,
            },
        }
    }
}

/// The seqs an inode's index items are at (0: no item).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Indexed {
    meta: u64,
    data: u64,
}

/// Whether the inode has a DATA_SEQ item (a regular file).
fn has_data_index(inode: &Inode) -> bool {
    inode.mode.get() & S_IFMT == S_IFREG
}

fn indexed(inode: &Inode) -> Indexed {
    Indexed {
        meta: inode.meta_seq.get(),
        data: if has_data_index(inode) {
            inode.data_seq.get()
        } else {
            0
        },
    }
}

/// The index key of the first entry at or after `p` (`None`: there is none).
fn first_key(ty: u8, p: IndexPos) -> Option<Key> {
    if p.minor == 0 {
        return Some(inode_index_key(ty, p.major, p.ino));
    }
    // Every entry of this major has minor 0, before `p`.
    Some(inode_index_key(ty, p.major.checked_add(1)?, 0))
}

/// The index key of the last entry at or before `p`.
fn last_key(ty: u8, p: IndexPos) -> Key {
    let mut k = inode_index_key(ty, p.major, p.ino);
    if p.minor > 0 {
        k.third = u64::MAX;
    }
    k.fourth = u8::MAX;
    k
}

impl State {
    /// The seqs the index holds inode `ino` at, given `copy`, the caller's copy of its
    /// item: those of the open transaction's version of the item if it wrote one (a copy
    /// read before that may be behind it), else the copy's (read from the committed item,
    /// which the caller's operation has not changed).
    fn indexed_seqs(&self, ino: u64, copy: &Inode) -> FsResult<Indexed> {
        let seq = self.client.trans_seq();
        let mine = indexed(copy);
        // A new inode has no version anywhere. A copy whose seqs are the transaction's
        // is as far as any version of this transaction: seqs only grow, to this one.
        if mine.meta == 0 || (mine.meta == seq && (mine.data == 0 || mine.data == seq)) {
            return Ok(mine);
        }
        match self.client.dirty_value(&inode_key(ino)) {
            Some(Some(v)) => {
                Ok(indexed(&Inode::read_from_bytes(v).map_err(|_| {
                    FsError::Corrupt("inode item of the wrong size")
                })?))
            }
            // Deleted in this transaction, its index items with it.
            Some(None) => Ok(Indexed { meta: 0, data: 0 }),
            None => Ok(mine),
        }
    }

    /// Move inode `ino`'s item of index `ty` from seq `old` to `new` (0: none).
    fn move_index(&mut self, ino: u64, ty: u8, old: u64, new: u64) -> FsResult<()> {
        if old == new {
            return Ok(());
        }
        if old != 0 {
            self.client.delete(&inode_index_key(ty, old, ino))?;
        }
        if new != 0 {
            self.put(&inode_index_key(ty, new, ino), &[])?;
        }
        Ok(())
    }

    /// Write the inode item of `ino` with its index items; `contents`: its contents may
    /// have changed (data_seq moves too).
    fn write_inode(&mut self, ino: u64, inode: &mut Inode, contents: bool) -> FsResult<()> {
        let old = self.indexed_seqs(ino, inode)?;
        let seq = self.client.trans_seq();
        let new_inode = old.meta == 0;
        inode.meta_seq = seq.into();
        if contents || new_inode {
            inode.data_seq = seq.into();
        } else if has_data_index(inode) {
            inode.data_seq = old.data.into();
        }
        let new = indexed(inode);
        self.put(&inode_key(ino), inode.as_bytes())?;
        self.move_index(ino, item_type::META_SEQ, old.meta, new.meta)?;
        self.move_index(ino, item_type::DATA_SEQ, old.data, new.data)
    }

    /// Write the inode item of `ino` after a change of its metadata (or of data that
    /// leaves its contents as they were: stage): meta_seq moves to the transaction's
    /// seq, data_seq and data_version stay. A new inode (never written) gets both seqs
    /// and its index items. The caller reserved [`INDEX_ITEMS`] beside the inode item.
    ///
    /// `inode` is the caller's copy of the item, changed: read after the item's last
    /// write, or in the same transaction as that write (the transaction's own version
    /// names the index items then). A copy read before a write that a step of the
    /// operation has since committed is stale: its seqs no longer name the index items.
    pub(super) fn put_inode(&mut self, ino: u64, inode: &mut Inode) -> FsResult<()> {
        self.write_inode(ino, inode, false)
    }

    /// Write the inode item of `ino` after a change that may have changed its contents
    /// (a write, a size change, a fallocate that grows it): data_version + 1, and both
    /// seqs move to the transaction's (see the module comment for what is not one).
    pub(super) fn put_contents(&mut self, ino: u64, inode: &mut Inode) -> FsResult<()> {
        inode.data_version = inode.data_version.get().wrapping_add(1).into();
        self.write_inode(ino, inode, true)
    }

    /// Delete the inode item of `ino` and its index items (the last step of deleting
    /// the inode: see `State::delete_inode`); `inode` is the caller's copy of it.
    pub(super) fn delete_inode_item(&mut self, ino: u64, inode: &Inode) -> FsResult<()> {
        let old = self.indexed_seqs(ino, inode)?;
        self.client.delete(&inode_key(ino))?;
        self.move_index(ino, item_type::META_SEQ, old.meta, 0)?;
        self.move_index(ino, item_type::DATA_SEQ, old.data, 0)
    }

    /// At most `limit` entries of `index` from `first` to `last` (inclusive), `last`
    /// already clamped to the committed horizon.
    fn walk_index(
        &self,
        index: SeqIndex,
        first: IndexPos,
        last: IndexPos,
        limit: usize,
    ) -> FsResult<Vec<IndexEntry>> {
        let ty = index.item_type();
        let Some(start) = first_key(ty, first) else {
            return Ok(Vec::new());
        };
        let end = last_key(ty, last);
        if limit == 0 || start > end {
            return Ok(Vec::new());
        }
        let items = self.client.read_items_limit(&start, &end, limit)?;
        Ok(items
            .iter()
            .map(|it| IndexEntry {
                major: it.key.second,
                minor: 0,
                ino: it.key.third,
            })
            .collect())
    }
}

impl Fs {
    /// The committed horizon: the greatest seq such that every transaction of that seq
    /// or lower is committed, so nothing will ever be written at it or below. It is one
    /// less than the seq of the oldest transaction still open by any mount (as the last
    /// committed super records them: a mount that crashed with its transaction open is
    /// resumed at that seq), or the super's seq when none is; on a single read-write
    /// mount, its open transaction's seq minus one. What a read-only mount reports is
    /// what the committed super shows.
    pub fn committed_seq(&self) -> FsResult<u64> {
        match self.call(Request::GetLastSeq)? {
            Response::Seq(seq) => Ok(seq),
            _ => Err(TransportError::Unexpected.into()),
        }
    }

    /// The entries of `index` from `first` to `last` inclusive, at most `limit` of them,
    /// in `(seq, ino)` order: the inodes whose meta_seq (or data_seq) is in that range.
    /// `last.major` is clamped to the committed horizon ([`Fs::committed_seq`]), so a walk
    /// never returns a change that could later be joined by another at a seq before it.
    /// An agent reads the horizon, walks up to it (a last major at or below the horizon
    /// is not clamped) resuming from [`IndexEntry::next_pos`] of the last entry while
    /// walks come back full, and starts its next round after that horizon. The cost
    /// follows `limit` (and the index items deleted in the range), not the size of the
    /// index. Works on a read-only mount.
    pub fn walk_inodes(
        &self,
        index: SeqIndex,
        first: IndexPos,
        last: IndexPos,
        limit: usize,
    ) -> FsResult<Vec<IndexEntry>> {
        // Taken before the read: the horizon only grows, and the index items at or
        // below one never gain an entry.
        let horizon = self.committed_seq()?;
        let last = if last.major > horizon {
            IndexPos {
                major: horizon,
                ..IndexPos::MAX
            }
        } else {
            last
        };
        self.op_read(|st| st.walk_index(index, first, last, limit))
    }
}
