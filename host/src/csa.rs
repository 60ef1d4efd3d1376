//! The CSA (connected socket adapter): one task per accepted connection that
//! owns its socket, its handler instance and its outbox, and moves bytes
//! between them (Kamaelia's ConnectedSocketAdapter).
//!
//! The task is one loop over the socket's readiness: read a chunk and hand it
//! to the guest's `data`; write what the outbox holds; call `writable` when a
//! blocked outbox drains; stop reading while the outbox is full or the guest
//! paused reading. Every guest call runs under the listener's CPU limit.

use crate::bindings::{ConnectionHandler, ConnectionInfo, WitShutdownReason};
use crate::doorbell::{ABORT, Registry, SHUTDOWN};
use crate::events::{ServerEvent, ShutdownReason};
use crate::listener::ListenerRuntime;
use crate::outbox::{CsaHandle, CsaShared, WriteState};
use crate::state::{HostState, MEMORY_LIMIT_TRAP};
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tracing::debug;
use wasmtime::Store;

/// Largest chunk handed to one `data` call (Kamaelia's CSA read size).
pub const READ_CHUNK: usize = 32 << 10;

/// Backplane messages delivered between two flushes of the outbox.
const MESSAGE_BATCH: usize = 64;

/// How `serverShutdown` reaches the accept loops and the CSAs.
#[derive(Clone)]
pub(crate) struct Stop {
    /// Cancelled by `serverShutdown`: the accept loops stop.
    pub(crate) shutdown: CancellationToken,
    /// Every live CSA's doorbell: rung with `SHUTDOWN`, then `ABORT` once
    /// the grace period is over.
    pub(crate) registry: Arc<Registry>,
}

/// One call into the handler's inbox.
enum Inbox<'a> {
    NewCsa(ConnectionInfo),
    Data(&'a [u8]),
    EndOfInput,
    Writable,
    Message(&'a str, &'a [u8]),
    ShutdownCsa(WitShutdownReason),
}

struct Csa {
    id: u64,
    stream: TcpStream,
    store: Store<HostState>,
    handler: ConnectionHandler,
    shared: Arc<CsaShared>,
    rt: Arc<ListenerRuntime>,
    /// The peer sent FIN.
    input_ended: bool,
    /// `shutdown-csa(server-shutdown)` was delivered.
    told_shutdown: bool,
    last_activity: Instant,
    idle: Pin<Box<Sleep>>,
}

/// Runs one connection from accept to close, then reports its end.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, id: u64, rt: Arc<ListenerRuntime>, stop: Stop) {
    let local = stream.local_addr().unwrap_or(peer);
    let shared = CsaShared::new(rt.config.outbox_high_water, rt.config.outbox_low_water);
    let listener = rt.name.clone();
    let _registration = stop.registry.register(id, &shared.doorbell);
    // Boxed: instantiation is done before the connection idles, and its
    // state would otherwise enlarge every live connection's task.
    let instance = Box::pin(instantiate(&rt, id, &shared)).await;
    let handle = CsaHandle::new(id, shared.clone());
    rt.emit(ServerEvent::NewCsa { id, listener: listener.clone(), peer, local, handle });
    let reason = match instance {
        Ok((mut store, handler)) => {
            store.data_mut().socket = Some(std::os::fd::AsRawFd::as_raw_fd(&stream));
            let mut csa = Csa {
                id,
                stream,
                store,
                handler,
                shared: shared.clone(),
                rt: rt.clone(),
                input_ended: false,
                told_shutdown: false,
                last_activity: Instant::now(),
                idle: Box::pin(tokio::time::sleep(rt.config.idle_timeout)),
            };
            let info =
                ConnectionInfo { id, listener: listener.to_string(), peer: peer.to_string(), local: local.to_string() };
            let reason = csa.run(info).await;
            csa.close(&reason).await;
            reason
        }
        Err(reason) => reason,
    };
    let dropped = shared.mailbox().dropped;
    if dropped > 0 {
        tracing::info!(
            listener = &*listener,
            conn = id,
            dropped,
            "backplane messages dropped: the handler was too slow"
        );
    }
    if reason.instance_failed() {
        tracing::warn!(listener = &*listener, conn = id, %peer, %reason, "handler failed; connection closed");
    } else {
        debug!(listener = &*listener, conn = id, %peer, %reason, "connection closed");
    }
    rt.emit(ServerEvent::ShutdownCsa { id, listener, reason });
}

async fn instantiate(
    rt: &ListenerRuntime,
    id: u64,
    shared: &Arc<CsaShared>,
) -> Result<(Store<HostState>, ConnectionHandler), ShutdownReason> {
    let state = HostState::new(rt, id, shared.clone())
        .map_err(|e| ShutdownReason::InstantiateFailed(format!("preparing the sandbox: {e:#}")))?;
    let mut store = Store::new(rt.pre.engine(), state);
    store.limiter(|s| &mut s.limiter);
    // Yield to tokio at every epoch tick: a busy guest never holds a worker
    // thread, and the CPU-limit timeout around each call can fire.
    store.epoch_deadline_async_yield_and_update(1);
    store.set_epoch_deadline(1);
    match rt.pre.instantiate_async(&mut store).await {
        Ok(handler) => Ok((store, handler)),
        Err(e) => Err(ShutdownReason::InstantiateFailed(format!("{e:#}"))),
    }
}

/// What a connection costs before its first byte: a store, an instance and
/// the `new-csa` call; all dropped on return. For measurements.
pub(crate) async fn instantiate_and_greet(rt: &ListenerRuntime, id: u64) -> Result<(), ShutdownReason> {
    let shared = CsaShared::new(rt.config.outbox_high_water, rt.config.outbox_low_water);
    let (mut store, handler) = instantiate(rt, id, &shared).await?;
    let info =
        ConnectionInfo { id, listener: rt.name.to_string(), peer: "127.0.0.1:1".into(), local: "127.0.0.1:2".into() };
    call(&mut store, &handler, rt.config.cpu_limit, Inbox::NewCsa(info)).await
}

impl Csa {
    /// The connection's life after instantiation; returns why it ended.
    async fn run(&mut self, info: ConnectionInfo) -> ShutdownReason {
        if let Err(r) = self.deliver(Inbox::NewCsa(info)).await {
            return r;
        }
        loop {
            if let Err(e) = self.flush() {
                return io_reason(&e);
            }
            let (state, queued, full, paused, writable_due) = {
                let mut o = self.shared.outbox();
                let due = o.take_writable();
                (o.state, o.queued(), o.is_full(), o.reading_paused, due)
            };
            match state {
                WriteState::Closed => return ShutdownReason::Closed,
                WriteState::Finishing if queued == 0 => {
                    shutdown_write(&self.stream);
                    return if self.told_shutdown {
                        ShutdownReason::ServerShutdown
                    } else if self.input_ended {
                        ShutdownReason::PeerClosed
                    } else {
                        ShutdownReason::Finished
                    };
                }
                _ => {}
            }
            if writable_due {
                if let Err(r) = self.deliver(Inbox::Writable).await {
                    return r;
                }
                continue;
            }
            if state == WriteState::Open && !self.told_shutdown {
                match self.deliver_messages().await {
                    Ok(0) => {}
                    Ok(_) => continue,
                    Err(r) => return r,
                }
            }
            let can_read = !self.input_ended && !paused && !full && state == WriteState::Open;
            let want_write = queued > 0;
            let event = tokio::select! {
                biased;
                bits = self.shared.doorbell.rung() => {
                    if bits & ABORT != 0 {
                        return ShutdownReason::ServerShutdown;
                    }
                    if bits & SHUTDOWN != 0 && !self.told_shutdown {
                        self.told_shutdown = true;
                        if let Err(r) = self.deliver(Inbox::ShutdownCsa(WitShutdownReason::ServerShutdown)).await {
                            return r;
                        }
                        self.shared.outbox().finish();
                    }
                    None
                }
                io = socket_io(&mut self.stream, can_read, want_write) => Some(io),
                _ = self.idle.as_mut() => {
                    let deadline = self.last_activity + self.rt.config.idle_timeout;
                    if Instant::now() >= deadline {
                        return ShutdownReason::IdleTimeout;
                    }
                    self.idle.as_mut().reset(deadline);
                    None
                }
            };
            let result = match event {
                Some(SocketIo::Read(Ok((_, 0)))) => {
                    self.input_ended = true;
                    self.deliver(Inbox::EndOfInput).await
                }
                Some(SocketIo::Read(Ok((buf, n)))) => {
                    self.last_activity = Instant::now();
                    self.deliver(Inbox::Data(&buf.0[..n])).await
                }
                Some(SocketIo::Read(Err(e)) | SocketIo::Writable(Err(e))) => Err(io_reason(&e)),
                Some(SocketIo::Writable(Ok(()))) | None => Ok(()),
            };
            if let Err(r) = result {
                return r;
            }
        }
    }

    /// Hands waiting backplane messages to the handler, a batch at a time
    /// so the outbox is flushed once per batch rather than per message.
    async fn deliver_messages(&mut self) -> Result<usize, ShutdownReason> {
        let mut delivered = 0;
        while delivered < MESSAGE_BATCH {
            let Some(m) = self.shared.mailbox().pop() else { break };
            self.deliver(Inbox::Message(&m.topic, &m.body)).await?;
            delivered += 1;
        }
        Ok(delivered)
    }

    /// Writes what the socket takes now, without waiting.
    fn flush(&mut self) -> io::Result<()> {
        let mut outbox = self.shared.outbox();
        let wrote_directly = std::mem::take(&mut outbox.wrote_directly);
        let flushed = outbox.queued() > 0 && outbox.write_to(&self.stream)? > 0;
        if wrote_directly || flushed {
            self.last_activity = Instant::now();
        }
        Ok(())
    }

    async fn deliver(&mut self, call_: Inbox<'_>) -> Result<(), ShutdownReason> {
        call(&mut self.store, &self.handler, self.rt.config.cpu_limit, call_).await
    }

    /// Tells a live handler why its connection ended, then closes the socket.
    async fn close(&mut self, reason: &ShutdownReason) {
        self.shared.outbox().close();
        if !self.told_shutdown
            && let Some(wit) = wit_reason(reason)
        {
            let _ = self.deliver(Inbox::ShutdownCsa(wit)).await;
        }
        if matches!(reason, ShutdownReason::Finished | ShutdownReason::ServerShutdown) && !self.input_ended {
            self.linger().await;
        }
        debug!(conn = self.id, "socket closed");
    }

    /// After our FIN, reads and drops what the peer still sends until its own
    /// FIN, so that closing a socket with unread input does not reset the
    /// connection and destroy an answer the peer has not read yet. Bounded in
    /// time and bytes.
    async fn linger(&mut self) {
        let deadline = Instant::now() + LINGER_TIME;
        let mut discarded = 0;
        // A pooled buffer, not an array here: this future's size is every
        // idle connection's task size.
        let mut scratch = ReadBuffer::take();
        while discarded < LINGER_BYTES {
            let ready = tokio::select! {
                r = self.stream.readable() => r,
                _ = tokio::time::sleep_until(deadline) => return,
                bits = self.shared.doorbell.rung() => if bits & ABORT != 0 { return } else { continue },
            };
            if ready.is_err() {
                return;
            }
            match self.stream.try_read(&mut scratch.0) {
                Ok(0) => return,
                Ok(n) => discarded += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

/// What the socket did.
enum SocketIo {
    /// Bytes read into a pooled buffer (0: the peer sent FIN).
    Read(io::Result<(ReadBuffer, usize)>),
    /// The socket can take more bytes.
    Writable(io::Result<()>),
}

/// Waits until the socket has bytes (when `read`: reads them) or can be
/// written (when `write`). A buffer is taken from the pool only once the
/// socket is readable, so a waiting connection holds none. Reading through
/// `poll_read` lets tokio mark the socket drained after a short read, which
/// saves a `recv` that would only say "would block" on every message.
async fn socket_io(stream: &mut TcpStream, read: bool, write: bool) -> SocketIo {
    use tokio::io::{AsyncRead, ReadBuf};
    std::future::poll_fn(|cx| {
        if write && let Poll::Ready(r) = stream.poll_write_ready(cx) {
            return Poll::Ready(SocketIo::Writable(r));
        }
        if read && stream.poll_read_ready(cx).is_ready() {
            let mut buf = ReadBuffer::take();
            let mut filled = ReadBuf::new(&mut buf.0);
            match Pin::new(&mut *stream).poll_read(cx, &mut filled) {
                Poll::Ready(r) => {
                    let n = filled.filled().len();
                    return Poll::Ready(SocketIo::Read(r.map(|()| (buf, n))));
                }
                // Spurious readiness: tokio cleared it and registered us.
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

/// A `READ_CHUNK` buffer from a small per-thread pool: reads reuse warm
/// buffers (zeroed once, when first made) without allocating, and idle
/// connections hold none.
struct ReadBuffer(Vec<u8>);

thread_local! {
    static READ_BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Spare buffers kept per thread.
const POOLED_BUFFERS: usize = 8;

impl ReadBuffer {
    fn take() -> Self {
        let buf = READ_BUFFERS.with_borrow_mut(Vec::pop).unwrap_or_else(|| vec![0; READ_CHUNK]);
        Self(buf)
    }
}

impl Drop for ReadBuffer {
    /// Returns the buffer to the pool of the thread this runs on now (the
    /// task may have moved; any thread's pool will do).
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        READ_BUFFERS.with_borrow_mut(|pool| {
            if pool.len() < POOLED_BUFFERS {
                pool.push(buf);
            }
        });
    }
}

/// Most time and bytes spent draining a finished connection's input.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// Runs one inbox call under the CPU limit. Past the limit the call's future
/// is dropped, which unwinds the guest; the instance is not used again.
async fn call(
    store: &mut Store<HostState>,
    handler: &ConnectionHandler,
    cpu_limit: std::time::Duration,
    what: Inbox<'_>,
) -> Result<(), ShutdownReason> {
    let inbox = handler.pier_server_inbox();
    // The deadline is relative to the epoch when it is set: set it now, or a
    // call after a quiet spell would find it long passed and yield at once
    // (a timer registration and a wake-up for every message).
    store.set_epoch_deadline(1);
    let started = Instant::now();
    let fut = async {
        match what {
            Inbox::NewCsa(info) => inbox.call_new_csa(&mut *store, &info).await,
            Inbox::Data(bytes) => inbox.call_data(&mut *store, bytes).await,
            Inbox::EndOfInput => inbox.call_end_of_input(&mut *store).await,
            Inbox::Writable => inbox.call_writable(&mut *store).await,
            Inbox::Message(topic, body) => inbox.call_message(&mut *store, topic, body).await,
            Inbox::ShutdownCsa(reason) => inbox.call_shutdown_csa(&mut *store, &reason).await,
        }
    };
    let mut fut = std::pin::pin!(fut);
    // Armed only when the call does not end in its first poll (it yielded
    // at an epoch tick, or waits on the host): most calls never need one.
    let mut timer: Option<Pin<Box<Sleep>>> = None;
    let outcome = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(r));
        }
        let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(started + cpu_limit)));
        timer.as_mut().poll(cx).map(|()| None)
    })
    .await;
    match outcome {
        Some(Ok(())) => Ok(()),
        Some(Err(trap)) => Err(trap_reason(&trap)),
        None => Err(ShutdownReason::CpuLimit),
    }
}

fn trap_reason(err: &wasmtime::Error) -> ShutdownReason {
    if err.chain().any(|e| e.to_string().starts_with(MEMORY_LIMIT_TRAP)) {
        return ShutdownReason::MemoryLimit;
    }
    let cause = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => err.root_cause().to_string(),
    };
    ShutdownReason::Trapped(cause)
}

fn io_reason(e: &io::Error) -> ShutdownReason {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
            ShutdownReason::PeerReset
        }
        _ => ShutdownReason::SocketError(e.to_string()),
    }
}

/// The WIT reason for a host reason the handler can still be told.
fn wit_reason(reason: &ShutdownReason) -> Option<WitShutdownReason> {
    Some(match reason {
        ShutdownReason::PeerClosed => WitShutdownReason::PeerClosed,
        ShutdownReason::PeerReset => WitShutdownReason::PeerReset,
        ShutdownReason::IdleTimeout => WitShutdownReason::IdleTimeout,
        ShutdownReason::ServerShutdown => WitShutdownReason::ServerShutdown,
        ShutdownReason::Finished => WitShutdownReason::Finished,
        ShutdownReason::Closed => WitShutdownReason::Closed,
        ShutdownReason::SocketError(e) => WitShutdownReason::SocketError(e.clone()),
        _ => return None,
    })
}

/// Closes our write side (FIN) without giving up the stream.
fn shutdown_write(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).shutdown(Shutdown::Write);
}
