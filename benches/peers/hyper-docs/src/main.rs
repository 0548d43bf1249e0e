//! The answers of netmod's HTTP front (`/docs/example`, other documents 404, `/health`) from
//! tokio on one thread and hyper 1: the async-Rust reference in benches/http_docs.sh.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

const EXAMPLE: &str =
    r#"{"docName":"example","content":"This is the example document, kept short for throughput tests."}"#;

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    let (status, body) = if path == "/health" {
        (StatusCode::OK, r#"{"status":"healthy"}"#)
    } else if path == "/docs/example" {
        (StatusCode::OK, EXAMPLE)
    } else if path.starts_with("/docs/") {
        (StatusCode::NOT_FOUND, r#"{"error":"Document not found"}"#)
    } else {
        (StatusCode::NOT_FOUND, r#"{"error":"Not found"}"#)
    };
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8090);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
