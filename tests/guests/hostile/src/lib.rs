//! Attacks the host on command, to prove that every host-side resource a
//! tenant can fill has a budget (tests/all/hostile.rs). Raw bindings, not
//! the SDK, so it can call the outbox in any order. One command per line;
//! each answers one line once the attack is done, so the test can wait for
//! it (answers the outbox does not take at once are held until `writable`):
//!
//! - `kv N SIZE`: sets N new keys of SIZE bytes in bucket "", answers
//!   `kv stored S refused R errors E used U` (R: `out of budget` refusals,
//!   E: any other error, U: the store's used bytes afterwards);
//! - `publish TOPIC N SIZE`: publishes N messages of SIZE bytes, answers
//!   `published N`;
//! - `report TOPIC`: publishes `report` to TOPIC, answers `reported`;
//! - `subscribe PREFIX N`: subscribes to PREFIX0..PREFIX{N-1}, answers
//!   `subscribed N` (what it asked for: `subscribe` says nothing). Messages
//!   are counted and dropped; a message whose body is `report` is answered
//!   with `received C` (C: the messages before it);
//! - `stall`: sends filler until the outbox says `would-block` (the peer is
//!   expected not to read), logs `hostile stalled after N bytes`, then
//!   `finish`es: the connection stays, finishing, and takes no more backplane
//!   mail, a subscriber that never reads;
//! - `log [N]`: writes N lines (or until the cpu-limit ends the call) to
//!   stderr as fast as it can, answers `logged N`;
//! - `send SIZE`: one `send` of SIZE bytes, logs `hostile send SIZE: RESULT`
//!   and answers `send RESULT`;
//! - `wasi [N]`: makes WASI resources (monotonic-clock pollables and stdout
//!   streams, alternately) until the host refuses or N are made, writing
//!   `wasi made K` every 100 and answering `wasi done N` if it survives; all
//!   are dropped at the end of the call;
//! - `odd1`..`odd8`: one odd order of outbox calls each (see [`odd`]);
//! - `ping`: answers `pong`;
//! - `slow [MS]`: answers `slow`; from then on every line is answered
//!   `slow K` only after MS (default 900) milliseconds of busy work.

wit_bindgen::generate!({ path: "../../../wit", world: "connection-handler", generate_all });

use exports::pier::server::inbox::{ConnectionInfo, Guest, ShutdownReason};
use pier::server::types::SendError;
use pier::server::{backplane, limits, outbox};
use std::cell::RefCell;
use std::hint::black_box;
use std::time::{Duration, Instant};
use wasi::keyvalue::store;

#[derive(Default)]
struct State {
    id: u64,
    line: Vec<u8>,
    /// Answers the outbox has not taken yet.
    pending: Vec<u8>,
    /// Keys this connection has set so far (keys are never reused).
    keys: u64,
    /// Backplane messages received (and dropped).
    received: u64,
    /// `slow` mode: busy milliseconds before each answer, and answers given.
    slow: Option<u64>,
    slow_answers: u64,
    /// `odd8`: probe the outbox again from `shutdown-csa`.
    probe_at_shutdown: bool,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// A send result in the WIT's words; any error this guest does not know by
/// name (the host may add some) is printed with `{:?}`.
fn describe(result: &Result<(), SendError>) -> String {
    match result {
        Ok(()) => "ok".into(),
        #[allow(unreachable_patterns, reason = "send-error may gain cases")]
        Err(e) => match e {
            SendError::WouldBlock => "would-block".into(),
            SendError::Closed => "closed".into(),
            other => format!("{other:?}"),
        },
    }
}

/// The WIT name of a shutdown reason.
fn reason_name(reason: &ShutdownReason) -> String {
    match reason {
        ShutdownReason::PeerClosed => "peer-closed".into(),
        ShutdownReason::PeerReset => "peer-reset".into(),
        ShutdownReason::IdleTimeout => "idle-timeout".into(),
        ShutdownReason::ServerShutdown => "server-shutdown".into(),
        ShutdownReason::Finished => "finished".into(),
        ShutdownReason::Closed => "closed".into(),
        ShutdownReason::SocketError(e) => format!("socket-error: {e}"),
        ShutdownReason::TlsHandshakeFailed(e) => format!("tls-handshake-failed: {e}"),
        ShutdownReason::TlsError(e) => format!("tls-error: {e}"),
    }
}

/// Sends `text`, or holds it until `writable` if the outbox is full.
fn reply(text: &str) {
    STATE.with_borrow_mut(|s| {
        s.pending.extend_from_slice(text.as_bytes());
        s.pending.push(b'\n');
        drain(s);
    });
}

fn drain(s: &mut State) {
    if !s.pending.is_empty() && outbox::send(&s.pending).is_ok() {
        s.pending.clear();
    }
}

fn arg<T: std::str::FromStr>(words: &[&str], i: usize, default: T) -> T {
    words.get(i).and_then(|w| w.parse().ok()).unwrap_or(default)
}

fn busy(ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < until {
        black_box(0);
    }
}

fn run(command: &str) {
    if let Some(ms) = STATE.with_borrow(|s| s.slow) {
        busy(ms);
        let k = STATE.with_borrow_mut(|s| {
            s.slow_answers += 1;
            s.slow_answers
        });
        reply(&format!("slow {k}"));
        return;
    }
    let words: Vec<&str> = command.split_whitespace().collect();
    match words.first().copied().unwrap_or("") {
        "kv" => kv(arg(&words, 1, 0), arg(&words, 2, 0)),
        "publish" => {
            let (topic, n, size) = (words.get(1).copied().unwrap_or(""), arg(&words, 2, 0u64), arg(&words, 3, 0));
            let body = vec![b'p'; size];
            for _ in 0..n {
                backplane::publish(topic, &body);
            }
            reply(&format!("published {n}"));
        }
        "report" => {
            backplane::publish(words.get(1).copied().unwrap_or(""), b"report");
            reply("reported");
        }
        "subscribe" => {
            let (prefix, n) = (words.get(1).copied().unwrap_or(""), arg(&words, 2, 0u64));
            for i in 0..n {
                backplane::subscribe(&format!("{prefix}{i}"));
            }
            reply(&format!("subscribed {n}"));
        }
        "stall" => stall(),
        "log" => {
            let n = arg(&words, 1, u64::MAX);
            let mut i = 0;
            while i < n {
                eprintln!("hostile log line {i}");
                i += 1;
            }
            reply(&format!("logged {n}"));
        }
        "send" => {
            let data = vec![b'x'; arg(&words, 1, 0)];
            let result = outbox::send(&data);
            drop(data);
            eprintln!("hostile send {}: {}", words.get(1).unwrap_or(&""), describe(&result));
            reply(&format!("send {}", describe(&result)));
        }
        "wasi" => wasi(arg(&words, 1, u64::MAX)),
        "ping" => reply("pong"),
        "slow" => {
            STATE.with_borrow_mut(|s| s.slow = Some(arg(&words, 1, 900)));
            reply("slow");
        }
        verb if verb.starts_with("odd") => odd(verb),
        _ => reply(&format!("unknown command `{command}`")),
    }
}

fn kv(n: u64, size: usize) {
    let bucket = match store::open("") {
        Ok(b) => b,
        Err(e) => return reply(&format!("kv open failed: {e:?}")),
    };
    let (id, first) = STATE.with_borrow_mut(|s| {
        s.keys += n;
        (s.id, s.keys - n)
    });
    let value = vec![b'v'; size];
    let (mut stored, mut refused, mut errors) = (0u64, 0u64, 0u64);
    for i in first..first + n {
        match bucket.set(&format!("hostile-{id}-{i}"), &value) {
            Ok(()) => stored += 1,
            Err(store::Error::Other(e)) if e.starts_with("out of budget") => refused += 1,
            Err(_) => errors += 1,
        }
    }
    let used = limits::keyvalue_usage().used_bytes;
    reply(&format!("kv stored {stored} refused {refused} errors {errors} used {used}"));
}

fn stall() {
    let chunk = vec![b's'; 16 << 10];
    let mut sent = 0usize;
    // Bounded, in case the peer reads after all.
    while sent < 256 << 20 {
        match outbox::send(&chunk) {
            Ok(()) => sent += chunk.len(),
            Err(_) => break,
        }
    }
    eprintln!("hostile stalled after {sent} bytes");
    outbox::finish();
}

/// Makes WASI resources until the host's resource table is full (the host
/// traps the call) or `n` are made.
fn wasi(n: u64) {
    let mut pollables = Vec::new();
    let mut streams = Vec::new();
    let mut made = 0u64;
    while made < n {
        if made.is_multiple_of(2) {
            pollables.push(wasip2::clocks::monotonic_clock::subscribe_duration(1_000_000_000));
        } else {
            streams.push(wasip2::cli::stdout::get_stdout());
        }
        made += 1;
        if made.is_multiple_of(100) {
            let _ = outbox::send(format!("wasi made {made}\n").as_bytes());
        }
    }
    drop(pollables);
    drop(streams);
    reply(&format!("wasi done {made}"));
}

/// One odd order of outbox calls per command; each ends in a way the test
/// can observe (what the peer receives, EOF, a log line, a later answer):
///
/// 1. `close`, then `send`: logs `odd1 send after close: closed`; EOF.
/// 2. `send`, `finish` twice, `send`: the peer gets `odd2 a`, then EOF;
///    logs `odd2 send after finish: closed`.
/// 3. `send`, `finish`, `close`: the queue is dropped, the peer gets a
///    prefix of `odd3 a` (the host may have written it at once), then EOF.
/// 4. `resume-reading` without `pause-reading`: answers `odd4 ok`, and the
///    connection still reads (`ping` answers `pong`).
/// 5. `pause-reading` twice, `resume-reading` once: the same, `odd5 ok`.
/// 6. `send` of nothing, then answers `odd6 ok RESULT`.
/// 7. `close` twice, `finish`, `pause-reading`, `resume-reading`, `send`:
///    logs `odd7 send after close: closed`; EOF.
/// 8. `finish` with nothing queued, `pause-reading`; from `shutdown-csa`,
///    `send`, `finish`, `close`, `resume-reading`, logging
///    `odd8 shutdown-csa REASON send: RESULT`; EOF.
fn odd(verb: &str) {
    match verb {
        "odd1" => {
            outbox::close();
            let r = outbox::send(b"after close\n");
            eprintln!("odd1 send after close: {}", describe(&r));
        }
        "odd2" => {
            let _ = outbox::send(b"odd2 a\n");
            outbox::finish();
            outbox::finish();
            let r = outbox::send(b"odd2 b\n");
            eprintln!("odd2 send after finish: {}", describe(&r));
        }
        "odd3" => {
            let _ = outbox::send(b"odd3 a\n");
            outbox::finish();
            outbox::close();
        }
        "odd4" => {
            outbox::resume_reading();
            reply("odd4 ok");
        }
        "odd5" => {
            outbox::pause_reading();
            outbox::pause_reading();
            outbox::resume_reading();
            reply("odd5 ok");
        }
        "odd6" => {
            let r = outbox::send(&[]);
            reply(&format!("odd6 ok {}", describe(&r)));
        }
        "odd7" => {
            outbox::close();
            outbox::close();
            outbox::finish();
            outbox::pause_reading();
            outbox::resume_reading();
            let r = outbox::send(b"after close\n");
            eprintln!("odd7 send after close: {}", describe(&r));
        }
        "odd8" => {
            STATE.with_borrow_mut(|s| s.probe_at_shutdown = true);
            outbox::finish();
            outbox::pause_reading();
        }
        _ => reply(&format!("unknown odd order `{verb}`")),
    }
}

struct Hostile;

impl Guest for Hostile {
    fn new_csa(info: ConnectionInfo) {
        STATE.with_borrow_mut(|s| s.id = info.id);
    }

    fn data(bytes: Vec<u8>) {
        STATE.with_borrow_mut(|s| s.line.extend_from_slice(&bytes));
        while let Some(command) = STATE.with_borrow_mut(|s| {
            let nl = s.line.iter().position(|&b| b == b'\n')?;
            let command = String::from_utf8_lossy(&s.line[..nl]).trim().to_string();
            s.line.drain(..=nl);
            Some(command)
        }) {
            run(&command);
        }
    }

    fn end_of_input() {
        outbox::finish();
    }

    fn writable() {
        STATE.with_borrow_mut(drain);
    }

    fn message(_topic: String, message: Vec<u8>) {
        if message == b"report" {
            let received = STATE.with_borrow(|s| s.received);
            reply(&format!("received {received}"));
        } else {
            STATE.with_borrow_mut(|s| s.received += 1);
        }
    }

    fn upstream(_id: u64, _event: exports::pier::server::inbox::UpstreamEvent) {}

    fn timer(_id: u64) {}

    fn shutdown_csa(reason: ShutdownReason) {
        if STATE.with_borrow(|s| s.probe_at_shutdown) {
            let r = outbox::send(b"after shutdown\n");
            outbox::finish();
            outbox::close();
            outbox::resume_reading();
            eprintln!("odd8 shutdown-csa {} send: {}", reason_name(&reason), describe(&r));
        }
    }
}

export!(Hostile);
