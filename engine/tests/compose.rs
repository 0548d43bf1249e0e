//! A loop composed of services: each listener and each kind of outbound connection has its own
//! handler type, they share a hub, and they reach each other by type — no routing by "who owns
//! this connection".

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use engine::compose::{Composed, Hub, Parts, Service, Services};
use engine::{Config, ConnId, Context, Kind, Server};

#[path = "support/running.rs"]
mod running;
use running::WAIT;

const UPSTREAM: Kind = Kind(1);

/// Shared by the services: the upstream address and a count of answered requests.
struct Shared {
    upstream: SocketAddr,
    answered: u64,
    /// Timers that fired (loop-wide events go to the hub).
    ticks: u64,
    /// Public connections closed (the close reaches the connection's own service).
    closed: u64,
}

type Ctx<'a> = Context<'a, (), Tick>;

#[derive(Debug, Clone, Copy)]
struct Tick;

impl Hub for Shared {
    type Message = ();
    type Timer = Tick;

    fn on_start(&mut self, services: &mut Services<Self>, ctx: &mut Ctx<'_>) {
        // The hub reaches a service by type.
        assert!(services.get::<Public>().is_some());
        ctx.set_timer(std::time::Duration::from_millis(1), Tick);
    }

    fn on_timer(&mut self, _services: &mut Services<Self>, _ctx: &mut Ctx<'_>, Tick: Tick) {
        self.ticks += 1;
    }
}

/// The public listener: each line goes upstream; the answer comes back through `answer`.
#[derive(Default)]
struct Public {
    waiting: Vec<ConnId>,
}

impl Public {
    fn answer(&mut self, ctx: &mut Ctx<'_>, line: &[u8]) {
        if !self.waiting.is_empty() {
            let conn = self.waiting.remove(0);
            let _ = ctx.send(conn, line);
        }
    }
}

impl Service<Shared> for Public {
    fn on_close(
        &mut self,
        parts: &mut Parts<'_, Shared>,
        _ctx: &mut Ctx<'_>,
        conn: ConnId,
        _reason: engine::CloseReason,
    ) {
        self.waiting.retain(|&c| c != conn);
        parts.hub.closed += 1;
    }

    fn on_data(
        &mut self,
        parts: &mut Parts<'_, Shared>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        data: &[u8],
    ) -> usize {
        let up = parts
            .services
            .get::<Upstream>()
            .expect("the upstream service");
        let mut used = 0;
        while let Some(end) = data[used..].iter().position(|&b| b == b'\n') {
            self.waiting.push(conn);
            up.forward(ctx, &data[used..used + end + 1]);
            used += end + 1;
        }
        used
    }
}

/// The outbound connection to the upstream, opened at start.
#[derive(Default)]
struct Upstream {
    conn: Option<ConnId>,
}

impl Upstream {
    fn forward(&mut self, ctx: &mut Ctx<'_>, line: &[u8]) {
        if let Some(up) = self.conn {
            let _ = ctx.send(up, line);
        }
    }
}

impl Service<Shared> for Upstream {
    fn on_start(&mut self, parts: &mut Parts<'_, Shared>, ctx: &mut Ctx<'_>) {
        let up = ctx.connect(parts.hub.upstream).expect("connect upstream");
        ctx.set_kind(up, UPSTREAM);
        self.conn = Some(up);
    }

    fn on_data(
        &mut self,
        parts: &mut Parts<'_, Shared>,
        ctx: &mut Ctx<'_>,
        _conn: ConnId,
        data: &[u8],
    ) -> usize {
        let mut used = 0;
        while let Some(end) = data[used..].iter().position(|&b| b == b'\n') {
            let line = &data[used..used + end + 1];
            parts.hub.answered += 1;
            parts
                .services
                .get::<Public>()
                .expect("the public service")
                .answer(ctx, line);
            used += end + 1;
        }
        used
    }
}

/// The admin listener: the hub's counters.
struct Admin;

impl Service<Shared> for Admin {
    fn on_data(
        &mut self,
        parts: &mut Parts<'_, Shared>,
        ctx: &mut Ctx<'_>,
        conn: ConnId,
        data: &[u8],
    ) -> usize {
        // The service being called is not reachable as a sibling; the others are.
        assert!(parts.services.get::<Admin>().is_none());
        assert!(parts.services.get::<Upstream>().is_some());
        let ticks = if parts.hub.ticks > 0 {
            "ticked"
        } else {
            "no tick"
        };
        let (answered, closed) = (parts.hub.answered, parts.hub.closed);
        let _ = ctx.send(
            conn,
            format!("answered {answered} {ticks} closed {closed}\n").as_bytes(),
        );
        data.len()
    }
}

fn line(s: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    s.read_line(&mut l).unwrap();
    l
}

#[test]
fn each_listener_and_outbound_kind_has_its_own_service_sharing_a_hub() {
    let _ = env_logger::builder().is_test(true).try_init();
    // The upstream: upper-cases lines.
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        let (s, _) = upstream.accept().unwrap();
        let mut out = s.try_clone().unwrap();
        for l in BufReader::new(s).lines() {
            let Ok(l) = l else { return };
            if out
                .write_all(format!("{}\n", l.to_uppercase()).as_bytes())
                .is_err()
            {
                return;
            }
        }
    });

    let mut server = Server::new(Config::builder().threads(1).build().unwrap()).unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let public = server.add_listener(any).unwrap();
    let admin = server.add_listener(any).unwrap();
    let _unserved = server.add_listener(any).unwrap();
    let addrs = server.local_addrs().to_vec();
    let handle = server.handle();
    let thread = std::thread::spawn(move || {
        server.run(move |_| {
            Composed::new(Shared {
                upstream: up_addr,
                answered: 0,
                ticks: 0,
                closed: 0,
            })
            .listener(public, Public::default())
            .listener(admin, Admin)
            .outbound(UPSTREAM, Upstream::default())
        })
    });

    let c = TcpStream::connect(addrs[0]).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let mut r = BufReader::new(c.try_clone().unwrap());
    (&c).write_all(b"hello\nworld\n").unwrap();
    assert_eq!(line(&mut r), "HELLO\n");
    assert_eq!(line(&mut r), "WORLD\n");

    let a = TcpStream::connect(addrs[1]).unwrap();
    a.set_read_timeout(Some(WAIT)).unwrap();
    let mut ra = BufReader::new(a.try_clone().unwrap());
    (&a).write_all(b"?\n").unwrap();
    assert!(line(&mut ra).starts_with("answered 2 "));
    // The hub's timer (loop-wide events go to the hub) fires within the wait.
    running::eventually("the hub's timer fired", || {
        (&a).write_all(b"?\n").unwrap();
        line(&mut ra) == "answered 2 ticked closed 0\n"
    });

    // A listener no service serves: its connections are closed, the loop goes on.
    let mut u = TcpStream::connect(addrs[2]).unwrap();
    u.set_read_timeout(Some(WAIT)).unwrap();
    let _ = u.write_all(b"x\n");
    let mut buf = [0u8; 1];
    assert!(matches!(u.read(&mut buf), Ok(0) | Err(_)));
    (&c).write_all(b"again\n").unwrap();
    assert_eq!(line(&mut r), "AGAIN\n");
    drop(r);
    drop(c);
    running::eventually("the public service saw its connection close", || {
        (&a).write_all(b"?\n").unwrap();
        line(&mut ra).ends_with("closed 1\n")
    });

    handle.stop();
    thread.join().unwrap().unwrap();
}
