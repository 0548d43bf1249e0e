//! Documents answered from memory, kept coherent by db-server's change notices.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Documents whose changes are remembered one by one (for answers in flight); past this the
/// memory is dropped and counts as a change of every document.
const CHANGES_KEPT: usize = 4096;

/// Documents answered from memory.
///
/// Coherence comes from db-server: the link subscribes to changes of [`DOCS_TABLE`](super::DOCS_TABLE), and the
/// front names the document its writes change (`Statement.keys`), so a committed write of one
/// document, by any instance, makes that document out of date here; a write that names no
/// document (SQL from elsewhere, DDL, a transaction's commit) makes every one out of date. So
/// that an answer read before a change cannot be stored after it, every change moves `seq` on;
/// a request remembers the `seq` it was sent at ([`DocCache::mark`]), and its answer is kept
/// only if neither its document nor the whole table changed since.
///
/// This instance's own `PUT` keeps the document it wrote once db-server acknowledges it
/// (write-through), unless a change of another writer may be newer: a notice of that document
/// with a higher commit index, or two notices at the write's own index (a writer's notice and
/// ours in one group commit) — its own notice is the one notice at its index it may see.
///
/// A change notice does not drop what is kept: only documents stored since their last change
/// are served as fresh. The older ones stay, as the last version known, for one case:
/// db-server cannot be reached at all. Then the last version known is served marked stale
/// (`Cache-Status: …; detail=db-unreachable`, as nginx's `proxy_cache_use_stale error`), since
/// no answer from db-server is the alternative — whether the subscription was lost while the
/// document was fresh, or a write elsewhere had just made it out of date and the re-read had
/// not come back yet (a partition that begins between a notice and the next read must not turn
/// a cached document into errors). While the link is not subscribed nothing new is stored; the
/// subscription taken again makes everything out of date (notices may have been missed).
/// Another instance's write is seen here as soon as its notice arrives (asynchronous, as with
/// Redis' client-side caching); this instance's own writes are seen at once.
#[derive(Debug)]
pub(super) struct DocCache {
    /// Name → the last 200 answer's body known, and whether it is current.
    docs: HashMap<String, Entry>,
    /// Bytes of names and bodies kept, current or not (at most `cap`).
    bytes: usize,
    cap: usize,
    /// How many of `docs` are current.
    current: usize,
    /// The current documents of every loop's cache together (for `/status` and `/metrics`):
    /// each cache adds and takes away its own.
    total: Arc<AtomicUsize>,
    /// Moves on at every change.
    seq: u64,
    /// `seq` of the last change of every document.
    all_changed: u64,
    /// The last change of each document changed since `all_changed`.
    changes: HashMap<String, Change>,
    /// The subscription was lost: nothing is current (served stale only while db-server cannot
    /// be reached).
    pub(super) stale: bool,
    /// The body of a dropped entry (shared: dropping allocates nothing).
    empty: Arc<[u8]>,
}

#[derive(Debug)]
struct Entry {
    body: Arc<[u8]>,
    current: bool,
    /// This instance wrote the document since: its old body is gone (never served stale).
    dropped: bool,
    /// Stored by this instance's write at this commit index, before its own notice came: the
    /// one notice at that index that leaves it current.
    own_notice: Option<u64>,
}

/// The last change of one document.
#[derive(Debug, Default, Clone, Copy)]
struct Change {
    seq: u64,
    /// The highest commit index of a notice of it, and how many notices came at that index.
    index: u64,
    at_index: u32,
}

impl DocCache {
    /// An empty cache holding at most `cap` bytes of documents, counting its current ones
    /// into `total` (shared by every loop's cache).
    pub(super) fn new(cap: usize, total: Arc<AtomicUsize>) -> Self {
        DocCache {
            docs: HashMap::new(),
            bytes: 0,
            cap,
            current: 0,
            total,
            seq: 0,
            all_changed: 0,
            changes: HashMap::new(),
            stale: false,
            empty: Arc::from(&[][..]),
        }
    }

    /// `current` becomes `n`, and the total across loops follows.
    fn set_current(&mut self, n: usize) {
        if n >= self.current {
            self.total.fetch_add(n - self.current, Ordering::Relaxed);
        } else {
            self.total.fetch_sub(self.current - n, Ordering::Relaxed);
        }
        self.current = n;
    }

    /// The mark a request sent now carries, for [`DocCache::offer`] or [`DocCache::written`].
    pub(super) fn mark(&self) -> u64 {
        self.seq
    }

    /// The document, if it is known to be current (stored since its last change).
    pub(super) fn current(&self, name: &str) -> Option<&Arc<[u8]>> {
        self.docs.get(name).filter(|e| e.current).map(|e| &e.body)
    }

    /// The last version of the document known, current or not: only for answers marked stale.
    pub(super) fn last_known(&self, name: &str) -> Option<&Arc<[u8]>> {
        self.docs.get(name).filter(|e| !e.dropped).map(|e| &e.body)
    }

    /// How many documents are current in this cache.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.current
    }

    /// Every document may have changed (a notice naming no document, or the subscription
    /// taken again): none is current any more; each is kept as the last version known.
    pub(super) fn invalidate(&mut self) {
        self.all_out_of_date();
        self.stale = false;
    }

    /// The subscription was lost: nothing is current, and nothing new is stored.
    pub(super) fn suspend(&mut self) {
        self.all_out_of_date();
        self.stale = true;
    }

    fn all_out_of_date(&mut self) {
        self.seq += 1;
        self.all_changed = self.seq;
        self.changes.clear();
        for e in self.docs.values_mut() {
            e.current = false;
            e.own_notice = None;
        }
        self.set_current(0);
    }

    /// A notice: a write committed at `index` changed the document.
    pub(super) fn changed(&mut self, name: &str, index: u64) {
        if let Some(e) = self.docs.get_mut(name) {
            if e.current && e.own_notice == Some(index) {
                // This instance's own write, stored when it was acknowledged.
                e.own_notice = None;
                self.note(name, index);
                return;
            }
        }
        self.out_of_date(name);
        self.note(name, index);
    }

    /// This instance is writing the document: dropped, current or not (reads sent until the
    /// write's answer may see either version). The entry's name stays for the answer to reuse.
    pub(super) fn forget(&mut self, name: &str) {
        if let Some(e) = self.docs.get_mut(name) {
            self.bytes -= e.body.len();
            e.body = Arc::clone(&self.empty);
            e.dropped = true;
            e.own_notice = None;
            if std::mem::take(&mut e.current) {
                self.set_current(self.current - 1);
            }
        }
        self.note(name, 0);
    }

    /// The document is no longer current (kept as the last version known).
    fn out_of_date(&mut self, name: &str) {
        if let Some(e) = self.docs.get_mut(name) {
            if std::mem::take(&mut e.current) {
                e.own_notice = None;
                self.set_current(self.current - 1);
            }
        }
    }

    /// Remembers a change of `name` (a notice at `index`, or 0 for this instance's own write
    /// being sent).
    fn note(&mut self, name: &str, index: u64) {
        self.seq += 1;
        if self.changes.len() >= CHANGES_KEPT && !self.changes.contains_key(name) {
            // Forgetting which documents changed counts as a change of all of them for the
            // answers in flight; what is stored stays as it is.
            self.changes.clear();
            self.all_changed = self.seq;
        }
        let seq = self.seq;
        let c = match self.changes.get_mut(name) {
            Some(c) => c,
            None => self.changes.entry(name.to_string()).or_default(),
        };
        c.seq = seq;
        if index > c.index {
            c.index = index;
            c.at_index = 1;
        } else if index == c.index && index != 0 {
            c.at_index += 1;
        }
    }

    /// The change of `name` after `mark`, if any.
    fn changed_since(&self, mark: u64, name: &str) -> Option<Change> {
        self.changes.get(name).filter(|c| c.seq > mark).copied()
    }

    /// A read's answer, sent at `mark`: stored as current if its document did not change
    /// since and it fits (documents that are no longer current make room first).
    pub(super) fn offer(&mut self, mark: u64, name: &str, body: &[u8]) {
        if mark < self.all_changed
            || self.changed_since(mark, name).is_some()
            || self.current(name).is_some()
        {
            return;
        }
        self.store(name, body.into(), None);
    }

    /// This instance's write of the document, sent at `mark` with `body` as its answer,
    /// acknowledged at commit `index`: stored as current unless another write may be newer.
    pub(super) fn written(&mut self, mark: u64, name: &str, body: Arc<[u8]>, index: u64) {
        if mark < self.all_changed || self.stale {
            return;
        }
        let own_notice = match self.changed_since(mark, name) {
            // Only this instance's own sending of it, or notices of older writes.
            Some(c) if c.index < index => Some(index),
            // One notice at the write's own index: taken as its own.
            Some(c) if c.index == index && c.at_index == 1 => None,
            Some(_) => return,
            None => Some(index),
        };
        self.store(name, body, own_notice);
    }

    fn store(&mut self, name: &str, body: Arc<[u8]>, own_notice: Option<u64>) {
        let size = body.len() + name.len();
        if let Some(old) = self.docs.get(name) {
            // Counted as gone while it is replaced (its name's bytes too).
            self.bytes -= old.body.len() + name.len();
            if old.current {
                self.set_current(self.current - 1);
            }
        }
        if self.bytes + size > self.cap {
            let mut freed = 0;
            self.docs.retain(|n, e| {
                let keep = e.current;
                if !keep && n != name {
                    freed += n.len() + e.body.len();
                }
                keep || n == name
            });
            self.bytes -= freed;
            if self.bytes + size > self.cap {
                self.docs.remove(name);
                return;
            }
        }
        self.bytes += size;
        self.set_current(self.current + 1);
        let entry = Entry {
            body,
            current: true,
            dropped: false,
            own_notice,
        };
        match self.docs.get_mut(name) {
            Some(e) => *e = entry,
            None => {
                self.docs.insert(name.to_string(), entry);
            }
        }
    }
}

impl Drop for DocCache {
    fn drop(&mut self) {
        self.set_current(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_counts_the_current_documents_of_every_loops_cache() {
        let total = Arc::new(AtomicUsize::new(0));
        let mut a = DocCache::new(1024, Arc::clone(&total));
        let mut b = DocCache::new(1024, Arc::clone(&total));
        a.offer(a.mark(), "x", b"1");
        a.offer(a.mark(), "y", b"2");
        b.offer(b.mark(), "x", b"1");
        assert_eq!(total.load(Ordering::Relaxed), 3);
        a.forget("x");
        assert_eq!(total.load(Ordering::Relaxed), 2);
        b.invalidate();
        assert_eq!(total.load(Ordering::Relaxed), 1);
        drop(a);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_change_notice_keeps_the_last_version_known_but_not_as_current() {
        let mut c = DocCache::new(1024, Arc::default());
        c.offer(c.mark(), "a", b"v1");
        assert_eq!(c.current("a").map(|b| &b[..]), Some(&b"v1"[..]));
        assert_eq!(c.len(), 1);

        c.invalidate();
        assert!(c.current("a").is_none());
        assert_eq!(c.last_known("a").map(|b| &b[..]), Some(&b"v1"[..]));
        assert_eq!(c.len(), 0);

        // A read sent before the notice is not stored; one sent after replaces the old version.
        c.offer(c.mark() - 1, "a", b"old");
        assert!(c.current("a").is_none());
        c.offer(c.mark(), "a", b"v2");
        assert_eq!(c.current("a").map(|b| &b[..]), Some(&b"v2"[..]));
        assert_eq!(c.bytes, 3);
    }

    #[test]
    fn this_instances_own_write_drops_the_document_outright() {
        let mut c = DocCache::new(1024, Arc::default());
        c.offer(c.mark(), "a", b"v1");
        c.suspend();
        assert!(c.stale && c.current("a").is_none() && c.last_known("a").is_some());
        c.forget("a");
        assert!(c.last_known("a").is_none());
        // Its name stays, for the write's answer to reuse.
        assert_eq!((c.bytes, c.len()), (1, 0));
    }

    #[test]
    fn out_of_date_documents_make_room_for_current_ones_and_the_cap_holds() {
        let mut c = DocCache::new(6, Arc::default());
        c.offer(c.mark(), "a", b"123");
        c.offer(c.mark(), "b", b"123");
        assert!(c.current("b").is_none(), "over the cap: not stored");
        c.invalidate();
        c.offer(c.mark(), "b", b"123");
        assert!(c.current("b").is_some());
        assert!(c.last_known("a").is_none(), "the out-of-date one made room");
        assert_eq!((c.bytes, c.len()), (4, 1));
        c.offer(c.mark(), "c", b"1");
        assert!(c.current("c").is_some());
        assert_eq!((c.bytes, c.len()), (6, 2));
        c.offer(c.mark(), "d", b"1");
        assert!(
            c.last_known("d").is_none(),
            "current documents are not evicted"
        );
        assert_eq!(c.bytes, 6);
    }

    #[test]
    fn a_notice_of_one_document_leaves_the_others_current() {
        let mut c = DocCache::new(1024, Arc::default());
        c.offer(c.mark(), "a", b"a1");
        c.offer(c.mark(), "b", b"b1");
        let in_flight = c.mark();
        c.changed("a", 7);
        assert!(c.current("a").is_none() && c.last_known("a").is_some());
        assert!(c.current("b").is_some());
        assert_eq!(c.len(), 1);
        // A read of `a` sent before the notice is not stored; one of `c` is.
        c.offer(in_flight, "a", b"a0");
        assert!(c.current("a").is_none());
        c.offer(in_flight, "c", b"c1");
        assert!(c.current("c").is_some());
    }

    #[test]
    fn an_own_write_is_kept_unless_another_write_may_be_newer() {
        let mut c = DocCache::new(1024, Arc::default());
        // Acknowledged before its notice came: kept; its own notice leaves it current, a
        // second one at the same index (another writer in the same group commit) does not.
        c.forget("a");
        let sent = c.mark();
        c.written(sent, "a", Arc::from(&b"mine"[..]), 5);
        assert_eq!(c.current("a").map(|b| &b[..]), Some(&b"mine"[..]));
        c.changed("a", 5);
        assert!(c.current("a").is_some());
        c.changed("a", 5);
        assert!(c.current("a").is_none());

        // Its notice came first: kept; any later notice ends it.
        c.forget("a");
        let sent = c.mark();
        c.changed("a", 6);
        c.written(sent, "a", Arc::from(&b"mine"[..]), 6);
        assert!(c.current("a").is_some());
        c.changed("a", 6);
        assert!(c.current("a").is_none());

        // Two notices at its index, or one above it, before the answer: not kept.
        c.forget("a");
        let sent = c.mark();
        c.changed("a", 7);
        c.changed("a", 7);
        c.written(sent, "a", Arc::from(&b"mine"[..]), 7);
        assert!(c.current("a").is_none());
        c.forget("a");
        let sent = c.mark();
        c.changed("a", 9);
        c.written(sent, "a", Arc::from(&b"mine"[..]), 8);
        assert!(c.current("a").is_none());

        // A change of every document since it was sent: not kept.
        c.forget("a");
        let sent = c.mark();
        c.invalidate();
        c.written(sent, "a", Arc::from(&b"mine"[..]), 10);
        assert!(c.current("a").is_none());
    }

    #[test]
    fn forgetting_which_documents_changed_counts_as_a_change_of_all() {
        let mut c = DocCache::new(1 << 20, Arc::default());
        let sent = c.mark();
        for i in 0..CHANGES_KEPT + 1 {
            c.changed(&format!("d{i}"), i as u64 + 1);
        }
        assert!(c.changes.len() <= CHANGES_KEPT);
        c.offer(sent, "x", b"1");
        assert!(
            c.current("x").is_none(),
            "sent before the memory was dropped"
        );
        c.offer(c.mark(), "x", b"1");
        assert!(c.current("x").is_some());
    }
}
