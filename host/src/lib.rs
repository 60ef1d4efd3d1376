//! pier: a TCP server whose protocol handlers are sandboxed WebAssembly
//! components, a re-creation of Kamaelia's TCPServer / ConnectedSocketAdapter.
//!
//! # Layout
//!
//! - [`config`]: listeners, their socket options and limits, with defaults;
//!   [`config_file`]: the same from `pier.toml`.
//! - `engine`: the one wasmtime engine (pooling allocator, epoch ticker).
//! - `plugin`: loading and checking handler components.
//! - `listener`: binding (`makeTCPServerPort`) and the accept loop.
//! - `csa`: one task per connection: socket <-> handler instance.
//! - `outbox`: the bounded queue to the peer, shared with [`CsaHandle`].
//! - `doorbell`: how a CSA task is woken from outside (embedder, backplane,
//!   `serverShutdown`) without a lock.
//! - `state`: what a handler's `Store` holds (WASI with nothing granted) and
//!   the host side of its imports.
//! - `backplane`, `keyvalue`: the services shared between connections.
//! - [`events`]: the `NewCsa` / `ShutdownCsa` stream for embedders.
//! - [`Server`]: ties them together and carries out `serverShutdown`;
//!   `os_limits`: the kernel limits it checks at start-up.
//! - [`measure`]: the instantiate micro-benchmark behind `make bench`.
//!
//! # Embedding
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use pier::{ListenAddr, ListenerConfig, Server, ServerConfig, ServerEvent};
//! let echo = ListenerConfig::new("echo", ListenAddr::parse_addr("127.0.0.1:0")?, "echo.wasm");
//! let server = Server::bind(ServerConfig::new(vec![echo])).await?;
//! let mut events = server.subscribe();
//! let stop = server.shutdown_handle();
//! tokio::spawn(async move {
//!     while let Ok(ServerEvent::NewCsa { handle, .. }) = events.recv().await {
//!         let _ = handle.send(b"welcome\n".to_vec());
//!     }
//! });
//! tokio::spawn(async move { tokio::signal::ctrl_c().await.ok(); stop.shutdown() });
//! server.run().await
//! # }
//! ```
//!
//! Set `RUST_LIB_BACKTRACE=0` in processes that embed pier with
//! `RUST_BACKTRACE=1`: wasmtime would otherwise capture a backtrace each time
//! a connection's store is dropped. The `pier` binary does this itself.

mod backplane;
mod bindings;
pub mod config;
pub mod config_file;
mod csa;
mod doorbell;
mod engine;
pub mod events;
mod guest_log;
mod keyvalue;
mod listener;
pub mod measure;
mod os_limits;
mod outbox;
mod plugin;
mod server;
mod state;

pub use config::{ListenAddr, ListenerConfig, ServerConfig};
pub use csa::READ_CHUNK;
pub use events::{ServerEvent, ShutdownReason};
pub use os_limits::raise_open_files_limit;
pub use outbox::{CsaHandle, SendError};
pub use server::{Server, ShutdownHandle};

/// Validates a plugin as `pier check` does, without binding anything, and
/// describes its world, imports and exports.
pub fn check(path: &std::path::Path) -> anyhow::Result<String> {
    let engine = wasmtime::Engine::default();
    let component = plugin::compile(&engine, path)?;
    plugin::prepare(&plugin::linker(&engine)?, &component, path)?;
    Ok(plugin::describe(&engine, &component))
}

/// Validates every listener of a configuration as `pier check --config`
/// does (limits, addresses, plugins and their worlds) without binding, and
/// returns a table of the listeners.
pub fn check_config(config: &ServerConfig) -> anyhow::Result<String> {
    use std::fmt::Write as _;
    config.validate()?;
    let engine = wasmtime::Engine::default();
    let linker = plugin::linker(&engine)?;
    let mut out = format!(
        "{:<12} {:<22} {:>9} {:>9} {:>8} {:>8}  {}\n",
        "LISTENER", "LISTEN", "MAX-CONNS", "MEMORY", "CPU", "IDLE", "PLUGIN"
    );
    for l in &config.listeners {
        let component = plugin::compile(&engine, &l.plugin)?;
        plugin::prepare(&linker, &component, &l.plugin)?;
        let _ = writeln!(
            out,
            "{:<12} {:<22} {:>9} {:>8}K {:>8} {:>8}  {}",
            l.name,
            l.listen.to_string(),
            l.max_connections,
            l.memory_limit >> 10,
            humantime::format_duration(l.cpu_limit).to_string(),
            humantime::format_duration(l.idle_timeout).to_string(),
            l.plugin.display()
        );
    }
    Ok(out)
}
