#![allow(clippy::unwrap_used, clippy::expect_used)]
//! POSIX ACLs through the filesystem API, by property: any bytes set as an ACL are taken
//! or refused without a panic; what is taken reads back as set and the mode agrees with
//! it; every well-formed ACL (built here by the rules of acl(5), not by the code under
//! test) is taken; a chmod moves the ACL's owner, group class and other entries and no
//! others; and a file made under a default ACL gets no permission its mode did not ask
//! for, and the default ACL's named entries.

mod common;

use common::{assert_fs_clean, volume_of};
use proptest::prelude::*;
use scoutfs_core::fs::*;

const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEF: u32 = u32::MAX;
const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0o022,
};

type Entry = (u16, u16, u32);

fn encode(version: u32, entries: &[Entry]) -> Vec<u8> {
    let mut v = version.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn decode(v: &[u8]) -> Vec<Entry> {
    v[4..]
        .chunks_exact(8)
        .map(|c| {
            (
                u16::from_le_bytes([c[0], c[1]]),
                u16::from_le_bytes([c[2], c[3]]),
                u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            )
        })
        .collect()
}

fn perm_of(entries: &[Entry], tag: u16) -> Option<u32> {
    entries.iter().find(|e| e.0 == tag).map(|e| u32::from(e.1))
}

/// A well-formed ACL by acl(5): the owner, named users by rising id, the owning group,
/// named groups by rising id, a mask if there are named entries (or by choice), others.
fn well_formed() -> impl Strategy<Value = Vec<Entry>> {
    (
        0u16..8,
        prop::collection::btree_map(0u32..50, 0u16..8, 0..4),
        0u16..8,
        prop::collection::btree_map(0u32..50, 0u16..8, 0..4),
        prop::option::of(0u16..8),
        0u16..8,
    )
        .prop_map(|(u, users, g, groups, mask, o)| {
            let mut e = vec![(USER_OBJ, u, UNDEF)];
            e.extend(users.iter().map(|(&id, &p)| (USER, p, id)));
            e.push((GROUP_OBJ, g, UNDEF));
            e.extend(groups.iter().map(|(&id, &p)| (GROUP, p, id)));
            let named = users.len() + groups.len() > 0;
            match (mask, named) {
                (Some(m), _) => e.push((MASK, m, UNDEF)),
                (None, true) => e.push((MASK, 7, UNDEF)),
                (None, false) => {}
            }
            e.push((OTHER, o, UNDEF));
            e
        })
}

/// Anything: random tags (a few unknown ones), permissions (some beyond rwx), ids, and
/// sometimes a wrong version or a torn value.
fn anything() -> impl Strategy<Value = Vec<u8>> {
    let tag = prop::sample::select(vec![USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER, 0x40]);
    (
        prop::sample::select(vec![2u32, 2, 2, 1]),
        prop::collection::vec((tag, 0u16..9, 0u32..4), 0..8),
        0usize..3,
    )
        .prop_map(|(version, entries, cut)| {
            let mut v = encode(version, &entries);
            v.truncate(v.len().saturating_sub(cut));
            v
        })
}

/// After a successful set of `entries` as the access ACL: what is stored and the mode.
fn check_taken(fs: &Fs, ino: u64, entries: &[Entry], set: &[u8]) -> Result<(), TestCaseError> {
    let mode = fs.getattr(ino).unwrap().mode;
    let named = entries.iter().any(|e| matches!(e.0, USER | GROUP | MASK));
    match fs.getxattr(ino, ACL_ACCESS) {
        Ok(v) => {
            prop_assert!(named, "an ACL the mode says all of was kept");
            prop_assert_eq!(&v, set);
        }
        Err(FsError::NoData) => prop_assert!(!named, "an ACL with more than the mode was dropped"),
        Err(e) => return Err(TestCaseError::fail(format!("getxattr: {e}"))),
    }
    let group = perm_of(entries, MASK)
        .or(perm_of(entries, GROUP_OBJ))
        .unwrap();
    prop_assert_eq!((mode >> 6) & 7, perm_of(entries, USER_OBJ).unwrap());
    prop_assert_eq!((mode >> 3) & 7, group);
    prop_assert_eq!(mode & 7, perm_of(entries, OTHER).unwrap());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn acls_by_property(
        good in prop::collection::vec(well_formed(), 1..6),
        junk in prop::collection::vec(anything(), 1..12),
        chmods in prop::collection::vec(0u32..0o1000, 1..4),
        new_modes in prop::collection::vec(0u32..0o1000, 1..4),
    ) {
        let (meta, data) = volume_of(16, 16, 4096);
        let fs = Fs::mount_single(meta.clone(), data.clone(), FsOptions::default()).unwrap();
        let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap().ino;
        let f = fs.mknod(d, b"f", 0o644, 0, C).unwrap().ino;

        // Anything is taken or refused, and never half-way.
        for v in &junk {
            let before = (fs.getattr(f).unwrap().mode, fs.getxattr(f, ACL_ACCESS).ok());
            match fs.setxattr(f, ACL_ACCESS, v, XattrSet::Any) {
                // No entries: "no ACL" (as Linux reads it).
                Ok(()) if decode(v).is_empty() => {
                    prop_assert!(matches!(fs.getxattr(f, ACL_ACCESS), Err(FsError::NoData)));
                }
                Ok(()) => check_taken(&fs, f, &decode(v), v)?,
                Err(e) => {
                    prop_assert!(matches!(e.errno(), 22 | 95), "{e}");
                    let after = (fs.getattr(f).unwrap().mode, fs.getxattr(f, ACL_ACCESS).ok());
                    prop_assert_eq!(before, after, "a refused ACL changed something");
                }
            }
        }

        // Every well-formed ACL is taken, and a chmod moves it along.
        for (acl, &m) in good.iter().zip(chmods.iter().cycle()) {
            let v = encode(2, acl);
            fs.setxattr(f, ACL_ACCESS, &v, XattrSet::Any).unwrap();
            check_taken(&fs, f, acl, &v)?;
            fs.setattr(f, &SetAttr { mode: Some(m), ..Default::default() }).unwrap();
            prop_assert_eq!(fs.getattr(f).unwrap().mode & 0o777, m);
            if let Ok(after) = fs.getxattr(f, ACL_ACCESS) {
                let after = decode(&after);
                prop_assert_eq!(after.len(), acl.len());
                let group_class = if perm_of(acl, MASK).is_some() { MASK } else { GROUP_OBJ };
                for (a, b) in acl.iter().zip(&after) {
                    let want = match a.0 {
                        USER_OBJ => ((m >> 6) & 7) as u16,
                        OTHER => (m & 7) as u16,
                        t if t == group_class => ((m >> 3) & 7) as u16,
                        _ => a.1,
                    };
                    prop_assert_eq!(*b, (a.0, want, a.2));
                }
            }
        }

        // Under a default ACL, new inodes get no permission their mode did not ask for,
        // and the default ACL's named entries.
        let def = &good[0];
        fs.setxattr(d, ACL_DEFAULT, &encode(2, def), XattrSet::Any).unwrap();
        for (i, &m) in new_modes.iter().enumerate() {
            let name = format!("n{i}");
            let a = fs.mknod(d, name.as_bytes(), m, 0, C).unwrap();
            prop_assert_eq!(a.mode & 0o777 & !m, 0, "more than asked for");
            let named: Vec<Entry> = def.iter().copied().filter(|e| matches!(e.0, USER | GROUP)).collect();
            match fs.getxattr(a.ino, ACL_ACCESS) {
                Ok(v) => {
                    // The mode and the inherited ACL agree.
                    check_taken(&fs, a.ino, &decode(&v), &v)?;
                    let got: Vec<Entry> = decode(&v).into_iter().filter(|e| matches!(e.0, USER | GROUP)).collect();
                    prop_assert_eq!(got, named);
                }
                Err(_) => prop_assert!(named.is_empty() && perm_of(def, MASK).is_none()),
            }
            let sub = fs.mkdir(d, format!("s{i}").as_bytes(), m, C).unwrap().ino;
            prop_assert_eq!(fs.getxattr(sub, ACL_DEFAULT).unwrap(), encode(2, def));
        }
        fs.unmount().unwrap();
        assert_fs_clean(&meta, &data, "the volume");
    }
}
