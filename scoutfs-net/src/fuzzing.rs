//! Entry points for the fuzz target and the "arbitrary bytes never panic" tests.

use crate::conn::Conn;
use crate::wire::{decode_any, decode_frame, MAX_PAYLOAD};

/// Decode `bytes` as a stream of frames, as a peer's socket delivers them: each frame's
/// payload through the decoders of both directions and through a [`Conn`], until the
/// stream ends or a frame is refused. Panics only if a decoder breaks its contract (a
/// frame longer than it may be).
pub fn frames(bytes: &[u8]) {
    let mut rest = bytes;
    let mut conn = Conn::new();
    while let Ok(Some((f, n))) = decode_frame(rest) {
        assert!(f.payload.len() <= MAX_PAYLOAD && n <= rest.len());
        let _ = decode_any(&f, true);
        let _ = decode_any(&f, false);
        if conn.receive(f).is_err() {
            return;
        }
        rest = &rest[n..];
    }
}
