//! Unit tests of `pool`.

use super::*;

fn pool(n: u16, s: Strategy) -> Pool {
    let list: Vec<(SocketAddr, u32)> = (0..n)
        .map(|i| (SocketAddr::from(([127, 0, 0, 1], 9000 + i)), 1))
        .collect();
    Pool::new(&list, s, Thresholds { rise: 2, fall: 3 })
}

fn ip() -> IpAddr {
    IpAddr::from([10, 0, 0, 1])
}

#[test]
fn down_and_draining_backends_get_nothing() {
    let p = pool(3, Strategy::RoundRobin);
    let b1 = p.members().backends[1].clone();
    for _ in 0..3 {
        p.traffic_result(&b1, false, "test");
    }
    assert!(!b1.is_healthy());
    p.drain(p.members().backends[2].addr).unwrap();
    for _ in 0..10 {
        assert_eq!(p.select(ip(), |_| None, &[]).unwrap().addr.port(), 9000);
    }
    p.check_result(&b1, true, true, "ok");
    assert!(!b1.is_healthy(), "rise is 2");
    p.check_result(&b1, true, true, "ok");
    assert!(b1.is_healthy());
    assert_eq!(p.reap().len(), 1);
    assert_eq!(p.members().backends.len(), 2);
}

#[test]
fn with_no_healthy_backend_requests_go_to_those_still_answering_their_checks() {
    for s in [
        Strategy::RoundRobin,
        Strategy::LeastConnections,
        Strategy::PowerOfTwo,
        Strategy::WeightedRoundRobin,
        Strategy::ConsistentHash(HashKey::ClientIp),
    ] {
        let p = pool(4, s.clone());
        let b = p.members().backends.clone();
        let fail = |i: usize, answered: bool| {
            for _ in 0..3 {
                p.check_result(&b[i], false, answered, "test");
            }
        };
        fail(0, true); // answers 503: degraded
        fail(1, false); // times out
        fail(2, true);
        // b[2] answers, but is being removed.
        p.drain(b[2].addr).unwrap();
        // b[3] is still healthy: only it is chosen.
        for _ in 0..20 {
            assert_eq!(
                p.select(ip(), |_| None, &[]).unwrap().addr,
                b[3].addr,
                "{s:?}"
            );
        }
        fail(3, false);
        for _ in 0..20 {
            let got = p.select(ip(), |_| None, &[]).map(|b| b.addr);
            assert_eq!(
                got,
                Some(b[0].addr),
                "{s:?}: the answering, not draining one"
            );
        }
        assert!(p.select(ip(), |_| None, &[b[0].addr]).is_none(), "{s:?}");
        fail(0, false);
        assert!(
            p.select(ip(), |_| None, &[]).is_none(),
            "{s:?}: nobody answers"
        );
        // One healthy backend ends it.
        p.check_result(&b[1], true, true, "ok");
        p.check_result(&b[1], true, true, "ok");
        assert_eq!(
            p.select(ip(), |_| None, &[]).unwrap().addr,
            b[1].addr,
            "{s:?}"
        );
    }
}

#[test]
fn a_flapping_backend_needs_more_passing_checks_each_time_until_it_stays_up() {
    let p = pool(1, Strategy::RoundRobin); // rise 2, fall 3
    let b = p.members().backends[0].clone();
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let fall = |now| {
        for _ in 0..3 {
            p.check_result_at(&b, false, "down", now);
        }
        assert!(!b.is_healthy());
    };
    // Passing checks until it is back; how many it took.
    let rise = |now| {
        let mut n = 0;
        while !b.is_healthy() {
            p.check_result_at(&b, true, "ok", now);
            n += 1;
            assert!(n <= 100, "never came back");
        }
        n
    };
    fall(at(0));
    assert_eq!(rise(at(1)), 2, "a first fall: rise");
    fall(at(5));
    assert_eq!(rise(at(6)), 4, "again within the window: twice rise");
    fall(at(10));
    assert_eq!(rise(at(11)), 8);
    fall(at(20));
    assert_eq!(rise(at(21)), 16, "at most MAX_RISE_FACTOR × rise");
    fall(at(30));
    assert_eq!(rise(at(31)), 16);
    // Healthy for longer than the window: a fall is a first fall again.
    fall(at(31) + FLAP_WINDOW);
    assert_eq!(rise(at(100)), 2);
}

#[test]
fn the_retry_budget_is_a_fifth_of_requests() {
    let p = pool(1, Strategy::RoundRobin);
    for _ in 0..100 {
        p.count_request();
    }
    let granted = (0..100).filter(|_| p.take_retry()).count();
    assert_eq!(granted, 30);
}
