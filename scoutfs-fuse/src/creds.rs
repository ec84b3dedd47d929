//! Who asks: the capabilities of the process behind a FUSE request.
//!
//! The kernel checks a kernel filesystem's privileged operations against the caller's
//! credentials (`capable()`); a FUSE daemon gets only the caller's pid, uid and gid, so it
//! reads the caller's effective capabilities from `/proc/<pid>/status` (`CapEff`). Being
//! root is not enough: a root process without the capability (dropped, or in a user
//! namespace) is refused, as the kernel refuses it. The answer is as good as the pid: a
//! caller that exits while its request is served could have its pid reused, which at
//! worst answers for the new process.

use std::path::Path;

/// `CAP_SYS_ADMIN`: setting and removing `scoutfs.` tagged xattrs.
pub const CAP_SYS_ADMIN: u32 = 21;

/// Whether process (or thread) `pid` has capability `cap` in its effective set. False
/// when that cannot be read (the process is gone, or pid 0: a request the kernel made
/// itself).
pub fn caller_has_cap(pid: u32, cap: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")) {
        Ok(status) => status_has_cap(&status, cap),
        Err(_) => false,
    }
}

/// Whether the `CapEff` line of a `/proc/<pid>/status` text has bit `cap` set.
fn status_has_cap(status: &str, cap: u32) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|set| cap < 64 && set & (1 << cap) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_effective_set_decides() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapEff:\t0000000000200000\nCapBnd:\t000001ffffffffff\n";
        assert!(status_has_cap(status, CAP_SYS_ADMIN));
        assert!(!status_has_cap(status, 0));
        assert!(!status_has_cap(status, 64));
        let none = "CapPrm:\t000001ffffffffff\nCapEff:\t0000000000000000\n";
        assert!(!status_has_cap(none, CAP_SYS_ADMIN));
        assert!(!status_has_cap("CapEff:\tnot hex\n", CAP_SYS_ADMIN));
        assert!(!status_has_cap("", CAP_SYS_ADMIN));
    }

    #[test]
    fn this_process_is_read_and_pid_0_is_nobody() {
        assert!(!caller_has_cap(0, CAP_SYS_ADMIN));
        let own = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        assert_eq!(
            caller_has_cap(std::process::id(), CAP_SYS_ADMIN),
            status_has_cap(&own, CAP_SYS_ADMIN)
        );
    }
}
