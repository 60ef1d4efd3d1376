//! What a connection's task, its guest's imports and the embedder share:
//! the outbox and the doorbell that says it changed ([`Link`]); and the
//! embedder's handle to it ([`CsaHandle`]).

use super::doorbell::{Doorbell, RING};
use super::{Outbox, SendError};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

/// One connection's outbox and doorbell.
#[derive(Debug)]
pub(crate) struct Link {
    outbox: Mutex<Outbox>,
    /// Bytes read from the peer, counted by the connection's task alone.
    pub(crate) received: AtomicU64,
    /// Wakes the connection's task when someone other than its guest changed
    /// the outbox (an embedder's send, finish or close), or the server is
    /// shutting down.
    pub(crate) doorbell: Doorbell,
}

impl Link {
    pub(crate) fn new(high_water: usize, low_water: usize) -> Arc<Self> {
        Arc::new(Self {
            outbox: Mutex::new(Outbox::new(high_water, low_water)),
            received: AtomicU64::new(0),
            doorbell: Doorbell::default(),
        })
    }

    /// The outbox, even if a panicking thread poisoned the lock: its state is
    /// plain data and stays consistent between calls.
    pub(crate) fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A cloneable handle to one connection, carried by [`ServerEvent::NewCsa`]
/// (Kamaelia: "send what you like to CSAs"). It shares the guest's bounded
/// outbox: bytes sent here go to the peer in order with the guest's. It does
/// not keep the connection open: once it ended, `send` answers `Closed`.
///
/// [`ServerEvent::NewCsa`]: crate::ServerEvent::NewCsa
#[derive(Clone, Debug)]
pub struct CsaHandle {
    id: u64,
    link: Arc<Link>,
}

impl CsaHandle {
    pub(crate) fn new(id: u64, link: Arc<Link>) -> Self {
        Self { id, link }
    }

    /// The connection id, as in [`crate::ServerEvent`] and the logs.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues bytes for the peer; same all-or-nothing rule as the guest's
    /// `send`: `WouldBlock` means nothing was taken, try again later;
    /// `TooLarge` that one call may give at most the high-water mark.
    pub fn send(&self, bytes: impl Into<Vec<u8>>) -> Result<(), SendError> {
        let result = self.link.outbox().send(bytes.into());
        if result.is_ok() {
            self.link.doorbell.ring(RING);
        }
        result
    }

    /// Kamaelia's producerFinished: flush what is queued, then close.
    pub fn finish(&self) {
        self.link.outbox().finish();
        self.link.doorbell.ring(RING);
    }

    /// Drop what is queued and close the connection now.
    pub fn close(&self) {
        self.link.outbox().close();
        self.link.doorbell.ring(RING);
    }
}
