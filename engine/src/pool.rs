//! Per-loop pools of read buffers and output chunks.
//!
//! An idle session holds no buffer at all: its read buffer goes back to the pool once every
//! received byte is consumed, and its output chunks once they are written. The pool keeps a
//! bounded number of spares so busy loops do not hit the allocator on every request; beyond that
//! bound released buffers are freed, so memory follows the number of *busy* sessions.

use crate::config::{READ_CHUNK, WRITE_CHUNK};

/// Capacity of the output chunk a small message gets when its queue is empty.
pub(crate) const SMALL_CHUNK: usize = 512;

/// Spare read buffers and output chunks (full and small) of one loop.
#[derive(Debug)]
pub(crate) struct BufferPool {
    read: Vec<Vec<u8>>,
    chunks: Vec<Vec<u8>>,
    small: Vec<Vec<u8>>,
    cap: usize,
}

impl BufferPool {
    pub(crate) fn new(cap: usize) -> Self {
        BufferPool {
            read: Vec::new(),
            chunks: Vec::new(),
            small: Vec::new(),
            cap,
        }
    }

    /// A zero-filled read buffer of `READ_CHUNK` bytes (its length is its usable size).
    pub(crate) fn take_read(&mut self) -> Vec<u8> {
        self.read.pop().unwrap_or_else(|| vec![0; READ_CHUNK])
    }

    /// Returns a read buffer; one that grew for a large message is freed rather than kept.
    pub(crate) fn put_read(&mut self, buf: Vec<u8>) {
        if buf.len() == READ_CHUNK && self.read.len() < self.cap {
            self.read.push(buf);
        }
    }

    /// An empty output chunk with room for `WRITE_CHUNK` bytes.
    pub(crate) fn take_chunk(&mut self) -> Vec<u8> {
        self.chunks
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(WRITE_CHUNK))
    }

    /// An empty output chunk with room for `SMALL_CHUNK` bytes.
    pub(crate) fn take_small(&mut self) -> Vec<u8> {
        self.small
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SMALL_CHUNK))
    }

    /// Returns an output chunk to the spares of its size; one that grew for a large message (or
    /// a small one that grew) is freed rather than kept.
    pub(crate) fn put_chunk(&mut self, mut chunk: Vec<u8>) {
        let spares = match chunk.capacity() {
            SMALL_CHUNK => &mut self.small,
            c if (WRITE_CHUNK..=2 * WRITE_CHUNK).contains(&c) => &mut self.chunks,
            _ => return,
        };
        if spares.len() < self.cap {
            chunk.clear();
            spares.push(chunk);
        }
    }
}
