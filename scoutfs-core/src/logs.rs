//! What both sides of the protocol read of the server's shared structures: the log tree
//! records of `logs_root`, and the merge of a log merge request's inputs that a mount
//! does for the server. A mount links this module and not the server's.

use crate::block::BlockRead;
use crate::btree::{self, BtreeError, MergeCursor, TreeTxn};
use crate::format::*;
use crate::volume::{Result, VolumeError};
use std::ops::ControlFlow;
use zerocopy::FromBytes;

/// A decoded log tree record.
pub(crate) fn decode_log_trees(val: &[u8]) -> Result<LogTrees> {
    LogTrees::read_from_bytes(val).map_err(|_| {
        VolumeError::Btree(BtreeError::Corrupt {
            blkno: 0,
            reason: "log trees item of the wrong size",
        })
    })
}

/// The newest log tree record of mount `rid` in `logs_root`.
pub fn latest_log_trees<R: BlockRead + ?Sized>(
    rd: &R,
    logs_root: &BtreeRoot,
    rid: u64,
) -> Result<Option<LogTrees>> {
    let mut found = None;
    btree::scan_rev(
        rd,
        logs_root,
        &log_trees_key(rid, 0),
        &log_trees_key(rid, u64::MAX),
        |it| {
            found = Some(it.val.to_vec());
            ControlFlow::Break(())
        },
    )?;
    found.map(|v| decode_log_trees(&v)).transpose()
}

/// Every log tree record in `logs_root`.
pub fn all_log_trees<R: BlockRead + ?Sized>(
    rd: &R,
    logs_root: &BtreeRoot,
) -> Result<Vec<LogTrees>> {
    let lo = Key::new(zone::LOG_TREES, 0, 0, 0, 0, 0);
    let hi = Key::new(zone::LOG_TREES, u64::MAX, 255, u64::MAX, u64::MAX, 255);
    btree::items(rd, logs_root, &lo, &hi)?
        .iter()
        .map(|it| decode_log_trees(&it.val))
        .collect()
}

/// Whether a log tree is an input of the merge with seq `merge_seq`.
pub(crate) fn is_input(lt: &LogTrees, merge_seq: u64) -> bool {
    lt.flags.get() & LOG_TREES_FLAG_FINALIZED != 0 && lt.finalize_seq.get() < merge_seq
}

/// Mount side: merge a request's inputs into a private copy of its subtree, stopping
/// after `dirty_limit` dirty blocks or when fewer than `alloc_low` blocks are left.
/// Returns the merged subtree and where the merge ended; the caller writes the lists and
/// blocks and sends the completion ([`crate::client::Client::merge_once`]).
pub fn merge_request(
    t: &mut TreeTxn<'_>,
    req: &LogMergeRequest,
    dirty_limit: usize,
    alloc_low: usize,
) -> btree::Result<(BtreeRoot, btree::MergeEnd)> {
    let rd_inputs: Vec<BtreeRoot> = {
        let logs: BtreeRoot = req.logs_root.into();
        let mut v = Vec::new();
        let lo = Key::new(zone::LOG_TREES, 0, 0, 0, 0, 0);
        let hi = Key::new(zone::LOG_TREES, u64::MAX, 255, u64::MAX, u64::MAX, 255);
        let mut bad = false;
        btree::scan(&*t.wri, &logs, &lo, &hi, |it| {
            match LogTrees::read_from_bytes(it.val) {
                Ok(lt) if is_input(&lt, req.input_seq.get()) => v.push(lt.item_root.into()),
                Ok(_) => {}
                Err(_) => bad = true,
            }
            ControlFlow::Continue(())
        })?;
        if bad {
            return Err(btree::BtreeError::Corrupt {
                blkno: 0,
                reason: "log trees item of the wrong size",
            });
        }
        v
    };
    let start: Key = (&req.start).into();
    let end: Key = (&req.end).into();
    // The inputs are committed trees this merge never changes: the cursor reads them
    // through the writer while the merge changes the subtree.
    let mut cur = MergeCursor::new(&rd_inputs, start, end);
    let mut root: BtreeRoot = req.root.into();
    let limits = btree::MergeLimits {
        dirty_blocks: dirty_limit,
        alloc_low,
        subtree: req.flags.get() & MERGE_REQUEST_FLAG_SUBTREE != 0,
        per_item_descent: false,
    };
    let end_state = t.merge_cursor(&mut root, limits, &mut cur)?;
    Ok((root, end_state))
}
