//! Redis keys on a `wasi:keyvalue` bucket: key encoding and lazy expiry.
//!
//! The bucket is the listener's, shared by all its connections. It has no
//! expiry of its own, so a key's deadline (ms since the Unix epoch, as
//! decimal text) is kept under a companion key, `"\0ttl:" + key`, and checked
//! whenever the key is touched; an expired key is deleted then (Redis's lazy
//! expiry, without the active cycle: an expired key nobody touches stays in
//! memory).
//!
//! The bucket offers no compare-and-set, so only INCR and friends (the atomic
//! increment) are atomic across connections; SET NX/XX, APPEND and the
//! expiry commands read, then write.

use pier_guest::keyvalue::atomics;
use pier_guest::keyvalue::store::{Bucket, Error};
use std::borrow::Cow;

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

/// The bucket seen at one instant: `now` (ms since the epoch) decides what
/// has expired. One reading of the clock per batch of pipelined commands,
/// as Redis caches its clock per event-loop turn.
pub struct Db<'a, K: Kv + ?Sized> {
    kv: &'a K,
    now: i64,
}

impl<'a, K: Kv + ?Sized> Db<'a, K> {
    pub fn new(kv: &'a K, now: i64) -> Self {
        Db { kv, now }
    }

    pub fn now(&self) -> i64 {
        self.now
    }

    fn deadline(&self, key: &str) -> Result<Option<i64>, Error> {
        let text = self.kv.get(&ttl_key(key))?;
        Ok(text.and_then(|t| std::str::from_utf8(&t).ok()?.parse().ok()))
    }

    /// Deletes the key (stored form) if its deadline has passed; true if so.
    fn expire_if_due(&self, key: &str) -> Result<bool, Error> {
        match self.deadline(key)? {
            Some(at) if at <= self.now => {
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
            Some(value) if !self.expire_if_due(&key)? => Ok(Some(value)),
            _ => Ok(None),
        }
    }

    pub fn exists(&self, key: &[u8]) -> Result<bool, Error> {
        let key = store_key(key);
        Ok(self.kv.exists(&key)? && !self.expire_if_due(&key)?)
    }

    pub fn set(&self, key: &[u8], value: &[u8], expiry: Expiry) -> Result<(), Error> {
        let key = store_key(key);
        self.kv.set(&key, value)?;
        match expiry {
            Expiry::Clear => self.kv.delete(&ttl_key(&key)),
            Expiry::Keep => Ok(()),
            Expiry::At(at) => self.kv.set(&ttl_key(&key), at.to_string().as_bytes()),
        }
    }

    /// Deletes a key; true if it existed (and had not expired).
    pub fn delete(&self, key: &[u8]) -> Result<bool, Error> {
        let existed = self.exists(key)?;
        if existed {
            let key = store_key(key);
            self.kv.delete(&key)?;
            self.kv.delete(&ttl_key(&key))?;
        }
        Ok(existed)
    }

    /// The store's atomic increment, after lazy expiry (an expired counter
    /// starts again from 0). A deadline the key has stays, as in Redis.
    pub fn increment(&self, key: &[u8], delta: i64) -> Result<i64, Error> {
        self.exists(key)?;
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
        let key = store_key(key);
        match at {
            Some(at) if at <= self.now => {
                self.kv.delete(&key)?;
                self.kv.delete(&ttl_key(&key))
            }
            Some(at) => self.kv.set(&ttl_key(&key), at.to_string().as_bytes()),
            None => self.kv.delete(&ttl_key(&key)),
        }
    }
}

#[cfg(test)]
pub mod memory {
    //! An in-memory `Kv` with the host's semantics, for unit tests.

    use super::{Error, Kv};
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    pub struct Memory(pub RefCell<HashMap<String, Vec<u8>>>);

    impl Kv for Memory {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Error> {
            Ok(self.0.borrow().get(key).cloned())
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), Error> {
            self.0.borrow_mut().insert(key.to_string(), value.to_vec());
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<(), Error> {
            self.0.borrow_mut().remove(key);
            Ok(())
        }
        fn exists(&self, key: &str) -> Result<bool, Error> {
            Ok(self.0.borrow().contains_key(key))
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
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
    }

    #[test]
    fn expiry_is_lazy_and_set_clears_it() {
        let kv = Memory::default();
        let db = Db::new(&kv, 1_000);
        db.set(b"k", b"v", Expiry::At(1_500)).unwrap();
        assert_eq!(db.ttl(b"k").unwrap(), Ttl::Until(1_500));
        assert_eq!(Db::new(&kv, 1_499).get(b"k").unwrap(), Some(b"v".to_vec()));
        assert!(kv.0.borrow().contains_key("\0ttl:k"));
        let later = Db::new(&kv, 1_500);
        assert_eq!(later.get(b"k").unwrap(), None);
        assert!(kv.0.borrow().is_empty(), "the key and its deadline are gone");
        db.set(b"k", b"v", Expiry::At(1_500)).unwrap();
        db.set(b"k", b"w", Expiry::Clear).unwrap();
        assert_eq!(Db::new(&kv, 9_999).get(b"k").unwrap(), Some(b"w".to_vec()));
    }

    #[test]
    fn an_expired_counter_starts_again() {
        let kv = Memory::default();
        let db = Db::new(&kv, 0);
        assert_eq!(db.increment(b"n", 5).ok(), Some(5));
        db.set_deadline(b"n", Some(10)).unwrap();
        assert_eq!(db.increment(b"n", 1).ok(), Some(6), "the deadline stays");
        assert_eq!(db.ttl(b"n").unwrap(), Ttl::Until(10));
        assert_eq!(Db::new(&kv, 10).increment(b"n", 1).ok(), Some(1));
    }
}
