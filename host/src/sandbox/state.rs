//! What a handler instance's `Store` holds: its WASI context (nothing
//! granted), its memory limiter, its service clients, and its connection:
//! the outbox it shares with the CSA task and the socket itself.

use super::conns::Conns;
use super::guest_log::{GuestLog, LogRate, Stdio};
use super::limits::MemoryLimiter;
use crate::bindings::pier::server as pier;
use crate::bindings::{self, ConnHandle, SendError as WitSendError, TlsInfo};
use crate::config::ListenerConfig;
use crate::outbox::{Link, SendError};
use crate::services;
use crate::tls::Tls;
use std::io;
use std::sync::Arc;
use tokio::net::TcpStream;
use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable, WasmList};
use wasmtime_wasi::cli::{AsyncStdinStream, AsyncStdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

/// Most entries a guest may keep in its WASI resource table.
pub(crate) const MAX_RESOURCES: usize = 1024;

/// The instance name of the `outbox` interface, whose `send` pier links
/// itself ([`Peer::send`]). Only this instance provides the outbox: were the
/// name to drift from wit/pier.wit, every handler would fail to link, never
/// quietly lose the fast path.
const OUTBOX_IMPORT: &str = "pier:server/outbox@0.1.0";

/// The same for the `connections` interface of the `server-handler` world
/// and the `send` of its `conn` resource.
const CONNECTIONS_IMPORT: &str = "pier:server/connections@0.1.0";

pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) peer: Peer,
    pub(crate) services: Services,
    /// A `server-handler` instance's connections (empty for the others).
    pub(crate) conns: Conns,
}

/// The guest's connection: the outbox its `send` fills, the socket, and
/// its TLS. The socket lives here, in the store, because the guest's `send`
/// writes to it: it is open exactly as long as an instance can call `send`.
pub(crate) struct Peer {
    pub(crate) link: Arc<Link>,
    /// `None` in measurements and start-up probes, which have no peer (and
    /// for the moment of a STARTTLS handshake, which has it).
    pub(crate) socket: Option<TcpStream>,
    pub(crate) tls: Tls,
}

/// The service clients one connection's handler reaches.
pub(crate) struct Services {
    pub(crate) config: services::config::Client,
    pub(crate) backplane: services::backplane::Client,
    pub(crate) keyvalue: services::keyvalue::Client,
    pub(crate) limits: services::limits::Client,
    pub(crate) timers: services::timers::Client,
    pub(crate) upstream: services::upstream::Client,
}

/// A `wasi:cli/command`'s stdio and environment when it serves a
/// connection inetd-style: stdin and stdout are the socket.
pub(crate) struct CommandIo {
    pub(crate) stdin: AsyncStdinStream,
    pub(crate) stdout: AsyncStdoutStream,
    /// argv[0] and ucspi-tcp's `PROTO`, `TCPREMOTEIP`, ... variables.
    pub(crate) argv0: String,
    pub(crate) env: Vec<(&'static str, String)>,
}

impl HostState {
    /// WASI 0.2 with nothing granted but what the listener lists: no
    /// directories, environment, arguments or network; stdin is empty and
    /// stdout is the log, except for a command (`command`), whose stdin and
    /// stdout are its connection.
    pub(crate) fn new(
        listener: &ListenerConfig,
        peer: Peer,
        services: Services,
        command: Option<CommandIo>,
    ) -> anyhow::Result<Self> {
        let mut wasi = WasiCtx::builder();
        let rate = LogRate::new(listener.log_rate);
        match command {
            Some(io) => {
                wasi.stdin(io.stdin).stdout(io.stdout).arg(io.argv0);
                for (key, value) in io.env {
                    wasi.env(key, value);
                }
            }
            None => {
                wasi.stdout(GuestLog::new(Stdio::Stdout, rate.clone()));
            }
        }
        wasi.stderr(GuestLog::new(Stdio::Stderr, rate)).allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        for (key, value) in &listener.env {
            wasi.env(key, value);
        }
        for dir in &listener.allow_dirs {
            let guest_path = dir.to_string_lossy();
            wasi.preopened_dir(dir, &guest_path, FsPerms::ReadOnly)?;
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        let limiter = MemoryLimiter { limit: usize::try_from(listener.memory_limit).unwrap_or(usize::MAX) };
        Ok(Self { wasi: wasi.build(), table, limiter, peer, services, conns: Conns::default() })
    }

    /// Links every import of the `connection-handler` and `server-handler`
    /// worlds: WASI, the outbox and the connections (with pier's own
    /// `send`s) and each service's client.
    pub(crate) fn add_to_linker(linker: &mut Linker<Self>) -> anyhow::Result<()> {
        use bindings::wasi::keyvalue;
        type Kv = HasSelf<services::keyvalue::Client>;
        wasmtime_wasi::p2::add_to_linker_async(linker)?;
        pier::types::add_to_linker::<_, HasSelf<Peer>>(linker, |s| &mut s.peer)?;
        pier::config::add_to_linker::<_, HasSelf<services::config::Client>>(linker, |s| &mut s.services.config)?;
        pier::backplane::add_to_linker::<_, HasSelf<services::backplane::Client>>(linker, |s| {
            &mut s.services.backplane
        })?;
        pier::limits::add_to_linker::<_, HasSelf<services::limits::Client>>(linker, |s| &mut s.services.limits)?;
        pier::timers::add_to_linker::<_, HasSelf<services::timers::Client>>(linker, |s| &mut s.services.timers)?;
        pier::upstream::add_to_linker::<_, HasSelf<services::upstream::Client>>(linker, |s| &mut s.services.upstream)?;
        keyvalue::store::add_to_linker::<_, Kv>(linker, |s| &mut s.services.keyvalue)?;
        keyvalue::atomics::add_to_linker::<_, Kv>(linker, |s| &mut s.services.keyvalue)?;
        let mut outbox = linker.instance(OUTBOX_IMPORT)?;
        pier::outbox::add_to_linker_instance::<_, HasSelf<Peer>>(&mut outbox, |s| &mut s.peer)?;
        // `send` reads the bytes in place in the guest's memory (`WasmList`)
        // instead of the generated binding's copy into a fresh `Vec`.
        linker.allow_shadowing(true);
        linker.instance(OUTBOX_IMPORT)?.func_wrap(
            "send",
            |store: wasmtime::StoreContextMut<'_, Self>, (data,): (WasmList<u8>,)| {
                let bytes = data.as_le_slice(&store);
                Ok((store.data().peer.send(bytes).map_err(WitSendError::from),))
            },
        )?;
        let mut connections = linker.instance(CONNECTIONS_IMPORT)?;
        bindings::server::connections::add_to_linker_instance::<_, HasSelf<Conns>>(&mut connections, |s| &mut s.conns)?;
        linker.instance(CONNECTIONS_IMPORT)?.func_wrap(
            "[method]conn.send",
            |store: wasmtime::StoreContextMut<'_, Self>, (conn, data): (Resource<ConnHandle>, WasmList<u8>)| {
                let bytes = data.as_le_slice(&store);
                Ok((store.data().conns.send(&conn, bytes)?,))
            },
        )?;
        linker.allow_shadowing(false);
        Ok(())
    }
}

impl Peer {
    /// TLS records are encrypted and waiting for the socket.
    pub(crate) fn tls_records_waiting(&self) -> bool {
        matches!(&self.tls, Tls::On(session) if session.borrow().wants_write())
    }

    /// The guest's `send`: with nothing queued, straight to the socket
    /// (through the TLS session, on a TLS connection).
    fn send(&self, bytes: &[u8]) -> Result<(), SendError> {
        self.link.outbox().send_through(bytes, |b| match (&self.socket, &self.tls) {
            (Some(socket), Tls::On(session)) => session.borrow_mut().write_vectored(socket, &[io::IoSlice::new(b)]),
            (Some(socket), _) => socket.try_write(b),
            (None, _) => Err(io::ErrorKind::WouldBlock.into()),
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl pier::types::Host for Peer {}

impl pier::outbox::Host for Peer {
    /// Shadowed by the `send` that [`HostState::add_to_linker`] links.
    fn send(&mut self, data: Vec<u8>) -> Result<(), WitSendError> {
        self.link.outbox().send(data).map_err(WitSendError::from)
    }

    fn finish(&mut self) {
        self.link.outbox().finish();
    }

    fn close(&mut self) {
        self.link.outbox().close();
    }

    fn pause_reading(&mut self) {
        self.link.outbox().reading_paused = true;
    }

    fn resume_reading(&mut self) {
        self.link.outbox().reading_paused = false;
    }

    /// Asks the CSA to switch to TLS once the call returns (it does the
    /// flushing and the handshake; `send` holds off until then).
    fn start_tls(&mut self) -> Result<(), String> {
        let mut outbox = self.link.outbox();
        match &self.tls {
            Tls::Offered(_) if !outbox.tls_switch => {
                outbox.tls_switch = true;
                Ok(())
            }
            Tls::Off => Err(
                "this listener does not offer STARTTLS: the operator sets starttls = true, with tls-cert and tls-key"
                    .into(),
            ),
            _ => Err("TLS is already on (or starting) for this connection".into()),
        }
    }

    fn tls(&mut self) -> Option<TlsInfo> {
        self.tls.session().map(|s| s.info())
    }
}

impl From<SendError> for WitSendError {
    fn from(e: SendError) -> Self {
        match e {
            SendError::WouldBlock => WitSendError::WouldBlock,
            SendError::Closed => WitSendError::Closed,
            SendError::TooLarge { max } => WitSendError::TooLarge(max as u64),
        }
    }
}
