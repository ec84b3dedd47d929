//! An in-memory set of free metadata extents.

use super::{AllocError, MetaAllocator};
use std::collections::{BTreeMap, BTreeSet};

/// Free metadata blocks as extents (`start -> len`), plus the blocks freed in the current
/// transaction, which become free only at [`FreeSet::commit_done`].
#[derive(Clone, Debug, Default)]
pub struct FreeSet {
    free: BTreeMap<u64, u64>,
    pending: BTreeSet<u64>,
    total_free: u64,
    first: u64,
    end: u64,
}

impl FreeSet {
    /// Every block in `first..end` free except those `used` yields (duplicates allowed).
    pub fn from_used(first: u64, end: u64, used: impl IntoIterator<Item = u64>) -> FreeSet {
        let mut used: Vec<u64> = used
            .into_iter()
            .filter(|b| (first..end).contains(b))
            .collect();
        used.sort_unstable();
        used.dedup();
        let mut set = FreeSet {
            first,
            end,
            ..FreeSet::default()
        };
        let mut next = first;
        for b in used.into_iter().chain(std::iter::once(end)) {
            if b > next {
                set.free.insert(next, b - next);
                set.total_free += b - next;
            }
            next = b + 1;
        }
        set
    }

    /// Free blocks now allocatable.
    pub fn free_blocks(&self) -> u64 {
        self.total_free
    }

    /// Blocks freed in this transaction (allocatable after commit).
    pub fn pending_blocks(&self) -> usize {
        self.pending.len()
    }

    /// The transaction committed: its freed blocks may be reused.
    pub fn commit_done(&mut self) {
        for b in std::mem::take(&mut self.pending) {
            self.insert(b);
        }
    }

    /// The transaction was abandoned: forget what it freed (those blocks are still
    /// referenced by the committed trees).
    pub fn abort(&mut self) {
        self.pending.clear();
    }

    fn insert(&mut self, b: u64) {
        let mut start = b;
        let mut len = 1;
        if let Some((&s, &l)) = self.free.range(..b).next_back() {
            if s + l == b {
                self.free.remove(&s);
                start = s;
                len += l;
            }
        }
        if let Some(&l) = self.free.get(&(b + 1)) {
            self.free.remove(&(b + 1));
            len += l;
        }
        self.free.insert(start, len);
        self.total_free += 1;
    }

    fn is_free(&self, b: u64) -> bool {
        matches!(self.free.range(..=b).next_back(), Some((&s, &l)) if b < s + l)
    }
}

impl MetaAllocator for FreeSet {
    fn remaining(&self) -> usize {
        usize::try_from(self.total_free).unwrap_or(usize::MAX)
    }

    fn alloc_meta(&mut self) -> Result<u64, AllocError> {
        let (&start, &len) = self.free.iter().next().ok_or(AllocError::NoSpace)?;
        self.free.remove(&start);
        if len > 1 {
            self.free.insert(start + 1, len - 1);
        }
        self.total_free -= 1;
        Ok(start)
    }

    fn free_meta(&mut self, blkno: u64) -> Result<(), AllocError> {
        if !(self.first..self.end).contains(&blkno)
            || self.is_free(blkno)
            || !self.pending.insert(blkno)
        {
            return Err(AllocError::BadFree(blkno));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_blocks_wait_for_commit() {
        let mut fs = FreeSet::from_used(10, 20, [12, 13]);
        assert_eq!(fs.free_blocks(), 8);
        let a = fs.alloc_meta().unwrap();
        assert_eq!(a, 10);
        fs.free_meta(12).unwrap();
        assert_eq!(
            fs.free_meta(12),
            Err(AllocError::BadFree(12)),
            "freed twice in one transaction"
        );
        let mut got = vec![];
        while let Ok(b) = fs.alloc_meta() {
            got.push(b);
        }
        assert!(!got.contains(&12));
        assert_eq!(got.len(), 7);
        fs.commit_done();
        assert_eq!(fs.alloc_meta().unwrap(), 12);
        assert_eq!(fs.alloc_meta(), Err(AllocError::NoSpace));
        assert_eq!(fs.free_meta(99), Err(AllocError::BadFree(99)));
    }

    #[test]
    fn neighbours_merge() {
        let mut fs = FreeSet::from_used(0, 10, 0..10);
        for b in [3, 5, 4] {
            fs.free_meta(b).unwrap();
        }
        fs.commit_done();
        assert_eq!(fs.free.len(), 1);
        assert_eq!(fs.free_blocks(), 3);
        assert_eq!(fs.free_meta(4), Err(AllocError::BadFree(4)));
    }
}
