//! Rust bindings of `wit/pier.wit`, generated at build time. Inbox calls are
//! async so that a guest yields to tokio at every epoch tick and a per-call
//! deadline can be raced outside the store.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "connection-handler",
    exports: { default: async },
    with: {
        "wasi:keyvalue/store.bucket": crate::keyvalue::Bucket,
    },
});

pub use self::pier::server::types::SendError;
pub use exports::pier::server::inbox::{ConnectionInfo, ShutdownReason as WitShutdownReason};
