//! Length-prefixed framing: a 4-byte big-endian length, then that many bytes.
//!
//! The length is checked against the maximum *before* anything is allocated or awaited, so a
//! peer announcing 4 GiB costs nothing but an error. The decoder works on borrowed input (the
//! connection's read buffer) and never copies a frame.
//!
//! ```
//! use protocol::frame::{self, Decoded};
//!
//! let mut wire = Vec::new();
//! frame::encode(&mut wire, b"hello");
//! frame::encode(&mut wire, b"world");
//! let mut at = 0;
//! let mut got = Vec::new();
//! while let Decoded::Frame { body, consumed } = frame::decode(&wire[at..], 1024).unwrap() {
//!     got.push(body.to_vec());
//!     at += consumed;
//! }
//! assert_eq!(got, [b"hello".to_vec(), b"world".to_vec()]);
//! assert_eq!(frame::decode(&wire[..3], 1024).unwrap(), Decoded::Incomplete { needed: 4 });
//! ```

/// Bytes of the length prefix.
pub const HEADER: usize = 4;

/// Why framing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The announced length is over the maximum; nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced length.
        len: u64,
        /// Configured maximum.
        max: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: {have} of {need} bytes")]
    Truncated {
        /// Bytes present.
        have: usize,
        /// Bytes the frame needed (header included).
        need: usize,
    },
}

/// Outcome of [`decode`].
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// One whole frame: its body, and the bytes it took from the input (header included).
    Frame {
        /// The frame's payload.
        body: &'a [u8],
        /// Header plus body length.
        consumed: usize,
    },
    /// More input is needed: `needed` bytes in all (header included) for the next frame.
    Incomplete {
        /// Total bytes the next frame needs.
        needed: usize,
    },
}

/// Decodes the first frame of `input`, or says how much more is needed.
pub fn decode(input: &[u8], max: usize) -> Result<Decoded<'_>, FrameError> {
    let Some(head) = input.first_chunk::<HEADER>() else {
        return Ok(Decoded::Incomplete { needed: HEADER });
    };
    let len = u32::from_be_bytes(*head) as usize;
    if len > max {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max,
        });
    }
    let need = HEADER + len;
    match input.get(HEADER..need) {
        Some(body) => Ok(Decoded::Frame {
            body,
            consumed: need,
        }),
        None => Ok(Decoded::Incomplete { needed: need }),
    }
}

/// Appends `body` as one frame.
pub fn encode(out: &mut Vec<u8>, body: &[u8]) {
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX); // invariant: bodies are capped far below 4 GiB
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
}

/// Appends one frame whose body `fill` writes, patching the length in afterwards; saves building
/// the body in a separate buffer.
pub fn encode_with<R>(out: &mut Vec<u8>, fill: impl FnOnce(&mut Vec<u8>) -> R) -> R {
    let at = out.len();
    out.extend_from_slice(&[0; HEADER]);
    let r = fill(out);
    let len = u32::try_from(out.len() - at - HEADER).unwrap_or(u32::MAX); // invariant: as above
    out[at..at + HEADER].copy_from_slice(&len.to_be_bytes());
    r
}

/// Checks what is left when a stream ends: nothing, or an error saying how much was missing.
pub fn finish(rest: &[u8], max: usize) -> Result<(), FrameError> {
    if rest.is_empty() {
        return Ok(());
    }
    match decode(rest, max)? {
        Decoded::Incomplete { needed } => Err(FrameError::Truncated {
            have: rest.len(),
            need: needed,
        }),
        // A whole frame left over means the caller stopped early; not a framing error.
        Decoded::Frame { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_oversized_lengths_before_reading_the_body() {
        let wire = 0xFFFF_FFFFu32.to_be_bytes();
        assert_eq!(
            decode(&wire, 1 << 20),
            Err(FrameError::TooLarge {
                len: 0xFFFF_FFFF,
                max: 1 << 20
            })
        );
        let wire = ((1u32 << 20) + 1).to_be_bytes();
        assert!(matches!(
            decode(&wire, 1 << 20),
            Err(FrameError::TooLarge { .. })
        ));
        let mut ok = Vec::new();
        encode(&mut ok, &vec![7; 1 << 20]);
        assert!(
            matches!(decode(&ok, 1 << 20), Ok(Decoded::Frame { consumed, .. }) if consumed == ok.len())
        );
    }

    #[test]
    fn empty_frames_are_frames() {
        let mut wire = Vec::new();
        encode(&mut wire, b"");
        assert_eq!(
            decode(&wire, 10),
            Ok(Decoded::Frame {
                body: b"",
                consumed: 4
            })
        );
    }

    #[test]
    fn encode_with_patches_the_length() {
        let mut out = vec![9];
        encode_with(&mut out, |b| b.extend_from_slice(b"abc"));
        assert_eq!(out, [9, 0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn finish_reports_truncation() {
        assert_eq!(finish(&[], 10), Ok(()));
        assert_eq!(
            finish(&[0, 0, 0, 5, 1], 10),
            Err(FrameError::Truncated { have: 5, need: 9 })
        );
        assert_eq!(
            finish(&[0, 0], 10),
            Err(FrameError::Truncated { have: 2, need: 4 })
        );
    }
}
