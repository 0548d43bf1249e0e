//! A keep-alive HTTP/1.1 server answering `200 Hello, world!` to every GET, with `httparse`
//! doing the parsing: how a protocol parser plugs into the engine.
//!
//! ```text
//! cargo run -p netmod-engine --example http_hello -- 127.0.0.1:8088
//! curl -v http://127.0.0.1:8088/
//! ```
//!
//! Pipelined requests are answered in order (each `on_data` answers every whole request in the
//! buffer); bodies are refused with 411/413 to keep the example short.

use engine::{Config, ConnId, Context, Handler, Server};

const HELLO: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, world!\n";
const BAD: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const NO_BODY: &[u8] =
    b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

struct Hello;

impl Handler for Hello {
    type Message = ();
    type Timer = ();

    fn on_data(&mut self, ctx: &mut Context<'_, ()>, conn: ConnId, data: &[u8]) -> usize {
        let mut used = 0;
        while used < data.len() {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&data[used..]) {
                Ok(httparse::Status::Complete(head_len)) => {
                    let has_body = req.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("transfer-encoding")
                            || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
                    });
                    if has_body {
                        let _ = ctx.send(conn, NO_BODY);
                        ctx.close(conn); // close after the queued answer is written
                        return data.len();
                    }
                    let close = req.version == Some(0)
                        || req.headers.iter().any(|h| {
                            h.name.eq_ignore_ascii_case("connection")
                                && h.value.eq_ignore_ascii_case(b"close")
                        });
                    let _ = ctx.send(conn, HELLO);
                    used += head_len;
                    if close {
                        ctx.close(conn);
                        return data.len();
                    }
                }
                // Half a request: keep it, the engine offers it again with more appended (the
                // buffer is capped by Config::max_message_size).
                Ok(httparse::Status::Partial) => break,
                Err(_) => {
                    let _ = ctx.send(conn, BAD);
                    ctx.close(conn);
                    return data.len();
                }
            }
        }
        used
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8088".into());
    let config = Config::builder()
        .max_message_size(16 * 1024) // the largest request head we keep
        .build()?;
    let server = Server::new(config)?.listen(addr.parse()?)?;
    println!("http_hello listening on http://{}", server.local_addrs()[0]);
    engine::signal::shutdown_on_signals(server.handle())?;
    server.run(|_| Hello)?;
    Ok(())
}
