//! The backplane (Kamaelia's Backplane): host-run publish/subscribe between
//! the connections of a listener, or of the listeners that name the same
//! backplane. Publishing never blocks: each subscriber has a bounded mailbox
//! and a full one loses its oldest message (counted).
//!
//! A shared backplane (the server has `redis`) also reaches the other
//! processes: what a connection publishes is delivered here at once and
//! published to Redis; what other processes publish arrives through this
//! process's one subscriber connection and is delivered the same way.

use super::redis::{Redis, Remote, Share};
use crate::bindings::pier::server::backplane::Host;
use futures_util::task::AtomicWaker;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

/// Undelivered messages (and bytes) one connection may have before the
/// oldest is dropped: enough to absorb a burst from a fast publisher while
/// the subscriber's task catches up, bounded for one that never does.
pub const MAILBOX_CAPACITY: usize = 1024;
pub const MAILBOX_BYTES: usize = 1 << 20;
/// Largest message `publish` accepts; larger ones are dropped and counted.
pub const MAX_MESSAGE: usize = 64 << 10;
/// Most topics one connection may subscribe to; and longest topic name.
pub const MAX_TOPICS: usize = 64;
pub const MAX_TOPIC_LEN: usize = 256;

/// A message on its way to one subscriber.
#[derive(Clone, Debug)]
pub(crate) struct Message {
    pub(crate) topic: Arc<str>,
    pub(crate) body: Arc<[u8]>,
}

/// Messages waiting for one connection's handler.
#[derive(Debug, Default)]
struct Mailbox {
    queue: VecDeque<Message>,
    bytes: usize,
    dropped: u64,
}

impl Mailbox {
    /// Drops the oldest messages until one of `len` bytes fits; returns the
    /// bytes freed.
    fn make_room(&mut self, len: usize) -> usize {
        let mut freed = 0;
        while !self.queue.is_empty() && (self.queue.len() >= MAILBOX_CAPACITY || self.bytes + len > MAILBOX_BYTES) {
            freed += self.pop().map_or(0, |m| m.body.len());
            self.dropped += 1;
        }
        freed
    }

    fn push(&mut self, message: Message) {
        self.bytes += message.body.len();
        self.queue.push_back(message);
    }

    fn pop(&mut self) -> Option<Message> {
        let message = self.queue.pop_front()?;
        self.bytes -= message.body.len();
        Some(message)
    }
}

/// Undelivered bytes one listener's connections hold in all, against its
/// `backplane-max-bytes`; and what they published and lost, for the metrics.
#[derive(Debug)]
pub(crate) struct Budget {
    max: usize,
    bytes: AtomicUsize,
    /// Messages this listener's connections published.
    pub(crate) published: AtomicU64,
    /// Messages lost: to this listener's full mailboxes or budget, or too
    /// large (or not taken by Redis) when one of its connections published
    /// them.
    pub(crate) dropped: Arc<AtomicU64>,
    /// What its connections' messages on their way to Redis may hold: as
    /// much as its mailboxes, counted apart.
    pub(crate) to_redis: Arc<Share>,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Self {
        let dropped = Arc::<AtomicU64>::default();
        let to_redis = Arc::new(Share::new(max, dropped.clone()));
        Self { max, bytes: AtomicUsize::new(0), published: AtomicU64::new(0), dropped, to_redis }
    }

    fn take(&self, n: usize) -> bool {
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_add(n).filter(|&t| t <= self.max))
            .is_ok()
    }

    /// Undelivered bytes held against the budget now.
    pub(crate) fn used(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    fn release(&self, n: usize) {
        self.bytes.fetch_sub(n, Ordering::AcqRel);
    }
}

/// One connection as the backplane sees it: a mailbox, and a waker for the
/// task that empties it. Whether mail waits is one atomic flag, so a task
/// looks for mail without taking the mailbox's lock.
#[derive(Debug)]
pub(crate) struct Subscriber {
    mailbox: Mutex<Mailbox>,
    has_mail: AtomicBool,
    waker: AtomicWaker,
    /// The listener's budget this mailbox's bytes count against.
    budget: Arc<Budget>,
}

impl Subscriber {
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        Self { mailbox: Mutex::default(), has_mail: AtomicBool::new(false), waker: AtomicWaker::new(), budget }
    }

    fn mailbox(&self) -> MutexGuard<'_, Mailbox> {
        self.mailbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a message and wakes the subscriber's task. A message lost (this
    /// mailbox's oldest, as it was full, or this one, as the listener's
    /// budget was) is counted against the listener.
    fn deliver(&self, message: Message) {
        let len = message.body.len();
        {
            let mut mailbox = self.mailbox();
            let before = mailbox.dropped;
            self.budget.release(mailbox.make_room(len));
            if self.budget.take(len) {
                mailbox.push(message);
                self.has_mail.store(true, Ordering::Release);
            } else {
                mailbox.dropped += 1;
            }
            let lost = mailbox.dropped - before;
            self.budget.dropped.fetch_add(lost, Ordering::Relaxed);
        }
        self.waker.wake();
    }

    /// The next waiting message, if any.
    pub(crate) fn take(&self) -> Option<Message> {
        if !self.has_mail.load(Ordering::Acquire) {
            return None;
        }
        let mut mailbox = self.mailbox();
        let message = mailbox.pop();
        if let Some(m) = &message {
            self.budget.release(m.body.len());
        }
        if mailbox.queue.is_empty() {
            self.has_mail.store(false, Ordering::Release);
        }
        message
    }

    /// Ready once mail waits.
    pub(crate) fn poll_mail(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.has_mail.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        if self.has_mail.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
    }

    /// Messages this subscriber lost to a full mailbox.
    pub(crate) fn dropped(&self) -> u64 {
        self.mailbox().dropped
    }
}

impl Drop for Subscriber {
    /// What was never delivered leaves the listener's budget with it.
    fn drop(&mut self) {
        self.budget.release(self.mailbox().bytes);
    }
}

/// The subscribers of one topic, by connection id.
type Subscribers = HashMap<u64, Arc<Subscriber>>;

/// One backplane: topics and their subscribers in this process, and, if
/// it is shared, the Redis that reaches the others.
#[derive(Default)]
pub(crate) struct Backplane {
    local: Arc<Topics>,
    shared: Option<Shared>,
}

/// Topics and their subscribers in this process.
#[derive(Default)]
struct Topics(Mutex<HashMap<Arc<str>, Subscribers>>);

/// A backplane's place in Redis: its channels are `pier:{NAME}:bp:TOPIC`.
struct Shared {
    redis: Arc<Redis>,
    prefix: String,
}

impl Shared {
    fn channel(&self, topic: &str) -> Vec<u8> {
        [self.prefix.as_bytes(), topic.as_bytes()].concat()
    }
}

impl Topics {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Subscribers>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers to every subscriber of `topic` but `publisher`.
    fn deliver(&self, topic: &str, body: Arc<[u8]>, publisher: Option<u64>) {
        let topics = self.lock();
        let Some((name, subs)) = topics.get_key_value(topic) else { return };
        let message = Message { topic: name.clone(), body };
        for (&conn, subscriber) in subs {
            // A loss is counted (in the listener's metrics, and in the
            // subscriber's one line when it ends), never logged per message:
            // a flood must not become a log flood.
            if Some(conn) != publisher {
                subscriber.deliver(message.clone());
            }
        }
    }
}

impl Remote for Topics {
    /// A message another process published.
    fn arrive(&self, topic: &str, body: &[u8]) {
        self.deliver(topic, Arc::from(body), None);
    }
}

impl Backplane {
    /// The backplane `name`, shared through `redis` with every process
    /// that has one of that name.
    pub(crate) fn shared(redis: Arc<Redis>, name: &str) -> Self {
        let prefix = format!("pier:{{{name}}}:bp:");
        Self { local: Arc::default(), shared: Some(Shared { redis, prefix }) }
    }

    fn subscribe(&self, topic: &str, conn: u64, subscriber: &Arc<Subscriber>) {
        let mut topics = self.local.lock();
        match topics.get_mut(topic) {
            Some(subs) => {
                subs.insert(conn, subscriber.clone());
            }
            None => {
                let topic: Arc<str> = Arc::from(topic);
                topics.insert(topic.clone(), HashMap::from([(conn, subscriber.clone())]));
                if let Some(shared) = &self.shared {
                    let to: std::sync::Weak<dyn Remote> = Arc::downgrade(&self.local) as _;
                    shared.redis.want(shared.channel(&topic), topic, to);
                }
            }
        }
    }

    fn unsubscribe(&self, topic: &str, conn: u64) {
        let mut topics = self.local.lock();
        if let Some(subs) = topics.get_mut(topic) {
            subs.remove(&conn);
            if subs.is_empty() {
                topics.remove(topic);
                if let Some(shared) = &self.shared {
                    shared.redis.unwant(&shared.channel(topic));
                }
            }
        }
    }

    /// Delivers to every subscriber of `topic` here but the publisher, and
    /// to the other processes' (through the publisher's listener's `share`
    /// of the queue to Redis).
    fn publish(&self, topic: &str, body: Vec<u8>, publisher: u64, share: &Arc<Share>) {
        if let Some(shared) = &self.shared {
            shared.redis.publish(shared.channel(topic), &body, share);
        }
        self.local.deliver(topic, Arc::from(body), Some(publisher));
    }
}

/// One connection's side of the backplane: what its handler's `backplane`
/// imports reach. Its subscriptions end when it is dropped with the
/// connection's store, however the connection ended.
pub(crate) struct Client {
    backplane: Arc<Backplane>,
    conn: u64,
    subscriber: Arc<Subscriber>,
    topics: Vec<String>,
}

impl Client {
    pub(crate) fn new(backplane: Arc<Backplane>, conn: u64, subscriber: Arc<Subscriber>) -> Self {
        Self { backplane, conn, subscriber, topics: Vec::new() }
    }
}

impl Host for Client {
    fn publish(&mut self, topic: String, message: Vec<u8>) {
        self.subscriber.budget.published.fetch_add(1, Ordering::Relaxed);
        if message.len() > MAX_MESSAGE {
            self.subscriber.budget.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.backplane.publish(&topic, message, self.conn, &self.subscriber.budget.to_redis);
    }

    fn subscribe(&mut self, topic: String) {
        if self.topics.contains(&topic) {
            return;
        }
        if self.topics.len() >= MAX_TOPICS || topic.len() > MAX_TOPIC_LEN {
            return;
        }
        self.backplane.subscribe(&topic, self.conn, &self.subscriber);
        self.topics.push(topic);
    }

    fn unsubscribe(&mut self, topic: String) {
        self.backplane.unsubscribe(&topic, self.conn);
        self.topics.retain(|t| *t != topic);
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for topic in &self.topics {
            self.backplane.unsubscribe(topic, self.conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_mailbox_loses_its_oldest_message() {
        let backplane = Arc::new(Backplane::default());
        let budget = Arc::new(Budget::new(usize::MAX));
        let (a, b) = (Arc::new(Subscriber::new(budget.clone())), Arc::new(Subscriber::new(budget)));
        let mut alice = Client::new(backplane.clone(), 1, a.clone());
        let mut bob = Client::new(backplane.clone(), 2, b.clone());
        alice.subscribe("room".into());
        bob.subscribe("room".into());
        for i in 0..MAILBOX_CAPACITY + 1 {
            alice.publish("room".into(), i.to_string().into_bytes());
        }
        assert!(a.take().is_none(), "the publisher does not get its own message");
        assert_eq!(b.dropped(), 1);
        assert_eq!(&*b.take().unwrap().body, b"1");
        drop(bob);
        alice.publish("room".into(), b"x".to_vec());
        assert_eq!(b.take().map(|_| ()), Some(()), "what was queued stays");
        assert!(backplane.local.lock().get("room").is_some_and(|s| s.len() == 1), "bob's subscription ended with him");
    }

    #[test]
    fn the_listener_budget_bounds_what_all_its_mailboxes_hold() {
        let backplane = Arc::new(Backplane::default());
        let budget = Arc::new(Budget::new(10));
        let mut publisher = Client::new(backplane.clone(), 0, Arc::new(Subscriber::new(Arc::new(Budget::new(0)))));
        let readers: Vec<_> = (1..=3).map(|_| Arc::new(Subscriber::new(budget.clone()))).collect();
        let clients: Vec<_> = readers
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut c = Client::new(backplane.clone(), i as u64 + 1, r.clone());
                c.subscribe("t".into());
                c
            })
            .collect();
        publisher.publish("t".into(), vec![0; 4]);
        assert_eq!(budget.bytes.load(Ordering::Acquire), 8, "two of three fit");
        assert_eq!(readers.iter().map(|r| r.dropped()).sum::<u64>(), 1);
        let got = readers.iter().filter(|r| r.take().is_some()).count();
        assert_eq!(got, 2);
        assert_eq!(budget.bytes.load(Ordering::Acquire), 0, "delivered bytes leave the budget");
        publisher.publish("t".into(), vec![0; 4]);
        drop(clients);
        drop(readers);
        assert_eq!(budget.bytes.load(Ordering::Acquire), 0, "undelivered bytes leave with their connection");
    }
}
