//! The frame protocol against test-server's frame service: ping/pong, correlation, framing
//! edge cases and malformed input.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::Duration;

use common::{start_frame_service, WAIT};
use prost::Message as _;
use protocol::wire::{self, ErrorBody, ErrorCode, Message, MessageType, Operation, Ping};
use tools::client::{ClientError, FrameClient};

fn ping(id: u32, payload: Vec<u8>) -> Message {
    wire::message(
        MessageType::Request,
        Operation::Ping,
        id,
        &Ping {
            payload: payload.into(),
        },
    )
}

fn error_code(m: &Message) -> ErrorCode {
    assert_eq!(
        m.r#type(),
        MessageType::Error,
        "expected an ERROR, got {m:?}"
    );
    ErrorBody::decode(m.data.clone()).unwrap().code()
}

fn payload_of(m: &Message) -> Vec<u8> {
    Ping::decode(m.data.clone()).unwrap().payload.to_vec()
}

#[test]
fn many_concurrent_clients_with_pipelined_pings_get_every_pong_matched_by_id() {
    let srv = start_frame_service(
        engine::Config::builder()
            .threads(2)
            .build()
            .expect("a valid engine config"),
    );
    let addr = srv.addr;
    let clients: Vec<_> = (0..32)
        .map(|c| {
            std::thread::spawn(move || {
                let mut cl = FrameClient::connect(addr, WAIT).unwrap();
                let mut outstanding = HashSet::new();
                let total = 400u32;
                let depth = 16u32;
                let mut sent = 0u32;
                let mut got = 0u32;
                while got < total {
                    // Keep `depth` pings in flight, all written before reading.
                    let mut batch = Vec::new();
                    while sent < total && sent - got < depth {
                        sent += 1;
                        let id = c * 100_000 + sent;
                        wire::encode(&ping(id, id.to_be_bytes().to_vec()), &mut batch);
                        outstanding.insert(id);
                    }
                    cl.send_raw(&batch).unwrap();
                    let m = cl.next_message().unwrap();
                    assert_eq!(m.r#type(), MessageType::Response);
                    assert!(
                        outstanding.remove(&m.message_id),
                        "unexpected or duplicate id {}",
                        m.message_id
                    );
                    assert_eq!(payload_of(&m), m.message_id.to_be_bytes());
                    got += 1;
                }
                assert!(outstanding.is_empty());
                got
            })
        })
        .collect();
    let total: u32 = clients.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, 32 * 400);
    let stats = srv.handle.stats();
    assert_eq!(stats.messages_in, 32 * 400);
    assert_eq!(stats.messages_out, 32 * 400);
}

#[test]
fn a_frame_dribbled_one_byte_per_write_decodes() {
    let srv = start_frame_service(engine::Config::default());
    let mut cl = FrameClient::connect(srv.addr, WAIT).unwrap();
    let frame = wire::to_frame(&ping(5, b"slowly".to_vec()));
    for b in &frame {
        cl.send_raw(std::slice::from_ref(b)).unwrap();
        cl.stream().flush().unwrap();
        std::thread::sleep(Duration::from_millis(1)); // forces separate segments, not timing-asserted
    }
    let m = cl.next_message().unwrap();
    assert_eq!((m.message_id, payload_of(&m)), (5, b"slowly".to_vec()));
}

#[test]
fn many_frames_in_one_write_all_decode_in_order() {
    let srv = start_frame_service(engine::Config::default());
    let mut cl = FrameClient::connect(srv.addr, WAIT).unwrap();
    let mut batch = Vec::new();
    for id in 1..=500u32 {
        wire::encode(&ping(id, vec![id as u8; (id % 50) as usize]), &mut batch);
    }
    cl.send_raw(&batch).unwrap();
    for id in 1..=500u32 {
        let m = cl.next_message().unwrap();
        assert_eq!(m.message_id, id);
        assert_eq!(payload_of(&m), vec![id as u8; (id % 50) as usize]);
    }
}

#[test]
fn a_900_kib_frame_round_trips() {
    let srv = start_frame_service(engine::Config::default());
    let mut cl = FrameClient::connect(srv.addr, WAIT).unwrap();
    let payload: Vec<u8> = (0..900 * 1024).map(|i| (i % 251) as u8).collect();
    let m = cl.ping(&payload).unwrap();
    assert_eq!(payload_of(&m), payload);
    // The connection keeps working with small frames afterwards.
    assert_eq!(payload_of(&cl.ping(b"after").unwrap()), b"after");
}

#[test]
fn a_frame_announcing_more_than_the_maximum_gets_frame_too_large_and_a_close() {
    let srv = start_frame_service(engine::Config::default());
    for announced in [(1u32 << 20) + 1, 0xFFFF_FFFF] {
        let mut cl = FrameClient::connect(srv.addr, WAIT).unwrap();
        cl.send_raw(&announced.to_be_bytes()).unwrap();
        let m = cl.next_message().unwrap();
        assert_eq!(error_code(&m), ErrorCode::FrameTooLarge);
        assert!(
            cl.recv().unwrap().is_none(),
            "the server must close after FRAME_TOO_LARGE"
        );
    }
    // A frame of exactly the maximum is fine (its echo carries a few more header bytes).
    let mut cl = FrameClient::connect(srv.addr, WAIT).unwrap();
    cl.set_max_message_size((1 << 20) + 64);
    let mut n = 1 << 20;
    let mut m = ping(1, vec![7; n]);
    while m.encoded_len() > 1 << 20 {
        n -= 1;
        m = ping(1, vec![7; n]);
    }
    assert_eq!(m.encoded_len(), 1 << 20);
    cl.send(&m).unwrap();
    assert_eq!(cl.next_message().unwrap().message_id, 1);
}

#[test]
fn undecodable_protobuf_gets_bad_message_and_the_server_keeps_serving() {
    let srv = start_frame_service(engine::Config::default());
    let mut bad = FrameClient::connect(srv.addr, WAIT).unwrap();
    let mut other = FrameClient::connect(srv.addr, WAIT).unwrap();
    let mut frame = Vec::new();
    protocol::frame::encode(&mut frame, &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]);
    bad.send_raw(&frame).unwrap();
    let m = bad.next_message().unwrap();
    assert_eq!(error_code(&m), ErrorCode::BadMessage);
    assert_eq!(m.message_id, 0);
    // Framing was intact, so the same connection still works, and so do others.
    assert_eq!(payload_of(&bad.ping(b"still here").unwrap()), b"still here");
    assert_eq!(payload_of(&other.ping(b"fine").unwrap()), b"fine");
}

#[test]
fn random_garbage_is_answered_or_closed_and_others_are_unaffected() {
    let srv = start_frame_service(engine::Config::default());
    let mut other = FrameClient::connect(srv.addr, WAIT).unwrap();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..20 {
        let mut cl = FrameClient::connect(srv.addr, WAIT).unwrap();
        let garbage: Vec<u8> = (0..4096)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        cl.send_raw(&garbage).unwrap();
        // Either ERROR frames and a close, or (if the garbage happens to start a frame that
        // is still incomplete) nothing; never a crash. Reading to a close or a timeout is fine.
        cl.stream()
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        loop {
            match cl.recv() {
                Ok(Some(m)) => {
                    assert_eq!(m.r#type(), MessageType::Error);
                }
                Ok(None) => break,
                Err(ClientError::Io(_)) => break,
                Err(e) => panic!("unexpected: {e}"),
            }
        }
        assert_eq!(payload_of(&other.ping(b"ok").unwrap()), b"ok");
    }
}

#[test]
fn unknown_operations_get_unsupported_with_the_request_id() {
    let srv = start_frame_service(engine::Config::default());
    let mut cl = FrameClient::connect(srv.addr, WAIT).unwrap();
    let mut m = ping(42, vec![]);
    m.op = 999;
    cl.send(&m).unwrap();
    let reply = cl.next_message().unwrap();
    assert_eq!(
        (error_code(&reply), reply.message_id),
        (ErrorCode::Unsupported, 42)
    );
    let mut m = ping(43, vec![]);
    m.r#type = MessageType::Notification as i32;
    cl.send(&m).unwrap();
    let reply = cl.next_message().unwrap();
    assert_eq!(
        (error_code(&reply), reply.message_id),
        (ErrorCode::Unsupported, 43)
    );
}

#[test]
fn a_truncated_frame_then_close_leaves_the_server_healthy() {
    let srv = start_frame_service(engine::Config::default());
    {
        let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
        s.write_all(&[0, 0, 0, 100, 1, 2, 3]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let _ = s.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "no reply to a truncated frame, just a close"
        );
    }
    let mut cl = FrameClient::connect(srv.addr, WAIT).unwrap();
    assert_eq!(payload_of(&cl.ping(b"x").unwrap()), b"x");
}

/// Reads one frame from a raw socket without inflating it.
fn raw_frame(s: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> Message {
    loop {
        if let wire::Next::Frame(body, n) = wire::next_frame(buf, 1 << 20) {
            let m = wire::decode(body).unwrap();
            buf.drain(..n);
            return m;
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn large_payloads_travel_gzip_compressed_both_ways_and_small_ones_plain() {
    use protocol::wire::Compression;
    let srv = start_frame_service(engine::Config::default());
    // Compressible but not trivial: 200 KiB of text-like bytes.
    let big: Vec<u8> = (0..200 * 1024u32)
        .map(|i| b"netmod frames "[(i % 14) as usize] ^ ((i / 4096) as u8 & 1))
        .collect();
    let small = vec![7u8; 1024];

    // Client → server: FrameClient compresses; the server inflates and echoes the payload.
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    let packed = wire::compressed(&ping(1, big.clone())).expect("worth compressing");
    assert_eq!(packed.compression, Compression::Gzip as i32);
    assert!(packed.data.len() < big.len() / 4);
    assert_eq!(payload_of(&c.ping(&big).unwrap()), big);

    // Server → client, seen raw on the wire: the big pong compressed, the small one plain.
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut out = Vec::new();
    wire::encode(&ping(2, big.clone()), &mut out);
    wire::encode(&ping(3, small.clone()), &mut out);
    s.write_all(&out).unwrap();
    let mut buf = Vec::new();
    let mut pong = raw_frame(&mut s, &mut buf);
    assert_eq!(pong.compression, Compression::Gzip as i32, "flag set");
    assert!(
        pong.data.len() < big.len() / 4,
        "{} bytes on the wire",
        pong.data.len()
    );
    wire::decompress(&mut pong, 1 << 20).unwrap();
    assert_eq!(payload_of(&pong), big);
    let plain = raw_frame(&mut s, &mut buf);
    assert_eq!(plain.compression, Compression::None as i32);
    assert_eq!(payload_of(&plain), small);

    // A payload flagged GZIP that does not inflate: BAD_COMPRESSION, and the connection serves on.
    let mut bad = ping(4, vec![1, 2, 3]);
    bad.compression = Compression::Gzip as i32;
    c.send(&bad).unwrap();
    let answer = c.next_message().unwrap();
    assert_eq!(error_code(&answer), ErrorCode::BadCompression);
    assert_eq!(
        (answer.message_id, answer.op()),
        (4, Operation::Ping),
        "the error answers the request by its id"
    );
    // A gzip bomb: inflates past the maximum message size.
    let bomb = {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 4 << 20]).unwrap();
        gz.finish().unwrap()
    };
    let mut b = ping(5, vec![]);
    b.data = bomb.into();
    b.compression = Compression::Gzip as i32;
    c.send(&b).unwrap();
    let answer = c.next_message().unwrap();
    assert_eq!(error_code(&answer), ErrorCode::BadCompression);
    assert_eq!(
        answer.message_id, 5,
        "the error answers the request by its id"
    );
    assert_eq!(payload_of(&c.ping(b"after").unwrap()), b"after");
}

fn start_with_liveness() -> common::Running {
    let live = test_server::Liveness {
        interval: Duration::from_millis(40),
        first: (Duration::from_millis(5), Duration::from_millis(20)),
        timeout: Duration::from_millis(400),
    };
    let svc = test_server::ServiceConfig {
        liveness: Some(live),
        ..Default::default()
    };
    common::start(engine::Config::default(), move |_| {
        test_server::service(svc.clone())
    })
}

#[test]
fn the_server_pings_its_clients_and_drops_one_that_stops_answering() {
    let srv = start_with_liveness();
    // A client that answers every ping stays well past the timeout.
    let mut s = std::net::TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = Vec::new();
    for _ in 0..8 {
        let m = raw_frame(&mut s, &mut buf);
        assert_eq!(
            (m.r#type(), m.op()),
            (MessageType::Request, Operation::Ping)
        );
        s.write_all(&wire::to_frame(&wire::pong(m))).unwrap();
    }
    let mut out = Vec::new();
    wire::encode(&ping(77, b"still here".to_vec()), &mut out);
    s.write_all(&out).unwrap();
    let answer = loop {
        let m = raw_frame(&mut s, &mut buf);
        if m.r#type() == MessageType::Request {
            s.write_all(&wire::to_frame(&wire::pong(m))).unwrap();
            continue;
        }
        break m;
    };
    assert_eq!(
        (answer.message_id, payload_of(&answer)),
        (77, b"still here".to_vec())
    );

    // A client that reads but never answers is disconnected after a ping goes unanswered.
    let mut mute = std::net::TcpStream::connect(srv.addr).unwrap();
    mute.set_read_timeout(Some(WAIT)).unwrap();
    let mut pings = 0;
    let mut chunk = [0u8; 1024];
    let mut mbuf = Vec::new();
    loop {
        match mute.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => mbuf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("expected a close, got {e}"),
        }
        while let wire::Next::Frame(body, n) = wire::next_frame(&mbuf, 1 << 20) {
            let m = wire::decode(body).unwrap();
            assert_eq!(m.op(), Operation::Ping);
            pings += 1;
            mbuf.drain(..n);
        }
    }
    assert!(pings >= 1, "pinged before being dropped");
    // FrameClient answers pings inside its reads, so it stays.
    let mut c = FrameClient::connect(srv.addr, WAIT).unwrap();
    // (Idle 40 ms at a time: longer than the ping interval, for longer than the timeout.)
    for i in 0..12u8 {
        assert_eq!(payload_of(&c.ping(&[i]).unwrap()), [i]);
        std::thread::sleep(Duration::from_millis(40));
    }
}
