//! Who makes a control request, as the kernel would tell the original's ioctls: how the
//! file was opened (the kernel checked the caller's permission to open it so), and
//! whether the caller holds `CAP_SYS_ADMIN`.
//!
//! The adapter keeps no table of open files: the handle it gives the kernel at open is
//! the open flags themselves ([`open_handle`]), and the kernel hands it back with every
//! request on that open file, ioctls included.

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
/// there ever is one, has handle 0 and no access).
const HANDLE_MARK: u64 = 1 << 32;

/// The file handle of an open with `flags` (what the kernel passes to FUSE_OPEN,
/// FUSE_OPENDIR and FUSE_CREATE).
pub fn open_handle(flags: i32) -> u64 {
    HANDLE_MARK | u64::from(flags as u32)
}

/// How the file of handle `fh` was opened.
pub fn open_mode(fh: u64) -> OpenMode {
    if fh & !u64::from(u32::MAX) != HANDLE_MARK {
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

/// `CAP_SYS_ADMIN`'s bit in the capability sets.
const CAP_SYS_ADMIN: u32 = 21;

/// Whether thread `pid` (as FUSE names the caller: in the daemon's pid namespace, 0 if
/// it is outside it) holds `CAP_SYS_ADMIN` in its effective set, in the daemon's user
/// namespace (a capability held in a user namespace of its own is not the volume's
/// administrator's). Anything that cannot be read counts as not privileged.
pub fn sys_admin(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    let ns = |p: String| std::fs::read_link(p).ok();
    match (
        ns(format!("/proc/{pid}/ns/user")),
        ns("/proc/self/ns/user".into()),
    ) {
        (Some(theirs), Some(ours)) if theirs == ours => {}
        _ => return false,
    }
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| effective_caps(&s))
        .is_some_and(|caps| caps & (1 << CAP_SYS_ADMIN) != 0)
}

/// The `CapEff:` set of a `/proc/PID/status` text.
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_carry_the_open_flags() {
        let m = open_mode(open_handle(libc::O_RDONLY));
        assert_eq!((m.read, m.write, m.special), (true, false, false));
        let m = open_mode(open_handle(libc::O_WRONLY | libc::O_CLOEXEC));
        assert_eq!((m.read, m.write, m.special), (false, true, false));
        let m = open_mode(open_handle(libc::O_RDWR | libc::O_APPEND));
        assert_eq!((m.read, m.write, m.special), (true, true, true));
        assert!(open_mode(open_handle(libc::O_RDWR | libc::O_SYNC)).special);
        assert!(open_mode(open_handle(libc::O_RDWR | libc::O_DIRECT)).special);
        // A handle not made here gives no access.
        assert_eq!(open_mode(0), OpenMode::default());
        assert_eq!(open_mode(u64::MAX), OpenMode::default());
    }

    #[test]
    fn effective_capabilities_are_read_from_the_status_text() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(s), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("CapEff:\t0000000000000000\n"), Some(0));
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
        assert_eq!(effective_caps("Name:\tx\n"), None);
        assert!(!sys_admin(0));
    }

    #[test]
    fn this_process_is_judged_by_its_own_capabilities() {
        let me = std::process::id();
        let caps = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| effective_caps(&s));
        let Some(caps) = caps else {
            eprintln!("skipped: this_process_is_judged_by_its_own_capabilities: no /proc");
            return;
        };
        assert_eq!(sys_admin(me), caps & (1 << CAP_SYS_ADMIN) != 0);
    }
}
