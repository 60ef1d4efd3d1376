//! The one wasmtime `Engine` of a pier process: pooling allocator, copy-on-write
//! memory images, epoch interruption with a single ticker thread.

use std::time::Duration;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. Each tick, a running guest yields to tokio,
/// so a busy handler never holds a worker thread for longer than this.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The stack each instance's calls run on (a fiber): its guest's wasm stack
/// (`max_wasm_stack`) and the host frames beneath it.
pub const ASYNC_STACK: usize = 1 << 20;

/// Pool sizing, derived from the listeners it must serve.
#[derive(Clone, Copy, Debug)]
pub struct PoolSize {
    /// Live instances at once: the sum of the listeners' max-connections.
    pub instances: u32,
    /// Largest linear memory any listener allows, in bytes.
    pub max_memory: u64,
}

impl PoolSize {
    /// Room for every listener's max-connections at its memory limit.
    pub fn for_config(config: &crate::ServerConfig) -> Self {
        Self {
            instances: config.listeners.iter().map(|l| l.max_connections).fold(0u32, u32::saturating_add),
            max_memory: config.listeners.iter().map(|l| l.memory_limit).max().unwrap_or(0),
        }
    }
}

/// Builds the engine. Every knob is sized from `pool` so that a full pool
/// can only mean "max-connections reached", which the accept loop waits on.
pub fn build(pool: PoolSize) -> anyhow::Result<Engine> {
    let n = pool.instances.max(1);
    let max_memory = pool.max_memory.next_multiple_of(64 << 10);
    let mut alloc = PoolingAllocationConfig::default();
    alloc
        .total_component_instances(n)
        // A Rust wasip2 component is its main module plus wit-component's
        // shim and fixup modules; leave room for a few more.
        .total_core_instances(n.saturating_mul(4))
        .total_memories(n)
        .total_tables(n.saturating_mul(2))
        .total_stacks(n)
        .max_memory_size(usize::try_from(max_memory)?)
        // Reset slots by scanning which pages were touched (Linux >= 6.7)
        // and keep a little resident: far fewer madvise calls and page
        // faults per connection than the defaults.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(64 << 10)
        .table_keep_resident(64 << 10);

    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(alloc))
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
