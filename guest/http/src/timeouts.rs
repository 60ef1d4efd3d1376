//! The connection's two timeouts, as nginx and hyper have them:
//!
//! - `header-timeout` (default 10 s): a request head must be complete this
//!   long after its first byte arrived (after the connection was accepted,
//!   for the first request), or the connection gets `408 Request Timeout`
//!   and closes. Bytes that trickle in do not extend it: that is what keeps
//!   a slowloris client from holding a connection with a byte now and then.
//! - `keepalive-timeout` (default 75 s, nginx's): a connection idle between
//!   requests this long is closed, without a response.
//!
//! `0` turns either off. A request body has no timeout of its own here (the
//! listener's `idle-timeout` still bounds a silent peer).
//!
//! Cost: on a keep-alive connection answered one read at a time, each read
//! restarts the keep-alive deadline, which is a clock read and no host call
//! (see `alarm`); a head split across reads sets a timer when it begins.

use crate::framing::Phase;
use pier_guest::alarm::{Alarm, Timers, parse_duration};

/// What the listener's `config` table chose, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub header_ms: u64,
    pub keepalive_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { header_ms: 10_000, keepalive_ms: 75_000 }
    }
}

impl Settings {
    /// `header-timeout` and `keepalive-timeout` (`10s`, `500ms`, `1m`, or
    /// milliseconds), and a warning for each value not understood (its
    /// default is used).
    pub fn from_config(get: impl Fn(&str) -> Option<String>) -> (Settings, Vec<String>) {
        let mut settings = Settings::default();
        let mut warnings = Vec::new();
        for (key, value) in
            [("header-timeout", &mut settings.header_ms), ("keepalive-timeout", &mut settings.keepalive_ms)]
        {
            if let Some(text) = get(key) {
                match parse_duration(&text) {
                    Some(ms) => *value = ms,
                    None => warnings.push(format!("config {key} {text:?} is not a duration; using {}ms", *value)),
                }
            }
        }
        (settings, warnings)
    }
}

/// Which timeout ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Answer 408 and close.
    Header,
    /// Close, without a response.
    KeepAlive,
}

/// What the alarm watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// The head that began after `heads` heads.
    Header {
        heads: u64,
    },
    KeepAlive,
}

#[derive(Debug)]
pub struct Timeouts {
    settings: Settings,
    alarm: Alarm,
    watch: Option<Watch>,
}

impl Timeouts {
    /// A connection accepted at time 0: the first request's head is due
    /// within `header-timeout` from now.
    pub fn new(settings: Settings, timers: &mut impl Timers) -> Self {
        let mut t = Timeouts { settings, alarm: Alarm::default(), watch: None };
        t.watch(Watch::Header { heads: 0 }, 0, timers);
        t
    }

    /// After a read: `phase` and `heads` are the connection's
    /// (`Conn::phase`, `Conn::heads`); `now` is read only if a deadline
    /// starts.
    pub fn after_read(&mut self, phase: Phase, heads: u64, now: impl FnOnce() -> u64, timers: &mut impl Timers) {
        match phase {
            // A request was answered in this read: idle from now.
            Phase::Idle => self.watch(Watch::KeepAlive, now(), timers),
            // A head that began earlier keeps its deadline, however many
            // bytes of it came since.
            Phase::Head if self.watch == Some(Watch::Header { heads }) => {}
            Phase::Head => self.watch(Watch::Header { heads }, now(), timers),
            Phase::Body | Phase::Done => {
                self.watch = None;
                self.alarm.clear();
            }
        }
    }

    /// Timer `id` fired at `now`: the timeout that ran out, if one did.
    pub fn fired(&mut self, id: u64, now: u64, timers: &mut impl Timers) -> Option<Expired> {
        if !self.alarm.fired(id, now, timers) {
            return None;
        }
        match self.watch.take()? {
            Watch::Header { .. } => Some(Expired::Header),
            Watch::KeepAlive => Some(Expired::KeepAlive),
        }
    }

    fn watch(&mut self, watch: Watch, now: u64, timers: &mut impl Timers) {
        let ms = match watch {
            Watch::Header { .. } => self.settings.header_ms,
            Watch::KeepAlive => self.settings.keepalive_ms,
        };
        if ms == 0 {
            self.watch = None;
            self.alarm.clear();
        } else {
            self.watch = Some(watch);
            self.alarm.set(now.saturating_add(ms), now, timers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::Conn;
    use pier_guest::alarm::fake::FakeTimers;

    /// A connection with its timeouts and the fake host around it; `now`
    /// is the fake clock (milliseconds since the connection was accepted).
    struct Client {
        conn: Conn,
        timeouts: Timeouts,
        timers: FakeTimers,
        now: u64,
        sent: Vec<u8>,
        closed: bool,
        clock_reads: u32,
    }

    impl Client {
        fn new(settings: Settings) -> Self {
            let mut timers = FakeTimers::default();
            let timeouts = Timeouts::new(settings, &mut timers);
            Client { conn: Conn::default(), timeouts, timers, now: 0, sent: Vec::new(), closed: false, clock_reads: 0 }
        }

        /// What `on_data` does.
        fn send(&mut self, bytes: &[u8]) {
            self.closed |= self.conn.feed(bytes, || 0, &mut self.sent);
            let (phase, heads) = (self.conn.phase(), self.conn.heads());
            let (now, reads) = (self.now, &mut self.clock_reads);
            let now = || {
                *reads += 1;
                now
            };
            self.timeouts.after_read(phase, heads, now, &mut self.timers);
        }

        /// Lets `ms` pass, firing every timer due, as the host does; what
        /// `on_timer` does for each.
        fn wait(&mut self, ms: u64) {
            let until = self.now + ms;
            while let Some(&(id, after)) = self.timers.pending.iter().min_by_key(|(_, after)| *after) {
                if self.now + after > until || self.closed {
                    break;
                }
                self.now += after;
                for timer in &mut self.timers.pending {
                    timer.1 -= after;
                }
                let id = self.timers.fire(id);
                match self.timeouts.fired(id, self.now, &mut self.timers) {
                    Some(Expired::Header) => {
                        self.conn.time_out(0, &mut self.sent);
                        self.closed = true;
                    }
                    Some(Expired::KeepAlive) => self.closed = true,
                    None => {}
                }
            }
            if !self.closed {
                for timer in &mut self.timers.pending {
                    timer.1 -= until - self.now;
                }
                self.now = until;
            }
        }

        fn text(&self) -> String {
            String::from_utf8_lossy(&self.sent).into_owned()
        }
    }

    const HELLO: &[u8] = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";
    const SHORT: Settings = Settings { header_ms: 1000, keepalive_ms: 300 };

    #[test]
    fn settings_from_config() {
        let table = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
        };
        assert_eq!(Settings::from_config(table(&[])), (Settings::default(), vec![]));
        let (s, warnings) = Settings::from_config(table(&[("header-timeout", "1s"), ("keepalive-timeout", "300")]));
        assert_eq!((s, warnings.len()), (SHORT, 0));
        let (s, warnings) = Settings::from_config(table(&[("header-timeout", "soon"), ("keepalive-timeout", "0")]));
        assert_eq!(s, Settings { header_ms: 10_000, keepalive_ms: 0 });
        assert_eq!(warnings, ["config header-timeout \"soon\" is not a duration; using 10000ms"]);
    }

    #[test]
    fn a_trickled_head_gets_408_at_its_first_deadline() {
        let mut c = Client::new(SHORT);
        c.send(b"GET / HTTP/1.1\r\n");
        for _ in 0..4 {
            c.wait(200);
            c.send(b"X");
        }
        assert_eq!(c.timers.sets, 1, "the timer set at connect, and no other");
        assert!(c.sent.is_empty() && !c.closed);
        c.wait(200);
        assert!(!c.closed, "not before the second is past");
        c.wait(1);
        assert!(c.closed && c.text().starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{}", c.text());
        assert_eq!(c.now, 1001, "a second after connecting, bytes or not");
    }

    #[test]
    fn a_silent_connection_gets_408_and_a_later_head_has_its_own_deadline() {
        let mut c = Client::new(SHORT);
        c.wait(5000);
        assert!(c.closed && c.text().starts_with("HTTP/1.1 408 "), "{}", c.text());
        assert_eq!(c.now, 1001);
        // The second head of a keep-alive connection: from its first byte.
        let mut c = Client::new(Settings { header_ms: 1000, keepalive_ms: 5000 });
        c.send(HELLO);
        c.wait(3000);
        c.send(b"GET /");
        c.wait(999);
        c.send(b"hello");
        c.wait(1);
        assert!(!c.closed);
        c.wait(1);
        assert!(c.closed && c.text().ends_with("request timeout\n"), "{}", c.text());
        assert_eq!(c.now, 4001);
    }

    #[test]
    fn an_idle_keep_alive_connection_closes_without_a_response() {
        let mut c = Client::new(SHORT);
        c.send(HELLO);
        let answered = c.sent.len();
        c.wait(300);
        assert!(!c.closed);
        c.wait(1);
        assert!(c.closed);
        assert_eq!(c.sent.len(), answered, "nothing more sent");
    }

    #[test]
    fn requests_every_100ms_keep_the_connection_at_no_host_call_per_request() {
        let mut c = Client::new(Settings::default());
        for _ in 0..1000 {
            c.send(HELLO);
            c.wait(100);
        }
        assert!(!c.closed);
        assert_eq!(c.text().matches("HTTP/1.1 200 OK").count(), 1000);
        // One timer at connect, set again when it fires (10 s, then every
        // 75 s): 100 s of requests took 3, and one clock read per read.
        assert_eq!((c.timers.sets, c.timers.cancels), (3, 0));
        assert_eq!(c.clock_reads, 1000);
        c.wait(75_000);
        assert!(c.closed, "then idle for the keep-alive timeout");
    }

    #[test]
    fn a_body_has_no_deadline_and_an_earlier_deadline_replaces_the_timer() {
        let mut c = Client::new(Settings { header_ms: 1000, keepalive_ms: 5000 });
        c.send(HELLO);
        c.wait(100);
        c.send(b"POST / HTTP/1.1\r\nHost: x\r\n");
        assert_eq!(c.timers.sets, 1, "the pending timer fires before this head's deadline: no call");
        c.send(b"Content-Length: 3\r\n\r\n");
        c.wait(5000);
        assert!(!c.closed, "reading a body: no timeout here");
        c.send(b"abc");
        assert!(c.text().contains("405 Method Not Allowed"));
        assert_eq!(c.timers.sets, 2, "idle, and no timer pending: one set");
        c.wait(200);
        c.send(b"GET /hello HT");
        assert_eq!((c.timers.sets, c.timers.cancels), (3, 1), "the keep-alive timer replaced by the head's");
        c.wait(1000);
        assert!(!c.closed);
        c.wait(1);
        assert!(c.closed && c.text().ends_with("request timeout\n"));
    }

    #[test]
    fn zero_turns_a_timeout_off() {
        let mut c = Client::new(Settings { header_ms: 0, keepalive_ms: 0 });
        c.send(b"GET / HTTP/1.1\r\n");
        c.wait(1_000_000);
        c.send(b"Host: x\r\n\r\n");
        c.wait(1_000_000);
        assert!(!c.closed && c.timers.sets == 0);
        let mut c = Client::new(Settings { header_ms: 1000, keepalive_ms: 0 });
        c.send(HELLO);
        c.wait(1_000_000);
        assert!(!c.closed);
        c.send(b"G");
        c.wait(1001);
        assert!(c.closed);
    }

    #[test]
    fn pipelined_requests_ending_in_a_partial_head_start_its_deadline() {
        let mut c = Client::new(SHORT);
        c.wait(900);
        c.send(&[HELLO, HELLO, b"GET /hel"].concat());
        c.wait(1000);
        assert!(!c.closed, "a new head, a new deadline: 1900");
        c.wait(1);
        assert_eq!(c.text().matches("HTTP/1.1 200 OK").count(), 2);
        assert!(c.closed && c.text().ends_with("request timeout\n"));
    }
}
