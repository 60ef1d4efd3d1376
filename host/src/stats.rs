//! What each listener counts: connections accepted, open and ended (by
//! reason), bytes received and sent. A connection counts its own bytes in
//! its [`Link`] (written by its task alone, so no two threads contend for
//! one counter on the hot path); the listener adds them up only when asked
//! (a scrape), and keeps the sum of the connections that ended. Both happen
//! under one lock, so a counter never goes back when a connection ends.

use crate::events::{REASON_KINDS, ShutdownReason};
use crate::outbox::Link;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// One listener's counters.
#[derive(Default)]
pub(crate) struct ListenerStats {
    ends: [AtomicU64; REASON_KINDS.len()],
    live: Mutex<Live>,
}

#[derive(Default)]
struct Live {
    accepted: u64,
    conns: HashMap<u64, Arc<Link>>,
    /// What the connections that ended received and sent.
    ended_received: u64,
    ended_sent: u64,
}

/// The counters at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub accepted: u64,
    pub open: u64,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    /// Connections ended, by reason kind ([`ShutdownReason::kind`]).
    pub ends: Vec<(&'static str, u64)>,
}

impl ListenerStats {
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a connection in (accepted, open) until the guard is dropped;
    /// then its bytes join the ended connections' sums.
    pub(crate) fn connect(self: &Arc<Self>, id: u64, link: &Arc<Link>) -> Counted {
        let mut live = self.live();
        live.accepted += 1;
        live.conns.insert(id, link.clone());
        Counted { stats: self.clone(), id }
    }

    pub(crate) fn ended(&self, reason: &ShutdownReason) {
        let kind = reason.kind();
        if let Some(i) = REASON_KINDS.iter().position(|&k| k == kind) {
            self.ends[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Rings `bits` on every live connection's doorbell (a listener removed
    /// by a reload tells its connections to finish, then to close).
    pub(crate) fn ring_all(&self, bits: u8) {
        for link in self.live().conns.values() {
            link.doorbell.ring(bits);
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let live = self.live();
        let (mut received, mut sent) = (live.ended_received, live.ended_sent);
        for link in live.conns.values() {
            received += link.received.load(Ordering::Relaxed);
            sent += link.outbox().sent;
        }
        Snapshot {
            accepted: live.accepted,
            open: live.conns.len() as u64,
            received_bytes: received,
            sent_bytes: sent,
            ends: REASON_KINDS.iter().zip(&self.ends).map(|(&k, n)| (k, n.load(Ordering::Relaxed))).collect(),
        }
    }
}

/// A connection counted as open; dropped when it ends.
pub(crate) struct Counted {
    stats: Arc<ListenerStats>,
    id: u64,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut live = self.stats.live();
        if let Some(link) = live.conns.remove(&self.id) {
            live.ended_received += link.received.load(Ordering::Relaxed);
            live.ended_sent += link.outbox().sent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_of_live_and_ended_connections_add_up_and_never_go_back() {
        let stats = Arc::new(ListenerStats::default());
        let a = Link::new(10, 5);
        let b = Link::new(10, 5);
        let counted_a = stats.connect(1, &a);
        let _counted_b = stats.connect(2, &b);
        a.received.fetch_add(7, Ordering::Relaxed);
        b.received.fetch_add(3, Ordering::Relaxed);
        a.outbox().sent += 5;
        let before = stats.snapshot();
        assert_eq!((before.accepted, before.open, before.received_bytes, before.sent_bytes), (2, 2, 10, 5));
        stats.ended(&ShutdownReason::PeerClosed);
        drop(counted_a);
        let after = stats.snapshot();
        assert_eq!((after.accepted, after.open, after.received_bytes, after.sent_bytes), (2, 1, 10, 5));
        assert!(after.ends.contains(&("peer-closed", 1)));
        assert!(after.ends.contains(&("cpu-limit", 0)), "every kind is reported, zero or not");
    }
}
