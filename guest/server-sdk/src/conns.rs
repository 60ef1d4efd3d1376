//! Every live connection of the instance: its `conn` handle inside its
//! outbox (`pier-guest-flow`'s, over the `conn` resource).

use crate::SendError;
use crate::connections::Conn;
use pier_guest_flow::{Outbox, Refused, Wire};
use std::collections::BTreeMap;

/// The host's `conn`; a fake in native tests, so that what is built on it is
/// tested without a host.
#[cfg(not(test))]
pub(crate) type Handle = Conn;
#[cfg(test)]
pub(crate) type Handle = pier_guest_flow::fake::FakeConn;

impl Wire for Conn {
    fn send(&self, bytes: &[u8]) -> Result<(), Refused> {
        Conn::send(self, bytes).map_err(|e| match e {
            SendError::WouldBlock => Refused::WouldBlock,
            SendError::Closed => Refused::Closed,
            SendError::TooLarge(max) => Refused::TooLarge(max),
        })
    }
    fn finish(&self) {
        Conn::finish(self);
    }
    fn close(&self) {
        Conn::close(self);
    }
}

/// The instance's connections, by id (their `connection-info.id`). A
/// connection is here from `on_connect` until its `on_shutdown` returns;
/// then the SDK drops its handle, as the host asks.
///
/// Each has its own outbox: [`send`](Conns::send) never fails for flow
/// control. Bytes the host refuses wait here, in order, and go out on that
/// connection's `writable`. Check [`pending`](Conns::pending) before sending
/// what the peer does not pace (a broadcast from other peers): it is this
/// instance's memory, shared by every connection, that holds them.
///
/// A method given an id that is not here (its connection already ended)
/// does nothing, and `send` answers false.
#[derive(Debug)]
pub struct Conns {
    links: BTreeMap<u64, Outbox<Handle>>,
}

impl Conns {
    pub(crate) const fn new() -> Self {
        Self { links: BTreeMap::new() }
    }

    /// Queues bytes for connection `id`. False if it is finishing, closed
    /// or gone (the bytes are dropped).
    pub fn send(&mut self, id: u64, bytes: &[u8]) -> bool {
        self.links.get_mut(&id).is_some_and(|out| out.send(bytes))
    }

    /// [`send`](Self::send) for a buffer given away: what the host does not
    /// take at once is held without a copy, so a large reply costs memory
    /// once, not twice.
    pub fn send_vec(&mut self, id: u64, bytes: Vec<u8>) -> bool {
        self.links.get_mut(&id).is_some_and(|out| out.send_vec(bytes))
    }

    /// Write everything (the bytes held here included), then close `id`.
    pub fn finish(&mut self, id: u64) {
        if let Some(out) = self.links.get_mut(&id) {
            out.finish();
        }
    }

    /// Drop what is not yet sent to `id` and close it now.
    pub fn close(&mut self, id: u64) {
        if let Some(out) = self.links.get_mut(&id) {
            out.close();
        }
    }

    /// Bytes for `id` held back here, not yet taken by the host.
    pub fn pending(&self, id: u64) -> usize {
        self.links.get(&id).map_or(0, |out| out.pending())
    }

    /// Stop reading from peer `id` (TCP slows it down) until `resume_reading`.
    pub fn pause_reading(&self, id: u64) {
        if let Some(out) = self.links.get(&id) {
            out.wire().pause_reading();
        }
    }

    pub fn resume_reading(&self, id: u64) {
        if let Some(out) = self.links.get(&id) {
            out.wire().resume_reading();
        }
    }

    /// The ids of the live connections, in ascending order.
    pub fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.links.keys().copied()
    }

    pub fn contains(&self, id: u64) -> bool {
        self.links.contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    /// A new connection (`new-csa`). A handle already under `id` would be a
    /// host bug; it is dropped.
    pub(crate) fn insert(&mut self, id: u64, conn: Handle) {
        self.links.insert(id, Outbox::new(conn));
    }

    /// `writable`: hands what is held for `id` to the host; true when
    /// nothing remains.
    pub(crate) fn flush(&mut self, id: u64) -> bool {
        self.links.get_mut(&id).is_some_and(|out| out.flush())
    }

    /// After `shutdown-csa`: drops the handle, so the host can let go of
    /// what it stands for.
    pub(crate) fn remove(&mut self, id: u64) {
        self.links.remove(&id);
    }

    /// Adds a fake connection; the test keeps its peer.
    #[cfg(test)]
    pub(crate) fn fake(
        &mut self,
        id: u64,
        mark: usize,
    ) -> std::rc::Rc<std::cell::RefCell<pier_guest_flow::fake::Peer>> {
        let (conn, peer) = Handle::new(mark);
        self.insert(id, conn);
        peer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn each_connection_has_its_own_outbox() {
        let mut conns = Conns::new();
        let (a, b) = (conns.fake(1, 4), conns.fake(2, 4));
        conns.send(1, b"aaaa");
        assert!(conns.send(1, b"AA"), "held for 1");
        assert!(conns.send(2, b"bb"), "2 is not blocked by 1");
        assert_eq!((conns.pending(1), conns.pending(2)), (2, 0));
        a.borrow_mut().drain();
        assert!(conns.flush(1));
        assert_eq!(a.borrow().sent, b"aaaaAA");
        assert_eq!(b.borrow().sent, b"bb");
        conns.pause_reading(2);
        assert!(b.borrow().paused);
        conns.resume_reading(2);
        assert!(!b.borrow().paused);
        assert_eq!(conns.ids().collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn an_unknown_id_does_nothing() {
        let mut conns = Conns::new();
        assert!(!conns.send(9, b"x"));
        assert!(!conns.send_vec(9, b"x".to_vec()));
        assert!(!conns.flush(9));
        conns.finish(9);
        conns.close(9);
        conns.pause_reading(9);
        assert_eq!(conns.pending(9), 0);
        assert!(conns.is_empty() && !conns.contains(9));
    }

    #[test]
    fn remove_drops_the_handle() {
        let mut conns = Conns::new();
        let peer = conns.fake(1, 4);
        assert_eq!(Rc::strong_count(&peer), 2);
        conns.remove(1);
        assert_eq!(Rc::strong_count(&peer), 1, "the handle is gone");
        assert_eq!(conns.len(), 0);
    }
}
