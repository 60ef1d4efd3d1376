//! What a handler instance's `Store` holds: its WASI context (nothing
//! granted), its memory limiter, and its CSA's outbox, which the guest's
//! `outbox` imports write to.

use crate::bindings::{self, SendError as WitSendError};
use crate::guest_log::{GuestLog, Stdio};
use crate::listener::ListenerRuntime;
use crate::outbox::{CsaShared, SendError};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

/// Most entries a guest may keep in its WASI resource table.
const MAX_RESOURCES: usize = 1024;

pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) csa: Arc<CsaShared>,
    settings: Arc<BTreeMap<String, String>>,
}

impl HostState {
    pub(crate) fn new(rt: &ListenerRuntime, conn: u64, csa: Arc<CsaShared>) -> anyhow::Result<Self> {
        let log = |stdio| GuestLog { listener: rt.name.clone(), conn, stdio };
        // WASI 0.2 with nothing granted but what the listener lists: no
        // directories, environment, arguments or network; stdin is empty.
        let mut wasi = WasiCtx::builder();
        wasi.stdout(log(Stdio::Stdout))
            .stderr(log(Stdio::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        for (key, value) in &rt.config.env {
            wasi.env(key, value);
        }
        for dir in &rt.config.allow_dirs {
            let guest_path = dir.to_string_lossy();
            wasi.preopened_dir(dir, &guest_path, FsPerms::ReadOnly)?;
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Ok(Self {
            wasi: wasi.build(),
            table,
            limiter: MemoryLimiter { limit: rt.config.memory_limit as usize },
            csa,
            settings: rt.settings.clone(),
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::pier::server::types::Host for HostState {}

impl bindings::pier::server::config::Host for HostState {
    fn get(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).cloned()
    }
}

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
