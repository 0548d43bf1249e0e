//! The request or response head: one copy of its bytes and the spans of its parts, with the
//! questions servers and the proxy ask of it (fields, tokens, keep-alive, target forms).

use super::BodyKind;

/// A request or response head: what a proxy reads before it streams the body.
///
/// It keeps a copy of the head's bytes and the positions of its parts, so that one value can
/// be parsed into again and again (`parse_*_into`) without allocating once its buffers have
/// grown to the size of the heads a connection sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    raw: Vec<u8>,
    method: Span,
    target: Span,
    /// The status (0 for a request).
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    fields: Vec<(Span, Span)>,
    /// How the body that follows is delimited.
    pub body: BodyKind,
}

/// A range of `Head::raw`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span(u32, u32);

impl Span {
    /// Where `part` (a slice of `base`, or empty) lies in it.
    fn of(base: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
        if part.is_empty() || start + part.len() > base.len() {
            return Span(0, 0);
        }
        Span(start as u32, (start + part.len()) as u32)
    }
}

impl Head {
    fn bytes(&self, s: Span) -> &[u8] {
        &self.raw[s.0 as usize..s.1 as usize]
    }

    /// Text of a span that was a `&str` when `fill` copied it (method, target, field names).
    fn text(&self, s: Span) -> &str {
        let bytes = self.bytes(s);
        debug_assert!(std::str::from_utf8(bytes).is_ok());
        // SAFETY: `fill` is the only writer of `raw` and of the method, target and name spans,
        // and it makes each of those spans cover bytes copied from a `&str` httparse gave for
        // that same part (or an empty span): valid UTF-8, checked once there rather than on
        // every access (it was 12 % of the proxy's user time).
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }

    /// `GET`, `PUT`, … as sent (empty for a response).
    pub fn method(&self) -> &str {
        self.text(self.method)
    }

    /// The request target (path and query) as sent (empty for a response).
    pub fn target(&self) -> &str {
        self.text(self.target)
    }

    /// Header names and values in order, values as the bytes sent.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields
            .iter()
            .map(|&(n, v)| (self.text(n), self.bytes(v)))
    }

    /// The first header named `name` (case-insensitive), as bytes.
    pub fn header_bytes(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Fills `self` from a parsed head at the front of `buf` (`n` bytes long).
    pub(super) fn fill(
        &mut self,
        buf: &[u8],
        n: usize,
        method: &str,
        target: &str,
        headers: &[httparse::Header<'_>],
    ) {
        self.raw.clear();
        self.raw.extend_from_slice(&buf[..n]);
        let base = &buf[..n];
        self.method = Span::of(base, method.as_bytes());
        self.target = Span::of(base, target.as_bytes());
        self.fields.clear();
        self.fields.extend(
            headers
                .iter()
                .map(|h| (Span::of(base, h.name.as_bytes()), Span::of(base, h.value))),
        );
    }
}

impl Head {
    /// The first header named `name` (case-insensitive), if its value is UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// True when a header `name` lists `token` (comma-separated, case-insensitive), as in
    /// `Connection: keep-alive, Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .any(|(_, v)| {
                v.split(|&b| b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
            })
    }

    /// Whether the sender wants the connection kept after this message.
    pub fn keep_alive(&self) -> bool {
        if self.minor == 0 {
            self.has_token("connection", "keep-alive")
        } else {
            !self.has_token("connection", "close")
        }
    }

    /// The target's path, without the query. An absolute-form target
    /// (`http://host:port/docs/a?x`, RFC 9112 §3.2.2) gives the path inside it (`/docs/a`).
    pub fn path(&self) -> &str {
        self.origin_target().split('?').next().unwrap_or_default()
    }

    /// The target in origin form (path and query): the target itself, or the part of an
    /// absolute-form target after its authority (`/` when it has no path).
    pub fn origin_target(&self) -> &str {
        match absolute_form(self.target()) {
            Some((_, "")) => "/",
            Some((_, rest)) => rest,
            None => self.target(),
        }
    }

    /// The authority of an absolute-form target (`host:port`), which stands in for `Host`
    /// (RFC 9112 §3.2.2); `None` for any other form.
    pub fn target_authority(&self) -> Option<&str> {
        absolute_form(self.target()).map(|(authority, _)| authority)
    }
}

/// Splits an `http://` or `https://` target into its authority and the rest (path and query,
/// possibly empty).
pub(super) fn absolute_form(target: &str) -> Option<(&str, &str)> {
    if target.starts_with('/') {
        return None; // origin form, nearly every request: no search
    }
    let (scheme, rest) = target.split_once("://")?;
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return None;
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some(rest.split_at(end))
}

/// What a request's `Expect` field asks of a server (RFC 9110 §10.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expectation {
    /// No expectation (or an HTTP/1.0 client, which gets no interim answer).
    None,
    /// `100-continue`: answer `100 Continue` (or the final status) before the body comes.
    Continue,
    /// Anything else: 417.
    Unknown,
}

impl Head {
    /// The request's expectation.
    pub fn expectation(&self) -> Expectation {
        match self.header("expect") {
            None => Expectation::None,
            Some(v) if v.trim().eq_ignore_ascii_case("100-continue") => {
                if self.minor == 0 {
                    Expectation::None
                } else {
                    Expectation::Continue
                }
            }
            Some(_) => Expectation::Unknown,
        }
    }

    /// True for methods whose effects a later request may depend on (RFC 9110 §9.2.1: not
    /// GET, HEAD, OPTIONS or TRACE).
    pub fn is_unsafe(&self) -> bool {
        !matches!(self.method(), "GET" | "HEAD" | "OPTIONS" | "TRACE")
    }
}
