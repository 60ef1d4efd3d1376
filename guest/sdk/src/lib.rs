//! pier-guest: write a pier handler as a struct and a few methods.
//!
//! ```ignore
//! use pier_guest::{ConnectionInfo, Handler, Outbox};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn on_connect(_info: &ConnectionInfo, _out: &mut Outbox) -> Self {
//!         Echo
//!     }
//!     fn on_data(&mut self, out: &mut Outbox, bytes: &[u8]) {
//!         out.send(bytes);
//!     }
//! }
//!
//! pier_guest::handler!(Echo);
//! ```
//!
//! The SDK keeps one `Handler` value per connection (each connection is its
//! own instance anyway), turns inbox calls into method calls, and gives each
//! method an [`Outbox`] whose `send` never fails for flow control: bytes the
//! host refuses with `would-block` wait in the SDK and go out on `writable`;
//! `finish` waits for them too. When the server shuts down, `on_shutdown`
//! may still send a last word: the SDK hands what it holds to the host, which
//! flushes it within the grace period and then closes.

pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "connection-handler",
        pub_export_macro: true,
        export_macro_name: "__export_connection_handler",
        default_bindings_module: "pier_guest::bindings",
        generate_all,
    });
}

pub mod alarm;
mod outbox;

#[doc(hidden)]
pub mod dispatch;

pub use bindings::exports::pier::server::inbox::{ConnectionInfo, ShutdownReason, UpstreamEvent};
pub use bindings::pier::server::types::TlsInfo;
pub use bindings::pier::server::{backplane, config, limits, timers, upstream};
pub use bindings::wasi::keyvalue;
pub use outbox::Outbox;
pub use pier_guest_flow::Lines;

/// A protocol handler: one value per connection. Every method but
/// `on_connect` has a default, so a handler writes only what it needs.
pub trait Handler: Sized + 'static {
    /// A connection was accepted; make its state. `out` may be used at once
    /// (a banner, a fortune and `finish`).
    fn on_connect(info: &ConnectionInfo, out: &mut Outbox) -> Self;

    /// Bytes from the peer (at most 32 KiB, no framing implied).
    fn on_data(&mut self, _out: &mut Outbox, _bytes: &[u8]) {}

    /// The peer sent FIN. By default: finish once everything is sent.
    fn on_end(&mut self, out: &mut Outbox) {
        out.finish();
    }

    /// Everything the SDK held back has been handed to the host and the
    /// host's queue is low: a good moment to produce more (a stream).
    fn on_writable(&mut self, _out: &mut Outbox) {}

    /// A backplane message on a topic this handler subscribed to.
    fn on_message(&mut self, _out: &mut Outbox, _topic: &str, _message: &[u8]) {}

    /// A timer set with [`timers::set`] is due (`id` is what `set` gave).
    fn on_timer(&mut self, _out: &mut Outbox, _id: u64) {}

    /// Something happened on an upstream connection made with
    /// [`upstream::connect`] (`id` is what `connect` gave).
    fn on_upstream(&mut self, _out: &mut Outbox, _id: u64, _event: UpstreamEvent) {}

    /// The connection is ending; the last call. On
    /// `ShutdownReason::ServerShutdown` the connection is still open: what is
    /// sent now (a goodbye) reaches the peer before it closes. For every other
    /// reason it is already gone and nothing sent reaches the peer.
    fn on_shutdown(&mut self, _out: &mut Outbox, _reason: &ShutdownReason) {}
}

/// Exports a [`Handler`] type as the component's inbox.
#[macro_export]
macro_rules! handler {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static CONN: $crate::dispatch::Slot<$ty> = const { $crate::dispatch::Slot::new() };
            }

            struct Inbox;

            impl $crate::bindings::exports::pier::server::inbox::Guest for Inbox {
                fn new_csa(info: $crate::ConnectionInfo) {
                    $crate::dispatch::new_csa(&CONN, info)
                }
                fn data(bytes: ::std::vec::Vec<u8>) {
                    $crate::dispatch::data(&CONN, bytes)
                }
                fn end_of_input() {
                    $crate::dispatch::end_of_input(&CONN)
                }
                fn writable() {
                    $crate::dispatch::writable(&CONN)
                }
                fn message(topic: ::std::string::String, message: ::std::vec::Vec<u8>) {
                    $crate::dispatch::message(&CONN, topic, message)
                }
                fn timer(id: u64) {
                    $crate::dispatch::timer(&CONN, id)
                }
                fn upstream(id: u64, event: $crate::UpstreamEvent) {
                    $crate::dispatch::upstream(&CONN, id, event)
                }
                fn shutdown_csa(reason: $crate::ShutdownReason) {
                    $crate::dispatch::shutdown_csa(&CONN, reason)
                }
            }

    $crate::bindings::__export_connection_handler!(Inbox with_types_in $crate::bindings);
        };
    };
}
