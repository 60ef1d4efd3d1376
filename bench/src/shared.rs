//! The cost of sharing state through Redis (`pier serve --redis`), in
//! `make bench`'s `shared` part:
//! - the RESP guest with its store in Redis vs the same guest with its store
//!   in process vs `redis-server` itself, under `redis-benchmark -c 50`;
//! - the chat guest's fan-out, one publisher to eight subscribers, with the
//!   subscribers on a second pier process (through Redis pub/sub) vs on the
//!   publisher's own process: messages delivered per second and the p99
//!   delivery latency.

use crate::external::{protocol_row, redis_benchmark, start_pier, start_redis};
use crate::report::Pending;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RESP_ROW: &str = "RESP guest with its store in Redis (--redis) vs in process vs redis-server: SET/GET \
     req/s, redis-benchmark -c 50 (↑)";
const CHAT_ROW: &str = "chat fan-out, 1 publisher → 8 subscribers on a second pier process through Redis vs \
     on the same process: messages delivered/s (↑) and p99 delivery latency (↓)";

/// Subscribers of the fan-out row.
const SUBSCRIBERS: usize = 8;
/// Lines the publisher sends before it waits for every subscriber to have
/// them: well under a mailbox (1024), so none is dropped.
const WINDOW: u64 = 64;

pub fn rows(pier: &Path, wasm_dir: &Path, quick: bool) -> [Pending; 2] {
    let requests = if quick { 5_000 } else { 200_000 };
    let messages = if quick { 1_000 } else { 50_000 };
    let tools = ["redis-server", "redis-benchmark"];
    [
        protocol_row(RESP_ROW, &wasm_dir.join("resp.wasm"), &tools, |plugin| measure_resp(pier, plugin, requests)),
        protocol_row(CHAT_ROW, &wasm_dir.join("chat.wasm"), &tools, |plugin| measure_chat(pier, plugin, messages)),
    ]
}

fn measure_resp(pier: &Path, plugin: &Path, requests: u32) -> Result<String> {
    let (_redis, port) = start_redis()?;
    let url = format!("redis://127.0.0.1:{port}");
    let (local_pier, local) = start_pier(pier, plugin, &[])?;
    let (ls, lg) = redis_benchmark(local.port(), 1, requests)?;
    drop(local_pier);
    let (_shared_pier, shared) = start_pier(pier, plugin, &["--redis", &url])?;
    let (ss, sg) = redis_benchmark(shared.port(), 1, requests)?;
    let (rs, rg) = redis_benchmark(port, 1, requests)?;
    Ok(format!(
        "SET: in Redis {ss:.0}, in process {ls:.0} ({:.2}×), redis-server {rs:.0} ({:.2}×); GET: in Redis {sg:.0}, \
         in process {lg:.0} ({:.2}×), redis-server {rg:.0} ({:.2}×)",
        ss / ls,
        ss / rs,
        sg / lg,
        sg / rg
    ))
}

fn measure_chat(pier: &Path, plugin: &Path, messages: u64) -> Result<String> {
    let (_redis, port) = start_redis()?;
    let url = format!("redis://127.0.0.1:{port}");
    let shared = ["--redis", url.as_str(), "--name", "lobby"];
    let (one, one_addr) = start_pier(pier, plugin, &[])?;
    let local = fan_out(one_addr, one_addr, messages)?;
    drop(one);
    let (_p1, first) = start_pier(pier, plugin, &shared)?;
    let (_p2, second) = start_pier(pier, plugin, &shared)?;
    let across = fan_out(first, second, messages)?;
    Ok(format!(
        "across processes {:.0} msg/s, p99 {:.2} ms; one process {:.0} msg/s, p99 {:.2} ms ({:.2}× the rate)",
        across.rate,
        across.p99_ms,
        local.rate,
        local.p99_ms,
        across.rate / local.rate
    ))
}

struct FanOut {
    /// Messages delivered per second, all subscribers together.
    rate: f64,
    p99_ms: f64,
}

/// A chat connection past its welcome line.
fn join(addr: SocketAddr) -> Result<(TcpStream, BufReader<TcpStream>)> {
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut welcome = String::new();
    r.read_line(&mut welcome)?;
    if !welcome.starts_with("* welcome") {
        bail!("the chat guest did not welcome: {welcome:?}");
    }
    Ok((s, r))
}

/// Publishes `messages` lines on `publisher`'s process to `SUBSCRIBERS`
/// clients of `subscribers`' process, `WINDOW` at a time.
fn fan_out(publisher: SocketAddr, subscribers: SocketAddr, messages: u64) -> Result<FanOut> {
    let (w, _r) = join(publisher)?;
    let mut readers = Vec::new();
    for _ in 0..SUBSCRIBERS {
        readers.push(join(subscribers)?.1);
    }
    let mut w = BufWriter::new(w);
    // Until each subscriber hears one warm-up line, its process's
    // subscription may not have reached Redis yet.
    let warm = Instant::now() + Duration::from_secs(10);
    for r in &mut readers {
        loop {
            if Instant::now() > warm {
                bail!("a subscriber never heard the publisher");
            }
            writeln!(w, "warm")?;
            w.flush()?;
            r.get_ref().set_read_timeout(Some(Duration::from_millis(100)))?;
            let mut line = String::new();
            if r.read_line(&mut line).is_ok() && line.ends_with("> warm\n") {
                break;
            }
        }
        r.get_ref().set_read_timeout(Some(Duration::from_secs(10)))?;
    }
    // Every subscriber has heard a warm-up line: from the publisher's next
    // line ("go") on, each reads in order.
    writeln!(w, "go")?;
    w.flush()?;
    for r in &mut readers {
        let mut line = String::new();
        while !line.ends_with("> go\n") {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                bail!("a subscriber was disconnected");
            }
        }
    }
    let base = Instant::now();
    let heard: Arc<Vec<AtomicU64>> = Arc::new((0..SUBSCRIBERS).map(|_| AtomicU64::new(0)).collect());
    let listeners: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let heard = heard.clone();
            std::thread::spawn(move || listen(r, base, messages, &heard[i]))
        })
        .collect();
    for n in 0..messages {
        writeln!(w, "m {n} {}", base.elapsed().as_nanos())?;
        if (n + 1) % WINDOW == 0 || n + 1 == messages {
            w.flush()?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while heard.iter().any(|h| h.load(Ordering::Acquire) < n + 1) {
                if Instant::now() > deadline {
                    bail!("subscribers stopped hearing the publisher at line {n}");
                }
                std::thread::yield_now();
            }
        }
    }
    let elapsed = base.elapsed();
    let mut latencies = Vec::new();
    for l in listeners {
        latencies.extend(l.join().map_err(|_| anyhow::anyhow!("a subscriber thread panicked"))??);
    }
    latencies.sort_unstable();
    let p99 = latencies.get(latencies.len() * 99 / 100).copied().context("no latencies")?;
    Ok(FanOut { rate: latencies.len() as f64 / elapsed.as_secs_f64(), p99_ms: p99 as f64 / 1e6 })
}

/// Reads `messages` lines `m N T` in order, counting them in `heard`; each
/// one's delivery latency in nanoseconds.
fn listen(mut r: BufReader<TcpStream>, base: Instant, messages: u64, heard: &AtomicU64) -> Result<Vec<u64>> {
    let mut latencies = Vec::with_capacity(messages as usize);
    let mut line = String::new();
    while latencies.len() < messages as usize {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            bail!("a subscriber was disconnected");
        }
        let now = base.elapsed().as_nanos() as u64;
        let Some((_, text)) = line.trim_end().split_once("> ") else { continue };
        let mut parts = text.split(' ');
        if parts.next() != Some("m") {
            continue;
        }
        let seq: u64 = parts.next().and_then(|p| p.parse().ok()).context("a sequence number")?;
        let sent: u64 = parts.next().and_then(|p| p.parse().ok()).context("a send time")?;
        if seq != latencies.len() as u64 {
            bail!("a subscriber heard line {seq} where it expected {}", latencies.len());
        }
        latencies.push(now.saturating_sub(sent));
        heard.store(seq + 1, Ordering::Release);
    }
    Ok(latencies)
}
