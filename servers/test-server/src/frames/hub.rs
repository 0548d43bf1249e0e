//! The loop's composition seen from the frame side: [`Frames`] as the hub (loop-wide events:
//! start, messages from the verifier threads, timers, shutdown), and the services of the frame
//! clients' and the db link's connections. Each connection kind has its own service; the
//! engine routes their events (the HTTP front's service is in [`crate::service`]).

use std::net::SocketAddr;

use engine::compose::{Hub, Parts, Service, Services};
use engine::{CloseReason, ConnId, Context};
use log::{debug, info};

use super::*;
use crate::http_front::HttpFront;

type Ctx<'a> = Context<'a, Note, Timer>;

impl Hub for Frames {
    type Message = Note;
    type Timer = Timer;

    fn on_start(&mut self, _services: &mut Services<Self>, ctx: &mut Ctx<'_>) {
        match self.cfg.loops.lock() {
            Ok(mut l) => l.push(ctx.loop_handle()),
            Err(p) => p.into_inner().push(ctx.loop_handle()),
        }
        if let Some(link) = self.link.as_mut() {
            link.start(ctx);
        }
    }

    fn on_timer(&mut self, services: &mut Services<Self>, ctx: &mut Ctx<'_>, timer: Timer) {
        match timer {
            Timer::Liveness => self.sweep(ctx),
            Timer::Setup => {
                self.setup_due = false;
                if !self.ready {
                    self.setup(ctx);
                }
            }
            Timer::Http(conn) => {
                if let Some(h) = services.get::<HttpFront>() {
                    h.on_timer(ctx, conn);
                }
            }
            Timer::Link(t) => {
                let events = match self.link.as_mut() {
                    Some(l) => l.on_timer(ctx, t),
                    None => Vec::new(),
                };
                for ev in events {
                    self.settle(services.get::<HttpFront>(), ctx, ev);
                }
            }
        }
    }

    fn on_message(&mut self, _services: &mut Services<Self>, ctx: &mut Ctx<'_>, note: Note) {
        match note {
            Note::Migrate(m) => {
                let mut notice =
                    wire::message(MessageType::Notification, Operation::ServerMigration, 0, &m);
                notice.priority = wire::Priority::Critical as i32;
                for conn in self.clients.ids() {
                    let _ = wire::send(ctx, conn, &notice);
                }
            }
            Note::Hashed {
                conn,
                id,
                name,
                stored,
            } => {
                let Some(c) = self.clients.get_mut(conn) else {
                    return;
                };
                c.in_flight = c.in_flight.saturating_sub(1);
                match stored {
                    Some(stored) => self.store_user(ctx, conn, id, name, stored),
                    None => Self::reply_error(
                        ctx,
                        conn,
                        id,
                        Operation::Users,
                        ErrorCode::Internal,
                        "could not hash the secret",
                    ),
                }
            }
            Note::Verified { conn, id, user, ok } => {
                let ip = self.client_ip(ctx, conn);
                let Some(c) = self.clients.get_mut(conn) else {
                    return;
                };
                c.in_flight = c.in_flight.saturating_sub(1);
                let op = Operation::AuthLogin;
                let issued = self.cfg.auth.as_ref().filter(|_| ok).and_then(|a| {
                    // From the first good second of a revocation made this very second.
                    let from = a.revocations.issue_second(&user, now_secs());
                    a.signer.issue_from(&user, from).ok()
                });
                match issued {
                    Some(t) => {
                        if let Some(auth) = &self.cfg.auth {
                            auth.login_refund(ip, &user);
                        }
                        info!(
                            "User {} logged in from {}",
                            shared::logging::Printable::new(user.as_bytes(), 64),
                            ip.map_or_else(|| "-".to_string(), |ip| ip.to_string())
                        );
                        c.user = Some(Box::new((user, t.expires_at)));
                        let reply = wire::message(
                            MessageType::Response,
                            op,
                            id,
                            &AuthToken {
                                token: t.token,
                                expires_at: t.expires_at,
                            },
                        );
                        let _ = wire::send(ctx, conn, &reply);
                    }
                    None => {
                        info!(
                            "Failed login for {} from {}",
                            shared::logging::Printable::new(user.as_bytes(), 64),
                            ctx.peer_addr(conn)
                                .map_or_else(|| "-".to_string(), |p| p.ip().to_string())
                        );
                        Self::reply_error(
                            ctx,
                            conn,
                            id,
                            op,
                            ErrorCode::Unauthenticated,
                            "wrong user or secret",
                        );
                    }
                }
            }
        }
    }

    fn on_shutdown(&mut self, _services: &mut Services<Self>, ctx: &mut Ctx<'_>) {
        self.draining = true;
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

/// The frame clients: every connection of the frame listener(s).
#[derive(Debug)]
pub struct FrameClients;

impl Service<Frames> for FrameClients {
    fn on_accept(
        &mut self,
        parts: &mut Parts<'_, Frames>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        peer: SocketAddr,
    ) {
        debug!("New connection from {}", peer.ip());
        parts.hub.accept(ctx, conn, peer);
    }

    fn on_data(
        &mut self,
        parts: &mut Parts<'_, Frames>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        data: &[u8],
    ) -> usize {
        parts.hub.client_data(ctx, conn, data)
    }

    fn on_close(
        &mut self,
        parts: &mut Parts<'_, Frames>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        reason: CloseReason,
    ) {
        parts.hub.client_closed(ctx, conn, reason);
    }

    /// Answers are due to a client with requests in flight.
    fn is_busy(&self, hub: &Frames, conn: ConnId) -> bool {
        hub.clients.get(conn).is_some_and(|c| c.in_flight > 0)
    }
}

/// The db link's connections: their answers settle the requests of frame clients, of the HTTP
/// front and of the loop's own setup.
#[derive(Debug)]
pub struct LinkConn;

impl Service<Frames> for LinkConn {
    fn on_connect(&mut self, parts: &mut Parts<'_, Frames>, ctx: &mut Ctx<'_>, conn: ConnId) {
        if let Some(link) = parts.hub.link.as_mut() {
            link.on_connect(ctx, conn);
            parts.hub.setup(ctx);
        }
    }

    fn on_data(
        &mut self,
        parts: &mut Parts<'_, Frames>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        data: &[u8],
    ) -> usize {
        let hub = &mut *parts.hub;
        let Some(link) = hub.link.as_mut() else {
            return data.len();
        };
        let mut events = std::mem::take(&mut hub.events);
        let used = link.on_data(ctx, conn, data, &mut events);
        for ev in events.drain(..) {
            hub.settle(parts.services.get::<HttpFront>(), ctx, ev);
        }
        hub.events = events;
        used
    }

    fn on_close(
        &mut self,
        parts: &mut Parts<'_, Frames>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        reason: CloseReason,
    ) {
        let events = match parts.hub.link.as_mut() {
            Some(link) => link.on_close(ctx, conn, reason),
            None => return,
        };
        for ev in events {
            parts.hub.settle(parts.services.get::<HttpFront>(), ctx, ev);
        }
    }

    /// Only while the server drains (so that the drain does not close the link under requests
    /// in flight). A link connection db-server closed is never waited for: its answers will
    /// not come, and its requests must fail at once (they waited for the silence limit when a
    /// killed db-server's close was held back this way).
    fn is_busy(&self, hub: &Frames, conn: ConnId) -> bool {
        hub.draining
            && hub
                .link
                .as_ref()
                .is_some_and(|l| l.in_flight() > 0 && l.owns(conn))
    }
}

impl Frames {
    /// What the HTTP front needs of the rest of the loop for a request: the db link, and the
    /// figures `/health`, `/metrics` and `/status` report.
    pub(crate) fn for_http(&mut self) -> (Option<&mut DbLink<Owner>>, http_front::Status<'_>) {
        let rtt = &*self.cfg.rtt;
        let status = match self.link.as_mut() {
            Some(l) => http_front::Status {
                db_up: l.up(),
                db_breaker_closed: l.breaker() == shared::breaker::State::Closed,
                db_in_flight: l.in_flight(),
                ready: self.ready,
                rtt,
                rtt_averages: self.rtt_averages,
                db_watching: l.watching(),
                db_primary: self.cfg.db.as_ref().map(|d| &*d.primary),
            },
            None => http_front::Status {
                db_up: 0,
                db_breaker_closed: false,
                db_in_flight: 0,
                ready: false,
                rtt,
                rtt_averages: self.rtt_averages,
                db_watching: false,
                db_primary: None,
            },
        };
        (self.link.as_mut(), status)
    }

    /// A frame client connected.
    fn accept(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, peer: SocketAddr) {
        if self.cfg.trusted_proxies.contains(&peer.ip()) {
            self.awaiting_proxy_header.insert(conn, ());
        }
        let mut client = Client::default();
        if let Some(live) = self.cfg.liveness {
            let delay = self.first_ping_delay(&live);
            client.ping_due = self.now_ms().wrapping_add(liveness::ms(delay));
            self.start_sweep(ctx, &live);
        }
        self.clients.insert(conn, client);
    }

    /// Bytes from a frame client: its PROXY header first when it comes through a trusted
    /// proxy, then frames.
    fn client_data(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, data: &[u8]) -> usize {
        let mut skipped = 0;
        if self.awaiting_proxy_header.get(conn).is_some() {
            match shared::proxy_protocol::parse_v2(data) {
                shared::proxy_protocol::Parsed::Incomplete => return 0,
                shared::proxy_protocol::Parsed::Invalid(why) => {
                    warn!(
                        "Closing a connection from trusted proxy {}: {why}",
                        ctx.peer_addr(conn)
                            .map_or_else(|| "-".to_string(), |p| p.ip().to_string())
                    );
                    ctx.abort(conn);
                    return data.len();
                }
                shared::proxy_protocol::Parsed::Header { consumed, source } => {
                    self.awaiting_proxy_header.remove(conn);
                    if let Some(client) = source {
                        self.proxied.insert(conn, client);
                    }
                    skipped = consumed;
                }
            }
        }
        let data = &data[skipped..];
        let logged_in = self.clients.get(conn).is_some_and(|c| c.user.is_some());
        // Without logins configured there is no "before login".
        let max = if logged_in || self.cfg.auth.is_none() {
            self.cfg.max_message_size
        } else {
            self.cfg
                .pre_login_max_message
                .min(self.cfg.max_message_size)
        };
        skipped + wire::for_each_frame(ctx, conn, data, max, |ctx, msg| self.handle(ctx, conn, msg))
    }

    /// A frame client's connection closed.
    fn client_closed(&mut self, ctx: &mut Ctx<'_>, conn: ConnId, reason: CloseReason) {
        self.awaiting_proxy_header.remove(conn);
        self.proxied.remove(conn);
        if let Some(c) = self.clients.remove(conn) {
            if let Some(avg) = c.rtt.average() {
                self.rtt_averages.0 = self.rtt_averages.0.saturating_sub(micros(avg));
                self.rtt_averages.1 = self.rtt_averages.1.saturating_sub(1);
            }
            if let Some(peer) = ctx.peer_addr(conn) {
                debug!("Connection from {peer} closed: {reason}");
            }
        }
    }
}
