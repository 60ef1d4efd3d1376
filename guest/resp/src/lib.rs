//! A Redis-protocol (RESP2) server on pier. Data lives in the listener's
//! shared `wasi:keyvalue` bucket, so every connection of the listener sees
//! the same keys; INCR and friends use the store's atomic increment, so
//! counters are exact across connections. Expiry is lazy (see `db`).
//!
//! - `parse`: the incremental request parser and its limits (16 MiB per
//!   value, 1 Mi arguments, 64 KiB per inline command).
//! - `commands`: the commands, in Redis's reply and error forms.
//! - `reply`: RESP2 reply encoding.
//! - `db`: Redis keys on the bucket: key encoding, expiry.
//!
//! The listener's `config` table: `timeout`, in seconds, as Redis's: a
//! client idle that long is closed, without a reply; `0` (the default) is
//! never. `CONFIG GET timeout` answers it (see `idle`).
//!
//! Pipelining: every complete command of a read is answered, in order, with
//! one `send` for the batch. Output is bounded: while the SDK holds back
//! bytes the host refused, no further command runs and reading is paused,
//! so a client that pipelines GETs of a large value without reading the
//! answers cannot make the instance run out of memory.

mod commands;
mod db;
mod float;
mod glob;
mod idle;
mod parse;
mod reply;

use commands::{Next, Session};
use db::{Db, NoStore, Turn};
use idle::Idle;
use parse::{Parsed, Parser};
use pier_guest::alarm::HostTimers;
use pier_guest::keyvalue::store::{self, Bucket};
use pier_guest::{ConnectionInfo, Handler, Outbox, ShutdownReason, config};
use reply::Reply;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Replies gathered past this size are sent before the next command runs.
const SEND_AT: usize = 64 << 10;
/// Input buffer capacity kept between requests; more (after a large value)
/// is given back so that the memory can hold the next large value.
const KEEP_CAPACITY: usize = 64 << 10;
/// Commands counted locally before INFO's shared counter is updated.
const COUNT_EVERY: i64 = 1000;

struct Resp {
    /// Received bytes not yet answered: at most one unfinished command, or
    /// more while output is held back.
    buf: Vec<u8>,
    parser: Parser,
    /// The listener's bucket; None if it could not be opened.
    bucket: Option<Bucket>,
    session: Session,
    /// QUIT or a protocol error: the replies so far go out, then finish.
    closing: bool,
    /// The peer sent FIN: finish once every buffered command is answered.
    eof: bool,
    /// Waiting for `writable` to go on (see the module doc).
    stalled: bool,
    /// Still counted in INFO's `connected_clients`.
    counted: bool,
    /// The `timeout` setting at work; None for `timeout 0`.
    idle: Option<Idle>,
    /// When the connection was accepted: time 0 of `idle`.
    accepted: Instant,
}

/// Milliseconds since the Unix epoch, from `wasi:clocks/wall-clock`.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl Resp {
    /// The client did something: its idle time starts again.
    fn active(&mut self) {
        if let Some(idle) = &mut self.idle {
            let now = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
            idle.active(now, &mut HostTimers);
        }
    }

    /// Answers the commands in the buffer until it holds no complete one,
    /// the output stalls, or the connection is closing.
    fn serve(&mut self, out: &mut Outbox) {
        let turn = Turn::new(now_ms);
        let mut reply = Reply::default();
        let mut at = 0;
        let mut need = 0;
        self.stalled = false;
        while !self.closing && !self.stalled && at < self.buf.len() {
            match self.parser.parse(&self.buf[at..]) {
                Ok(Parsed::Command(args, used)) => {
                    at += used;
                    let args: Vec<&[u8]> = args.iter().map(AsRef::as_ref).collect();
                    let session = &mut self.session;
                    let next = match &self.bucket {
                        Some(bucket) => commands::run(&Db::new(bucket, &turn), session, &args, &mut reply),
                        None => commands::run(&Db::new(&NoStore, &turn), session, &args, &mut reply),
                    };
                    self.closing = next == Next::Quit;
                    if reply.len() >= SEND_AT {
                        self.send(out, &mut reply);
                    }
                }
                Ok(Parsed::Skip(used)) => at += used,
                Ok(Parsed::Incomplete { need: n }) => {
                    need = n;
                    break;
                }
                Err(e) => {
                    reply.error(&format!("ERR Protocol error: {}", e.0));
                    self.closing = true;
                }
            }
        }
        self.send(out, &mut reply);
        if self.session.uncounted >= COUNT_EVERY {
            self.with_db(&turn, |db, session| session.count_commands(db));
        }
        self.buf.drain(..at);
        if self.closing {
            self.buf = Vec::new();
            out.finish();
            return;
        }
        if self.buf.capacity() > KEEP_CAPACITY.max(need) {
            self.buf.shrink_to(KEEP_CAPACITY.max(need));
        }
        // A large value announced: make room for all of it at once rather
        // than doubling the buffer as it arrives (which could need twice its
        // size). The parser bounds `need` by MAX_REQUEST, plus one unfinished
        // `$length` line (MAX_INLINE): `parse_props` checks it.
        self.buf.reserve_exact(need.saturating_sub(self.buf.len()));
        if self.stalled {
            out.pause_reading();
        } else if self.eof {
            out.finish();
        }
    }

    /// Runs `f` on the listener's store, if it could be opened.
    fn with_db(&mut self, turn: &Turn, f: impl FnOnce(&Db<Bucket>, &mut Session)) {
        if let Some(bucket) = &self.bucket {
            f(&Db::new(bucket, turn), &mut self.session);
        }
    }

    /// The connection is over (`shutdown-csa` is always the last call):
    /// its counts go into INFO's, and it leaves `connected_clients`.
    fn leave(&mut self) {
        if std::mem::take(&mut self.counted) {
            let turn = Turn::new(now_ms);
            self.with_db(&turn, |db, session| {
                session.count_commands(db);
                let _ = db.add_stat("connected", -1);
            });
        }
    }

    /// Sends the gathered replies; stalls if the SDK had to hold any back.
    fn send(&mut self, out: &mut Outbox, reply: &mut Reply) {
        for part in reply.take() {
            if !out.send_vec(part) {
                // The connection is gone: nothing more to do.
                self.closing = true;
                return;
            }
        }
        self.stalled = out.pending() > 0;
    }
}

impl Handler for Resp {
    fn on_connect(info: &ConnectionInfo, _out: &mut Outbox) -> Self {
        let accepted = Instant::now();
        let (timeout, warning) = idle::setting(config::get);
        if let Some(warning) = warning {
            eprintln!("{warning}");
        }
        let bucket = store::open("").ok();
        // INFO's client counts; a full store only leaves them behind.
        let turn = Turn::new(now_ms);
        let counted = bucket.as_ref().is_some_and(|bucket| {
            let db = Db::new(bucket, &turn);
            let _ = db.add_stat("connections", 1);
            db.add_stat("connected", 1).is_ok()
        });
        Resp {
            buf: Vec::new(),
            parser: Parser::default(),
            bucket,
            session: Session { id: info.id, timeout, ..Session::default() },
            closing: false,
            eof: false,
            stalled: false,
            counted,
            idle: Idle::new(timeout, &mut HostTimers),
            accepted,
        }
    }

    fn on_data(&mut self, out: &mut Outbox, bytes: &[u8]) {
        if self.closing {
            return;
        }
        self.active();
        self.buf.extend_from_slice(bytes);
        if !self.stalled {
            self.serve(out);
        }
    }

    fn on_writable(&mut self, out: &mut Outbox) {
        self.active();
        if self.stalled && !self.closing {
            out.resume_reading();
            self.serve(out);
        }
    }

    fn on_end(&mut self, out: &mut Outbox) {
        self.eof = true;
        if !self.stalled {
            self.serve(out);
        }
    }

    /// Redis frees a client idle past `timeout`: no reply, and what is
    /// still queued for it is dropped.
    fn on_timer(&mut self, out: &mut Outbox, id: u64) {
        let now = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        if self.idle.as_mut().is_some_and(|idle| idle.fired(id, now, &mut HostTimers)) {
            self.closing = true;
            self.buf = Vec::new();
            out.close();
        }
    }

    fn on_shutdown(&mut self, _out: &mut Outbox, _reason: &ShutdownReason) {
        self.leave();
    }
}

pier_guest::handler!(Resp);
