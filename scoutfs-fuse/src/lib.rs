//! scoutfs-fuse: serves a mounted `scoutfs_core::fs::Fs` to the kernel through FUSE
//! (`fuser`, pure Rust, mounting with mount(2) as root).
//!
//! [`Adapter`] turns each FUSE request into one `Fs` call; [`mount`] mounts it and
//! [`Mounted::run`] serves requests on several threads until the mount goes away —
//! `umount`/`fusermount3 -u`, or SIGTERM/SIGINT, which unmount it (lazily, if it is busy)
//! — while a thread commits the open transaction every [`SYNC_INTERVAL`], as the original's
//! periodic sync does, and does some log merge work (`Fs::background_tick`). The caller
//! commits once more and closes the `Fs` after `run` returns (`Fs::unmount`).
//!
//! `scoutfs` commands reach the mount through ioctls on its files and directories, which
//! the adapter hands to [`control`].
//!
//! Changes the kernel did not make (another mount's, or an embedder's release and stage
//! through the `Fs`) are told to it with FUSE notifications ([`kcache`]), so it may keep
//! attributes and entries for long ([`TTL`]).
//!
//! Memory: the adapter keeps nothing per open file (no handle tables: a file handle is
//! the open's flags, and every request names its inode), so what the daemon holds beyond
//! the kernel's request buffers (one per thread, about 16 MiB each at most) is what `Fs`
//! holds, which its cache sizes bound, the `Fs`'s count of the kernel's references per
//! inode the kernel caches (FORGET gives them back), and the names the kernel may cache
//! ([`kcache::Entries`]: the positive ones as many as the kernel's dentries of inodes it
//! holds, the negative ones at most [`kcache::MAX_NEGATIVE`]).

mod adapter;
pub mod control;
pub mod creds;
pub mod kcache;
mod park;

pub use adapter::{request_capabilities, Adapter, TTL};

use fuser::{Config, MountOption, Session, SessionACL, SessionUnmounter};
use nix::mount::{umount2, MntFlags};
use nix::sys::signal::{SigSet, Signal};
use scoutfs_core::fs::Fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// How often the open transaction is committed while the mount is up (the original's
/// default sync interval).
pub const SYNC_INTERVAL: Duration = Duration::from_secs(10);

/// How a filesystem is served.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Threads reading and answering FUSE requests (each with its own /dev/fuse clone).
    pub threads: usize,
    /// How often the periodic sync commits.
    pub sync_interval: Duration,
    /// The source shown in /proc/mounts (the meta device).
    pub fsname: String,
    /// Mount read-only.
    pub read_only: bool,
    /// How long the kernel may keep attributes it was given ([`TTL`] by default: it is
    /// told when they change, module [`kcache`]).
    pub attr_timeout: Duration,
    /// How long the kernel may keep directory entries, negative ones too ([`TTL`]).
    pub entry_timeout: Duration,
    /// How long an invalidation of the kernel's caches waits for the kernel at most
    /// ([`kcache::NOTIFY_BOUND`]).
    pub notify_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        let cpus = thread::available_parallelism().map_or(2, usize::from);
        ServeOptions {
            // Requests block on the filesystem's locks and on commits: a few more threads
            // than cores keep the cores busy meanwhile.
            threads: (cpus * 2).clamp(2, 8),
            sync_interval: SYNC_INTERVAL,
            fsname: "scoutfs".into(),
            read_only: false,
            attr_timeout: TTL,
            entry_timeout: TTL,
            notify_timeout: kcache::NOTIFY_BOUND,
        }
    }
}

/// Makes the C allocator keep one heap for all threads. By default glibc gives each
/// thread that allocates at once an arena of its own and keeps what was freed in each:
/// with the filesystem's 64 KiB blocks allocated and freed by every request thread, a
/// mount whose live memory stayed within its `cache_size` of 32 MiB held 69 MiB resident,
/// 33 MiB with one arena. Call it first, before anything starts threads.
#[allow(unsafe_code)] // the one unsafe call of the workspace: a libc setter, no pointers
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The signals that unmount the filesystem.
fn termination_signals() -> SigSet {
    let mut s = SigSet::empty();
    s.add(Signal::SIGTERM);
    s.add(Signal::SIGINT);
    s.add(Signal::SIGHUP);
    s
}

/// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread and every thread it starts
/// afterwards, so that [`Mounted::run`] can take them with `sigwait` and unmount cleanly
/// instead of the process dying with its transaction open. Call it first, before anything
/// starts threads.
pub fn block_termination_signals() -> io::Result<()> {
    termination_signals()
        .thread_block()
        .map_err(io::Error::from)
}

/// A filesystem mounted and ready: the kernel has mounted it and completed the FUSE
/// handshake, so requests to the mount point are queued for [`Mounted::run`].
#[derive(Debug)]
pub struct Mounted {
    session: Session<Adapter>,
    fs: Arc<Fs>,
    opts: ServeOptions,
    mountpoint: PathBuf,
}

/// Mounts `fs` at `mountpoint`, with the session settings of [`session_config`]. `fs`
/// must count the kernel's references (`FsOptions::lookup_counts`): without them an inode
/// could be deleted while the kernel still names it.
pub fn mount(fs: Arc<Fs>, mountpoint: &Path, opts: &ServeOptions) -> io::Result<Mounted> {
    if !fs.counts_lookups() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a FUSE mount needs a filesystem mounted with lookup_counts",
        ));
    }
    let config = session_config(opts, "scoutfs");
    let adapter = Adapter::new(fs.clone(), opts)?;
    let kernel = adapter.kernel();
    let session = Session::new(adapter, mountpoint, &config)?;
    kernel.set_notifier(session.notifier());
    fs.set_kernel_cache(kernel);
    Ok(Mounted {
        session,
        fs,
        opts: opts.clone(),
        mountpoint: mountpoint.to_path_buf(),
    })
}

/// The FUSE session settings of a mount of filesystem subtype `subtype`: any user may use
/// the mount, and the kernel checks permissions against the attributes the filesystem
/// returns (`allow_other` and `default_permissions`), as for a kernel filesystem;
/// `opts.threads` threads serve requests, each reading its own clone of the `/dev/fuse`
/// descriptor. Public so that another filesystem can be served exactly as a scoutfs mount
/// is (the benchmarks' in-memory FUSE peer).
pub fn session_config(opts: &ServeOptions, subtype: &str) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(opts.fsname.clone()),
        // The kernel's own option, so that the mount's type is `fuse.SUBTYPE` (fuser
        // gives `Subtype` only to fusermount, and mounts with mount(2) as root): what
        // finds umount(8)'s helper `umount.fuse.scoutfs` (see `umount_helper`).
        MountOption::CUSTOM(format!("subtype={subtype}")),
        MountOption::DefaultPermissions,
        MountOption::Dev,
        MountOption::Suid,
        if opts.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    config
}

impl Mounted {
    /// Serves requests until the filesystem is unmounted (by `umount`, or by a
    /// termination signal if [`block_termination_signals`] was called). The periodic sync
    /// runs meanwhile; it is stopped when this returns. A failed periodic sync is reported
    /// on stderr and tried again at the next interval (the filesystem refuses changes
    /// once a commit has failed, so nothing is lost silently).
    pub fn run(mut self) -> io::Result<()> {
        let unmounter = self.session.unmount_callable();
        let mountpoint = self.mountpoint.clone();
        thread::Builder::new()
            .name("scoutfs-signals".into())
            .spawn(move || unmount_on_signal(unmounter, &mountpoint))?;

        let (stop, stopped) = mpsc::channel::<()>();
        let fs = self.fs.clone();
        let interval = self.opts.sync_interval;
        let syncer = thread::Builder::new()
            .name("scoutfs-sync".into())
            .spawn(move || {
                let mut stalled = false;
                loop {
                    match stopped.recv_timeout(interval) {
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            if let Err(e) = fs.background_tick() {
                                eprintln!("scoutfs: periodic sync failed: {e}");
                            }
                            stalled = report_merge_stall(&fs, stalled);
                        }
                        _ => return,
                    }
                }
            })?;

        let res = self.session.run();
        drop(stop);
        let _ = syncer.join();
        res
    }
}

/// Say when the log merge starts waiting for space, and when it goes on again (it needs
/// the space that frees give back; until then mounts may be refused space). Returns
/// whether it is stalled now.
fn report_merge_stall(fs: &Fs, was: bool) -> bool {
    // A server that cannot be asked leaves the report as it was.
    let Ok(stall) = fs.merge_stall() else {
        return was;
    };
    match stall {
        Some(s) if !was => {
            eprintln!(
                "scoutfs: the log merge is waiting for metadata space: {} blocks of headroom, \
                 one unit of {:?} needs {}",
                s.headroom, s.phase, s.need
            );
            true
        }
        Some(_) => true,
        None => {
            if was {
                eprintln!("scoutfs: the log merge goes on again");
            }
            false
        }
    }
}

/// Waits for a termination signal and unmounts; if the mount is busy, detaches it so that
/// it goes away (and the session ends) once its last user lets go.
fn unmount_on_signal(mut unmounter: SessionUnmounter, mountpoint: &Path) {
    let sigs = termination_signals();
    loop {
        match sigs.wait() {
            Ok(Signal::SIGHUP) => continue,
            Ok(_) => break,
            Err(_) => return,
        }
    }
    if let Err(e) = unmounter.unmount() {
        eprintln!("scoutfs: unmount on signal failed ({e}); detaching the mount lazily");
        if let Err(e) = umount2(mountpoint, MntFlags::MNT_DETACH) {
            eprintln!("scoutfs: detaching {} failed: {e}", mountpoint.display());
        }
    }
}
