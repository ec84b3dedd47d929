//! `scoutfs mount [-o OPTIONS] [--foreground] META-DEVICE DATA-DEVICE MOUNTPOINT`: a
//! single-node mount (the server and one client in this process, over the in-process
//! transport) served through FUSE; with `server_addr=`, or on a volume another daemon
//! serves, a mount among several (module `cluster`).
//!
//! Without `--foreground` the command starts itself again as the daemon (`--foreground
//! --notify-ready`, in its own process group, its output into a pipe) and returns once
//! the daemon says the mount is ready, or fails with the daemon's message and status.
//! The daemon then sends what it still has to say (a failed periodic sync, a failed final
//! commit) to the kernel log, where a kernel filesystem's messages go, or nowhere if it
//! cannot open /dev/kmsg.
//!
//! Before it reads anything the daemon takes an exclusive `flock` on the meta and the data
//! device and holds them until it exits, so a second mount of the same volume, or of a
//! copy of its metadata device beside the same data device, fails at once and touches
//! nothing (see [`lock_devices`]). `umount MOUNTPOINT`, `fusermount3 -u MOUNTPOINT`,
//! SIGTERM and SIGINT unmount; the daemon then commits, closes the volume and exits 0 (1
//! if the final commit failed). Its line in `/run/mount/utab` (module `utab`), written
//! once mounted and taken out after that commit, is what lets `umount` run `scoutfs
//! umount` as its helper and wait for it.

use crate::error::CmdError;
use nix::fcntl::{Flock, FlockArg};
use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::fs::{AtimeMode, Fs, FsOptions};
use scoutfs_fuse::ServeOptions;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// How long a clustered mount waits for its kernel to drop what it cached under a lock
/// it gives up (see `serve`).
const CLUSTER_NOTIFY_BOUND: std::time::Duration = std::time::Duration::from_millis(250);

/// The line the daemon writes when the mount is up.
const READY: &str = "scoutfs-mount-ready";

/// What `scoutfs mount` was asked to do.
#[derive(Debug)]
pub struct Args {
    pub options: Vec<String>,
    pub foreground: bool,
    pub notify_ready: bool,
    pub meta_device: PathBuf,
    pub data_device: PathBuf,
    pub mountpoint: PathBuf,
}

/// Mount options (scoutfs(5) where they apply to a single-node FUSE mount, plus ours).
///
/// Only `cache_size`, `ro`, `acl`/`noacl` and the access time options act today: the
/// filesystem layer has no knobs for the others yet, which are parsed and range-checked
/// so that a line written for the original is either taken or refused with a reason,
/// never silently misread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    /// `ro`: mount read-only: nothing is written to the devices, which are opened
    /// read-only (`rw`, the default, undoes it).
    pub read_only: bool,
    /// `data_prealloc_blocks=N` (default 2048): data blocks preallocated past a file's
    /// end by streaming writes.
    pub data_prealloc_blocks: u64,
    /// `data_prealloc_contig_only=0|1` (default 1): preallocate only for writes that
    /// extend the last extent.
    pub data_prealloc_contig_only: bool,
    /// `ino_alloc_per_lock=N` (1..=1024, default 1024): inode numbers allocated per group.
    pub ino_alloc_per_lock: u64,
    /// `orphan_scan_delay_ms=N` (100..=60000, default 10000).
    pub orphan_scan_delay_ms: u64,
    /// `log_merge_wait_timeout_ms=N` (100..=60000, default 500).
    pub log_merge_wait_timeout_ms: u64,
    /// `cache_size=SIZE` (ours; K/M/G suffixes; default 256M): the bound of the mount's
    /// metadata memory, its main memory (a quarter for the open transaction, a quarter
    /// for log merge work, half for the block cache).
    pub cache_bytes: u64,
    /// `noatime`, `relatime` (the default; `atime` too) or `strictatime`: when reads
    /// update access times. A read-only mount never does.
    pub atime: AtimeMode,
    /// `nodiratime` (`diratime` undoes it): reading a directory leaves its access time.
    pub dir_atime: bool,
    /// `acl` (the default, as the original's) or `noacl`: POSIX ACLs.
    pub acl: bool,
    /// `sync_interval_ms=N` (ours; 100..=60000, default 10000): how often the daemon
    /// commits the open transaction and does its background work (log merge, srch
    /// compaction), the original's 10 s sync timer.
    pub sync_interval_ms: u64,
    /// `srch_log_entries=N` (ours; at least 1, default 16384): the entries at which a
    /// mount's srch log file is rotated for compaction (the original's 1 MiB of log).
    pub srch_log_entries: u64,
    /// `attr_timeout_ms=N` (ours; 0..=86400000, default 3600000): how long the kernel
    /// may keep the attributes it was given. It is told of every change it did not make
    /// (`scoutfs_fuse::kcache`), so the default is long; 0 has it ask every time.
    pub attr_timeout_ms: u64,
    /// `entry_timeout_ms=N` (ours; 0..=86400000, default 3600000): how long the kernel
    /// may keep directory entries, negative ones too.
    pub entry_timeout_ms: u64,
    /// `server_addr=IP:PORT` (ours, until quorum slots name the servers): the mount
    /// that finds the volume free serves it to other mounts at this address (port 0: one
    /// the system picks); a mount that finds it served connects there instead of where
    /// the volume's server record says.
    pub server_addr: Option<std::net::SocketAddr>,
    /// `secret_file=PATH` (ours): the file of the shared secret every mount of the
    /// volume must hold (checked at greeting, both ways).
    pub secret_file: Option<PathBuf>,
    /// `lock_idle_count=N` (at least 1, default 10000, as the original's):
    /// idle cluster locks a mount keeps before giving the oldest back.
    pub lock_idle_count: u64,
}

impl Default for MountOptions {
    fn default() -> MountOptions {
        MountOptions {
            read_only: false,
            data_prealloc_blocks: 2048,
            data_prealloc_contig_only: true,
            ino_alloc_per_lock: 1024,
            orphan_scan_delay_ms: 10_000,
            log_merge_wait_timeout_ms: 500,
            cache_bytes: 256 << 20,
            atime: AtimeMode::Relative,
            dir_atime: true,
            acl: true,
            sync_interval_ms: 10_000,
            srch_log_entries: scoutfs_core::srch::SrchConfig::default().log_entries,
            attr_timeout_ms: TTL_MS,
            entry_timeout_ms: TTL_MS,
            server_addr: None,
            secret_file: None,
            lock_idle_count: 10_000,
        }
    }
}

/// The kernel's default timeouts, in the options' unit.
const TTL_MS: u64 = scoutfs_fuse::TTL.as_millis() as u64;

/// The longest timeout an option may give (a day).
const MAX_TTL_MS: u64 = 86_400_000;

fn number(name: &str, v: &str, min: u64, max: u64) -> Result<u64, String> {
    let n: u64 = v
        .parse()
        .map_err(|_| format!("mount option {name}: '{v}' is not a number"))?;
    if n < min || n > max {
        return Err(format!("mount option {name}: {n} is outside {min}..={max}"));
    }
    Ok(n)
}

/// Parses `-o` values (each a comma-separated list). Unknown options, options of a
/// clustered mount and malformed values are refused with a message naming them.
pub fn parse_options(lists: &[String], meta: &Path) -> Result<MountOptions, String> {
    let mut o = MountOptions::default();
    for opt in lists
        .iter()
        .flat_map(|l| l.split(','))
        .filter(|s| !s.is_empty())
    {
        let (name, val) = match opt.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (opt, None),
        };
        let val_of = |v: Option<&str>| {
            v.ok_or_else(|| format!("mount option {name} needs a value ({name}=...)"))
                .map(str::to_owned)
        };
        match (name, val) {
            ("ro", None) => o.read_only = true,
            ("rw", None) => o.read_only = false,
            ("noatime", None) => o.atime = AtimeMode::Never,
            ("relatime" | "atime", None) => o.atime = AtimeMode::Relative,
            ("strictatime", None) => o.atime = AtimeMode::Always,
            ("nodiratime", None) => o.dir_atime = false,
            ("diratime", None) => o.dir_atime = true,
            // Accepted for fstab compatibility; they change nothing here.
            ("defaults" | "nodev" | "nosuid" | "noexec", None) => {}
            ("acl", None) => o.acl = true,
            ("noacl", None) => o.acl = false,
            ("metadev_path", Some(v)) => {
                if !same_file(Path::new(v), meta) {
                    return Err(format!(
                        "mount option metadev_path={v} is not META-DEVICE {}",
                        meta.display()
                    ));
                }
            }
            ("quorum_slot_nr", _) => {
                return Err(
                    "mount option quorum_slot_nr: a single-node mount runs its own server and \
                     is not a quorum member"
                        .into(),
                )
            }
            ("data_prealloc_blocks", v) => {
                o.data_prealloc_blocks = number(name, &val_of(v)?, 0, u64::MAX)?
            }
            ("data_prealloc_contig_only", v) => {
                o.data_prealloc_contig_only = number(name, &val_of(v)?, 0, 1)? == 1
            }
            ("ino_alloc_per_lock", v) => o.ino_alloc_per_lock = number(name, &val_of(v)?, 1, 1024)?,
            ("orphan_scan_delay_ms", v) => {
                o.orphan_scan_delay_ms = number(name, &val_of(v)?, 100, 60_000)?
            }
            ("log_merge_wait_timeout_ms", v) => {
                o.log_merge_wait_timeout_ms = number(name, &val_of(v)?, 100, 60_000)?
            }
            ("server_addr", v) => {
                let v = val_of(v)?;
                o.server_addr = Some(
                    v.parse()
                        .map_err(|_| format!("mount option server_addr: '{v}' is not IP:PORT"))?,
                );
            }
            ("secret_file", v) => o.secret_file = Some(PathBuf::from(val_of(v)?)),
            ("lock_idle_count", v) => o.lock_idle_count = number(name, &val_of(v)?, 1, u64::MAX)?,
            // Cluster options of the original's quorum: valid values are accepted (an
            // fstab line may carry them) and have nothing to act on yet.
            ("quorum_heartbeat_timeout_ms", v) => {
                number(name, &val_of(v)?, 2_000, 60_000)?;
            }
            ("tcp_keepalive_timeout_ms", v) => {
                number(name, &val_of(v)?, 3_001, u64::MAX)?;
            }
            ("sync_interval_ms", v) => o.sync_interval_ms = number(name, &val_of(v)?, 100, 60_000)?,
            ("srch_log_entries", v) => o.srch_log_entries = number(name, &val_of(v)?, 1, u64::MAX)?,
            ("attr_timeout_ms", v) => o.attr_timeout_ms = number(name, &val_of(v)?, 0, MAX_TTL_MS)?,
            ("entry_timeout_ms", v) => {
                o.entry_timeout_ms = number(name, &val_of(v)?, 0, MAX_TTL_MS)?
            }
            ("cache_size", v) => {
                let v = val_of(v)?;
                o.cache_bytes = crate::size::parse_size(&v)
                    .map_err(|e| format!("mount option cache_size: {e}"))?;
                if o.cache_bytes < (16 << 20) {
                    return Err("mount option cache_size: at least 16M".into());
                }
            }
            (
                "ro" | "rw" | "defaults" | "noacl" | "acl" | "nodev" | "nosuid" | "noexec"
                | "noatime" | "relatime" | "atime" | "strictatime" | "nodiratime" | "diratime",
                Some(_),
            ) => return Err(format!("mount option {name} takes no value")),
            _ => {
                return Err(format!(
                    "unknown mount option '{opt}' (see scoutfs mount --help)"
                ))
            }
        }
    }
    Ok(o)
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

fn absolute(p: &Path, what: &str) -> Result<PathBuf, CmdError> {
    p.canonicalize()
        .map_err(|e| CmdError::Other(format!("{what} {}: {e}", p.display())))
}

/// `scoutfs mount`.
pub fn run(args: &Args) -> Result<(), CmdError> {
    let meta = absolute(&args.meta_device, "META-DEVICE")?;
    let data = absolute(&args.data_device, "DATA-DEVICE")?;
    let mnt = absolute(&args.mountpoint, "MOUNTPOINT")?;
    if !mnt.is_dir() {
        return Err(CmdError::Other(format!(
            "MOUNTPOINT {} is not a directory",
            mnt.display()
        )));
    }
    if same_file(&meta, &data) {
        return Err(CmdError::Other(
            "META-DEVICE and DATA-DEVICE are the same file".into(),
        ));
    }
    let opts = parse_options(&args.options, &meta).map_err(CmdError::Other)?;
    if args.foreground {
        serve(&meta, &data, &mnt, &opts, args.notify_ready)
    } else {
        daemonize(args, &meta, &data, &mnt)
    }
}

/// Starts the daemon and waits until it says the mount is ready or exits.
fn daemonize(args: &Args, meta: &Path, data: &Path, mnt: &Path) -> Result<(), CmdError> {
    let exe = std::env::current_exe()
        .map_err(|e| CmdError::Other(format!("cannot find the scoutfs program: {e}")))?;
    let (reader, writer) = std::io::pipe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount").arg("--foreground").arg("--notify-ready");
    for o in &args.options {
        cmd.arg("-o").arg(o);
    }
    cmd.arg(meta).arg(data).arg(mnt);
    // Its own process group: a ^C meant for the shell does not reach the daemon.
    cmd.process_group(0)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let mut child = cmd
        .spawn()
        .map_err(|e| CmdError::Other(format!("cannot start the mount daemon: {e}")))?;
    // Our copies of the pipe's write end went with `cmd`: EOF means the daemon is gone.
    drop(cmd);
    let mut stderr = std::io::stderr();
    for line in BufReader::new(reader).lines() {
        let line = line?;
        if line == READY {
            return Ok(());
        }
        // The daemon's own message; shown as it is (it already names the command).
        let _ = writeln!(stderr, "{line}");
    }
    let status = child.wait()?;
    Err(CmdError::Quiet(
        status.code().unwrap_or(1).clamp(1, 255) as u8
    ))
}

/// The files whose locks stand for the volume on meta device `meta`: the device itself
/// and, for a loop device, the file behind it, so that a mount through an image file and
/// one through a loop device over the same file see each other's locks.
fn lock_files(meta: &Path) -> Vec<PathBuf> {
    let mut files = vec![meta.to_path_buf()];
    if let Some(backing) = loop_backing_file(meta) {
        files.push(backing);
    }
    files
}

/// The file behind loop device `dev` (from sysfs), if it is one and the file is there.
fn loop_backing_file(dev: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(dev).ok()?;
    if !m.file_type().is_block_device() {
        return None;
    }
    let (major, minor) = (
        nix::sys::stat::major(m.rdev()),
        nix::sys::stat::minor(m.rdev()),
    );
    let name = std::fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/loop/backing_file"))
        .ok()?;
    // A backing file deleted since shows as "NAME (deleted)": no one can open it by
    // path any more, so there is nothing to lock but the loop device itself.
    let path = PathBuf::from(name.trim_end_matches('\n'));
    path.is_file().then_some(path)
}

/// Who takes a volume's devices exclusively, for the words of a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exclusive {
    /// `scoutfs mount`, for the life of the mount.
    Mount,
    /// `scoutfs mkfs`, while it formats.
    Mkfs,
}

/// A lock held on one of the files of [`lock_files`]: let go when dropped.
pub type DeviceLock = Flock<File>;

const META_ROLE: &str = "META-DEVICE";
const DATA_ROLE: &str = "DATA-DEVICE";

/// The files to lock for both devices, each with its device and the device's role.
fn volume_lock_files<'a>(meta: &'a Path, data: &'a Path) -> Vec<(PathBuf, &'a Path, &'static str)> {
    [(meta, META_ROLE), (data, DATA_ROLE)]
        .into_iter()
        .flat_map(|(dev, role)| lock_files(dev).into_iter().map(move |f| (f, dev, role)))
        .collect()
}

/// Exclusive locks on both devices of a volume (the files of [`lock_files`] of each),
/// taken without waiting. A mount holds them for its life and mkfs while it formats, so
/// no second mount -- of the same volume, or of a copy of its metadata device beside the
/// same data device -- and no mkfs (`-f` or not) writes a device a mount uses. A block
/// device is opened with `O_EXCL` besides, which the kernel refuses while it has the
/// device mounted, and which keeps a kernel mount off it while ours lasts.
pub fn lock_devices(meta: &Path, data: &Path, by: Exclusive) -> Result<Vec<DeviceLock>, CmdError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let files = volume_lock_files(meta, data);
    // A loop device over the other device's image: the same file twice, which our own
    // second lock would find taken.
    for (i, (a, a_dev, a_role)) in files.iter().enumerate() {
        if let Some((_, b_dev, b_role)) = files[i + 1..].iter().find(|(b, ..)| same_file(a, b)) {
            return Err(CmdError::Other(format!(
                "{a_role} {} and {b_role} {} are the same file ({})",
                a_dev.display(),
                b_dev.display(),
                a.display()
            )));
        }
    }
    let mut locks = Vec::new();
    for (path, dev, role) in &files {
        let mut how = OpenOptions::new();
        how.read(true);
        if std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device()) {
            how.custom_flags(nix::libc::O_EXCL);
        }
        let f = how.open(path).map_err(|e| {
            if e.raw_os_error() == Some(nix::libc::EBUSY) {
                refusal(
                    by,
                    meta,
                    dev,
                    role,
                    path,
                    "the kernel (it is mounted, or a program holds it exclusively)",
                )
            } else {
                CmdError::Other(format!("cannot open {}: {e}", path.display()))
            }
        })?;
        let lock = Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            if e == nix::errno::Errno::EWOULDBLOCK {
                refusal(by, meta, dev, role, path, &lock_holder(path).text)
            } else {
                CmdError::Other(format!("cannot lock {}: {e}", path.display()))
            }
        })?;
        locks.push(lock);
    }
    Ok(locks)
}

/// " (through FILE, the file behind it)" when the lock found taken is not the device's own.
fn through(dev: &Path, path: &Path) -> String {
    if path == dev {
        String::new()
    } else {
        format!(" (through {}, the file behind it)", path.display())
    }
}

/// Why [`lock_devices`] refuses: `path` (a file of `dev`, in `role`) is held by `holder`.
fn refusal(
    by: Exclusive,
    meta: &Path,
    dev: &Path,
    role: &str,
    path: &Path,
    holder: &str,
) -> CmdError {
    let through = through(dev, path);
    let dev = dev.display();
    CmdError::Other(match (by, role) {
        (Exclusive::Mount, META_ROLE) => format!(
            "{dev} is already mounted{through}: held by {holder} (an unmount may still be \
             committing)"
        ),
        (Exclusive::Mount, _) => format!(
            "{role} {dev} is already in use{through}: held by {holder}; no two mounts may \
             share a data device (is {} a copy of a mounted volume's metadata device?)",
            meta.display()
        ),
        (Exclusive::Mkfs, _) => format!(
            "{dev} is in use{through}: held by {holder}; refusing to format it (unmount it \
             first; -f does not override this)"
        ),
    })
}

/// Who holds a lock, as a message names it.
struct Holder {
    /// "the scoutfs mount of META on MNT (pid N)", "pid N (COMMAND)" or "another process".
    text: String,
    /// The meta device of the scoutfs mount that holds it, if that is what holds it.
    mount_meta: Option<PathBuf>,
}

/// The process holding a `flock` on `path` (from /proc/locks) and what it is.
fn lock_holder(path: &Path) -> Holder {
    let pid = lock_holder_pid(path);
    let args: Vec<String> = pid
        .and_then(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).ok())
        .map(|c| {
            c.split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default();
    let Some(pid) = pid else {
        return Holder {
            text: "another process".into(),
            mount_meta: None,
        };
    };
    // The daemon runs `scoutfs mount --foreground ... META DATA MOUNTPOINT`.
    if args.get(1).map(String::as_str) == Some("mount")
        && args.iter().any(|a| a == "--foreground")
        && args.len() >= 5
    {
        let (m, mnt) = (&args[args.len() - 3], &args[args.len() - 1]);
        return Holder {
            text: format!("the scoutfs mount of {m} on {mnt} (pid {pid})"),
            mount_meta: Some(PathBuf::from(m)),
        };
    }
    Holder {
        text: if args.is_empty() {
            format!("pid {pid}")
        } else {
            format!("pid {pid} ({})", args.join(" "))
        },
        mount_meta: None,
    }
}

/// The pid /proc/locks gives for a `flock` on `path`'s inode.
fn lock_holder_pid(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    let (major, minor) = (
        nix::sys::stat::major(m.dev()),
        nix::sys::stat::minor(m.dev()),
    );
    let id = format!("{major:02x}:{minor:02x}:{}", m.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // "N: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INO 0 EOF" (waiters have "->" after N:).
    locks.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&id.as_str()))
            .then(|| f.get(4)?.parse().ok())
            .flatten()
            // 0 or less: a holder outside this pid namespace.
            .filter(|&pid| pid > 0)
    })
}

/// How long `check` waits for a mount of its volume to finish unmounting: `umount`
/// returns before the daemon's final commit is done.
const AT_REST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long `check`, once it holds the meta device, waits for the data device: a mount
/// of this volume that just exited lets go of both at once, so a data device still held
/// after this is another volume's.
const DATA_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Shared locks on both devices (the files of [`lock_files`] of each), which a mount and
/// mkfs hold exclusively: held by commands that need the volume at rest (`check`). Waits
/// up to [`AT_REST_WAIT`] for a mount that is going away, then fails saying the volume is
/// mounted; a data device held by a mount of another metadata device (two volumes
/// claiming it) is named as such. Files that cannot be opened are skipped (the command
/// then says why when it opens the device itself).
pub fn lock_at_rest(meta: &Path, data: &Path) -> Result<Vec<DeviceLock>, CmdError> {
    lock_shared(meta, data, AT_REST_WAIT, DATA_GRACE)
}

/// [`lock_at_rest`] without waiting: for commands that read the committed state of an
/// unmounted volume and are refused at once while a mount holds it.
pub fn lock_unmounted(meta: &Path, data: &Path) -> Result<Vec<DeviceLock>, CmdError> {
    use std::time::Duration;
    lock_shared(meta, data, Duration::ZERO, Duration::ZERO)
}

/// Shared locks on both devices, waiting up to `meta_wait` for the meta device and
/// `data_wait` for the data device (see [`lock_at_rest`]).
fn lock_shared(
    meta: &Path,
    data: &Path,
    meta_wait: std::time::Duration,
    data_wait: std::time::Duration,
) -> Result<Vec<DeviceLock>, CmdError> {
    let mut locks = Vec::new();
    for (path, dev, role) in volume_lock_files(meta, data) {
        let start = std::time::Instant::now();
        let wait = if role == META_ROLE {
            meta_wait
        } else {
            data_wait
        };
        loop {
            let Ok(f) = File::open(&path) else {
                break;
            };
            match Flock::lock(f, FlockArg::LockSharedNonblock) {
                Ok(lock) => {
                    locks.push(lock);
                    break;
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) if start.elapsed() < wait => {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(busy_at_rest(meta, dev, role, &path))
                }
                // Locks not supported there (some network file systems): go on without.
                Err(_) => break,
            }
        }
    }
    Ok(locks)
}

/// Why [`lock_at_rest`] gives up on `path` (a file of `dev`, in `role`).
fn busy_at_rest(meta: &Path, dev: &Path, role: &str, path: &Path) -> CmdError {
    let holder = lock_holder(path);
    let through = through(dev, path);
    CmdError::Other(match holder.mount_meta {
        _ if role == META_ROLE => format!(
            "{} is mounted{through}: held by {}; unmount it first",
            dev.display(),
            holder.text
        ),
        Some(other) if !same_file(&other, meta) => format!(
            "two volumes claim {role} {}{through}: {} uses it, and {} names it too (a copy \
             of that metadata device?)",
            dev.display(),
            holder.text,
            meta.display()
        ),
        _ => format!(
            "{role} {} is in use{through}: held by {}; check the volume once it is let go",
            dev.display(),
            holder.text
        ),
    })
}

/// Opens a device, read-only for a read-only mount (so a read-only device or image file
/// can be mounted).
fn open_device(path: &Path, read_only: bool) -> Result<Arc<dyn BlockDevice>, CmdError> {
    let dev = if read_only {
        FileDevice::open_read_only(path)
    } else {
        FileDevice::open(path)
    };
    dev.map(|d| Arc::new(d) as Arc<dyn BlockDevice>)
        .map_err(|err| CmdError::Device {
            path: path.into(),
            action: "open",
            err,
        })
}

/// The daemon: mounts, says so, serves until unmounted, commits and closes.
fn serve(
    meta: &Path,
    data: &Path,
    mnt: &Path,
    opts: &MountOptions,
    notify_ready: bool,
) -> Result<(), CmdError> {
    // Before any thread exists, so every thread inherits the mask and the allocator
    // keeps one arena.
    scoutfs_fuse::one_malloc_arena();
    scoutfs_fuse::block_termination_signals()?;
    // The first mount takes the devices (one server per volume); a later read-write
    // one joins the server that has them (module `cluster`).
    let locks = match lock_devices(meta, data, Exclusive::Mount) {
        Err(e) if opts.read_only => return Err(e),
        l => l,
    };
    let fs_opts = fs_options(opts);
    let (meta_dev, data_dev) = (
        open_device(meta, opts.read_only)?,
        open_device(data, opts.read_only)?,
    );
    // A super slot that does not verify: the mount goes on with the other, and says so.
    if let Ok((sb, damaged)) = scoutfs_core::volume::read_volume_super_slots(&*meta_dev, &*data_dev)
    {
        for d in damaged {
            eprintln!(
                "scoutfs mount: warning: {d}; using the other slot (commit {}), which may be \
                 the older one",
                sb.seq.get()
            );
        }
    }
    let mut serving = None;
    let (_locks, fs) = match locks {
        Ok(l) if opts.server_addr.is_some() && !opts.read_only => {
            let (fs, s) = crate::cluster::serve_and_mount(meta_dev, data_dev, opts, fs_opts)?;
            serving = Some(s);
            (Some(l), fs)
        }
        Ok(l) => (
            Some(l),
            Fs::mount_single(meta_dev, data_dev, fs_opts)
                .map_err(|e| CmdError::Other(format!("cannot mount {}: {e}", meta.display())))?,
        ),
        Err(e) => match crate::cluster::join(meta_dev, data_dev, opts, fs_opts)? {
            Some(fs) => (None, fs),
            // Taken by a mount that serves no one (a single-node mount) or by mkfs.
            None => return Err(e),
        },
    };
    let clustered = serving.is_some() || _locks.is_none();
    let fs = Arc::new(fs);
    let serve_opts = ServeOptions {
        fsname: meta.display().to_string(),
        read_only: opts.read_only,
        sync_interval: std::time::Duration::from_millis(opts.sync_interval_ms),
        attr_timeout: std::time::Duration::from_millis(opts.attr_timeout_ms),
        entry_timeout: std::time::Duration::from_millis(opts.entry_timeout_ms),
        // Among mounts, a kernel request waiting in the daemon for a lock this mount is
        // giving up holds the kernel locks its invalidation needs: waiting the default
        // bound would stall the handoff (see `scoutfs_fuse::kcache`). The request itself
        // reads afresh once the lock comes back.
        notify_timeout: if clustered {
            CLUSTER_NOTIFY_BOUND
        } else {
            scoutfs_fuse::kcache::NOTIFY_BOUND
        },
        ..ServeOptions::default()
    };
    let mounted = match scoutfs_fuse::mount(fs.clone(), mnt, &serve_opts) {
        Ok(m) => m,
        Err(e) => {
            let msg = format!("cannot mount on {}: {e}", mnt.display());
            close(fs);
            return Err(CmdError::Other(msg));
        }
    };
    // The line that makes `umount MOUNTPOINT` run `umount.fuse.scoutfs`, which waits for
    // the final commit below; taken out once that commit is made (see `utab`).
    let entry = crate::utab::Entry {
        target: mnt.to_path_buf(),
        pid: std::process::id(),
    };
    if let Err(e) = crate::utab::add(meta, &entry) {
        eprintln!(
            "scoutfs: mount: cannot record the mount in /run/mount/utab ({e}): umount will \
             not wait for the final commit (scoutfs umount cannot either)"
        );
    }
    if notify_ready {
        println!("{READY}");
        let _ = std::io::stdout().flush();
        to_kernel_log();
    }
    let served = mounted.run();
    let closed = close(fs);
    if closed {
        let _ = crate::utab::remove(mnt, Some(entry.pid));
    }
    if let Some(s) = serving {
        s.linger();
    }
    served.map_err(|e| CmdError::Other(format!("serving {}: {e}", mnt.display())))?;
    if closed {
        Ok(())
    } else {
        Err(CmdError::Quiet(1))
    }
}

/// Commits and closes the filesystem once nothing else holds it; false (after saying why)
/// if that failed.
fn close(fs: Arc<Fs>) -> bool {
    let res = match Arc::try_unwrap(fs) {
        Ok(fs) => fs.unmount().map_err(|e| e.to_string()),
        // A request thread still holds it: commit what is there at least.
        Err(fs) => fs
            .sync()
            .map_err(|e| e.to_string())
            .and(Err("the filesystem was still in use at unmount".to_string())),
    };
    match res {
        Ok(()) => true,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "scoutfs: mount: final commit: {e}");
            false
        }
    }
}

/// Points stdout and stderr at the kernel log (or nowhere): the command that started the
/// daemon has returned, and whoever reads its output must not wait for the daemon.
fn to_kernel_log() {
    let target = OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .or_else(|_| OpenOptions::new().write(true).open("/dev/null"));
    if let Ok(f) = target {
        let _ = nix::unistd::dup2_stdout(&f);
        let _ = nix::unistd::dup2_stderr(&f);
    }
}

fn fs_options(o: &MountOptions) -> FsOptions {
    FsOptions {
        cache_bytes: usize::try_from(o.cache_bytes).unwrap_or(usize::MAX),
        atime: if o.read_only {
            AtimeMode::Never
        } else {
            o.atime
        },
        dir_atime: o.dir_atime,
        acl: o.acl,
        read_only: o.read_only,
        // The kernel's lookup counts (the adapter answers FORGET).
        lookup_counts: true,
        lock_idle_count: usize::try_from(o.lock_idle_count).unwrap_or(usize::MAX),
        srch: scoutfs_core::srch::SrchConfig {
            log_entries: o.srch_log_entries,
            ..Default::default()
        },
        ..FsOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<MountOptions, String> {
        parse_options(&[s.to_string()], Path::new("/nonexistent-meta"))
    }

    #[test]
    fn options_parse_with_defaults_and_ranges() {
        assert_eq!(parse("").unwrap(), MountOptions::default());
        let o =
            parse("ro,ino_alloc_per_lock=16,cache_size=64M,data_prealloc_contig_only=0").unwrap();
        assert!(o.read_only);
        assert_eq!(o.ino_alloc_per_lock, 16);
        assert_eq!(o.cache_bytes, 64 << 20);
        assert!(!o.data_prealloc_contig_only);
        assert!(parse("ro,rw").map(|o| !o.read_only).unwrap());
        let o = parse("noatime,nodiratime").unwrap();
        assert_eq!((o.atime, o.dir_atime), (AtimeMode::Never, false));
        assert_eq!(fs_options(&o).atime, AtimeMode::Never);
        let o = parse("strictatime,diratime").unwrap();
        assert_eq!((o.atime, o.dir_atime), (AtimeMode::Always, true));
        assert_eq!(parse("noatime,atime").unwrap().atime, AtimeMode::Relative);
        // A read-only mount changes nothing, access times included.
        let o = parse("ro,strictatime").unwrap();
        assert_eq!(fs_options(&o).atime, AtimeMode::Never);
        assert_eq!(fs_options(&parse("").unwrap()).atime, AtimeMode::Relative);
        assert!(parse("").unwrap().acl && fs_options(&parse("acl").unwrap()).acl);
        assert!(!fs_options(&parse("acl,noacl").unwrap()).acl);
        let o = parse("attr_timeout_ms=0,entry_timeout_ms=1500").unwrap();
        assert_eq!((o.attr_timeout_ms, o.entry_timeout_ms), (0, 1500));
        assert_eq!(parse("").unwrap().attr_timeout_ms, 3_600_000);
    }

    #[test]
    fn bad_options_are_refused_by_name() {
        for (opt, says) in [
            ("bogus", "unknown mount option 'bogus'"),
            ("ino_alloc_per_lock=0", "outside 1..=1024"),
            ("ino_alloc_per_lock=x", "not a number"),
            ("orphan_scan_delay_ms", "needs a value"),
            ("ro=1", "takes no value"),
            ("noatime=1", "takes no value"),
            ("quorum_slot_nr=0", "not a quorum member"),
            ("acl=1", "takes no value"),
            ("metadev_path=/elsewhere", "is not META-DEVICE"),
            ("cache_size=1M", "at least 16M"),
            ("attr_timeout_ms=86400001", "outside 0..=86400000"),
            ("entry_timeout_ms", "needs a value"),
        ] {
            let e = parse(opt).unwrap_err();
            assert!(e.contains(says), "{opt}: {e}");
        }
    }
}
