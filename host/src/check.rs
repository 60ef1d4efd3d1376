//! `pier check`: everything `serve` does before it binds, then a report.

use crate::config::units::{format_duration, format_size, format_size_rounded};
use crate::config::{ListenAddr, ListenerConfig, ServerConfig};
use crate::footprint::{self, Shape};
use crate::sandbox::plugin::{self, Pre};
use std::fmt::Write as _;
use std::path::Path;

/// Validates a plugin as `pier serve --plugin` would load it (the serving
/// engine, default limits, one instantiation) without binding anything, and
/// describes its world, imports and exports.
pub async fn check(path: &Path) -> anyhow::Result<String> {
    let listen = ListenAddr::parse_addr("127.0.0.1:0")?;
    let tenants = crate::server::load(&ServerConfig::new(vec![ListenerConfig::new("main", listen, path)])).await?;
    let pre = &tenants[0].pre;
    Ok(plugin::describe(pre.engine(), pre.component()))
}

/// Validates every listener of a configuration as `pier serve --config`
/// would load it (limits, addresses, plugins, their worlds, one
/// instantiation each within its limits) without binding, and returns a
/// table of the listeners with the most host memory each can make pier hold
/// ([`footprint`]), warning when their sum exceeds the machine's memory.
pub async fn check_config(config: &ServerConfig) -> anyhow::Result<String> {
    let tenants = crate::server::load(config).await?;
    let mut out = format!(
        "{:<12} {:<22} {:<8} {:<10} {:>9} {:>9} {:>8} {:>8} {:>10}  {}\n",
        "LISTENER", "LISTEN", "TLS", "WORLD", "MAX-CONNS", "MEMORY", "CPU", "IDLE", "WORST-CASE", "PLUGIN"
    );
    let mut total = 0u64;
    for (l, tenant) in config.listeners.iter().zip(&tenants) {
        let (world, shape) = match tenant.pre {
            Pre::Handler(_) => ("connection", Shape::InstancePerConnection),
            Pre::Server(_) => ("server", Shape::InstancePerListener),
            Pre::Command(_) => ("command", Shape::InstancePerConnection),
        };
        let worst = footprint::worst_case(l, shape);
        total = total.saturating_add(worst);
        let _ = writeln!(
            out,
            "{:<12} {:<22} {:<8} {:<10} {:>9} {:>9} {:>8} {:>8} {:>10}  {}",
            l.name,
            l.listen.to_string(),
            match (l.has_tls(), l.starttls) {
                (false, _) => "-",
                (true, false) => "tls",
                (true, true) => "starttls",
            },
            world,
            l.max_connections,
            format_size(l.memory_limit),
            format_duration(l.cpu_limit),
            format_duration(l.idle_timeout),
            format_size_rounded(worst),
            l.plugin.display()
        );
    }
    let _ = writeln!(out, "worst-case host memory, all listeners: {}", format_size_rounded(total));
    if let Some(url) = &config.redis {
        let shared: Vec<&str> = config
            .listeners
            .iter()
            .filter(|l| l.shared_state == crate::config::SharedState::Shared)
            .map(|l| l.name.as_str())
            .collect();
        let url = crate::services::redis::shown(url);
        let _ = writeln!(out, "redis {url}: reachable; state shared there by: {}", shared.join(", "));
    }
    if let Some(machine) = footprint::machine_memory().filter(|&m| total > m) {
        let _ = writeln!(
            out,
            "warning: that is more than this machine's {} of memory: lower max-connections or memory-limit \
             (the largest terms) where a tenant must not be able to reach it",
            format_size_rounded(machine)
        );
    }
    Ok(out)
}
