//! The `server-handler` world (Kamaelia's TCPServer and its one protocol
//! handler): one instance per listener handles every connection, each a
//! `conn` handle.
//!
//! - [`instance`]: the task that owns the instance and makes its calls, one
//!   at a time, from a queue; when the instance fails, it ends every
//!   connection of the listener and starts afresh for the next.
//! - [`conn`]: one connection's task: its socket, its outbox, and the events
//!   it puts on the queue, one at a time (so a connection never has more
//!   than one read waiting, and bytes waiting in all are bounded by
//!   `queue-max-bytes`).

mod conn;
mod instance;

pub(crate) use conn::serve;
pub(crate) use instance::Instance;
