//! An HTTP/1.1 server on pier: a small built-in page at `/` and a plain-text
//! `/hello`, framed as RFC 9112 says. Heads are parsed with `httparse`;
//! keep-alive is the default (HTTP/1.0 closes unless it asks to keep alive,
//! and is then told `Connection: keep-alive`), pipelined requests are
//! answered in order, request bodies (by `Content-Length` or chunked) are
//! read and discarded, `Expect: 100-continue` gets `100 Continue` first, and
//! every response carries `Server` and a `Date` formatted once per second.
//!
//! Malformed or oversized requests get their status (400, 411, 413, 414,
//! 417, 431, 501, 505; see `framing`) and the connection closes after it.
//!
//! The protocol lives in `framing` (where requests begin and end),
//! `request` (the answers, in order) and `response` (routes, the head, the
//! date), which never call the host, so `cargo test -p http-server --lib`
//! runs natively; this file only moves bytes between them and the SDK's
//! outbox, and reads the clock.

mod framing;
mod request;
mod response;

use pier_guest::{ConnectionInfo, Handler, Outbox};
use std::time::{SystemTime, UNIX_EPOCH};

struct Http {
    conn: request::Conn,
    /// Answers to one read, sent with one `send`; kept to reuse its capacity.
    answers: Vec<u8>,
}

/// Seconds since the Unix epoch, from `wasi:clocks/wall-clock`.
fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Handler for Http {
    fn on_connect(_info: &ConnectionInfo, _out: &mut Outbox) -> Self {
        Http { conn: request::Conn::default(), answers: Vec::new() }
    }

    /// The outbox never refuses for flow control, and while it is above
    /// high water the host stops reading, so the answers to at most one
    /// read (32 KiB of requests) wait in memory.
    fn on_data(&mut self, out: &mut Outbox, bytes: &[u8]) {
        let close = self.conn.feed(bytes, now, &mut self.answers);
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
