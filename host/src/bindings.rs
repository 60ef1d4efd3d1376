//! Rust bindings of `wit/pier.wit`, generated at build time: the contract's
//! Rust face. Inbox calls are async so that a guest yields to tokio at every
//! epoch tick and a per-call deadline can be raced outside the store.
//! Imported resources (the key-value `bucket`, a `server-handler`'s `conn`)
//! are left to their services, which keep what each handle stands for.

wasmtime::component::bindgen!({
    path: "wit",
    world: "connection-handler",
    exports: { default: async },
    // A key-value call may wait on Redis (under the call's deadline).
    imports: { "wasi:keyvalue/store": async, "wasi:keyvalue/atomics": async },
});

/// The `server-handler` world: what it shares with `connection-handler`
/// (types, config, limits, the key-value store) is the bindings above.
pub mod server {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "server-handler",
        exports: { default: async },
        imports: { "pier:server/connections": trappable },
        with: {
            "pier:server/types": super::pier::server::types,
            "pier:server/config": super::pier::server::config,
            "pier:server/limits": super::pier::server::limits,
            "wasi:keyvalue": super::wasi::keyvalue,
            "pier:server/connections.conn": super::ConnHandle,
        },
    });

    pub use self::pier::server::connections;
}

/// A `conn` handle as the host's signatures carry it: its `rep` indexes
/// the instance's table of connections (`sandbox::conns`).
pub struct ConnHandle;

pub use self::pier::server::types::{SendError, TlsInfo};
pub use exports::pier::server::inbox::{ConnectionInfo, ShutdownReason as WitShutdownReason, UpstreamEvent};
pub use server::{ServerHandler, ServerHandlerPre};
