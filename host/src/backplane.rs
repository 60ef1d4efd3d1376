//! The backplane (Kamaelia's Backplane): host-run publish/subscribe between
//! the connections of a listener, or of the listeners that name the same
//! backplane. Publishing never blocks: each subscriber has a bounded mailbox
//! and a full one loses its oldest message (counted).

use crate::outbox::CsaShared;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Undelivered messages (and bytes) one connection may have before the
/// oldest is dropped: enough to absorb a burst from a fast publisher while
/// the subscriber's task catches up, bounded for one that never does.
pub const MAILBOX_CAPACITY: usize = 1024;
pub const MAILBOX_BYTES: usize = 1 << 20;
/// Largest message `publish` accepts; larger ones are dropped and logged.
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

/// Messages waiting for a connection's handler.
#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    queue: VecDeque<Message>,
    bytes: usize,
    pub(crate) dropped: u64,
}

impl Mailbox {
    /// Queues a message; a full mailbox drops its oldest. True if it dropped.
    fn push(&mut self, message: Message) -> bool {
        let mut dropped = false;
        while !self.queue.is_empty()
            && (self.queue.len() >= MAILBOX_CAPACITY || self.bytes + message.body.len() > MAILBOX_BYTES)
        {
            self.pop();
            self.dropped += 1;
            dropped = true;
        }
        self.bytes += message.body.len();
        self.queue.push_back(message);
        dropped
    }

    pub(crate) fn pop(&mut self) -> Option<Message> {
        let message = self.queue.pop_front()?;
        self.bytes -= message.body.len();
        Some(message)
    }
}

/// The subscribers of one topic, by connection id.
type Subscribers = HashMap<u64, Arc<CsaShared>>;

/// One backplane: topics and their subscribers.
#[derive(Default)]
pub(crate) struct Backplane {
    topics: Mutex<HashMap<Arc<str>, Subscribers>>,
    dropped: AtomicU64,
}

impl Backplane {
    pub(crate) fn subscribe(&self, topic: &str, conn: u64, csa: &Arc<CsaShared>) {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        match topics.get_mut(topic) {
            Some(subs) => {
                subs.insert(conn, csa.clone());
            }
            None => {
                topics.insert(Arc::from(topic), HashMap::from([(conn, csa.clone())]));
            }
        }
    }

    pub(crate) fn unsubscribe(&self, topic: &str, conn: u64) {
        let mut topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(subs) = topics.get_mut(topic) {
            subs.remove(&conn);
            if subs.is_empty() {
                topics.remove(topic);
            }
        }
    }

    /// Delivers to every subscriber of `topic` but the publisher.
    pub(crate) fn publish(&self, topic: &str, body: Vec<u8>, publisher: u64) {
        let topics = self.topics.lock().unwrap_or_else(|p| p.into_inner());
        let Some((name, subs)) = topics.get_key_value(topic) else { return };
        let message = Message { topic: name.clone(), body: Arc::from(body) };
        for (&conn, csa) in subs {
            if conn == publisher {
                continue;
            }
            if csa.mailbox().push(message.clone()) {
                let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(
                    conn,
                    topic,
                    dropped_total = total,
                    "backplane: mailbox full, dropped the oldest message"
                );
            }
            csa.doorbell.ring(crate::doorbell::RING);
        }
    }
}

/// A connection's subscriptions, removed from the backplane when the
/// connection's store is dropped, however the connection ended.
pub(crate) struct Subscriptions {
    backplane: Arc<Backplane>,
    conn: u64,
    topics: Vec<String>,
}

impl Subscriptions {
    pub(crate) fn new(backplane: Arc<Backplane>, conn: u64) -> Self {
        Self { backplane, conn, topics: Vec::new() }
    }

    pub(crate) fn subscribe(&mut self, topic: String, csa: &Arc<CsaShared>) {
        if self.topics.contains(&topic) {
            return;
        }
        if self.topics.len() >= MAX_TOPICS || topic.len() > MAX_TOPIC_LEN {
            tracing::debug!(conn = self.conn, "backplane: subscription refused (too many topics or name too long)");
            return;
        }
        self.backplane.subscribe(&topic, self.conn, csa);
        self.topics.push(topic);
    }

    pub(crate) fn unsubscribe(&mut self, topic: &str) {
        self.backplane.unsubscribe(topic, self.conn);
        self.topics.retain(|t| t != topic);
    }

    pub(crate) fn publish(&self, topic: &str, body: Vec<u8>) {
        if body.len() > MAX_MESSAGE {
            tracing::debug!(conn = self.conn, len = body.len(), "backplane: message too large, dropped");
            return;
        }
        self.backplane.publish(topic, body, self.conn);
    }
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        for topic in &self.topics {
            self.backplane.unsubscribe(topic, self.conn);
        }
    }
}
