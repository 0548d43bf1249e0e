//! Accepting: new connections admitted under the limits (or refused with a message), a
//! session made for each, TLS started where the listener has it.

use super::*;
use crate::limits::Full;

impl<H: Handler> Loop<H> {
    pub(super) fn accept(&mut self, li: usize) {
        for _ in 0..ACCEPTS_PER_PASS {
            let Some(listener) = self.listeners.get(li) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer, li),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // Out of descriptors or memory: the next connection's edge retries.
                    self.core.counters().error(ErrorKind::Accept);
                    error!("accept failed: {e}");
                    return;
                }
            }
        }
        if !self.accept_pending.contains(&li) {
            self.accept_pending.push(li);
        }
    }

    pub(super) fn admit(&mut self, stream: TcpStream, peer: SocketAddr, li: usize) {
        let shared = Arc::clone(&self.core.shared);
        let ip = peer.ip();
        if let Err(full) = shared.gate.try_acquire(ip) {
            self.core.counters().error(ErrorKind::RefusedLimit);
            let why = match full {
                Full::Server => format!("connection limit of {} reached", shared.gate.max()),
                Full::Address(n) => format!("{n} connections from this address already"),
            };
            let cfg = Arc::clone(&self.core.cfg);
            self.refuse(stream, peer, &cfg.refuse_message, &why);
            return;
        }
        if let Some(rl) = &shared.rate {
            if !rl.allow(ip, self.core.now) {
                shared.gate.release(ip);
                self.core.counters().error(ErrorKind::RefusedRate);
                let cfg = Arc::clone(&self.core.cfg);
                self.refuse(
                    stream,
                    peer,
                    &cfg.rate_limited_message,
                    "per-IP connection rate limit",
                );
                return;
            }
        }
        if let Err(e) = socket::apply_accepted(&stream, &self.core.cfg.socket) {
            debug!("dropping {peer}: setting socket options failed: {e}");
            shared.gate.release(ip);
            return;
        }
        let id = match self.core.insert(stream, peer, State::Open) {
            Ok(id) => id,
            Err(e) => {
                error!("dropping {peer}: cannot register: {e}");
                shared.gate.release(ip);
                return;
            }
        };
        if let Some(s) = self.core.sessions.get_mut(id.key as usize) {
            if let Ok(li) = u16::try_from(li) {
                s.route = Route::Listener(li);
            }
        }
        if let Some(Some(listener)) = self.tls.get(li) {
            match Tls::server(listener, self.core.tick) {
                Ok(tls) => {
                    self.core.sessions[id.key as usize].tls = Some(Box::new(tls));
                    self.core.arm(id); // the handshake deadline
                }
                Err(e) => {
                    error!("dropping {peer}: cannot start TLS: {e}");
                    self.core.release(id.key as usize);
                    return;
                }
            }
        }
        let (h, mut ctx) = self.ctx();
        h.on_accept(&mut ctx, id, peer);
    }

    pub(super) fn refuse(
        &mut self,
        stream: TcpStream,
        peer: SocketAddr,
        message: &[u8],
        why: &str,
    ) {
        if !message.is_empty() {
            let _ = (&stream).write(message);
        }
        drop(stream);
        let now = self.core.now;
        let log = &mut self.refusals;
        if log
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            let more = mem::take(&mut log.suppressed);
            if more > 0 {
                warn!(
                    "Refused connection from {}: {why} ({more} more refused since the last line)",
                    peer.ip()
                );
            } else {
                warn!("Refused connection from {}: {why}", peer.ip());
            }
            log.last = Some(now);
        } else {
            log.suppressed += 1;
        }
    }
}
