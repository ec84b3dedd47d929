//! `.srch.` xattrs: the srch entries their changes log, and searches by name (the
//! files, their rotation and compaction are [`crate::srch`]'s).
//!
//! Every change of a `scoutfs.srch.` xattr logs, in the operation's transaction, an
//! entry `{hash of the name, inode, xattr id}` when the xattr comes or goes: a set of a
//! new one, a removal, and deleting an inode for every srch xattr it still has (a
//! replacement keeps the xattr's id and so its entry). The hash is the one the xattr's
//! items are keyed by ([`name_hash`]). The hook is module `tags`'s, with the other tags;
//! each entry is a change the operation declares in its reservation.

use super::*;

pub use crate::srch::SearchXattrs;

/// Whether `name` carries the `srch.` tag.
fn is_srch(name: &[u8]) -> bool {
    matches!(tags::parse_tags(name), Ok(Some((t, _))) if t.srch)
}

impl State {
    /// The `.srch.` xattr `name` (id `id`) of `ino` came or went: log its entry (the
    /// caller, module `tags`, declared it).
    pub(super) fn srch_logged(&mut self, ino: u64, name: &[u8], id: u64) -> FsResult<()> {
        if self.mutation == Mutation::SrchUnlogged {
            return Ok(());
        }
        Ok(self.client.srch_add(name_hash(name), ino, id)?)
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
