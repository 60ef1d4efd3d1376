//! Settings as a person gives them: the keys of pier.toml and the flags of
//! `pier serve`, one struct for both, every field optional. clap reads the
//! command line into it and serde (rejecting unknown keys) the file;
//! [`ListenerSettings::apply`] lays what was given over a listener's
//! defaults, so a setting is defined once, defaulted once and applied once.

use super::addr::ListenAddr;
use super::units::{Size, Time, parse_duration};
use super::{ListenerConfig, ServerConfig};
use anyhow::Context;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// One listener's settings: a `[[listener]]` table of pier.toml, or the
/// listener flags of `pier serve`. Fields clap skips are config-file only.
#[derive(clap::Args, Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ListenerSettings {
    /// Listener name, shown in `listening` lines, logs and server events.
    #[arg(long)]
    pub name: Option<String>,
    /// Address to listen on, HOST:PORT (port 0: any free port). With
    /// --port-range, only its host is used.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Bind a random free port in LO-HI (Kamaelia's makeTCPServerPort).
    #[arg(long, value_name = "LO-HI")]
    pub port_range: Option<String>,
    /// The handler component (.wasm, world pier:server/connection-handler).
    #[arg(long, value_name = "FILE.wasm")]
    pub plugin: Option<PathBuf>,
    /// Listen backlog: connections the kernel queues before accept.
    #[arg(long, value_name = "N")]
    pub backlog: Option<u32>,
    /// TCP_NODELAY on accepted connections.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub nodelay: Option<bool>,
    /// TCP keepalive: probe after this idle time (e.g. 60s), or off.
    #[arg(long, value_name = "TIME|off")]
    pub keepalive: Option<Keepalive>,
    /// SO_REUSEPORT, so several servers can share the port.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub reuse_port: Option<bool>,
    /// Each connection begins with a PROXY protocol header (v1 or v2, from
    /// HAProxy's send-proxy or nginx's proxy_protocol); the peer is the
    /// client it names.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub proxy_protocol: Option<bool>,
    /// Most live connections; past it the accept loop waits and the kernel
    /// backlog queues new clients.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,
    /// Most linear memory per handler instance, e.g. 64MiB.
    #[arg(long, value_name = "SIZE")]
    pub memory_limit: Option<Size>,
    /// Wall-clock deadline of one inbox call, counted from its start (so it
    /// includes time spent waiting for a worker thread), e.g. 250ms.
    #[arg(long, value_name = "TIME")]
    pub cpu_limit: Option<Time>,
    /// Close a connection with no traffic in either direction for this long.
    #[arg(long, value_name = "TIME")]
    pub idle_timeout: Option<Time>,
    /// Outbox bytes at which `send` answers would-block and reading stops.
    #[arg(long, value_name = "SIZE")]
    pub outbox_high_water: Option<Size>,
    /// Outbox bytes below which a blocked handler is told `writable`.
    #[arg(long, value_name = "SIZE")]
    pub outbox_low_water: Option<Size>,
    /// Guest run time one connection may use in all, across its calls
    /// (time spent running the guest, not waiting), e.g. 10m.
    #[arg(long, value_name = "TIME")]
    pub cpu_budget: Option<Time>,
    /// Bytes the listener's key-value store may hold: keys, values and 96
    /// bytes per key; past it `set` fails (Redis: -OOM).
    #[arg(long, value_name = "SIZE")]
    pub kv_max_bytes: Option<Size>,
    /// Keys the listener's key-value store may hold.
    #[arg(long, value_name = "N")]
    pub kv_max_keys: Option<u64>,
    /// Undelivered backplane bytes the listener's connections may have in
    /// all; past it new messages to them are dropped (counted).
    #[arg(long, value_name = "SIZE")]
    pub backplane_max_bytes: Option<Size>,
    /// On a server-handler listener: bytes read from its peers that may wait
    /// for its one instance; past it, reading stops until it catches up.
    #[arg(long, value_name = "SIZE")]
    pub queue_max_bytes: Option<Size>,
    /// Log lines per second one connection's handler may write (stdout and
    /// stderr together); the excess is dropped and counted.
    #[arg(long, value_name = "N")]
    pub log_rate: Option<u32>,
    /// Timers one connection's handler may have pending at once (`timers.set`).
    #[arg(long, value_name = "N")]
    pub max_timers: Option<u32>,
    /// Addresses a handler may connect out to (`upstream.connect`), e.g.
    /// 127.0.0.1:6379,127.0.0.1:7000-7010; none by default.
    #[arg(long, value_name = "IP:PORT,...", value_delimiter = ',')]
    pub allow_connect: Option<Vec<String>>,
    /// Upstream connections one connection's handler may have open.
    #[arg(long, value_name = "N")]
    pub max_upstreams: Option<u32>,
    /// Let `upstream.connect` name a host: it is resolved, and connected to
    /// only at an address --allow-connect lists.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_dns: Option<bool>,
    /// Most time an upstream connection may take to be established.
    #[arg(long, value_name = "TIME")]
    pub connect_timeout: Option<Time>,
    /// Read-only host directories the handler may open.
    #[arg(skip)]
    pub allow_dirs: Option<Vec<PathBuf>>,
    /// Environment variables the handler sees.
    #[arg(skip)]
    pub env: Option<BTreeMap<String, String>>,
    /// Values the handler reads with `config.get(key)`.
    #[arg(skip)]
    pub config: Option<BTreeMap<String, String>>,
    /// A backplane shared with the listeners naming the same one.
    #[arg(skip)]
    pub backplane: Option<String>,
    /// Speak TLS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE.pem")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, value_name = "FILE.pem")]
    pub tls_key: Option<PathBuf>,
    /// ALPN protocols to offer, in order of preference (e.g. h2,http/1.1).
    #[arg(long, value_name = "PROTO,...", value_delimiter = ',')]
    pub tls_alpn: Option<Vec<String>>,
    /// Require client certificates signed by these CAs (PEM).
    #[arg(long, value_name = "FILE.pem")]
    pub tls_client_ca: Option<PathBuf>,
    /// Most time a client may take to complete the TLS handshake.
    #[arg(long, value_name = "TIME")]
    pub tls_handshake_timeout: Option<Time>,
    /// Accept plaintext; the handler turns TLS on with `start-tls` (STARTTLS).
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub starttls: Option<bool>,
    /// Where the backplane and key-value store live: `shared` (in Redis
    /// with --redis, else in this process) or `local` (this process only).
    #[arg(long, value_name = "shared|local")]
    pub shared_state: Option<super::SharedState>,
}

/// The server's settings: pier.toml's top level, and the server flags of
/// `pier serve`.
#[derive(clap::Args, Deserialize, Clone, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// On SIGINT/SIGTERM, how long handlers may flush before their
    /// connections are closed.
    #[arg(long, value_name = "TIME")]
    pub grace: Option<Time>,
    /// Worker threads serving all listeners (default: one per core).
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Serve Prometheus metrics (`GET /metrics`) and `GET /healthz` on this
    /// address.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Keep every listener's backplane and key-value store in this Redis,
    /// shared by all pier processes that name it.
    #[arg(long, value_name = "redis://HOST:PORT[/DB]")]
    pub redis: Option<String>,
    /// Most time one Redis request may take; the handler's call then gets
    /// an error.
    #[arg(long, value_name = "TIME")]
    pub redis_timeout: Option<Time>,
    /// Keep compiled plugins here, so a restart or reload of an unchanged
    /// one does not compile it again ("": no cache) [default:
    /// $XDG_CACHE_HOME/pier, or ~/.cache/pier].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every plugin at start-up; read and write no compile cache.
    #[arg(long, conflicts_with = "cache_dir")]
    #[serde(skip)]
    pub no_cache: bool,
    /// The `[[listener]]` tables.
    #[arg(skip)]
    #[serde(default)]
    pub listener: Vec<ListenerSettings>,
}

impl Settings {
    /// The server these settings describe; relative paths are relative to
    /// `base`. Not yet validated: flags may still be laid over it.
    pub fn resolve(&self, base: &Path) -> anyhow::Result<ServerConfig> {
        let listeners = self.listener.iter().map(|l| l.resolve(base)).collect::<anyhow::Result<_>>()?;
        let mut config = ServerConfig::new(listeners);
        self.apply(&mut config);
        if let Some(dir) = config.cache_dir.as_mut().filter(|_| self.cache_dir.is_some()) {
            *dir = base.join(&*dir);
        }
        Ok(config)
    }

    /// Sets what these settings give on the server, leaving the rest.
    pub fn apply(&self, config: &mut ServerConfig) {
        if let Some(dir) = &self.cache_dir {
            config.cache_dir = (!dir.as_os_str().is_empty()).then(|| dir.clone());
        }
        if self.no_cache {
            config.cache_dir = None;
        }
        if let Some(grace) = self.grace {
            config.grace = grace.0;
        }
        if self.workers.is_some() {
            config.workers = self.workers;
        }
        if self.metrics.is_some() {
            config.metrics = self.metrics;
        }
        if self.redis.is_some() {
            config.redis = self.redis.clone();
        }
        if let Some(t) = self.redis_timeout {
            config.redis_timeout = t.0;
        }
    }
}

impl ListenerSettings {
    /// A listener from its settings: `name` and `plugin` are required; the
    /// rest default as [`ListenerConfig::new`] says.
    pub fn resolve(&self, base: &Path) -> anyhow::Result<ListenerConfig> {
        let Some(name) = self.name.clone() else {
            anyhow::bail!("a listener has no name: give each listener name = \"...\"");
        };
        let Some(plugin) = &self.plugin else {
            anyhow::bail!("listener `{name}` has no plugin: give plugin = \"handler.wasm\"");
        };
        let listen = ListenAddr::from_parts(self.listen.as_deref(), self.port_range.as_deref())
            .with_context(|| format!("listener `{name}`"))?;
        let mut config = ListenerConfig::new(name, listen, base.join(plugin));
        self.apply(&mut config, base);
        Ok(config)
    }

    /// Sets every setting given here on `config`, leaving the rest; the
    /// listener's identity (name, address, plugin) is [`resolve`]'s.
    ///
    /// [`resolve`]: Self::resolve
    pub fn apply(&self, config: &mut ListenerConfig, base: &Path) {
        let c = config;
        set(&mut c.backlog, self.backlog);
        set(&mut c.nodelay, self.nodelay);
        set(&mut c.keepalive, self.keepalive.map(|k| k.0));
        set(&mut c.reuse_port, self.reuse_port);
        set(&mut c.proxy_protocol, self.proxy_protocol);
        set(&mut c.max_connections, self.max_connections);
        set(&mut c.memory_limit, self.memory_limit.map(|s| s.0));
        set(&mut c.cpu_limit, self.cpu_limit.map(|t| t.0));
        set(&mut c.idle_timeout, self.idle_timeout.map(|t| t.0));
        set(&mut c.outbox_high_water, self.outbox_high_water.map(|s| to_usize(s.0)));
        set(&mut c.outbox_low_water, self.outbox_low_water.map(|s| to_usize(s.0)));
        set(&mut c.cpu_budget, self.cpu_budget.map(|t| t.0));
        set(&mut c.kv_max_bytes, self.kv_max_bytes.map(|s| s.0));
        set(&mut c.kv_max_keys, self.kv_max_keys);
        set(&mut c.backplane_max_bytes, self.backplane_max_bytes.map(|s| to_usize(s.0)));
        set(&mut c.queue_max_bytes, self.queue_max_bytes.map(|s| to_usize(s.0)));
        set(&mut c.log_rate, self.log_rate);
        set(&mut c.max_timers, self.max_timers);
        set(&mut c.allow_connect, self.allow_connect.clone());
        set(&mut c.max_upstreams, self.max_upstreams);
        set(&mut c.allow_dns, self.allow_dns);
        set(&mut c.connect_timeout, self.connect_timeout.map(|t| t.0));
        set(&mut c.allow_dirs, self.allow_dirs.as_ref().map(|dirs| dirs.iter().map(|d| base.join(d)).collect()));
        set(&mut c.env, self.env.clone());
        set(&mut c.settings, self.config.clone());
        if self.backplane.is_some() {
            c.backplane = self.backplane.clone();
        }
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| base.join(p));
        if self.tls_cert.is_some() {
            c.tls_cert = path(&self.tls_cert);
        }
        if self.tls_key.is_some() {
            c.tls_key = path(&self.tls_key);
        }
        if self.tls_client_ca.is_some() {
            c.tls_client_ca = path(&self.tls_client_ca);
        }
        set(&mut c.tls_alpn, self.tls_alpn.clone());
        set(&mut c.tls_handshake_timeout, self.tls_handshake_timeout.map(|t| t.0));
        set(&mut c.starttls, self.starttls);
        set(&mut c.shared_state, self.shared_state);
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Every setting's default as pier.toml writes it, by key: for `--help`.
pub fn defaults() -> BTreeMap<String, String> {
    let listen = ListenAddr::parse_addr("127.0.0.1:0").expect("a valid address");
    let listener = ListenerConfig::new("main", listen, "");
    let server = ServerConfig::new(Vec::new());
    let mut table = toml::Table::try_from(&listener).expect("a listener serializes");
    table.insert("grace".into(), super::units::format_duration(server.grace).into());
    table
        .into_iter()
        .filter(|(key, _)| key != "listen" && key != "plugin")
        .filter_map(|(key, value)| match value {
            toml::Value::String(s) => Some((key, s)),
            toml::Value::Integer(_) | toml::Value::Boolean(_) => Some((key, value.to_string())),
            _ => None,
        })
        .collect()
}

/// TCP keepalive: `off`, or the idle time before the first probe. pier.toml
/// also takes `true` (probe after 60 s) and `false`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keepalive(pub Option<Duration>);

const KEEPALIVE_ON: Duration = Duration::from_secs(60);

impl FromStr for Keepalive {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" | "false" => Ok(Keepalive(None)),
            "on" | "true" => Ok(Keepalive(Some(KEEPALIVE_ON))),
            t => parse_duration(t).map(|d| Keepalive(Some(d))),
        }
    }
}

impl<'de> Deserialize<'de> for Keepalive {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Flag(on) => Ok(Keepalive(on.then_some(KEEPALIVE_ON))),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_settings_override_earlier_ones_and_leave_the_rest() {
        let file: ListenerSettings = toml::from_str(
            "name = \"a\"\nlisten = \"127.0.0.1:0\"\nplugin = \"a.wasm\"\ncpu-limit = \"2s\"\nbacklog = 7\n",
        )
        .unwrap();
        let flags = ListenerSettings { cpu_limit: Some(Time(Duration::from_millis(10))), ..Default::default() };
        let mut l = file.resolve(Path::new("/etc/pier")).unwrap();
        assert_eq!(l.cpu_limit, Duration::from_secs(2));
        flags.apply(&mut l, Path::new("."));
        assert_eq!(l.cpu_limit, Duration::from_millis(10), "the flag wins");
        assert_eq!(l.backlog, 7, "what the flag does not give stays");
        assert_eq!(l.plugin, Path::new("/etc/pier/a.wasm"));
    }

    #[test]
    fn defaults_are_written_as_in_the_file() {
        let d = defaults();
        assert_eq!(d["memory-limit"], "64MiB");
        assert_eq!(d["cpu-limit"], "1s");
        assert_eq!(d["keepalive"], "off");
        assert_eq!(d["max-connections"], "10000");
        assert_eq!(d["grace"], "5s");
        assert!(!d.contains_key("plugin"));
    }

    #[test]
    fn proxy_protocol_is_off_unless_given() {
        assert_eq!(defaults()["proxy-protocol"], "false");
        let s: ListenerSettings = toml::from_str("proxy-protocol = true").unwrap();
        let mut l = ListenerConfig::new("a", ListenAddr::parse_addr("127.0.0.1:0").unwrap(), "a.wasm");
        s.apply(&mut l, Path::new("."));
        assert!(l.proxy_protocol);
    }

    #[test]
    fn keepalive_takes_a_time_or_a_switch() {
        assert_eq!("off".parse(), Ok(Keepalive(None)));
        assert_eq!("30s".parse(), Ok(Keepalive(Some(Duration::from_secs(30)))));
        let s: ListenerSettings = toml::from_str("keepalive = true").unwrap();
        assert_eq!(s.keepalive, Some(Keepalive(Some(KEEPALIVE_ON))));
    }
}
