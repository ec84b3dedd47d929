//! The index of `.indx.` xattrs: an inode with an xattr whose name ends in `MAJOR.MINOR`
//! (a u8 and a u64; the value empty) is found by reading the index at `(MAJOR, MINOR)`.
//!
//! Each such xattr has one item in [`zone::XATTR_INDX`], without a value, keyed by
//! `(major, minor, ino, xattr id)` packed into the key's fields so that the keys sort in
//! that order ([`indx_key`], the original's layout). The xattr id keeps two xattrs of one
//! inode at the same position apart: removing one leaves the other's item. Items are
//! written and deleted blind (a deletion item, no read first) in the transaction of the
//! xattr's change or its inode's deletion; a read returns each `(major, minor, ino)` once.

use super::{FsError, FsResult, State};
use crate::format::{zone, Key};

/// An entry of the `.indx.` index: an inode at a position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IndxEntry {
    /// The position's major number.
    pub major: u8,
    /// The position's minor number.
    pub minor: u64,
    /// The inode.
    pub ino: u64,
}

/// The key of the index item of xattr `xid` of inode `ino` at `(major, minor)`: the
/// fields' bits packed most significant first, 8 + 64 + 64 + 64 bits into the key's
/// 64-bit `first`, `second` and `third` and its 8-bit `fourth` (type 0).
pub(crate) fn indx_key(major: u8, minor: u64, ino: u64, xid: u64) -> Key {
    Key::new(
        zone::XATTR_INDX,
        ((major as u64) << 56) | (minor >> 8),
        0,
        (minor << 56) | (ino >> 8),
        (ino << 56) | (xid >> 8),
        xid as u8,
    )
}

/// The entry and the xattr id of an index item's key, or why it is not one.
pub(crate) fn decode_indx_key(key: &Key) -> Result<(IndxEntry, u64), &'static str> {
    if key.zone != zone::XATTR_INDX || key.ty != 0 {
        return Err("an index item under a key that is not an index item's");
    }
    let entry = IndxEntry {
        major: (key.first >> 56) as u8,
        minor: (key.first << 8) | (key.second >> 56),
        ino: (key.second << 8) | (key.third >> 56),
    };
    Ok((entry, (key.third << 8) | key.fourth as u64))
}

/// Index items read at a time while entries are gathered.
const READ_BATCH: usize = 1024;

impl State {
    /// An `.indx.` xattr (id `xid` of `ino`) was indexed at `before` and is at `after`
    /// (see `tags::TagEffects`): create or delete its item.
    pub(super) fn indx_changed(
        &mut self,
        ino: u64,
        xid: u64,
        before: Option<(u8, u64)>,
        after: Option<(u8, u64)>,
    ) -> FsResult<()> {
        match (before, after) {
            (None, Some((major, minor))) => self.put(&indx_key(major, minor, ino, xid), &[]),
            (Some((major, minor)), None) => {
                self.client.delete(&indx_key(major, minor, ino, xid))?;
                Ok(())
            }
            // One name: one position.
            _ => Ok(()),
        }
    }

    /// Up to `limit` entries from `first` to `last` (both included) in index order,
    /// each `(major, minor, ino)` once however many of the inode's xattrs put it there.
    /// [`FsError::Invalid`] if `first` is after `last`.
    pub(super) fn read_xattr_index(
        &self,
        first: IndxEntry,
        last: IndxEntry,
        limit: usize,
    ) -> FsResult<Vec<IndxEntry>> {
        if first > last {
            return Err(FsError::Invalid);
        }
        let end = indx_key(last.major, last.minor, last.ino, u64::MAX);
        let mut start = indx_key(first.major, first.minor, first.ino, 0);
        let mut out: Vec<IndxEntry> = Vec::new();
        while out.len() < limit {
            let batch = (limit - out.len()).clamp(1, READ_BATCH);
            let items = self.client.read_items_limit(&start, &end, batch)?;
            for it in &items {
                if !it.val.is_empty() {
                    return Err(FsError::Corrupt("an index item with a value"));
                }
                let (e, _) = decode_indx_key(&it.key).map_err(FsError::Corrupt)?;
                if out.last() != Some(&e) && out.len() < limit {
                    out.push(e);
                }
            }
            match items.last().and_then(|it| it.key.next()) {
                Some(next) if items.len() == batch => start = next,
                _ => break,
            }
        }
        Ok(out)
    }
}
