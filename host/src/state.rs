//! What a handler instance's `Store` holds: its WASI context (nothing
//! granted), its memory limiter, and its CSA's outbox, which the guest's
//! `outbox` imports write to.

use crate::backplane::Subscriptions;
use crate::bindings::wasi::keyvalue::store::{Error as KvError, KeyResponse};
use crate::bindings::{self, SendError as WitSendError};
use crate::guest_log::{GuestLog, Stdio};
use crate::keyvalue::{self, Bucket};
use crate::listener::ListenerRuntime;
use crate::outbox::{CsaShared, SendError};
use std::collections::BTreeMap;
use std::sync::Arc;
use wasmtime::ResourceLimiter;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

/// Most entries a guest may keep in its WASI resource table.
const MAX_RESOURCES: usize = 1024;

pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) csa: Arc<CsaShared>,
    settings: Arc<BTreeMap<String, String>>,
    subscriptions: Subscriptions,
    store: Arc<keyvalue::Store>,
    /// The connection's socket, for `send` to write to directly; set by the
    /// CSA once the connection is live (none in measurements).
    pub(crate) socket: Option<std::os::fd::RawFd>,
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
            subscriptions: Subscriptions::new(rt.backplane.clone(), conn),
            store: rt.store.clone(),
            socket: None,
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

impl bindings::pier::server::backplane::Host for HostState {
    fn publish(&mut self, topic: String, message: Vec<u8>) {
        self.subscriptions.publish(&topic, message);
    }

    fn subscribe(&mut self, topic: String) {
        self.subscriptions.subscribe(topic, &self.csa);
    }

    fn unsubscribe(&mut self, topic: String) {
        self.subscriptions.unsubscribe(&topic);
    }
}

impl HostState {
    fn bucket(&self, bucket: &Resource<Bucket>) -> Result<&Bucket, KvError> {
        self.table.get(bucket).map_err(|e| KvError::Other(e.to_string()))
    }
}

impl bindings::wasi::keyvalue::store::Host for HostState {
    fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, KvError> {
        let bucket = self.store.open(&identifier);
        self.table.push(bucket).map_err(|e| KvError::Other(e.to_string()))
    }
}

impl bindings::wasi::keyvalue::store::HostBucket for HostState {
    fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.bucket(&bucket)?.get(&key))
    }

    fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Result<(), KvError> {
        self.bucket(&bucket)?.set(key, value);
        Ok(())
    }

    fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), KvError> {
        self.bucket(&bucket)?.delete(&key);
        Ok(())
    }

    fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, KvError> {
        Ok(self.bucket(&bucket)?.exists(&key))
    }

    fn list_keys(&mut self, bucket: Resource<Bucket>, cursor: Option<u64>) -> Result<KeyResponse, KvError> {
        Ok(self.bucket(&bucket)?.list_keys(cursor))
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl bindings::wasi::keyvalue::atomics::Host for HostState {
    fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: u64) -> Result<u64, KvError> {
        self.bucket(&bucket)?.increment(key, delta)
    }
}

impl From<SendError> for WitSendError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::WouldBlock => WitSendError::WouldBlock,
            SendError::Closed => WitSendError::Closed,
        }
    }
}

/// `outbox.send` as a raw host function: it reads the bytes in place in the
/// guest's memory (`WasmList`) instead of the generated binding's copy into
/// a fresh `Vec`, and usually writes them to the socket from there.
pub(crate) fn add_direct_send(linker: &mut wasmtime::component::Linker<HostState>) -> anyhow::Result<()> {
    use wasmtime::component::WasmList;
    linker.allow_shadowing(true);
    linker.instance("pier:server/outbox@0.1.0")?.func_wrap(
        "send",
        |store: wasmtime::StoreContextMut<'_, HostState>, (data,): (WasmList<u8>,)| {
            let (csa, socket) = (store.data().csa.clone(), store.data().socket);
            let bytes = data.as_le_slice(&store);
            let result = csa.outbox().send_from(bytes, socket).map_err(WitSendError::from);
            Ok((result,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

impl bindings::pier::server::outbox::Host for HostState {
    /// Shadowed by [`add_direct_send`]; kept for the generated trait.
    fn send(&mut self, data: Vec<u8>) -> Result<(), WitSendError> {
        self.csa.outbox().send(data).map_err(WitSendError::from)
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
