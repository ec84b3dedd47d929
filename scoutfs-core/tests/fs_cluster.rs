#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Several mounts of one volume in one process (`Fs::mount` over a `LocalHub`): each
//! sees the others' changes at once through the cluster locks — contents, sizes, names,
//! renames, unlinks and xattrs — under threads racing in shared directories, and the
//! volume they leave checks clean.

mod common;

use common::{assert_fs_clean, volume_of};
use scoutfs_core::device::BlockDevice;
use scoutfs_core::entropy::SeededEntropy;
use scoutfs_core::fs::*;
use scoutfs_core::server::{Server, ServerCore, ServerOptions};
use scoutfs_core::transport::LocalHub;
use std::sync::Arc;

const C: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0o022,
};

struct Cluster {
    meta: Arc<dyn BlockDevice>,
    data: Arc<dyn BlockDevice>,
    _server: Arc<Server>,
    mounts: Vec<Fs>,
}

fn cluster(n: usize) -> Cluster {
    let (meta, data) = volume_of(128, 128, 4096);
    let core = ServerCore::open(meta.clone(), data.clone(), ServerOptions::default()).unwrap();
    let server = Arc::new(Server::new(core));
    let hub = LocalHub::new(&server);
    let mounts = (0..n)
        .map(|i| {
            let opts = FsOptions {
                entropy: Arc::new(SeededEntropy::new(100 + i as u64)),
                cache_bytes: 16 << 20,
                ..FsOptions::default()
            };
            Fs::mount(meta.clone(), data.clone(), hub.connect(), opts).unwrap()
        })
        .collect();
    Cluster {
        meta,
        data,
        _server: server,
        mounts,
    }
}

impl Cluster {
    fn finish(self) {
        for fs in self.mounts {
            fs.unmount().unwrap();
        }
        assert_fs_clean(&self.meta, &self.data, "after the mounts left");
    }
}

fn lookup(fs: &Fs, path: &[&str]) -> FsResult<Attr> {
    let mut a = fs.getattr(ROOT_INO)?;
    for p in path {
        a = fs.lookup(a.ino, p.as_bytes())?;
    }
    Ok(a)
}

#[test]
fn each_mount_sees_the_others_changes_at_once() {
    let c = cluster(3);
    let (a, b, m3) = (&c.mounts[0], &c.mounts[1], &c.mounts[2]);
    let d = a.mkdir(ROOT_INO, b"d", 0o755, C).unwrap();
    let f = a.mknod(d.ino, b"f", 0o644, 0, C).unwrap();
    a.write(f.ino, 0, b"hello").unwrap();

    let fb = lookup(b, &["d", "f"]).unwrap();
    assert_eq!(fb.ino, f.ino);
    assert_eq!(b.read(f.ino, 0, 100).unwrap(), b"hello");

    b.write(f.ino, 3, b"p me, world").unwrap();
    assert_eq!(a.read(f.ino, 0, 100).unwrap(), b"help me, world");
    assert_eq!(a.getattr(f.ino).unwrap().size, 14);

    a.rename(d.ino, b"f", ROOT_INO, b"g", RenameFlags::default())
        .unwrap();
    assert_eq!(lookup(b, &["d", "f"]).unwrap_err().errno(), 2);
    assert_eq!(lookup(m3, &["g"]).unwrap().ino, f.ino);

    b.setxattr(f.ino, b"user.k", b"v1", XattrSet::Any).unwrap();
    assert_eq!(m3.getxattr(f.ino, b"user.k").unwrap(), b"v1");
    m3.setattr(
        f.ino,
        &SetAttr {
            size: Some(2),
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .unwrap();
    let at = a.getattr(f.ino).unwrap();
    assert_eq!((at.size, at.mode & 0o777), (2, 0o600));
    assert_eq!(a.read(f.ino, 0, 100).unwrap(), b"he");

    // Open on one mount, unlinked on another: still readable until released.
    a.open(f.ino).unwrap();
    m3.unlink(ROOT_INO, b"g").unwrap();
    assert_eq!(lookup(b, &["g"]).unwrap_err().errno(), 2);
    assert_eq!(a.read(f.ino, 0, 100).unwrap(), b"he");
    a.release(f.ino).unwrap();
    c.finish();
}

/// One thread's random operations on mount `m` in the shared directories.
fn racer(m: usize, fs: &Fs, t: u64, dirs: &[u64], shared: u64) {
    let mut rng = common::Rng(1 + m as u64 * 10 + t);
    for i in 0..150u64 {
        let dir = dirs[rng.below(3) as usize];
        let name = format!("m{m}t{t}-{}", rng.below(20));
        match rng.below(5) {
            0 | 1 => {
                if let Ok(a) = fs.mknod(dir, name.as_bytes(), 0o644, 0, C) {
                    fs.write(a.ino, 0, name.as_bytes()).unwrap();
                }
            }
            2 => {
                let _ = fs.unlink(dir, name.as_bytes());
            }
            3 => {
                let to = dirs[rng.below(3) as usize];
                let _ = fs.rename(
                    dir,
                    name.as_bytes(),
                    to,
                    name.as_bytes(),
                    RenameFlags::default(),
                );
            }
            _ => {
                // Each thread owns a slot of the shared file.
                let slot = (m as u64 * 2 + t) * 8;
                fs.write(shared, slot, &i.to_le_bytes()).unwrap();
            }
        }
    }
}

#[test]
fn mounts_racing_in_shared_directories_agree() {
    let c = cluster(3);
    let dirs: Vec<u64> = (0..3)
        .map(|i| {
            c.mounts[0]
                .mkdir(ROOT_INO, format!("d{i}").as_bytes(), 0o755, C)
                .unwrap()
                .ino
        })
        .collect();
    let shared = c.mounts[0].mknod(ROOT_INO, b"shared", 0o644, 0, C).unwrap();
    let racing = std::sync::atomic::AtomicBool::new(true);
    std::thread::scope(|s| {
        // Log merges while the mounts race: finalizations must take every tree that may
        // hold an older version of what a finalized tree holds.
        s.spawn(|| {
            let mut merges = 0;
            while racing.load(std::sync::atomic::Ordering::Relaxed) || merges < 2 {
                c.mounts[merges % 3].merge_all().unwrap();
                merges += 1;
            }
        });
        let racers: Vec<_> = c
            .mounts
            .iter()
            .enumerate()
            .flat_map(|(m, fs)| (0..2u64).map(move |t| (m, fs, t)))
            .collect();
        let racing = &racing;
        let dirs = &dirs;
        let handles: Vec<_> = racers
            .into_iter()
            .map(|(m, fs, t)| s.spawn(move || racer(m, fs, t, dirs, shared.ino)))
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        racing.store(false, std::sync::atomic::Ordering::Relaxed);
    });
    // Every mount lists the same names with the same contents.
    let views: Vec<Vec<(String, Vec<u8>)>> = c
        .mounts
        .iter()
        .map(|fs| {
            let mut v = Vec::new();
            for &d in &dirs {
                let mut names = Vec::new();
                fs.readdir(d, 0, &mut |e| {
                    names.push((e.name.clone(), e.ino));
                    true
                })
                .unwrap();
                for (n, ino) in names {
                    if n == b"." || n == b".." {
                        continue;
                    }
                    v.push((
                        format!("{d}/{}", String::from_utf8_lossy(&n)),
                        fs.read(ino, 0, 100).unwrap(),
                    ));
                }
            }
            v.push(("shared".into(), fs.read(shared.ino, 0, 100).unwrap()));
            v
        })
        .collect();
    assert_eq!(views[0], views[1]);
    assert_eq!(views[0], views[2]);
    for (name, data) in &views[0] {
        if name != "shared" {
            let base = name.rsplit('/').next().unwrap();
            assert_eq!(data, base.as_bytes(), "{name}");
        }
    }
    c.finish();
}

/// Mounts creating files in directories of their own take no lock from each other: each
/// one's new inodes come in runs of whole inode lock groups, never a group another mount
/// creates in (runs shorter than a group made two mounts' creates hand one group's lock
/// back and forth, a commit each time).
#[test]
fn creates_in_own_directories_do_not_contend() {
    let c = cluster(2);
    let invalidations = |fs: &Fs| fs.cluster_locks().unwrap().stats().invalidations;
    let dirs: Vec<u64> = c
        .mounts
        .iter()
        .enumerate()
        .map(|(i, fs)| {
            fs.mkdir(ROOT_INO, format!("m{i}").as_bytes(), 0o755, C)
                .unwrap()
                .ino
        })
        .collect();
    let before: Vec<u64> = c.mounts.iter().map(invalidations).collect();
    // More than a group each, in turns, so both ask for new runs meanwhile.
    for n in 0..2500 {
        for (fs, &d) in c.mounts.iter().zip(&dirs) {
            let a = fs
                .mknod(d, format!("f{n}").as_bytes(), 0o644, 0, C)
                .unwrap();
            fs.write(a.ino, 0, b"x").unwrap();
        }
    }
    let after: Vec<u64> = c.mounts.iter().map(invalidations).collect();
    assert_eq!(before, after, "locks invalidated while creating apart");
    c.finish();
}
