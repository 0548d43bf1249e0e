//! The end of each pass: handlers whose input waits, timers and deadlines, closes that may
//! finish now; and a graceful shutdown's drain.

use super::*;

impl<H: Handler> Loop<H> {
    pub(super) fn run_ready(&mut self) {
        let ready = self.core.take_batch(Batch::Ready);
        for id in &ready {
            if let Some(s) = self.core.sessions.get_mut(id.key as usize) {
                s.in_ready = false;
            }
        }
        for &id in &ready {
            self.read(id);
        }
        self.core.put_batch(ready);
        if !self.accept_pending.is_empty() {
            mem::swap(&mut self.accept_pending, &mut self.accepting);
            let mut accepting = mem::take(&mut self.accepting);
            for &li in &accepting {
                self.accept(li);
            }
            accepting.clear();
            self.accepting = accepting;
        }
    }

    pub(super) fn run_timers(&mut self) {
        let mut fired = mem::take(&mut self.fired);
        self.core.timers.expire(self.core.tick, &mut fired);
        for t in fired.drain(..) {
            match t {
                Timer::User(token) => {
                    let (h, mut ctx) = self.ctx();
                    h.on_timer(&mut ctx, token);
                }
                Timer::Session(id) => self.check_deadlines(id),
            }
        }
        self.fired = fired;
    }

    pub(super) fn check_deadlines(&mut self, id: ConnId) {
        let core = &mut self.core;
        let tick = core.tick;
        let Some(s) = core
            .sessions
            .get_mut(id.key as usize)
            .filter(|s| s.gen == id.gen)
        else {
            return;
        };
        s.timer = None;
        let write_stalled = core
            .cfg
            .write_timeout
            .is_some_and(|w| s.queued() > 0 && tick >= s.last_write.saturating_add(ms(w)));
        match s.state {
            State::Lingering => {
                if tick >= s.last_read.saturating_add(LINGER_MS) {
                    core.release(id.key as usize);
                    return;
                }
            }
            State::Connecting => {
                if tick >= s.last_read.saturating_add(ms(core.cfg.connect_timeout)) {
                    core.counters().error(ErrorKind::Connect);
                    core.begin_close(
                        id,
                        CloseReason::ConnectFailed(io::ErrorKind::TimedOut),
                        true,
                    );
                    return;
                }
            }
            State::Open | State::Closing(_) if write_stalled => {
                info!("Closing {}: output stalled for the write timeout", s.peer());
                core.counters().error(ErrorKind::Timeout);
                core.begin_close(id, CloseReason::WriteTimeout, true);
                return;
            }
            State::Open
                if s.handshake_started().is_some_and(|started| {
                    tick >= started.saturating_add(ms(core.cfg.tls_handshake_timeout))
                }) =>
            {
                debug!("Closing {}: TLS handshake timed out", s.peer());
                core.counters().error(ErrorKind::Tls);
                let why = "handshake timed out".into();
                core.begin_close(id, CloseReason::Tls(why), true);
                return;
            }
            State::Open => {
                if s.idle_timeout_ms
                    .is_some_and(|t| tick >= s.last_read.saturating_add(u64::from(t.get())))
                {
                    debug!("Closing {}: idle timeout", s.peer());
                    core.counters().error(ErrorKind::Timeout);
                    core.begin_close(id, CloseReason::IdleTimeout, false);
                    return;
                }
            }
            State::Closing(_) => {}
        }
        core.arm(id);
    }

    /// Flushes what this pass queued and finishes closes, until nothing more is pending (closes
    /// can queue output elsewhere, e.g. a proxy answering a client when its backend dies).
    pub(super) fn finish_pass(&mut self) {
        for _ in 0..4 {
            if self.core.dirty.is_empty() && self.core.closing.is_empty() {
                return;
            }
            let dirty = self.core.take_batch(Batch::Dirty);
            for &id in &dirty {
                if let Some(s) = self.core.sessions.get_mut(id.key as usize) {
                    s.in_dirty = false;
                }
                self.flush(id);
            }
            self.core.put_batch(dirty);
            let closing = self.core.take_batch(Batch::Closing);
            for &id in &closing {
                self.try_finish_close(id);
            }
            self.core.put_batch(closing);
        }
    }

    pub(super) fn try_finish_close(&mut self, id: ConnId) {
        let Some(s) = self.core.session(id) else {
            return;
        };
        let State::Closing(reason) = s.state.clone() else {
            return;
        };
        let abort = s.abort;
        if !abort && s.queued() > 0 {
            return; // the final flush brings it back here
        }
        if !abort && self.handler.is_busy(id) {
            self.core.waiting_on_handler.push(id);
            return;
        }
        let s = &mut self.core.sessions[id.key as usize];
        s.state = State::Lingering;
        if let (Some(tls), false) = (s.tls.as_mut(), abort) {
            tls.close_notify(&s.stream);
        }
        let linger = !abort && !s.read_closed;
        {
            let (h, mut ctx) = self.ctx();
            h.on_close(&mut ctx, id, reason);
        }
        let key = id.key as usize;
        if !linger {
            self.core.release(key);
            return;
        }
        self.core.return_queue(key);
        let s = &mut self.core.sessions[key];
        // Unconsumed input is dropped: lingering only discards (and may need the room).
        s.rstart = 0;
        s.rend = 0;
        let _ = s.stream.shutdown(std::net::Shutdown::Write);
        s.last_read = self.core.tick;
        let readable = s.readable;
        self.core.arm(id);
        if readable {
            self.core.mark_ready(id);
        }
    }

    pub(super) fn begin_drain(&mut self) {
        self.core.draining = true;
        self.core.drain_unchecked = true;
        self.core.drain_deadline = self.core.tick_after(self.core.cfg.shutdown_grace);
        for mut l in self.listeners.drain(..) {
            let _ = self.core.registry.deregister(&mut l);
        }
        self.accept_pending.clear();
        info!(
            "Loop {} shutting down: {} connections to drain",
            self.core.loop_id,
            self.core.sessions.len()
        );
        {
            let (h, mut ctx) = self.ctx();
            h.on_shutdown(&mut ctx);
        }
        self.finish_pass();
    }

    /// Closes sessions that have gone quiet; true when the loop may exit.
    pub(super) fn drain_step(&mut self) -> bool {
        self.core.drain_unchecked = false;
        if self.core.tick >= self.core.drain_deadline {
            warn!(
                "Loop {}: grace period over, closing {} connections",
                self.core.loop_id,
                self.core.sessions.len()
            );
            return true;
        }
        let quiet: Vec<ConnId> = self
            .core
            .sessions
            .iter()
            .filter(|(_, s)| s.state == State::Open && s.queued() == 0 && s.rstart == s.rend)
            .map(|(k, s)| ConnId {
                key: k as u32,
                gen: s.gen,
            })
            .filter(|id| !self.handler.is_busy(*id))
            .collect();
        for id in quiet {
            self.core.begin_close(id, CloseReason::Shutdown, false);
        }
        self.finish_pass();
        self.core.sessions.is_empty()
    }

    /// Ends every session (the loop is exiting).
    pub(super) fn close_all(&mut self) {
        let keys: Vec<usize> = self.core.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            let s = &mut self.core.sessions[key];
            let id = ConnId {
                key: key as u32,
                gen: s.gen,
            };
            if s.is_live() {
                let reason = match &s.state {
                    State::Closing(reason) => reason.clone(),
                    _ => CloseReason::Shutdown,
                };
                s.state = State::Lingering;
                let (h, mut ctx) = self.ctx();
                h.on_close(&mut ctx, id, reason);
            }
            self.core.release(key);
        }
        self.core.mailbox.close();
    }
}
