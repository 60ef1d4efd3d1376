//! A listener's key-value store in Redis, shared by every pier process that
//! serves a listener of that name.
//!
//! Listener `L`'s keys, all in one hash slot (`{L}`) so that a script may
//! touch several:
//! - `pier:{L}:kv:ID`: bucket `ID`, a Redis hash of key to value;
//! - `pier:{L}:kv-buckets`: the set of its bucket identifiers;
//! - `pier:{L}:kv-usage`: what they hold in all (`bytes`, `keys`), counted
//!   as the local store counts them.
//!
//! Every write is a Lua script, so the budget check and the write are one
//! atomic step whichever process makes it; `increment` is Redis's own
//! `HINCRBY` (signed 64-bit, overflow refused) inside such a script.

use super::{Budget, ENTRY_OVERHEAD, MAX_BUCKETS, PAGE, refusal};
use crate::bindings::wasi::keyvalue::store::{Error, KeyResponse};
use crate::services::redis::{Failure, Redis};
use redis::{Script, Value};
use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};
use tokio::time::Instant;

/// KEYS: buckets set, usage hash. ARGV: identifier, most buckets.
static OPEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then
            if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then
                return {'buckets', 0, 0}
            end
            redis.call('SADD', KEYS[1], ARGV[1])
        end
        return {'ok', tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0'),
                      tonumber(redis.call('HGET', KEYS[2], 'keys') or '0')}
        ",
    )
});

/// KEYS: bucket, usage. ARGV: key, value, max bytes, max keys, overhead.
static SET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local key, value = ARGV[1], ARGV[2]
        local bytes = tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0')
        local keys = tonumber(redis.call('HGET', KEYS[2], 'keys') or '0')
        local existed = redis.call('HEXISTS', KEYS[1], key) == 1
        local grow = #key + #value + tonumber(ARGV[5])
        if existed then
            grow = #value - redis.call('HSTRLEN', KEYS[1], key)
        elseif keys + 1 > tonumber(ARGV[4]) then
            return {'keys', bytes, keys}
        end
        if grow > 0 and bytes + grow > tonumber(ARGV[3]) then
            return {'bytes', bytes, keys}
        end
        redis.call('HSET', KEYS[1], key, value)
        bytes = redis.call('HINCRBY', KEYS[2], 'bytes', grow)
        if not existed then keys = redis.call('HINCRBY', KEYS[2], 'keys', 1) end
        return {'ok', bytes, keys}
        ",
    )
});

/// KEYS: bucket, usage. ARGV: key, overhead.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local len = redis.call('HSTRLEN', KEYS[1], ARGV[1])
        if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
            return {'ok', tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0'),
                          tonumber(redis.call('HGET', KEYS[2], 'keys') or '0')}
        end
        local bytes = redis.call('HINCRBY', KEYS[2], 'bytes', -(#ARGV[1] + len + tonumber(ARGV[2])))
        local keys = redis.call('HINCRBY', KEYS[2], 'keys', -1)
        return {'ok', bytes, keys}
        ",
    )
});

/// KEYS: bucket, usage. ARGV: key, delta (signed decimal), max bytes, max
/// keys, overhead. The new value is returned as a string: Lua's numbers
/// are doubles, which would round a large one.
static INCREMENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local key = ARGV[1]
        local bytes = tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0')
        local keys = tonumber(redis.call('HGET', KEYS[2], 'keys') or '0')
        local old = redis.call('HGET', KEYS[1], key)
        if not old and keys + 1 > tonumber(ARGV[4]) then
            return {'keys', bytes, keys}
        end
        local r = redis.pcall('HINCRBY', KEYS[1], key, ARGV[2])
        if type(r) == 'table' and r.err then
            return {'error', bytes, keys, r.err}
        end
        local new = redis.call('HGET', KEYS[1], key)
        local grow = #key + #new + tonumber(ARGV[5])
        if old then grow = #new - #old end
        if grow > 0 and bytes + grow > tonumber(ARGV[3]) then
            if old then redis.call('HSET', KEYS[1], key, old) else redis.call('HDEL', KEYS[1], key) end
            return {'bytes', bytes, keys}
        end
        bytes = redis.call('HINCRBY', KEYS[2], 'bytes', grow)
        if not old then keys = redis.call('HINCRBY', KEYS[2], 'keys', 1) end
        return {'ok', bytes, keys, new}
        ",
    )
});

/// KEYS: bucket. ARGV: cursor, count. One `HSCAN` page's keys, without
/// their values (Redis 7.0 has no `NOVALUES`): `{next cursor, keys}`.
static LIST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
        local keys = {}
        for i = 1, #page[2], 2 do keys[#keys + 1] = page[2][i] end
        return {page[1], keys}
        ",
    )
});

/// Where one listener's store is in Redis.
pub(crate) struct Place {
    redis: Arc<Redis>,
    /// `pier:{L}:kv:`, the start of each bucket's key.
    prefix: String,
    buckets: String,
    usage: Arc<str>,
    /// Identifiers known to be in the buckets set: opened without asking.
    known: Mutex<HashSet<String>>,
}

impl Place {
    pub(crate) fn new(redis: Arc<Redis>, listener: &str) -> Self {
        let base = format!("pier:{{{listener}}}:kv");
        Self {
            redis,
            prefix: format!("{base}:"),
            buckets: format!("{base}-buckets"),
            usage: Arc::from(format!("{base}-usage")),
            known: Mutex::default(),
        }
    }

    pub(crate) async fn open(
        &self,
        identifier: &str,
        budget: &Arc<Budget>,
        deadline: Instant,
    ) -> Result<Bucket, Error> {
        let bucket = Bucket(Arc::new(Data {
            redis: self.redis.clone(),
            hash: format!("{}{identifier}", self.prefix),
            usage: self.usage.clone(),
            budget: budget.clone(),
        }));
        if self.known.lock().unwrap_or_else(|p| p.into_inner()).contains(identifier) {
            return Ok(bucket);
        }
        let mut call = OPEN.key(&self.buckets);
        call.key(&*self.usage).arg(identifier).arg(MAX_BUCKETS);
        let reply = self.redis.run(deadline, |mut c| async move { call.invoke_async(&mut c).await }).await;
        match Reply::from(reply)? {
            Reply { status, .. } if status == "buckets" => {
                Err(refusal(format!("at most {MAX_BUCKETS} buckets per listener")))
            }
            reply => {
                budget.observe(reply.bytes, reply.keys);
                let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
                known.insert(identifier.to_string());
                Ok(bucket)
            }
        }
    }
}

/// One bucket in Redis.
#[derive(Clone)]
pub(crate) struct Bucket(Arc<Data>);

pub(crate) struct Data {
    redis: Arc<Redis>,
    hash: String,
    usage: Arc<str>,
    budget: Arc<Budget>,
}

impl Bucket {
    pub(crate) async fn get(&self, key: String, deadline: Instant) -> Result<Option<Vec<u8>>, Error> {
        let hash = &self.0.hash;
        let got = self
            .0
            .redis
            .run(deadline, |mut c| async move { redis::cmd("HGET").arg(hash).arg(key).query_async(&mut c).await });
        got.await.map_err(error)
    }

    pub(crate) async fn exists(&self, key: String, deadline: Instant) -> Result<bool, Error> {
        let hash = &self.0.hash;
        let got = self
            .0
            .redis
            .run(deadline, |mut c| async move { redis::cmd("HEXISTS").arg(hash).arg(key).query_async(&mut c).await });
        got.await.map_err(error)
    }

    pub(crate) async fn set(&self, key: String, value: Vec<u8>, deadline: Instant) -> Result<(), Error> {
        let usage = self.0.budget.usage();
        let mut call = SET.key(&self.0.hash);
        call.key(&*self.0.usage).arg(key).arg(value).arg(usage.max_bytes).arg(usage.max_keys).arg(ENTRY_OVERHEAD);
        self.write(call, deadline).await.map(drop)
    }

    pub(crate) async fn delete(&self, key: String, deadline: Instant) -> Result<(), Error> {
        let mut call = DELETE.key(&self.0.hash);
        call.key(&*self.0.usage).arg(key).arg(ENTRY_OVERHEAD);
        self.write(call, deadline).await.map(drop)
    }

    /// Adds `delta` (a signed 64-bit value's bits) to the integer at `key`.
    pub(crate) async fn increment(&self, key: String, delta: u64, deadline: Instant) -> Result<u64, Error> {
        let usage = self.0.budget.usage();
        let mut call = INCREMENT.key(&self.0.hash);
        call.key(&*self.0.usage)
            .arg(key)
            .arg(delta as i64)
            .arg(usage.max_bytes)
            .arg(usage.max_keys)
            .arg(ENTRY_OVERHEAD);
        let value = self.write(call, deadline).await?;
        value
            .as_deref()
            .and_then(|v| v.parse::<i64>().ok())
            .map(|v| v as u64)
            .ok_or_else(|| Error::Other("redis returned no integer for increment".into()))
    }

    /// One page of keys, from Redis's `HSCAN` cursor (`None`: the start).
    pub(crate) async fn list_keys(&self, cursor: Option<u64>, deadline: Instant) -> Result<KeyResponse, Error> {
        let mut call = LIST.key(&self.0.hash);
        call.arg(cursor.unwrap_or(0)).arg(PAGE);
        let scan = |mut c| async move { call.invoke_async::<(u64, Vec<Vec<u8>>)>(&mut c).await };
        let (next, keys) = self.0.redis.run(deadline, scan).await.map_err(error)?;
        let keys = keys.into_iter().map(|k| String::from_utf8_lossy(&k).into_owned()).collect();
        Ok(KeyResponse { keys, cursor: (next != 0).then_some(next) })
    }

    /// Runs a write script; its usage figures update the budget, and a
    /// refusal is the local store's.
    async fn write(&self, call: redis::ScriptInvocation<'_>, deadline: Instant) -> Result<Option<String>, Error> {
        let reply = self.0.redis.run(deadline, |mut c| async move { call.invoke_async(&mut c).await }).await;
        let reply = Reply::from(reply)?;
        let budget = &self.0.budget;
        budget.observe(reply.bytes, reply.keys);
        let usage = budget.usage();
        match reply.status.as_str() {
            "ok" => Ok(reply.extra),
            "keys" => Err(refusal(format!("kv-max-keys {} reached", usage.max_keys))),
            "bytes" => {
                let max = crate::config::units::format_size(usage.max_bytes);
                Err(refusal(format!("kv-max-bytes {max} reached")))
            }
            _ => Err(Error::Other(reply.extra.unwrap_or_else(|| "redis refused the write".into()))),
        }
    }
}

/// What a script answers: `{status, bytes, keys[, extra]}`.
struct Reply {
    status: String,
    bytes: u64,
    keys: u64,
    extra: Option<String>,
}

impl Reply {
    fn from(reply: Result<Vec<Value>, Failure>) -> Result<Self, Error> {
        let reply = reply.map_err(error)?;
        let text = |v: &Value| match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        };
        let number = |v: Option<&Value>| match v {
            Some(Value::Int(n)) => u64::try_from(*n).unwrap_or(0),
            _ => 0,
        };
        let status = reply.first().and_then(text).ok_or_else(|| Error::Other("redis: unexpected reply".into()))?;
        Ok(Reply {
            status,
            bytes: number(reply.get(1)),
            keys: number(reply.get(2)),
            extra: reply.get(3).and_then(text),
        })
    }
}

fn error(f: Failure) -> Error {
    Error::Other(f.to_string())
}
