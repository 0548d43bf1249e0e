//! A loop assembled from small handlers: one [`Service`] per kind of connection (each listener,
//! each kind of outbound connection) around a [`Hub`] holding what they share, instead of one
//! [`Handler`] that routes every event by asking which part owns the connection.
//!
//! The engine keeps each connection's route (the listener that accepted it, or the
//! [`Kind`] given with [`Context::set_kind`]), and [`Composed`] hands every connection event to
//! the service registered for it. Loop-wide events (messages from other threads, timers, the
//! start and end of a pass, shutdown) go to the hub, which reaches any service by its type.
//! As in Pingora's services or sozu's per-protocol sessions, each service keeps the state of
//! its own connections and nothing else.
//!
//! A service's callbacks get [`Parts`]: the hub, and every *other* service by type (the one
//! being called is itself), so a database-link service can hand an answer to the service
//! whose client asked for it without either knowing the loop's routing.
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use engine::compose::{Composed, Hub, Parts, Service};
//! use engine::{Config, ConnId, Context, Server};
//!
//! /// What the services share: here, a counter of requests.
//! #[derive(Default)]
//! struct Shared { requests: u64 }
//! impl Hub for Shared {
//!     type Message = ();
//!     type Timer = ();
//! }
//!
//! /// The public port: echoes lines.
//! struct Echo;
//! impl Service<Shared> for Echo {
//!     fn on_data(&mut self, parts: &mut Parts<'_, Shared>, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
//!         parts.hub.requests += 1;
//!         let _ = ctx.send(conn, data);
//!         data.len()
//!     }
//! }
//!
//! /// The admin port: says how many requests the loop has served.
//! struct Admin;
//! impl Service<Shared> for Admin {
//!     fn on_data(&mut self, parts: &mut Parts<'_, Shared>, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
//!         let _ = ctx.send(conn, format!("{}\n", parts.hub.requests).as_bytes());
//!         data.len()
//!     }
//! }
//!
//! let mut server = Server::new(Config::default())?;
//! let public = server.add_listener("127.0.0.1:7000".parse()?)?;
//! let admin = server.add_listener("127.0.0.1:7001".parse()?)?;
//! server.run(move |_| {
//!     Composed::new(Shared::default())
//!         .listener(public, Echo)
//!         .listener(admin, Admin)
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;

use log::error;

use crate::context::Context;
use crate::handler::{CloseReason, ConnId, Handler, ListenerId};
use crate::session::Route;

/// Names a kind of outbound connection (a database link, an upstream, a health check) for
/// routing: given to a connection with [`Context::set_kind`], and to its service with
/// [`Composed::outbound`]. The number is the program's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kind(pub u16);

/// What the services of a [`Composed`] loop share, and the loop-wide events: messages from
/// other threads, timers, the start and end of each pass, shutdown. Each callback can reach
/// any service through `services`.
pub trait Hub: Sized + 'static {
    /// What worker threads post to this loop ([`crate::LoopHandle::post`]).
    type Message: Send + 'static;
    /// What a timer carries back to [`Hub::on_timer`].
    type Timer: 'static;

    /// The loop is about to start polling (before the services' own `on_start`).
    fn on_start(
        &mut self,
        _services: &mut Services<Self>,
        _ctx: &mut Context<'_, Self::Message, Self::Timer>,
    ) {
    }
    /// A message from another thread arrived.
    fn on_message(
        &mut self,
        _services: &mut Services<Self>,
        _ctx: &mut Context<'_, Self::Message, Self::Timer>,
        _msg: Self::Message,
    ) {
    }
    /// A timer fired. A timer about one connection says so in its value; pass it on to that
    /// connection's service with [`Services::get`].
    fn on_timer(
        &mut self,
        _services: &mut Services<Self>,
        _ctx: &mut Context<'_, Self::Message, Self::Timer>,
        _timer: Self::Timer,
    ) {
    }
    /// See [`Handler::on_pass_end`].
    fn on_pass_end(
        &mut self,
        _services: &mut Services<Self>,
        _ctx: &mut Context<'_, Self::Message, Self::Timer>,
    ) {
    }
    /// A graceful shutdown began (before the services' own `on_shutdown`).
    fn on_shutdown(
        &mut self,
        _services: &mut Services<Self>,
        _ctx: &mut Context<'_, Self::Message, Self::Timer>,
    ) {
    }
}

/// The logic of one kind of connection in a [`Composed`] loop. The callbacks mean what the
/// [`Handler`] callbacks of the same names mean, for this service's connections only, with
/// [`Parts`] to reach the hub and the other services.
#[allow(unused_variables)]
pub trait Service<H: Hub>: 'static {
    /// The loop is starting (after the hub's `on_start`): open outbound connections here.
    fn on_start(&mut self, parts: &mut Parts<'_, H>, ctx: &mut Context<'_, H::Message, H::Timer>) {}
    /// A peer connected to a listener of this service.
    fn on_accept(
        &mut self,
        parts: &mut Parts<'_, H>,
        ctx: &mut Context<'_, H::Message, H::Timer>,
        conn: ConnId,
        peer: SocketAddr,
    ) {
    }
    /// An outbound connection of this service's kind is established.
    fn on_connect(
        &mut self,
        parts: &mut Parts<'_, H>,
        ctx: &mut Context<'_, H::Message, H::Timer>,
        conn: ConnId,
    ) {
    }
    /// Bytes arrived; see [`Handler::on_data`].
    fn on_data(
        &mut self,
        parts: &mut Parts<'_, H>,
        ctx: &mut Context<'_, H::Message, H::Timer>,
        conn: ConnId,
        data: &[u8],
    ) -> usize;
    /// See [`Handler::on_drain`].
    fn on_drain(
        &mut self,
        parts: &mut Parts<'_, H>,
        ctx: &mut Context<'_, H::Message, H::Timer>,
        conn: ConnId,
    ) {
    }
    /// See [`Handler::on_oversize`].
    fn on_oversize(
        &mut self,
        parts: &mut Parts<'_, H>,
        ctx: &mut Context<'_, H::Message, H::Timer>,
        conn: ConnId,
        buffered: usize,
    ) {
    }
    /// See [`Handler::on_close`].
    fn on_close(
        &mut self,
        parts: &mut Parts<'_, H>,
        ctx: &mut Context<'_, H::Message, H::Timer>,
        conn: ConnId,
        reason: CloseReason,
    ) {
    }
    /// A graceful shutdown began (after the hub's `on_shutdown`): tell this service's peers.
    fn on_shutdown(
        &mut self,
        parts: &mut Parts<'_, H>,
        ctx: &mut Context<'_, H::Message, H::Timer>,
    ) {
    }
    /// True while this service owes `conn` an answer; see [`Handler::is_busy`]. Asked for
    /// any connection: answer false for those that are not this service's.
    fn is_busy(&self, hub: &H, conn: ConnId) -> bool {
        false
    }
}

/// A service, reachable by its type.
trait Erased<H: Hub>: Service<H> {
    fn as_any(&mut self) -> &mut dyn Any;
}

impl<H: Hub, T: Service<H>> Erased<H> for T {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

/// The services of a [`Composed`] loop, found by type. While one of them is being called it
/// is not in here (so it cannot be reached twice at once).
pub struct Services<H: Hub> {
    list: Vec<Option<Box<dyn Erased<H>>>>,
}

impl<H: Hub> fmt::Debug for Services<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("count", &self.list.len())
            .finish()
    }
}

impl<H: Hub> Services<H> {
    /// The service of type `T`, unless it is the one being called (or none was registered).
    pub fn get<T: Service<H>>(&mut self) -> Option<&mut T> {
        self.list
            .iter_mut()
            .flatten()
            .find_map(|s| s.as_any().downcast_mut::<T>())
    }
}

/// What a service's callback can reach besides its own state: the hub and the other services.
pub struct Parts<'a, H: Hub> {
    /// The loop's shared state.
    pub hub: &'a mut H,
    /// Every other service, by type.
    pub services: &'a mut Services<H>,
}

impl<H: Hub> fmt::Debug for Parts<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Parts").finish_non_exhaustive()
    }
}

/// Index of "no service" in the routing tables.
const NONE: u16 = u16::MAX;

/// A loop's [`Handler`] assembled from a [`Hub`] and [`Service`]s, each registered for the
/// listeners and the outbound [`Kind`]s whose connections it serves. Events of a connection
/// no service is registered for are an error of the program: it is logged and the connection
/// aborted.
pub struct Composed<H: Hub> {
    hub: H,
    services: Services<H>,
    /// Per listener index, per kind number: the service's place in `services`.
    by_listener: Vec<u16>,
    by_kind: Vec<u16>,
    /// The service of listeners not named in `by_listener`.
    other_listeners: u16,
}

impl<H: Hub> fmt::Debug for Composed<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Composed")
            .field("services", &self.services.list.len())
            .field("by_listener", &self.by_listener)
            .field("by_kind", &self.by_kind)
            .finish()
    }
}

fn set_route(table: &mut Vec<u16>, at: usize, service: u16) {
    if table.len() <= at {
        table.resize(at + 1, NONE);
    }
    table[at] = service;
}

impl<H: Hub> Composed<H> {
    /// A loop with `hub` and no service yet.
    pub fn new(hub: H) -> Self {
        Composed {
            hub,
            services: Services { list: Vec::new() },
            by_listener: Vec::new(),
            by_kind: Vec::new(),
            other_listeners: NONE,
        }
    }

    /// Serves the connections of every listener not given a service of its own with
    /// `service` (a server whose main port is set up elsewhere, e.g. plain or TLS by a flag).
    #[must_use]
    pub fn other_listeners<S: Service<H>>(mut self, service: S) -> Self {
        self.other_listeners = self.place(service);
        self
    }

    /// Serves the connections accepted on `listener` with `service`. A service of a type
    /// already registered serves this listener too (the same value: one state per type).
    #[must_use]
    pub fn listener<S: Service<H>>(mut self, listener: ListenerId, service: S) -> Self {
        let i = self.place(service);
        set_route(&mut self.by_listener, listener.index(), i);
        self
    }

    /// Serves the outbound connections of `kind` with `service` (one state per type, as for
    /// [`Composed::listener`]).
    #[must_use]
    pub fn outbound<S: Service<H>>(mut self, kind: Kind, service: S) -> Self {
        let i = self.place(service);
        set_route(&mut self.by_kind, usize::from(kind.0), i);
        self
    }

    /// Adds a service that serves no connection of its own yet (it may open some later, or
    /// only be reached by type).
    #[must_use]
    pub fn service<S: Service<H>>(mut self, service: S) -> Self {
        self.place(service);
        self
    }

    fn place<S: Service<H>>(&mut self, service: S) -> u16 {
        if let Some(i) = self
            .services
            .list
            .iter_mut()
            .position(|s| s.as_mut().is_some_and(|s| s.as_any().is::<S>()))
        {
            return i as u16;
        }
        self.services.list.push(Some(Box::new(service)));
        (self.services.list.len() - 1) as u16
    }

    /// The place of the service serving `conn`.
    fn route(&self, ctx: &Context<'_, H::Message, H::Timer>, conn: ConnId) -> Option<usize> {
        let i = match ctx.route(conn)? {
            Route::Listener(l) => match self.by_listener.get(usize::from(l)).copied() {
                Some(NONE) | None => Some(self.other_listeners),
                named => named,
            },
            Route::Kind(k) => self.by_kind.get(usize::from(k)).copied(),
            Route::None => None,
        };
        i.filter(|&i| i != NONE).map(usize::from)
    }

    /// Calls `f` on the service serving `conn` with the other parts; `None` (after logging
    /// and aborting the connection) when none does.
    fn with<R>(
        &mut self,
        ctx: &mut Context<'_, H::Message, H::Timer>,
        conn: ConnId,
        f: impl FnOnce(
            &mut dyn Erased<H>,
            &mut Parts<'_, H>,
            &mut Context<'_, H::Message, H::Timer>,
        ) -> R,
    ) -> Option<R> {
        let Some(i) = self.route(ctx, conn) else {
            error!(
                "{conn:?} (listener {:?}, kind {:?}) has no service; closing it",
                ctx.listener(conn),
                ctx.kind(conn)
            );
            ctx.abort(conn);
            return None;
        };
        let mut service = self.services.list[i].take()?;
        let r = {
            let mut parts = Parts {
                hub: &mut self.hub,
                services: &mut self.services,
            };
            f(&mut *service, &mut parts, ctx)
        };
        self.services.list[i] = Some(service);
        Some(r)
    }

    /// Calls `f` on every service in turn, each with the others reachable.
    fn each(
        &mut self,
        ctx: &mut Context<'_, H::Message, H::Timer>,
        mut f: impl FnMut(&mut dyn Erased<H>, &mut Parts<'_, H>, &mut Context<'_, H::Message, H::Timer>),
    ) {
        for i in 0..self.services.list.len() {
            let Some(mut service) = self.services.list[i].take() else {
                continue;
            };
            {
                let mut parts = Parts {
                    hub: &mut self.hub,
                    services: &mut self.services,
                };
                f(&mut *service, &mut parts, ctx);
            }
            self.services.list[i] = Some(service);
        }
    }
}

impl<H: Hub> Handler for Composed<H> {
    type Message = H::Message;
    type Timer = H::Timer;

    fn on_start(&mut self, ctx: &mut Context<'_, H::Message, H::Timer>) {
        self.hub.on_start(&mut self.services, ctx);
        self.each(ctx, |s, parts, ctx| s.on_start(parts, ctx));
    }

    fn on_accept(
        &mut self,
        ctx: &mut Context<'_, H::Message, H::Timer>,
        conn: ConnId,
        peer: SocketAddr,
    ) {
        self.with(ctx, conn, |s, parts, ctx| {
            s.on_accept(parts, ctx, conn, peer)
        });
    }

    fn on_connect(&mut self, ctx: &mut Context<'_, H::Message, H::Timer>, conn: ConnId) {
        self.with(ctx, conn, |s, parts, ctx| s.on_connect(parts, ctx, conn));
    }

    fn on_data(
        &mut self,
        ctx: &mut Context<'_, H::Message, H::Timer>,
        conn: ConnId,
        data: &[u8],
    ) -> usize {
        self.with(ctx, conn, |s, parts, ctx| s.on_data(parts, ctx, conn, data))
            .unwrap_or(data.len())
    }

    fn on_drain(&mut self, ctx: &mut Context<'_, H::Message, H::Timer>, conn: ConnId) {
        self.with(ctx, conn, |s, parts, ctx| s.on_drain(parts, ctx, conn));
    }

    fn on_oversize(
        &mut self,
        ctx: &mut Context<'_, H::Message, H::Timer>,
        conn: ConnId,
        buffered: usize,
    ) {
        self.with(ctx, conn, |s, parts, ctx| {
            s.on_oversize(parts, ctx, conn, buffered)
        });
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, H::Message, H::Timer>, timer: H::Timer) {
        self.hub.on_timer(&mut self.services, ctx, timer);
    }

    fn on_message(&mut self, ctx: &mut Context<'_, H::Message, H::Timer>, msg: H::Message) {
        self.hub.on_message(&mut self.services, ctx, msg);
    }

    fn on_pass_end(&mut self, ctx: &mut Context<'_, H::Message, H::Timer>) {
        self.hub.on_pass_end(&mut self.services, ctx);
    }

    fn on_close(
        &mut self,
        ctx: &mut Context<'_, H::Message, H::Timer>,
        conn: ConnId,
        reason: CloseReason,
    ) {
        // A connection without a service was aborted when that was found; nothing to tell.
        if self.route(ctx, conn).is_some() {
            self.with(ctx, conn, |s, parts, ctx| {
                s.on_close(parts, ctx, conn, reason)
            });
        }
    }

    fn on_shutdown(&mut self, ctx: &mut Context<'_, H::Message, H::Timer>) {
        self.hub.on_shutdown(&mut self.services, ctx);
        self.each(ctx, |s, parts, ctx| s.on_shutdown(parts, ctx));
    }

    fn is_busy(&self, conn: ConnId) -> bool {
        self.services
            .list
            .iter()
            .flatten()
            .any(|s| s.is_busy(&self.hub, conn))
    }
}
