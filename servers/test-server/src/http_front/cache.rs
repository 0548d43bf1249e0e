//! Documents answered from memory, kept coherent by db-server's change notices.

/// Documents answered from memory.
///
/// Coherence comes from db-server: the link subscribes to changes of [`DOCS_TABLE`](super::DOCS_TABLE) and every
/// committed write there, by any instance or client, empties the cache. So that an answer read
/// before a change cannot be stored after it, every change (a notice, this front's own write, the
/// subscription taken or lost) moves `generation` on, a read remembers the generation it was
/// sent in, and its answer is kept only if nothing moved in between. While the link is not
/// subscribed, nothing is stored in the cache and nothing is served from it — except when
/// db-server cannot be reached at all: then what was cached when the subscription was lost is
/// served marked stale (`Cache-Status: …; detail=db-unreachable`, as nginx's
/// `proxy_cache_use_stale error`), since no answer from db-server is the alternative; the
/// subscription taken again empties the cache (notices may have been missed). Another instance's write is seen
/// here as soon as its notice arrives (asynchronous, as with Redis' client-side caching); this
/// instance's own writes are seen at once.
#[derive(Debug, Default)]
pub(super) struct DocCache {
    /// Name → the 200 answer's body.
    pub(super) docs: std::collections::HashMap<String, std::sync::Arc<[u8]>>,
    bytes: usize,
    cap: usize,
    pub(super) generation: u64,
    /// The subscription was lost: what is kept may be stale (served only while db-server
    /// cannot be reached).
    pub(super) stale: bool,
}

impl DocCache {
    /// An empty cache holding at most `cap` bytes of documents.
    pub(super) fn new(cap: usize) -> Self {
        DocCache {
            cap,
            ..DocCache::default()
        }
    }

    pub(super) fn reset(&mut self) {
        self.docs.clear();
        self.bytes = 0;
        self.generation += 1;
        self.stale = false;
    }

    /// The subscription was lost: keep the documents, as stale ones, and store nothing new.
    pub(super) fn suspend(&mut self) {
        self.generation += 1;
        self.stale = true;
    }

    pub(super) fn forget(&mut self, name: &str) {
        if let Some(body) = self.docs.remove(name) {
            self.bytes -= body.len() + name.len();
        }
        self.generation += 1;
    }

    pub(super) fn offer(&mut self, generation: u64, name: &str, body: &[u8]) {
        let size = body.len() + name.len();
        if generation == self.generation
            && self.bytes + size <= self.cap
            && !self.docs.contains_key(name)
        {
            self.bytes += size;
            self.docs.insert(name.to_string(), body.into());
        }
    }
}
