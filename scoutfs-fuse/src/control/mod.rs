//! The daemon's side of the control channel: `scoutfs` reaches the mount that serves a
//! path by making ioctls on a file or directory of it (layouts in [`wire`]), and
//! [`Control::dispatch`] decodes each, checks that the caller may make it, calls the filesystem
//! ([`Agent`]) and encodes the answer.
//!
//! Permissions are the original's (`kmod/src/ioctl.c`), with "the file was opened for
//! reading/writing" standing for its `FMODE_READ`/`FMODE_WRITE` (the kernel checked the
//! caller's permission when the file was opened so, see [`caller`]) and the caller's
//! effective capabilities for its `capable()`:
//!
//! | command | requires |
//! |---|---|
//! | stat_more, statfs_more, walk_inodes, data_waiting, fiemap | nothing |
//! | release, stage | opened for writing, else `EINVAL`; stage: not `O_APPEND`, `O_DIRECT`, `O_DSYNC`, else `EINVAL` |
//! | setattr_more | opened for writing, else `EBADF`; `CAP_SYS_ADMIN`, else `EPERM` |
//! | data_wait_err, read_xattr_index | `CAP_SYS_ADMIN`, else `EPERM` |
//! | search_xattrs, read_xattr_totals | opened for reading, else `EBADF`; `CAP_SYS_ADMIN`, else `EPERM` |
//! | list_hidden_xattrs | opened for reading, else `EACCES` (the original's `MAY_READ` check) |
//!
//! A refused request changes nothing: every check comes before the filesystem is called.
//! Bad input (a wrong size, unknown flag bits, an out-of-range field) is `EINVAL`, a
//! command that is not ours `ENOTTY`, another layout version `EPROTO`; nothing a caller
//! sends can panic the daemon.

pub mod api;
pub mod caller;
pub mod client;
pub mod gather;
pub mod wire;

pub use api::*;
pub use caller::{open_handle, open_mode, sys_admin, OpenMode};

use libc::{EACCES, EBADF, EINVAL, ENOTTY, EPERM, EPROTO};
use scoutfs_core::fs::{FsError, FsResult, Timespec};
use wire::*;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A control request as the kernel passes it to the daemon.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The inode of the file the ioctl was made on.
    pub ino: u64,
    /// The handle of the open file it was made on (what a stage in pieces is kept by).
    pub fh: u64,
    /// How that file was opened.
    pub open: OpenMode,
    /// The ioctl request code.
    pub cmd: u32,
    /// The argument (for a command of ours, all of it).
    pub input: &'a [u8],
    /// The bytes the kernel copies back at most.
    pub out_size: u32,
}

/// The answer to a request: the ioctl's return value and the bytes copied back over the
/// argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// What the ioctl returns.
    pub result: i32,
    /// The reply (empty for `_IOW` commands).
    pub data: Vec<u8>,
}

impl Reply {
    fn done(result: i32) -> Reply {
        Reply {
            result,
            data: Vec::new(),
        }
    }
}

/// An errno to answer with.
pub type Errno = i32;

fn fs_err(e: FsError) -> Errno {
    e.errno()
}

/// The head of `input`, checked: the right version and no flags outside `known`.
fn head<H: FromBytes + KnownLayout + Immutable>(
    input: &[u8],
    known: u32,
    outer: impl Fn(&H) -> Head,
) -> Result<(H, &[u8]), Errno> {
    let (h, rest) = decode_head::<H>(input).ok_or(EINVAL)?;
    let hd = outer(&h);
    if hd.version.get() != VERSION {
        return Err(EPROTO);
    }
    if hd.flags.get() & !known != 0 {
        return Err(EINVAL);
    }
    Ok((h, rest))
}

/// A reply of `head` and `entries`.
fn reply<H: IntoBytes + Immutable, E: IntoBytes + Immutable>(head: &H, entries: &[E]) -> Reply {
    Reply {
        result: 0,
        data: encode(head, entries, 0),
    }
}

fn extent_flags(e: &FiemapExtent) -> u32 {
    let flag = |on: bool, f: u32| if on { f } else { 0 };
    flag(e.offline, EXTENT_OFFLINE)
        | flag(e.unwritten, EXTENT_UNWRITTEN)
        | flag(e.last, EXTENT_LAST)
}

fn time(sec: i64, nsec: u32) -> Result<Timespec, Errno> {
    if nsec >= 1_000_000_000 {
        return Err(EINVAL);
    }
    Ok(Timespec { sec, nsec })
}

/// A reply of `head_with(count)` and the first `n` of `found`, each encoded by `enc`.
fn batch<T, E: IntoBytes + Immutable, H: IntoBytes + Immutable>(
    found: &[T],
    n: usize,
    enc: impl Fn(&T) -> E,
    head_with: impl FnOnce(u32) -> H,
) -> Reply {
    let entries: Vec<E> = found.iter().take(n).map(enc).collect();
    reply(&head_with(entries.len() as u32), &entries)
}

/// The filesystem's answer to a list request for at most `n` entries: nothing if none.
fn ask<T>(n: usize, f: impl FnOnce(usize) -> FsResult<Vec<T>>) -> Result<Vec<T>, Errno> {
    if n == 0 {
        return Ok(Vec::new());
    }
    f(n).map_err(fs_err)
}

/// The most entries to ask for: what the caller wants, at most what fits.
fn limit(nr: u32, batch: usize) -> usize {
    usize::try_from(nr).unwrap_or(usize::MAX).min(batch)
}

/// The daemon's side of the channel: what it keeps between requests (the handles it gave
/// out, the stages being gathered).
#[derive(Debug, Default)]
pub struct Control {
    /// Serial numbers of open files' handles.
    opens: std::sync::atomic::AtomicU64,
    gather: gather::Gather,
}

impl Control {
    /// The handle of a new open with `flags` (see [`caller::open_handle`]).
    pub fn open_handle(&self, flags: i32) -> u64 {
        let serial = self
            .opens
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        open_handle(flags, serial)
    }

    /// The open file of handle `fh` was closed: what it was gathering goes.
    pub fn released(&self, fh: u64) {
        self.gather.forget(fh);
    }

    /// Answers one control request. `sys_admin` says whether the caller holds
    /// `CAP_SYS_ADMIN` (asked only of commands that require it). An `Err` is the errno to
    /// answer with.
    pub fn dispatch(
        &self,
        agent: &dyn Agent,
        req: &Request<'_>,
        sys_admin: &dyn Fn() -> bool,
    ) -> Result<Reply, Errno> {
        dispatch(agent, &self.gather, req, sys_admin)
    }
}

fn dispatch(
    agent: &dyn Agent,
    gather: &gather::Gather,
    req: &Request<'_>,
    sys_admin: &dyn Fn() -> bool,
) -> Result<Reply, Errno> {
    let Some(cmd) = Cmd::from_code(req.cmd) else {
        // One of our numbers with another size or direction is a caller of another
        // layout: say so, rather than "not a command".
        return Err(if Cmd::from_nr(req.cmd).is_some() {
            EINVAL
        } else {
            ENOTTY
        });
    };
    let out = if cmd.replies() { cmd.size() } else { 0 };
    if req.input.len() != cmd.size() || req.out_size as usize != out {
        return Err(EINVAL);
    }
    let (ino, open, input) = (req.ino, req.open, req.input);
    let admin = || if sys_admin() { Ok(()) } else { Err(EPERM) };
    match cmd {
        Cmd::StatMore => {
            head::<StatMoreArg>(input, 0, |a| a.head)?;
            let s = agent.stat_more(ino).map_err(fs_err)?;
            let arg = StatMoreArg {
                head: Head::new(0),
                meta_seq: s.meta_seq.into(),
                data_seq: s.data_seq.into(),
                data_version: s.data_version.into(),
                online_blocks: s.online_blocks.into(),
                offline_blocks: s.offline_blocks.into(),
                size: s.size.into(),
                crtime_sec: s.crtime.sec.into(),
                crtime_nsec: s.crtime.nsec.into(),
                pad: 0.into(),
            };
            Ok(reply::<_, u8>(&arg, &[]))
        }
        Cmd::StatfsMore => {
            head::<StatfsMoreArg>(input, 0, |a| a.head)?;
            let s = agent.statfs_more().map_err(fs_err)?;
            let arg = StatfsMoreArg {
                head: Head::new(0),
                fsid: s.fsid.into(),
                rid: s.rid.into(),
                committed_seq: s.committed_seq.into(),
                total_meta_blocks: s.total_meta_blocks.into(),
                total_data_blocks: s.total_data_blocks.into(),
                reserved_meta_blocks: s.reserved_meta_blocks.into(),
            };
            Ok(reply::<_, u8>(&arg, &[]))
        }
        Cmd::WalkInodes => {
            let (h, _) = head::<WalkHead>(input, 0, |a| a.head)?;
            let index = match h.index {
                INDEX_META_SEQ => SeqIndex::Meta,
                INDEX_DATA_SEQ => SeqIndex::Data,
                _ => return Err(EINVAL),
            };
            let pos = |p: &Pos| IndexPos {
                major: p.major.get(),
                minor: p.minor.get(),
                ino: p.ino.get(),
            };
            let n = limit(h.nr.get(), WALK_BATCH);
            let found = ask(n, |n| {
                agent.walk_inodes(index, pos(&h.first), pos(&h.last), n)
            })?;
            let enc = |e: &IndexEntry| Pos {
                major: e.major.into(),
                minor: e.minor.into(),
                pad: 0.into(),
                ino: e.ino.into(),
            };
            Ok(batch(&found, n, enc, |nr| WalkHead { nr: nr.into(), ..h }))
        }
        Cmd::Release => {
            let (a, _) = head::<ReleaseArg>(input, 0, |a| a.head)?;
            if !open.write {
                return Err(EINVAL);
            }
            agent
                .release(ino, a.offset.get(), a.length.get(), a.data_version.get())
                .map_err(fs_err)?;
            Ok(Reply::done(0))
        }
        Cmd::Stage => {
            let (h, data) = head::<StageHead>(input, STAGE_MORE, |a| a.head)?;
            if !open.write || open.special {
                return Err(EINVAL);
            }
            let len = h.len.get() as usize;
            let data = data.get(..len).ok_or(EINVAL)?;
            let more = h.head.flags.get() & STAGE_MORE != 0;
            let (offset, version) = (h.offset.get(), h.data_version.get());
            if !more && gather.pending_bytes() == 0 {
                // The common single piece: no copy.
                agent.stage(ino, offset, data, version).map_err(fs_err)?;
            } else if let Some(g) = gather.piece(req.fh, ino, offset, version, data, more)? {
                agent
                    .stage(g.ino, g.offset, &g.data, g.data_version)
                    .map_err(fs_err)?;
            }
            // At most STAGE_CHUNK: fits.
            Ok(Reply::done(len as i32))
        }
        Cmd::SetattrMore => {
            if !open.write {
                return Err(EBADF);
            }
            let known = SETATTR_OFFLINE | SETATTR_CTIME | SETATTR_CRTIME;
            let (a, _) = head::<SetattrMoreArg>(input, known, |a| a.head)?;
            admin()?;
            let flags = a.head.flags.get();
            let set = SetAttrMore {
                data_version: a.data_version.get(),
                size: a.size.get(),
                offline: flags & SETATTR_OFFLINE != 0,
                ctime: (flags & SETATTR_CTIME != 0)
                    .then(|| time(a.ctime_sec.get(), a.ctime_nsec.get()))
                    .transpose()?,
                crtime: (flags & SETATTR_CRTIME != 0)
                    .then(|| time(a.crtime_sec.get(), a.crtime_nsec.get()))
                    .transpose()?,
            };
            agent.setattr_more(ino, &set).map_err(fs_err)?;
            Ok(Reply::done(0))
        }
        Cmd::DataWaiting => {
            let (h, _) = head::<WaitingHead>(input, 0, |a| a.head)?;
            let n = limit(h.nr.get(), WAITING_BATCH);
            let found = ask(n, |n| {
                Ok(agent.data_waiting(h.after_ino.get(), h.after_iblock.get(), n))
            })?;
            let enc = |w: &DataWaiting| WaitingEntry {
                ino: w.ino.into(),
                iblock: w.iblock.into(),
                ops: w.ops,
                pad: [0; 7],
            };
            Ok(batch(&found, n, enc, |nr| WaitingHead {
                nr: nr.into(),
                ..h
            }))
        }
        Cmd::DataWaitErr => {
            admin()?;
            let (a, _) = head::<DataWaitErrArg>(input, 0, |a| a.head)?;
            let known = DATA_WAIT_READ | DATA_WAIT_WRITE | DATA_WAIT_CHANGE_SIZE;
            let err = a.err.get();
            // An error to fail waiters with is a negative errno (the kernel's IS_ERR_VALUE).
            if a.op & !known != 0 || !(-4095..=-1).contains(&err) {
                return Err(EINVAL);
            }
            let found = agent
                .data_wait_err(a.ino.get(), a.offset.get(), a.count.get(), a.op, err)
                .map_err(fs_err)?;
            Ok(Reply::done(i32::try_from(found).unwrap_or(i32::MAX)))
        }
        Cmd::ListHiddenXattrs => {
            let (h, _) = head::<HiddenHead>(input, 0, |a| a.head)?;
            if !open.read {
                return Err(EACCES);
            }
            let names = agent.list_hidden_xattrs(ino).map_err(fs_err)?;
            let skip = h.skip.get() as usize;
            let mut packed = Vec::new();
            let mut nr = 0u32;
            let mut more = false;
            for name in names.iter().skip(skip) {
                if packed.len() + name.len() + 1 > HIDDEN_BYTES {
                    more = true;
                    break;
                }
                packed.extend_from_slice(name);
                packed.push(0);
                nr += 1;
            }
            let out = HiddenHead {
                head: Head::new(if more { HIDDEN_MORE } else { 0 }),
                skip: h.skip,
                nr: nr.into(),
                bytes: (packed.len() as u32).into(),
                pad: 0.into(),
            };
            Ok(reply(&out, &packed))
        }
        Cmd::SearchXattrs => {
            let (h, _) = head::<SearchHead>(input, 0, |a| a.head)?;
            if !open.read {
                return Err(EBADF);
            }
            admin()?;
            let name = h
                .name
                .get(..usize::from(h.name_len.get()))
                .filter(|n| n.len() <= XATTR_NAME_MAX)
                .ok_or(EINVAL)?;
            let n = limit(h.nr.get(), SEARCH_BATCH);
            let (next, last) = (h.next_ino.get(), h.last_ino.get());
            let found = if n == 0 || last < next {
                // Nothing to search: not the end of a search either (the original's).
                SearchXattrs::default()
            } else {
                check_srch_name(name).map_err(fs_err)?;
                agent.search_xattrs(name, next, last, n).map_err(fs_err)?
            };
            let inos: Vec<zerocopy::byteorder::little_endian::U64> =
                found.inos.iter().take(n).map(|&i| i.into()).collect();
            let end = found.complete && found.inos.len() <= n;
            let out = SearchHead {
                head: Head::new(if end { SEARCH_END } else { 0 }),
                nr: (inos.len() as u32).into(),
                ..h
            };
            Ok(reply(&out, &inos))
        }
        Cmd::ReadXattrTotals => {
            let (h, _) = head::<TotalsHead>(input, 0, |a| a.head)?;
            if !open.read {
                return Err(EBADF);
            }
            admin()?;
            let n = limit(h.nr.get(), TOTALS_BATCH);
            let from = [h.pos[0].get(), h.pos[1].get(), h.pos[2].get()];
            let found = ask(n, |n| agent.read_xattr_totals(from, n))?;
            let enc = |t: &XattrTotal| Total {
                name: t.name.map(Into::into),
                total: t.total.into(),
                count: t.count.into(),
            };
            Ok(batch(&found, n, enc, |nr| TotalsHead {
                nr: nr.into(),
                ..h
            }))
        }
        Cmd::ReadXattrIndex => {
            admin()?;
            let (h, _) = head::<IndexHead>(input, 0, |a| a.head)?;
            let pos = |p: &IndxPos| IndxEntry {
                major: p.major,
                minor: p.minor.get(),
                ino: p.ino.get(),
            };
            let n = limit(h.nr.get(), INDEX_BATCH);
            let found = ask(n, |n| {
                agent.read_xattr_index(pos(&h.first), pos(&h.last), n)
            })?;
            let enc = |e: &IndxEntry| IndxPos {
                major: e.major,
                pad: [0; 7],
                minor: e.minor.into(),
                ino: e.ino.into(),
            };
            Ok(batch(&found, n, enc, |nr| IndexHead { nr: nr.into(), ..h }))
        }
        Cmd::Fiemap => {
            let (h, _) = head::<FiemapHead>(input, 0, |a| a.head)?;
            let found = agent
                .fiemap(ino, h.offset.get(), h.length.get())
                .map_err(fs_err)?;
            let n = limit(h.nr.get(), FIEMAP_BATCH);
            let enc = |e: &FiemapExtent| Extent {
                logical: e.logical.into(),
                physical: e.physical.into(),
                length: e.length.into(),
                flags: extent_flags(e).into(),
                pad: 0.into(),
            };
            Ok(batch(&found, n, enc, |nr| FiemapHead {
                nr: nr.into(),
                ..h
            }))
        }
    }
}

#[cfg(test)]
mod tests;
