//! The commands, in Redis's own reply and error forms.

use pier_guest::keyvalue::atomics;
use pier_guest::keyvalue::store::{Bucket, Error};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(PartialEq, Eq)]
pub enum Next {
    Go,
    Quit,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn key(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ttl_key(key: &str) -> String {
    format!("\0ttl:{key}")
}

/// Reply writers.
struct Reply<'a>(&'a mut Vec<u8>);

impl Reply<'_> {
    fn simple(&mut self, text: &str) {
        self.0.extend_from_slice(format!("+{text}\r\n").as_bytes());
    }
    fn error(&mut self, text: &str) {
        self.0.extend_from_slice(format!("-{text}\r\n").as_bytes());
    }
    fn int(&mut self, n: i64) {
        self.0.extend_from_slice(format!(":{n}\r\n").as_bytes());
    }
    fn bulk(&mut self, value: Option<&[u8]>) {
        match value {
            None => self.0.extend_from_slice(b"$-1\r\n"),
            Some(v) => {
                self.0.extend_from_slice(format!("${}\r\n", v.len()).as_bytes());
                self.0.extend_from_slice(v);
                self.0.extend_from_slice(b"\r\n");
            }
        }
    }
    fn array_len(&mut self, n: usize) {
        self.0.extend_from_slice(format!("*{n}\r\n").as_bytes());
    }
    fn store_error(&mut self, e: Error) {
        match e {
            Error::Other(text) if text.contains("not an integer") => {
                self.error("ERR value is not an integer or out of range")
            }
            Error::Other(text) if text.contains("overflow") => self.error("ERR increment or decrement would overflow"),
            Error::Other(text) => self.error(&format!("ERR {text}")),
            Error::NoSuchStore => self.error("ERR no such store"),
            Error::AccessDenied => self.error("ERR access denied"),
        }
    }
}

/// The store with lazy expiry.
struct Db<'a>(&'a Bucket);

impl Db<'_> {
    /// Deletes `key` if its deadline has passed; true if it did. One store
    /// call for a key without an expiry (the common case).
    fn expired(&self, key: &str) -> Result<bool, Error> {
        match self.deadline(key)? {
            Some(deadline) if deadline <= now_ms() => {
                self.0.delete(key)?;
                self.0.delete(&ttl_key(key))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// True if `key` exists and has not expired.
    fn live(&self, key: &str) -> Result<bool, Error> {
        Ok(!self.expired(key)? && self.0.exists(key)?)
    }

    fn deadline(&self, key: &str) -> Result<Option<i64>, Error> {
        Ok(self.0.get(&ttl_key(key))?.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        if self.expired(key)? { Ok(None) } else { self.0.get(key) }
    }

    fn set(&self, key: &str, value: &[u8], deadline: Option<i64>, keep_ttl: bool) -> Result<(), Error> {
        self.0.set(key, value)?;
        match deadline {
            Some(at) => self.0.set(&ttl_key(key), at.to_string().as_bytes()),
            None if !keep_ttl => self.0.delete(&ttl_key(key)),
            None => Ok(()),
        }
    }

    fn delete(&self, key: &str) -> Result<bool, Error> {
        let live = self.live(key)?;
        self.0.delete(key)?;
        self.0.delete(&ttl_key(key))?;
        Ok(live)
    }

    fn incr(&self, key: &str, delta: i64) -> Result<i64, Error> {
        self.expired(key)?;
        atomics::increment(self.0, key, delta as u64).map(|v| v as i64)
    }
}

fn arity_error(reply: &mut Reply, name: &str) {
    reply.error(&format!("ERR wrong number of arguments for '{name}' command"));
}

fn int_arg(bytes: &[u8]) -> Option<i64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

/// Runs one command, appending its reply to `out`.
pub fn run(bucket: &Bucket, args: &[Vec<u8>], out: &mut Vec<u8>) -> Next {
    let mut reply = Reply(out);
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let db = Db(bucket);
    let argc = args.len();
    let result: Result<(), Error> = (|| {
        match (name.as_str(), argc) {
            ("ping", 1) => reply.simple("PONG"),
            ("ping", 2) => reply.bulk(Some(&args[1])),
            ("echo", 2) => reply.bulk(Some(&args[1])),
            ("get", 2) => reply.bulk(db.get(&key(&args[1]))?.as_deref()),
            ("set", 3..) => return set(&db, &args[1..], &mut reply),
            ("del", 2..) => {
                let mut n = 0;
                for k in &args[1..] {
                    n += i64::from(db.delete(&key(k))?);
                }
                reply.int(n);
            }
            ("exists", 2..) => {
                let mut n = 0;
                for k in &args[1..] {
                    n += i64::from(db.live(&key(k))?);
                }
                reply.int(n);
            }
            ("incr", 2) => incr(&db, &args[1], 1, &mut reply)?,
            ("decr", 2) => incr(&db, &args[1], -1, &mut reply)?,
            ("incrby" | "decrby", 3) => match int_arg(&args[2]) {
                Some(n) => incr(&db, &args[1], if name == "incrby" { n } else { n.wrapping_neg() }, &mut reply)?,
                None => reply.error("ERR value is not an integer or out of range"),
            },
            ("mget", 2..) => {
                reply.array_len(argc - 1);
                for k in &args[1..] {
                    reply.bulk(db.get(&key(k))?.as_deref());
                }
            }
            ("mset", n) if n >= 3 && n % 2 == 1 => {
                for pair in args[1..].chunks(2) {
                    db.set(&key(&pair[0]), &pair[1], None, false)?;
                }
                reply.simple("OK");
            }
            ("append", 3) => {
                let k = key(&args[1]);
                let mut value = db.get(&k)?.unwrap_or_default();
                value.extend_from_slice(&args[2]);
                db.set(&k, &value, None, true)?;
                reply.int(value.len() as i64);
            }
            ("strlen", 2) => reply.int(db.get(&key(&args[1]))?.map_or(0, |v| v.len() as i64)),
            ("expire" | "pexpire", 3) => {
                let Some(n) = int_arg(&args[2]) else {
                    reply.error("ERR value is not an integer or out of range");
                    return Ok(());
                };
                let k = key(&args[1]);
                if db.live(&k)? {
                    let ms = if name == "expire" { n.saturating_mul(1000) } else { n };
                    bucket.set(&ttl_key(&k), now_ms().saturating_add(ms).to_string().as_bytes())?;
                    reply.int(1);
                } else {
                    reply.int(0);
                }
            }
            ("ttl" | "pttl", 2) => {
                let k = key(&args[1]);
                let left = if !db.live(&k)? {
                    -2
                } else {
                    match db.deadline(&k)? {
                        None => -1,
                        Some(at) => {
                            let ms = (at - now_ms()).max(0);
                            if name == "ttl" { (ms + 500) / 1000 } else { ms }
                        }
                    }
                };
                reply.int(left);
            }
            // Enough for redis-cli and redis-benchmark: no commands to
            // document, every configuration value empty.
            ("config", 3..) if args[1].eq_ignore_ascii_case(b"get") => {
                reply.array_len(2 * (argc - 2));
                for param in &args[2..] {
                    reply.bulk(Some(param));
                    reply.bulk(Some(b""));
                }
            }
            ("command", _) | ("config", _) => reply.array_len(0),
            ("client", _) | ("select", 2) => reply.simple("OK"),
            ("quit", _) => {
                reply.simple("OK");
                return Err(Error::Other("\0quit".into()));
            }
            (
                "ping" | "echo" | "get" | "set" | "del" | "exists" | "incr" | "decr" | "incrby" | "decrby" | "mget"
                | "mset" | "append" | "strlen" | "expire" | "pexpire" | "ttl" | "pttl" | "select",
                _,
            ) => arity_error(&mut reply, &name),
            _ => {
                let shown: Vec<String> =
                    args[1..].iter().take(8).map(|a| format!("'{}'", String::from_utf8_lossy(a))).collect();
                reply.error(&format!(
                    "ERR unknown command '{}', with args beginning with: {}",
                    String::from_utf8_lossy(&args[0]),
                    shown.join(" ")
                ));
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Next::Go,
        Err(Error::Other(text)) if text == "\0quit" => Next::Quit,
        Err(e) => {
            reply.store_error(e);
            Next::Go
        }
    }
}

fn incr(db: &Db, k: &[u8], delta: i64, reply: &mut Reply) -> Result<(), Error> {
    match db.incr(&key(k), delta) {
        Ok(n) => reply.int(n),
        Err(e) => reply.store_error(e),
    }
    Ok(())
}

/// SET key value [EX s | PX ms] [NX | XX] [KEEPTTL]
fn set(db: &Db, args: &[Vec<u8>], reply: &mut Reply) -> Result<(), Error> {
    let k = key(&args[0]);
    let (mut deadline, mut nx, mut xx, mut keep_ttl) = (None, false, false, false);
    let mut opts = args[2..].iter();
    while let Some(opt) = opts.next() {
        match String::from_utf8_lossy(opt).to_ascii_lowercase().as_str() {
            unit @ ("ex" | "px") => {
                let Some(n) = opts.next().and_then(|v| int_arg(v)).filter(|&n| n > 0) else {
                    reply.error("ERR invalid expire time in 'set' command");
                    return Ok(());
                };
                let ms = if unit == "ex" { n.saturating_mul(1000) } else { n };
                deadline = Some(now_ms().saturating_add(ms));
            }
            "nx" => nx = true,
            "xx" => xx = true,
            "keepttl" => keep_ttl = true,
            _ => {
                reply.error("ERR syntax error");
                return Ok(());
            }
        }
    }
    if nx && xx {
        reply.error("ERR syntax error");
        return Ok(());
    }
    if nx || xx {
        let exists = db.live(&k)?;
        if (nx && exists) || (xx && !exists) {
            reply.bulk(None);
            return Ok(());
        }
    }
    db.set(&k, &args[1], deadline, keep_ttl)?;
    reply.simple("OK");
    Ok(())
}
