//! How a CSA task is woken from outside its own socket: an embedder's send,
//! `serverShutdown`. One atomic word and one waker per connection, so the
//! task's hot loop polls it without taking a lock (tokio's `Notify` and
//! `CancellationToken` each lock a mutex per poll).

use futures_util::task::AtomicWaker;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

/// The outbox changed.
pub(crate) const RING: u8 = 1;
/// `serverShutdown`: tell the handler, flush, close.
pub(crate) const SHUTDOWN: u8 = 2;
/// The grace period is over: close now.
pub(crate) const ABORT: u8 = 4;
/// A `server-handler` connection's event was handled by its instance.
pub(crate) const DONE: u8 = 8;
/// A `server-handler` connection's instance failed: it ends (`Conn::fault`
/// says why).
pub(crate) const FAULT: u8 = 16;

#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    bits: AtomicU8,
    waker: AtomicWaker,
}

impl Doorbell {
    pub(crate) fn ring(&self, bits: u8) {
        self.bits.fetch_or(bits, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Ready with the bits rung since the last poll (and clears them).
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<u8> {
        if let Some(bits) = self.take() {
            return Poll::Ready(bits);
        }
        self.waker.register(cx.waker());
        self.take().map_or(Poll::Pending, Poll::Ready)
    }

    /// Whether `ABORT` was rung, leaving every bit for [`poll`](Self::poll);
    /// wakes the task when it is. For a task busy in a guest call.
    pub(crate) fn poll_abort(&self, cx: &mut Context<'_>) -> bool {
        if self.bits.load(Ordering::Acquire) & ABORT != 0 {
            return true;
        }
        self.waker.register(cx.waker());
        self.bits.load(Ordering::Acquire) & ABORT != 0
    }

    pub(crate) fn take(&self) -> Option<u8> {
        match self.bits.swap(0, Ordering::AcqRel) {
            0 => None,
            bits => Some(bits),
        }
    }

    /// Waits for the next ring.
    pub(crate) async fn rung(&self) -> u8 {
        std::future::poll_fn(|cx| self.poll(cx)).await
    }
}
