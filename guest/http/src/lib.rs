//! An HTTP/1.1 server on pier: a small built-in page at `/` and a plain-text
//! `/hello`. Requests are parsed with `httparse`; keep-alive is the default
//! (HTTP/1.0 closes unless it asks to keep alive), pipelined requests are
//! answered in order, request bodies are skipped by `Content-Length`.
//!
//! Bounds: a request head larger than `MAX_HEAD` gets 431, more than
//! `MAX_HEADERS` headers 431, a malformed head 400, a chunked request body
//! 411; each of those closes the connection after the answer.

mod response;

use pier_guest::{ConnectionInfo, Handler, Outbox};
use response::{Response, route};

/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 8 << 10;
/// Most headers in one request.
const MAX_HEADERS: usize = 64;

struct Http {
    /// Bytes received and not yet consumed: at most one partial request
    /// head (bounded by `MAX_HEAD`), since bodies are skipped as they come.
    buf: Vec<u8>,
    /// Body bytes of the current request still to skip.
    skip: usize,
    closing: bool,
}

/// What parsing the buffered bytes gave.
enum Step {
    /// A whole request head of `len` bytes: answer it.
    Request { len: usize, response: Response, keep_alive: bool, body: usize },
    /// Need more bytes.
    Partial,
    /// Answer this and close.
    Fail(Response),
}

fn parse(buf: &[u8]) -> Step {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => Step::Fail(Response::status(431)),
        Ok(httparse::Status::Complete(len)) => {
            let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
                return Step::Fail(Response::status(400));
            };
            let header = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
            if header("transfer-encoding").is_some() {
                return Step::Fail(Response::status(411));
            }
            let body = match header("content-length")
                .map(|v| std::str::from_utf8(v).ok().and_then(|t| t.trim().parse().ok()))
            {
                None => 0,
                Some(Some(n)) => n,
                Some(None) => return Step::Fail(Response::status(400)),
            };
            let connection = header("connection").map(|v| v.to_ascii_lowercase());
            let keep_alive = match version {
                1 => connection.as_deref() != Some(b"close".as_slice()),
                _ => connection.as_deref() == Some(b"keep-alive".as_slice()),
            };
            Step::Request { len, response: route(method, path), keep_alive, body }
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Step::Fail(Response::status(431)),
        Ok(httparse::Status::Partial) => Step::Partial,
        Err(httparse::Error::TooManyHeaders) => Step::Fail(Response::status(431)),
        Err(_) => Step::Fail(Response::status(400)),
    }
}

impl Http {
    /// Answers every complete request in the buffer, in order.
    fn serve(&mut self, out: &mut Outbox) {
        let mut consumed = 0;
        while !self.closing {
            let rest = &self.buf[consumed..];
            if self.skip > 0 {
                let n = self.skip.min(rest.len());
                self.skip -= n;
                consumed += n;
                if self.skip > 0 {
                    break;
                }
                continue;
            }
            if rest.is_empty() {
                break;
            }
            match parse(rest) {
                Step::Request { len, response, keep_alive, body } => {
                    let head_only = rest.starts_with(b"HEAD ");
                    out.send(&response.encode(keep_alive, head_only));
                    consumed += len;
                    self.skip = body;
                    if !keep_alive {
                        self.close(out);
                    }
                }
                Step::Partial => break,
                Step::Fail(response) => {
                    out.send(&response.encode(false, false));
                    self.close(out);
                }
            }
        }
        self.buf.drain(..consumed.min(self.buf.len()));
    }

    fn close(&mut self, out: &mut Outbox) {
        self.closing = true;
        self.buf.clear();
        out.finish();
    }
}

impl Handler for Http {
    fn on_connect(_info: &ConnectionInfo, _out: &mut Outbox) -> Self {
        Http { buf: Vec::new(), skip: 0, closing: false }
    }

    fn on_data(&mut self, out: &mut Outbox, bytes: &[u8]) {
        if self.closing {
            return;
        }
        self.buf.extend_from_slice(bytes);
        self.serve(out);
    }
}

pier_guest::handler!(Http);
