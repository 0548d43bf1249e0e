//! HTTP/1.1 load on the same engine as the frame load: keep-alive connections, each with
//! `pipeline` GETs of one path in flight (answers come back in order, so the oldest request
//! is the one answered). A 2xx or 3xx answer is a success; anything else, an unparsable
//! answer or a request lost with its connection is an error. Same report and last line as
//! [`crate::loadgen`].
//!
//! ```no_run
//! use tools::loadgen::LoadConfig;
//! # fn cfg() -> LoadConfig { unimplemented!() }
//! let report = tools::httpload::run(cfg(), "/docs/example")?;
//! println!("{}", report.last_line());
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::VecDeque;
use std::time::Instant;

use engine::{CloseReason, ConnId, ConnMap, Context, Handler};
use log::warn;
use shared::http1::{self, BodyReader, Head};

use crate::loadgen::{run_loops, LoadConfig, LoopShare, Report, Tick};

/// Largest answer head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Runs GETs of `path` against `cfg.addr` and sums what every loop measured.
pub fn run(cfg: LoadConfig, path: &str) -> std::io::Result<Report> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: netmod-loadgen\r\n\r\n",
        cfg.addr
    )
    .into_bytes();
    let c = cfg.clone();
    run_loops(&cfg, move |_, share| HttpLoad {
        cfg: c.clone(),
        request: request.clone(),
        conns: ConnMap::default(),
        report: Report::empty(),
        head: Head::default(),
        share,
    })
}

#[derive(Debug, Default)]
struct Conn {
    /// When each request in flight was sent, oldest first.
    inflight: VecDeque<Instant>,
    /// The answer whose body is being read: its status and body reader.
    body: Option<(u16, BodyReader)>,
}

struct HttpLoad {
    cfg: LoadConfig,
    request: Vec<u8>,
    conns: ConnMap<Conn>,
    report: Report,
    head: Head,
    share: LoopShare,
}

impl HttpLoad {
    fn open(&mut self, ctx: &mut Context<'_, (), Tick>) {
        if let Some(c) = self.cfg.dial(ctx, &mut self.report) {
            self.conns.insert(c, Conn::default());
        }
    }

    fn send_one(&mut self, ctx: &mut Context<'_, (), Tick>, conn: ConnId) {
        if let Some(c) = self.conns.get_mut(conn) {
            if ctx.send(conn, &self.request).is_ok() {
                c.inflight.push_back(ctx.now());
            }
        }
    }

    /// One whole answer with `status` arrived on `conn`.
    fn answered(&mut self, ctx: &mut Context<'_, (), Tick>, conn: ConnId, status: u16) {
        let now = ctx.now();
        let Some(sent) = self
            .conns
            .get_mut(conn)
            .and_then(|c| c.inflight.pop_front())
        else {
            self.report.errors += 1; // an answer to nothing sent
            return;
        };
        if (200..400).contains(&status) {
            self.report.success(sent, now);
            self.share.answered();
        } else {
            self.report.errors += 1;
            if self.report.errors <= 3 {
                warn!("answer {status} from {}", self.cfg.addr);
            }
        }
        if !self.share.stopping() {
            self.send_one(ctx, conn);
        }
    }
}

impl Handler for HttpLoad {
    type Message = ();
    type Timer = Tick;

    fn on_start(&mut self, ctx: &mut Context<'_, (), Tick>) {
        for _ in 0..self.share.my_conns {
            self.open(ctx);
        }
        self.share.begin(ctx, self.cfg.duration);
    }

    fn on_connect(&mut self, ctx: &mut Context<'_, (), Tick>, conn: ConnId) {
        for _ in 0..self.cfg.pipeline {
            self.send_one(ctx, conn);
        }
    }

    fn on_data(&mut self, ctx: &mut Context<'_, (), Tick>, conn: ConnId, data: &[u8]) -> usize {
        let mut used = 0;
        while used < data.len() {
            let Some(c) = self.conns.get_mut(conn) else {
                return data.len();
            };
            if let Some((status, body)) = c.body.as_mut() {
                match body.advance(&data[used..], None) {
                    Ok(n) => used += n,
                    Err(e) => {
                        warn!("bad answer body from {}: {e}", self.cfg.addr);
                        ctx.abort(conn);
                        return data.len();
                    }
                }
                if !body.is_done() {
                    return used;
                }
                let status = *status;
                c.body = None;
                self.answered(ctx, conn, status);
                continue;
            }
            match http1::parse_response_head_into(&mut self.head, &data[used..], MAX_HEAD, "GET") {
                Ok(Some(n)) => {
                    used += n;
                    let status = self.head.status;
                    if self.head.body == http1::BodyKind::UntilClose {
                        // An answer only the close ends cannot be timed per request here.
                        warn!("{} answered without a length; closing", self.cfg.addr);
                        ctx.abort(conn);
                        return data.len();
                    }
                    c.body = Some((status, BodyReader::new(self.head.body, u64::MAX)));
                }
                Ok(None) => return used,
                Err(e) => {
                    warn!("bad answer from {}: {e}", self.cfg.addr);
                    ctx.abort(conn);
                    return data.len();
                }
            }
        }
        // A head that ends exactly at the end of the data, with no body to wait for.
        if let Some(c) = self.conns.get_mut(conn) {
            if let Some((status, body)) = &c.body {
                if body.is_done() {
                    let status = *status;
                    c.body = None;
                    self.answered(ctx, conn, status);
                }
            }
        }
        used
    }

    fn on_timer(&mut self, ctx: &mut Context<'_, (), Tick>, tick: Tick) {
        let open = match tick {
            Tick::End => self.conns.iter().filter(|(c, _)| ctx.is_open(*c)).count() as u64,
            Tick::Publish => 0, // not used
            Tick::Reopen => {
                if !self.share.stopping() {
                    self.open(ctx);
                }
                return;
            }
        };
        self.share.on_tick(ctx, tick, &mut self.report, open);
    }

    fn on_close(&mut self, ctx: &mut Context<'_, (), Tick>, conn: ConnId, reason: CloseReason) {
        let Some(c) = self.conns.remove(conn) else {
            return;
        };
        if self.share.stopping() {
            return;
        }
        let unusable = matches!(reason, CloseReason::ConnectFailed(_));
        self.report.errors += c.inflight.len() as u64 + u64::from(unusable);
        if self
            .share
            .lost(ctx, &mut self.report, self.cfg.addr, &reason)
        {
            self.open(ctx);
        }
    }
}
