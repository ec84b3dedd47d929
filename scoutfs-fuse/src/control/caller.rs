//! Who makes a control request, as the kernel would tell the original's ioctls: how the
//! file was opened (the kernel checked the caller's permission to open it so), and
//! whether the caller holds `CAP_SYS_ADMIN`.
//!
//! The adapter keeps no table of open files: the handle it gives the kernel at open
//! carries the open flags themselves ([`open_handle`]), and the kernel hands it back with
//! every request on that open file, ioctls included. A serial number makes each handle
//! its own, for what a `stage` in pieces keeps per open file (module `gather`).

/// How the file an ioctl is made on was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenMode {
    /// Opened for reading (`FMODE_READ`).
    pub read: bool,
    /// Opened for writing (`FMODE_WRITE`).
    pub write: bool,
    /// `O_APPEND`, `O_DIRECT` or `O_DSYNC` (`O_SYNC` includes it): refused by `stage`.
    pub special: bool,
}

/// Marks a handle made by [`open_handle`] (an open that did not pass through it, if
/// there ever is one, has handle 0 and no access). Handle bits: 0..32 the open flags, 32
/// the mark, 33..64 the serial number.
const HANDLE_MARK: u64 = 1 << 32;

/// The file handle of the open numbered `serial` with `flags` (what the kernel passes to
/// FUSE_OPEN, FUSE_OPENDIR and FUSE_CREATE). Serial numbers wrap after 2^31 opens.
pub fn open_handle(flags: i32, serial: u64) -> u64 {
    (serial << 33) | HANDLE_MARK | u64::from(flags as u32)
}

/// How the file of handle `fh` was opened.
pub fn open_mode(fh: u64) -> OpenMode {
    if fh & HANDLE_MARK == 0 {
        return OpenMode::default();
    }
    let flags = fh as u32 as i32;
    let (read, write) = match flags & libc::O_ACCMODE {
        libc::O_RDONLY => (true, false),
        libc::O_WRONLY => (false, true),
        libc::O_RDWR => (true, true),
        _ => (false, false),
    };
    OpenMode {
        read,
        write,
        special: flags & (libc::O_APPEND | libc::O_DIRECT | libc::O_DSYNC) != 0,
    }
}

/// Whether thread `pid` (as FUSE names the caller: in the daemon's pid namespace, 0 if
/// it is outside it) holds `CAP_SYS_ADMIN` (see [`crate::creds::caller_has_cap`]).
pub fn sys_admin(pid: u32) -> bool {
    crate::creds::caller_has_cap(pid, crate::creds::CAP_SYS_ADMIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_carry_the_open_flags() {
        let m = open_mode(open_handle(libc::O_RDONLY, 0));
        assert_eq!((m.read, m.write, m.special), (true, false, false));
        let m = open_mode(open_handle(libc::O_WRONLY | libc::O_CLOEXEC, 7));
        assert_eq!((m.read, m.write, m.special), (false, true, false));
        let m = open_mode(open_handle(libc::O_RDWR | libc::O_APPEND, u64::MAX));
        assert_eq!((m.read, m.write, m.special), (true, true, true));
        assert!(open_mode(open_handle(libc::O_RDWR | libc::O_SYNC, 1)).special);
        assert!(open_mode(open_handle(libc::O_RDWR | libc::O_DIRECT, 1)).special);
        // Each open its own handle.
        assert_ne!(open_handle(libc::O_RDWR, 1), open_handle(libc::O_RDWR, 2));
        // A handle not made here gives no access.
        assert_eq!(open_mode(0), OpenMode::default());
        assert_eq!(open_mode(u64::from(u32::MAX)), OpenMode::default());
    }
}
