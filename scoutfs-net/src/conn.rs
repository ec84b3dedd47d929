//! The reliable connection, as a state machine without I/O (the original's `net.c`
//! resend and ack rules, §6.2 of the design notes).
//!
//! A [`Conn`] is one side's state of its conversation with one peer, kept across sockets:
//!
//! * every frame it sends gets the next `seq`; every frame carries `recv_seq`, the
//!   greatest seq received from the peer, which acknowledges everything up to it;
//! * a request gets an id, and stays in `sent` until its response arrives; a response
//!   stays until the peer acknowledges it. So every frame the peer may not have received
//!   is in `sent`;
//! * on a new socket to the *same* peer (the server kept this state: same term)
//!   [`Conn::reconnected`] queues all of `sent` again in seq order; the peer drops every
//!   frame whose seq it has already received (`seq <= recv_seq`), so each message is
//!   processed exactly once. This relies on a socket delivering a prefix of what was
//!   written to it, in order (TCP does);
//! * to a *new* peer (the server restarted: another term) [`Conn::reset_peer`] forgets
//!   the old peer's seqs and the responses owed to it and resends the unanswered
//!   requests: at least once (server handlers are idempotent). Requests the old peer
//!   made of us and that we are still working on are answered into the void: their
//!   [`ReqToken`] is of an older epoch.
//!
//! A frame that breaks these rules (a zero seq or id, a response to no request or of
//! another command) is a [`ConnError`]; the caller closes the socket.

use crate::wire::{Cmd, Frame, NetErrno, FLAG_RESPONSE};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// A frame that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// A frame after the handshake with seq or id 0.
    #[error("a frame with a zero seq or id")]
    Zero,
    /// A response whose id is no unanswered request.
    #[error("a response to no request (id {0})")]
    ResponseToNothing(u64),
    /// A response of another command than its request's.
    #[error("a response of {got:?} to a {want:?} request")]
    WrongCmd {
        /// The request's command.
        want: Cmd,
        /// The response's.
        got: Cmd,
    },
    /// A handshake frame after the handshake.
    #[error("a second handshake")]
    Handshake,
}

/// Names a request received from the peer, to answer it with [`Conn::respond`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReqToken {
    /// The request's id.
    pub id: u64,
    /// Its command.
    pub cmd: Cmd,
    /// The peer incarnation it came from.
    pub epoch: u64,
}

/// What a received frame means.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// A frame already received (a resend): dropped.
    Duplicate,
    /// A request of the peer, to be handled once and answered with [`Conn::respond`].
    Request {
        /// Answer with it.
        token: ReqToken,
        /// The payload.
        payload: Vec<u8>,
    },
    /// The answer to our request `id`.
    Response {
        /// The request's id.
        id: u64,
        /// The request's command.
        cmd: Cmd,
        /// The error, if any.
        error: NetErrno,
        /// The payload.
        payload: Vec<u8>,
    },
}

/// One side's state of a conversation with one peer (see the module doc).
#[derive(Debug)]
pub struct Conn {
    next_seq: u64,
    recv_seq: u64,
    next_id: u64,
    epoch: u64,
    /// Frames the peer may not have (or whose request is unanswered), by seq.
    sent: BTreeMap<u64, Frame>,
    /// Unanswered requests: id to seq.
    pending: HashMap<u64, u64>,
    /// Seqs to write on the socket, in order (stale ones are skipped).
    out: VecDeque<u64>,
}

impl Default for Conn {
    fn default() -> Self {
        Conn::new()
    }
}

impl Conn {
    /// A conversation that has not begun.
    pub fn new() -> Conn {
        Conn {
            next_seq: 1,
            recv_seq: 0,
            next_id: 1,
            epoch: 0,
            sent: BTreeMap::new(),
            pending: HashMap::new(),
            out: VecDeque::new(),
        }
    }

    fn queue(&mut self, mut f: Frame) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        f.seq = seq;
        self.sent.insert(seq, f);
        self.out.push_back(seq);
        seq
    }

    /// Send a request; its id names the response.
    pub fn request(&mut self, cmd: Cmd, payload: Vec<u8>) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let seq = self.queue(Frame {
            seq: 0,
            recv_seq: 0,
            id,
            cmd,
            flags: 0,
            error: NetErrno::None,
            payload,
        });
        self.pending.insert(id, seq);
        id
    }

    /// Answer the peer's request `token`: false (and nothing sent) if it came from an
    /// earlier incarnation of the peer.
    pub fn respond(&mut self, token: ReqToken, error: NetErrno, payload: Vec<u8>) -> bool {
        if token.epoch != self.epoch {
            return false;
        }
        self.queue(Frame {
            seq: 0,
            recv_seq: 0,
            id: token.id,
            cmd: token.cmd,
            flags: FLAG_RESPONSE,
            error,
            payload,
        });
        true
    }

    /// Take in a frame from the peer.
    pub fn receive(&mut self, f: Frame) -> Result<Delivery, ConnError> {
        if f.cmd.is_handshake() {
            return Err(ConnError::Handshake);
        }
        if f.seq == 0 || f.id == 0 {
            return Err(ConnError::Zero);
        }
        // Responses the peer has received are done with.
        let acked: Vec<u64> = self
            .sent
            .range(..=f.recv_seq)
            .filter(|(_, s)| s.is_response())
            .map(|(seq, _)| *seq)
            .collect();
        for seq in acked {
            self.sent.remove(&seq);
        }
        if f.seq <= self.recv_seq {
            return Ok(Delivery::Duplicate);
        }
        if f.is_response() {
            let Some(&seq) = self.pending.get(&f.id) else {
                return Err(ConnError::ResponseToNothing(f.id));
            };
            let want = self.sent.get(&seq).map(|r| r.cmd).unwrap_or(f.cmd);
            if want != f.cmd {
                return Err(ConnError::WrongCmd { want, got: f.cmd });
            }
            self.recv_seq = f.seq;
            self.pending.remove(&f.id);
            self.sent.remove(&seq);
            Ok(Delivery::Response {
                id: f.id,
                cmd: f.cmd,
                error: f.error,
                payload: f.payload,
            })
        } else {
            self.recv_seq = f.seq;
            Ok(Delivery::Request {
                token: ReqToken {
                    id: f.id,
                    cmd: f.cmd,
                    epoch: self.epoch,
                },
                payload: f.payload,
            })
        }
    }

    /// The frames to write now, in order, each carrying the current ack.
    pub fn take_outgoing(&mut self) -> Vec<Frame> {
        let mut v = Vec::with_capacity(self.out.len());
        while let Some(seq) = self.out.pop_front() {
            if let Some(f) = self.sent.get(&seq) {
                let mut f = f.clone();
                f.recv_seq = self.recv_seq;
                v.push(f);
            }
        }
        v
    }

    /// Whether there are frames to write.
    pub fn has_outgoing(&self) -> bool {
        !self.out.is_empty()
    }

    /// A new socket to the same peer: write everything it may not have, again.
    pub fn reconnected(&mut self) {
        self.out = self.sent.keys().copied().collect();
    }

    /// A new socket to a new incarnation of the peer: forget its seqs, the responses owed
    /// to it and the requests it made, and resend our unanswered requests.
    pub fn reset_peer(&mut self) {
        self.epoch += 1;
        self.recv_seq = 0;
        self.sent.retain(|_, f| !f.is_response());
        self.reconnected();
    }

    /// The incarnation of the peer requests are now taken from.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The greatest seq received.
    pub fn recv_seq(&self) -> u64 {
        self.recv_seq
    }

    /// Unanswered requests.
    pub fn unanswered(&self) -> usize {
        self.pending.len()
    }

    /// Frames kept for a resend (unanswered requests and unacknowledged responses).
    pub fn kept(&self) -> usize {
        self.sent.len()
    }

    /// Forget every unanswered request (the conversation ends): their ids.
    pub fn cancel_all(&mut self) -> Vec<u64> {
        let ids: Vec<u64> = self.pending.drain().map(|(id, _)| id).collect();
        self.sent.clear();
        self.out.clear();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(from: &mut Conn, to: &mut Conn) -> Vec<Delivery> {
        from.take_outgoing()
            .into_iter()
            .map(|f| to.receive(f).unwrap())
            .collect()
    }

    #[test]
    fn frames_that_break_the_rules_are_refused() {
        let (mut a, mut b) = (Conn::new(), Conn::new());
        let id = a.request(Cmd::GetRoots, vec![]);
        let d = pass(&mut a, &mut b);
        let Delivery::Request { token, .. } = d[0] else {
            panic!("{d:?}")
        };
        assert_eq!(token.id, id);
        // A response of another command, to nothing, with zeros, or a handshake frame.
        let resp = |cmd, id, seq| Frame {
            seq,
            recv_seq: 1,
            id,
            cmd,
            flags: FLAG_RESPONSE,
            error: NetErrno::None,
            payload: vec![],
        };
        assert_eq!(
            a.receive(resp(Cmd::Statfs, id, 1)),
            Err(ConnError::WrongCmd {
                want: Cmd::GetRoots,
                got: Cmd::Statfs
            })
        );
        assert_eq!(
            a.receive(resp(Cmd::GetRoots, id + 1, 1)),
            Err(ConnError::ResponseToNothing(id + 1))
        );
        assert_eq!(a.receive(resp(Cmd::GetRoots, id, 0)), Err(ConnError::Zero));
        assert_eq!(
            a.receive(resp(Cmd::Greeting, id, 1)),
            Err(ConnError::Handshake)
        );
        // The real answer is taken once; its resend is a duplicate.
        assert!(b.respond(token, NetErrno::None, vec![7]));
        let f = b.take_outgoing().remove(0);
        assert!(matches!(
            a.receive(f.clone()),
            Ok(Delivery::Response { .. })
        ));
        assert_eq!(a.receive(f), Ok(Delivery::Duplicate));
        assert_eq!(a.unanswered(), 0);
        // The response stays with `b` until `a` acknowledges it with its next frame.
        assert_eq!(b.kept(), 1);
        a.request(Cmd::GetRoots, vec![]);
        pass(&mut a, &mut b);
        assert_eq!(b.kept(), 0);
    }

    #[test]
    fn answers_to_a_replaced_peer_go_nowhere() {
        let (mut a, mut b) = (Conn::new(), Conn::new());
        a.request(Cmd::GetRoots, vec![]);
        let d = pass(&mut a, &mut b);
        let Delivery::Request { token, .. } = d[0] else {
            panic!("{d:?}")
        };
        b.reset_peer();
        assert!(!b.respond(token, NetErrno::None, vec![]));
        assert!(!b.has_outgoing());
    }
}
