//! The native HTTP baseline: a hyper HTTP/1.1 server answering `GET /hello`
//! with "Hello, world!\n" (keep-alive), what the HTTP guest is measured
//! against under `wrk`.

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use tokio::net::TcpListener;

async fn hello(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let response = if req.uri().path() == "/hello" {
        Response::builder().header("content-type", "text/plain").body(Full::new(Bytes::from_static(b"Hello, world!\n")))
    } else {
        Response::builder().status(StatusCode::NOT_FOUND).body(Full::new(Bytes::from_static(b"not found\n")))
    };
    Ok(response.expect("a static response is valid"))
}

/// Serves until killed.
pub async fn serve(listen: &str) -> Result<()> {
    let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    println!("listening native-http {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, hyper::service::service_fn(hello))
                .await;
        });
    }
}
