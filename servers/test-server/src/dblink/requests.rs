//! Requests on the link: sent on the next connection up (with a fresh id), remembered until
//! answered, and failed with TIMEOUT by the sweep when their answer is late.

use super::*;

impl<T> DbLink<T> {
    /// A message id no request, subscription or ping in flight uses.
    pub(super) fn fresh_id(&mut self) -> u32 {
        loop {
            self.next_id = self.next_id.wrapping_add(1).max(1);
            if !self.pending.contains_key(&self.next_id)
                && !self.subscribing.contains_key(&self.next_id)
                && !self.pings.contains(&self.next_id)
            {
                return self.next_id;
            }
        }
    }

    /// Fails the requests whose answer is past the request timeout.
    pub(super) fn sweep<M: Send + 'static, Tm: From<LinkTimer>>(
        &mut self,
        ctx: &mut Context<'_, M, Tm>,
    ) -> Vec<Event<T>> {
        let now = Instant::now();
        let limit = self.cfg.request_timeout;
        let late: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.sent) >= limit)
            .map(|(id, _)| *id)
            .collect();
        if !late.is_empty() {
            self.breaker.failure(now);
        }
        let out = late
            .into_iter()
            .filter_map(|id| self.pending.remove(&id))
            .map(|p| {
                Event::Failed(
                    p.owner,
                    ErrorCode::Timeout,
                    format!("db-server did not answer within {limit:?}"),
                )
            })
            .collect();
        self.sweeping = !self.pending.is_empty();
        if self.sweeping {
            ctx.set_timer(limit / 4, Tm::from(LinkTimer::Sweep));
        }
        out
    }

    /// Sends `msg` (its `message_id` is replaced by the link's) to db-server. On failure the
    /// owner comes back with the code and reason to answer its caller with, at once.
    pub fn request<M: Send + 'static, Tm: From<LinkTimer>>(
        &mut self,
        ctx: &mut Context<'_, M, Tm>,
        mut msg: Message,
        owner: T,
    ) -> Result<(), (T, ErrorCode, String)> {
        let compress = self.cfg.compress;
        self.send_request(ctx, owner, |ctx, conn, id| {
            msg.message_id = id;
            wire::send_as(ctx, conn, &msg, compress)
        })
    }

    /// Sends a REQUEST of `op` carrying `payload`, encoded straight into the connection's
    /// output (no message built first); otherwise as [`DbLink::request`].
    pub fn request_payload<M: Send + 'static, Tm: From<LinkTimer>>(
        &mut self,
        ctx: &mut Context<'_, M, Tm>,
        op: wire::Operation,
        payload: &impl prost::Message,
        owner: T,
    ) -> Result<(), (T, ErrorCode, String)> {
        let compress = self.cfg.compress;
        self.send_request(ctx, owner, |ctx, conn, id| {
            let header = wire::Header {
                ty: MessageType::Request,
                op,
                id,
                priority: wire::Priority::Normal,
            };
            wire::send_payload_as(ctx, conn, header, payload, compress)
        })
    }

    fn send_request<M: Send + 'static, Tm: From<LinkTimer>>(
        &mut self,
        ctx: &mut Context<'_, M, Tm>,
        owner: T,
        send: impl FnOnce(&mut Context<'_, M, Tm>, ConnId, u32) -> Result<(), engine::SendError>,
    ) -> Result<(), (T, ErrorCode, String)> {
        let now = Instant::now();
        if !self.breaker.allow(now) {
            return Err((
                owner,
                ErrorCode::Unavailable,
                "db-server unreachable (circuit open); retry later".into(),
            ));
        }
        let n = self.slots.len();
        let up = (0..n)
            .map(|k| (self.rr + k) % n)
            .find_map(|i| match self.slots[i].state {
                SlotState::Up(conn) => Some((i, conn)),
                _ => None,
            });
        let Some((i, conn)) = up else {
            return Err((
                owner,
                ErrorCode::Unavailable,
                "no connection to db-server (reconnecting); retry later".into(),
            ));
        };
        self.rr = i + 1;
        let id = self.fresh_id();
        if let Err(e) = send(ctx, conn, id) {
            return Err((
                owner,
                ErrorCode::Unavailable,
                format!("cannot send to db-server: {e}"),
            ));
        }
        self.pending.insert(
            id,
            Pending {
                owner,
                slot: i,
                sent: now,
            },
        );
        if !self.sweeping {
            self.sweeping = true;
            ctx.set_timer(self.cfg.request_timeout / 4, Tm::from(LinkTimer::Sweep));
        }
        Ok(())
    }
}
