//! The load generator: echo throughput, connection churn and idle
//! connections against one address.
//!
//! Every connect, read and write is bounded by a timeout, so a stuck server
//! makes a scenario fail with a message, never hang. Rates and server CPU are
//! taken over a fixed measurement window that starts after a warm-up: the
//! main task sleeps to the window's start, samples the server's CPU time,
//! sleeps to its end and samples again, while the workers count only the
//! round trips that complete inside the window.
//!
//! Each scenario runs over plain TCP or, for the `tls-*` rows, over TLS 1.3
//! ([`Transport::Tls`]): the same loops behind a tokio-rustls client that
//! does a full handshake on every connection (no resumption).

use crate::proc;
use anyhow::{Context, Result, anyhow, bail, ensure};
use serde::Serialize;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until, timeout};

/// Warm-up, then the measured part, of a timed scenario.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Window {
    #[serde(serialize_with = "secs")]
    pub warmup: Duration,
    #[serde(serialize_with = "secs")]
    pub measure: Duration,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Round-trip latency percentiles, in microseconds.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Latency {
    pub p50_us: f64,
    pub p99_us: f64,
    pub samples: usize,
}

impl Latency {
    fn from_nanos(mut nanos: Vec<u64>) -> Result<Latency> {
        ensure!(!nanos.is_empty(), "no round trip completed inside the measurement window");
        nanos.sort_unstable();
        Ok(Latency {
            p50_us: percentile(&nanos, 50.0) as f64 / 1e3,
            p99_us: percentile(&nanos, 99.0) as f64 / 1e3,
            samples: nanos.len(),
        })
    }
}

/// Nearest-rank percentile of a sorted, non-empty slice.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `fut` within `limit`, its error or the timeout named by `what`.
async fn bounded<T>(limit: Duration, what: &'static str, fut: impl Future<Output = std::io::Result<T>>) -> Result<T> {
    match timeout(limit, fut).await {
        Ok(result) => result.with_context(|| what),
        Err(_) => bail!("{what}: timed out after {limit:?}"),
    }
}

/// Connects with a timeout and sets TCP_NODELAY, as the servers do.
async fn connect(addr: SocketAddr, io: Duration) -> Result<TcpStream> {
    let stream = bounded(io, "connect", TcpStream::connect(addr)).await?;
    stream.set_nodelay(true).context("setting TCP_NODELAY")?;
    Ok(stream)
}

/// How the load generator talks to the server.
#[derive(Clone)]
pub enum Transport {
    Plain,
    /// TLS 1.3 with this client config ([`crate::tls::connector`]).
    Tls(tokio_rustls::TlsConnector),
}

/// A connection over either transport. Writers flush after each message:
/// a no-op on a plain socket, under TLS it sends what rustls still holds.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// `stream`, with the TLS handshake done if the transport is TLS.
async fn handshake(stream: TcpStream, transport: &Transport, io: Duration) -> Result<Stream> {
    match transport {
        Transport::Plain => Ok(Stream::Plain(stream)),
        Transport::Tls(connector) => {
            let tls = bounded(io, "TLS handshake", connector.connect(crate::tls::server_name(), stream)).await?;
            Ok(Stream::Tls(Box::new(tls)))
        }
    }
}

/// [`connect`], then the handshake.
async fn open(addr: SocketAddr, transport: &Transport, io: Duration) -> Result<Stream> {
    handshake(connect(addr, io).await?, transport, io).await
}

/// Writes one message and flushes it.
async fn send(stream: &mut Stream, msg: &[u8]) -> std::io::Result<()> {
    stream.write_all(msg).await?;
    stream.flush().await
}

/// Half-closes and waits for the server's close, so the server has finished
/// with the connection before the next scenario; bounded, errors ignored.
/// Under TLS, the half-close is close_notify then FIN.
async fn close(mut stream: Stream, io: Duration) {
    let _ = timeout(io, async {
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

/// Waits for every task; the first error, counted, if any failed.
async fn join_all<T: 'static>(mut set: JoinSet<Result<T>>) -> Result<Vec<T>> {
    let mut ok = Vec::with_capacity(set.len());
    let (mut failed, mut first) = (0usize, None);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(value)) => ok.push(value),
            Ok(Err(e)) => {
                failed += 1;
                first.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first.get_or_insert(anyhow!("task failed: {e}"));
            }
        }
    }
    match first {
        None => Ok(ok),
        Some(e) => Err(e.context(format!("{failed} of {} connections failed; the first", ok.len() + failed))),
    }
}

/// The server's CPU time over [start, end), if its pid is known.
async fn server_cpu(pid: Option<u32>, start: Instant, end: Instant) -> Result<Option<Duration>> {
    let Some(pid) = pid else {
        sleep_until(end).await;
        return Ok(None);
    };
    sleep_until(start).await;
    let before = proc::cpu_time(pid)?;
    sleep_until(end).await;
    let after = proc::cpu_time(pid)?;
    Ok(Some(after.saturating_sub(before)))
}

/// CPU microseconds per operation.
fn per_op_us(cpu: Option<Duration>, ops: u64) -> Option<f64> {
    cpu.filter(|_| ops > 0).map(|c| c.as_secs_f64() * 1e6 / ops as f64)
}

#[derive(Clone, Copy, Debug)]
pub struct EchoParams {
    pub conns: usize,
    pub size: usize,
    pub window: Window,
    pub io_timeout: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct EchoStats {
    pub msgs: u64,
    pub msgs_per_sec: f64,
    /// Payload bytes echoed per second, one way, in MB (10^6 bytes).
    pub mb_per_sec: f64,
    pub latency: Latency,
    pub server_cpu_us_per_msg: Option<f64>,
}

/// `conns` connections, each in a loop writing one `size`-byte message and
/// reading it back (one message in flight per connection: latency-bound,
/// like a request/response protocol).
pub async fn echo(addr: SocketAddr, transport: &Transport, p: EchoParams, pid: Option<u32>) -> Result<EchoStats> {
    ensure!(p.size > 0 && p.conns > 0, "echo needs a message size and connections");
    let mut connecting = JoinSet::new();
    for _ in 0..p.conns {
        let transport = transport.clone();
        connecting.spawn(async move { open(addr, &transport, p.io_timeout).await });
    }
    let streams = join_all(connecting).await?;
    let start = Instant::now() + p.window.warmup;
    let end = start + p.window.measure;
    let mut workers = JoinSet::new();
    for stream in streams {
        workers.spawn(echo_worker(stream, p.size, start, end, p.io_timeout));
    }
    let cpu = server_cpu(pid, start, end).await?;
    let nanos: Vec<u64> = join_all(workers).await?.into_iter().flatten().collect();
    let msgs = nanos.len() as u64;
    let secs = p.window.measure.as_secs_f64();
    Ok(EchoStats {
        msgs,
        msgs_per_sec: msgs as f64 / secs,
        mb_per_sec: (msgs * p.size as u64) as f64 / secs / 1e6,
        latency: Latency::from_nanos(nanos)?,
        server_cpu_us_per_msg: per_op_us(cpu, msgs),
    })
}

/// One echo connection; returns the round-trip times (ns) completed in the window.
async fn echo_worker(mut stream: Stream, size: usize, start: Instant, end: Instant, io: Duration) -> Result<Vec<u64>> {
    let msg: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut back = vec![0u8; size];
    let mut nanos = Vec::new();
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        bounded(io, "writing a message", send(&mut stream, &msg)).await?;
        bounded(io, "reading the echo", stream.read_exact(&mut back)).await?;
        let done = Instant::now();
        ensure!(back == msg, "the echo differs from the message sent");
        if done >= start && done < end {
            nanos.push((done - sent).as_nanos() as u64);
        }
    }
    close(stream, io).await;
    Ok(nanos)
}

#[derive(Clone, Copy, Debug)]
pub struct ChurnParams {
    pub clients: usize,
    pub window: Window,
    pub io_timeout: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChurnStats {
    pub conns: u64,
    pub conns_per_sec: f64,
    /// Connect to the server's close, per connection.
    pub latency: Latency,
    pub server_cpu_us_per_conn: Option<f64>,
}

/// `clients` concurrent clients, each in a loop: connect, one 64-byte
/// message and its echo, half-close, wait for the server's close. For pier
/// every connection is a fresh instance: this is the cost of the sandbox.
/// Over TLS (the `tls-handshake` row) each connection is also a full
/// TLS 1.3 handshake, and the closes are close_notify.
pub async fn churn(addr: SocketAddr, transport: &Transport, p: ChurnParams, pid: Option<u32>) -> Result<ChurnStats> {
    ensure!(p.clients > 0, "churn needs clients");
    let start = Instant::now() + p.window.warmup;
    let end = start + p.window.measure;
    let mut workers = JoinSet::new();
    for _ in 0..p.clients {
        workers.spawn(churn_worker(addr, transport.clone(), start, end, p.io_timeout));
    }
    let cpu = server_cpu(pid, start, end).await?;
    let nanos: Vec<u64> = join_all(workers).await?.into_iter().flatten().collect();
    let conns = nanos.len() as u64;
    Ok(ChurnStats {
        conns,
        conns_per_sec: conns as f64 / p.window.measure.as_secs_f64(),
        latency: Latency::from_nanos(nanos)?,
        server_cpu_us_per_conn: per_op_us(cpu, conns),
    })
}

async fn churn_worker(
    addr: SocketAddr,
    transport: Transport,
    start: Instant,
    end: Instant,
    io: Duration,
) -> Result<Vec<u64>> {
    let msg = [0x5a_u8; 64];
    let mut back = [0u8; 64];
    let mut nanos = Vec::new();
    loop {
        let began = Instant::now();
        if began >= end {
            break;
        }
        let mut stream = open(addr, &transport, io).await?;
        bounded(io, "writing the message", send(&mut stream, &msg)).await?;
        bounded(io, "reading the echo", stream.read_exact(&mut back)).await?;
        ensure!(back == msg, "the echo differs from the message sent");
        bounded(io, "half-closing", stream.shutdown()).await?;
        let extra = bounded(io, "waiting for the server to close", stream.read(&mut back)).await?;
        ensure!(extra == 0, "the server sent {extra} bytes after the echo");
        drop(stream);
        let done = Instant::now();
        if done >= start && done < end {
            nanos.push((done - began).as_nanos() as u64);
        }
    }
    Ok(nanos)
}

#[derive(Clone, Copy, Debug)]
pub struct IdleParams {
    pub conns: usize,
    /// Connections being opened at once.
    pub concurrency: usize,
    /// Pause between the last connection and the memory reading.
    pub settle: Duration,
    pub io_timeout: Duration,
}

#[derive(Clone, Debug, Serialize)]
pub struct IdleStats {
    pub conns: usize,
    pub open_secs: f64,
    pub rss_before: u64,
    pub rss_after: u64,
    /// (after - before) / conns; negative if the server gave memory back.
    pub rss_per_conn: f64,
    pub maps_per_conn: f64,
}

/// Opens `conns` connections, each proven accepted (and, for pier,
/// instantiated) by a one-byte echo, holds them, and measures how much the
/// server's RSS and memory mappings grew per connection.
/// Over TLS each is held after its handshake and the echo.
pub async fn idle(addr: SocketAddr, transport: &Transport, p: IdleParams, pid: u32) -> Result<IdleStats> {
    ensure!(p.conns > 0 && p.concurrency > 0, "idle needs connections");
    let rss_before = proc::rss_bytes(pid)?;
    let maps_before = proc::map_count(pid)?;
    let began = Instant::now();
    let mut held = Vec::with_capacity(p.conns);
    let mut opening = JoinSet::new();
    let (mut launched, mut failed, mut first) = (0usize, 0usize, None);
    loop {
        while first.is_none() && launched < p.conns && opening.len() < p.concurrency {
            let source = idle_source(addr, launched, p.conns);
            opening.spawn(open_idle(addr, source, transport.clone(), p.io_timeout));
            launched += 1;
        }
        let Some(joined) = opening.join_next().await else { break };
        match joined.map_err(|e| anyhow!("task failed: {e}")).and_then(|r| r) {
            Ok(stream) => held.push(stream),
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first {
        let opened = held.len();
        drop(held);
        return Err(e.context(format!(
            "opened {opened} of {} idle connections ({failed} failed, then stopped); the first failure",
            p.conns
        )));
    }
    let open_secs = began.elapsed().as_secs_f64();
    sleep(p.settle).await;
    let rss_after = proc::rss_bytes(pid)?;
    let maps_after = proc::map_count(pid)?;
    drop(held);
    let n = p.conns as f64;
    Ok(IdleStats {
        conns: p.conns,
        open_secs,
        rss_before,
        rss_after,
        rss_per_conn: (rss_after as f64 - rss_before as f64) / n,
        maps_per_conn: (maps_after as f64 - maps_before as f64) / n,
    })
}

/// Connections per loopback source address: below the ~28k ephemeral ports
/// one (source, destination) pair has.
const PER_SOURCE: usize = 20_000;

/// The source address of idle connection `i` of `total`. Past what one
/// source can open, connections to an IPv4 loopback address come from
/// 127.0.0.1, 127.0.0.2, ... in turn (all of 127/8 is loopback on Linux).
fn idle_source(addr: SocketAddr, i: usize, total: usize) -> Option<std::net::IpAddr> {
    let std::net::IpAddr::V4(ip) = addr.ip() else { return None };
    if !ip.is_loopback() || total <= PER_SOURCE {
        return None;
    }
    let sources = total.div_ceil(PER_SOURCE);
    Some(std::net::Ipv4Addr::new(127, 0, 0, 1 + (i % sources) as u8).into())
}

async fn open_idle(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    transport: Transport,
    io: Duration,
) -> Result<Stream> {
    let tcp = match source {
        None => connect(addr, io).await?,
        Some(ip) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(ip, 0)).with_context(|| format!("binding a client socket to {ip}"))?;
            bounded(io, "connect", socket.connect(addr)).await?
        }
    };
    let mut stream = handshake(tcp, &transport, io).await?;
    bounded(io, "writing one byte", send(&mut stream, b"i")).await?;
    let mut back = [0u8; 1];
    bounded(io, "reading the byte back", stream.read_exact(&mut back)).await?;
    ensure!(&back == b"i", "the echo differs from the byte sent");
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&[7], 99.0), 7);
    }
}
