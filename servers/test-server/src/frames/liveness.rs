//! Server-initiated pings: the first after a random delay, then every interval; a client that
//! does not answer within the timeout is disconnected (docs/protocol.md, liveness). Round trips feed /metrics.
//!
//! One sweep per loop walks its clients (every second with the default 30 s / 90 s, finer for
//! shorter settings) instead of one timer per client: a client then costs 12 bytes of
//! liveness state rather than a wheel entry, and a ping goes out at most one sweep late.

use super::*;

/// The longest ping timeout honoured (see `Client::ping_sent_us`).
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// A duration in whole ms, saturating (client times are `u32` ms offsets, wrapping).
pub(super) fn ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// `now` is at or past `at` (both wrapping ms offsets less than ~24 days apart).
fn reached(now: u32, at: u32) -> bool {
    (now.wrapping_sub(at) as i32) >= 0
}

impl Liveness {
    /// How often the sweep runs: a tenth of the shorter of interval and timeout, between 10 ms
    /// and 1 s.
    fn sweep_every(&self) -> Duration {
        (self.interval.min(self.timeout) / 10)
            .clamp(Duration::from_millis(10), Duration::from_secs(1))
    }
}

impl Frames {
    /// Ms since the service's epoch, wrapping (every ~49 days).
    pub(super) fn now_ms(&self) -> u32 {
        self.epoch.elapsed().as_millis() as u32
    }

    /// µs since the service's epoch, wrapping (every ~71 minutes: round trips only).
    fn now_us(&self) -> u32 {
        self.epoch.elapsed().as_micros() as u32
    }

    /// Sets the sweep timer unless it is running.
    pub(super) fn start_sweep(&mut self, ctx: &mut Context<'_, Note, Timer>, live: &Liveness) {
        if !self.sweeping {
            self.sweeping = true;
            ctx.set_timer(live.sweep_every(), Timer::Liveness);
        }
    }

    /// A client answered the server's ping.
    pub(super) fn pong(&mut self, conn: ConnId, msg: &Message) {
        let now_us = self.now_us();
        let Some(c) = self.clients.get_mut(conn) else {
            return;
        };
        if c.ping_id == 0 || c.ping_id != msg.message_id {
            return;
        }
        let rtt = Duration::from_micros(u64::from(now_us.wrapping_sub(c.ping_sent_us)));
        match c.rtt.average() {
            Some(before) => self.rtt_averages.0 -= micros(before).min(self.rtt_averages.0),
            None => self.rtt_averages.1 += 1,
        }
        c.rtt.record(rtt);
        self.rtt_averages.0 += c.rtt.average().map_or(0, micros);
        c.ping_id = 0;
        self.cfg.rtt.record(micros(rtt));
    }

    /// The loop's sweep: disconnects each client whose ping went unanswered for the timeout,
    /// pings those due one, and comes back while the loop has clients.
    pub(super) fn sweep(&mut self, ctx: &mut Context<'_, Note, Timer>) {
        self.sweeping = false;
        let Some(live) = self.cfg.liveness else {
            return;
        };
        if self.clients.is_empty() {
            return; // the next accept starts it again
        }
        let (now, now_us) = (self.now_ms(), self.now_us());
        let interval = ms(live.interval);
        // µs in a u32: timeouts over an hour are treated as an hour.
        let timeout_us = live.timeout.min(MAX_TIMEOUT).as_micros() as u32;
        for (conn, c) in self.clients.iter_mut() {
            if c.ping_id != 0 {
                if now_us.wrapping_sub(c.ping_sent_us) >= timeout_us {
                    let peer = ctx
                        .peer_addr(conn)
                        .map_or("?".to_string(), |p| p.ip().to_string());
                    let usual = match c.rtt.average() {
                        Some(avg) => format!(
                            "its round trips averaged {:.1} ms over its last {} answered pings",
                            avg.as_secs_f64() * 1e3,
                            c.rtt.samples()
                        ),
                        None => "it never answered one".to_string(),
                    };
                    info!(
                        "Client {peer} did not answer a ping within {} s: disconnecting ({usual})",
                        live.timeout.as_secs_f64()
                    );
                    c.ping_id = 0;
                    ctx.close(conn);
                }
                continue;
            }
            if !reached(now, c.ping_due) {
                continue;
            }
            self.next_ping = self.next_ping.wrapping_add(1).max(1);
            c.ping_id = self.next_ping;
            c.ping_sent_us = now_us;
            c.ping_due = now.wrapping_add(interval);
            let ping = wire::message(
                MessageType::Request,
                Operation::Ping,
                self.next_ping,
                &wire::Ping::default(),
            );
            let _ = wire::send(ctx, conn, &ping);
        }
        self.start_sweep(ctx, &live);
    }

    pub(super) fn first_ping_delay(&mut self, live: &Liveness) -> Duration {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let (lo, hi) = live.first;
        let span = hi.saturating_sub(lo).as_millis() as u64;
        lo + Duration::from_millis(if span == 0 { 0 } else { self.rng % (span + 1) })
    }
}
