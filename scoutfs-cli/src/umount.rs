//! `scoutfs umount [-l] [-f] MOUNTPOINT`, which is also umount(8)'s helper
//! `umount.fuse.scoutfs`, and `scoutfs sync PATH`.
//!
//! A plain FUSE mount gives its daemon no say in the unmount: umount(2) returns once the
//! kernel has let go of the mount, while the daemon still has its final commit to make.
//! `scoutfs umount` unmounts and then waits for the daemon to exit, and says whether its
//! final commit was made (the daemon takes its utab line out only after it was, see
//! [`crate::utab`]), so when it returns 0 everything written before it is on the devices.
//! Installed as `/sbin/umount.fuse.scoutfs` (a link to the `scoutfs` program), it is what
//! `umount MOUNTPOINT` runs for a scoutfs mount. `fusermount3 -u` runs no helper.
//!
//! `scoutfs sync PATH` commits the mount that holds PATH: the kernel passes an fsync of
//! a file or directory to the daemon, which commits the whole open transaction for any
//! of them. (`sync(1)` and `syncfs(2)` do not reach a FUSE daemon: the kernel sends
//! FUSE_SYNCFS only to virtiofs.)

use crate::error::CmdError;
use crate::utab;
use nix::mount::{umount2, MntFlags};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The mount type of a scoutfs mount in the kernel's mount table.
pub const FSTYPE: &str = "fuse.scoutfs";

/// What `scoutfs umount` was asked to do.
#[derive(Debug, Default)]
pub struct Args {
    /// The mount point.
    pub target: PathBuf,
    /// `-l`: detach now, the daemon commits when the last user lets go (not waited for).
    pub lazy: bool,
    /// `-f`: force (abort the FUSE connection's requests).
    pub force: bool,
}

/// The arguments umount(8) gives its helper: `TARGET [-flnrv] [-N NS] [-t TYPE]`.
pub fn helper_args(args: &[std::ffi::OsString]) -> Result<Args, CmdError> {
    let mut out = Args::default();
    let mut target = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let b = a.as_bytes();
        if b.first() != Some(&b'-') || b.len() == 1 {
            if target.replace(PathBuf::from(a)).is_some() {
                return Err(CmdError::Other("more than one mount point given".into()));
            }
            continue;
        }
        for &c in &b[1..] {
            match c {
                b'l' => out.lazy = true,
                b'f' => out.force = true,
                // No mtab to skip, no remount to try, nothing more to say.
                b'n' | b'r' | b'v' | b'i' => {}
                b't' => {
                    it.next();
                }
                b'N' => {
                    return Err(CmdError::Other(
                        "unmounting in another mount namespace (-N) is not supported".into(),
                    ))
                }
                _ => {
                    return Err(CmdError::Other(format!(
                        "unknown option -{} (umount helper: TARGET [-flnrv] [-t TYPE])",
                        c as char
                    )))
                }
            }
        }
    }
    out.target = target.ok_or_else(|| CmdError::Other("no mount point given".into()))?;
    Ok(out)
}

/// A line of /proc/self/mountinfo: the device numbers, the mount point, the type and the
/// source.
#[derive(Debug)]
pub struct MountInfo {
    dev: (u64, u64),
    /// The mount point.
    pub target: PathBuf,
    /// The type (`fuse.scoutfs` for ours).
    pub fstype: String,
    source: PathBuf,
}

fn mountinfo() -> Result<Vec<MountInfo>, CmdError> {
    let text = std::fs::read("/proc/self/mountinfo")
        .map_err(|e| CmdError::Other(format!("cannot read /proc/self/mountinfo: {e}")))?;
    Ok(text
        .split(|&b| b == b'\n')
        .filter_map(parse_mountinfo)
        .collect())
}

fn parse_mountinfo(line: &[u8]) -> Option<MountInfo> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let dash = fields.iter().position(|f| *f == b"-")?;
    let dev = std::str::from_utf8(fields.get(2)?).ok()?;
    let (major, minor) = dev.split_once(':')?;
    let os = |b: &[u8]| {
        PathBuf::from(std::ffi::OsString::from(std::ffi::OsStr::from_bytes(
            &utab::unmangle(b),
        )))
    };
    Some(MountInfo {
        dev: (major.parse().ok()?, minor.parse().ok()?),
        target: os(fields.get(4)?),
        fstype: String::from_utf8_lossy(fields.get(dash + 1)?).into_owned(),
        source: os(fields.get(dash + 2)?),
    })
}

/// The mount point as the mount table spells it: the parent made absolute, without
/// touching the mount point itself (a mount whose daemon died cannot be looked at).
fn mount_point(p: &Path) -> Result<PathBuf, CmdError> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Ok(abs);
    };
    let parent = parent
        .canonicalize()
        .map_err(|e| CmdError::Other(format!("{}: {e}", parent.display())))?;
    Ok(parent.join(name))
}

/// Whether process `pid` is the daemon still running (not exited, not a zombie).
fn daemon_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if state == Some("Z") {
        return false;
    }
    // A pid used again since is not our daemon.
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|&b| b == 0).any(|a| a == b"--foreground"))
}

/// `scoutfs umount`: unmounts, waits for the daemon's final commit and says whether it
/// was made.
pub fn run(args: &Args) -> Result<(), CmdError> {
    let target = mount_point(&args.target)?;
    let mounts = mountinfo()?;
    let Some(m) = mounts.iter().rev().find(|m| m.target == target) else {
        return Err(CmdError::Other(format!(
            "{} is not mounted",
            target.display()
        )));
    };
    if m.fstype != FSTYPE {
        return Err(CmdError::Other(format!(
            "{} is a {} mount, not {FSTYPE}",
            target.display(),
            m.fstype
        )));
    }
    let entry = utab::find(&target);
    let mut flags = MntFlags::empty();
    if args.lazy {
        flags |= MntFlags::MNT_DETACH;
    }
    if args.force {
        flags |= MntFlags::MNT_FORCE;
    }
    umount2(&target, flags)
        .map_err(|e| CmdError::Other(format!("cannot unmount {}: {e}", target.display())))?;
    let Some(entry) = entry else {
        return Err(CmdError::Other(format!(
            "unmounted {}, but no daemon is recorded for it in /run/mount/utab: its final \
             commit cannot be waited for",
            target.display()
        )));
    };
    if args.lazy {
        // The mount goes when its last user lets go, and the daemon commits then.
        return Ok(());
    }
    let start = Instant::now();
    let mut said = false;
    while daemon_alive(entry.pid) {
        if !said && start.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "scoutfs: umount: waiting for the daemon of {} (pid {}) to commit",
                m.source.display(),
                entry.pid
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    if utab::find(&target).is_some_and(|e| e.pid == entry.pid) {
        // The daemon ended without taking its line out: no final commit.
        let _ = utab::remove(&target, Some(entry.pid));
        return Err(CmdError::Other(format!(
            "the daemon of {} ended without its final commit (killed, or the commit failed: \
             see the kernel log): what was written after its last commit is lost",
            target.display()
        )));
    }
    Ok(())
}

/// The mount that holds `file` (the last mounted on its device), if the mount table has
/// it.
pub fn mount_of(file: &std::fs::File) -> Result<Option<MountInfo>, CmdError> {
    let meta = file.metadata()?;
    let dev = (
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev()),
    );
    Ok(mountinfo()?.into_iter().rev().find(|m| m.dev == dev))
}

/// `scoutfs sync PATH`: commits the mount holding PATH.
pub fn sync(path: &Path) -> Result<(), CmdError> {
    let file = std::fs::File::open(path)
        .map_err(|e| CmdError::Other(format!("{}: {e}", path.display())))?;
    match mount_of(&file)? {
        Some(m) if m.fstype == FSTYPE => {}
        Some(m) => {
            return Err(CmdError::Other(format!(
                "{} is on a {} mount ({}), not {FSTYPE}",
                path.display(),
                m.fstype,
                m.target.display()
            )))
        }
        None => {
            return Err(CmdError::Other(format!(
                "{}: its mount is not in /proc/self/mountinfo",
                path.display()
            )))
        }
    }
    // The daemon commits the whole transaction for an fsync of anything on the mount.
    file.sync_all()
        .map_err(|e| CmdError::Other(format!("commit of {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_arguments_are_read_as_umount_gives_them() {
        let a = |s: &[&str]| helper_args(&s.iter().map(Into::into).collect::<Vec<_>>());
        let got = a(&["/mnt/x", "-l", "-t", "fuse.scoutfs"]).unwrap();
        assert_eq!(got.target, PathBuf::from("/mnt/x"));
        assert!(got.lazy && !got.force);
        let got = a(&["-fv", "/mnt/y"]).unwrap();
        assert!(got.force && !got.lazy);
        assert!(a(&["-N", "1", "/mnt"]).is_err());
        assert!(a(&["-x", "/mnt"]).is_err());
        assert!(a(&[]).is_err());
        assert!(a(&["/a", "/b"]).is_err());
    }

    #[test]
    fn mountinfo_lines_are_read_with_their_escapes() {
        let l = b"45 27 0:40 / /tmp/a\\040b rw,relatime - fuse.scoutfs /tmp/meta.img rw,user_id=0";
        let m = parse_mountinfo(l).unwrap();
        assert_eq!(m.dev, (0, 40));
        assert_eq!(m.target, PathBuf::from("/tmp/a b"));
        assert_eq!(m.fstype, "fuse.scoutfs");
        assert_eq!(m.source, PathBuf::from("/tmp/meta.img"));
        // Optional fields before the separator.
        let l = b"30 1 8:1 / / rw shared:1 master:2 - ext4 /dev/sda1 rw";
        assert_eq!(parse_mountinfo(l).unwrap().fstype, "ext4");
        assert!(parse_mountinfo(b"garbage").is_none());
    }
}
