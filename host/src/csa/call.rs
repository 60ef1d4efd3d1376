//! One call into a handler's inbox, under the listener's deadline, and what
//! its failure means for the connection.

use crate::bindings::{ConnectionHandler, ConnectionInfo, UpstreamEvent, WitShutdownReason};
use crate::events::ShutdownReason;
use crate::outbox::doorbell::Doorbell;
use crate::sandbox::{HostState, MemoryLimitExceeded};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use wasmtime::Store;

/// One call into the handler's inbox.
pub(super) enum Inbox<'a> {
    NewCsa(ConnectionInfo),
    Data(&'a [u8]),
    EndOfInput,
    Writable,
    Message(&'a str, &'a [u8]),
    Timer(u64),
    Upstream(u64, UpstreamEvent),
    ShutdownCsa(WitShutdownReason),
}

impl Inbox<'_> {
    /// Its place in [`crate::stats::CALLS`].
    pub(super) fn index(&self) -> usize {
        match self {
            Inbox::NewCsa(_) => 0,
            Inbox::Data(_) => 1,
            Inbox::EndOfInput => 2,
            Inbox::Writable => 3,
            Inbox::Message(..) => 4,
            Inbox::Timer(_) => 5,
            Inbox::Upstream(..) => 6,
            Inbox::ShutdownCsa(_) => 7,
        }
    }
}

/// How long a connection's calls may run: each one, a wall-clock deadline
/// from its start (`cpu-limit`: time spent waiting for a worker thread
/// counts too); all of them, the time spent running the guest
/// (`cpu-budget`: the time inside the call's polls, waits excluded).
pub(crate) struct Clock {
    limit: Duration,
    budget: Duration,
    used: Duration,
    /// How long the last call took, start to end (for the metrics).
    pub(crate) last_call: Duration,
}

impl Clock {
    pub(crate) fn new(limit: Duration, budget: Duration) -> Self {
        Self { limit, budget, used: Duration::ZERO, last_call: Duration::ZERO }
    }
}

/// Runs one inbox call under `clock`. Past either bound the call's future
/// is dropped, which unwinds the guest; the instance is not used again. So
/// it is when the grace period of a shutdown ends (`ABORT` on `doorbell`),
/// with [`ShutdownReason::ServerShutdown`]: a long call cannot hold the
/// server past its grace.
pub(super) async fn call(
    store: &mut Store<HostState>,
    handler: &ConnectionHandler,
    clock: &mut Clock,
    doorbell: &Doorbell,
    what: Inbox<'_>,
) -> Result<(), ShutdownReason> {
    let inbox = handler.pier_server_inbox();
    let deadline = clock.start(store);
    let fut = async {
        match what {
            Inbox::NewCsa(info) => inbox.call_new_csa(&mut *store, &info).await,
            Inbox::Data(bytes) => inbox.call_data(&mut *store, bytes).await,
            Inbox::EndOfInput => inbox.call_end_of_input(&mut *store).await,
            Inbox::Writable => inbox.call_writable(&mut *store).await,
            Inbox::Message(topic, body) => inbox.call_message(&mut *store, topic, body).await,
            Inbox::Timer(id) => inbox.call_timer(&mut *store, id).await,
            Inbox::Upstream(id, event) => inbox.call_upstream(&mut *store, id, &event).await,
            Inbox::ShutdownCsa(reason) => inbox.call_shutdown_csa(&mut *store, &reason).await,
        }
    };
    clock.run(deadline, doorbell, fut).await
}

impl Clock {
    /// Readies `store` for a call starting now; returns its deadline.
    pub(crate) fn start(&mut self, store: &mut Store<HostState>) -> Instant {
        // The deadline is relative to the epoch when it is set: set it now,
        // or a call after a quiet spell would find it long passed and yield
        // at once (a timer registration and a wake-up for every message).
        store.set_epoch_deadline(1);
        let deadline = Instant::now() + self.limit;
        store.data_mut().services.keyvalue.set_deadline(deadline);
        deadline
    }

    /// Runs `fut`, an inbox call made after [`start`](Self::start) gave
    /// `deadline`, within the clock's bounds (see [`call`]).
    pub(crate) async fn run(
        &mut self,
        deadline: Instant,
        doorbell: &Doorbell,
        fut: impl Future<Output = wasmtime::Result<()>>,
    ) -> Result<(), ShutdownReason> {
        let started = Instant::now();
        let mut fut = std::pin::pin!(fut);
        // Armed only when the call does not end in its first poll (it
        // yielded at an epoch tick, or waits on the host): most calls never
        // need one.
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        let outcome = std::future::poll_fn(|cx| {
            let polled = Instant::now();
            let result = fut.as_mut().poll(cx);
            let now = Instant::now();
            self.used += now - polled;
            if let Poll::Ready(r) = result {
                return Poll::Ready(r.map_err(|trap| trap_reason(&trap)));
            }
            if self.used > self.budget {
                return Poll::Ready(Err(ShutdownReason::CpuBudget));
            }
            // A guest that runs yields at every epoch tick and is polled
            // again at once, so tokio's timer (which fires only when a
            // worker parks, or every 61 polls) would see the deadline late:
            // look at the clock.
            if now >= deadline {
                return Poll::Ready(Err(ShutdownReason::CpuLimit));
            }
            if doorbell.poll_abort(cx) {
                return Poll::Ready(Err(ShutdownReason::ServerShutdown));
            }
            // For a call waiting on the host, which is not polled meanwhile.
            let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            timer.as_mut().poll(cx).map(|()| Err(ShutdownReason::CpuLimit))
        })
        .await;
        self.last_call = started.elapsed();
        outcome?;
        if self.used > self.budget {
            return Err(ShutdownReason::CpuBudget);
        }
        Ok(())
    }
}

pub(crate) fn trap_reason(err: &wasmtime::Error) -> ShutdownReason {
    if MemoryLimitExceeded::is_cause_of(err) {
        return ShutdownReason::MemoryLimit;
    }
    let cause = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => err.root_cause().to_string(),
    };
    ShutdownReason::Trapped(cause)
}

/// The WIT reason for a host reason the handler can still be told.
pub(crate) fn wit_reason(reason: &ShutdownReason) -> Option<WitShutdownReason> {
    Some(match reason {
        ShutdownReason::PeerClosed => WitShutdownReason::PeerClosed,
        ShutdownReason::PeerReset => WitShutdownReason::PeerReset,
        ShutdownReason::IdleTimeout => WitShutdownReason::IdleTimeout,
        ShutdownReason::ServerShutdown => WitShutdownReason::ServerShutdown,
        ShutdownReason::Finished => WitShutdownReason::Finished,
        ShutdownReason::Closed => WitShutdownReason::Closed,
        ShutdownReason::SocketError(e) => WitShutdownReason::SocketError(e.clone()),
        ShutdownReason::TlsHandshakeFailed(e) => WitShutdownReason::TlsHandshakeFailed(e.clone()),
        ShutdownReason::TlsError(e) => WitShutdownReason::TlsError(e.clone()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_is_known_by_its_type_not_its_text() {
        let limit = wasmtime::Error::from(MemoryLimitExceeded { desired: 2, limit: 1 }).context("while growing");
        assert_eq!(trap_reason(&limit), ShutdownReason::MemoryLimit);
        let lookalike = wasmtime::Error::msg("memory limit reached: but not ours");
        assert!(matches!(trap_reason(&lookalike), ShutdownReason::Trapped(_)));
    }
}
