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
//! The listener's `config` table: `header-timeout` (default `10s`): a
//! request head not complete that long after its first byte (after the
//! connection was accepted, for the first request) gets `408 Request
//! Timeout` and the connection closes, however the bytes trickle in (the
//! slowloris defence); `keepalive-timeout` (default `75s`, as nginx): a
//! connection idle that long between requests is closed. Durations are
//! `10s`, `500ms`, `1m` or plain milliseconds; `0` turns a timeout off
//! (see `timeouts`).
//!
//! The protocol lives in `framing` (where requests begin and end),
//! `request` (the answers, in order), `response` (routes, the head, the
//! date) and `timeouts` (on `alarm`), which never call the host, so `cargo
//! test -p http-server --lib` runs natively; this file only moves bytes
//! between them and the SDK's outbox and timers, and reads the clocks.

mod framing;
mod request;
mod response;
mod timeouts;

use pier_guest::alarm::HostTimers;
use pier_guest::{ConnectionInfo, Handler, Outbox, config};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use timeouts::{Expired, Settings, Timeouts};

struct Http {
    conn: request::Conn,
    /// Answers to one read, sent with one `send`; kept to reuse its capacity.
    answers: Vec<u8>,
    timeouts: Timeouts,
    /// When the connection was accepted: time 0 of the timeouts.
    accepted: Instant,
}

/// Seconds since the Unix epoch, from `wasi:clocks/wall-clock`.
fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds since `start`, from `wasi:clocks/monotonic-clock`.
fn since(start: Instant) -> u64 {
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl Handler for Http {
    fn on_connect(_info: &ConnectionInfo, _out: &mut Outbox) -> Self {
        let accepted = Instant::now();
        let (settings, warnings) = Settings::from_config(config::get);
        for warning in warnings {
            eprintln!("{warning}");
        }
        let timeouts = Timeouts::new(settings, &mut HostTimers);
        Http { conn: request::Conn::default(), answers: Vec::new(), timeouts, accepted }
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
        } else {
            let accepted = self.accepted;
            self.timeouts.after_read(self.conn.phase(), self.conn.heads(), || since(accepted), &mut HostTimers);
        }
    }

    fn on_timer(&mut self, out: &mut Outbox, id: u64) {
        match self.timeouts.fired(id, since(self.accepted), &mut HostTimers) {
            Some(Expired::Header) => {
                self.conn.time_out(now(), &mut self.answers);
                out.send(&self.answers);
                self.answers.clear();
                out.finish();
            }
            Some(Expired::KeepAlive) => out.finish(),
            None => {}
        }
    }
}

pier_guest::handler!(Http);
