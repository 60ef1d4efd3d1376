//! Echo (RFC 862): every byte that comes in goes back out, in order.
//!
//! Flow control is the outbox's: when `send` answers `would-block` the host
//! has already stopped reading this socket, so at most one refused chunk waits
//! here until `writable`.

wit_bindgen::generate!({ path: "../../wit", world: "connection-handler" });

use exports::pier::server::inbox::{ConnectionInfo, Guest, ShutdownReason};
use pier::server::outbox;
use pier::server::types::SendError;
use std::cell::RefCell;

#[derive(Default)]
struct State {
    /// Bytes refused with `would-block`, resent on `writable`.
    pending: Vec<u8>,
    /// The peer sent FIN: finish once `pending` is out.
    input_ended: bool,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::default();
}

/// Sends what is pending, then finishes if the input is over and all is sent.
fn flush(state: &mut State) {
    if !state.pending.is_empty() {
        match outbox::send(&state.pending) {
            Ok(()) => state.pending.clear(),
            Err(SendError::WouldBlock) => return,
            Err(SendError::Closed) => {
                state.pending.clear();
                return;
            }
        }
    }
    if state.input_ended {
        outbox::finish();
    }
}

struct Echo;

impl Guest for Echo {
    fn new_csa(_info: ConnectionInfo) {}

    fn data(bytes: Vec<u8>) {
        STATE.with_borrow_mut(|state| {
            if state.pending.is_empty() {
                state.pending = bytes;
            } else {
                state.pending.extend_from_slice(&bytes);
            }
            flush(state);
        });
    }

    fn end_of_input() {
        STATE.with_borrow_mut(|state| {
            state.input_ended = true;
            flush(state);
        });
    }

    fn writable() {
        STATE.with_borrow_mut(flush);
    }

    fn shutdown_csa(_reason: ShutdownReason) {}
}

export!(Echo);
