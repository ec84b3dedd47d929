//! Per-log-tree bloom filters: which key groups a log btree may hold items of.
//!
//! A mount's commit sets, in its log tree's bloom block, the bits of the *group* of every
//! key it wrote; a read of keys within one group skips every log tree whose filter lacks
//! one of the group's bits. As in the original, a group is what one cluster lock covers:
//! the items of a zone whose `first` field (the inode number in the filesystem zone) falls
//! in one run of [`GROUP_INODES`]. A read spanning a few groups checks each; a wider read
//! visits every tree.
//!
//! The block ([`BloomBlockHeader`], magic [`MAGIC_BLOOM`]) is followed by the filter's
//! bits, little-endian u64 words to the end of the block: bit `b` is bit `b % 64` of word
//! `b / 64`. A group sets [`PROBES`] bits, `h >> (21 × i)` masked to 21 bits and taken
//! modulo the number of bits, for `h` = [`group_hash`]. With 64 KiB blocks the filter has
//! 523,968 bits, the original's size.

use crate::block::splitmix64;
use crate::format::*;
use zerocopy::FromBytes;

/// Inodes per key group (the original's lock group size).
pub const GROUP_INODES: u64 = 1024;

/// Bits set per group.
pub const PROBES: usize = 3;

/// A read spanning more groups than this visits every log tree.
pub const MAX_RANGE_GROUPS: u64 = 16;

/// The group of a key: its zone and the first `first` of its run of [`GROUP_INODES`].
pub fn group_of(key: &Key) -> (u8, u64) {
    (key.zone, key.first - key.first % GROUP_INODES)
}

/// The hash the probes of a group are taken from (stable: it is part of the format).
pub fn group_hash(group: (u8, u64)) -> u64 {
    let mut state = (u64::from(group.0) << 56) ^ group.1;
    splitmix64(&mut state);
    splitmix64(&mut state)
}

/// The bit numbers of a group in a filter of `nbits` bits.
pub fn bit_nrs(group: (u8, u64), nbits: u64) -> [u64; PROBES] {
    let h = group_hash(group);
    let mut out = [0; PROBES];
    for (i, b) in out.iter_mut().enumerate() {
        *b = ((h >> (21 * i)) & ((1 << 21) - 1)) % nbits.max(1);
    }
    out
}

/// The groups of the keys `start..=end`, or `None` when they span more than
/// [`MAX_RANGE_GROUPS`] (or more than one zone).
pub fn groups_of_range(start: &Key, end: &Key) -> Option<Vec<(u8, u64)>> {
    if start > end {
        return Some(Vec::new());
    }
    let (zs, gs) = group_of(start);
    let (ze, ge) = group_of(end);
    if zs != ze || (ge - gs) / GROUP_INODES >= MAX_RANGE_GROUPS {
        return None;
    }
    Some(
        (0..=(ge - gs) / GROUP_INODES)
            .map(|i| (zs, gs + i * GROUP_INODES))
            .collect(),
    )
}

fn word(block: &[u8], i: usize) -> u64 {
    let at = BLOOM_HEADER_SIZE + i * 8;
    block
        .get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .unwrap_or(0)
}

fn nbits(block: &[u8]) -> u64 {
    bloom_bits(block.len())
}

/// Whether the filter in `block` has every bit of `group` set.
pub fn may_contain(block: &[u8], group: (u8, u64)) -> bool {
    bit_nrs(group, nbits(block))
        .iter()
        .all(|&b| word(block, (b / 64) as usize) & (1 << (b % 64)) != 0)
}

/// Set the bits of `group` in `block`; returns how many were newly set.
pub fn set_group(block: &mut [u8], group: (u8, u64)) -> u64 {
    let mut added = 0;
    for b in bit_nrs(group, nbits(block)) {
        let at = BLOOM_HEADER_SIZE + (b / 64) as usize * 8;
        let Some(s) = block.get_mut(at..at + 8) else {
            continue;
        };
        let mut w = [0u8; 8];
        w.copy_from_slice(s);
        let v = u64::from_le_bytes(w);
        let bit = 1u64 << (b % 64);
        if v & bit == 0 {
            s.copy_from_slice(&(v | bit).to_le_bytes());
            added += 1;
        }
    }
    if added > 0 {
        if let Ok((h, _)) = BloomBlockHeader::mut_from_prefix(block) {
            h.total_set = (h.total_set.get() + added).into();
        }
    }
    added
}

/// Check a bloom block's contents (its header was verified by the cache): the count of
/// set bits must match the bits.
pub fn validate(block: &[u8]) -> Result<(), &'static str> {
    let Ok((h, _)) = BloomBlockHeader::ref_from_prefix(block) else {
        return Err("bloom block smaller than its header");
    };
    let words = (block.len().saturating_sub(BLOOM_HEADER_SIZE)) / 8;
    let set: u64 = (0..words)
        .map(|i| u64::from(word(block, i).count_ones()))
        .sum();
    if set != h.total_set.get() {
        return Err("bloom block's count of set bits does not match its bits");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_groups_are_found_and_counted() {
        let mut b = vec![0u8; 4096];
        let g = group_of(&Key::new(16, 5000, 4, 0, 0, 0));
        assert_eq!(g, (16, 4096));
        assert!(!may_contain(&b, g));
        let added = set_group(&mut b, g);
        assert!(added > 0 && added <= PROBES as u64);
        assert!(may_contain(&b, g));
        assert_eq!(set_group(&mut b, g), 0);
        assert!(validate(&b).is_ok());
        // Another group is very likely absent from an almost empty filter.
        let absent = (0..64)
            .filter(|i| !may_contain(&b, (16, (1 << 20) | (i * GROUP_INODES))))
            .count();
        assert!(absent >= 60, "{absent}");
        b[BLOOM_HEADER_SIZE + 100] ^= 1;
        assert!(validate(&b).is_err());
    }

    #[test]
    fn ranges_map_to_their_groups() {
        let k = |first| Key::new(16, first, 0, 0, 0, 0);
        assert_eq!(groups_of_range(&k(1), &k(1023)), Some(vec![(16, 0)]));
        assert_eq!(
            groups_of_range(&k(1000), &k(1024)),
            Some(vec![(16, 0), (16, 1024)])
        );
        assert_eq!(groups_of_range(&k(0), &k(1 << 30)), None);
        assert_eq!(groups_of_range(&k(0), &Key::new(17, 0, 0, 0, 0, 0)), None);
        assert_eq!(groups_of_range(&k(5), &k(4)), Some(vec![]));
        assert_eq!(groups_of_range(&Key::MIN, &Key::MAX), None);
    }
}
