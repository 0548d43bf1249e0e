//! Rewriting heads on their way through the proxy (RFC 9110 §7.6): hop-by-hop fields dropped,
//! `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Request-Id` added.

use std::io::Write as _;
use std::net::IpAddr;

use shared::http1::{self, Head};

/// Fields that describe one connection, never forwarded (plus those `Connection` names).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
];

/// The fields a head's `Connection` names, looked up once per head rather than once per field.
#[derive(Clone, Copy)]
enum Listed<'a> {
    None,
    /// The one `Connection` field's value.
    One(&'a [u8]),
    /// Several `Connection` fields (rare): ask the head.
    Several,
}

impl<'a> Listed<'a> {
    fn of(head: &'a Head) -> Self {
        let mut fields = head
            .headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"));
        match (fields.next(), fields.next()) {
            (None, _) => Listed::None,
            (Some((_, v)), None) => Listed::One(v),
            _ => Listed::Several,
        }
    }
}

/// `name` is hop-by-hop in `head` (`listed`: its `Connection` fields).
fn hop_by_hop(head: &Head, listed: Listed<'_>, name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
        || match listed {
            Listed::None => false,
            Listed::One(v) => v
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes())),
            Listed::Several => head.has_token("connection", name),
        }
}

/// Makes request ids: 16 hex digits from splitmix64 over a randomly seeded counter, so ids are
/// unique within a loop and unpredictable across runs, at no system call per request.
#[derive(Debug)]
pub struct RequestIds {
    state: u64,
}

impl RequestIds {
    /// A generator seeded from the system's randomness (the clock if there is none).
    pub fn new() -> Self {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            seed = (t ^ u64::from(std::process::id())).to_le_bytes();
        }
        RequestIds {
            state: u64::from_le_bytes(seed),
        }
    }

    /// The client's id if it sent a sane one (printable, at most 128 bytes), else a new one,
    /// into `out` (cleared first; no allocation once it has room).
    pub fn for_request_into(&mut self, head: &Head, out: &mut String) {
        out.clear();
        match head.header("x-request-id") {
            Some(id)
                if (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic()) =>
            {
                out.push_str(id);
            }
            _ => {
                self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = self.state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^= z >> 31;
                for shift in (0..16).rev() {
                    out.push(char::from(
                        b"0123456789abcdef"[(z >> (shift * 4)) as usize & 15],
                    ));
                }
            }
        }
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Appends the request head as the backend gets it. `upgrade` keeps `Connection: Upgrade` and
/// the `Upgrade` field (a WebSocket handshake); the body framing fields are kept unchanged,
/// since the body is forwarded as it came. `proto` (`http` or `https`) is how the client
/// reached us.
pub fn request_into(
    out: &mut Vec<u8>,
    head: &Head,
    client: IpAddr,
    proto: &str,
    id: &str,
    upgrade: bool,
) {
    let listed = Listed::of(head);
    out.extend_from_slice(head.method().as_bytes());
    out.push(b' ');
    // An absolute-form target goes on in origin form, its authority as the Host
    // (RFC 9112 §3.2.2: it replaces whatever Host the client sent).
    out.extend_from_slice(head.origin_target().as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let authority = head.target_authority();
    if let Some(a) = authority {
        field(out, "Host", a.as_bytes());
    } else if head.header("host").is_none() {
        // An HTTP/1.0 request may come without Host; HTTP/1.1 needs one, empty when the
        // target has no authority (RFC 9112 §3.2).
        field(out, "Host", b"");
    }
    for (name, value) in head.headers() {
        if (authority.is_some() && name.eq_ignore_ascii_case("host"))
            || name.eq_ignore_ascii_case("x-forwarded-for")
            || hop_by_hop(head, listed, name)
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-request-id")
        {
            continue;
        }
        field(out, name, value);
    }
    // The list the client sent (in order, joined), then the client itself.
    out.extend_from_slice(b"X-Forwarded-For: ");
    for (name, value) in head.headers() {
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            out.extend_from_slice(value);
            out.extend_from_slice(b", ");
        }
    }
    let _ = write!(out, "{client}\r\n");
    field(out, "X-Forwarded-Proto", proto.as_bytes());
    field(out, "X-Request-Id", id.as_bytes());
    if upgrade {
        field(out, "Connection", b"Upgrade");
        if let Some(u) = head.header_bytes("upgrade") {
            field(out, "Upgrade", u);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// How the response head is rewritten for the client.
#[derive(Debug, Clone, Copy)]
pub struct ResponseShape {
    /// The client's HTTP minor version.
    pub client_minor: u8,
    /// The client connection closes after this response.
    pub close: bool,
    /// The body is de-chunked on the way (an HTTP/1.0 client cannot read chunks).
    pub dechunk: bool,
}

/// Appends the response head as the client gets it.
pub fn response_into(out: &mut Vec<u8>, head: &Head, shape: ResponseShape, id: &str) {
    let listed = Listed::of(head);
    out.extend_from_slice(if shape.client_minor == 0 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    let _ = write!(out, "{} ", head.status);
    out.extend_from_slice(http1::reason(head.status).as_bytes());
    out.extend_from_slice(b"\r\n");
    let mut has_id = false;
    for (name, value) in head.headers() {
        if hop_by_hop(head, listed, name)
            || (shape.dechunk && name.eq_ignore_ascii_case("transfer-encoding"))
        {
            continue;
        }
        has_id |= name.eq_ignore_ascii_case("x-request-id");
        field(out, name, value);
    }
    if !has_id {
        field(out, "X-Request-Id", id.as_bytes());
    }
    if shape.close {
        field(out, "Connection", b"close");
    } else if shape.client_minor == 0 {
        field(out, "Connection", b"keep-alive");
    }
    out.extend_from_slice(b"\r\n");
}

/// The 101 answer to an upgrade, passed on whole but for the hop-by-hop fields, which the
/// handshake needs back.
pub fn switching(head: &Head) -> Vec<u8> {
    let mut out = b"HTTP/1.1 101 Switching Protocols\r\n".to_vec();
    for (name, value) in head.headers() {
        field(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(head: &Head, client: IpAddr, proto: &str, id: &str, upgrade: bool) -> Vec<u8> {
        let mut out = Vec::new();
        request_into(&mut out, head, client, proto, id, upgrade);
        out
    }

    impl RequestIds {
        fn for_request(&mut self, head: &Head) -> String {
            let mut id = String::new();
            self.for_request_into(head, &mut id);
            id
        }
    }

    fn head(raw: &[u8]) -> Head {
        http1::parse_request_head(raw, 8192).unwrap().unwrap().0
    }

    #[test]
    fn hop_by_hop_fields_go_and_forwarding_fields_come() {
        let h = head(
            b"GET /a?b HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n\
              Keep-Alive: 5\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\nAccept: */*\r\n\r\n",
        );
        let out = String::from_utf8(request(
            &h,
            "127.0.0.9".parse().unwrap(),
            "http",
            "abc",
            false,
        ))
        .unwrap();
        assert!(out.starts_with("GET /a?b HTTP/1.1\r\nHost: x\r\n"), "{out}");
        assert!(out.contains("Accept: */*\r\n"));
        assert!(
            out.contains("X-Forwarded-For: 10.0.0.1, 127.0.0.9\r\n"),
            "{out}"
        );
        assert!(out.contains("X-Forwarded-Proto: http\r\n"));
        assert!(out.contains("X-Request-Id: abc\r\n"));
        for gone in ["Connection", "X-Secret", "Keep-Alive", "https"] {
            assert!(!out.contains(gone), "{gone} in {out}");
        }
    }

    #[test]
    fn the_clients_request_id_is_kept_and_a_missing_one_made() {
        let mut ids = RequestIds::new();
        let with = head(b"GET / HTTP/1.1\r\nHost: t\r\nX-Request-Id: r-1\r\n\r\n");
        assert_eq!(ids.for_request(&with), "r-1");
        let without = head(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        let made: std::collections::HashSet<String> =
            (0..1000).map(|_| ids.for_request(&without)).collect();
        assert_eq!(made.len(), 1000, "no repeats");
        assert!(made.iter().all(|id| id.len() == 16));
    }

    #[test]
    fn an_absolute_form_target_goes_on_in_origin_form_with_its_authority_as_host() {
        let h = head(b"GET http://127.0.0.1:8000/docs/a?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        let out = String::from_utf8(request(
            &h,
            "127.0.0.9".parse().unwrap(),
            "http",
            "i",
            false,
        ))
        .unwrap();
        assert!(
            out.starts_with("GET /docs/a?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n"),
            "{out}"
        );
        assert!(!out.contains("other"), "{out}");
    }
}
