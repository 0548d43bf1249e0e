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
//! use netmod::http1::{parse_request, Limits, Parsed};
//! let raw = b"GET /docs/a HTTP/1.1\r\nHost: x\r\n\r\n";
//! let Ok(Parsed::Request(req, used)) = parse_request(raw, Limits::default()) else { panic!() };
//! assert_eq!((req.method.as_str(), req.target.as_str(), used), ("GET", "/docs/a", raw.len()));
//! assert!(req.keep_alive());
//! ```

/// Size limits of one request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Request line and headers together (SPEC §6: 8192; over it: 431).
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

/// A whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `PUT`, … as sent.
    pub method: String,
    /// The request target (path and query) as sent.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Header names and values in order (values as text, lossy for non-UTF-8 bytes).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the client wants the connection kept after this request.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection");
        let has =
            |t: &str| conn.is_some_and(|c| c.split(',').any(|x| x.trim().eq_ignore_ascii_case(t)));
        if self.minor == 0 {
            has("keep-alive")
        } else {
            !has("close")
        }
    }

    /// The target's path, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

/// Why a request was refused, with the status to answer (the connection closes after it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// 431.
    #[error("request head over {0} bytes")]
    HeadTooLarge(usize),
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
    /// Not all of it yet.
    Incomplete,
}

const MAX_HEADERS: usize = 64;

/// Parses the request at the front of `buf`.
pub fn parse_request(buf: &[u8], limits: Limits) -> Result<Parsed, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut slots);
    let head = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > limits.max_head {
                Err(HttpError::HeadTooLarge(limits.max_head))
            } else {
                Ok(Parsed::Incomplete)
            };
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::HeadTooLarge(limits.max_head))
        }
        Err(e) => return Err(HttpError::Bad(e.to_string())),
    };
    if head > limits.max_head {
        return Err(HttpError::HeadTooLarge(limits.max_head));
    }
    let minor = req.version.unwrap_or(1);
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let find_all = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect()
    };
    let te = find_all("transfer-encoding");
    let cl = find_all("content-length");
    if !te.is_empty() && !cl.is_empty() {
        return Err(HttpError::Bad(
            "both Content-Length and Transfer-Encoding".into(),
        ));
    }
    let rest = &buf[head..];
    let (body, used) = if !te.is_empty() {
        let coding = te.join(",").to_ascii_lowercase();
        if coding.trim() != "chunked" {
            return Err(HttpError::NotImplemented(coding));
        }
        match dechunk(rest, limits.max_body)? {
            Some((body, used)) => (body, used),
            None => return Ok(Parsed::Incomplete),
        }
    } else if !cl.is_empty() {
        let mut len: Option<u64> = None;
        for v in cl.iter().flat_map(|v| v.split(',')) {
            let n: u64 = v
                .trim()
                .parse()
                .map_err(|_| HttpError::Bad(format!("bad Content-Length {v:?}")))?;
            if len.is_some_and(|l| l != n) {
                return Err(HttpError::Bad("differing Content-Length values".into()));
            }
            len = Some(n);
        }
        let len = usize::try_from(len.unwrap_or(0)).unwrap_or(usize::MAX);
        if len > limits.max_body {
            return Err(HttpError::BodyTooLarge(limits.max_body));
        }
        if rest.len() < len {
            return Ok(Parsed::Incomplete);
        }
        (rest[..len].to_vec(), len)
    } else {
        (Vec::new(), 0)
    };
    Ok(Parsed::Request(
        Request {
            method: req.method.unwrap_or_default().to_string(),
            target: req.path.unwrap_or_default().to_string(),
            minor,
            headers,
            body,
        },
        head + used,
    ))
}

/// A line at the front of `b`, without its CRLF, and the bytes it took; `None` if incomplete.
fn line(b: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, HttpError> {
    match b.windows(2).position(|w| w == b"\r\n") {
        Some(i) if i <= max => Ok(Some((&b[..i], i + 2))),
        Some(_) => Err(HttpError::Bad("chunk line too long".into())),
        None if b.len() > max => Err(HttpError::Bad("chunk line too long".into())),
        None => Ok(None),
    }
}

/// Decodes a chunked body at the front of `b`: the body and the bytes taken, or `None` when
/// more is needed.
fn dechunk(b: &[u8], max_body: usize) -> Result<Option<(Vec<u8>, usize)>, HttpError> {
    const MAX_LINE: usize = 1024;
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some((size_line, n)) = line(&b[at..], MAX_LINE)? else {
            return Ok(None);
        };
        let hex = std::str::from_utf8(size_line)
            .ok()
            .and_then(|s| s.split(';').next())
            .map(str::trim)
            .ok_or_else(|| HttpError::Bad("bad chunk size".into()))?;
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| HttpError::Bad(format!("bad chunk size {hex:?}")))?;
        at += n;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some((t, n)) = line(&b[at..], MAX_LINE)? else {
                    return Ok(None);
                };
                at += n;
                if t.is_empty() {
                    return Ok(Some((body, at)));
                }
            }
        }
        if body.len().saturating_add(size) > max_body {
            return Err(HttpError::BodyTooLarge(max_body));
        }
        if b.len() < at + size + 2 {
            return Ok(None);
        }
        if &b[at + size..at + size + 2] != b"\r\n" {
            return Err(HttpError::Bad("chunk not followed by CRLF".into()));
        }
        body.extend_from_slice(&b[at..at + size]);
        at += size + 2;
    }
}

/// The reason phrase of `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "",
    }
}

/// Appends a whole response to `out`: status line, `headers`, Content-Length, and
/// `Connection: close` when the connection ends after it.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    // Plain appends: this runs once per response, formatting machinery would dominate it.
    out.reserve(body.len() + 128);
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
    for (n, v) in headers {
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if status != 204 {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if status != 204 {
        out.extend_from_slice(body);
    }
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `{"error": "<message>"}`, the body of every error response.
pub fn error_body(message: &str) -> Vec<u8> {
    serde_json::json!({ "error": message })
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(b: &[u8]) -> Result<Parsed, HttpError> {
        parse_request(b, Limits::default())
    }

    #[test]
    fn content_length_and_pipelined_requests() {
        let raw = b"PUT /docs/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\n\r\n";
        let Ok(Parsed::Request(r, n)) = parse(raw) else {
            panic!()
        };
        assert_eq!(
            (r.method.as_str(), r.body.as_slice()),
            ("PUT", &b"hello"[..])
        );
        let Ok(Parsed::Request(r2, m)) = parse(&raw[n..]) else {
            panic!()
        };
        assert_eq!((r2.target.as_str(), n + m), ("/", raw.len()));
        for cut in 0..n {
            assert!(
                matches!(parse(&raw[..cut]), Ok(Parsed::Incomplete)),
                "{cut}"
            );
        }
    }

    #[test]
    fn chunked_bodies_with_extensions_and_trailers() {
        let raw = b"PUT /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n";
        let Ok(Parsed::Request(r, n)) = parse(raw) else {
            panic!()
        };
        assert_eq!((r.body.as_slice(), n), (&b"hello world"[..], raw.len()));
        for cut in 0..raw.len() {
            assert!(
                matches!(parse(&raw[..cut]), Ok(Parsed::Incomplete)),
                "{cut}"
            );
        }
        let bad = b"PUT /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert_eq!(parse(bad).unwrap_err().status(), 400);
        let big = b"PUT /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFF\r\n";
        assert_eq!(parse(big).unwrap_err().status(), 413);
    }

    #[test]
    fn limits_and_smuggling_defences() {
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 9000));
        assert_eq!(
            parse(&head).unwrap_err().status(),
            431,
            "even before the head ends"
        );
        let big = b"PUT / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n";
        assert_eq!(parse(big).unwrap_err().status(), 413);
        let both = b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse(both).unwrap_err().status(), 400);
        let two = b"PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(parse(two).unwrap_err().status(), 400);
        let gzip = b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(parse(gzip).unwrap_err().status(), 501);
        assert_eq!(parse(b"\x00\x01garbage\r\n\r\n").unwrap_err().status(), 400);
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |raw: &[u8]| match parse(raw) {
            Ok(Parsed::Request(r, _)) => r.keep_alive(),
            other => panic!("{other:?}"),
        };
        assert!(ka(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn responses_carry_their_length() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            404,
            &[("Content-Type", "application/json")],
            b"{}",
            false,
        );
        assert_eq!(
            out,
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
    }
}
