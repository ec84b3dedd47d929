//! The server's metadata pool: its free-extent tree and the alloc list its commits use.
//!
//! During a transaction the metadata extent tree is not changed: blocks are taken from it
//! by *claims* — a cursor walks the committed tree upwards and hands out extents beyond
//! it, which is safe because the committed tree does not change until the commit — and
//! blocks given back are *returns*. [`MetaPool::prepare_commit`] applies the claims and
//! returns to the tree and writes the alloc lists. That keeps allocation possible from
//! inside any btree change (the allocator never needs to change a tree itself), and it
//! makes every claim visible in the tree at the same commit that first uses the blocks.
//!
//! Blocks freed in a transaction go to the list's freed side; they are recorded in the
//! super as the server's freed list and become allocatable only when that commit is
//! durable ([`MetaPool::commit_done`]).

use crate::alloc::{AllocError, AllocRoot, Extent, ListAlloc, MetaAllocator};
use crate::block::{BlockCache, BlockError, BlockRead, BlockWriter};
use crate::btree::{self, TreeTxn};
use crate::format::RawAllocListHead;
use std::sync::Arc;

/// How many blocks an auto-claim takes from the tree at a time.
const CLAIM_CHUNK: u64 = 256;

/// The server's metadata allocator (see the module comment).
#[derive(Debug)]
pub struct MetaPool {
    list: ListAlloc,
    /// The tree as committed (changed only by `prepare_commit`).
    tree: AllocRoot,
    cache: Arc<BlockCache>,
    /// Extents claimed from the tree in this transaction, in ascending order.
    claimed: Vec<Extent>,
    claimed_len: u64,
    /// Blocks are claimed only from `cursor` upwards.
    cursor: u64,
    /// Extents to insert into the tree at commit.
    returns: Vec<Extent>,
    returns_len: u64,
    /// Whether allocation may claim from the tree (not while the tree is being changed).
    auto_claim: bool,
    /// List size kept between commits: above `hi` the excess returns to the tree.
    target: usize,
    hi: usize,
}

/// Sort extents and merge the ones that touch.
fn coalesce(mut v: Vec<Extent>) -> Vec<Extent> {
    v.sort_unstable();
    let mut out: Vec<Extent> = Vec::with_capacity(v.len());
    for e in v {
        match out.last_mut() {
            Some(l) if l.end() == e.start => l.len += e.len,
            _ => out.push(e),
        }
    }
    out
}

/// Runs of consecutive block numbers.
pub(crate) fn runs(mut blknos: Vec<u64>) -> Vec<Extent> {
    blknos.sort_unstable();
    let mut out: Vec<Extent> = Vec::new();
    for b in blknos {
        match out.last_mut() {
            Some(l) if l.end() == b => l.len += 1,
            _ => out.push(Extent { start: b, len: 1 }),
        }
    }
    out
}

impl MetaPool {
    /// A pool over `list` and the committed `tree`; the list is kept near `target`
    /// blocks between commits.
    pub fn new(list: ListAlloc, tree: AllocRoot, cache: Arc<BlockCache>, target: usize) -> Self {
        MetaPool {
            list,
            tree,
            cache,
            claimed: Vec::new(),
            claimed_len: 0,
            cursor: 0,
            returns: Vec::new(),
            returns_len: 0,
            auto_claim: true,
            target: target.max(1),
            hi: target.max(1).saturating_mul(2),
        }
    }

    /// Free blocks the pool can still hand out: the tree less claims plus the list and
    /// pending returns (not counting blocks freed in this transaction).
    pub fn free_blocks(&self) -> u64 {
        (self.tree.total_len - self.claimed_len.min(self.tree.total_len))
            + self.list.avail_len() as u64
            + self.returns_len
    }

    /// Blocks freed in this transaction (free once it commits).
    pub fn freed_blocks(&self) -> u64 {
        self.list.freed_len() as u64
    }

    /// The tree as of the last commit (or as `prepare_commit` left it).
    pub fn tree(&self) -> AllocRoot {
        self.tree
    }

    /// Give blocks back to the pool; they must be free and unreferenced by the stable
    /// super (e.g. a departed client's unused list).
    pub fn return_blocks(&mut self, blknos: Vec<u64>) {
        for e in runs(blknos) {
            self.returns_len += e.len;
            self.returns.push(e);
        }
    }

    /// Give back `len` free blocks from `start` (see [`MetaPool::return_blocks`]).
    pub fn return_blocks_range(&mut self, start: u64, len: u64) {
        if len > 0 {
            self.returns_len += len;
            self.returns.push(Extent { start, len });
        }
    }

    /// Claim up to `n` blocks from the tree as `rd` shows it, upwards from the cursor
    /// (fewer if it runs out).
    fn claim_from<R: BlockRead + ?Sized>(&mut self, rd: &R, n: u64) -> btree::Result<Vec<Extent>> {
        let mut got = Vec::new();
        let mut left = n;
        while left > 0 {
            let Some(e) = self.tree.first_ending_after(rd, self.cursor)? else {
                break;
            };
            let from = e.start.max(self.cursor);
            let c = Extent {
                start: from,
                len: (e.end() - from).min(left),
            };
            self.cursor = c.end();
            self.claimed_len += c.len;
            left -= c.len;
            self.claimed.push(c);
            got.push(c);
        }
        Ok(got)
    }

    /// Take `n` blocks out of the pool for someone else's list (a client's). Fails with
    /// [`AllocError::NoSpace`], taking nothing, if the pool holds fewer.
    pub fn take_blocks(&mut self, n: usize) -> btree::Result<Vec<u64>> {
        if (n as u64) > self.free_blocks() {
            return Err(AllocError::NoSpace.into());
        }
        let mut out = Vec::with_capacity(n);
        // Pending returns first, then the tree, then the list.
        while out.len() < n {
            let Some(e) = self.returns.pop() else { break };
            let take = (e.len).min((n - out.len()) as u64);
            out.extend(e.start..e.start + take);
            self.returns_len -= take;
            if take < e.len {
                self.returns.push(Extent {
                    start: e.start + take,
                    len: e.len - take,
                });
            }
        }
        if out.len() < n {
            let cache = self.cache.clone();
            for e in self.claim_from(&*cache, (n - out.len()) as u64)? {
                out.extend(e.start..e.end());
            }
        }
        if out.len() < n {
            out.extend(self.list.take_avail(n - out.len()));
        }
        if out.len() < n {
            return Err(BlockError::Internal("pool held fewer blocks than it counted").into());
        }
        Ok(out)
    }

    fn refill_list<R: BlockRead + ?Sized>(&mut self, rd: &R, n: u64) -> btree::Result<()> {
        // Pending returns are the cheapest source: they are not in the tree yet. The
        // blocks go into the list at once (it sorts itself on every addition, and the
        // returns of a full volume are many small extents).
        let mut add = Vec::new();
        let mut need = n;
        while need > 0 {
            let Some(e) = self.returns.pop() else { break };
            let take = e.len.min(need);
            add.extend(e.start..e.start + take);
            self.returns_len -= take;
            need -= take;
            if take < e.len {
                self.returns.push(Extent {
                    start: e.start + take,
                    len: e.len - take,
                });
            }
        }
        if need > 0 {
            for e in self.claim_from(rd, need)? {
                add.extend(e.start..e.end());
            }
        }
        self.list.add_avail(add);
        Ok(())
    }

    /// Upper bound of the blocks one extent-tree change (two deletes and two inserts)
    /// allocates.
    fn op_cost(&self) -> usize {
        let h = self.tree.root.height as usize + 2;
        4 * (3 * h + 3)
    }

    /// Blocks the commit itself will allocate: the alloc lists written (the freed list
    /// grows with every block freed) and the claims and returns applied to the tree.
    pub fn commit_need(&self, block_size: usize) -> u64 {
        let commit_cost = self.list.commit_cost(block_size).unwrap_or(usize::MAX / 4);
        let pending = self.claimed.len() + self.returns.len();
        ((pending + 1) * self.op_cost() + commit_cost + 2) as u64
    }

    /// Free blocks that may still be allocated before the commit without leaving it short:
    /// [`MetaPool::free_blocks`] less [`MetaPool::commit_need`].
    pub fn headroom(&self, block_size: usize) -> u64 {
        self.free_blocks()
            .saturating_sub(self.commit_need(block_size))
    }

    /// Apply this transaction's claims and returns to the tree and write the alloc
    /// lists. Returns the (avail, freed) list heads for the super. Nothing may allocate
    /// from the pool between this and the commit's end.
    pub fn prepare_commit(
        &mut self,
        wri: &mut BlockWriter,
    ) -> Result<(RawAllocListHead, RawAllocListHead), btree::BtreeError> {
        let bs = wri.cache().geometry().block_size;
        // Too much in the list: the excess goes back to the tree.
        if self.list.avail_len() > self.hi {
            let excess = self.list.avail_len() - self.target;
            let blknos = self.list.take_avail(excess);
            self.return_blocks(blknos);
        }
        loop {
            let commit_cost = self.list.commit_cost(bs).unwrap_or(usize::MAX / 4);
            let pending = self.claimed.len() + self.returns.len();
            let need = self.commit_need(bs) as usize;
            if self.list.avail_len() < need {
                // The tree as it stands now (dirty after an earlier round), from the
                // cursor: earlier claims of this round are still in it.
                // Claim in chunks: applying a claim costs blocks too, and one chunk
                // usually covers the claims, the returns and the lists together.
                let before = self.list.avail_len();
                let want = (need - before)
                    .max(self.target / 2)
                    .max(CLAIM_CHUNK as usize);
                self.refill_list(&*wri, want as u64)?;
                let gained = self.list.avail_len() > before;
                if !gained && pending == 0 {
                    if self.list.avail_len() >= commit_cost {
                        break;
                    }
                    return Err(AllocError::NoSpace.into());
                }
            }
            let claims = coalesce(std::mem::take(&mut self.claimed));
            let returns = coalesce(std::mem::take(&mut self.returns));
            if claims.is_empty() && returns.is_empty() {
                break;
            }
            let mut tree = self.tree;
            self.auto_claim = false;
            let res = (|| {
                let mut t = TreeTxn {
                    wri: &mut *wri,
                    alloc: &mut self.list,
                };
                for e in &claims {
                    tree.remove(&mut t, e.start, e.len)?;
                }
                for e in &returns {
                    tree.insert(&mut t, e.start, e.len)?;
                }
                Ok::<(), btree::BtreeError>(())
            })();
            self.auto_claim = true;
            res?;
            self.tree = tree;
            self.claimed_len = 0;
            self.returns_len = 0;
            self.cursor = 0;
        }
        Ok(self.list.write_lists(wri, 0)?)
    }

    /// The commit is durable: what it freed may be reused.
    pub fn commit_done(&mut self) {
        let freed = self.list.take_freed();
        self.list.add_avail(freed);
    }

    /// The list (for counts).
    pub fn list(&self) -> &ListAlloc {
        &self.list
    }
}

impl MetaAllocator for MetaPool {
    fn alloc_meta(&mut self) -> Result<u64, AllocError> {
        if self.list.avail_len() == 0 && self.auto_claim {
            let cache = self.cache.clone();
            self.refill_list(&*cache, CLAIM_CHUNK)
                .map_err(|_| AllocError::PoolUnreadable)?;
        }
        self.list.alloc_meta()
    }

    fn free_meta(&mut self, blkno: u64) -> Result<(), AllocError> {
        self.list.free_meta(blkno)
    }

    fn remaining(&self) -> usize {
        if self.auto_claim {
            usize::try_from(self.free_blocks()).unwrap_or(usize::MAX)
        } else {
            self.list.avail_len()
        }
    }
}
