//! The agent subcommands: their arguments (the original's flags), their checks (its
//! `argp_error` messages), and their loops over the batches the filesystem returns.

use super::format::*;
use super::output::Output;
use super::parse::*;
use super::target::{Channel, Devices, Fail, Offline, Target};
use crate::error::{errno_text, CmdError};
use clap::{Args, Subcommand};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use scoutfs_fuse::control::client::*;
use scoutfs_fuse::control::wire::{STAGE_CHUNK, STAGE_GATHER_MAX};
use scoutfs_fuse::control::{IndexPos, IndxEntry, SeqIndex, SetAttrMore};
use serde::Serialize;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The agent subcommands.
#[derive(Subcommand, Debug)]
pub enum AgentCmd {
    /// Show ScoutFS extra inode information (of FILE; with --meta-device, of inode FILE
    /// of the unmounted volume).
    Stat(StatArgs),
    /// Show ScoutFS file system information.
    Statfs(StatfsArgs),
    /// Print range of indexed inodes: <meta_seq|data_seq> FIRST-ENTRY LAST-ENTRY, each
    /// MAJOR[.MINOR[.INO]] (-1: the largest).
    WalkInodes(WalkArgs),
    /// Mark file region offline and free extents.
    Release(ReleaseArgs),
    /// Write archive file contents to an offline file.
    Stage(StageArgs),
    /// Set attributes on newly-created zero-length file.
    Setattr(SetattrArgs),
    /// Print operations waiting for data blocks.
    DataWaiting(WaitingArgs),
    /// Return error from matching waiters.
    DataWaitErr(WaitErrArgs),
    /// Print fiemap extent mapping.
    GetFiemap(FiemapArgs),
    /// Print inode numbers of inodes which may have given xattr.
    SearchXattrs(SearchArgs),
    /// Print global value totals of .totl. xattrs.
    ReadXattrTotals(TotalsArgs),
    /// Search and print inode numbers indexed by their .indx. xattrs.
    ReadXattrIndex(IndexArgs),
    /// Print the names of hidden xattrs on a file.
    ListHiddenXattrs(HiddenArgs),
}

/// `--json`.
#[derive(Args, Debug, Default)]
pub struct JsonArg {
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

/// How a command on a whole mount finds it (`-p|--path`: a file or directory of the
/// mount; default `$SCOUTFS_MOUNT_PATH`, then the working directory) and answers.
#[derive(Args, Debug, Default)]
pub struct MountOpts {
    /// Path to ScoutFS filesystem.
    #[arg(short = 'p', long = "path", value_name = "PATH")]
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub out: JsonArg,
}

impl MountOpts {
    /// The daemon of the mount.
    fn target(&self) -> Result<Target, CmdError> {
        Target::open(self.path.as_deref(), &Devices::default())
    }
}

/// [`MountOpts`], or an unmounted volume's devices.
#[derive(Args, Debug, Default)]
pub struct VolumeOpts {
    #[command(flatten)]
    pub mount: MountOpts,
    #[command(flatten)]
    pub devices: Devices,
}

impl VolumeOpts {
    /// The daemon of the mount, or the volume on the devices.
    fn target(&self) -> Result<Target, CmdError> {
        if self.devices.pair().is_some() && self.mount.path.is_some() {
            return Err(usage(
                "-p names a mount; --meta-device and --data-device an unmounted volume: not both",
            ));
        }
        Target::open(self.mount.path.as_deref(), &self.devices)
    }
}

#[derive(Args, Debug)]
pub struct StatArgs {
    /// The file (with --meta-device: the inode number).
    #[arg(value_name = "FILE")]
    pub file: Option<OsString>,
    /// Specify single field to print.
    #[arg(short = 's', long = "single-field", value_name = "FIELD-NAME")]
    pub single_field: Option<String>,
    #[command(flatten)]
    pub out: JsonArg,
    #[command(flatten)]
    pub devices: Devices,
}

#[derive(Args, Debug)]
pub struct StatfsArgs {
    #[command(flatten)]
    pub opts: MountOpts,
    /// Specify single field to print.
    #[arg(short = 's', long = "single-field", value_name = "FIELD-NAME")]
    pub single_field: Option<String>,
}

#[derive(Args, Debug)]
pub struct WalkArgs {
    /// meta_seq or data_seq.
    #[arg(value_name = "INDEX")]
    pub index: Option<String>,
    /// The first position, MAJOR[.MINOR[.INO]].
    #[arg(value_name = "FIRST-ENTRY", allow_hyphen_values = true)]
    pub first: Option<String>,
    /// The last position, MAJOR[.MINOR[.INO]] (-1: the largest).
    #[arg(value_name = "LAST-ENTRY", allow_hyphen_values = true)]
    pub last: Option<String>,
    #[command(flatten)]
    pub opts: VolumeOpts,
}

/// `-V`, `-o`, `-l` of release and stage.
#[derive(Args, Debug)]
pub struct RangeArgs {
    /// Data version of the file [Required].
    #[arg(short = 'V', long = "data-version", value_name = "VERSION", value_parser = parse_u64)]
    pub data_version: Option<u64>,
    /// Offset (bytes or KMGTP units) in file (default: 0).
    #[arg(short = 'o', long = "offset", value_name = "OFFSET", value_parser = parse_human)]
    pub offset: Option<u64>,
    /// Length of range (bytes or KMGTP units) (default: the size of the file, or of
    /// ARCHIVE-FILE for stage).
    #[arg(short = 'l', long = "length", value_name = "LENGTH", value_parser = parse_human)]
    pub length: Option<u64>,
}

#[derive(Args, Debug)]
pub struct ReleaseArgs {
    /// The file.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub range: RangeArgs,
    #[command(flatten)]
    pub out: JsonArg,
}

#[derive(Args, Debug)]
pub struct StageArgs {
    /// The archive file whose contents (from its start) go to the range.
    #[arg(value_name = "ARCHIVE-FILE")]
    pub archive: Option<PathBuf>,
    /// The offline file to stage.
    #[arg(value_name = "STAGE-FILE")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub range: RangeArgs,
    #[command(flatten)]
    pub out: JsonArg,
}

#[derive(Args, Debug)]
pub struct SetattrArgs {
    /// The file.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Set change time using "<seconds-since-epoch>.<nanoseconds>" format.
    #[arg(short = 't', long = "ctime", value_name = "TIMESPEC", value_parser = parse_timespec)]
    pub ctime: Option<scoutfs_core::fs::Timespec>,
    /// Set creation time using "<seconds-since-epoch>.<nanoseconds>" format.
    #[arg(short = 'r', long = "crtime", value_name = "TIMESPEC", value_parser = parse_timespec)]
    pub crtime: Option<scoutfs_core::fs::Timespec>,
    /// Set data version.
    #[arg(short = 'V', long = "data-version", value_name = "VERSION", value_parser = parse_u64)]
    pub data_version: Option<u64>,
    /// Set file size (bytes or KMGTP units). Requires --data-version.
    #[arg(short = 's', long = "size", value_name = "SIZE", value_parser = parse_human)]
    pub size: Option<u64>,
    /// Set file contents as offline, not sparse. Requires --size.
    #[arg(short = 'o', long = "offline")]
    pub offline: bool,
    #[command(flatten)]
    pub out: JsonArg,
}

#[derive(Args, Debug)]
pub struct WaitingArgs {
    #[command(flatten)]
    pub opts: MountOpts,
    /// Inode number [Required]: list what waits after (INODE-NUM, BLKNO-NUM).
    #[arg(short = 'I', long = "inode", value_name = "INODE-NUM", value_parser = parse_u64)]
    pub inode: Option<u64>,
    /// Block number [Required].
    #[arg(short = 'B', long = "block", value_name = "BLKNO-NUM", value_parser = parse_u64)]
    pub block: Option<u64>,
}

#[derive(Args, Debug)]
pub struct WaitErrArgs {
    #[command(flatten)]
    pub opts: MountOpts,
    /// Inode number [Required].
    #[arg(short = 'I', long = "inode", value_name = "INODE-NUM", value_parser = parse_u64)]
    pub inode: Option<u64>,
    /// Version [Required] (not used: any version matches, as in the original since 1.26).
    #[arg(short = 'V', long = "version", value_name = "VER-NUM", value_parser = parse_u64)]
    pub version: Option<u64>,
    /// Offset (bytes or KMGTP units) [Required].
    #[arg(short = 'F', long = "offset", value_name = "OFF-NUM", value_parser = parse_human)]
    pub offset: Option<u64>,
    /// Count [Required].
    #[arg(short = 'C', long = "count", value_name = "COUNT", value_parser = parse_u64)]
    pub count: Option<u64>,
    /// Operation: "read", "write", "change_size" [Required].
    #[arg(short = 'O', long = "op", value_name = "OP")]
    pub op: Option<String>,
    /// Error [Required]: a negative errno, -4095..=-1.
    #[arg(short = 'E', long = "err", value_name = "ERR", value_parser = parse_s64,
          allow_hyphen_values = true)]
    pub err: Option<i64>,
}

#[derive(Args, Debug)]
pub struct FiemapArgs {
    /// The file.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Output physical offsets only.
    #[arg(short = 'P', long = "physical")]
    pub physical: bool,
    /// Output logical offsets only.
    #[arg(short = 'L', long = "logical")]
    pub logical: bool,
    /// Output byte values instead of blocks.
    #[arg(short = 'b', long = "byte")]
    pub byte: bool,
    #[command(flatten)]
    pub out: JsonArg,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// The xattr name (with the scoutfs.srch. tag).
    #[arg(value_name = "XATTR-NAME")]
    pub name: Option<OsString>,
    #[command(flatten)]
    pub opts: VolumeOpts,
}

#[derive(Args, Debug)]
pub struct TotalsArgs {
    #[command(flatten)]
    pub opts: VolumeOpts,
}

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// The first position, MAJOR.MINOR.INO (default 0.0.0).
    #[arg(value_name = "FIRST-ENTRY", allow_hyphen_values = true)]
    pub first: Option<String>,
    /// The last position, MAJOR.MINOR.INO (default the largest).
    #[arg(value_name = "LAST-ENTRY", allow_hyphen_values = true)]
    pub last: Option<String>,
    #[command(flatten)]
    pub opts: VolumeOpts,
}

#[derive(Args, Debug)]
pub struct HiddenArgs {
    /// The file.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub out: JsonArg,
}

/// Runs an agent subcommand; its name (for the error lines) and its result.
pub fn run(cmd: AgentCmd, out: &mut dyn Write) -> (&'static str, Result<(), CmdError>) {
    let (name, json) = match &cmd {
        AgentCmd::Stat(a) => ("stat", a.out.json),
        AgentCmd::Statfs(a) => ("statfs", a.opts.out.json),
        AgentCmd::WalkInodes(a) => ("walk-inodes", a.opts.mount.out.json),
        AgentCmd::Release(a) => ("release", a.out.json),
        AgentCmd::Stage(a) => ("stage", a.out.json),
        AgentCmd::Setattr(a) => ("setattr", a.out.json),
        AgentCmd::DataWaiting(a) => ("data-waiting", a.opts.out.json),
        AgentCmd::DataWaitErr(a) => ("data-wait-err", a.opts.out.json),
        AgentCmd::GetFiemap(a) => ("get-fiemap", a.out.json),
        AgentCmd::SearchXattrs(a) => ("search-xattrs", a.opts.mount.out.json),
        AgentCmd::ReadXattrTotals(a) => ("read-xattr-totals", a.opts.mount.out.json),
        AgentCmd::ReadXattrIndex(a) => ("read-xattr-index", a.opts.mount.out.json),
        AgentCmd::ListHiddenXattrs(a) => ("list-hidden-xattrs", a.out.json),
    };
    let mut o = Output::new(out, json);
    let res = match cmd {
        AgentCmd::Stat(a) => stat(a, &mut o),
        AgentCmd::Statfs(a) => statfs(a, &mut o),
        AgentCmd::WalkInodes(a) => walk_inodes(a, &mut o),
        AgentCmd::Release(a) => release(a, &mut o),
        AgentCmd::Stage(a) => stage(a, &mut o),
        AgentCmd::Setattr(a) => setattr(a, &mut o),
        AgentCmd::DataWaiting(a) => data_waiting(a, &mut o),
        AgentCmd::DataWaitErr(a) => data_wait_err(a, &mut o),
        AgentCmd::GetFiemap(a) => get_fiemap(a, &mut o),
        AgentCmd::SearchXattrs(a) => search_xattrs(a, &mut o),
        AgentCmd::ReadXattrTotals(a) => read_xattr_totals(a, &mut o),
        AgentCmd::ReadXattrIndex(a) => read_xattr_index(a, &mut o),
        AgentCmd::ListHiddenXattrs(a) => list_hidden_xattrs(a, &mut o),
    };
    if let Err(e) = &res {
        o.fail(name, e);
    }
    (name, res)
}

fn usage(m: &str) -> CmdError {
    CmdError::Usage(m.into())
}

/// A failure the command finds itself, with its own line, as errno `errno`.
fn invalid(context: String) -> CmdError {
    CmdError::Errno {
        context: Some(context),
        errno: Errno::EINVAL as i32,
    }
}

/// The filesystem answered out of order (a batch that does not move on): stop rather
/// than loop.
fn no_progress(what: &str) -> CmdError {
    CmdError::Errno {
        context: Some(format!(
            "{what}: the filesystem returned entries out of order"
        )),
        errno: Errno::EIO as i32,
    }
}

/// The inode number of an open file.
fn ino_of(ch: &Channel) -> Result<u64, CmdError> {
    Ok(ch.file().metadata()?.ino())
}

fn stat(a: StatArgs, o: &mut Output) -> Result<(), CmdError> {
    let single = a.single_field.as_deref();
    if let Some(f) = single {
        if !STAT_FIELDS.contains(&f) {
            return Err(invalid(format!("unknown field: '{f}'")));
        }
    }
    let file = a.file.ok_or_else(|| usage("missing operand"))?;
    let (res, ino) = match a.devices.pair() {
        Some((m, d)) => {
            let s = file.to_string_lossy();
            let ino = parse_u64(&s).map_err(|_| {
                usage(&format!(
                    "'{s}' is not an inode number (with --meta-device, stat takes one)"
                ))
            })?;
            (Offline::open(m, d)?.call(&StatMoreCall, ino), ino)
        }
        None => {
            let ch = Channel::open(Path::new(&file), OFlag::O_RDONLY)?;
            (ch.call(&StatMoreCall), ino_of(&ch)?)
        }
    };
    let s = res.map_err(|f| f.said("ioctl failed"))?;
    o.text(&stat_text(&s, single).unwrap_or_default())?;
    let doc = StatJson::new(ino, &s);
    match single {
        Some(f) => o.doc(&single_field(&doc, f)?),
        None => o.doc(&doc),
    }
}

/// The one field `name` of a JSON document, as a document of its own.
fn single_field<T: Serialize>(doc: &T, name: &str) -> Result<serde_json::Value, CmdError> {
    let v = serde_json::to_value(doc).map_err(|e| CmdError::Output(std::io::Error::other(e)))?;
    let mut m = serde_json::Map::new();
    m.insert(name.into(), v.get(name).cloned().unwrap_or_default());
    Ok(serde_json::Value::Object(m))
}

fn statfs(a: StatfsArgs, o: &mut Output) -> Result<(), CmdError> {
    let single = a.single_field.as_deref();
    if let Some(f) = single {
        if !STATFS_FIELDS.contains(&f) {
            return Err(invalid(format!("unknown field: '{f}'")));
        }
    }
    let t = a.opts.target()?;
    let s = t
        .call(&StatfsMoreCall)
        .map_err(|f| f.said("ioctl failed"))?;
    o.text(&statfs_text(&s, single).unwrap_or_default())?;
    let doc = StatfsJson::from(&s);
    match single {
        Some(f) => o.doc(&single_field(&doc, f)?),
        None => o.doc(&doc),
    }
}

/// The position just after `p` (`None` past the largest).
fn after_pos(p: &IndexPos) -> Option<IndexPos> {
    let mut n = *p;
    n.ino = n.ino.wrapping_add(1);
    if n.ino == 0 {
        n.minor = n.minor.wrapping_add(1);
        if n.minor == 0 {
            n.major = n.major.checked_add(1)?;
        }
    }
    Some(n)
}

fn walk_inodes(a: WalkArgs, o: &mut Output) -> Result<(), CmdError> {
    let index = a.index.ok_or_else(|| usage("no index given"))?;
    let first_s = a.first.ok_or_else(|| usage("no first entry given"))?;
    let last_s = a.last.ok_or_else(|| usage("no last entry given"))?;
    let (index, index_name) = match index.to_ascii_lowercase().as_str() {
        "meta_seq" => (SeqIndex::Meta, "meta_seq"),
        "data_seq" => (SeqIndex::Data, "data_seq"),
        _ => {
            return Err(invalid(format!(
                "unknown index '{index}', try 'meta_seq' or 'data_seq'"
            )))
        }
    };
    let pos = |s: &str, which: &str| {
        parse_walk_pos(s).map_err(|e| {
            invalid(format!(
                "{e}\ninvalid {which} position '{s}', try '1.2.3' or '-1'"
            ))
        })
    };
    let first = pos(&first_s, "first")?;
    let last = pos(&last_s, "last")?;
    let t = a.opts.target()?;
    #[derive(Serialize)]
    struct Head {
        index: &'static str,
        first: JsonPos,
        last: JsonPos,
    }
    let jp = |p: &IndexPos| JsonPos {
        major: p.major,
        minor: p.minor,
        ino: p.ino,
    };
    o.begin_list(
        &Head {
            index: index_name,
            first: jp(&first),
            last: jp(&last),
        },
        "entries",
    )?;
    let mut total = 0u64;
    let mut at = first;
    loop {
        let batch = t
            .call(&WalkCall {
                index,
                first: at,
                last,
            })
            .map_err(|f| f.error("walk_inodes ioctl failed"))?;
        let Some(l) = batch.last() else { break };
        for e in &batch {
            if total.is_multiple_of(WALK_HEADER_EVERY) {
                o.text(&walk_header())?;
            }
            o.text(&walk_row(total, e))?;
            o.item(&JsonPos::from(e))?;
            total += 1;
        }
        let lp = IndexPos {
            major: l.major,
            minor: l.minor,
            ino: l.ino,
        };
        if lp < at {
            return Err(no_progress("walk_inodes"));
        }
        match after_pos(&lp) {
            Some(p) => at = p,
            None => break,
        }
    }
    o.end_list()
}

/// The data version, offset and length of release or stage, with the original's checks;
/// a length not given is `default_len()`.
fn range(
    r: &RangeArgs,
    name: &str,
    default_len: impl FnOnce() -> std::io::Result<u64>,
) -> Result<(u64, u64, u64), CmdError> {
    let data_version = r
        .data_version
        .filter(|&v| v != 0)
        .ok_or_else(|| usage(name))?;
    let length = match r.length.filter(|&l| l != 0) {
        Some(l) => l,
        None => default_len().map_err(|e| {
            let errno = e.raw_os_error().unwrap_or(Errno::EIO as i32);
            CmdError::Errno {
                context: Some(format!("Could not get file size: {}", errno_text(errno))),
                errno,
            }
        })?,
    };
    Ok((data_version, r.offset.unwrap_or(0), length))
}

/// `release --json` and `stage --json`: what was done.
#[derive(Serialize)]
struct RangeDoc {
    ino: u64,
    offset: u64,
    length: u64,
    data_version: u64,
}

/// Block size for rounding a release's default length.
const BLOCK: u64 = 4096;

fn release(a: ReleaseArgs, o: &mut Output) -> Result<(), CmdError> {
    let file = a.file.ok_or_else(|| usage("must provide file path"))?;
    let (data_version, offset, length) =
        range(&a.range, "must provide file version --data-version", || {
            Ok(std::fs::metadata(&file)?.len().div_ceil(BLOCK) * BLOCK)
        })?;
    let ch = Channel::open(&file, OFlag::O_RDWR)?;
    ch.call(&ReleaseCall {
        offset,
        length,
        data_version,
    })
    .map_err(|f| f.error("release ioctl failed"))?;
    o.doc(&RangeDoc {
        ino: ino_of(&ch)?,
        offset,
        length,
        data_version,
    })
}

/// How much of the archive is read, and staged as one, at once (the original's buffer).
const ARCHIVE_CHUNK: usize = STAGE_GATHER_MAX;

fn stage(a: StageArgs, o: &mut Output) -> Result<(), CmdError> {
    let archive = a
        .archive
        .ok_or_else(|| usage("must provide archive file path"))?;
    let file = a
        .file
        .ok_or_else(|| usage("must provide to-stage file path"))?;
    let (data_version, offset, length) = range(
        &a.range,
        "must provide file version with --data-version",
        || Ok(std::fs::metadata(&archive)?.len()),
    )?;
    let mut src = std::fs::File::open(&archive).map_err(|e| {
        let errno = e.raw_os_error().unwrap_or(Errno::EIO as i32);
        CmdError::Errno {
            context: Some(format!(
                "failed to open '{}': {}",
                archive.display(),
                errno_text(errno)
            )),
            errno,
        }
    })?;
    let ch = Channel::open(&file, OFlag::O_RDWR)?;
    let mut buf = vec![0u8; ARCHIVE_CHUNK];
    let (mut at, mut left) = (offset, length);
    while left > 0 {
        let want = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(ARCHIVE_CHUNK);
        let n = match src.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(CmdError::Errno {
                    context: Some(format!(
                        "archive read returned 0: '{}' ended {left} bytes before the length \
                         to stage",
                        archive.display()
                    )),
                    errno: Errno::EIO as i32,
                })
            }
            Ok(n) => n,
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(Errno::EIO as i32);
                return Err(CmdError::Errno {
                    context: Some(format!(
                        "archive read returned -1: error {}",
                        errno_text(errno)
                    )),
                    errno: Errno::EIO as i32,
                });
            }
        };
        stage_chunk(&ch, at, &buf[..n], data_version)?;
        left -= n as u64;
        at = at.wrapping_add(n as u64);
    }
    o.doc(&RangeDoc {
        ino: ino_of(&ch)?,
        offset,
        length,
        data_version,
    })
}

/// Stages one chunk read from the archive, sent in pieces of at most [`STAGE_CHUNK`]
/// bytes that the daemon stages as one; fails as the original fails a chunk (`stage
/// returned -1, not N: error ...`, then EIO).
fn stage_chunk(ch: &Channel, at: u64, data: &[u8], data_version: u64) -> Result<(), CmdError> {
    let fail = |f: Fail| CmdError::Errno {
        context: Some(format!(
            "stage returned -1, not {}: error {}",
            data.len(),
            errno_text(f.errno)
        )),
        errno: Errno::EIO as i32,
    };
    let pieces = data.len().div_ceil(STAGE_CHUNK);
    for (i, piece) in data.chunks(STAGE_CHUNK).enumerate() {
        let offset = ((i * STAGE_CHUNK) as u64).checked_add(at).ok_or_else(|| {
            fail(Fail {
                errno: Errno::EINVAL as i32,
                detail: None,
            })
        })?;
        let n = ch
            .call(&StageCall {
                offset,
                data_version,
                data: piece,
                // The daemon stages the chunk as one at its last piece.
                more: i + 1 < pieces,
            })
            .map_err(fail)?;
        if n != piece.len() {
            return Err(CmdError::Errno {
                context: Some(format!("stage returned {n}, not {}", piece.len())),
                errno: Errno::EIO as i32,
            });
        }
    }
    Ok(())
}

fn setattr(a: SetattrArgs, o: &mut Output) -> Result<(), CmdError> {
    if a.data_version == Some(0) {
        return Err(usage("data version must not be 0"));
    }
    let file = a.file.ok_or_else(|| usage("no filename given"))?;
    let size = a.size.unwrap_or(0);
    let data_version = a.data_version.unwrap_or(0);
    if size != 0 && data_version == 0 {
        return Err(usage("must provide data-version if using --size option"));
    }
    if size == 0 && a.offline {
        return Err(usage("must provide size if using --offline option"));
    }
    let ch = Channel::open(&file, OFlag::O_WRONLY)?;
    let set = SetAttrMore {
        data_version,
        size,
        offline: a.offline,
        ctime: a.ctime,
        crtime: a.crtime,
    };
    ch.call(&SetattrCall { set }).map_err(|f| {
        f.error(&format!(
            "setattr_more ioctl failed on '{}'",
            file.display()
        ))
    })?;
    #[derive(Serialize)]
    struct Doc {
        ino: u64,
        data_version: u64,
        size: u64,
        offline: bool,
        ctime: Option<JsonTime>,
        crtime: Option<JsonTime>,
    }
    o.doc(&Doc {
        ino: ino_of(&ch)?,
        data_version,
        size,
        offline: a.offline,
        ctime: a.ctime.map(Into::into),
        crtime: a.crtime.map(Into::into),
    })
}

fn data_waiting(a: WaitingArgs, o: &mut Output) -> Result<(), CmdError> {
    let ino = a.inode.ok_or_else(|| usage("no inode given"))?;
    let block = a.block.ok_or_else(|| usage("no blkno given"))?;
    let t = a.opts.target()?;
    #[derive(Serialize)]
    struct Head {}
    o.begin_list(&Head {}, "waiting")?;
    let mut after = (ino, block);
    loop {
        let batch = t
            .call(&WaitingCall {
                after_ino: after.0,
                after_iblock: after.1,
            })
            .map_err(|f| f.error("waiting ioctl failed"))?;
        let Some(l) = batch.last() else { break };
        for w in &batch {
            o.text(&waiting_line(w))?;
            o.item(&JsonWaiting::from(w))?;
        }
        if (l.ino, l.iblock) <= after {
            return Err(no_progress("data_waiting"));
        }
        after = (l.ino, l.iblock);
    }
    o.end_list()
}

fn data_wait_err(a: WaitErrArgs, o: &mut Output) -> Result<(), CmdError> {
    if let Some(e) = a.err {
        if !(-4095..0).contains(&e) {
            return Err(usage("errno out of range"));
        }
    }
    let ino = a.inode.ok_or_else(|| usage("no inode given"))?;
    let data_version = a.version.ok_or_else(|| usage("no version given"))?;
    let offset = a.offset.ok_or_else(|| usage("no offset given"))?;
    let count = a.count.ok_or_else(|| usage("no count given"))?;
    let op = a.op.ok_or_else(|| usage("no operation given"))?;
    let err = a.err.ok_or_else(|| usage("no error given"))?;
    let op = parse_op(&op).ok_or_else(|| invalid(format!("invalid data wait op: '{op}'")))?;
    let t = a.opts.target()?;
    let found = t
        .call(&WaitErrCall {
            ino,
            data_version,
            offset,
            count,
            op,
            // In -4095..=-1: checked above.
            err: err as i32,
        })
        .map_err(|f| CmdError::Errno {
            context: Some(format!(
                "data_wait_err returned -1: error {}",
                errno_text(f.errno)
            )),
            errno: Errno::EIO as i32,
        })?;
    o.text(&wait_err_line(found))?;
    #[derive(Serialize)]
    struct Doc {
        found: u64,
    }
    o.doc(&Doc { found })
}

fn get_fiemap(a: FiemapArgs, o: &mut Output) -> Result<(), CmdError> {
    if a.physical && a.logical {
        return Err(usage("can't pass both -P and -L options"));
    }
    let file = a.file.ok_or_else(|| usage("no filename given"))?;
    let ch = Channel::open(&file, OFlag::O_RDONLY)?;
    let meta = ch.file().metadata().map_err(|e| {
        let errno = e.raw_os_error().unwrap_or(Errno::EIO as i32);
        CmdError::Errno {
            context: Some(format!(
                "stat failed on '{}': {}",
                file.display(),
                errno_text(errno)
            )),
            errno,
        }
    })?;
    let unit = if a.byte { 1 } else { meta.blksize() };
    let offsets = if a.physical {
        FiemapOffsets::Physical
    } else if a.logical {
        FiemapOffsets::Logical
    } else {
        FiemapOffsets::Both
    };
    #[derive(Serialize)]
    struct Head {
        ino: u64,
        block_size: u64,
    }
    o.begin_list(
        &Head {
            ino: meta.ino(),
            block_size: meta.blksize(),
        },
        "extents",
    )?;
    let mut nr = 0u64;
    let mut start = 0u64;
    loop {
        let batch = ch
            .call(&FiemapCall {
                offset: start,
                length: u64::MAX,
            })
            .map_err(|f| f.error("get_fiemap ioctl failed"))?;
        let Some(l) = batch.last() else { break };
        let mut last = false;
        for e in &batch {
            o.text(&fiemap_line(nr, e, offsets, unit))?;
            o.item(&JsonExtent::from(e))?;
            nr += 1;
            last |= e.last;
        }
        let next = l.logical.saturating_add(l.length);
        if last || next <= start {
            break;
        }
        start = next;
    }
    o.text(&fiemap_tail(nr))?;
    o.end_list()
}

fn search_xattrs(a: SearchArgs, o: &mut Output) -> Result<(), CmdError> {
    let name = a
        .name
        .ok_or_else(|| usage("must provide xattr containing .srch. scoutfs tag"))?;
    let t = a.opts.target()?;
    #[derive(Serialize)]
    struct Head {
        name: String,
    }
    o.begin_list(
        &Head {
            name: name.to_string_lossy().into_owned(),
        },
        "inodes",
    )?;
    let mut next = 0u64;
    loop {
        let r = t
            .call(&SearchCall {
                name: name.as_bytes(),
                next_ino: next,
                last_ino: u64::MAX,
            })
            .map_err(|f| f.error("search_xattrs ioctl failed"))?;
        let Some(&l) = r.inos.last() else { break };
        for &ino in &r.inos {
            o.text(&ino_line(ino))?;
            o.item(&ino)?;
        }
        if r.complete {
            break;
        }
        if l < next {
            return Err(no_progress("search_xattrs"));
        }
        match l.checked_add(1) {
            Some(n) => next = n,
            None => break,
        }
    }
    o.end_list()
}

fn read_xattr_totals(a: TotalsArgs, o: &mut Output) -> Result<(), CmdError> {
    let t = a.opts.target()?;
    #[derive(Serialize)]
    struct Head {}
    o.begin_list(&Head {}, "totals")?;
    let mut pos = [0u64; 3];
    loop {
        let batch = t
            .call(&TotalsCall { pos })
            .map_err(|f| f.error("read_xattr_totals ioctl failed"))?;
        let Some(l) = batch.last() else { break };
        for x in &batch {
            o.text(&total_line(x))?;
            o.item(&JsonTotal::from(x))?;
        }
        if l.name < pos {
            return Err(no_progress("read_xattr_totals"));
        }
        // The name after the last one, carrying; past the largest: done.
        let mut n = l.name;
        n[2] = n[2].wrapping_add(1);
        if n[2] == 0 {
            n[1] = n[1].wrapping_add(1);
            if n[1] == 0 {
                n[0] = n[0].wrapping_add(1);
                if n[0] == 0 {
                    break;
                }
            }
        }
        pos = n;
    }
    o.end_list()
}

fn read_xattr_index(a: IndexArgs, o: &mut Output) -> Result<(), CmdError> {
    let parse = |s: Option<&String>, default: IndxEntry| match s {
        Some(s) => parse_indx_pos(s).map_err(invalid),
        None => Ok(default),
    };
    let first = parse(a.first.as_ref(), IndxEntry::default())?;
    let last = parse(
        a.last.as_ref(),
        IndxEntry {
            major: u8::MAX,
            minor: u64::MAX,
            ino: u64::MAX,
        },
    )?;
    let show = |e: &IndxEntry| format!("{}.{}.{}", e.major, e.minor, e.ino);
    if first > last {
        return Err(invalid(format!(
            "first index position {} must be less than last index position {}",
            show(&first),
            show(&last)
        )));
    }
    let t = a.opts.target()?;
    #[derive(Serialize)]
    struct Head {
        first: JsonIndx,
        last: JsonIndx,
    }
    o.begin_list(
        &Head {
            first: JsonIndx::from(&first),
            last: JsonIndx::from(&last),
        },
        "entries",
    )?;
    let mut at = first;
    loop {
        let batch = t
            .call(&IndexCall { first: at, last })
            .map_err(|f| f.error("read_xattr_index ioctl failed"))?;
        let Some(&l) = batch.last() else { break };
        for e in &batch {
            o.text(&index_line(e))?;
            o.item(&JsonIndx::from(e))?;
        }
        if l < at {
            return Err(no_progress("read_xattr_index"));
        }
        // The position after the last entry, carrying; past the largest or the last: done.
        let mut n = l;
        n.ino = n.ino.wrapping_add(1);
        if n.ino == 0 {
            n.minor = n.minor.wrapping_add(1);
            if n.minor == 0 {
                match n.major.checked_add(1) {
                    Some(m) => n.major = m,
                    None => break,
                }
            }
        }
        if n > last {
            break;
        }
        at = n;
    }
    o.end_list()
}

fn list_hidden_xattrs(a: HiddenArgs, o: &mut Output) -> Result<(), CmdError> {
    let file = a.file.ok_or_else(|| usage("must specify filename"))?;
    let ch = Channel::open(&file, OFlag::O_RDONLY)?;
    #[derive(Serialize)]
    struct Head {
        ino: u64,
    }
    o.begin_list(&Head { ino: ino_of(&ch)? }, "names")?;
    let mut skip = 0u32;
    loop {
        let (names, more) = ch
            .call(&HiddenCall { skip })
            .map_err(|f| f.error("listxattr_hidden ioctl failed"))?;
        for n in &names {
            o.text(&hidden_line(n))?;
            o.item(&String::from_utf8_lossy(n))?;
        }
        if !more || names.is_empty() {
            break;
        }
        skip = skip.saturating_add(names.len() as u32);
    }
    o.end_list()
}
