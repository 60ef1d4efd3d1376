//! Character Generator (RFC 864): an endless stream of 72-character lines,
//! each starting one character further along the 95 printable ASCII
//! characters, ended by CR LF. Input is discarded.
//!
//! It sends only when the outbox takes bytes: a batch of lines until `send`
//! answers `would-block`, then nothing until `writable`. Memory stays flat
//! however slowly the peer reads.

wit_bindgen::generate!({ path: "../../wit", world: "connection-handler" });

use exports::pier::server::inbox::{ConnectionInfo, Guest, ShutdownReason};
use pier::server::outbox;
use std::cell::Cell;

const LINE: usize = 72;
const PRINTABLE: usize = 95;
/// Lines per `send`: about 16 KiB.
const BATCH: usize = 220;

thread_local! {
    /// Index of the next line to send.
    static NEXT_LINE: Cell<usize> = const { Cell::new(0) };
}

/// Line `n` of the stream, CR LF included.
fn push_line(out: &mut Vec<u8>, n: usize) {
    let start = n % PRINTABLE;
    out.extend((0..LINE).map(|i| b' ' + ((start + i) % PRINTABLE) as u8));
    out.extend_from_slice(b"\r\n");
}

/// Sends batches until the outbox is full (or closed).
fn fill() {
    let mut batch = Vec::with_capacity(BATCH * (LINE + 2));
    loop {
        let first = NEXT_LINE.get();
        batch.clear();
        (first..first + BATCH).for_each(|n| push_line(&mut batch, n));
        if outbox::send(&batch).is_err() {
            return;
        }
        NEXT_LINE.set((first + BATCH) % PRINTABLE);
    }
}

struct Chargen;

impl Guest for Chargen {
    fn new_csa(_info: ConnectionInfo) {
        fill();
    }

    fn data(_bytes: Vec<u8>) {}

    /// RFC 864: the stream goes on until the peer closes the connection.
    fn end_of_input() {}

    fn writable() {
        fill();
    }

    fn shutdown_csa(_reason: ShutdownReason) {}
}

export!(Chargen);
