//! One pier process's link to Redis, when the server has `redis`: where the
//! listeners' key-value stores and backplanes live, shared by every process
//! that names the same Redis.
//!
//! Two connections, both kept by redis-rs's connection manager (which
//! reconnects by itself): one for requests (key-value scripts, `PUBLISH`),
//! one RESP3 connection subscribed to every backplane channel this process's
//! connections want, whose messages are delivered to local mailboxes as they
//! arrive. An outage is logged once; while it lasts requests fail at once
//! instead of each waiting out `redis-timeout`, and a check every second
//! finds Redis back.

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ProtocolVersion, PushInfo, PushKind, RedisError, Value};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tracing::{info, warn};

/// How often the link checks that Redis answers (and, after an outage,
/// that it is back).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What a message waiting to be published costs besides its bytes (its
/// place in the queue, its channel's allocation), counted against its
/// listener's [`Share`] so that the share bounds how many wait, too.
pub const MESSAGE_OVERHEAD: usize = 64;

/// Messages sent to Redis in one pipeline.
const PUBLISH_BATCH: usize = 64;

/// Bytes of the id that starts each published payload: a process drops its
/// own messages when Redis hands them back (it delivered them locally).
const ORIGIN: usize = 16;

/// A time short enough to be worth no request: with less left of the
/// call's deadline, a request fails without being sent.
const TOO_LITTLE: Duration = Duration::from_millis(1);

/// Where a message arriving from Redis is delivered: a backplane's local
/// subscribers of one topic.
pub(crate) trait Remote: Send + Sync {
    fn arrive(&self, topic: &str, body: &[u8]);
}

/// One channel this process is subscribed to (or wants to be).
struct Route {
    topic: Arc<str>,
    to: Weak<dyn Remote>,
    /// Backplanes wanting it (a reload may briefly hold two of one name).
    wanted: usize,
}

type Routes = Mutex<HashMap<Vec<u8>, Route>>;

fn lock(routes: &Routes) -> MutexGuard<'_, HashMap<Vec<u8>, Route>> {
    routes.lock().unwrap_or_else(|p| p.into_inner())
}

/// One listener's share of the queue to Redis: the bytes its messages
/// waiting there may hold (its `backplane-max-bytes`), and the count of
/// those lost. A tenant publishing faster than Redis takes fills its own
/// share, never another's.
#[derive(Debug)]
pub(crate) struct Share {
    max: usize,
    queued: AtomicUsize,
    lost: Arc<AtomicU64>,
}

impl Share {
    pub(crate) fn new(max: usize, lost: Arc<AtomicU64>) -> Self {
        Self { max, queued: AtomicUsize::new(0), lost }
    }

    fn take(&self, n: usize) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| q.checked_add(n).filter(|&t| t <= self.max))
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
    }

    fn lose(&self) {
        self.lost.fetch_add(1, Ordering::Relaxed);
    }
}

/// A message on its way to Redis, and whose share it is counted in.
struct Outgoing {
    channel: Vec<u8>,
    payload: Vec<u8>,
    share: Arc<Share>,
}

impl Outgoing {
    fn cost(&self) -> usize {
        self.channel.len() + self.payload.len() + MESSAGE_OVERHEAD
    }
}

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Redis is unreachable, or did not answer in time.
    Unavailable(String),
    /// Redis answered with an error.
    Refused(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unavailable(why) => write!(f, "redis unavailable: {why}"),
            Failure::Refused(why) => write!(f, "redis: {why}"),
        }
    }
}

/// The connections, and whether Redis answers.
struct Link {
    /// The URL as given, password hidden, for the log.
    shown: String,
    requests: ConnectionManager,
    subscriber: ConnectionManager,
    timeout: Duration,
    up: AtomicBool,
    /// Set once the first [`Redis::ping`] succeeded: before, the upkeep
    /// task does not check (a Redis down at start-up is the start-up's
    /// error, not an outage).
    checked: AtomicBool,
    origin: [u8; ORIGIN],
}

impl Link {
    fn down(&self, why: &dyn std::fmt::Display) {
        if self.up.swap(false, Ordering::AcqRel) {
            warn!(
                redis = %self.shown,
                "redis unreachable: {why}; key-value calls fail and backplane messages between processes are \
                 dropped (counted) until it is back"
            );
        }
    }

    fn up(&self) {
        if !self.up.swap(true, Ordering::AcqRel) {
            info!(redis = %self.shown, "redis reachable again: key-value and backplane shared again");
        }
    }

    /// Runs a request under `timeout` (and `deadline`), sorting out what a
    /// failure means: a lost connection or no answer marks Redis down.
    async fn run<T, F>(&self, deadline: Instant, request: impl FnOnce(ConnectionManager) -> F) -> Result<T, Failure>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        if !self.up.load(Ordering::Acquire) {
            return Err(Failure::Unavailable(format!("{} does not answer", self.shown)));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left < TOO_LITTLE {
            return Err(Failure::Unavailable("no time left in this call (cpu-limit)".into()));
        }
        let wait = self.timeout.min(left);
        match tokio::time::timeout(wait, request(self.requests.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) if is_outage(&e) => {
                self.down(&e);
                Err(Failure::Unavailable(e.to_string()))
            }
            Ok(Err(e)) => Err(Failure::Refused(e.to_string())),
            Err(_) if wait < self.timeout => {
                Err(Failure::Unavailable(format!("no answer in the {wait:?} left of this call (cpu-limit)")))
            }
            Err(_) => {
                let why = format!("no answer within redis-timeout {:?}", self.timeout);
                self.down(&why);
                Err(Failure::Unavailable(why))
            }
        }
    }
}

fn is_outage(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

/// The process's link to one Redis; shared by every listener that keeps its
/// state there.
pub(crate) struct Redis {
    url: String,
    link: Arc<Link>,
    routes: Arc<Routes>,
    /// Wakes the upkeep task when `routes` changed.
    changed: Arc<Notify>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
}

impl Redis {
    /// The link to the Redis at `url`, connecting lazily: [`ping`](Self::ping)
    /// says whether it answers. Starts its tasks on the current runtime.
    pub(crate) fn new(url: &str, timeout: Duration) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(url)?;
        let info = client.get_connection_info().clone();
        let redis_settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let resp3 = redis::Client::open(info.set_redis_settings(redis_settings))?;
        let origin = new_origin();
        let routes: Arc<Routes> = Arc::default();
        let deliver = {
            let routes = routes.clone();
            move |push: PushInfo| {
                arrive(&routes, &origin, push);
                Ok::<(), ()>(())
            }
        };
        let manager = || {
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(CHECK_EVERY)
                .set_number_of_retries(usize::MAX)
        };
        let requests = ConnectionManager::new_lazy_with_config(client, manager())?;
        let subscriber = ConnectionManager::new_lazy_with_config(
            resp3,
            manager().set_push_sender(deliver).set_automatic_resubscription(),
        )?;
        let link = Arc::new(Link {
            shown: shown(url),
            requests,
            subscriber,
            timeout,
            up: AtomicBool::new(true),
            checked: AtomicBool::new(false),
            origin,
        });
        // Unbounded as a channel, bounded by the listeners' shares.
        let (outgoing, queue) = mpsc::unbounded_channel();
        tokio::spawn(publish(link.clone(), queue));
        let changed = Arc::new(Notify::new());
        let redis = Arc::new(Self { url: url.to_string(), link, routes, changed: changed.clone(), outgoing });
        tokio::spawn(upkeep(Arc::downgrade(&redis), changed));
        Ok(redis)
    }

    /// Whether Redis answers a PING on both connections within the timeout.
    pub(crate) async fn ping(&self) -> anyhow::Result<()> {
        let link = &self.link;
        match ping_both(link, link.timeout.max(Duration::from_secs(2))).await {
            Ok(Ok(())) => {
                link.checked.store(true, Ordering::Release);
                Ok(())
            }
            Ok(Err(e)) => anyhow::bail!(
                "redis at {} is unreachable: {e}; start redis-server there, or fix `redis` (--redis)",
                link.shown
            ),
            Err(_) => anyhow::bail!(
                "redis at {} does not answer: start redis-server there, or fix `redis` (--redis)",
                link.shown
            ),
        }
    }

    /// Whether Redis answered the last request or check.
    pub(crate) fn is_up(&self) -> bool {
        self.link.up.load(Ordering::Acquire)
    }

    /// The URL as given.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Runs one request within the call's `deadline` and `redis-timeout`.
    pub(crate) async fn run<T, F>(
        &self,
        deadline: Instant,
        request: impl FnOnce(ConnectionManager) -> F,
    ) -> Result<T, Failure>
    where
        F: Future<Output = redis::RedisResult<T>>,
    {
        self.link.run(deadline, request).await
    }

    /// Queues `body` for the other processes subscribed to `channel`;
    /// never waits. A message past its listener's `share`, or that Redis
    /// does not take, is counted as lost there.
    pub(crate) fn publish(&self, channel: Vec<u8>, body: &[u8], share: &Arc<Share>) {
        let mut payload = Vec::with_capacity(ORIGIN + body.len());
        payload.extend_from_slice(&self.link.origin);
        payload.extend_from_slice(body);
        let message = Outgoing { channel, payload, share: share.clone() };
        let cost = message.cost();
        if !self.link.up.load(Ordering::Acquire) || !share.take(cost) {
            share.lose();
            return;
        }
        if self.outgoing.send(message).is_err() {
            share.release(cost);
            share.lose();
        }
    }

    /// Subscribes this process to `channel`, whose messages go to `to`.
    pub(crate) fn want(&self, channel: Vec<u8>, topic: Arc<str>, to: Weak<dyn Remote>) {
        let mut routes = lock(&self.routes);
        let route = routes.entry(channel).or_insert_with(|| Route { topic, to: to.clone(), wanted: 0 });
        route.wanted += 1;
        if route.to.strong_count() == 0 {
            route.to = to;
        }
        drop(routes);
        self.changed.notify_one();
    }

    /// Undoes one [`want`](Self::want) of `channel`.
    pub(crate) fn unwant(&self, channel: &[u8]) {
        let mut routes = lock(&self.routes);
        if let Some(route) = routes.get_mut(channel) {
            route.wanted -= 1;
            if route.wanted == 0 {
                routes.remove(channel);
                self.changed.notify_one();
            }
        }
    }
}

/// A message pushed by Redis: delivered to the backplane that wants its
/// channel, unless this process published it.
fn arrive(routes: &Routes, origin: &[u8; ORIGIN], push: PushInfo) {
    if push.kind != PushKind::Message {
        return;
    }
    let [Value::BulkString(channel), Value::BulkString(payload)] = &push.data[..] else { return };
    if payload.len() < ORIGIN || payload[..ORIGIN] == origin[..] {
        return;
    }
    let body = &payload[ORIGIN..];
    let found = lock(routes).get(channel).map(|r| (r.topic.clone(), r.to.clone()));
    if let Some((topic, to)) = found
        && let Some(to) = to.upgrade()
    {
        to.arrive(&topic, body);
    }
}

/// Publishes what is queued, a pipeline at a time, until the link is gone.
async fn publish(link: Arc<Link>, mut queue: mpsc::UnboundedReceiver<Outgoing>) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while queue.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for m in &batch {
            pipe.publish(&m.channel, &m.payload).ignore();
        }
        let deadline = Instant::now() + link.timeout;
        let sent = link.run(deadline, |mut c| async move { pipe.query_async::<()>(&mut c).await }).await;
        for m in batch.drain(..) {
            m.share.release(m.cost());
            if sent.is_err() {
                m.share.lose();
            }
        }
    }
}

/// Every second (or when the routes change): checks Redis answers, and
/// brings the subscriber connection's channels in line with the routes.
async fn upkeep(redis: Weak<Redis>, changed: Arc<Notify>) {
    let mut subscribed: HashSet<Vec<u8>> = HashSet::new();
    loop {
        let Some(r) = redis.upgrade() else { return };
        if !r.link.checked.load(Ordering::Acquire) {
            drop(r);
            tokio::time::sleep(CHECK_EVERY / 10).await;
            continue;
        }
        check(&r.link).await;
        if r.link.up.load(Ordering::Acquire) {
            let wanted: HashSet<Vec<u8>> = lock(&r.routes).keys().cloned().collect();
            reconcile(&r.link, &wanted, &mut subscribed).await;
        }
        drop(r);
        let _ = tokio::time::timeout(CHECK_EVERY, changed.notified()).await;
    }
}

/// PINGs both connections (which also makes a dropped one reconnect).
async fn check(link: &Link) {
    match ping_both(link, link.timeout).await {
        Ok(Ok(())) => link.up(),
        Ok(Err(e)) => link.down(&e),
        Err(_) => link.down(&format!("no answer within redis-timeout {:?}", link.timeout)),
    }
}

/// PINGs the requests connection, then the subscriber, within `wait`.
async fn ping_both(link: &Link, wait: Duration) -> Result<redis::RedisResult<()>, tokio::time::error::Elapsed> {
    let ping = |mut c: ConnectionManager| async move { redis::cmd("PING").query_async::<String>(&mut c).await };
    tokio::time::timeout(wait, async {
        ping(link.requests.clone()).await?;
        ping(link.subscriber.clone()).await.map(drop)
    })
    .await
}

async fn reconcile(link: &Link, wanted: &HashSet<Vec<u8>>, subscribed: &mut HashSet<Vec<u8>>) {
    let mut conn = link.subscriber.clone();
    let new: Vec<Vec<u8>> = wanted.difference(subscribed).cloned().collect();
    let old: Vec<Vec<u8>> = subscribed.difference(wanted).cloned().collect();
    if !new.is_empty() && within(link, conn.subscribe(&new)).await {
        subscribed.extend(new);
    }
    if !old.is_empty() && within(link, conn.unsubscribe(&old)).await {
        for channel in &old {
            subscribed.remove(channel);
        }
    }
}

async fn within(link: &Link, request: impl Future<Output = redis::RedisResult<()>>) -> bool {
    match tokio::time::timeout(link.timeout, request).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            if is_outage(&e) {
                link.down(&e);
            }
            false
        }
        Err(_) => false,
    }
}

/// An id for this process's messages, different for every process.
fn new_origin() -> [u8; ORIGIN] {
    use std::hash::BuildHasher;
    let (a, b) = (std::hash::RandomState::new(), std::hash::RandomState::new());
    let seed = (std::process::id(), std::time::SystemTime::now());
    let mut origin = [0; ORIGIN];
    origin[..8].copy_from_slice(&a.hash_one(seed).to_le_bytes());
    origin[8..].copy_from_slice(&b.hash_one(seed).to_le_bytes());
    origin
}

/// `url` with its password, if any, replaced by `***`.
pub(crate) fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_never_shows_a_password() {
        assert_eq!(shown("redis://127.0.0.1:6379/2"), "redis://127.0.0.1:6379/2");
        assert_eq!(shown("redis://user:secret@host:6379"), "redis://user:***@host:6379");
        assert_eq!(shown("redis://:secret@host"), "redis://:***@host");
    }

    struct Sink(Mutex<Vec<(String, Vec<u8>)>>);

    impl Remote for Sink {
        fn arrive(&self, topic: &str, body: &[u8]) {
            self.0.lock().unwrap().push((topic.to_string(), body.to_vec()));
        }
    }

    #[test]
    fn a_process_gets_others_messages_not_its_own() {
        let routes: Routes = Mutex::default();
        let sink = Arc::new(Sink(Mutex::default()));
        let to: Weak<dyn Remote> = Arc::downgrade(&(sink.clone() as Arc<dyn Remote>));
        lock(&routes).insert(b"chan".to_vec(), Route { topic: Arc::from("room"), to, wanted: 1 });
        let (mine, theirs) = ([1; ORIGIN], [2; ORIGIN]);
        let push = |origin: &[u8], body: &[u8]| PushInfo {
            kind: PushKind::Message,
            data: vec![Value::BulkString(b"chan".to_vec()), Value::BulkString([origin, body].concat())],
        };
        arrive(&routes, &mine, push(&mine, b"echo"));
        arrive(&routes, &mine, push(&theirs, b"hello"));
        arrive(&routes, &mine, push(&theirs[..3], b""));
        assert_eq!(*sink.0.lock().unwrap(), vec![("room".to_string(), b"hello".to_vec())]);
    }
}
