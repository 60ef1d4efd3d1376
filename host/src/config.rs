//! What a listener is made of: its address, its plugin, its socket options and
//! its limits. Every limit has a finite, documented default.

use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Listen backlog: how many not-yet-accepted connections the kernel queues.
pub const DEFAULT_BACKLOG: u32 = 1024;
/// Most live connections per listener; past it the accept loop waits.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10_000;
/// Most linear memory one handler instance may grow to.
pub const DEFAULT_MEMORY_LIMIT: u64 = 64 << 20;
/// Most time one inbox call may run.
pub const DEFAULT_CPU_LIMIT: Duration = Duration::from_secs(1);
/// A connection with no traffic for this long is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Outbox bytes above which `send` answers `would-block` and reading stops.
pub const DEFAULT_OUTBOX_HIGH_WATER: usize = 64 << 10;
/// Outbox bytes below which a blocked handler is told `writable`.
pub const DEFAULT_OUTBOX_LOW_WATER: usize = 32 << 10;
/// How long `serverShutdown` waits for handlers to flush before closing.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Where a listener binds: one address (port 0 = any free port), or a random
/// free port in a range (Kamaelia's `makeTCPServerPort`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// Exactly this address; port 0 lets the kernel pick.
    Addr(SocketAddr),
    /// A random free port in `lo..=hi` on `host`, retried until one binds.
    Range { host: IpAddr, lo: u16, hi: u16 },
}

impl ListenAddr {
    /// From `listen` (`HOST:PORT`, or just `HOST` with a range) and an
    /// optional `port-range` (`LO-HI`), as the CLI and the config file give them.
    pub fn from_parts(listen: Option<&str>, port_range: Option<&str>) -> anyhow::Result<Self> {
        match (listen, port_range) {
            (listen, Some(range)) => {
                let host = match listen {
                    None => IpAddr::from([127, 0, 0, 1]),
                    Some(text) => parse_host(text)?,
                };
                Self::parse_range(host, range)
            }
            (Some(text), None) => Self::parse_addr(text),
            (None, None) => bail!("no address: give listen = HOST:PORT (or a port-range LO-HI)"),
        }
    }

    /// Parses `HOST:PORT` (IPv6 in brackets, `[::1]:7000`).
    pub fn parse_addr(text: &str) -> anyhow::Result<Self> {
        let addr = SocketAddr::from_str(text).map_err(|_| {
            anyhow::anyhow!(
                "invalid listen address `{text}`: expected HOST:PORT such as 127.0.0.1:7000 or [::1]:7000 (port 0 picks a free port)"
            )
        })?;
        Ok(Self::Addr(addr))
    }

    /// Parses a port range `LO-HI` to bind on `host`.
    pub fn parse_range(host: IpAddr, text: &str) -> anyhow::Result<Self> {
        let (lo, hi) = text
            .split_once('-')
            .with_context(|| format!("invalid port range `{text}`: expected LO-HI such as 7000-7100"))?;
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .with_context(|| format!("invalid port range `{text}`: `{p}` is not a port (1-65535)"))
        };
        let (lo, hi) = (port(lo)?, port(hi)?);
        if lo == 0 || lo > hi {
            bail!("invalid port range `{text}`: it is empty; give LO-HI with 1 <= LO <= HI, such as 7000-7100");
        }
        Ok(Self::Range { host, lo, hi })
    }
}

/// `HOST` or `HOST:PORT` (the port is ignored), for a port range's host.
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
pub fn parse_size(text: &str) -> Result<u64, String> {
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

/// Durations such as `250ms`, `1s`, `5m` (humantime syntax).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` is not a duration ({e}): use e.g. 250ms, 1s, 5m"))
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Addr(addr) => write!(f, "{addr}"),
            Self::Range { host, lo, hi } => write!(f, "{host}:{lo}-{hi}"),
        }
    }
}

/// One listener: a bound socket, one handler component, one set of limits.
/// In pier's vocabulary, a tenant.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Names the listener in `listening` lines, logs and server events.
    pub name: String,
    pub listen: ListenAddr,
    /// The handler component (`connection-handler` world).
    pub plugin: PathBuf,
    pub backlog: u32,
    /// TCP_NODELAY on accepted connections: send small writes at once.
    pub nodelay: bool,
    /// SO_KEEPALIVE with this idle time before probes; `None`: off.
    pub keepalive: Option<Duration>,
    /// SO_REUSEPORT: several processes may share the port (kernel balances).
    pub reuse_port: bool,
    pub max_connections: u32,
    pub memory_limit: u64,
    pub cpu_limit: Duration,
    pub idle_timeout: Duration,
    pub outbox_high_water: usize,
    pub outbox_low_water: usize,
    /// Host directories the handler may read, each visible to it under its
    /// own path. Nothing else of the filesystem is reachable.
    pub allow_dirs: Vec<PathBuf>,
    /// Environment variables the handler sees; none by default.
    pub env: BTreeMap<String, String>,
    /// Values the handler reads with `config.get(key)`: one plugin, several
    /// tenants served differently.
    pub settings: BTreeMap<String, String>,
    /// The backplane this listener's handlers use; listeners naming the same
    /// one share it. `None`: a backplane of its own.
    pub backplane: Option<String>,
}

impl ListenerConfig {
    /// A listener with every default, serving `plugin` on `listen`.
    pub fn new(name: impl Into<String>, listen: ListenAddr, plugin: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            listen,
            plugin: plugin.into(),
            backlog: DEFAULT_BACKLOG,
            nodelay: false,
            keepalive: None,
            reuse_port: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            memory_limit: DEFAULT_MEMORY_LIMIT,
            cpu_limit: DEFAULT_CPU_LIMIT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            outbox_high_water: DEFAULT_OUTBOX_HIGH_WATER,
            outbox_low_water: DEFAULT_OUTBOX_LOW_WATER,
            allow_dirs: Vec::new(),
            env: BTreeMap::new(),
            settings: BTreeMap::new(),
            backplane: None,
        }
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
        if self.cpu_limit.is_zero() || self.idle_timeout.is_zero() {
            bail!("listener `{name}`: cpu-limit and idle-timeout must be greater than zero");
        }
        if self.memory_limit < 64 << 10 {
            bail!("listener `{name}`: memory-limit must be at least 64 KiB (one wasm page)");
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
}

/// Most worker threads `workers` may ask for.
pub const MAX_WORKERS: usize = 1024;

impl ServerConfig {
    pub fn new(listeners: Vec<ListenerConfig>) -> Self {
        Self { listeners, grace: DEFAULT_GRACE, workers: None }
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
        let mut names = std::collections::HashSet::new();
        for (i, l) in self.listeners.iter().enumerate() {
            l.validate()?;
            if !names.insert(&l.name) {
                bail!("listener name `{}` is used twice: give each listener its own name", l.name);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_ranges() {
        assert_eq!(ListenAddr::parse_addr("127.0.0.1:0").unwrap(), ListenAddr::Addr("127.0.0.1:0".parse().unwrap()));
        assert!(ListenAddr::parse_addr("[::1]:7000").is_ok());
        let err = ListenAddr::parse_addr("localhost").unwrap_err().to_string();
        assert!(err.contains("invalid listen address `localhost`"), "{err}");
        let host = "127.0.0.1".parse().unwrap();
        assert_eq!(ListenAddr::parse_range(host, "7000-7010").unwrap(), ListenAddr::Range { host, lo: 7000, hi: 7010 });
        let err = ListenAddr::parse_range(host, "7010-7000").unwrap_err().to_string();
        assert!(err.contains("is empty"), "{err}");
        assert!(ListenAddr::parse_range(host, "7000").is_err());
        assert!(ListenAddr::parse_range(host, "0-10").is_err());
        assert!(ListenAddr::parse_range(host, "1-70000").is_err());
    }

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

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
    }
}
