//! The sandbox a handler runs in: the one wasmtime engine, loading and
//! linking components, what each instance's store holds, and its limits.
//!
//! - [`engine`]: the engine (pooling allocator sized from the components,
//!   epoch ticker).
//! - [`plugin`]: reading, checking, measuring and linking a handler component.
//! - [`cache`]: compiled code kept across starts and reloads.
//! - [`state`]: a store's contents and the host side of the outbox imports.
//! - [`conns`]: the host side of a `server-handler`'s `conn` handles.
//! - [`limits`]: memory and table limits, and the trap of the memory limit.
//! - [`guest_log`]: a guest's stdout and stderr as log lines.

pub(crate) mod cache;
pub(crate) mod conns;
pub(crate) mod engine;
pub(crate) mod guest_log;
pub(crate) mod limits;
pub(crate) mod plugin;
pub(crate) mod state;

pub(crate) use engine::ASYNC_STACK;
pub(crate) use guest_log::MAX_LINE as MAX_LOG_LINE;
pub use limits::MemoryLimitExceeded;
pub(crate) use state::{HostState, MAX_RESOURCES};

use crate::config::ListenerConfig;
use crate::config::units::format_size;
use anyhow::Context;
use std::path::Path;
use wasmtime::Engine;
use wasmtime::component::Component;

/// Every listener's component, compiled (or found in the compile cache
/// `cache_dir`), and the serving engine, its pool sized from them.
pub(crate) struct Loaded {
    pub(crate) engine: Engine,
    pub(crate) pool: engine::PoolSize,
    /// One per listener, in order; listeners of one plugin file share it.
    pub(crate) components: Vec<Component>,
}

/// Compiles each listener's plugin once (a file named by several listeners
/// once), sizes the pool from what their components need, builds the
/// engine and loads each component into it.
pub(crate) fn load(listeners: &[ListenerConfig], cache_dir: Option<&Path>) -> anyhow::Result<Loaded> {
    let max_memory = listeners.iter().map(|l| l.memory_limit).max().unwrap_or(0);
    let compiler = engine::compiler(max_memory)?;
    let context = |l: &ListenerConfig| format!("listener `{}` (memory-limit {})", l.name, format_size(l.memory_limit));
    let mut compiled: Vec<(&Path, cache::Compiled)> = Vec::new();
    let mut which = Vec::with_capacity(listeners.len());
    for l in listeners {
        let index = match compiled.iter().position(|(path, _)| *path == l.plugin.as_path()) {
            Some(i) => i,
            None => {
                let bytes = plugin::read(&l.plugin).with_context(|| context(l))?;
                let scanned = plugin::scan(&bytes, &l.plugin).with_context(|| context(l))?;
                fits(l, &scanned)?;
                let c = cache::compile(&compiler, cache_dir, &l.plugin, &bytes, scanned).with_context(|| context(l))?;
                compiled.push((&l.plugin, c));
                compiled.len() - 1
            }
        };
        fits(l, &compiled[index].1.needs)?;
        which.push(index);
    }
    drop(compiler);
    let pool = engine::PoolSize::for_listeners(listeners.iter().zip(&which).map(|(l, &i)| (l, compiled[i].1.needs)));
    for (path, c) in &compiled {
        tracing::debug!(plugin = %path.display(), needs = ?c.needs, "what one instance takes from the pool");
    }
    tracing::debug!(?pool, "pool");
    let engine = engine::build(pool)?;
    let mut loaded = Vec::with_capacity(compiled.len());
    for (path, c) in &compiled {
        let component = c.load(&engine).with_context(|| format!("plugin `{}` cannot be loaded", path.display()))?;
        loaded.push(component);
    }
    let components = which.iter().map(|&i| loaded[i].clone()).collect();
    Ok(Loaded { engine, pool, components })
}

/// Whether `l`'s limits can hold an instance of its component at all (its
/// memory as it starts, its tables), checked before compiling it (and the
/// tables again once wasmtime has counted them).
fn fits(l: &ListenerConfig, needs: &engine::Needs) -> anyhow::Result<()> {
    if needs.table_elements > limits::MAX_TABLE_ELEMENTS as u64 {
        anyhow::bail!(
            "listener `{}`: plugin `{}` declares a table of {} elements; pier allows at most {} (a CPython \
             handler needs about 6,000): rebuild the plugin with fewer functions",
            l.name,
            l.plugin.display(),
            needs.table_elements,
            limits::MAX_TABLE_ELEMENTS
        );
    }
    if needs.initial_memory > l.memory_limit {
        anyhow::bail!(
            "listener `{}` (memory-limit {}): memory limit reached before the first call: plugin `{}` starts \
             with {} of linear memory, which exceeds the limit; raise memory-limit to at least that \
             (a CPython handler: 64MiB)",
            l.name,
            format_size(l.memory_limit),
            l.plugin.display(),
            format_size(needs.initial_memory),
        );
    }
    Ok(())
}
