//! Ping/pong round trips over loopback against test-server's frame service running in-process
//! on one engine loop. Criterion's `thrpt` line is the RPS. For the figures quoted in
//! docs/BENCHMARKS.md (50 connections, pinned cores, against Redis), use the `loadgen` binary.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::Server;
use protocol::wire::{self, MessageType, Operation, Ping};
use test_server::{FrameService, ServiceConfig};

/// `iters` pings on one connection, `depth` in flight; returns the time taken.
fn round_trips(addr: std::net::SocketAddr, iters: u64, depth: u64) -> Duration {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let one = wire::to_frame(&wire::message(
        MessageType::Request,
        Operation::Ping,
        1,
        &Ping {
            payload: Vec::new().into(),
        },
    ));
    let burst: Vec<u8> = one
        .iter()
        .copied()
        .cycle()
        .take(one.len() * depth as usize)
        .collect();
    let mut buf = vec![0u8; 64 * 1024];
    // Replies are fixed-size apart from the timestamp varint, so count frames, not bytes.
    let start = Instant::now();
    let mut done = 0u64;
    let mut pending = Vec::new();
    while done < iters {
        let n = depth.min(iters - done);
        s.write_all(&burst[..one.len() * n as usize])
            .expect("write");
        let mut got = 0;
        while got < n {
            let r = s.read(&mut buf).expect("read");
            assert!(r > 0, "server closed");
            pending.extend_from_slice(&buf[..r]);
            let mut at = 0;
            while let wire::Next::Frame(_, used) = wire::next_frame(&pending[at..], 1 << 20) {
                at += used;
                got += 1;
            }
            pending.drain(..at);
        }
        done += n;
    }
    start.elapsed()
}

fn pingpong(c: &mut Criterion) {
    let server: Server<FrameService> = Server::new(
        engine::Config::builder()
            .threads(1)
            .build()
            .expect("a valid engine config"),
    )
    .and_then(|s| s.listen("127.0.0.1:0".parse().expect("addr")))
    .expect("server");
    let addr = server.local_addrs()[0];
    let handle = server.handle();
    let t =
        std::thread::spawn(move || server.run(|_| test_server::service(ServiceConfig::default())));

    let mut g = c.benchmark_group("pingpong");
    g.throughput(Throughput::Elements(1));
    for depth in [1u64, 16] {
        g.bench_function(format!("1 conn, pipeline {depth}"), |b| {
            b.iter_custom(|iters| round_trips(addr, iters, depth))
        });
    }
    g.finish();
    handle.stop();
    let _ = t.join();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = pingpong
}
criterion_main!(benches);
