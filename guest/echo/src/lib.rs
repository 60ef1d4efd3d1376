//! Echo (RFC 862): every byte that comes in goes back out, in order.
//!
//! Flow control is the SDK's: bytes the host refuses with `would-block` wait
//! in the outbox until `writable` (and the host stops reading meanwhile, so
//! at most one chunk waits); on the peer's FIN, `finish` after the last byte.

use pier_guest::{ConnectionInfo, Handler, Outbox};

struct Echo;

impl Handler for Echo {
    fn on_connect(_info: &ConnectionInfo, _out: &mut Outbox) -> Self {
        Echo
    }

    fn on_data(&mut self, out: &mut Outbox, bytes: &[u8]) {
        out.send(bytes);
    }
}

pier_guest::handler!(Echo);
