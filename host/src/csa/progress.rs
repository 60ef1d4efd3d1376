//! Where a connection's life stands, as both worlds' connection tasks keep
//! it: the idle timer, and what decides the reason it ends with and how it
//! closes.

use crate::events::ShutdownReason;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub(crate) struct Progress {
    /// The peer sent FIN.
    pub(crate) input_ended: bool,
    /// `shutdown-csa(server-shutdown)` was delivered (or, past the grace
    /// period, is never to be).
    pub(crate) told_shutdown: bool,
    last_activity: Instant,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
}

impl Progress {
    pub(crate) fn new(idle_timeout: Duration) -> Self {
        Self {
            input_ended: false,
            told_shutdown: false,
            last_activity: Instant::now(),
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    /// A byte moved, one way or the other.
    pub(crate) fn active(&mut self) {
        self.last_activity = Instant::now();
    }

    /// The idle timer, for the task's `select!`.
    pub(crate) fn idle(&mut self) -> Pin<&mut Sleep> {
        self.idle.as_mut()
    }

    /// The idle timer fired. It is set for the idle timeout after the last
    /// activity it knew of; activity since only moves it on.
    pub(crate) fn on_idle_timer(&mut self) -> Result<(), ShutdownReason> {
        let deadline = self.last_activity + self.idle_timeout;
        if Instant::now() >= deadline {
            return Err(ShutdownReason::IdleTimeout);
        }
        self.idle.as_mut().reset(deadline);
        Ok(())
    }

    /// Why the connection ends once `finish` has written every byte.
    pub(crate) fn finished(&self) -> ShutdownReason {
        if self.told_shutdown {
            ShutdownReason::ServerShutdown
        } else if self.input_ended {
            ShutdownReason::PeerClosed
        } else {
            ShutdownReason::Finished
        }
    }

    /// Whether closing for `reason` first drains what the peer still sends
    /// (`io::linger`), so that its unread input does not reset the answer.
    pub(crate) fn lingers(&self, reason: &ShutdownReason) -> bool {
        matches!(reason, ShutdownReason::Finished | ShutdownReason::ServerShutdown) && !self.input_ended
    }
}
