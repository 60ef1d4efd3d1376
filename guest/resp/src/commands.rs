//! The commands, with Redis's own replies and error messages (checked
//! against redis-server 7.0), so that clients and scripts see no difference.

use crate::db::{Db, Expiry, Kv, Ttl};
use crate::parse::{MAX_BULK, integer};
use crate::reply::Reply;
use crate::{float, glob};
use pier_guest::keyvalue::store::Error;
use std::hash::{BuildHasher, RandomState};
use std::time::{SystemTime, UNIX_EPOCH};

/// What HELLO and INFO report: the release this module is checked against
/// (clients gate features on it).
pub const REDIS_VERSION: &str = "7.0.15";

/// What the connection does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// QUIT: finish once the replies so far are sent.
    Quit,
}

/// Per-connection state some commands keep.
#[derive(Debug, Default)]
pub struct Session {
    /// pier's connection id, for CLIENT ID.
    pub id: u64,
    /// CLIENT SETNAME's name.
    pub name: Option<Vec<u8>>,
    /// Commands run and not yet added to INFO's `total_commands_processed`
    /// (added in batches: a store call per command would cost too much).
    pub uncounted: i64,
    /// The listener's `timeout`, in seconds, for CONFIG GET.
    pub timeout: u64,
}

impl Session {
    /// Adds the commands run so far to INFO's counter.
    pub fn count_commands<K: Kv + ?Sized>(&mut self, db: &Db<K>) {
        if self.uncounted > 0 && db.add_stat("commands", self.uncounted).is_ok() {
            self.uncounted = 0;
        }
    }
}

/// The commands served and their arity, as in Redis's command table: `n`
/// means exactly `n` words counting the name, `-n` at least `n`.
const COMMANDS: &[(&str, i32)] = &[
    ("ping", -1),
    ("echo", 2),
    ("get", 2),
    ("set", -3),
    ("setnx", 3),
    ("setex", 4),
    ("psetex", 4),
    ("getdel", 2),
    ("getex", -2),
    ("getrange", 4),
    ("setrange", 4),
    ("del", -2),
    ("unlink", -2),
    ("exists", -2),
    ("touch", -2),
    ("type", 2),
    ("rename", 3),
    ("renamenx", 3),
    ("incr", 2),
    ("decr", 2),
    ("incrby", 3),
    ("decrby", 3),
    ("incrbyfloat", 3),
    ("mget", -2),
    ("mset", -3),
    ("msetnx", -3),
    ("append", 3),
    ("strlen", 2),
    ("expire", -3),
    ("pexpire", -3),
    ("expiretime", 2),
    ("pexpiretime", 2),
    ("persist", 2),
    ("ttl", 2),
    ("pttl", 2),
    ("dbsize", 1),
    ("keys", 2),
    ("scan", -2),
    ("randomkey", 1),
    ("flushdb", -1),
    ("flushall", -1),
    ("time", 1),
    ("hello", -1),
    ("command", -1),
    ("config", -2),
    ("client", -2),
    ("select", 2),
    ("info", -1),
    ("quit", -1),
];

/// What CONFIG GET reports: enough for redis-benchmark, which asks for
/// `save` and `appendonly` and warns when it gets no answer.
const CONFIG: &[(&str, &str)] = &[("save", ""), ("appendonly", "no"), ("databases", "1")];

const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

/// Runs one command (`args[0]` is its name), appending its reply.
pub fn run<K: Kv + ?Sized>(db: &Db<K>, session: &mut Session, args: &[&[u8]], reply: &mut Reply) -> Next {
    let Some(&first) = args.first() else { return Next::Continue };
    let Some(&(name, arity)) = COMMANDS.iter().find(|(name, _)| name.as_bytes().eq_ignore_ascii_case(first)) else {
        unknown_command(args, reply);
        return Next::Continue;
    };
    let argc = args.len() as i32;
    if (arity > 0 && argc != arity) || argc < -arity {
        reply.error(&arity_error(name));
        return Next::Continue;
    }
    session.uncounted += 1;
    if let Err(e) = execute(db, session, name, args, reply) {
        store_error(e, reply);
    }
    if name == "quit" { Next::Quit } else { Next::Continue }
}

/// Runs a command whose name and arity are known to be good.
fn execute<K: Kv + ?Sized>(
    db: &Db<K>,
    session: &mut Session,
    name: &str,
    args: &[&[u8]],
    reply: &mut Reply,
) -> Result<(), Error> {
    match name {
        "ping" => match args {
            [_] => reply.simple("PONG"),
            [_, message] => reply.bulk(message),
            _ => reply.error(&arity_error(name)),
        },
        "echo" => reply.bulk(args[1]),
        "get" => reply.maybe_bulk(db.get(args[1])?),
        "set" => set(db, args, reply)?,
        "setnx" => {
            let fresh = !db.exists(args[1])?;
            if fresh {
                db.set(args[1], args[2], Expiry::Clear)?;
            }
            reply.int(i64::from(fresh));
        }
        "setex" | "psetex" => {
            let unit: &[u8] = if name == "setex" { b"ex" } else { b"px" };
            match integer(args[2]).map(|n| set_deadline(unit, n, db.now())) {
                None => reply.error(NOT_AN_INTEGER),
                Some(None) => reply.error(&format!("ERR invalid expire time in '{name}' command")),
                Some(Some(at)) => {
                    db.set(args[1], args[3], Expiry::At(at))?;
                    reply.ok();
                }
            }
        }
        "getdel" => {
            let value = db.get(args[1])?;
            if value.is_some() {
                db.delete(args[1])?;
            }
            reply.maybe_bulk(value);
        }
        "getex" => getex(db, args, reply)?,
        "getrange" => getrange(db, args, reply)?,
        "setrange" => setrange(db, args, reply)?,
        "del" | "unlink" => reply.int(count(args, |key| db.delete(key))?),
        "exists" | "touch" => reply.int(count(args, |key| db.exists(key))?),
        "type" => reply.simple(if db.exists(args[1])? { "string" } else { "none" }),
        "rename" | "renamenx" => rename(db, name == "renamenx", args, reply)?,
        "incrbyfloat" => incrbyfloat(db, args, reply)?,
        "msetnx" => msetnx(db, args, reply)?,
        "expiretime" | "pexpiretime" => reply.int(match db.ttl(args[1])? {
            Ttl::Missing => -2,
            Ttl::Persistent => -1,
            Ttl::Until(at) if name == "expiretime" => (at + 500) / 1000,
            Ttl::Until(at) => at,
        }),
        "dbsize" => reply.int(db.count()?.0 as i64),
        "keys" => {
            let keys = db.keys(|key| args[1] == b"*" || glob::matches(args[1], key))?;
            reply.array(keys.len());
            for key in keys {
                reply.bulk(&key);
            }
        }
        "scan" => scan(db, args, reply)?,
        "randomkey" => {
            let random = RandomState::new();
            reply.maybe_bulk(db.random_key(random.hash_one(0), random.hash_one(1))?)
        }
        "flushdb" | "flushall" => match args {
            [_] => flush(db, reply)?,
            [_, mode] if [&b"async"[..], b"sync"].iter().any(|m| m.eq_ignore_ascii_case(mode)) => flush(db, reply)?,
            _ => reply.error(SYNTAX),
        },
        "time" => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            reply.array(2);
            reply.bulk(now.as_secs().to_string().as_bytes());
            reply.bulk(now.subsec_micros().to_string().as_bytes());
        }
        "hello" => hello(session, args, reply),
        "incr" => increment(db, args[1], 1, reply)?,
        "decr" => increment(db, args[1], -1, reply)?,
        "incrby" | "decrby" => match integer(args[2]) {
            None => reply.error(NOT_AN_INTEGER),
            Some(i64::MIN) if name == "decrby" => reply.error("ERR decrement would overflow"),
            Some(n) => increment(db, args[1], if name == "incrby" { n } else { -n }, reply)?,
        },
        "mget" => mget(db, args, reply)?,
        "mset" => mset(db, args, reply)?,
        "append" => append(db, args, reply)?,
        "strlen" => reply.int(db.get(args[1])?.map_or(0, |v| v.len() as i64)),
        "expire" | "pexpire" => expire(db, name, args, reply)?,
        "persist" => persist(db, args[1], reply)?,
        "ttl" | "pttl" => reply.int(match db.ttl(args[1])? {
            Ttl::Missing => -2,
            Ttl::Persistent => -1,
            Ttl::Until(at) => {
                let ms = (at - db.now()).max(0);
                if name == "ttl" { (ms + 500) / 1000 } else { ms }
            }
        }),
        "command" => command(args, reply),
        "config" => config(session, args, reply),
        "client" => client(session, args, reply),
        "select" => match integer(args[1]) {
            None => reply.error(NOT_AN_INTEGER),
            Some(0) => reply.ok(),
            // One database: the listener's bucket.
            Some(_) => reply.error("ERR DB index is out of range"),
        },
        "info" => {
            session.count_commands(db);
            info(db, args, reply)?
        }
        "quit" => reply.ok(),
        _ => unreachable!("every name in COMMANDS has a branch"),
    }
    Ok(())
}

fn arity_error(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

/// The longest prefix of `text` of at most `max` bytes, on a char boundary.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Redis's message, byte for byte: the name and up to 128 bytes of
/// arguments, each quoted and followed by a space.
fn unknown_command(args: &[&[u8]], reply: &mut Reply) {
    let mut shown = String::new();
    for arg in &args[1..] {
        if shown.len() >= 128 {
            break;
        }
        let room = 128 - shown.len();
        shown.push('\'');
        shown.push_str(prefix(&String::from_utf8_lossy(arg), room));
        shown.push_str("' ");
    }
    let name = String::from_utf8_lossy(args[0]);
    reply.error(&format!("ERR unknown command '{}', with args beginning with: {shown}", prefix(&name, 128)));
}

fn unknown_subcommand(command: &str, args: &[&[u8]], reply: &mut Reply) {
    let sub = String::from_utf8_lossy(args[1]);
    reply.error(&format!("ERR unknown subcommand '{}'. Try {command} HELP.", prefix(&sub, 128)));
}

/// Redis's answer at `maxmemory` with `noeviction`, which pier gives when
/// the listener's store is at its budget (`kv-max-bytes`, `kv-max-keys`).
const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";

/// Whether the store refused for its budget (pier's `out of budget:`).
fn out_of_budget(e: &Error) -> bool {
    matches!(e, Error::Other(text) if text.starts_with("out of budget"))
}

/// A store failure other than the ones commands answer themselves.
fn store_error(e: Error, reply: &mut Reply) {
    match e {
        e if out_of_budget(&e) => reply.error(OOM),
        Error::Other(text) => reply.error(&format!("ERR {text}")),
        Error::NoSuchStore => reply.error("ERR the listener's key-value store is not available"),
        Error::AccessDenied => reply.error("ERR access to the listener's key-value store was denied"),
    }
}

/// How many of the keys `f` answers true for (DEL, EXISTS: a key named
/// twice counts twice, as in Redis).
fn count(args: &[&[u8]], mut f: impl FnMut(&[u8]) -> Result<bool, Error>) -> Result<i64, Error> {
    let mut n = 0;
    for key in &args[1..] {
        n += i64::from(f(key)?);
    }
    Ok(n)
}

/// INCR, DECR, INCRBY, DECRBY: the store's atomic increment. The store
/// refuses a value that is not a decimal i64 and an overflow, each with an
/// `error::other`; they are answered in Redis's words.
fn increment<K: Kv + ?Sized>(db: &Db<K>, key: &[u8], delta: i64, reply: &mut Reply) -> Result<(), Error> {
    match db.increment(key, delta) {
        Ok(n) => reply.int(n),
        Err(e) if out_of_budget(&e) => reply.error(OOM),
        Err(Error::Other(text)) if text.contains("overflow") => {
            reply.error("ERR increment or decrement would overflow")
        }
        Err(Error::Other(_)) => reply.error(NOT_AN_INTEGER),
        Err(e) => return Err(e),
    }
    Ok(())
}

/// A deadline in ms since the epoch for SET's EX/PX/EXAT/PXAT (the value
/// must be positive, as in Redis); None if invalid or out of range.
fn set_deadline(unit: &[u8], n: i64, now: i64) -> Option<i64> {
    if n <= 0 {
        return None;
    }
    match unit {
        b"ex" => n.checked_mul(1000)?.checked_add(now),
        b"px" => n.checked_add(now),
        b"exat" => n.checked_mul(1000),
        _ => Some(n),
    }
}

/// SET key value [NX | XX] [GET] [EX s | PX ms | EXAT s | PXAT ms | KEEPTTL]
fn set<K: Kv + ?Sized>(db: &Db<K>, args: &[&[u8]], reply: &mut Reply) -> Result<(), Error> {
    let (key, value) = (args[1], args[2]);
    let (mut nx, mut xx, mut get, mut keep_ttl) = (false, false, false, false);
    let mut expire: Option<(Vec<u8>, &[u8])> = None;
    let mut i = 3;
    while i < args.len() {
        let option = args[i].to_ascii_lowercase();
        let has_expiry = keep_ttl || expire.is_some();
        match option.as_slice() {
            b"nx" if !xx => nx = true,
            b"xx" if !nx => xx = true,
            b"get" => get = true,
            b"keepttl" if !has_expiry => keep_ttl = true,
            b"ex" | b"px" | b"exat" | b"pxat" if !has_expiry && i + 1 < args.len() => {
                expire = Some((option, args[i + 1]));
                i += 1;
            }
            _ => {
                reply.error(SYNTAX);
                return Ok(());
            }
        }
        i += 1;
    }
    let expiry = match expire {
        None if keep_ttl => Expiry::Keep,
        None => Expiry::Clear,
        Some((unit, n)) => {
            let Some(n) = integer(n) else {
                reply.error(NOT_AN_INTEGER);
                return Ok(());
            };
            match set_deadline(&unit, n, db.now()) {
                Some(at) => Expiry::At(at),
                None => {
                    reply.error("ERR invalid expire time in 'set' command");
                    return Ok(());
                }
            }
        }
    };
    let old = if get { db.get(key)? } else { None };
    if nx || xx {
        let exists = if get { old.is_some() } else { db.exists(key)? };
        if (nx && exists) || (xx && !exists) {
            reply.maybe_bulk(old);
            return Ok(());
        }
    }
    db.set(key, value, expiry)?;
    if get {
        reply.maybe_bulk(old)
    } else {
        reply.ok()
    }
    Ok(())
}

fn mget<K: Kv + ?Sized>(db: &Db<K>, args: &[&[u8]], reply: &mut Reply) -> Result<(), Error> {
    // Every value first: a store error then leaves no half-written array.
    let values = args[1..].iter().map(|key| db.get(key)).collect::<Result<Vec<_>, _>>()?;
    reply.array(values.len());
    for value in values {
        reply.maybe_bulk(value);
    }
    Ok(())
}

fn mset<K: Kv + ?Sized>(db: &Db<K>, args: &[&[u8]], reply: &mut Reply) -> Result<(), Error> {
    if args.len().is_multiple_of(2) {
        reply.error(&arity_error("mset"));
        return Ok(());
    }
    for pair in args[1..].chunks(2) {
        db.set(pair[0], pair[1], Expiry::Clear)?;
    }
    reply.ok();
    Ok(())
}

fn append<K: Kv + ?Sized>(db: &Db<K>, args: &[&[u8]], reply: &mut Reply) -> Result<(), Error> {
    let mut value = db.get(args[1])?.unwrap_or_default();
    if value.len() + args[2].len() > MAX_BULK {
        reply.error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
        return Ok(());
    }
    value.extend_from_slice(args[2]);
    db.set(args[1], &value, Expiry::Keep)?;
    reply.int(value.len() as i64);
    Ok(())
}

/// EXPIRE / PEXPIRE key n [NX | XX | GT | LT]; a deadline not in the
/// future deletes the key.
fn expire<K: Kv + ?Sized>(db: &Db<K>, name: &str, args: &[&[u8]], reply: &mut Reply) -> Result<(), Error> {
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for option in &args[3..] {
        match option.to_ascii_lowercase().as_slice() {
            b"nx" => nx = true,
            b"xx" => xx = true,
            b"gt" => gt = true,
            b"lt" => lt = true,
            _ => {
                reply.error(&format!("ERR Unsupported option {}", String::from_utf8_lossy(option)));
                return Ok(());
            }
        }
    }
    if nx && (xx || gt || lt) {
        reply.error("ERR NX and XX, GT or LT options at the same time are not compatible");
        return Ok(());
    }
    if gt && lt {
        reply.error("ERR GT and LT options at the same time are not compatible");
        return Ok(());
    }
    let Some(n) = integer(args[2]) else {
        reply.error(NOT_AN_INTEGER);
        return Ok(());
    };
    let ms = if name == "expire" { n.checked_mul(1000) } else { Some(n) };
    let Some(at) = ms.and_then(|ms| ms.checked_add(db.now())) else {
        reply.error(&format!("ERR invalid expire time in '{name}' command"));
        return Ok(());
    };
    let allowed = match db.ttl(args[1])? {
        Ttl::Missing => false,
        // No deadline is an infinite one: GT never beats it, LT always does.
        Ttl::Persistent => !xx && !gt,
        Ttl::Until(current) => !nx && (!gt || at > current) && (!lt || at < current),
    };
    if allowed {
        db.set_deadline(args[1], Some(at))?;
    }
    reply.int(i64::from(allowed));
    Ok(())
}

fn persist<K: Kv + ?Sized>(db: &Db<K>, key: &[u8], reply: &mut Reply) -> Result<(), Error> {
    let had_deadline = matches!(db.ttl(key)?, Ttl::Until(_));
    if had_deadline {
        db.set_deadline(key, None)?;
    }
    reply.int(i64::from(had_deadline));
    Ok(())
}

/// GETEX key [EX s | PX ms | EXAT s | PXAT ms | PERSIST]: the value, then
/// the new deadline (a past one deletes the key, as in Redis). As in
/// Redis, the options' syntax is checked first, the time only once the key
/// is found.
fn getex<K: Kv + ?Sized>(db: &Db<K>, args: &[&[u8]], reply: &mut Reply) -> Result<(), Error> {
    let (mut persist, mut expire) = (false, None);
    let mut i = 2;
    while i < args.len() {
        let option = args[i].to_ascii_lowercase();
        match option.as_slice() {
            b"persist" if !persist && expire.is_none() => persist = true,
            b"ex" | b"px" | b"exat" | b"pxat" if !persist && expire.is_none() && i + 1 < args.len() => {
                expire = Some((option, args[i + 1]));
                i += 1;
            }
            _ => {
                reply.error(SYNTAX);
                return Ok(());
            }
        }
        i += 1;
    }
    let Some(value) = db.get(args[1])? else {
        reply.nil();
        return Ok(());
    };
    if let Some((unit, n)) = expire {
        let Some(n) = integer(n) else {
            reply.error(NOT_AN_INTEGER);
            return Ok(());
        };
        let Some(at) = set_deadline(&unit, n, db.now()) else {
            reply.error("ERR invalid expire time in 'getex' command");
            return Ok(());
        };
        db.set_deadline(args[1], Some(at))?;
    } else if persist {
        db.set_deadline(args[1], None)?;
    }
    reply.bulk_owned(value);
    Ok(())
}

/// GETRANGE key start end, with Redis's index rules (negative from the end,
/// clamped, empty when crossed).
fn getrange<K: Kv + ?Sized>(db: &Db<K>, args: &[&[u8]], reply: &mut Reply) -> Result<(), Error> {
    let (Some(mut start), Some(mut end)) = (integer(args[2]), integer(args[3])) else {
        reply.error(NOT_AN_INTEGER);
        return Ok(());
    };
    let value = db.get(args[1])?.unwrap_or_default();
    let len = value.len() as i64;
    if start < 0 && end < 0 && start > end {
        reply.bulk(b"");
        return Ok(());
    }
    if start < 0 {
        start = (len + start).max(0);
    }
    if end < 0 {
        end = (len + end).max(0);
    }
    end = end.min(len - 1);
    if start > end || len == 0 {
        reply.bulk(b"");
    } else {
        reply.bulk(&value[start as usize..=end as usize]);
    }
    Ok(())
}

/// SETRANGE key offset value: overwrites from `offset`, zero-padding a
/// shorter value; keeps the deadline.
fn setrange<K: Kv + ?Sized>(db: &Db<K>, args: &[&[u8]], reply: &mut Reply) -> Result<(), Error> {
    let Some(offset) = integer(args[2]) else {
        reply.error(NOT_AN_INTEGER);
        return Ok(());
    };
    if offset < 0 {
        reply.error("ERR offset is out of range");
        return Ok(());
    }
    let patch = args[3];
    let old = db.get(args[1])?;
    if patch.is_empty() {
        reply.int(old.map_or(0, |v| v.len() as i64));
        return Ok(());
    }
    if offset as u64 + patch.len() as u64 > MAX_BULK as u64 {
        reply.error("ERR string exceeds maximum allowed size (proto-max-bulk-len)");
        return Ok(());
    }
    let mut value = old.unwrap_or_default();
    let (from, to) = (offset as usize, offset as usize + patch.len());
    if value.len() < to {
        value.resize(to, 0);
    }
    value[from..to].copy_from_slice(patch);
    db.set(args[1], &value, Expiry::Keep)?;
    reply.int(value.len() as i64);
    Ok(())
}

fn rename<K: Kv + ?Sized>(db: &Db<K>, nx: bool, args: &[&[u8]], reply: &mut Reply) -> Result<(), Error> {
    let (from, to) = (args[1], args[2]);
    if !db.exists(from)? {
        reply.error("ERR no such key");
        return Ok(());
    }
    if nx && (from == to || db.exists(to)?) {
        reply.int(0);
        return Ok(());
    }
    db.rename(from, to)?;
    if nx {
        reply.int(1)
    } else {
        reply.ok()
    }
    Ok(())
}

/// INCRBYFLOAT key increment, in `long double` arithmetic as Redis does it
/// (see `float`); keeps the deadline. Not atomic across connections.
fn incrbyfloat<K: Kv + ?Sized>(db: &Db<K>, args: &[&[u8]], reply: &mut Reply) -> Result<(), Error> {
    let current = match db.get(args[1])? {
        Some(value) => float::parse(&value),
        None => float::parse(b"0"),
    };
    let (Some(current), Some(by)) = (current, float::parse(args[2])) else {
        reply.error("ERR value is not a valid float");
        return Ok(());
    };
    let Some(sum) = float::add(current, by) else {
        reply.error("ERR increment would produce NaN or Infinity");
        return Ok(());
    };
    let text = float::format(sum);
    db.set(args[1], text.as_bytes(), Expiry::Keep)?;
    reply.bulk(text.as_bytes());
    Ok(())
}

fn msetnx<K: Kv + ?Sized>(db: &Db<K>, args: &[&[u8]], reply: &mut Reply) -> Result<(), Error> {
    if args.len().is_multiple_of(2) {
        reply.error(&arity_error("msetnx"));
        return Ok(());
    }
    for pair in args[1..].chunks(2) {
        if db.exists(pair[0])? {
            reply.int(0);
            return Ok(());
        }
    }
    for pair in args[1..].chunks(2) {
        db.set(pair[0], pair[1], Expiry::Clear)?;
    }
    reply.int(1);
    Ok(())
}

fn flush<K: Kv + ?Sized>(db: &Db<K>, reply: &mut Reply) -> Result<(), Error> {
    db.flush()?;
    reply.ok();
    Ok(())
}

/// A SCAN cursor as Redis reads it (`strtoul`): decimal, an optional sign
/// (`-1` is the largest cursor), nothing else; the empty string is 0.
fn scan_cursor(text: &[u8]) -> Option<u64> {
    let (neg, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() {
        return text.is_empty().then_some(0);
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(if neg { n.wrapping_neg() } else { n })
}

/// SCAN's options: the pattern (None: all) and whether strings are asked
/// for (TYPE of another type: no key); or the error to answer.
fn scan_options<'a>(options: &[&'a [u8]]) -> Result<(Option<&'a [u8]>, bool), &'static str> {
    let (mut pattern, mut only_strings) = (None, true);
    for pair in options.chunks(2) {
        let [option, value] = pair else { return Err(SYNTAX) };
        match option.to_ascii_lowercase().as_slice() {
            b"count" => match integer(value) {
                None => return Err(NOT_AN_INTEGER),
                Some(n) if n < 1 => return Err(SYNTAX),
                Some(_) => {}
            },
            b"match" => pattern = Some(*value).filter(|p| *p != b"*"),
            b"type" => only_strings = value.eq_ignore_ascii_case(b"string"),
            _ => return Err(SYNTAX),
        }
    }
    Ok((pattern, only_strings))
}

/// SCAN cursor [MATCH pattern] [COUNT n] [TYPE type]: one page of the
/// store (up to about a thousand keys; COUNT is a hint, as in Redis, and
/// is not followed). The cursor is the store's: 0 starts, 0 ends.
fn scan<K: Kv + ?Sized>(db: &Db<K>, args: &[&[u8]], reply: &mut Reply) -> Result<(), Error> {
    let Some(cursor) = scan_cursor(args[1]) else {
        reply.error("ERR invalid cursor");
        return Ok(());
    };
    let (pattern, only_strings) = match scan_options(&args[2..]) {
        Ok(options) => options,
        Err(error) => {
            reply.error(error);
            return Ok(());
        }
    };
    let (keys, next) = db.scan((cursor != 0).then_some(cursor))?;
    let keys: Vec<Vec<u8>> = match pattern {
        _ if !only_strings => Vec::new(),
        Some(pattern) => keys.into_iter().filter(|key| glob::matches(pattern, key)).collect(),
        None => keys,
    };
    reply.array(2);
    reply.bulk(next.unwrap_or(0).to_string().as_bytes());
    reply.array(keys.len());
    for key in keys {
        reply.bulk(&key);
    }
    Ok(())
}

/// HELLO [protover [AUTH username password] [SETNAME name]]. pier speaks
/// RESP2 only, so HELLO 3 answers NOPROTO (Redis 6's words for a version
/// it does not serve) and a client stays on RESP2. There are no users: only
/// `default`, with any password, as on a redis-server without `requirepass`.
fn hello(session: &mut Session, args: &[&[u8]], reply: &mut Reply) {
    if let Some(version) = args.get(1) {
        match integer(version) {
            None => return reply.error("ERR Protocol version is not an integer or out of range"),
            Some(2) => {}
            Some(3) => return reply.error("NOPROTO sorry, this protocol version is not supported"),
            Some(_) => return reply.error("NOPROTO unsupported protocol version"),
        }
    }
    let (mut user, mut name) = (None, None);
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - 1 - i;
        if args[i].eq_ignore_ascii_case(b"auth") && more >= 2 {
            user = Some(args[i + 1]);
            i += 3;
        } else if args[i].eq_ignore_ascii_case(b"setname") && more >= 1 {
            name = Some(args[i + 1]);
            i += 2;
        } else {
            return reply.error(&format!("ERR Syntax error in HELLO option '{}'", String::from_utf8_lossy(args[i])));
        }
    }
    if user.is_some_and(|u| u != b"default") {
        return reply.error("WRONGPASS invalid username-password pair or user is disabled.");
    }
    if let Some(name) = name {
        if !valid_client_name(name) {
            return reply.error(BAD_CLIENT_NAME);
        }
        session.name = (!name.is_empty()).then(|| name.to_vec());
    }
    reply.array(14);
    for (key, value) in [("server", "redis"), ("version", REDIS_VERSION)] {
        reply.bulk(key.as_bytes());
        reply.bulk(value.as_bytes());
    }
    reply.bulk(b"proto");
    reply.int(2);
    reply.bulk(b"id");
    reply.int(session.id as i64);
    for (key, value) in [("mode", "standalone"), ("role", "master")] {
        reply.bulk(key.as_bytes());
        reply.bulk(value.as_bytes());
    }
    reply.bulk(b"modules");
    reply.array(0);
}

const BAD_CLIENT_NAME: &str = "ERR Client names cannot contain spaces, newlines or special characters.";

fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|b| (b'!'..=b'~').contains(b))
}

/// COMMAND, COMMAND DOCS, COMMAND INFO: an empty list, which redis-cli
/// takes as "no hints" (it asks at start-up).
fn command(args: &[&[u8]], reply: &mut Reply) {
    let Some(sub) = args.get(1) else { return reply.array(0) };
    match sub.to_ascii_lowercase().as_slice() {
        b"docs" | b"info" | b"list" => reply.array(0),
        b"count" => reply.int(COMMANDS.len() as i64),
        _ => unknown_subcommand("COMMAND", args, reply),
    }
}

/// INFO [section...]: `server`, `clients`, `memory`, `stats` and
/// `keyspace`, with the fields `redis-cli --stat` and dashboards read.
/// Memory is the listener's store against its budget (pier's `maxmemory`
/// is `kv-max-bytes`, and it never evicts); the client and command counts
/// are kept in the store by every connection of the listener (a connection
/// whose instance traps is not taken off `connected_clients`). Other
/// sections are empty, as Redis answers for a section it does not know.
fn info<K: Kv + ?Sized>(db: &Db<K>, args: &[&[u8]], reply: &mut Reply) -> Result<(), Error> {
    let wants = |section: &str| {
        args.len() == 1
            || args[1..].iter().any(|a| {
                let a = String::from_utf8_lossy(a).to_ascii_lowercase();
                a == section || a == "all" || a == "everything" || a == "default"
            })
    };
    let mut sections: Vec<String> = Vec::new();
    if wants("server") {
        sections.push(format!(
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\narch_bits:32\r\nserver_name:pier\r\n"
        ));
    }
    if wants("clients") {
        let connected = db.stat("connected").max(0);
        sections.push(format!("# Clients\r\nconnected_clients:{connected}\r\nblocked_clients:0\r\n"));
    }
    if wants("memory") {
        let u = db.usage();
        sections.push(format!(
            "# Memory\r\nused_memory:{}\r\nmaxmemory:{}\r\nmaxmemory_policy:noeviction\r\nkeys:{}\r\nmaxkeys:{}\r\n",
            u.used_bytes, u.max_bytes, u.keys, u.max_keys
        ));
    }
    if wants("stats") {
        sections.push(format!(
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n",
            db.stat("connections"),
            db.stat("commands")
        ));
    }
    if wants("keyspace") {
        let mut text = "# Keyspace\r\n".to_string();
        let (keys, expires) = db.count()?;
        if keys > 0 {
            text.push_str(&format!("db0:keys={keys},expires={expires},avg_ttl=0\r\n"));
        }
        sections.push(text);
    }
    reply.bulk(sections.join("\r\n").as_bytes());
    Ok(())
}

/// CONFIG GET parameter...: the pairs of `CONFIG` and `timeout` (the
/// listener's) the parameters name (`*` names all); unknown ones are left
/// out, as in Redis.
fn config(session: &Session, args: &[&[u8]], reply: &mut Reply) {
    if !args[1].eq_ignore_ascii_case(b"get") {
        return unknown_subcommand("CONFIG", args, reply);
    }
    if args.len() < 3 {
        return reply.error(&arity_error("config|get"));
    }
    let timeout = session.timeout.to_string();
    let found: Vec<(&str, &str)> = CONFIG
        .iter()
        .copied()
        .chain([("timeout", timeout.as_str())])
        .filter(|(key, _)| args[2..].iter().any(|p| *p == b"*" || p.eq_ignore_ascii_case(key.as_bytes())))
        .collect();
    reply.array(2 * found.len());
    for (key, value) in found {
        reply.bulk(key.as_bytes());
        reply.bulk(value.as_bytes());
    }
}

/// CLIENT SETNAME / GETNAME / ID / SETINFO: what redis-cli and client
/// libraries send on connecting.
fn client(session: &mut Session, args: &[&[u8]], reply: &mut Reply) {
    let sub = args[1].to_ascii_lowercase();
    let arity = match sub.as_slice() {
        b"setname" => 3,
        b"getname" | b"id" => 2,
        b"setinfo" => 4,
        _ => return unknown_subcommand("CLIENT", args, reply),
    };
    if args.len() != arity {
        return reply.error(&arity_error(&format!("client|{}", String::from_utf8_lossy(&sub))));
    }
    match sub.as_slice() {
        b"setname" if !valid_client_name(args[2]) => reply.error(BAD_CLIENT_NAME),
        b"setname" => {
            session.name = (!args[2].is_empty()).then(|| args[2].to_vec());
            reply.ok();
        }
        b"getname" => reply.maybe_bulk(session.name.clone()),
        b"id" => reply.int(session.id as i64),
        _ if ["lib-name", "lib-ver"].iter().any(|a| a.as_bytes().eq_ignore_ascii_case(args[2])) => reply.ok(),
        _ => reply.error(&format!("ERR Unrecognized option '{}'", String::from_utf8_lossy(args[2]))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::memory::Memory;
    use crate::db::{NoStore, Turn, store_key};
    use crate::parse::split_args;

    /// A connection on an in-memory store, with a clock the test moves.
    #[derive(Default)]
    struct Conn {
        kv: Memory,
        session: Session,
        now: i64,
    }

    impl Conn {
        /// Runs one inline command line; the raw reply.
        fn run(&mut self, line: &str) -> String {
            self.run_with(line).0
        }

        fn run_with(&mut self, line: &str) -> (String, Next) {
            let args = split_args(line.as_bytes()).expect("balanced quotes");
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let mut reply = Reply::default();
            let turn = Turn::fixed(self.now);
            let next = run(&Db::new(&self.kv, &turn), &mut self.session, &args, &mut reply);
            (String::from_utf8_lossy(&reply.bytes()).into_owned(), next)
        }
    }

    /// A store at its budget: reads and deletes work, writes answer -OOM.
    struct Full(Memory);

    impl crate::db::Kv for Full {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
            self.0.get(key)
        }
        fn set(&self, _: &str, _: &[u8]) -> Result<(), Error> {
            Err(Error::Other("out of budget: kv-max-bytes 64MiB reached".into()))
        }
        fn delete(&self, key: &str) -> Result<(), Error> {
            self.0.delete(key)
        }
        fn exists(&self, key: &str) -> Result<bool, Error> {
            self.0.exists(key)
        }
        fn increment(&self, _: &str, _: i64) -> Result<i64, Error> {
            Err(Error::Other("out of budget: kv-max-keys 1000000 reached".into()))
        }
        fn usage(&self) -> pier_guest::limits::Usage {
            self.0.usage()
        }
        fn list_keys(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), Error> {
            self.0.list_keys(cursor)
        }
    }

    #[test]
    fn at_the_budget_writes_answer_oom_and_reads_go_on() {
        let mut c = Conn::default();
        c.run("set k v");
        let full = Full(std::mem::take(&mut c.kv));
        let turn = Turn::fixed(0);
        let db = Db::new(&full, &turn);
        let run = |line: &str| {
            let args = split_args(line.as_bytes()).unwrap();
            let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let mut reply = Reply::default();
            run(&db, &mut Session::default(), &args, &mut reply);
            String::from_utf8_lossy(&reply.bytes()).into_owned()
        };
        let oom = "-OOM command not allowed when used memory > 'maxmemory'.\r\n";
        assert_eq!(run("set k2 v"), oom);
        assert_eq!(run("incr n"), oom);
        assert_eq!(run("get k"), "$1\r\nv\r\n");
        assert_eq!(run("del k"), ":1\r\n");
    }

    #[test]
    fn info_reports_the_store_against_its_budget() {
        let mut c = Conn::default();
        c.run("set k v");
        let info = c.run("info memory");
        // The key, and INFO's command counter: 98 + 111 bytes.
        assert!(info.contains("used_memory:209\r\n"), "{info}");
        assert!(info.contains("maxmemory:67108864\r\nmaxmemory_policy:noeviction"), "{info}");
        assert!(!info.contains("Keyspace"), "{info}");
        assert!(c.run("info").contains("db0:keys=1,expires=0"));
        assert!(c.run("info server").contains("redis_version:7.0.15\r\n"));
        assert_eq!(c.run("info nosuch"), "$0\r\n\r\n");
        c.run("set t v ex 100");
        let all = c.run("info");
        for field in ["connected_clients:", "blocked_clients:0", "total_commands_processed:", "db0:keys=2,expires=1"] {
            assert!(all.contains(field), "{field} in {all}");
        }
        assert!(all.contains("\r\n\r\n# Keyspace\r\n"), "sections apart by a blank line");
    }

    #[test]
    fn strings() {
        let mut c = Conn::default();
        assert_eq!(c.run("PING"), "+PONG\r\n");
        assert_eq!(c.run("ping hello"), "$5\r\nhello\r\n");
        assert_eq!(c.run("echo \"a b\""), "$3\r\na b\r\n");
        assert_eq!(c.run("get k"), "$-1\r\n");
        assert_eq!(c.run("set k v"), "+OK\r\n");
        assert_eq!(c.run("GET k"), "$1\r\nv\r\n");
        assert_eq!(c.run("set k w nx"), "$-1\r\n");
        assert_eq!(c.run("set other w xx"), "$-1\r\n");
        assert_eq!(c.run("set k w xx get"), "$1\r\nv\r\n");
        assert_eq!(c.run("set k x nx get"), "$1\r\nw\r\n", "NX with GET answers the old value");
        assert_eq!(c.run("set fresh x get"), "$-1\r\n");
        assert_eq!(c.run("mset a 1 b 2"), "+OK\r\n");
        assert_eq!(c.run("mget a nope b"), "*3\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n");
        assert_eq!(c.run("append a xyz"), ":4\r\n");
        assert_eq!(c.run("append new abc"), ":3\r\n");
        assert_eq!(c.run("strlen a"), ":4\r\n");
        assert_eq!(c.run("strlen nope"), ":0\r\n");
        assert_eq!(c.run("exists a b nope a"), ":3\r\n");
        assert_eq!(c.run("del a nope a"), ":1\r\n");
        assert_eq!(c.run("exists a"), ":0\r\n");
    }

    #[test]
    fn counters() {
        let mut c = Conn::default();
        assert_eq!(c.run("incr n"), ":1\r\n");
        assert_eq!(c.run("incrby n 10"), ":11\r\n");
        assert_eq!(c.run("decr n"), ":10\r\n");
        assert_eq!(c.run("decrby n 25"), ":-15\r\n");
        assert_eq!(c.run("get n"), "$3\r\n-15\r\n");
        assert_eq!(c.run("set s abc"), "+OK\r\n");
        assert_eq!(c.run("incr s"), "-ERR value is not an integer or out of range\r\n");
        assert_eq!(c.run("incrby n abc"), "-ERR value is not an integer or out of range\r\n");
        assert_eq!(c.run("incrby n +5"), "-ERR value is not an integer or out of range\r\n");
        assert_eq!(c.run("decrby n -9223372036854775808"), "-ERR decrement would overflow\r\n");
        assert_eq!(c.run("set n 9223372036854775807"), "+OK\r\n");
        assert_eq!(c.run("incr n"), "-ERR increment or decrement would overflow\r\n");
    }

    #[test]
    fn expiry() {
        let mut c = Conn { now: 1_000_000, ..Conn::default() };
        assert_eq!(c.run("set k v ex 10"), "+OK\r\n");
        assert_eq!(c.run("ttl k"), ":10\r\n");
        assert_eq!(c.run("pttl k"), ":10000\r\n");
        c.now += 9_400;
        assert_eq!(c.run("ttl k"), ":1\r\n", "rounded like Redis");
        assert_eq!(c.run("get k"), "$1\r\nv\r\n");
        c.now += 600;
        assert_eq!(c.run("get k"), "$-1\r\n");
        assert_eq!(c.run("ttl k"), ":-2\r\n");
        assert!(c.kv.keys().is_empty(), "expired lazily, deadline included");

        assert_eq!(c.run("set k v px 200"), "+OK\r\n");
        assert_eq!(c.run("pttl k"), ":200\r\n");
        assert_eq!(c.run("set k v keepttl"), "+OK\r\n");
        assert_eq!(c.run("pttl k"), ":200\r\n");
        assert_eq!(c.run("append k w"), ":2\r\n");
        assert_eq!(c.run("incr counter"), ":1\r\n");
        assert_eq!(c.run("pttl k"), ":200\r\n", "APPEND keeps the deadline");
        assert_eq!(c.run("set k v"), "+OK\r\n");
        assert_eq!(c.run("ttl k"), ":-1\r\n", "SET clears it");
        assert_eq!(c.run("set k v exat 1100"), "+OK\r\n");
        assert_eq!(c.run("ttl k"), ":90\r\n");
        assert_eq!(c.run("set k v pxat 1100000"), "+OK\r\n");
        assert_eq!(c.run("ttl k"), ":90\r\n");

        assert_eq!(c.run("set k v"), "+OK\r\n");
        assert_eq!(c.run("expire k 100"), ":1\r\n");
        assert_eq!(c.run("ttl k"), ":100\r\n");
        assert_eq!(c.run("expire k 10 nx"), ":0\r\n");
        assert_eq!(c.run("expire k 10 gt"), ":0\r\n");
        assert_eq!(c.run("expire k 50 lt"), ":1\r\n");
        assert_eq!(c.run("pexpire k 60000 xx"), ":1\r\n");
        assert_eq!(c.run("pttl k"), ":60000\r\n");
        assert_eq!(c.run("persist k"), ":1\r\n");
        assert_eq!(c.run("persist k"), ":0\r\n");
        assert_eq!(c.run("expire k 10 xx"), ":0\r\n");
        assert_eq!(c.run("expire k 10 gt"), ":0\r\n", "no deadline is infinite");
        assert_eq!(c.run("expire k 10 lt"), ":1\r\n");
        assert_eq!(c.run("expire nope 10"), ":0\r\n");
        assert_eq!(c.run("expire k -1"), ":1\r\n");
        assert_eq!(c.run("exists k"), ":0\r\n", "a past deadline deletes");
        assert_eq!(c.run("persist k"), ":0\r\n");
    }

    #[test]
    fn option_errors_as_redis_words_them() {
        let mut c = Conn::default();
        let cases = [
            ("set k v ex 0", "-ERR invalid expire time in 'set' command\r\n"),
            ("set k v px -5", "-ERR invalid expire time in 'set' command\r\n"),
            ("set k v ex 9223372036854775807", "-ERR invalid expire time in 'set' command\r\n"),
            ("set k v ex abc", "-ERR value is not an integer or out of range\r\n"),
            ("set k v ex", "-ERR syntax error\r\n"),
            ("set k v ex 10 px 100", "-ERR syntax error\r\n"),
            ("set k v ex 10 keepttl", "-ERR syntax error\r\n"),
            ("set k v nx xx", "-ERR syntax error\r\n"),
            ("set k v foo", "-ERR syntax error\r\n"),
            ("set k v ex abc foo", "-ERR syntax error\r\n"),
            ("expire k 10 nx xx", "-ERR NX and XX, GT or LT options at the same time are not compatible\r\n"),
            ("expire k 10 gt lt", "-ERR GT and LT options at the same time are not compatible\r\n"),
            ("expire k abc", "-ERR value is not an integer or out of range\r\n"),
            ("expire k 9223372036854775807", "-ERR invalid expire time in 'expire' command\r\n"),
            ("expire k 10 FOO", "-ERR Unsupported option FOO\r\n"),
        ];
        for (line, want) in cases {
            assert_eq!(c.run(line), want, "{line}");
        }
        assert!(c.kv.0.borrow().is_empty(), "nothing was written");
    }

    #[test]
    fn errors_in_redis_form() {
        let mut c = Conn::default();
        assert_eq!(c.run("foo"), "-ERR unknown command 'foo', with args beginning with: \r\n");
        assert_eq!(c.run("foo bar baz"), "-ERR unknown command 'foo', with args beginning with: 'bar' 'baz' \r\n");
        assert_eq!(
            c.run("\"f\\r\\noo\" \"a\\nb\""),
            "-ERR unknown command 'f  oo', with args beginning with: 'a b' \r\n",
            "no line break escapes into the reply"
        );
        let long = c.run(&format!("foo {}", "x ".repeat(200)));
        assert_eq!(long.matches("'x'").count(), 32, "arguments shown up to 128 bytes: {long}");
        assert_eq!(c.run("get"), "-ERR wrong number of arguments for 'get' command\r\n");
        assert_eq!(c.run("GET a b"), "-ERR wrong number of arguments for 'get' command\r\n");
        assert_eq!(c.run("ping a b"), "-ERR wrong number of arguments for 'ping' command\r\n");
        assert_eq!(c.run("mset a"), "-ERR wrong number of arguments for 'mset' command\r\n");
        assert_eq!(c.run("mset a 1 b"), "-ERR wrong number of arguments for 'mset' command\r\n");
        assert_eq!(c.run("set k"), "-ERR wrong number of arguments for 'set' command\r\n");
    }

    #[test]
    fn what_clients_send_on_connecting() {
        let mut c = Conn { session: Session { id: 42, ..Session::default() }, ..Conn::default() };
        assert_eq!(c.run("COMMAND"), "*0\r\n");
        assert_eq!(c.run("command docs"), "*0\r\n");
        assert_eq!(c.run("command count"), format!(":{}\r\n", COMMANDS.len()));
        assert_eq!(c.run("command foo"), "-ERR unknown subcommand 'foo'. Try COMMAND HELP.\r\n");
        assert_eq!(
            c.run("config get save appendonly nothing"),
            "*4\r\n$4\r\nsave\r\n$0\r\n\r\n$10\r\nappendonly\r\n$2\r\nno\r\n"
        );
        assert_eq!(c.run("config get nothing"), "*0\r\n");
        assert_eq!(c.run("config get timeout"), "*2\r\n$7\r\ntimeout\r\n$1\r\n0\r\n", "Redis's default");
        c.session.timeout = 300;
        assert_eq!(c.run("CONFIG GET Timeout"), "*2\r\n$7\r\ntimeout\r\n$3\r\n300\r\n");
        assert!(c.run("config get *").ends_with("$7\r\ntimeout\r\n$3\r\n300\r\n"));
        assert_eq!(c.run("config get"), "-ERR wrong number of arguments for 'config|get' command\r\n");
        assert_eq!(c.run("config set save x"), "-ERR unknown subcommand 'set'. Try CONFIG HELP.\r\n");
        assert_eq!(c.run("client getname"), "$-1\r\n");
        assert_eq!(c.run("client setname worker-1"), "+OK\r\n");
        assert_eq!(c.run("client getname"), "$8\r\nworker-1\r\n");
        assert_eq!(
            c.run("client setname \"a b\""),
            "-ERR Client names cannot contain spaces, newlines or special characters.\r\n"
        );
        assert_eq!(c.run("client setinfo lib-name redis-py"), "+OK\r\n");
        assert_eq!(c.run("client setinfo color red"), "-ERR Unrecognized option 'color'\r\n");
        assert_eq!(c.run("client id"), ":42\r\n");
        assert_eq!(c.run("client setname"), "-ERR wrong number of arguments for 'client|setname' command\r\n");
        assert_eq!(c.run("client kill x"), "-ERR unknown subcommand 'kill'. Try CLIENT HELP.\r\n");
        assert_eq!(c.run("select 0"), "+OK\r\n");
        assert_eq!(c.run("select 1"), "-ERR DB index is out of range\r\n");
        assert_eq!(c.run("select x"), "-ERR value is not an integer or out of range\r\n");
        assert_eq!(c.run_with("quit"), ("+OK\r\n".to_string(), Next::Quit));
        assert_eq!(c.run_with("QUIT now"), ("+OK\r\n".to_string(), Next::Quit));
    }

    #[test]
    fn binary_keys_and_values() {
        let c = Conn::default();
        let mut session = Session::default();
        let mut reply = Reply::default();
        let turn_db = Turn::fixed(0);
        let db = Db::new(&c.kv, &turn_db);
        run(&db, &mut session, &[b"SET", b"\xff\r\n", b"\0\r\n"], &mut reply);
        run(&db, &mut session, &[b"GET", b"\xff\r\n"], &mut reply);
        assert_eq!(reply.bytes(), b"+OK\r\n$3\r\n\0\r\n\r\n");
        assert!(c.kv.0.borrow().contains_key(&*store_key(b"\xff\r\n")));
    }

    #[test]
    fn without_a_store_data_commands_answer_an_error() {
        let mut session = Session::default();
        let mut reply = Reply::default();
        let turn_db = Turn::fixed(0);
        let db = Db::new(&NoStore, &turn_db);
        run(&db, &mut session, &[b"GET", b"k"], &mut reply);
        run(&db, &mut session, &[b"INCR", b"k"], &mut reply);
        run(&db, &mut session, &[b"PING"], &mut reply);
        let want = "-ERR the listener's key-value store is not available\r\n";
        assert_eq!(String::from_utf8(reply.bytes()).unwrap(), format!("{want}{want}+PONG\r\n"));
    }
}
