//! A tenant: what every connection of one listener shares (its settings, its
//! pre-linked handler, its backplane and key-value store), and how each
//! connection's store is made from it.

use crate::config::units::format_size;
use crate::config::{ListenerConfig, ServerConfig, SharedState};
use crate::outbox::Link;
use crate::sandbox::plugin::{self, Pre};
use crate::sandbox::state::{CommandIo, Peer, Services};
use crate::sandbox::{self, HostState};
use crate::services::backplane::{self, Backplane, Subscriber};
use crate::services::redis::Redis;
use crate::services::{config, keyvalue, limits, timers, upstream};
use crate::stats::ListenerStats;
use crate::tls::{self, Tls};
use anyhow::Context;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::net::TcpStream;
use wasmtime::Store;

pub(crate) struct Tenant {
    pub(crate) name: Arc<str>,
    pub(crate) config: ListenerConfig,
    pub(crate) pre: Pre,
    /// The listener's `config` table, shared by its handlers' `config.get`.
    settings: Arc<BTreeMap<String, String>>,
    backplane: Arc<Backplane>,
    /// What this listener's connections' backplane mailboxes may hold.
    pub(crate) mail_budget: Arc<backplane::Budget>,
    pub(crate) store: Arc<keyvalue::Store>,
    /// What its connections did, for the metrics.
    pub(crate) stats: Arc<ListenerStats>,
    /// The plugin file's contents, and its TLS files', hashed: a reload
    /// reloads a listener whose files changed even if its settings did not
    /// (a renewed certificate, say).
    pub(crate) fingerprint: u64,
    /// Its TLS server configuration (certificate, key, ALPN, client CAs),
    /// if it has `tls-cert`.
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    /// Where its connections may connect out to, and how much.
    upstream: upstream::Policy,
    /// The Redis its backplane and store live in, if they are shared.
    pub(crate) redis: Option<Arc<Redis>>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Tenant {
    /// Compiles (or finds in the compile cache) and links every listener's
    /// plugin, in an engine whose pool is sized for them all, and gives each
    /// its backplane (shared by name) and key-value store.
    pub(crate) fn load_all(config: &ServerConfig) -> anyhow::Result<Vec<Arc<Tenant>>> {
        Self::load_keeping(config, &[])
    }

    /// Loads `config`'s listeners as [`load_all`](Self::load_all) does,
    /// except that one named like a tenant of `kept` keeps that tenant's
    /// key-value store and counters, a backplane name one of them uses keeps
    /// its backplane, and their link to Redis is kept: a reload changes
    /// handlers and settings, not data.
    /// The listeners loaded get an engine (and pool) of their own.
    pub(crate) fn load_keeping(config: &ServerConfig, kept: &[Arc<Tenant>]) -> anyhow::Result<Vec<Arc<Tenant>>> {
        let loaded = sandbox::load(&config.listeners, config.cache_dir.as_deref())?;
        let connections = config.listeners.iter().fold(0u32, |n, l| n.saturating_add(l.max_connections));
        crate::os_limits::warn_if_too_low(connections, loaded.pool.instances);
        let linker = plugin::linker(&loaded.engine)?;
        // By name, and whether it is shared: a reload that changes a
        // listener's shared-state gives it a backplane of the other kind.
        let mut backplanes: HashMap<(String, bool), Arc<Backplane>> =
            kept.iter().map(|t| ((backplane_name(&t.config), t.redis.is_some()), t.backplane.clone())).collect();
        let redis = match &config.redis {
            Some(url) => Some(match kept.iter().find_map(|t| t.redis.clone().filter(|r| r.url() == url)) {
                Some(link) => link,
                None => Redis::new(url, config.redis_timeout)?,
            }),
            None => None,
        };
        let mut tenants = Vec::new();
        for (l, component) in config.listeners.iter().zip(&loaded.components) {
            let redis = redis.clone().filter(|_| l.shared_state == SharedState::Shared);
            let limits = || format!("listener `{}` (memory-limit {})", l.name, format_size(l.memory_limit));
            let tls = tls::certs::load(l)?;
            let fingerprint = fingerprint(l)?;
            let pre = plugin::prepare(&linker, component, &l.plugin).with_context(limits)?;
            if matches!(pre, Pre::Command(_)) && l.has_tls() {
                anyhow::bail!(
                    "listener `{}`: plugin `{}` is a wasi:cli command, served inetd-style, which pier does not \
                     run over TLS yet: remove tls-cert and tls-key, or serve a connection-handler",
                    l.name,
                    l.plugin.display()
                );
            }
            if matches!(pre, Pre::Server(_)) && l.has_tls() {
                anyhow::bail!(
                    "listener `{}`: plugin `{}` is a server-handler, which pier does not serve over TLS yet: \
                     remove tls-cert and tls-key, or serve a connection-handler",
                    l.name,
                    l.plugin.display()
                );
            }
            let name = backplane_name(l);
            let backplane = backplanes.entry((name.clone(), redis.is_some())).or_insert_with(|| match &redis {
                Some(redis) => Arc::new(Backplane::shared(redis.clone(), &name)),
                None => Arc::default(),
            });
            let old = kept.iter().find(|t| *t.name == l.name && t.redis.is_some() == redis.is_some());
            let budget = || keyvalue::Budget::new(l.kv_max_bytes, l.kv_max_keys);
            tenants.push(Arc::new(Tenant {
                name: Arc::from(l.name.as_str()),
                config: l.clone(),
                pre,
                settings: Arc::new(l.settings.clone()),
                backplane: backplane.clone(),
                mail_budget: Arc::new(backplane::Budget::new(l.backplane_max_bytes)),
                store: old.map_or_else(
                    || match &redis {
                        Some(redis) => Arc::new(keyvalue::Store::shared(budget(), redis.clone(), &l.name)),
                        None => Arc::new(keyvalue::Store::new(budget())),
                    },
                    |t| t.store.clone(),
                ),
                stats: old.map_or_else(Arc::default, |t| t.stats.clone()),
                fingerprint,
                tls,
                upstream: upstream::Policy {
                    allow: l.allow_connect.iter().filter_map(|a| a.parse().ok()).collect(),
                    max: l.max_upstreams,
                    dns: l.allow_dns,
                    connect_timeout: l.connect_timeout,
                    high_water: l.outbox_high_water,
                    low_water: l.outbox_low_water,
                },
                redis,
            }));
        }
        Ok(tenants)
    }

    /// A store for connection `conn`: its sandbox, its service clients, and
    /// its peer (`socket`, and the outbox `link` it shares with the task).
    pub(crate) fn store(
        &self,
        conn: u64,
        link: Arc<Link>,
        socket: Option<TcpStream>,
        tls: Tls,
        subscriber: Arc<Subscriber>,
        command: Option<CommandIo>,
    ) -> anyhow::Result<Store<HostState>> {
        let services = Services {
            config: config::Client(self.settings.clone()),
            backplane: backplane::Client::new(self.backplane.clone(), conn, subscriber),
            keyvalue: keyvalue::Client::new(self.store.clone()),
            limits: limits::Client(self.store.clone()),
            timers: timers::Client::new(self.config.max_timers),
            upstream: upstream::Client::new(self.upstream.clone()),
        };
        let state = HostState::new(&self.config, Peer { link, socket, tls }, services, command)?;
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // Yield to tokio at every epoch tick: a busy guest never holds a
        // worker thread, and the deadline around each call can fire.
        store.epoch_deadline_async_yield_and_update(1);
        store.set_epoch_deadline(1);
        Ok(store)
    }

    /// Whether `config`, and the files it names, are what this tenant was
    /// loaded from.
    pub(crate) fn is_loaded_from(&self, config: &ListenerConfig) -> bool {
        self.config == *config && fingerprint(config).is_ok_and(|f| f == self.fingerprint)
    }

    /// The TLS state a new connection starts in: on a `starttls` listener,
    /// offered; otherwise off (a TLS listener's handshake comes first).
    pub(crate) fn starting_tls(&self) -> Tls {
        match &self.tls {
            Some(config) if self.config.starttls => Tls::Offered(config.clone()),
            _ => Tls::Off,
        }
    }

    /// A connection's outbox, with this listener's water marks.
    pub(crate) fn link(&self) -> Arc<Link> {
        Link::new(self.config.outbox_high_water, self.config.outbox_low_water)
    }

    /// A connection's backplane mailbox, counted against this listener's
    /// budget.
    pub(crate) fn subscriber(&self) -> Arc<Subscriber> {
        Arc::new(Subscriber::new(self.mail_budget.clone()))
    }

    /// Instantiates the handler once, calling nothing, so that a handler
    /// this listener's limits cannot hold (its initial memory past
    /// `memory-limit`, say) is an error at start-up, not at every connection.
    pub(crate) async fn probe(&self) -> anyhow::Result<()> {
        let mut store = self.store(0, self.link(), None, Tls::Off, self.subscriber(), None)?;
        self.pre.instantiate(&mut store).await.map_err(anyhow::Error::from).with_context(|| {
            format!(
                "listener `{}` (memory-limit {}): plugin `{}` cannot be instantiated within this listener's limits",
                self.name,
                format_size(self.config.memory_limit),
                self.config.plugin.display(),
            )
        })
    }
}

/// The backplane a listener's connections share: its own, or a named one.
fn backplane_name(l: &ListenerConfig) -> String {
    l.backplane.clone().unwrap_or_else(|| l.name.clone())
}

/// The contents of the files a listener is loaded from (its plugin, its
/// TLS certificate, key and client CAs), hashed.
fn fingerprint(l: &ListenerConfig) -> anyhow::Result<u64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut hasher = DefaultHasher::new();
    for path in std::iter::once(l.plugin.as_path()).chain(tls::certs::files(l)) {
        let bytes = std::fs::read(path).with_context(|| format!("listener `{}`: `{}`", l.name, path.display()))?;
        bytes.hash(&mut hasher);
    }
    Ok(hasher.finish())
}
