//! The fuzz harnesses of `fuzz/` run inside `cargo test`: random bytes and mutations of a
//! real tree image go through every block decoder and btree read path without a panic.

// Tests fail loudly: unwrapping in their helpers is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use proptest::prelude::*;
use scoutfs_core::fuzzing::{btree_reads, decode_blocks, sample_tree_input};

#[test]
fn the_sample_tree_is_readable_through_the_harness() {
    let img = sample_tree_input(150);
    assert!(img[0] >= 3, "sample tree of height {}", img[0]);
    assert_eq!(btree_reads(&img), 150);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..9000)) {
        decode_blocks(&data);
        btree_reads(&data);
    }

    #[test]
    fn mutated_trees_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..12),
        height in 0u8..25,
    ) {
        let mut img = sample_tree_input(150);
        for (at, v) in edits {
            let i = at.index(img.len());
            img[i] = v;
        }
        img[0] = height;
        btree_reads(&img);
        decode_blocks(&img[1..]);
    }
}
