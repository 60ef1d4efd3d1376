//! The `pier` command: `serve` and `check`.

use clap::{Args, Parser, Subcommand};
use pier::config::{DEFAULT_BACKLOG, DEFAULT_GRACE, DEFAULT_MAX_CONNECTIONS, parse_duration, parse_size};
use pier::{ListenAddr, ListenerConfig, Server, ServerConfig};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "pier", version, about = "A TCP server whose protocol handlers are sandboxed WebAssembly components")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve a handler component on a TCP listener.
    Serve(ServeArgs),
    /// Validate a handler component (and print its world, imports and
    /// exports) or a whole config file (and print its listeners), binding nothing.
    Check {
        /// The component (.wasm) to check.
        #[arg(required_unless_present = "config", conflicts_with = "config")]
        plugin: Option<PathBuf>,
        /// A pier.toml whose every listener to check.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Serve every listener of this config file (pier.toml) instead of the
    /// one listener the flags below describe.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["listen", "plugin", "port_range", "name"])]
    config: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (port 0: any free port). With
    /// --port-range, only its host is used.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// The handler component (.wasm, world pier:server/connection-handler).
    #[arg(long, value_name = "FILE.wasm", required_unless_present = "config")]
    plugin: Option<PathBuf>,
    /// Listener name, shown in `listening` lines and logs.
    #[arg(long, default_value = "main")]
    name: String,
    /// Bind a random free port in LO-HI instead of --listen's port.
    #[arg(long, value_name = "LO-HI")]
    port_range: Option<String>,
    /// Listen backlog.
    #[arg(long, default_value_t = DEFAULT_BACKLOG)]
    backlog: u32,
    /// Set TCP_NODELAY on accepted connections.
    #[arg(long)]
    nodelay: bool,
    /// Turn on TCP keepalive, probing after this idle time, e.g. 60s.
    #[arg(long, value_parser = parse_duration)]
    keepalive: Option<Duration>,
    /// Set SO_REUSEPORT, so several servers can share the port.
    #[arg(long)]
    reuse_port: bool,
    /// Most live connections; past it the accept loop waits.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: u32,
    /// Most linear memory per handler instance, e.g. 64MiB.
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    memory_limit: u64,
    /// Most time one inbox call may run, e.g. 1s or 250ms.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    cpu_limit: Duration,
    /// Close a connection with no traffic for this long, e.g. 5m.
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    idle_timeout: Duration,
    /// Outbox bytes at which `send` answers would-block, e.g. 64KiB.
    #[arg(long, value_parser = parse_size, default_value = "64KiB")]
    outbox_high_water: u64,
    /// Outbox bytes below which a blocked handler is told `writable`.
    #[arg(long, value_parser = parse_size, default_value = "32KiB")]
    outbox_low_water: u64,
    /// On SIGINT/SIGTERM, how long handlers may flush before closing.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    grace: Duration,
    /// Worker threads for all listeners (default: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<ServerConfig> {
        if let Some(path) = &self.config {
            let mut config = pier::config_file::load(path)?;
            if self.grace != DEFAULT_GRACE {
                config.grace = self.grace;
            }
            if self.workers.is_some() {
                config.workers = self.workers;
            }
            return Ok(config);
        }
        let listen = ListenAddr::from_parts(self.listen.as_deref(), self.port_range.as_deref())
            .map_err(|e| anyhow::anyhow!("{e}; give --listen HOST:PORT (or --port-range LO-HI)"))?;
        let plugin = self.plugin.expect("clap requires --plugin without --config");
        let mut l = ListenerConfig::new(self.name, listen, plugin);
        l.backlog = self.backlog;
        l.nodelay = self.nodelay;
        l.keepalive = self.keepalive;
        l.reuse_port = self.reuse_port;
        l.max_connections = self.max_connections;
        l.memory_limit = self.memory_limit;
        l.cpu_limit = self.cpu_limit;
        l.idle_timeout = self.idle_timeout;
        l.outbox_high_water = usize::try_from(self.outbox_high_water)?;
        l.outbox_low_water = usize::try_from(self.outbox_low_water)?;
        let mut config = ServerConfig::new(vec![l]);
        config.grace = self.grace;
        config.workers = self.workers;
        Ok(config)
    }
}

fn main() -> ExitCode {
    // wasmtime builds an error each time an idle connection's fiber is
    // dropped; with RUST_BACKTRACE=1 each would capture a backtrace (~14 µs
    // and a lock per connection). Keep panics' backtraces, skip those.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Check { plugin: Some(plugin), .. } => pier::check(&plugin).map(|text| print!("{text}")),
        Command::Check { config: Some(path), .. } => {
            pier::config_file::load(&path).and_then(|c| pier::check_config(&c)).map(|text| print!("{text}"))
        }
        Command::Check { .. } => unreachable!("clap requires a plugin or --config"),
        Command::Serve(args) => serve(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pier: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    // Before the runtime is built from `workers`.
    config.validate()?;
    pier::raise_open_files_limit();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.workers {
        runtime.worker_threads(n);
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async {
        let server = Server::bind(config).await?;
        // Install the handlers before announcing the ports, so a signal sent
        // as soon as a script sees `listening` is never the default (fatal).
        let mut signals = Signals::new()?;
        let mut stdout = std::io::stdout().lock();
        for (name, addr) in server.local_addrs() {
            writeln!(stdout, "listening {name} {addr}")?;
        }
        stdout.flush()?;
        drop(stdout);
        let stop = server.shutdown_handle();
        tokio::spawn(async move {
            signals.next().await;
            tracing::info!("signal received: shutting down (a second signal exits at once)");
            stop.shutdown();
            signals.next().await;
            std::process::exit(130);
        });
        server.run().await
    })
}

/// SIGTERM and SIGINT, both meaning `serverShutdown`.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
