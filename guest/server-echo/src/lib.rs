//! Echo (RFC 862) as a `server-handler`: one instance serves every
//! connection, and every byte goes back to the connection it came from, in
//! order. The same bytes as the `echo` guest, for a handle per connection
//! instead of an instance.
//!
//! Flow control is the SDK's: bytes the host refuses with `would-block` wait
//! in that connection's outbox until its `writable` (and the host stops
//! reading that peer meanwhile, so at most one chunk waits); on the peer's
//! FIN, the default `on_end` finishes after the last byte.

use pier_server_guest::{ConnectionInfo, Conns, Server};

#[derive(Default)]
struct Echo;

impl Server for Echo {
    fn on_connect(&mut self, _conns: &mut Conns, _id: u64, _info: &ConnectionInfo) {}

    fn on_data(&mut self, conns: &mut Conns, id: u64, bytes: &[u8]) {
        conns.send(id, bytes);
    }
}

pier_server_guest::server!(Echo);
