//! Built without the `tls` feature: the session's TLS state cannot exist.
//!
//! The loop keeps one code path for plain and TLS sessions; here the TLS types are uninhabited,
//! so every TLS branch is dead code the compiler removes, and no rustls or ring is linked.

use std::io::{self, IoSlice, Write};
use std::sync::Arc;

use mio::net::TcpStream;

/// No value of this type exists.
#[derive(Debug)]
pub(crate) enum Never {}

impl Never {
    pub(crate) fn is_handshaking(&self) -> bool {
        match *self {}
    }
}

/// A listener's TLS settings; none can be made without the feature.
#[derive(Debug)]
pub(crate) struct TlsListener {
    pub(crate) plaintext_reply: Vec<u8>,
    never: Never,
}

#[derive(Debug)]
pub(crate) struct Tls {
    pub(crate) conn: Never,
    pub(crate) plain_pending: bool,
    pub(crate) connect_pending: bool,
    pub(crate) started: u64,
}

#[allow(dead_code)] // the variants mirror the TLS build's, which constructs them
pub(crate) enum TlsRead {
    Plain(usize),
    Wire(usize),
    WouldBlock,
    Eof,
    NotTls(Arc<TlsListener>),
    Failed(String),
    Io(io::Error),
}

impl Tls {
    pub(crate) fn server(listener: &Arc<TlsListener>, _started: u64) -> Result<Self, String> {
        match listener.never {}
    }

    pub(crate) fn wants_write(&self) -> bool {
        match self.conn {}
    }

    pub(crate) fn read(&mut self, _: &TcpStream, _: &mut [u8], _: bool) -> TlsRead {
        match self.conn {}
    }

    pub(crate) fn push(&mut self, _: &TcpStream, _: &mut u64) -> io::Result<bool> {
        match self.conn {}
    }

    pub(crate) fn close_notify(&mut self, _: &TcpStream) {
        match self.conn {}
    }

    pub(crate) fn writer<'a>(&'a mut self, _: &'a TcpStream, _: &'a mut u64) -> Writer<'a> {
        match self.conn {}
    }
}

pub(crate) struct Writer<'a>(&'a Never);

impl Write for Writer<'_> {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        match *self.0 {}
    }

    fn write_vectored(&mut self, _: &[IoSlice<'_>]) -> io::Result<usize> {
        match *self.0 {}
    }

    fn flush(&mut self) -> io::Result<()> {
        match *self.0 {}
    }
}

impl std::fmt::Display for Never {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}
