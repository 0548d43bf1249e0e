//! Per-connection state for handlers: a dense table indexed by [`ConnId::index`].
//!
//! Slab keys are small and reused, so a `Vec` indexed by them beats a hash map; the stored
//! `ConnId` (with its generation) keeps a reused slot from being mistaken for its old owner.

use crate::handler::ConnId;

/// A map from live connections to `T`.
///
/// ```
/// use engine::ConnMap;
/// # fn demo(a: engine::ConnId) {
/// let mut m: ConnMap<u32> = ConnMap::default();
/// m.insert(a, 1);
/// *m.get_mut(a).unwrap() += 1;
/// assert_eq!(m.remove(a), Some(2));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct ConnMap<T> {
    slots: Vec<Option<(ConnId, T)>>,
    len: usize,
}

impl<T> Default for ConnMap<T> {
    fn default() -> Self {
        ConnMap {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<T> ConnMap<T> {
    /// Stores `value` for `conn`, returning what an earlier owner of the slot left.
    pub fn insert(&mut self, conn: ConnId, value: T) -> Option<T> {
        let i = conn.index();
        if i >= self.slots.len() {
            self.slots.resize_with(i + 1, || None);
        }
        let old = self.slots[i].replace((conn, value)).map(|(_, v)| v);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// The value of `conn`, if it has one.
    pub fn get(&self, conn: ConnId) -> Option<&T> {
        match self.slots.get(conn.index()) {
            Some(Some((c, v))) if *c == conn => Some(v),
            _ => None,
        }
    }

    /// The value of `conn`, mutably.
    pub fn get_mut(&mut self, conn: ConnId) -> Option<&mut T> {
        match self.slots.get_mut(conn.index()) {
            Some(Some((c, v))) if *c == conn => Some(v),
            _ => None,
        }
    }

    /// Removes and returns the value of `conn`.
    pub fn remove(&mut self, conn: ConnId) -> Option<T> {
        let slot = self.slots.get_mut(conn.index())?;
        if slot.as_ref().is_some_and(|(c, _)| *c == conn) {
            self.len -= 1;
            slot.take().map(|(_, v)| v)
        } else {
            None
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every entry.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &T)> {
        self.slots
            .iter()
            .filter_map(|s| s.as_ref().map(|(c, v)| (*c, v)))
    }

    /// Every entry, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ConnId, &mut T)> {
        self.slots
            .iter_mut()
            .filter_map(|s| s.as_mut().map(|(c, v)| (*c, v)))
    }

    /// The connections present.
    pub fn ids(&self) -> Vec<ConnId> {
        self.iter().map(|(c, _)| c).collect()
    }
}
