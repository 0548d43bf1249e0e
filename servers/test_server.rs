//! test-server's frame-protocol side: the handler each loop runs for client connections.
//!
//! # Lifecycle of a client connection
//!
//! ```text
//! accepted ──► serving: every whole frame is decoded and answered in arrival order
//!                │  REQUEST PING            → RESPONSE PING, same message_id, payload echoed (CRITICAL)
//!                │  undecodable frame       → ERROR BAD_MESSAGE (message_id 0), keeps serving
//!                │  unknown type/operation  → ERROR UNSUPPORTED (same message_id), keeps serving
//!                │  length over the maximum → ERROR FRAME_TOO_LARGE, then close
//!                ▼
//!   shutdown ──► NOTIFICATION SERVER_SHUTDOWN {reason, reconnect_after}; requests already
//!                received are answered; the connection closes once its output is written
//! ```

use std::net::SocketAddr;

use engine::{CloseReason, ConnId, ConnMap, Context, Handler};
use log::debug;

use crate::wire::{self, ErrorCode, Message, MessageType, Operation};

/// Behaviour knobs of the frame service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Largest frame accepted (the engine's maximum message size).
    pub max_message_size: usize,
    /// `reconnect_after` in the shutdown notice, in seconds.
    pub reconnect_after: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_message_size: engine::DEFAULT_MAX_MESSAGE,
            reconnect_after: 5,
        }
    }
}

/// What the service remembers of one client.
#[derive(Debug, Default)]
struct Client {
    peer: Option<SocketAddr>,
}

/// The handler of one loop.
#[derive(Debug)]
pub struct FrameService {
    cfg: ServiceConfig,
    clients: ConnMap<Client>,
}

impl FrameService {
    /// A handler for one loop.
    pub fn new(cfg: ServiceConfig) -> Self {
        FrameService {
            cfg,
            clients: ConnMap::default(),
        }
    }

    fn handle(ctx: &mut Context<'_, ()>, conn: ConnId, msg: Result<Message, wire::WireError>) {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => return wire::reply_bad_message(ctx, conn, &e),
        };
        match (
            MessageType::try_from(msg.r#type),
            Operation::try_from(msg.op),
        ) {
            (Ok(MessageType::Request), Ok(Operation::Ping)) => {
                let _ = wire::send(ctx, conn, &wire::pong(msg));
            }
            _ => wire::reply_unsupported(ctx, conn, &msg),
        }
    }
}

impl Handler for FrameService {
    type Message = ();

    fn on_accept(&mut self, _ctx: &mut Context<'_, ()>, conn: ConnId, peer: SocketAddr) {
        debug!("New connection from {}", peer.ip());
        self.clients.insert(conn, Client { peer: Some(peer) });
    }

    fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
        wire::for_each_frame(ctx, conn, data, self.cfg.max_message_size, |ctx, msg| {
            Self::handle(ctx, conn, msg)
        })
    }

    fn on_close(&mut self, _ctx: &mut Context<'_, ()>, conn: ConnId, reason: CloseReason) {
        if let Some(c) = self.clients.remove(conn) {
            debug!("Connection from {:?} closed: {reason:?}", c.peer);
        }
    }

    fn on_shutdown(&mut self, ctx: &mut Context<'_, ()>) {
        let notice = wire::message(
            MessageType::Notification,
            Operation::ServerShutdown,
            0,
            &wire::ServerShutdown {
                reason: "server shutting down".into(),
                reconnect_after: self.cfg.reconnect_after,
            },
        );
        let notice = Message {
            priority: wire::Priority::Critical as i32,
            ..notice
        };
        for conn in self.clients.ids() {
            let _ = wire::send(ctx, conn, &notice);
        }
    }
}

/// The frame sent to a connection refused at the connection limit.
pub fn refuse_frame() -> Vec<u8> {
    wire::to_frame(&wire::error(
        0,
        Operation::OpUnspecified,
        ErrorCode::ServerBusy,
        "connection limit reached, try again later",
    ))
}

/// The frame sent to a connection refused by the per-IP rate limit.
pub fn rate_limited_frame() -> Vec<u8> {
    wire::to_frame(&wire::error(
        0,
        Operation::OpUnspecified,
        ErrorCode::RateLimited,
        "too many new connections from this address",
    ))
}
