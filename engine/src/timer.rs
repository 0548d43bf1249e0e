//! A hashed timing wheel: O(1) insert and cancel, cheap with 100k sessions.
//!
//! Time is counted in 1 ms ticks since the wheel was made. A timer due at tick `d` sits in slot
//! `d % SLOTS`; a timer further away than one turn of the wheel (`SLOTS` ms) shares its slot with
//! nearer ones and is simply skipped until its tick comes. A bitmap of non-empty slots gives the
//! next wake-up without scanning every slot's contents.
//!
//! Entries live in a slab; a slot is a doubly linked list threaded through them (the slot holds
//! its first key, each entry its neighbours'), so inserting and cancelling are O(1) and never
//! allocate once the slab has grown to the number of pending timers.
//! A [`TimerKey`] carries a generation so that cancelling an already-fired timer whose slab key
//! has been reused does nothing.

use std::num::NonZeroU32;

use slab::Slab;

const SLOTS: usize = 4096;
const WORDS: usize = SLOTS / 64;

/// Handle to a scheduled timer, for [`TimerWheel::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerKey {
    key: u32,
    /// Never zero, so an `Option<TimerKey>` (kept in every session) costs no extra word.
    gen: NonZeroU32,
}

/// No entry (end of a slot's list).
const NIL: u32 = u32::MAX;

#[derive(Debug)]
struct Entry<T> {
    due: u64,
    seq: u64,
    gen: NonZeroU32,
    /// Neighbours in the slot's list.
    prev: u32,
    next: u32,
    value: T,
}

/// The wheel. `T` is what a timer carries back when it fires.
#[derive(Debug)]
pub struct TimerWheel<T> {
    entries: Slab<Entry<T>>,
    /// First entry of each slot's list, or `NIL`.
    slots: Vec<u32>,
    occupied: [u64; WORDS],
    /// Last tick processed by `expire`.
    now: u64,
    next_gen: u32,
    next_seq: u64,
    /// Timers fired by the current `expire`, kept to reuse its capacity.
    fired: Vec<(u64, u64, T)>,
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerWheel<T> {
    /// An empty wheel at tick 0.
    pub fn new() -> Self {
        TimerWheel {
            entries: Slab::new(),
            slots: vec![NIL; SLOTS],
            occupied: [0; WORDS],
            now: 0,
            next_gen: 0,
            next_seq: 0,
            fired: Vec::new(),
        }
    }

    /// Number of live timers.
    #[cfg(feature = "bench-internals")]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no timer is scheduled.
    #[cfg(any(test, feature = "bench-internals"))]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Schedules `value` to fire at tick `due` (clamped to the next tick if already past).
    pub fn insert(&mut self, due: u64, value: T) -> TimerKey {
        let due = due.max(self.now + 1);
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = NonZeroU32::new(self.next_gen).unwrap_or(NonZeroU32::MIN);
        self.next_seq += 1;
        let slot = (due % SLOTS as u64) as usize;
        let first = self.slots[slot];
        let key = self.entries.insert(Entry {
            due,
            seq: self.next_seq,
            gen,
            prev: NIL,
            next: first,
            value,
        });
        let key = u32::try_from(key).unwrap_or(NIL - 1); // invariant: < 4G timers in one loop
        if first != NIL {
            self.entries[first as usize].prev = key;
        }
        self.slots[slot] = key;
        self.occupied[slot / 64] |= 1 << (slot % 64);
        TimerKey { key, gen }
    }

    /// Takes entry `key` out of the slab and out of its slot's list.
    fn unlink(&mut self, key: u32) -> Entry<T> {
        let e = self.entries.remove(key as usize);
        let slot = (e.due % SLOTS as u64) as usize;
        if e.prev == NIL {
            self.slots[slot] = e.next;
        } else {
            self.entries[e.prev as usize].next = e.next;
        }
        if e.next != NIL {
            self.entries[e.next as usize].prev = e.prev;
        }
        if self.slots[slot] == NIL {
            self.occupied[slot / 64] &= !(1 << (slot % 64));
        }
        e
    }

    /// Cancels a timer; returns its value if it had not fired yet.
    pub fn cancel(&mut self, t: TimerKey) -> Option<T> {
        match self.entries.get(t.key as usize) {
            Some(e) if e.gen == t.gen => Some(self.unlink(t.key).value),
            _ => None,
        }
    }

    /// The tick a pending timer is due at, or `None` if it fired or was cancelled.
    pub fn due(&self, t: TimerKey) -> Option<u64> {
        self.entries
            .get(t.key as usize)
            .filter(|e| e.gen == t.gen)
            .map(|e| e.due)
    }

    /// Moves the wheel to tick `now` and appends every timer due by then to `out`, in order of
    /// due tick and then of insertion.
    pub fn expire(&mut self, now: u64, out: &mut Vec<T>) {
        if now <= self.now {
            return;
        }
        let mut fired = std::mem::take(&mut self.fired);
        let span = (now - self.now).min(SLOTS as u64);
        for step in 1..=span {
            let slot = ((self.now + step) % SLOTS as u64) as usize;
            if self.occupied[slot / 64] & (1 << (slot % 64)) == 0 {
                continue;
            }
            let mut key = self.slots[slot];
            while key != NIL {
                let entry = &self.entries[key as usize];
                let next = entry.next;
                if entry.due <= now {
                    let e = self.unlink(key);
                    fired.push((e.due, e.seq, e.value));
                }
                key = next;
            }
        }
        self.now = now;
        fired.sort_unstable_by_key(|(due, seq, _)| (*due, *seq));
        out.extend(fired.drain(..).map(|(_, _, v)| v));
        self.fired = fired;
    }

    /// Ticks from the current position to the next slot holding anything, or `None` when the
    /// wheel is empty. The slot may hold only timers of a later turn; the caller then wakes a
    /// little early and finds nothing due, at most once per turn.
    pub fn next_wait(&self) -> Option<u64> {
        if self.entries.is_empty() {
            return None;
        }
        let base = ((self.now + 1) % SLOTS as u64) as usize;
        // Scan the bitmap word by word, starting at `base` and wrapping once.
        for i in 0..=WORDS {
            let w = (base / 64 + i) % WORDS;
            let mut bits = self.occupied[w];
            if i == 0 {
                bits &= !0u64 << (base % 64);
            } else if i == WORDS {
                bits &= !(!0u64 << (base % 64));
            }
            if bits != 0 {
                let slot = w * 64 + bits.trailing_zeros() as usize;
                let dist = (slot + SLOTS - base) % SLOTS;
                return Some(dist as u64 + 1);
            }
        }
        Some(SLOTS as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_due_order_then_insertion_order() {
        let mut w = TimerWheel::new();
        w.insert(30, "c");
        w.insert(10, "a");
        w.insert(20, "b1");
        w.insert(20, "b2");
        let mut out = Vec::new();
        w.expire(25, &mut out);
        assert_eq!(out, ["a", "b1", "b2"]);
        out.clear();
        w.expire(30, &mut out);
        assert_eq!(out, ["c"]);
        assert!(w.is_empty());
    }

    #[test]
    fn cancelled_timer_never_fires_even_when_its_key_is_reused() {
        let mut w = TimerWheel::new();
        let a = w.insert(5, 1);
        assert_eq!(w.due(a), Some(5));
        assert_eq!(w.cancel(a), Some(1));
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.due(a), None);
        w.insert(7, 2); // reuses the slab key of `a`
        let mut out = Vec::new();
        w.expire(10, &mut out);
        assert_eq!(out, [2]);
    }

    #[test]
    fn timers_beyond_one_turn_wait_for_their_tick() {
        let mut w = TimerWheel::new();
        w.insert(SLOTS as u64 + 5, "late");
        w.insert(5, "early");
        let mut out = Vec::new();
        w.expire(10, &mut out);
        assert_eq!(out, ["early"]);
        out.clear();
        w.expire(SLOTS as u64, &mut out);
        assert!(out.is_empty());
        w.expire(SLOTS as u64 + 5, &mut out);
        assert_eq!(out, ["late"]);
    }

    #[test]
    fn cancelling_leaves_nothing_behind_in_the_slots() {
        let mut w = TimerWheel::new();
        let mut keys: Vec<_> = (0..1000u64).map(|i| w.insert(100 + i % 7, i)).collect();
        for round in 0..50u64 {
            for (i, k) in keys.iter_mut().enumerate() {
                assert!(w.cancel(*k).is_some());
                *k = w.insert(100 + (i as u64 + round) % 7, i as u64);
            }
        }
        let listed: usize = w
            .slots
            .iter()
            .map(|&first| {
                let (mut n, mut k) = (0, first);
                while k != NIL {
                    n += 1;
                    k = w.entries[k as usize].next;
                }
                n
            })
            .sum();
        assert_eq!(listed, 1000);
        let mut out = Vec::new();
        w.expire(200, &mut out);
        assert_eq!(out.len(), 1000);
        assert!(w.slots.iter().all(|&first| first == NIL));
        assert!(w.occupied.iter().all(|&b| b == 0));
    }

    #[test]
    fn a_long_jump_fires_everything_due() {
        let mut w = TimerWheel::new();
        for i in 0..10_000u64 {
            w.insert(i * 3 + 1, i);
        }
        let mut out = Vec::new();
        w.expire(100_000, &mut out);
        assert_eq!(out, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn next_wait_points_at_the_nearest_slot() {
        let mut w: TimerWheel<()> = TimerWheel::new();
        assert_eq!(w.next_wait(), None);
        w.insert(100, ());
        assert_eq!(w.next_wait(), Some(100));
        w.insert(40, ());
        assert_eq!(w.next_wait(), Some(40));
        let mut out = Vec::new();
        w.expire(40, &mut out);
        assert_eq!(w.next_wait(), Some(60));
        w.insert(4090 + 40, ());
        assert_eq!(w.next_wait(), Some(60));
    }
}
