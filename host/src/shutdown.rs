//! `serverShutdown`: how it reaches the accept loops (a cancellation token)
//! and every live connection (its doorbell, rung with `SHUTDOWN`, then
//! `ABORT` once the grace period is over).

use crate::outbox::Link;
use crate::outbox::doorbell::{ABORT, SHUTDOWN};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use tokio_util::sync::CancellationToken;

/// What the accept loops and the connections hold to hear `serverShutdown`.
#[derive(Clone, Default)]
pub(crate) struct Stop {
    /// Cancelled by `serverShutdown`: the accept loops stop.
    pub(crate) token: CancellationToken,
    registry: Arc<Registry>,
}

impl Stop {
    /// Counts a connection in until the returned registration is dropped.
    pub(crate) fn register(&self, id: u64, link: &Arc<Link>) -> Registration {
        self.registry.register(id, link)
    }

    /// Tells every connection, live and later, to shut down.
    pub(crate) fn tell_connections(&self) {
        self.registry.ring_all(SHUTDOWN);
    }

    /// Tells every connection to close now.
    pub(crate) fn abort_connections(&self) {
        self.registry.ring_all(ABORT);
    }
}

/// Every live connection's link, so that `serverShutdown` can reach them
/// all. A connection that registers after a shutdown began is rung at once,
/// so none is missed.
#[derive(Default)]
struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    links: HashMap<u64, Weak<Link>>,
    /// Bits every connection, present and future, must see.
    broadcast: u8,
}

impl Registry {
    fn inner(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(self: &Arc<Self>, id: u64, link: &Arc<Link>) -> Registration {
        let mut inner = self.inner();
        inner.links.insert(id, Arc::downgrade(link));
        if inner.broadcast != 0 {
            link.doorbell.ring(inner.broadcast);
        }
        Registration { registry: self.clone(), id }
    }

    /// Rings `bits` on every live connection and on every later one.
    fn ring_all(&self, bits: u8) {
        let mut inner = self.inner();
        inner.broadcast |= bits;
        for link in inner.links.values().filter_map(Weak::upgrade) {
            link.doorbell.ring(bits);
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
        self.registry.inner().links.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_registrations_still_hear_the_broadcast() {
        let stop = Stop::default();
        let early = Link::new(1, 1);
        let _r1 = stop.register(1, &early);
        stop.tell_connections();
        let late = Link::new(1, 1);
        let _r2 = stop.register(2, &late);
        assert_eq!(early.doorbell.take(), Some(SHUTDOWN));
        assert_eq!(late.doorbell.take(), Some(SHUTDOWN));
        assert_eq!(late.doorbell.take(), None);
    }
}
