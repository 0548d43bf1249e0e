//! A blocking frame-protocol client for people and tests (one request at a time, or pipelined
//! by hand with [`FrameClient::send`] then [`FrameClient::recv`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;

use protocol::wire::{self, ErrorBody, Message, MessageType, Next, Operation, Ping, WireError};
use shared::tls::{ClientStream, TlsError};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The socket failed or timed out.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The server sent bytes that are not a message.
    #[error("bad reply: {0}")]
    Wire(#[from] WireError),
    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,
    /// The server answered with something other than what the request calls for.
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    /// TLS could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// The peer speaks HTTP: this is an HTTP port, not a frame port.
    #[error(
        "this looks like an HTTP port (it answered {0:?}), not a frame-protocol port: connect to \
         test-server's --listen address (7000 by default) or db-server's (7100)"
    )]
    HttpPort(String),
    /// The server answered with an ERROR.
    #[error("server error {}: {message}", code.as_str_name())]
    Server {
        /// The documented code.
        code: wire::ErrorCode,
        /// Its text.
        message: String,
    },
}

/// One connection to a frame-protocol server.
#[derive(Debug)]
pub struct FrameClient {
    stream: ClientStream,
    buf: Vec<u8>,
    max: usize,
    next_id: u32,
}

impl FrameClient {
    /// Connects, with `timeout` for the connect and for every later read and write.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        Self::from_stream(TcpStream::connect_timeout(&addr, timeout)?, timeout)
    }

    /// Connects with TLS, verifying the server as `name` with `config`; the handshake is
    /// completed here, so an untrusted certificate fails this call.
    pub fn connect_tls(
        addr: SocketAddr,
        timeout: Duration,
        config: Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<Self, ClientError> {
        let tcp = TcpStream::connect_timeout(&addr, timeout)?;
        Self::set_options(&tcp, timeout)?;
        let mut stream = ClientStream::tls(tcp, config, name)?;
        stream.handshake()?;
        Ok(Self::with(stream))
    }

    /// Wraps a connected stream, with `timeout` for every read and write.
    pub fn from_stream(stream: TcpStream, timeout: Duration) -> io::Result<Self> {
        Self::set_options(&stream, timeout)?;
        Ok(Self::with(ClientStream::Plain(stream)))
    }

    fn set_options(tcp: &TcpStream, timeout: Duration) -> io::Result<()> {
        tcp.set_read_timeout(Some(timeout))?;
        tcp.set_write_timeout(Some(timeout))?;
        tcp.set_nodelay(true)
    }

    fn with(stream: ClientStream) -> Self {
        FrameClient {
            stream,
            buf: Vec::new(),
            max: engine::DEFAULT_MAX_MESSAGE,
            next_id: 0,
        }
    }

    /// Sets the largest frame accepted from the server (default 1 MiB).
    pub fn set_max_message_size(&mut self, max: usize) {
        self.max = max;
    }

    /// The socket, e.g. to bind tests' expectations on it.
    pub fn stream(&self) -> &TcpStream {
        self.stream.tcp()
    }

    /// A fresh message id.
    pub fn next_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    /// Sends one message (a payload over 10 KiB gzip-compressed when that pays).
    pub fn send(&mut self, msg: &Message) -> io::Result<()> {
        let packed = wire::compressed(msg);
        self.stream
            .write_all(&wire::to_frame(packed.as_ref().unwrap_or(msg)))
    }

    /// Sends raw bytes (tests use it for malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Receives the next message; `Ok(None)` when the server closed cleanly between messages.
    /// The server's own pings are answered here and not returned.
    pub fn recv(&mut self) -> Result<Option<Message>, ClientError> {
        loop {
            match wire::next_frame(&self.buf, self.max) {
                Next::Frame(body, n) => {
                    let mut msg = wire::decode(body)?;
                    self.buf.drain(..n);
                    wire::decompress(&mut msg, self.max)?;
                    if msg.r#type() == MessageType::Request && msg.op() == Operation::Ping {
                        // The server checking we are alive: answer and read on.
                        self.send(&wire::pong(msg))?;
                        continue;
                    }
                    return Ok(Some(msg));
                }
                Next::Fatal(_) if self.buf.starts_with(b"HTTP/") => {
                    let line = self.buf.split(|&b| b == b'\n').next().unwrap_or_default();
                    let line = String::from_utf8_lossy(line).trim_end().to_string();
                    return Err(ClientError::HttpPort(line));
                }
                Next::Fatal(e) => return Err(e.into()),
                Next::NeedMore => {}
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                // A reset, or a TLS peer gone without close_notify: both end the stream.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
                    ) =>
                {
                    0
                }
                Err(e) => return Err(e.into()),
            };
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                protocol::frame::finish(&self.buf, self.max).map_err(WireError::from)?;
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Receives the next message, treating a close as an error.
    pub fn next_message(&mut self) -> Result<Message, ClientError> {
        self.recv()?.ok_or(ClientError::Closed)
    }

    /// Sends a Ping with `payload` and waits for its answer; ERROR replies become
    /// [`ClientError::Server`]. Unrelated messages (notifications) that arrive first are skipped.
    pub fn ping(&mut self, payload: &[u8]) -> Result<Message, ClientError> {
        let id = self.next_id();
        let ping = wire::message(
            MessageType::Request,
            Operation::Ping,
            id,
            &Ping {
                payload: payload.to_vec().into(),
            },
        );
        self.send(&ping)?;
        self.await_reply(id)
    }

    /// Waits for the answer to request `id`, skipping other messages (notifications, answers
    /// to other requests); an ERROR answer becomes [`ClientError::Server`].
    pub fn await_reply(&mut self, id: u32) -> Result<Message, ClientError> {
        loop {
            let m = self.next_message()?;
            if m.message_id != id {
                continue;
            }
            if m.r#type() == MessageType::Error {
                return Err(server_error(&m));
            }
            return Ok(m);
        }
    }
}

impl FrameClient {
    /// Sends a DATA request and waits for its answer.
    pub fn data(
        &mut self,
        req: &protocol::proto::DataRequest,
    ) -> Result<protocol::proto::DataResponse, ClientError> {
        let id = self.next_id();
        self.send(&wire::message(
            MessageType::Request,
            Operation::Data,
            id,
            req,
        ))?;
        let m = self.await_reply(id)?;
        protocol::proto::DataResponse::decode(m.data).map_err(|e| ClientError::Wire(e.into()))
    }

    /// Runs one statement with positional arguments.
    pub fn execute(
        &mut self,
        sql: &str,
        args: Vec<protocol::proto::Value>,
    ) -> Result<protocol::proto::StatementResult, ClientError> {
        let req = protocol::proto::DataRequest {
            kind: Some(protocol::proto::data_request::Kind::Execute(
                protocol::proto::Statement {
                    keys: Vec::new(),
                    sql: sql.into(),
                    args,
                    named_args: Vec::new(),
                },
            )),
            ..Default::default()
        };
        match self.data(&req)?.kind {
            Some(protocol::proto::data_response::Kind::Result(r)) => Ok(r),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }
}

impl FrameClient {
    /// The admin user creates (or re-keys) user `name`, or removes it.
    pub fn change_user(
        &mut self,
        name: &str,
        secret: &str,
        remove: bool,
    ) -> Result<wire::UserChanged, ClientError> {
        let id = self.next_id();
        let req = wire::UserChange {
            name: name.into(),
            secret: secret.into(),
            remove,
        };
        self.send(&wire::message(
            MessageType::Request,
            Operation::Users,
            id,
            &req,
        ))?;
        let m = self.await_reply(id)?;
        wire::UserChanged::decode(m.data).map_err(|e| ClientError::Wire(e.into()))
    }

    /// Logs in to test-server; the connection is authenticated after it.
    pub fn login(&mut self, user: &str, secret: &str) -> Result<wire::AuthToken, ClientError> {
        let id = self.next_id();
        let req = wire::AuthLogin {
            user: user.into(),
            secret: secret.into(),
        };
        self.send(&wire::message(
            MessageType::Request,
            Operation::AuthLogin,
            id,
            &req,
        ))?;
        let m = self.await_reply(id)?;
        wire::AuthToken::decode(m.data).map_err(|e| ClientError::Wire(e.into()))
    }

    /// Authenticates the connection with a token from an earlier login (on any instance).
    pub fn authenticate(&mut self, token: &str) -> Result<wire::AuthToken, ClientError> {
        let id = self.next_id();
        let req = wire::AuthToken {
            token: token.into(),
            expires_at: 0,
        };
        self.send(&wire::message(
            MessageType::Request,
            Operation::AuthToken,
            id,
            &req,
        ))?;
        let m = self.await_reply(id)?;
        wire::AuthToken::decode(m.data).map_err(|e| ClientError::Wire(e.into()))
    }
}

/// The [`ClientError::Server`] an ERROR message stands for.
pub fn server_error(m: &Message) -> ClientError {
    match ErrorBody::decode(m.data.clone()) {
        Ok(e) => ClientError::Server {
            code: e.code(),
            message: e.message,
        },
        Err(e) => ClientError::Wire(e.into()),
    }
}
