//! What a server is made of: its listeners, each with its address, its
//! plugin, its socket options and its limits. Every limit has a finite,
//! documented default, set in one place: [`ListenerConfig::new`] and
//! [`ServerConfig::new`].
//!
//! - [`settings`]: the same settings, each optional: pier.toml's keys and
//!   `pier serve`'s flags, read by serde and clap from one struct.
//! - [`file`]: reading pier.toml.
//! - [`addr`], [`units`]: the value types settings are written in.

pub mod addr;
pub mod file;
pub mod settings;
pub mod units;

pub use addr::{AllowConnect, ListenAddr};
pub use settings::{ListenerSettings, Settings};
pub use units::{Size, Time, parse_duration, parse_size};

use anyhow::bail;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One listener: a bound socket, one handler component, one set of limits.
/// In pier's vocabulary, a tenant. Serialized, it is the listener's table of
/// pier.toml with every setting written out.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ListenerConfig {
    /// Names the listener in `listening` lines, logs and server events.
    pub name: String,
    #[serde(serialize_with = "serialize_display")]
    pub listen: ListenAddr,
    /// The handler component (`connection-handler` world).
    pub plugin: PathBuf,
    pub backlog: u32,
    /// TCP_NODELAY on accepted connections: send small writes at once.
    pub nodelay: bool,
    /// SO_KEEPALIVE with this idle time before probes; `None`: off.
    #[serde(serialize_with = "serialize_keepalive")]
    pub keepalive: Option<Duration>,
    /// SO_REUSEPORT: several processes may share the port (kernel balances).
    pub reuse_port: bool,
    /// Every connection begins with a PROXY protocol header (v1 or v2, as a
    /// load balancer sends it); the host strips it, and the connection's
    /// peer is the client it names.
    pub proxy_protocol: bool,
    pub max_connections: u32,
    #[serde(serialize_with = "units::serialize_size")]
    pub memory_limit: u64,
    /// A wall-clock deadline for each inbox call, counted from the call's
    /// start: it includes time the call waits for a worker thread.
    #[serde(serialize_with = "units::serialize_duration")]
    pub cpu_limit: Duration,
    #[serde(serialize_with = "units::serialize_duration")]
    pub idle_timeout: Duration,
    #[serde(serialize_with = "units::serialize_usize")]
    pub outbox_high_water: usize,
    #[serde(serialize_with = "units::serialize_usize")]
    pub outbox_low_water: usize,
    /// Guest run time one connection may use across all its calls.
    #[serde(serialize_with = "units::serialize_duration")]
    pub cpu_budget: Duration,
    /// Bytes the listener's key-value store may hold (keys, values and a
    /// fixed cost per key).
    #[serde(serialize_with = "units::serialize_size")]
    pub kv_max_bytes: u64,
    /// Keys the listener's key-value store may hold.
    pub kv_max_keys: u64,
    /// Undelivered backplane bytes the listener's connections may have.
    #[serde(serialize_with = "units::serialize_usize")]
    pub backplane_max_bytes: usize,
    /// On a `server-handler` listener: bytes read from its peers and waiting
    /// for its one instance; past it, reading stops until the instance
    /// catches up.
    #[serde(serialize_with = "units::serialize_usize")]
    pub queue_max_bytes: usize,
    /// Log lines per second one connection's handler may write.
    pub log_rate: u32,
    /// Timers one connection's handler may have pending at once.
    pub max_timers: u32,
    /// Where a handler may connect out to (`upstream.connect`): `IP:PORT`
    /// or `IP:LO-HI` entries; none by default.
    pub allow_connect: Vec<String>,
    /// Upstream connections one connection's handler may have open.
    pub max_upstreams: u32,
    /// `upstream.connect` may name a host (`name:port`): it is resolved, and
    /// connected to only at a resolved address `allow-connect` lists.
    pub allow_dns: bool,
    /// How long an upstream connection may take to be established.
    #[serde(serialize_with = "units::serialize_duration")]
    pub connect_timeout: Duration,
    /// Host directories the handler may read, each visible to it under its
    /// own path. Nothing else of the filesystem is reachable.
    pub allow_dirs: Vec<PathBuf>,
    /// Environment variables the handler sees; none by default.
    pub env: BTreeMap<String, String>,
    /// Values the handler reads with `config.get(key)`: one plugin, several
    /// tenants served differently.
    #[serde(rename = "config")]
    pub settings: BTreeMap<String, String>,
    /// The backplane this listener's handlers use; listeners naming the same
    /// one share it. `None`: a backplane of its own.
    pub backplane: Option<String>,
    /// TLS: the certificate chain (PEM, the server's first). With
    /// `tls_key`, the listener speaks TLS: the host terminates it.
    pub tls_cert: Option<PathBuf>,
    /// TLS: the certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// ALPN protocols offered, in order of preference (`h2`, `http/1.1`).
    pub tls_alpn: Vec<String>,
    /// CA certificates (PEM) that sign client certificates: with it set a
    /// client must present one.
    pub tls_client_ca: Option<PathBuf>,
    /// How long a client may take to complete the TLS handshake.
    #[serde(serialize_with = "units::serialize_duration")]
    pub tls_handshake_timeout: Duration,
    /// Accept plaintext first; a handler turns TLS on with `start-tls`.
    pub starttls: bool,
    /// Where its backplane and key-value store live: shared (in Redis when
    /// the server has `redis`, else in this process) or this process's own.
    pub shared_state: SharedState,
}

/// A listener's `shared-state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SharedState {
    /// In Redis when the server has `redis` (every process sees it), else in
    /// this process.
    #[default]
    Shared,
    /// In this process only, even with `redis`.
    Local,
}

impl ListenerConfig {
    /// A listener with every default, serving `plugin` on `listen`. These
    /// are pier's defaults: `--help`, the README and `pier check` show them
    /// from here.
    pub fn new(name: impl Into<String>, listen: ListenAddr, plugin: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            listen,
            plugin: plugin.into(),
            backlog: 1024,
            nodelay: false,
            keepalive: None,
            reuse_port: false,
            proxy_protocol: false,
            max_connections: 10_000,
            memory_limit: 64 << 20,
            cpu_limit: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(300),
            outbox_high_water: 64 << 10,
            outbox_low_water: 32 << 10,
            cpu_budget: Duration::from_secs(600),
            kv_max_bytes: 64 << 20,
            kv_max_keys: 1_000_000,
            backplane_max_bytes: 16 << 20,
            queue_max_bytes: 1 << 20,
            log_rate: 100,
            max_timers: 64,
            allow_connect: Vec::new(),
            max_upstreams: 4,
            allow_dns: false,
            connect_timeout: Duration::from_secs(10),
            allow_dirs: Vec::new(),
            env: BTreeMap::new(),
            settings: BTreeMap::new(),
            backplane: None,
            tls_cert: None,
            tls_key: None,
            tls_alpn: Vec::new(),
            tls_client_ca: None,
            tls_handshake_timeout: Duration::from_secs(10),
            starttls: false,
            shared_state: SharedState::Shared,
        }
    }

    /// Whether connections speak TLS (from the start, or after `start-tls`).
    pub fn has_tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// Rejects settings that cannot work, naming the listener and the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        let name = &self.name;
        if name.is_empty() || name.chars().any(char::is_whitespace) {
            bail!("listener name `{name}` is invalid: use a non-empty name without spaces");
        }
        if self.max_connections == 0 {
            bail!("listener `{name}`: max-connections must be at least 1");
        }
        if self.backlog == 0 {
            bail!("listener `{name}`: backlog must be at least 1");
        }
        if self.outbox_low_water > self.outbox_high_water || self.outbox_high_water == 0 {
            bail!(
                "listener `{name}`: outbox water marks are inconsistent (low {} > high {}); keep 0 <= low <= high, high > 0",
                self.outbox_low_water,
                self.outbox_high_water
            );
        }
        if self.cpu_limit.is_zero() || self.idle_timeout.is_zero() || self.cpu_budget.is_zero() {
            bail!("listener `{name}`: cpu-limit, cpu-budget and idle-timeout must be greater than zero");
        }
        if self.kv_max_bytes == 0 || self.kv_max_keys == 0 || self.backplane_max_bytes == 0 || self.log_rate == 0 {
            bail!("listener `{name}`: kv-max-bytes, kv-max-keys, backplane-max-bytes and log-rate must be at least 1");
        }
        if self.queue_max_bytes < 32 << 10 {
            bail!("listener `{name}`: queue-max-bytes must be at least 32KiB (one read from a peer)");
        }
        if self.memory_limit < 64 << 10 {
            bail!("listener `{name}`: memory-limit must be at least 64 KiB (one wasm page)");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("listener `{name}`: give both tls-cert and tls-key (PEM files), or neither");
        }
        if !self.has_tls() && (self.starttls || !self.tls_alpn.is_empty() || self.tls_client_ca.is_some()) {
            bail!(
                "listener `{name}`: starttls, tls-alpn and tls-client-ca need a certificate: give tls-cert and tls-key"
            );
        }
        for entry in &self.allow_connect {
            entry.parse::<AllowConnect>().map_err(|e| anyhow::anyhow!("listener `{name}`: {e}"))?;
        }
        if self.connect_timeout.is_zero() {
            bail!("listener `{name}`: connect-timeout must be greater than zero");
        }
        if self.tls_handshake_timeout.is_zero() {
            bail!("listener `{name}`: tls-handshake-timeout must be greater than zero");
        }
        for dir in &self.allow_dirs {
            if !dir.is_dir() {
                bail!("listener `{name}`: allow-dirs entry `{}` is not a directory; fix or remove it", dir.display());
            }
        }
        Ok(())
    }
}

/// Settings of the whole server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listeners: Vec<ListenerConfig>,
    /// How long `serverShutdown` lets handlers flush before closing them.
    pub grace: Duration,
    /// Worker threads of the runtime `pier serve` builds (None: one per
    /// core). A program that embeds pier runs it on its own runtime.
    pub workers: Option<usize>,
    /// Where to serve `/metrics` and `/healthz` (None: nowhere).
    pub metrics: Option<std::net::SocketAddr>,
    /// The Redis that holds the listeners' backplanes and key-value stores
    /// (`redis://HOST:PORT[/DB]`); None: each process holds its own.
    pub redis: Option<String>,
    /// Most time one Redis request may take before the handler's call gets
    /// an error (never more than what is left of the call's `cpu-limit`).
    pub redis_timeout: Duration,
    /// Where compiled plugins are kept between starts and reloads (the
    /// compile cache); None: every start compiles.
    pub cache_dir: Option<PathBuf>,
}

/// Most worker threads `workers` may ask for.
pub const MAX_WORKERS: usize = 1024;

impl ServerConfig {
    pub fn new(listeners: Vec<ListenerConfig>) -> Self {
        Self {
            listeners,
            grace: Duration::from_secs(5),
            workers: None,
            metrics: None,
            redis: None,
            redis_timeout: Duration::from_millis(500),
            cache_dir: default_cache_dir(),
        }
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.listeners.is_empty() {
            bail!("no listener configured: give --listen and --plugin");
        }
        if let Some(n) = self.workers
            && !(1..=MAX_WORKERS).contains(&n)
        {
            bail!("workers = {n}: give a number of threads from 1 to {MAX_WORKERS} (or leave it out: one per core)");
        }
        if let Some(url) = &self.redis {
            redis::IntoConnectionInfo::into_connection_info(url.as_str()).map_err(|e| {
                anyhow::anyhow!("redis = `{url}`: {e}; give a URL like redis://127.0.0.1:6379 or redis://HOST:PORT/DB")
            })?;
        }
        if self.redis_timeout.is_zero() {
            bail!("redis-timeout must be greater than zero");
        }
        let mut names = std::collections::HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            l.validate()?;
            if !names.insert(&l.name) {
                bail!("listener name `{}` is used twice: give each listener its own name", l.name);
            }
            let backplane = |o: &ListenerConfig| o.backplane.as_ref().unwrap_or(&o.name).clone();
            if let Some(other) =
                self.listeners[..i].iter().find(|o| backplane(o) == backplane(l) && o.shared_state != l.shared_state)
            {
                bail!(
                    "listeners `{}` and `{}` share backplane `{}` but not shared-state: give both the same",
                    other.name,
                    l.name,
                    backplane(l)
                );
            }
            if let Some(other) = self.listeners[..i].iter().find(|o| same_port(&o.listen, &l.listen)) {
                bail!(
                    "listeners `{}` and `{}` both listen on {}: give each its own port (or port 0)",
                    other.name,
                    l.name,
                    l.listen
                );
            }
        }
        Ok(())
    }
}

/// The compile cache's directory by default: `$XDG_CACHE_HOME/pier`, else
/// `~/.cache/pier`; none without a home.
pub fn default_cache_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|d| std::path::Path::new(d).is_absolute());
    let base = xdg.map(PathBuf::from).or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("pier"))
}

/// Two fixed addresses that cannot both be bound (same port, overlapping host).
fn same_port(a: &ListenAddr, b: &ListenAddr) -> bool {
    match (a, b) {
        (ListenAddr::Addr(a), ListenAddr::Addr(b)) => {
            a.port() != 0
                && a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        }
        _ => false,
    }
}

fn serialize_display<S: serde::Serializer>(value: &impl std::fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn serialize_keepalive<S: serde::Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(d) => units::serialize_duration(d, s),
        None => s.serialize_str("off"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let mut l = ListenerConfig::new("a", ListenAddr::parse_addr("127.0.0.1:0").unwrap(), "x.wasm");
        assert!(l.validate().is_ok());
        l.outbox_low_water = l.outbox_high_water + 1;
        assert!(l.validate().unwrap_err().to_string().contains("water marks"));
        let dup = ServerConfig::new(vec![
            ListenerConfig::new("a", ListenAddr::parse_addr("127.0.0.1:0").unwrap(), "x.wasm"),
            ListenerConfig::new("a", ListenAddr::parse_addr("127.0.0.1:0").unwrap(), "x.wasm"),
        ]);
        assert!(dup.validate().unwrap_err().to_string().contains("used twice"));
        let same = ServerConfig::new(vec![
            ListenerConfig::new("a", ListenAddr::parse_addr("127.0.0.1:7000").unwrap(), "x.wasm"),
            ListenerConfig::new("b", ListenAddr::parse_addr("0.0.0.0:7000").unwrap(), "x.wasm"),
        ]);
        assert!(same.validate().unwrap_err().to_string().contains("both listen on"));
    }
}
