//! One test-server loop, assembled from a service per kind of connection around the frame
//! side's hub ([`Frames`]): frame clients on the frame listener(s), the HTTP front on its
//! listener, the db link's outbound connections. The engine routes each connection's events to
//! its service ([`engine::compose`]); no part asks which connection is whose.
//!
//! ```text
//!             frames listener(s) ─► FrameClients ─┐
//!             HTTP listener ──────► HttpFront ────┼─► Frames (hub: db link, setup, logins,
//!             db link (kind 1) ───► LinkConn ─────┘         liveness, verifier messages)
//! ```

use std::net::SocketAddr;

use engine::compose::{Composed, Parts, Service};
use engine::{CloseReason, ConnId, Context};

use crate::dblink;
use crate::events::{Note, Timer};
use crate::frames::{FrameClients, Frames, LinkConn, ServiceConfig};
use crate::http_front::HttpFront;

/// The handler of one test-server loop.
pub type FrameService = Composed<Frames>;

/// Assembles one loop: frame clients on every listener but the HTTP front's, the HTTP front
/// on `cfg.http`'s listener, and the db link's connections.
pub fn service(cfg: ServiceConfig) -> FrameService {
    let http = cfg.http.clone();
    let mut assembled = Composed::new(Frames::new(cfg))
        .other_listeners(FrameClients)
        .outbound(dblink::KIND, LinkConn);
    if let Some(http) = http {
        assembled = match http.listener {
            Some(listener) => assembled.listener(listener, HttpFront::new(http)),
            // No listener of its own: nothing reaches it but the link's cache notices.
            None => assembled.service(HttpFront::new(http)),
        };
    }
    assembled
}

type Ctx<'a> = Context<'a, Note, Timer>;

impl Service<Frames> for HttpFront {
    fn on_accept(
        &mut self,
        _parts: &mut Parts<'_, Frames>,
        _ctx: &mut Ctx<'_>,
        conn: ConnId,
        peer: SocketAddr,
    ) {
        self.accept(conn, peer);
    }

    fn on_data(
        &mut self,
        parts: &mut Parts<'_, Frames>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        data: &[u8],
    ) -> usize {
        let (link, status) = parts.hub.for_http();
        self.requests(ctx, conn, data, link, status)
    }

    fn on_close(
        &mut self,
        _parts: &mut Parts<'_, Frames>,
        _ctx: &mut Ctx<'_>,
        conn: ConnId,
        _reason: CloseReason,
    ) {
        self.closed(conn);
    }

    fn is_busy(&self, _hub: &Frames, conn: ConnId) -> bool {
        self.owes(conn)
    }
}
