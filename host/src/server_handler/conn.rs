//! One connection of a `server-handler` listener: its task owns the
//! connection's life (reading, writing what is queued, the idle timer,
//! `serverShutdown`, the orderly close) and hands the listener's instance
//! one event at a time: it reads nothing more until the instance has
//! handled the last one, which is how TCP backpressure reaches a peer
//! faster than the instance.

use super::instance::{Event, Instance};
use crate::bindings::{ConnectionInfo, WitShutdownReason};
use crate::csa::Accepted;
use crate::csa::call::wit_reason;
use crate::csa::io::{self, ReadBuffer, SocketIo, io_reason};
use crate::csa::progress::Progress;
use crate::events::ShutdownReason;
use crate::outbox::WriteState;
use crate::outbox::doorbell::{ABORT, DONE, FAULT, SHUTDOWN};
use crate::sandbox::conns::Conn;
use crate::shutdown::Stop;
use crate::tenant::Tenant;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use tokio::net::TcpStream;
use tracing::debug;

/// Runs one connection from accept to close; returns why it ended.
pub(crate) async fn serve(conn: Accepted, tenant: Arc<Tenant>, stop: Stop, instance: Arc<Instance>) -> ShutdownReason {
    let Accepted { stream, id, peer, local, link } = conn;
    let _registration = stop.register(id, &link);
    let _counted = tenant.stats.connect(id, &link, peer);
    let info = ConnectionInfo {
        id,
        listener: tenant.name.to_string(),
        peer: peer.to_string(),
        local: local.to_string(),
        tls: None,
    };
    let conn = Arc::new(Conn { id, link, fault: OnceLock::new() });
    let mut task = Task {
        socket: stream,
        progress: Progress::new(tenant.config.idle_timeout),
        conn,
        instance,
        in_flight: false,
        shutdown_due: false,
    };
    let reason = match task.run(info).await {
        Err(reason) => reason,
        Ok(never) => match never {},
    };
    task.close(&reason).await;
    reason
}

struct Task {
    socket: TcpStream,
    conn: Arc<Conn>,
    instance: Arc<Instance>,
    progress: Progress,
    /// An event is with the instance: nothing more is read or handed over
    /// until it is done.
    in_flight: bool,
    /// `serverShutdown` came while an event was in flight: tell the
    /// handler once it is done.
    shutdown_due: bool,
}

/// The outbox's state, read under one lock at the top of a turn.
struct Snapshot {
    state: WriteState,
    queued: usize,
    full: bool,
    paused: bool,
    writable_due: bool,
}

enum Wake {
    Doorbell(u8),
    Socket(SocketIo),
    Idle,
}

type Turn = Result<(), ShutdownReason>;

impl Task {
    async fn run(&mut self, info: ConnectionInfo) -> Result<Infallible, ShutdownReason> {
        self.hand_over(Event::NewCsa(self.conn.clone(), info))?;
        loop {
            self.flush()?;
            let now = self.snapshot();
            self.end_if_done(&now)?;
            if !self.in_flight && self.shutdown_due {
                self.shutdown_due = false;
                self.progress.told_shutdown = true;
                self.hand_over(Event::ShutdownCsa(self.conn.id, Some(WitShutdownReason::ServerShutdown)))?;
                continue;
            }
            if now.writable_due {
                self.hand_over(Event::Writable(self.conn.id))?;
                continue;
            }
            match self.wait(&now).await {
                Wake::Doorbell(bits) => self.on_doorbell(bits)?,
                Wake::Socket(SocketIo::Read(read)) => self.on_read(read).await?,
                Wake::Socket(SocketIo::Writable(r)) => r.map_err(|e| io_reason(&e))?,
                Wake::Idle => self.on_idle()?,
            }
        }
    }

    fn hand_over(&mut self, event: Event) -> Turn {
        if !self.instance.send(event) {
            return Err(ShutdownReason::Trapped("the listener's instance task is gone".into()));
        }
        self.in_flight = true;
        Ok(())
    }

    fn snapshot(&self) -> Snapshot {
        let mut o = self.conn.link.outbox();
        // Owed only once nothing is in flight: the flag waits in the outbox.
        let writable_due = !self.in_flight && o.take_writable();
        Snapshot { state: o.state, queued: o.queued(), full: o.is_full(), paused: o.reading_paused, writable_due }
    }

    fn end_if_done(&self, now: &Snapshot) -> Turn {
        match now.state {
            WriteState::Closed => Err(ShutdownReason::Closed),
            WriteState::Finishing if now.queued == 0 => {
                io::shutdown_write(&self.socket);
                Err(self.progress.finished())
            }
            _ => Ok(()),
        }
    }

    async fn wait(&mut self, now: &Snapshot) -> Wake {
        let read =
            !self.in_flight && !self.progress.input_ended && !now.paused && !now.full && now.state == WriteState::Open;
        tokio::select! {
            biased;
            bits = self.conn.link.doorbell.rung() => Wake::Doorbell(bits),
            io = io::socket_io(&mut self.socket, None, read, now.queued > 0) => Wake::Socket(io),
            () = self.progress.idle() => Wake::Idle,
        }
    }

    fn on_doorbell(&mut self, bits: u8) -> Turn {
        if bits & FAULT != 0 {
            let why = self.conn.fault.get().cloned();
            return Err(why.unwrap_or_else(|| ShutdownReason::Trapped("the listener's instance failed".into())));
        }
        if bits & ABORT != 0 {
            return Err(ShutdownReason::ServerShutdown);
        }
        if bits & DONE != 0 {
            self.in_flight = false;
            if self.progress.told_shutdown {
                // What the handler sent in `shutdown-csa` is flushed, then
                // the connection closes.
                self.conn.link.outbox().finish();
            }
        }
        if bits & SHUTDOWN != 0 && !self.progress.told_shutdown {
            self.shutdown_due = true;
        }
        Ok(())
    }

    async fn on_read(&mut self, read: std::io::Result<(ReadBuffer, usize)>) -> Turn {
        let (buf, n) = read.map_err(|e| io_reason(&e))?;
        if n == 0 {
            self.progress.input_ended = true;
            return self.hand_over(Event::EndOfInput(self.conn.id));
        }
        self.progress.active();
        self.conn.link.received.fetch_add(n as u64, Ordering::Relaxed);
        let room = self.instance.room.clone();
        let permit = loop {
            tokio::select! {
                biased;
                bits = self.conn.link.doorbell.rung() => self.on_doorbell(bits)?,
                p = room.clone().acquire_many_owned(n as u32) => break p.expect("the semaphore is never closed"),
            }
        };
        self.hand_over(Event::Data(self.conn.id, buf.0[..n].to_vec(), permit))
    }

    /// Writes what the socket takes now, without waiting.
    fn flush(&mut self) -> Turn {
        let socket = &self.socket;
        let mut outbox = self.conn.link.outbox();
        let wrote_directly = std::mem::take(&mut outbox.wrote_directly);
        let written = if outbox.queued() > 0 {
            outbox.write_to(|iov| socket.try_write_vectored(iov)).map_err(|e| io_reason(&e))?
        } else {
            0
        };
        drop(outbox);
        if wrote_directly || written > 0 {
            self.progress.active();
        }
        Ok(())
    }

    /// Bytes sent to this connection from other connections' calls count
    /// as activity too: they were written during those calls.
    fn on_idle(&mut self) -> Turn {
        self.flush()?;
        self.progress.on_idle_timer()
    }

    /// Hands the instance the connection's last event, then closes.
    async fn close(&mut self, reason: &ShutdownReason) {
        self.conn.link.outbox().close();
        let told = (!self.progress.told_shutdown).then(|| wit_reason(reason)).flatten();
        self.instance.send(Event::ShutdownCsa(self.conn.id, told));
        if self.progress.lingers(reason) {
            io::linger(&self.socket, &self.conn.link.doorbell).await;
        }
        debug!("socket closed");
    }
}
