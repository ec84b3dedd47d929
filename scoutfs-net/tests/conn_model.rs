#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The reliable connection ([`scoutfs_net::conn::Conn`]) between a client and a server
//! over a link that loses what is in flight when a socket breaks, duplicates frames,
//! answers requests in any order and restarts the server: every request is answered to
//! its caller exactly once, and the server's handler runs once per request on one
//! server (at least once across servers).

#[path = "../../scoutfs-core/tests/common/mod.rs"]
mod common;

use proptest::prelude::*;
use scoutfs_net::conn::{Conn, Delivery, ReqToken};
use scoutfs_net::wire::{decode_frame, Cmd, Frame, NetErrno};
use std::collections::{HashMap, VecDeque};

/// Every frame goes through its bytes, as on a socket.
fn through_wire(f: &Frame) -> Frame {
    let b = f.encode();
    let (g, n) = decode_frame(&b).unwrap().unwrap();
    assert_eq!(n, b.len());
    g
}

fn num(p: &[u8]) -> u64 {
    u64::from_le_bytes(p.try_into().unwrap())
}

#[derive(Default)]
struct World {
    client: Conn,
    server: Conn,
    /// Server incarnation (its term).
    term: u64,
    c2s: VecDeque<Frame>,
    s2c: VecDeque<Frame>,
    next_req: u64,
    /// Client requests issued, and how often each was answered.
    answered: HashMap<u64, u32>,
    /// Server handler runs by (term, request).
    handled: HashMap<(u64, u64), u32>,
    server_work: Vec<(ReqToken, u64)>,
    /// Server requests by (term, number) and how often each was answered.
    s_answered: HashMap<(u64, u64), u32>,
    client_handled: HashMap<(u64, u64), u32>,
    client_work: Vec<(ReqToken, u64, u64)>,
    restarts: u32,
}

impl World {
    fn flush(&mut self) {
        for f in self.client.take_outgoing() {
            self.c2s.push_back(through_wire(&f));
        }
        for f in self.server.take_outgoing() {
            self.s2c.push_back(through_wire(&f));
        }
    }

    fn deliver_to_server(&mut self, f: Frame) {
        match self.server.receive(f).unwrap() {
            Delivery::Duplicate => {}
            Delivery::Request { token, payload } => {
                let n = num(&payload);
                *self.handled.entry((self.term, n)).or_default() += 1;
                self.server_work.push((token, n));
            }
            Delivery::Response { cmd, payload, .. } => {
                assert_eq!(cmd, Cmd::SyncLogTrees);
                *self
                    .s_answered
                    .entry((self.term, num(&payload)))
                    .or_default() += 1;
            }
        }
    }

    fn deliver_to_client(&mut self, f: Frame) {
        match self.client.receive(f).unwrap() {
            Delivery::Duplicate => {}
            Delivery::Request { token, payload } => {
                let m = num(&payload);
                *self.client_handled.entry((self.term, m)).or_default() += 1;
                self.client_work.push((token, self.term, m));
            }
            Delivery::Response { cmd, payload, .. } => {
                assert_eq!(cmd, Cmd::GetLastSeq);
                *self.answered.get_mut(&num(&payload)).unwrap() += 1;
            }
        }
    }

    fn step(&mut self, op: u8, arg: u8) {
        match op % 10 {
            0 => {
                self.next_req += 1;
                self.answered.insert(self.next_req, 0);
                self.client
                    .request(Cmd::GetLastSeq, self.next_req.to_le_bytes().to_vec());
            }
            1 => {
                let m = self.s_answered.len() as u64 + 1;
                self.s_answered.insert((self.term, m), 0);
                self.server
                    .request(Cmd::SyncLogTrees, m.to_le_bytes().to_vec());
            }
            2 => {
                if let Some(f) = self.c2s.pop_front() {
                    if arg.is_multiple_of(8) {
                        // A duplicate in the stream is dropped by its seq.
                        self.deliver_to_server(f.clone());
                    }
                    self.deliver_to_server(f);
                }
            }
            3 => {
                if let Some(f) = self.s2c.pop_front() {
                    if arg.is_multiple_of(8) {
                        self.deliver_to_client(f.clone());
                    }
                    self.deliver_to_client(f);
                }
            }
            4 => {
                if !self.server_work.is_empty() {
                    let i = arg as usize % self.server_work.len();
                    let (t, n) = self.server_work.swap_remove(i);
                    self.server
                        .respond(t, NetErrno::None, n.to_le_bytes().to_vec());
                }
            }
            5 => {
                if !self.client_work.is_empty() {
                    let i = arg as usize % self.client_work.len();
                    let (t, _, m) = self.client_work.swap_remove(i);
                    self.client
                        .respond(t, NetErrno::None, m.to_le_bytes().to_vec());
                }
            }
            6 | 7 => self.flush(),
            8 => {
                // The socket breaks: each side received a prefix of what was in flight.
                let keep = arg as usize;
                self.c2s.truncate(keep % (self.c2s.len() + 1));
                self.s2c.truncate((keep / 3) % (self.s2c.len() + 1));
                while let Some(f) = self.c2s.pop_front() {
                    self.deliver_to_server(f);
                }
                while let Some(f) = self.s2c.pop_front() {
                    self.deliver_to_client(f);
                }
                self.client.reconnected();
                self.server.reconnected();
            }
            _ => {
                if !arg.is_multiple_of(4) {
                    return;
                }
                // The server restarts: a new term, nothing of the old one survives.
                self.restarts += 1;
                self.term += 1;
                self.server = Conn::new();
                self.server_work.clear();
                self.c2s.clear();
                self.s2c.clear();
                self.s_answered.retain(|(t, _), _| *t == self.term);
                self.client.reset_peer();
            }
        }
    }

    fn drain(&mut self) {
        self.step(8, 0);
        for _ in 0..10_000 {
            self.flush();
            let busy = !(self.c2s.is_empty()
                && self.s2c.is_empty()
                && self.server_work.is_empty()
                && self.client_work.is_empty());
            if !busy {
                return;
            }
            while let Some(f) = self.c2s.pop_front() {
                self.deliver_to_server(f);
            }
            while let Some(f) = self.s2c.pop_front() {
                self.deliver_to_client(f);
            }
            while !self.server_work.is_empty() {
                self.step(4, 0);
            }
            while !self.client_work.is_empty() {
                self.step(5, 0);
            }
        }
        panic!("the conversation did not settle");
    }

    fn check(&self) {
        for (n, c) in &self.answered {
            assert_eq!(*c, 1, "request {n} answered {c} times");
        }
        for ((t, n), c) in &self.handled {
            assert!(*c <= 1, "request {n} handled {c} times by server {t}");
        }
        for n in self.answered.keys() {
            let runs: u32 = (0..=self.term)
                .map(|t| self.handled.get(&(t, *n)).copied().unwrap_or(0))
                .sum();
            assert!(runs >= 1, "request {n} never handled");
            if self.restarts == 0 {
                assert_eq!(runs, 1, "request {n} handled {runs} times by one server");
            }
        }
        for ((t, m), c) in &self.s_answered {
            assert_eq!(*t, self.term);
            assert_eq!(*c, 1, "server request {m} answered {c} times");
        }
        for ((t, m), c) in &self.client_handled {
            assert!(*c <= 1, "server request {t}/{m} handled {c} times");
        }
        assert_eq!(self.client.unanswered(), 0);
        assert_eq!(self.server.unanswered(), 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(common::proptest_cases(512)))]

    #[test]
    fn every_request_answered_exactly_once(
        ops in proptest::collection::vec((any::<u8>(), any::<u8>()), 0..400)
    ) {
        let mut w = World::default();
        for (op, arg) in ops {
            w.step(op, arg);
        }
        w.drain();
        w.check();
    }

    #[test]
    fn exactly_once_without_restarts(
        ops in proptest::collection::vec((0u8..9, any::<u8>()), 0..400)
    ) {
        let mut w = World::default();
        for (op, arg) in ops {
            w.step(op, arg);
        }
        w.drain();
        prop_assert_eq!(w.restarts, 0);
        w.check();
    }
}
