#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Crash tests of the filesystem: random workloads (creates, writes, truncates, links,
//! unlinks, renames, mkdir, rmdir, directory renames, xattrs, open-and-unlink orphans,
//! syncs) on crash devices whose power is cut after a random number of device writes and
//! flushes (mid-operation, inside client and server commits). The devices then lose their unflushed writes (each kept,
//! dropped or torn by seed) and the volume is mounted again. It must hold everything
//! the last successful sync covered that was not changed after it; every entry must
//! point to a live inode, link counts must match the entries, orphans must be gone, and
//! `check` must find nothing wrong.
//!
//! `SCOUTFS_FS_CRASH_SEEDS=N` runs N seeds (default 48); a failure names its seed.

mod common;

use common::{assert_fs_clean, env_or, PowerCut, Rng};
use scoutfs_core::fs::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug, PartialEq)]
struct File {
    data: Vec<u8>,
    xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// What the workload believes: entries and file contents.
#[derive(Clone, Debug, Default)]
struct Model {
    dirs: Vec<u64>,
    entries: BTreeMap<(u64, Vec<u8>), u64>,
    files: HashMap<u64, File>,
    /// Subdirectories by (parent, name), and each directory's parent.
    subdirs: BTreeMap<(u64, Vec<u8>), u64>,
    parent: HashMap<u64, u64>,
}

/// Synced entries verified after crashes (all seeds).
static CHECKED: AtomicU64 = AtomicU64::new(0);

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0,
};

fn opts(seed: u64) -> FsOptions {
    FsOptions {
        cache_bytes: 4 << 20,
        seed: Some(seed),
        ..FsOptions::default()
    }
}

/// Run one seed; returns whether the power was cut before the workload ended.
fn run(seed: u64) -> bool {
    let mut rng = Rng(seed);
    let power = PowerCut::volume(24 << 20, 48 << 20, 4096);
    let (md, dd) = power.raw();
    let (cut_meta, cut_data) = power.devices();
    let fs = Fs::mount_single(cut_meta, cut_data, opts(seed)).unwrap();
    let mut m = Model {
        dirs: vec![ROOT_INO],
        ..Model::default()
    };
    let d = fs.mkdir(ROOT_INO, b"d", 0o755, C).unwrap().ino;
    m.dirs.push(d);
    m.subdirs.insert((ROOT_INO, b"d".to_vec()), d);
    m.parent.insert(d, ROOT_INO);
    fs.sync().unwrap();
    // Cut the power after this many more device writes and flushes.
    power.cut_after(5 + rng.below(500));

    let mut synced = m.clone();
    let mut touched_entries: BTreeSet<(u64, Vec<u8>)> = BTreeSet::new();
    let mut touched_inos: BTreeSet<u64> = BTreeSet::new();
    let mut orphans = Vec::new();
    let mut cut = false;
    let names: Vec<Vec<u8>> = (0..8).map(|i| format!("f{i}").into_bytes()).collect();
    let dnames: Vec<Vec<u8>> = (0..3).map(|i| format!("sub{i}").into_bytes()).collect();
    for step in 0..300 {
        let dir = m.dirs[rng.below(m.dirs.len() as u64) as usize];
        let name = names[rng.below(names.len() as u64) as usize].clone();
        let key = (dir, name.clone());
        let existing = m.entries.get(&key).copied();
        let dname = dnames[rng.below(dnames.len() as u64) as usize].clone();
        let dkey = (dir, dname.clone());
        let r: FsResult<()> = match (rng.below(13), existing) {
            (10, _) if !m.subdirs.contains_key(&dkey) => {
                touched_entries.insert(dkey.clone());
                fs.mkdir(dir, &dname, 0o755, C).map(|a| {
                    m.dirs.push(a.ino);
                    m.subdirs.insert(dkey.clone(), a.ino);
                    m.parent.insert(a.ino, dir);
                })
            }
            (11, _) if m.subdirs.contains_key(&dkey) => {
                let sub = m.subdirs[&dkey];
                if m.entries.keys().any(|k| k.0 == sub) || m.subdirs.keys().any(|k| k.0 == sub) {
                    continue;
                }
                touched_entries.insert(dkey.clone());
                touched_inos.insert(sub);
                fs.rmdir(dir, &dname).map(|_| {
                    m.subdirs.remove(&dkey);
                    m.dirs.retain(|&x| x != sub);
                    m.parent.remove(&sub);
                })
            }
            (12, _) if m.subdirs.contains_key(&dkey) => {
                let sub = m.subdirs[&dkey];
                let nd = m.dirs[rng.below(m.dirs.len() as u64) as usize];
                let nn = dnames[rng.below(dnames.len() as u64) as usize].clone();
                let nkey = (nd, nn.clone());
                // Not into itself, and not onto another directory.
                let mut up = nd;
                let mut inside = false;
                while up != ROOT_INO {
                    if up == sub {
                        inside = true;
                        break;
                    }
                    up = m.parent[&up];
                }
                if inside || m.subdirs.contains_key(&nkey) {
                    continue;
                }
                touched_entries.insert(dkey.clone());
                touched_entries.insert(nkey.clone());
                touched_inos.insert(sub);
                fs.rename(dir, &dname, nd, &nn, RenameFlags::default())
                    .map(|_| {
                        m.subdirs.remove(&dkey);
                        m.subdirs.insert(nkey, sub);
                        m.parent.insert(sub, nd);
                    })
            }
            (0..=2, None) => {
                let len = rng.below(40_000) as usize;
                let bytes: Vec<u8> = (0..len).map(|i| (i as u64 ^ seed ^ step) as u8).collect();
                let r = fs.mknod(dir, &name, 0o100644, 0, C).and_then(|a| {
                    m.entries.insert(key.clone(), a.ino);
                    m.files.insert(
                        a.ino,
                        File {
                            data: Vec::new(),
                            xattrs: BTreeMap::new(),
                        },
                    );
                    touched_entries.insert(key.clone());
                    touched_inos.insert(a.ino);
                    fs.write(a.ino, 0, &bytes).map(|_| {
                        m.files.get_mut(&a.ino).unwrap().data = bytes;
                    })
                });
                r
            }
            (3, Some(ino)) => {
                let off = rng.below(60_000);
                let len = rng.below(20_000) as usize;
                let bytes = vec![(step as u8) | 1; len];
                touched_inos.insert(ino);
                fs.write(ino, off, &bytes).map(|_| {
                    let f = &mut m.files.get_mut(&ino).unwrap().data;
                    let end = off as usize + len;
                    if f.len() < end && len > 0 {
                        f.resize(end, 0);
                    }
                    f[off as usize..off as usize + len].copy_from_slice(&bytes);
                })
            }
            (4, Some(ino)) => {
                let size = rng.below(50_000);
                touched_inos.insert(ino);
                let set = SetAttr {
                    size: Some(size),
                    ..Default::default()
                };
                fs.setattr(ino, &set).map(|_| {
                    m.files.get_mut(&ino).unwrap().data.resize(size as usize, 0);
                })
            }
            (5, Some(ino)) => {
                touched_entries.insert(key.clone());
                touched_inos.insert(ino);
                if rng.below(3) == 0 {
                    // An orphan: open, unlink, and keep it open until the crash.
                    fs.open(ino).and_then(|_| fs.unlink(dir, &name)).map(|_| {
                        m.entries.remove(&key);
                        if !m.entries.values().any(|&i| i == ino) {
                            orphans.push(ino);
                        }
                    })
                } else {
                    fs.unlink(dir, &name).map(|_| {
                        m.entries.remove(&key);
                    })
                }
            }
            (6, Some(ino)) => {
                let nd = m.dirs[rng.below(m.dirs.len() as u64) as usize];
                let nn = names[rng.below(names.len() as u64) as usize].clone();
                let nkey = (nd, nn.clone());
                touched_entries.insert(key.clone());
                touched_entries.insert(nkey.clone());
                touched_inos.insert(ino);
                if let Some(&o) = m.entries.get(&nkey) {
                    touched_inos.insert(o);
                }
                fs.rename(dir, &name, nd, &nn, RenameFlags::default())
                    .map(|_| {
                        // Renaming a link onto another link of the same inode does nothing.
                        if m.entries.get(&nkey) != Some(&ino) {
                            m.entries.remove(&key);
                            m.entries.insert(nkey, ino);
                        }
                    })
            }
            (7, Some(ino)) => {
                let nd = m.dirs[rng.below(m.dirs.len() as u64) as usize];
                let nn = names[rng.below(names.len() as u64) as usize].clone();
                let nkey = (nd, nn.clone());
                if m.entries.contains_key(&nkey) {
                    continue;
                }
                touched_entries.insert(nkey.clone());
                touched_inos.insert(ino);
                fs.link(ino, nd, &nn).map(|_| {
                    m.entries.insert(nkey, ino);
                })
            }
            (8, Some(ino)) => {
                let v = vec![step as u8; rng.below(3000) as usize];
                touched_inos.insert(ino);
                fs.setxattr(ino, b"user.v", &v, XattrSet::Any).map(|_| {
                    m.files
                        .get_mut(&ino)
                        .unwrap()
                        .xattrs
                        .insert(b"user.v".to_vec(), v);
                })
            }
            (9, _) => fs.sync().map(|_| {
                synced = m.clone();
                touched_entries.clear();
                touched_inos.clear();
            }),
            _ => continue,
        };
        if let Err(e) = r {
            assert!(
                matches!(e.errno(), 5),
                "seed {seed}: an operation failed with {e} before the power cut"
            );
            cut = true;
            break;
        }
    }
    // Power loss: the mount is gone, unflushed writes are kept, dropped or torn.
    drop(fs);
    power.crash(seed);

    let fs = Fs::mount_single(md.clone(), dd.clone(), opts(seed ^ 2))
        .unwrap_or_else(|e| panic!("seed {seed}: remount failed: {e}"));

    // Everything the last sync covered and nothing changed since is there.
    for (key, &ino) in &synced.entries {
        if touched_entries.contains(key) || touched_inos.contains(&ino) {
            continue;
        }
        let a = fs
            .lookup(key.0, &key.1)
            .unwrap_or_else(|e| panic!("seed {seed}: synced entry {key:?} lost: {e}"));
        assert_eq!(a.ino, ino, "seed {seed}: entry {key:?}");
        CHECKED.fetch_add(1, Ordering::SeqCst);
        let f = &synced.files[&ino];
        assert_eq!(a.size, f.data.len() as u64, "seed {seed}: size of {ino}");
        let got = fs.read(ino, 0, f.data.len() as u32 + 1).unwrap();
        assert!(got == f.data, "seed {seed}: contents of synced inode {ino}");
        for (k, v) in &f.xattrs {
            assert_eq!(
                &fs.getxattr(ino, k).unwrap(),
                v,
                "seed {seed}: xattr of {ino}"
            );
        }
    }

    for (key, &ino) in &synced.subdirs {
        if touched_entries.contains(key) || touched_inos.contains(&ino) {
            continue;
        }
        let a = fs
            .lookup(key.0, &key.1)
            .unwrap_or_else(|e| panic!("seed {seed}: synced directory {key:?} lost: {e}"));
        assert_eq!(
            (a.ino, a.kind),
            (ino, FileKind::Dir),
            "seed {seed}: {key:?}"
        );
        CHECKED.fetch_add(1, Ordering::SeqCst);
    }

    // The namespace is consistent: entries point to live inodes, link counts match.
    let mut links: HashMap<u64, u32> = HashMap::new();
    let mut stack = vec![ROOT_INO];
    let mut reachable = BTreeSet::new();
    while let Some(dir) = stack.pop() {
        let mut subdirs = 0;
        let mut pos = 0;
        loop {
            let mut batch = Vec::new();
            fs.readdir(dir, pos, &mut |e| {
                batch.push(e.clone());
                batch.len() < 16
            })
            .unwrap();
            if batch.is_empty() {
                break;
            }
            for e in batch {
                pos = e.next_pos;
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let a = fs
                    .getattr(e.ino)
                    .unwrap_or_else(|err| panic!("seed {seed}: entry to a dead inode: {err}"));
                assert_eq!(a.kind, e.kind, "seed {seed}");
                reachable.insert(e.ino);
                if a.kind == FileKind::Dir {
                    subdirs += 1;
                    stack.push(e.ino);
                    assert_eq!(fs.lookup(e.ino, b"..").unwrap().ino, dir);
                } else {
                    *links.entry(e.ino).or_default() += 1;
                }
            }
        }
        assert_eq!(
            fs.getattr(dir).unwrap().nlink,
            2 + subdirs,
            "seed {seed}: link count of directory {dir}"
        );
    }
    for (ino, n) in links {
        assert_eq!(
            fs.getattr(ino).unwrap().nlink,
            n,
            "seed {seed}: links of {ino}"
        );
    }
    // Orphans are gone (or their unlink never became durable).
    for ino in orphans {
        match fs.getattr(ino) {
            Err(e) => assert_eq!(e.errno(), 2, "seed {seed}"),
            Ok(a) => assert!(
                reachable.contains(&ino) && a.nlink > 0,
                "seed {seed}: orphan {ino} left behind"
            ),
        }
    }
    // The volume works on and checks clean.
    let f = fs.mknod(ROOT_INO, b"after", 0o100644, 0, C).unwrap().ino;
    fs.write(f, 0, b"after the crash").unwrap();
    fs.unmount().unwrap();
    assert_fs_clean(&md, &dd, &format!("seed {seed}"));
    cut
}

#[test]
fn crashes_keep_what_was_synced_and_a_consistent_namespace() {
    let seeds: u64 = env_or(&["SCOUTFS_FS_CRASH_SEEDS"], 48);
    let mut cuts = 0;
    for seed in 0..seeds {
        if run(seed) {
            cuts += 1;
        }
    }
    // Most runs lose power mid-workload (the rest crash at its end).
    let checked = CHECKED.load(Ordering::SeqCst);
    eprintln!("{cuts} of {seeds} runs cut mid-workload; {checked} synced entries verified");
    assert!(cuts * 3 >= seeds, "only {cuts} of {seeds} runs were cut");
    assert!(
        checked >= seeds,
        "too few synced entries were verified: {checked}"
    );
}
