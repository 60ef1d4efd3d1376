//! The server: loads every listener's handler, binds every socket, runs the
//! accept loops, and carries out `serverShutdown`.

use crate::config::ServerConfig;
use crate::events::{Events, ServerEvent};
use crate::listener;
use crate::os_limits;
use crate::sandbox::engine::{self, PoolSize};
use crate::shutdown::Stop;
use crate::tenant::Tenant;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// A pier server with every listener bound, ready to [`run`](Self::run).
pub struct Server {
    listeners: Vec<(TcpListener, Arc<Tenant>, SocketAddr)>,
    events: Events,
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
    /// Loads, links and instantiates once every listener's plugin with the
    /// engine and limits it will be served with, so a bad plugin fails
    /// before any socket is bound; then binds every listener.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Self> {
        let tenants = load(&config).await?;
        let mut listeners = Vec::new();
        for tenant in tenants {
            let socket = listener::bind(&tenant.config)?;
            let addr = listener::local_addr(&socket, &tenant.name)?;
            info!(listener = &*tenant.name, %addr, plugin = %tenant.config.plugin.display(), "listening");
            listeners.push((socket, tenant, addr));
        }
        Ok(Self { listeners, events: Events::new(), stop: Stop::default(), grace: config.grace })
    }

    /// Each listener's name and bound address, in configuration order.
    pub fn local_addrs(&self) -> Vec<(Arc<str>, SocketAddr)> {
        self.listeners.iter().map(|(_, tenant, addr)| (tenant.name.clone(), *addr)).collect()
    }

    /// The stream of `NewCsa` / `ShutdownCsa` events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ServerEvent> {
        self.events.subscribe()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.stop.token.clone())
    }

    /// Serves until shut down, then drains: every live handler is told
    /// `server-shutdown` and its queued bytes are flushed; connections still
    /// open when the grace period ends are closed.
    pub async fn run(self) -> anyhow::Result<()> {
        let tasks = TaskTracker::new();
        for (socket, tenant, _) in self.listeners {
            tasks.spawn(listener::accept_loop(socket, tenant, self.events.clone(), self.stop.clone(), tasks.clone()));
        }
        self.stop.token.cancelled().await;
        self.stop.tell_connections();
        tasks.close();
        info!(connections = tasks.len(), grace = ?self.grace, "server shutdown: draining connections");
        if tokio::time::timeout(self.grace, tasks.wait()).await.is_err() {
            warn!(connections = tasks.len(), "grace period over; closing the connections still open");
            self.stop.abort_connections();
            tasks.wait().await;
        }
        info!("server stopped");
        Ok(())
    }
}

/// Everything `serve` does before binding, and all that `check` does:
/// validates, builds the serving engine and pool, compiles and links every
/// plugin, and instantiates each once within its listener's limits.
pub(crate) async fn load(config: &ServerConfig) -> anyhow::Result<Vec<Arc<Tenant>>> {
    config.validate()?;
    let pool = PoolSize::for_config(config);
    os_limits::warn_if_too_low(pool.instances);
    let engine = engine::build(pool)?;
    let tenants = Tenant::load_all(&engine, config)?;
    for tenant in &tenants {
        tenant.probe().await?;
    }
    Ok(tenants)
}
