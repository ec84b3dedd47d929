//! Numbered files a test writes through a mount and reads back through another.

use scoutfs_core::fs::{Creds, Fs, XattrSet, ROOT_INO};

/// Root, with the usual umask.
pub const ROOT_CREDS: Creds = Creds {
    uid: 0,
    gid: 0,
    umask: 0o022,
};

/// Create directory `d` with `n` files `f{i}` of `len` bytes of `i` and an xattr
/// `user.n` holding `i`; `sync_every` files, sync (0: never).
pub fn write_numbered_files(fs: &Fs, n: u32, len: usize, sync_every: u32) {
    let dir = fs.mkdir(ROOT_INO, b"d", 0o755, ROOT_CREDS).unwrap();
    for i in 0..n {
        let f = fs
            .mknod(dir.ino, format!("f{i}").as_bytes(), 0o644, 0, ROOT_CREDS)
            .unwrap();
        fs.write(f.ino, 0, &vec![i as u8; len]).unwrap();
        fs.setxattr(f.ino, b"user.n", &i.to_le_bytes(), XattrSet::Any)
            .unwrap();
        if sync_every > 0 && i % sync_every == sync_every - 1 {
            fs.sync().unwrap();
        }
    }
}

/// The files of [`write_numbered_files`] are there, whole.
pub fn assert_numbered_files(fs: &Fs, n: u32, len: usize) {
    let dir = fs.lookup(ROOT_INO, b"d").unwrap();
    for i in 0..n {
        let f = fs.lookup(dir.ino, format!("f{i}").as_bytes()).unwrap();
        assert_eq!(
            fs.read(f.ino, 0, 2 * len as u32).unwrap(),
            vec![i as u8; len]
        );
        assert_eq!(fs.getxattr(f.ino, b"user.n").unwrap(), i.to_le_bytes());
    }
}
