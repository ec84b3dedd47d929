//! What an agent command talks to: the daemon of the mount that holds a path (the control
//! channel of `scoutfs_fuse::control`, by ioctls on the opened path), or, for the
//! commands that read committed state, an unmounted volume's devices opened read-only in
//! this process.

use crate::error::{errno_text, CmdError};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use scoutfs_core::device::{BlockDevice, FileDevice};
use scoutfs_core::fs::{Fs, FsOptions, ROOT_INO};
use scoutfs_fuse::control::client::Call;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a request failed: its errno, and what the filesystem said beyond it (offline).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    pub errno: i32,
    pub detail: Option<String>,
}

impl Fail {
    /// `CONTEXT: MESSAGE (ERRNO)` as the command's line about the failure, and the
    /// failure as a [`CmdError`].
    pub fn error(&self, context: &str) -> CmdError {
        let mut line = format!("{context}: {}", errno_text(self.errno));
        if let Some(d) = &self.detail {
            line.push_str(&format!(" [{d}]"));
        }
        CmdError::Errno {
            context: Some(line),
            errno: self.errno,
        }
    }
}

impl Fail {
    /// The failure as the original's `stat` and `statfs` report it: their line alone.
    pub fn said(&self, context: &str) -> CmdError {
        match self.error(context) {
            CmdError::Errno {
                context: Some(context),
                errno,
            } => CmdError::Said { context, errno },
            other => other,
        }
    }
}

/// The path a command that acts on a whole mount uses: `-p PATH`, else
/// `$SCOUTFS_MOUNT_PATH`, else the working directory.
pub fn mount_path(path: Option<&Path>) -> Result<PathBuf, CmdError> {
    if let Some(p) = path {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("SCOUTFS_MOUNT_PATH") {
        return Ok(PathBuf::from(p));
    }
    std::env::current_dir().map_err(|e| CmdError::Errno {
        context: Some(format!("cannot find the working directory: {e}")),
        errno: e.raw_os_error().unwrap_or(libc_eio()),
    })
}

fn libc_eio() -> i32 {
    Errno::EIO as i32
}

/// An open file or directory of a scoutfs mount, through which its daemon is asked.
#[derive(Debug)]
pub struct Channel {
    file: File,
}

impl Channel {
    /// Opens `path` with `flags` (`O_RDONLY`, `O_WRONLY` or `O_RDWR`, as the original opens
    /// it for the command: the daemon judges the request by how it was opened), and
    /// checks that it is on a scoutfs mount.
    pub fn open(path: &Path, flags: OFlag) -> Result<Channel, CmdError> {
        let mut how = std::fs::OpenOptions::new();
        let acc = flags & OFlag::O_ACCMODE;
        how.read(acc != OFlag::O_WRONLY)
            .write(acc != OFlag::O_RDONLY)
            .custom_flags((flags & !OFlag::O_ACCMODE).bits());
        let file = how.open(path).map_err(|e| {
            let errno = e.raw_os_error().unwrap_or(libc_eio());
            CmdError::Errno {
                context: Some(format!(
                    "failed to open '{}': {}",
                    path.display(),
                    errno_text(errno)
                )),
                errno,
            }
        })?;
        let not_ours = |what: String| CmdError::Errno {
            context: Some(format!(
                "'{}' is not on a scoutfs mount ({what})",
                path.display()
            )),
            errno: Errno::ENOTTY as i32,
        };
        match crate::umount::mount_of(&file)? {
            Some(m) if m.fstype == crate::umount::FSTYPE => Ok(Channel { file }),
            Some(m) => Err(not_ours(format!(
                "it is on a {} mount at {}",
                m.fstype,
                m.target.display()
            ))),
            None => Err(not_ours("its mount is not in /proc/self/mountinfo".into())),
        }
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Makes request `c` of the daemon.
    pub fn call<C: Call>(&self, c: &C) -> Result<C::Out, Fail> {
        let mut arg = c.request();
        let result = ioctl(&self.file, C::CMD.code(), &mut arg).map_err(|e| Fail {
            errno: e as i32,
            detail: None,
        })?;
        c.answer(result, &arg).ok_or(Fail {
            // A daemon whose reply this layout does not allow.
            errno: Errno::EPROTO as i32,
            detail: None,
        })
    }
}

/// The ioctl request `code` with argument `arg`, which must be the size the code carries
/// (every [`Call`]'s request is: `Cmd::size`).
#[expect(
    unsafe_code,
    reason = "ioctl(2) has no safe wrapper: the kernel reads and writes the argument \
              through a raw pointer"
)]
fn ioctl(file: &File, code: u32, arg: &mut [u8]) -> Result<i32, Errno> {
    let size = scoutfs_fuse::control::wire::Cmd::from_code(code).map(|c| c.size());
    if size != Some(arg.len()) {
        return Err(Errno::EINVAL);
    }
    // SAFETY: `arg` is a live buffer we borrow exclusively for the call, and `code`
    // encodes its exact length as the argument size, which is all the kernel (for a FUSE
    // mount: a restricted ioctl) reads from it or writes into it; the descriptor is open
    // for the whole call.
    let r = unsafe { nix::libc::ioctl(file.as_raw_fd(), code as _, arg.as_mut_ptr()) };
    Errno::result(r)
}

/// An unmounted volume opened read-only, with its devices locked against a mount.
#[derive(Debug)]
pub struct Offline {
    fs: Fs,
    _locks: Vec<crate::mount::DeviceLock>,
}

fn open_device(path: &Path) -> Result<Arc<dyn BlockDevice>, CmdError> {
    FileDevice::open_read_only(path)
        .map(|d| Arc::new(d) as Arc<dyn BlockDevice>)
        .map_err(|err| CmdError::Device {
            path: path.into(),
            action: "open",
            err,
        })
}

impl Offline {
    /// Opens the volume on `meta` and `data` read-only: refused at once while a mount
    /// (or mkfs) holds the devices; while this holds them, no mount can start.
    pub fn open(meta: &Path, data: &Path) -> Result<Offline, CmdError> {
        let locks = crate::mount::lock_unmounted(meta, data)?;
        let (m, d) = (open_device(meta)?, open_device(data)?);
        let opts = FsOptions {
            read_only: true,
            ..FsOptions::default()
        };
        let fs = Fs::mount_single(m, d, opts).map_err(|e| {
            CmdError::Other(format!("cannot open the volume on {}: {e}", meta.display()))
        })?;
        Ok(Offline { fs, _locks: locks })
    }

    /// Makes request `c` of the volume, about inode `ino`.
    pub fn call<C: Call>(&self, c: &C, ino: u64) -> Result<C::Out, Fail> {
        c.direct(&self.fs, ino).map_err(|e| Fail {
            errno: e.errno(),
            // What an I/O error was (a damaged block, a device error) is worth saying;
            // the other errors say no more than their errno.
            detail: (e.errno() == Errno::EIO as i32).then(|| e.to_string()),
        })
    }
}

/// The mount's daemon or an unmounted volume.
#[derive(Debug)]
pub enum Target {
    Mounted(Channel),
    /// The volume, and the inode the command is about (the root for whole-volume ones).
    Offline(Box<Offline>, u64),
}

impl Target {
    /// A mounted path's daemon, or the volume on `devices` (then about the root inode).
    pub fn open(path: Option<&Path>, devices: &Devices) -> Result<Target, CmdError> {
        match devices.pair() {
            Some((m, d)) => Ok(Target::Offline(Box::new(Offline::open(m, d)?), ROOT_INO)),
            None => Ok(Target::Mounted(Channel::open(
                &mount_path(path)?,
                OFlag::O_RDONLY,
            )?)),
        }
    }

    /// Makes request `c`.
    pub fn call<C: Call>(&self, c: &C) -> Result<C::Out, Fail> {
        match self {
            Target::Mounted(ch) => ch.call(c),
            Target::Offline(o, ino) => o.call(c, *ino),
        }
    }
}

/// `--meta-device` and `--data-device`: run on an unmounted volume instead of a mount.
#[derive(clap::Args, Debug, Default, Clone)]
pub struct Devices {
    /// Read the unmounted volume on this metadata device or image file instead of asking
    /// a mount (with --data-device). Refused while the volume is mounted.
    #[arg(
        long = "meta-device",
        value_name = "META-DEVICE",
        requires = "data_device"
    )]
    pub meta_device: Option<PathBuf>,
    /// The unmounted volume's data device or image file (with --meta-device).
    #[arg(
        long = "data-device",
        value_name = "DATA-DEVICE",
        requires = "meta_device"
    )]
    pub data_device: Option<PathBuf>,
}

impl Devices {
    /// Both devices, if given.
    pub fn pair(&self) -> Option<(&Path, &Path)> {
        Some((self.meta_device.as_deref()?, self.data_device.as_deref()?))
    }
}
