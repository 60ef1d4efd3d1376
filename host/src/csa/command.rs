//! inetd mode: a `wasi:cli/command` component serves one connection, as
//! `tcpserver` and inetd run a program per connection. Its stdin is the
//! peer's input (EOF at the peer's FIN), its stdout goes to the peer
//! (bounded by `outbox-high-water`: a program that writes faster than the
//! peer reads blocks in its write), its stderr is the log, and its exit ends
//! the connection. The environment follows ucspi-tcp: `PROTO=TCP`,
//! `TCPREMOTEIP`, `TCPREMOTEPORT`, `TCPLOCALIP`, `TCPLOCALPORT`.
//!
//! Limits: `cpu-limit` bounds the guest's run time between two moves of
//! bytes (a program blocked on stdin is waiting, not running, and is not
//! cut); `cpu-budget` its run time in all; `idle-timeout` a connection on
//! which no byte moves; memory as for any handler.

use crate::events::ShutdownReason;
use crate::outbox::doorbell::{ABORT, Doorbell, SHUTDOWN};
use crate::sandbox::state::CommandIo;
use crate::tenant::Tenant;
use crate::tls::Tls;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream};
use wasmtime_wasi::p2::bindings::CommandPre;

/// Runs the command for one accepted connection; returns why it ended.
pub(super) async fn serve(
    stream: TcpStream,
    id: u64,
    (peer, local): (SocketAddr, SocketAddr),
    link: &Arc<crate::outbox::Link>,
    tenant: &Tenant,
    pre: &CommandPre<crate::sandbox::HostState>,
) -> ShutdownReason {
    // A second handle on the socket: to end the program's input when the
    // server shuts down, and to close it in order after the program exits.
    let control = match socket2::SockRef::from(&stream).try_clone() {
        Ok(control) => control,
        Err(e) => return ShutdownReason::SocketError(format!("duplicating the socket: {e}")),
    };
    let moved = Arc::new(AtomicU64::new(0));
    let (input, output) = stream.into_split();
    let config = &tenant.config;
    let argv0 = config.plugin.file_name().map_or_else(|| "command".into(), |f| f.to_string_lossy().into_owned());
    let io = CommandIo {
        stdin: AsyncStdinStream::new(Counted { io: input, moved: moved.clone() }),
        stdout: AsyncStdoutStream::new(config.outbox_high_water, Counted { io: output, moved: moved.clone() }),
        argv0,
        env: vec![
            ("PROTO", "TCP".into()),
            ("TCPREMOTEIP", peer.ip().to_string()),
            ("TCPREMOTEPORT", peer.port().to_string()),
            ("TCPLOCALIP", local.ip().to_string()),
            ("TCPLOCALPORT", local.port().to_string()),
        ],
    };
    let started = Instant::now();
    let store = tenant.store(id, link.clone(), None, Tls::Off, tenant.subscriber(), Some(io));
    let mut store = match store {
        Ok(store) => store,
        Err(e) => return ShutdownReason::InstantiateFailed(format!("preparing the sandbox: {e:#}")),
    };
    let command = match Box::pin(pre.instantiate_async(&mut store)).await {
        Ok(command) => command,
        Err(e) => return ShutdownReason::InstantiateFailed(format!("{e:#}")),
    };
    tenant.stats.instantiated(started.elapsed());
    let run = command.wasi_cli_run().call_run(&mut store);
    let watch = Watch::new(config.cpu_limit, config.cpu_budget, config.idle_timeout, moved);
    let reason = watch.drive(run, &link.doorbell, &control).await;
    drop(store);
    // The program is gone and its streams with it: its last bytes were
    // written when its stdout flushed; now our FIN.
    let _ = control.shutdown(std::net::Shutdown::Write);
    reason
}

/// Counts the bytes that move through a socket half: activity, for the
/// idle timeout and for `cpu-limit`'s "between two moves of bytes".
struct Counted<T> {
    io: T,
    moved: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.moved.fetch_add(n as u64, Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The limits a running command is held to, and what it did so far.
struct Watch {
    limit: Duration,
    budget: Duration,
    idle: Duration,
    moved: Arc<AtomicU64>,
}

impl Watch {
    fn new(limit: Duration, budget: Duration, idle: Duration, moved: Arc<AtomicU64>) -> Self {
        Self { limit, budget, idle, moved }
    }

    /// Polls the program's `run` to its end, measuring the time spent in
    /// it; ends it early at a limit or at the end of a shutdown's grace.
    async fn drive(
        &self,
        run: impl Future<Output = wasmtime::Result<Result<(), ()>>>,
        doorbell: &Doorbell,
        control: &socket2::Socket,
    ) -> ShutdownReason {
        let mut run = std::pin::pin!(run);
        let (mut used, mut stretch) = (Duration::ZERO, Duration::ZERO);
        let mut seen = self.moved.load(Ordering::Relaxed);
        let mut idle = std::pin::pin!(tokio::time::sleep(self.idle));
        let mut input_ended = false;
        std::future::poll_fn(|cx| {
            let polled = Instant::now();
            let result = run.as_mut().poll(cx);
            let ran = polled.elapsed();
            used += ran;
            let moved = self.moved.load(Ordering::Relaxed);
            if moved != seen {
                seen = moved;
                stretch = Duration::ZERO;
                idle.as_mut().reset(Instant::now() + self.idle);
            }
            stretch += ran;
            if let Poll::Ready(result) = result {
                return Poll::Ready(exit_reason(result));
            }
            if used > self.budget {
                return Poll::Ready(ShutdownReason::CpuBudget);
            }
            if stretch > self.limit {
                return Poll::Ready(ShutdownReason::CpuLimit);
            }
            if let Poll::Ready(bits) = doorbell.poll(cx) {
                if bits & ABORT != 0 {
                    return Poll::Ready(ShutdownReason::ServerShutdown);
                }
                if bits & SHUTDOWN != 0 && !input_ended {
                    // serverShutdown: the program reads EOF, and may finish
                    // its answer within the grace period.
                    input_ended = true;
                    let _ = control.shutdown(std::net::Shutdown::Read);
                }
            }
            if idle.as_mut().poll(cx).is_ready() {
                return Poll::Ready(ShutdownReason::IdleTimeout);
            }
            Poll::Pending
        })
        .await
    }
}

/// Why a connection ends when its program's `run` returns: its exit status
/// is logged; a trap (a panic, the memory limit) is the handler's failure.
fn exit_reason(result: wasmtime::Result<Result<(), ()>>) -> ShutdownReason {
    let status = match result {
        Ok(Ok(())) => 0,
        Ok(Err(())) => 1,
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => exit.0,
            None => return super::call::trap_reason(&e),
        },
    };
    if status == 0 {
        debug!(status, "command exited");
    } else {
        info!(status, "command exited with a failure status");
    }
    ShutdownReason::Finished
}
