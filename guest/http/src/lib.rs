//! An HTTP/1.1 server on pier: a small built-in page at `/` and a plain-text
//! `/hello`. Requests are parsed with `httparse`; keep-alive is the default
//! (HTTP/1.0 closes unless it asks to keep alive), pipelined requests are
//! answered in order, request bodies are skipped by `Content-Length`.
//!
//! Bounds: a request head larger than 8 KiB or with more than 64 headers
//! gets 431, a malformed head (or an HTTP/1.1 one without `Host`, or a bad
//! `Content-Length`) 400, a request with `Transfer-Encoding` (a chunked
//! body, which this server does not decode) 411; each of those closes the
//! connection after the answer.
//!
//! The protocol lives in `request` (framing) and `response` (routes), which
//! never call the host, so `cargo test -p http` runs natively; this file only
//! moves bytes between them and the SDK's outbox.

mod request;
mod response;

use pier_guest::{ConnectionInfo, Handler, Outbox};

struct Http {
    conn: request::Conn,
    /// Answers to one read, sent with one `send`; kept to reuse its capacity.
    answers: Vec<u8>,
}

impl Handler for Http {
    fn on_connect(_info: &ConnectionInfo, _out: &mut Outbox) -> Self {
        Http { conn: request::Conn::default(), answers: Vec::new() }
    }

    /// The outbox never refuses for flow control, and while it is above
    /// high water the host stops reading, so the answers to at most one
    /// read (32 KiB of requests) wait in memory.
    fn on_data(&mut self, out: &mut Outbox, bytes: &[u8]) {
        let close = self.conn.feed(bytes, &mut self.answers);
        if !self.answers.is_empty() {
            out.send(&self.answers);
            self.answers.clear();
            self.answers.shrink_to(64 << 10);
        }
        if close {
            out.finish();
        }
    }
}

pier_guest::handler!(Http);
