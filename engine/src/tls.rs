//! TLS on a session, with rustls, non-blocking over the engine's own buffers.
//!
//! A TLS session keeps the shape of a plain one: the handler sees plaintext in
//! [`crate::Handler::on_data`] and queues plaintext with [`crate::Context::send`]. Underneath,
//! the loop feeds socket bytes to `rustls` (`read_tls` + `process_new_packets`) and reads the
//! decrypted bytes into the session's read buffer; on the way out it moves the write queue's
//! chunks into `rustls` (which encrypts them) and writes the records with `write_tls` — the shape
//! of rustls' own mio server example, with the engine's backpressure, timeouts and pools intact.
//!
//! Listeners take a [`TlsListener`] ([`crate::Server::listen_tls`]); outbound connections a
//! client config and a server name ([`crate::Context::connect_tls`]). Handshakes that do not
//! finish within [`crate::Config::tls_handshake_timeout`] are dropped. A peer that speaks plain
//! text to a TLS port (its first byte is not a TLS handshake record) is answered with
//! [`TlsListener::plaintext_reply`], in the clear, and closed.
//!
//! ```no_run
//! use std::sync::Arc;
//! use engine::tls::TlsListener;
//! # fn certs() -> (Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>) { unimplemented!() }
//! let (chain, key) = certs();
//! let config = engine::tls::server_config_builder()?
//!     .with_no_client_auth()
//!     .with_single_cert(chain, key)?;
//! let tls = TlsListener::new(Arc::new(config));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;

/// TLS record type of a handshake message: the first byte a TLS client sends.
const HANDSHAKE_RECORD: u8 = 0x16;

/// The TLS settings of one listener.
#[derive(Debug, Clone)]
pub struct TlsListener {
    /// Certificates, key, protocol versions and client verification.
    pub config: Arc<rustls::ServerConfig>,
    /// Written in the clear to a peer whose first byte shows it is not speaking TLS (for
    /// example an HTTP `400` telling it to use `https`), before closing. Empty: just close.
    pub plaintext_reply: Vec<u8>,
}

impl TlsListener {
    /// A listener with `config` and no plaintext reply.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        TlsListener {
            config,
            plaintext_reply: Vec::new(),
        }
    }
}

/// The protocol versions every config of this engine uses: TLS 1.3 only.
pub static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// A server config builder with the engine's crypto provider (ring) and TLS 1.3 only.
///
/// # Errors
///
/// When the provider does not support TLS 1.3 (ring does; the error is rustls').
pub fn server_config_builder(
) -> Result<rustls::ConfigBuilder<rustls::ServerConfig, rustls::WantsVerifier>, rustls::Error> {
    rustls::ServerConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS)
}

/// A client config builder with the engine's crypto provider (ring) and TLS 1.3 only.
///
/// # Errors
///
/// As [`server_config_builder`].
pub fn client_config_builder(
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, rustls::Error> {
    rustls::ClientConfig::builder_with_provider(provider()).with_protocol_versions(VERSIONS)
}

/// The crypto provider behind [`server_config_builder`] and [`client_config_builder`]: ring,
/// which builds with a C compiler alone (aws-lc-rs, rustls' default, needs more of a
/// toolchain and minutes more of a first build).
///
/// rustls 0.23.48 deprecates ring's provider because ring has no post-quantum key exchange
/// (X25519MLKEM768): handshakes here use X25519 or the NIST curves. Call sites build their
/// configs with [`server_config_builder`]/[`client_config_builder`], so moving to aws-lc-rs
/// for post-quantum key exchange is a change of this function and the feature list.
#[allow(deprecated)] // the choice above; the allowance keeps builds outside our lock file quiet
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// One session's TLS state.
#[derive(Debug)]
pub(crate) struct Tls {
    pub(crate) conn: rustls::Connection,
    /// Decrypted bytes wait in rustls (the read buffer was full or the loop paused).
    pub(crate) plain_pending: bool,
    /// Server side, before the first byte was seen: check that it starts a TLS handshake.
    pub(crate) sniff: Option<Arc<TlsListener>>,
    /// Client side: the handler's `on_connect` waits for the handshake to finish.
    pub(crate) connect_pending: bool,
    /// Loop tick the handshake began at (for its deadline).
    pub(crate) started: u64,
}

/// What one step of reading a TLS session gave.
pub(crate) enum TlsRead {
    /// `n` plaintext bytes were placed in the buffer.
    Plain(usize),
    /// `n` bytes were read from the socket and processed; no plaintext yet perhaps.
    Wire(usize),
    /// The socket has nothing more for now.
    WouldBlock,
    /// The peer closed (TCP EOF, or a TLS close_notify).
    Eof,
    /// The first byte was not a TLS handshake: `reply` goes out in the clear, then close.
    NotTls(Arc<TlsListener>),
    /// TLS failed (bad certificate, protocol error); the alert is queued in rustls.
    Failed(String),
    /// The socket failed.
    Io(io::Error),
}

impl Tls {
    pub(crate) fn server(listener: &Arc<TlsListener>, started: u64) -> Result<Self, rustls::Error> {
        let conn = rustls::ServerConnection::new(Arc::clone(&listener.config))?;
        Ok(Tls {
            conn: conn.into(),
            plain_pending: false,
            sniff: Some(Arc::clone(listener)),
            connect_pending: false,
            started,
        })
    }

    pub(crate) fn client(
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
        started: u64,
    ) -> Result<Self, rustls::Error> {
        let conn = rustls::ClientConnection::new(config, name)?;
        Ok(Tls {
            conn: conn.into(),
            plain_pending: false,
            sniff: None,
            connect_pending: true,
            started,
        })
    }

    /// Output is waiting in rustls (handshake messages, records, an alert).
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// One step of input: plaintext already decrypted first, then (if `socket_readable`) one
    /// read from the socket.
    pub(crate) fn read(
        &mut self,
        stream: &TcpStream,
        buf: &mut [u8],
        socket_readable: bool,
    ) -> TlsRead {
        match self.conn.reader().read(buf) {
            Ok(0) => return TlsRead::Eof, // close_notify (`buf` is never empty)
            Ok(n) => return TlsRead::Plain(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.plain_pending = false,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return TlsRead::Eof,
            Err(e) => return TlsRead::Io(e),
        }
        if !socket_readable {
            return TlsRead::WouldBlock;
        }
        if let Some(listener) = self.sniff.take() {
            let mut first = [0u8; 1];
            match stream.peek(&mut first) {
                Ok(0) => return TlsRead::Eof,
                Ok(_) if first[0] != HANDSHAKE_RECORD => return TlsRead::NotTls(listener),
                Ok(_) => {}
                Err(e) => {
                    self.sniff = Some(listener);
                    return match e.kind() {
                        io::ErrorKind::WouldBlock => TlsRead::WouldBlock,
                        _ => TlsRead::Io(e),
                    };
                }
            }
        }
        let n = match self.conn.read_tls(&mut &*stream) {
            Ok(0) => return TlsRead::Eof,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return TlsRead::WouldBlock,
            Err(e) => return TlsRead::Io(e),
        };
        match self.conn.process_new_packets() {
            Ok(state) => {
                self.plain_pending = state.plaintext_bytes_to_read() > 0;
                TlsRead::Wire(n)
            }
            Err(e) => TlsRead::Failed(e.to_string()),
        }
    }

    /// Writes whatever rustls holds to the socket; `Ok(false)` when the socket would block.
    pub(crate) fn push(&mut self, stream: &TcpStream, wire: &mut u64) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut &*stream) {
                Ok(n) => *wire += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queues a close_notify and writes it if the socket takes it now (best effort: the
    /// connection is being closed either way).
    pub(crate) fn close_notify(&mut self, stream: &TcpStream) {
        self.conn.send_close_notify();
        let mut wire = 0;
        let _ = self.push(stream, &mut wire);
    }

    /// A writer of plaintext for [`crate::queue::WriteQueue::flush`]: it encrypts into rustls
    /// and pushes records to the socket whenever rustls' buffer fills.
    pub(crate) fn writer<'a>(&'a mut self, stream: &'a TcpStream, wire: &'a mut u64) -> Writer<'a> {
        Writer {
            tls: self,
            stream,
            wire,
        }
    }
}

pub(crate) struct Writer<'a> {
    tls: &'a mut Tls,
    stream: &'a TcpStream,
    wire: &'a mut u64,
}

impl Write for Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        loop {
            let n = self.tls.conn.writer().write_vectored(bufs)?;
            if n > 0 || bufs.iter().all(|b| b.is_empty()) {
                return Ok(n);
            }
            // rustls holds as much as its buffer limit allows: send some of it first.
            let before = self.tls.conn.wants_write();
            if !self.tls.push(self.stream, self.wire)? {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if !before {
                // Nothing to send and nothing accepted: before the handshake ends, rustls holds
                // only so much plaintext — the rest waits for the handshake (which marks the
                // session for a flush). After it, the session cannot carry data: do not spin.
                return Err(if self.tls.conn.is_handshaking() {
                    io::ErrorKind::WouldBlock.into()
                } else {
                    io::ErrorKind::WriteZero.into()
                });
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
