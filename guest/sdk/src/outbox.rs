//! The SDK's outbox: the host's bounded outbox plus a queue for what the
//! host refused with `would-block`.

use crate::bindings::pier::server::outbox as host;
use crate::bindings::pier::server::types::SendError;

/// Where a handler's bytes go. `send` never fails for flow control: refused
/// bytes wait here, in order, and go out on `writable`. Sends larger than
/// the host takes in one call are split into pieces it does take. Check
/// [`pending`] before producing more from a source the peer does not pace (a
/// stream, a backplane): it is the handler's memory that holds them.
///
/// [`pending`]: Outbox::pending
#[derive(Debug, Default)]
pub struct Outbox {
    pending: Vec<u8>,
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
        let taken = self.offer(bytes);
        if self.closed {
            return false;
        }
        self.pending.extend_from_slice(&bytes[taken..]);
        true
    }

    /// Hands `bytes` to the host in pieces it takes, until it refuses with
    /// `would-block` or `closed`; returns how many it took.
    fn offer(&mut self, bytes: &[u8]) -> usize {
        let mut taken = 0;
        while taken < bytes.len() {
            let end = bytes.len().min(taken.saturating_add(self.piece.unwrap_or(usize::MAX)));
            match host::send(&bytes[taken..end]) {
                Ok(()) => taken = end,
                Err(SendError::WouldBlock) => break,
                Err(SendError::Closed) => {
                    self.closed = true;
                    break;
                }
                Err(SendError::TooLarge(max)) => {
                    self.piece = Some(usize::try_from(max).unwrap_or(usize::MAX).max(1));
                }
            }
        }
        taken
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
            let pending = std::mem::take(&mut self.pending);
            let taken = self.offer(&pending);
            if self.closed {
                return false;
            }
            self.pending = pending;
            self.pending.drain(..taken);
            if !self.pending.is_empty() {
                return false;
            }
            if self.finish_requested {
                host::finish();
            }
        }
        !self.closed
    }
}
