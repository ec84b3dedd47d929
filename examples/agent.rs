//! A reference archive agent over `scoutfs-core` alone: what an archival tool does with
//! the archive interface, in a few hundred lines.
//!
//! - **Archive pass** ([`archive_pass`]): walk the data_seq index from the position the
//!   last pass left ([`Position`], kept in a small state file) up to the volume's
//!   committed seq — every file whose contents changed since, each once, without walking
//!   the namespace — copy each changed regular file's contents to the archive folder
//!   with its SHA-256, make the copy durable, and only then release the file's data
//!   blocks, passing the data_version the copy was read at: a file written meanwhile
//!   makes the release fail with ESTALE and keeps its data (its new data_seq brings it
//!   back to the next pass).
//! - **Stage** ([`stage_file`], [`stage_waiting`]): bring a released file's offline
//!   regions back from its archive copy, after checking the copy's SHA-256, at the
//!   data_version it was archived at; [`stage_waiting`] does it for every file that
//!   `data_waiting` lists a blocked reader or writer of.
//!
//! The archive keeps one copy per (inode, data_version): `ARCHIVE/INO/DATA_VERSION` and
//! `ARCHIVE/INO/DATA_VERSION.sha256` (the digest in hex, a space, the size). A walk
//! batch's copies are written, made durable together (syncfs of the archive's
//! filesystem), then their checksum files written and made durable the same way, and
//! only then are the files released: a checksum file is the proof its copy is whole and
//! durable, and a crash at any point leaves the files online or a sealed copy (a copy
//! without its checksum file is made again).

use scoutfs_core::fs::{FileKind, Fs, FsError, IndexPos, SeqIndex};
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Bytes read or staged per call.
const CHUNK: u64 = 8 << 20;
/// Index entries asked for per walk call.
const WALK_BATCH: usize = 1024;
/// Waiting operations asked for per `data_waiting` call.
const WAITING_BATCH: usize = 1024;
/// The data block size: releases cover whole blocks.
const BLOCK: u64 = 4096;

/// What can go wrong in the agent.
#[derive(Debug)]
pub enum AgentError {
    /// The filesystem refused or failed an operation.
    Fs(&'static str, u64, FsError),
    /// The archive folder or the state file.
    Io(PathBuf, io::Error),
    /// An archive copy whose contents no longer match its checksum.
    Corrupt(PathBuf),
    /// No archive copy of a file at its data_version.
    NoCopy(u64, u64),
}

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentError::Fs(what, ino, e) => write!(f, "{what} of inode {ino}: {e}"),
            AgentError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            AgentError::Corrupt(p) => {
                write!(f, "{}: contents do not match the checksum", p.display())
            }
            AgentError::NoCopy(ino, dv) => {
                write!(f, "inode {ino}: no archive copy at data_version {dv}")
            }
        }
    }
}

impl std::error::Error for AgentError {}

type Res<T> = Result<T, AgentError>;

fn io_at(p: &Path) -> impl Fn(io::Error) -> AgentError + '_ {
    move |e| AgentError::Io(p.to_path_buf(), e)
}

/// Where the next archive pass starts in the data_seq index: every change at or after
/// it is still to be looked at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    /// The data_seq.
    pub seq: u64,
    /// The inode within that seq.
    pub ino: u64,
}

impl Position {
    /// The position kept in `path` (the start of the index if there is no such file).
    pub fn load(path: &Path) -> Res<Position> {
        let s = match fs::read_to_string(path) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Position::default()),
            Err(e) => return Err(AgentError::Io(path.to_path_buf(), e)),
        };
        let bad = || {
            AgentError::Io(
                path.to_path_buf(),
                io::Error::new(io::ErrorKind::InvalidData, "not a `SEQ INO` line"),
            )
        };
        let mut it = s.split_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next(), it.next()) {
            (Some(Ok(seq)), Some(Ok(ino)), None) => Ok(Position { seq, ino }),
            _ => Err(bad()),
        }
    }

    /// Keep the position in `path`, replacing it whole (a crash leaves the old or the
    /// new one).
    pub fn save(&self, path: &Path) -> Res<()> {
        let tmp = path.with_extension("tmp");
        let mut f = File::create(&tmp).map_err(io_at(&tmp))?;
        writeln!(f, "{} {}", self.seq, self.ino).map_err(io_at(&tmp))?;
        f.sync_all().map_err(io_at(&tmp))?;
        fs::rename(&tmp, path).map_err(io_at(path))?;
        sync_dir(path.parent().unwrap_or(Path::new(".")))
    }
}

fn sync_dir(dir: &Path) -> Res<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

/// What a pass or a staging did, for the summary.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Index entries looked at.
    pub changed: u64,
    /// Files copied to the archive.
    pub archived: u64,
    /// Bytes copied to the archive.
    pub archived_bytes: u64,
    /// Files whose data was released.
    pub released: u64,
    /// Files written while they were copied (ESTALE at release): left online.
    pub changed_meanwhile: u64,
    /// Entries that were not regular files with data (directories are not in the
    /// index; symlinks, devices, empty files) or whose data was already all offline.
    pub skipped: u64,
    /// Files staged back.
    pub staged: u64,
    /// Bytes staged back.
    pub staged_bytes: u64,
    /// Where the next pass starts.
    pub position: Position,
}

/// One changed file, reported to the caller's progress function.
#[derive(Clone, Copy, Debug)]
pub struct Step {
    /// Index entries looked at so far.
    pub done: u64,
    /// The committed seq the pass walks up to.
    pub horizon: u64,
    /// The data_seq of the entry.
    pub seq: u64,
}

fn copy_path(archive: &Path, ino: u64, dv: u64) -> PathBuf {
    archive.join(ino.to_string()).join(dv.to_string())
}

fn sum_path(archive: &Path, ino: u64, dv: u64) -> PathBuf {
    archive.join(ino.to_string()).join(format!("{dv}.sha256"))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Archive every file changed since `pos` and release its data; `pos` moves past what was
/// looked at (saved by the caller).
pub fn archive_pass(
    fs: &Fs,
    archive: &Path,
    pos: &mut Position,
    progress: &mut dyn FnMut(Step),
) -> Res<Summary> {
    let mut sum = Summary::default();
    let horizon = fs
        .committed_seq()
        .map_err(|e| AgentError::Fs("committed_seq", 0, e))?;
    let last = IndexPos {
        major: horizon,
        minor: u32::MAX,
        ino: u64::MAX,
    };
    loop {
        let first = IndexPos {
            major: pos.seq,
            minor: 0,
            ino: pos.ino,
        };
        if pos.seq > horizon {
            break;
        }
        let batch = fs
            .walk_inodes(SeqIndex::Data, first, last, WALK_BATCH)
            .map_err(|e| AgentError::Fs("walk_inodes", 0, e))?;
        let mut copied = Vec::new();
        for ent in &batch {
            sum.changed += 1;
            if let Some(c) = copy_one(fs, archive, ent.ino, &mut sum)? {
                copied.push(c);
            }
            progress(Step {
                done: sum.changed,
                horizon,
                seq: ent.major,
            });
        }
        // The batch's copies are made durable together (one syncfs of the archive's
        // filesystem), their checksums written and made durable, and only then is any
        // file released.
        seal(archive, &copied)?;
        for c in &copied {
            release_one(fs, c, &mut sum)?;
        }
        if let Some(ent) = batch.last() {
            *pos = match ent.ino.checked_add(1) {
                Some(ino) => Position {
                    seq: ent.major,
                    ino,
                },
                None => Position {
                    seq: ent.major + 1,
                    ino: 0,
                },
            };
        }
        if batch.len() < WALK_BATCH {
            break;
        }
    }
    // Everything up to the horizon was seen: the next pass starts past it.
    *pos = (*pos).max(Position {
        seq: horizon + 1,
        ino: 0,
    });
    sum.position = *pos;
    Ok(sum)
}

impl PartialOrd for Position {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

impl Ord for Position {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.seq, self.ino).cmp(&(o.seq, o.ino))
    }
}

/// A file whose contents are in the archive (or about to be sealed there), to release.
#[derive(Debug)]
struct Copied {
    ino: u64,
    dv: u64,
    size: u64,
    /// The checksum line to write once the copy is durable (`None`: already written).
    sum: Option<String>,
}

/// Copy one changed inode to the archive if it is a regular file with online data and
/// no sound copy at its data_version exists yet; what to release, if anything.
fn copy_one(fs: &Fs, archive: &Path, ino: u64, sum: &mut Summary) -> Res<Option<Copied>> {
    let attr = match fs.getattr(ino) {
        Ok(a) => a,
        // Deleted since the walk: nothing to keep.
        Err(FsError::NotFound) => {
            sum.skipped += 1;
            return Ok(None);
        }
        Err(e) => return Err(AgentError::Fs("getattr", ino, e)),
    };
    let more = fs
        .stat_more(ino)
        .map_err(|e| AgentError::Fs("stat_more", ino, e))?;
    if attr.kind != FileKind::File || more.size == 0 || more.online_blocks == 0 {
        sum.skipped += 1;
        return Ok(None);
    }
    let (dv, size) = (more.data_version, more.size);
    if sealed(archive, ino, dv, size) {
        return Ok(Some(Copied {
            ino,
            dv,
            size,
            sum: None,
        }));
    }
    if more.offline_blocks > 0 {
        // Partly offline with no copy at this version: its contents are not all here to
        // copy (released by another agent).
        sum.skipped += 1;
        return Ok(None);
    }
    let line = copy_out(fs, archive, ino, dv, size)?;
    sum.archived += 1;
    sum.archived_bytes += size;
    Ok(Some(Copied {
        ino,
        dv,
        size,
        sum: Some(line),
    }))
}

/// Whether the archive holds a sealed copy of `ino` at `dv` of `size` bytes: its
/// checksum file is whole (it is written only after the copy was durable).
fn sealed(archive: &Path, ino: u64, dv: u64, size: u64) -> bool {
    let Ok(s) = fs::read_to_string(sum_path(archive, ino, dv)) else {
        return false;
    };
    let mut it = s.split_whitespace();
    matches!(
        (it.next(), it.next(), it.next()),
        (Some(h), Some(n), None) if h.len() == 64 && n.parse() == Ok(size)
    )
}

/// Make the batch's copies durable, then their checksum files: one syncfs of the
/// archive's filesystem each.
fn seal(archive: &Path, copied: &[Copied]) -> Res<()> {
    let fresh: Vec<&Copied> = copied.iter().filter(|c| c.sum.is_some()).collect();
    if fresh.is_empty() {
        return Ok(());
    }
    syncfs(archive)?;
    for c in fresh {
        let sp = sum_path(archive, c.ino, c.dv);
        fs::write(&sp, c.sum.as_deref().unwrap_or_default()).map_err(io_at(&sp))?;
    }
    syncfs(archive)
}

fn syncfs(path: &Path) -> Res<()> {
    let dir = File::open(path).map_err(io_at(path))?;
    nix::unistd::syncfs(&dir).map_err(|e| AgentError::Io(path.to_path_buf(), e.into()))
}

/// Release a sealed copy's file at the data_version it was copied at.
fn release_one(fs: &Fs, c: &Copied, sum: &mut Summary) -> Res<()> {
    match fs.release_data(c.ino, 0, c.size.div_ceil(BLOCK) * BLOCK, c.dv) {
        Ok(()) => sum.released += 1,
        // Written since the copy: it keeps its data and comes back in a later pass.
        Err(FsError::Stale) => sum.changed_meanwhile += 1,
        Err(e) => return Err(AgentError::Fs("release", c.ino, e)),
    }
    Ok(())
}

/// Copy the contents of `ino` (at `dv`, `size` bytes) to the archive, not yet durable;
/// its checksum line.
fn copy_out(fs: &Fs, archive: &Path, ino: u64, dv: u64, size: u64) -> Res<String> {
    let dir = archive.join(ino.to_string());
    fs::create_dir_all(&dir).map_err(io_at(&dir))?;
    let path = copy_path(archive, ino, dv);
    let mut f = File::create(&path).map_err(io_at(&path))?;
    let mut h = Sha256::new();
    let mut off = 0;
    while off < size {
        let len = (size - off).min(CHUNK) as u32;
        let buf = fs
            .read(ino, off, len)
            .map_err(|e| AgentError::Fs("read", ino, e))?;
        if buf.is_empty() {
            break;
        }
        h.update(&buf);
        f.write_all(&buf).map_err(io_at(&path))?;
        off += buf.len() as u64;
    }
    Ok(format!("{} {off}\n", hex(&h.finalize())))
}

/// Read an archive copy whole and check it against its checksum.
fn read_copy(archive: &Path, ino: u64, dv: u64) -> Res<Vec<u8>> {
    let sp = sum_path(archive, ino, dv);
    let want = match fs::read_to_string(&sp) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(AgentError::NoCopy(ino, dv)),
        Err(e) => return Err(AgentError::Io(sp, e)),
    };
    let path = copy_path(archive, ino, dv);
    let mut data = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io_at(&path))?;
    let got = format!("{} {}", hex(&Sha256::digest(&data)), data.len());
    if want.trim() != got {
        return Err(AgentError::Corrupt(path));
    }
    Ok(data)
}

/// Stage the offline regions of `ino` back from its archive copy at its current
/// data_version; returns the bytes staged.
pub fn stage_file(fs: &Fs, archive: &Path, ino: u64) -> Res<u64> {
    let more = fs
        .stat_more(ino)
        .map_err(|e| AgentError::Fs("stat_more", ino, e))?;
    if more.offline_blocks == 0 {
        return Ok(0);
    }
    let dv = more.data_version;
    let data = read_copy(archive, ino, dv)?;
    let extents = fs
        .fiemap(ino, 0, u64::MAX)
        .map_err(|e| AgentError::Fs("fiemap", ino, e))?;
    let mut staged = 0;
    for e in extents.iter().filter(|e| e.offline) {
        let end = (e.logical + e.length).min(more.size);
        let mut off = e.logical;
        while off < end {
            let to = (off + CHUNK).min(end);
            let chunk = data
                .get(off as usize..to as usize)
                .ok_or(AgentError::Corrupt(copy_path(archive, ino, dv)))?;
            fs.stage(ino, off, chunk, dv)
                .map_err(|e| AgentError::Fs("stage", ino, e))?;
            staged += to - off;
            off = to;
        }
    }
    Ok(staged)
}

/// Stage every file that has a blocked reader or writer; returns (files, bytes).
pub fn stage_waiting(fs: &Fs, archive: &Path) -> Res<(u64, u64)> {
    let mut inos = Vec::new();
    let (mut after_ino, mut after_iblock) = (0, 0);
    loop {
        let batch = fs.data_waiting(after_ino, after_iblock, WAITING_BATCH);
        for w in &batch {
            if inos.last() != Some(&w.ino) {
                inos.push(w.ino);
            }
        }
        match batch.last() {
            Some(w) if batch.len() == WAITING_BATCH => {
                (after_ino, after_iblock) = (w.ino, w.iblock);
            }
            _ => break,
        }
    }
    let mut bytes = 0;
    for &ino in &inos {
        bytes += stage_file(fs, archive, ino)?;
    }
    Ok((inos.len() as u64, bytes))
}
