//! A session's output queue: chunks of whole messages in four priority lanes.
//!
//! Messages are appended whole to the tail chunk of their lane (chunks hold `WRITE_CHUNK` bytes,
//! or `SMALL_CHUNK` when a small message finds the queue empty; a larger message gets a chunk of
//! its own), so a chunk boundary is always a message boundary.
//! Writing takes lanes in priority order with one `writev`; the only exception is a chunk that was
//! partly written, which must finish first so that no message is ever interleaved with another.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};

use crate::config::WRITE_CHUNK;
use crate::pool::BufferPool;
use crate::pool::SMALL_CHUNK;

/// Write order of a message on its connection: CRITICAL before HIGH before NORMAL before LOW.
/// Within one priority, messages keep the order they were sent in.
///
/// Replies go at `Normal` (what [`crate::Context::send`] uses), so that they keep their order
/// with everything else of that connection; a higher priority is for what must overtake
/// output already queued — liveness (a pong, a shutdown notice) at `Critical`, an answer that
/// must not wait behind a bulk transfer at `High`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Priority {
    /// Liveness and system messages (ping/pong, shutdown notices).
    Critical = 0,
    /// What must overtake ordinary output already queued.
    High = 1,
    /// Ordinary messages and replies.
    #[default]
    Normal = 2,
    /// Logs, statistics.
    Low = 3,
}

const LANES: usize = 4;
const MAX_IOV: usize = 64;

#[derive(Debug, Default)]
pub(crate) struct WriteQueue {
    lanes: [VecDeque<Vec<u8>>; LANES],
    /// Lane whose head chunk is partly written, and how much of it.
    partial: Option<(usize, usize)>,
    /// Unwritten bytes in all lanes.
    len: usize,
}

/// What a flush achieved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Everything was written.
    Done,
    /// The socket would block; the rest waits for the next writable event.
    Blocked,
}

impl WriteQueue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data` as one message.
    #[cfg(test)]
    pub(crate) fn push(&mut self, prio: Priority, data: &[u8], pool: &mut BufferPool) {
        self.push_with(prio, data.len(), pool, |buf| buf.extend_from_slice(data));
    }

    /// Appends one message that `fill` writes into the tail chunk; `size_hint` is how many bytes
    /// it will write (a wrong hint only costs a reallocation).
    pub(crate) fn push_with<R>(
        &mut self,
        prio: Priority,
        size_hint: usize,
        pool: &mut BufferPool,
        fill: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> R {
        let queue_empty = self.len == 0;
        let lane = &mut self.lanes[prio as usize];
        let fits = lane
            .back()
            .is_some_and(|c| c.len() + size_hint <= c.capacity());
        if !fits {
            let chunk = if size_hint > WRITE_CHUNK {
                Vec::with_capacity(size_hint)
            } else if queue_empty && size_hint <= SMALL_CHUNK {
                // A lone small message (a ping, a short reply): a 10 KB chunk for it would
                // make a burst of them — a liveness sweep over many clients — cost 10 KB each.
                pool.take_small()
            } else {
                pool.take_chunk()
            };
            lane.push_back(chunk);
        }
        let chunk = match lane.back_mut() {
            Some(c) => c,
            None => unreachable!("a chunk was just pushed"),
        };
        let before = chunk.len();
        let r = fill(chunk);
        self.len += chunk.len() - before;
        r
    }

    /// Writes as much as the socket takes, returning written chunks to the pool.
    pub(crate) fn flush<W: Write>(
        &mut self,
        w: &mut W,
        pool: &mut BufferPool,
        written: &mut u64,
    ) -> io::Result<Flush> {
        while self.len > 0 {
            let n = {
                let mut iov: [IoSlice<'_>; MAX_IOV] = [IoSlice::new(&[]); MAX_IOV];
                let mut k = 0;
                if let Some((lane, off)) = self.partial {
                    iov[0] = IoSlice::new(&self.lanes[lane][0][off..]);
                    k = 1;
                }
                'fill: for (li, lane) in self.lanes.iter().enumerate() {
                    let skip = usize::from(self.partial.is_some_and(|(p, _)| p == li));
                    for chunk in lane.iter().skip(skip) {
                        if k == MAX_IOV {
                            break 'fill;
                        }
                        iov[k] = IoSlice::new(chunk);
                        k += 1;
                    }
                }
                match w.write_vectored(&iov[..k]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            };
            *written += n as u64;
            self.consume(n, pool);
        }
        Ok(Flush::Done)
    }

    /// Drops `n` written bytes from the front, in the order `flush` gathered them.
    fn consume(&mut self, mut n: usize, pool: &mut BufferPool) {
        self.len -= n;
        if let Some((lane, off)) = self.partial.take() {
            let rest = self.lanes[lane][0].len() - off;
            if n < rest {
                self.partial = Some((lane, off + n));
                return;
            }
            n -= rest;
            if let Some(c) = self.lanes[lane].pop_front() {
                pool.put_chunk(c);
            }
        }
        for li in 0..LANES {
            while let Some(head) = self.lanes[li].front() {
                if n == 0 {
                    return;
                }
                if n < head.len() {
                    self.partial = Some((li, n));
                    return;
                }
                n -= head.len();
                if let Some(c) = self.lanes[li].pop_front() {
                    pool.put_chunk(c);
                }
            }
        }
        debug_assert_eq!(n, 0);
    }

    /// Returns every chunk to the pool (the session is closing).
    pub(crate) fn clear(&mut self, pool: &mut BufferPool) {
        for lane in &mut self.lanes {
            for c in lane.drain(..) {
                pool.put_chunk(c);
            }
        }
        self.partial = None;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `cap` bytes per call, then blocks after `budget` bytes.
    struct Trickle {
        out: Vec<u8>,
        cap: usize,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.cap).min(self.budget);
            self.out.extend_from_slice(&buf[..n]);
            self.budget -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn critical_overtakes_queued_normal_but_never_splits_a_message() {
        let mut pool = BufferPool::new(8);
        let mut q = WriteQueue::default();
        let big = vec![b'n'; 30_000];
        q.push(Priority::Normal, &big, &mut pool);
        q.push(Priority::Normal, b"N2", &mut pool);
        let mut w = Trickle {
            out: Vec::new(),
            cap: 1000,
            budget: 5000,
        };
        let mut written = 0;
        assert_eq!(
            q.flush(&mut w, &mut pool, &mut written).unwrap(),
            Flush::Blocked
        );
        // A critical message arrives while the big one is half written.
        q.push(Priority::Critical, b"PONG", &mut pool);
        w.budget = usize::MAX;
        assert_eq!(
            q.flush(&mut w, &mut pool, &mut written).unwrap(),
            Flush::Done
        );
        let mut expect = big.clone();
        expect.extend_from_slice(b"PONG");
        expect.extend_from_slice(b"N2");
        assert_eq!(w.out, expect);
        assert_eq!(written as usize, expect.len());
        assert!(q.is_empty());
    }

    #[test]
    fn priorities_order_whole_messages() {
        let mut pool = BufferPool::new(8);
        let mut q = WriteQueue::default();
        q.push(Priority::Low, b"l", &mut pool);
        q.push(Priority::Normal, b"n", &mut pool);
        q.push(Priority::High, b"h", &mut pool);
        q.push(Priority::Critical, b"c", &mut pool);
        q.push(Priority::Normal, b"n2", &mut pool);
        let mut w = Trickle {
            out: Vec::new(),
            cap: 1,
            budget: usize::MAX,
        };
        let mut written = 0;
        q.flush(&mut w, &mut pool, &mut written).unwrap();
        assert_eq!(w.out, b"chnn2l");
    }
}
