//! HTTP/1.1 message framing, shared by test-server's HTTP front and the proxy: requests parsed
//! with `httparse` under head and body limits (Content-Length or chunked bodies), responses
//! written with their length.
//!
//! The parser never allocates for a request it has not fully received, refuses what could
//! desynchronise a keep-alive connection (both Content-Length and Transfer-Encoding, differing
//! lengths, a transfer coding other than chunked), and reports each refusal with the status to
//! answer.
//!
//! ```
//! use shared::http1::{parse_request, Limits, Parsed};
//! let raw = b"GET /docs/a HTTP/1.1\r\nHost: x\r\n\r\n";
//! let Ok(Parsed::Request(req, used)) = parse_request(raw, Limits::default()) else { panic!() };
//! assert_eq!((req.method(), req.target(), used), ("GET", "/docs/a", raw.len()));
//! assert!(req.keep_alive());
//! ```
//!
//! Heads are [`Head`] (`head.rs`), bodies are read by [`BodyReader`] (`body.rs`), responses
//! written by [`write_response`] (`response.rs`).

mod body;
mod head;
mod response;

pub use body::BodyReader;
#[cfg(test)]
use body::MAX_LINE;
use head::absolute_form;
pub use head::{Expectation, Head};
pub use response::{error_body, plain_http_on_tls_reply, reason, write_response};

/// Size limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line and headers together (8192 by default; over it: 431).
    pub max_head: usize,
    /// Body (over it: 413).
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head: 8192,
            max_body: 1024 * 1024,
        }
    }
}

/// How a message's body is delimited (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyKind {
    /// No body.
    #[default]
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the connection closes (responses only).
    UntilClose,
}

/// Fields a proxy adds on the way (`X-Forwarded-For`, …): they do not count against the head
/// limit, up to [`FORWARDING_ROOM`] bytes, so that a head a server takes directly also passes
/// through a proxy in front of it. (Fields every client sends, such as `Host`, count: a head
/// over the limit stays a 431 however it reaches the server.)
const FORWARDING_FIELDS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
    "forwarded",
    "via",
];

/// Bytes of forwarding fields a head may carry beyond the head limit.
pub const FORWARDING_ROOM: usize = 1024;

fn is_forwarding(name: &[u8]) -> bool {
    FORWARDING_FIELDS
        .iter()
        .any(|f| f.as_bytes().eq_ignore_ascii_case(name))
}

/// Bytes the forwarding fields take among the whole header lines at the front of `head`.
fn forwarding_bytes(head: &[u8]) -> usize {
    head.split_inclusive(|&b| b == b'\n')
        .skip(1)
        .filter(|line| line.ends_with(b"\n"))
        .filter(|line| {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            is_forwarding(name)
        })
        .map(<[u8]>::len)
        .sum()
}

/// A request target in a form a server accepts (RFC 9112 §3.2): origin form (`/path`),
/// absolute form (`http://host/path`), `*` for OPTIONS, authority form for CONNECT.
fn valid_target(method: &str, target: &str) -> bool {
    target.starts_with('/')
        || absolute_form(target).is_some_and(|(authority, _)| !authority.is_empty())
        || (target == "*" && method == "OPTIONS")
        || (method == "CONNECT" && !target.is_empty())
}

/// Checks the `Host` fields (RFC 9112 §3.2): exactly one in HTTP/1.1 (none or one in
/// HTTP/1.0), holding one `host[:port]` — a list, white space or a path is refused.
fn check_host(headers: &[httparse::Header<'_>], minor: u8) -> Result<(), HttpError> {
    let mut hosts = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(HttpError::Bad("more than one Host field".into()));
    }
    let Some(host) = first else {
        return if minor == 0 {
            Ok(())
        } else {
            Err(HttpError::Bad("HTTP/1.1 request without Host".into()))
        };
    };
    // reg-name / IP-literal characters and a port: RFC 3986 less the comma, which would make
    // it a list.
    let ok = host
        .value
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+;=:[]%".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(HttpError::Bad("invalid Host field".into()))
    }
}

/// A whole request: its head and its body (de-chunked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// Method, target, headers.
    pub head: Head,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl std::ops::Deref for Request {
    type Target = Head;

    fn deref(&self) -> &Head {
        &self.head
    }
}

/// Why a message was refused, with the status to answer (the connection closes after it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// 431.
    #[error("request head over {0} bytes")]
    HeadTooLarge(usize),
    /// 414: the request line alone is over the head limit.
    #[error("request line over {0} bytes")]
    UriTooLong(usize),
    /// 413.
    #[error("request body over {0} bytes")]
    BodyTooLarge(usize),
    /// 400.
    #[error("bad request: {0}")]
    Bad(String),
    /// 501.
    #[error("transfer coding not supported: {0}")]
    NotImplemented(String),
}

impl HttpError {
    /// The status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge(_) => 431,
            HttpError::UriTooLong(_) => 414,
            HttpError::BodyTooLarge(_) => 413,
            HttpError::Bad(_) => 400,
            HttpError::NotImplemented(_) => 501,
        }
    }
}

/// What the front of a buffer holds.
#[derive(Debug)]
pub enum Parsed {
    /// A whole request and the bytes it took.
    Request(Request, usize),
    /// Its head is whole, its body is not (a server may answer `Expect: 100-continue` now).
    AwaitingBody(Head),
    /// Not even its head yet.
    Incomplete,
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

const MAX_HEADERS: usize = 64;

/// The body framing the headers declare, refusing what could desynchronise a connection:
/// both Content-Length and Transfer-Encoding, differing lengths, a coding other than a final
/// chunked (requests: 501; responses: read until close), Transfer-Encoding on HTTP/1.0.
fn framing(
    headers: &[httparse::Header<'_>],
    minor: u8,
    request: bool,
) -> Result<BodyKind, HttpError> {
    let named = |name: &'static str| {
        headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim_ascii())
    };
    if named("transfer-encoding").next().is_some() {
        if named("content-length").next().is_some() {
            return Err(HttpError::Bad(
                "both Content-Length and Transfer-Encoding".into(),
            ));
        }
        if minor == 0 {
            return Err(HttpError::Bad("Transfer-Encoding in HTTP/1.0".into()));
        }
        let mut codings = named("transfer-encoding").flat_map(|v| v.split(|&b| b == b','));
        let only_chunked = codings
            .next()
            .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"))
            && codings.next().is_none();
        return match only_chunked {
            true => Ok(BodyKind::Chunked),
            false if request => {
                let all: Vec<String> = named("transfer-encoding")
                    .map(|v| String::from_utf8_lossy(v).to_ascii_lowercase())
                    .collect();
                Err(HttpError::NotImplemented(all.join(",")))
            }
            false => Ok(BodyKind::UntilClose),
        };
    }
    // RFC 9110 §8.6 lets a recipient collapse `5, 5`; a request is refused instead (as nginx
    // does), so nothing downstream ever sees the list. A response's identical values collapse.
    if request
        && (named("content-length").nth(1).is_some()
            || named("content-length").any(|v| v.contains(&b',')))
    {
        return Err(HttpError::Bad("more than one Content-Length".into()));
    }
    let mut len: Option<u64> = None;
    for v in named("content-length").flat_map(|v| v.split(|&b| b == b',')) {
        let v = v.trim_ascii();
        let bad = || {
            HttpError::Bad(format!(
                "bad Content-Length {:?}",
                String::from_utf8_lossy(v)
            ))
        };
        if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let n: u64 = std::str::from_utf8(v)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or_else(bad)?;
        if len.is_some_and(|l| l != n) {
            return Err(HttpError::Bad("differing Content-Length values".into()));
        }
        len = Some(n);
    }
    Ok(match len {
        Some(0) => BodyKind::None,
        Some(n) => BodyKind::Length(n),
        None if request => BodyKind::None,
        None => BodyKind::UntilClose,
    })
}

/// Parses the request head at the front of `buf`: the head and its length, `None` while
/// incomplete. The head may be up to `max_head` bytes, not counting forwarding fields a proxy
/// added (up to [`FORWARDING_ROOM`] more).
pub fn parse_request_head(buf: &[u8], max_head: usize) -> Result<Option<(Head, usize)>, HttpError> {
    let mut head = Head::default();
    Ok(parse_request_head_into(&mut head, buf, max_head)?.map(|n| (head, n)))
}

/// [`parse_request_head`] into `head`, whose buffers are reused: no allocation once they have
/// grown. Gives the head's length, `None` while incomplete (`head` is then unspecified).
pub fn parse_request_head_into(
    head: &mut Head,
    buf: &[u8],
    max_head: usize,
) -> Result<Option<usize>, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    // Over the limit: 414 if the request line alone does not fit, else 431.
    let too_large = || {
        let line_fits = buf[..buf.len().min(max_head + 1)].contains(&b'\n');
        if line_fits {
            HttpError::HeadTooLarge(max_head)
        } else {
            HttpError::UriTooLong(max_head)
        }
    };
    // Whole lines count against the limit, less the forwarding fields among them; a line
    // still arriving counts once it is whole, or once the head is past the room as well.
    let over = |len: usize| {
        let head = &buf[..len];
        let whole = head.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        len > max_head + FORWARDING_ROOM
            || (whole > max_head && whole - forwarding_bytes(&head[..whole]) > max_head)
    };
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max_head && over(buf.len()) => {
            return Err(too_large())
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge(max_head)),
        Err(e) => return Err(HttpError::Bad(e.to_string())),
    };
    if over(n) {
        return Err(too_large());
    }
    let minor = req.version.unwrap_or(1);
    let method = req.method.unwrap_or_default();
    let target = req.path.unwrap_or_default();
    if !valid_target(method, target) {
        return Err(HttpError::Bad("invalid request target".into()));
    }
    check_host(req.headers, minor)?;
    head.body = framing(req.headers, minor, true)?;
    head.status = 0;
    head.minor = minor;
    head.fill(buf, n, method, target, req.headers);
    Ok(Some(n))
}

/// Parses the response head at the front of `buf`, the answer to a `method` request (a HEAD
/// answer, 1xx, 204 and 304 have no body).
pub fn parse_response_head(
    buf: &[u8],
    max_head: usize,
    method: &str,
) -> Result<Option<(Head, usize)>, HttpError> {
    let mut head = Head::default();
    Ok(parse_response_head_into(&mut head, buf, max_head, method)?.map(|n| (head, n)))
}

/// [`parse_response_head`] into `head`, whose buffers are reused.
pub fn parse_response_head_into(
    head: &mut Head,
    buf: &[u8],
    max_head: usize,
    method: &str,
) -> Result<Option<usize>, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > max_head => {
            return Err(HttpError::HeadTooLarge(max_head))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HttpError::Bad(e.to_string())),
    };
    let status = resp.code.unwrap_or(0);
    let minor = resp.version.unwrap_or(1);
    let bodiless = method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304;
    head.body = if bodiless {
        BodyKind::None
    } else {
        framing(resp.headers, minor, false)?
    };
    head.status = status;
    head.minor = minor;
    head.fill(buf, n, "", "", resp.headers);
    Ok(Some(n))
}

/// Parses the whole request at the front of `buf`, body included (for servers that answer
/// whole requests; a proxy streams with [`parse_request_head`] and [`BodyReader`]).
pub fn parse_request(buf: &[u8], limits: Limits) -> Result<Parsed, HttpError> {
    let mut req = Request::default();
    Ok(match parse_request_into(&mut req, buf, limits)? {
        Progress::Request(n) => Parsed::Request(req, n),
        Progress::AwaitingBody { .. } => Parsed::AwaitingBody(req.head),
        Progress::Incomplete => Parsed::Incomplete,
    })
}

/// How far [`parse_request_into`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A whole request (in the `Request` given) and the bytes it took.
    Request(usize),
    /// Its head is whole (in the `Request` given), its body is not. `needed` is how many bytes
    /// the whole request takes when its head says so (a Content-Length body): a server can wait
    /// for that many before parsing again, rather than re-reading the head and the body so far
    /// on every read (quadratic for a body arriving in pieces).
    AwaitingBody { needed: Option<usize> },
    /// Not even its head yet.
    Incomplete,
}

/// [`parse_request`] into `req`, whose buffers are reused: a server keeps one `Request` and
/// parses every request into it without allocating once its buffers have grown.
pub fn parse_request_into(
    req: &mut Request,
    buf: &[u8],
    limits: Limits,
) -> Result<Progress, HttpError> {
    let Some(n) = parse_request_head_into(&mut req.head, buf, limits.max_head)? else {
        return Ok(Progress::Incomplete);
    };
    let max = limits.max_body as u64;
    if matches!(req.head.body, BodyKind::Length(len) if len > max) {
        return Err(HttpError::BodyTooLarge(limits.max_body));
    }
    let mut reader = BodyReader::new(req.head.body, max);
    req.body.clear();
    let used = reader.advance(&buf[n..], Some(&mut req.body))?;
    if !reader.is_done() {
        let needed = match req.head.body {
            BodyKind::Length(len) => usize::try_from(len).ok().map(|len| n + len),
            _ => None,
        };
        return Ok(Progress::AwaitingBody { needed });
    }
    Ok(Progress::Request(n + used))
}

#[cfg(test)]
mod tests;
