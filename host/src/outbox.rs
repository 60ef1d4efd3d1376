//! The outbox of one CSA: the bounded queue of bytes on their way to the peer,
//! and the handle through which an embedding program shares it with the guest.

use crate::backplane::Mailbox;
use crate::doorbell::{Doorbell, RING};
use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::mem::ManuallyDrop;
use std::os::fd::{FromRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpStream;

/// Why `send` did not take the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The queue is at or above its high-water mark; nothing was taken.
    #[error("the outbox is full (above its high-water mark); retry once it drains")]
    WouldBlock,
    /// The connection is finishing or closed.
    #[error("the connection is finishing or closed")]
    Closed,
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
        }
    }

    /// The guest's `send`: with nothing queued, writes straight from the
    /// guest's memory to the socket and queues only what the socket did not
    /// take, so the common case copies and allocates nothing on the host.
    /// Otherwise (or with no socket) queues, all or nothing, as `send`.
    pub(crate) fn send_from(&mut self, data: &[u8], socket: Option<RawFd>) -> Result<(), SendError> {
        let mut rest = data;
        if let Some(fd) = socket
            && self.queued == 0
            && self.state == WriteState::Open
        {
            // SAFETY: the fd is the CSA's socket, open for as long as its
            // store (and so this call) lives; ManuallyDrop never closes it.
            let socket = ManuallyDrop::new(unsafe { std::net::TcpStream::from_raw_fd(fd) });
            // std's write uses send(MSG_NOSIGNAL). Any error (would-block,
            // a reset) leaves the bytes queued; the CSA's own flush then
            // waits for the socket or reports the error.
            if let Ok(n) = (&*socket).write(rest) {
                rest = &rest[n..];
                self.wrote_directly |= n > 0;
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
        self.send(rest.to_vec())
    }

    /// All or nothing: takes every byte while below high water, else none.
    pub(crate) fn send(&mut self, data: Vec<u8>) -> Result<(), SendError> {
        if self.state != WriteState::Open {
            return Err(SendError::Closed);
        }
        if self.queued >= self.high_water {
            self.blocked = true;
            return Err(SendError::WouldBlock);
        }
        if !data.is_empty() {
            self.queued += data.len();
            self.chunks.push_back(data);
        }
        Ok(())
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

    /// Writes as much as the socket takes without blocking. Returns the bytes
    /// written; `WouldBlock` is not an error (0 bytes, the queue stays).
    pub(crate) fn write_to(&mut self, stream: &TcpStream) -> io::Result<usize> {
        let mut total = 0;
        while self.queued > 0 {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut n = 0;
            for (i, chunk) in self.chunks.iter().take(MAX_IOV).enumerate() {
                let start = if i == 0 { self.head_written } else { 0 };
                iov[i] = IoSlice::new(&chunk[start..]);
                n += 1;
            }
            let written = match stream.try_write_vectored(&iov[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            total += written;
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

/// What the CSA task, its guest and any embedder handles share.
#[derive(Debug)]
pub(crate) struct CsaShared {
    pub(crate) outbox: Mutex<Outbox>,
    /// Backplane messages waiting for the handler's `message`.
    mailbox: Mutex<Mailbox>,
    /// Wakes the CSA task when someone other than its guest changed the
    /// outbox (an embedder's send, finish or close) or its mailbox, or the
    /// server is shutting down.
    pub(crate) doorbell: Arc<Doorbell>,
}

impl CsaShared {
    pub(crate) fn new(high_water: usize, low_water: usize) -> Arc<Self> {
        Arc::new(Self {
            outbox: Mutex::new(Outbox::new(high_water, low_water)),
            mailbox: Mutex::new(Mailbox::default()),
            doorbell: Arc::default(),
        })
    }

    /// The outbox, even if a panicking thread poisoned the lock: its state is
    /// plain data and stays consistent between calls.
    pub(crate) fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn mailbox(&self) -> MutexGuard<'_, Mailbox> {
        self.mailbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A cloneable handle to one connection, carried by [`ServerEvent::NewCsa`]
/// (Kamaelia: "send what you like to CSAs"). It shares the guest's bounded
/// outbox: bytes sent here go to the peer in order with the guest's.
///
/// [`ServerEvent::NewCsa`]: crate::ServerEvent::NewCsa
#[derive(Clone, Debug)]
pub struct CsaHandle {
    id: u64,
    shared: Arc<CsaShared>,
}

impl CsaHandle {
    pub(crate) fn new(id: u64, shared: Arc<CsaShared>) -> Self {
        Self { id, shared }
    }

    /// The connection id, as in [`crate::ServerEvent`] and the logs.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues bytes for the peer; same all-or-nothing rule as the guest's
    /// `send`: `WouldBlock` means nothing was taken, try again later.
    pub fn send(&self, bytes: impl Into<Vec<u8>>) -> Result<(), SendError> {
        let result = self.shared.outbox().send(bytes.into());
        if result.is_ok() {
            self.shared.doorbell.ring(RING);
        }
        result
    }

    /// Kamaelia's producerFinished: flush what is queued, then close.
    pub fn finish(&self) {
        self.shared.outbox().finish();
        self.shared.doorbell.ring(RING);
    }

    /// Drop what is queued and close the connection now.
    pub fn close(&self) {
        self.shared.outbox().close();
        self.shared.doorbell.ring(RING);
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
