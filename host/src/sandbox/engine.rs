//! The one wasmtime `Engine` of a pier process: pooling allocator, copy-on-write
//! memory images, epoch interruption with a single ticker thread. The pool is
//! sized from the listeners and from what each one's component needs
//! ([`Needs`]): a small Rust handler pays for a small slot, a CPython one for
//! its own.

use super::limits::MAX_TABLE_ELEMENTS;
use crate::config::ListenerConfig;
use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. Each tick, a running guest yields to tokio,
/// so a busy handler never holds a worker thread for longer than this.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The stack each instance's calls run on (a fiber): its guest's wasm stack
/// (`max_wasm_stack`) and the host frames beneath it.
pub const ASYNC_STACK: usize = 1 << 20;

/// What one instance of a component takes from the pool, read from the
/// component itself ([`super::plugin::needs`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// Core module instances (a Rust wasip2 handler: a few; CPython: 14).
    pub core_instances: u32,
    /// Linear memories its modules define.
    pub memories: u32,
    /// Tables its modules define.
    pub tables: u32,
    /// The most memories, and tables, one of its modules defines.
    pub memories_per_module: u32,
    pub tables_per_module: u32,
    /// Its largest table's initial size, in elements.
    pub table_elements: u64,
    /// Its largest memory's initial size, in bytes: about the size of its
    /// memory image (a Rust handler: about 1 MiB; CPython: 12 MiB).
    pub initial_memory: u64,
    /// A `server-handler`: one instance serves every connection of its
    /// listener, so the pool holds [`SERVER_INSTANCES`] of it, not one per
    /// connection.
    pub one_per_listener: bool,
}

/// Slots a `server-handler` listener takes from the pool: its instance, and
/// one to spare (the start-up probe's, or a failed instance's successor).
pub const SERVER_INSTANCES: u32 = 2;

/// A component whose initial memory is larger than this (CPython's) gets
/// [`LARGE_KEEP_RESIDENT`] of each pool slot's memory kept resident.
const LARGE_IMAGE: u64 = 4 << 20;
/// What a slot keeps resident between instances, by default...
const KEEP_RESIDENT: usize = 64 << 10;
/// ...and when a listener's component has a large memory image: the pages
/// an instance wrote are copied back from the image when it ends, not
/// unmapped, so the next instance in that slot writes them without a page
/// fault (each a copy-on-write fault and, with several threads, a TLB
/// shootdown). Only pages an instance wrote are kept: up to this much per
/// slot, in slots used recently.
const LARGE_KEEP_RESIDENT: usize = 4 << 20;

/// Pool sizing, derived from the listeners it must serve and their
/// components' [`Needs`].
#[derive(Clone, Copy, Debug)]
pub struct PoolSize {
    /// Live instances at once: the sum of the listeners' max-connections.
    pub instances: u32,
    /// Sums over listeners of max-connections × the component's needs.
    pub core_instances: u32,
    pub memories: u32,
    pub tables: u32,
    /// Per-slot maxima, over the components.
    pub memories_per_module: u32,
    pub tables_per_module: u32,
    /// Largest linear memory any listener allows, in bytes.
    pub max_memory: u64,
    /// Bytes of each memory slot kept resident between instances.
    pub keep_resident: usize,
}

impl PoolSize {
    /// Room for every listener's max-connections instances of its component,
    /// each at its listener's memory limit.
    pub fn for_listeners<'a>(listeners: impl IntoIterator<Item = (&'a ListenerConfig, Needs)>) -> Self {
        let mut pool = PoolSize {
            instances: 0,
            core_instances: 0,
            memories: 0,
            tables: 0,
            memories_per_module: 1,
            tables_per_module: 1,
            max_memory: 0,
            keep_resident: KEEP_RESIDENT,
        };
        for (l, needs) in listeners {
            let n = if needs.one_per_listener { SERVER_INSTANCES } else { l.max_connections };
            pool.instances = pool.instances.saturating_add(n);
            pool.core_instances = pool.core_instances.saturating_add(n.saturating_mul(needs.core_instances));
            pool.memories = pool.memories.saturating_add(n.saturating_mul(needs.memories));
            pool.tables = pool.tables.saturating_add(n.saturating_mul(needs.tables));
            pool.memories_per_module = pool.memories_per_module.max(needs.memories_per_module);
            pool.tables_per_module = pool.tables_per_module.max(needs.tables_per_module);
            pool.max_memory = pool.max_memory.max(l.memory_limit);
            if needs.initial_memory > LARGE_IMAGE {
                pool.keep_resident = LARGE_KEEP_RESIDENT;
            }
        }
        pool
    }
}

/// The settings every engine of pier shares, whatever allocates its
/// instances: what compiled code depends on (so that code compiled by one
/// engine loads into another built from the same `max_memory`).
fn config(max_memory: u64) -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        // Reserve only what the limit allows, not 4 GiB per slot: 10,000
        // slots must fit in the address space. Bounds checks become explicit,
        // which handlers (I/O bound) do not notice.
        .memory_reservation(max_memory)
        .memory_guard_size(64 << 10)
        .memory_reservation_for_growth(0)
        .max_wasm_stack(512 << 10)
        .async_stack_size(ASYNC_STACK);
    config
}

/// What each memory slot reserves: the largest memory limit, rounded up to
/// a power of two, at least 64 MiB. Compiled code depends on it, so that
/// changing a limit (within a power of two) keeps the compile cache valid.
/// Only address space: pages are committed as an instance touches them, and
/// the listener's memory limit is enforced on growth.
fn reservation(max_memory: u64) -> u64 {
    max_memory.max(64 << 20).next_power_of_two()
}

/// An engine that only compiles (instances are never made with it): code it
/// compiles loads into the serving engine [`build`] makes for a pool of the
/// same `max_memory`. It exists because the pool is sized from compiled
/// components, and an engine's pool is fixed when it is made.
pub(crate) fn compiler(max_memory: u64) -> anyhow::Result<Engine> {
    Ok(Engine::new(&config(reservation(max_memory)))?)
}

/// Builds the engine. Every knob is sized from `pool` so that a full pool
/// can only mean "max-connections reached", which the accept loop waits on.
pub fn build(pool: PoolSize) -> anyhow::Result<Engine> {
    let n = pool.instances.max(1);
    let max_memory = reservation(pool.max_memory);
    let mut alloc = PoolingAllocationConfig::default();
    alloc
        .total_component_instances(n)
        .total_core_instances(pool.core_instances.max(1))
        .total_memories(pool.memories.max(1))
        .total_tables(pool.tables.max(1))
        .total_stacks(n)
        .max_memories_per_module(pool.memories_per_module)
        .max_tables_per_module(pool.tables_per_module)
        // Every table slot holds the most a table may have; a plugin that
        // declares more is refused when it is loaded.
        .table_elements(MAX_TABLE_ELEMENTS)
        // An instance's own state (its vmctx) is allocated when it is made,
        // not reserved per slot: these are checks, and a component with
        // thousands of functions (CPython) needs more than the defaults.
        .max_core_instance_size(16 << 20)
        .max_component_instance_size(64 << 20)
        .max_memory_size(usize::try_from(max_memory)?)
        // Reset slots by scanning which pages were touched (Linux >= 6.7)
        // and keep some resident (see LARGE_KEEP_RESIDENT): far fewer
        // madvise calls and page faults per connection than the defaults.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(pool.keep_resident)
        .table_keep_resident(64 << 10);

    let mut config = config(max_memory);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(alloc));
    // For profiling handlers: perf reads /tmp/perf-PID.map and names the
    // guests' functions instead of showing bare addresses.
    if std::env::var_os("PIER_PERF_MAP").is_some_and(|v| v == "1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config)?;
    start_epoch_ticker(&engine)?;
    Ok(engine)
}

/// One thread for the whole engine; it ends when the engine is dropped.
fn start_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("pier-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
}
