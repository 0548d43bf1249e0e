//! Socket readiness: connects finishing, reads (plain and through TLS) into the session's
//! buffer and on to the handler, and queued output flushed.

use super::*;

impl<H: Handler> Loop<H> {
    pub(super) fn session_event(&mut self, key: usize, readable: bool, writable: bool, hup: bool) {
        let Some(s) = self.core.sessions.get_mut(key) else {
            return;
        };
        let id = ConnId {
            key: key as u32,
            gen: s.gen,
        };
        if writable {
            if s.state == State::Connecting {
                self.finish_connect(id);
            } else if s.queued() > 0 {
                self.flush(id);
            }
        }
        if readable {
            if let Some(s) = self.core.sessions.get_mut(key) {
                s.readable = true;
                s.hup |= hup;
            }
            self.read(id);
        }
    }

    pub(super) fn finish_connect(&mut self, id: ConnId) {
        let s = &mut self.core.sessions[id.key as usize];
        let failed = match s.stream.take_error() {
            Ok(Some(e)) | Err(e) => Some(e.kind()),
            Ok(None) => match s.stream.peer_addr() {
                Ok(_) => None,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // not yet
                Err(e) => Some(e.kind()),
            },
        };
        if let Some(kind) = failed {
            self.core.counters().error(ErrorKind::Connect);
            self.core
                .begin_close(id, CloseReason::ConnectFailed(kind), true);
            return;
        }
        s.state = State::Open;
        s.last_read = self.core.tick;
        s.last_write = self.core.tick;
        let tls = s.tls.is_some();
        self.core.arm(id);
        if tls {
            // The handler hears of it once the handshake is done (see `tls_step`); for now the
            // ClientHello goes out.
            self.flush(id);
            return;
        }
        {
            let (h, mut ctx) = self.ctx();
            h.on_connect(&mut ctx, id);
        }
        if self.core.session(id).is_some_and(|s| s.queued() > 0) {
            self.flush(id);
        }
    }

    /// Reads until `WouldBlock`, the pass budget, backpressure or a close, handing data to the
    /// handler after every read so pipelined input never needs a larger buffer. Plain and TLS
    /// sessions share this loop; only the step that fills the buffer differs
    /// ([`Loop::plain_step`], [`Loop::tls_step`]).
    pub(super) fn read(&mut self, id: ConnId) {
        let mut reads = 0;
        loop {
            let core = &mut self.core;
            let tick = core.tick;
            let Some(s) = core
                .sessions
                .get_mut(id.key as usize)
                .filter(|s| s.gen == id.gen)
            else {
                return;
            };
            if s.redeliver {
                // Resumed with input left over: offer it before reading more.
                s.redeliver = false;
                if s.may_read() && s.rstart < s.rend {
                    self.deliver(id);
                    continue;
                }
            }
            // TLS sessions read through rustls (a lingering one just discards, as plain ones do).
            let tls = s.tls.is_some() && s.state == State::Open;
            let has_input = if tls { s.has_input() } else { s.readable };
            if !has_input || !s.may_read() {
                return;
            }
            if reads == READS_PER_PASS {
                core.mark_ready(id);
                return;
            }
            if !core.read_room(id) {
                self.too_large(id);
                return;
            }
            let step = if tls {
                self.tls_step(id)
            } else {
                self.plain_step(id)
            };
            let core = &mut self.core;
            let Some(s) = core.sessions.get_mut(id.key as usize) else {
                return; // a lingering session ended: its slot is free
            };
            match step {
                Step::Read {
                    plain,
                    wire,
                    flush,
                    connected,
                } => {
                    if wire > 0 {
                        reads += 1;
                        s.stats.bytes_in += wire as u64;
                        s.last_read = tick;
                        bump(&core.counters().bytes_in, wire as u64);
                    }
                    if flush {
                        core.mark_dirty(id);
                    }
                    if plain > 0 {
                        core.sessions[id.key as usize].rend += plain as u32;
                        self.deliver(id);
                    }
                    if connected {
                        let (h, mut ctx) = self.ctx();
                        h.on_connect(&mut ctx, id);
                    }
                }
                Step::Discarded => reads += 1,
                Step::Again => {}
                Step::WouldBlock => {
                    s.readable = false;
                    return;
                }
                Step::Eof => {
                    s.readable = false;
                    s.read_closed = true;
                    if s.rstart < s.rend {
                        debug!(
                            "{} closed with {} unconsumed bytes",
                            s.peer(),
                            s.rend - s.rstart
                        );
                    }
                    core.begin_close(id, CloseReason::PeerClosed, false);
                    return;
                }
                Step::Close(reason) => {
                    s.readable = false;
                    s.read_closed = true;
                    core.begin_close(id, reason, true);
                    return;
                }
                Step::Released => return,
            }
        }
    }

    /// One read from a plain socket into the read buffer (a lingering session's bytes are
    /// discarded, and its end releases it).
    fn plain_step(&mut self, id: ConnId) -> Step {
        let core = &mut self.core;
        let s = &mut core.sessions[id.key as usize];
        let space = s.rbuf.len() - s.rend as usize;
        let lingering = s.state == State::Lingering;
        match (&s.stream).read(&mut s.rbuf[s.rend as usize..]) {
            Ok(0) if lingering => {
                core.release(id.key as usize);
                Step::Released
            }
            Ok(0) => Step::Eof,
            Ok(n) => {
                if n < space && !s.hup {
                    // A short read drained the socket: new data will raise a new edge.
                    s.readable = false;
                }
                if lingering {
                    return Step::Discarded;
                }
                Step::Read {
                    plain: n,
                    wire: n,
                    flush: false,
                    connected: false,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Step::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Again,
            Err(_) if lingering => {
                core.release(id.key as usize);
                Step::Released
            }
            Err(e) => {
                debug!("read from {} failed: {e}", s.peer());
                core.counters().error(ErrorKind::Io);
                Step::Close(CloseReason::Io(e.kind()))
            }
        }
    }

    /// One step of a TLS session: decrypted bytes already in rustls into the read buffer, or
    /// one read from the socket into rustls (which may finish the handshake).
    fn tls_step(&mut self, id: ConnId) -> Step {
        let core = &mut self.core;
        let s = &mut core.sessions[id.key as usize];
        let peer = s.peer();
        let Some(tls) = s.tls.as_mut() else {
            return Step::WouldBlock;
        };
        let step = tls.read(&s.stream, &mut s.rbuf[s.rend as usize..], s.readable);
        let wants_write = tls.wants_write();
        match step {
            TlsRead::Plain(n) => Step::Read {
                plain: n,
                wire: 0,
                flush: false,
                connected: false,
            },
            TlsRead::Wire(n) => {
                let connected = tls.connect_pending && !tls.conn.is_handshaking();
                if connected {
                    tls.connect_pending = false;
                }
                Step::Read {
                    plain: 0,
                    wire: n,
                    // Handshake messages to answer, or output that waited for the handshake.
                    flush: wants_write || s.queued() > 0,
                    connected,
                }
            }
            TlsRead::WouldBlock => Step::WouldBlock,
            TlsRead::Eof => Step::Eof,
            TlsRead::NotTls(listener) => {
                debug!("Closing {}: plain text on a TLS port", s.peer());
                if !listener.plaintext_reply.is_empty() {
                    let _ = (&s.stream).write(&listener.plaintext_reply);
                }
                core.counters().error(ErrorKind::Tls);
                Step::Close(CloseReason::Tls("plain text on a TLS port".into()))
            }
            TlsRead::Failed(why) => {
                info!("Closing {peer}: TLS failed: {why}");
                let mut wire = 0;
                let _ = tls.push(&s.stream, &mut wire); // the alert, best effort
                core.counters().error(ErrorKind::Tls);
                Step::Close(CloseReason::Tls(why.into()))
            }
            TlsRead::Io(e) => {
                debug!("read from {} failed: {e}", s.peer());
                core.counters().error(ErrorKind::Io);
                Step::Close(CloseReason::Io(e.kind()))
            }
        }
    }

    /// The peer sent more than the connection's message limit without it being consumed: the
    /// handler may answer ([`crate::Handler::on_oversize`]), then the connection closes once
    /// that answer is written (reading stops while it is: the session is closing), and lingers
    /// discarding input, so the answer is not lost to a reset.
    fn too_large(&mut self, id: ConnId) {
        let limit = self.core.message_limit(id);
        let Some(s) = self.core.session_mut(id).filter(|s| s.state == State::Open) else {
            return;
        };
        let buffered = (s.rend - s.rstart) as usize;
        warn!("Closing {}: message over {limit} bytes", s.peer());
        self.core.counters().error(ErrorKind::TooLarge);
        {
            let (h, mut ctx) = self.ctx();
            h.on_oversize(&mut ctx, id, buffered);
        }
        self.core.begin_close(id, CloseReason::TooLarge, false);
    }

    /// Offers the unconsumed input to the handler, unless it waits for more than is here
    /// ([`crate::Context::wait_for`]), and keeps what it leaves.
    pub(super) fn deliver(&mut self, id: ConnId) {
        let s = &mut self.core.sessions[id.key as usize];
        let (a, b) = (s.rstart as usize, s.rend as usize);
        if (b - a) < s.want as usize {
            return;
        }
        s.want = 0;
        let buf = mem::take(&mut s.rbuf);
        let consumed = {
            let (h, mut ctx) = self.ctx();
            h.on_data(&mut ctx, id, &buf[a..b]).min(b - a)
        };
        // Removal from the slab is deferred to the end of the pass, so the session is still here.
        let s = &mut self.core.sessions[id.key as usize];
        s.rstart = (a + consumed) as u32;
        let want = s.want as usize;
        if s.rstart == s.rend {
            s.rstart = 0;
            s.rend = 0;
            self.core.pool.put_read(buf);
        } else {
            s.rbuf = buf;
        }
        // Waiting for a message over the limit would only delay the same end.
        let open = |s: &Session| s.state == State::Open && !s.read_closed;
        if want > 0 && want > self.core.message_limit(id) && self.core.session(id).is_some_and(open)
        {
            self.too_large(id);
        }
    }

    pub(super) fn flush(&mut self, id: ConnId) {
        let Core {
            sessions,
            pool,
            shared,
            loop_id,
            tick,
            cfg,
            ..
        } = &mut self.core;
        let Some(s) = sessions
            .get_mut(id.key as usize)
            .filter(|s| s.gen == id.gen)
        else {
            return;
        };
        if matches!(s.state, State::Connecting | State::Lingering) {
            return;
        }
        let before = s.stats.bytes_out;
        let res = match (s.tls.as_mut(), s.wq.as_mut()) {
            (Some(tls), wq) => flush_tls(tls, &s.stream, wq, pool, &mut s.stats.bytes_out),
            (None, Some(wq)) => wq.flush(&mut &s.stream, pool, &mut s.stats.bytes_out),
            (None, None) => return,
        };
        let wrote = s.stats.bytes_out - before;
        if wrote > 0 {
            s.last_write = *tick;
            bump(&shared.stats.loops[*loop_id].bytes_out, wrote);
        }
        let queued = s.wq.as_ref().map_or(0, |q| q.len());
        let relieved = s.backpressure && queued <= cfg.write_low_water;
        if relieved {
            s.backpressure = false;
        }
        let closing = matches!(s.state, State::Closing(_));
        let readable = s.has_input();
        match res {
            Ok(Flush::Done) => {
                self.core.return_queue(id.key as usize);
                if closing {
                    self.core.closing.push(id);
                }
            }
            Ok(Flush::Blocked) => self.core.arm(id),
            Err(e) => {
                debug!("write to {id:?} failed: {e}");
                self.core.counters().error(ErrorKind::Io);
                self.core.begin_close(id, CloseReason::Io(e.kind()), true);
                return;
            }
        }
        if relieved {
            if readable {
                self.core.mark_ready(id);
            }
            let (h, mut ctx) = self.ctx();
            h.on_drain(&mut ctx, id);
        }
    }
}

/// Moves a TLS session's queued plaintext into rustls and its records to the socket.
fn flush_tls(
    tls: &mut Tls,
    stream: &TcpStream,
    wq: Option<&mut Box<WriteQueue>>,
    pool: &mut BufferPool,
    wire: &mut u64,
) -> io::Result<Flush> {
    if let Some(wq) = wq {
        let mut plain = 0;
        if wq.flush(&mut tls.writer(stream, wire), pool, &mut plain)? == Flush::Blocked {
            return Ok(Flush::Blocked);
        }
    }
    Ok(if tls.push(stream, wire)? {
        Flush::Done
    } else {
        Flush::Blocked
    })
}

/// What one read step gave.
enum Step {
    /// `plain` bytes were placed in the read buffer and `wire` bytes taken from the socket;
    /// `flush`: output waits (TLS handshake); `connected`: an outbound TLS handshake finished.
    Read {
        plain: usize,
        wire: usize,
        flush: bool,
        connected: bool,
    },
    /// A lingering session's bytes, read and dropped: nobody listens any more.
    Discarded,
    /// Interrupted: try again.
    Again,
    /// Nothing more for now.
    WouldBlock,
    /// The peer closed.
    Eof,
    /// Close now, dropping output.
    Close(CloseReason),
    /// A lingering session ended and is gone.
    Released,
}

/// The read buffer's room: what the handler's input limits and hints allow.
impl<M, T> Core<M, T> {
    /// Makes room in the session's read buffer for at least one byte: takes a pooled buffer,
    /// compacts, or grows it up to the connection's message limit. When the handler said how
    /// many bytes it waits for, the buffer grows toward that in few steps, but never more than
    /// [`RESERVE_AHEAD`] past what has arrived: a header announcing a large message costs
    /// nothing until its bytes come. False when the peer sent the limit without it being
    /// consumed; the caller reports it.
    pub(super) fn read_room(&mut self, id: ConnId) -> bool {
        let s = &mut self.sessions[id.key as usize];
        let max = s
            .max_message
            .map_or(self.cfg.max_message_size, |m| m.get() as usize);
        let limit = (max + READ_SLACK).min(u32::MAX as usize);
        if s.rbuf.is_empty() {
            s.rbuf = self.pool.take_read();
            s.rstart = 0;
            s.rend = 0;
        }
        if s.rend as usize == s.rbuf.len() {
            if s.rstart > 0 {
                s.rbuf.copy_within(s.rstart as usize..s.rend as usize, 0);
                s.rend -= s.rstart;
                s.rstart = 0;
            } else if s.rbuf.len() < limit {
                let wanted = (s.want as usize).min(s.rend as usize + RESERVE_AHEAD);
                let n = (s.rbuf.len() * 2).max(wanted).min(limit);
                s.rbuf.resize(n, 0);
            } else {
                return false;
            }
        }
        true
    }

    /// The limit on unconsumed input `id` may hold.
    pub(crate) fn message_limit(&self, id: ConnId) -> usize {
        self.session(id)
            .and_then(|s| s.max_message)
            .map_or(self.cfg.max_message_size, |m| m.get() as usize)
    }
}
