//! The native baseline: the fastest honest tokio echo server we can write,
//! the thing pier's per-connection sandbox is measured against.
//!
//! It is what a careful Rust programmer would ship, with no tricks pier
//! could not use: the default multi-thread runtime (one worker per core,
//! as pier), one task per connection, one buffer per connection reused for
//! every read, TCP_NODELAY, and on the peer's EOF it closes its write side
//! after echoing everything (what the echo guest does on `shutdown-csa`).
//! It runs as its own child process and announces itself with the same
//! `listening <name> <addr>` line as pier, so both are started, measured
//! and stopped in exactly the same way. [`serve_tls`] is the same server
//! behind a tokio-rustls handshake, the baseline of the `tls-*` rows.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

/// Read buffer per connection: one 4 KiB message fits in one read.
const BUF: usize = 8 << 10;

/// How long a TLS client may take to finish its handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Serves until SIGTERM or SIGINT, then returns (exit 0).
pub async fn serve(listen: &str) -> Result<()> {
    accept_loop(listen, "native", |stream| {
        tokio::spawn(echo(stream));
    })
    .await
}

/// The TLS baseline (`pier-bench native-tls-echo`): the same server with a
/// tokio-rustls handshake (ring provider, rustls's default server config, see
/// [`crate::tls::server_config`]) in front of the same echo loop, each
/// connection in its own task from accept to close.
pub async fn serve_tls(listen: &str, cert: &Path, key: &Path) -> Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(crate::tls::server_config(cert, key)?);
    accept_loop(listen, "native-tls", move |stream| {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            if let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)).await {
                echo(tls).await;
            }
        });
    })
    .await
}

/// Accepts until SIGTERM or SIGINT, handing each connection (TCP_NODELAY
/// set) to `spawn`.
async fn accept_loop(listen: &str, name: &str, spawn: impl Fn(TcpStream)) -> Result<()> {
    let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    // Install the handlers before announcing the port: a signal sent as soon
    // as the orchestrator reads the line must not be fatal.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening {name} {addr}")?;
    stdout.flush()?;
    drop(stdout);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    spawn(stream);
                }
                // EMFILE and friends: wait a little rather than spin.
                Err(e) => {
                    eprintln!("{name}-echo: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    Ok(())
}

/// Echoes until the peer's EOF (for TLS: its close_notify), then closes the
/// write side (TLS: close_notify, then FIN). Errors (a reset peer) just end
/// the connection. The flush after each write is a no-op on a plain socket;
/// under TLS it sends what rustls still holds.
async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) {
    let mut buf = vec![0u8; BUF];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => {
                let _ = stream.shutdown().await;
                return;
            }
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}
