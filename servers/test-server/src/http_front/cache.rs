//! Documents answered from memory, kept coherent by db-server's change notices.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Documents answered from memory.
///
/// Coherence comes from db-server: the link subscribes to changes of [`DOCS_TABLE`](super::DOCS_TABLE) and every
/// committed write there, by any instance or client, makes every kept document out of date. So
/// that an answer read before a change cannot be stored after it, every change (a notice, this
/// front's own write, the subscription taken or lost) moves `generation` on, a read remembers
/// the generation it was sent in, and its answer is kept only if nothing moved in between.
///
/// A change notice does not drop what is kept: it moves `epoch` on, and only documents stored
/// in the current epoch are served as fresh. The older ones stay, as the last version known,
/// for one case: db-server cannot be reached at all. Then the last version known is served
/// marked stale (`Cache-Status: …; detail=db-unreachable`, as nginx's
/// `proxy_cache_use_stale error`), since no answer from db-server is the alternative — whether
/// the subscription was lost while the document was fresh, or a write elsewhere had just made
/// it out of date and the re-read had not come back yet (a partition that begins between a
/// notice and the next read must not turn a cached document into errors). This instance's own
/// `PUT`/`DELETE` drops the document outright: it knows better than any copy. While the link
/// is not subscribed nothing new is stored; the subscription taken again starts a new epoch
/// (notices may have been missed). Another instance's write is seen here as soon as its notice
/// arrives (asynchronous, as with Redis' client-side caching); this instance's own writes are
/// seen at once.
#[derive(Debug)]
pub(super) struct DocCache {
    /// Name → the last 200 answer's body known, and the epoch it was stored in.
    docs: HashMap<String, Entry>,
    /// Bytes of names and bodies kept, current or not (at most `cap`).
    bytes: usize,
    cap: usize,
    /// How many of `docs` belong to the current epoch.
    current: usize,
    /// The current documents of every loop's cache together (for `/status` and `/metrics`):
    /// each cache adds and takes away its own.
    total: Arc<AtomicUsize>,
    epoch: u64,
    pub(super) generation: u64,
    /// The subscription was lost: nothing is current (served stale only while db-server cannot
    /// be reached).
    pub(super) stale: bool,
}

#[derive(Debug)]
struct Entry {
    body: Arc<[u8]>,
    epoch: u64,
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
            epoch: 0,
            generation: 0,
            stale: false,
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

    /// The document, if it is known to be current (stored since the last change notice).
    pub(super) fn current(&self, name: &str) -> Option<&Arc<[u8]>> {
        self.docs
            .get(name)
            .filter(|e| e.epoch == self.epoch)
            .map(|e| &e.body)
    }

    /// The last version of the document known, current or not: only for answers marked stale.
    pub(super) fn last_known(&self, name: &str) -> Option<&Arc<[u8]>> {
        self.docs.get(name).map(|e| &e.body)
    }

    /// How many documents are current in this cache.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.current
    }

    /// Every document may have changed (a change notice, or the subscription taken again):
    /// none is current any more; each is kept as the last version known.
    pub(super) fn invalidate(&mut self) {
        self.epoch += 1;
        self.generation += 1;
        self.set_current(0);
        self.stale = false;
    }

    /// The subscription was lost: nothing is current, and nothing new is stored.
    pub(super) fn suspend(&mut self) {
        self.epoch += 1;
        self.generation += 1;
        self.set_current(0);
        self.stale = true;
    }

    /// This instance changes the document: dropped, current or not.
    pub(super) fn forget(&mut self, name: &str) {
        if let Some(e) = self.docs.remove(name) {
            self.bytes -= e.body.len() + name.len();
            if e.epoch == self.epoch {
                self.set_current(self.current - 1);
            }
        }
        self.generation += 1;
    }

    /// An answer read in `generation`: stored as current if nothing changed since it was sent
    /// and it fits (documents that are no longer current make room first).
    pub(super) fn offer(&mut self, generation: u64, name: &str, body: &[u8]) {
        if generation != self.generation || self.current(name).is_some() {
            return;
        }
        let size = body.len() + name.len();
        if let Some(old) = self.docs.remove(name) {
            self.bytes -= old.body.len() + name.len();
        }
        if self.bytes + size > self.cap {
            let epoch = self.epoch;
            let mut freed = 0;
            self.docs.retain(|n, e| {
                let keep = e.epoch == epoch;
                if !keep {
                    freed += n.len() + e.body.len();
                }
                keep
            });
            self.bytes -= freed;
            if self.bytes + size > self.cap {
                return;
            }
        }
        self.bytes += size;
        self.set_current(self.current + 1);
        self.docs.insert(
            name.to_string(),
            Entry {
                body: body.into(),
                epoch: self.epoch,
            },
        );
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
        a.offer(a.generation, "x", b"1");
        a.offer(a.generation, "y", b"2");
        b.offer(b.generation, "x", b"1");
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
        c.offer(c.generation, "a", b"v1");
        assert_eq!(c.current("a").map(|b| &b[..]), Some(&b"v1"[..]));
        assert_eq!(c.len(), 1);

        c.invalidate();
        assert!(c.current("a").is_none());
        assert_eq!(c.last_known("a").map(|b| &b[..]), Some(&b"v1"[..]));
        assert_eq!(c.len(), 0);

        // A read sent before the notice is not stored; one sent after replaces the old version.
        c.offer(c.generation - 1, "a", b"old");
        assert!(c.current("a").is_none());
        c.offer(c.generation, "a", b"v2");
        assert_eq!(c.current("a").map(|b| &b[..]), Some(&b"v2"[..]));
        assert_eq!(c.bytes, 3);
    }

    #[test]
    fn this_instances_own_write_drops_the_document_outright() {
        let mut c = DocCache::new(1024, Arc::default());
        c.offer(c.generation, "a", b"v1");
        c.suspend();
        assert!(c.stale && c.current("a").is_none() && c.last_known("a").is_some());
        c.forget("a");
        assert!(c.last_known("a").is_none());
        assert_eq!((c.bytes, c.len()), (0, 0));
    }

    #[test]
    fn out_of_date_documents_make_room_for_current_ones_and_the_cap_holds() {
        let mut c = DocCache::new(6, Arc::default());
        c.offer(c.generation, "a", b"123");
        c.offer(c.generation, "b", b"123");
        assert!(c.current("b").is_none(), "over the cap: not stored");
        c.invalidate();
        c.offer(c.generation, "b", b"123");
        assert!(c.current("b").is_some());
        assert!(c.last_known("a").is_none(), "the out-of-date one made room");
        assert_eq!((c.bytes, c.len()), (4, 1));
        c.offer(c.generation, "c", b"1");
        assert!(c.current("c").is_some());
        assert_eq!((c.bytes, c.len()), (6, 2));
        c.offer(c.generation, "d", b"1");
        assert!(
            c.last_known("d").is_none(),
            "current documents are not evicted"
        );
        assert_eq!(c.bytes, 6);
    }
}
