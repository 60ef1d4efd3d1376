//! pier: a TCP server whose protocol handlers are sandboxed WebAssembly
//! components, a re-creation of Kamaelia's TCPServer / ConnectedSocketAdapter.
//!
//! # Layout
//!
//! Each module may use only those listed before it.
//!
//! - [`config`]: listeners, their socket options and limits, with defaults;
//!   the settings of pier.toml and of the command line.
//! - `bindings`: the Rust face of `wit/pier.wit`.
//! - [`outbox`]: one connection's bounded queue to its peer, its doorbell,
//!   and the embedder's [`CsaHandle`].
//! - `services`: what a listener's connections share (backplane, key-value
//!   store, `config` table), each with a client per connection.
//! - `sandbox`: the engine, loading plugins, a store's contents, limits.
//! - [`events`]: the `NewCsa` / `ShutdownCsa` stream for embedders.
//! - `stats`: what each listener counts, cheaply on the hot path.
//! - `tenant`: what one listener's connections share, and making a store.
//! - `shutdown`: how `serverShutdown` reaches every connection.
//! - `csa`: one task per connection: socket <-> handler instance (or a
//!   `wasi:cli` command, inetd-style).
//! - `server_handler`: the `server-handler` world: one instance per
//!   listener, fed by every connection's task.
//! - `tls`: TLS terminated in the host (rustls): certificates, handshakes,
//!   the record layer.
//! - `proxy_protocol`: the PROXY protocol header a load balancer sends.
//! - `listener`: binding (`makeTCPServerPort`) or inheriting sockets, the
//!   accept loop, and the listeners being served.
//! - `metrics`: `/metrics`, `/healthz`, `/connections`.
//! - `reload`: a new configuration applied to a running server.
//! - [`footprint`]: the most host memory each listener can make pier hold.
//! - [`Server`]: ties them together and carries out `serverShutdown`;
//!   `os_limits`: the kernel limits it checks at start-up; [`check`]:
//!   `pier check`.
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

mod bindings;
pub mod check;
pub mod config;
mod csa;
pub mod events;
pub mod footprint;
mod listener;
pub mod measure;
mod metrics;
mod os_limits;
pub mod outbox;
mod proxy_protocol;
mod reload;
mod sandbox;
mod server;
mod server_handler;
mod services;
mod shutdown;
mod stats;
mod tenant;
mod tls;

pub use check::{check, check_config};
pub use config::{ListenAddr, ListenerConfig, ServerConfig};
pub use csa::READ_CHUNK;
pub use events::{ServerEvent, ShutdownReason};
pub use listener::Inherited;
pub use os_limits::raise_open_files_limit;
pub use outbox::{CsaHandle, SendError};
pub use sandbox::MemoryLimitExceeded;
pub use server::{ListeningSockets, METRICS_SOCKET, ReloadHandle, Server, ShutdownHandle};
