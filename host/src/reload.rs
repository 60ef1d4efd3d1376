//! Reload: a new configuration applied to a running server without dropping
//! a connection. Everything that can fail happens first, off the accept
//! path ([`prepare`]: validating, compiling the changed handlers with an
//! engine of their own, instantiating each once, binding new addresses);
//! only then is the plan carried out ([`Plan::apply`]), which cannot fail.
//! A reload that fails leaves the server as it was.
//!
//! Per listener, by name: unchanged (settings and plugin file) it is left
//! alone; changed, new connections get the new handler and settings while
//! live ones keep theirs (a tenant is shared by `Arc`, so the old one lives
//! as long as its last connection), and its key-value store, backplane and
//! counters carry over; with a new `listen` address it is bound there and
//! its old socket closes; new listeners are bound; removed ones stop
//! accepting and their connections get `shutdown-csa(server-shutdown)`,
//! then are closed once the grace period is over.

use crate::config::ServerConfig;
use crate::listener::{self, Slot};
use crate::outbox::doorbell::{ABORT, SHUTDOWN};
use crate::tenant::Tenant;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::info;

/// What a reload will do, every fallible step done.
pub(crate) struct Plan {
    /// Listeners left as they were.
    pub(crate) kept: Vec<Arc<Slot>>,
    /// A listener and the tenant its new connections get from now on.
    swapped: Vec<(Arc<Slot>, Arc<Tenant>)>,
    /// Sockets bound for new listeners (and moved ones), with their tenant.
    pub(crate) bound: Vec<(TcpListener, Arc<Tenant>, SocketAddr)>,
    /// Listeners removed: they stop accepting and drain.
    retired: Vec<Arc<Slot>>,
    /// Listeners bound anew elsewhere: their old socket stops accepting;
    /// their connections go on.
    moved: Vec<Arc<Slot>>,
}

/// Works out and readies what `config` changes against the `running`
/// listeners, without touching them.
pub(crate) async fn prepare(config: &ServerConfig, running: &[Arc<Slot>]) -> anyhow::Result<Plan> {
    config.validate()?;
    if let Some(url) = running.iter().find_map(|s| s.current().redis.as_ref().map(|r| r.url().to_string()))
        && config.redis.as_deref() != Some(url.as_str())
    {
        anyhow::bail!("`redis` cannot change in a reload (it is {url}): restart pier, or upgrade it in place");
    }
    let mut plan =
        Plan { kept: Vec::new(), swapped: Vec::new(), bound: Vec::new(), retired: Vec::new(), moved: Vec::new() };
    let mut load = Vec::new();
    for l in &config.listeners {
        match running.iter().find(|s| *s.current().name == l.name) {
            Some(slot) if slot.current().is_loaded_from(l) => plan.kept.push(slot.clone()),
            _ => load.push(l.clone()),
        }
    }
    for slot in running {
        if !config.listeners.iter().any(|l| *l.name == *slot.current().name) {
            plan.retired.push(slot.clone());
        }
    }
    if load.is_empty() {
        return Ok(plan);
    }
    // The changed handlers get an engine (and pool) of their own; the old
    // engine lives on with the connections that still use it.
    let changed = ServerConfig { listeners: load, ..config.clone() };
    // Plugin files that did not change load from the compile cache.
    let kept: Vec<Arc<Tenant>> = running.iter().map(|s| s.current()).collect();
    let loaded = Tenant::load_keeping(&changed, &kept)?;
    if let Some(redis) = loaded.iter().find_map(|t| t.redis.clone()) {
        redis.ping().await?;
    }
    for tenant in loaded {
        tenant.probe().await?;
        let old = running.iter().find(|s| *s.current().name == *tenant.name);
        match old {
            Some(slot) if slot.current().config.listen == tenant.config.listen => {
                plan.swapped.push((slot.clone(), tenant));
            }
            _ => {
                let socket = listener::bind(&tenant.config)?;
                let addr = listener::local_addr(&socket, &tenant.name)?;
                if let Some(slot) = old {
                    plan.moved.push(slot.clone());
                }
                plan.bound.push((socket, tenant, addr));
            }
        }
    }
    Ok(plan)
}

impl Plan {
    /// Carries the plan out on the running listeners: swaps tenants, stops
    /// the retired listeners and tells their connections to finish within
    /// `grace`. The caller starts the accept loops of `bound`.
    pub(crate) fn apply(&self, grace: Duration) -> String {
        for (slot, tenant) in &self.swapped {
            tenant.store.set_limits(tenant.config.kv_max_bytes, tenant.config.kv_max_keys);
            slot.swap(tenant.clone());
            info!(listener = &*tenant.name, "reloaded: new connections get the new handler and settings");
        }
        for slot in &self.retired {
            slot.retire();
            let tenant = slot.current();
            info!(listener = &*tenant.name, addr = %slot.addr, "removed by the reload: draining its connections");
            tenant.stats.ring_all(SHUTDOWN);
            let stats = tenant.stats.clone();
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                stats.ring_all(ABORT);
            });
        }
        for slot in &self.moved {
            slot.retire();
        }
        for (_, tenant, addr) in &self.bound {
            info!(listener = &*tenant.name, %addr, plugin = %tenant.config.plugin.display(), "listening");
        }
        format!(
            "{} kept, {} reloaded, {} bound, {} removed",
            self.kept.len(),
            self.swapped.len(),
            self.bound.len(),
            self.retired.len()
        )
    }

    /// The listeners that go on serving, in the order of the new config
    /// (the ones `bound` are added by the caller).
    pub(crate) fn serving(&self) -> Vec<Arc<Slot>> {
        let mut slots: Vec<Arc<Slot>> = self.kept.clone();
        slots.extend(self.swapped.iter().map(|(slot, _)| slot.clone()));
        slots
    }
}
