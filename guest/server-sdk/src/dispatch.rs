//! `server-inbox` calls to `Server` methods; used by the `server!` macro.

use crate::conns::{Conns, Handle};
use crate::{ConnectionInfo, Server, ShutdownReason};
use std::cell::RefCell;
use std::thread::LocalKey;

/// The instance's state: its server (made on first use) and its connections.
pub struct Instance<S>(RefCell<Option<(S, Conns)>>);

impl<S> Instance<S> {
    pub const fn new() -> Self {
        Self(RefCell::new(None))
    }
}

impl<S> Default for Instance<S> {
    fn default() -> Self {
        Self::new()
    }
}

type Key<S> = LocalKey<Instance<S>>;

fn with<S: Server>(key: &'static Key<S>, f: impl FnOnce(&mut S, &mut Conns)) {
    key.with(|instance| {
        let mut state = instance.0.borrow_mut();
        let (server, conns) = state.get_or_insert_with(|| (S::default(), Conns::new()));
        f(server, conns);
    });
}

/// `info.id` names the connection in every later call.
pub fn new_csa<S: Server>(key: &'static Key<S>, conn: Handle, info: ConnectionInfo) {
    with(key, |server, conns| {
        conns.insert(info.id, conn);
        server.on_connect(conns, info.id, &info);
    });
}

pub fn data<S: Server>(key: &'static Key<S>, id: u64, bytes: &[u8]) {
    with(key, |server, conns| {
        if conns.contains(id) {
            server.on_data(conns, id, bytes);
        }
    });
}

pub fn end_of_input<S: Server>(key: &'static Key<S>, id: u64) {
    with(key, |server, conns| {
        if conns.contains(id) {
            server.on_end(conns, id);
        }
    });
}

/// Held bytes first; the server hears of it only once none remain.
pub fn writable<S: Server>(key: &'static Key<S>, id: u64) {
    with(key, |server, conns| {
        if conns.flush(id) {
            server.on_writable(conns, id);
        }
    });
}

pub fn shutdown_csa<S: Server>(key: &'static Key<S>, id: u64, reason: ShutdownReason) {
    with(key, |server, conns| {
        if !conns.contains(id) {
            return;
        }
        server.on_shutdown(conns, id, &reason);
        // Only server-shutdown leaves the connection open, and no `writable`
        // follows it: this is the last chance for bytes the SDK held back.
        // What the host still refuses (its queue is full) is lost.
        if matches!(reason, ShutdownReason::ServerShutdown) {
            conns.flush(id);
        }
        conns.remove(id);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use pier_guest_flow::fake::{FakeConn, Peer};
    use std::rc::Rc;

    /// Echoes, logs what it is told, and says goodbye on server-shutdown.
    #[derive(Default)]
    struct Probe {
        log: Vec<String>,
    }

    impl Server for Probe {
        fn on_connect(&mut self, conns: &mut Conns, id: u64, _info: &ConnectionInfo) {
            self.log.push(format!("connect {id} ({} live)", conns.len()));
        }
        fn on_data(&mut self, conns: &mut Conns, id: u64, bytes: &[u8]) {
            conns.send(id, bytes);
        }
        fn on_writable(&mut self, _conns: &mut Conns, id: u64) {
            self.log.push(format!("writable {id}"));
        }
        fn on_shutdown(&mut self, conns: &mut Conns, id: u64, reason: &ShutdownReason) {
            self.log.push(format!("shutdown {id}: {} held", conns.pending(id)));
            if matches!(reason, ShutdownReason::ServerShutdown) {
                conns.send(id, b"bye");
            }
        }
    }

    thread_local! {
        static INSTANCE: Instance<Probe> = const { Instance::new() };
    }

    fn info(id: u64) -> ConnectionInfo {
        ConnectionInfo { id, listener: "l".into(), peer: "p".into(), local: "l".into(), tls: None }
    }

    fn connect(id: u64, mark: usize) -> Rc<RefCell<Peer>> {
        let (conn, peer) = FakeConn::new(mark);
        new_csa(&INSTANCE, conn, info(id));
        peer
    }

    fn log() -> Vec<String> {
        INSTANCE.with(|i| i.0.borrow_mut().as_mut().map(|(s, _)| std::mem::take(&mut s.log)).unwrap_or_default())
    }

    #[test]
    fn a_connection_lives_from_new_csa_to_shutdown_csa() {
        let peer = connect(7, 4);
        assert_eq!(log(), ["connect 7 (1 live)"]);
        data(&INSTANCE, 7, b"hello");
        assert_eq!(peer.borrow().sent, b"hell", "4 taken, 1 held");
        writable(&INSTANCE, 7);
        assert!(log().is_empty(), "still held: the server is not told");
        peer.borrow_mut().drain();
        writable(&INSTANCE, 7);
        assert_eq!(log(), ["writable 7"]);
        assert_eq!(peer.borrow().sent, b"hello");
        end_of_input(&INSTANCE, 7);
        assert!(peer.borrow().finished, "the default on_end finishes");
        peer.borrow_mut().gone = true;
        shutdown_csa(&INSTANCE, 7, ShutdownReason::Finished);
        assert_eq!(log(), ["shutdown 7: 0 held"]);
        assert_eq!(Rc::strong_count(&peer), 1, "the handle is dropped");
        data(&INSTANCE, 7, b"late");
        shutdown_csa(&INSTANCE, 7, ShutdownReason::Closed);
        assert!(log().is_empty(), "a gone connection hears nothing");
    }

    #[test]
    fn server_shutdown_flushes_the_goodbye_and_others_are_untouched() {
        let (a, b) = (connect(1, 3), connect(2, 3));
        data(&INSTANCE, 1, b"abcd");
        assert_eq!(log(), ["connect 1 (1 live)", "connect 2 (2 live)"]);
        a.borrow_mut().drain();
        shutdown_csa(&INSTANCE, 1, ShutdownReason::ServerShutdown);
        assert_eq!(log(), ["shutdown 1: 1 held"]);
        assert_eq!(a.borrow().sent, b"abcdbye", "held bytes, then the goodbye");
        assert_eq!(Rc::strong_count(&a), 1);
        assert_eq!(Rc::strong_count(&b), 2, "connection 2 lives on");
        data(&INSTANCE, 2, b"x");
        assert_eq!(b.borrow().sent, b"x");
    }
}
