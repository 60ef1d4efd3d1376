//! Redis keys on a `wasi:keyvalue` bucket: key encoding and lazy expiry.
//!
//! The bucket is the listener's, shared by all its connections. It has no
//! expiry of its own, so a key's deadline (ms since the Unix epoch, as
//! decimal text) is kept under a companion key, `"\0ttl:" + key`, and checked
//! whenever the key is touched; an expired key is deleted then (Redis's lazy
//! expiry, without the active cycle: an expired key nobody touches stays in
//! memory). Until some key gets a deadline, a mark key is absent and no
//! deadline is looked up or cleared at all (see `DEADLINE_MARK`).
//!
//! The bucket offers no compare-and-set, so only INCR and friends (the atomic
//! increment) are atomic across connections; SET NX/XX, APPEND, RENAME,
//! INCRBYFLOAT, SETRANGE and the expiry commands read, then write.
//!
//! Keyspace walks (KEYS, SCAN, DBSIZE, RANDOMKEY, FLUSHDB) go through the
//! store's `list-keys` one page at a time: the host holds its lock for one
//! page only, and its cursor survives concurrent writes (see pier's
//! `host/src/services/keyvalue.rs`). Keys starting with NUL other than
//! `"\0x:"` are pier's own (deadlines, the mark, the INFO counters) and are
//! never shown.

use pier_guest::keyvalue::atomics;
use pier_guest::keyvalue::store::{Bucket, Error};
use pier_guest::limits::{self, Usage};
use std::borrow::Cow;
use std::cell::Cell;

/// The store operations the commands use: `wasi:keyvalue`'s, with pier's
/// signed increment. A trait so that the commands can be unit-tested on the
/// native target without a host.
pub trait Kv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error>;
    fn set(&self, key: &str, value: &[u8]) -> Result<(), Error>;
    fn delete(&self, key: &str) -> Result<(), Error>;
    fn exists(&self, key: &str) -> Result<bool, Error>;
    /// Adds `delta` to the decimal integer at `key` (absent: 0), atomically.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, Error>;
    /// What the listener's store holds against its budget (INFO memory).
    fn usage(&self) -> Usage;
    /// One page of keys from `cursor` (None: the start) and the next
    /// page's cursor (None: that was the last).
    fn list_keys(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), Error>;
}

impl Kv for Bucket {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        Bucket::get(self, key)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
        Bucket::set(self, key, value)
    }
    fn delete(&self, key: &str) -> Result<(), Error> {
        Bucket::delete(self, key)
    }
    fn exists(&self, key: &str) -> Result<bool, Error> {
        Bucket::exists(self, key)
    }
    fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
        // pier reads value and delta as signed two's complement (see
        // `world connection-handler` in pier.wit), so the casts round-trip.
        atomics::increment(self, key, delta as u64).map(|n| n as i64)
    }
    fn usage(&self) -> Usage {
        limits::keyvalue_usage()
    }
    fn list_keys(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), Error> {
        Bucket::list_keys(self, cursor).map(|page| (page.keys, page.cursor))
    }
}

/// Stands in when the listener's bucket cannot be opened: every data
/// command answers an error, PING and QUIT still work.
pub struct NoStore;

impl Kv for NoStore {
    fn get(&self, _: &str) -> Result<Option<Vec<u8>>, Error> {
        Err(Error::NoSuchStore)
    }
    fn set(&self, _: &str, _: &[u8]) -> Result<(), Error> {
        Err(Error::NoSuchStore)
    }
    fn delete(&self, _: &str) -> Result<(), Error> {
        Err(Error::NoSuchStore)
    }
    fn exists(&self, _: &str) -> Result<bool, Error> {
        Err(Error::NoSuchStore)
    }
    fn increment(&self, _: &str, _: i64) -> Result<i64, Error> {
        Err(Error::NoSuchStore)
    }
    fn usage(&self) -> Usage {
        Usage { used_bytes: 0, max_bytes: 0, keys: 0, max_keys: 0 }
    }
    fn list_keys(&self, _: Option<u64>) -> Result<(Vec<String>, Option<u64>), Error> {
        Err(Error::NoSuchStore)
    }
}

/// The store key for a Redis key. `wasi:keyvalue` keys are strings and Redis
/// keys are bytes: a UTF-8 key not starting with NUL is used as is (so other
/// handlers of the listener see readable keys); any other key becomes
/// `"\0x:"` and its bytes in hex. The mapping is one-to-one, and no Redis
/// key maps into the `"\0ttl:"` namespace.
pub fn store_key(key: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(key) {
        Ok(text) if !text.starts_with('\0') => Cow::Borrowed(text),
        _ => {
            let mut hex = String::with_capacity(3 + 2 * key.len());
            hex.push_str("\0x:");
            for b in key {
                hex.push_str(&format!("{b:02x}"));
            }
            Cow::Owned(hex)
        }
    }
}

/// The Redis key a store key stands for; None for pier's own keys (the
/// inverse of `store_key`).
pub fn redis_key(stored: &str) -> Option<Vec<u8>> {
    let Some(rest) = stored.strip_prefix('\0') else { return Some(stored.as_bytes().to_vec()) };
    let hex = rest.strip_prefix("x:")?.as_bytes();
    hex.chunks(2).map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()).collect()
}

/// INFO's counters, under `"\0stat:" + name` (kept by FLUSHDB).
const STAT_PREFIX: &str = "\0stat:";

/// A stored deadline: decimal ms since the epoch.
fn parse_deadline(text: Option<Vec<u8>>) -> Option<i64> {
    std::str::from_utf8(&text?).ok()?.parse().ok()
}

fn ttl_key(key: &str) -> String {
    format!("\0ttl:{key}")
}

/// What SET does with an existing deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Remove it (plain SET, MSET).
    Clear,
    /// Keep it (SET KEEPTTL, APPEND).
    Keep,
    /// Replace it with this deadline (ms since the epoch).
    At(i64),
}

/// A key's time to live, for TTL and the EXPIRE options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Missing,
    Persistent,
    /// The deadline, ms since the epoch (in the future).
    Until(i64),
}

/// Marks that some key of the bucket has, or once had, a deadline. It is
/// written before the first deadline and never removed, so while it is
/// absent no key has a deadline: GET needs no deadline lookup and SET no
/// deadline to clear, one store call per command instead of two.
const DEADLINE_MARK: &str = "\0ttl-used";

/// One turn of the connection's loop (a batch of pipelined commands): the
/// clock and the deadline mark, each read at most once, when a command
/// first needs it, as Redis reads its clock once per event-loop turn.
/// (A deadline another connection sets during the turn may go unseen until
/// the next one: a window of microseconds, like the read-then-write of
/// SET NX noted above.)
pub struct Turn {
    read: fn() -> i64,
    now: Cell<Option<i64>>,
    deadlines: Cell<Option<bool>>,
}

impl Turn {
    pub fn new(read: fn() -> i64) -> Self {
        Turn { read, now: Cell::new(None), deadlines: Cell::new(None) }
    }

    /// A turn whose clock is stopped at `ms`, for tests.
    #[cfg(test)]
    pub fn fixed(ms: i64) -> Self {
        Turn {
            read: || unreachable!("a fixed clock is never read"),
            now: Cell::new(Some(ms)),
            deadlines: Cell::new(None),
        }
    }

    /// Milliseconds since the Unix epoch.
    fn now(&self) -> i64 {
        match self.now.get() {
            Some(ms) => ms,
            None => {
                let ms = (self.read)();
                self.now.set(Some(ms));
                ms
            }
        }
    }
}

/// The bucket seen in one turn: its clock decides what has expired.
pub struct Db<'a, K: Kv + ?Sized> {
    kv: &'a K,
    turn: &'a Turn,
}

impl<'a, K: Kv + ?Sized> Db<'a, K> {
    /// The store's usage against its budget.
    pub fn usage(&self) -> Usage {
        self.kv.usage()
    }

    pub fn new(kv: &'a K, turn: &'a Turn) -> Self {
        Db { kv, turn }
    }

    pub fn now(&self) -> i64 {
        self.turn.now()
    }

    /// Whether any key may have a deadline (the mark, read once a turn).
    fn deadlines_possible(&self) -> Result<bool, Error> {
        if let Some(known) = self.turn.deadlines.get() {
            return Ok(known);
        }
        let marked = self.kv.exists(DEADLINE_MARK)?;
        self.turn.deadlines.set(Some(marked));
        Ok(marked)
    }

    /// Stores a key's deadline, marking the bucket first.
    fn store_deadline(&self, key: &str, at: i64) -> Result<(), Error> {
        if self.turn.deadlines.get() != Some(true) {
            self.kv.set(DEADLINE_MARK, b"1")?;
            self.turn.deadlines.set(Some(true));
        }
        self.kv.set(&ttl_key(key), at.to_string().as_bytes())
    }

    /// Removes a key's deadline, if any key may have one.
    fn clear_deadline(&self, key: &str) -> Result<(), Error> {
        if self.deadlines_possible()? { self.kv.delete(&ttl_key(key)) } else { Ok(()) }
    }

    fn deadline(&self, key: &str) -> Result<Option<i64>, Error> {
        if !self.deadlines_possible()? {
            return Ok(None);
        }
        Ok(parse_deadline(self.kv.get(&ttl_key(key))?))
    }

    /// Deletes the key (stored form) if `deadline` has passed; true if so.
    fn expire_if_due(&self, key: &str, deadline: Option<i64>) -> Result<bool, Error> {
        match deadline {
            Some(at) if at <= self.now() => {
                self.kv.delete(key)?;
                self.kv.delete(&ttl_key(key))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let key = store_key(key);
        // The value first: a missing key needs no deadline lookup.
        match self.kv.get(&key)? {
            Some(value) if !self.expire_if_due(&key, self.deadline(&key)?)? => Ok(Some(value)),
            _ => Ok(None),
        }
    }

    pub fn exists(&self, key: &[u8]) -> Result<bool, Error> {
        let key = store_key(key);
        Ok(self.kv.exists(&key)? && !self.expire_if_due(&key, self.deadline(&key)?)?)
    }

    pub fn set(&self, key: &[u8], value: &[u8], expiry: Expiry) -> Result<(), Error> {
        let key = store_key(key);
        self.kv.set(&key, value)?;
        match expiry {
            Expiry::Clear => self.clear_deadline(&key),
            Expiry::Keep => Ok(()),
            Expiry::At(at) => self.store_deadline(&key, at),
        }
    }

    /// Deletes a key; true if it existed (and had not expired).
    pub fn delete(&self, key: &[u8]) -> Result<bool, Error> {
        let existed = self.exists(key)?;
        if existed {
            let key = store_key(key);
            self.kv.delete(&key)?;
            self.clear_deadline(&key)?;
        }
        Ok(existed)
    }

    /// The store's atomic increment, after lazy expiry (an expired counter
    /// starts again from 0). A deadline the key has stays, as in Redis.
    /// The value is read first (one call, as `exists` would be) so that
    /// only Redis's strict integers count: the store also takes `+7` and
    /// `007`, which Redis refuses.
    pub fn increment(&self, key: &[u8], delta: i64) -> Result<i64, Error> {
        if let Some(value) = self.get(key)?
            && crate::parse::integer(&value).is_none()
        {
            return Err(Error::Other("value is not an integer or out of range".into()));
        }
        self.kv.increment(&store_key(key), delta)
    }

    pub fn ttl(&self, key: &[u8]) -> Result<Ttl, Error> {
        if !self.exists(key)? {
            return Ok(Ttl::Missing);
        }
        Ok(match self.deadline(&store_key(key))? {
            None => Ttl::Persistent,
            Some(at) => Ttl::Until(at),
        })
    }

    /// Sets (Some) or removes (None) the deadline of an existing key; a
    /// deadline not in the future deletes the key now, as in Redis.
    pub fn set_deadline(&self, key: &[u8], at: Option<i64>) -> Result<(), Error> {
        self.set_deadline_stored(&store_key(key), at)
    }

    fn set_deadline_stored(&self, key: &str, at: Option<i64>) -> Result<(), Error> {
        match at {
            Some(at) if at <= self.now() => {
                self.kv.delete(key)?;
                self.clear_deadline(key)
            }
            Some(at) => self.store_deadline(key, at),
            None => self.clear_deadline(key),
        }
    }

    /// RENAME: moves the value and its deadline onto `to` (whatever `to`
    /// held goes); false if `from` is missing.
    pub fn rename(&self, from: &[u8], to: &[u8]) -> Result<bool, Error> {
        let Some(value) = self.get(from)? else { return Ok(false) };
        if from == to {
            return Ok(true);
        }
        let expiry = match self.ttl(from)? {
            Ttl::Until(at) => Expiry::At(at),
            _ => Expiry::Clear,
        };
        self.set(to, &value, expiry)?;
        let from = store_key(from);
        self.kv.delete(&from)?;
        self.clear_deadline(&from)?;
        Ok(true)
    }

    /// One page of the keyspace from `cursor`: the live Redis keys (an
    /// expired key met is deleted, as Redis's SCAN does), and the next
    /// cursor (None: the walk is over).
    pub fn scan(&self, cursor: Option<u64>) -> Result<(Vec<Vec<u8>>, Option<u64>), Error> {
        let (stored, next) = self.kv.list_keys(cursor)?;
        let mut keys = Vec::with_capacity(stored.len());
        for key in stored {
            if let Some(redis) = redis_key(&key)
                && !self.expire_if_due(&key, self.deadline(&key)?)?
            {
                keys.push(redis);
            }
        }
        Ok((keys, next))
    }

    /// Every live Redis key `keep` accepts, page by page.
    pub fn keys(&self, mut keep: impl FnMut(&[u8]) -> bool) -> Result<Vec<Vec<u8>>, Error> {
        let (mut all, mut cursor) = (Vec::new(), None);
        loop {
            let (keys, next) = self.scan(cursor)?;
            all.extend(keys.into_iter().filter(|k| keep(k)));
            match next {
                Some(_) => cursor = next,
                None => return Ok(all),
            }
        }
    }

    /// The keys and the keys with a deadline, expired ones included until
    /// something deletes them (as Redis counts them): DBSIZE, INFO keyspace.
    /// One walk of the store, reading names only.
    pub fn count(&self) -> Result<(u64, u64), Error> {
        let (mut keys, mut expires, mut cursor) = (0, 0, None);
        loop {
            let (stored, next) = self.kv.list_keys(cursor)?;
            for key in &stored {
                if key.starts_with("\0ttl:") {
                    expires += 1;
                } else if redis_key(key).is_some() {
                    keys += 1;
                }
            }
            match next {
                Some(_) => cursor = next,
                None => return Ok((keys, expires)),
            }
        }
    }

    /// FLUSHDB: deletes every key and deadline (INFO's counters stay).
    pub fn flush(&self) -> Result<(), Error> {
        let mut cursor = None;
        loop {
            let (stored, next) = self.kv.list_keys(cursor)?;
            for key in stored.iter().filter(|k| !k.starts_with(STAT_PREFIX)) {
                self.kv.delete(key)?;
            }
            match next {
                Some(_) => cursor = next,
                None => return Ok(()),
            }
        }
    }

    /// A live key from a random place of the keyspace (`start`, a random
    /// cursor), walking on (and round once) past pages that hold none.
    pub fn random_key(&self, start: u64, pick: u64) -> Result<Option<Vec<u8>>, Error> {
        let mut cursor = Some(start);
        let mut wrapped = false;
        loop {
            let (keys, next) = self.scan(cursor)?;
            if !keys.is_empty() {
                return Ok(Some(keys[(pick % keys.len() as u64) as usize].clone()));
            }
            cursor = match next {
                Some(_) => next,
                None if !wrapped && start != 0 => {
                    wrapped = true;
                    None
                }
                None => return Ok(None),
            };
            // Back at the start: the store holds no live key.
            if wrapped && cursor.is_some_and(|c| c > start) {
                return Ok(None);
            }
        }
    }

    /// Adds `delta` to an INFO counter.
    pub fn add_stat(&self, name: &str, delta: i64) -> Result<i64, Error> {
        self.kv.increment(&format!("{STAT_PREFIX}{name}"), delta)
    }

    /// An INFO counter (0 if never counted).
    pub fn stat(&self, name: &str) -> i64 {
        let value = self.kv.get(&format!("{STAT_PREFIX}{name}")).ok().flatten();
        value.and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()).unwrap_or(0)
    }
}

#[cfg(test)]
pub mod memory {
    //! An in-memory `Kv` with the host's semantics, for unit tests.

    use super::{DEADLINE_MARK, Error, Kv};
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    /// The keys and values, and how many store calls were made (each one a
    /// host call on pier).
    #[derive(Default)]
    pub struct Memory(pub RefCell<HashMap<String, Vec<u8>>>, pub Cell<usize>);

    impl Memory {
        fn call(&self) {
            self.1.set(self.1.get() + 1);
        }

        /// The keys a Redis client put there (not the deadline mark).
        pub fn keys(&self) -> Vec<String> {
            let mut keys: Vec<String> = self.0.borrow().keys().filter(|k| *k != DEADLINE_MARK).cloned().collect();
            keys.sort();
            keys
        }
    }

    impl Kv for Memory {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
            self.call();
            Ok(self.0.borrow().get(key).cloned())
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
            self.call();
            self.0.borrow_mut().insert(key.to_string(), value.to_vec());
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<(), Error> {
            self.call();
            self.0.borrow_mut().remove(key);
            Ok(())
        }
        fn exists(&self, key: &str) -> Result<bool, Error> {
            self.call();
            Ok(self.0.borrow().contains_key(key))
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
            self.call();
            // The same checks and messages as pier's provider (host/src/keyvalue.rs).
            let mut data = self.0.borrow_mut();
            let current = match data.get(key) {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                    .ok_or_else(|| Error::Other("value is not an integer or out of range".into()))?,
            };
            let next = current
                .checked_add(delta)
                .ok_or_else(|| Error::Other("increment or decrement would overflow".into()))?;
            data.insert(key.to_string(), next.to_string().into_bytes());
            Ok(next)
        }
        /// Pages of three keys, cursors as the host's: keys in order of
        /// a hash (here the key's length: ties test the grouping), a page
        /// never splits one hash's keys, the cursor is the next hash.
        fn list_keys(&self, cursor: Option<u64>) -> Result<(Vec<String>, Option<u64>), Error> {
            self.call();
            let mut keys: Vec<(u64, String)> = self.0.borrow().keys().map(|k| (k.len() as u64, k.clone())).collect();
            keys.sort();
            keys.retain(|(hash, _)| *hash >= cursor.unwrap_or(0));
            let mut page = Vec::new();
            for (hash, key) in keys {
                if page.len() >= 3 && Some(&hash) != page.last().map(|(h, _)| h) {
                    return Ok((page.into_iter().map(|(_, k)| k).collect(), Some(hash)));
                }
                page.push((hash, key));
            }
            Ok((page.into_iter().map(|(_, k)| k).collect(), None))
        }
        fn usage(&self) -> super::Usage {
            let data = self.0.borrow();
            let used_bytes = data.iter().map(|(k, v)| (k.len() + v.len()) as u64 + 96).sum();
            super::Usage { used_bytes, max_bytes: 64 << 20, keys: data.len() as u64, max_keys: 1_000_000 }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::Memory;
    use super::*;

    #[test]
    fn keys_map_one_to_one_and_never_into_the_ttl_namespace() {
        assert_eq!(store_key(b"user:1"), "user:1");
        assert_eq!(store_key(b"\xff"), "\0x:ff");
        assert_eq!(store_key("\u{fffd}".as_bytes()), "\u{fffd}", "not confused with an invalid byte");
        assert_eq!(store_key(b"\0ttl:k"), "\0x:0074746c3a6b");
        assert_eq!(store_key(b""), "");
        for key in [&b"user:1"[..], b"\xff\r\n", b"\0ttl:k", b""] {
            assert_eq!(redis_key(&store_key(key)).as_deref(), Some(key));
        }
        assert_eq!(redis_key("\0ttl:k"), None, "pier's own keys are not shown");
        assert_eq!(redis_key("\0stat:commands"), None);
    }

    #[test]
    fn walks_skip_pier_keys_and_expire_lazily() {
        let kv = Memory::default();
        let turn = Turn::fixed(1_000);
        let db = Db::new(&kv, &turn);
        for (i, key) in [&b"a"[..], b"b", b"\xff", b"c", b"d"].iter().enumerate() {
            let expiry = if i == 3 { Expiry::At(1_500) } else { Expiry::Clear };
            db.set(key, b"v", expiry).unwrap();
        }
        db.add_stat("commands", 5).unwrap();
        assert_eq!(db.count().unwrap(), (5, 1));
        let mut keys = db.keys(|_| true).unwrap();
        keys.sort();
        assert_eq!(keys, [&b"a"[..], b"b", b"c", b"d", b"\xff"]);
        let later = Turn::fixed(2_000);
        let db = Db::new(&kv, &later);
        assert_eq!(db.keys(|k| k != b"a").unwrap().len(), 3, "c expired, a filtered");
        assert_eq!(db.count().unwrap(), (4, 0), "the walk deleted c");
        assert!(db.random_key(0, 7).unwrap().is_some());
        db.flush().unwrap();
        assert_eq!(db.count().unwrap(), (0, 0));
        assert_eq!(db.random_key(0, 7).unwrap(), None);
        assert_eq!(db.stat("commands"), 5, "FLUSHDB keeps INFO's counters");
    }

    #[test]
    fn expiry_is_lazy_and_set_clears_it() {
        let kv = Memory::default();
        let turn_db = Turn::fixed(1_000);
        let db = Db::new(&kv, &turn_db);
        db.set(b"k", b"v", Expiry::At(1_500)).unwrap();
        assert_eq!(db.ttl(b"k").unwrap(), Ttl::Until(1_500));
        assert_eq!(Db::new(&kv, &Turn::fixed(1_499)).get(b"k").unwrap(), Some(b"v".to_vec()));
        assert!(kv.0.borrow().contains_key("\0ttl:k"));
        let turn_later = Turn::fixed(1_500);
        let later = Db::new(&kv, &turn_later);
        assert_eq!(later.get(b"k").unwrap(), None);
        assert!(kv.keys().is_empty(), "the key and its deadline are gone");
        db.set(b"k", b"v", Expiry::At(1_500)).unwrap();
        db.set(b"k", b"w", Expiry::Clear).unwrap();
        assert_eq!(Db::new(&kv, &Turn::fixed(9_999)).get(b"k").unwrap(), Some(b"w".to_vec()));
    }

    #[test]
    fn until_a_deadline_is_set_commands_make_one_store_call() {
        let kv = Memory::default();
        let turn = Turn::fixed(0);
        let db = Db::new(&kv, &turn);
        db.set(b"a", b"1", Expiry::Clear).unwrap();
        assert_eq!(kv.1.get(), 2, "the set, and one look for the mark per turn");
        db.set(b"b", b"2", Expiry::Clear).unwrap();
        assert_eq!(db.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.1.get(), 4, "then one call per command");
        // A deadline marks the bucket; from then on deadlines are looked up
        // and cleared, in this turn and the next.
        db.set(b"c", b"3", Expiry::At(5)).unwrap();
        db.set(b"c", b"4", Expiry::Clear).unwrap();
        db.set(b"d", b"5", Expiry::At(5)).unwrap();
        let later = Turn::fixed(5);
        let db = Db::new(&kv, &later);
        assert_eq!(db.get(b"c").unwrap(), Some(b"4".to_vec()), "SET cleared the deadline");
        assert_eq!(db.get(b"d").unwrap(), None, "expired");
        assert_eq!(kv.keys(), ["a", "b", "c"]);
    }

    #[test]
    fn an_expired_counter_starts_again() {
        let kv = Memory::default();
        let turn_db = Turn::fixed(0);
        let db = Db::new(&kv, &turn_db);
        assert_eq!(db.increment(b"n", 5).ok(), Some(5));
        db.set_deadline(b"n", Some(10)).unwrap();
        assert_eq!(db.increment(b"n", 1).ok(), Some(6), "the deadline stays");
        assert_eq!(db.ttl(b"n").unwrap(), Ttl::Until(10));
        assert_eq!(Db::new(&kv, &Turn::fixed(10)).increment(b"n", 1).ok(), Some(1));
    }
}
