//! Directory entries: lookup by name hash, readdir by position, link back-references;
//! link, unlink, rmdir and rename.

use super::*;

/// Entries read per batch by readdir.
const READDIR_BATCH: usize = 64;

/// A decoded directory entry item.
pub(super) struct Entry {
    pub(super) d: Dirent,
    pub(super) name: Vec<u8>,
}

fn decode_entry(val: &[u8]) -> FsResult<Entry> {
    let (d, name) = Dirent::read_from_prefix(val)
        .map_err(|_| FsError::Corrupt("directory entry item too short"))?;
    Ok(Entry {
        d,
        name: name.to_vec(),
    })
}

impl State {
    /// The entry `name` of directory `dir` (`None` if absent).
    pub(super) fn find_entry(&self, dir: u64, name: &[u8]) -> FsResult<Option<(Dirent, u64)>> {
        let h = name_hash(name);
        let items = self
            .client
            .read_items(&dirent_key(dir, h, 0), &dirent_key(dir, h, u64::MAX))?;
        for it in items {
            let e = decode_entry(&it.val)?;
            if e.name == name {
                return Ok(Some((e.d, h)));
            }
        }
        Ok(None)
    }

    /// The parent of directory `dir` (its only back-reference; the root is its own).
    pub(super) fn parent_of(&self, dir: u64) -> FsResult<u64> {
        if dir == ROOT_INO {
            return Ok(ROOT_INO);
        }
        let items = self.client.read_items_limit(
            &link_backref_key(dir, 0, 0),
            &link_backref_key(dir, u64::MAX, u64::MAX),
            1,
        )?;
        match items.first() {
            Some(it) => Ok(it.key.second),
            None => Err(FsError::NotFound),
        }
    }

    /// Whether `anc` is `ino` or one of its ancestors.
    fn is_ancestor(&self, anc: u64, ino: u64) -> FsResult<bool> {
        let mut cur = ino;
        // Bounded: a loop in the tree (damage) must not hang us.
        for _ in 0..100_000 {
            if cur == anc {
                return Ok(true);
            }
            if cur == ROOT_INO {
                return Ok(false);
            }
            cur = self.parent_of(cur)?;
        }
        Err(FsError::Corrupt("directory tree deeper than any possible"))
    }

    /// Add the entry `name` → `ino` to `dir` (three items) and update the directory.
    pub(super) fn add_entry(
        &mut self,
        dir: u64,
        name: &[u8],
        ino: u64,
        kind: FileKind,
    ) -> FsResult<()> {
        let mut di = self.inode(dir)?;
        let pos = di.next_readdir_pos.get();
        let h = name_hash(name);
        let d = Dirent {
            ino: ino.into(),
            hash: h.into(),
            pos: pos.into(),
            kind: kind.dtype(),
            pad: [0; 7],
        };
        let mut val = d.as_bytes().to_vec();
        val.extend_from_slice(name);
        self.client.insert(&dirent_key(dir, h, pos), &val)?;
        self.client.insert(&readdir_key(dir, pos), &val)?;
        self.client.insert(&link_backref_key(ino, dir, pos), &val)?;
        di.next_readdir_pos = (pos + 1).into();
        di.size = (di.size.get() + name.len() as u64).into();
        di.mtime = raw_time(self.now);
        di.ctime = raw_time(self.now);
        self.put_inode(dir, &mut di)
    }

    /// Remove the entry `d` (named `name`) from `dir` and update the directory.
    pub(super) fn remove_entry(&mut self, dir: u64, name: &[u8], d: &Dirent) -> FsResult<()> {
        let pos = d.pos.get();
        self.client.delete(&dirent_key(dir, d.hash.get(), pos))?;
        self.client.delete(&readdir_key(dir, pos))?;
        self.client
            .delete(&link_backref_key(d.ino.get(), dir, pos))?;
        let mut di = self.inode(dir)?;
        di.size = di.size.get().saturating_sub(name.len() as u64).into();
        di.mtime = raw_time(self.now);
        di.ctime = raw_time(self.now);
        self.put_inode(dir, &mut di)
    }

    fn add_nlink(&mut self, ino: u64, delta: i32) -> FsResult<()> {
        let mut i = self.inode(ino)?;
        i.nlink = i.nlink.get().saturating_add_signed(delta).into();
        i.ctime = raw_time(self.now);
        self.put_inode(ino, &mut i)
    }

    /// A directory `ino` that exists and is a live directory.
    fn dir_inode(&self, ino: u64) -> FsResult<Inode> {
        let i = self.inode(ino)?;
        if kind_of(&i)? != FileKind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(i)
    }

    fn is_empty_dir(&self, ino: u64) -> FsResult<bool> {
        Ok(self
            .client
            .read_items_limit(&readdir_key(ino, 0), &readdir_key(ino, u64::MAX), 1)?
            .is_empty())
    }

    pub(super) fn link(&mut self, ino: u64, newparent: u64, newname: &[u8]) -> FsResult<Attr> {
        check_entry_name(newname)?;
        let inode = self.inode(ino)?;
        let kind = kind_of(&inode)?;
        if kind == FileKind::Dir {
            return Err(FsError::NotPermitted);
        }
        let dir = self.dir_inode(newparent)?;
        if dir.nlink.get() == 0 || inode.nlink.get() == 0 {
            return Err(FsError::NotFound);
        }
        if self.find_entry(newparent, newname)?.is_some() {
            return Err(FsError::Exists);
        }
        if inode.nlink.get() >= LINK_MAX {
            return Err(FsError::TooManyLinks);
        }
        // The directory's and the inode's updates.
        self.begin(Reservation::allocating(8 + 2 * INDEX_ITEMS).bytes(2 * newname.len()))?;
        self.add_entry(newparent, newname, ino, kind)?;
        self.add_nlink(ino, 1)?;
        self.attr(ino)
    }

    pub(super) fn unlink(&mut self, parent: u64, name: &[u8]) -> FsResult<()> {
        check_entry_name(name)?;
        self.dir_inode(parent)?;
        let (d, _) = self.find_entry(parent, name)?.ok_or(FsError::NotFound)?;
        if FileKind::from_dtype(d.kind)? == FileKind::Dir {
            return Err(FsError::IsDir);
        }
        self.freeing = true;
        self.begin(Reservation::freeing(8 + INDEX_ITEMS).and(deletion_reservation()))?;
        self.remove_entry(parent, name, &d)?;
        self.drop_link(d.ino.get(), false)
    }

    pub(super) fn rmdir(&mut self, parent: u64, name: &[u8]) -> FsResult<()> {
        check_name(name)?;
        if name == b"." {
            return Err(FsError::Invalid);
        }
        if name == b".." {
            return Err(FsError::NotEmpty);
        }
        self.dir_inode(parent)?;
        let (d, _) = self.find_entry(parent, name)?.ok_or(FsError::NotFound)?;
        if FileKind::from_dtype(d.kind)? != FileKind::Dir {
            return Err(FsError::NotDir);
        }
        let ino = d.ino.get();
        if !self.is_empty_dir(ino)? {
            return Err(FsError::NotEmpty);
        }
        self.freeing = true;
        self.begin(Reservation::freeing(8 + INDEX_ITEMS).and(deletion_reservation()))?;
        self.remove_entry(parent, name, &d)?;
        self.add_nlink(parent, -1)?;
        self.drop_link(ino, true)
    }

    pub(super) fn rename(
        &mut self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: RenameFlags,
    ) -> FsResult<()> {
        if flags.noreplace && flags.exchange {
            return Err(FsError::Invalid);
        }
        check_entry_name(name)?;
        check_entry_name(newname)?;
        if parent != newparent {
            // Renames across directories are one at a time in the cluster: two of them
            // could otherwise each move a directory under the other.
            self.client.need_lock(&crate::client::locks::RENAME_LOCK)?;
        }
        self.dir_inode(parent)?;
        let np = self.dir_inode(newparent)?;
        let (src, _) = self.find_entry(parent, name)?.ok_or(FsError::NotFound)?;
        let src_kind = FileKind::from_dtype(src.kind)?;
        let src_ino = src.ino.get();
        let dst = self.find_entry(newparent, newname)?;
        if flags.exchange {
            let (dst, _) = dst.ok_or(FsError::NotFound)?;
            return self.exchange(parent, name, &src, newparent, newname, &dst);
        }
        if let Some((dst, _)) = &dst {
            if flags.noreplace {
                return Err(FsError::Exists);
            }
            if dst.ino.get() == src_ino {
                return Ok(());
            }
        }
        if src_kind == FileKind::Dir {
            if newparent != parent && self.is_ancestor(src_ino, newparent)? {
                return Err(FsError::Invalid);
            }
            if dst.is_none() && newparent != parent && np.nlink.get() >= LINK_MAX {
                return Err(FsError::TooManyLinks);
            }
        }
        if let Some((dst, _)) = &dst {
            let dst_kind = FileKind::from_dtype(dst.kind)?;
            match (src_kind == FileKind::Dir, dst_kind == FileKind::Dir) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) => {
                    if !self.is_empty_dir(dst.ino.get())? {
                        return Err(FsError::NotEmpty);
                    }
                }
                (false, false) => {}
            }
        }
        // The target (if any) is let go of in the same transaction: deleted whole if
        // small, else orphaned here and deleted in steps after the rename.
        self.begin(
            // Both directories' and the inode's updates (the target's is in its deletion).
            Reservation::allocating(16 + 3 * INDEX_ITEMS)
                .bytes(2 * newname.len())
                .and(deletion_reservation()),
        )?;
        let dst_dir = match &dst {
            Some((dst, _)) => {
                self.remove_entry(newparent, newname, dst)?;
                let is_dir = FileKind::from_dtype(dst.kind)? == FileKind::Dir;
                if is_dir {
                    self.add_nlink(newparent, -1)?;
                }
                Some((dst.ino.get(), is_dir))
            }
            None => None,
        };
        self.remove_entry(parent, name, &src)?;
        self.add_entry(newparent, newname, src_ino, src_kind)?;
        if src_kind == FileKind::Dir && parent != newparent {
            self.add_nlink(parent, -1)?;
            self.add_nlink(newparent, 1)?;
        }
        let mut i = self.inode(src_ino)?;
        i.ctime = raw_time(self.now);
        self.put_inode(src_ino, &mut i)?;
        // The target's link goes last: deleting a large target ends the rename's step
        // (with the target orphaned) and goes on in steps of its own.
        match dst_dir {
            Some((ino, is_dir)) => self.drop_link(ino, is_dir),
            None => Ok(()),
        }
    }

    fn exchange(
        &mut self,
        parent: u64,
        name: &[u8],
        src: &Dirent,
        newparent: u64,
        newname: &[u8],
        dst: &Dirent,
    ) -> FsResult<()> {
        let (a, b) = (src.ino.get(), dst.ino.get());
        if a == b {
            return Ok(());
        }
        let ak = FileKind::from_dtype(src.kind)?;
        let bk = FileKind::from_dtype(dst.kind)?;
        if parent != newparent {
            if ak == FileKind::Dir && self.is_ancestor(a, newparent)? {
                return Err(FsError::Invalid);
            }
            if bk == FileKind::Dir && self.is_ancestor(b, parent)? {
                return Err(FsError::Invalid);
            }
        }
        // Both directories' and both inodes' updates.
        self.begin(
            Reservation::allocating(16 + 4 * INDEX_ITEMS).bytes(2 * (name.len() + newname.len())),
        )?;
        self.remove_entry(parent, name, src)?;
        self.remove_entry(newparent, newname, dst)?;
        self.add_entry(parent, name, b, bk)?;
        self.add_entry(newparent, newname, a, ak)?;
        if parent != newparent {
            let d = |k: FileKind| i32::from(k == FileKind::Dir);
            let into_new = d(ak) - d(bk);
            if into_new != 0 {
                self.add_nlink(newparent, into_new)?;
                self.add_nlink(parent, -into_new)?;
            }
        }
        for ino in [a, b] {
            let mut i = self.inode(ino)?;
            i.ctime = raw_time(self.now);
            self.put_inode(ino, &mut i)?;
        }
        Ok(())
    }

    pub(super) fn readdir(
        &self,
        dir: u64,
        pos: u64,
        f: &mut dyn FnMut(&DirEntry) -> bool,
    ) -> FsResult<()> {
        self.dir_inode(dir)?;
        if pos == 0
            && !f(&DirEntry {
                ino: dir,
                kind: FileKind::Dir,
                name: b".".to_vec(),
                next_pos: 1,
            })
        {
            return Ok(());
        }
        if pos <= 1
            && !f(&DirEntry {
                ino: self.parent_of(dir)?,
                kind: FileKind::Dir,
                name: b"..".to_vec(),
                next_pos: 2,
            })
        {
            return Ok(());
        }
        let mut from = pos.max(2);
        loop {
            let items = self.client.read_items_limit(
                &readdir_key(dir, from),
                &readdir_key(dir, u64::MAX),
                READDIR_BATCH,
            )?;
            let n = items.len();
            for it in items {
                let e = decode_entry(&it.val)?;
                let p = it.key.second;
                let de = DirEntry {
                    ino: e.d.ino.get(),
                    kind: FileKind::from_dtype(e.d.kind)?,
                    name: e.name,
                    next_pos: p + 1,
                };
                if !f(&de) {
                    return Ok(());
                }
                from = p + 1;
            }
            if n < READDIR_BATCH {
                return Ok(());
            }
        }
    }
}
