//! The host side of a `server-handler`'s `connections` import: each `conn`
//! handle its one instance holds stands for a [`Conn`], one connection's
//! outbox, shared with that connection's task (which owns the socket).

use crate::bindings::server::connections;
use crate::bindings::{ConnHandle, SendError as WitSendError};
use crate::events::ShutdownReason;
use crate::outbox::Link;
use crate::outbox::doorbell::RING;
use std::sync::{Arc, OnceLock};
use wasmtime::component::{Resource, ResourceTable};

/// One connection of a `server-handler` listener, as its task and the
/// listener's instance both see it.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) link: Arc<Link>,
    /// Set once, by the instance's task, when the instance failed: why the
    /// connection ends. (The `FAULT` bit on its doorbell says to look.)
    pub(crate) fault: OnceLock<ShutdownReason>,
}

impl Conn {
    /// `send`: queued, and the connection's task rung to write it. Not
    /// written during the call, as a `connection-handler`'s is: the one
    /// instance would then make every connection's write system call
    /// itself, on one thread, while the connections' tasks run on all.
    pub(crate) fn send(&self, bytes: &[u8]) -> Result<(), crate::outbox::SendError> {
        self.link.outbox().send(bytes.to_vec())?;
        self.link.doorbell.ring(RING);
        Ok(())
    }

    fn change(&self, change: impl FnOnce(&mut crate::outbox::Outbox)) {
        change(&mut self.link.outbox());
        self.link.doorbell.ring(RING);
    }
}

/// The `conn` handles one instance holds, each a [`Conn`]. Bounded: an
/// instance that never drops its handles fills it, and is ended for it.
#[derive(Default)]
pub(crate) struct Conns {
    table: ResourceTable,
}

/// Why a `conn` handle could not be made.
#[derive(Debug)]
pub(crate) struct TooManyHandles(pub(crate) usize);

impl Conns {
    pub(crate) fn with_capacity(max: usize) -> Self {
        let mut table = ResourceTable::new();
        table.set_max_capacity(max);
        Self { table }
    }

    /// A new handle to `conn`, owned by the guest once given to `new-csa`.
    pub(crate) fn add(&mut self, conn: Arc<Conn>) -> Result<Resource<ConnHandle>, TooManyHandles> {
        let entry = self.table.push(conn).map_err(|_| TooManyHandles(self.table.max_capacity()))?;
        Ok(Resource::new_own(entry.rep()))
    }

    fn get(&self, handle: &Resource<ConnHandle>) -> wasmtime::Result<&Conn> {
        Ok(self.table.get(&Resource::<Arc<Conn>>::new_borrow(handle.rep()))?)
    }

    /// The fast `send`: the bytes in place in the guest's memory.
    pub(crate) fn send(
        &self,
        handle: &Resource<ConnHandle>,
        bytes: &[u8],
    ) -> wasmtime::Result<Result<(), WitSendError>> {
        Ok(self.get(handle)?.send(bytes).map_err(WitSendError::from))
    }
}

impl connections::Host for Conns {}

impl connections::HostConn for Conns {
    fn id(&mut self, conn: Resource<ConnHandle>) -> wasmtime::Result<u64> {
        Ok(self.get(&conn)?.id)
    }

    /// Shadowed by the `send` that the linker links ([`Conns::send`]).
    fn send(&mut self, conn: Resource<ConnHandle>, data: Vec<u8>) -> wasmtime::Result<Result<(), WitSendError>> {
        Conns::send(self, &conn, &data)
    }

    fn finish(&mut self, conn: Resource<ConnHandle>) -> wasmtime::Result<()> {
        self.get(&conn)?.change(|o| o.finish());
        Ok(())
    }

    fn close(&mut self, conn: Resource<ConnHandle>) -> wasmtime::Result<()> {
        self.get(&conn)?.change(|o| o.close());
        Ok(())
    }

    fn pause_reading(&mut self, conn: Resource<ConnHandle>) -> wasmtime::Result<()> {
        self.get(&conn)?.change(|o| o.reading_paused = true);
        Ok(())
    }

    fn resume_reading(&mut self, conn: Resource<ConnHandle>) -> wasmtime::Result<()> {
        self.get(&conn)?.change(|o| o.reading_paused = false);
        Ok(())
    }

    fn drop(&mut self, conn: Resource<ConnHandle>) -> wasmtime::Result<()> {
        self.table.delete(Resource::<Arc<Conn>>::new_own(conn.rep()))?;
        Ok(())
    }
}
