//! Server-initiated pings: the first after a random delay, then every interval; a client that
//! does not answer within the timeout is disconnected (SPEC §4). Round trips feed /metrics.

use super::*;

impl FrameService {
    /// A client answered the server's ping.
    pub(super) fn pong(&mut self, conn: ConnId, msg: &Message) {
        let Some(c) = self.clients.get_mut(conn) else {
            return;
        };
        if let Some((id, sent)) = c.ping_out {
            if id == msg.message_id {
                let rtt = sent.elapsed();
                match c.rtt.average() {
                    Some(before) => self.rtt_averages.0 -= micros(before).min(self.rtt_averages.0),
                    None => self.rtt_averages.1 += 1,
                }
                c.rtt.record(rtt);
                self.rtt_averages.0 += c.rtt.average().map_or(0, micros);
                c.ping_out = None;
                let us = micros(rtt);
                self.cfg.rtt.sum_us.fetch_add(us, Ordering::Relaxed);
                self.cfg.rtt.count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// A client's ping timer: disconnect it if its last ping went unanswered too long, else
    /// ping it (if no ping is out) and set the next tick.
    pub(super) fn ping_tick(&mut self, ctx: &mut Context<'_, Note, Timer>, conn: ConnId) {
        let Some(live) = self.cfg.liveness else {
            return;
        };
        let Some(c) = self.clients.get_mut(conn) else {
            return;
        };
        let now = Instant::now();
        match c.ping_out {
            Some((_, sent)) if now.duration_since(sent) >= live.timeout => {
                let peer = c.peer.map_or("?".to_string(), |p| p.ip().to_string());
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
                ctx.close(conn);
                return;
            }
            Some(_) => {}
            None => {
                self.next_ping = self.next_ping.wrapping_add(1).max(1);
                c.ping_out = Some((self.next_ping, now));
                let ping = wire::message(
                    MessageType::Request,
                    Operation::Ping,
                    self.next_ping,
                    &wire::Ping::default(),
                );
                let _ = wire::send(ctx, conn, &ping);
            }
        }
        let next = match c.ping_out {
            Some((_, sent)) => live
                .interval
                .min((sent + live.timeout).saturating_duration_since(now)),
            None => live.interval,
        };
        ctx.set_timer(next.max(Duration::from_millis(1)), Timer::Ping(conn));
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
