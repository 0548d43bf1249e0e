//! A blocking HTTP/1.1 client for tests: raw requests in, parsed responses out.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::WAIT;

/// One response: status, headers (lower-case names), body.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response from `s` (Content-Length framed), keeping extra bytes in `buf`.
pub fn read_resp(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Resp> {
    read_framed(s, buf, false)
}

/// Reads the answer to a HEAD request: its head only, whatever its Content-Length says (RFC
/// 9110 §9.3.2); any bytes after it stay in `buf`, where a body sent by mistake would show.
pub fn read_head_resp(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Resp> {
    read_framed(s, buf, true)
}

fn read_framed(s: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> Option<Resp> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let mut lines = head.split("\r\n");
            let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let len: usize = headers
                .iter()
                .find(|(n, _)| n == "content-length")
                .map_or(0, |(_, v)| v.parse().unwrap());
            let len = if head_only { 0 } else { len };
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
            buf.drain(..end + 4 + len);
            return Some(Resp {
                status,
                headers,
                body,
            });
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

pub fn call(addr: SocketAddr, raw: &str) -> Resp {
    let mut s = connect(addr);
    s.write_all(raw.as_bytes()).unwrap();
    read_resp(&mut s, &mut Vec::new()).expect("a response")
}

/// `netmod_doc_cache_hits_total` of the front at `addr`: GETs answered from its document cache.
pub fn cache_hits(addr: SocketAddr) -> u64 {
    let m = call(addr, "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    m.body
        .lines()
        .find_map(|l| l.strip_prefix("netmod_doc_cache_hits_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the hit counter in /metrics")
}
