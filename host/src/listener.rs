//! A listener: Kamaelia's TCPServer. Binds its socket (`makeTCPServerPort`),
//! then accepts connections while it has room, starting one CSA task each
//! and announcing its start and end on the server's event stream.

use crate::config::{ListenAddr, ListenerConfig};
use crate::csa::{self, Accepted};
use crate::events::{Events, ServerEvent, ShutdownReason};
use crate::outbox::CsaHandle;
use crate::proxy_protocol;
use crate::sandbox::plugin::Pre;
use crate::server_handler::{self, Instance};
use crate::shutdown::Stop;
use crate::tenant::Tenant;
use anyhow::{Context, bail};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, warn};

/// Connection ids, unique for the life of the process.
static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// Listening sockets a process was handed instead of binding them: by
/// systemd (socket activation) or by the pier it upgrades. A listener takes
/// the socket of its name, else the next unnamed one.
#[derive(Debug, Default)]
pub struct Inherited {
    named: HashMap<String, std::net::TcpListener>,
    unnamed: VecDeque<std::net::TcpListener>,
}

impl Inherited {
    pub fn add(&mut self, name: Option<String>, socket: std::net::TcpListener) {
        match name {
            Some(name) => {
                self.named.insert(name, socket);
            }
            None => self.unnamed.push_back(socket),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.named.is_empty() && self.unnamed.is_empty()
    }

    /// The socket for `name`, ready for tokio.
    pub(crate) fn take(&mut self, name: &str) -> anyhow::Result<Option<TcpListener>> {
        let Some(socket) = self.named.remove(name).or_else(|| self.unnamed.pop_front()) else { return Ok(None) };
        socket.set_nonblocking(true)?;
        Ok(Some(TcpListener::from_std(socket).with_context(|| format!("listener `{name}`: the inherited socket"))?))
    }
}

/// A listener's socket: inherited if one was handed over for it, else bound.
pub(crate) fn bind_or_inherit(config: &ListenerConfig, inherited: &mut Inherited) -> anyhow::Result<TcpListener> {
    match inherited.take(&config.name)? {
        Some(socket) => {
            info!(listener = &*config.name, "using an inherited socket");
            Ok(socket)
        }
        None => bind(config),
    }
}

/// Binds a listener's socket: the address given, or a random free port in a
/// range, trying each port of the range once from a random start.
pub(crate) fn bind(config: &ListenerConfig) -> anyhow::Result<TcpListener> {
    let name = &config.name;
    match config.listen {
        ListenAddr::Addr(addr) => bind_one(addr, config).map_err(|e| bind_error(name, addr, e)),
        ListenAddr::Range { host, lo, hi } => {
            let span = u32::from(hi - lo) + 1;
            let start = random_u32() % span;
            let mut last = None;
            for i in 0..span {
                let port = lo + ((start + i) % span) as u16;
                let addr = SocketAddr::new(host, port);
                match bind_one(addr, config) {
                    Ok(l) => return Ok(l),
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = Some(e),
                    Err(e) => return Err(bind_error(name, addr, e)),
                }
            }
            let e = last.unwrap_or_else(|| io::ErrorKind::AddrInUse.into());
            bail!("listener `{name}`: no free port in {host}:{lo}-{hi} ({e}); widen the range or free a port")
        }
    }
}

fn bind_one(addr: SocketAddr, config: &ListenerConfig) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    // FastRestartServer: rebind at once after a restart.
    socket.set_reuseaddr(true)?;
    if config.reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(config.backlog)
}

/// Per-connection socket options.
fn tune(stream: &TcpStream, config: &ListenerConfig) {
    if config.nodelay {
        let _ = stream.set_nodelay(true);
    }
    if let Some(idle) = config.keepalive {
        let keepalive = socket2::TcpKeepalive::new().with_time(idle);
        let _ = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive);
    }
}

fn bind_error(name: &str, addr: SocketAddr, e: io::Error) -> anyhow::Error {
    let fix = match e.kind() {
        io::ErrorKind::AddrInUse => {
            "another process is listening there; pick another port, or port 0 for any free port"
        }
        io::ErrorKind::AddrNotAvailable => {
            "that address is not on this machine; use 127.0.0.1, 0.0.0.0 or a local address"
        }
        io::ErrorKind::PermissionDenied => "ports below 1024 need privileges; pick a port above 1023",
        _ => "check the address",
    };
    anyhow::Error::new(e).context(format!("listener `{name}`: cannot bind {addr} ({fix})"))
}

/// A few random bits without a dependency: std's per-process hash seed.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

/// A bound listener's place in the running server: the tenant new
/// connections get (a reload swaps it; live connections keep the one they
/// started with), its room for connections, and whether it was removed.
pub(crate) struct Slot {
    /// With its instance, for a `server-handler`.
    tenant: Mutex<(Arc<Tenant>, Option<Arc<Instance>>)>,
    room: Arc<Semaphore>,
    retired: CancellationToken,
    pub(crate) addr: SocketAddr,
    /// The listening socket's descriptor (the accept loop owns the socket;
    /// the slot leaves the roster when the loop ends), for a successor.
    pub(crate) fd: std::os::fd::RawFd,
}

impl Slot {
    pub(crate) fn new(tenant: Arc<Tenant>, addr: SocketAddr, fd: std::os::fd::RawFd) -> Arc<Self> {
        let room = Arc::new(Semaphore::new(tenant.config.max_connections as usize));
        let current = Mutex::new(with_instance(tenant));
        Arc::new(Self { tenant: current, room, retired: CancellationToken::new(), addr, fd })
    }

    /// The tenant a connection accepted now gets.
    pub(crate) fn current(&self) -> Arc<Tenant> {
        self.serving().0
    }

    /// The tenant a connection accepted now gets, and its instance if it
    /// is a `server-handler`.
    pub(crate) fn serving(&self) -> (Arc<Tenant>, Option<Arc<Instance>>) {
        self.tenant.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// New connections get `tenant` from now on; its max-connections
    /// applies to the room left (connections already over a lowered limit
    /// are not cut).
    pub(crate) fn swap(&self, tenant: Arc<Tenant>) {
        let mut current = self.tenant.lock().unwrap_or_else(|p| p.into_inner());
        let (old, new) = (current.0.config.max_connections as usize, tenant.config.max_connections as usize);
        if new > old {
            self.room.add_permits(new - old);
        } else {
            self.room.forget_permits(old - new);
        }
        *current = with_instance(tenant);
    }

    /// Stops accepting; the listening socket closes.
    pub(crate) fn retire(&self) {
        self.retired.cancel();
    }
}

/// A tenant and, for a `server-handler`, the instance its connections
/// share (a reload's new tenant gets a new one).
fn with_instance(tenant: Arc<Tenant>) -> (Arc<Tenant>, Option<Arc<Instance>>) {
    let instance = matches!(tenant.pre, Pre::Server(_)).then(|| Instance::start(&tenant));
    (tenant, instance)
}

/// The listeners being served now, and what reloads did: what the metrics
/// read.
#[derive(Default)]
pub(crate) struct Roster {
    slots: Mutex<Vec<Arc<Slot>>>,
    pub(crate) reloads_ok: AtomicU64,
    pub(crate) reloads_failed: AtomicU64,
}

impl Roster {
    pub(crate) fn slots(&self) -> Vec<Arc<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set(&self, slots: Vec<Arc<Slot>>) {
        *self.slots.lock().unwrap_or_else(|p| p.into_inner()) = slots;
    }

    pub(crate) fn tenants(&self) -> Vec<Arc<Tenant>> {
        self.slots().iter().map(|s| s.current()).collect()
    }
}

/// Accepts connections until `serverShutdown` (or the listener is removed
/// by a reload), at most `max-connections` at a time: when full, it waits
/// and the kernel backlog queues new clients.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    slot: Arc<Slot>,
    events: Events,
    stop: Stop,
    tasks: TaskTracker,
) {
    let mut failures = FailureLog::default();
    let rejects = Arc::new(Mutex::new(FailureLog::default()));
    let name = slot.current().name.clone();
    loop {
        let permit = tokio::select! {
            _ = stop.token.cancelled() => break,
            _ = slot.retired.cancelled() => break,
            p = slot.room.clone().acquire_owned() => p.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = stop.token.cancelled() => break,
            _ = slot.retired.cancelled() => break,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE, ECONNABORTED...: transient; never end the server.
                    failures.note(&name, &e);
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        let (tenant, instance) = slot.serving();
        tune(&stream, &tenant.config);
        // A plain listener numbers and announces its connections here, in
        // accept order; a proxy-protocol one once the header is in.
        let handoff = if tenant.config.proxy_protocol {
            Handoff::AwaitingHeader(stream)
        } else {
            Handoff::Started(start(stream, peer, &tenant, &events))
        };
        let (events, stop, rejects) = (events.clone(), stop.clone(), rejects.clone());
        tasks.spawn(async move {
            connection(handoff, peer, (tenant, instance), events, stop, &rejects).await;
            drop(permit);
        });
    }
    info!(listener = &*name, "stopped accepting");
}

/// A connection as the accept loop hands it to its task.
enum Handoff {
    /// Numbered and announced already.
    Started(Accepted),
    /// On a `proxy-protocol` listener: started once its header is read.
    AwaitingHeader(TcpStream),
}

/// One accepted connection's task: on a `proxy-protocol` listener its
/// header first (here, not in the accept loop, so a slow client stalls
/// nobody else), then the connection is started, with the client's address
/// as its peer; then it is served.
async fn connection(
    handoff: Handoff,
    socket_peer: SocketAddr,
    (tenant, instance): (Arc<Tenant>, Option<Arc<Instance>>),
    events: Events,
    stop: Stop,
    rejects: &Mutex<FailureLog>,
) {
    let conn = match handoff {
        Handoff::Started(conn) => conn,
        Handoff::AwaitingHeader(mut stream) => {
            let span = tracing::info_span!("conn", listener = &*tenant.name, from = %socket_peer);
            let header = async {
                tokio::select! {
                    _ = stop.token.cancelled() => {
                        debug!("server shutdown before the PROXY protocol header; connection closed");
                        None
                    }
                    r = proxy_protocol::read_header(&mut stream, proxy_protocol::HEADER_TIMEOUT) => Some(r),
                }
            };
            // Boxed: its state would otherwise enlarge every connection's task.
            match Box::pin(header.instrument(span.clone())).await {
                None => return,
                Some(Ok(client)) => start(stream, client.unwrap_or(socket_peer), &tenant, &events),
                Some(Err(why)) => {
                    let reason = ShutdownReason::ProxyHeaderInvalid(why);
                    tenant.stats.ended(&reason);
                    span.in_scope(|| debug!(%reason, "connection closed"));
                    let mut rejects = rejects.lock().unwrap_or_else(|p| p.into_inner());
                    rejects.note_rejected(&tenant.name, socket_peer, &reason);
                    return;
                }
            }
        }
    };
    let peer = conn.peer;
    let span = tracing::info_span!(
        "conn",
        listener = &*tenant.name,
        conn = conn.id,
        %peer,
        via = tracing::field::Empty
    );
    if peer != socket_peer {
        span.record("via", tracing::field::display(socket_peer));
    }
    async move {
        let (id, listener) = (conn.id, tenant.name.clone());
        let stats = tenant.stats.clone();
        // A server-handler's failure is logged once, by its instance, not
        // once for each of its connections.
        let shared = instance.is_some();
        let reason = match instance {
            Some(instance) => server_handler::serve(conn, tenant, stop, instance).await,
            None => csa::serve(conn, tenant, stop).await,
        };
        stats.ended(&reason);
        if reason.instance_failed() && !shared {
            warn!(%reason, "handler failed; connection closed");
        } else {
            debug!(%reason, "connection closed");
        }
        events.emit(|| ServerEvent::ShutdownCsa { id, listener, reason });
    }
    .instrument(span)
    .await;
}

/// Clients waiting in each listening socket's accept queue, by bound
/// address, as Linux reports them (`/proc/net/tcp{,6}`: a listening
/// socket's `rx_queue` is its accept backlog). These are the clients
/// `max-connections` holds back (or that arrived since the last accept).
pub(crate) fn accept_queues() -> HashMap<SocketAddr, u64> {
    let mut queues = HashMap::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // sl, local_address, rem_address, st, tx_queue:rx_queue, ...
            if fields.len() < 5 || fields[3] != "0A" {
                continue;
            }
            let rx = fields[4].split_once(':').and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok());
            if let (Some(addr), Some(rx)) = (proc_addr(fields[1]), rx) {
                queues.insert(addr, rx);
            }
        }
    }
    queues
}

/// An address as /proc/net/tcp writes it: the IP as native-endian 32-bit
/// words in hex, `:`, the port in hex.
fn proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Option<Vec<[u8; 4]>> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok().map(u32::to_ne_bytes))
        .collect();
    let bytes: Vec<u8> = words?.concat();
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// How long the accept loop waits after a failed accept (out of file
/// descriptors, say) before it tries again.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Accept failures (and, on a `proxy-protocol` listener, connections
/// closed for a bad header), logged at most once a second with the count
/// since the last line, so that running out of file descriptors, or a
/// flood of bad clients, cannot flood the log.
#[derive(Default)]
struct FailureLog {
    last: Option<tokio::time::Instant>,
    unlogged: u64,
}

impl FailureLog {
    /// Counts one failure; the count to log, when a line is due.
    fn due(&mut self) -> Option<u64> {
        self.unlogged += 1;
        let now = tokio::time::Instant::now();
        if self.last.is_some_and(|at| now.duration_since(at) < Duration::from_secs(1)) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    fn note(&mut self, listener: &str, e: &io::Error) {
        if let Some(failures) = self.due() {
            warn!(listener, error = %e, failures, "accept failed; retrying (logged at most once a second)");
        }
    }

    fn note_rejected(&mut self, listener: &str, from: SocketAddr, reason: &ShutdownReason) {
        if let Some(rejected) = self.due() {
            warn!(
                listener,
                %from,
                %reason,
                rejected,
                "connection closed: no valid PROXY protocol header on a proxy-protocol listener (logged at most once a second)"
            );
        }
    }
}

/// Numbers a new connection, makes its outbox, and announces it.
fn start(stream: TcpStream, peer: SocketAddr, tenant: &Tenant, events: &Events) -> Accepted {
    let id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
    let local = stream.local_addr().unwrap_or(peer);
    let link = tenant.link();
    events.emit(|| ServerEvent::NewCsa {
        id,
        listener: tenant.name.clone(),
        peer,
        local,
        handle: CsaHandle::new(id, link.clone()),
    });
    Accepted { stream, id, peer, local, link }
}

/// The bound address, for the `listening` line.
pub(crate) fn local_addr(listener: &TcpListener, name: &str) -> anyhow::Result<SocketAddr> {
    listener.local_addr().with_context(|| format!("listener `{name}`: reading the bound address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_addresses_read_back() {
        assert_eq!(proc_addr("0100007F:1F90"), Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(proc_addr("00000000000000000000000001000000:0050"), Some("[::1]:80".parse().unwrap()));
        assert_eq!(proc_addr("zz:1"), None);
    }

    #[test]
    fn a_full_accept_queue_is_seen() {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let _waiting: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        assert_eq!(accept_queues().get(&addr), Some(&3));
    }
}
