//! The `scoutfs.` xattr tags: a name `scoutfs.` followed by one or more of `hide.`,
//! `srch.`, `totl.` and `indx.` (in any order, each at most once) and then the rest of
//! the name gives the xattr meaning beyond its value:
//!
//! - `hide.`: not listed by `listxattr`;
//! - `srch.`: found by a search of the xattr name without walking the namespace;
//! - `totl.`: the rest ends in three decimal u64s `A.B.C`, the value is a decimal u64:
//!   its sum and count over every inode are kept per `A.B.C`;
//! - `indx.`: the rest ends in `MAJOR.MINOR` (a u8 and a u64), the value is empty: the
//!   inode is indexed under `(MAJOR, MINOR)`.
//!
//! A name that starts `scoutfs.` and is long enough to hold a tag (the prefix, a tag and
//! one more byte) must start with a tag ([`FsError::Invalid`] otherwise, and for a tag
//! given twice); a shorter one is an ordinary name, as in the original. Setting or
//! removing a tagged xattr is privileged (CAP_SYS_ADMIN in the original): that check is
//! the front-end's, which knows who asks.

use super::{FsError, FsResult};

/// The prefix of every tagged xattr name.
pub const TAG_PREFIX: &[u8] = b"scoutfs.";

/// The tags, each five bytes long.
const TAGS: [&[u8; 5]; 4] = [b"hide.", b"srch.", b"totl.", b"indx."];

/// The tags of an xattr name (all false for an ordinary name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XattrTags {
    /// `hide.`: not listed by `listxattr`.
    pub hide: bool,
    /// `srch.`: indexed for searches by name.
    pub srch: bool,
    /// `totl.`: summed per name (see the module comment).
    pub totl: bool,
    /// `indx.`: indexed by `(MAJOR, MINOR)` (see the module comment).
    pub indx: bool,
}

impl XattrTags {
    /// Whether the name carries any tag.
    pub fn any(&self) -> bool {
        self.hide || self.srch || self.totl || self.indx
    }
}

/// The tags of `name` and the rest of the name after them (`None` for an ordinary
/// name), or [`FsError::Invalid`] for a malformed `scoutfs.` name.
pub fn parse_tags(name: &[u8]) -> FsResult<Option<(XattrTags, &[u8])>> {
    let Some(mut rest) = name.strip_prefix(TAG_PREFIX) else {
        return Ok(None);
    };
    if rest.len() < TAGS[0].len() + 1 {
        return Ok(None);
    }
    let mut tags = XattrTags::default();
    while let Some(i) = TAGS.iter().position(|t| rest.starts_with(*t)) {
        let seen = match i {
            0 => &mut tags.hide,
            1 => &mut tags.srch,
            2 => &mut tags.totl,
            _ => &mut tags.indx,
        };
        if std::mem::replace(seen, true) {
            return Err(FsError::Invalid);
        }
        rest = &rest[TAGS[i].len()..];
    }
    if !tags.any() {
        // The only reason to use the prefix is its tags.
        return Err(FsError::Invalid);
    }
    Ok(Some((tags, rest)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(name: &str) -> FsResult<Option<(XattrTags, String)>> {
        parse_tags(name.as_bytes())
            .map(|o| o.map(|(t, r)| (t, String::from_utf8_lossy(r).into_owned())))
    }

    #[test]
    fn ordinary_names_have_no_tags() {
        for n in [
            "user.a",
            "trusted.x",
            "scoutfs",
            "scoutfs.",
            "scoutfs.hide.",
            "scoutfs.abcd",
        ] {
            assert!(matches!(tags(n), Ok(None)), "{n}");
        }
    }

    #[test]
    fn tags_in_any_order_then_the_rest() {
        let (t, rest) = tags("scoutfs.srch.hide.name").unwrap().unwrap();
        assert_eq!(
            t,
            XattrTags {
                hide: true,
                srch: true,
                ..Default::default()
            }
        );
        assert_eq!(rest, "name");
        let (t, rest) = tags("scoutfs.indx.totl.srch.hide.x.1.2").unwrap().unwrap();
        assert!(t.hide && t.srch && t.totl && t.indx);
        assert_eq!(rest, "x.1.2");
        // Tags alone, nothing after them: as the original, accepted.
        let (t, rest) = tags("scoutfs.hide.srch.").unwrap().unwrap();
        assert!(t.hide && t.srch && !t.totl);
        assert_eq!(rest, "");
    }

    #[test]
    fn malformed_tagged_names_are_invalid() {
        for n in [
            "scoutfs.nope.name",
            "scoutfs.hidex.name",
            "scoutfs.hide.hide.name",
            "scoutfs.srch.hide.srch.x",
            "scoutfs.HIDE.name",
        ] {
            assert!(matches!(tags(n), Err(FsError::Invalid)), "{n}");
        }
    }
}
