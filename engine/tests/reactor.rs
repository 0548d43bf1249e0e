//! The engine's contract, proven with small purpose-built handlers on real loopback sockets:
//! backpressure and the hard cap, timeouts, timers, the waker, outbound connections and
//! graceful shutdown. (Input hints and limits: `input.rs`; TLS: `tls.rs`; panics: `panics.rs`.)

#[path = "support/running.rs"]
mod running;

use std::io::{ErrorKind as IoKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::{CloseReason, ConnId, Context, ErrorKind, Handler};
use running::{eventually, start, WAIT};

type Reasons = Arc<Mutex<Vec<CloseReason>>>;

fn read_all(mut s: &TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == IoKind::ConnectionReset => return out,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// Echoes input; on the byte `F` pushes 64 KiB blocks until the engine refuses.
struct Flooder {
    reasons: Reasons,
    sends_before_refusal: Arc<Mutex<Option<usize>>>,
}

impl Handler for Flooder {
    type Message = ();
    type Timer = ();
    fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
        if data.contains(&b'F') {
            let block = vec![b'x'; 64 * 1024];
            for i in 0..10_000 {
                if ctx.send(conn, &block).is_err() {
                    *self.sends_before_refusal.lock().unwrap() = Some(i);
                    break;
                }
            }
        } else {
            let _ = ctx.send(conn, data);
        }
        data.len()
    }
    fn on_close(&mut self, _: &mut Context<'_, ()>, _: ConnId, reason: CloseReason) {
        self.reasons.lock().unwrap().push(reason);
    }
}

#[test]
fn a_peer_that_never_reads_hits_the_hard_cap_and_is_closed_while_others_are_served() {
    let reasons = Reasons::default();
    let sends = Arc::new(Mutex::new(None));
    let (r, s) = (reasons.clone(), sends.clone());
    let srv = start(
        engine::Config::builder()
            .threads(1)
            .write_hard_cap(1 << 20)
            .build()
            .expect("a valid engine config"),
        move |_| Flooder {
            reasons: r.clone(),
            sends_before_refusal: s.clone(),
        },
    );
    let mut sink = TcpStream::connect(srv.addr).unwrap();
    sink.write_all(b"F").unwrap();
    eventually("the flooded peer is closed", || {
        !reasons.lock().unwrap().is_empty()
    });
    assert_eq!(reasons.lock().unwrap()[0], CloseReason::Overflow);
    // The queue never held more than the cap: 16 blocks of 64 KiB fit in 1 MiB, the 17th not.
    assert_eq!(*sends.lock().unwrap(), Some(16));
    assert_eq!(srv.handle.stats().error(ErrorKind::Overflow), 1);
    let mut other = TcpStream::connect(srv.addr).unwrap();
    other.write_all(b"hello").unwrap();
    let mut buf = [0u8; 5];
    other.set_read_timeout(Some(WAIT)).unwrap();
    other.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
}

/// Echo with close reasons recorded.
struct Echo {
    reasons: Reasons,
}

impl Handler for Echo {
    type Message = ();
    type Timer = ();
    fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
        let _ = ctx.send(conn, data);
        data.len()
    }
    fn on_close(&mut self, _: &mut Context<'_, ()>, _: ConnId, reason: CloseReason) {
        self.reasons.lock().unwrap().push(reason);
    }
}

#[test]
fn a_pipelining_peer_that_never_reads_stalls_reading_then_is_closed_by_the_write_timeout() {
    let reasons = Reasons::default();
    let r = reasons.clone();
    let srv = start(
        engine::Config::builder()
            .threads(1)
            .write_timeout(Some(Duration::from_millis(300)))
            .build()
            .unwrap(),
        move |_| Echo { reasons: r.clone() },
    );
    let addr = srv.addr;
    // Send 32 MiB to an echo server and never read a byte of the answers.
    let writer = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        let batch = vec![b'p'; 1 << 20];
        let mut sent = 0usize;
        for _ in 0..32 {
            match s.write_all(&batch) {
                Ok(()) => sent += batch.len(),
                Err(_) => break, // closed by the server, or blocked past the timeout
            }
        }
        (sent, s)
    });
    eventually("the stalled peer is closed for its write timeout", || {
        srv.handle.stats().error(ErrorKind::Timeout) == 1
    });
    // Backpressure: the server stopped reading long before 32 MiB arrived.
    let stats = srv.handle.stats();
    assert!(
        stats.bytes_in < 16 << 20,
        "server read {} bytes",
        stats.bytes_in
    );
    assert!(reasons.lock().unwrap().contains(&CloseReason::WriteTimeout));
    // Another peer is served meanwhile.
    let mut other = TcpStream::connect(srv.addr).unwrap();
    other.set_read_timeout(Some(WAIT)).unwrap();
    other.write_all(b"still serving").unwrap();
    let mut back = [0u8; 13];
    other.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"still serving");
    drop(writer.join().unwrap());
}

#[test]
fn the_idle_timeout_closes_a_silent_session() {
    let reasons = Reasons::default();
    let r = reasons.clone();
    let srv = start(
        engine::Config::builder()
            .threads(1)
            .idle_timeout(Some(Duration::from_millis(100)))
            .build()
            .expect("a valid engine config"),
        move |_| Echo { reasons: r.clone() },
    );
    let s = TcpStream::connect(srv.addr).unwrap();
    assert!(read_all(&s).is_empty());
    eventually("close reason recorded", || {
        !reasons.lock().unwrap().is_empty()
    });
    assert_eq!(reasons.lock().unwrap()[0], CloseReason::IdleTimeout);
}

/// Records timer tokens in firing order.
struct Timers {
    fired: Arc<Mutex<Vec<u64>>>,
}

impl Handler for Timers {
    type Message = ();
    type Timer = u64;
    fn on_start(&mut self, ctx: &mut Context<'_, (), u64>) {
        ctx.set_timer(Duration::from_millis(30), 1);
        ctx.set_timer(Duration::from_millis(10), 2);
        let cancelled = ctx.set_timer(Duration::from_millis(15), 99);
        ctx.set_timer(Duration::from_millis(20), 3);
        ctx.set_timer(Duration::from_millis(10), 4);
        assert!(ctx.cancel_timer(cancelled));
    }
    fn on_data(&mut self, _: &mut Context<'_, (), u64>, _: ConnId, data: &[u8]) -> usize {
        data.len()
    }
    fn on_timer(&mut self, ctx: &mut Context<'_, (), u64>, token: u64) {
        let mut f = self.fired.lock().unwrap();
        f.push(token);
        if f.len() == 4 {
            ctx.server().stop();
        }
    }
}

#[test]
fn timers_fire_in_deadline_order_then_insertion_order_and_cancelled_ones_never() {
    let fired = Arc::new(Mutex::new(Vec::new()));
    let f = fired.clone();
    let srv = start(
        engine::Config::builder()
            .threads(1)
            .build()
            .expect("a valid engine config"),
        move |_| Timers { fired: f.clone() },
    );
    srv.join().unwrap();
    assert_eq!(*fired.lock().unwrap(), [2, 4, 3, 1]);
}

/// Hands each request to a worker thread; the answer comes back through the loop's waker.
struct Offload;

impl Handler for Offload {
    type Message = (ConnId, String);
    type Timer = ();
    fn on_data(
        &mut self,
        ctx: &mut Context<'_, Self::Message>,
        conn: ConnId,
        data: &[u8],
    ) -> usize {
        let inbox = ctx.loop_handle();
        let text = String::from_utf8_lossy(data).to_uppercase();
        let loop_thread = std::thread::current().id();
        std::thread::spawn(move || {
            assert_ne!(std::thread::current().id(), loop_thread);
            let _ = inbox.post((conn, text));
        });
        data.len()
    }
    fn on_message(&mut self, ctx: &mut Context<'_, Self::Message>, (conn, text): Self::Message) {
        let _ = ctx.send(conn, text.as_bytes());
        ctx.close(conn);
    }
}

#[test]
fn a_worker_threads_result_reaches_the_loop_through_the_waker() {
    let srv = start(engine::Config::default(), |_| Offload);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.write_all(b"hello").unwrap();
    assert_eq!(read_all(&s), b"HELLO");
}

/// Connects out on start; reports what happened.
struct Dialer {
    targets: Vec<SocketAddr>,
    events: mpsc::Sender<String>,
}

impl Handler for Dialer {
    type Message = ();
    type Timer = ();
    fn on_start(&mut self, ctx: &mut Context<'_, ()>) {
        for t in &self.targets {
            ctx.connect(*t).unwrap();
        }
    }
    fn on_connect(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId) {
        ctx.send(conn, b"ping").unwrap();
    }
    fn on_data(&mut self, _: &mut Context<'_, ()>, _: ConnId, data: &[u8]) -> usize {
        self.events
            .send(format!("data {}", String::from_utf8_lossy(data)))
            .unwrap();
        data.len()
    }
    fn on_close(&mut self, _: &mut Context<'_, ()>, _: ConnId, reason: CloseReason) {
        self.events.send(format!("closed {reason:?}")).unwrap();
    }
}

#[test]
fn outbound_connections_run_on_the_loop_and_failures_reach_on_close() {
    let echo = start(engine::Config::default(), |_| Echo {
        reasons: Reasons::default(),
    });
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (tx, rx) = mpsc::channel();
    let targets = vec![echo.addr, dead];
    let _dialer = start(
        engine::Config::builder()
            .threads(1)
            .build()
            .expect("a valid engine config"),
        move |_| Dialer {
            targets: targets.clone(),
            events: tx.clone(),
        },
    );
    let mut got: Vec<String> = (0..2).map(|_| rx.recv_timeout(WAIT).unwrap()).collect();
    got.sort();
    assert_eq!(
        got,
        ["closed ConnectFailed(ConnectionRefused)", "data ping"]
    );
}

/// Answers `W` after a worker finishes (released by the test), and says `BYE` on shutdown.
struct SlowWork {
    busy: Option<ConnId>,
    received: mpsc::Sender<()>,
    release: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
}

impl Handler for SlowWork {
    type Message = ConnId;
    type Timer = ();
    fn on_data(&mut self, ctx: &mut Context<'_, ConnId>, conn: ConnId, data: &[u8]) -> usize {
        if data.contains(&b'W') {
            self.busy = Some(conn);
            let inbox = ctx.loop_handle();
            let release = self.release.lock().unwrap().take().unwrap();
            std::thread::spawn(move || {
                release.recv().unwrap();
                let _ = inbox.post(conn);
            });
            self.received.send(()).unwrap();
        }
        data.len()
    }
    fn on_message(&mut self, ctx: &mut Context<'_, ConnId>, conn: ConnId) {
        self.busy = None;
        ctx.send(conn, b"DONE").unwrap();
    }
    fn on_shutdown(&mut self, ctx: &mut Context<'_, ConnId>) {
        if let Some(c) = self.busy {
            ctx.send_priority(c, engine::Priority::Critical, b"BYE;")
                .unwrap();
        }
    }
    fn is_busy(&self, conn: ConnId) -> bool {
        self.busy == Some(conn)
    }
}

#[test]
fn graceful_shutdown_notifies_finishes_in_flight_work_refuses_new_peers_and_returns_ok() {
    let (rtx, rrx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let release = Arc::new(Mutex::new(Some(release_rx)));
    let srv = start(
        engine::Config::builder()
            .threads(1)
            .build()
            .expect("a valid engine config"),
        move |_| SlowWork {
            busy: None,
            received: rtx.clone(),
            release: release.clone(),
        },
    );
    let addr = srv.addr;
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"W").unwrap();
    rrx.recv_timeout(WAIT).unwrap(); // the server holds the request
    srv.handle.shutdown();
    let mut bye = [0u8; 4];
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.read_exact(&mut bye).unwrap();
    assert_eq!(&bye, b"BYE;");
    // Listeners are closed: new peers are refused while the old request is still in flight.
    eventually("the listener is gone", || TcpStream::connect(addr).is_err());
    release_tx.send(()).unwrap();
    assert_eq!(read_all(&s), b"DONE");
    srv.join().unwrap();
}

/// Owes every peer one answer, computed on a worker that waits for the test's go-ahead.
struct Owe {
    owed: std::collections::HashSet<ConnId>,
    received: mpsc::Sender<()>,
    release: Arc<Mutex<Option<mpsc::Receiver<()>>>>,
    reasons: Reasons,
}

impl Handler for Owe {
    type Message = ConnId;
    type Timer = ();
    fn on_data(&mut self, ctx: &mut Context<'_, ConnId>, conn: ConnId, data: &[u8]) -> usize {
        self.owed.insert(conn);
        let inbox = ctx.loop_handle();
        let release = self.release.lock().unwrap().take().unwrap();
        std::thread::spawn(move || {
            release.recv().unwrap();
            let _ = inbox.post(conn);
        });
        self.received.send(()).unwrap();
        data.len()
    }
    fn on_message(&mut self, ctx: &mut Context<'_, ConnId>, conn: ConnId) {
        self.owed.remove(&conn);
        // The peer is gone: this send fails, and nothing else will touch the connection.
        assert!(ctx.send(conn, b"late").is_err());
    }
    fn on_close(&mut self, _: &mut Context<'_, ConnId>, _: ConnId, reason: CloseReason) {
        self.reasons.lock().unwrap().push(reason);
    }
    fn is_busy(&self, conn: ConnId) -> bool {
        self.owed.contains(&conn)
    }
}

#[test]
fn a_peer_that_leaves_while_the_handler_owes_it_an_answer_is_closed_once_the_work_completes() {
    let (rtx, rrx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    let release = Arc::new(Mutex::new(Some(release_rx)));
    let reasons = Reasons::default();
    let r = reasons.clone();
    let srv = start(
        engine::Config::builder()
            .threads(1)
            .build()
            .expect("a valid engine config"),
        move |_| Owe {
            owed: Default::default(),
            received: rtx.clone(),
            release: release.clone(),
            reasons: r.clone(),
        },
    );
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.write_all(b"work").unwrap();
    rrx.recv_timeout(WAIT).unwrap();
    drop(s); // the peer leaves with its answer still owed
    release_tx.send(()).unwrap();
    eventually(
        "the session is closed after the owed work completes",
        || !reasons.lock().unwrap().is_empty(),
    );
    assert_eq!(reasons.lock().unwrap()[0], CloseReason::PeerClosed);
    eventually("no connection left", || {
        srv.handle.stats().connections_active == 0
    });
    srv.handle.shutdown();
    srv.join().unwrap();
}

#[test]
fn connections_over_the_limit_get_the_refusal_message_and_a_close_while_others_are_served() {
    let reasons = Reasons::default();
    let r = reasons.clone();
    let srv = start(
        engine::Config::builder()
            .threads(1)
            .limits(engine::Limits {
                max_connections: Some(2),
                ..engine::Limits::default()
            })
            .refuse_message(b"busy\n".to_vec())
            .build()
            .unwrap(),
        move |_| Echo { reasons: r.clone() },
    );
    let held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(srv.addr).unwrap();
            s.set_read_timeout(Some(WAIT)).unwrap();
            // Each is accepted and served before the next connects.
            s.write_all(b"hi").unwrap();
            let mut back = [0u8; 2];
            s.read_exact(&mut back).unwrap();
            s
        })
        .collect();
    let refused = TcpStream::connect(srv.addr).unwrap();
    assert_eq!(read_all(&refused), b"busy\n");
    eventually("the refusal is counted", || {
        srv.handle.stats().error(ErrorKind::RefusedLimit) == 1
    });
    // The two held connections are still served; a place freed is taken again.
    let mut first = &held[0];
    first.write_all(b"again").unwrap();
    let mut back = [0u8; 5];
    first.read_exact(&mut back).unwrap();
    drop(held);
    eventually("both closes seen", || reasons.lock().unwrap().len() == 2);
    let mut next = TcpStream::connect(srv.addr).unwrap();
    next.set_read_timeout(Some(WAIT)).unwrap();
    next.write_all(b"ok").unwrap();
    let mut back = [0u8; 2];
    next.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ok");
}
