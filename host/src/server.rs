//! The server: loads every listener's handler, binds every socket, runs the
//! accept loops, and carries out `serverShutdown`.

use crate::backplane::Backplane;
use crate::config::ServerConfig;
use crate::csa::Stop;
use crate::doorbell::{ABORT, SHUTDOWN};
use crate::engine::{self, PoolSize};
use crate::events::ServerEvent;
use crate::listener::{self, ListenerRuntime};
use crate::os_limits;
use crate::plugin;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Server events buffered per subscriber; a subscriber further behind than
/// this gets `RecvError::Lagged` with the count it missed.
const EVENT_BUFFER: usize = 4096;

/// A pier server with every listener bound, ready to [`run`](Self::run).
pub struct Server {
    listeners: Vec<(TcpListener, Arc<ListenerRuntime>, SocketAddr)>,
    events: broadcast::Sender<ServerEvent>,
    stop: Stop,
    grace: Duration,
}

/// Triggers `serverShutdown` from anywhere; cloneable.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    /// Stop accepting, send `shutdown-csa(server-shutdown)` to every live
    /// handler, flush what they queued, close. [`Server::run`] returns once
    /// every connection is closed, or the grace period is over.
    pub fn shutdown(&self) {
        self.0.cancel();
    }
}

impl Server {
    /// Loads and links every listener's plugin first, so a bad plugin fails
    /// before any socket is bound; then binds every listener.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let pool = PoolSize::for_config(&config);
        os_limits::warn_if_too_low(pool.instances);
        let engine = engine::build(pool)?;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let runtimes = load_listeners(&engine, &config, &events)?;
        let mut listeners = Vec::new();
        for rt in runtimes {
            let socket = listener::bind(&rt.config)?;
            let addr = listener::local_addr(&socket, &rt.name)?;
            info!(listener = &*rt.name, %addr, plugin = %rt.config.plugin.display(), "listening");
            listeners.push((socket, rt, addr));
        }
        let stop = Stop { shutdown: CancellationToken::new(), registry: Arc::default() };
        Ok(Self { listeners, events, stop, grace: config.grace })
    }

    /// Each listener's name and bound address, in configuration order.
    pub fn local_addrs(&self) -> Vec<(Arc<str>, SocketAddr)> {
        self.listeners.iter().map(|(_, rt, addr)| (rt.name.clone(), *addr)).collect()
    }

    /// The stream of `NewCsa` / `ShutdownCsa` events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ServerEvent> {
        self.events.subscribe()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.shutdown.clone())
    }

    /// Serves until shut down, then drains: every live handler is told
    /// `server-shutdown` and its queued bytes are flushed; connections still
    /// open when the grace period ends are closed.
    pub async fn run(self) -> anyhow::Result<()> {
        let tasks = TaskTracker::new();
        for (socket, rt, _) in self.listeners {
            tasks.spawn(listener::accept_loop(socket, rt, self.stop.clone(), tasks.clone()));
        }
        self.stop.shutdown.cancelled().await;
        self.stop.registry.ring_all(SHUTDOWN);
        tasks.close();
        info!(connections = tasks.len(), grace = ?self.grace, "server shutdown: draining connections");
        if tokio::time::timeout(self.grace, tasks.wait()).await.is_err() {
            warn!(connections = tasks.len(), "grace period over; closing the connections still open");
            self.stop.registry.ring_all(ABORT);
            tasks.wait().await;
        }
        info!("server stopped");
        Ok(())
    }
}

/// Compiles and links every listener's plugin, and gives each its backplane
/// (shared by name) and key-value store.
pub(crate) fn load_listeners(
    engine: &wasmtime::Engine,
    config: &ServerConfig,
    events: &broadcast::Sender<ServerEvent>,
) -> anyhow::Result<Vec<Arc<ListenerRuntime>>> {
    let linker = plugin::linker(engine)?;
    let mut backplanes: HashMap<String, Arc<Backplane>> = HashMap::new();
    let mut runtimes = Vec::new();
    for l in &config.listeners {
        let component = plugin::compile(engine, &l.plugin)?;
        let pre = plugin::prepare(&linker, &component, &l.plugin)?;
        let backplane = backplanes.entry(l.backplane.clone().unwrap_or_else(|| l.name.clone())).or_default();
        runtimes.push(Arc::new(ListenerRuntime {
            name: Arc::from(l.name.as_str()),
            config: l.clone(),
            pre,
            events: events.clone(),
            settings: Arc::new(l.settings.clone()),
            backplane: backplane.clone(),
            store: Arc::default(),
        }));
    }
    Ok(runtimes)
}
