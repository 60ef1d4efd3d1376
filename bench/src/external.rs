//! The protocol rows of `make bench`, measured with the protocol's own load
//! tool against pier and a native peer started in the same run:
//! the RESP guest vs `redis-server` under `redis-benchmark`, and the HTTP
//! guest vs a native hyper hello server under `wrk`. Each row is skipped,
//! with the reason, when its guest or tool is missing.

use crate::report::Pending;
use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped, whatever happened.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: our own child, not yet reaped.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `pier serve` for one guest and returns it with its address.
fn start_pier(pier: &Path, plugin: &Path) -> Result<(Guard, SocketAddr)> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(pier)
        .args(["serve", "--listen", "127.0.0.1:0", "--nodelay", "--max-connections", "1024", "--plugin"])
        .arg(plugin)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", pier.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
    let guard = Guard(child);
    let addr = line.split_whitespace().nth(2).and_then(|a| a.parse().ok()).context("no `listening` line from pier")?;
    Ok((guard, addr))
}

/// Waits until something accepts connections on `addr`.
fn wait_listening(addr: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on {addr}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Runs a command with a deadline and returns its stdout.
fn output(cmd: &mut Command, limit: Duration) -> Result<String> {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn()?;
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("{cmd:?} ran past {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `redis-benchmark -q` prints `SET: 81234.57 requests per second, ...`,
/// after progress lines ended by `\r`.
fn redis_rps(text: &str, test: &str) -> Option<f64> {
    let prefix = format!("{test}: ");
    let line = text
        .split(['\r', '\n'])
        .map(str::trim_start)
        .find(|l| l.starts_with(&prefix) && l.contains("requests per second"))?;
    line[prefix.len()..].split_whitespace().next()?.parse().ok()
}

fn redis_benchmark(port: u16, pipeline: u32, requests: u32) -> Result<(f64, f64)> {
    let text = output(
        Command::new("redis-benchmark").args([
            "-p",
            &port.to_string(),
            "-t",
            "set,get",
            "-c",
            "50",
            "-n",
            &requests.to_string(),
            "-P",
            &pipeline.to_string(),
            "-q",
        ]),
        Duration::from_secs(120),
    )?;
    let set = redis_rps(&text, "SET").with_context(|| format!("no SET line in `{text}`"))?;
    let get = redis_rps(&text, "GET").with_context(|| format!("no GET line in `{text}`"))?;
    Ok((set, get))
}

/// One protocol row: skipped with the reason when the guest or a tool is
/// missing, else what `measure` found (or its error).
fn protocol_row(
    scenario: &'static str,
    plugin: &Path,
    tools: &[&str],
    measure: impl FnOnce(&Path) -> Result<String>,
) -> Pending {
    let status = if !plugin.exists() {
        format!("skipped: {} is not built", plugin.display())
    } else if let Some(tool) = tools.iter().find(|t| !have(t)) {
        format!("skipped: {tool} is not installed (`make setup` installs it)")
    } else {
        measure(plugin).unwrap_or_else(|e| format!("error: {e:#}"))
    };
    Pending { scenario, status }
}

/// The RESP guest vs `redis-server`, `-c 50`, without and with `-P 16`.
pub fn resp_vs_redis(pier: &Path, wasm_dir: &Path, quick: bool) -> Pending {
    let requests = if quick { 5_000 } else { 100_000 };
    protocol_row(
        "RESP guest vs redis-server: SET/GET req/s, -c 50 (and -P 16) (↑)",
        &wasm_dir.join("resp.wasm"),
        &["redis-server", "redis-benchmark"],
        |plugin| measure_resp(pier, plugin, requests),
    )
}

fn measure_resp(pier: &Path, plugin: &Path, requests: u32) -> Result<String> {
    let (_pier, addr) = start_pier(pier, plugin)?;
    let port = free_port()?;
    let _redis = Guard(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server")?,
    );
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let mut parts = Vec::new();
    for pipeline in [1, 16] {
        let (ps, pg) = redis_benchmark(addr.port(), pipeline, requests)?;
        let (rs, rg) = redis_benchmark(port, pipeline, requests)?;
        parts.push(format!(
            "-P {pipeline}: SET {ps:.0} vs {rs:.0} ({:.2}×), GET {pg:.0} vs {rg:.0} ({:.2}×)",
            ps / rs,
            pg / rg
        ));
    }
    Ok(parts.join("; "))
}

/// `wrk` prints `Requests/sec:  12345.67`.
fn wrk_rps(addr: SocketAddr, secs: u32) -> Result<f64> {
    let text = output(
        Command::new("wrk").args(["-t2", "-c32", &format!("-d{secs}s"), &format!("http://{addr}/hello")]),
        Duration::from_secs(u64::from(secs) + 30),
    )?;
    if let Some(errors) = text.lines().find(|l| l.contains("Socket errors") || l.contains("Non-2xx")) {
        bail!("wrk reported `{}`", errors.trim());
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in `{text}`"))
}

/// The HTTP guest vs the native hyper hello (`pier-bench native-http`).
pub fn http_vs_native(pier: &Path, wasm_dir: &Path, quick: bool) -> Pending {
    let secs = if quick { 1 } else { 5 };
    protocol_row(
        "HTTP guest vs native hyper hello: GET /hello req/s under wrk -t2 -c32 (↑)",
        &wasm_dir.join("http.wasm"),
        &["wrk"],
        |plugin| measure_http(pier, plugin, secs),
    )
}

fn measure_http(pier: &Path, plugin: &Path, secs: u32) -> Result<String> {
    let (_pier, addr) = start_pier(pier, plugin)?;
    let port = free_port()?;
    let me = std::env::current_exe()?;
    let _native = Guard(
        Command::new(me)
            .args(["native-http", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .spawn()
            .context("starting the native hello server")?,
    );
    let native = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(native)?;
    let p = wrk_rps(addr, secs)?;
    let n = wrk_rps(native, secs)?;
    Ok(format!("{p:.0} vs {n:.0} ({:.2}×)", p / n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_benchmark() {
        let text = "PING_INLINE: 1.0 requests per second\n SET: rps=0.0 (overall: 0.0)\r SET: 81234.57 requests per second, p50=0.3 msec\nGET: 90000.00 requests per second, p50=0.2 msec\n";
        assert_eq!(redis_rps(text, "SET"), Some(81234.57));
        assert_eq!(redis_rps(text, "GET"), Some(90000.0));
        assert_eq!(redis_rps(text, "INCR"), None);
    }
}
