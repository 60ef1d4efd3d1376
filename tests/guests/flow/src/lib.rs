//! Exercises the outbox contract. The first line the peer sends is a command;
//! what follows is echoed (with `would-block` respected).
//!
//! - `finish N`: one `send` of N pattern bytes (byte i = i % 251), then `finish`.
//! - `close N`: the same, then `close`: the queue is dropped.
//! - `flood`: sends 64 KiB chunks forever, ignoring `would-block`.
//! - `pause`: `pause-reading`, sends `P` until `would-block`, and resumes
//!   reading once the outbox has drained (`writable`); then echoes.

wit_bindgen::generate!({ path: "../../../wit", world: "connection-handler", generate_all });

use exports::pier::server::inbox::{ConnectionInfo, Guest, ShutdownReason};
use pier::server::outbox;
use std::cell::RefCell;

#[derive(Default)]
struct State {
    /// Bytes before the first newline, while the command is incomplete.
    command: Option<Vec<u8>>,
    /// Echo bytes refused with `would-block`.
    pending: Vec<u8>,
    paused: bool,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State { command: Some(Vec::new()), ..State::default() });
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn run(command: &str) {
    let mut words = command.split_whitespace();
    match (words.next(), words.next().and_then(|n| n.parse::<usize>().ok())) {
        (Some("finish"), Some(n)) => {
            outbox::send(&pattern(n)).expect("an empty outbox takes any send");
            outbox::finish();
        }
        (Some("close"), Some(n)) => {
            outbox::send(&pattern(n)).expect("an empty outbox takes any send");
            outbox::close();
        }
        (Some("flood"), _) => {
            let chunk = vec![b'F'; 64 << 10];
            loop {
                let _ = outbox::send(&chunk);
            }
        }
        (Some("pause"), _) => {
            outbox::pause_reading();
            STATE.with_borrow_mut(|s| s.paused = true);
            // Fill the socket and the outbox with `P` until `would-block`:
            // the host then owes a `writable` once the queue has drained.
            let chunk = vec![b'P'; 64 << 10];
            while outbox::send(&chunk).is_ok() {}
        }
        _ => {
            let _ = outbox::send(format!("unknown command `{command}`\n").as_bytes());
            outbox::finish();
        }
    }
}

fn echo(state: &mut State, bytes: &[u8]) {
    state.pending.extend_from_slice(bytes);
    if !state.pending.is_empty() && outbox::send(&state.pending).is_ok() {
        state.pending.clear();
    }
}

struct Flow;

impl Guest for Flow {
    fn new_csa(_info: ConnectionInfo) {}

    fn data(bytes: Vec<u8>) {
        let command = STATE.with_borrow_mut(|s| {
            let Some(cmd) = s.command.as_mut() else {
                echo(s, &bytes);
                return None;
            };
            cmd.extend_from_slice(&bytes);
            let nl = cmd.iter().position(|&b| b == b'\n')?;
            let rest = cmd.split_off(nl + 1);
            let line = String::from_utf8_lossy(&cmd[..nl]).into_owned();
            s.command = None;
            s.pending = rest;
            Some(line)
        });
        if let Some(line) = command {
            run(&line);
        }
    }

    fn end_of_input() {
        outbox::finish();
    }

    fn message(_topic: String, _message: Vec<u8>) {}

    fn writable() {
        STATE.with_borrow_mut(|s| {
            if s.paused {
                s.paused = false;
                outbox::resume_reading();
            }
            echo(s, &[]);
        });
    }

    fn shutdown_csa(_reason: ShutdownReason) {}
}

export!(Flow);
