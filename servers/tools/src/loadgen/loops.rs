//! The loops of one run: what each shares with the others (its connections, where its report
//! goes, its progress slot, the run's clock), their timers, and [`run_loops`], which starts them
//! and sums what they measured. Frame loads ([`super::run`]) and HTTP loads
//! ([`crate::httpload`]) both run on it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use engine::{Context, Handler, Server};

use super::progress::{Progress, ProgressLine, PUBLISH_EVERY};
use super::{LoadConfig, Report};

/// What a loop's timers are for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Tick {
    /// The end of the run.
    End,
    /// Publish the totals for the progress line.
    Publish,
    /// Open a connection in place of one lost (see [`LoopShare::lost`]).
    Reopen,
}

/// Lost connections each loop logs one by one; the rest are counted, and summed up once at
/// the end of the run ([`Report::lost`]).
const LOSSES_LOGGED: u64 = 3;

/// What each loop of a run shares with the others and with [`run_loops`].
pub(crate) struct LoopShare {
    /// Connections this loop opens.
    pub my_conns: usize,
    /// Where the loop leaves its report when the run ends.
    pub results: Arc<Mutex<Vec<Report>>>,
    /// Its slot for the progress line, when one is shown.
    pub progress: Option<Arc<Progress>>,
    /// When this loop began.
    started: Instant,
    /// The run's time is up: answers are no longer followed by new requests.
    stopping: bool,
    /// How long to wait before replacing a lost connection: from 10 ms after the second loss
    /// in a row, doubling up to 1 s, back to none after an answer. A server that is down or
    /// refuses connections is then tried a few times a second, not in a tight loop.
    reconnect: shared::backoff::Backoff,
}

impl LoopShare {
    /// Starts the loop's clock and timers (the end of the run; publishing if a line is shown).
    pub fn begin(&mut self, ctx: &mut Context<'_, (), Tick>, duration: Duration) {
        self.started = ctx.now();
        ctx.set_timer(duration, Tick::End);
        if self.progress.is_some() {
            ctx.set_timer(PUBLISH_EVERY, Tick::Publish);
        }
    }

    /// True once the run's time is up.
    pub fn stopping(&self) -> bool {
        self.stopping
    }

    /// An answer arrived: the server is there, a lost connection is replaced at once again.
    pub fn answered(&mut self) {
        self.reconnect.reset();
    }

    /// A connection to `addr` was lost (`why`) before the end of the run: counted in
    /// `report`, logged if among the loop's first few, and true when it should be replaced
    /// now; else a [`Tick::Reopen`] is set for later.
    pub fn lost(
        &mut self,
        ctx: &mut Context<'_, (), Tick>,
        report: &mut Report,
        addr: std::net::SocketAddr,
        why: &dyn std::fmt::Display,
    ) -> bool {
        report.lost += 1;
        if report.lost <= LOSSES_LOGGED {
            log::warn!("connection to {addr} closed: {why}");
        }
        report.last_loss = why.to_string();
        if self.reconnect.attempts() == 0 {
            let _ = self.reconnect.next_delay();
            return true;
        }
        ctx.set_timer(self.reconnect.next_delay(), Tick::Reopen);
        false
    }

    /// A timer fired: publishes `report`'s totals for the progress line, or at the end of the
    /// run hands the report in (with `open`, the connections still usable; read at the end
    /// only) and ends the loop.
    pub fn on_tick(
        &mut self,
        ctx: &mut Context<'_, (), Tick>,
        tick: Tick,
        report: &mut Report,
        open: u64,
    ) {
        match tick {
            Tick::Publish if !self.stopping => {
                if let Some(p) = &self.progress {
                    p.publish(report.ok, report.errors);
                    ctx.set_timer(PUBLISH_EVERY, Tick::Publish);
                }
            }
            Tick::Publish | Tick::Reopen => {}
            Tick::End => {
                self.stopping = true;
                let mut done = std::mem::replace(report, Report::empty());
                done.elapsed = ctx.now().saturating_duration_since(self.started);
                done.open = open;
                if let Ok(mut r) = self.results.lock() {
                    r.push(done);
                }
                ctx.exit();
            }
        }
    }
}

/// Runs one load of `cfg.conns` connections on loops made by `make` (given the loop's index and
/// its share), with the progress line when asked, and sums what every loop measured.
pub(crate) fn run_loops<H, F>(cfg: &LoadConfig, make: F) -> std::io::Result<Report>
where
    H: Handler<Message = (), Timer = Tick>,
    F: Fn(usize, LoopShare) -> H + Send + Sync + 'static,
{
    let threads = cfg.threads.clamp(1, cfg.conns.max(1));
    // Client sockets keep the kernel's buffer auto-tuning.
    let engine_cfg = engine::Config::builder()
        .threads(threads)
        .socket(engine::SocketOptions {
            recv_buffer: None,
            send_buffer: None,
            ..engine::SocketOptions::default()
        })
        .build()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // Thousands of connections need more than the usual soft limit of 1024 descriptors.
    if let Err(e) = engine::raise_open_file_limit() {
        log::warn!("cannot raise the open-file limit ({e})");
    }
    let server: Server<H> = Server::new(engine_cfg)?;
    let results = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::clone(&results);
    let slots: Vec<Arc<Progress>> = (0..threads).map(|_| Arc::default()).collect();
    let line = cfg
        .progress
        .then(|| ProgressLine::start(slots.clone(), cfg.duration));
    let (conns, progress) = (cfg.conns, cfg.progress);
    let run = server.run(move |i| {
        make(
            i,
            LoopShare {
                my_conns: conns / threads + usize::from(i < conns % threads),
                results: Arc::clone(&shared),
                progress: progress.then(|| Arc::clone(&slots[i])),
                started: Instant::now(),
                stopping: false,
                reconnect: shared::backoff::Backoff::new(
                    Duration::from_millis(10),
                    Duration::from_secs(1),
                    0.2,
                ),
            },
        )
    });
    drop(line); // erased before the report is printed
    run?;
    let mut total = Report::empty();
    let parts = results
        .lock()
        .map(|mut r| std::mem::take(&mut *r))
        .unwrap_or_default();
    for r in parts {
        total.ok += r.ok;
        total.errors += r.errors;
        total.elapsed = total.elapsed.max(r.elapsed);
        total.open += r.open;
        total.cycles += r.cycles;
        total.lost += r.lost;
        if !r.last_loss.is_empty() {
            total.last_loss = r.last_loss;
        }
        let _ = total.latency_us.add(&r.latency_us);
    }
    Ok(total)
}
