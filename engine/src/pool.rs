//! Per-loop pools of read buffers and output chunks.
//!
//! An idle session holds no buffer at all: its read buffer goes back to the pool once every
//! received byte is consumed, and its output chunks once they are written. The pool keeps a
//! bounded number of spares so busy loops do not hit the allocator on every request; beyond that
//! bound released buffers are freed, so memory follows the number of *busy* sessions.

use crate::config::{READ_CHUNK, WRITE_CHUNK};

/// Spare read buffers and output chunks of one loop.
#[derive(Debug)]
pub(crate) struct BufferPool {
    read: Vec<Vec<u8>>,
    chunks: Vec<Vec<u8>>,
    cap: usize,
}

impl BufferPool {
    pub(crate) fn new(cap: usize) -> Self {
        BufferPool {
            read: Vec::new(),
            chunks: Vec::new(),
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

    /// Returns an output chunk; one that grew for a large message is freed rather than kept.
    pub(crate) fn put_chunk(&mut self, mut chunk: Vec<u8>) {
        if chunk.capacity() <= 2 * WRITE_CHUNK && self.chunks.len() < self.cap {
            chunk.clear();
            self.chunks.push(chunk);
        }
    }
}
