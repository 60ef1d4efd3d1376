//! TLS, terminated in the host: a handler sees plaintext and never a key.
//! A listener with `tls-cert` and `tls-key` runs the server handshake
//! before its handler is instantiated; with `starttls` it accepts plaintext
//! and the handler switches with `outbox.start-tls` (Kamaelia's `makessl`).
//!
//! - [`certs`]: a listener's certificate, key, ALPN and client CAs, read
//!   and checked once per load (start-up, every reload).
//! - [`session`]: one connection's TLS: the handshake, then the record
//!   layer between the socket and the CSA.

pub(crate) mod certs;
pub(crate) mod session;

pub(crate) use session::Session;

use std::cell::RefCell;
use std::sync::Arc;

/// Where one connection stands with TLS.
pub(crate) enum Tls {
    /// Plaintext, for good.
    Off,
    /// Plaintext until the handler calls `start-tls` (a `starttls` listener).
    Offered(Arc<rustls::ServerConfig>),
    /// Handshake done: every byte is a TLS record. A `RefCell` because the
    /// guest's `send` reaches it through a shared borrow of the store.
    On(RefCell<Box<Session>>),
}

impl Tls {
    pub(crate) fn session(&mut self) -> Option<&mut Session> {
        match self {
            Tls::On(s) => Some(s.get_mut()),
            _ => None,
        }
    }
}
