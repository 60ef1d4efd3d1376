//! `pier check`: everything `serve` does before it binds, then a report.

use crate::config::units::{format_duration, format_size};
use crate::config::{ListenAddr, ListenerConfig, ServerConfig};
use crate::sandbox::plugin;
use std::fmt::Write as _;
use std::path::Path;

/// Validates a plugin as `pier serve --plugin` would load it (the serving
/// engine, default limits, one instantiation) without binding anything, and
/// describes its world, imports and exports.
pub async fn check(path: &Path) -> anyhow::Result<String> {
    let listen = ListenAddr::parse_addr("127.0.0.1:0")?;
    let tenants = crate::server::load(&ServerConfig::new(vec![ListenerConfig::new("main", listen, path)])).await?;
    let pre = &tenants[0].pre;
    Ok(plugin::describe(pre.engine(), pre.instance_pre().component()))
}

/// Validates every listener of a configuration as `pier serve --config`
/// would load it (limits, addresses, plugins, their worlds, one
/// instantiation each within its limits) without binding, and returns a
/// table of the listeners.
pub async fn check_config(config: &ServerConfig) -> anyhow::Result<String> {
    crate::server::load(config).await?;
    let mut out = format!(
        "{:<12} {:<22} {:>9} {:>9} {:>8} {:>8}  {}\n",
        "LISTENER", "LISTEN", "MAX-CONNS", "MEMORY", "CPU", "IDLE", "PLUGIN"
    );
    for l in &config.listeners {
        let _ = writeln!(
            out,
            "{:<12} {:<22} {:>9} {:>9} {:>8} {:>8}  {}",
            l.name,
            l.listen.to_string(),
            l.max_connections,
            format_size(l.memory_limit),
            format_duration(l.cpu_limit),
            format_duration(l.idle_timeout),
            l.plugin.display()
        );
    }
    Ok(out)
}
