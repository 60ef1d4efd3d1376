//! pier's `wasi:keyvalue` provider: one store per listener, shared by all its
//! connections (wasmtime-wasi-keyvalue's in-memory provider copies its data
//! into each Store, so it cannot share), and each connection's client of it,
//! which implements the `store` and `atomics` imports.
//!
//! A store lives in this process ([`local`]) or, when the server has
//! `redis` and the listener shares its state, in Redis ([`in_redis`]), where
//! every process serving a listener of that name sees the same keys. Both
//! keep the listener's budget the same way.

mod in_redis;
mod local;

use super::redis::Redis;
use crate::bindings::wasi::keyvalue::atomics;
use crate::bindings::wasi::keyvalue::store::{self as wit, Error, KeyResponse};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;
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

    /// What a shared store holds, as Redis last said.
    fn observe(&self, bytes: u64, keys: u64) {
        self.bytes.store(bytes, Ordering::Release);
        self.keys.store(keys, Ordering::Release);
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

/// Where one listener's buckets are.
enum Place {
    /// In this process, by identifier.
    Local(Mutex<HashMap<String, local::Bucket>>),
    /// In Redis.
    Redis(in_redis::Place),
}

/// Every bucket of one listener, and their common budget.
pub(crate) struct Store {
    place: Place,
    budget: Arc<Budget>,
}

impl Store {
    /// A store in this process.
    pub(crate) fn new(budget: Budget) -> Self {
        Self { place: Place::Local(Mutex::default()), budget: Arc::new(budget) }
    }

    /// The store of listener `listener` in `redis`, shared with every
    /// process serving a listener of that name.
    pub(crate) fn shared(budget: Budget, redis: Arc<Redis>, listener: &str) -> Self {
        Self { place: Place::Redis(in_redis::Place::new(redis, listener)), budget: Arc::new(budget) }
    }

    async fn open(&self, identifier: &str, deadline: Instant) -> Result<Bucket, Error> {
        match &self.place {
            Place::Local(buckets) => {
                let mut buckets = buckets.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(bucket) = buckets.get(identifier) {
                    return Ok(Bucket::Local(bucket.clone()));
                }
                if buckets.len() >= MAX_BUCKETS {
                    return Err(refusal(format!("at most {MAX_BUCKETS} buckets per listener")));
                }
                let bucket = local::Bucket::new(self.budget.clone());
                buckets.insert(identifier.to_string(), bucket.clone());
                Ok(Bucket::Local(bucket))
            }
            Place::Redis(place) => place.open(identifier, &self.budget, deadline).await.map(Bucket::Redis),
        }
    }

    pub(crate) fn set_limits(&self, max_bytes: u64, max_keys: u64) {
        self.budget.set_limits(max_bytes, max_keys);
    }

    /// What the store holds and may hold (for a shared store, as of this
    /// process's last request).
    pub(crate) fn usage(&self) -> Usage {
        self.budget.usage()
    }
}

/// One bucket of a store; what a guest's `bucket` handle stands for.
#[derive(Clone)]
enum Bucket {
    Local(local::Bucket),
    Redis(in_redis::Bucket),
}

impl Bucket {
    async fn get(&self, key: String, deadline: Instant) -> Result<Option<Vec<u8>>, Error> {
        match self {
            Bucket::Local(b) => Ok(b.get(key)),
            Bucket::Redis(b) => b.get(key, deadline).await,
        }
    }

    async fn set(&self, key: String, value: Vec<u8>, deadline: Instant) -> Result<(), Error> {
        match self {
            Bucket::Local(b) => b.set(key, value),
            Bucket::Redis(b) => b.set(key, value, deadline).await,
        }
    }

    async fn delete(&self, key: String, deadline: Instant) -> Result<(), Error> {
        match self {
            Bucket::Local(b) => {
                b.delete(key);
                Ok(())
            }
            Bucket::Redis(b) => b.delete(key, deadline).await,
        }
    }

    async fn exists(&self, key: String, deadline: Instant) -> Result<bool, Error> {
        match self {
            Bucket::Local(b) => Ok(b.exists(key)),
            Bucket::Redis(b) => b.exists(key, deadline).await,
        }
    }

    async fn list_keys(&self, cursor: Option<u64>, deadline: Instant) -> Result<KeyResponse, Error> {
        match self {
            Bucket::Local(b) => Ok(b.list_keys(cursor)),
            Bucket::Redis(b) => b.list_keys(cursor, deadline).await,
        }
    }

    async fn increment(&self, key: String, delta: u64, deadline: Instant) -> Result<u64, Error> {
        match self {
            Bucket::Local(b) => b.increment(key, delta),
            Bucket::Redis(b) => b.increment(key, delta, deadline).await,
        }
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
    /// When the inbox call under way must end: no request to Redis waits
    /// past it.
    deadline: Instant,
}

impl Client {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        Self { store, open: Vec::new(), deadline: Instant::now() }
    }

    /// The deadline of the inbox call about to start.
    pub(crate) fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = deadline;
    }

    fn bucket(&self, handle: &Resource<wit::Bucket>) -> Result<Bucket, Error> {
        let index = handle.rep() as usize;
        self.open.get(index).and_then(Option::clone).ok_or_else(|| Error::Other("no such bucket handle".into()))
    }
}

impl wit::Host for Client {
    async fn open(&mut self, identifier: String) -> Result<Resource<wit::Bucket>, Error> {
        let free = self.open.iter().position(Option::is_none);
        if free.is_none() && self.open.len() >= MAX_OPEN_BUCKETS {
            return Err(Error::Other(format!("too many open buckets (at most {MAX_OPEN_BUCKETS})")));
        }
        let bucket = Some(self.store.open(&identifier, self.deadline).await?);
        let index = match free {
            Some(free) => {
                self.open[free] = bucket;
                free
            }
            None => {
                self.open.push(bucket);
                self.open.len() - 1
            }
        };
        Ok(Resource::new_own(index as u32))
    }
}

impl wit::HostBucket for Client {
    async fn get(&mut self, bucket: Resource<wit::Bucket>, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.bucket(&bucket)?.get(key, self.deadline).await
    }

    async fn set(&mut self, bucket: Resource<wit::Bucket>, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.bucket(&bucket)?.set(key, value, self.deadline).await
    }

    async fn delete(&mut self, bucket: Resource<wit::Bucket>, key: String) -> Result<(), Error> {
        self.bucket(&bucket)?.delete(key, self.deadline).await
    }

    async fn exists(&mut self, bucket: Resource<wit::Bucket>, key: String) -> Result<bool, Error> {
        self.bucket(&bucket)?.exists(key, self.deadline).await
    }

    async fn list_keys(&mut self, bucket: Resource<wit::Bucket>, cursor: Option<u64>) -> Result<KeyResponse, Error> {
        self.bucket(&bucket)?.list_keys(cursor, self.deadline).await
    }

    async fn drop(&mut self, bucket: Resource<wit::Bucket>) -> wasmtime::Result<()> {
        if let Some(slot) = self.open.get_mut(bucket.rep() as usize) {
            *slot = None;
        }
        Ok(())
    }
}

impl atomics::Host for Client {
    async fn increment(&mut self, bucket: Resource<wit::Bucket>, key: String, delta: u64) -> Result<u64, Error> {
        self.bucket(&bucket)?.increment(key, delta, self.deadline).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(Budget::new(1 << 20, 10_000))
    }

    fn later() -> Instant {
        Instant::now() + std::time::Duration::from_secs(60)
    }

    async fn open(store: &Store, identifier: &str) -> Result<local::Bucket, Error> {
        match store.open(identifier, later()).await? {
            Bucket::Local(b) => Ok(b),
            Bucket::Redis(_) => unreachable!("a local store"),
        }
    }

    #[tokio::test]
    async fn buckets_are_shared_and_increment_is_signed() {
        let store = store();
        let a = open(&store, "").await.unwrap();
        let b = open(&store, "").await.unwrap();
        a.set("k".into(), b"v".to_vec()).unwrap();
        assert_eq!(b.get("k".into()), Some(b"v".to_vec()));
        assert_eq!(a.increment("n".into(), 5).ok(), Some(5));
        assert_eq!(b.increment("n".into(), (-7i64) as u64).ok().map(|v| v as i64), Some(-2));
        assert_eq!(a.get("n".into()), Some(b"-2".to_vec()));
        assert!(a.increment("k".into(), 1).is_err());
        assert!(open(&store, "other").await.unwrap().get("k".into()).is_none());
    }

    #[tokio::test]
    async fn the_budget_refuses_what_would_pass_it_and_frees_what_goes() {
        let store = Store::new(Budget::new(1000 + ENTRY_OVERHEAD, 2));
        let b = open(&store, "").await.unwrap();
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
            open(&store, &i.to_string()).await.unwrap();
        }
        assert!(open(&store, "one more").await.is_err());
    }

    #[tokio::test]
    async fn handles_are_bounded_and_reused() {
        use wit::{Host as _, HostBucket as _};
        let mut client = Client::new(Arc::new(store()));
        let mut handles = Vec::new();
        for _ in 0..MAX_OPEN_BUCKETS {
            handles.push(client.open(String::new()).await.unwrap());
        }
        assert!(client.open(String::new()).await.is_err(), "one too many");
        let freed = handles[3].rep();
        client.drop(Resource::new_own(freed)).await.unwrap();
        assert_eq!(client.open("other".into()).await.unwrap().rep(), freed);
        client.set(Resource::new_own(0), "k".into(), b"v".to_vec()).await.unwrap();
        assert_eq!(client.get(Resource::new_own(1), "k".into()).await.unwrap(), Some(b"v".to_vec()));
    }
}
