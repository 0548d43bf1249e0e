//! TLS settings shared by every program: PEM certificate and key files turned into rustls
//! configs (TLS 1.3 only, ring), and a blocking client stream for the `client` binary and tests.
//!
//! The loops do the TLS work themselves ([`engine::tls`]); this module only builds the configs.
//!
//! ```no_run
//! use std::path::Path;
//! // A server with a certificate, requiring client certificates signed by `clients-ca.pem`:
//! let server = shared::tls::server_config(
//!     Path::new("cert.pem"), Path::new("key.pem"), Some(Path::new("clients-ca.pem")))?;
//! // A client trusting `ca.pem`, presenting no certificate:
//! let client = shared::tls::client_config(Some(Path::new("ca.pem")), None)?;
//! # Ok::<(), shared::tls::TlsError>(())
//! ```

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Where clients look for trusted roots when no CA file is given (Debian's bundle).
pub const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused the certificates or key (e.g. the key does not match the certificate).
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The client-certificate verifier could not be built from the CA file.
    #[error("client CA: {0}")]
    Verifier(String),
    /// Not a valid DNS name or IP address to verify the server as.
    #[error("invalid TLS server name {0:?}")]
    Name(String),
}

fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// Every certificate in a PEM file (a chain: leaf first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut store = rustls::RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(load_certs(path)?);
    if added == 0 {
        return Err(file_error(path, "no usable CA certificate in the file"));
    }
    Ok(store)
}

/// A server's certificate chain and key, read from their files at start and again on
/// [`CertStore::reload`] (SIGHUP, see [`reload_on_sighup`]): new handshakes use the new pair,
/// sessions already open keep theirs. A reload that fails (unreadable file, key not matching the
/// certificate) keeps the old pair.
#[derive(Debug)]
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl CertStore {
    /// Reads the pair; fails if either file is unreadable or the key does not match.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(CertStore {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: RwLock::new(Self::read(cert, key)?),
        }))
    }

    fn read(cert: &Path, key: &Path) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
        let pair = rustls::sign::CertifiedKey::from_der(
            load_certs(cert)?,
            load_key(key)?,
            &engine::tls::provider(),
        )?;
        Ok(Arc::new(pair))
    }

    /// Reads the files again and, if they make a valid pair, uses it from the next handshake.
    pub fn reload(&self) -> Result<(), TlsError> {
        let pair = Self::read(&self.cert, &self.key)?;
        match self.current.write() {
            Ok(mut c) => *c = pair,
            Err(poisoned) => *poisoned.into_inner() = pair,
        }
        Ok(())
    }

    /// The certificate file, for log lines.
    pub fn cert_path(&self) -> &Path {
        &self.cert
    }
}

impl rustls::server::ResolvesServerCert for CertStore {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let current = match self.current.read() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        Some(Arc::clone(&current))
    }
}

/// Reloads `store` on every SIGHUP (as `nginx -s reload` picks up new certificates), on a thread
/// of its own; each reload is logged, a failed one at ERROR with the old pair kept.
pub fn reload_on_sighup(store: Arc<CertStore>) -> io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("tls-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                match store.reload() {
                    Ok(()) => log::info!(
                        "SIGHUP: TLS certificate reloaded from {}",
                        store.cert_path().display()
                    ),
                    Err(e) => log::error!(
                        "SIGHUP: TLS certificate not reloaded ({e}); keeping the old one"
                    ),
                }
            }
        })?;
    Ok(())
}

/// A server config from a certificate chain and key; with `client_ca`, clients must present a
/// certificate signed by one of its CAs (mutual TLS).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_with(CertStore::load(cert, key)?, client_ca)
}

/// A server config whose certificate comes from `store` (so that it can be reloaded).
pub fn server_config_with(
    store: Arc<CertStore>,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = engine::tls::server_config_builder()?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                engine::tls::provider(),
            )
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_cert_resolver(store)))
}

/// `config` for an HTTP/1.1 listener: the same, announcing `http/1.1` by ALPN (clients that
/// offer only other protocols, e.g. h2 alone, are refused with `no_application_protocol`).
pub fn for_http(config: &Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    let mut c = rustls::ServerConfig::clone(config);
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(c)
}

/// A client config trusting the CAs in `ca` (default: [`SYSTEM_ROOTS`]); with `identity`
/// (certificate, key) it presents a client certificate when the server asks for one.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = roots(ca.unwrap_or(Path::new(SYSTEM_ROOTS)))?;
    let builder = engine::tls::client_config_builder()?.with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(load_certs(cert)?, load_key(key)?)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name a server's certificate is checked against: a DNS name or an IP address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsError> {
    ServerName::try_from(host.to_string()).map_err(|_| TlsError::Name(host.to_string()))
}

/// A blocking client connection, plain or TLS.
#[derive(Debug)]
pub enum ClientStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl ClientStream {
    /// Starts TLS on a connected socket; the handshake runs with the first read or write (or
    /// [`ClientStream::handshake`]).
    pub fn tls(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    ) -> Result<Self, TlsError> {
        let conn = rustls::ClientConnection::new(config, name)?;
        Ok(ClientStream::Tls(Box::new(rustls::StreamOwned::new(
            conn, tcp,
        ))))
    }

    /// Completes the TLS handshake now, so that a bad certificate shows up here (no-op for
    /// plain TCP).
    pub fn handshake(&mut self) -> io::Result<()> {
        if let ClientStream::Tls(s) = self {
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock)?;
            }
        }
        Ok(())
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            ClientStream::Plain(s) => s,
            ClientStream::Tls(s) => &s.sock,
        }
    }
}

impl Read for ClientStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.read(buf),
            ClientStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for ClientStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientStream::Plain(s) => s.write(buf),
            ClientStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.flush(),
            ClientStream::Tls(s) => s.flush(),
        }
    }
}

/// Adds a listener to `server`, with TLS when `tls` is given.
pub fn listen<H: engine::Handler>(
    mut server: engine::Server<H>,
    addr: std::net::SocketAddr,
    tls: Option<engine::tls::TlsListener>,
) -> io::Result<engine::Server<H>> {
    add_listener(&mut server, addr, tls)?;
    Ok(server)
}

/// [`listen`] for a server with several listeners: gives the new listener's id.
pub fn add_listener<H: engine::Handler>(
    server: &mut engine::Server<H>,
    addr: std::net::SocketAddr,
    tls: Option<engine::tls::TlsListener>,
) -> io::Result<engine::ListenerId> {
    match tls {
        Some(t) => server.add_tls_listener(addr, t),
        None => server.add_listener(addr),
    }
}

/// The TLS flags of a server's client-facing listener(s), flattened into its command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// Certificate chain (PEM, leaf first) for TLS 1.3 on the client-facing listener(s);
    /// with --tls-key turns TLS on (off by default).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The server config when TLS is on; `client_ca` requires client certificates. The
    /// certificate is reloaded from its files on SIGHUP ([`reload_on_sighup`]).
    pub fn config(
        &self,
        client_ca: Option<&Path>,
    ) -> Result<Option<Arc<rustls::ServerConfig>>, Box<dyn std::error::Error>> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let store = CertStore::load(cert, key)?;
        reload_on_sighup(Arc::clone(&store))?;
        Ok(Some(server_config_with(store, client_ca)?))
    }
}

/// The TLS flags of a client program (`client`, `loadgen`), flattened into its command line.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTlsArgs {
    /// Connect with TLS 1.3.
    #[arg(long)]
    pub tls: bool,
    /// CA certificates (PEM) trusted for the server's certificate [default: the system's
    /// bundle]; implies --tls.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// Name the server's certificate must carry (DNS name or IP address).
    #[arg(long, default_value = "localhost")]
    pub tls_name: String,
}

impl ClientTlsArgs {
    /// The client config and server name when TLS is asked for.
    #[allow(clippy::type_complexity)]
    pub fn config(
        &self,
    ) -> Result<Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>, TlsError> {
        if !self.tls && self.tls_ca.is_none() {
            return Ok(None);
        }
        let config = client_config(self.tls_ca.as_deref(), None)?;
        Ok(Some((config, server_name(&self.tls_name)?)))
    }
}
