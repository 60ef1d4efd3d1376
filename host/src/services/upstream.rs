//! The `upstream` import: a connection's outbound TCP connections
//! (Kamaelia's TCPClient), each with an outbox of its own under the same
//! water marks as the connection's, to the addresses its listener's
//! `allow-connect` lists. They live in the connection's store, because the
//! guest's calls reach them; the CSA task polls them beside its own socket
//! ([`Client::poll_event`]) and hands their events to `inbox.upstream`.

use crate::bindings::pier::server::types::SendError as WitSendError;
use crate::bindings::pier::server::upstream::{ConnectError, Host};
use crate::config::AllowConnect;
use crate::events::ShutdownReason;
use crate::outbox::{Outbox, SendError, WriteState};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpStream;
use tracing::info;

/// Largest chunk one upstream `data` event carries.
pub(crate) const READ_CHUNK: usize = 32 << 10;

thread_local! {
    /// Where upstream reads land before the bytes read are copied out: one
    /// buffer per worker thread, not a zeroed chunk per read or per upstream.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What a listener allows its connections to connect to, and how much.
#[derive(Clone, Debug)]
pub(crate) struct Policy {
    pub(crate) allow: Arc<[AllowConnect]>,
    pub(crate) max: u32,
    /// `connect` may name a host, resolved when it connects.
    pub(crate) dns: bool,
    pub(crate) connect_timeout: Duration,
    pub(crate) high_water: usize,
    pub(crate) low_water: usize,
}

/// What happened on one upstream, for `inbox.upstream`.
pub(crate) enum Event {
    Connected,
    Data(Vec<u8>),
    EndOfInput,
    Writable,
    Closed(ShutdownReason),
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

enum Socket {
    Connecting(Connecting),
    Open(TcpStream),
}

struct Upstream {
    id: u64,
    socket: Socket,
    outbox: Outbox,
    input_ended: bool,
    fin_sent: bool,
}

/// One connection's upstreams.
pub(crate) struct Client {
    policy: Policy,
    open: Vec<Upstream>,
    next_id: u64,
    /// Where the next poll starts, so that one busy upstream does not
    /// starve the others.
    turn: usize,
    /// A denied address was logged (once per connection: a handler that
    /// retries in a loop must not flood the log).
    denial_logged: bool,
}

impl Client {
    pub(crate) fn new(policy: Policy) -> Self {
        Self { policy, open: Vec::new(), next_id: 1, turn: 0, denial_logged: false }
    }

    fn find(&mut self, id: u64) -> Option<&mut Upstream> {
        self.open.iter_mut().find(|u| u.id == id)
    }

    /// Waits for the next event on any upstream: it connected, has bytes
    /// (when not paused), drained after a refused send, ended, or closed.
    /// Writes what their outboxes hold as their sockets take it.
    pub(crate) fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<(u64, Event)> {
        let n = self.open.len();
        for k in 0..n {
            let i = (self.turn + k) % n;
            if let Poll::Ready(event) = self.open[i].poll(cx) {
                let id = self.open[i].id;
                if matches!(event, Event::Closed(_)) {
                    self.open.remove(i);
                }
                self.turn = i + 1;
                return Poll::Ready((id, event));
            }
        }
        Poll::Pending
    }
}

impl Upstream {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        let stream = match &mut self.socket {
            Socket::Connecting(connecting) => match connecting.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Event::Closed(ShutdownReason::from_socket_error(&e))),
                Poll::Ready(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    self.socket = Socket::Open(stream);
                    return Poll::Ready(Event::Connected);
                }
            },
            Socket::Open(stream) => stream,
        };
        // Writing: what is queued, then the FIN once `finish` drained it.
        if self.outbox.queued() > 0 && stream.poll_write_ready(cx).is_ready() {
            if let Err(e) = self.outbox.write_to(|iov| stream.try_write_vectored(iov)) {
                return Poll::Ready(Event::Closed(ShutdownReason::from_socket_error(&e)));
            }
            if self.outbox.queued() > 0 {
                // Not all taken: tokio cleared the readiness; poll again to
                // register for the next.
                let _ = stream.poll_write_ready(cx);
            }
        }
        if self.outbox.take_writable() {
            return Poll::Ready(Event::Writable);
        }
        if self.outbox.state == WriteState::Finishing && self.outbox.queued() == 0 && !self.fin_sent {
            let _ = socket2::SockRef::from(&*stream).shutdown(std::net::Shutdown::Write);
            self.fin_sent = true;
        }
        if self.fin_sent && self.input_ended {
            return Poll::Ready(Event::Closed(ShutdownReason::PeerClosed));
        }
        // Reading, unless paused or ended.
        if !self.input_ended && !self.outbox.reading_paused {
            while stream.poll_read_ready(cx).is_ready() {
                let read = SCRATCH.with_borrow_mut(|buf| {
                    buf.resize(READ_CHUNK, 0);
                    stream.try_read(buf).map(|n| buf[..n].to_vec())
                });
                match read {
                    Ok(bytes) if bytes.is_empty() => {
                        self.input_ended = true;
                        return Poll::Ready(Event::EndOfInput);
                    }
                    Ok(bytes) => return Poll::Ready(Event::Data(bytes)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Poll::Ready(Event::Closed(ShutdownReason::from_socket_error(&e))),
                }
            }
        }
        Poll::Pending
    }
}

/// Where `connect` goes: an address, or (with `allow-dns`) a name to resolve.
enum Target {
    Addr(SocketAddr),
    Name(String),
}

/// The first address `name` resolves to that `allow` lists.
async fn resolve_allowed(name: &str, allow: &[AllowConnect]) -> io::Result<SocketAddr> {
    let mut resolved = tokio::net::lookup_host(name).await?;
    resolved.find(|addr| allow.iter().any(|rule| rule.allows(addr))).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{name} resolves to no address the listener's allow-connect lists"),
        )
    })
}

impl Host for Client {
    fn connect(&mut self, address: String) -> Result<u64, ConnectError> {
        let target = match address.parse::<SocketAddr>() {
            Ok(addr) => {
                if !self.policy.allow.iter().any(|rule| rule.allows(&addr)) {
                    if !std::mem::replace(&mut self.denial_logged, true) {
                        info!(%addr, "upstream connect denied: the listener's allow-connect does not list it");
                    }
                    return Err(ConnectError::Denied(format!("{addr} is not in this listener's allow-connect")));
                }
                Target::Addr(addr)
            }
            Err(_)
                if self.policy.dns
                    && address.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
            {
                Target::Name(address)
            }
            Err(_) => {
                let names = if self.policy.dns { "" } else { "; names are not resolved (the listener's allow-dns)" };
                return Err(ConnectError::Invalid(format!("`{address}` is not IP:PORT ([v6]:PORT for IPv6){names}")));
            }
        };
        if self.open.len() >= self.policy.max as usize {
            return Err(ConnectError::TooMany(self.policy.max));
        }
        let (timeout, allow) = (self.policy.connect_timeout, self.policy.allow.clone());
        let connecting = Box::pin(async move {
            let connect = async {
                let addr = match target {
                    Target::Addr(addr) => addr,
                    Target::Name(name) => resolve_allowed(&name, &allow).await?,
                };
                TcpStream::connect(addr).await
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "no connection within the connect-timeout")),
            }
        });
        let id = self.next_id;
        self.next_id += 1;
        self.open.push(Upstream {
            id,
            socket: Socket::Connecting(connecting),
            outbox: Outbox::new(self.policy.high_water, self.policy.low_water),
            input_ended: false,
            fin_sent: false,
        });
        Ok(id)
    }

    fn send(&mut self, id: u64, data: Vec<u8>) -> Result<(), WitSendError> {
        let Some(up) = self.find(id) else { return Err(WitSendError::Closed) };
        let result = match &up.socket {
            Socket::Open(stream) => up.outbox.send_through(&data, |b| stream.try_write(b)),
            Socket::Connecting(_) => up.outbox.send(data),
        };
        result.map_err(|e| match e {
            SendError::WouldBlock => WitSendError::WouldBlock,
            SendError::Closed => WitSendError::Closed,
            SendError::TooLarge { max } => WitSendError::TooLarge(max as u64),
        })
    }

    fn finish(&mut self, id: u64) {
        if let Some(up) = self.find(id) {
            up.outbox.finish();
        }
    }

    fn close(&mut self, id: u64) {
        self.open.retain(|u| u.id != id);
    }

    fn pause_reading(&mut self, id: u64) {
        if let Some(up) = self.find(id) {
            up.outbox.reading_paused = true;
        }
    }

    fn resume_reading(&mut self, id: u64) {
        if let Some(up) = self.find(id) {
            up.outbox.reading_paused = false;
        }
    }
}
