//! The SDK's outbox: `pier-guest-flow`'s over this world's `outbox` imports.

use crate::bindings::pier::server::outbox as host;
use crate::bindings::pier::server::types::SendError;
use pier_guest_flow::{Refused, Wire};

/// The connection's host side: each instance has one connection, so the
/// imports need no handle.
#[derive(Debug, Default)]
struct Host;

impl Wire for Host {
    fn send(&self, bytes: &[u8]) -> Result<(), Refused> {
        host::send(bytes).map_err(|e| match e {
            SendError::WouldBlock => Refused::WouldBlock,
            SendError::Closed => Refused::Closed,
            SendError::TooLarge(max) => Refused::TooLarge(max),
        })
    }
    fn finish(&self) {
        host::finish();
    }
    fn close(&self) {
        host::close();
    }
}

/// Where a handler's bytes go. `send` never fails for flow control: refused
/// bytes wait here, in order, and go out on `writable`. Sends larger than
/// the host takes in one call are split into pieces it does take. Check
/// [`pending`] before producing more from a source the peer does not pace (a
/// stream, a backplane): it is the handler's memory that holds them.
///
/// [`pending`]: Outbox::pending
#[derive(Debug, Default)]
pub struct Outbox(pier_guest_flow::Outbox<Host>);

impl Outbox {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// An outbox already holding `bytes` back, as after a `would-block`.
    #[cfg(test)]
    pub(crate) fn holding(bytes: &[u8]) -> Self {
        Self(pier_guest_flow::Outbox::holding(Host, bytes))
    }

    /// Queues bytes for the peer. False once the connection is finishing or
    /// closed (the bytes are dropped).
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.0.send(bytes)
    }

    /// [`send`](Self::send) for a buffer the handler gives away: what the
    /// host does not take at once is held back without a copy, so a large
    /// reply costs the handler's memory once, not twice.
    pub fn send_vec(&mut self, bytes: Vec<u8>) -> bool {
        self.0.send_vec(bytes)
    }

    /// Bytes held back by the SDK, not yet taken by the host.
    pub fn pending(&self) -> usize {
        self.0.pending()
    }

    /// Flush everything (held-back bytes included), then close.
    pub fn finish(&mut self) {
        self.0.finish();
    }

    /// Drop everything not yet sent and close now.
    pub fn close(&mut self) {
        self.0.close();
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
        match self.0.pending() {
            0 => host::start_tls(),
            held => Err(format!("{held} bytes are still held back: send them before starting TLS")),
        }
    }

    /// What the TLS handshake settled (version, cipher suite, SNI, ALPN,
    /// client certificate subject), once TLS is on; `None` in plaintext.
    pub fn tls_info(&self) -> Option<crate::TlsInfo> {
        host::tls()
    }

    /// Hands held-back bytes to the host; true when none remain.
    pub(crate) fn flush(&mut self) -> bool {
        self.0.flush()
    }
}
