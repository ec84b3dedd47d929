//! The caller's side of the control channel: each [`Call`] builds the argument of one
//! request and reads the answer out of the ioctl's return value and the argument the
//! reply was copied over. `scoutfs` makes them with an ioctl; the dispatch tests make
//! them with [`super::dispatch`] directly, so both use these very bytes.

use super::api::*;
use super::wire::*;
use scoutfs_core::fs::{FsResult, Timespec};
use zerocopy::byteorder::little_endian::U64;

/// One request and the reading of its answer.
pub trait Call {
    /// What the answer says.
    type Out;
    /// The command.
    const CMD: Cmd;
    /// The whole argument ([`Cmd::size`] bytes).
    fn request(&self) -> Vec<u8>;
    /// The answer, from the ioctl's return value and the argument after the call; `None`
    /// if the reply is not one this layout allows.
    fn answer(&self, result: i32, arg: &[u8]) -> Option<Self::Out>;
    /// The same request made of `agent` directly, on inode `ino`, with the daemon's batch
    /// limits but none of its checks: for a volume the caller opened itself (`scoutfs`
    /// on an unmounted volume).
    fn direct(&self, agent: &dyn Agent, ino: u64) -> FsResult<Self::Out>;
}

/// The entries of a list reply of head `H` (`nr` of them, by `nr_of`), each read by `dec`.
fn entries<H, E, T>(arg: &[u8], nr_of: impl Fn(&H) -> u32, dec: impl Fn(&E) -> T) -> Option<Vec<T>>
where
    H: zerocopy::FromBytes + zerocopy::KnownLayout + zerocopy::Immutable,
    E: zerocopy::FromBytes + zerocopy::KnownLayout + zerocopy::Immutable + zerocopy::Unaligned,
{
    let (h, rest) = decode_head::<H>(arg)?;
    let e = decode_entries::<E>(rest, nr_of(&h) as usize)?;
    Some(e.iter().map(dec).collect())
}

fn request<H: zerocopy::IntoBytes + zerocopy::Immutable>(cmd: Cmd, head: &H) -> Vec<u8> {
    encode::<H, u8>(head, &[], cmd.size())
}

/// `stat_more` of the file the request is made on.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatMoreCall;

impl Call for StatMoreCall {
    type Out = StatMore;
    const CMD: Cmd = Cmd::StatMore;
    fn request(&self) -> Vec<u8> {
        let arg = StatMoreArg {
            head: Head::new(0),
            ..StatMoreArg::default()
        };
        request(Self::CMD, &arg)
    }
    fn answer(&self, _: i32, arg: &[u8]) -> Option<StatMore> {
        let (a, _) = decode_head::<StatMoreArg>(arg)?;
        Some(StatMore {
            meta_seq: a.meta_seq.get(),
            data_seq: a.data_seq.get(),
            data_version: a.data_version.get(),
            online_blocks: a.online_blocks.get(),
            offline_blocks: a.offline_blocks.get(),
            crtime: Timespec {
                sec: a.crtime_sec.get(),
                nsec: a.crtime_nsec.get(),
            },
            size: a.size.get(),
        })
    }
    fn direct(&self, agent: &dyn Agent, ino: u64) -> FsResult<StatMore> {
        agent.stat_more(ino)
    }
}

/// `statfs_more` of the mount.
#[derive(Debug, Clone, Copy, Default)]
pub struct StatfsMoreCall;

impl Call for StatfsMoreCall {
    type Out = StatfsMore;
    const CMD: Cmd = Cmd::StatfsMore;
    fn request(&self) -> Vec<u8> {
        let arg = StatfsMoreArg {
            head: Head::new(0),
            ..StatfsMoreArg::default()
        };
        request(Self::CMD, &arg)
    }
    fn answer(&self, _: i32, arg: &[u8]) -> Option<StatfsMore> {
        let (a, _) = decode_head::<StatfsMoreArg>(arg)?;
        Some(StatfsMore {
            fsid: a.fsid.get(),
            rid: a.rid.get(),
            committed_seq: a.committed_seq.get(),
            total_meta_blocks: a.total_meta_blocks.get(),
            total_data_blocks: a.total_data_blocks.get(),
            reserved_meta_blocks: a.reserved_meta_blocks.get(),
        })
    }
    fn direct(&self, agent: &dyn Agent, _: u64) -> FsResult<StatfsMore> {
        agent.statfs_more()
    }
}

/// One batch of a seq index walk from `first` to `last`.
#[derive(Debug, Clone, Copy)]
pub struct WalkCall {
    pub index: SeqIndex,
    pub first: IndexPos,
    pub last: IndexPos,
}

fn pos(p: IndexPos) -> Pos {
    Pos {
        major: p.major.into(),
        minor: p.minor.into(),
        pad: 0.into(),
        ino: p.ino.into(),
    }
}

impl Call for WalkCall {
    type Out = Vec<IndexEntry>;
    const CMD: Cmd = Cmd::WalkInodes;
    fn request(&self) -> Vec<u8> {
        let h = WalkHead {
            head: Head::new(0),
            index: match self.index {
                SeqIndex::Meta => INDEX_META_SEQ,
                SeqIndex::Data => INDEX_DATA_SEQ,
            },
            pad: [0; 3],
            nr: (WALK_BATCH as u32).into(),
            first: pos(self.first),
            last: pos(self.last),
        };
        request(Self::CMD, &h)
    }
    fn answer(&self, _: i32, arg: &[u8]) -> Option<Vec<IndexEntry>> {
        entries(
            arg,
            |h: &WalkHead| h.nr.get(),
            |p: &Pos| IndexEntry {
                major: p.major.get(),
                minor: p.minor.get(),
                ino: p.ino.get(),
            },
        )
    }
    fn direct(&self, agent: &dyn Agent, _: u64) -> FsResult<Vec<IndexEntry>> {
        let mut v = agent.walk_inodes(self.index, self.first, self.last, WALK_BATCH)?;
        v.truncate(WALK_BATCH);
        Ok(v)
    }
}

/// `release` of `length` bytes at `offset` of the file.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseCall {
    pub offset: u64,
    pub length: u64,
    pub data_version: u64,
}

impl Call for ReleaseCall {
    type Out = ();
    const CMD: Cmd = Cmd::Release;
    fn request(&self) -> Vec<u8> {
        let a = ReleaseArg {
            head: Head::new(0),
            offset: self.offset.into(),
            length: self.length.into(),
            data_version: self.data_version.into(),
        };
        request(Self::CMD, &a)
    }
    fn answer(&self, _: i32, _: &[u8]) -> Option<()> {
        Some(())
    }
    fn direct(&self, agent: &dyn Agent, ino: u64) -> FsResult<()> {
        agent.release(ino, self.offset, self.length, self.data_version)
    }
}

/// `stage` of `data` (at most [`STAGE_CHUNK`] bytes; the rest is not sent) at `offset`;
/// with `more`, a piece of a stage whose last piece (without it) stages them all as one
/// (module `gather`).
#[derive(Debug, Clone, Copy)]
pub struct StageCall<'a> {
    pub offset: u64,
    pub data_version: u64,
    pub data: &'a [u8],
    pub more: bool,
}

impl Call for StageCall<'_> {
    /// The bytes staged.
    type Out = usize;
    const CMD: Cmd = Cmd::Stage;
    fn request(&self) -> Vec<u8> {
        let data = &self.data[..self.data.len().min(STAGE_CHUNK)];
        let h = StageHead {
            head: Head::new(if self.more { STAGE_MORE } else { 0 }),
            offset: self.offset.into(),
            data_version: self.data_version.into(),
            len: (data.len() as u32).into(),
            pad: 0.into(),
        };
        encode(&h, data, Self::CMD.size())
    }
    fn answer(&self, result: i32, _: &[u8]) -> Option<usize> {
        usize::try_from(result).ok()
    }
    fn direct(&self, agent: &dyn Agent, ino: u64) -> FsResult<usize> {
        let data = &self.data[..self.data.len().min(STAGE_CHUNK)];
        agent.stage(ino, self.offset, data, self.data_version)?;
        Ok(data.len())
    }
}

/// `setattr_more` of the file.
#[derive(Debug, Clone, Copy)]
pub struct SetattrCall {
    pub set: SetAttrMore,
}

impl Call for SetattrCall {
    type Out = ();
    const CMD: Cmd = Cmd::SetattrMore;
    fn request(&self) -> Vec<u8> {
        let s = &self.set;
        let flag = |on: bool, f: u32| if on { f } else { 0 };
        let flags = flag(s.offline, SETATTR_OFFLINE)
            | flag(s.ctime.is_some(), SETATTR_CTIME)
            | flag(s.crtime.is_some(), SETATTR_CRTIME);
        let (c, r) = (s.ctime.unwrap_or_default(), s.crtime.unwrap_or_default());
        let a = SetattrMoreArg {
            head: Head::new(flags),
            data_version: s.data_version.into(),
            size: s.size.into(),
            ctime_sec: c.sec.into(),
            ctime_nsec: c.nsec.into(),
            pad: 0.into(),
            crtime_sec: r.sec.into(),
            crtime_nsec: r.nsec.into(),
            pad2: 0.into(),
        };
        request(Self::CMD, &a)
    }
    fn answer(&self, _: i32, _: &[u8]) -> Option<()> {
        Some(())
    }
    fn direct(&self, agent: &dyn Agent, ino: u64) -> FsResult<()> {
        agent.setattr_more(ino, &self.set)
    }
}

/// One batch of the blocks waited for after `(after_ino, after_iblock)`.
#[derive(Debug, Clone, Copy)]
pub struct WaitingCall {
    pub after_ino: u64,
    pub after_iblock: u64,
}

impl Call for WaitingCall {
    type Out = Vec<DataWaiting>;
    const CMD: Cmd = Cmd::DataWaiting;
    fn request(&self) -> Vec<u8> {
        let h = WaitingHead {
            head: Head::new(0),
            after_ino: self.after_ino.into(),
            after_iblock: self.after_iblock.into(),
            nr: (WAITING_BATCH as u32).into(),
            pad: 0.into(),
        };
        request(Self::CMD, &h)
    }
    fn answer(&self, _: i32, arg: &[u8]) -> Option<Vec<DataWaiting>> {
        entries(
            arg,
            |h: &WaitingHead| h.nr.get(),
            |w: &WaitingEntry| DataWaiting {
                ino: w.ino.get(),
                iblock: w.iblock.get(),
                ops: w.ops,
            },
        )
    }
    fn direct(&self, agent: &dyn Agent, _: u64) -> FsResult<Vec<DataWaiting>> {
        let mut v = agent.data_waiting(self.after_ino, self.after_iblock, WAITING_BATCH);
        v.truncate(WAITING_BATCH);
        Ok(v)
    }
}

/// `data_wait_err`: fail the waiters of `ops` on `count` bytes at `offset` of inode
/// `ino` with `err` (a negative errno).
#[derive(Debug, Clone, Copy)]
pub struct WaitErrCall {
    pub ino: u64,
    pub data_version: u64,
    pub offset: u64,
    pub count: u64,
    pub op: u8,
    pub err: i32,
}

impl Call for WaitErrCall {
    /// The waiters woken.
    type Out = u64;
    const CMD: Cmd = Cmd::DataWaitErr;
    fn request(&self) -> Vec<u8> {
        let a = DataWaitErrArg {
            head: Head::new(0),
            ino: self.ino.into(),
            data_version: self.data_version.into(),
            offset: self.offset.into(),
            count: self.count.into(),
            op: self.op,
            pad: [0; 3],
            err: self.err.into(),
        };
        request(Self::CMD, &a)
    }
    fn answer(&self, result: i32, _: &[u8]) -> Option<u64> {
        u64::try_from(result).ok()
    }
    fn direct(&self, agent: &dyn Agent, _: u64) -> FsResult<u64> {
        agent.data_wait_err(self.ino, self.offset, self.count, self.op, self.err)
    }
}

/// One batch of the file's hidden xattr names, after the first `skip`.
#[derive(Debug, Clone, Copy)]
pub struct HiddenCall {
    pub skip: u32,
}

impl Call for HiddenCall {
    /// The names, and whether more follow.
    type Out = (Vec<Vec<u8>>, bool);
    const CMD: Cmd = Cmd::ListHiddenXattrs;
    fn request(&self) -> Vec<u8> {
        let h = HiddenHead {
            head: Head::new(0),
            skip: self.skip.into(),
            ..HiddenHead::default()
        };
        request(Self::CMD, &h)
    }
    fn answer(&self, _: i32, arg: &[u8]) -> Option<(Vec<Vec<u8>>, bool)> {
        let (h, rest) = decode_head::<HiddenHead>(arg)?;
        let bytes = rest.get(..h.bytes.get() as usize)?;
        let names: Vec<Vec<u8>> = match bytes.split_last() {
            None => Vec::new(),
            Some((0, names)) => names.split(|&b| b == 0).map(<[u8]>::to_vec).collect(),
            Some(_) => return None,
        };
        if names.len() != h.nr.get() as usize {
            return None;
        }
        Some((names, h.head.flags.get() & HIDDEN_MORE != 0))
    }
    fn direct(&self, agent: &dyn Agent, ino: u64) -> FsResult<(Vec<Vec<u8>>, bool)> {
        let names = agent.list_hidden_xattrs(ino)?;
        Ok((names.into_iter().skip(self.skip as usize).collect(), false))
    }
}

/// One batch of the inodes from `next_ino` to `last_ino` that may have xattr `name`.
#[derive(Debug, Clone, Copy)]
pub struct SearchCall<'a> {
    pub name: &'a [u8],
    pub next_ino: u64,
    pub last_ino: u64,
}

impl Call for SearchCall<'_> {
    type Out = SearchXattrs;
    const CMD: Cmd = Cmd::SearchXattrs;
    fn request(&self) -> Vec<u8> {
        let mut name = [0u8; XATTR_NAME_MAX + 1];
        let n = self.name.len().min(name.len());
        name[..n].copy_from_slice(&self.name[..n]);
        let h = SearchHead {
            head: Head::new(0),
            next_ino: self.next_ino.into(),
            last_ino: self.last_ino.into(),
            // A longer name is sent as too long, for the daemon to refuse.
            name_len: u16::try_from(self.name.len()).unwrap_or(u16::MAX).into(),
            pad: [0; 2],
            nr: (SEARCH_BATCH as u32).into(),
            name,
        };
        request(Self::CMD, &h)
    }
    fn answer(&self, _: i32, arg: &[u8]) -> Option<SearchXattrs> {
        let (h, rest) = decode_head::<SearchHead>(arg)?;
        let inos = decode_entries::<U64>(rest, h.nr.get() as usize)?;
        Some(SearchXattrs {
            inos: inos.iter().map(|i| i.get()).collect(),
            complete: h.head.flags.get() & SEARCH_END != 0,
        })
    }
    fn direct(&self, agent: &dyn Agent, _: u64) -> FsResult<SearchXattrs> {
        if self.last_ino < self.next_ino {
            return Ok(SearchXattrs::default());
        }
        check_srch_name(self.name)?;
        let mut s = agent.search_xattrs(self.name, self.next_ino, self.last_ino, SEARCH_BATCH)?;
        if s.inos.len() > SEARCH_BATCH {
            s.inos.truncate(SEARCH_BATCH);
            s.complete = false;
        }
        Ok(s)
    }
}

/// One batch of the `.totl.` totals from name `pos` on.
#[derive(Debug, Clone, Copy)]
pub struct TotalsCall {
    pub pos: [u64; 3],
}

impl Call for TotalsCall {
    type Out = Vec<XattrTotal>;
    const CMD: Cmd = Cmd::ReadXattrTotals;
    fn request(&self) -> Vec<u8> {
        let h = TotalsHead {
            head: Head::new(0),
            pos: self.pos.map(Into::into),
            nr: (TOTALS_BATCH as u32).into(),
            pad: 0.into(),
        };
        request(Self::CMD, &h)
    }
    fn answer(&self, _: i32, arg: &[u8]) -> Option<Vec<XattrTotal>> {
        entries(
            arg,
            |h: &TotalsHead| h.nr.get(),
            |t: &Total| XattrTotal {
                name: t.name.map(|n| n.get()),
                total: t.total.get(),
                count: t.count.get(),
            },
        )
    }
    fn direct(&self, agent: &dyn Agent, _: u64) -> FsResult<Vec<XattrTotal>> {
        let mut v = agent.read_xattr_totals(self.pos, TOTALS_BATCH)?;
        v.truncate(TOTALS_BATCH);
        Ok(v)
    }
}

/// One batch of the `.indx.` index from `first` to `last`.
#[derive(Debug, Clone, Copy)]
pub struct IndexCall {
    pub first: IndxEntry,
    pub last: IndxEntry,
}

fn indx(e: IndxEntry) -> IndxPos {
    IndxPos {
        major: e.major,
        pad: [0; 7],
        minor: e.minor.into(),
        ino: e.ino.into(),
    }
}

impl Call for IndexCall {
    type Out = Vec<IndxEntry>;
    const CMD: Cmd = Cmd::ReadXattrIndex;
    fn request(&self) -> Vec<u8> {
        let h = IndexHead {
            head: Head::new(0),
            first: indx(self.first),
            last: indx(self.last),
            nr: (INDEX_BATCH as u32).into(),
            pad: 0.into(),
        };
        request(Self::CMD, &h)
    }
    fn answer(&self, _: i32, arg: &[u8]) -> Option<Vec<IndxEntry>> {
        entries(
            arg,
            |h: &IndexHead| h.nr.get(),
            |p: &IndxPos| IndxEntry {
                major: p.major,
                minor: p.minor.get(),
                ino: p.ino.get(),
            },
        )
    }
    fn direct(&self, agent: &dyn Agent, _: u64) -> FsResult<Vec<IndxEntry>> {
        let mut v = agent.read_xattr_index(self.first, self.last, INDEX_BATCH)?;
        v.truncate(INDEX_BATCH);
        Ok(v)
    }
}

/// One batch of the extents of `length` bytes of the file from `offset`.
#[derive(Debug, Clone, Copy)]
pub struct FiemapCall {
    pub offset: u64,
    pub length: u64,
}

impl Call for FiemapCall {
    type Out = Vec<FiemapExtent>;
    const CMD: Cmd = Cmd::Fiemap;
    fn request(&self) -> Vec<u8> {
        let h = FiemapHead {
            head: Head::new(0),
            offset: self.offset.into(),
            length: self.length.into(),
            nr: (FIEMAP_BATCH as u32).into(),
            pad: 0.into(),
        };
        request(Self::CMD, &h)
    }
    fn answer(&self, _: i32, arg: &[u8]) -> Option<Vec<FiemapExtent>> {
        entries(
            arg,
            |h: &FiemapHead| h.nr.get(),
            |x: &Extent| {
                let f = x.flags.get();
                FiemapExtent {
                    logical: x.logical.get(),
                    physical: x.physical.get(),
                    length: x.length.get(),
                    offline: f & EXTENT_OFFLINE != 0,
                    unwritten: f & EXTENT_UNWRITTEN != 0,
                    last: f & EXTENT_LAST != 0,
                }
            },
        )
    }
    fn direct(&self, agent: &dyn Agent, ino: u64) -> FsResult<Vec<FiemapExtent>> {
        let mut v = agent.fiemap(ino, self.offset, self.length)?;
        v.truncate(FIEMAP_BATCH);
        Ok(v)
    }
}
