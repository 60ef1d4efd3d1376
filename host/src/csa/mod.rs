//! The CSA (connected socket adapter): one task per accepted connection that
//! drives its handler instance and moves bytes between the socket and it
//! (Kamaelia's ConnectedSocketAdapter).
//!
//! Each turn of the task's loop flushes the outbox, reads its state once (a
//! [`Snapshot`]), delivers what is due (`writable`, backplane messages),
//! then waits for one wake-up source: the doorbell (an embedder, or
//! `serverShutdown`), the socket, the backplane mailbox, or the idle timer.
//!
//! - `mod.rs`: the loop.
//! - [`io`]: the socket: readiness, pooled read buffers, the orderly close.
//! - [`call`]: one inbox call under the listener's deadline.
//! - [`progress`]: the idle timer and how the connection ends.

pub(crate) mod call;
mod command;
pub(crate) mod io;
pub(crate) mod progress;

pub use io::READ_CHUNK;

use crate::bindings::{ConnectionHandler, ConnectionInfo, TlsInfo, UpstreamEvent, WitShutdownReason};
use crate::events::ShutdownReason;
use crate::outbox::doorbell::{ABORT, SHUTDOWN};
use crate::outbox::{Link, WriteState};
use crate::sandbox::HostState;
use crate::sandbox::plugin::Pre;
use crate::services::backplane::Subscriber;
use crate::services::upstream;
use crate::shutdown::Stop;
use crate::stats::CallTimes;
use crate::tenant::Tenant;
use crate::tls::{self, Tls};
use call::{Clock, Inbox, call, wit_reason};
use io::{SocketIo, io_reason};
use progress::Progress;
use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tracing::{debug, info};
use wasmtime::Store;

/// Backplane messages delivered between two flushes of the outbox.
const MESSAGE_BATCH: usize = 64;

/// One accepted connection, as its listener hands it over.
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    /// Its outbox, already shared with the embedder's `CsaHandle`.
    pub(crate) link: Arc<Link>,
}

/// Runs one connection from accept to close; returns why it ended.
pub(crate) async fn serve(conn: Accepted, tenant: Arc<Tenant>, stop: Stop) -> ShutdownReason {
    let Accepted { stream, id, peer, local, link } = conn;
    let _registration = stop.register(id, &link);
    let _counted = tenant.stats.connect(id, &link, peer);
    if let Pre::Command(pre) = &tenant.pre {
        return command::serve(stream, id, (peer, local), &link, &tenant, pre).await;
    }
    let subscriber = tenant.subscriber();
    // A TLS listener's handshake comes first: a client that fails it never
    // costs an instance.
    let (stream, tls) = match &tenant.tls {
        Some(config) if !tenant.config.starttls => {
            let handshake = tls::session::accept(stream, config.clone(), tenant.config.tls_handshake_timeout);
            match Box::pin(handshake).await {
                Ok((stream, session)) => (stream, Tls::On(RefCell::new(session))),
                Err(why) => return ShutdownReason::TlsHandshakeFailed(why),
            }
        }
        _ => (stream, tenant.starting_tls()),
    };
    let tls_info = tls_info(&tls);
    // Boxed: instantiation is done before the connection idles, and its
    // state would otherwise enlarge every live connection's task.
    let started = Instant::now();
    let instance = Box::pin(instantiate(&tenant, id, &link, Some(stream), tls, &subscriber)).await;
    tenant.stats.instantiated(started.elapsed());
    let (store, handler) = match instance {
        Ok(instance) => instance,
        Err(reason) => return reason,
    };
    let mut csa = Csa {
        progress: Progress::new(tenant.config.idle_timeout),
        clock: Clock::new(tenant.config.cpu_limit, tenant.config.cpu_budget),
        store,
        handler,
        link,
        subscriber,
        tenant,
        times: CallTimes::default(),
        timer: None,
    };
    let info = ConnectionInfo {
        id,
        listener: csa.tenant.name.to_string(),
        peer: peer.to_string(),
        local: local.to_string(),
        tls: tls_info,
    };
    let reason = match csa.run(info).await {
        Err(reason) => reason,
        Ok(never) => match never {},
    };
    csa.close(&reason).await;
    csa.tenant.stats.fold(&mut csa.times);
    let dropped = csa.subscriber.dropped();
    if dropped > 0 {
        info!(dropped, "backplane messages dropped: the handler was too slow");
    }
    reason
}

fn tls_info(tls: &Tls) -> Option<TlsInfo> {
    match tls {
        Tls::On(session) => Some(session.borrow().info()),
        _ => None,
    }
}

async fn instantiate(
    tenant: &Tenant,
    id: u64,
    link: &Arc<Link>,
    socket: Option<TcpStream>,
    tls: Tls,
    subscriber: &Arc<Subscriber>,
) -> Result<(Store<HostState>, ConnectionHandler), ShutdownReason> {
    let mut store = tenant
        .store(id, link.clone(), socket, tls, subscriber.clone(), None)
        .map_err(|e| ShutdownReason::InstantiateFailed(format!("preparing the sandbox: {e:#}")))?;
    let Pre::Handler(pre) = &tenant.pre else {
        // Commands are served by `command::serve`, server-handlers by theirs;
        // only a measurement could ask.
        return Err(ShutdownReason::InstantiateFailed(
            "not a connection-handler: it has no instance per connection to measure".into(),
        ));
    };
    match pre.instantiate_async(&mut store).await {
        Ok(handler) => Ok((store, handler)),
        Err(e) => Err(ShutdownReason::InstantiateFailed(format!("{e:#}"))),
    }
}

/// What a connection costs before its first byte: a store, an instance and
/// the `new-csa` call; all dropped on return. For measurements.
pub(crate) async fn instantiate_and_greet(tenant: &Tenant, id: u64) -> Result<(), ShutdownReason> {
    let link = tenant.link();
    let (mut store, handler) = instantiate(tenant, id, &link, None, Tls::Off, &tenant.subscriber()).await?;
    let info = ConnectionInfo {
        id,
        listener: tenant.name.to_string(),
        peer: "127.0.0.1:1".into(),
        local: "127.0.0.1:2".into(),
        tls: None,
    };
    let mut clock = Clock::new(tenant.config.cpu_limit, tenant.config.cpu_budget);
    call(&mut store, &handler, &mut clock, &link.doorbell, Inbox::NewCsa(info)).await
}

/// A live connection: its instance, and where its loop stands.
struct Csa {
    clock: Clock,
    store: Store<HostState>,
    handler: ConnectionHandler,
    link: Arc<Link>,
    subscriber: Arc<Subscriber>,
    tenant: Arc<Tenant>,
    /// Call times not yet added to the listener's.
    times: CallTimes,
    progress: Progress,
    /// Set to the earliest pending timer's deadline; made on first use, so
    /// a connection that never sets a timer holds none.
    timer: Option<Pin<Box<Sleep>>>,
}

/// The outbox's state, read under one lock at the top of a turn.
struct Snapshot {
    state: WriteState,
    /// Bytes waiting for the socket: the outbox's, and TLS records
    /// already encrypted.
    queued: usize,
    full: bool,
    paused: bool,
    /// A blocked `send` drained below low water: `writable` is owed.
    writable_due: bool,
    /// The handler called `start-tls`.
    tls_switch: bool,
}

/// What woke the task.
enum Wake {
    Doorbell(u8),
    Socket(SocketIo),
    Mail,
    IdleTimer,
    Timer,
    Upstream(u64, upstream::Event),
}

/// `Err` ends the connection, with its reason.
type Turn = Result<(), ShutdownReason>;

impl Csa {
    /// The connection's life after instantiation; ends only with a reason.
    async fn run(&mut self, info: ConnectionInfo) -> Result<Infallible, ShutdownReason> {
        self.deliver(Inbox::NewCsa(info)).await?;
        loop {
            self.flush()?;
            let now = self.snapshot();
            if now.tls_switch {
                self.start_tls().await?;
                continue;
            }
            if self.end_if_done(&now)? {
                continue;
            }
            if now.writable_due {
                self.deliver(Inbox::Writable).await?;
                continue;
            }
            if self.takes_mail(&now) && self.deliver_messages().await? > 0 {
                continue;
            }
            match self.wait(&now).await {
                Wake::Doorbell(bits) => self.on_doorbell(bits).await?,
                Wake::Socket(io) => self.on_socket(io).await?,
                Wake::Mail => {}
                Wake::IdleTimer => self.progress.on_idle_timer()?,
                Wake::Timer => self.deliver_timers().await?,
                Wake::Upstream(id, event) => self.deliver(Inbox::Upstream(id, upstream_event(event))).await?,
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        let tls_records = self.store.data().peer.tls_records_waiting();
        let mut o = self.link.outbox();
        let writable_due = o.take_writable();
        Snapshot {
            state: o.state,
            queued: o.queued() + usize::from(tls_records),
            full: o.is_full(),
            paused: o.reading_paused,
            writable_due,
            tls_switch: o.tls_switch,
        }
    }

    /// Ends the connection once the handler closed, or finished and every
    /// queued byte is written (on TLS, `close_notify` too). `Ok(true)`:
    /// `close_notify` waits for the socket; look again (`now` is stale).
    fn end_if_done(&mut self, now: &Snapshot) -> Result<bool, ShutdownReason> {
        match now.state {
            WriteState::Closed => Err(ShutdownReason::Closed),
            WriteState::Finishing if now.queued == 0 => {
                let peer = &mut self.store.data_mut().peer;
                if let (Some(session), Some(socket)) = (peer.tls.session(), &peer.socket)
                    && !session.close_notified()
                {
                    session.close_notify();
                    session.flush(socket).or_else(would_block_ok).map_err(|e| io_reason(&e))?;
                    if session.wants_write() {
                        return Ok(true);
                    }
                }
                io::shutdown_write(self.socket());
                Err(self.progress.finished())
            }
            _ => Ok(false),
        }
    }

    /// Backplane messages are delivered while the handler can still answer.
    fn takes_mail(&self, now: &Snapshot) -> bool {
        now.state == WriteState::Open && !self.progress.told_shutdown
    }

    async fn wait(&mut self, now: &Snapshot) -> Wake {
        let read = !self.progress.input_ended && !now.paused && !now.full && now.state == WriteState::Open;
        let write = now.queued > 0;
        let mail = self.takes_mail(now);
        let due = self.store.data().services.timers.next_deadline().filter(|_| mail);
        let timer = arm(&mut self.timer, due);
        let state = self.store.data_mut();
        let upstreams = &mut state.services.upstream;
        let peer = &mut state.peer;
        let socket = peer.socket.as_mut().expect("a live connection has its socket");
        let tls = peer.tls.session();
        tokio::select! {
            biased;
            bits = self.link.doorbell.rung() => Wake::Doorbell(bits),
            io = io::socket_io(socket, tls, read, write) => Wake::Socket(io),
            () = std::future::poll_fn(|cx| self.subscriber.poll_mail(cx)), if mail => Wake::Mail,
            () = self.progress.idle() => Wake::IdleTimer,
            () = poll_timer(timer) => Wake::Timer,
            (id, event) = std::future::poll_fn(|cx| upstreams.poll_event(cx)), if mail => Wake::Upstream(id, event),
        }
    }

    /// Calls `timer` for each timer due, in deadline order, a batch at a
    /// time as messages are.
    async fn deliver_timers(&mut self) -> Turn {
        let now = Instant::now();
        for _ in 0..MESSAGE_BATCH {
            let Some(id) = self.store.data_mut().services.timers.take_due(now) else { break };
            self.deliver(Inbox::Timer(id)).await?;
            if self.link.outbox().state != WriteState::Open {
                break;
            }
        }
        Ok(())
    }

    /// An embedder changed the outbox (the next turn acts on it), or the
    /// server is shutting down.
    async fn on_doorbell(&mut self, bits: u8) -> Turn {
        if bits & ABORT != 0 {
            return Err(ShutdownReason::ServerShutdown);
        }
        if bits & SHUTDOWN != 0 && !self.progress.told_shutdown {
            self.progress.told_shutdown = true;
            self.deliver(Inbox::ShutdownCsa(WitShutdownReason::ServerShutdown)).await?;
            self.link.outbox().finish();
        }
        Ok(())
    }

    async fn on_socket(&mut self, io: SocketIo) -> Turn {
        match io {
            SocketIo::Read(Ok((_, 0))) => {
                self.progress.input_ended = true;
                self.deliver(Inbox::EndOfInput).await
            }
            SocketIo::Read(Ok((buf, n))) => {
                self.progress.active();
                self.link.received.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                self.deliver(Inbox::Data(&buf.0[..n])).await
            }
            SocketIo::Read(Err(e)) | SocketIo::Writable(Err(e)) => Err(io_reason(&e)),
            SocketIo::Writable(Ok(())) => Ok(()),
        }
    }

    /// Hands waiting backplane messages to the handler, a batch at a time
    /// so the outbox is flushed once per batch rather than per message.
    async fn deliver_messages(&mut self) -> Result<usize, ShutdownReason> {
        let mut delivered = 0;
        while delivered < MESSAGE_BATCH {
            let Some(m) = self.subscriber.take() else { break };
            self.deliver(Inbox::Message(&m.topic, &m.body)).await?;
            delivered += 1;
        }
        Ok(delivered)
    }

    fn socket(&self) -> &TcpStream {
        self.store.data().peer.socket.as_ref().expect("a live connection has its socket")
    }

    /// Writes what the socket takes now, without waiting.
    fn flush(&mut self) -> Turn {
        let peer = &mut self.store.data_mut().peer;
        let socket = peer.socket.as_ref().expect("a live connection has its socket");
        let session = peer.tls.session();
        let mut outbox = self.link.outbox();
        let wrote_directly = std::mem::take(&mut outbox.wrote_directly);
        let written = match session {
            Some(s) => s.flush(socket).or_else(would_block_ok).and_then(|()| {
                if outbox.queued() > 0 { outbox.write_to(|iov| s.write_vectored(socket, iov)) } else { Ok(0) }
            }),
            None if outbox.queued() > 0 => outbox.write_to(|iov| socket.try_write_vectored(iov)),
            None => Ok(0),
        };
        let flushed = written.map_err(|e| io_reason(&e))? > 0;
        drop(outbox);
        if wrote_directly || flushed {
            self.progress.active();
        }
        Ok(())
    }

    /// STARTTLS: writes out what the handler queued before `start-tls`
    /// (in plaintext), then runs the handshake on the same socket. Nothing
    /// is read in between, so every byte the peer sent after its command is
    /// taken as TLS, never delivered as plaintext.
    async fn start_tls(&mut self) -> Turn {
        let timeout = self.tenant.config.tls_handshake_timeout;
        let deadline = Instant::now() + timeout;
        while self.link.outbox().queued() > 0 {
            self.flush()?;
            if self.link.outbox().queued() == 0 {
                break;
            }
            let socket = self.socket();
            tokio::select! {
                r = socket.writable() => r.map_err(|e| io_reason(&e))?,
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(ShutdownReason::TlsHandshakeFailed("the peer did not read the reply to its STARTTLS".into()));
                }
                bits = self.link.doorbell.rung() => if bits & ABORT != 0 { return Err(ShutdownReason::ServerShutdown) },
            }
        }
        let peer = &mut self.store.data_mut().peer;
        let Tls::Offered(config) = std::mem::replace(&mut peer.tls, Tls::Off) else {
            unreachable!("start-tls switches only an offered connection")
        };
        let socket = peer.socket.take().expect("a live connection has its socket");
        let mut handshake = std::pin::pin!(tls::session::accept_until(socket, config, deadline, timeout));
        let (socket, session) = loop {
            tokio::select! {
                r = &mut handshake => break r.map_err(ShutdownReason::TlsHandshakeFailed)?,
                bits = self.link.doorbell.rung() => if bits & ABORT != 0 { return Err(ShutdownReason::ServerShutdown) },
            }
        };
        peer.socket = Some(socket);
        peer.tls = Tls::On(RefCell::new(session));
        self.link.outbox().tls_switch = false;
        self.progress.active();
        Ok(())
    }

    async fn deliver(&mut self, what: Inbox<'_>) -> Turn {
        let kind = what.index();
        let result = call(&mut self.store, &self.handler, &mut self.clock, &self.link.doorbell, what).await;
        if self.times.observe(kind, self.clock.last_call) {
            self.tenant.stats.fold(&mut self.times);
        }
        if result == Err(ShutdownReason::ServerShutdown) {
            // Cut short by the end of the grace period: the instance is not
            // called again, not even with `shutdown-csa`.
            self.progress.told_shutdown = true;
        }
        result
    }

    /// Tells a live handler why its connection ended, then closes the socket.
    async fn close(&mut self, reason: &ShutdownReason) {
        self.link.outbox().close();
        if !self.progress.told_shutdown
            && let Some(wit) = wit_reason(reason)
        {
            let _ = self.deliver(Inbox::ShutdownCsa(wit)).await;
        }
        // (A failed STARTTLS handshake took the socket with it.)
        if self.progress.lingers(reason)
            && let Some(socket) = &self.store.data().peer.socket
        {
            io::linger(socket, &self.link.doorbell).await;
        }
        debug!("socket closed");
    }
}

/// An upstream's event as the handler's inbox takes it.
fn upstream_event(event: upstream::Event) -> UpstreamEvent {
    match event {
        upstream::Event::Connected => UpstreamEvent::Connected,
        upstream::Event::Data(bytes) => UpstreamEvent::Data(bytes),
        upstream::Event::EndOfInput => UpstreamEvent::EndOfInput,
        upstream::Event::Writable => UpstreamEvent::Writable,
        upstream::Event::Closed(reason) => UpstreamEvent::Closed(
            wit_reason(&reason).unwrap_or_else(|| WitShutdownReason::SocketError(reason.to_string())),
        ),
    }
}

/// The connection's timer sleep set to `deadline` (made on first use).
fn arm(slot: &mut Option<Pin<Box<Sleep>>>, deadline: Option<Instant>) -> Option<Pin<&mut Sleep>> {
    let deadline = deadline?;
    let sleep = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
    if sleep.deadline() != deadline {
        sleep.as_mut().reset(deadline);
    }
    Some(sleep.as_mut())
}

/// Waits for the timer's sleep, or forever when there is none.
async fn poll_timer(timer: Option<Pin<&mut Sleep>>) {
    match timer {
        Some(sleep) => sleep.await,
        None => std::future::pending().await,
    }
}

/// A would-block is no error for a flush that does not wait.
fn would_block_ok(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::WouldBlock { Ok(()) } else { Err(e) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ListenAddr, ListenerConfig, ServerConfig};
    use std::io::Read;

    /// `send` with nothing queued writes to the connection's own socket
    /// during the call, straight from the guest's memory: pier's `send` is
    /// linked, not the generated one that copies into the outbox's queue.
    #[tokio::test]
    async fn send_writes_straight_to_the_socket() {
        // target/<profile>/deps/pier-<hash>
        let target = std::env::current_exe().unwrap().ancestors().nth(3).unwrap().to_path_buf();
        let echo = target.join("wasm32-wasip2/release/echo.wasm");
        assert!(echo.exists(), "{} is missing: run `make build` first", echo.display());
        let addr = ListenAddr::parse_addr("127.0.0.1:0").unwrap();
        let mut listener = ListenerConfig::new("fast", addr, echo);
        listener.max_connections = 1;
        let config = ServerConfig::new(vec![listener]);
        let tenant = Tenant::load_all(&config).unwrap().remove(0);

        let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = std::net::TcpStream::connect(socket.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let (server, _) = socket.accept().await.unwrap();
        let link = tenant.link();
        let (mut store, handler) =
            instantiate(&tenant, 1, &link, Some(server), Tls::Off, &tenant.subscriber()).await.unwrap();
        let info = ConnectionInfo { id: 1, listener: "fast".into(), peer: "p".into(), local: "l".into(), tls: None };
        let mut clock = Clock::new(tenant.config.cpu_limit, tenant.config.cpu_budget);
        call(&mut store, &handler, &mut clock, &link.doorbell, Inbox::NewCsa(info)).await.unwrap();
        call(&mut store, &handler, &mut clock, &link.doorbell, Inbox::Data(b"ping")).await.unwrap();

        assert_eq!(link.outbox().queued(), 0, "the bytes went to the socket, not the queue");
        assert!(link.outbox().wrote_directly);
        let mut got = [0; 4];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    }
}
