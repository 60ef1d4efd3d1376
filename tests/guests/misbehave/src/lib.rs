//! Misbehaves on command, to prove that only its own connection pays. The
//! first line the peer sends is the command:
//!
//! - `spin`: log `spinning`, then loop forever, logging `spun N ms` every
//!   50 ms of its own clock;
//! - `oom`: allocate until the memory limit stops it;
//! - `panic`: panic (a trap);
//! - `overflow`: recurse until the stack is exhausted;
//! - `fs PATH`, `env NAME`, `socket HOST:PORT`, `config KEY`: try to reach
//!   outside the sandbox and answer `ok: ...` or `denied: ...`, then finish;
//! - `log N`: write N lines to stderr as fast as it can, then answer;
//! - `burn MS`: run for MS milliseconds, answer `burned`, and wait for the
//!   next command (so a connection can spend its CPU budget call by call);
//! - `peer`: answer `connection-info.peer` (`ok: 127.0.0.1:5555`);
//! - `tls`: answer what `connection-info.tls` said (`denied: plaintext`);
//!   `tls-now`: what `outbox.tls` says now;
//! - `starttls`: answer `ok: starting tls` (in plaintext, as SMTP's `220`)
//!   and call `start-tls`; answer its error, or, once it is on, call it
//!   again and keep that second answer for the `again` command.
//!   Lines after `starttls` in the same chunk are dropped, as the WIT asks;
//! - `after MS`: set a timer; when it fires answer `fired after N ms`;
//! - `cancel MS`: set timers at MS and 2 x MS, cancel the first, and answer
//!   which one fired;
//! - `timers`: set timers until the host refuses, and answer how many;
//! - `upstreams ADDR`: connect to ADDR until the host refuses, and answer
//!   how many it took and why it stopped.

wit_bindgen::generate!({ path: "../../../wit", world: "connection-handler", generate_all });

use exports::pier::server::inbox::{ConnectionInfo, Guest, ShutdownReason};
use pier::server::{config, outbox, timers, upstream};
use std::cell::RefCell;
use std::hint::black_box;

thread_local! {
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static INFO: RefCell<Option<ConnectionInfo>> = const { RefCell::new(None) };
    static AGAIN: RefCell<Option<Result<(), String>>> = const { RefCell::new(None) };
    static TIMED: RefCell<Option<Timed>> = const { RefCell::new(None) };
}

/// When the `after` or `cancel` command set its timer, and (for `cancel`)
/// the id it cancelled and whether the cancel took.
type Timed = (std::time::Instant, Option<(u64, bool)>);

/// `connection-info.tls` as one line.
fn tls_line(info: &Option<ConnectionInfo>) -> Result<String, String> {
    let tls = info.as_ref().and_then(|i| i.tls.as_ref()).ok_or("plaintext")?;
    let or_none = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
    Ok(format!(
        "{} {} sni={} alpn={} client={}",
        tls.version,
        tls.cipher_suite,
        or_none(&tls.server_name),
        or_none(&tls.alpn),
        or_none(&tls.client_subject)
    ))
}

/// Recurses (practically) without end, keeping its frame in wasm locals so
/// that it exhausts wasm's own call stack rather than Rust's shadow stack in
/// linear memory. The combination of the result is not a simple accumulator,
/// so the compiler cannot turn the recursion into a loop.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1).rotate_left((depth % 7) as u32) ^ depth
}

fn answer(result: Result<String, String>) {
    let text = match result {
        Ok(v) => format!("ok: {v}\n"),
        Err(e) => format!("denied: {e}\n"),
    };
    let _ = outbox::send(text.as_bytes());
    outbox::finish();
}

fn run(command: &str) {
    let (verb, arg) = command.split_once(' ').unwrap_or((command, ""));
    match verb {
        "spin" => {
            eprintln!("spinning");
            let start = std::time::Instant::now();
            let mut logged = 0;
            loop {
                let ran = start.elapsed().as_millis();
                if ran >= logged + 50 {
                    logged = ran - ran % 50;
                    eprintln!("spun {logged} ms");
                }
                black_box(ran);
            }
        }
        "oom" => {
            let mut hoard = Vec::new();
            loop {
                hoard.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        "panic" => panic!("the handler gave up"),
        "overflow" => {
            black_box(recurse(black_box(0)));
        }
        "fs" => answer(
            std::fs::read_to_string(arg).map(|t| t.lines().next().unwrap_or("").to_string()).map_err(|e| e.to_string()),
        ),
        "env" => answer(std::env::var(arg).map_err(|e| e.to_string())),
        "socket" => {
            answer(std::net::TcpStream::connect(arg).map(|_| "connected".to_string()).map_err(|e| e.to_string()))
        }
        "config" => answer(config::get(arg).ok_or_else(|| format!("no config key `{arg}`"))),
        "log" => {
            let n: u64 = arg.parse().unwrap_or(0);
            for i in 0..n {
                eprintln!("log line {i}");
            }
            answer(Ok(format!("logged {n}")));
        }
        "burn" => {
            let until = std::time::Instant::now() + std::time::Duration::from_millis(arg.parse().unwrap_or(0));
            while std::time::Instant::now() < until {
                black_box(0);
            }
            let _ = outbox::send(b"burned\n");
        }
        "after" => match timers::set(arg.parse().unwrap_or(0)) {
            Ok(_) => TIMED.set(Some((std::time::Instant::now(), None))),
            Err(e) => answer(Err(format!("{e:?}"))),
        },
        "cancel" => {
            let ms: u64 = arg.parse().unwrap_or(0);
            let (first, _second) = (timers::set(ms).unwrap(), timers::set(2 * ms).unwrap());
            let cancelled = timers::cancel(first);
            TIMED.set(Some((std::time::Instant::now(), Some((first, cancelled)))));
        }
        "timers" => {
            let mut n = 0;
            let refused = loop {
                match timers::set(3_600_000) {
                    Ok(_) => n += 1,
                    Err(e) => break e,
                }
            };
            answer(Ok(format!("set {n}, then {refused:?}")));
        }
        "peer" => answer(INFO.with_borrow(|i| i.as_ref().map(|i| i.peer.clone()).ok_or_else(|| "no info".into()))),
        "upstreams" => {
            let mut n = 0;
            let refused = loop {
                match upstream::connect(arg) {
                    Ok(_) => n += 1,
                    Err(e) => break e,
                }
            };
            answer(Ok(format!("connected {n}, then {refused:?}")));
        }
        "tls" => answer(INFO.with_borrow(tls_line)),
        "tls-now" => answer(tls_line(&Some(ConnectionInfo { tls: outbox::tls(), ..INFO.take().unwrap() }))),
        "starttls" => {
            match outbox::send(b"ok: starting tls\n").map_err(|e| format!("{e:?}")).and_then(|()| outbox::start_tls()) {
                Ok(()) => {
                    AGAIN.set(Some(outbox::start_tls()));
                    LINE.with_borrow_mut(Vec::clear);
                }
                Err(e) => answer(Err(e)),
            }
        }
        "again" => answer(AGAIN.take().unwrap_or(Err("no starttls yet".into())).map(|()| "started twice".into())),
        _ => answer(Err(format!("unknown command `{command}`"))),
    }
}

struct Misbehave;

impl Guest for Misbehave {
    fn new_csa(info: ConnectionInfo) {
        INFO.set(Some(info));
    }

    fn data(bytes: Vec<u8>) {
        LINE.with_borrow_mut(|line| line.extend_from_slice(&bytes));
        // Each complete line is a command.
        while let Some(command) = LINE.with_borrow_mut(|line| {
            let nl = line.iter().position(|&b| b == b'\n')?;
            let command = String::from_utf8_lossy(&line[..nl]).trim().to_string();
            line.drain(..=nl);
            Some(command)
        }) {
            run(&command);
        }
    }

    fn end_of_input() {
        outbox::finish();
    }

    fn message(_topic: String, _message: Vec<u8>) {}

    fn writable() {}

    fn upstream(_id: u64, _event: exports::pier::server::inbox::UpstreamEvent) {}

    fn timer(id: u64) {
        let Some((since, cancel)) = TIMED.take() else { return };
        let ms = since.elapsed().as_millis();
        answer(Ok(match cancel {
            None => format!("fired after {ms} ms"),
            Some((first, cancelled)) => format!("timer {id} fired after {ms} ms; timer {first} cancelled: {cancelled}"),
        }));
    }

    fn shutdown_csa(_reason: ShutdownReason) {}
}

export!(Misbehave);
