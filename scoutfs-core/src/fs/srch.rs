//! `.srch.` xattrs: the srch entries their changes log, and searches by name (the
//! files, their rotation and compaction are [`crate::srch`]'s).
//!
//! Every change of a `scoutfs.srch.` xattr logs, in the operation's transaction, an
//! entry `{hash of the name, inode, xattr id}` for each version that comes or goes: a set
//! logs the new id, a replacement the old id (its removal) and the new one, a removal
//! the old id, and deleting an inode the id of every srch xattr it still has. The hash is
//! the one the xattr's items are keyed by ([`name_hash`]). Each entry is a change the
//! operation declares in its reservation.

use super::*;

pub use crate::srch::SearchXattrs;

/// Whether `name` carries the `srch.` tag.
fn is_srch(name: &[u8]) -> bool {
    matches!(tags::parse_tags(name), Ok(Some((t, _))) if t.srch)
}

/// The srch entries setting xattr `name` logs (`replacing` an existing one, or not).
pub(super) fn srch_set_changes(name: &[u8], replacing: bool) -> usize {
    if is_srch(name) {
        1 + usize::from(replacing)
    } else {
        0
    }
}

/// The srch entries removing xattr `name` logs.
pub(super) fn srch_remove_changes(name: &[u8]) -> usize {
    usize::from(is_srch(name))
}

/// The name of the xattr whose first part is item `it` (`None` for any other item, or
/// one that does not decode).
fn first_part_name(it: &Item) -> Option<&[u8]> {
    if it.key.ty != item_type::XATTR || it.key.fourth != 0 {
        return None;
    }
    let (hdr, rest) = XattrHeader::read_from_prefix(&it.val).ok()?;
    rest.get(..hdr.name_len as usize)
}

impl State {
    /// Xattr `name` of `ino` changed: log the srch entries of its version `old_id` that
    /// went and `new_id` that came, if it is a `.srch.` xattr.
    pub(super) fn srch_changed(
        &mut self,
        ino: u64,
        name: &[u8],
        old_id: Option<u64>,
        new_id: Option<u64>,
    ) -> FsResult<()> {
        if !is_srch(name) || self.mutation == Mutation::SrchUnlogged {
            return Ok(());
        }
        let hash = name_hash(name);
        for id in old_id.into_iter().chain(new_id) {
            self.client.srch_add(hash, ino, id)?;
        }
        Ok(())
    }

    /// The srch entries deleting item `it` with its inode logs (1 for the first part of
    /// a `.srch.` xattr).
    pub(super) fn srch_item_changes(&self, it: &Item) -> usize {
        first_part_name(it).map_or(0, srch_remove_changes)
    }

    /// Item `it` is deleted with its inode: log the removal of its srch entry if it is
    /// the first part of a `.srch.` xattr.
    pub(super) fn srch_item_deleted(&mut self, it: &Item) -> FsResult<()> {
        if self.srch_item_changes(it) > 0 && self.mutation != Mutation::SrchUnlogged {
            let k = it.key;
            self.client.srch_add(k.second, k.first, k.third)?;
        }
        Ok(())
    }

    /// The inodes of `next_ino..=last_ino` that may have the `.srch.` xattr `name`, as
    /// the last commit has them (see [`Fs::search_xattrs`]).
    pub(super) fn search_xattrs(
        &self,
        name: &[u8],
        next_ino: u64,
        last_ino: u64,
        limit: usize,
    ) -> FsResult<SearchXattrs> {
        if name.is_empty() || name.len() > NAME_MAX || !is_srch(name) {
            return Err(FsError::Invalid);
        }
        Ok(self
            .client
            .search_srch(name_hash(name), next_ino, last_ino, limit)?)
    }
}
