//! The timer wheel at 100k sessions: arming, re-arming (cancel + insert) and expiring.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::timer::TimerWheel;

const SESSIONS: u64 = 100_000;

fn wheel(c: &mut Criterion) {
    let mut g = c.benchmark_group("timer_wheel_100k");
    g.throughput(Throughput::Elements(SESSIONS));
    // Every session arms a deadline spread over 0–60 s, as idle timeouts would be.
    g.bench_function("insert", |b| {
        b.iter(|| {
            let mut w = TimerWheel::new();
            for i in 0..SESSIONS {
                black_box(w.insert(i * 60_000 / SESSIONS + 1, i));
            }
            w
        })
    });
    g.bench_function("rearm (cancel + insert)", |b| {
        let mut w = TimerWheel::new();
        let mut keys: Vec<_> = (0..SESSIONS)
            .map(|i| w.insert(i * 60_000 / SESSIONS + 1, i))
            .collect();
        let mut shift = 0;
        b.iter(|| {
            shift += 1;
            for (i, k) in keys.iter_mut().enumerate() {
                w.cancel(*k);
                *k = w.insert(
                    (i as u64 * 60_000 / SESSIONS + 1 + shift) % 60_000 + 1,
                    i as u64,
                );
            }
        })
    });
    g.bench_function("expire all over 60 s of 1 ms ticks", |b| {
        b.iter_batched(
            || {
                let mut w = TimerWheel::new();
                for i in 0..SESSIONS {
                    w.insert(i * 60_000 / SESSIONS + 1, i);
                }
                w
            },
            |mut w| {
                let mut out = Vec::new();
                for tick in 1..=60_000 {
                    w.expire(tick, &mut out);
                    out.clear();
                }
                w
            },
            criterion::BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, wheel);
criterion_main!(benches);
