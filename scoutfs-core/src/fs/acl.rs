//! POSIX ACLs, stored as the xattrs `system.posix_acl_access` and
//! `system.posix_acl_default` in the format Linux passes through xattr calls (a version
//! word, then 8-byte entries: tag, permissions, id; little-endian).
//!
//! The filesystem keeps an inode's mode and its access ACL in step, as Linux's
//! `posix_acl_update_mode`, `posix_acl_chmod` and `posix_acl_create` do for a kernel
//! filesystem; permission checks against the ACLs are the caller's (the kernel's, for a
//! FUSE mount).

use super::xattr::Found;
use super::*;

/// The xattr of an inode's access ACL.
pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
/// The xattr of a directory's default ACL (what new inodes in it inherit).
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

/// Whether `name` is one of the ACL xattrs.
pub(crate) fn is_acl_name(name: &[u8]) -> bool {
    name == ACL_ACCESS || name == ACL_DEFAULT
}

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// One entry: a tag, `rwx` permission bits and the user or group id of named entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// A valid ACL (see [`Acl::parse`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Acl(Vec<Entry>);

impl Acl {
    /// Decodes and checks an xattr value: the version, whole entries, permissions of
    /// `rwx` only, and the order and entries `posix_acl_valid` requires (the owner, named
    /// users by rising id, the owning group, named groups by rising id, a mask if there
    /// are named entries, the others). `None` for a value of no entries (Linux takes it
    /// as "remove the ACL").
    pub(crate) fn parse(v: &[u8]) -> FsResult<Option<Acl>> {
        if v.len() < 4 || !(v.len() - 4).is_multiple_of(8) {
            return Err(FsError::Invalid);
        }
        if u32::from_le_bytes([v[0], v[1], v[2], v[3]]) != VERSION {
            return Err(FsError::NotSupported);
        }
        let entries: Vec<Entry> = v[4..]
            .chunks_exact(8)
            .map(|c| Entry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect();
        if entries.is_empty() {
            return Ok(None);
        }
        // The states of posix_acl_valid: what may come next.
        #[derive(PartialEq)]
        enum Next {
            UserObj,
            Users,
            Groups,
            Other,
            Done,
        }
        let mut next = Next::UserObj;
        let mut prev_id: Option<u32> = None;
        let mut named = false;
        for e in &entries {
            if e.perm & !7 != 0 {
                return Err(FsError::Invalid);
            }
            next = match (e.tag, next) {
                (USER_OBJ, Next::UserObj) => {
                    prev_id = None;
                    Next::Users
                }
                (USER, Next::Users) | (GROUP, Next::Groups) => {
                    if prev_id.is_some_and(|p| e.id <= p) {
                        return Err(FsError::Invalid);
                    }
                    prev_id = Some(e.id);
                    named = true;
                    if e.tag == USER {
                        Next::Users
                    } else {
                        Next::Groups
                    }
                }
                (GROUP_OBJ, Next::Users) => {
                    prev_id = None;
                    Next::Groups
                }
                (MASK, Next::Groups) => Next::Other,
                (OTHER, Next::Other) => Next::Done,
                (OTHER, Next::Groups) if !named => Next::Done,
                _ => return Err(FsError::Invalid),
            };
        }
        if next != Next::Done {
            return Err(FsError::Invalid);
        }
        Ok(Some(Acl(entries)))
    }

    /// The xattr value.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for e in &self.0 {
            v.extend_from_slice(&e.tag.to_le_bytes());
            v.extend_from_slice(&e.perm.to_le_bytes());
            v.extend_from_slice(&e.id.to_le_bytes());
        }
        v
    }

    /// The permission bits (`0o777`) the ACL gives owner, group class and others, and
    /// whether the mode alone says all it says (no named entries and no mask): then it
    /// need not be stored (`posix_acl_equiv_mode`).
    pub(crate) fn mode(&self) -> (u32, bool) {
        let mut mode = 0u32;
        let mut equiv = true;
        for e in &self.0 {
            let p = u32::from(e.perm);
            match e.tag {
                USER_OBJ => mode |= p << 6,
                GROUP_OBJ => mode |= p << 3,
                OTHER => mode |= p,
                MASK => {
                    mode = (mode & !0o070) | (p << 3);
                    equiv = false;
                }
                _ => equiv = false,
            }
        }
        (mode, equiv)
    }

    /// The ACL after a chmod to `mode` (`posix_acl_chmod`): owner and others take the
    /// mode's bits, and the group class bits go to the mask if there is one, else to the
    /// owning group.
    pub(crate) fn chmod(&mut self, mode: u32) {
        let mut group_class = None;
        for (i, e) in self.0.iter_mut().enumerate() {
            match e.tag {
                USER_OBJ => e.perm = ((mode >> 6) & 7) as u16,
                OTHER => e.perm = (mode & 7) as u16,
                GROUP_OBJ if group_class.is_none() => group_class = Some(i),
                MASK => group_class = Some(i),
                _ => {}
            }
        }
        if let Some(i) = group_class {
            self.0[i].perm = ((mode >> 3) & 7) as u16;
        }
    }

    /// A directory's default ACL applied to a new inode asking for `mode` (without the
    /// umask: the ACL replaces it), as `posix_acl_create` does: the inode's access ACL
    /// and its mode, both narrowed to what each allows. The access ACL is `None` when the
    /// mode says it all.
    pub(crate) fn inherit(&self, mode: u32) -> (Option<Acl>, u32) {
        let mut acl = self.clone();
        let mut mode = mode;
        let mut equiv = true;
        let (mut group_obj, mut mask) = (None, None);
        for (i, e) in acl.0.iter_mut().enumerate() {
            match e.tag {
                USER_OBJ => {
                    e.perm &= ((mode >> 6) & 7) as u16;
                    mode &= (u32::from(e.perm) << 6) | !0o700;
                }
                OTHER => {
                    e.perm &= (mode & 7) as u16;
                    mode &= u32::from(e.perm) | !0o007;
                }
                GROUP_OBJ => group_obj = Some(i),
                MASK => {
                    mask = Some(i);
                    equiv = false;
                }
                _ => equiv = false,
            }
        }
        if let Some(i) = mask.or(group_obj) {
            let e = &mut acl.0[i];
            e.perm &= ((mode >> 3) & 7) as u16;
            mode &= (u32::from(e.perm) << 3) | !0o070;
        }
        (if equiv { None } else { Some(acl) }, mode)
    }
}

/// What a new inode starts with: its mode and ACL xattr values.
pub(super) struct NewMode {
    pub(super) mode: u32,
    pub(super) access: Option<Vec<u8>>,
    pub(super) default: Option<Vec<u8>>,
}

impl State {
    /// The mode of a new inode of `kind` asking for `mode` in `parent`, and the access
    /// and default ACL values it starts with: the parent's default ACL narrowed to the
    /// mode (`posix_acl_create`; a directory inherits the default ACL too), or, without
    /// one, the mode less the umask.
    pub(super) fn new_mode(
        &self,
        parent: u64,
        kind: FileKind,
        mode: u32,
        umask: u32,
    ) -> FsResult<NewMode> {
        let masked = NewMode {
            mode: mode & !(umask & 0o777),
            access: None,
            default: None,
        };
        if !self.acl || kind == FileKind::Symlink {
            return Ok(masked);
        }
        let Some(default) = self.find_xattr(parent, ACL_DEFAULT)? else {
            return Ok(masked);
        };
        let acl = Acl::parse(&default.value)
            .ok()
            .flatten()
            .ok_or(FsError::Corrupt("a stored default ACL that is not valid"))?;
        let (access, mode) = acl.inherit(mode);
        Ok(NewMode {
            mode,
            access: access.map(|a| a.to_bytes()),
            default: (kind == FileKind::Dir).then_some(default.value),
        })
    }

    /// Set an ACL xattr (see [`Fs::setxattr`]).
    pub(super) fn set_acl(
        &mut self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        how: XattrSet,
    ) -> FsResult<()> {
        if !self.acl {
            return Err(FsError::NotSupported);
        }
        let mut inode = self.inode(ino)?;
        let kind = kind_of(&inode)?;
        if kind == FileKind::Symlink {
            return Err(FsError::NotSupported);
        }
        let acl = Acl::parse(value)?;
        let old = self.find_xattr(ino, name)?;
        super::xattr::check_how(old.is_some(), how)?;
        if name == ACL_DEFAULT && kind != FileKind::Dir {
            // As Linux: only directories have default ACLs; removing none is fine.
            return match acl {
                Some(_) => Err(FsError::AccessDenied),
                None => Ok(()),
            };
        }
        let bytes = acl.as_ref().map(Acl::to_bytes);
        let parts = match &bytes {
            Some(b) => self.xattr_parts(name, b)?,
            None => 0,
        };
        let old_parts = old.as_ref().map_or(0, |o| o.keys.len());
        self.begin(
            Reservation::allocating(2 + INDEX_ITEMS + parts + old_parts)
                .bytes(name.len() + bytes.as_ref().map_or(0, Vec::len)),
        )?;
        let mut keep = bytes.is_some();
        if let (Some(a), true) = (&acl, name == ACL_ACCESS) {
            let (bits, equiv) = a.mode();
            inode.mode = ((inode.mode.get() & !0o777) | bits).into();
            inode.ctime = raw_time(self.now);
            self.put_inode(ino, &mut inode)?;
            keep = !equiv;
        }
        match (bytes, old) {
            (Some(b), old) if keep => self.write_xattr(ino, name, &b, old),
            (_, Some(old)) => self.delete_xattr(ino, name, old),
            (_, None) => Ok(()),
        }
    }

    /// The access ACL of `ino` after a chmod to `mode` (`posix_acl_chmod`), and where it
    /// is stored, if it has one: for [`State::write_xattr`] once the caller has reserved
    /// room for it.
    pub(super) fn chmod_acl(&self, ino: u64, mode: u32) -> FsResult<Option<(Vec<u8>, Found)>> {
        if !self.acl {
            return Ok(None);
        }
        let Some(found) = self.find_xattr(ino, ACL_ACCESS)? else {
            return Ok(None);
        };
        let mut acl = Acl::parse(&found.value)
            .ok()
            .flatten()
            .ok_or(FsError::Corrupt("a stored access ACL that is not valid"))?;
        acl.chmod(mode);
        Ok(Some((acl.to_bytes(), found)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const UNDEF: u32 = u32::MAX;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        Acl(entries
            .iter()
            .map(|&(tag, perm, id)| Entry { tag, perm, id })
            .collect())
        .to_bytes()
    }

    fn minimal(u: u16, g: u16, o: u16) -> Vec<u8> {
        acl(&[
            (USER_OBJ, u, UNDEF),
            (GROUP_OBJ, g, UNDEF),
            (OTHER, o, UNDEF),
        ])
    }

    /// u::rwx, u:1000:rwx, g::r-x, g:50:r--, m::rwx, o::--x (getfacl's order).
    fn full() -> Vec<u8> {
        acl(&[
            (USER_OBJ, 7, UNDEF),
            (USER, 7, 1000),
            (GROUP_OBJ, 5, UNDEF),
            (GROUP, 4, 50),
            (MASK, 7, UNDEF),
            (OTHER, 1, UNDEF),
        ])
    }

    #[test]
    fn valid_acls_parse_and_round_trip() {
        for v in [minimal(6, 4, 4), full()] {
            assert_eq!(Acl::parse(&v).unwrap().unwrap().to_bytes(), v);
        }
        // A mask without named entries is allowed.
        let v = acl(&[
            (USER_OBJ, 7, UNDEF),
            (GROUP_OBJ, 5, UNDEF),
            (MASK, 1, UNDEF),
            (OTHER, 0, UNDEF),
        ]);
        // ... and is kept: Linux counts a mask as more than the mode says.
        assert_eq!(Acl::parse(&v).unwrap().unwrap().mode(), (0o710, false));
        assert_eq!(Acl::parse(&VERSION.to_le_bytes()).unwrap(), None);
    }

    #[test]
    fn invalid_acls_are_refused() {
        let bad = [
            // Named entries without a mask; named users out of order or repeated.
            acl(&[
                (USER_OBJ, 7, UNDEF),
                (USER, 7, 5),
                (GROUP_OBJ, 5, UNDEF),
                (OTHER, 0, UNDEF),
            ]),
            acl(&[
                (USER_OBJ, 7, UNDEF),
                (USER, 7, 5),
                (USER, 7, 5),
                (GROUP_OBJ, 5, UNDEF),
                (MASK, 7, UNDEF),
                (OTHER, 0, UNDEF),
            ]),
            // Missing the owner, the group or the others; entries out of order.
            acl(&[(GROUP_OBJ, 5, UNDEF), (OTHER, 0, UNDEF)]),
            acl(&[(USER_OBJ, 7, UNDEF), (OTHER, 0, UNDEF)]),
            acl(&[(USER_OBJ, 7, UNDEF), (GROUP_OBJ, 5, UNDEF)]),
            acl(&[
                (GROUP_OBJ, 5, UNDEF),
                (USER_OBJ, 7, UNDEF),
                (OTHER, 0, UNDEF),
            ]),
            // Two owners, an unknown tag, permissions beyond rwx.
            acl(&[
                (USER_OBJ, 7, UNDEF),
                (USER_OBJ, 7, UNDEF),
                (GROUP_OBJ, 5, UNDEF),
                (OTHER, 0, UNDEF),
            ]),
            acl(&[
                (USER_OBJ, 7, UNDEF),
                (0x40, 7, UNDEF),
                (GROUP_OBJ, 5, UNDEF),
                (OTHER, 0, UNDEF),
            ]),
            minimal(8, 4, 4),
            // Torn entries.
            minimal(6, 4, 4)[..11].to_vec(),
            vec![2, 0],
        ];
        for v in bad {
            assert!(matches!(Acl::parse(&v), Err(FsError::Invalid)), "{v:?}");
        }
        let mut v = minimal(6, 4, 4);
        v[0] = 1;
        assert!(matches!(Acl::parse(&v), Err(FsError::NotSupported)));
    }

    #[test]
    fn mode_chmod_and_inherit_follow_linux() {
        let m = Acl::parse(&minimal(6, 4, 0)).unwrap().unwrap();
        assert_eq!(m.mode(), (0o640, true));
        let mut f = Acl::parse(&full()).unwrap().unwrap();
        // The group class bits are the mask's.
        assert_eq!(f.mode(), (0o771, false));
        f.chmod(0o750);
        assert_eq!(
            f.to_bytes(),
            acl(&[
                (USER_OBJ, 7, UNDEF),
                (USER, 7, 1000),
                (GROUP_OBJ, 5, UNDEF),
                (GROUP, 4, 50),
                (MASK, 5, UNDEF),
                (OTHER, 0, UNDEF),
            ])
        );
        let mut m2 = m.clone();
        m2.chmod(0o754);
        assert_eq!(m2.to_bytes(), minimal(7, 5, 4));

        // A file made with mode 0666 under the default ACL `full`: the owner keeps rw,
        // the mask narrows to rw, others to nothing (setfacl -d -m u:1000:rwx,g:50:r,o:x
        // on a directory, then touch: getfacl shows these).
        let (access, mode) = Acl::parse(&full()).unwrap().unwrap().inherit(0o666);
        assert_eq!(mode, 0o660);
        assert_eq!(
            access.unwrap().to_bytes(),
            acl(&[
                (USER_OBJ, 6, UNDEF),
                (USER, 7, 1000),
                (GROUP_OBJ, 5, UNDEF),
                (GROUP, 4, 50),
                (MASK, 6, UNDEF),
                (OTHER, 0, UNDEF),
            ])
        );
        // A minimal default ACL leaves only a mode (the umask is not applied).
        let (access, mode) = m.inherit(0o777);
        assert_eq!((access, mode), (None, 0o640));
        // Bits outside rwx (set-group-ID) pass through.
        assert_eq!(m.inherit(0o2777).1, 0o2640);
    }
}
