//! Rust bindings of `wit/pier.wit`, generated at build time: the contract's
//! Rust face. Inbox calls are async so that a guest yields to tokio at every
//! epoch tick and a per-call deadline can be raced outside the store.
//! Imported resources (the key-value `bucket`) are left to their services,
//! which keep what each handle stands for.

wasmtime::component::bindgen!({
    path: "wit",
    world: "connection-handler",
    exports: { default: async },
    // A key-value call may wait on Redis (under the call's deadline).
    imports: { "wasi:keyvalue/store": async, "wasi:keyvalue/atomics": async },
});

pub use self::pier::server::types::{SendError, TlsInfo};
pub use exports::pier::server::inbox::{ConnectionInfo, ShutdownReason as WitShutdownReason, UpstreamEvent};
