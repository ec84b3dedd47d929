#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Every message survives its wire form, and no bytes make a decoder panic.

#[path = "../../scoutfs-core/tests/common/mod.rs"]
mod common;

use proptest::prelude::*;
use scoutfs_core::format::{
    BlockRef, BtreeRoot, Key, LogMergeComplete, LogMergeRequest, LogTrees, SrchCompact,
};
use scoutfs_core::server::{MergeConfig, MergePhase, MergeStall};
use scoutfs_core::transport::*;
use scoutfs_net::wire::*;
use zerocopy::FromBytes;

fn cases() -> ProptestConfig {
    ProptestConfig::with_cases(common::proptest_cases(256))
}

fn key() -> impl Strategy<Value = Key> {
    (
        any::<u8>(),
        any::<u64>(),
        any::<u8>(),
        any::<u64>(),
        any::<u64>(),
        any::<u8>(),
    )
        .prop_map(|(z, a, t, b, c, d)| Key::new(z, a, t, b, c, d))
}

fn mode() -> impl Strategy<Value = LockMode> {
    (0u8..4).prop_map(|m| LockMode::from_u8(m).unwrap())
}

fn lock() -> impl Strategy<Value = NetLock> {
    (key(), any::<u64>(), mode(), mode()).prop_map(|(key, write_seq, old_mode, new_mode)| NetLock {
        key,
        write_seq,
        old_mode,
        new_mode,
    })
}

fn raw<T: FromBytes + std::fmt::Debug>() -> impl Strategy<Value = Box<T>> {
    proptest::collection::vec(any::<u8>(), size_of::<T>())
        .prop_map(|b| Box::new(T::read_from_bytes(&b).unwrap()))
}

fn root() -> impl Strategy<Value = BtreeRoot> {
    (any::<u64>(), any::<u64>(), any::<u8>()).prop_map(|(blkno, seq, height)| BtreeRoot {
        blk: BlockRef { blkno, seq },
        height,
    })
}

fn merge_config() -> impl Strategy<Value = MergeConfig> {
    (
        any::<u8>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<[u64; 3]>(),
    )
        .prop_map(
            |(finalize_height, batch, a, b, c, d, headroom_limit)| MergeConfig {
                finalize_height,
                batch,
                request_blocks: a as usize,
                merge_dirty_blocks: b as usize,
                splice_commit_blocks: c as usize,
                free_budget: d as usize,
                headroom_limit,
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    let rid = any::<u64>();
    prop_oneof![
        (any::<u64>(), any::<bool>())
            .prop_map(|(rid, reconnect)| Request::Greeting { rid, reconnect }),
        rid.prop_map(|rid| Request::GetLogTrees { rid }),
        raw::<LogTrees>().prop_map(Request::CommitLogTrees),
        any::<u64>().prop_map(|rid| Request::GetLogMerge { rid }),
        raw::<LogMergeComplete>().prop_map(Request::CommitLogMerge),
        any::<u64>().prop_map(|rid| Request::GetSrchCompact { rid }),
        raw::<SrchCompact>().prop_map(Request::CommitSrchCompact),
        (any::<u64>(), any::<u64>()).prop_map(|(rid, count)| Request::AllocInodes { rid, count }),
        any::<u64>().prop_map(|rid| Request::Farewell { rid }),
        lock().prop_map(Request::Lock),
        Just(Request::GetRoots),
        Just(Request::GetLastSeq),
        Just(Request::Statfs),
        any::<u64>().prop_map(|group_nr| Request::OpenInoMap { group_nr }),
        Just(Request::Merge(MergeAdmin::ForceFinalize)),
        Just(Request::Merge(MergeAdmin::Status)),
        merge_config().prop_map(|c| Request::Merge(MergeAdmin::SetConfig(c))),
    ]
}

fn stall() -> impl Strategy<Value = Option<MergeStall>> {
    proptest::option::of(
        (0u8..3, any::<u64>(), any::<u64>()).prop_map(|(p, headroom, need)| MergeStall {
            phase: [MergePhase::Splice, MergePhase::Rebalance, MergePhase::Free][p as usize],
            headroom,
            need,
        }),
    )
}

/// A response with the command of the request it answers.
fn response() -> impl Strategy<Value = (Cmd, Response)> {
    prop_oneof![
        any::<u64>().prop_map(|fsid| (Cmd::Mount, Response::Greeting { fsid })),
        raw::<LogTrees>().prop_map(|l| (Cmd::GetLogTrees, Response::LogTrees(l))),
        raw::<LogTrees>().prop_map(|l| (Cmd::CommitLogTrees, Response::LogTrees(l))),
        proptest::option::of(raw::<LogMergeRequest>())
            .prop_map(|m| (Cmd::GetLogMerge, Response::LogMerge(m))),
        proptest::option::of(raw::<SrchCompact>())
            .prop_map(|s| (Cmd::SrchGetCompact, Response::SrchCompact(s))),
        (any::<u64>(), any::<u64>())
            .prop_map(|(first, count)| (Cmd::AllocInodes, Response::Inodes { first, count })),
        prop_oneof![
            Just(Cmd::CommitLogMerge),
            Just(Cmd::SrchCommitCompact),
            Just(Cmd::Farewell),
            Just(Cmd::MergeAdmin)
        ]
        .prop_map(|c| (c, Response::Done)),
        lock().prop_map(|l| (Cmd::Lock, Response::Lock(l))),
        (
            any::<u64>(),
            root(),
            root(),
            root(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(|(seq, fs_root, logs_root, srch_root, meta_low, data_low)| {
                (
                    Cmd::GetRoots,
                    Response::Roots(CommittedRoots {
                        seq,
                        fs_root,
                        logs_root,
                        srch_root,
                        meta_low,
                        data_low,
                    }),
                )
            }),
        any::<u64>().prop_map(|s| (Cmd::GetLastSeq, Response::Seq(s))),
        any::<[u64; 7]>().prop_map(|v| (
            Cmd::Statfs,
            Response::Statfs(VolumeStats {
                fsid: v[0],
                total_meta_blocks: v[1],
                total_data_blocks: v[2],
                meta_free_blocks: v[3],
                data_free_blocks: v[4],
                inode_count: v[5],
                reserved_meta_blocks: v[6],
            })
        )),
        any::<[u64; 16]>().prop_map(|b| (Cmd::OpenInoMap, Response::OpenInoMap(Box::new(b)))),
        (any::<bool>(), any::<u64>(), stall()).prop_map(|(running, logs_with_items, stall)| {
            (
                Cmd::MergeAdmin,
                Response::Merge(MergeStatus {
                    running,
                    logs_with_items,
                    stall,
                }),
            )
        }),
    ]
}

fn server_request() -> impl Strategy<Value = ServerRequest> {
    prop_oneof![
        Just(ServerRequest::SyncLogTrees),
        lock().prop_map(ServerRequest::LockInvalidate),
        key().prop_map(|key| ServerRequest::LockRecover { key }),
        any::<u64>().prop_map(|group_nr| ServerRequest::OpenInoMap { group_nr }),
    ]
}

fn client_reply() -> impl Strategy<Value = (Cmd, ClientReply)> {
    prop_oneof![
        Just((Cmd::SyncLogTrees, ClientReply::Done)),
        lock().prop_map(|l| (Cmd::Lock, ClientReply::Lock(l))),
        proptest::collection::vec(lock(), 0..=LOCK_RECOVER_BATCH)
            .prop_map(|v| (Cmd::LockRecover, ClientReply::LockRecover(v))),
        (any::<u64>(), any::<[u64; 16]>()).prop_map(|(group_nr, b)| (
            Cmd::OpenInoMap,
            ClientReply::OpenInoMap {
                group_nr,
                bits: Box::new(b)
            }
        )),
        prop_oneof![
            Just(Cmd::SyncLogTrees),
            Just(Cmd::Lock),
            Just(Cmd::LockRecover),
            Just(Cmd::OpenInoMap)
        ]
        .prop_map(|c| (c, ClientReply::Failed)),
    ]
}

/// The frame of `payload` through its bytes.
fn framed(cmd: Cmd, flags: u8, error: NetErrno, payload: Vec<u8>, seq: u64) -> Frame {
    assert!(payload.len() <= MAX_PAYLOAD);
    let f = Frame {
        seq,
        recv_seq: seq / 2,
        id: seq + 1,
        cmd,
        flags,
        error,
        payload,
    };
    let mut b = f.encode();
    b.extend_from_slice(b"next");
    let (g, n) = decode_frame(&b).unwrap().unwrap();
    assert_eq!(n, b.len() - 4);
    assert_eq!(g, f);
    // Any shorter prefix asks for more bytes.
    assert_eq!(decode_frame(&b[..n - 1]), Ok(None));
    g
}

proptest! {
    #![proptest_config(cases())]

    #[test]
    fn requests_round_trip(req in request(), seq in 1u64..u64::MAX) {
        let (cmd, p) = encode_request(&req).unwrap();
        let f = framed(cmd, 0, NetErrno::None, p.clone(), seq);
        let back = decode_request(f.cmd, &f.payload).unwrap();
        prop_assert_eq!(format!("{back:?}"), format!("{req:?}"));
        prop_assert_eq!(encode_request(&back).unwrap(), (cmd, p.clone()));
        // A trailing byte is refused.
        let mut longer = p;
        longer.push(0);
        prop_assert!(decode_request(cmd, &longer).is_err());
    }

    #[test]
    fn responses_round_trip((cmd, resp) in response(), seq in 1u64..u64::MAX) {
        let p = encode_response(cmd, &resp).unwrap();
        let f = framed(cmd, FLAG_RESPONSE, NetErrno::None, p.clone(), seq);
        let back = decode_response(f.cmd, &f.payload).unwrap();
        prop_assert_eq!(format!("{back:?}"), format!("{resp:?}"));
        let mut longer = p;
        longer.push(0);
        prop_assert!(decode_response(cmd, &longer).is_err());
    }

    #[test]
    fn server_requests_round_trip(req in server_request(), seq in 1u64..u64::MAX) {
        let (cmd, p) = encode_server_request(&req).unwrap();
        let f = framed(cmd, 0, NetErrno::None, p, seq);
        prop_assert_eq!(decode_server_request(f.cmd, &f.payload).unwrap(), req);
    }

    #[test]
    fn client_replies_round_trip((cmd, reply) in client_reply(), seq in 1u64..u64::MAX) {
        let (errno, p) = encode_client_reply(cmd, &reply).unwrap();
        let f = framed(cmd, FLAG_RESPONSE, errno, p, seq);
        prop_assert_eq!(decode_client_reply(f.cmd, f.error, &f.payload).unwrap(), reply);
    }

    #[test]
    fn errors_round_trip(kind in 0u8..3, msg in ".{0,300}") {
        let kind = [RemoteErrorKind::NoSpace, RemoteErrorKind::Protocol, RemoteErrorKind::Io][kind as usize];
        let (errno, p) = encode_error(&TransportError::Remote { kind, msg: msg.clone() });
        prop_assert!(p.len() <= MAX_ERROR_MSG);
        let f = framed(Cmd::Statfs, FLAG_RESPONSE, errno, p.clone(), 3);
        match decode_error(f.error, &f.payload).unwrap() {
            TransportError::Remote { kind: k, msg: m } => {
                prop_assert_eq!(k, kind);
                prop_assert!(msg.starts_with(&m));
                prop_assert_eq!(m.len(), p.len());
            }
            other => prop_assert!(false, "{other:?}"),
        }
    }

    /// Arbitrary bytes, as a hostile peer sends them: every frame decodes or is refused,
    /// and no payload decoder panics.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
        scoutfs_net::fuzzing::frames(&bytes);
    }

    /// Well-formed headers with arbitrary payloads reach every payload decoder.
    #[test]
    fn arbitrary_payloads_never_panic(
        cmd in any::<u8>(),
        flags in 0u8..2,
        error in 0u8..8,
        payload in proptest::collection::vec(any::<u8>(), 0..=MAX_PAYLOAD),
    ) {
        let Some(cmd) = Cmd::from_u8(cmd) else { return Ok(()) };
        let error = NetErrno::from_u8(error).unwrap();
        let f = Frame { seq: 1, recv_seq: 0, id: 1, cmd, flags, error, payload };
        let _ = decode_any(&f, true);
        let _ = decode_any(&f, false);
    }
}

fn header(cmd: u8, flags: u8, error: u8, len: u16) -> Vec<u8> {
    let mut b = Frame {
        seq: 1,
        recv_seq: 0,
        id: 1,
        cmd: Cmd::Statfs,
        flags: 0,
        error: NetErrno::None,
        payload: Vec::new(),
    }
    .encode();
    b[24..26].copy_from_slice(&len.to_le_bytes());
    b[26] = cmd;
    b[27] = flags;
    b[28] = error;
    b
}

#[test]
fn bad_headers_are_refused() {
    assert_eq!(
        decode_frame(&header(99, 0, 0, 0)),
        Err(WireError::UnknownCmd(99))
    );
    assert_eq!(
        decode_frame(&header(5, 2, 0, 0)),
        Err(WireError::UnknownFlags(2))
    );
    assert_eq!(
        decode_frame(&header(5, 1, 8, 0)),
        Err(WireError::UnknownErrno(8))
    );
    assert_eq!(
        decode_frame(&header(5, 0, 3, 0)),
        Err(WireError::ErrorInRequest)
    );
    // An oversize frame is refused from its header alone: nothing waits for its payload.
    assert_eq!(
        decode_frame(&header(5, 0, 0, MAX_PAYLOAD as u16 + 1)),
        Err(WireError::Oversize(MAX_PAYLOAD + 1))
    );
    let mut pad = header(5, 0, 0, 0);
    pad[31] = 1;
    assert_eq!(decode_frame(&pad), Err(WireError::Pad));
    assert_eq!(decode_frame(&header(5, 0, 0, 0)[..31]), Ok(None));
}

#[test]
fn bad_payloads_are_refused() {
    let (cmd, mut p) = encode_request(&Request::Lock(NetLock::default())).unwrap();
    p[41] = 4; // new_mode
    assert_eq!(
        decode_request(cmd, &p).unwrap_err(),
        WireError::BadValue("unknown lock mode")
    );
    assert!(matches!(
        decode_request(Cmd::GetRoots, &[0]),
        Err(WireError::BadLength { .. })
    ));
    assert!(matches!(
        decode_request(Cmd::SyncLogTrees, &[]),
        Err(WireError::WrongCmd(_))
    ));
    assert!(matches!(
        decode_server_request(Cmd::Statfs, &[]),
        Err(WireError::WrongCmd(_))
    ));
    // Twenty-three locks are one too many for a recovery batch.
    let one = encode_client_reply(Cmd::Lock, &ClientReply::Lock(NetLock::default()))
        .unwrap()
        .1;
    let many = one.repeat(LOCK_RECOVER_BATCH + 1);
    assert!(decode_client_reply(Cmd::LockRecover, NetErrno::None, &many).is_err());
    assert!(decode_client_reply(Cmd::LockRecover, NetErrno::None, &many[1..]).is_err());
    // A response that does not answer its command has no wire form.
    assert_eq!(
        encode_response(Cmd::Statfs, &Response::Done),
        Err(WireError::Unencodable)
    );
    assert!(decode_error(NetErrno::Io, &[0xff]).is_err());
    assert!(decode_error(NetErrno::Io, &[b'a'; MAX_ERROR_MSG + 1]).is_err());
}
