//! `pier-bench run`: the whole benchmark in one invocation. Starts pier
//! (echo guest) and the native baseline as child processes, runs every
//! scenario against each, one after the other on the same machine, stops
//! them, and writes the table, `latest.md`, `latest.json` and `latest.svg`.
//!
//! Scenarios alternate between the servers (pier, then native, for each
//! scenario) so that a noisy neighbour on a shared machine skews both sides
//! of a ratio alike rather than one server's whole column; the timed ones
//! run three such rounds and report the round with the median ratio.
//!
//! The `tls-*` rows then do the same over TLS 1.3: pier's echo guest on a
//! TLS listener (`--tls-cert`, `--tls-key`) against `pier-bench
//! native-tls-echo`, both serving one certificate made for this run.

use crate::load::{self, ChurnParams, EchoParams, IdleParams, Transport, Window};
use crate::report::{self, Kind, Machine, Measured, Outcome, Pending, Report, ScenarioResult};
use crate::{external, plot, proc, tls};
use anyhow::{Context, Result, bail, ensure};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{sleep, timeout};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// About a second per scenario and 1,000 idle connections: the CI smoke test.
    #[arg(long)]
    pub quick: bool,
    /// Directory for latest.md, latest.json and latest.svg [default:
    /// bench/results, with --only target/bench-only].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The pier binary (`make build`).
    #[arg(long, default_value = "target/release/pier")]
    pub pier: PathBuf,
    /// The echo guest component (`make build`).
    #[arg(long, default_value = "target/wasm32-wasip2/release/echo.wasm")]
    pub plugin: PathBuf,
    /// The `server-handler` echo guest of the server-handler rows (`make build`).
    #[arg(long, default_value = "target/wasm32-wasip2/release/server_echo.wasm")]
    pub server_plugin: PathBuf,
    /// The Python echo guest component of the python rows (`make build`).
    #[arg(long, default_value = "target/python/echo.wasm")]
    pub python_plugin: PathBuf,
    /// The Python echo of the `server-handler` world, for the python rows.
    #[arg(long, default_value = "target/python/server-echo.wasm")]
    pub python_server_plugin: PathBuf,
    /// Idle connections to hold [default: 10000, with --quick 1000].
    #[arg(long)]
    pub idle_conns: Option<usize>,
    /// Idle TLS connections to hold [default: 2000, with --quick 100].
    #[arg(long)]
    pub tls_idle_conns: Option<usize>,
    /// The `wasmtime` CLI of the `wasmtime serve` rows (`make bench-tools`).
    #[arg(long, default_value = "target/tools/bin/wasmtime")]
    pub wasmtime: PathBuf,
    /// The WASI 0.2 hello `wasi:http/proxy` component it serves (`make bench-tools`).
    #[arg(long, default_value = "target/wasm32-wasip2/release/hello_http.wasm")]
    pub hello_http: PathBuf,
    /// The WASI 0.3 hello `wasi:http/service` component it serves (`make bench-tools`).
    #[arg(long, default_value = "target/wasm32-wasip2/release/hello_http_p3.wasm")]
    pub hello_http_p3: PathBuf,
    /// Run only these parts, e.g. `--only http` or `--only resp,http`.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub only: Vec<Part>,
}

/// The parts of a run, for `--only`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum Part {
    /// echo, churn and idle vs the native tokio echo server.
    Echo,
    /// tls-echo, tls-handshake and idle over TLS vs the native tokio-rustls echo server.
    Tls,
    /// The instantiate + new-csa micro-benchmark.
    Instantiate,
    /// The RESP guest vs redis-server.
    Resp,
    /// State in Redis (`--redis`): the RESP guest and chat fan-out across two processes.
    Shared,
    /// The proxy guest in front of redis-server vs direct (and HAProxy).
    Proxy,
    /// inetd mode: a plain `cat` command vs pier's echo handler.
    Inetd,
    /// The HTTP guest vs native hyper and vs `wasmtime serve` (WASI 0.2 and 0.3).
    Http,
    /// The Python echo (componentize-py) vs the Rust echo: churn, idle, instantiate.
    Python,
    /// echo, churn and idle of the `server-handler` echo (one instance for
    /// all connections) vs the native tokio echo server.
    Server,
}

/// What to run, derived from the flags.
#[derive(Debug, serde::Serialize)]
struct Plan {
    window: Window,
    /// Rounds of each timed scenario; the median-ratio round is reported.
    rounds: usize,
    echo_conns: usize,
    echo_sizes: [usize; 2],
    churn_clients: usize,
    idle_conns: usize,
    idle_concurrency: usize,
    /// The TLS rows: their timed scenarios' window (shorter with --quick, so
    /// that they add a few seconds to `make bench-smoke`), message size and
    /// connections of tls-echo, clients of tls-handshake, idle TLS connections.
    tls_window: Window,
    tls_echo_size: usize,
    tls_echo_conns: usize,
    tls_handshake_clients: usize,
    tls_idle_conns: usize,
    #[serde(skip)]
    idle_settle: Duration,
    #[serde(skip)]
    tls_idle_settle: Duration,
    #[serde(skip)]
    io_timeout: Duration,
    /// Pause after each run so the server has closed its connections.
    #[serde(skip)]
    pause: Duration,
}

impl Plan {
    fn new(args: &RunArgs) -> Plan {
        let (window, idle_default) = if args.quick {
            (Window { warmup: Duration::from_millis(200), measure: Duration::from_secs(1) }, 1_000)
        } else {
            (Window { warmup: Duration::from_secs(1), measure: Duration::from_secs(3) }, 10_000)
        };
        Plan {
            window,
            rounds: if args.quick { 1 } else { 3 },
            echo_conns: 64,
            echo_sizes: [64, 4096],
            churn_clients: 32,
            idle_conns: args.idle_conns.unwrap_or(idle_default),
            idle_concurrency: 64,
            tls_window: if args.quick {
                Window { warmup: Duration::from_millis(100), measure: Duration::from_millis(500) }
            } else {
                window
            },
            tls_echo_size: 4096,
            tls_echo_conns: 64,
            tls_handshake_clients: 32,
            tls_idle_conns: args.tls_idle_conns.unwrap_or(if args.quick { 100 } else { 2_000 }),
            idle_settle: Duration::from_secs(1),
            tls_idle_settle: Duration::from_millis(if args.quick { 300 } else { 1_000 }),
            io_timeout: Duration::from_secs(5),
            pause: Duration::from_millis(500),
        }
    }

    /// A bound on a whole timed scenario: its window, one last round trip
    /// and close per connection, and slack for a loaded machine.
    fn timed_limit(&self) -> Duration {
        self.window.warmup + self.window.measure + 4 * self.io_timeout + Duration::from_secs(10)
    }

    /// A bound on an idle scenario of `conns`: generous per connection, never infinite.
    fn idle_limit(&self, conns: usize) -> Duration {
        self.idle_settle + 2 * self.io_timeout + Duration::from_millis(5 * conns as u64 + 20_000)
    }
}

/// How long a server may take to print its `listening` line (pier compiles
/// the guest at start-up).
const STARTUP: Duration = Duration::from_secs(60);
/// How long a server may take to exit after SIGTERM (pier's grace is 5 s).
const STOP: Duration = Duration::from_secs(15);

/// A server under test, running as our child.
/// Waits for a child's `listening <name> <addr>` line (its first on
/// stdout), then keeps draining its stdout: a later line must neither block
/// nor kill the server.
pub(crate) async fn listening_addr(
    name: &str,
    mut lines: Lines<BufReader<ChildStdout>>,
    child: &mut Child,
) -> Result<SocketAddr> {
    let line = match timeout(STARTUP, lines.next_line()).await {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) => {
            let status = timeout(STOP, child.wait()).await;
            bail!("{name} exited before printing its `listening` line ({status:?}); see its stderr above")
        }
        Ok(Err(e)) => bail!("reading {name}'s stdout: {e}"),
        Err(_) => bail!("{name} printed no `listening` line within {STARTUP:?}"),
    };
    let addr = line
        .strip_prefix("listening ")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|a| a.parse().ok())
        .with_context(|| format!("{name} printed `{line}`, expected `listening <name> <host:port>`"))?;
    let name = name.to_string();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[{name} stdout] {line}");
        }
    });
    Ok(addr)
}

struct Server {
    name: &'static str,
    child: Child,
    pid: u32,
    addr: SocketAddr,
}

impl Server {
    /// Spawns `program args` and waits for its `listening <name> <addr>` line.
    /// The child dies with us if we panic (`kill_on_drop`).
    async fn start(name: &'static str, program: &Path, args: &[String]) -> Result<Server> {
        let mut child = Command::new(program)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        let pid = child.id().context("the child has no pid")?;
        let stdout = child.stdout.take().context("the child has no stdout")?;
        let addr = listening_addr(name, BufReader::new(stdout).lines(), &mut child).await?;
        Ok(Server { name, child, pid, addr })
    }

    /// Starts the server under test ("pier") and its baseline ("native");
    /// if the baseline does not start, stops the first again.
    async fn start_both(pier: (&Path, &[String]), native: (&Path, &[String])) -> Result<(Server, Server)> {
        let first = Server::start("pier", pier.0, pier.1).await?;
        match Server::start("native", native.0, native.1).await {
            Ok(second) => Ok((first, second)),
            Err(e) => {
                let _ = first.stop().await;
                Err(e)
            }
        }
    }

    /// SIGTERM, then wait; SIGKILL if it does not exit in time.
    async fn stop(mut self) -> Result<()> {
        let pid = libc::pid_t::try_from(self.pid)?;
        // SAFETY: `pid` is our child and has not been reaped (we hold `child`).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        match timeout(STOP, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!("{} exited with {status} after SIGTERM", self.name),
            Ok(Err(e)) => bail!("waiting for {}: {e}", self.name),
            Err(_) => {
                let _ = self.child.kill().await;
                bail!("{} did not exit within {STOP:?} of SIGTERM; killed it", self.name)
            }
        }
    }
}

/// Issue 7, item 3 (second half): Store + instantiate + `new-csa` on the
/// pooled `InstancePre`, timed in-process. Needs a benchmark hook in the
/// host crate; until then churn's server CPU per connection stands in.
pub fn instantiate_microbench(plugin: &Path, iterations: usize) -> Pending {
    let scenario = "instantiate + new-csa micro-benchmark (µs, ↓)";
    let status = match pier::measure::instantiate_cost(plugin, iterations) {
        Ok(mut times) => {
            times.sort();
            let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
            format!("median {:.1} µs, p99 {:.1} µs over {} (goal < 15 µs)", at(0.5), at(0.99), times.len())
        }
        Err(e) => format!("error: {e:#}"),
    };
    Pending { scenario, status }
}

/// Runs everything (or the `--only` parts); true if every echo, churn and
/// idle scenario run produced numbers for both servers.
pub async fn run(args: RunArgs) -> Result<bool> {
    let began = Instant::now();
    let nofile = proc::raise_nofile()?;
    let plan = Plan::new(&args);
    let wants = |part: Part| args.only.is_empty() || args.only.contains(&part);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(if args.only.is_empty() { "bench/results" } else { "target/bench-only" }));
    for (what, path) in [("the pier binary", &args.pier), ("the echo guest", &args.plugin)] {
        ensure!(path.is_file(), "{what} is not at {}: run `make build` first", path.display());
    }
    // Each idle connection is a socket here; the servers have their own limit.
    let need = plan.idle_conns.max(plan.tls_idle_conns) as u64 + 512;
    ensure!(
        !(wants(Part::Echo) || wants(Part::Tls)) || nofile.now >= need,
        "the open-files limit is {} (hard), too low for {} idle connections: raise it to at least {need} \
         (e.g. `ulimit -Hn {need}` as root, or LimitNOFILE), or pass a smaller --idle-conns",
        nofile.now,
        plan.idle_conns
    );
    // Room for the idle scenario and a few stragglers; no more, since pier
    // sizes its pool (and its vm.max_map_count check) from this.
    let max_connections = plan.idle_conns.max(plan.tls_idle_conns) + 64;
    let machine = Machine::probe(nofile);
    let mode = if args.quick { "quick" } else { "full" };
    eprintln!(
        "pier-bench: {mode} run, {} round(s) of {:?} (+{:?} warm-up) per timed scenario and server, {} idle connections; open files {}",
        plan.rounds, plan.window.measure, plan.window.warmup, plan.idle_conns, nofile.now
    );

    let plugin = args.plugin.display().to_string();
    let pier_args: Vec<String> = [
        "serve",
        "--name",
        "pier",
        "--listen",
        "127.0.0.1:0",
        "--plugin",
        &plugin,
        "--max-connections",
        &max_connections.to_string(),
        "--nodelay",
    ]
    .map(String::from)
    .to_vec();
    let native_args: Vec<String> = ["native-echo", "--listen", "127.0.0.1:0"].map(String::from).to_vec();
    let me = std::env::current_exe().context("finding pier-bench's own path")?;

    let mut results = if wants(Part::Echo) {
        echo_vs_native(&plan, &args, &pier_args, &native_args, &me, "").await?
    } else {
        Vec::new()
    };

    let mut pending = Vec::new();
    // Whether the TLS rows ran, and whether they failed before giving numbers.
    let (mut tls_ran, mut tls_failed) = (false, false);
    if wants(Part::Tls) {
        match tls_skip_reason(&args.pier) {
            Some(why) => pending.push(Pending { scenario: TLS_ROWS, status: why }),
            None => match tls_vs_native(&plan, &args, &pier_args, &me).await {
                Ok(tls_results) => {
                    tls_ran = true;
                    results.extend(tls_results);
                }
                Err(e) => {
                    tls_failed = true;
                    pending.push(Pending { scenario: TLS_ROWS, status: format!("error: {e:#}") });
                }
            },
        }
    }

    if wants(Part::Inetd) {
        let cat = args.plugin.with_file_name("cmd-cat.wasm");
        if cat.is_file() {
            match inetd_vs_handler(&plan, &args, &with_plugin(&pier_args, &cat), &pier_args).await {
                Ok(rows) => results.extend(rows),
                Err(e) => pending.push(Pending { scenario: INETD_ROWS, status: format!("error: {e:#}") }),
            }
        } else {
            pending.push(Pending { scenario: INETD_ROWS, status: format!("skipped: {} is not built", cat.display()) });
        }
    }

    if wants(Part::Server) {
        if args.server_plugin.is_file() {
            let server_args = with_plugin(&pier_args, &args.server_plugin);
            match echo_vs_native(&plan, &args, &server_args, &native_args, &me, "server-handler: ").await {
                Ok(rows) => results.extend(rows),
                Err(e) => pending.push(Pending { scenario: SERVER_ROWS, status: format!("error: {e:#}") }),
            }
        } else {
            let status = format!("skipped: {} is not built (`make build`)", args.server_plugin.display());
            pending.push(Pending { scenario: SERVER_ROWS, status });
        }
    }

    if wants(Part::Python) {
        if args.python_plugin.is_file() {
            match python_vs_rust(&plan, &args, &args.python_plugin, "python", &pier_args).await {
                Ok(rows) => results.extend(rows),
                Err(e) => pending.push(Pending { scenario: PYTHON_ROWS, status: format!("error: {e:#}") }),
            }
            if args.python_server_plugin.is_file() {
                let server = &args.python_server_plugin;
                match python_vs_rust(&plan, &args, server, "python server-handler", &pier_args).await {
                    Ok(rows) => results.extend(rows),
                    Err(e) => pending.push(Pending { scenario: PYTHON_ROWS, status: format!("error: {e:#}") }),
                }
            }
        } else {
            let status = format!("skipped: {} is not built (`make build`)", args.python_plugin.display());
            pending.push(Pending { scenario: PYTHON_ROWS, status });
        }
    }

    let rows = report::rows(&results);
    let iterations = if args.quick { 1_000 } else { 20_000 };
    let wasm_dir = args.plugin.parent().unwrap_or(Path::new("."));
    if wants(Part::Instantiate) {
        pending.push(instantiate_microbench(&args.plugin, iterations));
    }
    if wants(Part::Python) && args.python_plugin.is_file() {
        // A CPython instance costs about a hundred times a Rust one.
        let mut row = instantiate_microbench(&args.python_plugin, iterations / 10);
        row.scenario = "python: instantiate + new-csa of echo.py (µs, ↓)";
        row.status = row.status.replace(" (goal < 15 µs)", " (goal < 200 µs)");
        pending.push(row);
    }
    if wants(Part::Resp) {
        pending.extend(external::resp_vs_redis(&args.pier, wasm_dir, args.quick));
    }
    if wants(Part::Shared) {
        pending.extend(crate::shared::rows(&args.pier, wasm_dir, args.quick));
    }
    if wants(Part::Proxy) {
        pending.push(external::proxy_vs_direct(&args.pier, wasm_dir, args.quick));
    }
    if wants(Part::Http) {
        let p2 = external::WasmtimeServe {
            wasmtime: &args.wasmtime,
            args: external::WASMTIME_SERVE_ARGS,
            component: &args.hello_http,
        };
        let p3 = external::WasmtimeServe {
            wasmtime: &args.wasmtime,
            args: external::WASMTIME_SERVE_P3_ARGS,
            component: &args.hello_http_p3,
        };
        pending.extend(external::http_rows(&args.pier, wasm_dir, &p2, &p3, args.quick));
    }
    let table = report::table(&rows, &pending);
    println!("{table}");

    let only = if args.only.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = args.only.iter().map(|p| format!("{p:?}").to_lowercase()).collect();
        format!(" --only {}", parts.join(","))
    };
    let command = if args.quick || !args.only.is_empty() {
        let quick = if args.quick { " --quick" } else { "" };
        format!("pier-bench run{quick}{only} --out {}", out.display())
    } else {
        format!("make bench (pier-bench run --out {})", out.display())
    };
    let serve_args = |args: &[&str], component: &Path| -> Vec<String> {
        let component = component.display().to_string();
        args.iter().copied().chain(["--addr", "127.0.0.1:PORT", &component]).map(String::from).collect()
    };
    let config = serde_json::json!({
        "plan": plan,
        "io_timeout_secs": plan.io_timeout.as_secs_f64(),
        "pier": { "binary": args.pier, "args": pier_args },
        "baseline": { "args": native_args },
        "tls": {
            "pier_args": pier_args.iter().cloned().chain(tls_flags("CERT", "KEY")).collect::<Vec<_>>(),
            "baseline_args": native_tls_args("CERT", "KEY"),
            "certificate": TLS_CERT_NOTE,
            "client": TLS_CLIENT_NOTE,
        },
        "wasmtime_serve": {
            "binary": args.wasmtime,
            "args": serve_args(external::WASMTIME_SERVE_ARGS, &args.hello_http),
        },
        "wasmtime_serve_p3": {
            "binary": args.wasmtime,
            "args": serve_args(external::WASMTIME_SERVE_P3_ARGS, &args.hello_http_p3),
        },
    });
    let report =
        Report { mode, command, machine: &machine, config, metrics: &rows, pending: &pending, scenarios: &results };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    write_atomic(&out.join("latest.md"), &report.markdown(&table))?;
    write_atomic(&out.join("latest.json"), &(serde_json::to_string_pretty(&report)? + "\n"))?;
    let title =
        format!("pier + echo guest vs native tokio echo ({}, {} cores, {mode} run)", machine.date, machine.nproc);
    write_atomic(&out.join("latest.svg"), &plot::svg(&results, &title)?)?;
    eprintln!("wrote {}/latest.{{md,json,svg}} in {:.1} s total", out.display(), began.elapsed().as_secs_f64());
    let expect_numbers = wants(Part::Echo) || tls_ran;
    Ok(!tls_failed && (!expect_numbers || report::complete(&results)))
}

/// The table's line for the TLS rows when they did not run.
const TLS_ROWS: &str = "TLS rows (tls-echo, tls-handshake, idle TLS) vs native tokio-rustls echo";
const TLS_CERT_NOTE: &str = "ECDSA P-256, self-signed (CA:FALSE), made at bench time by \
     `openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256` in a temporary directory";
const TLS_CLIENT_NOTE: &str = "tokio-rustls 0.26, ring provider, TLS 1.3 only, default cipher suites and key \
     exchange, no resumption (a full handshake per connection), trusting only that certificate";

/// `pier serve`'s TLS flags with these files.
fn tls_flags(cert: &str, key: &str) -> [String; 4] {
    ["--tls-cert", cert, "--tls-key", key].map(String::from)
}

fn native_tls_args(cert: &str, key: &str) -> Vec<String> {
    ["native-tls-echo", "--listen", "127.0.0.1:0", "--tls-cert", cert, "--tls-key", key].map(String::from).to_vec()
}

/// Why the TLS rows cannot run: this pier has no TLS listener, or there is
/// no openssl CLI to make the certificate with.
fn tls_skip_reason(pier: &Path) -> Option<String> {
    let help = std::process::Command::new(pier).args(["serve", "--help"]).stderr(Stdio::null()).output();
    match help {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("--tls-cert") => {}
        Ok(_) => {
            return Some(format!(
                "skipped: {} has no TLS listener (`serve --help` shows no --tls-cert)",
                pier.display()
            ));
        }
        Err(e) => return Some(format!("skipped: running {} serve --help: {e}", pier.display())),
    }
    let openssl =
        std::process::Command::new("openssl").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    match openssl {
        Ok(status) if status.success() => None,
        _ => Some("skipped: no openssl CLI to make the certificate with (Debian: openssl)".into()),
    }
}

/// Makes a certificate, starts pier (echo guest, TLS listener) and the
/// native TLS echo server with it, runs tls-echo, tls-handshake and idle TLS
/// against each, and stops them.
async fn tls_vs_native(plan: &Plan, args: &RunArgs, pier_args: &[String], me: &Path) -> Result<Vec<ScenarioResult>> {
    let cert = tls::TempCert::generate()?;
    let (cert_path, key_path) = (cert.cert.display().to_string(), cert.key.display().to_string());
    let transport = Transport::Tls(tls::connector(&cert.cert)?);
    let pier_args: Vec<String> = pier_args.iter().cloned().chain(tls_flags(&cert_path, &key_path)).collect();
    let (pier, native) =
        Server::start_both((&args.pier, &pier_args), (me, &native_tls_args(&cert_path, &key_path))).await?;
    eprintln!("TLS: pier (pid {}) on {}, native (pid {}) on {}", pier.pid, pier.addr, native.pid, native.addr);
    let outcome = interruptible(tls_scenarios(plan, &transport, &pier, &native)).await;
    stop_both(pier, native).await;
    outcome
}

/// The TLS scenarios, each against pier then the baseline, as [`scenarios`].
async fn tls_scenarios(plan: &Plan, transport: &Transport, pier: &Server, native: &Server) -> Vec<ScenarioResult> {
    let mut results = Vec::new();
    let size = plan.tls_echo_size;
    let p = EchoParams { conns: plan.tls_echo_conns, size, window: plan.tls_window, io_timeout: plan.io_timeout };
    let label = format!("tls-echo {} × {} conns", size_name(size), p.conns);
    results.push(echo_pair(plan, label, format!("tls-echo {}", size_name(size)), transport, p, pier, native).await);

    let p = ChurnParams { clients: plan.tls_handshake_clients, window: plan.tls_window, io_timeout: plan.io_timeout };
    let label = format!("tls-handshake × {} clients", p.clients);
    results.push(churn_pair(plan, label, "tls-handshake".into(), Kind::Handshake, transport, p, pier, native).await);

    let conns = plan.tls_idle_conns;
    let p = IdleParams {
        conns,
        concurrency: plan.idle_concurrency,
        settle: plan.tls_idle_settle,
        io_timeout: plan.io_timeout,
    };
    let label = format!("idle TLS × {conns} conns");
    results.push(idle_pair(plan, &label, "idle TLS", transport, p, pier, native).await);
    results
}

/// The idle scenario against pier, then (once pier has torn its instances
/// down) against the baseline.
/// A message size as the rows name it: `64 B`, `4 KiB`.
fn size_name(size: usize) -> String {
    if size >= 1024 { format!("{} KiB", size / 1024) } else { format!("{size} B") }
}

/// The echo scenario against pier and the baseline, in rounds ([`median_round`]).
async fn echo_pair(
    plan: &Plan,
    label: String,
    short: String,
    transport: &Transport,
    p: EchoParams,
    pier: &Server,
    native: &Server,
) -> ScenarioResult {
    let (pier_r, native_r) = median_round(plan, pier, native, |s| {
        measure(plan, &label, s, plan.timed_limit(), async move {
            Ok(Measured::Echo(load::echo(s.addr, transport, p, Some(s.pid)).await?))
        })
    })
    .await;
    ScenarioResult { short, label, kind: Kind::Echo, pier: pier_r, native: native_r }
}

/// The churn scenario (connect, one round trip, close: with TLS, a full
/// handshake each) against pier and the baseline, in rounds; `kind` says
/// how the report names its rate.
#[allow(clippy::too_many_arguments, reason = "one scenario's parameters, as idle_pair's")]
async fn churn_pair(
    plan: &Plan,
    label: String,
    short: String,
    kind: Kind,
    transport: &Transport,
    p: ChurnParams,
    pier: &Server,
    native: &Server,
) -> ScenarioResult {
    let (pier_r, native_r) = median_round(plan, pier, native, |s| {
        measure(plan, &label, s, plan.timed_limit(), async move {
            Ok(Measured::Churn(load::churn(s.addr, transport, p, Some(s.pid)).await?))
        })
    })
    .await;
    ScenarioResult { short, label, kind, pier: pier_r, native: native_r }
}

async fn idle_pair(
    plan: &Plan,
    label: &str,
    short: &str,
    transport: &Transport,
    p: IdleParams,
    pier: &Server,
    native: &Server,
) -> ScenarioResult {
    let limit = plan.idle_limit(p.conns);
    let pier_r = measure(plan, label, pier, limit, async {
        Ok(Measured::Idle(load::idle(pier.addr, transport, p, pier.pid).await?))
    })
    .await;
    // Let pier tear its instances down before the baseline is measured.
    sleep(p.settle).await;
    let native_r = measure(plan, label, native, limit, async {
        Ok(Measured::Idle(load::idle(native.addr, transport, p, native.pid).await?))
    })
    .await;
    ScenarioResult { short: short.into(), label: label.into(), kind: Kind::Idle, pier: pier_r, native: native_r }
}

/// `work`, unless we are interrupted (Ctrl-C, SIGTERM) first.
async fn interruptible<T>(work: impl Future<Output = T>) -> Result<T> {
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        done = work => Ok(done),
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = term.recv() => Err(anyhow::anyhow!("terminated")),
    }
}

/// Stops both servers; a failure to stop is a warning.
async fn stop_both(pier: Server, native: Server) {
    for stopped in [pier.stop().await, native.stop().await] {
        if let Err(e) = stopped {
            eprintln!("warning: {e:#}");
        }
    }
}

/// The table's line for the server-handler rows when they did not run.
const SERVER_ROWS: &str = "server-handler rows (server-echo, one instance for all connections, vs native tokio)";

/// The table's line for the python rows when they did not run.
const PYTHON_ROWS: &str = "python rows (echo.py, componentize-py, vs the Rust echo handler)";

/// A Python handler's cost: pier serving the Python echo (as "pier")
/// against pier serving the Rust echo (as the baseline): churn (connections
/// per second, server CPU per connection) and idle (RSS per connection).
async fn python_vs_rust(
    plan: &Plan,
    args: &RunArgs,
    plugin: &Path,
    name: &str,
    rust_args: &[String],
) -> Result<Vec<ScenarioResult>> {
    let conns = if args.quick { 100 } else { 1_000 };
    let py_args = with_max_connections(&with_plugin(rust_args, plugin), conns + 64);
    let rust_args = with_max_connections(rust_args, conns + 64);
    let (py, rust) = Server::start_both((&args.pier, &py_args), (&args.pier, &rust_args)).await?;
    let work = async {
        let mut results = Vec::new();
        let p = ChurnParams { clients: plan.churn_clients, window: plan.window, io_timeout: plan.io_timeout };
        let label = format!("{name}: echo.py vs Rust echo, churn × {} clients", p.clients);
        let short = format!("{name} churn");
        results.push(churn_pair(plan, label, short, Kind::Churn, &Transport::Plain, p, &py, &rust).await);
        let p = IdleParams {
            conns,
            concurrency: plan.idle_concurrency,
            settle: plan.idle_settle,
            io_timeout: plan.io_timeout,
        };
        let label = format!("{name}: echo.py vs Rust echo, idle × {conns} conns");
        results.push(idle_pair(plan, &label, &format!("{name} idle"), &Transport::Plain, p, &py, &rust).await);
        results
    };
    let outcome = interruptible(work).await;
    stop_both(py, rust).await;
    outcome
}

/// `args` with `--plugin PATH`.
fn with_plugin(args: &[String], plugin: &Path) -> Vec<String> {
    let mut args = args.to_vec();
    if let Some(i) = args.iter().position(|a| a == "--plugin") {
        args[i + 1] = plugin.display().to_string();
    }
    args
}

/// `args` with `--max-connections N`.
fn with_max_connections(args: &[String], n: usize) -> Vec<String> {
    let mut args = args.to_vec();
    match args.iter().position(|a| a == "--max-connections") {
        Some(i) => args[i + 1] = n.to_string(),
        None => args.extend(["--max-connections".to_string(), n.to_string()]),
    }
    args
}

/// Starts pier (echo guest) and the native echo server, runs echo, churn
/// and idle against each, and stops them.
const INETD_ROWS: &str = "inetd rows (a wasi:cli `cat` command vs pier's echo handler)";

/// inetd mode's cost: a plain `cat` command served per connection (as
/// "pier") against pier's own echo handler (as the baseline), echo 4 KiB and
/// churn, in rounds as the other rows.
async fn inetd_vs_handler(
    plan: &Plan,
    args: &RunArgs,
    cat_args: &[String],
    echo_args: &[String],
) -> Result<Vec<ScenarioResult>> {
    let (cat, echo) = Server::start_both((&args.pier, cat_args), (&args.pier, echo_args)).await?;
    let work = async {
        let mut results = Vec::new();
        let p = EchoParams { conns: plan.echo_conns, size: 4096, window: plan.window, io_timeout: plan.io_timeout };
        let label = format!("inetd: cmd-cat vs echo handler, echo 4 KiB × {} conns", p.conns);
        results.push(echo_pair(plan, label, "inetd echo".into(), &Transport::Plain, p, &cat, &echo).await);
        let p = ChurnParams { clients: plan.churn_clients, window: plan.window, io_timeout: plan.io_timeout };
        let label = format!("inetd: cmd-cat vs echo handler, churn × {} clients", p.clients);
        let short = "inetd churn".into();
        results.push(churn_pair(plan, label, short, Kind::Churn, &Transport::Plain, p, &cat, &echo).await);
        results
    };
    let outcome = interruptible(work).await;
    stop_both(cat, echo).await;
    outcome
}

async fn echo_vs_native(
    plan: &Plan,
    args: &RunArgs,
    pier_args: &[String],
    native_args: &[String],
    me: &Path,
    prefix: &str,
) -> Result<Vec<ScenarioResult>> {
    let (pier, native) = Server::start_both((&args.pier, pier_args), (me, native_args)).await?;
    eprintln!("pier (pid {}) on {}, native (pid {}) on {}", pier.pid, pier.addr, native.pid, native.addr);

    let outcome = interruptible(scenarios(plan, &pier, &native, prefix)).await;
    stop_both(pier, native).await;
    outcome
}

/// Every scenario, each against pier then the baseline. The timed ones run
/// in rounds (pier, baseline, pier, baseline...) and report the round with
/// the median ratio, so that a noisy neighbour's burst during one round
/// does not become the result.
async fn scenarios(plan: &Plan, pier: &Server, native: &Server, prefix: &str) -> Vec<ScenarioResult> {
    let mut results = Vec::new();
    for size in plan.echo_sizes {
        let p = EchoParams { conns: plan.echo_conns, size, window: plan.window, io_timeout: plan.io_timeout };
        let label = format!("{prefix}echo {} × {} conns", size_name(size), p.conns);
        let short = format!("{prefix}echo {}", size_name(size));
        results.push(echo_pair(plan, label, short, &Transport::Plain, p, pier, native).await);
    }

    let p = ChurnParams { clients: plan.churn_clients, window: plan.window, io_timeout: plan.io_timeout };
    let label = format!("{prefix}churn × {} clients", p.clients);
    let short = format!("{prefix}churn");
    results.push(churn_pair(plan, label, short, Kind::Churn, &Transport::Plain, p, pier, native).await);

    let p = IdleParams {
        conns: plan.idle_conns,
        concurrency: plan.idle_concurrency,
        settle: plan.idle_settle,
        io_timeout: plan.io_timeout,
    };
    let label = format!("{prefix}idle × {} conns", p.conns);
    results.push(idle_pair(plan, &label, &format!("{prefix}idle"), &Transport::Plain, p, pier, native).await);
    results
}

/// Runs `one` against pier, then the baseline, `plan.rounds` times, and
/// returns the round whose pier/baseline throughput ratio is the median
/// (a round with an error is returned as soon as it happens).
async fn median_round<'s, F, Fut>(plan: &Plan, pier: &'s Server, native: &'s Server, one: F) -> (Outcome, Outcome)
where
    F: Fn(&'s Server) -> Fut,
    Fut: Future<Output = Outcome>,
{
    let mut rounds = Vec::new();
    for _ in 0..plan.rounds {
        let (p, n) = (one(pier).await, one(native).await);
        let ratio = match (&p, &n) {
            (Ok(p), Ok(n)) => throughput(p) / throughput(n),
            _ => return (p, n),
        };
        rounds.push((ratio, p, n));
    }
    rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (_, p, n) = rounds.swap_remove(rounds.len() / 2);
    (p, n)
}

/// What a round is ranked by: messages or connections per second.
fn throughput(m: &Measured) -> f64 {
    match m {
        Measured::Echo(s) => s.msgs_per_sec,
        Measured::Churn(s) => s.conns_per_sec,
        Measured::Idle(s) => s.conns as f64,
    }
}

/// Runs one scenario against one server within `limit`, logs a one-line
/// summary to stderr, and turns any failure into an error row.
async fn measure(
    plan: &Plan,
    label: &str,
    server: &Server,
    limit: Duration,
    scenario: impl Future<Output = Result<Measured>>,
) -> Outcome {
    let outcome = match timeout(limit, scenario).await {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!("did not finish within {limit:?}")),
    };
    match &outcome {
        Ok(m) => eprintln!("  {:<7} {label}: {}", server.name, summary(m)),
        Err(e) => eprintln!("  {:<7} {label}: ERROR {e}", server.name),
    }
    sleep(plan.pause).await;
    outcome
}

fn summary(m: &Measured) -> String {
    let cpu = |v: Option<f64>| v.map_or_else(String::new, |v| format!(", server CPU {v:.1} µs"));
    match m {
        Measured::Echo(s) => format!(
            "{:.0} msg/s, {:.1} MB/s, p50 {:.1} µs, p99 {:.1} µs{}/msg",
            s.msgs_per_sec,
            s.mb_per_sec,
            s.latency.p50_us,
            s.latency.p99_us,
            cpu(s.server_cpu_us_per_msg)
        ),
        Measured::Churn(s) => format!(
            "{:.0} conn/s, p50 {:.1} µs, p99 {:.1} µs{}/conn",
            s.conns_per_sec,
            s.latency.p50_us,
            s.latency.p99_us,
            cpu(s.server_cpu_us_per_conn)
        ),
        Measured::Idle(s) => format!(
            "{} opened in {:.2} s, RSS {:.1} → {:.1} MiB, {:.1} KiB and {:.2} mappings per connection",
            s.conns,
            s.open_secs,
            s.rss_before as f64 / (1 << 20) as f64,
            s.rss_after as f64 / (1 << 20) as f64,
            s.rss_per_conn / 1024.0,
            s.maps_per_conn
        ),
    }
}

/// Writes `path` through `path.tmp` and a rename, so a reader (or an
/// interrupted run) never sees half a file. `*.tmp` is git-ignored.
fn write_atomic(path: &Path, contents: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", Path::new(&tmp).display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}
