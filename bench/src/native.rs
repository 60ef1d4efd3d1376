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
//! and stopped in exactly the same way.

use anyhow::{Context, Result};
use std::io::Write;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

/// Read buffer per connection: one 4 KiB message fits in one read.
const BUF: usize = 8 << 10;

/// Serves until SIGTERM or SIGINT, then returns (exit 0).
pub async fn serve(listen: &str) -> Result<()> {
    let listener = TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    // Install the handlers before announcing the port: a signal sent as soon
    // as the orchestrator reads the line must not be fatal.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening native {addr}")?;
    stdout.flush()?;
    drop(stdout);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(echo(stream));
                }
                // EMFILE and friends: wait a little rather than spin.
                Err(e) => {
                    eprintln!("native-echo: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    Ok(())
}

/// Echoes until the peer's EOF, then closes the write side. Errors (a reset
/// peer) just end the connection.
async fn echo(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; BUF];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => {
                let _ = stream.shutdown().await;
                return;
            }
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    }
}
