//! How a CSA task is woken from outside its own socket: an embedder's send,
//! a backplane message, `serverShutdown`. One atomic word and one waker per
//! connection, so the task's hot loop polls it without taking a lock
//! (tokio's `Notify` and `CancellationToken` each lock a mutex per poll,
//! which cost about a quarter of pier's user time under echo load).

use futures_util::task::AtomicWaker;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

/// The outbox or the mailbox changed.
pub(crate) const RING: u8 = 1;
/// `serverShutdown`: tell the handler, flush, close.
pub(crate) const SHUTDOWN: u8 = 2;
/// The grace period is over: close now.
pub(crate) const ABORT: u8 = 4;

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

    fn take(&self) -> Option<u8> {
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

/// Every live connection's doorbell, so that `serverShutdown` can reach
/// them all. A connection that registers after a shutdown began is rung at
/// once, so none is missed.
#[derive(Default)]
pub(crate) struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    bells: HashMap<u64, Weak<Doorbell>>,
    /// Bits every connection, present and future, must see.
    broadcast: u8,
}

impl Registry {
    pub(crate) fn register(self: &Arc<Self>, id: u64, bell: &Arc<Doorbell>) -> Registration {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.bells.insert(id, Arc::downgrade(bell));
        if inner.broadcast != 0 {
            bell.ring(inner.broadcast);
        }
        Registration { registry: self.clone(), id }
    }

    /// Rings `bits` on every live connection and on every later one.
    pub(crate) fn ring_all(&self, bits: u8) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.broadcast |= bits;
        for bell in inner.bells.values().filter_map(Weak::upgrade) {
            bell.ring(bits);
        }
    }
}

/// Removes a connection from the registry when dropped.
pub(crate) struct Registration {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut inner = self.registry.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.bells.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_registrations_still_hear_the_broadcast() {
        let registry = Arc::new(Registry::default());
        let early = Arc::new(Doorbell::default());
        let _r1 = registry.register(1, &early);
        registry.ring_all(SHUTDOWN);
        let late = Arc::new(Doorbell::default());
        let _r2 = registry.register(2, &late);
        assert_eq!(early.take(), Some(SHUTDOWN));
        assert_eq!(late.take(), Some(SHUTDOWN));
        assert_eq!(late.take(), None);
    }
}
