//! Unit tests that need the crate's insides: names whose hashes collide.

use super::*;
use crate::device::MemDevice;
use crate::volume::{mkfs, MkfsOptions};
use std::cell::Cell;

thread_local! {
    /// Every name hashes to the same value (this thread only).
    pub(super) static COLLIDE: Cell<bool> = const { Cell::new(false) };
}

#[test]
#[allow(clippy::unwrap_used)]
fn colliding_name_hashes_are_told_apart_by_name() {
    COLLIDE.with(|c| c.set(true));
    assert_eq!(name_hash(b"x"), name_hash(b"y"));
    let meta: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(16 << 20));
    let data: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(16 << 20));
    let mk = MkfsOptions {
        meta_block_size: 4096,
        ..Default::default()
    };
    mkfs(&meta, &data, &mk).unwrap();
    let fs = Fs::mount_single(meta.clone(), data.clone(), FsOptions::default()).unwrap();
    let c = Creds::default();
    let mut inos = Vec::new();
    for i in 0..50 {
        let n = format!("n{i}");
        inos.push(fs.mknod(ROOT_INO, n.as_bytes(), 0o644, 0, c).unwrap().ino);
    }
    assert_eq!(
        fs.mknod(ROOT_INO, b"n7", 0o644, 0, c).unwrap_err().errno(),
        17
    );
    for (i, ino) in inos.iter().enumerate() {
        assert_eq!(
            fs.lookup(ROOT_INO, format!("n{i}").as_bytes()).unwrap().ino,
            *ino
        );
    }
    fs.unlink(ROOT_INO, b"n3").unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"n3").unwrap_err().errno(), 2);
    assert_eq!(fs.lookup(ROOT_INO, b"n4").unwrap().ino, inos[4]);
    fs.rename(ROOT_INO, b"n5", ROOT_INO, b"n6", RenameFlags::default())
        .unwrap();
    assert_eq!(fs.lookup(ROOT_INO, b"n6").unwrap().ino, inos[5]);
    assert_eq!(fs.lookup(ROOT_INO, b"n5").unwrap_err().errno(), 2);
    // Xattrs whose names collide too.
    for i in 0..20 {
        let v = vec![i as u8; 1000 + i];
        fs.setxattr(
            inos[0],
            format!("user.{i}").as_bytes(),
            &v,
            XattrSet::Create,
        )
        .unwrap();
    }
    fs.removexattr(inos[0], b"user.4").unwrap();
    for i in 0..20 {
        let r = fs.getxattr(inos[0], format!("user.{i}").as_bytes());
        if i == 4 {
            assert_eq!(r.unwrap_err().errno(), 61);
        } else {
            assert_eq!(r.unwrap(), vec![i as u8; 1000 + i]);
        }
    }
    assert_eq!(fs.listxattr(inos[0]).unwrap().len(), 19);
    fs.unmount().unwrap();
    COLLIDE.with(|c| c.set(false));
}
