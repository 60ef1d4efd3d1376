//! pier's `wasi:keyvalue` provider: one store per listener, shared by all its
//! connections (wasmtime-wasi-keyvalue's in-memory provider copies its data
//! into each Store, so it cannot share), and each connection's client of it,
//! which implements the `store` and `atomics` imports.
//!
//! A bucket is an ordered map keyed by (hash of the key, key), so that
//! `list-keys` pages through it without a snapshot: the cursor is a hash,
//! and a page is the keys from that hash on. See [`BucketData::list_keys`].

use crate::bindings::wasi::keyvalue::atomics;
use crate::bindings::wasi::keyvalue::store::{self as wit, Error, KeyResponse};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use wasmtime::component::Resource;

/// Keys returned per `list-keys` page (a page may hold a few more: it
/// never splits the keys of one hash).
const PAGE: usize = 1000;

/// What one key costs the host besides its key and value bytes: the map
/// entry (its hash, its share of a B-tree node), the two allocations'
/// headers. Counted against `kv-max-bytes`, so that the budget bounds
/// memory, not payload.
pub const ENTRY_OVERHEAD: u64 = 96;

/// Most buckets (distinct identifiers) one listener's store may have.
pub const MAX_BUCKETS: usize = 64;

/// The text every budget refusal starts with, so a handler can tell it
/// from other errors (the RESP guest answers `-OOM`).
pub const OUT_OF_BUDGET: &str = "out of budget";

/// One listener's key-value budget: what its store may hold, and holds.
#[derive(Debug)]
pub(crate) struct Budget {
    /// The limits; a reload may change them (what is stored stays).
    max_bytes: AtomicU64,
    max_keys: AtomicU64,
    bytes: AtomicU64,
    keys: AtomicU64,
}

/// What the store holds and may hold, for `limits.keyvalue-usage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) bytes: u64,
    pub(crate) max_bytes: u64,
    pub(crate) keys: u64,
    pub(crate) max_keys: u64,
}

impl Budget {
    pub(crate) fn new(max_bytes: u64, max_keys: u64) -> Self {
        Self {
            max_bytes: AtomicU64::new(max_bytes),
            max_keys: AtomicU64::new(max_keys),
            bytes: AtomicU64::new(0),
            keys: AtomicU64::new(0),
        }
    }

    /// New limits for what comes next; nothing stored is dropped, so a store
    /// already past a lowered limit refuses new data until it is back under.
    pub(crate) fn set_limits(&self, max_bytes: u64, max_keys: u64) {
        self.max_bytes.store(max_bytes, Ordering::Release);
        self.max_keys.store(max_keys, Ordering::Release);
    }

    /// Takes `bytes` more (and one key more if `new_key`), or nothing if
    /// either would pass its maximum.
    fn reserve(&self, bytes: u64, new_key: bool) -> Result<(), Error> {
        let (max_bytes, max_keys) = (self.max_bytes.load(Ordering::Acquire), self.max_keys.load(Ordering::Acquire));
        if new_key && !take(&self.keys, 1, max_keys) {
            return Err(refusal(format!("kv-max-keys {max_keys} reached")));
        }
        if !take(&self.bytes, bytes, max_bytes) {
            if new_key {
                self.keys.fetch_sub(1, Ordering::AcqRel);
            }
            let max = crate::config::units::format_size(max_bytes);
            return Err(refusal(format!("kv-max-bytes {max} reached")));
        }
        Ok(())
    }

    fn release(&self, bytes: u64, old_key: bool) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        if old_key {
            self.keys.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub(crate) fn usage(&self) -> Usage {
        Usage {
            bytes: self.bytes.load(Ordering::Acquire),
            max_bytes: self.max_bytes.load(Ordering::Acquire),
            keys: self.keys.load(Ordering::Acquire),
            max_keys: self.max_keys.load(Ordering::Acquire),
        }
    }
}

/// Adds `n` to `counter` unless that would pass `max`.
fn take(counter: &AtomicU64, n: u64, max: u64) -> bool {
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| v.checked_add(n).filter(|&t| t <= max)).is_ok()
}

fn refusal(why: String) -> Error {
    Error::Other(format!("{OUT_OF_BUDGET}: {why}; reads and deletes still work"))
}

fn cost(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64 + ENTRY_OVERHEAD
}

/// Every bucket of one listener, by identifier, and their common budget.
pub(crate) struct Store {
    buckets: Mutex<HashMap<String, Bucket>>,
    budget: Arc<Budget>,
}

impl Store {
    pub(crate) fn new(budget: Budget) -> Self {
        Self { buckets: Mutex::default(), budget: Arc::new(budget) }
    }

    pub(crate) fn open(&self, identifier: &str) -> Result<Bucket, Error> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = buckets.get(identifier) {
            return Ok(bucket.clone());
        }
        if buckets.len() >= MAX_BUCKETS {
            return Err(refusal(format!("at most {MAX_BUCKETS} buckets per listener")));
        }
        let bucket = Bucket(Arc::new(BucketData {
            data: Mutex::default(),
            hasher: RandomState::new(),
            budget: self.budget.clone(),
        }));
        buckets.insert(identifier.to_string(), bucket.clone());
        Ok(bucket)
    }

    pub(crate) fn set_limits(&self, max_bytes: u64, max_keys: u64) {
        self.budget.set_limits(max_bytes, max_keys);
    }

    pub(crate) fn usage(&self) -> Usage {
        self.budget.usage()
    }
}

/// One bucket of the store; what a guest's `bucket` handle stands for.
#[derive(Clone)]
pub(crate) struct Bucket(Arc<BucketData>);

impl std::ops::Deref for Bucket {
    type Target = BucketData;
    fn deref(&self) -> &BucketData {
        &self.0
    }
}

/// Where a key sits in its bucket: its hash first, then the key itself
/// (which orders, and tells apart, keys of one hash).
type Slot = (u64, String);

/// The keys and values of one bucket, in (hash, key) order.
///
/// Why ordered by hash: `list-keys` must page through a bucket that other
/// connections keep changing, without holding the lock across the whole
/// walk or copying the whole key set per page. A page is the keys from the
/// cursor's hash on, read under the lock in O(log n + page); the next
/// cursor is the hash of the first key not returned. A key's hash never
/// changes while it is stored, so a walk from `None` to a `None` cursor
/// returns every key present for the whole walk exactly once (a page never
/// ends inside one hash's keys, so none repeats), whatever is inserted or
/// deleted meanwhile; keys inserted or deleted during the walk may or may
/// not appear. Any u64 is a valid cursor: a random one starts at a random
/// place (the RESP guest's RANDOMKEY). The hasher is keyed at random per
/// bucket, so a client cannot choose keys that pile onto one hash.
pub(crate) struct BucketData {
    data: Mutex<BTreeMap<Slot, Vec<u8>>>,
    hasher: RandomState,
    budget: Arc<Budget>,
}

impl BucketData {
    fn data(&self) -> MutexGuard<'_, BTreeMap<Slot, Vec<u8>>> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot(&self, key: String) -> Slot {
        (self.hasher.hash_one(key.as_str()), key)
    }

    pub(crate) fn get(&self, key: String) -> Option<Vec<u8>> {
        let slot = self.slot(key);
        self.data().get(&slot).cloned()
    }

    /// Stores `value` at `key` if the budget has room for the difference.
    pub(crate) fn set(&self, key: String, value: Vec<u8>) -> Result<(), Error> {
        let slot = self.slot(key);
        self.put(&mut self.data(), slot, value)
    }

    /// Inserts into `data` (this bucket's map, locked by the caller) if the
    /// budget has room for what the insert adds.
    fn put(&self, data: &mut BTreeMap<Slot, Vec<u8>>, slot: Slot, value: Vec<u8>) -> Result<(), Error> {
        let new = cost(&slot.1, &value);
        match data.get(&slot).map(|old| cost(&slot.1, old)) {
            None => self.budget.reserve(new, true)?,
            Some(old) if new > old => self.budget.reserve(new - old, false)?,
            Some(old) => self.budget.release(old - new, false),
        }
        data.insert(slot, value);
        Ok(())
    }

    pub(crate) fn delete(&self, key: String) {
        let slot = self.slot(key);
        if let Some(old) = self.data().remove(&slot) {
            self.budget.release(cost(&slot.1, &old), true);
        }
    }

    pub(crate) fn exists(&self, key: String) -> bool {
        let slot = self.slot(key);
        self.data().contains_key(&slot)
    }

    /// One page of keys: those from the cursor's hash on (`None`: from the
    /// start), and the cursor of the next page (`None`: this was the last).
    /// See the type's doc for what a walk guarantees.
    pub(crate) fn list_keys(&self, cursor: Option<u64>) -> KeyResponse {
        let data = self.data();
        let mut keys = Vec::with_capacity(PAGE.min(data.len()));
        let mut last = None;
        for ((hash, key), _) in data.range((cursor.unwrap_or(0), String::new())..) {
            if keys.len() >= PAGE && last != Some(*hash) {
                return KeyResponse { keys, cursor: Some(*hash) };
            }
            keys.push(key.clone());
            last = Some(*hash);
        }
        KeyResponse { keys, cursor: None }
    }

    /// Adds `delta` to the decimal integer at `key` (absent: 0), atomically.
    /// Value and delta are signed 64-bit two's complement, so a handler can
    /// decrement; the result is returned as its u64 bit pattern.
    pub(crate) fn increment(&self, key: String, delta: u64) -> Result<u64, Error> {
        let slot = self.slot(key);
        let mut data = self.data();
        let current = match data.get(&slot) {
            None => 0,
            Some(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| Error::Other("value is not an integer or out of range".into()))?,
        };
        let next = current
            .checked_add(delta as i64)
            .ok_or_else(|| Error::Other("increment or decrement would overflow".into()))?;
        self.put(&mut data, slot, next.to_string().into_bytes())?;
        Ok(next as u64)
    }
}

/// Buckets one connection may hold open at once.
pub const MAX_OPEN_BUCKETS: usize = 16;

/// One connection's side of the listener's store: the buckets its handler
/// opened, by handle. A handle is an index here, so the store's data never
/// enters the connection's resource table.
pub(crate) struct Client {
    store: Arc<Store>,
    open: Vec<Option<Bucket>>,
}

impl Client {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        Self { store, open: Vec::new() }
    }

    fn bucket(&self, handle: &Resource<wit::Bucket>) -> Result<&Bucket, Error> {
        let index = handle.rep() as usize;
        self.open.get(index).and_then(Option::as_ref).ok_or_else(|| Error::Other("no such bucket handle".into()))
    }
}

impl wit::Host for Client {
    fn open(&mut self, identifier: String) -> Result<Resource<wit::Bucket>, Error> {
        let bucket = Some(self.store.open(&identifier)?);
        let index = match self.open.iter().position(Option::is_none) {
            Some(free) => {
                self.open[free] = bucket;
                free
            }
            None if self.open.len() < MAX_OPEN_BUCKETS => {
                self.open.push(bucket);
                self.open.len() - 1
            }
            None => return Err(Error::Other(format!("too many open buckets (at most {MAX_OPEN_BUCKETS})"))),
        };
        Ok(Resource::new_own(index as u32))
    }
}

impl wit::HostBucket for Client {
    fn get(&mut self, bucket: Resource<wit::Bucket>, key: String) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.bucket(&bucket)?.get(key))
    }

    fn set(&mut self, bucket: Resource<wit::Bucket>, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.bucket(&bucket)?.set(key, value)
    }

    fn delete(&mut self, bucket: Resource<wit::Bucket>, key: String) -> Result<(), Error> {
        self.bucket(&bucket)?.delete(key);
        Ok(())
    }

    fn exists(&mut self, bucket: Resource<wit::Bucket>, key: String) -> Result<bool, Error> {
        Ok(self.bucket(&bucket)?.exists(key))
    }

    fn list_keys(&mut self, bucket: Resource<wit::Bucket>, cursor: Option<u64>) -> Result<KeyResponse, Error> {
        Ok(self.bucket(&bucket)?.list_keys(cursor))
    }

    fn drop(&mut self, bucket: Resource<wit::Bucket>) -> wasmtime::Result<()> {
        if let Some(slot) = self.open.get_mut(bucket.rep() as usize) {
            *slot = None;
        }
        Ok(())
    }
}

impl atomics::Host for Client {
    fn increment(&mut self, bucket: Resource<wit::Bucket>, key: String, delta: u64) -> Result<u64, Error> {
        self.bucket(&bucket)?.increment(key, delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(Budget::new(1 << 20, 10_000))
    }

    #[test]
    fn buckets_are_shared_and_increment_is_signed() {
        let store = store();
        let a = store.open("").unwrap();
        let b = store.open("").unwrap();
        a.set("k".into(), b"v".to_vec()).unwrap();
        assert_eq!(b.get("k".into()), Some(b"v".to_vec()));
        assert_eq!(a.increment("n".into(), 5).ok(), Some(5));
        assert_eq!(b.increment("n".into(), (-7i64) as u64).ok().map(|v| v as i64), Some(-2));
        assert_eq!(a.get("n".into()), Some(b"-2".to_vec()));
        assert!(a.increment("k".into(), 1).is_err());
        assert!(store.open("other").unwrap().get("k".into()).is_none());
    }

    #[test]
    fn the_budget_refuses_what_would_pass_it_and_frees_what_goes() {
        let store = Store::new(Budget::new(1000 + ENTRY_OVERHEAD, 2));
        let b = store.open("").unwrap();
        b.set("a".into(), vec![0; 999]).unwrap();
        assert_eq!(store.usage().bytes, 1000 + ENTRY_OVERHEAD);
        let Err(Error::Other(why)) = b.set("b".into(), vec![0; 1]) else { panic!("over budget") };
        assert!(why.starts_with(OUT_OF_BUDGET) && why.contains("kv-max-bytes"), "{why}");
        assert_eq!(store.usage().keys, 1, "a refused set takes nothing");
        b.set("a".into(), vec![0; 10]).unwrap();
        b.set("b".into(), vec![0; 10]).unwrap();
        let Err(Error::Other(why)) = b.set("c".into(), vec![]) else { panic!("over the key count") };
        assert!(why.contains("kv-max-keys 2"), "{why}");
        assert!(b.increment("c".into(), 1).is_err(), "increment creates keys too");
        b.delete("a".into());
        b.delete("b".into());
        assert_eq!(store.usage(), Usage { bytes: 0, max_bytes: 1000 + ENTRY_OVERHEAD, keys: 0, max_keys: 2 });
        for i in 1..MAX_BUCKETS {
            store.open(&i.to_string()).unwrap();
        }
        assert!(store.open("one more").is_err());
    }

    #[test]
    fn handles_are_bounded_and_reused() {
        use wit::{Host as _, HostBucket as _};
        let mut client = Client::new(Arc::new(store()));
        let handles: Vec<_> = (0..MAX_OPEN_BUCKETS).map(|_| client.open(String::new()).unwrap()).collect();
        assert!(client.open(String::new()).is_err(), "one too many");
        let freed = handles[3].rep();
        client.drop(Resource::new_own(freed)).unwrap();
        assert_eq!(client.open("other".into()).unwrap().rep(), freed);
        client.set(Resource::new_own(0), "k".into(), b"v".to_vec()).unwrap();
        assert_eq!(client.get(Resource::new_own(1), "k".into()).unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn list_keys_pages() {
        let b = store().open("").unwrap();
        for i in 0..1500 {
            b.set(format!("k{i:04}"), vec![]).unwrap();
        }
        let first = b.list_keys(None);
        assert_eq!(first.keys.len(), 1000);
        let second = b.list_keys(first.cursor);
        assert_eq!(second.keys.len(), 500);
        assert_eq!(second.cursor, None);
        let mut all: Vec<String> = first.keys.into_iter().chain(second.keys).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 1500, "every key once");
    }

    #[test]
    fn a_walk_returns_every_key_that_stays_once_while_others_come_and_go() {
        let b = store().open("").unwrap();
        for i in 0..3000 {
            b.set(format!("stay{i}"), vec![]).unwrap();
            b.set(format!("go{i}"), vec![]).unwrap();
        }
        let (mut seen, mut cursor, mut pages) = (Vec::new(), None, 0);
        loop {
            let page = b.list_keys(cursor);
            assert!(page.keys.len() <= PAGE + 1, "a page is bounded");
            seen.extend(page.keys);
            // Between pages, other connections delete and insert.
            for i in 0..300 {
                b.delete(format!("go{}", pages * 300 + i));
                b.set(format!("new{pages}-{i}"), vec![]).unwrap();
            }
            pages += 1;
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
        let stays: Vec<&String> = seen.iter().filter(|k| k.starts_with("stay")).collect();
        assert_eq!(stays.len(), 3000, "every key that stayed, none twice");
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "no key repeats");
    }

    #[test]
    fn any_cursor_is_a_place_to_start() {
        let b = store().open("").unwrap();
        for i in 0..10 {
            b.set(format!("k{i}"), vec![]).unwrap();
        }
        let from_middle = b.list_keys(Some(u64::MAX / 2));
        assert!(from_middle.keys.len() < 10 && from_middle.cursor.is_none());
        assert!(b.list_keys(Some(u64::MAX)).keys.len() <= 1);
        assert_eq!(b.list_keys(Some(0)).keys.len(), 10);
    }
}
