//! The open-inode map (the original's `omap.c`): which mounts hold inodes of a group
//! open, asked by a mount about to delete an unlinked inode.
//!
//! A mount asks with [`crate::transport::Request::OpenInoMap`]; the server asks every
//! other mounted client ([`crate::transport::ServerRequest::OpenInoMap`]) and answers
//! with the union of their bitmaps. Rounds for the same group may overlap: a mount's
//! answer about a group counts for every round waiting on that mount and group (any of
//! its answers since the round began is a true picture). A mount that does not answer
//! within [`OMAP_TIMEOUT`] is taken to hold every inode of the group, so nothing it may
//! have open is deleted (the inode stays an orphan, deleted later).

use crate::transport::{InoMapBits, ServerLink, ServerRequest};
use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How long a round waits for the mounts' answers.
pub const OMAP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Round {
    group_nr: u64,
    waiting: HashSet<u64>,
    bits: InoMapBits,
}

/// The rounds in progress.
#[derive(Debug, Default)]
pub(super) struct OpenInoMaps {
    rounds: Mutex<(u64, HashMap<u64, Round>)>,
    cv: Condvar,
}

impl OpenInoMaps {
    /// Ask mounts `others` about group `group_nr` through `link` and wait for the union
    /// of their answers.
    pub(super) fn ask(
        &self,
        group_nr: u64,
        others: Vec<u64>,
        link: Option<&dyn ServerLink>,
    ) -> InoMapBits {
        let Some(link) = link.filter(|_| !others.is_empty()) else {
            return [0; 16];
        };
        let id = {
            let mut r = self.rounds.lock();
            r.0 += 1;
            let id = r.0;
            r.1.insert(
                id,
                Round {
                    group_nr,
                    waiting: others.iter().copied().collect(),
                    bits: [0; 16],
                },
            );
            id
        };
        for rid in others {
            link.send(rid, ServerRequest::OpenInoMap { group_nr });
        }
        let deadline = Instant::now() + OMAP_TIMEOUT;
        let mut r = self.rounds.lock();
        loop {
            let done = r.1.get(&id).is_none_or(|round| round.waiting.is_empty());
            if done || self.cv.wait_until(&mut r, deadline).timed_out() {
                let round = r.1.remove(&id);
                return match round {
                    Some(round) if round.waiting.is_empty() => round.bits,
                    // Unanswered: every inode may be open there.
                    _ => [u64::MAX; 16],
                };
            }
        }
    }

    /// Mount `rid`'s answer about group `group_nr`.
    pub(super) fn answer(&self, rid: u64, group_nr: u64, bits: &InoMapBits) {
        let mut r = self.rounds.lock();
        for round in r.1.values_mut() {
            if round.group_nr == group_nr && round.waiting.remove(&rid) {
                for (a, b) in round.bits.iter_mut().zip(bits) {
                    *a |= b;
                }
            }
        }
        drop(r);
        self.cv.notify_all();
    }

    /// Mount `rid` left: rounds stop waiting for it (it holds nothing open now).
    pub(super) fn depart(&self, rid: u64) {
        let mut r = self.rounds.lock();
        for round in r.1.values_mut() {
            round.waiting.remove(&rid);
        }
        drop(r);
        self.cv.notify_all();
    }
}
