//! The CSA's socket I/O: waiting for readiness and reading into pooled
//! buffers, and the orderly close (FIN, then draining the peer's input).

use crate::events::ShutdownReason;
use crate::outbox::doorbell::{ABORT, Doorbell};
use crate::tls::Session;
use crate::tls::session::tls_error;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest chunk handed to one `data` call (Kamaelia's CSA read size).
pub const READ_CHUNK: usize = 32 << 10;

/// Most time and bytes spent draining a finished connection's input.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// What the socket did.
pub(crate) enum SocketIo {
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
///
/// On a TLS connection what is read is decrypted first; a read may so find
/// bytes rustls already holds, without the socket being readable.
pub(crate) async fn socket_io(
    stream: &mut TcpStream,
    mut tls: Option<&mut Session>,
    read: bool,
    write: bool,
) -> SocketIo {
    use tokio::io::{AsyncRead, ReadBuf};
    std::future::poll_fn(|cx| {
        if write && let Poll::Ready(r) = stream.poll_write_ready(cx) {
            return Poll::Ready(SocketIo::Writable(r));
        }
        if read && let Some(session) = tls.as_deref_mut() {
            let mut buf = ReadBuffer::take();
            return session.poll_read(stream, cx, &mut buf.0).map(|r| SocketIo::Read(r.map(|n| (buf, n))));
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
pub(crate) struct ReadBuffer(pub(crate) Vec<u8>);

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

/// Closes our write side (FIN) without giving up the stream.
pub(crate) fn shutdown_write(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).shutdown(Shutdown::Write);
}

/// After our FIN, reads and drops what the peer still sends until its own
/// FIN, so that closing a socket with unread input does not reset the
/// connection and destroy an answer the peer has not read yet. Bounded in
/// time and bytes; `ABORT` on the doorbell cuts it short.
pub(crate) async fn linger(stream: &TcpStream, doorbell: &Doorbell) {
    let deadline = Instant::now() + LINGER_TIME;
    let mut discarded = 0;
    // A pooled buffer, not an array here: this future's size is every
    // idle connection's task size.
    let mut scratch = ReadBuffer::take();
    while discarded < LINGER_BYTES {
        let ready = tokio::select! {
            r = stream.readable() => r,
            _ = tokio::time::sleep_until(deadline) => return,
            bits = doorbell.rung() => if bits & ABORT != 0 { return } else { continue },
        };
        if ready.is_err() {
            return;
        }
        match stream.try_read(&mut scratch.0) {
            Ok(0) => return,
            Ok(n) => discarded += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// The reason a socket error ends a connection with.
pub(crate) fn io_reason(e: &io::Error) -> ShutdownReason {
    if let Some(tls) = tls_error(e) {
        return ShutdownReason::TlsError(tls.to_string());
    }
    ShutdownReason::from_socket_error(e)
}
