//! Request and response bodies as they arrive: Content-Length, chunked (with trailers), or
//! until the connection closes.

use super::*;

/// Follows a body as its bytes arrive, without holding them: which bytes belong to it and when
/// it ends. Chunked framing is checked (size lines, CRLF after data, trailers) but the bytes
/// are left as they are, so a proxy forwards them unchanged.
#[derive(Debug, Clone)]
pub struct BodyReader {
    state: BodyState,
    /// Payload bytes so far.
    total: u64,
    max: u64,
    /// A size or trailer line being read.
    line: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Length(u64),
    Size,
    Data(u64),
    DataEnd(u8),
    Trailer,
    Done,
    UntilClose,
}

/// Longest chunk-size or trailer line accepted.
pub(super) const MAX_LINE: usize = 1024;

impl BodyReader {
    /// A reader for a `kind` body of at most `max` payload bytes (over it: 413).
    pub fn new(kind: BodyKind, max: u64) -> Self {
        let state = match kind {
            BodyKind::None | BodyKind::Length(0) => BodyState::Done,
            BodyKind::Length(n) => BodyState::Length(n),
            BodyKind::Chunked => BodyState::Size,
            BodyKind::UntilClose => BodyState::UntilClose,
        };
        BodyReader {
            state,
            total: 0,
            max,
            line: Vec::new(),
        }
    }

    /// True once the whole body has been seen.
    pub fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    /// True for a body that ends when the connection closes.
    pub fn is_until_close(&self) -> bool {
        self.state == BodyState::UntilClose
    }

    /// Payload bytes seen so far (chunk framing not counted).
    pub fn payload(&self) -> u64 {
        self.total
    }

    fn count(&mut self, n: u64) -> Result<(), HttpError> {
        self.total = self.total.saturating_add(n);
        if self.total > self.max {
            return Err(HttpError::BodyTooLarge(
                usize::try_from(self.max).unwrap_or(usize::MAX),
            ));
        }
        Ok(())
    }

    /// Takes the body's bytes at the front of `data` and returns how many there were (fewer
    /// than `data.len()` only once the body ended: the rest is the next message). Payload
    /// bytes are appended to `sink` when one is given (de-chunked).
    pub fn advance(
        &mut self,
        data: &[u8],
        mut sink: Option<&mut Vec<u8>>,
    ) -> Result<usize, HttpError> {
        let mut at = 0;
        while at < data.len() {
            match self.state {
                BodyState::Done => break,
                BodyState::UntilClose => {
                    self.count((data.len() - at) as u64)?;
                    if let Some(s) = sink.as_deref_mut() {
                        s.extend_from_slice(&data[at..]);
                    }
                    at = data.len();
                }
                BodyState::Length(left) | BodyState::Data(left) => {
                    let n = left.min((data.len() - at) as u64) as usize;
                    self.count(n as u64)?;
                    if let Some(s) = sink.as_deref_mut() {
                        s.extend_from_slice(&data[at..at + n]);
                    }
                    at += n;
                    let left = left - n as u64;
                    self.state = match (self.state, left) {
                        (BodyState::Length(_), 0) => BodyState::Done,
                        (BodyState::Length(_), l) => BodyState::Length(l),
                        (_, 0) => BodyState::DataEnd(0),
                        (_, l) => BodyState::Data(l),
                    };
                }
                BodyState::DataEnd(seen) => {
                    let want = if seen == 0 { b'\r' } else { b'\n' };
                    if data[at] != want {
                        return Err(HttpError::Bad("chunk not followed by CRLF".into()));
                    }
                    at += 1;
                    self.state = if seen == 0 {
                        BodyState::DataEnd(1)
                    } else {
                        BodyState::Size
                    };
                }
                BodyState::Size | BodyState::Trailer => {
                    let Some(line) = self.take_line(data, &mut at)? else {
                        break;
                    };
                    if self.state == BodyState::Trailer {
                        if line.is_empty() {
                            self.state = BodyState::Done;
                        }
                        continue;
                    }
                    let size = chunk_size(&line)?;
                    if size == 0 {
                        self.state = BodyState::Trailer;
                    } else {
                        // Refused from the size line, before its data is read.
                        if self.total.saturating_add(size) > self.max {
                            return Err(HttpError::BodyTooLarge(
                                usize::try_from(self.max).unwrap_or(usize::MAX),
                            ));
                        }
                        self.state = BodyState::Data(size);
                    }
                }
            }
        }
        Ok(at)
    }

    /// A whole CRLF-ended line from `self.line` plus `data[*at..]`, or `None` when it goes on.
    fn take_line(&mut self, data: &[u8], at: &mut usize) -> Result<Option<Vec<u8>>, HttpError> {
        let rest = &data[*at..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.line.extend_from_slice(&rest[..i]);
                *at += i + 1;
                let mut line = std::mem::take(&mut self.line);
                if line.pop() != Some(b'\r') {
                    return Err(HttpError::Bad("bare LF in chunked framing".into()));
                }
                if line.len() > MAX_LINE {
                    return Err(HttpError::Bad("chunk line too long".into()));
                }
                Ok(Some(line))
            }
            None => {
                self.line.extend_from_slice(rest);
                *at = data.len();
                // Its CR may be in already: a whole line of MAX_LINE is MAX_LINE + 1 here.
                if self.line.len() > MAX_LINE + 1 {
                    return Err(HttpError::Bad("chunk line too long".into()));
                }
                Ok(None)
            }
        }
    }
}

/// The size on a chunk-size line (extensions after `;` ignored); at most 15 hex digits.
fn chunk_size(line: &[u8]) -> Result<u64, HttpError> {
    let text = std::str::from_utf8(line).map_err(|_| HttpError::Bad("bad chunk size".into()))?;
    let hex = text.split(';').next().unwrap_or_default().trim();
    if hex.is_empty() || hex.len() > 15 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HttpError::Bad(format!("bad chunk size {hex:?}")));
    }
    u64::from_str_radix(hex, 16).map_err(|_| HttpError::Bad(format!("bad chunk size {hex:?}")))
}
