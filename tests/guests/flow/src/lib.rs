//! Exercises the outbox contract. The first line the peer sends is a command;
//! what follows is echoed (with `would-block` respected).
//!
//! - `finish N`: N pattern bytes (byte i = i % 251) in the largest pieces the
//!   host takes, respecting `would-block`, then `finish`.
//! - `close N`: sends pieces of the N bytes until `would-block`, then `close`:
//!   the queue is dropped.
//! - `big N`: one `send` of N bytes; answers what it returned, then finishes.
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
    /// Bytes the host has not taken yet (echo, or `finish N`).
    pending: Vec<u8>,
    /// The most bytes one `send` takes, once a `too-large` said so.
    piece: Option<usize>,
    /// `finish` once `pending` has drained.
    finish_when_drained: bool,
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
        (Some("finish"), Some(n)) => STATE.with_borrow_mut(|s| {
            s.pending = pattern(n);
            s.finish_when_drained = true;
            drain(s);
        }),
        (Some("close"), Some(n)) => STATE.with_borrow_mut(|s| {
            s.pending = pattern(n);
            drain(s);
            s.pending.clear();
            outbox::close();
        }),
        (Some("big"), Some(n)) => {
            let result = outbox::send(&pattern(n));
            let _ = outbox::send(format!("{result:?}\n").as_bytes());
            outbox::finish();
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
    drain(state);
}

/// Sends `pending` in pieces the host takes, until it is empty (then
/// `finish` if asked) or the host says `would-block` (`writable` resumes).
fn drain(state: &mut State) {
    let mut taken = 0;
    while taken < state.pending.len() {
        let end = state.pending.len().min(taken + state.piece.unwrap_or(usize::MAX));
        match outbox::send(&state.pending[taken..end]) {
            Ok(()) => taken = end,
            Err(outbox::SendError::TooLarge(max)) => state.piece = Some(max as usize),
            Err(_) => break,
        }
    }
    state.pending.drain(..taken);
    if state.pending.is_empty() && state.finish_when_drained {
        outbox::finish();
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

    fn upstream(_id: u64, _event: exports::pier::server::inbox::UpstreamEvent) {}

    fn timer(_id: u64) {}

    fn shutdown_csa(_reason: ShutdownReason) {}
}

export!(Flow);
