//! The `pier` command: `serve` and `check`.

mod cli;
mod handoff;
mod notify;

use cli::{Cli, Command, LogFormat, ServeArgs};
use pier::config::{Settings, file};
use pier::{Server, ServerConfig};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

impl ServeArgs {
    /// The server to run: the file's, with the flags laid over it, or the
    /// one listener the flags describe.
    /// The configuration these arguments give: read again at each reload,
    /// so a changed file (or plugin) is seen.
    fn to_config(&self) -> anyhow::Result<ServerConfig> {
        if let Some(path) = &self.config {
            return file::load_with(path, &self.server, &self.listener);
        }
        let mut listener = self.listener.clone();
        listener.name.get_or_insert_with(|| "main".into());
        let config = Settings { listener: vec![listener], ..self.server.clone() }.resolve(Path::new(""))?;
        config.validate()?;
        Ok(config)
    }
}

fn main() -> ExitCode {
    // wasmtime builds an error each time an idle connection's fiber is
    // dropped; with RUST_BACKTRACE=1 each would capture a backtrace (a
    // lock and a stack walk per connection). Keep panics', skip those.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    let cli = Cli::parse_args();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => log.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        // The connection's span (listener, conn, peer) on every line, flat.
        LogFormat::Json => log.json().with_current_span(true).with_span_list(false).init(),
    }
    let result = match cli.command {
        Command::Check { plugin: Some(plugin), .. } => block_on(pier::check(&plugin)).map(print),
        Command::Check { config: Some(path), .. } => {
            file::load(&path).and_then(|c| block_on(pier::check_config(&c))).map(print)
        }
        Command::Check { .. } => unreachable!("clap requires a plugin or --config"),
        Command::Serve(args) => serve(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever a value quoted in it holds.
            eprintln!("pier: {}", format!("{e:#}").replace('\r', "\\r").replace('\n', "\\n"));
            ExitCode::FAILURE
        }
    }
}

/// Runs a future on a runtime of its own, for the commands that exit.
fn block_on<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(fut)
}

/// Writes a report to stdout. A reader that went away (`pier check | head`)
/// is not an error of pier's.
fn print(text: String) {
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        tracing::debug!(error = %e, "stdout closed; report not written");
    }
}

/// The `listening` lines scripts wait for. A closed stdout (`pier serve |
/// head -1`) loses them, not the server.
fn announce(metrics: Option<std::net::SocketAddr>, addrs: &[(std::sync::Arc<str>, std::net::SocketAddr)]) {
    let mut stdout = std::io::stdout().lock();
    let metrics = metrics.map_or(Ok(()), |addr| writeln!(stdout, "metrics {addr}"));
    let written =
        metrics.and_then(|()| addrs.iter().try_for_each(|(name, addr)| writeln!(stdout, "listening {name} {addr}")));
    if let Err(e) = written.and_then(|()| stdout.flush()) {
        tracing::warn!(error = %e, "stdout is closed: the `listening` lines were not written (the log has them)");
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Read before any thread exists (it edits the environment).
    let mut handed = handoff::take()?;
    // The binary's path now: an upgrade starts what is there then.
    let exe = std::env::current_exe()?;
    // Validated before the runtime is built from `workers`.
    let config = args.to_config()?;
    pier::raise_open_files_limit();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.workers {
        runtime.worker_threads(n);
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async {
        let server = Server::bind_inheriting(config, std::mem::take(&mut handed.sockets)).await?;
        // Install the handlers before announcing the ports, so a signal sent
        // as soon as a script sees `listening` is never the default (fatal).
        let mut signals = Signals::new()?;
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup())?;
        let mut upgrade = signal(SignalKind::user_defined2())?;
        announce(server.metrics_addr(), &server.local_addrs());
        handed.ready();
        notify::notify("READY=1");
        let (sockets, stop) = (server.sockets(), server.shutdown_handle());
        tokio::spawn(async move {
            while upgrade.recv().await.is_some() {
                tracing::info!(exe = %exe.display(), "SIGUSR2: starting a successor with the listening sockets");
                let (exe, sockets) = (exe.clone(), sockets.fds());
                match tokio::task::spawn_blocking(move || handoff::start_successor(&exe, &sockets)).await {
                    Ok(Ok(pid)) => {
                        tracing::info!(successor = pid, "upgrade: the successor serves; draining and exiting");
                        notify::notify(&format!("MAINPID={pid}\nSTOPPING=1"));
                        stop.drain();
                        return;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "upgrade failed; serving on"),
                    Err(e) => tracing::warn!(error = %e, "upgrade failed; serving on"),
                }
            }
        });
        let reload = server.reload_handle();
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the configuration");
                notify::notify("RELOADING=1");
                // Logged by the server either way; a failure changes nothing.
                let _ = reload.reload(args.to_config()).await;
                notify::notify("READY=1");
            }
        });
        let stop = server.shutdown_handle();
        tokio::spawn(async move {
            signals.next().await;
            tracing::info!("signal received: shutting down (a second signal exits at once)");
            notify::notify("STOPPING=1");
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
