//! Extended attributes: a header, the name and the value, split over parts of at most
//! one item value, keyed by name hash and an id per xattr (kept when the value is
//! replaced). A change of a tagged xattr (module `tags`) keeps the items its tags add in
//! the same transaction.

use super::*;

/// An xattr as stored: its id and its parts' keys.
pub(super) struct Found {
    pub(super) value: Vec<u8>,
    pub(super) keys: Vec<Key>,
}

fn check_xattr_name(name: &[u8]) -> FsResult<()> {
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(FsError::Range);
    }
    Ok(())
}

/// Check the name of an xattr being set or removed: its length, and its tags if it has
/// any (module `tags`).
fn check_changed_name(name: &[u8]) -> FsResult<Option<XattrTags>> {
    check_xattr_name(name)?;
    tags::check_changed_name(name)
}

/// Whether `name` is listed by `listxattr` (a malformed tagged name, which cannot be
/// set, is listed).
fn listed(name: &[u8]) -> bool {
    !matches!(tags::parse_tags(name), Ok(Some((t, _))) if t.hide)
}

/// Whether a set as `how` may go on given whether the xattr `exists`.
pub(super) fn check_how(exists: bool, how: XattrSet) -> FsResult<()> {
    match (exists, how) {
        (true, XattrSet::Create) => Err(FsError::Exists),
        (false, XattrSet::Replace) => Err(FsError::NoData),
        _ => Ok(()),
    }
}

fn decode_header(val: &[u8]) -> FsResult<(XattrHeader, &[u8])> {
    XattrHeader::read_from_prefix(val).map_err(|_| FsError::Corrupt("xattr item too short"))
}

impl State {
    /// The xattr `name` of `ino`, if it has one.
    pub(super) fn find_xattr(&self, ino: u64, name: &[u8]) -> FsResult<Option<Found>> {
        let h = name_hash(name);
        let items = self.client.read_items(
            &xattr_key(ino, h, 0, 0),
            &xattr_key(ino, h, u64::MAX, u8::MAX),
        )?;
        let mut i = 0;
        while i < items.len() {
            let id = items[i].key.third;
            let n = items[i..]
                .iter()
                .take_while(|it| it.key.third == id)
                .count();
            let parts = &items[i..i + n];
            i += n;
            let (hdr, rest) = decode_header(&parts[0].val)?;
            let nl = hdr.name_len as usize;
            if parts[0].key.fourth != 0 || rest.len() < nl {
                return Err(FsError::Corrupt("xattr without its first part"));
            }
            if &rest[..nl] != name {
                continue;
            }
            let mut value = rest[nl..].to_vec();
            for p in &parts[1..] {
                value.extend_from_slice(&p.val);
            }
            if value.len() != hdr.val_len.get() as usize {
                return Err(FsError::Corrupt("xattr value of the wrong length"));
            }
            return Ok(Some(Found {
                value,
                keys: parts.iter().map(|p| p.key).collect(),
            }));
        }
        Ok(None)
    }

    pub(super) fn setxattr(
        &mut self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        how: XattrSet,
    ) -> FsResult<()> {
        let tags = check_changed_name(name)?.unwrap_or_default();
        self.inode(ino)?;
        let old = self.find_xattr(ino, name)?;
        check_how(old.is_some(), how)?;
        let parts = self.xattr_parts(name, value)?;
        tags::check_value(&tags, value)?;
        if tags.indx && old.as_ref().is_some_and(|o| o.value.is_empty()) {
            // As the original: setting an index xattr again changes nothing.
            return Ok(());
        }
        let old_parts = old.as_ref().map_or(0, |o| o.keys.len());
        self.begin(
            Reservation::allocating(2 + INDEX_ITEMS + parts + old_parts)
                .bytes(name.len() + value.len())
                .and(tags::tag_reservation(&tags)),
        )?;
        self.write_xattr(ino, name, value, old)
    }

    /// The items an xattr takes ([`FsError::TooBig`] if too many).
    pub(super) fn xattr_parts(&self, name: &[u8], value: &[u8]) -> FsResult<usize> {
        if value.len() > XATTR_VALUE_MAX {
            return Err(FsError::TooBig);
        }
        let len = size_of::<XattrHeader>() + name.len() + value.len();
        let parts = len.div_ceil(self.part_len);
        if parts > u8::MAX as usize + 1 {
            return Err(FsError::TooBig);
        }
        Ok(parts)
    }

    /// Store xattr `name` of `ino` in place of `old` (as found by `find_xattr`; its id is
    /// kept), in the room the caller reserved (with [`tags::tag_reservation`] for a
    /// tagged name).
    pub(super) fn write_xattr(
        &mut self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        old: Option<Found>,
    ) -> FsResult<()> {
        let mut inode = self.inode(ino)?;
        let hdr = XattrHeader {
            val_len: (value.len() as u32).into(),
            name_len: name.len() as u8,
            pad: [0; 3],
        };
        let mut bytes = hdr.as_bytes().to_vec();
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        let id = match old.as_ref().and_then(|o| o.keys.first()) {
            Some(k) => k.third,
            None => {
                let id = inode.next_xattr_id.get();
                inode.next_xattr_id = (id + 1).into();
                id
            }
        };
        if let Some(o) = &old {
            for k in &o.keys {
                self.client.delete(k)?;
            }
        }
        let h = name_hash(name);
        for (nr, chunk) in bytes.chunks(self.part_len).enumerate() {
            self.client
                .insert(&xattr_key(ino, h, id, nr as u8), chunk)?;
        }
        if let Some((tags, _)) = tags::parse_tags(name)? {
            let old_value = old.as_ref().map(|o| &o.value[..]);
            self.tagged_xattr_changed(ino, id, name, &tags, old_value, Some(value))?;
        }
        inode.ctime = raw_time(self.now);
        self.put_inode(ino, &mut inode)
    }

    pub(super) fn getxattr(&self, ino: u64, name: &[u8]) -> FsResult<Vec<u8>> {
        check_xattr_name(name)?;
        self.inode(ino)?;
        match self.find_xattr(ino, name)? {
            Some(f) => Ok(f.value),
            None => Err(FsError::NoData),
        }
    }

    pub(super) fn listxattr(&self, ino: u64) -> FsResult<Vec<Vec<u8>>> {
        self.list_xattrs(ino, listed)
    }

    /// The names of the `.hide.` xattrs of `ino`, which `listxattr` leaves out.
    pub(super) fn list_hidden_xattrs(&self, ino: u64) -> FsResult<Vec<Vec<u8>>> {
        self.list_xattrs(ino, |name| !listed(name))
    }

    /// The names of the xattrs of `ino` that `want`.
    fn list_xattrs(&self, ino: u64, want: impl Fn(&[u8]) -> bool) -> FsResult<Vec<Vec<u8>>> {
        self.inode(ino)?;
        let items = self.client.read_items(
            &xattr_key(ino, 0, 0, 0),
            &xattr_key(ino, u64::MAX, u64::MAX, u8::MAX),
        )?;
        let mut out = Vec::new();
        for it in items.iter().filter(|it| it.key.fourth == 0) {
            let (hdr, rest) = decode_header(&it.val)?;
            let nl = hdr.name_len as usize;
            let name = rest
                .get(..nl)
                .ok_or(FsError::Corrupt("xattr name past its first part"))?;
            if want(name) {
                out.push(name.to_vec());
            }
        }
        Ok(out)
    }

    pub(super) fn removexattr(&mut self, ino: u64, name: &[u8]) -> FsResult<()> {
        let tags = check_changed_name(name)?.unwrap_or_default();
        self.inode(ino)?;
        let Some(f) = self.find_xattr(ino, name)? else {
            return Err(FsError::NoData);
        };
        self.freeing = true;
        self.begin(
            Reservation::freeing(2 + INDEX_ITEMS + f.keys.len()).and(tags::tag_reservation(&tags)),
        )?;
        self.delete_xattr(ino, name, f)
    }

    /// Delete the found xattr `name` of `ino`, in the room the caller reserved (with
    /// [`tags::tag_reservation`] for a tagged name).
    pub(super) fn delete_xattr(&mut self, ino: u64, name: &[u8], f: Found) -> FsResult<()> {
        let mut inode = self.inode(ino)?;
        for k in &f.keys {
            self.client.delete(k)?;
        }
        if let (Some((tags, _)), Some(k)) = (tags::parse_tags(name)?, f.keys.first()) {
            self.tagged_xattr_changed(ino, k.third, name, &tags, Some(&f.value), None)?;
        }
        inode.ctime = raw_time(self.now);
        self.put_inode(ino, &mut inode)
    }
}
