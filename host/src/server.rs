//! The server: loads every listener's handler, binds every socket, runs the
//! accept loops, and carries out `serverShutdown`.

use crate::config::ServerConfig;
use crate::events::{Events, ServerEvent};
use crate::listener::{self, Inherited, Roster, Slot};
use crate::metrics;
use crate::reload;
use crate::shutdown::Stop;
use crate::tenant::Tenant;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// A pier server with every listener bound, ready to [`run`](Self::run).
pub struct Server {
    listeners: Vec<(TcpListener, Arc<Slot>)>,
    /// The listeners being served: these, then as reloads change them.
    roster: Arc<Roster>,
    metrics: Option<(TcpListener, SocketAddr)>,
    events: Events,
    stop: Stop,
    grace: Duration,
    /// Set by [`ShutdownHandle::drain`].
    gentle: Arc<AtomicBool>,
    reloads: (mpsc::Sender<ReloadRequest>, mpsc::Receiver<ReloadRequest>),
}

/// A new configuration (or why there is none), and where to say how
/// applying it went.
type ReloadRequest = (anyhow::Result<ServerConfig>, oneshot::Sender<anyhow::Result<String>>);

/// Reloads a running server with a new configuration; cloneable.
#[derive(Clone, Debug)]
pub struct ReloadHandle(mpsc::Sender<ReloadRequest>);

impl ReloadHandle {
    /// Applies `config` to the running server (see the `reload` module's
    /// rules: live connections keep their handler; changed listeners get the
    /// new one for new connections; new listeners are bound, removed ones
    /// drain). On any error nothing changes. Returns a one-line summary.
    /// An `Err` given (a configuration that did not load) counts as a
    /// failed reload, in the log and the metrics.
    pub async fn reload(&self, config: anyhow::Result<ServerConfig>) -> anyhow::Result<String> {
        let (tx, rx) = oneshot::channel();
        self.0.send((config, tx)).await.map_err(|_| anyhow::anyhow!("the server is not running"))?;
        rx.await.map_err(|_| anyhow::anyhow!("the server stopped during the reload"))?
    }
}

/// Triggers `serverShutdown` from anywhere; cloneable.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    token: CancellationToken,
    gentle: Arc<AtomicBool>,
}

impl ShutdownHandle {
    /// Stop accepting, send `shutdown-csa(server-shutdown)` to every live
    /// handler, flush what they queued, close. [`Server::run`] returns once
    /// every connection is closed, or the grace period is over.
    pub fn shutdown(&self) {
        self.token.cancel();
    }

    /// Stop accepting and let live connections end on their own within the
    /// grace period; those still open then get `server-shutdown` and are
    /// closed. For an upgrade: a successor accepts on the same sockets, so
    /// nothing a client sent to this process is cut short meanwhile.
    pub fn drain(&self) {
        self.gentle.store(true, Ordering::Release);
        self.token.cancel();
    }
}

impl Server {
    /// Loads, links and instantiates once every listener's plugin with the
    /// engine and limits it will be served with, so a bad plugin fails
    /// before any socket is bound; then binds every listener.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Self> {
        Self::bind_inheriting(config, Inherited::default()).await
    }

    /// [`bind`](Self::bind), taking each listener's socket from `inherited`
    /// where it has one (and the metrics socket under [`METRICS_SOCKET`]):
    /// systemd socket activation, or an upgrade from another pier.
    pub async fn bind_inheriting(config: ServerConfig, mut inherited: Inherited) -> anyhow::Result<Self> {
        let tenants = load(&config).await?;
        let mut listeners = Vec::new();
        for tenant in tenants {
            let socket = listener::bind_or_inherit(&tenant.config, &mut inherited)?;
            let addr = listener::local_addr(&socket, &tenant.name)?;
            info!(listener = &*tenant.name, %addr, plugin = %tenant.config.plugin.display(), "listening");
            let slot = Slot::new(tenant, addr, socket.as_raw_fd());
            listeners.push((socket, slot));
        }
        let roster = Arc::new(Roster::default());
        roster.set(listeners.iter().map(|(_, slot)| slot.clone()).collect());
        let metrics = match (config.metrics, inherited.take(METRICS_SOCKET)?) {
            (Some(_), Some(socket)) => {
                let addr = socket.local_addr()?;
                Some((socket, addr))
            }
            (Some(addr), None) => Some(bind_metrics(addr).await?),
            (None, _) => None,
        };
        Ok(Self {
            listeners,
            roster,
            metrics,
            events: Events::new(),
            stop: Stop::default(),
            grace: config.grace,
            gentle: Arc::default(),
            reloads: mpsc::channel(4),
        })
    }

    /// The listening sockets, as they stand when asked (reloads add and
    /// remove listeners), for handing them to a successor.
    pub fn sockets(&self) -> ListeningSockets {
        ListeningSockets { roster: self.roster.clone(), metrics: self.metrics.as_ref().map(|(s, _)| s.as_raw_fd()) }
    }

    /// Where `/metrics` is served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr)| *addr)
    }

    /// Each listener's name and bound address, in configuration order.
    pub fn local_addrs(&self) -> Vec<(Arc<str>, SocketAddr)> {
        self.listeners.iter().map(|(_, slot)| (slot.current().name.clone(), slot.addr)).collect()
    }

    /// The stream of `NewCsa` / `ShutdownCsa` events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<ServerEvent> {
        self.events.subscribe()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { token: self.stop.token.clone(), gentle: self.gentle.clone() }
    }

    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle(self.reloads.0.clone())
    }

    /// Serves until shut down, then drains: every live handler is told
    /// `server-shutdown` and its queued bytes are flushed; connections still
    /// open when the grace period ends are closed.
    pub async fn run(self) -> anyhow::Result<()> {
        let tasks = TaskTracker::new();
        let roster = self.roster;
        let metrics = self.metrics.map(|(socket, _)| {
            AbortOnDrop(tokio::spawn(metrics::serve(socket, roster.clone(), self.stop.token.clone())))
        });
        let start = |socket: TcpListener, slot: Arc<Slot>| {
            tasks.spawn(listener::accept_loop(
                socket,
                slot.clone(),
                self.events.clone(),
                self.stop.clone(),
                tasks.clone(),
            ));
            slot
        };
        for (socket, slot) in self.listeners {
            start(socket, slot);
        }
        let (_, mut requests) = self.reloads;
        loop {
            let (config, reply) = tokio::select! {
                _ = self.stop.token.cancelled() => break,
                Some(request) = requests.recv() => request,
            };
            let plan = match config {
                Ok(config) => reload::prepare(&config, &roster.slots()).await,
                Err(e) => Err(e),
            };
            let result = match plan {
                Ok(plan) => {
                    let summary = plan.apply(self.grace);
                    let mut serving = plan.serving();
                    for (socket, tenant, addr) in plan.bound {
                        let slot = Slot::new(tenant, addr, socket.as_raw_fd());
                        serving.push(start(socket, slot));
                    }
                    roster.set(serving);
                    roster.reloads_ok.fetch_add(1, Ordering::Relaxed);
                    info!(%summary, "reloaded");
                    Ok(summary)
                }
                Err(e) => {
                    roster.reloads_failed.fetch_add(1, Ordering::Relaxed);
                    warn!(error = %format!("{e:#}"), "reload failed; serving on as before");
                    Err(e)
                }
            };
            let _ = reply.send(result);
        }
        drain(&tasks, &self.stop, self.grace, self.gentle.load(Ordering::Acquire)).await;
        drop(metrics);
        info!("server stopped");
        Ok(())
    }
}

/// Where the listening sockets are, for a successor (see [`Server::sockets`]).
#[derive(Clone)]
pub struct ListeningSockets {
    roster: Arc<Roster>,
    metrics: Option<RawFd>,
}

impl ListeningSockets {
    /// Each listener's name and socket fd now, and the metrics one as
    /// [`METRICS_SOCKET`].
    pub fn fds(&self) -> Vec<(String, RawFd)> {
        let mut fds: Vec<_> = self.roster.slots().iter().map(|s| (s.current().name.to_string(), s.fd)).collect();
        fds.extend(self.metrics.map(|fd| (METRICS_SOCKET.to_string(), fd)));
        fds
    }
}

/// The name the metrics endpoint's socket goes by among inherited ones.
pub const METRICS_SOCKET: &str = "pier-metrics";

/// Waits for the connections to end: `gentle`, on their own within `grace`
/// first (an upgrade); then told `server-shutdown`, and closed once the
/// grace period (a short one after a gentle wait) is over.
async fn drain(tasks: &TaskTracker, stop: &Stop, grace: Duration, gentle: bool) {
    tasks.close();
    if gentle {
        info!(connections = tasks.len(), ?grace, "draining: waiting for connections to end");
        if tokio::time::timeout(grace, tasks.wait()).await.is_ok() {
            return;
        }
    }
    stop.tell_connections();
    let grace = if gentle { Duration::from_secs(1).min(grace) } else { grace };
    info!(connections = tasks.len(), ?grace, "server shutdown: draining connections");
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        warn!(connections = tasks.len(), "grace period over; closing the connections still open");
        stop.abort_connections();
        tasks.wait().await;
    }
}

/// Binds the metrics address, naming it if that fails.
async fn bind_metrics(addr: SocketAddr) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let socket = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics address {addr}: {e}; give another --metrics address (or port 0)"))?;
    let local = socket.local_addr()?;
    info!(addr = %local, "metrics at /metrics, health at /healthz");
    Ok((socket, local))
}

/// Ends the task it holds when dropped (the metrics endpoint, with the
/// server).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Everything `serve` does before binding, and all that `check` does:
/// validates, compiles (or finds in the compile cache) every plugin, builds
/// the serving engine with a pool sized from them, links them, and
/// instantiates each once within its listener's limits.
pub(crate) async fn load(config: &ServerConfig) -> anyhow::Result<Vec<Arc<Tenant>>> {
    config.validate()?;
    let tenants = Tenant::load_all(config)?;
    if let Some(redis) = tenants.iter().find_map(|t| t.redis.clone()) {
        redis.ping().await?;
    }
    for tenant in &tenants {
        tenant.probe().await?;
    }
    Ok(tenants)
}
