//! A listener's key-value store in this process: each bucket an ordered
//! map keyed by (hash of the key, key), so that `list-keys` pages through it
//! without a snapshot: the cursor is a hash, and a page is the keys from
//! that hash on. See [`BucketData::list_keys`].

use super::{Budget, PAGE, cost};
use crate::bindings::wasi::keyvalue::store::{Error, KeyResponse};
use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

/// One bucket of a local store.
#[derive(Clone)]
pub(crate) struct Bucket(Arc<BucketData>);

impl Bucket {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        Self(Arc::new(BucketData { data: Mutex::default(), hasher: RandomState::new(), budget }))
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> Bucket {
        Bucket::new(Arc::new(Budget::new(1 << 20, 10_000)))
    }

    #[test]
    fn list_keys_pages() {
        let b = bucket();
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
        let b = bucket();
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
        let b = bucket();
        for i in 0..10 {
            b.set(format!("k{i}"), vec![]).unwrap();
        }
        let from_middle = b.list_keys(Some(u64::MAX / 2));
        assert!(from_middle.keys.len() < 10 && from_middle.cursor.is_none());
        assert!(b.list_keys(Some(u64::MAX)).keys.len() <= 1);
        assert_eq!(b.list_keys(Some(0)).keys.len(), 10);
    }
}
