//! `pier-bench`: the benchmark behind `make bench` (issue 7).
//!
//! One binary plays every part so a run needs nothing installed:
//! - `native-echo`: the native tokio baseline server ([`native`]);
//! - `native-tls-echo`: the same behind tokio-rustls, the `tls-*` rows'
//!   baseline ([`native::serve_tls`], [`tls`]);
//! - `load`: one load scenario against a running server ([`load`]), handy
//!   with `perf record -p <server pid>`;
//! - `run`: the orchestrator ([`run`]) that starts pier and the baseline as
//!   child processes, loads each in turn, and writes the report;
//! - `hundred-k`: 100,000 idle connections over several pier processes on
//!   one port, from its own load-generator processes ([`hundred_k`]).

mod external;
mod hundred_k;
mod load;
mod native;
mod native_http;
mod plot;
mod proc;
mod report;
mod run;
mod shared;
mod tls;

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "pier-bench", version, about = "Benchmarks pier against a native tokio echo server")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every scenario against pier and the native baseline; print the
    /// table and write latest.{md,json,svg}.
    Run(run::RunArgs),
    /// Serve the native baseline: a plain tokio echo server.
    NativeEcho {
        /// HOST:PORT (port 0: any free port); prints `listening native <addr>`.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// Serve the native TLS baseline: the same echo behind tokio-rustls (ring).
    NativeTlsEcho {
        /// HOST:PORT (port 0: any free port); prints `listening native-tls <addr>`.
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        /// The certificate chain (PEM).
        #[arg(long)]
        tls_cert: PathBuf,
        /// Its private key (PEM).
        #[arg(long)]
        tls_key: PathBuf,
    },
    /// Serve the native HTTP baseline: hyper answering GET /hello.
    NativeHttp {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
    /// One scenario against an already running server; prints JSON.
    #[command(subcommand)]
    Load(LoadCmd),
    /// Issue 14: 100,000 idle echo connections over several pier processes
    /// on one port; prints RSS per connection and writes --out.
    HundredK(hundred_k::HundredKArgs),
    /// A load generator of `hundred-k` (started by it).
    #[command(hide = true)]
    HundredKClient(hundred_k::ClientArgs),
}

#[derive(Args)]
struct Target {
    /// The server's address.
    #[arg(long)]
    addr: SocketAddr,
    /// The server's pid, to read its CPU time and memory from /proc.
    #[arg(long)]
    pid: Option<u32>,
    /// Timeout for each connect, read and write, in seconds.
    #[arg(long, default_value_t = 5.0)]
    io_timeout: f64,
    /// Connect with TLS 1.3 (a full handshake per connection), trusting only
    /// this certificate (PEM) for the name `localhost`.
    #[arg(long, value_name = "CERT")]
    tls: Option<PathBuf>,
}

impl Target {
    fn transport(&self) -> anyhow::Result<load::Transport> {
        Ok(match &self.tls {
            None => load::Transport::Plain,
            Some(cert) => load::Transport::Tls(tls::connector(cert)?),
        })
    }
}

#[derive(Subcommand)]
enum LoadCmd {
    /// Echo throughput: connections each writing a message and reading it back.
    Echo {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 64)]
        conns: usize,
        /// Message size in bytes.
        #[arg(long, default_value_t = 64)]
        size: usize,
        /// Measured seconds (after a one-second warm-up).
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Churn: clients each connecting, echoing 64 bytes and closing, in a loop
    /// (with --tls: the handshake rate).
    Churn {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Measured seconds (after a one-second warm-up).
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
    },
    /// Idle: open connections, hold them, report the server's RSS growth (needs --pid).
    Idle {
        #[command(flatten)]
        target: Target,
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(args) => match run::run(args).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                eprintln!("pier-bench: some scenarios produced no numbers (errors above and in the table)");
                return ExitCode::FAILURE;
            }
            Err(e) => Err(e),
        },
        Cmd::NativeEcho { listen } => native::serve(&listen).await,
        Cmd::NativeTlsEcho { listen, tls_cert, tls_key } => native::serve_tls(&listen, &tls_cert, &tls_key).await,
        Cmd::NativeHttp { listen } => native_http::serve(&listen).await,
        Cmd::Load(cmd) => load_once(cmd).await,
        Cmd::HundredK(args) => hundred_k::run(args).await,
        Cmd::HundredKClient(args) => hundred_k::client(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pier-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn load_once(cmd: LoadCmd) -> anyhow::Result<()> {
    proc::raise_nofile()?;
    let window = |secs: f64| load::Window { warmup: Duration::from_secs(1), measure: Duration::from_secs_f64(secs) };
    let io = |t: &Target| Duration::from_secs_f64(t.io_timeout);
    let json = match cmd {
        LoadCmd::Echo { target, conns, size, secs } => {
            let p = load::EchoParams { conns, size, window: window(secs), io_timeout: io(&target) };
            serde_json::to_string_pretty(&load::echo(target.addr, &target.transport()?, p, target.pid).await?)?
        }
        LoadCmd::Churn { target, clients, secs } => {
            let p = load::ChurnParams { clients, window: window(secs), io_timeout: io(&target) };
            serde_json::to_string_pretty(&load::churn(target.addr, &target.transport()?, p, target.pid).await?)?
        }
        LoadCmd::Idle { target, conns } => {
            let pid = target.pid.ok_or_else(|| anyhow::anyhow!("idle measures the server's memory: give --pid"))?;
            let p =
                load::IdleParams { conns, concurrency: 64, settle: Duration::from_secs(1), io_timeout: io(&target) };
            serde_json::to_string_pretty(&load::idle(target.addr, &target.transport()?, p, pid).await?)?
        }
    };
    println!("{json}");
    Ok(())
}
