//! The WASI 0.3 `wasmtime serve` baseline of `make bench`: a `wasi:http/service`
//! component (WASI 0.3, async) that answers every request with what pier's
//! HTTP guest answers on `GET /hello` (200, `text/plain; charset=utf-8`,
//! "Hello, world!\n"), like `bench/hello-http` (WASI 0.2) does. Since
//! wasmtime 46, `wasmtime serve` reuses a WASI 0.3 component's instances
//! (up to 128 requests each, 16 at once) instead of making one per request:
//! its strongest configuration. Serve it with
//! `wasmtime serve -S cli=y -Wcomponent-model-async=y hello_http_p3.wasm`.
//! Build: `cargo build --release --target wasm32-wasip2 -p hello-http-p3`.

use wasip3::http::types::{ErrorCode, Fields, Request, Response};
use wasip3::{wit_future, wit_stream};

const BODY: &[u8] = b"Hello, world!\n";

struct Hello;

wasip3::http::service::export!(Hello);

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(_request: Request) -> Result<Response, ErrorCode> {
        let headers = Fields::from_list(&[
            ("content-type".to_string(), b"text/plain; charset=utf-8".to_vec()),
            ("content-length".to_string(), BODY.len().to_string().into_bytes()),
        ])
        .expect("valid headers");
        let (mut body_tx, body_rx) = wit_stream::new();
        // No trailers: the future resolves to `Ok(None)` once its writer is dropped.
        let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
        drop(trailers_tx);
        let (response, _sent) = Response::new(headers, Some(body_rx), trailers_rx);
        // The host reads the body after `handle` returns the response, so it
        // is written by a task of this instance that outlives this call.
        wasip3::spawn_local(async move {
            let rest = body_tx.write_all(BODY.to_vec()).await;
            debug_assert!(rest.is_empty(), "the host stopped reading the body");
        });
        Ok(response)
    }
}
