//! Arbitrary bytes as a peer's socket delivers them: frames, every payload decoder of
//! both directions and the connection state machine must refuse, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    scoutfs_net::fuzzing::frames(data);
});
