//! Inbox calls to `Handler` methods; used by the `handler!` macro.

use crate::{ConnectionInfo, Handler, Outbox, ShutdownReason};
use std::cell::RefCell;
use std::thread::LocalKey;

/// The connection's state: its handler and its outbox.
pub struct Slot<H>(RefCell<Option<(H, Outbox)>>);

impl<H> Slot<H> {
    pub const fn new() -> Self {
        Self(RefCell::new(None))
    }
}

impl<H> Default for Slot<H> {
    fn default() -> Self {
        Self::new()
    }
}

type Key<H> = LocalKey<Slot<H>>;

fn with<H: Handler>(key: &'static Key<H>, f: impl FnOnce(&mut H, &mut Outbox)) {
    key.with(|slot| {
        if let Some((handler, out)) = slot.0.borrow_mut().as_mut() {
            f(handler, out);
        }
    });
}

pub fn new_csa<H: Handler>(key: &'static Key<H>, info: ConnectionInfo) {
    let mut out = Outbox::new();
    let handler = H::on_connect(&info, &mut out);
    key.with(|slot| *slot.0.borrow_mut() = Some((handler, out)));
}

pub fn data<H: Handler>(key: &'static Key<H>, bytes: Vec<u8>) {
    with(key, |h, out| h.on_data(out, &bytes));
}

pub fn end_of_input<H: Handler>(key: &'static Key<H>) {
    with(key, |h, out| h.on_end(out));
}

pub fn writable<H: Handler>(key: &'static Key<H>) {
    with(key, |h, out| {
        if out.flush() {
            h.on_writable(out);
        }
    });
}

pub fn message<H: Handler>(key: &'static Key<H>, topic: String, message: Vec<u8>) {
    with(key, |h, out| h.on_message(out, &topic, &message));
}

pub fn timer<H: Handler>(key: &'static Key<H>, id: u64) {
    with(key, |h, out| h.on_timer(out, id));
}

pub fn upstream<H: Handler>(key: &'static Key<H>, id: u64, event: crate::UpstreamEvent) {
    with(key, |h, out| h.on_upstream(out, id, event));
}

pub fn shutdown_csa<H: Handler>(key: &'static Key<H>, reason: ShutdownReason) {
    with(key, |h, out| {
        h.on_shutdown(out, &reason);
        // Only server-shutdown leaves the connection open, and no `writable`
        // follows it: this is the last chance for bytes the SDK held back.
        // What the host still refuses (its queue is full) is lost.
        if matches!(reason, ShutdownReason::ServerShutdown) {
            out.flush();
        }
    });
    key.with(|slot| slot.0.borrow_mut().take());
}

#[cfg(test)]
mod tests {
    //! Natively every host import aborts the process (wit-bindgen's stubs),
    //! so these check the paths that must not touch the host.

    use super::*;

    /// Records what `on_shutdown` saw: the bytes the SDK held, the reason.
    struct Probe;

    thread_local! {
        static CONN: Slot<Probe> = const { Slot::new() };
        static SEEN: RefCell<Option<(usize, bool)>> = const { RefCell::new(None) };
    }

    impl Handler for Probe {
        fn on_connect(_info: &ConnectionInfo, _out: &mut Outbox) -> Self {
            Probe
        }
        fn on_shutdown(&mut self, out: &mut Outbox, reason: &ShutdownReason) {
            let server = matches!(reason, ShutdownReason::ServerShutdown);
            SEEN.with(|s| *s.borrow_mut() = Some((out.pending(), server)));
        }
    }

    fn shut_down(held: &[u8], reason: ShutdownReason) -> Option<(usize, bool)> {
        CONN.with(|slot| *slot.0.borrow_mut() = Some((Probe, Outbox::holding(held))));
        SEEN.with(|s| s.borrow_mut().take());
        shutdown_csa(&CONN, reason);
        assert!(CONN.with(|slot| slot.0.borrow().is_none()), "the state is dropped");
        SEEN.with(|s| s.borrow_mut().take())
    }

    #[test]
    fn on_shutdown_gets_the_outbox_and_a_gone_connection_is_not_flushed() {
        for reason in [ShutdownReason::PeerClosed, ShutdownReason::IdleTimeout, ShutdownReason::Closed] {
            assert_eq!(shut_down(b"held back", reason), Some((9, false)));
        }
    }

    #[test]
    fn server_shutdown_with_nothing_held_sends_nothing() {
        assert_eq!(shut_down(b"", ShutdownReason::ServerShutdown), Some((0, true)));
    }
}
