//! The totals of `.totl.` xattrs: for each name `A.B.C` the sum of the values of every
//! `.totl.` xattr whose name ends in it (over every inode) and how many there are.
//!
//! A total is one item in [`zone::XATTR_TOTL`] keyed by its name ([`totl_key`]: `A` first,
//! then `B` and `C`, so totals sort by name), whose value is two little-endian i64 lanes,
//! the total and the count, kept as delta items ([`crate::client::Client::add_delta`]):
//! every set, replacement and removal of such an xattr, and the deletion of its inode,
//! adds its change (total Δ, count Δ) in its own transaction. Deltas sum in the item
//! cache, in the log btree, in the log merge and in reads, and a total whose sum is zero
//! (no xattrs) reads as absent, so no operation ever reads a total to change it: mounts
//! change totals without serializing on them, and a read sees every committed change
//! exactly once at every stage of a log merge (the merge trims its inputs' items in the
//! commit that splices their sum into the filesystem root).

use super::{FsError, FsResult, State};
use crate::btree::delta_is_zero;
use crate::format::{zone, Key};

/// The length of a total's value: the total and the count.
pub(super) const VALUE_LEN: usize = 16;

/// A `.totl.` total as [`super::Fs::read_xattr_totals`] returns it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct XattrTotal {
    /// The name: the three numbers `A.B.C` the xattr names end in.
    pub name: [u64; 3],
    /// The sum of the values (wrapping, as the original's u64s).
    pub total: u64,
    /// The number of xattrs.
    pub count: u64,
}

/// The key of the total named `A.B.C`.
pub(crate) fn totl_key(name: [u64; 3]) -> Key {
    Key::new(zone::XATTR_TOTL, name[0], 0, name[1], name[2], 0)
}

/// The last key of the totals' zone.
fn last_totl_key() -> Key {
    Key::new(
        zone::XATTR_TOTL,
        u64::MAX,
        u8::MAX,
        u64::MAX,
        u64::MAX,
        u8::MAX,
    )
}

/// The total an item of [`zone::XATTR_TOTL`] holds, or why it is not one.
pub(crate) fn decode_total(key: &Key, val: &[u8]) -> Result<XattrTotal, &'static str> {
    if key.zone != zone::XATTR_TOTL || key.ty != 0 || key.fourth != 0 {
        return Err("a total under a key that is not a total's");
    }
    let lane = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            val.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    match (val.len(), lane(0), lane(1)) {
        (VALUE_LEN, Some(total), Some(count)) => Ok(XattrTotal {
            name: [key.first, key.second, key.third],
            total,
            count,
        }),
        _ => Err("a total whose value is not a total and a count"),
    }
}

impl State {
    /// A `.totl.` xattr counted `before` and counts `after` (see `tags::TagEffects`):
    /// add the difference to its total (the same name on both sides: one xattr).
    pub(super) fn totl_changed(
        &mut self,
        before: Option<([u64; 3], u64)>,
        after: Option<([u64; 3], u64)>,
    ) -> FsResult<()> {
        let Some((name, _)) = after.or(before) else {
            return Ok(());
        };
        let (mut total, mut count) = (0u64, 0i64);
        if let Some((_, v)) = before {
            total = total.wrapping_sub(v);
            count -= 1;
        }
        if let Some((_, v)) = after {
            total = total.wrapping_add(v);
            count += 1;
        }
        if total == 0 && count == 0 {
            return Ok(());
        }
        self.client
            .add_delta(&totl_key(name), &[total as i64, count])?;
        Ok(())
    }

    /// Up to `limit` totals whose names are `from` or after it, in name order; totals of
    /// no xattrs are not kept. They include this mount's uncommitted changes.
    pub(super) fn read_xattr_totals(
        &self,
        from: [u64; 3],
        limit: usize,
    ) -> FsResult<Vec<XattrTotal>> {
        let items = self
            .client
            .read_items_limit(&totl_key(from), &last_totl_key(), limit)?;
        items
            .iter()
            .filter(|it| !delta_is_zero(&it.val))
            .map(|it| decode_total(&it.key, &it.val).map_err(FsError::Corrupt))
            .collect()
    }
}
