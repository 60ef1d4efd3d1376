//! The one instance of a `server-handler` listener, in a task of its own:
//! it takes the connections' events from an unbounded queue (each
//! connection has at most one in it, and the bytes they carry are bounded
//! by the listener's `queue-max-bytes`) and makes the calls, one at a time.

use crate::bindings::{ConnHandle, ConnectionInfo, ServerHandler, WitShutdownReason};
use crate::csa::call::Clock;
use crate::events::ShutdownReason;
use crate::outbox::doorbell::{DONE, Doorbell, FAULT};
use crate::sandbox::HostState;
use crate::sandbox::conns::{Conn, Conns, TooManyHandles};
use crate::sandbox::plugin::Pre;
use crate::stats::CallTimes;
use crate::tenant::Tenant;
use crate::tls::Tls;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tracing::{Instrument, warn};
use wasmtime::Store;
use wasmtime::component::Resource;

/// What a connection's task hands the instance.
pub(super) enum Event {
    NewCsa(Arc<Conn>, ConnectionInfo),
    /// Bytes read, holding their share of `queue-max-bytes` until the call
    /// is over. Their own buffer, not a pooled read buffer: it is dropped
    /// on the instance's thread, whose pool would fill while the readers'
    /// emptied.
    Data(u64, Vec<u8>, OwnedSemaphorePermit),
    EndOfInput(u64),
    Writable(u64),
    /// The last event of a connection: `shutdown-csa` with this reason, or
    /// (none) no call, when the handler must not or cannot be told.
    ShutdownCsa(u64, Option<WitShutdownReason>),
}

/// A listener's instance, as its connections reach it.
pub(crate) struct Instance {
    queue: mpsc::UnboundedSender<Event>,
    /// What is left of `queue-max-bytes`.
    pub(super) room: Arc<Semaphore>,
    max_queued: usize,
}

impl Instance {
    /// Starts the task that serves `tenant`'s connections; its instance is
    /// made at the first connection. The task ends once every connection
    /// and the listener let go of this.
    pub(crate) fn start(tenant: &Arc<Tenant>) -> Arc<Self> {
        let (queue, events) = mpsc::unbounded_channel();
        let span = tracing::info_span!("instance", listener = &*tenant.name);
        let task = Task {
            tenant: tenant.clone(),
            running: None,
            clock: Clock::new(tenant.config.cpu_limit, Duration::MAX),
            times: CallTimes::default(),
            never_rung: Doorbell::default(),
            live: HashMap::new(),
        };
        tokio::spawn(task.run(events).instrument(span));
        let max_queued = tenant.config.queue_max_bytes;
        Arc::new(Self { queue, room: Arc::new(Semaphore::new(max_queued)), max_queued })
    }

    /// Bytes read from peers and waiting for the instance now.
    pub(crate) fn queued(&self) -> usize {
        self.max_queued - self.room.available_permits()
    }

    /// False only if the task is gone (it does not end while this exists).
    pub(super) fn send(&self, event: Event) -> bool {
        self.queue.send(event).is_ok()
    }
}

struct Running {
    store: Store<HostState>,
    handler: ServerHandler,
}

struct Task {
    tenant: Arc<Tenant>,
    /// The instance, once made; none after it failed, until the next
    /// connection.
    running: Option<Running>,
    /// `cpu-limit` for each call; `cpu-budget` is a connection's, and has
    /// no meaning for an instance that serves them all.
    clock: Clock,
    times: CallTimes,
    /// Shutdown's grace period ends each connection's own task; a call in
    /// progress is bounded by `cpu-limit`.
    never_rung: Doorbell,
    /// The running instance's connections, by id.
    live: HashMap<u64, Arc<Conn>>,
}

/// One call, by the connection it is about.
enum Call<'a> {
    NewCsa(Resource<ConnHandle>, ConnectionInfo),
    Data(&'a [u8]),
    EndOfInput,
    Writable,
    ShutdownCsa(WitShutdownReason),
}

impl Task {
    async fn run(mut self, mut events: mpsc::UnboundedReceiver<Event>) {
        while let Some(event) = events.recv().await {
            self.handle(event).await;
        }
        self.tenant.stats.fold(&mut self.times);
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::NewCsa(conn, info) => self.new_csa(conn, info).await,
            Event::Data(id, bytes, _permit) => self.call(id, Call::Data(&bytes)).await,
            Event::EndOfInput(id) => self.call(id, Call::EndOfInput).await,
            Event::Writable(id) => self.call(id, Call::Writable).await,
            Event::ShutdownCsa(id, reason) => {
                if let Some(reason) = reason {
                    self.call(id, Call::ShutdownCsa(reason)).await;
                }
                self.live.remove(&id);
            }
        }
    }

    async fn new_csa(&mut self, conn: Arc<Conn>, info: ConnectionInfo) {
        if self.running.is_none() {
            match self.instantiate().await {
                Ok(running) => self.running = Some(running),
                Err(reason) => return end(&conn, reason),
            }
        }
        let Some(running) = &mut self.running else { return };
        match running.store.data_mut().conns.add(conn.clone()) {
            Ok(handle) => {
                self.live.insert(conn.id, conn.clone());
                self.call(conn.id, Call::NewCsa(handle, info)).await;
            }
            Err(TooManyHandles(held)) => {
                // The instance never dropped its handles: its fault, as a
                // trap would be; a fresh instance takes this connection.
                self.failed(ShutdownReason::Trapped(format!(
                    "the instance holds {held} conn handles (twice max-connections): it must drop each one \
                     after shutdown-csa"
                )));
                Box::pin(self.new_csa(conn, info)).await;
            }
        }
    }

    async fn instantiate(&mut self) -> Result<Running, ShutdownReason> {
        let tenant = &self.tenant;
        let Pre::Server(pre) = &tenant.pre else { unreachable!("an instance is started for server-handlers only") };
        let started = Instant::now();
        let mut store = tenant
            .store(0, tenant.link(), None, Tls::Off, tenant.subscriber(), None)
            .map_err(|e| ShutdownReason::InstantiateFailed(format!("preparing the sandbox: {e:#}")))?;
        store.data_mut().conns = Conns::with_capacity(2 * tenant.config.max_connections as usize);
        let handler =
            pre.instantiate_async(&mut store).await.map_err(|e| ShutdownReason::InstantiateFailed(format!("{e:#}")))?;
        tenant.stats.instantiated(started.elapsed());
        Ok(Running { store, handler })
    }

    /// Makes one call about connection `id`, unless it belonged to an
    /// instance that failed since.
    async fn call(&mut self, id: u64, what: Call<'_>) {
        let (Some(running), Some(conn)) = (&mut self.running, self.live.get(&id)) else { return };
        let conn = conn.clone();
        let kind = what.index();
        let deadline = self.clock.start(&mut running.store);
        let inbox = running.handler.pier_server_server_inbox();
        let store = &mut running.store;
        let fut = async {
            match what {
                Call::NewCsa(handle, info) => inbox.call_new_csa(&mut *store, handle, &info).await,
                Call::Data(bytes) => inbox.call_data(&mut *store, id, bytes).await,
                Call::EndOfInput => inbox.call_end_of_input(&mut *store, id).await,
                Call::Writable => inbox.call_writable(&mut *store, id).await,
                Call::ShutdownCsa(reason) => inbox.call_shutdown_csa(&mut *store, id, &reason).await,
            }
        };
        let result = self.clock.run(deadline, &self.never_rung, fut).await;
        if self.times.observe(kind, self.clock.last_call) {
            self.tenant.stats.fold(&mut self.times);
        }
        match result {
            Ok(()) => conn.link.doorbell.ring(DONE),
            Err(reason) => self.failed(reason),
        }
    }

    /// The instance failed: every connection of it ends with `reason`, and
    /// the next connection gets a fresh instance.
    fn failed(&mut self, reason: ShutdownReason) {
        warn!(
            %reason,
            connections = self.live.len(),
            "server-handler instance failed; its connections are closed, a fresh instance serves the next"
        );
        self.running = None;
        for (_, conn) in self.live.drain() {
            end(&conn, reason.clone());
        }
    }
}

/// Ends one connection: its task reads why from `fault`.
fn end(conn: &Conn, reason: ShutdownReason) {
    let _ = conn.fault.set(reason);
    conn.link.doorbell.ring(FAULT);
}

impl Call<'_> {
    /// Its place in [`crate::stats::CALLS`], as the `connection-handler`
    /// call of the same name.
    fn index(&self) -> usize {
        match self {
            Call::NewCsa(..) => 0,
            Call::Data(_) => 1,
            Call::EndOfInput => 2,
            Call::Writable => 3,
            Call::ShutdownCsa(_) => 7,
        }
    }
}
