//! The `timers` import: one connection's one-shot timers, kept in deadline
//! order in its store. No task and no tokio timer per timer: the CSA sleeps
//! until the earliest deadline (one `Sleep`, made on first use), and a
//! connection with no timer pending pays nothing.

use crate::bindings::pier::server::timers::{Host, TimerError};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// Longest a timer may be set for: far enough for any protocol, near enough
/// that a deadline never overflows the clock.
const MAX_AFTER: Duration = Duration::from_secs(365 * 24 * 3600);

/// A connection's pending timers.
pub(crate) struct Client {
    /// By deadline, then id (ids grow, so equal deadlines fire in order).
    due: BTreeSet<(Instant, u64)>,
    /// The deadline of each pending id, to cancel by id.
    deadlines: BTreeMap<u64, Instant>,
    next_id: u64,
    max: u32,
}

impl Client {
    pub(crate) fn new(max: u32) -> Self {
        Self { due: BTreeSet::new(), deadlines: BTreeMap::new(), next_id: 1, max }
    }

    /// The earliest pending deadline.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.due.first().map(|&(at, _)| at)
    }

    /// Takes the earliest timer due by `now`, if any.
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<u64> {
        let &(at, id) = self.due.first()?;
        if at > now {
            return None;
        }
        self.due.pop_first();
        self.deadlines.remove(&id);
        Some(id)
    }
}

impl Host for Client {
    fn set(&mut self, after_ms: u64) -> Result<u64, TimerError> {
        if self.deadlines.len() >= self.max as usize {
            return Err(TimerError::TooMany(self.max));
        }
        let at = Instant::now() + Duration::from_millis(after_ms).min(MAX_AFTER);
        let id = self.next_id;
        self.next_id += 1;
        self.due.insert((at, id));
        self.deadlines.insert(id, at);
        Ok(id)
    }

    fn cancel(&mut self, id: u64) -> bool {
        match self.deadlines.remove(&id) {
            Some(at) => self.due.remove(&(at, id)),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_deadline_order_and_cancel_by_id() {
        let start = Instant::now();
        let ms = |n| start + Duration::from_millis(n);
        let mut t = Client::new(3);
        let late = t.set(300_000).unwrap();
        let early = t.set(100_000).unwrap();
        let cancelled = t.set(200_000).unwrap();
        assert!(matches!(t.set(1), Err(TimerError::TooMany(3))), "the budget holds");
        assert!(t.cancel(cancelled));
        assert!(!t.cancel(cancelled), "once");
        assert!(!t.cancel(999));
        assert_eq!(t.take_due(ms(99_000)), None, "nothing is due yet");
        assert_eq!(t.take_due(ms(100_500)), Some(early));
        assert_eq!(t.take_due(ms(100_500)), None);
        assert_eq!(t.take_due(ms(400_000)), Some(late));
        assert_eq!(t.next_deadline(), None);
        assert!(t.set(u64::MAX).is_ok(), "a huge delay is capped, not an overflow");
    }
}
