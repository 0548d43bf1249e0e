//! The frame protocol on top of the engine: `Message` encoding, decoding and error replies.
//!
//! A frame is a 4-byte big-endian length and one protobuf `Message` (see docs/protocol.md).

use std::time::{SystemTime, UNIX_EPOCH};

use engine::frame::{self, Decoded, FrameError};
use engine::{ConnId, Context, ErrorKind, SendError};
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
    #[error("bad compressed payload: {0}")]
    Compression(String),
}

impl WireError {
    /// The error code a peer is told.
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::Frame(FrameError::TooLarge { .. }) => ErrorCode::FrameTooLarge,
            WireError::Frame(FrameError::Truncated { .. }) | WireError::Decode(_) => {
                ErrorCode::BadMessage
            }
            WireError::Compression(_) => ErrorCode::BadCompression,
        }
    }
}

impl ErrorCode {
    /// True when the same request may succeed if sent again later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::ServerBusy
                | ErrorCode::RateLimited
                | ErrorCode::ShuttingDown
                | ErrorCode::Unavailable
        )
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

/// The engine priority a message is queued with.
pub fn engine_priority(msg: &Message) -> engine::Priority {
    match Priority::try_from(msg.priority).unwrap_or(Priority::Normal) {
        Priority::Critical => engine::Priority::Critical,
        Priority::High => engine::Priority::High,
        Priority::Normal => engine::Priority::Normal,
        Priority::Low => engine::Priority::Low,
    }
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
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&msg.data[..])
                .take(max as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| WireError::Compression(e.to_string()))?;
            if out.len() > max {
                return Err(WireError::Compression(format!("inflates past {max} bytes")));
            }
            msg.data = out.into();
            msg.compression = Compression::None as i32;
            Ok(())
        }
        Err(_) => Err(WireError::Compression(format!(
            "unknown compression {}",
            msg.compression
        ))),
    }
}

/// Queues `msg` on `conn`, encoded straight into the connection's output buffer (a large
/// payload compressed first).
pub fn send<M: Send + 'static>(
    ctx: &mut Context<'_, M>,
    conn: ConnId,
    msg: &Message,
) -> Result<(), SendError> {
    let packed = compressed(msg);
    let msg = packed.as_ref().unwrap_or(msg);
    ctx.send_with(conn, engine_priority(msg), frame_len(msg), |out| {
        encode(msg, out)
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

/// Feeds every whole frame at the front of `data` to `handle` and returns the bytes consumed,
/// for a handler's `on_data`. Broken framing (a length over `max`) is answered with an ERROR
/// and the connection is closed. Undecodable frames (and payloads that do not inflate) reach
/// `handle` as `Err`; compressed payloads arrive inflated.
pub fn for_each_frame<M: Send + 'static>(
    ctx: &mut Context<'_, M>,
    conn: ConnId,
    data: &[u8],
    max: usize,
    mut handle: impl FnMut(&mut Context<'_, M>, Result<Message, WireError>),
) -> usize {
    let mut used = 0;
    loop {
        match next_frame(&data[used..], max) {
            Next::Frame(body, n) => {
                used += n;
                ctx.count_message_in(conn);
                let msg = decode(body).and_then(|mut m| decompress(&mut m, max).map(|()| m));
                handle(ctx, msg);
                if !ctx.is_open(conn) {
                    return data.len();
                }
            }
            Next::NeedMore => return used,
            Next::Fatal(e) => {
                log::info!("Closing {:?}: {e}", ctx.peer_addr(conn));
                ctx.count_error(ErrorKind::TooLarge);
                let _ = send(
                    ctx,
                    conn,
                    &error(0, Operation::OpUnspecified, e.code(), e.to_string()),
                );
                ctx.close(conn);
                return data.len();
            }
        }
    }
}

/// Answers an undecodable frame with BAD_MESSAGE (the connection stays usable: framing is intact).
pub fn reply_bad_message<M: Send + 'static>(ctx: &mut Context<'_, M>, conn: ConnId, e: &WireError) {
    ctx.count_error(ErrorKind::Protocol);
    let _ = send(
        ctx,
        conn,
        &error(0, Operation::OpUnspecified, e.code(), e.to_string()),
    );
}

/// Answers a message this server does not handle with UNSUPPORTED, naming its id.
pub fn reply_unsupported<M: Send + 'static>(ctx: &mut Context<'_, M>, conn: ConnId, msg: &Message) {
    ctx.count_error(ErrorKind::Protocol);
    let (ty, op) = (
        MessageType::try_from(msg.r#type).ok(),
        Operation::try_from(msg.op).ok(),
    );
    let text = format!("unsupported message: type {ty:?}, operation {op:?}");
    let _ = send(
        ctx,
        conn,
        &error(
            msg.message_id,
            op.unwrap_or_default(),
            ErrorCode::Unsupported,
            text,
        ),
    );
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
    use super::*;

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
