//! A fake host connection for native tests: the host's all-or-nothing
//! `send` under a high-water mark, recording what it was given. The SDKs'
//! tests use it too (feature `fake`).

use crate::{Refused, Wire};
use std::cell::RefCell;
use std::rc::Rc;

/// What the fake host saw of one connection.
#[derive(Debug, Default)]
pub struct Peer {
    /// Every byte taken, in order.
    pub sent: Vec<u8>,
    /// Bytes in the host's queue (until `drain`).
    pub queued: usize,
    /// The high-water mark, also the most one `send` takes.
    pub mark: usize,
    /// The largest `send` taken.
    pub largest: usize,
    pub finished: bool,
    pub finishes: u32,
    pub closed: bool,
    pub paused: bool,
    /// The connection ended: `send` answers `closed`.
    pub gone: bool,
}

impl Peer {
    /// The peer read everything queued.
    pub fn drain(&mut self) {
        self.queued = 0;
    }
}

/// The fake connection; tests keep the shared [`Peer`] to look at.
#[derive(Debug)]
pub struct FakeConn(Rc<RefCell<Peer>>);

impl FakeConn {
    pub fn new(mark: usize) -> (Self, Rc<RefCell<Peer>>) {
        let peer = Rc::new(RefCell::new(Peer { mark, ..Peer::default() }));
        (Self(peer.clone()), peer)
    }

    /// As a `conn` has it, for what an SDK builds beside the outbox.
    pub fn pause_reading(&self) {
        self.0.borrow_mut().paused = true;
    }

    pub fn resume_reading(&self) {
        self.0.borrow_mut().paused = false;
    }
}

impl Wire for FakeConn {
    fn send(&self, bytes: &[u8]) -> Result<(), Refused> {
        let mut p = self.0.borrow_mut();
        if p.gone || p.closed || p.finished {
            Err(Refused::Closed)
        } else if bytes.len() > p.mark {
            Err(Refused::TooLarge(p.mark as u64))
        } else if p.queued >= p.mark {
            Err(Refused::WouldBlock)
        } else {
            p.queued += bytes.len();
            p.largest = p.largest.max(bytes.len());
            p.sent.extend_from_slice(bytes);
            Ok(())
        }
    }
    fn finish(&self) {
        let mut p = self.0.borrow_mut();
        p.finished = true;
        p.finishes += 1;
    }
    fn close(&self) {
        self.0.borrow_mut().closed = true;
    }
}
