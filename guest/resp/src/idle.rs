//! Redis's `timeout`: a client that sends nothing (and reads nothing) for
//! that many seconds is closed, without a reply. `0`, the default, is never.
//!
//! Every read (and every `writable`, a client reading a long reply)
//! restarts the deadline, which is a clock read and no host call: see
//! `alarm`. A connection with no timeout pays nothing at all.

use pier_guest::alarm::{Alarm, Timers};

/// The listener's `config` `timeout`, in seconds, and a warning if it is
/// not a number of seconds (then 0, as Redis's default).
pub fn setting(get: impl Fn(&str) -> Option<String>) -> (u64, Option<String>) {
    match get("timeout") {
        None => (0, None),
        Some(text) => match text.trim().parse::<u64>() {
            // Past this, milliseconds would overflow; a year is never anyway.
            Ok(secs) => (secs.min(u64::MAX / 1000), None),
            Err(_) => (0, Some(format!("config timeout {text:?} is not a number of seconds; using 0 (never)"))),
        },
    }
}

#[derive(Debug)]
pub struct Idle {
    ms: u64,
    alarm: Alarm,
}

impl Idle {
    /// The timeout of a connection accepted at time 0 (milliseconds on the
    /// handler's monotonic clock); None for `timeout 0`.
    pub fn new(secs: u64, timers: &mut impl Timers) -> Option<Idle> {
        let mut idle = Idle { ms: secs.checked_mul(1000).filter(|&ms| ms > 0)?, alarm: Alarm::default() };
        idle.active(0, timers);
        Some(idle)
    }

    /// The client did something at `now`: idle from then.
    pub fn active(&mut self, now: u64, timers: &mut impl Timers) {
        self.alarm.set(now.saturating_add(self.ms), now, timers);
    }

    /// Timer `id` fired at `now`: true when the client has been idle for the
    /// timeout (close it).
    pub fn fired(&mut self, id: u64, now: u64, timers: &mut impl Timers) -> bool {
        self.alarm.fired(id, now, timers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_guest::alarm::fake::FakeTimers;

    #[test]
    fn the_setting_is_seconds_and_defaults_to_never() {
        assert_eq!(setting(|_| None), (0, None));
        assert_eq!(setting(|_| Some("1".into())), (1, None));
        assert_eq!(setting(|_| Some(" 300 ".into())), (300, None));
        let (secs, warning) = setting(|_| Some("5m".into()));
        assert_eq!(secs, 0);
        assert!(warning.unwrap().contains("not a number of seconds"));
        assert_eq!(setting(|_| Some("-1".into())).0, 0);
        let mut timers = FakeTimers::default();
        assert!(Idle::new(0, &mut timers).is_none());
        assert!(timers.pending.is_empty(), "timeout 0: no timer");
        assert!(Idle::new(u64::MAX / 1000, &mut timers).is_some());
    }

    #[test]
    fn a_busy_client_is_kept_and_closed_a_timeout_after_its_last_command() {
        let mut timers = FakeTimers::default();
        let mut idle = Idle::new(1, &mut timers).unwrap();
        let (id, after) = timers.only();
        assert_eq!(after, 1001, "past the second");
        for now in (300..=900).step_by(300) {
            idle.active(now, &mut timers);
        }
        assert_eq!(timers.sets, 1, "a command is no host call");
        assert!(!idle.fired(timers.fire(id), 1001, &mut timers), "active at 900");
        let (id, after) = timers.only();
        assert_eq!(after, 900);
        assert!(idle.fired(timers.fire(id), 1901, &mut timers));
    }

    #[test]
    fn an_idle_client_is_closed_after_the_timeout() {
        let mut timers = FakeTimers::default();
        let mut idle = Idle::new(2, &mut timers).unwrap();
        let (id, _) = timers.only();
        assert_eq!(timers.only().1, 2001, "past the two seconds");
        assert!(idle.fired(timers.fire(id), 2001, &mut timers));
        assert!(!idle.fired(id, 2001, &mut timers), "once");
    }
}
