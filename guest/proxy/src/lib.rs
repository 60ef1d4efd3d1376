//! A TCP proxy (Kamaelia's TCPServer and TCPClient back to back): each
//! connection is forwarded to the listener's `config.get("upstream")`
//! (`IP:PORT`, which its `allow-connect` must list), both ways at once.
//!
//! Backpressure both ways, so that neither a fast client nor a fast
//! upstream makes anyone hold more than one chunk: when the upstream refuses
//! a chunk (`would-block`) the proxy keeps it, stops reading the client, and
//! sends it on the upstream's `writable`; when the client's outbox holds
//! bytes back, the proxy stops reading the upstream until the client's
//! `writable`. The client's FIN is passed on as the upstream's FIN (its
//! answer still comes back); the upstream's FIN finishes the client.

use pier_guest::upstream::{self, ConnectError};
use pier_guest::{ConnectionInfo, Handler, Outbox, ShutdownReason, UpstreamEvent, config};

struct Proxy {
    /// The upstream connection, once `connect` took the address.
    up: Option<u64>,
    /// A chunk the upstream refused, sent on its `writable`.
    held: Option<Vec<u8>>,
    /// The client sent FIN: pass it on once `held` is out.
    client_ended: bool,
}

impl Proxy {
    /// Offers `bytes` to the upstream; what it refuses is held and the
    /// client is paused.
    fn forward(&mut self, out: &mut Outbox, id: u64, bytes: Vec<u8>) {
        match upstream::send(id, &bytes) {
            Ok(()) => {}
            Err(pier_guest::bindings::pier::server::types::SendError::WouldBlock) => {
                self.held = Some(bytes);
                out.pause_reading();
            }
            Err(pier_guest::bindings::pier::server::types::SendError::TooLarge(max)) => {
                // Larger than one send takes: in pieces, holding what is refused.
                let max = usize::try_from(max).unwrap_or(usize::MAX).max(1);
                let mut rest = bytes;
                while !rest.is_empty() {
                    let tail = rest.split_off(rest.len().min(max));
                    if upstream::send(id, &rest).is_err() {
                        rest.extend(tail);
                        self.held = Some(rest);
                        out.pause_reading();
                        return;
                    }
                    rest = tail;
                }
            }
            Err(_) => out.close(),
        }
    }

    fn finish_upstream_if_done(&self) {
        if let (Some(id), true, None) = (self.up, self.client_ended, &self.held) {
            upstream::finish(id);
        }
    }
}

impl Handler for Proxy {
    fn on_connect(info: &ConnectionInfo, out: &mut Outbox) -> Self {
        let target = config::get("upstream").unwrap_or_default();
        let up = match upstream::connect(&target) {
            Ok(id) => Some(id),
            Err(e) => {
                let why = match e {
                    ConnectError::Denied(why) | ConnectError::Invalid(why) => why,
                    ConnectError::TooMany(n) => format!("more than {n} upstreams"),
                };
                eprintln!("connection {}: no upstream `{target}`: {why}", info.id);
                out.finish();
                None
            }
        };
        Proxy { up, held: None, client_ended: false }
    }

    fn on_data(&mut self, out: &mut Outbox, bytes: &[u8]) {
        if let Some(id) = self.up {
            self.forward(out, id, bytes.to_vec());
        }
    }

    fn on_end(&mut self, _out: &mut Outbox) {
        self.client_ended = true;
        self.finish_upstream_if_done();
    }

    fn on_writable(&mut self, _out: &mut Outbox) {
        // The client drained what the SDK held back: read the upstream again.
        if let Some(id) = self.up {
            upstream::resume_reading(id);
        }
    }

    fn on_upstream(&mut self, out: &mut Outbox, id: u64, event: UpstreamEvent) {
        match event {
            UpstreamEvent::Connected => {}
            UpstreamEvent::Data(bytes) => {
                out.send_vec(bytes);
                if out.pending() > 0 {
                    upstream::pause_reading(id);
                }
            }
            UpstreamEvent::Writable => {
                if let Some(bytes) = self.held.take() {
                    out.resume_reading();
                    self.forward(out, id, bytes);
                }
                self.finish_upstream_if_done();
            }
            UpstreamEvent::EndOfInput => out.finish(),
            UpstreamEvent::Closed(reason) => {
                self.up = None;
                match reason {
                    ShutdownReason::PeerClosed | ShutdownReason::Finished => out.finish(),
                    other => {
                        eprintln!("upstream closed: {other:?}");
                        out.close();
                    }
                }
            }
        }
    }
}

pier_guest::handler!(Proxy);
