//! Building and running a set of loops, and the handles that reach them from outside.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use mio::net::TcpListener;
use mio::{Poll, Waker};

use crate::config::Config;
use crate::handler::{Handler, ListenerId};
use crate::limits::{ConnectionGate, RateLimiter};
use crate::mailbox::{LoopHandle, Mailbox, OnLoop};
use crate::reactor::{Loop, WAKER};
use crate::socket;
use crate::stats::{ServerStats, StatsSnapshot};
use crate::tls::TlsListener;

/// Descriptors kept back from the default connection limit for files, pipes and logs.
const FD_RESERVE: usize = 64;

/// State every loop of one server shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stats: ServerStats,
    pub(crate) gate: ConnectionGate,
    pub(crate) rate: Option<RateLimiter>,
    pub(crate) shutdown: AtomicBool,
    pub(crate) stop: AtomicBool,
    wakers: Vec<Arc<Waker>>,
}

impl Shared {
    fn wake_all(&self) {
        for w in &self.wakers {
            let _ = w.wake();
        }
    }
}

/// Controls a running server from any thread.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ServerHandle {
    /// Begins a graceful shutdown: stop accepting, let handlers notify peers, finish in-flight
    /// work within the grace period, then return from [`Server::run`].
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.wake_all();
    }

    /// Stops every loop at once, closing all connections.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake_all();
    }

    /// True once [`ServerHandle::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.load(Ordering::Acquire)
    }

    /// The server's counters, summed over its loops.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Connections open now on each loop, in loop order (its length is the number of loops).
    pub fn connections_by_loop(&self) -> Vec<u64> {
        self.shared.stats.connections_by_loop()
    }

    /// The connection limit in force.
    pub fn max_connections(&self) -> usize {
        self.shared.gate.max()
    }
}

struct LoopParts<M> {
    poll: Poll,
    mailbox: Arc<Mailbox<M>>,
    listeners: Vec<TcpListener>,
}

/// A server: `threads` loops, each with its own poll and, per listening address, its own
/// `SO_REUSEPORT` socket, so the kernel spreads connections across loops without an acceptor
/// thread or a shared accept lock.
///
/// ```no_run
/// # use engine::{Config, Context, ConnId, Handler, Server};
/// # struct Echo;
/// # impl Handler for Echo {
/// #     type Message = ();
/// #     type Timer = ();
/// #     fn on_data(&mut self, c: &mut Context<'_, ()>, id: ConnId, d: &[u8]) -> usize { let _ = c.send(id, d); d.len() }
/// # }
/// let server = Server::new(Config::default())?.listen("127.0.0.1:0".parse()?)?;
/// println!("listening on {}", server.local_addrs()[0]);
/// server.run(|_| Echo)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Server<H: Handler> {
    cfg: Arc<Config>,
    shared: Arc<Shared>,
    loops: Vec<LoopParts<H::Message>>,
    addrs: Vec<SocketAddr>,
    /// Per listener, in `addrs` order: its TLS settings, if any.
    tls: Vec<Option<Arc<TlsListener>>>,
}

impl<H: Handler> std::fmt::Debug for Server<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("threads", &self.loops.len())
            .field("addrs", &self.addrs)
            .finish()
    }
}

impl<H: Handler> Server<H> {
    /// Creates the loops' polls (no thread starts yet). The default connection limit follows the
    /// open-file soft limit in force now (see [`crate::raise_open_file_limit`]).
    ///
    /// # Errors
    ///
    /// `InvalidInput` when `cfg` breaks an invariant ([`Config::validate`] says which); an
    /// I/O error when a poll or its waker cannot be made.
    pub fn new(cfg: Config) -> io::Result<Self> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let threads = cfg.threads.max(1);
        let nofile = socket::open_file_limit();
        let max = cfg
            .limits
            .max_connections
            .or_else(|| nofile.map(|n| n.saturating_sub(FD_RESERVE).max(1)))
            .unwrap_or(usize::MAX);
        let mut loops = Vec::with_capacity(threads);
        let mut wakers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            wakers.push(Arc::clone(&waker));
            loops.push(LoopParts {
                poll,
                mailbox: Arc::new(Mailbox::new(waker, cfg.mailbox_capacity)),
                listeners: Vec::new(),
            });
        }
        let shared = Arc::new(Shared {
            stats: ServerStats::new(threads),
            gate: ConnectionGate::new(max, cfg.limits.per_ip.clone()),
            rate: cfg.limits.rate.clone().map(RateLimiter::new),
            shutdown: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            wakers,
        });
        Ok(Server {
            cfg: Arc::new(Config { threads, ..cfg }),
            shared,
            loops,
            addrs: Vec::new(),
            tls: Vec::new(),
        })
    }

    /// Listens on `addr` in every loop. With port 0 a free port is picked and every loop binds
    /// it; [`Server::local_addrs`] tells which. The loops of this server share the port; an
    /// address another process listens on is refused (`ErrorKind::AddrInUse`, "address … is
    /// already in use") rather than shared.
    ///
    /// # Errors
    ///
    /// The OS error of binding or listening (`AddrInUse`, `PermissionDenied` for a port under
    /// 1024, `AddrNotAvailable` for an address this host does not have), with the address.
    pub fn listen(mut self, addr: SocketAddr) -> io::Result<Self> {
        self.add_listener(addr)?;
        Ok(self)
    }

    /// Like [`Server::listen`], for a server with several listeners: returns the id that
    /// [`crate::Context::listener`] reports for connections accepted there.
    ///
    /// ```no_run
    /// # use engine::{Config, ConnId, Context, Handler, ListenerId, Server};
    /// struct Two { admin: ListenerId }
    /// impl Handler for Two {
    ///     type Message = ();
    ///     type Timer = ();
    ///     fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
    ///         let reply: &[u8] = if ctx.listener(conn) == Some(self.admin) { b"admin\n" } else { b"public\n" };
    ///         let _ = ctx.send(conn, reply);
    ///         data.len()
    ///     }
    /// }
    /// let mut server = Server::new(Config::default())?;
    /// server.add_listener("127.0.0.1:7000".parse()?)?;
    /// let admin = server.add_listener("127.0.0.1:7001".parse()?)?;
    /// server.run(move |_| Two { admin })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Server::listen`]; also past 65,535 listeners.
    pub fn add_listener(&mut self, addr: SocketAddr) -> io::Result<ListenerId> {
        let id = u16::try_from(self.addrs.len())
            .map(ListenerId)
            .map_err(|_| io::Error::other("too many listeners"))?;
        let mut bound = socket::claim(addr, &self.cfg.socket)?;
        for (i, parts) in self.loops.iter_mut().enumerate() {
            let l = socket::listener(bound, &self.cfg.socket, self.cfg.backlog)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {bound}: {e}")))?;
            if i == 0 {
                bound = l.local_addr()?;
            }
            parts.listeners.push(l);
        }
        self.addrs.push(bound);
        self.tls.push(None);
        Ok(id)
    }

    /// Like [`Server::listen`], with TLS: every connection accepted there does a TLS handshake
    /// first and the handler sees only plaintext. [`crate::Context::listener`] tells which
    /// listener a connection came from. (Cargo feature `tls`, on by default.)
    ///
    /// # Errors
    ///
    /// As [`Server::listen`].
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn listen_tls(mut self, addr: SocketAddr, tls: TlsListener) -> io::Result<Self> {
        self.add_tls_listener(addr, tls)?;
        Ok(self)
    }

    /// [`Server::add_listener`] with TLS. (Cargo feature `tls`, on by default.)
    ///
    /// # Errors
    ///
    /// As [`Server::add_listener`].
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn add_tls_listener(
        &mut self,
        addr: SocketAddr,
        tls: TlsListener,
    ) -> io::Result<ListenerId> {
        let id = self.add_listener(addr)?;
        if let Some(last) = self.tls.last_mut() {
            *last = Some(Arc::new(tls));
        }
        Ok(id)
    }

    /// The addresses actually bound, in the order of [`Server::listen`] calls.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// A handle to shut the server down or read its counters.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// A handle to send messages to loop `i` (`0..threads`; out of range is clamped).
    pub fn loop_handle(&self, i: usize) -> LoopHandle<H::Message> {
        let i = i.min(self.loops.len() - 1);
        LoopHandle {
            mailbox: Arc::clone(&self.loops[i].mailbox),
        }
    }

    /// Number of loops.
    pub fn threads(&self) -> usize {
        self.loops.len()
    }

    /// Runs every loop, each with a handler made by `factory(loop_id)` on its own thread (loop
    /// 0 on the calling thread), until the server stops or a graceful shutdown has drained.
    ///
    /// # Errors
    ///
    /// A loop's I/O failure (its poll failing), or a handler's panic: either stops every loop
    /// and comes back here (see the panic policy in the crate docs, "Panics").
    pub fn run<F>(self, factory: F) -> io::Result<()>
    where
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        let factory = Arc::new(factory);
        let level = if self.addrs.is_empty() {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "Engine starting {} loop(s) on {:?}, connection limit {}",
            self.loops.len(),
            self.addrs,
            self.shared.gate.max()
        );
        let mut parts = self.loops.into_iter().enumerate();
        let Some((_, first)) = parts.next() else {
            return Ok(());
        };
        let mut threads = Vec::new();
        for (i, p) in parts {
            let tls = self.tls.clone();
            let (cfg, shared, factory) = (
                Arc::clone(&self.cfg),
                Arc::clone(&self.shared),
                Arc::clone(&factory),
            );
            threads.push(
                thread::Builder::new()
                    .name(format!("loop-{i}"))
                    .spawn(move || {
                        let mailbox = Arc::clone(&p.mailbox);
                        let s = Arc::clone(&shared);
                        run_loop(i, &shared, &mailbox, move || {
                            Loop::new(
                                i,
                                p.poll,
                                factory(i),
                                p.listeners,
                                tls.clone(),
                                cfg,
                                s,
                                p.mailbox,
                            )
                            .and_then(Loop::run)
                        })
                    })?,
            );
        }
        let first_mailbox = Arc::clone(&first.mailbox);
        let (tls, cfg, shared) = (
            self.tls.clone(),
            Arc::clone(&self.cfg),
            Arc::clone(&self.shared),
        );
        let mut result = run_loop(0, &self.shared, &first_mailbox, move || {
            Loop::new(
                0,
                first.poll,
                factory(0),
                first.listeners,
                tls,
                cfg,
                shared,
                first.mailbox,
            )
            .and_then(Loop::run)
        });
        for t in threads {
            let r = t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("loop thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        result
    }
}

/// Runs one loop; an error or a panic of its handler stops the whole server.
///
/// The engine's panic policy: a panic in a handler (or in the loop) is caught on the loop's
/// thread, logged at ERROR (the panic message itself is printed by Rust's panic hook, with a
/// backtrace when `RUST_BACKTRACE` asks), that loop's connections are closed with it, its mailbox
/// refuses further messages ([`LoopHandle::post`] returns them), and every other loop is told to
/// stop; [`Server::run`] then returns an error naming the loop and the panic, so a program that
/// returns that error from `main` exits non-zero. A server never keeps running with a dead loop
/// whose listening socket would take connections nobody serves.
fn run_loop<M>(
    i: usize,
    shared: &Shared,
    mailbox: &Mailbox<M>,
    run: impl FnOnce() -> io::Result<()>,
) -> io::Result<()> {
    let on_loop = OnLoop::enter(mailbox);
    let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            mailbox.close();
            log::error!("loop {i}: a handler panicked ({what}); stopping the server");
            Err(io::Error::other(format!(
                "loop {i}: a handler panicked: {what}"
            )))
        }
    };
    drop(on_loop);
    if r.is_err() {
        shared.stop.store(true, Ordering::Release);
        shared.wake_all();
    }
    r
}
