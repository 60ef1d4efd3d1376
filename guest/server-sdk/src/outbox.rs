//! One connection's outbox: the host's bounded queue for it, plus a queue
//! in the SDK for what the host refused with `would-block`.
//!
//! The host is behind [`Wire`] (the real `conn`, or a fake in native
//! tests), so the buffering is tested without a host.

use crate::SendError;
use crate::connections::Conn;
use std::collections::VecDeque;

/// What the outbox needs of the host side of one connection.
pub(crate) trait Wire {
    fn send(&self, bytes: &[u8]) -> Result<(), SendError>;
    fn finish(&self);
    fn close(&self);
    fn pause_reading(&self);
    fn resume_reading(&self);
}

impl Wire for Conn {
    fn send(&self, bytes: &[u8]) -> Result<(), SendError> {
        Conn::send(self, bytes)
    }
    fn finish(&self) {
        Conn::finish(self);
    }
    fn close(&self) {
        Conn::close(self);
    }
    fn pause_reading(&self) {
        Conn::pause_reading(self);
    }
    fn resume_reading(&self) {
        Conn::resume_reading(self);
    }
}

/// `send` never fails for flow control: refused bytes wait here, in order,
/// and go out on `flush` (the connection's `writable`). Sends larger than the
/// host takes in one call are split into pieces it does take.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    /// Held-back bytes, in order. A buffer given to `send_vec` is held as
    /// it is, without a copy.
    pending: VecDeque<Vec<u8>>,
    /// Bytes of `pending[0]` the host already took.
    head: usize,
    pending_len: usize,
    /// The most bytes one host `send` takes, once a `too-large` told us.
    piece: Option<usize>,
    /// `finish` was asked for; the host's is called once nothing is held.
    finish_requested: bool,
    /// The host answered `closed`, or the handler closed: nothing more goes out.
    closed: bool,
}

impl Outbox {
    /// Queues bytes for the peer. False once the connection is finishing or
    /// closed (the bytes are dropped).
    pub fn send(&mut self, wire: &impl Wire, bytes: &[u8]) -> bool {
        if self.closed || self.finish_requested {
            return false;
        }
        let taken = self.offer_in_order(wire, bytes);
        if taken < bytes.len() && !self.closed {
            self.hold(bytes[taken..].to_vec(), 0);
        }
        !self.closed
    }

    /// [`send`](Self::send) for a buffer given away: what the host does not
    /// take at once is held without a copy.
    pub fn send_vec(&mut self, wire: &impl Wire, bytes: Vec<u8>) -> bool {
        if self.closed || self.finish_requested {
            return false;
        }
        let taken = self.offer_in_order(wire, &bytes);
        if taken < bytes.len() && !self.closed {
            self.hold(bytes, taken);
        }
        !self.closed
    }

    /// Offers `bytes` to the host unless older bytes are held back (they
    /// must go first; `flush` sends them on `writable`).
    fn offer_in_order(&mut self, wire: &impl Wire, bytes: &[u8]) -> usize {
        if self.pending.is_empty() { offer(wire, &mut self.piece, &mut self.closed, bytes) } else { 0 }
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

    /// Bytes held back here, not yet taken by the host.
    pub fn pending(&self) -> usize {
        self.pending_len
    }

    /// Flush everything (held-back bytes included), then close: the host's
    /// `finish` now if nothing is held, else once `flush` empties the queue
    /// (a host `finish` first would make it refuse the held bytes).
    pub fn finish(&mut self, wire: &impl Wire) {
        if self.closed || self.finish_requested {
            return;
        }
        self.finish_requested = true;
        if self.pending.is_empty() {
            wire.finish();
        }
    }

    /// Drop everything not yet sent and close now.
    pub fn close(&mut self, wire: &impl Wire) {
        self.drop_pending();
        self.closed = true;
        wire.close();
    }

    /// Hands held-back bytes to the host; true when none remain (and the
    /// connection is not closed).
    pub fn flush(&mut self, wire: &impl Wire) -> bool {
        let held = !self.pending.is_empty();
        while let Some(front) = self.pending.front() {
            let taken = offer(wire, &mut self.piece, &mut self.closed, &front[self.head..]);
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
            wire.finish();
        }
        !self.closed
    }
}

/// Hands `bytes` to the host in pieces it takes, until it refuses with
/// `would-block` or `closed` (which sets `closed`); returns how many it
/// took. `piece` is learnt from the first `too-large`.
fn offer(wire: &impl Wire, piece: &mut Option<usize>, closed: &mut bool, bytes: &[u8]) -> usize {
    let mut taken = 0;
    while taken < bytes.len() {
        let end = bytes.len().min(taken.saturating_add(piece.unwrap_or(usize::MAX)));
        match wire.send(&bytes[taken..end]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeConn;

    #[test]
    fn below_the_mark_bytes_go_straight_to_the_host() {
        let (wire, peer) = FakeConn::new(10);
        let mut out = Outbox::default();
        assert!(out.send(&wire, b"hello"));
        assert!(out.send(&wire, b" world"), "queued 5 < 10: all taken, past the mark");
        assert_eq!(out.pending(), 0);
        assert_eq!(peer.borrow().sent, b"hello world");
    }

    #[test]
    fn refused_bytes_wait_in_order_and_go_out_on_flush() {
        let (wire, peer) = FakeConn::new(10);
        let mut out = Outbox::default();
        out.send(&wire, b"0123456789");
        assert!(out.send(&wire, b"abc"), "held, not failed");
        out.send_vec(&wire, b"def".to_vec());
        assert_eq!(out.pending(), 6);
        assert!(!out.flush(&wire), "the host is still full");
        peer.borrow_mut().drain();
        assert!(out.flush(&wire));
        assert_eq!(out.pending(), 0);
        assert_eq!(peer.borrow().sent, b"0123456789abcdef");
    }

    #[test]
    fn too_large_sends_are_split_into_pieces_the_host_takes() {
        let (wire, peer) = FakeConn::new(4);
        let mut out = Outbox::default();
        out.send(&wire, b"abcdefghij");
        assert_eq!(out.pending(), 6, "one piece of 4 taken, then would-block");
        peer.borrow_mut().drain();
        assert!(!out.flush(&wire));
        assert_eq!(out.pending(), 2);
        peer.borrow_mut().drain();
        assert!(out.flush(&wire));
        assert_eq!(peer.borrow().sent, b"abcdefghij");
        assert!(peer.borrow().largest <= 4);
    }

    #[test]
    fn finish_waits_for_held_bytes() {
        let (wire, peer) = FakeConn::new(3);
        let mut out = Outbox::default();
        out.send(&wire, b"abc");
        out.send(&wire, b"def");
        out.finish(&wire);
        assert!(!peer.borrow().finished, "bytes are still held");
        assert!(!out.send(&wire, b"late"), "finishing: refused");
        peer.borrow_mut().drain();
        assert!(out.flush(&wire));
        let peer = peer.borrow();
        assert!(peer.finished);
        assert_eq!(peer.sent, b"abcdef");
    }

    #[test]
    fn finish_with_nothing_held_finishes_at_once() {
        let (wire, peer) = FakeConn::new(3);
        let mut out = Outbox::default();
        out.finish(&wire);
        out.finish(&wire);
        assert_eq!(peer.borrow().finishes, 1);
    }

    #[test]
    fn a_closed_connection_drops_what_is_held() {
        let (wire, peer) = FakeConn::new(3);
        let mut out = Outbox::default();
        out.send(&wire, b"abc");
        out.send(&wire, b"def");
        peer.borrow_mut().gone = true;
        assert!(!out.flush(&wire));
        assert_eq!(out.pending(), 0);
        assert!(!out.send(&wire, b"x"));

        let (wire, peer) = FakeConn::new(3);
        let mut out = Outbox::default();
        out.send(&wire, b"abc");
        out.send(&wire, b"def");
        out.close(&wire);
        assert_eq!(out.pending(), 0);
        assert!(peer.borrow().closed);
        assert!(!out.send(&wire, b"x"));
    }
}
