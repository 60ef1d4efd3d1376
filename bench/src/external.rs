//! The protocol rows of `make bench`, measured with the protocol's own load
//! tool against pier and a native peer started in the same run:
//! the RESP guest vs `redis-server` under `redis-benchmark`, and the HTTP
//! guest under `wrk` vs a native hyper hello server and vs `wasmtime serve`
//! running a hello component twice: a WASI 0.2 `wasi:http/proxy` one
//! (`bench/hello-http`, a fresh instance per request) and a WASI 0.3
//! `wasi:http/service` one (`bench/hello-http-p3`, instances reused: up to
//! 128 requests, 16 at once, `wasmtime serve`'s strongest configuration).
//! Each row is skipped, with the reason, when its guest or tool is missing.

use crate::report::Pending;
use anyhow::{Context, Result, bail};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped, whatever happened.
pub(crate) struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // Already exited (and reaped): its pid may belong to another process now.
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
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

/// Starts `pier serve` for one guest, with `extra` flags, and returns it
/// with its address.
pub(crate) fn start_pier(pier: &Path, plugin: &Path, extra: &[&str]) -> Result<(Guard, SocketAddr)> {
    let plugin = plugin.display().to_string();
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--nodelay", "--max-connections", "1024", "--plugin"];
    args.push(&plugin);
    args.extend_from_slice(extra);
    start_pier_with(pier, &args)
}

/// Starts `pier ARGS` and returns it with its first listener's address.
fn start_pier_with(pier: &Path, args: &[&str]) -> Result<(Guard, SocketAddr)> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(pier)
        .args(args)
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

pub(crate) fn redis_benchmark(port: u16, pipeline: u32, requests: u32) -> Result<(f64, f64)> {
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

/// Why a protocol row cannot run: its guest is not built or a tool is missing.
fn skip_reason(plugin: &Path, tools: &[&str]) -> Option<String> {
    if !plugin.exists() {
        Some(format!("skipped: {} is not built", plugin.display()))
    } else {
        tools
            .iter()
            .find(|t| !have(t))
            .map(|tool| format!("skipped: {tool} is not installed (`make setup-test` installs it)"))
    }
}

/// One protocol row: skipped with the reason when the guest or a tool is
/// missing, else what `measure` found (or its error).
pub(crate) fn protocol_row(
    scenario: &'static str,
    plugin: &Path,
    tools: &[&str],
    measure: impl FnOnce(&Path) -> Result<String>,
) -> Pending {
    let status =
        skip_reason(plugin, tools).unwrap_or_else(|| measure(plugin).unwrap_or_else(|e| format!("error: {e:#}")));
    Pending { scenario, status }
}

/// The RESP guest vs `redis-server`, `-c 50`, without and with `-P 16`:
/// first with pier on one worker thread, as redis-server runs its commands
/// on one thread (the like-for-like row), then with pier's default of one
/// worker per core. On a 2-core machine shared with the load generator the
/// second worker mostly adds cross-thread wake-ups.
pub fn resp_vs_redis(pier: &Path, wasm_dir: &Path, quick: bool) -> [Pending; 2] {
    let requests = if quick { 5_000 } else { 200_000 };
    let row = |scenario, extra: &'static [&'static str]| {
        protocol_row(scenario, &wasm_dir.join("resp.wasm"), &["redis-server", "redis-benchmark"], |plugin| {
            measure_resp(pier, plugin, extra, requests)
        })
    };
    [
        row(
            "RESP guest (pier --workers 1) vs redis-server (one thread): SET/GET req/s, -c 50 (and -P 16) (↑)",
            &["--workers", "1"],
        ),
        row("RESP guest (pier, a worker per core) vs redis-server: SET/GET req/s, -c 50 (and -P 16) (↑)", &[]),
    ]
}

/// A `redis-server` on a free loopback port, without persistence, once it
/// accepts connections; and its port.
pub(crate) fn start_redis() -> Result<(Guard, u16)> {
    let port = free_port()?;
    let redis = Guard(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server")?,
    );
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port)))?;
    Ok((redis, port))
}

fn measure_resp(pier: &Path, plugin: &Path, extra: &[&str], requests: u32) -> Result<String> {
    let (_pier, addr) = start_pier(pier, plugin, extra)?;
    let (_redis, port) = start_redis()?;
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

const PROXY_ROW: &str = "proxy guest in front of redis-server vs redis-server direct (and HAProxy 2.6 in TCP \
     mode on the same path): SET/GET req/s, redis-benchmark -c 50 (↑, goal ≥ 0.7×)";

/// The proxy guest's cost: redis-benchmark through pier's TCP proxy guest
/// to a redis-server, against the same redis-server direct, and through
/// HAProxy when it is installed.
pub fn proxy_vs_direct(pier: &Path, wasm_dir: &Path, quick: bool) -> Pending {
    let requests = if quick { 5_000 } else { 100_000 };
    protocol_row(PROXY_ROW, &wasm_dir.join("proxy.wasm"), &["redis-server", "redis-benchmark"], |plugin| {
        measure_proxy(pier, plugin, requests)
    })
}

fn measure_proxy(pier: &Path, plugin: &Path, requests: u32) -> Result<String> {
    let (_redis, port) = start_redis()?;
    let redis = SocketAddr::from(([127, 0, 0, 1], port));
    let dir = std::env::temp_dir().join(format!("pier-bench-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("pier.toml");
    // The file's paths are relative to it: give the plugin's whole path.
    let plugin = std::fs::canonicalize(plugin).with_context(|| format!("finding {}", plugin.display()))?;
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nname = \"proxy\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{}\"\nnodelay = true\n\
             max-connections = 1024\nallow-connect = [\"{redis}\"]\nconfig = {{ upstream = \"{redis}\" }}\n",
            plugin.display()
        ),
    )?;
    let (pier_guard, proxied) = start_pier_with(pier, &["serve", "--config", &config.display().to_string()])?;
    let (ps, pg) = redis_benchmark(proxied.port(), 1, requests)?;
    drop(pier_guard);
    let (ds, dg) = redis_benchmark(port, 1, requests)?;
    let mut text =
        format!("proxy SET {ps:.0} vs {ds:.0} direct ({:.2}×), GET {pg:.0} vs {dg:.0} ({:.2}×)", ps / ds, pg / dg);
    if have("haproxy") {
        let hport = free_port()?;
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 1024\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  \
                 timeout server 60s\nlisten redis\n  bind 127.0.0.1:{hport}\n  server r1 {redis}\n"
            ),
        )?;
        let _haproxy = Guard(
            Command::new("haproxy")
                .args(["-f", &cfg.display().to_string(), "-db"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting haproxy")?,
        );
        wait_listening(SocketAddr::from(([127, 0, 0, 1], hport)))?;
        let (hs, hg) = redis_benchmark(hport, 1, requests)?;
        text.push_str(&format!(
            "; HAProxy SET {hs:.0} ({:.2}× direct), GET {hg:.0} ({:.2}×): pier's proxy {:.2}×/{:.2}× HAProxy's",
            hs / ds,
            hg / dg,
            ps / hs,
            pg / hg
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(text)
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

const HTTP_VS_HYPER: &str = "HTTP guest vs native hyper hello: GET /hello req/s under wrk -t2 -c32 (↑)";
const HTTP_VS_WASMTIME_P2: &str = "HTTP guest vs `wasmtime serve` hello (WASI 0.2, fresh instance per request): \
     GET /hello req/s under wrk -t2 -c32 (↑, goal ≥ 5×)";
const HTTP_VS_WASMTIME_P3: &str = "HTTP guest vs `wasmtime serve` hello (WASI 0.3, instances reused): \
     GET /hello req/s under wrk -t2 -c32 (↑)";

/// How the WASI 0.2 `wasmtime serve` row starts it, before `--addr` and the
/// component. `-S cli` also links the wasi:cli interfaces that a Rust std
/// component imports beyond the proxy world (environment, exit).
pub const WASMTIME_SERVE_ARGS: &[&str] = &["serve", "-S", "cli"];

/// How the WASI 0.3 row starts it: the same, plus the component-model async
/// ABI that a WASI 0.3 component is built on. Instance reuse is `wasmtime
/// serve`'s default for such a component (`--max-instance-reuse-count 128`,
/// `--max-instance-concurrent-reuse-count 16`).
pub const WASMTIME_SERVE_P3_ARGS: &[&str] = &["serve", "-S", "cli=y", "-Wcomponent-model-async=y"];

/// A `wasmtime serve` baseline: the CLI, how it is started (before `--addr`)
/// and the hello component that `make bench-tools` builds.
pub struct WasmtimeServe<'a> {
    pub wasmtime: &'a Path,
    pub args: &'static [&'static str],
    pub component: &'a Path,
}

impl WasmtimeServe<'_> {
    fn skip_reason(&self) -> Option<String> {
        if !self.wasmtime.is_file() {
            Some(format!(
                "skipped: {} is not installed (`make bench-tools` builds wasmtime-cli 48 there once)",
                self.wasmtime.display()
            ))
        } else if !self.component.is_file() {
            Some(format!("skipped: {} is not built (`make bench-tools` builds it)", self.component.display()))
        } else {
            None
        }
    }
}

/// The three HTTP rows: one wrk run against pier's HTTP guest, compared
/// with a wrk run against the native hyper hello (`pier-bench native-http`)
/// and one against `wasmtime serve` with each hello component (`p2`: WASI
/// 0.2, `p3`: WASI 0.3), all back to back with the same wrk settings. Each
/// baseline is skipped on its own.
pub fn http_rows(pier: &Path, wasm_dir: &Path, p2: &WasmtimeServe, p3: &WasmtimeServe, quick: bool) -> [Pending; 3] {
    let secs = if quick { 1 } else { 5 };
    let rows = |hyper: String, wasmtime_p2: String, wasmtime_p3: String| {
        [
            Pending { scenario: HTTP_VS_HYPER, status: hyper },
            Pending { scenario: HTTP_VS_WASMTIME_P2, status: wasmtime_p2 },
            Pending { scenario: HTTP_VS_WASMTIME_P3, status: wasmtime_p3 },
        ]
    };
    let plugin = wasm_dir.join("http.wasm");
    if let Some(why) = skip_reason(&plugin, &["wrk"]) {
        return rows(why.clone(), why.clone(), why);
    }
    let p = match start_pier(pier, &plugin, &[]).and_then(|(_pier, addr)| wrk_rps(addr, secs)) {
        Ok(p) => p,
        Err(e) => {
            let e = format!("error: pier: {e:#}");
            return rows(e.clone(), e.clone(), e);
        }
    };
    let versus = |baseline: Result<(f64, String)>| match baseline {
        Ok((b, note)) => format!("{p:.0} vs {b:.0} ({:.2}×){note}", p / b),
        Err(e) => format!("error: {e:#}"),
    };
    let hyper = versus(hyper_rps(secs).map(|n| (n, String::new())));
    let wasmtime = |serve: &WasmtimeServe| {
        serve
            .skip_reason()
            .unwrap_or_else(|| versus(wasmtime_serve_rps(serve, secs).map(|(w, version)| (w, format!(", {version}")))))
    };
    rows(hyper, wasmtime(p2), wasmtime(p3))
}

fn hyper_rps(secs: u32) -> Result<f64> {
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
    wrk_rps(native, secs)
}

/// `wasmtime serve` with its defaults (a fresh instance per request for a
/// WASIp2 component, an instance reused for up to 128 requests, 16 at once,
/// for a WASIp3 one; the pooling allocator when the machine allows it; no
/// fuel or epoch limits); returns its req/s and its `--version`.
fn wasmtime_serve_rps(serve: &WasmtimeServe, secs: u32) -> Result<(f64, String)> {
    let version = output(Command::new(serve.wasmtime).arg("--version"), Duration::from_secs(10))?;
    let version = version.split(" (").next().unwrap_or_default().trim().to_string();
    let port = free_port()?;
    let mut child = Guard(
        Command::new(serve.wasmtime)
            .args(serve.args)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg(serve.component)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {} serve", serve.wasmtime.display()))?,
    );
    let mut stderr = child.0.stderr.take().context("no stderr")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Some(status) = child.0.try_wait()? {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
            bail!("wasmtime serve exited with {status} before listening: {}", text.trim());
        }
        if Instant::now() > deadline {
            bail!("wasmtime serve is not listening on {addr} after 60 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Past start-up it only logs connections that wrk drops mid-request at
    // the end of its run (`hyper::Error(IncompleteMessage)`): drain, ignore.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    Ok((wrk_rps(addr, secs)?, version))
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
