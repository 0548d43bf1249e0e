//! HTTP/1.1 load on the same engine as the frame load: keep-alive connections, each with
//! `pipeline` requests in flight (answers come back in order, so the oldest request is the one
//! answered): GETs of one path, or ([`Mix`]) GETs and PUTs spread over many documents. A 2xx or
//! 3xx answer is a success; anything else, an unparsable answer or a request lost with its
//! connection is an error. Same report and last line as [`crate::loadgen`].
//!
//! ```no_run
//! use tools::loadgen::LoadConfig;
//! # fn cfg() -> LoadConfig { unimplemented!() }
//! let report = tools::httpload::run(cfg(), "/docs/example")?;
//! println!("{}", report.last_line());
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::VecDeque;
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use engine::{CloseReason, ConnId, ConnMap, Context, Handler};
use log::warn;
use shared::http1::{self, BodyReader, Head};

use crate::loadgen::{run_loops, LoadConfig, LoopShare, Report, Tick};

/// Largest answer head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Runs GETs of `path` against `cfg.addr` and sums what every loop measured.
pub fn run(cfg: LoadConfig, path: &str) -> std::io::Result<Report> {
    run_mix(
        cfg,
        Mix {
            path: path.to_string(),
            docs: 0,
            put_percent: 0,
        },
    )
}

/// What an HTTP load asks for.
#[derive(Debug, Clone)]
pub struct Mix {
    /// The path to GET; with `docs`, the prefix of the documents' paths (`{path}{i}`).
    pub path: String,
    /// Spread the requests uniformly over this many documents, `{path}0` … `{path}{docs-1}`,
    /// each written first (one PUT apiece, so no GET meets a 404); 0: `path` alone.
    pub docs: u32,
    /// Of the requests, this percentage are PUTs (`{"content":"…"}`) of the chosen document.
    pub put_percent: u8,
}

/// Runs `mix` against `cfg.addr` (the documents written first) and sums what every loop
/// measured.
pub fn run_mix(cfg: LoadConfig, mix: Mix) -> std::io::Result<Report> {
    if mix.docs > 0 {
        if cfg.tls.is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "--docs writes its documents over plain HTTP: not with --tls",
            ));
        }
        store_documents(&cfg, &mix)?;
    }
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: netmod-loadgen\r\n\r\n",
        mix.path, cfg.addr
    )
    .into_bytes();
    let c = cfg.clone();
    run_loops(&cfg, move |id, share| HttpLoad {
        cfg: c.clone(),
        request: request.clone(),
        mix: mix.clone(),
        rng: 0x9E37_79B9_7F4A_7C15 ^ (id as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
        puts: 0,
        conns: ConnMap::default(),
        report: Report::empty(),
        head: Head::default(),
        share,
    })
}

/// A request of the mix into `out`: a GET or a PUT of one of the documents.
fn mixed_request(out: &mut Vec<u8>, mix: &Mix, host: SocketAddr, doc: u32, put: Option<u64>) {
    out.clear();
    let method = if put.is_some() { "PUT" } else { "GET" };
    let _ = write!(
        out,
        "{method} {}{doc} HTTP/1.1\r\nHost: {host}\r\n",
        mix.path
    );
    match put {
        Some(n) => {
            let body_len = r#"{"content":"v"}"#.len() + decimal_len(n);
            let _ = write!(
                out,
                "Content-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n{{\"content\":\"v{n}\"}}"
            );
        }
        None => out.extend_from_slice(b"\r\n"),
    }
}

fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// Writes every document of the mix once, pipelined on one blocking connection.
fn store_documents(cfg: &LoadConfig, mix: &Mix) -> std::io::Result<()> {
    use std::io::{BufRead, BufReader, Read, Write};
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let stream = std::net::TcpStream::connect(cfg.addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut req = Vec::new();
    for chunk in (0..mix.docs).collect::<Vec<_>>().chunks(64) {
        let mut batch = Vec::new();
        for &doc in chunk {
            mixed_request(&mut req, mix, cfg.addr, doc, Some(0));
            batch.extend_from_slice(&req);
        }
        writer.write_all(&batch)?;
        for _ in chunk {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            let status = line.split(' ').nth(1).unwrap_or("");
            if !matches!(status, "200" | "201") {
                return Err(bad(format!("storing the documents: {}", line.trim_end())));
            }
            let mut length = 0usize;
            loop {
                line.clear();
                reader.read_line(&mut line)?;
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                if let Some((k, v)) = l.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        length = v
                            .trim()
                            .parse()
                            .map_err(|_| bad(format!("bad length {v}")))?;
                    }
                }
            }
            let mut body = vec![0u8; length];
            reader.read_exact(&mut body)?;
        }
    }
    Ok(())
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
    /// The one request when the mix has no documents; else the scratch a request is made in.
    request: Vec<u8>,
    mix: Mix,
    /// xorshift64 state: which document, and whether a PUT.
    rng: u64,
    /// PUTs sent by this loop (their contents differ).
    puts: u64,
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
        if self.mix.docs > 0 {
            let r = self.next_random();
            let doc = (r >> 32) as u32 % self.mix.docs;
            let put = ((r & 0xffff) % 100) < u64::from(self.mix.put_percent);
            let n = if put {
                self.puts += 1;
                Some(self.puts)
            } else {
                None
            };
            mixed_request(&mut self.request, &self.mix, self.cfg.addr, doc, n);
        }
        if let Some(c) = self.conns.get_mut(conn) {
            if ctx.send(conn, &self.request).is_ok() {
                c.inflight.push_back(ctx.now());
            }
        }
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
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
