//! Arbitrary bytes through every block decoder: super slots, header verification, btree
//! block validation, the format structs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    scoutfs_core::fuzzing::decode_blocks(data);
});
