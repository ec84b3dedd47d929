//! `stage` in pieces: a restricted ioctl carries at most [`STAGE_CHUNK`] bytes, and
//! staging an archive chunk of a megabyte in 85 separate filesystem calls would let other
//! operations in between them (a truncate waiting for the first block would run once it
//! came online, and the rest of the chunk then lie past the new size). So `scoutfs`
//! sends a chunk as pieces flagged [`STAGE_MORE`] and a last piece without it, and the
//! daemon gathers them per open file and stages the chunk with one call, as the
//! original's ioctl stages its buffer under the inode lock.
//!
//! Bounds: one gathered stage is at most [`STAGE_GATHER_MAX`] bytes, and all those being
//! gathered at once at most [`GATHER_TOTAL_MAX`] (`EBUSY` past it). A piece that does not
//! follow the pieces before it (another inode or data_version, not contiguous) is
//! `EINVAL`, and the stage gathered so far is dropped; so is one whose file is closed
//! before its last piece ([`Gather::forget`]).

use super::wire::{STAGE_CHUNK, STAGE_GATHER_MAX};
use libc::{EBUSY, EINVAL};
use std::collections::HashMap;
use std::sync::Mutex;

/// The most bytes of stages being gathered at once, over all open files.
pub const GATHER_TOTAL_MAX: usize = 64 * STAGE_GATHER_MAX;

/// A stage gathered from its pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gathered {
    pub ino: u64,
    pub offset: u64,
    pub data_version: u64,
    pub data: Vec<u8>,
}

/// The stages being gathered, by file handle.
#[derive(Debug, Default)]
pub struct Gather {
    pending: Mutex<(HashMap<u64, Gathered>, usize)>,
}

impl Gather {
    /// Takes piece `data` at `offset` of inode `ino` from the open file `fh`: `Ok(None)`
    /// while `more` pieces follow, the whole stage with the last.
    pub fn piece(
        &self,
        fh: u64,
        ino: u64,
        offset: u64,
        data_version: u64,
        data: &[u8],
        more: bool,
    ) -> Result<Option<Gathered>, i32> {
        debug_assert!(data.len() <= STAGE_CHUNK);
        // A poisoned lock only means another thread panicked: the map is still whole.
        let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (map, total) = &mut *guard;
        let mut g = match map.remove(&fh) {
            Some(g) => {
                *total -= g.data.len();
                let follows = g.ino == ino
                    && g.data_version == data_version
                    && g.offset.checked_add(g.data.len() as u64) == Some(offset);
                if !follows {
                    return Err(EINVAL);
                }
                g
            }
            None => Gathered {
                ino,
                offset,
                data_version,
                data: Vec::new(),
            },
        };
        if g.data.len() + data.len() > STAGE_GATHER_MAX {
            return Err(EINVAL);
        }
        if more && *total + g.data.len() + data.len() > GATHER_TOTAL_MAX {
            return Err(EBUSY);
        }
        g.data.extend_from_slice(data);
        if !more {
            return Ok(Some(g));
        }
        *total += g.data.len();
        map.insert(fh, g);
        Ok(None)
    }

    /// Drops what open file `fh` was gathering (it was closed).
    pub fn forget(&self, fh: u64) {
        let mut guard = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (map, total) = &mut *guard;
        if let Some(g) = map.remove(&fh) {
            *total -= g.data.len();
        }
    }

    /// Bytes being gathered now.
    pub fn pending_bytes(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_gather_into_one_stage_and_strays_are_refused() {
        let g = Gather::default();
        assert_eq!(g.piece(1, 10, 4096, 3, b"ab", true), Ok(None));
        assert_eq!(g.piece(1, 10, 4098, 3, b"cd", true), Ok(None));
        assert_eq!(g.pending_bytes(), 4);
        let done = g.piece(1, 10, 4100, 3, b"e", false).unwrap().unwrap();
        assert_eq!(
            done,
            Gathered {
                ino: 10,
                offset: 4096,
                data_version: 3,
                data: b"abcde".to_vec()
            }
        );
        assert_eq!(g.pending_bytes(), 0);
        // A single last piece is a stage of its own.
        assert_eq!(
            g.piece(2, 10, 0, 3, b"x", false).unwrap().unwrap().data,
            b"x"
        );
        // Not contiguous, another version, another inode: refused, the gathered dropped.
        for (ino, off, vers) in [(10, 9, 3), (10, 2, 4), (11, 2, 3)] {
            assert_eq!(g.piece(3, 10, 0, 3, b"ab", true), Ok(None));
            assert_eq!(g.piece(3, ino, off, vers, b"cd", false), Err(EINVAL));
            assert_eq!(g.pending_bytes(), 0);
        }
        // Other handles gather apart; a closed file's pieces go.
        assert_eq!(g.piece(4, 10, 0, 3, b"ab", true), Ok(None));
        assert_eq!(g.piece(5, 10, 0, 3, b"zz", true), Ok(None));
        g.forget(4);
        assert_eq!(g.pending_bytes(), 2);
        assert_eq!(
            g.piece(5, 10, 2, 3, b"y", false).unwrap().unwrap().data,
            b"zzy"
        );
    }

    #[test]
    fn gathering_is_bounded() {
        let g = Gather::default();
        let piece = vec![7u8; STAGE_CHUNK];
        let mut off = 0u64;
        let mut res = Ok(None);
        while res == Ok(None) {
            res = g.piece(1, 10, off, 1, &piece, true);
            off += STAGE_CHUNK as u64;
        }
        assert_eq!(res, Err(EINVAL));
        assert_eq!(g.pending_bytes(), 0);
        // Many files at once: past the total, EBUSY.
        let mut fh = 0;
        let err = loop {
            fh += 1;
            let mut off = 0u64;
            let mut r = Ok(None);
            while off + (STAGE_CHUNK as u64) <= STAGE_GATHER_MAX as u64 && r == Ok(None) {
                r = g.piece(fh, 10, off, 1, &piece, true);
                off += STAGE_CHUNK as u64;
            }
            if let Err(e) = r {
                break e;
            }
        };
        assert_eq!(err, EBUSY);
        assert!(g.pending_bytes() <= GATHER_TOTAL_MAX);
    }
}
