//! The dispatch against a model filesystem: every call round-trips through the very bytes
//! `scoutfs` sends, refusals change nothing, and no input panics.

use super::client::*;
use super::*;
use scoutfs_core::fs::FsResult;
use std::cell::RefCell;

/// A filesystem that answers from fixed data and records every call it gets.
#[derive(Default)]
struct Model {
    calls: RefCell<Vec<String>>,
    index: Vec<IndexEntry>,
    waiting: Vec<DataWaiting>,
    hidden: Vec<Vec<u8>>,
    totals: Vec<XattrTotal>,
    indx: Vec<IndxEntry>,
    extents: Vec<FiemapExtent>,
    staged: RefCell<Vec<(u64, Vec<u8>)>>,
}

impl Model {
    fn log(&self, s: String) {
        self.calls.borrow_mut().push(s);
    }
}

const STAT: StatMore = StatMore {
    meta_seq: 11,
    data_seq: 12,
    data_version: 13,
    online_blocks: 14,
    offline_blocks: 15,
    crtime: Timespec {
        sec: -5,
        nsec: 999_999_999,
    },
    size: 1 << 40,
};

const STATFS: StatfsMore = StatfsMore {
    fsid: 0xfeed_beef_0000_0001,
    rid: u64::MAX,
    committed_seq: 77,
    total_meta_blocks: 1 << 20,
    total_data_blocks: 1 << 30,
    reserved_meta_blocks: 99,
};

impl Agent for Model {
    fn stat_more(&self, ino: u64) -> FsResult<StatMore> {
        self.log(format!("stat_more {ino}"));
        Ok(STAT)
    }
    fn statfs_more(&self) -> FsResult<StatfsMore> {
        self.log("statfs_more".into());
        Ok(STATFS)
    }
    fn walk_inodes(
        &self,
        index: SeqIndex,
        first: IndexPos,
        last: IndexPos,
        limit: usize,
    ) -> FsResult<Vec<IndexEntry>> {
        self.log(format!("walk {index:?}"));
        let key = |e: &IndexEntry| (e.major, e.minor, e.ino);
        let (f, l) = (
            (first.major, first.minor, first.ino),
            (last.major, last.minor, last.ino),
        );
        Ok(self
            .index
            .iter()
            .filter(|e| key(e) >= f && key(e) <= l)
            .take(limit)
            .copied()
            .collect())
    }
    fn release(&self, ino: u64, offset: u64, len: u64, data_version: u64) -> FsResult<()> {
        self.log(format!("release {ino} {offset} {len} {data_version}"));
        if data_version != STAT.data_version {
            return Err(FsError::Stale);
        }
        Ok(())
    }
    fn stage(&self, ino: u64, offset: u64, data: &[u8], data_version: u64) -> FsResult<()> {
        self.log(format!(
            "stage {ino} {offset} {} {data_version}",
            data.len()
        ));
        self.staged.borrow_mut().push((offset, data.to_vec()));
        Ok(())
    }
    fn setattr_more(&self, ino: u64, set: &SetAttrMore) -> FsResult<()> {
        self.log(format!("setattr_more {ino} {set:?}"));
        Ok(())
    }
    fn fiemap(&self, ino: u64, offset: u64, len: u64) -> FsResult<Vec<FiemapExtent>> {
        self.log(format!("fiemap {ino} {offset} {len}"));
        Ok(self
            .extents
            .iter()
            .filter(|e| e.logical + e.length > offset)
            .copied()
            .collect())
    }
    fn data_waiting(&self, after_ino: u64, after_iblock: u64, limit: usize) -> Vec<DataWaiting> {
        self.log(format!("data_waiting {after_ino} {after_iblock}"));
        self.waiting
            .iter()
            .filter(|w| (w.ino, w.iblock) > (after_ino, after_iblock))
            .take(limit)
            .copied()
            .collect()
    }
    fn data_wait_err(
        &self,
        ino: u64,
        offset: u64,
        count: u64,
        ops: u8,
        errno: i32,
    ) -> FsResult<u64> {
        self.log(format!(
            "data_wait_err {ino} {offset} {count} {ops} {errno}"
        ));
        Ok(3)
    }
    fn list_hidden_xattrs(&self, ino: u64) -> FsResult<Vec<Vec<u8>>> {
        self.log(format!("list_hidden_xattrs {ino}"));
        Ok(self.hidden.clone())
    }
    fn read_xattr_totals(&self, from: [u64; 3], limit: usize) -> FsResult<Vec<XattrTotal>> {
        self.log(format!("read_xattr_totals {from:?}"));
        Ok(self
            .totals
            .iter()
            .filter(|t| t.name >= from)
            .take(limit)
            .copied()
            .collect())
    }
    fn read_xattr_index(
        &self,
        first: IndxEntry,
        last: IndxEntry,
        limit: usize,
    ) -> FsResult<Vec<IndxEntry>> {
        self.log("read_xattr_index".into());
        Ok(self
            .indx
            .iter()
            .filter(|e| **e >= first && **e <= last)
            .take(limit)
            .copied()
            .collect())
    }
    fn search_xattrs(
        &self,
        name: &[u8],
        next_ino: u64,
        last_ino: u64,
        limit: usize,
    ) -> FsResult<SearchXattrs> {
        self.log(format!("search_xattrs {}", String::from_utf8_lossy(name)));
        let all: Vec<u64> = (next_ino..=last_ino.min(5000))
            .filter(|i| i % 2 == 0)
            .collect();
        Ok(SearchXattrs {
            complete: all.len() <= limit,
            inos: all.into_iter().take(limit).collect(),
        })
    }
}

/// The ino requests are made on, and the handle of its open file.
const INO: u64 = 4242;
const FH: u64 = 77;

thread_local! {
    /// The daemon's state for the calls of one test (each test runs in a thread of its
    /// own).
    static CONTROL: Control = Control::default();
}

/// A caller: how the file was opened and whether it is privileged.
#[derive(Clone, Copy)]
struct Who {
    open: OpenMode,
    admin: bool,
}

const ROOT_RW: Who = Who {
    open: OpenMode {
        read: true,
        write: true,
        special: false,
    },
    admin: true,
};

/// Makes call `c` as the kernel would: the argument in, the reply copied back over it.
fn call<C: Call>(agent: &dyn Agent, who: Who, c: &C) -> Result<C::Out, Errno> {
    let input = c.request();
    assert_eq!(input.len(), C::CMD.size());
    let out_size = if C::CMD.replies() { input.len() } else { 0 };
    let req = Request {
        ino: INO,
        fh: FH,
        open: who.open,
        cmd: C::CMD.code(),
        input: &input,
        out_size: out_size as u32,
    };
    let r = CONTROL.with(|c| c.dispatch(agent, &req, &|| who.admin))?;
    assert!(r.data.len() <= out_size, "{:?}: reply too long", C::CMD);
    let mut arg = input.clone();
    arg[..r.data.len()].copy_from_slice(&r.data);
    Ok(c.answer(r.result, &arg)
        .expect("a reply this layout allows"))
}

/// [`call`] by a privileged caller, checked against the same call made directly.
fn both<C: Call>(agent: &dyn Agent, c: &C) -> Result<C::Out, Errno>
where
    C::Out: PartialEq + std::fmt::Debug,
{
    let through = call(agent, ROOT_RW, c);
    if let Ok(v) = &through {
        assert_eq!(c.direct(agent, INO).as_ref().ok(), Some(v), "{:?}", C::CMD);
    }
    through
}

fn entry(major: u64, ino: u64) -> IndexEntry {
    IndexEntry {
        major,
        minor: 0,
        ino,
    }
}

#[test]
fn every_call_round_trips_the_filesystem_answer() {
    let m = Model {
        index: (0..10).map(|i| entry(i / 3, 100 + i)).collect(),
        waiting: vec![
            DataWaiting {
                ino: 5,
                iblock: 0,
                ops: DATA_WAIT_READ,
            },
            DataWaiting {
                ino: 5,
                iblock: 7,
                ops: DATA_WAIT_WRITE | DATA_WAIT_CHANGE_SIZE,
            },
        ],
        hidden: vec![b"scoutfs.hide.a".to_vec(), b"scoutfs.hide.srch.b".to_vec()],
        totals: vec![XattrTotal {
            name: [1, 2, 3],
            total: u64::MAX,
            count: 2,
        }],
        indx: vec![IndxEntry {
            major: 255,
            minor: u64::MAX,
            ino: 9,
        }],
        extents: vec![
            FiemapExtent {
                logical: 0,
                physical: 4096,
                length: 8192,
                offline: false,
                unwritten: false,
                last: false,
            },
            FiemapExtent {
                logical: 8192,
                physical: 0,
                length: 4096,
                offline: true,
                unwritten: false,
                last: true,
            },
        ],
        ..Model::default()
    };
    assert_eq!(both(&m, &StatMoreCall), Ok(STAT));
    assert_eq!(both(&m, &StatfsMoreCall), Ok(STATFS));
    let walk = WalkCall {
        index: SeqIndex::Data,
        first: IndexPos {
            major: 1,
            minor: 0,
            ino: 0,
        },
        last: IndexPos {
            major: 2,
            minor: 0,
            ino: u64::MAX,
        },
    };
    assert_eq!(both(&m, &walk), Ok(m.index[3..9].to_vec()));
    let rel = ReleaseCall {
        offset: 4096,
        length: 8192,
        data_version: 13,
    };
    assert_eq!(both(&m, &rel), Ok(()));
    let stale = ReleaseCall {
        data_version: 12,
        ..rel
    };
    assert_eq!(both(&m, &stale), Err(libc::ESTALE));
    let data = vec![7u8; 5000];
    let stage = StageCall {
        offset: 8192,
        data_version: 13,
        data: &data,
        more: false,
    };
    assert_eq!(both(&m, &stage), Ok(5000));
    assert_eq!(m.staged.borrow().last(), Some(&(8192, data.clone())));
    let set = SetAttrMore {
        data_version: 1,
        size: 1 << 50,
        offline: true,
        ctime: Some(Timespec {
            sec: 67305985,
            nsec: 999_999_999,
        }),
        crtime: None,
    };
    assert_eq!(both(&m, &SetattrCall { set }), Ok(()));
    assert_eq!(
        m.calls.borrow().last().unwrap(),
        &format!("setattr_more {INO} {set:?}")
    );
    let waiting = WaitingCall {
        after_ino: 0,
        after_iblock: 0,
    };
    assert_eq!(both(&m, &waiting), Ok(m.waiting.clone()));
    let err = WaitErrCall {
        ino: 5,
        data_version: 0,
        offset: 0,
        count: 4096,
        op: DATA_WAIT_READ,
        err: -libc::EIO,
    };
    assert_eq!(both(&m, &err), Ok(3));
    assert_eq!(
        m.calls.borrow().last().unwrap(),
        &format!("data_wait_err 5 0 4096 1 {}", -libc::EIO)
    );
    assert_eq!(
        both(&m, &HiddenCall { skip: 0 }),
        Ok((m.hidden.clone(), false))
    );
    assert_eq!(
        both(&m, &HiddenCall { skip: 1 }),
        Ok((m.hidden[1..].to_vec(), false))
    );
    assert_eq!(both(&m, &TotalsCall { pos: [0; 3] }), Ok(m.totals.clone()));
    let all = IndexCall {
        first: IndxEntry::default(),
        last: IndxEntry {
            major: 255,
            minor: u64::MAX,
            ino: u64::MAX,
        },
    };
    assert_eq!(both(&m, &all), Ok(m.indx.clone()));
    let fiemap = FiemapCall {
        offset: 0,
        length: u64::MAX,
    };
    assert_eq!(both(&m, &fiemap), Ok(m.extents.clone()));
    let search = SearchCall {
        name: b"scoutfs.srch.x",
        next_ino: 10,
        last_ino: 20,
    };
    assert_eq!(
        both(&m, &search),
        Ok(SearchXattrs {
            inos: vec![10, 12, 14, 16, 18, 20],
            complete: true
        })
    );
}

#[test]
fn lists_come_back_in_batches_that_fit_the_argument() {
    let m = Model {
        index: (0..2000).map(|i| entry(1, i)).collect(),
        hidden: (0..200)
            .map(|i| format!("scoutfs.hide.{i:0>200}").into_bytes())
            .collect(),
        ..Model::default()
    };
    let walk = WalkCall {
        index: SeqIndex::Meta,
        first: IndexPos::default(),
        last: IndexPos {
            major: u64::MAX,
            minor: u32::MAX,
            ino: u64::MAX,
        },
    };
    let got = call(&m, ROOT_RW, &walk).unwrap();
    assert_eq!(got, m.index[..WALK_BATCH].to_vec());
    // Hidden names: read on from what was read until no more.
    let mut names = Vec::new();
    let mut batches = 0;
    loop {
        let (n, more) = call(
            &m,
            ROOT_RW,
            &HiddenCall {
                skip: names.len() as u32,
            },
        )
        .unwrap();
        assert!(!n.is_empty());
        names.extend(n);
        batches += 1;
        if !more {
            break;
        }
    }
    assert_eq!(names, m.hidden);
    assert!(batches >= 3, "{batches}");
    // A search of more candidates than fit says it is not complete.
    let search = SearchCall {
        name: b"scoutfs.srch.x",
        next_ino: 0,
        last_ino: u64::MAX,
    };
    let got = call(&m, ROOT_RW, &search).unwrap();
    assert_eq!(got.inos.len(), SEARCH_BATCH);
    assert!(!got.complete);
}

/// A request refused with `errno`, and the filesystem never asked.
fn refused<C: Call>(who: Who, c: &C, errno: Errno) {
    let m = Model::default();
    assert_eq!(call(&m, who, c).err(), Some(errno), "{:?}", C::CMD);
    assert!(m.calls.borrow().is_empty(), "{:?}: {:?}", C::CMD, m.calls);
}

#[test]
fn callers_without_the_rights_are_refused_and_nothing_is_asked() {
    let user = |read, write| Who {
        open: OpenMode {
            read,
            write,
            special: false,
        },
        admin: false,
    };
    let root = |read, write| Who {
        admin: true,
        ..user(read, write)
    };
    let rel = ReleaseCall {
        offset: 0,
        length: 4096,
        data_version: STAT.data_version,
    };
    refused(root(true, false), &rel, libc::EINVAL);
    let stage = StageCall {
        offset: 0,
        data_version: 1,
        data: b"x",
        more: false,
    };
    refused(root(true, false), &stage, libc::EINVAL);
    let append = Who {
        open: OpenMode {
            read: true,
            write: true,
            special: true,
        },
        admin: true,
    };
    refused(append, &stage, libc::EINVAL);
    let set = SetattrCall {
        set: SetAttrMore::default(),
    };
    refused(root(true, false), &set, libc::EBADF);
    refused(user(true, true), &set, libc::EPERM);
    let err = WaitErrCall {
        ino: 1,
        data_version: 0,
        offset: 0,
        count: 1,
        op: DATA_WAIT_READ,
        err: -5,
    };
    refused(user(true, true), &err, libc::EPERM);
    let search = SearchCall {
        name: b"scoutfs.srch.x",
        next_ino: 0,
        last_ino: u64::MAX,
    };
    refused(user(true, false), &search, libc::EPERM);
    refused(root(false, true), &search, libc::EBADF);
    let totals = TotalsCall { pos: [0; 3] };
    refused(user(true, false), &totals, libc::EPERM);
    refused(root(false, true), &totals, libc::EBADF);
    let index = IndexCall {
        first: IndxEntry::default(),
        last: IndxEntry::default(),
    };
    refused(user(true, false), &index, libc::EPERM);
    refused(root(false, true), &HiddenCall { skip: 0 }, libc::EACCES);
    // What the original lets anyone do, anyone may.
    let m = Model::default();
    let nobody = user(true, false);
    assert!(call(&m, nobody, &StatMoreCall).is_ok());
    assert!(call(&m, nobody, &StatfsMoreCall).is_ok());
    assert!(call(
        &m,
        nobody,
        &WaitingCall {
            after_ino: 0,
            after_iblock: 0
        }
    )
    .is_ok());
    assert!(call(&m, nobody, &HiddenCall { skip: 0 }).is_ok());
    assert!(call(&m, user(false, true), &rel).is_ok());
    let f = FiemapCall {
        offset: 0,
        length: 1,
    };
    assert!(call(&m, nobody, &f).is_ok());
}

/// Dispatches raw `input` as command `code` with `out_size` by a privileged caller.
fn raw(m: &Model, code: u32, input: &[u8], out_size: usize) -> Result<Reply, Errno> {
    let req = Request {
        ino: INO,
        fh: FH,
        open: ROOT_RW.open,
        cmd: code,
        input,
        out_size: out_size as u32,
    };
    Control::default().dispatch(m, &req, &|| true)
}

#[test]
fn bad_requests_are_refused_with_einval_enotty_or_eproto() {
    let m = Model::default();
    let good = StatMoreCall.request();
    let code = Cmd::StatMore.code();
    let size = good.len();
    assert!(raw(&m, code, &good, size).is_ok());
    m.calls.borrow_mut().clear();
    // Not ours, ours of another size, the argument or reply size not the command's.
    assert_eq!(raw(&m, 0x5401, &good, size), Err(libc::ENOTTY));
    assert_eq!(raw(&m, code ^ (1 << 16), &good, size), Err(libc::EINVAL));
    assert_eq!(raw(&m, code, &good[..size - 1], size), Err(libc::EINVAL));
    assert_eq!(raw(&m, code, &good, 0), Err(libc::EINVAL));
    // Another version; unknown flags.
    let mut v2 = good.clone();
    v2[0] = 2;
    assert_eq!(raw(&m, code, &v2, size), Err(libc::EPROTO));
    let mut flagged = good.clone();
    flagged[4] = 1;
    assert_eq!(raw(&m, code, &flagged, size), Err(libc::EINVAL));
    // Fields out of range.
    let walk = WalkCall {
        index: SeqIndex::Meta,
        first: IndexPos::default(),
        last: IndexPos::default(),
    };
    let mut bad_index = walk.request();
    bad_index[8] = 2;
    let wsize = Cmd::WalkInodes.size();
    assert_eq!(
        raw(&m, Cmd::WalkInodes.code(), &bad_index, wsize),
        Err(libc::EINVAL)
    );
    for (op, err) in [
        (8, -5),
        (DATA_WAIT_READ, 0),
        (DATA_WAIT_READ, 5),
        (1, -4096),
    ] {
        let c = WaitErrCall {
            ino: 1,
            data_version: 0,
            offset: 0,
            count: 1,
            op,
            err,
        };
        assert_eq!(call(&m, ROOT_RW, &c), Err(libc::EINVAL), "{op} {err}");
    }
    let set = SetattrCall {
        set: SetAttrMore {
            ctime: Some(Timespec {
                sec: 1,
                nsec: 1_000_000_000,
            }),
            ..SetAttrMore::default()
        },
    };
    assert_eq!(call(&m, ROOT_RW, &set), Err(libc::EINVAL));
    for name in [&b"user.x"[..], b"scoutfs.hide.x", b"scoutfs.srch"] {
        let search = SearchCall {
            name,
            next_ino: 0,
            last_ino: 1,
        };
        assert_eq!(call(&m, ROOT_RW, &search), Err(libc::EINVAL));
        assert!(search.direct(&m, INO).is_err());
    }
    let long = [b'a'; 256];
    let search = SearchCall {
        name: &long,
        next_ino: 0,
        last_ino: 1,
    };
    assert_eq!(call(&m, ROOT_RW, &search), Err(libc::EINVAL));
    let mut stage = StageCall {
        offset: 0,
        data_version: 1,
        data: b"abc",
        more: false,
    }
    .request();
    stage[24..28].copy_from_slice(&(STAGE_CHUNK as u32 + 1).to_le_bytes());
    assert_eq!(raw(&m, Cmd::Stage.code(), &stage, 0), Err(libc::EINVAL));
    assert!(m.calls.borrow().is_empty(), "{:?}", m.calls);
}

#[test]
fn garbage_never_panics_the_daemon() {
    let m = Model {
        index: (0..50).map(|i| entry(i, i)).collect(),
        hidden: vec![b"scoutfs.hide.x".to_vec()],
        ..Model::default()
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..4000 {
        let c = Cmd::ALL[(next() % Cmd::ALL.len() as u64) as usize];
        let mut input: Vec<u8> = (0..c.size()).map(|_| next() as u8).collect();
        // Mostly the right version, so the decoding behind it is reached too.
        if round % 4 != 0 {
            input[..4].copy_from_slice(&VERSION.to_le_bytes());
        }
        if round % 3 == 0 {
            input[4..8].fill(0);
        }
        let out = if c.replies() { c.size() } else { 0 };
        let (code, out) = match round % 10 {
            0 => (next() as u32, out),
            1 => (c.code(), next() as usize % (MAX_ARG + 2)),
            _ => (c.code(), out),
        };
        let len = if round % 7 == 0 {
            next() as usize % input.len()
        } else {
            input.len()
        };
        if let Ok(r) = raw(&m, code, &input[..len], out) {
            assert!(r.data.len() <= out, "{c:?}");
        }
    }
}

#[test]
fn a_stage_in_pieces_is_one_filesystem_stage() {
    let m = Model::default();
    let data: Vec<u8> = (0..STAGE_CHUNK * 3 + 100).map(|i| i as u8).collect();
    let pieces: Vec<&[u8]> = data.chunks(STAGE_CHUNK).collect();
    for (i, p) in pieces.iter().enumerate() {
        let c = StageCall {
            offset: 8192 + (i * STAGE_CHUNK) as u64,
            data_version: 13,
            data: p,
            more: i + 1 < pieces.len(),
        };
        assert_eq!(call(&m, ROOT_RW, &c), Ok(p.len()));
        // Nothing reaches the filesystem before the last piece.
        assert_eq!(m.staged.borrow().len(), usize::from(i + 1 == pieces.len()));
    }
    assert_eq!(m.staged.borrow().as_slice(), &[(8192, data.clone())]);
    assert_eq!(m.calls.borrow().len(), 1, "{:?}", m.calls);
    // A piece that does not follow is refused, and the stage gathered so far dropped.
    let first = StageCall {
        offset: 0,
        data_version: 13,
        data: pieces[0],
        more: true,
    };
    assert_eq!(call(&m, ROOT_RW, &first), Ok(STAGE_CHUNK));
    let gap = StageCall {
        offset: STAGE_CHUNK as u64 + 4096,
        more: false,
        ..first
    };
    assert_eq!(call(&m, ROOT_RW, &gap), Err(libc::EINVAL));
    assert_eq!(m.staged.borrow().len(), 1);
    // A caller who may not write gathers nothing.
    let reader = Who {
        open: OpenMode {
            read: true,
            write: false,
            special: false,
        },
        admin: true,
    };
    assert_eq!(call(&m, reader, &first), Err(libc::EINVAL));
    let last = StageCall {
        offset: 0,
        more: false,
        ..first
    };
    assert_eq!(call(&m, ROOT_RW, &last), Ok(STAGE_CHUNK));
    assert_eq!(m.staged.borrow().last(), Some(&(0, pieces[0].to_vec())));
}
