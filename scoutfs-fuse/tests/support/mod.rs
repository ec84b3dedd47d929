//! What the tests through a real FUSE mount share: an in-memory volume mounted through
//! the kernel and served by the test's own process, unmounted when dropped.
//!
//! Mounting needs root and `/dev/fuse`; without them [`serve`] says the test is skipped
//! and returns `None`.

#![allow(dead_code)]

use scoutfs_core::device::{BlockDevice, MemDevice};
use scoutfs_core::fs::{Fs, FsOptions};
use scoutfs_core::volume::{mkfs, MkfsOptions};
use scoutfs_fuse::ServeOptions;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Say on stderr that the running test checked nothing, and why.
pub fn skip(why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {}: {why}",
        thread::current().name().unwrap_or("a FUSE test")
    );
}

/// Wait until `f` holds, at most 10 s.
pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < end, "timed out: {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A fresh in-memory volume mounted as a FUSE front-end needs it (counting the kernel's
/// references).
pub fn volume() -> Arc<Fs> {
    let meta: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(64 << 20));
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(16 << 20));
    let mk = MkfsOptions {
        meta_block_size: 4096,
        ..Default::default()
    };
    mkfs(&meta, &data, &mk).expect("mkfs");
    let opts = FsOptions {
        lookup_counts: true,
        ..FsOptions::default()
    };
    Arc::new(Fs::mount_single(meta, data, opts).expect("mount"))
}

/// `fs` served through the kernel at a mount point of its own.
pub struct Served {
    pub fs: Arc<Fs>,
    pub mnt: PathBuf,
    server: Option<JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Mount `fs` with `opts` and serve it from a thread; `None` (and the test says it is
/// skipped) where this process cannot mount FUSE.
pub fn serve(fs: Arc<Fs>, opts: &ServeOptions) -> Option<Served> {
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root || !Path::new("/dev/fuse").exists() {
        skip("not root, or no /dev/fuse: nothing checked");
        return None;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mnt = dir.path().canonicalize().expect("its path").join("mnt");
    std::fs::create_dir(&mnt).expect("the mount point");
    let mounted = match scoutfs_fuse::mount(fs.clone(), &mnt, opts) {
        Ok(m) => m,
        Err(e) => {
            skip(&format!("cannot mount FUSE here ({e}): nothing checked"));
            return None;
        }
    };
    let server = thread::spawn(move || mounted.run());
    Some(Served {
        fs,
        mnt,
        server: Some(server),
        _dir: dir,
    })
}

impl Served {
    /// A path in the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// Unmount, wait for the daemon's threads, and unmount the filesystem (which the
    /// mount must have let go of).
    pub fn finish(mut self) {
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        if let Some(s) = self.server.take() {
            s.join().expect("the server thread").expect("served");
        }
        let fs = self.fs.clone();
        drop(self);
        match Arc::try_unwrap(fs) {
            Ok(fs) => fs.unmount().expect("unmount"),
            Err(_) => panic!("the mount did not let go of the filesystem"),
        }
    }
}

impl Drop for Served {
    /// A failed test leaves no mount behind (detached lazily).
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
    }
}
