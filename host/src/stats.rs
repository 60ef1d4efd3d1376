//! What each listener counts: connections accepted, open and ended (by
//! reason), bytes received and sent. A connection counts its own bytes in
//! its [`Link`] (written by its task alone, so no two threads contend for
//! one counter on the hot path); the listener adds them up only when asked
//! (a scrape), and keeps the sum of the connections that ended. Both happen
//! under one lock, so a counter never goes back when a connection ends.

use crate::events::{REASON_KINDS, ShutdownReason};
use crate::outbox::{Link, WriteState};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The inbox calls, as `pier_call_seconds{call}` names them.
pub const CALLS: [&str; 8] =
    ["new-csa", "data", "end-of-input", "writable", "message", "timer", "upstream", "shutdown-csa"];

/// Upper bounds of the time histograms' buckets, in nanoseconds (5 µs to
/// 1 s; one more bucket holds the rest).
const BOUNDS_NS: [u64; 17] = [
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
];
const BUCKETS: usize = BOUNDS_NS.len() + 1;

fn bucket(d: Duration) -> usize {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    BOUNDS_NS.partition_point(|&b| b < ns)
}

/// A time histogram shared by a listener's connections.
#[derive(Default)]
struct Histogram {
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Histogram {
    fn add(&self, bucket: usize, n: u64, ns: u64) {
        self.counts[bucket].fetch_add(n, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    fn read(&self) -> Times {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
        let bounds = BOUNDS_NS.iter().map(|&b| b as f64 / 1e9).chain([f64::MAX]);
        Times {
            count: counts.iter().sum(),
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            buckets: bounds.zip(counts).collect(),
        }
    }
}

/// A histogram as a scrape reads it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Times {
    pub count: u64,
    pub sum_seconds: f64,
    /// Each bucket's upper bound in seconds (`f64::MAX`: the rest) and the
    /// observations in it (not cumulative).
    pub buckets: Vec<(f64, u64)>,
}

/// One connection's call times, kept in plain integers by its task and
/// added to its listener's histograms every [`FOLD_EVERY`] calls and when
/// it ends: no atomic per call.
#[derive(Default)]
pub(crate) struct CallTimes {
    counts: [[u32; BUCKETS]; CALLS.len()],
    sum_ns: [u64; CALLS.len()],
    unfolded: u32,
}

/// Calls a connection times before it adds them to its listener's.
const FOLD_EVERY: u32 = 256;

impl CallTimes {
    /// Counts one call of kind `call` (an index into [`CALLS`]); true when
    /// it is time to [`ListenerStats::fold`].
    pub(crate) fn observe(&mut self, call: usize, took: Duration) -> bool {
        self.counts[call][bucket(took)] += 1;
        self.sum_ns[call] += u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.unfolded += 1;
        self.unfolded >= FOLD_EVERY
    }
}

/// One listener's counters.
#[derive(Default)]
pub(crate) struct ListenerStats {
    ends: [AtomicU64; REASON_KINDS.len()],
    live: Mutex<Live>,
    calls: [Histogram; CALLS.len()],
    instantiate: Histogram,
}

#[derive(Default)]
struct Live {
    accepted: u64,
    conns: HashMap<u64, LiveConn>,
    /// What the connections that ended received and sent.
    ended_received: u64,
    ended_sent: u64,
}

struct LiveConn {
    link: Arc<Link>,
    peer: SocketAddr,
    since: Instant,
}

/// One live connection, as the admin view lists it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Connection {
    pub id: u64,
    pub peer: String,
    pub age_seconds: f64,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    /// Bytes in its outbox, not yet taken by the socket.
    pub queued_bytes: usize,
    /// `open`, `finishing` (flushing, then closing) or `closed`.
    pub state: &'static str,
    pub reading_paused: bool,
}

/// The counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub accepted: u64,
    pub open: u64,
    pub received_bytes: u64,
    pub sent_bytes: u64,
    /// Connections ended, by reason kind ([`ShutdownReason::kind`]).
    pub ends: Vec<(&'static str, u64)>,
    /// Inbox call times, by call ([`CALLS`]), as folded so far.
    pub calls: Vec<(&'static str, Times)>,
    pub instantiate: Times,
}

impl ListenerStats {
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a connection in (accepted, open) until the guard is dropped;
    /// then its bytes join the ended connections' sums.
    pub(crate) fn connect(self: &Arc<Self>, id: u64, link: &Arc<Link>, peer: SocketAddr) -> Counted {
        let mut live = self.live();
        live.accepted += 1;
        live.conns.insert(id, LiveConn { link: link.clone(), peer, since: Instant::now() });
        Counted { stats: self.clone(), id }
    }

    /// Adds a connection's call times to the listener's, and clears them.
    pub(crate) fn fold(&self, times: &mut CallTimes) {
        for (call, counts) in times.counts.iter().enumerate() {
            let mut sum = times.sum_ns[call];
            for (bucket, &n) in counts.iter().enumerate().filter(|(_, n)| **n > 0) {
                self.calls[call].add(bucket, u64::from(n), std::mem::take(&mut sum));
            }
        }
        *times = CallTimes::default();
    }

    /// How long a connection's instance took to make (store, instance).
    pub(crate) fn instantiated(&self, took: Duration) {
        self.instantiate.add(bucket(took), 1, u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }

    pub(crate) fn ended(&self, reason: &ShutdownReason) {
        self.ends[reason.kind_index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Rings `bits` on every live connection's doorbell (a listener removed
    /// by a reload tells its connections to finish, then to close).
    pub(crate) fn ring_all(&self, bits: u8) {
        for conn in self.live().conns.values() {
            conn.link.doorbell.ring(bits);
        }
    }

    /// The live connections, by id.
    pub(crate) fn connections(&self) -> Vec<Connection> {
        let live = self.live();
        let mut list: Vec<Connection> = live
            .conns
            .iter()
            .map(|(&id, c)| {
                let outbox = c.link.outbox();
                Connection {
                    id,
                    peer: c.peer.to_string(),
                    age_seconds: c.since.elapsed().as_secs_f64(),
                    received_bytes: c.link.received.load(Ordering::Relaxed),
                    sent_bytes: outbox.sent,
                    queued_bytes: outbox.queued(),
                    state: match outbox.state {
                        WriteState::Open => "open",
                        WriteState::Finishing => "finishing",
                        WriteState::Closed => "closed",
                    },
                    reading_paused: outbox.reading_paused,
                }
            })
            .collect();
        list.sort_by_key(|c| c.id);
        list
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let live = self.live();
        let (mut received, mut sent) = (live.ended_received, live.ended_sent);
        for conn in live.conns.values() {
            received += conn.link.received.load(Ordering::Relaxed);
            sent += conn.link.outbox().sent;
        }
        Snapshot {
            accepted: live.accepted,
            open: live.conns.len() as u64,
            received_bytes: received,
            sent_bytes: sent,
            ends: REASON_KINDS.iter().zip(&self.ends).map(|(&k, n)| (k, n.load(Ordering::Relaxed))).collect(),
            calls: CALLS.iter().zip(&self.calls).map(|(&c, h)| (c, h.read())).collect(),
            instantiate: self.instantiate.read(),
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
        if let Some(conn) = live.conns.remove(&self.id) {
            live.ended_received += conn.link.received.load(Ordering::Relaxed);
            live.ended_sent += conn.link.outbox().sent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

    #[test]
    fn bytes_of_live_and_ended_connections_add_up_and_never_go_back() {
        let stats = Arc::new(ListenerStats::default());
        let a = Link::new(10, 5);
        let b = Link::new(10, 5);
        let counted_a = stats.connect(1, &a, PEER);
        let _counted_b = stats.connect(2, &b, PEER);
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

    #[test]
    fn call_times_fold_into_the_listener_histogram() {
        let stats = ListenerStats::default();
        let mut times = CallTimes::default();
        assert!(!times.observe(1, Duration::from_micros(3)));
        times.observe(1, Duration::from_micros(7));
        times.observe(1, Duration::from_secs(3));
        assert_eq!(stats.snapshot().calls[1].1.count, 0, "nothing before the fold");
        stats.fold(&mut times);
        let data = &stats.snapshot().calls[1].1;
        assert_eq!(data.count, 3);
        assert_eq!(data.buckets[0], (5e-6, 1), "3 µs in the first bucket");
        assert_eq!(data.buckets[1], (1e-5, 1), "7 µs in the second");
        assert_eq!(data.buckets.last(), Some(&(f64::MAX, 1)), "3 s past the last bound");
        assert!((data.sum_seconds - 3.00001).abs() < 1e-9);
        stats.fold(&mut times);
        assert_eq!(stats.snapshot().calls[1].1.count, 3, "a fold clears what it added");
    }
}
