//! Frame codec throughput: encoding and decoding `Message` frames of several sizes.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use protocol::wire::{self, Message, MessageType, Next, Operation, Ping};

fn ping(payload: usize) -> Message {
    wire::message(
        MessageType::Request,
        Operation::Ping,
        42,
        &Ping {
            payload: vec![7u8; payload].into(),
        },
    )
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    for size in [0usize, 1024, 64 * 1024] {
        let msg = ping(size);
        let frame = wire::to_frame(&msg);
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("encode", size), &msg, |b, m| {
            let mut out = Vec::with_capacity(frame.len());
            b.iter(|| {
                out.clear();
                wire::encode(black_box(m), &mut out);
                black_box(out.len())
            })
        });
        g.bench_with_input(BenchmarkId::new("decode", size), &frame, |b, f| {
            b.iter(|| match wire::next_frame(black_box(f), 1 << 20) {
                Next::Frame(body, _) => {
                    black_box(wire::decode(body).map(|m| m.message_id).unwrap_or(0))
                }
                _ => 0,
            })
        });
    }
    // A read buffer full of small pipelined frames, split the way the engine splits it.
    let mut burst = Vec::new();
    for _ in 0..256 {
        wire::encode(&ping(16), &mut burst);
    }
    g.throughput(Throughput::Elements(256));
    g.bench_function("split+decode 256 pipelined", |b| {
        b.iter(|| {
            let mut at = 0;
            let mut n = 0u32;
            while let Next::Frame(body, used) = wire::next_frame(&burst[at..], 1 << 20) {
                n += wire::decode(body).map(|m| m.message_id).unwrap_or(0);
                at += used;
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
