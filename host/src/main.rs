//! The `pier` command: `serve` and `check`.

use clap::{Args, Parser, Subcommand};
use pier::config::{DEFAULT_BACKLOG, DEFAULT_MAX_CONNECTIONS};
use pier::{ListenAddr, ListenerConfig, Server, ServerConfig};
use std::io::Write;
use std::net::IpAddr;
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
    /// Validate a handler component and print its world, imports and exports.
    Check {
        /// The component (.wasm) to check.
        plugin: PathBuf,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on, HOST:PORT (port 0: any free port). With
    /// --port-range, only its host is used.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// The handler component (.wasm, world pier:server/connection-handler).
    #[arg(long, value_name = "FILE.wasm")]
    plugin: PathBuf,
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
    /// Most live connections; past it the accept loop waits.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: u32,
    /// Most linear memory per handler instance, e.g. 64MiB.
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    memory_limit: u64,
    /// Most time one inbox call may run, e.g. 1s or 250ms.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    cpu_limit: Duration,
    /// Close a connection with no traffic for this long, e.g. 5m.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    idle_timeout: Duration,
    /// Outbox bytes at which `send` answers would-block, e.g. 64KiB.
    #[arg(long, value_parser = parse_size, default_value = "64KiB")]
    outbox_high_water: u64,
    /// Outbox bytes below which a blocked handler is told `writable`.
    #[arg(long, value_parser = parse_size, default_value = "32KiB")]
    outbox_low_water: u64,
    /// On SIGINT/SIGTERM, how long handlers may flush before closing.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    grace: Duration,
}

impl ServeArgs {
    fn into_config(self) -> anyhow::Result<ServerConfig> {
        let listen = match (&self.port_range, &self.listen) {
            (Some(range), listen) => {
                let host = match listen {
                    None => IpAddr::from([127, 0, 0, 1]),
                    Some(text) => parse_host(text)?,
                };
                ListenAddr::parse_range(host, range)?
            }
            (None, Some(text)) => ListenAddr::parse_addr(text)?,
            (None, None) => anyhow::bail!("give --listen HOST:PORT (or --port-range LO-HI) to say where to listen"),
        };
        let mut l = ListenerConfig::new(self.name, listen, self.plugin);
        l.backlog = self.backlog;
        l.nodelay = self.nodelay;
        l.max_connections = self.max_connections;
        l.memory_limit = self.memory_limit;
        l.cpu_limit = self.cpu_limit;
        l.idle_timeout = self.idle_timeout;
        l.outbox_high_water = usize::try_from(self.outbox_high_water)?;
        l.outbox_low_water = usize::try_from(self.outbox_low_water)?;
        let mut config = ServerConfig::new(vec![l]);
        config.grace = self.grace;
        Ok(config)
    }
}

/// `HOST` or `HOST:PORT` (the port is ignored) for --port-range.
fn parse_host(text: &str) -> anyhow::Result<IpAddr> {
    if let Ok(ip) = text.trim_matches(|c| c == '[' || c == ']').parse() {
        return Ok(ip);
    }
    match ListenAddr::parse_addr(text)? {
        ListenAddr::Addr(addr) => Ok(addr.ip()),
        ListenAddr::Range { host, .. } => Ok(host),
    }
}

/// Sizes such as `65536`, `64KiB`, `64MiB`, `1GiB` (KB/MB/GB mean the same).
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("`{text}` is not a size: use e.g. 65536, 64KiB, 64MiB"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err(format!("`{text}` has an unknown unit: use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{text}` is too large"))
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
        Command::Check { plugin } => pier::check(&plugin).map(|text| print!("{text}")),
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
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
    }
}
