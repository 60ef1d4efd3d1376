//! A protocol timeout on the host's one-shot `timers`: one deadline at a
//! time, watched by at most one pending host timer.
//!
//! Moving the deadline later costs no host call: the pending timer fires at
//! the earlier time, finds the deadline not passed yet and is set again for
//! what remains. Only a deadline earlier than the pending timer costs a
//! `cancel` and a `set`. So a deadline restarted on every request or every
//! read (a keep-alive timeout) costs a clock read, not two host calls.
//!
//! Times are whole milliseconds on the handler's monotonic clock, rounded
//! down, so a deadline `at` (computed as "now + timeout") counts as passed
//! only once the clock reads past it, `now > at`: never before the timeout
//! has run from the true time it started, at most a millisecond after.
//!
//! Pure: the times are given by the caller and the host's timers are
//! behind [`Timers`] ([`HostTimers`] in a handler, [`fake::FakeTimers`] in
//! a native test), so a handler's timeouts are tested without a host.

/// The host's `timers` interface, or a fake of it.
pub trait Timers {
    /// `timers.set`: the id of a timer due in `after_ms`, or None if the
    /// host refused it (the listener's `max-timers`).
    fn set(&mut self, after_ms: u64) -> Option<u64>;
    /// `timers.cancel`.
    fn cancel(&mut self, id: u64);
}

#[derive(Debug, Default)]
pub struct Alarm {
    /// The watched deadline, passed once the clock reads past it; None when
    /// nothing is watched.
    deadline: Option<u64>,
    /// The pending host timer: its id and when it fires.
    pending: Option<(u64, u64)>,
    /// The host refused a timer: this handler holds no other, so the
    /// listener allows none (`max-timers = 0`) and the timeout is off; it
    /// is not asked again on every read.
    refused: bool,
}

impl Alarm {
    /// Watches the deadline `at` (instead of any earlier one); `now` is the
    /// time now.
    pub fn set(&mut self, at: u64, now: u64, timers: &mut impl Timers) {
        self.deadline = Some(at);
        match self.pending {
            Some((_, fires)) if fires <= at.saturating_add(1) => {}
            Some((id, _)) => {
                timers.cancel(id);
                self.arm(at, now, timers);
            }
            None => self.arm(at, now, timers),
        }
    }

    /// Stops watching. A pending timer stays pending (it is ignored when it
    /// fires, or serves the next deadline), so this makes no host call.
    pub fn clear(&mut self) {
        self.deadline = None;
    }

    /// The deadline watched.
    #[cfg(test)]
    pub fn deadline(&self) -> Option<u64> {
        self.deadline
    }

    /// Timer `id` fired at `now`: true when it is this alarm's and the
    /// deadline has passed (the alarm then watches nothing). A deadline not
    /// yet due is watched on with a new timer.
    pub fn fired(&mut self, id: u64, now: u64, timers: &mut impl Timers) -> bool {
        if self.pending.is_none_or(|(pending, _)| pending != id) {
            return false;
        }
        self.pending = None;
        match self.deadline {
            Some(at) if at < now => {
                self.deadline = None;
                true
            }
            Some(at) => {
                self.arm(at, now, timers);
                false
            }
            None => false,
        }
    }

    /// Sets a timer for the first millisecond past `at`.
    fn arm(&mut self, at: u64, now: u64, timers: &mut impl Timers) {
        if !self.refused {
            let due = at.saturating_add(1);
            self.pending = timers.set(due.saturating_sub(now)).map(|id| (id, due.max(now)));
            self.refused = self.pending.is_none();
        }
    }
}

/// A duration in milliseconds: `10s`, `500ms`, `5m`, `1h`, or a plain
/// number of milliseconds; terms add up (`1m30s`). None if not one.
pub fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    let mut rest = text;
    let mut total = None::<u64>;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let n: u64 = rest[..digits].parse().ok()?;
        rest = rest[digits..].trim_start();
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit: u64 = match &rest[..letters] {
            "ms" => 1,
            "s" | "sec" => 1000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        total = Some(total.unwrap_or(0).checked_add(n.checked_mul(unit)?)?);
        rest = rest[letters..].trim_start();
    }
    total
}

impl<T: Timers + ?Sized> Timers for &mut T {
    fn set(&mut self, after_ms: u64) -> Option<u64> {
        (**self).set(after_ms)
    }
    fn cancel(&mut self, id: u64) {
        (**self).cancel(id);
    }
}

/// The host's `timers`, as [`Timers`]. A refusal (the listener's
/// `max-timers`) is logged; the [`Alarm`] then stops asking.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostTimers;

impl Timers for HostTimers {
    fn set(&mut self, after_ms: u64) -> Option<u64> {
        match crate::timers::set(after_ms) {
            Ok(id) => Some(id),
            Err(crate::timers::TimerError::TooMany(max)) => {
                eprintln!("timers refused (max-timers is {max}): this connection's timeouts are off");
                None
            }
        }
    }
    fn cancel(&mut self, id: u64) {
        crate::timers::cancel(id);
    }
}

pub mod fake {
    //! A fake of the host's timers, for native tests of a handler's
    //! timeouts.

    use super::Timers;

    /// Records the calls; `refuse` makes `set` fail, as at `max-timers`.
    #[derive(Debug, Default)]
    pub struct FakeTimers {
        /// Pending timers: id and delay asked for.
        pub pending: Vec<(u64, u64)>,
        pub sets: u32,
        pub cancels: u32,
        pub refuse: bool,
        next: u64,
    }

    impl FakeTimers {
        /// The one pending timer: its id and delay.
        pub fn only(&self) -> (u64, u64) {
            assert_eq!(self.pending.len(), 1, "{:?}", self.pending);
            self.pending[0]
        }

        /// The host calls `timer(id)`: the timer is no longer pending.
        pub fn fire(&mut self, id: u64) -> u64 {
            let before = self.pending.len();
            self.pending.retain(|&(p, _)| p != id);
            assert_eq!(self.pending.len() + 1, before, "timer {id} was not pending");
            id
        }
    }

    impl Timers for FakeTimers {
        fn set(&mut self, after_ms: u64) -> Option<u64> {
            if self.refuse {
                return None;
            }
            self.sets += 1;
            self.next += 1;
            self.pending.push((self.next, after_ms));
            Some(self.next)
        }
        fn cancel(&mut self, id: u64) {
            self.cancels += 1;
            self.pending.retain(|&(p, _)| p != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::FakeTimers;
    use super::*;

    #[test]
    fn a_later_deadline_costs_no_host_call_and_is_rearmed_when_the_timer_fires() {
        let (mut alarm, mut timers) = (Alarm::default(), FakeTimers::default());
        alarm.set(1000, 0, &mut timers);
        let (id, after) = timers.only();
        assert_eq!(after, 1001, "past 1000");
        for now in [100, 200, 700] {
            alarm.set(now + 1000, now, &mut timers);
        }
        assert_eq!((timers.sets, timers.cancels), (1, 0), "moved later: no host call");
        assert!(!alarm.fired(timers.fire(id), 1001, &mut timers), "not due yet: 1700");
        let (id, after) = timers.only();
        assert_eq!(after, 700, "set again for what remains");
        assert!(alarm.fired(timers.fire(id), 1701, &mut timers));
        assert_eq!(alarm.deadline(), None);
        assert!(timers.pending.is_empty());
    }

    #[test]
    fn an_earlier_deadline_replaces_the_pending_timer() {
        let (mut alarm, mut timers) = (Alarm::default(), FakeTimers::default());
        alarm.set(75_000, 0, &mut timers);
        alarm.set(10_500, 500, &mut timers);
        assert_eq!((timers.sets, timers.cancels), (2, 1));
        let (id, after) = timers.only();
        assert_eq!(after, 10_001);
        assert!(!alarm.fired(id - 1, 10_501, &mut timers), "the cancelled timer is not ours");
        assert!(alarm.fired(timers.fire(id), 10_501, &mut timers));
    }

    #[test]
    fn a_cleared_alarm_ignores_its_timer_and_a_refused_timer_is_not_asked_again() {
        let (mut alarm, mut timers) = (Alarm::default(), FakeTimers::default());
        alarm.set(50, 0, &mut timers);
        alarm.clear();
        let (id, _) = timers.only();
        assert!(!alarm.fired(timers.fire(id), 60, &mut timers));
        assert!(timers.pending.is_empty(), "nothing to watch, nothing set again");
        assert!(!alarm.fired(7, 60, &mut timers), "not ours");
        timers.refuse = true;
        alarm.set(100, 60, &mut timers);
        assert!(timers.pending.is_empty());
        timers.refuse = false;
        alarm.set(200, 70, &mut timers);
        assert!(timers.pending.is_empty() && timers.sets == 1, "once refused, not asked again");
    }

    #[test]
    fn durations() {
        let cases = [
            ("10s", Some(10_000)),
            ("500ms", Some(500)),
            ("1500", Some(1500)),
            (" 5m ", Some(300_000)),
            ("1h", Some(3_600_000)),
            ("1m30s", Some(90_000)),
            ("2 s", Some(2000)),
            ("0", Some(0)),
            ("0s", Some(0)),
            ("", None),
            ("s", None),
            ("10x", None),
            ("-1s", None),
            ("1.5s", None),
            ("99999999999999999999", None),
            ("9999999999999999h", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), want, "{text:?}");
        }
    }
}
