#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `scoutfs.` xattr tags `.hide.`, `.totl.` and `.indx.` (issue 14): what the
//! original's tests `totl-xattr-tag` and `basic-xattr-indx` show, with their goldens;
//! totals and the index through inode deletion (small inodes in one transaction, large
//! ones in steps) and remounts; and a property test that reads the totals and the index
//! between units of log merge work, commits, ticks and remounts, against a model.
//!
//! `PROPTEST_CASES` (or `SCOUTFS_PROPTEST_CASES`) sets the number of cases.

mod common;

use common::{assert_fs_clean, proptest_cases, volume_of, Devices};
use proptest::prelude::*;
use scoutfs_core::fs::*;
use scoutfs_core::server::MergeConfig;
use std::collections::{BTreeMap, BTreeSet};

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};
const EINVAL: i32 = 22;

fn mount((meta, data): &Devices) -> Fs {
    let opts = FsOptions {
        seed: Some(11),
        ..FsOptions::default()
    };
    Fs::mount_single(meta.clone(), data.clone(), opts).unwrap()
}

fn file(fs: &Fs, name: &str) -> u64 {
    fs.mknod(ROOT_INO, name.as_bytes(), 0o100644, 0, C)
        .unwrap()
        .ino
}

fn set(fs: &Fs, ino: u64, name: &str, value: &str) -> Result<(), i32> {
    fs.setxattr(ino, name.as_bytes(), value.as_bytes(), XattrSet::Any)
        .map_err(|e| e.errno())
}

/// The totals as `scoutfs read-xattr-totals` prints them.
fn totals(fs: &Fs) -> Vec<String> {
    fs.read_xattr_totals([0; 3], usize::MAX)
        .unwrap()
        .iter()
        .map(|t| {
            let [a, b, c] = t.name;
            format!("{a}.{b}.{c} = {}, {}", t.total, t.count)
        })
        .collect()
}

fn all_index(fs: &Fs) -> Vec<IndxEntry> {
    let last = IndxEntry {
        major: u8::MAX,
        minor: u64::MAX,
        ino: u64::MAX,
    };
    fs.read_xattr_index(IndxEntry::default(), last, usize::MAX)
        .unwrap()
}

/// The entries of inode `ino` from `major.minor` to `major.last_minor`.
fn index_of(fs: &Fs, major: u8, minor: u64, last_minor: u64, ino: u64) -> usize {
    let first = IndxEntry {
        major,
        minor,
        ino: 0,
    };
    let last = IndxEntry {
        major,
        minor: last_minor,
        ino: u64::MAX,
    };
    fs.read_xattr_index(first, last, usize::MAX)
        .unwrap()
        .iter()
        .filter(|e| e.ino == ino)
        .count()
}

/// `totl-xattr-tag`, its golden output line by line (before the larger population).
#[test]
fn totals_follow_the_originals_golden() {
    let dev = volume_of(32, 16, 4096);
    let fs = mount(&dev);
    let f1 = file(&fs, "file-1");
    set(&fs, f1, "scoutfs.totl.test.1.2.3", "1").unwrap();
    set(&fs, f1, "scoutfs.totl.test.4.5.6", "1").unwrap();
    assert_eq!(totals(&fs), ["1.2.3 = 1, 1", "4.5.6 = 1, 1"], "single file");
    let f2 = file(&fs, "file-2");
    set(&fs, f2, "scoutfs.totl.test.1.2.3", "1").unwrap();
    set(&fs, f2, "scoutfs.totl.test.4.5.6", "1").unwrap();
    assert_eq!(totals(&fs), ["1.2.3 = 2, 2", "4.5.6 = 2, 2"], "add up");
    fs.removexattr(f2, b"scoutfs.totl.test.4.5.6").unwrap();
    assert_eq!(totals(&fs), ["1.2.3 = 2, 2", "4.5.6 = 1, 1"], "remove");
    set(&fs, f2, "scoutfs.totl.test.1.2.3", "10").unwrap();
    assert_eq!(totals(&fs), ["1.2.3 = 11, 2", "4.5.6 = 1, 1"], "update");
    fs.unlink(ROOT_INO, b"file-1").unwrap();
    assert_eq!(totals(&fs), ["1.2.3 = 10, 1"], "unlink");
    fs.unlink(ROOT_INO, b"file-2").unwrap();
    assert!(totals(&fs).is_empty(), "the last file gone");
    for a in 1..=10 {
        let f = file(&fs, &format!("file-{a}"));
        set(&fs, f, "scoutfs.totl.test.1.2.3", &a.to_string()).unwrap();
    }
    assert_eq!(totals(&fs), ["1.2.3 = 55, 10"], "many in one transaction");
    fs.sync().unwrap();
    fs.merge_all().unwrap();
    assert_eq!(totals(&fs), ["1.2.3 = 55, 10"], "after a merge");
    let inv = file(&fs, "invalid");
    for name in [
        "scoutfs.totl.test...",
        "scoutfs.totl.test..2.3",
        "scoutfs.totl.test.1..3",
        "scoutfs.totl.test.1.2.",
        "scoutfs.totl.test.1",
        "scoutfs.totl.test.1.2",
    ] {
        assert_eq!(set(&fs, inv, name, "10"), Err(EINVAL), "{name}");
        assert_eq!(
            fs.removexattr(inv, name.as_bytes()).unwrap_err().errno(),
            EINVAL,
            "remove {name}"
        );
    }
    for v in ["+1", "10.", "-", "junk10", "10junk"] {
        assert_eq!(
            set(&fs, inv, "scoutfs.totl.test.1.2.3", v),
            Err(EINVAL),
            "{v}"
        );
    }
    // A value of no digits too, and both tags at once.
    assert_eq!(set(&fs, inv, "scoutfs.totl.test.1.2.3", ""), Err(EINVAL));
    assert_eq!(set(&fs, inv, "scoutfs.totl.indx.t.1.2.3", "1"), Err(EINVAL));
    assert_eq!(
        totals(&fs),
        ["1.2.3 = 55, 10"],
        "refused changes change nothing"
    );
    assert!(fs.listxattr(inv).unwrap().is_empty());
    // Hex and octal values count as the original counts them; values of zero count.
    set(&fs, inv, "scoutfs.totl.x.7.0.0", "0x10").unwrap();
    set(&fs, inv, "scoutfs.totl.y.7.0.0", "010").unwrap();
    set(&fs, inv, "scoutfs.totl.z.7.0.0", "0").unwrap();
    assert_eq!(totals(&fs), ["1.2.3 = 55, 10", "7.0.0 = 24, 3"]);
    fs.unmount().unwrap();
    assert_fs_clean(&dev.0, &dev.1, "after the golden");
    let fs = mount(&dev);
    assert_eq!(
        totals(&fs),
        ["1.2.3 = 55, 10", "7.0.0 = 24, 3"],
        "remounted"
    );
    // Paged reads: from a name on, a limited number.
    let page = fs.read_xattr_totals([1, 2, 4], 1).unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(
        (page[0].name, page[0].total, page[0].count),
        ([7, 0, 0], 24, 3)
    );
    assert!(fs.read_xattr_totals([7, 0, 1], 10).unwrap().is_empty());
    assert!(fs.read_xattr_totals([0; 3], 0).unwrap().is_empty());
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
}

/// `totl-xattr-tag`'s larger population: 5,001 xattrs over 501 files and 100 totals,
/// created, updated and removed, the totals read every hundred changes (and merged
/// meanwhile) and compared with the sums.
#[test]
fn a_larger_population_adds_up_while_merging() {
    let dev = volume_of(64, 16, 4096);
    let fs = mount(&dev);
    const NR: u64 = 5000;
    const TOTS: u64 = 100;
    let mut files = BTreeMap::new();
    for i in (0..=NR).step_by(10) {
        files.insert(i / 10, file(&fs, &format!("file-{}", i / 10)));
    }
    let mut want: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for phase in ["create", "update", "remove"] {
        for i in 0..=NR {
            let f = files[&(i / 10)];
            let t = i % TOTS;
            let n = format!("scoutfs.totl.test-{i}.{t}.0.0");
            let e = want.entry(t).or_default();
            match phase {
                "create" => {
                    set(&fs, f, &n, &i.to_string()).unwrap();
                    *e = (e.0 + i, e.1 + 1);
                }
                "update" => {
                    set(&fs, f, &n, &(i * 3).to_string()).unwrap();
                    e.0 += i * 2;
                }
                _ => {
                    fs.removexattr(f, n.as_bytes()).unwrap();
                    *e = (e.0 - i * 3, e.1 - 1);
                }
            }
            if i > 0 && i % 100 == 0 {
                let expect: Vec<String> = want
                    .iter()
                    .filter(|(_, v)| **v != (0, 0))
                    .map(|(t, (s, c))| format!("{t}.0.0 = {s}, {c}"))
                    .collect();
                assert_eq!(totals(&fs), expect, "{phase} {i}");
                fs.background_tick().unwrap();
                if i % 1000 == 0 {
                    fs.merge_work(3).unwrap();
                }
            }
        }
    }
    assert!(totals(&fs).is_empty());
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    assert_fs_clean(&dev.0, &dev.1, "after the population");
}

/// `basic-xattr-indx`, its golden line by line (one mount: the cross-mount part is the
/// same reads).
#[test]
fn the_index_follows_the_originals_golden() {
    let dev = volume_of(32, 16, 4096);
    let fs = mount(&dev);
    let (major, minor) = (5u8, 100u64);
    let inv = file(&fs, "invalid");
    for name in [
        "scoutfs.hide.indx.test.5".to_string(),
        "scoutfs.hide.indx.test".into(),
        "scoutfs.hide.indx.test..".into(),
        "scoutfs.hide.indx.test..100".into(),
        "scoutfs.hide.indx.test.5.".into(),
        "scoutfs.hide.indx.test.256.100".into(),
        "scoutfs.hide.indx.test.abc.100".into(),
        "scoutfs.hide.indx.test.5.abc".into(),
        "scoutfs.hide.indx.test.-1.100".into(),
        "scoutfs.hide.indx.test.5.-1".into(),
        "scoutfs.hide.indx.test.18446744073709551616.100".into(),
    ] {
        assert_eq!(set(&fs, inv, &name, ""), Err(EINVAL), "{name}");
    }
    let long = format!("scoutfs.hide.indx.{}.5.100", "x".repeat(240));
    assert_eq!(set(&fs, inv, &long, ""), Err(34), "a name too long: ERANGE");
    fs.unlink(ROOT_INO, b"invalid").unwrap();

    let b = file(&fs, "boundary");
    set(&fs, b, "scoutfs.hide.indx.test.0.0", "").unwrap();
    assert_eq!(index_of(&fs, 0, 0, u64::MAX, b), 1, "0.0 found");
    fs.removexattr(b, b"scoutfs.hide.indx.test.0.0").unwrap();
    set(
        &fs,
        b,
        "scoutfs.hide.indx.test.255.18446744073709551615",
        "",
    )
    .unwrap();
    assert_eq!(index_of(&fs, 255, 0, u64::MAX, b), 1, "255.max found");
    fs.removexattr(b, b"scoutfs.hide.indx.test.255.18446744073709551615")
        .unwrap();
    fs.unlink(ROOT_INO, b"boundary").unwrap();

    let nv = file(&fs, "noval");
    set(&fs, nv, "scoutfs.hide.indx.test.5.100", "").unwrap();
    assert_eq!(
        set(&fs, nv, "scoutfs.hide.indx.test.5.100", "0"),
        Err(EINVAL)
    );
    assert_eq!(
        set(&fs, nv, "scoutfs.hide.indx.test.5.100", "1"),
        Err(EINVAL)
    );
    fs.unlink(ROOT_INO, b"noval").unwrap();

    let f = file(&fs, "file");
    set(&fs, f, "scoutfs.hide.indx.test.5.100", "").unwrap();
    assert_eq!(index_of(&fs, major, 0, u64::MAX, f), 1, "found");
    let ctime = fs.getattr(f).unwrap().ctime;
    set(&fs, f, "scoutfs.hide.indx.test.5.100", "").unwrap();
    assert_eq!(index_of(&fs, major, 0, u64::MAX, f), 1, "again: a no-op");
    assert_eq!(
        fs.getattr(f).unwrap().ctime,
        ctime,
        "the no-op changes nothing"
    );
    assert_eq!(
        fs.removexattr(f, b"scoutfs.hide.indx.nonexistent.5.999")
            .unwrap_err()
            .errno(),
        61,
        "removing what is not there: ENODATA"
    );
    assert_eq!(index_of(&fs, major, 0, u64::MAX, f), 1, "still found");
    fs.removexattr(f, b"scoutfs.hide.indx.test.5.100").unwrap();
    assert_eq!(index_of(&fs, major, 0, u64::MAX, f), 0, "removal cleans up");
    fs.unlink(ROOT_INO, b"file").unwrap();

    let f2 = file(&fs, "file2");
    set(&fs, f2, "scoutfs.hide.indx.test.5.100", "").unwrap();
    assert_eq!(index_of(&fs, major, 0, u64::MAX, f2), 1, "before delete");
    fs.unlink(ROOT_INO, b"file2").unwrap();
    assert_eq!(
        index_of(&fs, major, 0, u64::MAX, f2),
        0,
        "deletion cleans up"
    );

    let f3 = file(&fs, "file3");
    set(&fs, f3, "scoutfs.hide.indx.a.5.200", "").unwrap();
    set(&fs, f3, "scoutfs.hide.indx.b.5.300", "").unwrap();
    assert_eq!(
        index_of(&fs, major, 0, u64::MAX, f3),
        2,
        "entries before delete"
    );
    fs.unlink(ROOT_INO, b"file3").unwrap();
    assert_eq!(
        index_of(&fs, major, 0, u64::MAX, f3),
        0,
        "entries after delete"
    );

    let p = file(&fs, "partial");
    set(&fs, p, "scoutfs.hide.indx.a.5.200", "").unwrap();
    set(&fs, p, "scoutfs.hide.indx.b.5.300", "").unwrap();
    fs.removexattr(p, b"scoutfs.hide.indx.a.5.200").unwrap();
    assert_eq!(index_of(&fs, major, 200, 200, p), 0, "200 gone");
    assert_eq!(index_of(&fs, major, 300, 300, p), 1, "300 found");
    fs.unlink(ROOT_INO, b"partial").unwrap();

    let (a, b) = (file(&fs, "multi_a"), file(&fs, "multi_b"));
    set(&fs, a, "scoutfs.hide.indx.test.5.100", "").unwrap();
    set(&fs, b, "scoutfs.hide.indx.test.5.100", "").unwrap();
    let at = |fs: &Fs| {
        let e = |ino| IndxEntry { major, minor, ino };
        fs.read_xattr_index(e(0), e(u64::MAX), 100).unwrap()
    };
    assert_eq!(at(&fs).len(), 2, "files at the same position");
    fs.unlink(ROOT_INO, b"multi_a").unwrap();
    assert_eq!(
        at(&fs),
        [IndxEntry {
            major,
            minor,
            ino: b
        }],
        "the survivor"
    );
    fs.unlink(ROOT_INO, b"multi_b").unwrap();

    let f5 = file(&fs, "file5");
    set(&fs, f5, "scoutfs.hide.indx.aa.5.100", "").unwrap();
    set(&fs, f5, "scoutfs.hide.indx.bb.5.100", "").unwrap();
    assert_eq!(
        index_of(&fs, major, 0, u64::MAX, f5),
        1,
        "one entry per position"
    );
    // The reader's argument checks: first after last.
    let e = |major, minor, ino| IndxEntry { major, minor, ino };
    for (first, last) in [
        (e(1, 2, 3), e(0, 0, 0)),
        (e(1, 2, 0), e(1, 1, 2)),
        (e(2, 2, 2), e(2, 2, 1)),
    ] {
        assert_eq!(
            fs.read_xattr_index(first, last, 10).unwrap_err().errno(),
            EINVAL
        );
    }
    fs.sync().unwrap();
    fs.merge_all().unwrap();
    assert_eq!(all_index(&fs), [e(5, 100, f5)], "after a merge");
    assert_eq!(fs.overruns(), 0);
    fs.unmount().unwrap();
    assert_fs_clean(&dev.0, &dev.1, "after the index golden");
    let fs = mount(&dev);
    assert_eq!(all_index(&fs), [e(5, 100, f5)], "remounted");
    fs.unmount().unwrap();
    let ro = FsOptions {
        read_only: true,
        ..FsOptions::default()
    };
    let fs = Fs::mount_single(dev.0.clone(), dev.1.clone(), ro).unwrap();
    assert_eq!(all_index(&fs), [e(5, 100, f5)], "read-only");
    assert_eq!(
        fs.setxattr(f5, b"scoutfs.hide.indx.cc.5.1", b"", XattrSet::Any)
            .unwrap_err()
            .errno(),
        30
    );
}

/// `.hide.` names are listed only by `list_hidden_xattrs`, and read by name.
#[test]
fn hidden_xattrs_are_listed_apart() {
    let dev = volume_of(32, 16, 4096);
    let fs = mount(&dev);
    let f = file(&fs, "f");
    set(&fs, f, "user.a", "1").unwrap();
    set(&fs, f, "scoutfs.hide.x", "2").unwrap();
    set(&fs, f, "scoutfs.srch.hide.y", "3").unwrap();
    set(&fs, f, "scoutfs.totl.t.1.2.3", "4").unwrap();
    let sorted = |mut v: Vec<Vec<u8>>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(fs.listxattr(f).unwrap()),
        [b"scoutfs.totl.t.1.2.3".to_vec(), b"user.a".to_vec()]
    );
    assert_eq!(
        sorted(fs.list_hidden_xattrs(f).unwrap()),
        [b"scoutfs.hide.x".to_vec(), b"scoutfs.srch.hide.y".to_vec()]
    );
    assert_eq!(fs.getxattr(f, b"scoutfs.hide.x").unwrap(), b"2");
    fs.removexattr(f, b"scoutfs.hide.x").unwrap();
    assert_eq!(
        fs.list_hidden_xattrs(f).unwrap(),
        [b"scoutfs.srch.hide.y".to_vec()]
    );
    assert_eq!(fs.list_hidden_xattrs(999_999).unwrap_err().errno(), 2);
    fs.unmount().unwrap();
}

/// An inode with more tagged xattrs than one transaction deletes is deleted in steps,
/// each taking its xattrs' totals and index items with them; a small one in the
/// unlink's transaction; an open one at its last release.
#[test]
fn deleting_inodes_takes_their_totals_and_index_items() {
    let dev = volume_of(64, 16, 4096);
    let fs = Fs::mount_single(
        dev.0.clone(),
        dev.1.clone(),
        FsOptions {
            cache_bytes: 384 << 10,
            seed: Some(3),
            ..FsOptions::default()
        },
    )
    .unwrap();
    let keep = file(&fs, "keep");
    set(&fs, keep, "scoutfs.totl.k.1.0.0", "5").unwrap();
    set(&fs, keep, "scoutfs.indx.k.1.1", "").unwrap();
    let big = file(&fs, "big");
    for i in 0..600u64 {
        set(
            &fs,
            big,
            &format!("scoutfs.totl.b{i}.{}.0.0", i % 7),
            &i.to_string(),
        )
        .unwrap();
        set(&fs, big, &format!("scoutfs.indx.b{i}.1.{i}"), "").unwrap();
    }
    let small = file(&fs, "small");
    for i in 0..4 {
        set(&fs, small, &format!("scoutfs.totl.s{i}.1.0.0"), "1").unwrap();
    }
    set(&fs, small, "scoutfs.indx.s.1.1", "").unwrap();
    let open = file(&fs, "open");
    set(&fs, open, "scoutfs.totl.o.1.0.0", "100").unwrap();
    set(&fs, open, "scoutfs.indx.o.1.1", "").unwrap();
    assert_eq!(totals(&fs).len(), 7);
    assert_eq!(all_index(&fs).len(), 603);
    fs.unlink(ROOT_INO, b"big").unwrap();
    assert_eq!(totals(&fs), ["1.0.0 = 109, 6"]);
    assert_eq!(all_index(&fs).len(), 3);
    fs.unlink(ROOT_INO, b"small").unwrap();
    fs.open(open).unwrap();
    fs.unlink(ROOT_INO, b"open").unwrap();
    assert_eq!(
        totals(&fs),
        ["1.0.0 = 105, 2"],
        "the open file still counts"
    );
    fs.release(open).unwrap();
    assert_eq!(totals(&fs), ["1.0.0 = 5, 1"]);
    let e = |ino| IndxEntry {
        major: 1,
        minor: 1,
        ino,
    };
    assert_eq!(all_index(&fs), [e(keep)]);
    assert_eq!(fs.overruns(), 0, "every step declared its totals");
    fs.unmount().unwrap();
    assert_fs_clean(&dev.0, &dev.1, "after the deletions");
}

// ---- The property test: reads at every stage of log merging.

const FILES: usize = 10;
const TOTL_NAMES: u64 = 300;
const INDX_NAMES: u64 = 40;

/// A `.totl.` xattr name: three names share each total, so an inode's xattrs add up.
fn totl_name(n: u64) -> (String, [u64; 3]) {
    let t = [n / 3, 0, n % 5];
    (format!("scoutfs.totl.k{}.{}.0.{}", n % 3, t[0], t[2]), t)
}

fn indx_name(n: u64) -> (String, (u8, u64)) {
    let p = ((n % 4) as u8, n / 8 * 1000);
    (format!("scoutfs.hide.indx.k{}.{}.{}", n % 8, p.0, p.1), p)
}

#[derive(Clone, Debug)]
enum Op {
    Create(usize),
    Unlink(usize),
    /// Open, unlink, and release at the next `Release`: deleted later.
    UnlinkOpen(usize),
    Release,
    /// Set `count` `.totl.` xattrs from name `first` on (the values from `value` on).
    SetTotl {
        f: usize,
        first: u64,
        count: u64,
        value: u64,
    },
    RemoveTotl {
        f: usize,
        first: u64,
        count: u64,
    },
    SetIndx {
        f: usize,
        n: u64,
    },
    RemoveIndx {
        f: usize,
        n: u64,
    },
    Sync,
    MergeWork(usize),
    MergeAll,
    Tick,
    Remount,
    /// A paged read of the totals from `from` for `limit`.
    Page {
        from: u64,
        limit: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let value = prop_oneof![0..1000u64, Just(0), (u64::MAX - 5..=u64::MAX)];
    prop_oneof![
        3 => (0..FILES).prop_map(Op::Create),
        1 => (0..FILES).prop_map(Op::Unlink),
        1 => (0..FILES).prop_map(Op::UnlinkOpen),
        1 => Just(Op::Release),
        8 => (0..FILES, 0..TOTL_NAMES, 1..40u64, value)
            .prop_map(|(f, first, count, value)| Op::SetTotl { f, first, count, value }),
        3 => (0..FILES, 0..TOTL_NAMES, 1..20u64)
            .prop_map(|(f, first, count)| Op::RemoveTotl { f, first, count }),
        2 => (0..FILES, 0..INDX_NAMES).prop_map(|(f, n)| Op::SetIndx { f, n }),
        1 => (0..FILES, 0..INDX_NAMES).prop_map(|(f, n)| Op::RemoveIndx { f, n }),
        2 => Just(Op::Sync),
        8 => (1..4usize).prop_map(Op::MergeWork),
        1 => Just(Op::MergeAll),
        1 => Just(Op::Tick),
        1 => Just(Op::Remount),
        1 => (0..TOTL_NAMES / 3, 1..50usize).prop_map(|(from, limit)| Op::Page { from, limit }),
    ]
}

/// The merge paced so that one merge takes many units: small requests that stop early
/// and leave remainders, completions spliced a few at a time, trees finalized early.
fn paced() -> MergeConfig {
    MergeConfig {
        finalize_height: 2,
        batch: 3,
        request_blocks: 32,
        merge_dirty_blocks: 8,
        splice_commit_blocks: 6,
        free_budget: 4,
        ..MergeConfig::default()
    }
}

fn mount_paced(dev: &Devices) -> Fs {
    let opts = FsOptions {
        seed: Some(5),
        cache_bytes: 1 << 20,
        ..FsOptions::default()
    };
    let fs = Fs::mount_single(dev.0.clone(), dev.1.clone(), opts).unwrap();
    fs.set_merge_config(paced()).unwrap();
    fs
}

/// What the property test saw: reads between two units of merge work that both found
/// work (a merge part done), and units done.
#[derive(Debug, Default)]
struct Seen {
    mid_merge_reads: u64,
    units: u64,
}

/// A file of the model: its inode, its `.totl.` xattrs (name number to value) and its
/// `.indx.` xattrs (name numbers).
#[derive(Default)]
struct TagFile {
    ino: u64,
    totl: BTreeMap<u64, u64>,
    indx: BTreeSet<u64>,
}

#[derive(Default)]
struct TagModel {
    files: BTreeMap<usize, TagFile>,
    /// Unlinked but open: their xattrs still count.
    open: Vec<TagFile>,
}

impl TagModel {
    fn lives(&self) -> impl Iterator<Item = &TagFile> {
        self.files.values().chain(&self.open)
    }

    fn totals(&self) -> Vec<XattrTotal> {
        let mut m: BTreeMap<[u64; 3], (u64, u64)> = BTreeMap::new();
        for f in self.lives() {
            for (n, v) in &f.totl {
                let e = m.entry(totl_name(*n).1).or_default();
                *e = (e.0.wrapping_add(*v), e.1 + 1);
            }
        }
        m.into_iter()
            .filter(|(_, v)| *v != (0, 0))
            .map(|(name, (total, count))| XattrTotal { name, total, count })
            .collect()
    }

    fn index(&self) -> Vec<IndxEntry> {
        let mut s = BTreeSet::new();
        for f in self.lives() {
            for n in &f.indx {
                let (major, minor) = indx_name(*n).1;
                s.insert(IndxEntry {
                    major,
                    minor,
                    ino: f.ino,
                });
            }
        }
        s.into_iter().collect()
    }
}

fn value_text(v: u64, n: u64) -> String {
    // Some in hex, as the original also accepts.
    if n.is_multiple_of(4) {
        format!("0x{v:x}")
    } else {
        v.to_string()
    }
}

fn verify(fs: &Fs, m: &TagModel, what: &str) -> Result<(), TestCaseError> {
    let got = fs.read_xattr_totals([0; 3], usize::MAX).unwrap();
    let want = m.totals();
    if got != want {
        let diff: Vec<_> = want
            .iter()
            .filter(|w| !got.contains(w))
            .map(|w| (w, got.iter().find(|g| g.name == w.name)))
            .take(5)
            .collect();
        return Err(TestCaseError::fail(format!(
            "{what}: totals {} read, {} in the model; differing: {diff:?}",
            got.len(),
            want.len()
        )));
    }
    prop_assert_eq!(all_index(fs), m.index(), "{}: the index", what);
    Ok(())
}

fn run_tags(ops: &[Op]) -> Result<Seen, TestCaseError> {
    let dev = volume_of(24, 8, 2048);
    let mut fs = Some(mount_paced(&dev));
    let mut m = TagModel::default();
    let mut seen = Seen::default();
    // Whether the last unit of merge work found work (a merge is part done).
    let mut merging = false;
    for (i, op) in ops.iter().enumerate() {
        let f = fs.as_ref().unwrap();
        let what = format!("op {i}: {op:?}");
        match *op {
            Op::Create(k) => {
                if let std::collections::btree_map::Entry::Vacant(e) = m.files.entry(k) {
                    let ino = file(f, &format!("f{k}"));
                    e.insert(TagFile {
                        ino,
                        ..TagFile::default()
                    });
                }
            }
            Op::Unlink(k) | Op::UnlinkOpen(k) => {
                if let Some(node) = m.files.remove(&k) {
                    if matches!(op, Op::UnlinkOpen(_)) {
                        f.open(node.ino).unwrap();
                        m.open.push(node);
                    }
                    f.unlink(ROOT_INO, format!("f{k}").as_bytes()).unwrap();
                }
            }
            Op::Release => {
                if let Some(node) = m.open.pop() {
                    f.release(node.ino).unwrap();
                }
            }
            Op::SetTotl {
                f: k,
                first,
                count,
                value,
            } => {
                if let Some(node) = m.files.get_mut(&k) {
                    for n in first..(first + count).min(TOTL_NAMES) {
                        let v = value.wrapping_add(n);
                        set(f, node.ino, &totl_name(n).0, &value_text(v, n)).unwrap();
                        node.totl.insert(n, v);
                    }
                }
            }
            Op::RemoveTotl { f: k, first, count } => {
                if let Some(node) = m.files.get_mut(&k) {
                    for n in first..(first + count).min(TOTL_NAMES) {
                        let res = f.removexattr(node.ino, totl_name(n).0.as_bytes());
                        match node.totl.remove(&n) {
                            Some(_) => res.unwrap(),
                            None => prop_assert_eq!(res.unwrap_err().errno(), 61),
                        }
                    }
                }
            }
            Op::SetIndx { f: k, n } => {
                if let Some(node) = m.files.get_mut(&k) {
                    set(f, node.ino, &indx_name(n).0, "").unwrap();
                    node.indx.insert(n);
                }
            }
            Op::RemoveIndx { f: k, n } => {
                if let Some(node) = m.files.get_mut(&k) {
                    let res = f.removexattr(node.ino, indx_name(n).0.as_bytes());
                    match node.indx.remove(&n) {
                        true => res.unwrap(),
                        false => prop_assert_eq!(res.unwrap_err().errno(), 61),
                    }
                }
            }
            Op::Sync => f.sync().unwrap(),
            Op::MergeWork(n) => {
                for _ in 0..n {
                    let worked = f.merge_work(1).unwrap() > 0;
                    seen.units += worked as u64;
                    if worked && merging {
                        seen.mid_merge_reads += 1;
                    }
                    merging = worked;
                    verify(f, &m, &format!("{what}, a unit"))?;
                }
            }
            Op::MergeAll => {
                f.merge_all().unwrap();
                merging = false;
            }
            Op::Tick => {
                f.background_tick().unwrap();
                merging = false;
            }
            Op::Remount => {
                // Open files are released by the unmount: a crash would leave them
                // orphans, which the next mount deletes.
                for node in m.open.drain(..) {
                    f.release(node.ino).unwrap();
                }
                fs.take().unwrap().unmount().unwrap();
                assert_fs_clean(&dev.0, &dev.1, &what);
                fs = Some(mount_paced(&dev));
                merging = false;
            }
            Op::Page { from, limit } => {
                let from = [from, 0, 0];
                let got = f.read_xattr_totals(from, limit).unwrap();
                let want: Vec<XattrTotal> = m
                    .totals()
                    .into_iter()
                    .filter(|t| t.name >= from)
                    .take(limit)
                    .collect();
                prop_assert_eq!(got, want, "{}", what);
            }
        }
        verify(fs.as_ref().unwrap(), &m, &what)?;
    }
    let f = fs.take().unwrap();
    prop_assert_eq!(f.overruns(), 0);
    f.merge_all().unwrap();
    verify(&f, &m, "after the last merge")?;
    f.unmount().unwrap();
    assert_fs_clean(&dev.0, &dev.1, "after the run");
    Ok(seen)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: proptest_cases(32), ..ProptestConfig::default() })]

    #[test]
    fn totals_and_the_index_read_right_at_every_stage_of_a_merge(
        ops in prop::collection::vec(op(), 50..300),
    ) {
        run_tags(&ops)?;
    }
}

/// One fixed run that must read between units of one merge many times.
#[test]
fn a_fixed_run_reads_between_the_units_of_merges() {
    let mut s = 17u64;
    let mut ops = Vec::new();
    for _ in 0..600 {
        let r = scoutfs_core::block::splitmix64(&mut s);
        let f = (r >> 8) as usize % FILES;
        let n = (r >> 16) % TOTL_NAMES;
        ops.push(match r % 20 {
            0..=1 => Op::Create(f),
            2 => Op::Unlink(f),
            3..=9 => Op::SetTotl {
                f,
                first: n,
                count: 1 + (r >> 40) % 40,
                value: r >> 24,
            },
            10..=11 => Op::RemoveTotl {
                f,
                first: n,
                count: 1 + (r >> 40) % 10,
            },
            12 => Op::SetIndx {
                f,
                n: n % INDX_NAMES,
            },
            13 => Op::Sync,
            _ => Op::MergeWork(3),
        });
    }
    let seen = run_tags(&ops).unwrap();
    eprintln!("{seen:?}");
    assert!(
        seen.mid_merge_reads >= 20,
        "too few reads inside merges: {seen:?}"
    );
}
