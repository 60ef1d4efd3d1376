//! A `server-handler` echo that misbehaves on command, for the host's fault
//! tests. A `data` chunk that starts with
//!
//! - `trap`: panics (a wasm trap: the instance and all its connections end);
//! - `loop`: spins forever (until the call's `cpu-limit`);
//! - `grow`: allocates until the listener's `memory-limit` stops it;
//! - `hoard`: is echoed, and from then on this instance never drops a
//!   `conn` handle, even after its `shutdown-csa`, so the host's bound on
//!   held handles fills up.
//!
//! Anything else is echoed, in order, with flow control (held bytes go out
//! on `writable`; FIN finishes after the last byte). Raw bindings, not the
//! SDK: the SDK always drops a handle after `shutdown-csa`.

wit_bindgen::generate!({ path: "../../../wit", world: "server-handler", generate_all });

use exports::pier::server::server_inbox::Guest;
use pier::server::connections::Conn;
use pier::server::types::{ConnectionInfo, SendError, ShutdownReason};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// A connection and the bytes the host has not taken yet.
struct Link {
    conn: Conn,
    held: Vec<u8>,
    /// The peer sent FIN: finish once `held` is out.
    finishing: bool,
}

impl Link {
    /// Offers what is held, in pieces the host takes, until it refuses.
    fn push(&mut self) {
        let (mut sent, mut piece) = (0, usize::MAX);
        while sent < self.held.len() {
            let end = self.held.len().min(sent.saturating_add(piece));
            match self.conn.send(&self.held[sent..end]) {
                Ok(()) => sent = end,
                Err(SendError::TooLarge(max)) => piece = usize::try_from(max).unwrap_or(usize::MAX).max(1),
                Err(SendError::WouldBlock) => break,
                Err(SendError::Closed) => sent = self.held.len(),
            }
        }
        self.held.drain(..sent);
        if self.finishing && self.held.is_empty() {
            self.finishing = false;
            self.conn.finish();
        }
    }
}

thread_local! {
    static LINKS: RefCell<BTreeMap<u64, Link>> = const { RefCell::new(BTreeMap::new()) };
    /// Some once `hoard` was asked for: every handle ends up here, forever.
    static HOARD: RefCell<Option<Vec<Conn>>> = const { RefCell::new(None) };
}

fn with_link(id: u64, f: impl FnOnce(&mut Link)) {
    LINKS.with_borrow_mut(|links| links.get_mut(&id).map(f));
}

struct Faults;

impl Guest for Faults {
    fn new_csa(conn: Conn, info: ConnectionInfo) {
        LINKS.with_borrow_mut(|links| links.insert(info.id, Link { conn, held: Vec::new(), finishing: false }));
    }

    fn data(id: u64, bytes: Vec<u8>) {
        if bytes.starts_with(b"trap") {
            panic!("trap on command");
        }
        if bytes.starts_with(b"loop") {
            loop {
                std::hint::black_box(());
            }
        }
        if bytes.starts_with(b"grow") {
            let mut held: Vec<Vec<u8>> = Vec::new();
            loop {
                held.push(std::hint::black_box(vec![1; 1 << 20]));
            }
        }
        if bytes.starts_with(b"hoard") {
            HOARD.with_borrow_mut(|hoard| {
                hoard.get_or_insert_default();
            });
        }
        with_link(id, |link| {
            link.held.extend_from_slice(&bytes);
            link.push();
        });
    }

    fn end_of_input(id: u64) {
        with_link(id, |link| {
            link.finishing = true;
            link.push();
        });
    }

    fn writable(id: u64) {
        with_link(id, Link::push);
    }

    fn shutdown_csa(id: u64, _reason: ShutdownReason) {
        let Some(link) = LINKS.with_borrow_mut(|links| links.remove(&id)) else { return };
        HOARD.with_borrow_mut(|hoard| match hoard {
            Some(hoard) => hoard.push(link.conn),
            None => drop(link),
        });
    }
}

export!(Faults);
