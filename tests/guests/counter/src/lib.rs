//! Proves that every connection gets a fresh instance: a global counts the
//! bytes received and each `data` call is answered with the running total as
//! a decimal line. If instances were shared, a second connection would see
//! the first one's count.

wit_bindgen::generate!({ path: "../../../wit", world: "connection-handler", generate_all });

use exports::pier::server::inbox::{ConnectionInfo, Guest, ShutdownReason};
use pier::server::outbox;
use std::sync::atomic::{AtomicU64, Ordering};

static RECEIVED: AtomicU64 = AtomicU64::new(0);

struct Counter;

impl Guest for Counter {
    fn new_csa(_info: ConnectionInfo) {}

    fn data(bytes: Vec<u8>) {
        let total = RECEIVED.fetch_add(bytes.len() as u64, Ordering::Relaxed) + bytes.len() as u64;
        let _ = outbox::send(format!("{total}\n").as_bytes());
    }

    fn end_of_input() {
        outbox::finish();
    }

    fn message(_topic: String, _message: Vec<u8>) {}

    fn writable() {}

    fn upstream(_id: u64, _event: exports::pier::server::inbox::UpstreamEvent) {}

    fn timer(_id: u64) {}

    fn shutdown_csa(_reason: ShutdownReason) {}
}

export!(Counter);
