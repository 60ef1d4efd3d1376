//! pier's `wasi:keyvalue` provider: one store per listener, shared by all its
//! connections (wasmtime-wasi-keyvalue's in-memory provider copies its data
//! into each Store, so it cannot share), and each connection's client of it,
//! which implements the `store` and `atomics` imports.

use crate::bindings::wasi::keyvalue::atomics;
use crate::bindings::wasi::keyvalue::store::{self as wit, Error, KeyResponse};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use wasmtime::component::Resource;

/// Keys returned per `list-keys` page.
const PAGE: usize = 1000;

/// Every bucket of one listener, by identifier.
#[derive(Default)]
pub(crate) struct Store {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Store {
    pub(crate) fn open(&self, identifier: &str) -> Bucket {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.entry(identifier.to_string()).or_default().clone()
    }
}

/// One bucket of the store; what a guest's `bucket` handle stands for.
#[derive(Clone, Default)]
pub(crate) struct Bucket(Arc<BucketData>);

impl std::ops::Deref for Bucket {
    type Target = BucketData;
    fn deref(&self) -> &BucketData {
        &self.0
    }
}

/// The keys and values of one bucket.
#[derive(Default)]
pub(crate) struct BucketData {
    data: Mutex<HashMap<String, Vec<u8>>>,
}

impl BucketData {
    fn data(&self) -> MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.data().get(key).cloned()
    }

    pub(crate) fn set(&self, key: String, value: Vec<u8>) {
        self.data().insert(key, value);
    }

    pub(crate) fn delete(&self, key: &str) {
        self.data().remove(key);
    }

    pub(crate) fn exists(&self, key: &str) -> bool {
        self.data().contains_key(key)
    }

    /// Keys in pages; the cursor is an offset into the sorted key list.
    pub(crate) fn list_keys(&self, cursor: Option<u64>) -> KeyResponse {
        let mut keys: Vec<String> = self.data().keys().cloned().collect();
        keys.sort_unstable();
        let start = (cursor.unwrap_or(0) as usize).min(keys.len());
        let end = (start + PAGE).min(keys.len());
        let next = (end < keys.len()).then_some(end as u64);
        KeyResponse { keys: keys.drain(start..end).collect(), cursor: next }
    }

    /// Adds `delta` to the decimal integer at `key` (absent: 0), atomically.
    /// Value and delta are signed 64-bit two's complement, so a handler can
    /// decrement; the result is returned as its u64 bit pattern.
    pub(crate) fn increment(&self, key: String, delta: u64) -> Result<u64, Error> {
        let mut data = self.data();
        let current = match data.get(&key) {
            None => 0,
            Some(bytes) => std::str::from_utf8(bytes)
                .ok()
                .and_then(|t| t.parse::<i64>().ok())
                .ok_or_else(|| Error::Other("value is not an integer or out of range".into()))?,
        };
        let next = current
            .checked_add(delta as i64)
            .ok_or_else(|| Error::Other("increment or decrement would overflow".into()))?;
        data.insert(key, next.to_string().into_bytes());
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
        let bucket = Some(self.store.open(&identifier));
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
        Ok(self.bucket(&bucket)?.get(&key))
    }

    fn set(&mut self, bucket: Resource<wit::Bucket>, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.bucket(&bucket)?.set(key, value);
        Ok(())
    }

    fn delete(&mut self, bucket: Resource<wit::Bucket>, key: String) -> Result<(), Error> {
        self.bucket(&bucket)?.delete(&key);
        Ok(())
    }

    fn exists(&mut self, bucket: Resource<wit::Bucket>, key: String) -> Result<bool, Error> {
        Ok(self.bucket(&bucket)?.exists(&key))
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

    #[test]
    fn buckets_are_shared_and_increment_is_signed() {
        let store = Store::default();
        let a = store.open("");
        let b = store.open("");
        a.set("k".into(), b"v".to_vec());
        assert_eq!(b.get("k"), Some(b"v".to_vec()));
        assert_eq!(a.increment("n".into(), 5).ok(), Some(5));
        assert_eq!(b.increment("n".into(), (-7i64) as u64).ok().map(|v| v as i64), Some(-2));
        assert_eq!(a.get("n"), Some(b"-2".to_vec()));
        assert!(a.increment("k".into(), 1).is_err());
        assert!(store.open("other").get("k").is_none());
    }

    #[test]
    fn handles_are_bounded_and_reused() {
        use wit::{Host as _, HostBucket as _};
        let mut client = Client::new(Arc::default());
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
        let store = Store::default();
        let b = store.open("");
        for i in 0..1500 {
            b.set(format!("k{i:04}"), vec![]);
        }
        let first = b.list_keys(None);
        assert_eq!(first.keys.len(), 1000);
        let second = b.list_keys(first.cursor);
        assert_eq!(second.keys.len(), 500);
        assert_eq!(second.cursor, None);
    }
}
