//! The mount's line in libmount's table of userspace mount options (`/run/mount/utab`),
//! which makes `umount MOUNTPOINT` run the helper `umount.fuse.scoutfs`.
//!
//! umount(8) finds a FUSE mount's type with statfs, which says only `fuse`, and then
//! looks for `/sbin/umount.fuse`; it reads the mount table, where our mount's type is
//! `fuse.scoutfs` (the mount's `subtype`), only when utab has a line for the mount point.
//! So the daemon writes one (`SRC=META TARGET=MOUNTPOINT ROOT=/ OPTS=x-scoutfs-pid=PID`)
//! once it is mounted, and takes it out again only after its final commit succeeded: the
//! helper ([`crate::umount`]) unmounts, waits for the daemon to exit, and knows from the
//! line still being there that the final commit did not happen.
//!
//! Changes are made as libmount makes them: under an exclusive `flock` of
//! `/run/mount/utab.lock`, by writing a new file and renaming it over the table. Fields
//! are escaped as libmount escapes them (space, tab, newline and backslash as `\ooo`).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The folder of libmount's table.
const DIR: &str = "/run/mount";

/// The user option that carries the daemon's pid.
const PID_OPT: &str = "x-scoutfs-pid=";

/// One of our lines: the mount point and the daemon's pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The mount point (`TARGET=`).
    pub target: PathBuf,
    /// The daemon serving it.
    pub pid: u32,
}

/// Escapes a field as libmount does.
pub fn mangle(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &b in s {
        match b {
            b' ' | b'\t' | b'\n' | b'\\' => out.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            _ => out.push(b),
        }
    }
    out
}

/// Undoes [`mangle`] (the same escapes are in /proc/self/mountinfo).
pub fn unmangle(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if let Some(&[b'\\', a, b, c]) = s.get(i..i + 4) {
            let octal = |d: u8| (b'0'..=b'7').contains(&d).then(|| u32::from(d - b'0'));
            if let (Some(a), Some(b), Some(c)) = (octal(a), octal(b), octal(c)) {
                if let Ok(v) = u8::try_from(a * 64 + b * 8 + c) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn line_of(meta: &Path, e: &Entry) -> Vec<u8> {
    let mut l = b"SRC=".to_vec();
    l.extend(mangle(meta.as_os_str().as_bytes()));
    l.extend_from_slice(b" TARGET=");
    l.extend(mangle(e.target.as_os_str().as_bytes()));
    l.extend_from_slice(format!(" ROOT=/ OPTS={PID_OPT}{}", e.pid).as_bytes());
    l
}

/// Our entry in a utab line, if it is one.
fn parse_line(line: &[u8]) -> Option<Entry> {
    let mut target = None;
    let mut pid = None;
    for field in line.split(|&b| b == b' ') {
        if let Some(t) = field.strip_prefix(b"TARGET=") {
            target = Some(PathBuf::from(OsString::from_vec(unmangle(t))));
        } else if let Some(opts) = field.strip_prefix(b"OPTS=") {
            pid = opts
                .split(|&b| b == b',')
                .find_map(|o| o.strip_prefix(PID_OPT.as_bytes()))
                .and_then(|p| std::str::from_utf8(p).ok()?.parse().ok());
        }
    }
    Some(Entry {
        target: target?,
        pid: pid?,
    })
}

/// Runs `f` on the table's lines under libmount's lock and writes what it returns (if it
/// changed) in place of the table.
fn edit(f: impl FnOnce(Vec<Vec<u8>>) -> Vec<Vec<u8>>) -> io::Result<()> {
    fs::create_dir_all(DIR)?;
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(DIR).join("utab.lock"))?;
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| io::Error::from(e))?;
    let path = Path::new(DIR).join("utab");
    let old = match fs::read(&path) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let lines: Vec<Vec<u8>> = old
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    let new = f(lines.clone());
    if new == lines {
        return Ok(());
    }
    let tmp = Path::new(DIR).join(format!("utab.scoutfs.{}", std::process::id()));
    let mut file = File::create(&tmp)?;
    for l in &new {
        file.write_all(l)?;
        file.write_all(b"\n")?;
    }
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, &path)
}

/// Adds our line for a mount of `meta` (an earlier line of ours for the same mount point
/// goes: a mount point has one mount of ours at a time).
pub fn add(meta: &Path, e: &Entry) -> io::Result<()> {
    let line = line_of(meta, e);
    edit(|mut lines| {
        lines.retain(|l| parse_line(l).is_none_or(|o| o.target != e.target));
        lines.push(line);
        lines
    })
}

/// Takes out our line for mount point `target` if it names daemon `pid` (any, if `None`).
pub fn remove(target: &Path, pid: Option<u32>) -> io::Result<()> {
    edit(|mut lines| {
        lines.retain(|l| {
            parse_line(l).is_none_or(|o| o.target != target || pid.is_some_and(|p| p != o.pid))
        });
        lines
    })
}

/// Our line for mount point `target`, if there is one.
pub fn find(target: &Path) -> Option<Entry> {
    let s = fs::read(Path::new(DIR).join("utab")).ok()?;
    s.split(|&b| b == b'\n')
        .filter_map(parse_line)
        .find(|e| e.target == target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_escaped_as_libmount_does_and_read_back() {
        let weird = b"/a b\\c\td\ne\xc3\xa9";
        let m = mangle(weird);
        assert_eq!(m, b"/a\\040b\\134c\\011d\\012e\xc3\xa9");
        assert_eq!(unmangle(&m), weird);
        assert_eq!(unmangle(b"\\04"), b"\\04");
        assert_eq!(unmangle(b"\\777x"), b"\\777x");
        let e = Entry {
            target: PathBuf::from("/mnt/x y"),
            pid: 42,
        };
        let line = line_of(Path::new("/dev/meta"), &e);
        assert_eq!(
            line,
            b"SRC=/dev/meta TARGET=/mnt/x\\040y ROOT=/ OPTS=x-scoutfs-pid=42"
        );
        assert_eq!(parse_line(&line), Some(e));
        assert_eq!(
            parse_line(b"SRC=/dev/sdb1 TARGET=/media/x ROOT=/ OPTS=uhelper=udisks2"),
            None
        );
    }
}
