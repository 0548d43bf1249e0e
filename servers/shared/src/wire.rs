//! The frame protocol on an engine connection: reading frames off a handler's input and
//! writing messages straight into a connection's output. Everything of `protocol::wire` (the
//! codec, which knows no event loop) is re-exported here, so a server imports one module.
//!
//! Behind the `frames` feature: the proxy, which balances frames as bytes, links no protocol.

use engine::{ConnId, Context, ErrorKind, SendError};
pub use protocol::wire::*;

/// The engine priority a message is queued with.
pub fn engine_priority(msg: &Message) -> engine::Priority {
    to_engine(Priority::try_from(msg.priority).unwrap_or(Priority::Normal))
}

fn to_engine(p: Priority) -> engine::Priority {
    match p {
        Priority::Critical => engine::Priority::Critical,
        Priority::High => engine::Priority::High,
        Priority::Normal => engine::Priority::Normal,
        Priority::Low => engine::Priority::Low,
    }
}

/// Where a payload over [`COMPRESS_OVER`] is gzip-compressed before it is sent: compression
/// costs the sender's loop far more CPU than it saves on a loopback connection, and pays across
/// a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Compress {
    /// To peers on another host; never on a loopback connection (the default).
    #[default]
    Remote,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl Compress {
    /// Whether a large payload to `conn` is compressed.
    pub fn applies<M: Send + 'static, T>(self, ctx: &Context<'_, M, T>, conn: ConnId) -> bool {
        match self {
            Compress::Always => true,
            Compress::Never => false,
            Compress::Remote => !ctx.peer_addr(conn).is_some_and(|a| a.ip().is_loopback()),
        }
    }
}

/// Queues `msg` on `conn`, encoded straight into the connection's output buffer (a large
/// payload compressed first).
pub fn send<M: Send + 'static, T>(
    ctx: &mut Context<'_, M, T>,
    conn: ConnId,
    msg: &Message,
) -> Result<(), SendError> {
    send_as(ctx, conn, msg, Compress::Always)
}

/// [`send`], a large payload compressed only where `compress` says (asked only for a payload
/// over [`COMPRESS_OVER`]: small ones cost no lookup).
pub fn send_as<M: Send + 'static, T>(
    ctx: &mut Context<'_, M, T>,
    conn: ConnId,
    msg: &Message,
    compress: Compress,
) -> Result<(), SendError> {
    let large = msg.data.len() > COMPRESS_OVER;
    let packed = if large && compress.applies(ctx, conn) {
        compressed(msg)
    } else {
        None
    };
    let msg = packed.as_ref().unwrap_or(msg);
    ctx.send_with(conn, engine_priority(msg), frame_len(msg), |out| {
        encode(msg, out)
    })
}

/// Sends the message `header` + `payload` (uncompressed, timestamped now) with the payload
/// encoded straight into the connection's output chunk: the same bytes as
/// [`send`]`(ctx, conn, &message(..))` without encoding the payload into a buffer of its own
/// first. A payload over [`COMPRESS_OVER`] takes that general path (it may be compressed).
pub fn send_payload<M: Send + 'static, T>(
    ctx: &mut Context<'_, M, T>,
    conn: ConnId,
    header: Header,
    payload: &impl prost::Message,
) -> Result<(), SendError> {
    send_payload_as(ctx, conn, header, payload, Compress::Always)
}

/// [`send_payload`], a large payload compressed only where `compress` says (otherwise any
/// payload is encoded straight into the output).
pub fn send_payload_as<M: Send + 'static, T>(
    ctx: &mut Context<'_, M, T>,
    conn: ConnId,
    header: Header,
    payload: &impl prost::Message,
    compress: Compress,
) -> Result<(), SendError> {
    let data_len = payload.encoded_len();
    if data_len > COMPRESS_OVER && compress.applies(ctx, conn) {
        let mut m = message(header.ty, header.op, header.id, payload);
        m.priority = header.priority as i32;
        return send(ctx, conn, &m);
    }
    let timestamp = now_micros();
    ctx.send_with(
        conn,
        to_engine(header.priority),
        header.frame_len(data_len),
        |out| encode_parts(header, timestamp, payload, data_len, out),
    )
}

/// Feeds every whole frame at the front of `data` to `handle` and returns the bytes consumed,
/// for a handler's `on_data`. Broken framing (a length over `max`) is answered with an ERROR
/// and the connection is closed. Undecodable frames (and payloads that do not inflate) reach
/// `handle` as `Err`; compressed payloads arrive inflated.
pub fn for_each_frame<M: Send + 'static, T>(
    ctx: &mut Context<'_, M, T>,
    conn: ConnId,
    data: &[u8],
    max: usize,
    mut handle: impl FnMut(&mut Context<'_, M, T>, Result<Message, WireError>),
) -> usize {
    for_each_frame_body(ctx, conn, data, max, |ctx, body| {
        handle(ctx, decode_body(body, max));
    })
}

/// A frame's body decoded, its payload inflated when it came compressed.
///
/// # Errors
/// The body is not a `Message`, or its payload does not inflate within `max`.
pub fn decode_body(body: &[u8], max: usize) -> Result<Message, WireError> {
    decode(body).and_then(|mut m| decompress(&mut m, max).map(|()| m))
}

/// [`decode_body`] through `pool` ([`decode_in`]): the payloads share its buffer.
///
/// # Errors
/// As [`decode_body`].
pub fn decode_body_in(
    body: &[u8],
    max: usize,
    pool: &mut prost::bytes::BytesMut,
) -> Result<Message, WireError> {
    decode_in(body, pool).and_then(|mut m| decompress(&mut m, max).map(|()| m))
}

/// As [`for_each_frame`], handing `handle` each frame's body still encoded, borrowed from
/// the input: a handler that reads its hottest messages in place
/// ([`protocol::view::MessageView`]) and decodes the rest with [`decode_body`].
pub fn for_each_frame_body<M: Send + 'static, T>(
    ctx: &mut Context<'_, M, T>,
    conn: ConnId,
    data: &[u8],
    max: usize,
    mut handle: impl FnMut(&mut Context<'_, M, T>, &[u8]),
) -> usize {
    let mut used = 0;
    loop {
        match next_frame(&data[used..], max) {
            Next::Frame(body, n) => {
                used += n;
                ctx.count_message_in(conn);
                handle(ctx, body);
                if !ctx.is_open(conn) {
                    return data.len();
                }
            }
            Next::NeedMore => {
                // A frame whose length is known is not parsed again before it is whole.
                if let Some(head) = data[used..].first_chunk::<4>() {
                    let len = u32::from_be_bytes(*head) as usize;
                    ctx.wait_for(conn, protocol::frame::HEADER + len);
                }
                return used;
            }
            Next::Fatal(_) if looks_like_http(&data[used..]) => {
                // An HTTP client (curl, a browser) on a frame port: tell it in its own words.
                ctx.count_error(ErrorKind::Protocol);
                let _ = ctx.send(conn, &http_on_frame_port_reply());
                ctx.close(conn);
                return data.len();
            }
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

/// Answers a frame that could not be used: BAD_MESSAGE (id 0: the message could not be read)
/// or BAD_COMPRESSION (the request's own id and operation). The connection stays usable:
/// framing is intact.
pub fn reply_bad_message<M: Send + 'static, T>(
    ctx: &mut Context<'_, M, T>,
    conn: ConnId,
    e: &WireError,
) {
    ctx.count_error(ErrorKind::Protocol);
    let (id, op) = e.answers();
    let _ = send(ctx, conn, &error(id, op, e.code(), e.to_string()));
}

/// Answers a message this server does not handle with UNSUPPORTED, naming its id.
pub fn reply_unsupported<M: Send + 'static, T>(
    ctx: &mut Context<'_, M, T>,
    conn: ConnId,
    msg: &Message,
) {
    ctx.count_error(ErrorKind::Protocol);
    let ty = MessageType::try_from(msg.r#type)
        .map_or_else(|_| msg.r#type.to_string(), |t| t.as_str_name().to_string());
    let op = Operation::try_from(msg.op).ok();
    let op_name = op.map_or_else(|| msg.op.to_string(), |o| o.as_str_name().to_string());
    let text = format!("unsupported message: type {ty}, operation {op_name}");
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
