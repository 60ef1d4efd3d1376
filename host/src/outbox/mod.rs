//! The outbox of one CSA: the bounded queue of bytes on their way to the
//! peer, shared by the connection's task, its guest's `outbox` imports and
//! the embedder's [`CsaHandle`]s.
//!
//! - `mod.rs`: the queue and its water marks.
//! - [`doorbell`]: how the task is woken when someone else changed it.
//! - [`handle`]: what they share ([`Link`]) and the embedder's handle.

pub(crate) mod doorbell;
pub(crate) mod handle;

pub use handle::CsaHandle;
pub(crate) use handle::Link;

use std::collections::VecDeque;
use std::io::{self, IoSlice};

/// Why `send` did not take the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The queue is at or above its high-water mark; nothing was taken.
    #[error("the outbox is full (above its high-water mark); retry once it drains")]
    WouldBlock,
    /// The connection is finishing or closed.
    #[error("the connection is finishing or closed")]
    Closed,
    /// More bytes than one `send` may give (the high-water mark): nothing
    /// was taken; send them in pieces of at most `max` bytes.
    #[error("one send may give at most {max} bytes (the outbox's high-water mark); send in pieces")]
    TooLarge { max: usize },
}

/// Where the write side of a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteState {
    Open,
    /// `finish`: flush the queue, then close.
    Finishing,
    /// `close`: the queue is dropped, close now.
    Closed,
}

/// Bytes queued for the peer, in order, with water marks.
#[derive(Debug)]
pub(crate) struct Outbox {
    chunks: VecDeque<Vec<u8>>,
    /// Bytes of `chunks[0]` already written to the socket.
    head_written: usize,
    queued: usize,
    high_water: usize,
    low_water: usize,
    pub(crate) state: WriteState,
    pub(crate) reading_paused: bool,
    /// A `send` answered `would-block`: owe the guest a `writable`.
    blocked: bool,
    /// Bytes went to the socket straight from a `send` since the CSA last
    /// looked (it counts them as activity for the idle timeout).
    pub(crate) wrote_directly: bool,
    /// Bytes written to the socket, in all.
    pub(crate) sent: u64,
    /// `start-tls` was called: what is queued goes out in plaintext, then
    /// the handshake runs; until it is done `send` answers `would-block`.
    pub(crate) tls_switch: bool,
}

/// Most chunks handed to one `writev`.
const MAX_IOV: usize = 64;

impl Outbox {
    pub(crate) fn new(high_water: usize, low_water: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            head_written: 0,
            queued: 0,
            high_water,
            low_water,
            state: WriteState::Open,
            reading_paused: false,
            blocked: false,
            wrote_directly: false,
            sent: 0,
            tls_switch: false,
        }
    }

    /// The guest's `send`: with nothing queued, offers the bytes to `write`
    /// first (the socket, straight from the guest's memory) and queues only
    /// what it did not take, so the common case copies and allocates nothing
    /// on the host. Otherwise queues, all or nothing, as [`send`](Self::send).
    /// A failed `write` (would-block, a reset) leaves the bytes queued; the
    /// task's own flush then waits for the socket or reports the error.
    pub(crate) fn send_through(
        &mut self,
        data: &[u8],
        write: impl FnOnce(&[u8]) -> io::Result<usize>,
    ) -> Result<(), SendError> {
        self.admit(data.len())?;
        let mut rest = data;
        if self.queued == 0
            && let Ok(n) = write(rest)
        {
            rest = &rest[n..];
            self.wrote_directly |= n > 0;
            self.sent += n as u64;
        }
        self.push(rest.to_vec());
        Ok(())
    }

    /// All or nothing: takes every byte while below high water, else none;
    /// never more than the high-water mark in one call, so the queue stays
    /// under twice the mark.
    pub(crate) fn send(&mut self, data: Vec<u8>) -> Result<(), SendError> {
        self.admit(data.len())?;
        self.push(data);
        Ok(())
    }

    /// Whether a send of `len` bytes may be taken now (nothing is taken yet).
    fn admit(&mut self, len: usize) -> Result<(), SendError> {
        if self.state != WriteState::Open {
            return Err(SendError::Closed);
        }
        if len > self.high_water {
            return Err(SendError::TooLarge { max: self.high_water });
        }
        if self.queued >= self.high_water || self.tls_switch {
            self.blocked = true;
            return Err(SendError::WouldBlock);
        }
        Ok(())
    }

    fn push(&mut self, data: Vec<u8>) {
        if !data.is_empty() {
            self.queued += data.len();
            self.chunks.push_back(data);
        }
    }

    pub(crate) fn finish(&mut self) {
        if self.state == WriteState::Open {
            self.state = WriteState::Finishing;
        }
    }

    pub(crate) fn close(&mut self) {
        self.state = WriteState::Closed;
        self.chunks.clear();
        self.head_written = 0;
        self.queued = 0;
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued
    }

    /// At or above high water: the host stops reading the socket.
    pub(crate) fn is_full(&self) -> bool {
        self.queued >= self.high_water
    }

    /// True once per would-block episode, when the queue has drained below
    /// the low-water mark (and the connection is still open for sending).
    pub(crate) fn take_writable(&mut self) -> bool {
        let due = self.blocked && self.queued <= self.low_water && self.state == WriteState::Open;
        if due {
            self.blocked = false;
        }
        due
    }

    /// Writes as much as `write` (a non-blocking socket's
    /// `try_write_vectored`, or a TLS session's) takes. Returns the bytes
    /// written; `WouldBlock` is not an error (0 bytes, the queue stays).
    pub(crate) fn write_to(&mut self, mut write: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>) -> io::Result<usize> {
        let mut total = 0;
        while self.queued > 0 {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, chunk) in self.chunks.iter().take(MAX_IOV).enumerate() {
                let start = if i == 0 { self.head_written } else { 0 };
                iov[i] = IoSlice::new(&chunk[start..]);
                n += 1;
            }
            let written = match write(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            total += written;
            self.sent += written as u64;
            self.consume(written);
        }
        Ok(total)
    }

    fn consume(&mut self, mut written: usize) {
        self.queued -= written;
        while written > 0 {
            let head_left = self.chunks[0].len() - self.head_written;
            if written >= head_left {
                written -= head_left;
                self.chunks.pop_front();
                self.head_written = 0;
            } else {
                self.head_written += written;
                written = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_is_all_or_nothing_around_high_water() {
        let mut o = Outbox::new(10, 4);
        assert_eq!(o.send(vec![1; 8]), Ok(()));
        // Below the mark: the whole call is taken, even past the mark.
        assert_eq!(o.send(vec![2; 8]), Ok(()));
        assert_eq!(o.queued(), 16);
        assert!(o.is_full());
        assert_eq!(o.send(vec![3; 1]), Err(SendError::WouldBlock));
        assert_eq!(o.queued(), 16);
        assert!(!o.take_writable(), "not drained yet");
        o.consume(13);
        assert!(o.take_writable());
        assert!(!o.take_writable(), "once per episode");
        assert_eq!(o.chunks.len(), 1);
        assert_eq!(o.head_written, 5);
    }

    #[test]
    fn one_send_takes_at_most_the_high_water_mark() {
        let mut o = Outbox::new(10, 4);
        let mut offered = false;
        let big = o.send_through(&[1; 11], |b| {
            offered = true;
            Ok(b.len())
        });
        assert_eq!(big, Err(SendError::TooLarge { max: 10 }));
        assert!(!offered, "a refused send writes nothing, even to an empty queue");
        assert_eq!(o.send(vec![1; 10]), Ok(()), "the mark itself is taken");
        assert_eq!(o.send(vec![1; 11]), Err(SendError::TooLarge { max: 10 }), "at any queue level");
        assert!(!o.take_writable(), "too-large owes no writable");
        o.finish();
        assert_eq!(o.send(vec![1; 11]), Err(SendError::Closed), "closed wins");
    }

    #[test]
    fn send_through_queues_only_what_the_socket_did_not_take() {
        let mut o = Outbox::new(10, 4);
        assert_eq!(o.send_through(b"hello", |b| Ok(b.len() - 2)), Ok(()));
        assert_eq!(o.queued(), 2, "the tail the socket left");
        assert!(o.wrote_directly);
        let mut offered = false;
        assert_eq!(
            o.send_through(b"more", |_| {
                offered = true;
                Ok(4)
            }),
            Ok(())
        );
        assert!(!offered, "with bytes queued, order means queueing behind them");
        assert_eq!(o.queued(), 6);
    }

    #[test]
    fn finish_and_close_refuse_later_sends() {
        let mut o = Outbox::new(10, 4);
        o.send(vec![1; 3]).unwrap();
        o.finish();
        assert_eq!(o.send(vec![1]), Err(SendError::Closed));
        assert_eq!(o.queued(), 3, "finish keeps the queue");
        o.close();
        assert_eq!(o.queued(), 0, "close drops the queue");
        assert_eq!(o.state, WriteState::Closed);
    }
}
