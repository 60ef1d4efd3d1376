//! The SDK's outbox: the host's bounded outbox plus a queue for what the
//! host refused with `would-block`.

use crate::bindings::pier::server::outbox as host;
use crate::bindings::pier::server::types::SendError;
use std::collections::VecDeque;

/// Where a handler's bytes go. `send` never fails for flow control: refused
/// bytes wait here, in order, and go out on `writable`. Sends larger than
/// the host takes in one call are split into pieces it does take. Check
/// [`pending`] before producing more from a source the peer does not pace (a
/// stream, a backplane): it is the handler's memory that holds them.
///
/// [`pending`]: Outbox::pending
#[derive(Debug, Default)]
pub struct Outbox {
    /// Held-back bytes, in order. A buffer given to `send_vec` is held as
    /// it is, without a copy.
    pending: VecDeque<Vec<u8>>,
    /// Bytes of `pending[0]` the host already took.
    head: usize,
    pending_len: usize,
    /// The most bytes one host `send` takes, once a `too-large` told us.
    piece: Option<usize>,
    finish_requested: bool,
    closed: bool,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// An outbox already holding `bytes` back, as after a `would-block`.
    #[cfg(test)]
    pub(crate) fn holding(bytes: &[u8]) -> Self {
        let mut out = Self::default();
        out.hold(bytes.to_vec(), 0);
        out
    }

    /// Queues bytes for the peer. False once the connection is finishing or
    /// closed (the bytes are dropped).
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        if self.closed || self.finish_requested {
            return false;
        }
        let taken = self.offer_in_order(bytes);
        if taken < bytes.len() && !self.closed {
            self.hold(bytes[taken..].to_vec(), 0);
        }
        !self.closed
    }

    /// [`send`](Self::send) for a buffer the handler gives away: what the
    /// host does not take at once is held back without a copy, so a large
    /// reply costs the handler's memory once, not twice.
    pub fn send_vec(&mut self, bytes: Vec<u8>) -> bool {
        if self.closed || self.finish_requested {
            return false;
        }
        let taken = self.offer_in_order(&bytes);
        if taken < bytes.len() && !self.closed {
            self.hold(bytes, taken);
        }
        !self.closed
    }

    /// Offers `bytes` to the host unless older bytes are held back.
    fn offer_in_order(&mut self, bytes: &[u8]) -> usize {
        if self.pending.is_empty() { offer(&mut self.piece, &mut self.closed, bytes) } else { 0 }
    }

    /// Holds `buf` back, of which the host already took `taken` bytes (only
    /// ever for the first buffer held).
    fn hold(&mut self, buf: Vec<u8>, taken: usize) {
        if self.pending.is_empty() {
            self.head = taken;
        }
        self.pending_len += buf.len() - taken;
        self.pending.push_back(buf);
    }

    fn drop_pending(&mut self) {
        self.pending.clear();
        self.head = 0;
        self.pending_len = 0;
    }

    /// Bytes held back by the SDK, not yet taken by the host.
    pub fn pending(&self) -> usize {
        self.pending_len
    }

    /// Flush everything (held-back bytes included), then close.
    pub fn finish(&mut self) {
        if self.closed || self.finish_requested {
            return;
        }
        self.finish_requested = true;
        if self.pending.is_empty() {
            host::finish();
        }
    }

    /// Drop everything not yet sent and close now.
    pub fn close(&mut self) {
        self.drop_pending();
        self.closed = true;
        host::close();
    }

    /// Stop reading from the peer (TCP backpressure) until `resume_reading`.
    pub fn pause_reading(&self) {
        host::pause_reading();
    }

    pub fn resume_reading(&self) {
        host::resume_reading();
    }

    /// STARTTLS (Kamaelia's `makessl`): what was sent so far goes out in
    /// plaintext, then the host runs the TLS handshake; later sends are held
    /// until it is done and go out encrypted. An error (the listener has no
    /// `starttls`, TLS is already on, or bytes are still held back here, so
    /// the plaintext reply has not all reached the host) changes nothing.
    /// Drop whatever the peer sent after the STARTTLS command in the same
    /// `on_data` call: it came before the handshake.
    pub fn start_tls(&mut self) -> Result<(), String> {
        if !self.pending.is_empty() {
            return Err(format!("{} bytes are still held back: send them before starting TLS", self.pending_len));
        }
        host::start_tls()
    }

    /// What the TLS handshake settled (version, cipher suite, SNI, ALPN,
    /// client certificate subject), once TLS is on; `None` in plaintext.
    pub fn tls_info(&self) -> Option<crate::TlsInfo> {
        host::tls()
    }

    /// Hands held-back bytes to the host; true when none remain.
    pub(crate) fn flush(&mut self) -> bool {
        let held = !self.pending.is_empty();
        while let Some(front) = self.pending.front() {
            let taken = offer(&mut self.piece, &mut self.closed, &front[self.head..]);
            if self.closed {
                self.drop_pending();
                return false;
            }
            self.head += taken;
            self.pending_len -= taken;
            if self.head < front.len() {
                return false;
            }
            self.pending.pop_front();
            self.head = 0;
        }
        if held && self.finish_requested {
            host::finish();
        }
        !self.closed
    }
}

/// Hands `bytes` to the host in pieces it takes, until it refuses with
/// `would-block` or `closed` (which sets `closed`); returns how many it
/// took. `piece` is learnt from the first `too-large`.
fn offer(piece: &mut Option<usize>, closed: &mut bool, bytes: &[u8]) -> usize {
    let mut taken = 0;
    while taken < bytes.len() {
        let end = bytes.len().min(taken.saturating_add(piece.unwrap_or(usize::MAX)));
        match host::send(&bytes[taken..end]) {
            Ok(()) => taken = end,
            Err(SendError::WouldBlock) => break,
            Err(SendError::Closed) => {
                *closed = true;
                break;
            }
            Err(SendError::TooLarge(max)) => *piece = Some(usize::try_from(max).unwrap_or(usize::MAX).max(1)),
        }
    }
    taken
}
