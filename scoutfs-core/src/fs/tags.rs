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
//!
//! The numbers of `.totl.` and `.indx.` names and the value of a `.totl.` xattr are
//! parsed as the original parses them (its `kstrtoull` with base 0): decimal, octal after
//! a leading `0`, hex after `0x`; no sign, no spaces, at most 23 characters (octal
//! `u64::MAX`), no overflow. The numbers are the last dot-separated fields of the whole
//! name, so a tag's own dot may be the one before the first (`scoutfs.totl.1.2.3`).
//! Setting or removing a `.totl.` or `.indx.` xattr whose numbers do not parse, or a name
//! with both tags, is [`FsError::Invalid`]; so is setting a `.totl.` value that does not
//! parse or an `.indx.` value that is not empty.
//!
//! What a tagged xattr adds beyond its items ([`tag_effects`]: a `.totl.` xattr counts in
//! its total, an `.indx.` xattr has its index item) follows from its name and value
//! alone, so setting it, removing it, deleting its inode and `check` all agree on it —
//! even for such an xattr stored before the tags had a meaning (it counts only if it
//! parses). Every change of a tagged xattr goes through [`State::tagged_xattr_changed`],
//! in the transaction of the change: the one place that keeps those extra items.

use super::{totl, FsError, FsResult, State};
use crate::client::Reservation;
use crate::format::{item_type, zone, Key, XattrHeader};
use zerocopy::FromBytes;

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

/// The longest number the original parses: `u64::MAX` in octal with its leading zero.
const MAX_NUMBER_LEN: usize = 23;

/// Parse a number of a tagged name or a `.totl.` value as the original does (see the
/// module comment); `None` if it does not parse. The original parses a C string: a value
/// is parsed up to its first NUL byte (a value written with its terminator counts).
pub(crate) fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > MAX_NUMBER_LEN || s[0] == b'+' || s[s.len() - 1] == b'\n' {
        return None;
    }
    let s = match s.iter().position(|&b| b == 0) {
        Some(nul) => &s[..nul],
        None => s,
    };
    let hex_digit = |b: Option<&u8>| b.is_some_and(u8::is_ascii_hexdigit);
    let (radix, digits) = match s {
        [b'0', x, ..] if (*x | 0x20) == b'x' && hex_digit(s.get(2)) => (16, &s[2..]),
        [b'0', ..] => (8, s),
        _ => (10, s),
    };
    let n = digits
        .iter()
        .take_while(|b| (**b as char).is_digit(radix))
        .count();
    // After the digits one newline may follow, as `kstrtoull` allows (before a NUL: a
    // last newline was refused above).
    if n == 0 || !matches!(&digits[n..], [] | [b'\n']) {
        return None;
    }
    digits[..n].iter().try_fold(0u64, |acc, b| {
        let d = (*b as char).to_digit(radix)? as u64;
        acc.checked_mul(radix as u64)?.checked_add(d)
    })
}

/// The last `N` dot-separated numbers of `name` (see [`parse_u64`]), or `None`.
pub(crate) fn dotted_u64s<const N: usize>(name: &[u8]) -> Option<[u64; N]> {
    let mut out = [0u64; N];
    let mut fields = name.rsplit(|&b| b == b'.');
    for slot in out.iter_mut().rev() {
        *slot = parse_u64(fields.next()?)?;
    }
    // The first number must follow a dot too.
    fields.next()?;
    Some(out)
}

/// What a tagged xattr adds to the filesystem beyond its own items.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TagEffects {
    /// A `.totl.` xattr whose name and value parse: its total's name and its value.
    pub(crate) totl: Option<([u64; 3], u64)>,
    /// An `.indx.` xattr whose name parses and whose value is empty: its position.
    pub(crate) indx: Option<(u8, u64)>,
}

/// The `.indx.` position a name ends in: `MAJOR.MINOR`, a u8 and a u64.
fn indx_position(name: &[u8]) -> Option<(u8, u64)> {
    let [major, minor] = dotted_u64s::<2>(name)?;
    Some((u8::try_from(major).ok()?, minor))
}

/// What the xattr `name` (of `tags`) with `value` adds to the filesystem (a name with
/// both `.totl.` and `.indx.` adds nothing: it cannot be set).
pub(crate) fn tag_effects(name: &[u8], tags: &XattrTags, value: &[u8]) -> TagEffects {
    if tags.totl && tags.indx {
        return TagEffects::default();
    }
    TagEffects {
        totl: tags
            .totl
            .then(|| Some((dotted_u64s::<3>(name)?, parse_u64(value)?)))
            .flatten(),
        indx: tags
            .indx
            .then(|| indx_position(name).filter(|_| value.is_empty()))
            .flatten(),
    }
}

/// Check the name of an xattr being set or removed: the tags ([`parse_tags`]) and, for
/// `.totl.` and `.indx.`, the numbers it ends in. Its tags, if it has any.
pub(super) fn check_changed_name(name: &[u8]) -> FsResult<Option<XattrTags>> {
    let Some((tags, _)) = parse_tags(name)? else {
        return Ok(None);
    };
    let bad = match (tags.totl, tags.indx) {
        (true, true) => true,
        (true, false) => dotted_u64s::<3>(name).is_none(),
        (false, true) => indx_position(name).is_none(),
        (false, false) => false,
    };
    if bad {
        return Err(FsError::Invalid);
    }
    Ok(Some(tags))
}

/// Check the value a tagged xattr is set to: a `.totl.` value must parse, an `.indx.`
/// value must be empty.
pub(super) fn check_value(tags: &XattrTags, value: &[u8]) -> FsResult<()> {
    if (tags.totl && parse_u64(value).is_none()) || (tags.indx && !value.is_empty()) {
        return Err(FsError::Invalid);
    }
    Ok(())
}

/// What a change of an xattr with `tags` declares beyond the xattr's own items (the
/// caller adds it to its reservation).
pub(super) fn tag_reservation(tags: &XattrTags) -> Reservation {
    // A total's delta, an index item, a srch entry (module `srch`).
    let items = tags.totl as usize + tags.indx as usize + tags.srch as usize;
    Reservation::freeing(items).bytes(if tags.totl { totl::VALUE_LEN } else { 0 })
}

/// The first part of a tagged xattr, as an item of its inode.
pub(crate) struct TaggedPart<'a> {
    /// The xattr's id.
    pub(crate) id: u64,
    pub(crate) tags: XattrTags,
    pub(crate) name: &'a [u8],
    /// The value, or as much of it as the first part holds (every value a tag gives a
    /// meaning to fits: see [`MAX_NUMBER_LEN`]).
    pub(crate) value: &'a [u8],
}

/// The tagged xattr the item `key`, `val` begins, if it is the first part of one. A part
/// that does not decode is no tagged xattr's (deleting a damaged inode still goes on;
/// `check` reports the damage).
pub(crate) fn tagged_part<'a>(k: &Key, val: &'a [u8]) -> Option<TaggedPart<'a>> {
    if k.zone != zone::FS || k.ty != item_type::XATTR || k.fourth != 0 {
        return None;
    }
    let (hdr, rest) = XattrHeader::read_from_prefix(val).ok()?;
    let name = rest.get(..hdr.name_len as usize)?;
    let value = &rest[name.len()..];
    let value = &value[..value.len().min(hdr.val_len.get() as usize)];
    let (tags, _) = parse_tags(name).ok()??;
    Some(TaggedPart {
        id: k.third,
        tags,
        name,
        value,
    })
}

impl State {
    /// The tagged xattr `name` (id `id`) of inode `ino` changed from `old` to `new`
    /// (`None`: absent), in the transaction of the change, which declared
    /// [`tag_reservation`] for it: keep the items its tags add in step. Called by every
    /// set, removal and inode deletion of a tagged xattr.
    pub(super) fn tagged_xattr_changed(
        &mut self,
        ino: u64,
        id: u64,
        name: &[u8],
        tags: &XattrTags,
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> FsResult<()> {
        let before = old.map_or_else(TagEffects::default, |v| tag_effects(name, tags, v));
        let after = new.map_or_else(TagEffects::default, |v| tag_effects(name, tags, v));
        self.totl_changed(before.totl, after.totl)?;
        self.indx_changed(ino, id, before.indx, after.indx)?;
        if tags.srch && old.is_some() != new.is_some() {
            // A replacement keeps the xattr's id, and so its srch entry.
            self.srch_logged(ino, name, id)?;
        }
        Ok(())
    }
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
    fn numbers_parse_as_the_originals_kstrtoull() {
        let accept: &[(&[u8], u64)] = &[
            (b"0", 0),
            (b"1", 1),
            (b"10", 10),
            (b"18446744073709551615", u64::MAX),
            // A leading zero is octal, 0x hex (either case).
            (b"010", 8),
            (b"00", 0),
            (b"01777777777777777777777", u64::MAX),
            (b"0x10", 16),
            (b"0XfF", 255),
            (b"0xffffffffffffffff", u64::MAX),
            (b"0x00000000000000000001", 1),
            // A C string: the value ends at its first NUL, a newline may end the digits.
            (b"7\0", 7),
            (b"7\0junk", 7),
            (b"7\n\0", 7),
        ];
        for (s, v) in accept {
            assert_eq!(parse_u64(s), Some(*v), "{}", String::from_utf8_lossy(s));
        }
        let reject: &[&[u8]] = &[
            b"",
            b"+1",
            b"-1",
            b"-",
            b" 1",
            b"1 ",
            b"1\n",
            b"10.",
            b"junk10",
            b"10junk",
            b"1e3",
            b"08",
            b"0x",
            b"0xg",
            b"00x1",
            b"\0",
            b"18446744073709551616",
            b"0x10000000000000000",
            b"02000000000000000000000",
            // 24 characters: longer than the original's buffer, whatever the value.
            b"000000000000000000000001",
        ];
        for s in reject {
            assert_eq!(parse_u64(s), None, "{}", String::from_utf8_lossy(s));
        }
    }

    #[test]
    fn totl_and_indx_names_end_in_their_numbers() {
        let totl = |n: &str| check_changed_name(n.as_bytes()).map(|t| t.map(|t| t.totl));
        let indx = |n: &str| check_changed_name(n.as_bytes()).map(|t| t.map(|t| t.indx));
        for n in [
            "scoutfs.totl.test.1.2.3",
            "scoutfs.totl.1.2.3",
            "scoutfs.totl.a.b.c.0x1.010.3",
            "scoutfs.hide.srch.totl.x.18446744073709551615.0.0",
            "scoutfs.totl.test-5.1.0.0",
        ] {
            assert!(matches!(totl(n), Ok(Some(true))), "{n}");
        }
        // (The original's test's malformed names are `fs_tags`'s, through a mount.)
        for n in [
            "scoutfs.totl.2.3",
            "scoutfs.totl.test.1.2.-3",
            "scoutfs.totl.test.1.2.18446744073709551616",
            "scoutfs.totl.test.1.2.3 ",
            "scoutfs.totl.indx.t.1.2.3",
        ] {
            assert!(matches!(totl(n), Err(FsError::Invalid)), "{n}");
        }
        for n in [
            "scoutfs.hide.indx.test.5.100",
            "scoutfs.indx.test.0.0",
            "scoutfs.indx.5.100",
            "scoutfs.hide.indx.test.255.18446744073709551615",
            "scoutfs.indx.t.0xff.0",
        ] {
            assert!(matches!(indx(n), Ok(Some(true))), "{n}");
        }
        for n in [
            "scoutfs.indx.5",
            "scoutfs.indx.t.0x100.1",
            "scoutfs.indx.t.1.0x10000000000000000",
            "scoutfs.indx.t.1.2\n",
        ] {
            assert!(matches!(indx(n), Err(FsError::Invalid)), "{n}");
        }
    }

    #[test]
    fn values_count_only_when_they_parse() {
        let t = XattrTags {
            totl: true,
            ..Default::default()
        };
        let name = b"scoutfs.totl.x.1.2.3";
        assert_eq!(tag_effects(name, &t, b"10").totl, Some(([1, 2, 3], 10)));
        assert_eq!(tag_effects(name, &t, b"junk").totl, None);
        assert!(check_value(&t, b"10").is_ok());
        for v in [&b"+1"[..], b"10.", b"-", b"junk10", b"10junk", b""] {
            assert!(matches!(check_value(&t, v), Err(FsError::Invalid)));
        }
        let i = XattrTags {
            indx: true,
            hide: true,
            ..Default::default()
        };
        let name = b"scoutfs.hide.indx.t.5.100";
        assert_eq!(tag_effects(name, &i, b"").indx, Some((5, 100)));
        assert_eq!(tag_effects(name, &i, b"0").indx, None);
        assert!(check_value(&i, b"").is_ok());
        assert!(matches!(check_value(&i, b"0"), Err(FsError::Invalid)));
        let both = XattrTags {
            totl: true,
            indx: true,
            ..Default::default()
        };
        assert_eq!(
            tag_effects(b"scoutfs.totl.indx.1.2.3", &both, b""),
            TagEffects::default()
        );
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
