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

pub fn shutdown_csa<H: Handler>(key: &'static Key<H>, reason: ShutdownReason) {
    with(key, |h, _| h.on_shutdown(&reason));
    key.with(|slot| slot.0.borrow_mut().take());
}
