//! `pier-bench hundred-k`: issue 14's 100,000 concurrent connections on one
//! small machine.
//!
//! One process is capped by its open-files hard limit (20,000 on the
//! development machine, and not raisable there) and by `vm.max_map_count`;
//! several pier processes sharing a port with `--reuse-port` are not. So this
//! starts N `pier serve` processes (echo guest) on one port, and M load
//! generators (this binary's hidden `hundred-k-client`), each opening its
//! share of the connections from its own loopback source addresses
//! (127.0.0.2, 127.0.0.3, ...), so that no (source, destination) pair runs out
//! of ephemeral ports. Every connection echoes one byte when it opens (so
//! "connected" means accepted, instantiated and served), then stays idle.
//! Once all are open it sums the pier processes' RSS, counts each process's
//! sockets (every process must hold some), has a random sample of the held
//! connections echo a line, checks that none was dropped, and stops
//! everything it started: on success, on failure, on SIGINT/SIGTERM, and
//! (through `PR_SET_PDEATHSIG`) when it is killed itself.
//!
//! The load generators talk to the orchestrator over their stdin and stdout:
//! one JSON line when all their connections are open, `echo K` asks for a
//! sample of K, and EOF on stdin closes every connection (with a reset:
//! `SO_LINGER` 0, so no side keeps 100,000 sockets in TIME_WAIT) and exits.

use crate::proc;
use anyhow::{Context, Result, anyhow, bail, ensure};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout, timeout_at};

#[derive(clap::Args, Debug)]
pub struct HundredKArgs {
    /// Connections to hold open at once, over all pier processes.
    #[arg(long, default_value_t = 100_000)]
    pub connections: usize,
    /// pier processes sharing the port [default: enough that each stays well
    /// under the open-files limit, at least 2].
    #[arg(long)]
    pub servers: Option<usize>,
    /// Load-generator processes [default: enough that each stays under the
    /// open-files limit].
    #[arg(long)]
    pub clients: Option<usize>,
    /// Held connections, chosen at random, that must echo a line once all are open.
    #[arg(long, default_value_t = 1_000)]
    pub sample: usize,
    /// Connects in flight per load generator.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// The pier binary (`make build`).
    #[arg(long, default_value = "target/release/pier")]
    pub pier: PathBuf,
    /// The echo guest component (`make build`).
    #[arg(long, default_value = "target/wasm32-wasip2/release/echo.wasm")]
    pub plugin: PathBuf,
    /// Also write the report (markdown) to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Bound on the whole scenario in seconds; stopping everything comes
    /// after it and is bounded too.
    #[arg(long, default_value_t = 300)]
    pub deadline: u64,
    /// Fail when vm.max_map_count is too low instead of raising it (as root).
    #[arg(long)]
    pub no_sysctl: bool,
}

/// The hidden load generator of `hundred-k`.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// The servers' shared address.
    #[arg(long)]
    addr: SocketAddr,
    /// Connections to open and hold.
    #[arg(long)]
    conns: usize,
    /// Source addresses, used in turn (bound before connect).
    #[arg(long, value_delimiter = ',', required = true)]
    sources: Vec<Ipv4Addr>,
    /// Connects in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Timeout of each connect, write and read, in seconds.
    #[arg(long, default_value_t = 10.0)]
    io_timeout: f64,
}

/// What a load generator reports, one JSON line each.
#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "event", rename_all = "kebab-case")]
enum ClientEvent {
    /// Every connection has been tried: `ok` are open (each echoed a byte).
    Connected { ok: usize, failed: usize, secs: f64, first_error: Option<String> },
    /// A sample echoed: one round-trip time per connection that echoed, in µs.
    Echoed { ok: usize, failed: usize, latencies_us: Vec<u64>, first_error: Option<String> },
}

/// Connections per loopback source address: well under the ~28,000
/// ephemeral ports (32768-60999) one source has towards one destination.
const PER_SOURCE: usize = 10_000;
/// Open files a process needs besides its connections (pier's own: the
/// engine, epoll, stdio, the listener; ours alike), with slack.
const FILE_SLACK: u64 = 512;
/// Memory mappings a pier process needs per pool slot (about two per fiber
/// stack at start-up and four per live instance; pier's own check uses six)
/// with slack, plus a fixed part.
const MAPS_PER_SLOT: u64 = 8;
const MAPS_FIXED: u64 = 4096;
/// Kept free when checking memory: what 100,000 connections cost (pier's
/// ~40 KiB, the kernel's two sockets, the client's side) with room to spare.
const MEM_PER_CONN: u64 = 64 << 10;
/// How long a pier process may take to print its `listening` line.
const STARTUP: Duration = Duration::from_secs(60);
/// How long the load generators, then the pier processes, may take to exit.
const CLIENT_STOP: Duration = Duration::from_secs(20);
const SERVER_STOP: Duration = Duration::from_secs(20);
/// After all connections are open, before RSS is read.
const SETTLE: Duration = Duration::from_secs(2);
/// How long the sample may take to echo.
const ECHO_LIMIT: Duration = Duration::from_secs(60);

/// The shape of a run, derived from the flags and the machine.
#[derive(Debug)]
struct Plan {
    connections: usize,
    servers: usize,
    clients: usize,
    max_connections: usize,
    /// Connections of each load generator, and its source addresses.
    shares: Vec<(usize, Vec<Ipv4Addr>)>,
    sample: usize,
    nofile: u64,
    map_count_needed: u64,
}

impl Plan {
    fn new(args: &HundredKArgs, nofile: u64) -> Result<Plan> {
        let n = args.connections;
        ensure!(n > 0, "--connections must be at least 1");
        let room = nofile.saturating_sub(FILE_SLACK).max(1) as usize;
        // 15% headroom: the kernel spreads connections by a hash, not evenly.
        let servers = args.servers.unwrap_or_else(|| (n * 115 / 100).div_ceil(room).max(2));
        ensure!(servers > 0, "--servers must be at least 1");
        // The kernel's spread is binomial: 10% + 256 over the mean is many
        // standard deviations, so no process fills up and stalls its share.
        let max_connections = n.div_ceil(servers) * 11 / 10 + 256;
        ensure!(
            max_connections as u64 + FILE_SLACK <= nofile,
            "{servers} pier processes would each need max-connections {max_connections}, and as many open files, \
             but the open-files limit is {nofile}: use --servers {} or more (or raise `ulimit -Hn`)",
            (n * 115 / 100).div_ceil(room)
        );
        let clients = args.clients.unwrap_or_else(|| n.div_ceil(room).max(1));
        ensure!(clients > 0, "--clients must be at least 1");
        let per_client = n.div_ceil(clients);
        ensure!(
            per_client as u64 + FILE_SLACK <= nofile,
            "{clients} load generators would each hold {per_client} connections, over the open-files limit \
             {nofile}: use --clients {} or more",
            n.div_ceil(room)
        );
        let per_source = PER_SOURCE.min(ephemeral_ports() / 2).max(1);
        let sources_each = per_client.div_ceil(per_source).max(1);
        ensure!(
            2 + clients * sources_each <= 255,
            "{clients} load generators × {sources_each} source addresses do not fit in 127.0.0.2-127.0.0.254"
        );
        let mut shares = Vec::with_capacity(clients);
        for k in 0..clients {
            let conns = n / clients + usize::from(k < n % clients);
            let first = 2 + k * sources_each;
            let sources = (first..first + sources_each).map(|d| Ipv4Addr::new(127, 0, 0, d as u8)).collect();
            shares.push((conns, sources));
        }
        Ok(Plan {
            connections: n,
            servers,
            clients,
            max_connections,
            shares,
            sample: args.sample.min(n),
            nofile,
            map_count_needed: max_connections as u64 * MAPS_PER_SLOT + MAPS_FIXED,
        })
    }

    fn server_args(&self, args: &HundredKArgs, k: usize, listen: &str) -> Vec<String> {
        let plugin = args.plugin.display().to_string();
        let name = format!("pier-{k}");
        let max = self.max_connections.to_string();
        [
            "serve",
            "--name",
            &name,
            "--listen",
            listen,
            "--plugin",
            &plugin,
            "--reuse-port",
            "--max-connections",
            &max,
            "--backlog",
            "4096",
            // The connections are idle for the whole run; a slow machine
            // must not close the first ones before the sample.
            "--idle-timeout",
            "30m",
        ]
        .map(String::from)
        .to_vec()
    }
}

/// The size of the kernel's ephemeral port range.
fn ephemeral_ports() -> usize {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text.split_whitespace().filter_map(|t| t.parse::<usize>().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) if hi > lo => hi - lo + 1,
        _ => 28_232,
    }
}

/// A pier process we started.
struct Server {
    name: String,
    child: Child,
    pid: u32,
}

/// A load generator we started.
struct Client {
    k: usize,
    child: Child,
    pid: u32,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Client {
    /// The next event, within `until`.
    async fn event(&mut self, until: Instant) -> Result<ClientEvent> {
        let k = self.k;
        let line = match timeout_at(until, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => {
                let status = timeout(Duration::from_secs(2), self.child.wait()).await;
                bail!("load generator {k} exited ({status:?}); see its stderr above")
            }
            Ok(Err(e)) => bail!("reading load generator {k}'s stdout: {e}"),
            Err(_) => bail!("load generator {k} did not answer in time"),
        };
        serde_json::from_str(&line).with_context(|| format!("load generator {k} printed `{line}`"))
    }

    async fn send(&mut self, command: &str) -> Result<()> {
        let k = self.k;
        let stdin = self.stdin.as_mut().with_context(|| format!("load generator {k}'s stdin is closed"))?;
        stdin.write_all(command.as_bytes()).await.with_context(|| format!("writing to load generator {k}"))?;
        stdin.flush().await.with_context(|| format!("writing to load generator {k}"))
    }
}

/// Everything we started, so that every path out stops it.
#[derive(Default)]
struct Fleet {
    servers: Vec<Server>,
    clients: Vec<Client>,
}

impl Fleet {
    /// Stops the load generators (which close their connections), then the
    /// pier processes (SIGTERM: serverShutdown), each within a bound, killing
    /// what does not exit. Returns what went wrong, if anything.
    async fn stop(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for c in &mut self.clients {
            c.stdin.take(); // EOF: close everything and exit
        }
        let until = Instant::now() + CLIENT_STOP;
        for c in &mut self.clients {
            match timeout_at(until, c.child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => problems.push(format!("load generator {} exited with {status}", c.k)),
                Ok(Err(e)) => problems.push(format!("waiting for load generator {}: {e}", c.k)),
                Err(_) => {
                    let _ = c.child.kill().await;
                    problems.push(format!("load generator {} did not exit within {CLIENT_STOP:?}; killed it", c.k));
                }
            }
        }
        self.clients.clear();
        for s in &self.servers {
            // `id()` is None once the child has been reaped, so the pid
            // cannot have been reused by another process.
            if let Some(pid) = s.child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
                // SAFETY: `pid` is our child and not yet reaped (we hold `child`).
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        let until = Instant::now() + SERVER_STOP;
        for s in &mut self.servers {
            match timeout_at(until, s.child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => problems.push(format!("{} exited with {status} after SIGTERM", s.name)),
                Ok(Err(e)) => problems.push(format!("waiting for {}: {e}", s.name)),
                Err(_) => {
                    let _ = s.child.kill().await;
                    problems.push(format!("{} did not exit within {SERVER_STOP:?} of SIGTERM; killed it", s.name));
                }
            }
        }
        self.servers.clear();
        problems
    }

    /// Fails if a pier process has exited.
    fn check_servers(&mut self) -> Result<()> {
        for s in &mut self.servers {
            if let Some(status) = s.child.try_wait()? {
                bail!("{} exited during the run ({status}); see its stderr above", s.name);
            }
        }
        Ok(())
    }
}

/// A child that dies with us: `signal` if this process dies first (even by
/// SIGKILL), and SIGKILL when its handle is dropped.
fn command(program: &std::path::Path, args: &[String], signal: libc::c_int) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong);
            Ok(())
        });
    }
    cmd
}

/// What one pier process held.
#[derive(Debug)]
struct ServerStats {
    name: String,
    pid: u32,
    connections: u64,
    rss_before: u64,
    rss_after: u64,
    maps_before: u64,
    maps_after: u64,
}

/// What a run measured.
#[derive(Debug)]
struct Measured {
    port: u16,
    startup_secs: f64,
    connect_secs: f64,
    per_server: Vec<ServerStats>,
    still_held: u64,
    echo_ok: usize,
    echo_latencies_us: Vec<u64>,
    clients_rss: u64,
    mem_available_drop: Option<i64>,
    tcp_inuse: (Option<u64>, Option<u64>),
}

/// Runs the scenario; prints the report and writes it to `--out`.
pub async fn run(args: HundredKArgs) -> Result<()> {
    let began = Instant::now();
    let nofile = proc::raise_nofile()?;
    let plan = Plan::new(&args, nofile.now)?;
    for (what, path) in [("the pier binary", &args.pier), ("the echo guest", &args.plugin)] {
        ensure!(path.is_file(), "{what} is not at {}: run `make build` first", path.display());
    }
    let map_count = ensure_map_count(plan.map_count_needed, args.no_sysctl)?;
    check_memory(plan.connections)?;
    eprintln!(
        "pier-bench hundred-k: {} connections over {} pier processes (max-connections {} each) from {} load \
         generators; open files {} per process, vm.max_map_count {}",
        plan.connections, plan.servers, plan.max_connections, plan.clients, plan.nofile, map_count.now
    );

    let mut fleet = Fleet::default();
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let deadline = Duration::from_secs(args.deadline);
    let outcome = tokio::select! {
        r = timeout(deadline, scenario(&plan, &args, &mut fleet)) => {
            r.unwrap_or_else(|_| Err(anyhow!("the scenario did not finish within --deadline {deadline:?}")))
        }
        _ = sigint.recv() => Err(anyhow!("interrupted (SIGINT)")),
        _ = sigterm.recv() => Err(anyhow!("terminated (SIGTERM)")),
    };
    let stopping = Instant::now();
    let problems = fleet.stop().await;
    let stop_secs = stopping.elapsed().as_secs_f64();
    let measured = match outcome {
        Ok(m) => m,
        Err(e) => {
            for p in &problems {
                eprintln!("pier-bench hundred-k: while stopping: {p}");
            }
            return Err(e);
        }
    };
    ensure!(problems.is_empty(), "the scenario passed, but stopping failed: {}", problems.join("; "));
    let report = markdown(&plan, &args, &measured, map_count, nofile, stop_secs, began.elapsed().as_secs_f64());
    println!("{report}");
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let tmp = out.with_extension("md.tmp");
        std::fs::write(&tmp, &report).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {} ({:.1} s in all)", out.display(), began.elapsed().as_secs_f64());
    }
    Ok(())
}

/// The run proper; everything it starts goes into `fleet`.
async fn scenario(plan: &Plan, args: &HundredKArgs, fleet: &mut Fleet) -> Result<Measured> {
    // The first process picks the port; the others join it.
    let started = Instant::now();
    let first = start_server(plan, args, 0, "127.0.0.1:0", fleet)?;
    let addr = wait_listening(first, &mut fleet.servers[0]).await?;
    let listen = addr.to_string();
    let mut waiting = Vec::new();
    for k in 1..plan.servers {
        waiting.push(start_server(plan, args, k, &listen, fleet)?);
    }
    for (k, lines) in waiting.into_iter().enumerate() {
        let got = wait_listening(lines, &mut fleet.servers[k + 1]).await?;
        ensure!(got == addr, "{} listens on {got}, not on the shared {addr}", fleet.servers[k + 1].name);
    }
    let startup_secs = started.elapsed().as_secs_f64();
    sleep(Duration::from_millis(500)).await;
    let pids: Vec<u32> = fleet.servers.iter().map(|s| s.pid).collect();
    let rss_before = pids.iter().map(|&p| proc::rss_bytes(p)).collect::<Result<Vec<_>>>()?;
    let maps_before = pids.iter().map(|&p| proc::map_count(p)).collect::<Result<Vec<_>>>()?;
    let sockets_before = pids.iter().map(|&p| socket_count(p)).collect::<Result<Vec<_>>>()?;
    let mem_before = mem_available();
    let tcp_before = tcp_inuse();

    // The load generators connect as soon as they start.
    let me = std::env::current_exe().context("finding pier-bench's own path")?;
    let connecting = Instant::now();
    for (k, (conns, sources)) in plan.shares.iter().enumerate() {
        let sources: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        let client_args: Vec<String> = [
            "hundred-k-client".to_string(),
            "--addr".into(),
            listen.clone(),
            "--conns".into(),
            conns.to_string(),
            "--sources".into(),
            sources.join(","),
            "--concurrency".into(),
            args.concurrency.to_string(),
        ]
        .to_vec();
        let mut child = command(&me, &client_args, libc::SIGKILL)
            .spawn()
            .with_context(|| format!("starting load generator {k} ({})", me.display()))?;
        let pid = child.id().context("the load generator has no pid")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the load generator has no stdout")?;
        fleet.clients.push(Client { k, child, pid, stdin, lines: BufReader::new(stdout).lines() });
    }
    // Generous (this machine opens one in 0.8 ms per load generator): 4 ms
    // each, at least a minute; --deadline bounds the whole run anyway.
    let per_client = plan.connections.div_ceil(plan.clients) as u64;
    let until = connecting + Duration::from_millis(4 * per_client).max(STARTUP);
    for c in &mut fleet.clients {
        match c.event(until).await? {
            ClientEvent::Connected { ok, failed: 0, .. } if ok == plan.shares[c.k].0 => {}
            ClientEvent::Connected { ok, failed, first_error, .. } => bail!(
                "load generator {} opened {ok} of {} connections ({failed} failed, or not tried after the \
                 first failure): {}",
                c.k,
                plan.shares[c.k].0,
                first_error.unwrap_or_default()
            ),
            other => bail!("load generator {} answered {other:?} before connecting", c.k),
        }
    }
    let connect_secs = connecting.elapsed().as_secs_f64();
    fleet.check_servers()?;
    eprintln!("pier-bench hundred-k: {} connections open in {connect_secs:.1} s", plan.connections);

    sleep(SETTLE).await;
    let sockets_after = pids.iter().map(|&p| socket_count(p)).collect::<Result<Vec<_>>>()?;
    let rss_after = pids.iter().map(|&p| proc::rss_bytes(p)).collect::<Result<Vec<_>>>()?;
    let maps_after = pids.iter().map(|&p| proc::map_count(p)).collect::<Result<Vec<_>>>()?;
    let mem_after = mem_available();
    let tcp_after = tcp_inuse();
    let clients_rss: u64 = fleet.clients.iter().map(|c| proc::rss_bytes(c.pid).unwrap_or(0)).sum();
    let per_server: Vec<ServerStats> = fleet
        .servers
        .iter()
        .enumerate()
        .map(|(i, s)| ServerStats {
            name: s.name.clone(),
            pid: s.pid,
            connections: sockets_after[i].saturating_sub(sockets_before[i]),
            rss_before: rss_before[i],
            rss_after: rss_after[i],
            maps_before: maps_before[i],
            maps_after: maps_after[i],
        })
        .collect();
    let held: u64 = per_server.iter().map(|s| s.connections).sum();
    ensure!(
        held == plan.connections as u64,
        "the pier processes hold {held} connections, not {}: {:?}",
        plan.connections,
        per_server.iter().map(|s| s.connections).collect::<Vec<_>>()
    );
    if let Some(idle) = per_server.iter().find(|s| s.connections == 0) {
        bail!(
            "{} (pid {}) served no connection: the kernel did not spread them over every process",
            idle.name,
            idle.pid
        );
    }

    // The sample, split over the load generators as their connections are.
    let mut echo_ok = 0;
    let mut latencies = Vec::new();
    if plan.sample > 0 {
        let mut asked = Vec::new();
        let mut left = plan.sample;
        for (k, c) in fleet.clients.iter_mut().enumerate() {
            let share = plan.shares[k].0;
            let want = if k + 1 == plan.clients { left } else { plan.sample * share / plan.connections }.min(share);
            left -= want;
            c.send(&format!("echo {want}\n")).await?;
            asked.push(want);
        }
        let until = Instant::now() + ECHO_LIMIT;
        for c in &mut fleet.clients {
            match c.event(until).await? {
                ClientEvent::Echoed { ok, failed: 0, latencies_us, .. } if ok == asked[c.k] => {
                    echo_ok += ok;
                    latencies.extend(latencies_us);
                }
                ClientEvent::Echoed { ok, failed, first_error, .. } => bail!(
                    "load generator {}: {ok} of {} sampled connections echoed ({failed} failed): {}",
                    c.k,
                    asked[c.k],
                    first_error.unwrap_or_default()
                ),
                other => bail!("load generator {} answered {other:?} to `echo`", c.k),
            }
        }
    }
    latencies.sort_unstable();
    let still_held: u64 = pids
        .iter()
        .zip(&sockets_before)
        .map(|(&p, &b)| socket_count(p).map(|n| n.saturating_sub(b)))
        .sum::<Result<_>>()?;
    fleet.check_servers()?;
    ensure!(
        still_held == plan.connections as u64,
        "after the sample the pier processes hold {still_held} connections, not {}",
        plan.connections
    );
    Ok(Measured {
        port: addr.port(),
        startup_secs,
        connect_secs,
        per_server,
        still_held,
        echo_ok,
        echo_latencies_us: latencies,
        clients_rss,
        mem_available_drop: mem_before.zip(mem_after).map(|(b, a)| b as i64 - a as i64),
        tcp_inuse: (tcp_before, tcp_after),
    })
}

/// Spawns pier process `k` listening on `listen`; returns its stdout lines.
fn start_server(
    plan: &Plan,
    args: &HundredKArgs,
    k: usize,
    listen: &str,
    fleet: &mut Fleet,
) -> Result<Lines<BufReader<ChildStdout>>> {
    let name = format!("pier-{k}");
    let mut cmd = command(&args.pier, &plan.server_args(args, k, listen), libc::SIGTERM);
    cmd.env("RUST_LOG", "warn").stdin(Stdio::null());
    let mut child = cmd.spawn().with_context(|| format!("starting {name} ({})", args.pier.display()))?;
    let pid = child.id().context("the pier process has no pid")?;
    let stdout = child.stdout.take().context("the pier process has no stdout")?;
    fleet.servers.push(Server { name, child, pid });
    Ok(BufReader::new(stdout).lines())
}

/// Waits for `listening <name> <addr>`, then keeps draining stdout.
async fn wait_listening(lines: Lines<BufReader<ChildStdout>>, server: &mut Server) -> Result<SocketAddr> {
    crate::run::listening_addr(&server.name, lines, &mut server.child).await
}

/// Sockets `pid` has open (connections, its listener, its own).
fn socket_count(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/fd");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        let Ok(entry) = entry else { continue };
        if std::fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")) {
            n += 1;
        }
    }
    Ok(n)
}

/// `MemAvailable` of /proc/meminfo in bytes.
fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("MemAvailable:"))?;
    Some(line.trim().trim_end_matches("kB").trim().parse::<u64>().ok()? * 1024)
}

/// TCP sockets in use in this network namespace (`/proc/net/sockstat`).
fn tcp_inuse() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("TCP:"))?;
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "inuse" {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// vm.max_map_count before the run and as the run had it.
#[derive(Clone, Copy, Debug)]
struct MapCount {
    before: u64,
    now: u64,
}

/// Each pier process reserves its pool's slots as memory mappings, and
/// `vm.max_map_count` caps them per process: raise it (as root) or say what
/// to run.
fn ensure_map_count(needed: u64, no_sysctl: bool) -> Result<MapCount> {
    let path = "/proc/sys/vm/max_map_count";
    let before = proc::max_map_count().context("reading vm.max_map_count")?;
    if before >= needed {
        return Ok(MapCount { before, now: before });
    }
    let run = format!("sysctl -w vm.max_map_count={needed}");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if no_sysctl || !root {
        bail!("vm.max_map_count is {before}, each pier process needs {needed}: run `sudo {run}` first");
    }
    std::fs::write(path, format!("{needed}\n")).map_err(|e| {
        anyhow!(
            "vm.max_map_count is {before}, each pier process needs {needed}, and setting it failed ({e}): run `{run}`"
        )
    })?;
    let now = proc::max_map_count().unwrap_or(0);
    ensure!(now >= needed, "vm.max_map_count is still {now} after `{run}`");
    eprintln!("pier-bench hundred-k: raised vm.max_map_count from {before} to {now} (as `{run}`; it stays so)");
    Ok(MapCount { before, now })
}

/// Refuses to start a run that would push the machine into swapping or the OOM killer.
fn check_memory(connections: usize) -> Result<()> {
    let Some(available) = mem_available() else { return Ok(()) };
    let needed = connections as u64 * MEM_PER_CONN + (1 << 30);
    ensure!(
        available >= needed,
        "{connections} connections need about {} MiB of memory, only {} MiB is available",
        needed >> 20,
        available >> 20
    );
    Ok(())
}

/// Bytes in MiB, or in GiB from 1 GiB on.
fn mib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
    }
}

/// `12345` as `12,345`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted_us[i] as f64 / 1e3
}

/// The report: the table, what the machine had, and each process's share.
fn markdown(
    plan: &Plan,
    args: &HundredKArgs,
    m: &Measured,
    maps: MapCount,
    nofile: proc::Nofile,
    stop_secs: f64,
    total_secs: f64,
) -> String {
    let n = plan.connections as u64;
    let before: u64 = m.per_server.iter().map(|s| s.rss_before).sum();
    let after: u64 = m.per_server.iter().map(|s| s.rss_after).sum();
    let per_conn = (after as f64 - before as f64) / n as f64 / 1024.0;
    let maps_per_conn = m.per_server.iter().map(|s| s.maps_after as f64 - s.maps_before as f64).sum::<f64>() / n as f64;
    let (lo, hi) = (
        m.per_server.iter().map(|s| s.connections).min().unwrap_or(0),
        m.per_server.iter().map(|s| s.connections).max().unwrap_or(0),
    );
    let first_source = plan.shares.first().and_then(|s| s.1.first()).copied();
    let last_source = plan.shares.last().and_then(|s| s.1.last()).copied();
    let sources = match (first_source, last_source) {
        (Some(a), Some(b)) if a != b => format!("{a}–{b}"),
        (Some(a), _) => a.to_string(),
        _ => "-".into(),
    };
    let lat = &m.echo_latencies_us;
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default().trim().to_string();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let mem_total = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or("unknown".into(), |kib| format!("{:.1} GiB", kib as f64 / (1u64 << 20) as f64));
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let invoked: Vec<String> = std::env::args().skip(1).collect();
    let mut command = format!("`pier-bench {}`", invoked.join(" "));
    if args.out.as_deref() == Some(std::path::Path::new("bench/results/100k.md")) {
        command = format!("`make bench-100k` ({command})");
    }

    let mut s = String::new();
    let _ = writeln!(s, "# {} concurrent connections on one machine (issue 14)\n", thousands(n));
    let _ = writeln!(
        s,
        "{command}: {} idle echo connections held at once by {} `pier serve` processes sharing port {} with \
         `--reuse-port`, opened by {} load-generator processes from source addresses {sources}. Each connection \
         echoes one byte when it opens, then stays idle; once all are open, {} of them, chosen at random, echo a \
         line. RSS is the sum of the pier processes' `VmRSS`, read before the first connection and {} s after \
         the last.\n",
        thousands(n),
        plan.servers,
        m.port,
        plan.clients,
        thousands(plan.sample as u64),
        SETTLE.as_secs()
    );
    let _ = writeln!(s, "| measure | value |");
    let _ = writeln!(s, "|---|---|");
    let _ = writeln!(s, "| connections held at once | {} |", thousands(n));
    let _ = writeln!(s, "| pier RSS per connection | **{per_conn:.1} KiB** |");
    let _ = writeln!(s, "| pier RSS in all, connections held | **{}** (before: {}) |", mib(after), mib(before));
    let _ = writeln!(
        s,
        "| time to open them all | {:.1} s ({} connections/s) |",
        m.connect_secs,
        thousands((n as f64 / m.connect_secs) as u64)
    );
    let _ = writeln!(
        s,
        "| sample echoed | {} of {} (round trip p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms) |",
        thousands(m.echo_ok as u64),
        thousands(plan.sample as u64),
        percentile_ms(lat, 50.0),
        percentile_ms(lat, 99.0),
        percentile_ms(lat, 100.0)
    );
    let _ = writeln!(s, "| still held after the sample | {} |", thousands(m.still_held));
    let _ = writeln!(
        s,
        "| pier processes | {} (`--max-connections {}` each), every one served: {}–{} connections each |",
        plan.servers,
        thousands(plan.max_connections as u64),
        thousands(lo),
        thousands(hi)
    );
    let _ = writeln!(s, "| memory mappings per connection | {maps_per_conn:.2} |");
    let _ = writeln!(s, "| load generators | {} ({} RSS in all) |", plan.clients, mib(m.clients_rss));
    if let (Some(b), Some(a)) = m.tcp_inuse {
        let _ = writeln!(s, "| TCP sockets in use (`/proc/net/sockstat`) | {} → {} |", thousands(b), thousands(a));
    }
    if let Some(drop) = m.mem_available_drop {
        let _ = writeln!(
            s,
            "| MemAvailable drop, whole machine (kernel sockets and load generators included; noisy) | {} |",
            mib(drop.max(0) as u64)
        );
    }
    let _ = writeln!(s, "| pier start-up ({} processes) | {:.1} s |", plan.servers, m.startup_secs);
    let _ = writeln!(s, "| stopping everything | {stop_secs:.1} s |");
    let _ = writeln!(s, "| whole run | {total_secs:.1} s |");
    let _ = writeln!(s, "\n## Each pier process\n");
    let _ = writeln!(s, "| process | connections | RSS before | RSS after | per connection | maps after |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for p in &m.per_server {
        let per = (p.rss_after as f64 - p.rss_before as f64) / p.connections.max(1) as f64 / 1024.0;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {per:.1} KiB | {} |",
            p.name,
            thousands(p.connections),
            mib(p.rss_before),
            mib(p.rss_after),
            thousands(p.maps_after)
        );
    }
    let _ = writeln!(s, "\n## What the machine needs\n");
    let _ = writeln!(
        s,
        "- open files: each process holds its connections plus a few dozen files, under the hard limit \
         (`ulimit -Hn`: {} here), which is why the connections are spread over {} pier processes and {} load \
         generators; each raises its soft limit (`ulimit -n`) to the hard one.",
        thousands(plan.nofile),
        plan.servers,
        plan.clients
    );
    let _ = writeln!(
        s,
        "- `vm.max_map_count` (per process): {} needed for max-connections {} ({MAPS_PER_SLOT} per pool slot + \
         {MAPS_FIXED}); it was {} and the run had {}{}.",
        thousands(plan.map_count_needed),
        thousands(plan.max_connections as u64),
        thousands(maps.before),
        thousands(maps.now),
        if maps.now > maps.before { " (set by `sysctl -w`, as root)" } else { "" }
    );
    let _ = writeln!(
        s,
        "- ephemeral ports: at most {} connections per source address (the range has {}).",
        thousands(PER_SOURCE.min(ephemeral_ports() / 2) as u64),
        thousands(ephemeral_ports() as u64)
    );
    let _ = writeln!(s, "\n## Machine\n");
    let _ = writeln!(s, "- date: {date}");
    let _ = writeln!(s, "- nproc: {}", std::thread::available_parallelism().map_or(1, |n| n.get()));
    let _ = writeln!(s, "- kernel: {}", read("/proc/sys/kernel/osrelease"));
    let _ = writeln!(s, "- CPU: {cpu}");
    let _ = writeln!(s, "- memory: {mem_total}");
    let _ = writeln!(s, "- open files: {} (soft limit raised from {})", nofile.now, nofile.before);
    let _ = writeln!(
        s,
        "- pier processes: `pier {}`",
        plan.server_args(args, 0, &format!("127.0.0.1:{}", m.port)).join(" ").replace("pier-0", "pier-K")
    );
    s
}

/// `pier-bench hundred-k-client`: opens and holds connections, echoes
/// samples on command, closes everything at EOF on stdin.
pub async fn client(args: ClientArgs) -> Result<()> {
    proc::raise_nofile()?;
    let io = Duration::from_secs_f64(args.io_timeout);
    let began = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sources = Arc::new(args.sources.clone());
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency.clamp(1, args.conns.max(1)) {
        let (next, stop, sources) = (next.clone(), stop.clone(), sources.clone());
        let (addr, conns) = (args.addr, args.conns);
        workers.spawn(async move {
            let mut held = Vec::new();
            let mut errors: Vec<String> = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= conns || stop.load(Ordering::Relaxed) {
                    break;
                }
                let source = sources[i % sources.len()];
                // A connect may time out on a loaded machine; try again, twice.
                let mut last = None;
                for _ in 0..3 {
                    match open(addr, source, io).await {
                        Ok(s) => {
                            held.push(s);
                            last = None;
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                if let Some(e) = last {
                    stop.store(true, Ordering::Relaxed);
                    errors.push(format!("{e:#}"));
                }
            }
            (held, errors)
        });
    }
    let mut held: Vec<TcpStream> = Vec::with_capacity(args.conns);
    let mut errors = Vec::new();
    while let Some(joined) = workers.join_next().await {
        let (h, e) = joined.map_err(|e| anyhow!("connect task failed: {e}"))?;
        held.extend(h);
        errors.extend(e);
    }
    let untried = args.conns - held.len() - errors.len();
    report(&ClientEvent::Connected {
        ok: held.len(),
        failed: errors.len() + untried,
        secs: began.elapsed().as_secs_f64(),
        first_error: errors.first().cloned(),
    })?;

    let mut rng = Rng::new();
    // Commands from stdin, read on a thread of its own (tokio's stdin is a
    // feature the crate does not enable); EOF ends the thread and the loop.
    let (tx, mut commands) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = commands.recv().await {
        let want: usize = match line.trim().strip_prefix("echo ") {
            Some(k) => k.trim().parse().with_context(|| format!("bad command `{line}`"))?,
            None => bail!("unknown command `{line}`"),
        };
        let event = sample(&mut held, want, &mut rng, io).await;
        report(&event)?;
    }
    // EOF: the connections close (with a reset) as `held` drops.
    drop(held);
    Ok(())
}

/// One connection from `source`, which echoes a byte before it counts.
async fn open(addr: SocketAddr, source: Ipv4Addr, io: Duration) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4().context("creating a socket")?;
    // A reset at close, so neither side keeps the connection in TIME_WAIT:
    // a zero linger never blocks the closing thread, which is what tokio's
    // deprecation is about.
    #[allow(deprecated)]
    socket.set_linger(Some(Duration::ZERO)).context("setting SO_LINGER")?;
    socket.bind(SocketAddr::new(source.into(), 0)).with_context(|| format!("binding a socket to {source}:0"))?;
    let mut stream = timeout(io, socket.connect(addr))
        .await
        .map_err(|_| anyhow!("connect from {source} timed out after {io:?}"))?
        .with_context(|| format!("connecting from {source} to {addr}"))?;
    round_trip(&mut stream, b"i", io).await?;
    Ok(stream)
}

/// Writes `msg` and reads the same bytes back, within `io`.
async fn round_trip(stream: &mut TcpStream, msg: &[u8], io: Duration) -> Result<()> {
    let mut back = vec![0u8; msg.len()];
    timeout(io, async {
        stream.write_all(msg).await.context("writing")?;
        stream.read_exact(&mut back).await.context("reading the echo")?;
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow!("no echo within {io:?}"))??;
    ensure!(back == msg, "the echo differs from what was sent");
    Ok(())
}

/// `want` held connections chosen at random each echo a line, 64 at a time.
async fn sample(held: &mut Vec<TcpStream>, want: usize, rng: &mut Rng, io: Duration) -> ClientEvent {
    let want = want.min(held.len());
    // A partial Fisher-Yates shuffle: the first `want` are a random sample.
    for i in 0..want {
        let j = i + (rng.next() % (held.len() - i) as u64) as usize;
        held.swap(i, j);
    }
    let mut chosen: Vec<TcpStream> = held.drain(..want).collect();
    let mut set = JoinSet::new();
    let mut latencies = Vec::with_capacity(want);
    let (mut ok, mut failed, mut first_error) = (0, 0, None);
    let mut n = 0usize;
    loop {
        while set.len() < 64 {
            let Some(mut stream) = chosen.pop() else { break };
            n += 1;
            let msg = format!("pier hundred-k sample {n}\n");
            set.spawn(async move {
                let began = Instant::now();
                let result = round_trip(&mut stream, msg.as_bytes(), io).await;
                (stream, result, began.elapsed())
            });
        }
        let Some(joined) = set.join_next().await else { break };
        match joined {
            Ok((stream, Ok(()), took)) => {
                ok += 1;
                latencies.push(took.as_micros() as u64);
                held.push(stream);
            }
            Ok((stream, Err(e), _)) => {
                failed += 1;
                first_error.get_or_insert(format!("{e:#}"));
                held.push(stream);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(format!("echo task failed: {e}"));
            }
        }
    }
    ClientEvent::Echoed { ok, failed, latencies_us: latencies, first_error }
}

/// Prints one event as a JSON line.
fn report(event: &ClientEvent) -> Result<()> {
    println!("{}", serde_json::to_string(event)?);
    Ok(())
}

/// xorshift64*: enough to pick a sample, without a dependency.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Rng((t ^ u64::from(std::process::id()).rotate_left(32)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}
