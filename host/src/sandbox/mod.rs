//! The sandbox a handler runs in: the one wasmtime engine, loading and
//! linking components, what each instance's store holds, and its limits.
//!
//! - [`engine`]: the engine (pooling allocator, epoch ticker).
//! - [`plugin`]: reading, checking and linking a handler component.
//! - [`state`]: a store's contents and the host side of the outbox imports.
//! - [`limits`]: memory and table limits, and the trap of the memory limit.
//! - [`guest_log`]: a guest's stdout and stderr as log lines.

pub(crate) mod engine;
pub(crate) mod guest_log;
pub(crate) mod limits;
pub(crate) mod plugin;
pub(crate) mod state;

pub(crate) use engine::ASYNC_STACK;
pub(crate) use guest_log::MAX_LINE as MAX_LOG_LINE;
pub use limits::MemoryLimitExceeded;
pub(crate) use state::{HostState, MAX_RESOURCES};
