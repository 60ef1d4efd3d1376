//! Flow control for one connection: the host's bounded outbox behind
//! [`Wire`], plus a queue here for what the host refused with `would-block`.

use std::collections::VecDeque;

/// Why the host did not take a `send` (its `send-error`, without the
/// bindings type, so this crate needs no world).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The host's queue is at its high-water mark: try again on `writable`.
    WouldBlock,
    /// The connection is gone, finishing or closed: nothing more goes out.
    Closed,
    /// More than the host takes in one `send`: the most it takes.
    TooLarge(u64),
}

/// The host side of one connection, as the outbox needs it.
pub trait Wire {
    /// All of `bytes` or none of them.
    fn send(&self, bytes: &[u8]) -> Result<(), Refused>;
    /// Close once the host's queue is written.
    fn finish(&self);
    /// Close now, dropping the host's queue.
    fn close(&self);
}

/// `send` never fails for flow control: refused bytes wait here, in order,
/// and go out on `flush` (the connection's `writable`). Sends larger than the
/// host takes in one call are split into pieces it does take.
#[derive(Debug, Default)]
pub struct Outbox<W> {
    wire: W,
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

impl<W: Wire> Outbox<W> {
    pub fn new(wire: W) -> Self {
        Self {
            wire,
            pending: VecDeque::new(),
            head: 0,
            pending_len: 0,
            piece: None,
            finish_requested: false,
            closed: false,
        }
    }

    /// An outbox already holding `bytes` back, as after a `would-block`:
    /// for tests of what must not touch the host.
    #[cfg(any(test, feature = "fake"))]
    pub fn holding(wire: W, bytes: &[u8]) -> Self {
        let mut out = Self::new(wire);
        if !bytes.is_empty() {
            out.hold(bytes.to_vec(), 0);
        }
        out
    }

    /// The host side, for what the outbox does not cover (pausing reads).
    pub fn wire(&self) -> &W {
        &self.wire
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

    /// [`send`](Self::send) for a buffer given away: what the host does not
    /// take at once is held without a copy, so a large reply costs memory
    /// once, not twice.
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

    /// Bytes held back here, not yet taken by the host.
    pub fn pending(&self) -> usize {
        self.pending_len
    }

    /// Flush everything (held-back bytes included), then close: the host's
    /// `finish` now if nothing is held, else once `flush` empties the queue
    /// (a host `finish` first would make it refuse the held bytes).
    pub fn finish(&mut self) {
        if self.closed || self.finish_requested {
            return;
        }
        self.finish_requested = true;
        if self.pending.is_empty() {
            self.wire.finish();
        }
    }

    /// Drop everything not yet sent and close now.
    pub fn close(&mut self) {
        self.drop_pending();
        self.closed = true;
        self.wire.close();
    }

    /// Hands held-back bytes to the host (on `writable`); true when none
    /// remain and the connection is not closed.
    pub fn flush(&mut self) -> bool {
        let held = !self.pending.is_empty();
        while let Some(front) = self.pending.front() {
            let taken = offer(&self.wire, &mut self.piece, &mut self.closed, &front[self.head..]);
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
            self.wire.finish();
        }
        !self.closed
    }

    /// Offers `bytes` to the host unless older bytes are held back (they
    /// must go first).
    fn offer_in_order(&mut self, bytes: &[u8]) -> usize {
        if self.pending.is_empty() { offer(&self.wire, &mut self.piece, &mut self.closed, bytes) } else { 0 }
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
            Err(Refused::WouldBlock) => break,
            Err(Refused::Closed) => {
                *closed = true;
                break;
            }
            Err(Refused::TooLarge(max)) => *piece = Some(usize::try_from(max).unwrap_or(usize::MAX).max(1)),
        }
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::FakeConn;

    fn outbox(mark: usize) -> (Outbox<FakeConn>, std::rc::Rc<std::cell::RefCell<crate::fake::Peer>>) {
        let (wire, peer) = FakeConn::new(mark);
        (Outbox::new(wire), peer)
    }

    #[test]
    fn below_the_mark_bytes_go_straight_to_the_host() {
        let (mut out, peer) = outbox(10);
        assert!(out.send(b"hello"));
        assert!(out.send(b" world"), "queued 5 < 10: all taken, past the mark");
        assert_eq!(out.pending(), 0);
        assert_eq!(peer.borrow().sent, b"hello world");
    }

    #[test]
    fn refused_bytes_wait_in_order_and_go_out_on_flush() {
        let (mut out, peer) = outbox(10);
        out.send(b"0123456789");
        assert!(out.send(b"abc"), "held, not failed");
        out.send_vec(b"def".to_vec());
        assert_eq!(out.pending(), 6);
        assert!(!out.flush(), "the host is still full");
        peer.borrow_mut().drain();
        assert!(out.flush());
        assert_eq!(out.pending(), 0);
        assert_eq!(peer.borrow().sent, b"0123456789abcdef");
    }

    #[test]
    fn too_large_sends_are_split_into_pieces_the_host_takes() {
        let (mut out, peer) = outbox(4);
        out.send(b"abcdefghij");
        assert_eq!(out.pending(), 6, "one piece of 4 taken, then would-block");
        peer.borrow_mut().drain();
        assert!(!out.flush());
        assert_eq!(out.pending(), 2);
        peer.borrow_mut().drain();
        assert!(out.flush());
        assert_eq!(peer.borrow().sent, b"abcdefghij");
        assert!(peer.borrow().largest <= 4);
    }

    #[test]
    fn a_given_away_buffer_is_held_from_where_the_host_stopped() {
        let (mut out, peer) = outbox(4);
        assert!(out.send_vec(b"abcdef".to_vec()));
        assert_eq!(out.pending(), 2, "4 taken, the rest held");
        out.send_vec(b"gh".to_vec());
        assert_eq!(out.pending(), 4);
        peer.borrow_mut().drain();
        assert!(out.flush());
        assert_eq!(peer.borrow().sent, b"abcdefgh");
    }

    #[test]
    fn finish_waits_for_held_bytes() {
        let (mut out, peer) = outbox(3);
        out.send(b"abc");
        out.send(b"def");
        out.finish();
        assert!(!peer.borrow().finished, "bytes are still held");
        assert!(!out.send(b"late"), "finishing: refused");
        assert!(!out.send_vec(b"late".to_vec()));
        peer.borrow_mut().drain();
        assert!(out.flush());
        let peer = peer.borrow();
        assert!(peer.finished);
        assert_eq!(peer.finishes, 1);
        assert_eq!(peer.sent, b"abcdef");
    }

    #[test]
    fn finish_with_nothing_held_finishes_at_once() {
        let (mut out, peer) = outbox(3);
        out.finish();
        out.finish();
        assert_eq!(peer.borrow().finishes, 1);
        assert!(out.flush(), "nothing held: no second finish");
        assert_eq!(peer.borrow().finishes, 1);
    }

    #[test]
    fn a_closed_connection_drops_what_is_held() {
        let (mut out, peer) = outbox(3);
        out.send(b"abc");
        out.send(b"def");
        peer.borrow_mut().gone = true;
        assert!(!out.flush());
        assert_eq!(out.pending(), 0);
        assert!(!out.send(b"x"));

        let (mut out, peer) = outbox(3);
        out.send(b"abc");
        out.send(b"def");
        out.close();
        assert_eq!(out.pending(), 0);
        assert!(peer.borrow().closed);
        assert!(!out.send(b"x"));
        assert!(!out.flush());
        out.finish();
        assert_eq!(peer.borrow().finishes, 0, "closed: no finish");
    }

    #[test]
    fn holding_touches_nothing() {
        let (wire, peer) = FakeConn::new(3);
        let out = Outbox::holding(wire, b"held");
        assert_eq!(out.pending(), 4);
        assert!(peer.borrow().sent.is_empty());
        assert_eq!(Outbox::holding(FakeConn::new(3).0, b"").pending(), 0);
    }
}
