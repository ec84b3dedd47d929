//! The kernel's caches of the mount kept coherent with changes it did not make: the
//! adapter's side of `scoutfs_core::fs::KernelCache`.
//!
//! What the kernel may hold. Attributes and pages of the inodes it was given an entry
//! for, which the `Fs` counts (`Fs::referenced_inodes`; the root, which it is never given,
//! too); and names in directories, which only the adapter sees: every name it answered
//! (lookup, create, mknod, mkdir, symlink, link, readdirplus), positive or negative, is
//! kept in [`Entries`] per directory until an invalidation of the directory drops it.
//! Bounds: a positive name goes when the kernel forgets the inode it names (no dentry
//! can name an inode the kernel holds no reference to); the kernel drops negative
//! dentries without a word, so negative names are kept up to [`MAX_NEGATIVE`] (about
//! 300 bytes each at most) and, past that, a lookup of an absent name is answered with
//! timeout 0 (the kernel does not keep it, and asks again next time) until an
//! invalidation makes room.
//!
//! Invalidation ([`Kernel::invalidate`], called by the `Fs` for an inode range): the
//! known inodes and names of the range go to the kernel as FUSE notifications — every
//! inode's attributes first (`inval_inode(ino, -1, 0)`, which takes no lock that a
//! request holds), then the names (`inval_entry`), then, with `data`, every inode's
//! pages (`inval_inode(ino, 0, 0)`), or the attributes again if names went (see the
//! races below). They are written by [`NOTIFY_THREADS`] threads of their own and never
//! by a request handler: the kernel writes a notification only once it has the locks
//! the notification needs — `inval_entry` the directory's inode lock, which a lookup,
//! create or readdir in that directory holds until its reply, and `inval_inode` with
//! pages the lock of every cached page, which a read holds until its reply — so a
//! handler that wrote one about its own directory or file would wait for its own reply
//! for ever. (A handler may wait for the threads where the kernel holds nothing of the
//! inodes concerned for its request: the control channel's ioctls, whose release, stage
//! and setattr_more have the `Fs` call [`Kernel::invalidate`] for their file.) A release
//! of a file a reader is parked on (module `park`: the reader's pages stay locked until
//! it is staged) waits the bound below for its pages.
//! `invalidate` returns once its notifications are written, so the lock code
//! answers the server only once the kernel has let go of what it cached; but at most
//! [`NOTIFY_BOUND`] later: a request blocked in the daemon (on the lock being given
//! up, say) holds its directory's or page's lock until it is answered, and the
//! notification behind it waits until then. Past the bound the caller goes on (the
//! notification still reaches the kernel once the request is answered) and
//! [`Kernel::late`] counts it; the attributes, written first, are dropped already.
//!
//! Races with replies in flight. What this relies on from the caller (the lock code):
//! `invalidate` comes after every `Fs` operation that read under the lock returned, and
//! none reads under it again before it is granted anew. A reply computed before an
//! invalidation may still reach the kernel after its notifications:
//! - attributes: the kernel numbers its attribute changes (`attr_version`); a reply to
//!   a request sent before an `inval_inode` of an inode the kernel holds is dropped;
//! - names: a lookup or create is answered from the name recorded before the `Fs` is
//!   asked (the name is in [`Entries`] before the answer exists), so an invalidation
//!   after the answer was made has the name, and its `inval_entry` waits for the
//!   directory lock the request holds: it drops the dentry the reply made. Readdirplus
//!   names are known only in the answer: a handler that recorded them after an
//!   invalidation of their directory started (the invalidation generation moved past
//!   the one it saw, and a range since then covers the directory) queues the
//!   invalidation of what it recorded again, before it replies; that waits for the
//!   directory lock its own request holds, so it runs after the reply is in. The
//!   invalidation it raced does not wait for it (the handler may be blocked on the very
//!   lock being given up): until it runs, a few microseconds after the reply, the
//!   kernel may show a name the reply carried;
//! - a new inode: an `inval_inode` of an inode the kernel does not hold yet (a lookup's
//!   reply in flight) finds nothing, and the reply then makes the inode with the old
//!   attributes. Names go before the second round of attributes for that: once the
//!   name's `inval_entry` is through, the lookup that made the inode is done. An inode
//!   named in a directory outside the range (a hard link, or the entry's group not
//!   being the inode's) has no name in the batch to wait for; handlers whose answer
//!   raced an invalidation covering the inode queue its attributes again after the
//!   name, as for readdirplus.

use fuser::{INodeNo, Notifier};
use scoutfs_core::fs::{Fs, KernelCache, ROOT_INO};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread;
use std::time::Duration;

/// Negative names kept at most (past it, absent names are answered uncached).
pub const MAX_NEGATIVE: usize = 16384;

/// How long an invalidation waits for the kernel to take its notifications.
pub const NOTIFY_BOUND: Duration = Duration::from_secs(5);

/// Threads writing notifications: one stuck behind a request does not hold up the rest.
pub const NOTIFY_THREADS: usize = 2;

/// Invalidated ranges remembered for handlers whose answer may have raced one.
const RECENT: usize = 32;

/// A name in a directory.
pub type Name = Arc<[u8]>;

/// What the kernel may hold under a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Named {
    /// Nothing, or a negative dentry (also a name asked about and not answered yet).
    Absent,
    /// A dentry of this inode.
    Inode(u64),
}

/// The names the kernel may hold, per directory (see the module comment).
#[derive(Debug)]
pub struct Entries {
    dirs: BTreeMap<u64, HashMap<Name, Named>>,
    /// The names that name each inode, each with the forget stamp it was answered at.
    naming: HashMap<u64, Vec<(u64, Name, u64)>>,
    /// Counts [`Entries::forgetting`] calls (see [`Entries::forgotten`]).
    stamp: u64,
    /// Names held as [`Named::Absent`].
    negatives: usize,
    max_negatives: usize,
    /// Invalidations so far, and the ranges of the last [`RECENT`] of them (by number).
    generation: u64,
    recent: VecDeque<(u64, u64, u64)>,
}

impl Entries {
    /// Nothing known yet; at most `max_negatives` negative names.
    pub fn new(max_negatives: usize) -> Entries {
        Entries {
            dirs: BTreeMap::new(),
            naming: HashMap::new(),
            stamp: 0,
            negatives: 0,
            max_negatives,
            generation: 0,
            recent: VecDeque::new(),
        }
    }

    fn state(&self, dir: u64, name: &[u8]) -> Option<Named> {
        self.dirs.get(&dir).and_then(|d| d.get(name)).copied()
    }

    /// Set what `dir`'s `name` holds (`None`: not known any more).
    fn set(&mut self, dir: u64, name: &[u8], to: Option<Named>) {
        let d = self.dirs.entry(dir).or_default();
        let old = match to {
            Some(n) => d.insert(Arc::from(name), n),
            None => d.remove(name),
        };
        if d.is_empty() {
            self.dirs.remove(&dir);
        }
        match old {
            Some(Named::Absent) => self.negatives -= 1,
            Some(Named::Inode(ino)) => self.unname(ino, dir, name),
            None => {}
        }
        match to {
            Some(Named::Absent) => self.negatives += 1,
            Some(Named::Inode(ino)) => {
                self.naming
                    .entry(ino)
                    .or_default()
                    .push((dir, name.into(), self.stamp))
            }
            None => {}
        }
    }

    fn unname(&mut self, ino: u64, dir: u64, name: &[u8]) {
        if let Some(v) = self.naming.get_mut(&ino) {
            v.retain(|(d, n, _)| !(*d == dir && **n == *name));
            if v.is_empty() {
                self.naming.remove(&ino);
            }
        }
    }

    /// A request about `name` in `dir` is to be answered: known from now (as absent until
    /// the answer says), so that an invalidation before the answer reaches the kernel
    /// invalidates it.
    pub fn asking(&mut self, dir: u64, name: &[u8]) {
        if self.state(dir, name).is_none() {
            self.set(dir, name, Some(Named::Absent));
        }
    }

    /// `name` in `dir` was answered with inode `ino`.
    pub fn named(&mut self, dir: u64, name: &[u8], ino: u64) {
        if self.state(dir, name) != Some(Named::Inode(ino)) {
            self.set(dir, name, Some(Named::Inode(ino)));
        } else if let Some(v) = self.naming.get_mut(&ino) {
            // Answered again: as new as the answer (see `forgotten`).
            for (d, n, s) in v.iter_mut() {
                if *d == dir && **n == *name {
                    *s = self.stamp;
                }
            }
        }
    }

    /// `name` in `dir` was answered "no such name": whether the kernel may keep that
    /// (false past [`Entries::new`]'s bound: the name is not kept, and the answer must
    /// not be cached).
    pub fn absent(&mut self, dir: u64, name: &[u8]) -> bool {
        if self.state(dir, name) != Some(Named::Absent) {
            self.set(dir, name, Some(Named::Absent));
        }
        if self.negatives > self.max_negatives {
            self.set(dir, name, None);
            return false;
        }
        true
    }

    /// `name` in `dir` was unlinked or removed through the kernel, which may keep a
    /// negative dentry in its place.
    pub fn removed(&mut self, dir: u64, name: &[u8]) {
        self.set(dir, name, Some(Named::Absent));
    }

    /// A rename through the kernel: the source name is left absent, the target names
    /// what the source named (both swap with `exchange`).
    pub fn renamed(&mut self, dir: u64, name: &[u8], newdir: u64, newname: &[u8], exchange: bool) {
        let src = self.state(dir, name).unwrap_or(Named::Absent);
        let dst = self.state(newdir, newname).unwrap_or(Named::Absent);
        self.set(newdir, newname, Some(src));
        self.set(dir, name, Some(if exchange { dst } else { Named::Absent }));
    }

    /// A forget is to be looked at: the stamp to give [`Entries::forgotten`].
    pub fn forgetting(&mut self) -> u64 {
        self.stamp += 1;
        self.stamp
    }

    /// The kernel held no reference to `ino` when it was looked at after
    /// [`Entries::forgetting`] gave `since`: no dentry named it then, so the names that
    /// were answered with it before are dropped. One answered since (its reference was
    /// counted after the look) stays.
    pub fn forgotten(&mut self, ino: u64, since: u64) {
        let Some(v) = self.naming.remove(&ino) else {
            return;
        };
        let (gone, kept): (Vec<_>, Vec<_>) = v.into_iter().partition(|&(_, _, s)| s < since);
        if !kept.is_empty() {
            self.naming.insert(ino, kept);
        }
        for (dir, name, _) in gone {
            if self.state(dir, &name) == Some(Named::Inode(ino)) {
                // `naming` is done already: only the name goes.
                let d = self.dirs.entry(dir).or_default();
                d.remove(&name);
                if d.is_empty() {
                    self.dirs.remove(&dir);
                }
            }
        }
    }

    /// An invalidation of `first..=last`: its names, no longer known (the kernel is
    /// told to drop them). Numbered: see [`Entries::raced`].
    pub fn invalidate(&mut self, first: u64, last: u64) -> Vec<(u64, Name)> {
        self.generation += 1;
        self.recent.push_back((self.generation, first, last));
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
        let dirs: Vec<u64> = if first <= last {
            self.dirs.range(first..=last).map(|(&d, _)| d).collect()
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        for dir in dirs {
            for (name, n) in self.dirs.remove(&dir).unwrap_or_default() {
                match n {
                    Named::Absent => self.negatives -= 1,
                    Named::Inode(ino) => self.unname(ino, dir, &name),
                }
                out.push((dir, name));
            }
        }
        out
    }

    /// The invalidations so far: what a handler notes before it asks the `Fs`.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether an invalidation after generation `seen` covered `ino` (true too when
    /// too many came since to tell).
    pub fn raced(&self, seen: u64, ino: u64) -> bool {
        if self.generation == seen {
            return false;
        }
        match self.recent.front() {
            Some(&(g, _, _)) if g <= seen + 1 => self
                .recent
                .iter()
                .any(|&(g, f, l)| g > seen && (f..=l).contains(&ino)),
            _ => true,
        }
    }

    /// Negative names known now.
    pub fn negatives(&self) -> usize {
        self.negatives
    }

    /// Names known now.
    pub fn len(&self) -> usize {
        self.dirs.values().map(HashMap::len).sum()
    }

    /// Whether no name is known.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }
}

/// Notifications for the kernel, written in this order (module comment).
#[derive(Debug, Default)]
struct Batch {
    attrs: Vec<u64>,
    names: Vec<(u64, Name)>,
    data: bool,
    /// Told when all are written (nobody waits for a handler's follow-up).
    done: Option<Sender<()>>,
}

fn write(n: &Notifier, b: &Batch) {
    // A notification the kernel refuses (ENOENT, which fuser passes as success: it
    // holds nothing of it) or one the connection is gone for changes nothing cached.
    for &ino in &b.attrs {
        let _ = n.inval_inode(INodeNo(ino), -1, 0);
    }
    for (dir, name) in &b.names {
        let _ = n.inval_entry(INodeNo(*dir), OsStr::from_bytes(name));
    }
    if b.data || !b.names.is_empty() {
        let off = if b.data { 0 } else { -1 };
        for &ino in &b.attrs {
            let _ = n.inval_inode(INodeNo(ino), off, 0);
        }
    }
}

/// The adapter's `KernelCache`: what the kernel may hold, and the threads that tell it.
#[derive(Debug)]
pub struct Kernel {
    fs: Weak<Fs>,
    entries: Mutex<Entries>,
    notifier: OnceLock<Notifier>,
    queue: Mutex<Option<Sender<(Notifier, Batch)>>>,
    bound: Duration,
    late: AtomicU64,
}

/// What a handler noted before it asked the `Fs` (see [`Kernel::before`]).
#[derive(Clone, Copy, Debug)]
pub struct Seen(u64);

impl Kernel {
    /// Nothing known yet; starts the notification threads, which write once
    /// [`Kernel::set_notifier`] is called (until then, nothing is cached).
    pub fn new(fs: &Arc<Fs>, max_negatives: usize, bound: Duration) -> std::io::Result<Kernel> {
        let (tx, rx) = mpsc::channel::<(Notifier, Batch)>();
        let rx = Arc::new(Mutex::new(rx));
        let k = Kernel {
            fs: Arc::downgrade(fs),
            entries: Mutex::new(Entries::new(max_negatives)),
            notifier: OnceLock::new(),
            queue: Mutex::new(Some(tx)),
            bound,
            late: AtomicU64::new(0),
        };
        for i in 0..NOTIFY_THREADS {
            let rx = rx.clone();
            thread::Builder::new()
                .name(format!("scoutfs-notify{i}"))
                .spawn(move || notify(&rx))?;
        }
        Ok(k)
    }

    /// The session's notifier, once the session exists.
    pub fn set_notifier(&self, n: Notifier) {
        let _ = self.notifier.set(n);
    }

    /// Stop the threads (the session is over): invalidations do nothing from now on.
    pub fn stop(&self) {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Invalidations that the kernel did not take within the bound.
    pub fn late(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Known names and negatives now (tests and diagnostics).
    pub fn known(&self) -> (usize, usize) {
        let e = self.entries();
        (e.len(), e.negatives())
    }

    /// Queue `b`; false if it cannot be written (no session yet, or no more).
    fn send(&self, b: Batch) -> bool {
        let Some(n) = self.notifier.get() else {
            return false;
        };
        let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.as_ref().is_some_and(|q| q.send((n.clone(), b)).is_ok())
    }

    /// Before a handler asks the `Fs` about `name` in `dir` (None: names it does not
    /// know yet, a readdirplus): the name is known from now on.
    pub fn before(&self, dir: u64, name: Option<&[u8]>) -> Seen {
        let mut e = self.entries();
        if let Some(name) = name {
            e.asking(dir, name);
        }
        Seen(e.generation())
    }

    /// After the `Fs` answered `names` (each with its inode, or none: absent) in `dir`,
    /// before the reply: records them, and queues their invalidation again if one raced
    /// the answer. Returns, per name, whether the kernel may cache it (a negative past
    /// the bound may not).
    pub fn answered(&self, seen: Seen, dir: u64, names: &[(&[u8], Option<u64>)]) -> Vec<bool> {
        let mut e = self.entries();
        let mut again = Batch::default();
        let dir_raced = e.raced(seen.0, dir);
        let cache = names
            .iter()
            .map(|&(name, ino)| {
                let (keep, ino_raced) = match ino {
                    Some(i) => {
                        e.named(dir, name, i);
                        let r = e.raced(seen.0, i);
                        if r {
                            again.attrs.push(i);
                        }
                        (true, r)
                    }
                    None => (e.absent(dir, name), false),
                };
                if dir_raced || ino_raced {
                    again.names.push((dir, Arc::from(name)));
                }
                keep
            })
            .collect();
        drop(e);
        if !again.names.is_empty() {
            // Not waited for: it waits for this handler's own reply (module comment).
            self.send(again);
        }
        cache
    }

    /// Through the kernel: `name` in `dir` was unlinked or removed.
    pub fn removed(&self, dir: u64, name: &[u8]) {
        self.entries().removed(dir, name);
    }

    /// Through the kernel: a rename.
    pub fn renamed(&self, dir: u64, name: &[u8], newdir: u64, newname: &[u8], exchange: bool) {
        self.entries().renamed(dir, name, newdir, newname, exchange);
    }

    /// The kernel gave back references to `ino`: when the `Fs` counts none any more, no
    /// name names it.
    pub fn forgot(&self, fs: &Fs, ino: u64) {
        // A handler records a name only after the `Fs` counted its reference: one
        // recorded after the stamp is kept, one recorded before it had its reference
        // counted before the look. The `Fs` is not asked under the entries' lock, which
        // `invalidate` takes: the lock code may call that while an `Fs` operation waits.
        let since = self.entries().forgetting();
        if fs.lookup_count(ino) == 0 {
            self.entries().forgotten(ino, since);
        }
    }
}

/// A notification thread: write batches until the session is over.
fn notify(rx: &Mutex<Receiver<(Notifier, Batch)>>) {
    loop {
        // The receiver's lock is let go before writing: the other threads take the next.
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((n, b)) = next else { return };
        write(&n, &b);
        if let Some(done) = b.done {
            let _ = done.send(());
        }
    }
}

impl KernelCache for Kernel {
    fn invalidate(&self, first_ino: u64, last_ino: u64, data: bool) {
        let Some(fs) = self.fs.upgrade() else { return };
        let mut attrs = fs.referenced_inodes(first_ino, last_ino);
        if (first_ino..=last_ino).contains(&ROOT_INO) && !attrs.contains(&ROOT_INO) {
            attrs.insert(0, ROOT_INO);
        }
        let names = self.entries().invalidate(first_ino, last_ino);
        let (tx, rx) = mpsc::channel();
        let b = Batch {
            attrs,
            names,
            data,
            done: Some(tx),
        };
        if !self.send(b) {
            return;
        }
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(self.bound) {
            if self.late.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!(
                    "scoutfs: the kernel took more than {:?} to drop its caches of inodes \
                     {first_ino}..={last_ino} (a request it waits for holds them); going on",
                    self.bound
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(mut v: Vec<(u64, Name)>) -> Vec<(u64, String)> {
        v.sort();
        v.into_iter()
            .map(|(d, n)| (d, String::from_utf8_lossy(&n).into_owned()))
            .collect()
    }

    #[test]
    fn positive_names_go_when_their_inode_is_forgotten_and_negatives_stay() {
        let mut e = Entries::new(100);
        e.asking(10, b"a");
        e.named(10, b"a", 500);
        e.asking(10, b"b");
        e.named(10, b"b", 500); // a hard link
        e.asking(11, b"c");
        e.named(11, b"c", 501);
        e.asking(10, b"none");
        assert!(e.absent(10, b"none"));
        assert_eq!((e.len(), e.negatives()), (4, 1));
        let s = e.forgetting();
        e.forgotten(500, s);
        assert_eq!((e.len(), e.negatives()), (2, 1));
        // A name that names another inode since is not dropped by the first's forget.
        e.named(11, b"c", 502);
        let s = e.forgetting();
        e.forgotten(501, s);
        assert_eq!(e.len(), 2);
        assert_eq!(
            names(e.invalidate(0, u64::MAX)),
            vec![(10, "none".into()), (11, "c".into())]
        );
        assert!(e.is_empty() && e.negatives() == 0 && e.naming.is_empty());
    }

    #[test]
    fn a_name_answered_again_while_a_forget_is_looked_at_stays() {
        let mut e = Entries::new(100);
        e.named(1, b"a", 40);
        e.named(1, b"b", 40);
        let since = e.forgetting();
        // A lookup answered while the forget's count is read: the kernel holds it.
        e.named(1, b"a", 40);
        e.forgotten(40, since);
        assert_eq!(e.state(1, b"a"), Some(Named::Inode(40)));
        assert_eq!(e.state(1, b"b"), None);
        let since = e.forgetting();
        e.forgotten(40, since);
        assert!(e.is_empty() && e.naming.is_empty());
    }

    #[test]
    fn negatives_past_the_bound_are_not_kept_until_an_invalidation_makes_room() {
        let mut e = Entries::new(3);
        for n in [&b"n1"[..], b"n2", b"n3"] {
            e.asking(7, n);
            assert!(e.absent(7, n));
        }
        e.asking(8, b"n4");
        assert!(!e.absent(8, b"n4"), "a fourth negative is kept");
        assert_eq!((e.len(), e.negatives()), (3, 3));
        // Answered again: still kept (the kernel asks again only once it dropped it).
        e.asking(7, b"n1");
        assert!(e.absent(7, b"n1"));
        // A positive answer turns a negative into a positive, making room.
        e.asking(7, b"n2");
        e.named(7, b"n2", 900);
        e.asking(8, b"n4");
        assert!(e.absent(8, b"n4"));
        assert_eq!((e.len(), e.negatives()), (4, 3));
        // Pending asks count while they are answered, and no more after.
        e.asking(9, b"p");
        assert_eq!(e.negatives(), 4);
        assert!(!e.absent(9, b"p"));
        assert_eq!(e.negatives(), 3);
        // An invalidation of directory 7 drops its names: room for two more.
        assert_eq!(
            names(e.invalidate(7, 7)),
            vec![(7, "n1".into()), (7, "n2".into()), (7, "n3".into())]
        );
        assert_eq!((e.len(), e.negatives()), (1, 1));
        for n in [&b"m1"[..], b"m2"] {
            e.asking(9, n);
            assert!(e.absent(9, n));
        }
        e.asking(9, b"m3");
        assert!(!e.absent(9, b"m3"));
        // Directory 7's positive went with it: forgetting its inode changes nothing.
        let s = e.forgetting();
        e.forgotten(900, s);
        assert_eq!((e.len(), e.negatives()), (3, 3));
    }

    #[test]
    fn invalidations_take_only_the_directories_in_their_range() {
        let mut e = Entries::new(100);
        for dir in [1023, 1024, 2047, 2048] {
            e.asking(dir, b"x");
            e.named(dir, b"x", dir + 5000);
        }
        assert_eq!(
            names(e.invalidate(1024, 2047)),
            vec![(1024, "x".into()), (2047, "x".into())]
        );
        assert_eq!(e.len(), 2);
        assert!(
            e.invalidate(5, 4).is_empty(),
            "an empty range takes nothing"
        );
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn renames_move_what_the_kernel_holds() {
        let mut e = Entries::new(100);
        e.named(1, b"a", 50);
        e.named(2, b"b", 60);
        e.renamed(1, b"a", 2, b"b", false);
        assert_eq!(e.state(2, b"b"), Some(Named::Inode(50)));
        assert_eq!(e.state(1, b"a"), Some(Named::Absent));
        // 60 is named no more; 50's forget drops its new name.
        let s = e.forgetting();
        e.forgotten(60, s);
        assert_eq!(e.state(2, b"b"), Some(Named::Inode(50)));
        e.named(1, b"c", 70);
        e.renamed(1, b"c", 2, b"b", true);
        assert_eq!(e.state(2, b"b"), Some(Named::Inode(70)));
        assert_eq!(e.state(1, b"c"), Some(Named::Inode(50)));
        let s = e.forgetting();
        e.forgotten(50, s);
        assert_eq!(e.state(1, b"c"), None);
        e.removed(2, b"b");
        assert_eq!(e.state(2, b"b"), Some(Named::Absent));
        let s = e.forgetting();
        e.forgotten(70, s);
        assert_eq!(
            e.state(2, b"b"),
            Some(Named::Absent),
            "a negative outlives it"
        );
        assert_eq!((e.len(), e.negatives()), (2, 2));
    }

    #[test]
    fn raced_answers_are_those_an_invalidation_covered_since() {
        let mut e = Entries::new(100);
        let seen = e.generation();
        assert!(!e.raced(seen, 5));
        e.invalidate(0, 1023);
        assert!(e.raced(seen, 5));
        assert!(!e.raced(seen, 1024));
        assert!(!e.raced(e.generation(), 5));
        // Too many since to tell: raced.
        let seen = e.generation();
        for _ in 0..RECENT {
            e.invalidate(2048, 3071);
        }
        assert!(!e.raced(seen, 5));
        e.invalidate(2048, 3071);
        assert!(e.raced(seen, 5));
    }
}
