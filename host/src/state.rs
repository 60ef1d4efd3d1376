//! What a handler instance's `Store` holds: its WASI context (nothing
//! granted), its memory limiter, and its CSA's outbox, which the guest's
//! `outbox` imports write to.

use crate::bindings::{self, SendError as WitSendError};
use crate::guest_log::{GuestLog, Stdio};
use crate::outbox::{CsaShared, SendError};
use std::sync::Arc;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Most entries a guest may keep in its WASI resource table.
const MAX_RESOURCES: usize = 1024;

pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) csa: Arc<CsaShared>,
}

impl HostState {
    pub(crate) fn new(listener: &Arc<str>, conn: u64, memory_limit: u64, csa: Arc<CsaShared>) -> Self {
        let log = |stdio| GuestLog { listener: listener.clone(), conn, stdio };
        // WASI 0.2 with nothing granted: no preopened directories, no
        // environment, no arguments, no network; stdin is empty.
        let wasi = WasiCtx::builder()
            .stdout(log(Stdio::Stdout))
            .stderr(log(Stdio::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Self { wasi, table, limiter: MemoryLimiter { limit: memory_limit as usize }, csa }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::pier::server::types::Host for HostState {}

impl bindings::pier::server::outbox::Host for HostState {
    fn send(&mut self, data: Vec<u8>) -> Result<(), WitSendError> {
        self.csa.outbox().send(data).map_err(|e| match e {
            SendError::WouldBlock => WitSendError::WouldBlock,
            SendError::Closed => WitSendError::Closed,
        })
    }

    fn finish(&mut self) {
        self.csa.outbox().finish();
    }

    fn close(&mut self) {
        self.csa.outbox().close();
    }

    fn pause_reading(&mut self) {
        self.csa.outbox().reading_paused = true;
    }

    fn resume_reading(&mut self) {
        self.csa.outbox().reading_paused = false;
    }
}

/// Caps an instance's linear memory. Growing past the cap traps with a
/// message that names the limit, so the connection's end says why.
pub(crate) struct MemoryLimiter {
    limit: usize,
}

/// The text a memory-limit trap carries; used to classify the trap.
pub(crate) const MEMORY_LIMIT_TRAP: &str = "memory limit reached";

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            wasmtime::bail!(
                "{MEMORY_LIMIT_TRAP}: the handler asked for {desired} bytes, the listener allows {}",
                self.limit
            );
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 20_000)
    }
}
