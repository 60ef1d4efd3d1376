//! One connection's TLS: the server handshake (tokio-rustls, under the
//! listener's handshake timeout), then rustls's record layer driven by the
//! CSA on the same non-blocking socket it already polls. Plaintext goes in
//! and out through the same outbox, water marks and `data` calls as on a
//! plaintext connection; only the bytes on the wire differ.

use crate::bindings::TlsInfo;
use rustls::ServerConnection;
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A connection's rustls state, after its handshake.
pub(crate) struct Session {
    conn: ServerConnection,
    /// `close_notify` is queued: the write side is ending.
    close_notified: bool,
}

/// Runs the server handshake on `stream`. `Err` says why it failed, for
/// the `tls-handshake-failed` reason.
pub(crate) async fn accept(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    timeout: Duration,
) -> Result<(TcpStream, Box<Session>), String> {
    accept_until(stream, config, Instant::now() + timeout, timeout).await
}

/// [`accept`] by a `deadline` (the `timeout` it stands for, to say why).
pub(crate) async fn accept_until(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    deadline: Instant,
    timeout: Duration,
) -> Result<(TcpStream, Box<Session>), String> {
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    match tokio::time::timeout_at(deadline, handshake).await {
        Err(_) => {
            Err(format!("no handshake within the tls-handshake-timeout ({})", humantime::format_duration(timeout)))
        }
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(tls)) => {
            let (stream, conn) = tls.into_inner();
            Ok((stream, Box::new(Session { conn, close_notified: false })))
        }
    }
}

impl Session {
    /// What the handshake settled, for the handler's `connection-info`.
    pub(crate) fn info(&self) -> TlsInfo {
        let c = &self.conn;
        TlsInfo {
            version: match c.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".into(),
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".into(),
                other => format!("{other:?}"),
            },
            cipher_suite: c.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("unknown").to_string(),
            server_name: c.server_name().map(str::to_string),
            alpn: c.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
            client_subject: c.peer_certificates().and_then(|chain| chain.first()).and_then(super::certs::subject),
        }
    }

    /// TLS records wait to be written (a reply's, an alert, `close_notify`).
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes waiting records; `WouldBlock` when the socket is full.
    pub(crate) fn flush(&mut self, socket: &TcpStream) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut Socket(socket))?;
        }
        Ok(())
    }

    /// Encrypts what rustls takes of `bufs` and writes it, as a socket's
    /// `try_write_vectored` would: `WouldBlock` if older records are still
    /// waiting for the socket (nothing is taken then). Records the socket
    /// did not take wait in rustls (at most its buffer limit, 64 KiB) and
    /// go out with the next flush.
    pub(crate) fn write_vectored(&mut self, socket: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.flush(socket)?;
        let mut taken = 0;
        for buf in bufs {
            let n = self.conn.writer().write(buf)?;
            taken += n;
            if n < buf.len() {
                break;
            }
        }
        if taken == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.flush(socket) {
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(taken),
        }
    }

    /// Reads decrypted bytes into `buf`, reading records from the socket
    /// when rustls holds none: `Ok(0)` is the end of the peer's input
    /// (`close_notify`, or a FIN without it). A record that fails to
    /// decrypt is an `InvalidData` error carrying rustls's error.
    pub(crate) fn poll_read(
        &mut self,
        socket: &TcpStream,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Poll::Ready(Ok(0)),
                Err(e) => return Poll::Ready(Err(e)),
            }
            ready!(socket.poll_read_ready(cx))?;
            match self.conn.read_tls(&mut Socket(socket)) {
                Ok(_) => {}
                // tokio cleared the readiness: the next poll registers us.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
            if let Err(e) = self.conn.process_new_packets() {
                let _ = self.flush(socket); // the alert rustls queued, if the socket takes it
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, e)));
            }
        }
    }

    pub(crate) fn close_notified(&self) -> bool {
        self.close_notified
    }

    /// Queues `close_notify` (once): the orderly end of our side.
    pub(crate) fn close_notify(&mut self) {
        if !self.close_notified {
            self.conn.send_close_notify();
            self.close_notified = true;
        }
    }
}

/// The non-blocking socket as rustls's `Read`/`Write`.
struct Socket<'a>(&'a TcpStream);

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The rustls error inside an I/O error from [`Session::poll_read`], if any.
pub(crate) fn tls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}
