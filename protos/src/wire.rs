//! The frame protocol's messages: `Message` encoding, decoding, compression and error replies.
//!
//! A frame is a 4-byte big-endian length and one protobuf `Message` (see docs/protocol.md).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::frame::{self, Decoded, FrameError};
use prost::Message as _;

pub use crate::proto::{
    AuthLogin, AuthToken, Compression, Error as ErrorBody, ErrorCode, Message, MessageType,
    Operation, Ping, Priority, ServerMigration, ServerShutdown, UserChange, UserChanged,
};

/// Why bytes from a peer are not a message.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The framing is broken (over the maximum size, or cut off).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The frame's bytes are not a protobuf `Message`.
    #[error("undecodable message: {0}")]
    Decode(#[from] prost::DecodeError),
    /// `compression = GZIP` but `data` does not inflate, or inflates past the maximum size.
    /// The message itself was read, so the answer names its id and operation.
    #[error("bad compressed payload: {reason}")]
    Compression {
        /// The message's `message_id`.
        id: u32,
        /// The message's `op`.
        op: i32,
        /// What went wrong.
        reason: String,
    },
}

impl WireError {
    /// The error code a peer is told.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::Frame(FrameError::TooLarge { .. }) => ErrorCode::FrameTooLarge,
            WireError::Frame(FrameError::Truncated { .. }) | WireError::Decode(_) => {
                ErrorCode::BadMessage
            }
            WireError::Compression { .. } => ErrorCode::BadCompression,
        }
    }

    /// The request an ERROR about this answers: its `message_id` and operation when the
    /// message could be read (a payload that does not inflate), else 0 (docs/protocol.md).
    pub fn answers(&self) -> (u32, Operation) {
        match self {
            WireError::Compression { id, op, .. } => {
                (*id, Operation::try_from(*op).unwrap_or_default())
            }
            _ => (0, Operation::OpUnspecified),
        }
    }
}

impl ErrorCode {
    /// True when the same request may succeed if sent again later: the `retryable` column of
    /// docs/protocol.md's error table (a test reads the table and checks every code). Every
    /// code is named, so a new one cannot be added without deciding.
    pub fn retryable(self) -> bool {
        match self {
            ErrorCode::ServerBusy
            | ErrorCode::RateLimited
            | ErrorCode::ShuttingDown
            | ErrorCode::Internal
            | ErrorCode::Unavailable
            | ErrorCode::Busy
            | ErrorCode::Timeout
            | ErrorCode::Overloaded
            | ErrorCode::Stale => true,
            ErrorCode::Unspecified
            | ErrorCode::FrameTooLarge
            | ErrorCode::BadMessage
            | ErrorCode::Unsupported
            | ErrorCode::Unauthenticated
            | ErrorCode::BadCompression
            | ErrorCode::BadRequest
            | ErrorCode::SqlError
            | ErrorCode::UnknownTable
            | ErrorCode::Constraint
            | ErrorCode::TypeMismatch
            | ErrorCode::ReadOnly
            | ErrorCode::TooLarge
            | ErrorCode::TxnNotFound
            | ErrorCode::TxnExpired
            | ErrorCode::Forbidden => false,
        }
    }
}

/// Microseconds since the Unix epoch, for `Message::timestamp`.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Decodes one frame body.
pub fn decode(body: &[u8]) -> Result<Message, WireError> {
    Ok(Message::decode(body)?)
}

/// As [`decode`], the payload kept in `pool`'s buffer instead of an allocation of its own per
/// message: once the messages decoded from it are dropped, the buffer is reused whole, so a
/// reader that decodes message after message and drops each soon allocates nothing.
pub fn decode_in(body: &[u8], pool: &mut prost::bytes::BytesMut) -> Result<Message, WireError> {
    pool.reserve(body.len());
    pool.extend_from_slice(body);
    Ok(Message::decode(pool.split().freeze())?)
}

/// Bytes `msg` takes on the wire, header included.
pub fn frame_len(msg: &Message) -> usize {
    frame::HEADER + msg.encoded_len()
}

/// Appends `msg` as one frame. (No reserve here: `send` has sized the output chunk from
/// `frame_len` already, and `encoded_len` is not free.)
pub fn encode(msg: &Message, out: &mut Vec<u8>) {
    frame::encode_with(out, |b| msg.encode_raw(b));
}

/// A `Message` as one frame in a new buffer.
pub fn to_frame(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(frame_len(msg));
    encode(msg, &mut out);
    out
}

/// Builds a message of `ty`/`op` carrying `payload`, encoded already (the buffer becomes the
/// message's data without a copy).
pub fn message_encoded(ty: MessageType, op: Operation, id: u32, payload: Vec<u8>) -> Message {
    Message {
        r#type: ty as i32,
        message_id: id,
        timestamp: now_micros(),
        data: payload.into(),
        op: op as i32,
        ..Message::default()
    }
}

/// Builds a message of `ty`/`op` carrying `payload` encoded.
pub fn message(ty: MessageType, op: Operation, id: u32, payload: &impl prost::Message) -> Message {
    Message {
        r#type: ty as i32,
        message_id: id,
        timestamp: now_micros(),
        data: payload.encode_to_vec().into(),
        op: op as i32,
        ..Message::default()
    }
}

/// The frame a TLS listener sends, in the clear, to a client that speaks plain frames to it
/// (`BAD_MESSAGE`), before closing.
pub fn plaintext_on_tls_frame() -> Vec<u8> {
    to_frame(&error(
        0,
        Operation::OpUnspecified,
        ErrorCode::BadMessage,
        "this port speaks TLS; connect with TLS",
    ))
}

/// An ERROR message answering request `id` (0 when no request can be named).
pub fn error(id: u32, op: Operation, code: ErrorCode, text: impl Into<String>) -> Message {
    let mut m = message(
        MessageType::Error,
        op,
        id,
        &ErrorBody {
            code: code as i32,
            message: text.into(),
            retryable: code.retryable(),
        },
    );
    m.priority = Priority::High as i32;
    m
}

/// Payloads over this many bytes are gzip-compressed when that saves at least 10 % (SPEC §4).
pub const COMPRESS_OVER: usize = 10 * 1024;

/// `msg` with its payload gzip-compressed, if it is over [`COMPRESS_OVER`], not compressed
/// yet, and compression saves at least 10 %; `None` otherwise.
pub fn compressed(msg: &Message) -> Option<Message> {
    use std::io::Write as _;
    if msg.data.len() <= COMPRESS_OVER || msg.compression != Compression::None as i32 {
        return None;
    }
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(msg.data.len() / 2),
        flate2::Compression::fast(),
    );
    gz.write_all(&msg.data).ok()?;
    let packed = gz.finish().ok()?;
    (packed.len() * 10 <= msg.data.len() * 9).then(|| Message {
        data: packed.into(),
        compression: Compression::Gzip as i32,
        ..msg.clone()
    })
}

/// Inflates a GZIP payload in place (no more than `max` bytes); plain payloads are left alone.
pub fn decompress(msg: &mut Message, max: usize) -> Result<(), WireError> {
    use std::io::Read as _;
    match Compression::try_from(msg.compression) {
        Ok(Compression::None) => Ok(()),
        Ok(Compression::Gzip) => {
            let bad = |reason: String| WireError::Compression {
                id: msg.message_id,
                op: msg.op,
                reason,
            };
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&msg.data[..])
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| bad(e.to_string()))?;
            if out.len() > max {
                return Err(bad(format!("inflates past {max} bytes")));
            }
            msg.data = out.into();
            msg.compression = Compression::None as i32;
            Ok(())
        }
        Err(_) => Err(WireError::Compression {
            id: msg.message_id,
            op: msg.op,
            reason: format!("unknown compression {}", msg.compression),
        }),
    }
}

/// What `send_payload` sends: a message's fields but its payload.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// REQUEST, RESPONSE, NOTIFICATION or ERROR.
    pub ty: MessageType,
    /// The operation.
    pub op: Operation,
    /// Correlates an answer with its request.
    pub id: u32,
    /// Write order on the connection.
    pub priority: Priority,
}

impl Header {
    /// The frame's length for a payload of `data_len` bytes (an upper bound: the timestamp is
    /// counted at its longest).
    pub fn frame_len(&self, data_len: usize) -> usize {
        use prost::encoding::{encoded_len_varint, key_len};
        let field = |tag: u32, v: u64| {
            if v == 0 {
                0
            } else {
                key_len(tag) + encoded_len_varint(v)
            }
        };
        let data = if data_len == 0 {
            0
        } else {
            key_len(4) + encoded_len_varint(data_len as u64) + data_len
        };
        frame::HEADER
            + field(1, self.ty as i32 as u64)
            + field(2, u64::from(self.id))
            + key_len(3)
            + 10
            + data
            + field(5, self.op as i32 as u64)
            + field(7, self.priority as i32 as u64)
    }
}

/// Appends the frame of `header` + `payload` (`data_len` = its encoded length), stamped
/// `timestamp`: the same bytes as [`encode`] of the whole message, without encoding the payload
/// into a buffer of its own first.
pub fn encode_parts(
    header: Header,
    timestamp: u64,
    payload: &impl prost::Message,
    data_len: usize,
    out: &mut Vec<u8>,
) {
    use prost::encoding::{encode_key, encode_varint, WireType};
    frame::encode_with(out, |b| {
        let varint = |tag: u32, v: u64, b: &mut Vec<u8>| {
            if v != 0 {
                encode_key(tag, WireType::Varint, b);
                encode_varint(v, b);
            }
        };
        // Field order as prost writes it (by number), so the bytes match `send`'s.
        varint(1, header.ty as i32 as u64, b);
        varint(2, u64::from(header.id), b);
        varint(3, timestamp, b);
        if data_len > 0 {
            encode_key(4, WireType::LengthDelimited, b);
            encode_varint(data_len as u64, b);
            payload.encode_raw(b);
        }
        varint(5, header.op as i32 as u64, b);
        varint(7, header.priority as i32 as u64, b);
    })
}

/// The answer to a Ping request: same id, payload echoed, CRITICAL.
pub fn pong(ping: Message) -> Message {
    Message {
        r#type: MessageType::Response as i32,
        message_id: ping.message_id,
        timestamp: now_micros(),
        data: ping.data,
        op: Operation::Ping as i32,
        compression: ping.compression,
        priority: Priority::Critical as i32,
    }
}

/// True when `data` starts like an HTTP request (a method and a space). Meant for a frame
/// whose length is over the maximum, which every HTTP method read as a length is.
pub fn looks_like_http(data: &[u8]) -> bool {
    const METHODS: &[&[u8]] = &[
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
        b"PRI ",
    ];
    METHODS.iter().any(|m| data.starts_with(m))
}

/// The answer to an HTTP request on a frame port: a whole `400` saying what the port is, then
/// the connection closes.
pub fn http_on_frame_port_reply() -> Vec<u8> {
    // Written out here rather than with the HTTP codec: the protocol depends on no server code.
    const BODY: &str = "{\"error\":\"this port speaks the netmod frame protocol (a 4-byte length \
        and a protobuf Message, docs/protocol.md), not HTTP; test-server's HTTP front is on its \
        --http-listen port (8000 by default)\"}";
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{BODY}",
        BODY.len()
    )
    .into_bytes()
}

/// One step of reading frames from `data`: what the caller should do next.
#[derive(Debug)]
pub enum Next<'a> {
    /// A whole frame body, and the bytes it took.
    Frame(&'a [u8], usize),
    /// Wait for more bytes.
    NeedMore,
    /// Broken framing: tell the peer (`error`) and close.
    Fatal(WireError),
}

/// Looks at the front of `data` for one frame.
pub fn next_frame(data: &[u8], max: usize) -> Next<'_> {
    match frame::decode(data, max) {
        Ok(Decoded::Frame { body, consumed }) => Next::Frame(body, consumed),
        Ok(Decoded::Incomplete { .. }) => Next::NeedMore,
        Err(e) => Next::Fatal(e.into()),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_payload_sent_in_parts_is_the_frame_send_would_write() {
        let payload = Ping {
            payload: b"parts".to_vec().into(),
        };
        for (id, prio) in [
            (0, Priority::Normal),
            (7, Priority::High),
            (u32::MAX, Priority::Low),
        ] {
            let header = Header {
                ty: MessageType::Response,
                op: Operation::Data,
                id,
                priority: prio,
            };
            let mut m = message(header.ty, header.op, id, &payload);
            m.priority = prio as i32;
            m.timestamp = 1_700_000_000_000_000;
            let mut parts = Vec::new();
            encode_parts(
                header,
                m.timestamp,
                &payload,
                payload.encoded_len(),
                &mut parts,
            );
            assert_eq!(parts, to_frame(&m));
            assert!(header.frame_len(payload.encoded_len()) >= parts.len());
        }
    }

    use super::*;

    /// docs/protocol.md is the contract: every code in its error table, with its value and
    /// retryable column, matches the enum and `retryable()`, and every code is in the table.
    #[test]
    fn every_error_code_is_retryable_exactly_as_the_protocol_table_says() {
        let doc = include_str!("../../docs/protocol.md");
        let mut seen = Vec::new();
        for line in doc.lines() {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let [_, name, value, retry, ..] = cells.as_slice() else {
                continue;
            };
            let Some(name) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) else {
                continue;
            };
            let Some(code) = ErrorCode::from_str_name(name) else {
                continue;
            };
            let value: i32 = value.parse().expect("a value column");
            assert_eq!(code as i32, value, "{name}'s value");
            let documented = match *retry {
                "yes" => true,
                "no" => false,
                other => panic!("{name}: retryable column {other:?}"),
            };
            assert_eq!(code.retryable(), documented, "{name}'s retryable flag");
            assert_eq!(
                error(1, Operation::Data, code, "x").data,
                ErrorBody {
                    code: code as i32,
                    message: "x".into(),
                    retryable: documented,
                }
                .encode_to_vec(),
                "{name} as sent"
            );
            seen.push(code as i32);
        }
        for v in 1..=24 {
            let code = ErrorCode::try_from(v).expect("codes 1..=24 exist");
            assert!(seen.contains(&v), "{code:?} is missing from the table");
        }
        assert!(
            ErrorCode::try_from(25).is_err(),
            "a new code needs a row in the table"
        );
    }

    #[test]
    fn a_payload_that_does_not_inflate_is_answered_under_its_own_id() {
        let mut m = Message {
            r#type: MessageType::Request as i32,
            message_id: 42,
            op: Operation::Data as i32,
            compression: Compression::Gzip as i32,
            data: b"not gzip".to_vec().into(),
            ..Message::default()
        };
        let e = decompress(&mut m, 1 << 20).unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadCompression);
        assert_eq!(e.answers(), (42, Operation::Data));
    }

    #[test]
    fn error_messages_round_trip_with_code_and_retryable_flag() {
        let m = error(7, Operation::Ping, ErrorCode::ServerBusy, "busy");
        let frame = to_frame(&m);
        let Next::Frame(body, used) = next_frame(&frame, 1 << 20) else {
            panic!("expected a frame")
        };
        assert_eq!(used, frame.len());
        let back = decode(body).unwrap();
        assert_eq!(back.r#type(), MessageType::Error);
        assert_eq!(back.message_id, 7);
        let e = ErrorBody::decode(back.data).unwrap();
        assert_eq!(e.code(), ErrorCode::ServerBusy);
        assert!(e.retryable);
    }
}
