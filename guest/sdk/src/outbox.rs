//! The SDK's outbox: the host's bounded outbox plus a queue for what the
//! host refused with `would-block`.

use crate::bindings::pier::server::outbox as host;
use crate::bindings::pier::server::types::SendError;

/// Where a handler's bytes go. `send` never fails for flow control: refused
/// bytes wait here, in order, and go out on `writable`. Check [`pending`]
/// before producing more from a source the peer does not pace (a stream, a
/// backplane): it is the handler's memory that holds them.
///
/// [`pending`]: Outbox::pending
#[derive(Debug, Default)]
pub struct Outbox {
    pending: Vec<u8>,
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
        Self { pending: bytes.to_vec(), ..Self::default() }
    }

    /// Queues bytes for the peer. False once the connection is finishing or
    /// closed (the bytes are dropped).
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        if self.closed || self.finish_requested {
            return false;
        }
        if !self.pending.is_empty() {
            self.pending.extend_from_slice(bytes);
            return true;
        }
        match host::send(bytes) {
            Ok(()) => true,
            Err(SendError::WouldBlock) => {
                self.pending.extend_from_slice(bytes);
                true
            }
            Err(SendError::Closed) => {
                self.closed = true;
                false
            }
        }
    }

    /// Bytes held back by the SDK, not yet taken by the host.
    pub fn pending(&self) -> usize {
        self.pending.len()
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
        self.pending.clear();
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

    /// Hands held-back bytes to the host; true when none remain.
    pub(crate) fn flush(&mut self) -> bool {
        if !self.pending.is_empty() {
            match host::send(&self.pending) {
                Ok(()) => self.pending.clear(),
                Err(SendError::WouldBlock) => return false,
                Err(SendError::Closed) => {
                    self.pending.clear();
                    self.closed = true;
                    return false;
                }
            }
            if self.finish_requested {
                host::finish();
            }
        }
        !self.closed
    }
}
