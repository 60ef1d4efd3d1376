//! pier-server-guest: write a pier `server-handler` as one struct that
//! serves every connection of its listener.
//!
//! ```ignore
//! use pier_server_guest::{ConnectionInfo, Conns, Server};
//!
//! #[derive(Default)]
//! struct Echo;
//!
//! impl Server for Echo {
//!     fn on_connect(&mut self, _conns: &mut Conns, _id: u64, _info: &ConnectionInfo) {}
//!     fn on_data(&mut self, conns: &mut Conns, id: u64, bytes: &[u8]) {
//!         conns.send(id, bytes);
//!     }
//! }
//!
//! pier_server_guest::server!(Echo);
//! ```
//!
//! The host makes one instance per listener, so the SDK keeps one `Server`
//! value (made with `Default` on the first call) and one [`Conns`] holding
//! every live connection's `conn` handle by id. Each connection has its own
//! outbox whose `send` never fails for flow control: bytes the host refuses
//! with `would-block` wait in the SDK and go out on that connection's
//! `writable`; `finish` waits for them too. The SDK drops a connection's
//! handle after its `shutdown-csa`, as the WIT asks (the host bounds how
//! many an instance may hold).
//!
//! This is a separate crate from `pier-guest` on purpose: wit-component
//! merges every world whose bindings are linked into a binary, so one crate
//! with both worlds would make every connection-handler export
//! `server-inbox` too.

pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "server-handler",
        pub_export_macro: true,
        export_macro_name: "__export_server_handler",
        default_bindings_module: "pier_server_guest::bindings",
        generate_all,
    });
}

mod conns;

#[doc(hidden)]
pub mod dispatch;

pub use bindings::pier::server::types::{ConnectionInfo, SendError, ShutdownReason, TlsInfo};
pub use bindings::pier::server::{config, connections, limits};
pub use bindings::wasi::keyvalue;
pub use conns::Conns;
pub use pier_guest_flow::Lines;

/// A server: one value per instance, serving every connection of the
/// listener; `id` names the connection each call is about (its
/// `connection-info.id`). Every method but `on_connect` has a default.
///
/// Calls come one at a time, and for one connection in the order
/// `on_connect`, then `on_data`/`on_writable`, `on_end`, and `on_shutdown`
/// last. A panic is a trap: it ends the instance and with it every
/// connection of the listener.
pub trait Server: Default + 'static {
    /// Connection `id` was accepted; it is in `conns` from now on and may be
    /// sent to at once (a banner, or a greeting and `finish`).
    fn on_connect(&mut self, conns: &mut Conns, id: u64, info: &ConnectionInfo);

    /// Bytes from peer `id` (at most 32 KiB, no framing implied).
    fn on_data(&mut self, _conns: &mut Conns, _id: u64, _bytes: &[u8]) {}

    /// Peer `id` sent FIN; it may still be sent to. By default: finish once
    /// everything is sent.
    fn on_end(&mut self, conns: &mut Conns, id: u64) {
        conns.finish(id);
    }

    /// Everything the SDK held back for `id` has been handed to the host and
    /// the host's queue is low: a good moment to produce more (a stream).
    fn on_writable(&mut self, _conns: &mut Conns, _id: u64) {}

    /// Connection `id` is ending; the last call about it. On
    /// `ShutdownReason::ServerShutdown` it is still open: what is sent to it
    /// now (a goodbye) reaches the peer before it closes. For every other
    /// reason it is already gone. After this call `id` leaves `conns`.
    fn on_shutdown(&mut self, _conns: &mut Conns, _id: u64, _reason: &ShutdownReason) {}
}

/// Exports a [`Server`] type as the component's `server-inbox`.
#[macro_export]
macro_rules! server {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static INSTANCE: $crate::dispatch::Instance<$ty> = const { $crate::dispatch::Instance::new() };
            }

            struct Inbox;

            impl $crate::bindings::exports::pier::server::server_inbox::Guest for Inbox {
                fn new_csa(conn: $crate::connections::Conn, info: $crate::ConnectionInfo) {
                    $crate::dispatch::new_csa(&INSTANCE, conn, info)
                }
                fn data(id: u64, bytes: ::std::vec::Vec<u8>) {
                    $crate::dispatch::data(&INSTANCE, id, &bytes)
                }
                fn end_of_input(id: u64) {
                    $crate::dispatch::end_of_input(&INSTANCE, id)
                }
                fn writable(id: u64) {
                    $crate::dispatch::writable(&INSTANCE, id)
                }
                fn shutdown_csa(id: u64, reason: $crate::ShutdownReason) {
                    $crate::dispatch::shutdown_csa(&INSTANCE, id, reason)
                }
            }

    $crate::bindings::__export_server_handler!(Inbox with_types_in $crate::bindings);
        };
    };
}
