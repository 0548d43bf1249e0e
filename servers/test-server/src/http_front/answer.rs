//! What the front answers with: status, body (made here or a cached document's, shared), its
//! kind (content type) and the optional headers.

use std::sync::Arc;

use shared::http1;

pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) body: Body,
    pub(super) kind: Kind,
    pub(super) allow: Option<&'static str>,
    /// A cached document served while db-server cannot be reached.
    pub(super) stale: bool,
    /// `Vary`: the request headers the answer depends on besides the path (a cache between
    /// the client and the front must not hand a browser's page to a script, or the reverse).
    pub(super) vary: Option<&'static str>,
}

/// `Cache-Status` (RFC 9211) of a document served stale while db-server cannot be reached.
pub(super) const STALE: &str = "netmod; hit; detail=db-unreachable";

/// What an answer's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Json,
    /// Prometheus text.
    Metrics,
    /// The status page.
    Html,
    /// The icon a browser asks for (`/favicon.ico`).
    Icon,
}

/// An answer's body: made for this request, or a cached document's (shared, not copied).
#[derive(Debug)]
pub(super) enum Body {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl std::ops::Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Body::Owned(v) => v,
            Body::Shared(s) => s,
        }
    }
}

impl Answer {
    pub(super) fn json(status: u16, body: Vec<u8>) -> Self {
        Answer {
            status,
            body: Body::Owned(body),
            kind: Kind::Json,
            allow: None,
            stale: false,
            vary: None,
        }
    }

    /// A 200 with a cached document's body.
    pub(super) fn cached(body: Arc<[u8]>) -> Self {
        Answer {
            status: 200,
            body: Body::Shared(body),
            kind: Kind::Json,
            allow: None,
            stale: false,
            vary: None,
        }
    }

    pub(super) fn error(status: u16, message: &str) -> Self {
        Answer::json(status, http1::error_body(message))
    }

    /// `/favicon.ico`: the servers' icon, so that a browser's visit logs no 404.
    pub(super) fn icon() -> Self {
        Answer {
            kind: Kind::Icon,
            body: Body::Owned(shared::page::ICON_SVG.as_bytes().to_vec()),
            ..Answer::json(200, Vec::new())
        }
    }
}
