//! Character Generator (RFC 864): an endless stream of 72-character lines,
//! each starting one character further along the 95 printable ASCII
//! characters, ended by CR LF. Input is discarded.
//!
//! It produces only while the outbox takes bytes: batches of lines until one
//! is held back (`would-block`), then nothing until `writable`. Memory stays
//! flat however slowly the peer reads.

use pier_guest::{ConnectionInfo, Handler, Outbox};

const LINE: usize = 72;
const PRINTABLE: usize = 95;
/// Lines per `send`: about 16 KiB.
const BATCH: usize = 220;

struct Chargen {
    /// Index of the next line to send (modulo the 95-line period).
    next_line: usize,
    batch: Vec<u8>,
}

impl Chargen {
    /// Sends batches until one is held back.
    fn fill(&mut self, out: &mut Outbox) {
        while out.pending() == 0 {
            self.batch.clear();
            for n in self.next_line..self.next_line + BATCH {
                let start = n % PRINTABLE;
                self.batch.extend((0..LINE).map(|i| b' ' + ((start + i) % PRINTABLE) as u8));
                self.batch.extend_from_slice(b"\r\n");
            }
            if !out.send(&self.batch) {
                return;
            }
            self.next_line = (self.next_line + BATCH) % PRINTABLE;
        }
    }
}

impl Handler for Chargen {
    fn on_connect(_info: &ConnectionInfo, out: &mut Outbox) -> Self {
        let mut chargen = Chargen { next_line: 0, batch: Vec::with_capacity(BATCH * (LINE + 2)) };
        chargen.fill(out);
        chargen
    }

    /// RFC 864: the stream goes on until the peer closes the connection.
    fn on_end(&mut self, _out: &mut Outbox) {}

    fn on_writable(&mut self, out: &mut Outbox) {
        self.fill(out);
    }
}

pier_guest::handler!(Chargen);
