//! TCP mode: a client connection joined to a backend connection, bytes both ways.

use super::*;

impl Proxy {
    pub(super) fn tcp_accept(
        &mut self,
        ctx: &mut Context<'_, (), Timer>,
        conn: ConnId,
        peer: SocketAddr,
    ) {
        self.conns.insert(
            conn,
            Conn::Client(Client {
                peer,
                held: 0,
                state: ClientState::Done,
                timer: None,
                tried: Vec::new(),
            }),
        );
        self.pool.count_request();
        // Client bytes wait in the kernel until the backend is connected.
        ctx.pause_reading(conn);
        self.tcp_connect(ctx, conn);
    }

    /// Connects a TCP-mode client to a backend it has not tried yet.
    pub(super) fn tcp_connect(&mut self, ctx: &mut Context<'_, (), Timer>, conn: ConnId) {
        loop {
            let Some(Conn::Client(c)) = self.conns.get_mut(conn) else {
                return;
            };
            let ip = c.peer.ip();
            let chosen = if c.tried.is_empty() || self.pool.take_retry() {
                self.pool.select(ip, |_| None, &c.tried)
            } else {
                None
            };
            let Some(backend) = chosen else {
                self.pool.count_failure();
                warn!("no backend for the TCP connection from {ip}");
                ctx.close(conn);
                return;
            };
            info!(target: shared::logging::ACCESS, "Selected backend server {}", backend.addr);
            c.tried.push(backend.addr);
            match ctx.connect(backend.addr) {
                Ok(up) => {
                    ctx.set_kind(up, UPSTREAM);
                    backend.begin();
                    c.state = ClientState::Tunnel(up);
                    self.conns.insert(
                        up,
                        Conn::Upstream(Upstream {
                            backend,
                            client: Some(conn),
                            connected: false,
                            got_bytes: false,
                            tunnel: true,
                            timer: None,
                            counted: true,
                        }),
                    );
                    let t = ctx.set_timer(self.cfg.connect_timeout, Timer::Upstream(up));
                    if let Some(Conn::Upstream(u)) = self.conns.get_mut(up) {
                        u.timer = Some(t);
                    }
                    return;
                }
                Err(e) => self
                    .pool
                    .traffic_result(&backend, false, &format!("connect: {e}")),
            }
        }
    }

    // ---- health checks and periodic work (loop 0) -----------------------------------------
}
