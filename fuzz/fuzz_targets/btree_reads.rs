//! Arbitrary bytes as a device of btree blocks with verifying headers, through every btree
//! read path (lookup, next, prev, scans both ways, get_parent, walk, verify, free_blocks).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    scoutfs_core::fuzzing::btree_reads(data);
});
