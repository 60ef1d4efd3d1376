//! Server events: Kamaelia's `protocolHandlerSignal` outbox. An embedding
//! program subscribes with [`crate::Server::subscribe`] and sees every
//! connection begin and end, in order per connection.

use crate::outbox::CsaHandle;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Server events buffered per subscriber; a subscriber further behind than
/// this gets `RecvError::Lagged` with the count it missed.
const EVENT_BUFFER: usize = 4096;

/// The sending side of the event stream, shared by the accept loops.
#[derive(Clone)]
pub(crate) struct Events(broadcast::Sender<ServerEvent>);

impl Events {
    pub(crate) fn new() -> Self {
        Self(broadcast::channel(EVENT_BUFFER).0)
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<ServerEvent> {
        self.0.subscribe()
    }

    /// Publishes an event; free when nobody subscribed.
    pub(crate) fn emit(&self, event: impl FnOnce() -> ServerEvent) {
        if self.0.receiver_count() > 0 {
            let _ = self.0.send(event());
        }
    }
}

/// One event of the server's event stream.
#[derive(Clone, Debug)]
pub enum ServerEvent {
    /// A connection was accepted and its handler instance created.
    NewCsa {
        id: u64,
        listener: Arc<str>,
        peer: SocketAddr,
        local: SocketAddr,
        /// Send to, finish or close this connection from the embedder.
        handle: CsaHandle,
    },
    /// A connection ended; its instance is gone. Always follows the
    /// connection's `NewCsa`.
    ShutdownCsa { id: u64, listener: Arc<str>, reason: ShutdownReason },
}

/// Why a connection ended (Kamaelia's `howDied`). The first nine mirror the
/// WIT `shutdown-reason` a handler sees; the rest are reasons a handler cannot
/// be told, because its instance is the thing that failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShutdownReason {
    PeerClosed,
    PeerReset,
    IdleTimeout,
    ServerShutdown,
    Finished,
    Closed,
    SocketError(String),
    /// The TLS handshake failed or timed out (the text says why). On a TLS
    /// listener it comes before any handler is instantiated.
    TlsHandshakeFailed(String),
    /// A TLS connection broke after its handshake (a bad record, say).
    TlsError(String),
    /// The handler trapped (`unreachable`, a panic, stack overflow, ...).
    Trapped(String),
    /// The handler grew its linear memory past the listener's memory limit.
    MemoryLimit,
    /// One inbox call ran past the listener's `cpu-limit` deadline.
    CpuLimit,
    /// The connection's calls together ran the guest past `cpu-budget`.
    CpuBudget,
    /// The handler could not be instantiated.
    InstantiateFailed(String),
    /// On a `proxy-protocol` listener, the connection did not begin with a
    /// valid PROXY protocol header in time (the text says why). It comes
    /// before the connection is started: no `NewCsa`, no instance.
    ProxyHeaderInvalid(String),
}

impl ShutdownReason {
    /// The reason a failed socket call ends a connection with.
    pub(crate) fn from_socket_error(e: &std::io::Error) -> Self {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
        match e.kind() {
            ConnectionReset | BrokenPipe | ConnectionAborted => Self::PeerReset,
            _ => Self::SocketError(e.to_string()),
        }
    }

    /// True when the handler instance is no longer usable.
    pub fn instance_failed(&self) -> bool {
        matches!(
            self,
            Self::Trapped(_) | Self::MemoryLimit | Self::CpuLimit | Self::CpuBudget | Self::InstantiateFailed(_)
        )
    }
}

/// Every [`ShutdownReason::kind`], in a fixed order (the metrics' `reason`
/// label values).
pub const REASON_KINDS: [&str; 15] = [
    "peer-closed",
    "peer-reset",
    "idle-timeout",
    "server-shutdown",
    "finished",
    "closed",
    "socket-error",
    "tls-handshake-failed",
    "tls-error",
    "trapped",
    "memory-limit",
    "cpu-limit",
    "cpu-budget",
    "instantiate-failed",
    "proxy-header-invalid",
];

impl ShutdownReason {
    /// The reason without its text: what the logs' `reason=` starts with.
    pub fn kind(&self) -> &'static str {
        REASON_KINDS[self.kind_index()]
    }

    /// Its kind's place in [`REASON_KINDS`].
    pub(crate) fn kind_index(&self) -> usize {
        match self {
            Self::PeerClosed => 0,
            Self::PeerReset => 1,
            Self::IdleTimeout => 2,
            Self::ServerShutdown => 3,
            Self::Finished => 4,
            Self::Closed => 5,
            Self::SocketError(_) => 6,
            Self::TlsHandshakeFailed(_) => 7,
            Self::TlsError(_) => 8,
            Self::Trapped(_) => 9,
            Self::MemoryLimit => 10,
            Self::CpuLimit => 11,
            Self::CpuBudget => 12,
            Self::InstantiateFailed(_) => 13,
            Self::ProxyHeaderInvalid(_) => 14,
        }
    }
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())?;
        match self {
            Self::SocketError(e)
            | Self::TlsHandshakeFailed(e)
            | Self::TlsError(e)
            | Self::Trapped(e)
            | Self::InstantiateFailed(e)
            | Self::ProxyHeaderInvalid(e) => write!(f, ": {e}"),
            _ => Ok(()),
        }
    }
}
