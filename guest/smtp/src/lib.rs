//! An SMTP server on pier (a subset of RFC 5321, with PIPELINING, SIZE,
//! 8BITMIME, ENHANCEDSTATUSCODES and STARTTLS per RFC 3207) that delivers
//! every accepted message into the listener's key-value store, under
//! `mail/<n>` (`n` from the store's atomic counter `mail/count`), and logs
//! one line for it:
//!
//! ```text
//! delivered mail/<n> from=<addr> to=<addr>[,<addr>...] bytes=<N> tls=<yes|no>
//! ```
//!
//! The listener's `config` table: `hostname` (default `localhost`),
//! `max-size` (default 10 MiB), `max-recipients` (default 100),
//! `command-timeout` (default `5m`, RFC 5321 4.5.3.2; `0` is none: see
//! below), and `starttls = "true"` when the listener itself has `tls-cert`, `tls-key`
//! and `starttls = true`. STARTTLS needs both: the guest cannot ask the host
//! whether the listener offers it without starting it, and once the 220
//! has gone out in plaintext a refusal can no longer be answered (the peer
//! is already in its handshake), so the guest offers STARTTLS only when the
//! operator says so; if `start-tls` still fails, the connection is closed.
//!
//! - `session`: the conversation, without host calls (tested natively).
//! - `data`: the DATA phase's framing and dot-stuffing.
//! - `address`: envelope path syntax.
//!
//! Memory per connection is bounded: a command line is at most 1000 bytes
//! (longer ones are dropped as they arrive and refused), a message is kept
//! up to `max-size` and only counted past it (so `max-size` must fit the
//! listener's `memory-limit`, with room to spare: the buffer grows by
//! doubling); replies are gathered per `data` call and reading pauses while
//! the SDK holds any back.
//!
//! Timeout: when no complete command arrives within `command-timeout` of
//! the last one (of the greeting, for the first), the peer gets `421 4.4.2
//! <hostname> Error: timeout exceeded` and the connection finishes. Bytes
//! of a command line still incomplete do not restart it (a peer trickling a
//! byte at a time gets no more time than a silent one). During DATA each
//! chunk received restarts it: the RFC's data block timeout (3 minutes) and
//! its DATA termination timeout are served by the same setting, for
//! simplicity. It restarts when TLS comes on too. (See `alarm` for what it
//! costs: a clock read per read, no host call.)
//!
//! STARTTLS: the 220 is sent, and `start-tls` called once the SDK holds
//! nothing back (at once, or on `writable`); the SDK refuses it before,
//! since the 220 must reach the host to go out in plaintext. Everything the
//! peer sent after the STARTTLS line, in the same `data` call or until TLS
//! is on, is dropped unread (CVE-2011-0411), and the session starts over:
//! EHLO again, STARTTLS no longer offered (RFC 3207 4.2).

mod address;
mod data;
mod session;

use pier_guest::alarm::{Alarm, HostTimers, Timers};
use pier_guest::keyvalue::atomics;
use pier_guest::keyvalue::store::{self, Bucket, Error};
use pier_guest::{ConnectionInfo, Handler, Outbox, ShutdownReason, config};
use session::{Delivery, Mailbox, Next, Refused, Session, Settings};
use std::sync::OnceLock;
use std::time::Instant;

/// The listener's store, opened at the first delivery.
struct Store {
    bucket: Option<Bucket>,
}

fn describe(e: &Error) -> String {
    match e {
        Error::NoSuchStore => "no such store".into(),
        Error::AccessDenied => "access denied".into(),
        Error::Other(text) => text.clone(),
    }
}

impl Store {
    fn put(&mut self, message: &[u8]) -> Result<u64, Error> {
        if self.bucket.is_none() {
            self.bucket = Some(store::open("")?);
        }
        let bucket = self.bucket.as_ref().expect("opened above");
        let n = atomics::increment(bucket, "mail/count", 1)?;
        bucket.set(&format!("mail/{n}"), message)?;
        Ok(n)
    }
}

impl Mailbox for Store {
    fn deliver(&mut self, delivery: &Delivery) -> Result<u64, Refused> {
        match self.put(delivery.message) {
            Ok(n) => {
                eprintln!("{}", delivery.log_line(n));
                Ok(n)
            }
            Err(e) => {
                let why = describe(&e);
                eprintln!("refused a message of {} bytes: {why}", delivery.message.len());
                // pier's provider says `out of budget: ...` for a full store.
                Err(if why.starts_with("out of budget") { Refused::Full } else { Refused::Failed })
            }
        }
    }
}

/// What the connection logic needs of the SDK's [`Outbox`], the host's
/// timers and the clock; the tests give it a fake.
trait Wire {
    /// The host's timers (a fake's in the tests).
    fn timers(&mut self) -> impl Timers + '_;
    /// Milliseconds on a monotonic clock.
    fn now_ms(&self) -> u64;
    fn send_vec(&mut self, bytes: Vec<u8>) -> bool;
    fn pending(&self) -> usize;
    fn finish(&mut self);
    fn close(&mut self);
    fn pause_reading(&mut self);
    fn resume_reading(&mut self);
    fn start_tls(&mut self) -> Result<(), String>;
}

/// Time 0 of `now_ms`: the instance serves one connection, so one per
/// connection.
static EPOCH: OnceLock<Instant> = OnceLock::new();

impl Wire for Outbox {
    fn timers(&mut self) -> impl Timers + '_ {
        HostTimers
    }
    fn now_ms(&self) -> u64 {
        u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
    }
    fn send_vec(&mut self, bytes: Vec<u8>) -> bool {
        Outbox::send_vec(self, bytes)
    }
    fn pending(&self) -> usize {
        Outbox::pending(self)
    }
    fn finish(&mut self) {
        Outbox::finish(self)
    }
    fn close(&mut self) {
        Outbox::close(self)
    }
    fn pause_reading(&mut self) {
        Outbox::pause_reading(self)
    }
    fn resume_reading(&mut self) {
        Outbox::resume_reading(self)
    }
    fn start_tls(&mut self) -> Result<(), String> {
        Outbox::start_tls(self)
    }
}

/// One connection: the session and what it waits for.
struct Smtp<M = Store> {
    session: Session,
    mailbox: M,
    /// Reading is paused until `writable`: the SDK holds replies back.
    paused: bool,
    /// The 220 to STARTTLS is still held back by the SDK: start TLS once
    /// it has all reached the host (`start-tls` refuses before).
    tls_waiting: bool,
    /// The command timeout.
    alarm: Alarm,
    /// The session's progress when the command timeout last restarted.
    progress: u64,
}

impl<M: Mailbox> Smtp<M> {
    fn new(session: Session, mailbox: M, out: &mut impl Wire) -> Self {
        let progress = session.progress();
        let mut smtp = Smtp { session, mailbox, paused: false, tls_waiting: false, alarm: Alarm::default(), progress };
        smtp.restart_timeout(out);
        smtp.answer(out, Next::More);
        smtp
    }

    fn data(&mut self, out: &mut impl Wire, bytes: &[u8]) {
        if self.tls_waiting {
            return; // plaintext from before the handshake (the session drops it too)
        }
        let next = self.session.feed(bytes, &mut self.mailbox);
        if self.session.progress() != self.progress {
            self.progress = self.session.progress();
            self.restart_timeout(out);
        }
        self.answer(out, next);
    }

    /// The next command (or chunk of DATA) is due within the timeout from now.
    fn restart_timeout(&mut self, out: &mut impl Wire) {
        let ms = self.session.settings().command_timeout_ms;
        if ms > 0 {
            let now = out.now_ms();
            self.alarm.set(now.saturating_add(ms), now, &mut out.timers());
        }
    }

    /// Timer `id` is due: 421 and finish if the command timeout ran out.
    fn timer(&mut self, out: &mut impl Wire, id: u64) {
        let now = out.now_ms();
        if !self.alarm.fired(id, now, &mut out.timers()) {
            return;
        }
        if self.tls_waiting {
            // The peer is about to start its handshake, past a 220 the SDK
            // still holds: no plaintext reply makes sense to it.
            out.close();
            return;
        }
        self.session.timed_out();
        self.answer(out, Next::Quit);
    }

    fn writable(&mut self, out: &mut impl Wire) {
        if self.tls_waiting {
            self.start_tls(out);
        } else if self.paused {
            self.paused = false;
            out.resume_reading();
        }
    }

    /// Sends the session's replies, then does what `next` says.
    fn answer(&mut self, out: &mut impl Wire, next: Next) {
        let replies = self.session.take_replies();
        if !replies.is_empty() && !out.send_vec(replies) {
            return; // the connection is gone
        }
        match next {
            Next::More => {
                if out.pending() > 0 && !self.paused {
                    self.paused = true;
                    out.pause_reading();
                }
            }
            Next::Quit => out.finish(),
            Next::StartTls if out.pending() == 0 => self.start_tls(out),
            Next::StartTls => {
                // What the peer sends meanwhile is plaintext from before the
                // handshake: the session drops it; pausing keeps it out.
                self.tls_waiting = true;
                self.paused = true;
                out.pause_reading();
            }
        }
    }

    fn start_tls(&mut self, out: &mut impl Wire) {
        self.tls_waiting = false;
        match out.start_tls() {
            Ok(()) => {
                self.session.tls_started();
                self.restart_timeout(out);
                if std::mem::take(&mut self.paused) {
                    out.resume_reading();
                }
            }
            Err(why) => {
                // The 220 is out: the peer is starting its handshake, and no
                // reply in plaintext would make sense to it any more.
                eprintln!(
                    "STARTTLS failed after its 220 (set the listener's tls-cert, tls-key and starttls = true): {why}"
                );
                out.close();
            }
        }
    }
}

impl Handler for Smtp {
    fn on_connect(info: &ConnectionInfo, out: &mut Outbox) -> Self {
        EPOCH.get_or_init(Instant::now);
        let (settings, warnings) = Settings::from_config(config::get);
        for warning in warnings {
            eprintln!("{warning}");
        }
        Smtp::new(Session::new(settings, info.tls.is_some()), Store { bucket: None }, out)
    }

    fn on_data(&mut self, out: &mut Outbox, bytes: &[u8]) {
        self.data(out, bytes);
    }

    fn on_writable(&mut self, out: &mut Outbox) {
        self.writable(out);
    }

    fn on_timer(&mut self, out: &mut Outbox, id: u64) {
        self.timer(out, id);
    }

    fn on_shutdown(&mut self, out: &mut Outbox, reason: &ShutdownReason) {
        if matches!(reason, ShutdownReason::ServerShutdown) && self.session.can_say_goodbye() {
            out.send(b"421 4.3.2 Service shutting down\r\n");
        }
    }
}

pier_guest::handler!(Smtp);

#[cfg(test)]
mod tests {
    //! The connection logic against a fake outbox: when STARTTLS starts.

    use super::*;
    use pier_guest::alarm::fake::FakeTimers;

    /// Records the calls; holds back what is sent while `hold` is set, as
    /// the SDK does after a `would-block`. `now` is its clock.
    #[derive(Default)]
    struct Fake {
        sent: Vec<u8>,
        held: usize,
        hold: bool,
        calls: Vec<&'static str>,
        refuse_tls: bool,
        timers: FakeTimers,
        now: u64,
    }

    impl Wire for Fake {
        fn timers(&mut self) -> impl Timers + '_ {
            &mut self.timers
        }
        fn now_ms(&self) -> u64 {
            self.now
        }
        fn send_vec(&mut self, bytes: Vec<u8>) -> bool {
            if self.hold {
                self.held += bytes.len();
            }
            self.sent.extend_from_slice(&bytes);
            true
        }
        fn pending(&self) -> usize {
            self.held
        }
        fn finish(&mut self) {
            self.calls.push("finish");
        }
        fn close(&mut self) {
            self.calls.push("close");
        }
        fn pause_reading(&mut self) {
            self.calls.push("pause");
        }
        fn resume_reading(&mut self) {
            self.calls.push("resume");
        }
        fn start_tls(&mut self) -> Result<(), String> {
            self.calls.push("start-tls");
            assert_eq!(self.held, 0, "start-tls with bytes held back");
            if self.refuse_tls { Err("no".into()) } else { Ok(()) }
        }
    }

    struct Discard;

    impl Mailbox for Discard {
        fn deliver(&mut self, _: &Delivery) -> Result<u64, Refused> {
            Ok(1)
        }
    }

    fn smtp(out: &mut Fake) -> Smtp<Discard> {
        let settings = Settings { starttls: true, ..Settings::default() };
        let smtp = Smtp::new(Session::new(settings, false), Discard, out);
        out.sent.clear();
        smtp
    }

    /// A session whose command timeout is 500 ms, past its greeting.
    fn hasty(out: &mut Fake) -> Smtp<Discard> {
        let settings =
            Settings { hostname: "mx.test".into(), starttls: true, command_timeout_ms: 500, ..Settings::default() };
        let smtp = Smtp::new(Session::new(settings, false), Discard, out);
        out.sent.clear();
        smtp
    }

    /// Lets time pass to `until`, firing the timers due as the host does.
    fn wait(smtp: &mut Smtp<Discard>, out: &mut Fake, until: u64) {
        while !out.calls.iter().any(|c| *c == "finish" || *c == "close") {
            let Some(&(id, after)) = out.timers.pending.iter().min_by_key(|(_, after)| *after) else { break };
            if out.now + after > until {
                break;
            }
            out.now += after;
            for timer in &mut out.timers.pending {
                timer.1 -= after;
            }
            out.timers.fire(id);
            smtp.timer(out, id);
        }
        if !out.calls.iter().any(|c| *c == "finish" || *c == "close") {
            for timer in &mut out.timers.pending {
                timer.1 -= until - out.now;
            }
            out.now = until;
        }
    }

    #[test]
    fn silence_after_the_greeting_gets_421_and_finish() {
        let mut out = Fake::default();
        let mut smtp = hasty(&mut out);
        wait(&mut smtp, &mut out, 500);
        assert!(out.sent.is_empty() && out.calls.is_empty());
        wait(&mut smtp, &mut out, 10_000);
        assert_eq!(out.now, 501);
        assert_eq!(out.sent, b"421 4.4.2 mx.test Error: timeout exceeded\r\n");
        assert_eq!(out.calls, ["finish"]);
    }

    #[test]
    fn each_complete_command_restarts_the_timeout_and_a_trickled_one_does_not() {
        let mut out = Fake::default();
        let mut smtp = hasty(&mut out);
        for at in [400, 800, 1200] {
            wait(&mut smtp, &mut out, at);
            smtp.data(&mut out, b"NOOP\r\n");
        }
        assert_eq!(out.timers.sets, 3, "set once, then again as it fired early: at 501 and 901");
        for (i, b) in b"NOOP\r\n".iter().enumerate() {
            wait(&mut smtp, &mut out, 1250 + 50 * i as u64);
            smtp.data(&mut out, &[*b]);
        }
        assert_eq!(out.calls, [] as [&str; 0], "the command completed at 1500, in time");
        wait(&mut smtp, &mut out, 10_000);
        assert_eq!(out.now, 2001, "past 500 ms after the last complete command");
        assert!(out.sent.ends_with(b"250 2.0.0 Ok\r\n421 4.4.2 mx.test Error: timeout exceeded\r\n"));
        // A line still incomplete at the deadline: the timeout holds.
        let mut out = Fake::default();
        let mut smtp = hasty(&mut out);
        for (i, b) in b"NOOP\r".iter().enumerate() {
            wait(&mut smtp, &mut out, 100 * i as u64);
            smtp.data(&mut out, &[*b]);
        }
        wait(&mut smtp, &mut out, 10_000);
        assert_eq!((out.now, out.calls.as_slice()), (501, ["finish"].as_slice()));
    }

    #[test]
    fn each_chunk_of_data_restarts_the_timeout() {
        let mut out = Fake::default();
        let mut smtp = hasty(&mut out);
        smtp.data(&mut out, b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<b@c>\r\nDATA\r\n");
        for at in (300..=3000).step_by(300) {
            wait(&mut smtp, &mut out, at);
            smtp.data(&mut out, b"more");
        }
        smtp.data(&mut out, b"\r\n.\r\n");
        assert!(out.sent.ends_with(b"250 2.0.0 Ok: queued as 1\r\n"), "{}", String::from_utf8_lossy(&out.sent));
        wait(&mut smtp, &mut out, 10_000);
        assert_eq!(out.now, 3501);
        assert_eq!(out.calls, ["finish"]);
    }

    #[test]
    fn a_timeout_before_the_handshake_closes_without_a_reply() {
        let mut out = Fake::default();
        let mut smtp = hasty(&mut out);
        out.hold = true;
        smtp.data(&mut out, b"STARTTLS\r\n");
        let sent = out.sent.len();
        wait(&mut smtp, &mut out, 10_000);
        assert_eq!(out.calls, ["pause", "close"]);
        assert_eq!(out.sent.len(), sent, "no 421 after the 220");
        // Once TLS is on, the session starts over with its full timeout.
        let mut out = Fake::default();
        let mut smtp = hasty(&mut out);
        out.hold = true;
        wait(&mut smtp, &mut out, 400);
        smtp.data(&mut out, b"STARTTLS\r\n");
        wait(&mut smtp, &mut out, 800);
        (out.hold, out.held) = (false, 0);
        smtp.writable(&mut out);
        wait(&mut smtp, &mut out, 1300);
        assert_eq!(out.calls, ["pause", "start-tls", "resume"]);
        wait(&mut smtp, &mut out, 10_000);
        assert_eq!((out.now, out.calls.as_slice()), (1301, ["pause", "start-tls", "resume", "finish"].as_slice()));
    }

    #[test]
    fn starts_tls_at_once_when_nothing_is_held() {
        let mut out = Fake::default();
        let mut smtp = smtp(&mut out);
        smtp.data(&mut out, b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<evil@x>\r\n");
        assert!(out.sent.ends_with(b"250 ENHANCEDSTATUSCODES\r\n220 2.0.0 Ready to start TLS\r\n"));
        assert_eq!(out.calls, ["start-tls"]);
        out.sent.clear();
        smtp.data(&mut out, b"MAIL FROM:<a@b>\r\n");
        assert_eq!(out.sent, b"503 5.5.1 Error: send HELO/EHLO first\r\n", "the session started over");
    }

    #[test]
    fn waits_for_held_replies_before_starting_tls() {
        let mut out = Fake::default();
        let mut smtp = smtp(&mut out);
        out.hold = true;
        smtp.data(&mut out, b"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<evil@x>\r\n");
        assert_eq!(out.calls, ["pause"], "not yet: the 220 is still held back");
        let before = out.sent.len();
        smtp.data(&mut out, b"RCPT TO:<v@x>\r\n");
        assert_eq!(out.sent.len(), before, "plaintext before the handshake is dropped");
        (out.hold, out.held) = (false, 0);
        smtp.writable(&mut out);
        assert_eq!(out.calls, ["pause", "start-tls", "resume"]);
        smtp.data(&mut out, b"EHLO x\r\n");
        assert!(!String::from_utf8_lossy(&out.sent[before..]).contains("STARTTLS"));
    }

    #[test]
    fn closes_when_start_tls_fails() {
        let mut out = Fake { refuse_tls: true, ..Fake::default() };
        let mut smtp = smtp(&mut out);
        smtp.data(&mut out, b"STARTTLS\r\n");
        assert_eq!(out.calls, ["start-tls", "close"]);
    }

    #[test]
    fn pauses_while_replies_are_held_and_quit_finishes() {
        let mut out = Fake::default();
        let mut smtp = smtp(&mut out);
        out.hold = true;
        smtp.data(&mut out, b"NOOP\r\n");
        smtp.data(&mut out, b"NOOP\r\n");
        assert_eq!(out.calls, ["pause"], "paused once");
        (out.hold, out.held) = (false, 0);
        smtp.writable(&mut out);
        smtp.data(&mut out, b"QUIT\r\nNOOP\r\n");
        assert_eq!(out.calls, ["pause", "resume", "finish"]);
        assert!(out.sent.ends_with(b"221 2.0.0 Bye\r\n"));
    }
}
