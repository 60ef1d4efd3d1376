//! Measurement hooks for `make bench`: what one connection's sandbox costs,
//! without the network in the way.

use crate::config::{ListenAddr, ListenerConfig, ServerConfig};
use crate::csa;
use crate::tenant::Tenant;
use std::path::Path;
use std::time::{Duration, Instant};

/// Times `iterations` rounds of what each accepted connection costs before
/// its first byte: a `Store`, an instance of the pooled, pre-linked
/// component, the `new-csa` call, and dropping it all again. The pool and
/// engine are set up as `pier serve` sets them up.
pub fn instantiate_cost(plugin: &Path, iterations: usize) -> anyhow::Result<Vec<Duration>> {
    let mut listener = ListenerConfig::new("measure", ListenAddr::parse_addr("127.0.0.1:0")?, plugin);
    listener.max_connections = 64;
    let config = ServerConfig::new(vec![listener]);
    config.validate()?;
    let tenant = Tenant::load_all(&config)?.remove(0);
    // A runtime of its own, on a thread of its own, so that callers inside
    // an async runtime (a benchmark harness) can use it too.
    std::thread::scope(|scope| scope.spawn(|| measure(&tenant, plugin, iterations)).join())
        .map_err(|_| anyhow::anyhow!("the measuring thread panicked"))?
}

fn measure(tenant: &Tenant, plugin: &Path, iterations: usize) -> anyhow::Result<Vec<Duration>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut times = Vec::with_capacity(iterations);
        for id in 0..iterations as u64 {
            let start = Instant::now();
            csa::instantiate_and_greet(tenant, id)
                .await
                .map_err(|reason| anyhow::anyhow!("instantiating `{}`: {reason}", plugin.display()))?;
            times.push(start.elapsed());
        }
        Ok(times)
    })
}
