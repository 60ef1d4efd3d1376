//! The most host memory a listener can make pier hold: every resource its
//! connections can fill, each with its bound, from the listener's settings
//! and the host's fixed limits. `pier check --config` prints it; the README's
//! worst-case table is this arithmetic for the demo configuration.
//!
//! Kernel memory (socket buffers, the accept backlog) is not counted: it is
//! the kernel's, bounded by its own settings (`net.ipv4.tcp_rmem`, ...).

use crate::config::ListenerConfig;
use crate::csa::READ_CHUNK;
use crate::sandbox::{ASYNC_STACK, MAX_LOG_LINE, MAX_RESOURCES};
use crate::services::backplane::{MAILBOX_BYTES, MAX_TOPIC_LEN, MAX_TOPICS};
use crate::services::upstream::READ_CHUNK as UPSTREAM_READ;

/// Host memory per connection for its store, instance, task and tables, the
/// fixed part not set by any limit: about 36 KiB measured idle (`make
/// bench`), rounded up for what a busy connection adds.
pub const CONNECTION_OVERHEAD: u64 = 64 << 10;

/// What one WASI resource table entry may hold on the host (a pollable, a
/// stream handle, a directory descriptor), an upper estimate.
pub const RESOURCE_ENTRY: u64 = 256;

/// What one TLS connection's rustls state may hold: encrypted records
/// waiting for the socket (its 64 KiB buffer limit), decrypted bytes not
/// yet read (16 KiB), a handshake message being reassembled (64 KiB), and
/// the session's own state; an upper estimate.
pub const TLS_SESSION: u64 = 160 << 10;

/// What one pending timer holds: its deadline and id, in two ordered maps.
pub const TIMER_ENTRY: u64 = 96;

/// Host memory per connection of a `server-handler` listener, besides its
/// outbox and read buffer: its task, its share of the instance's table and
/// queue entries; measured idle in `make bench`, rounded up.
pub const SERVER_CONNECTION_OVERHEAD: u64 = 8 << 10;

/// How a listener's handler is instantiated, which decides what is counted
/// once and what once per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `connection-handler` (or a `wasi:cli` command): an instance each.
    InstancePerConnection,
    /// `server-handler`: one instance for all, each connection a handle.
    InstancePerListener,
}

/// One line of the arithmetic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub resource: &'static str,
    /// The bound for one connection, if it is counted per connection.
    pub per_connection: Option<u64>,
    /// The bound for the whole listener.
    pub per_listener: u64,
}

/// Every host-side resource of `listener` with its bound.
pub fn rows(listener: &ListenerConfig, shape: Shape) -> Vec<Row> {
    let conns = u64::from(listener.max_connections);
    let each =
        |resource, bytes: u64| Row { resource, per_connection: Some(bytes), per_listener: bytes.saturating_mul(conns) };
    let high_water = listener.outbox_high_water as u64;
    if shape == Shape::InstancePerListener {
        let once = |resource, bytes: u64| Row { resource, per_connection: None, per_listener: bytes };
        return vec![
            once("linear memory (memory-limit), one instance", listener.memory_limit),
            once("call stack", ASYNC_STACK as u64),
            once("WASI resource table", MAX_RESOURCES as u64 * RESOURCE_ENTRY),
            once("guest log lines (stdout, stderr)", 2 * MAX_LOG_LINE as u64),
            once("store, instance", CONNECTION_OVERHEAD),
            once("bytes waiting for the instance (queue-max-bytes)", listener.queue_max_bytes as u64),
            each("outbox (2 x outbox-high-water)", high_water.saturating_mul(2)),
            each("read buffer", READ_CHUNK as u64),
            each("task, conn handles (twice max-connections)", SERVER_CONNECTION_OVERHEAD),
            Row {
                resource: "key-value store (kv-max-bytes)",
                per_connection: None,
                per_listener: listener.kv_max_bytes,
            },
        ];
    }
    let tls = listener.has_tls().then(|| each("TLS session (rustls buffers)", TLS_SESSION));
    let mut rows = vec![
        each("linear memory (memory-limit)", listener.memory_limit),
        each("call stack", ASYNC_STACK as u64),
        // Below high water one send of at most the mark is taken.
        each("outbox (2 x outbox-high-water)", high_water.saturating_mul(2)),
        each("read buffer", READ_CHUNK as u64),
        each("WASI resource table", MAX_RESOURCES as u64 * RESOURCE_ENTRY),
        each("guest log lines (stdout, stderr)", 2 * MAX_LOG_LINE as u64),
        each("backplane subscriptions", (MAX_TOPICS * MAX_TOPIC_LEN) as u64),
        each("timers (max-timers)", u64::from(listener.max_timers) * TIMER_ENTRY),
        // Each upstream: an outbox like the connection's, and a read chunk
        // (none where allow-connect lists nothing).
        each(
            "upstreams (max-upstreams)",
            if listener.allow_connect.is_empty() { 0 } else { u64::from(listener.max_upstreams) }
                * (high_water.saturating_mul(2) + UPSTREAM_READ as u64),
        ),
        each("store, instance, task", CONNECTION_OVERHEAD),
        Row {
            resource: "backplane mailboxes (backplane-max-bytes)",
            per_connection: Some(MAILBOX_BYTES as u64),
            per_listener: (listener.backplane_max_bytes as u64).min(conns.saturating_mul(MAILBOX_BYTES as u64)),
        },
        Row { resource: "key-value store (kv-max-bytes)", per_connection: None, per_listener: listener.kv_max_bytes },
    ];
    rows.extend(tls);
    rows
}

/// The sum of [`rows`]: the most host memory `listener` can make pier hold.
pub fn worst_case(listener: &ListenerConfig, shape: Shape) -> u64 {
    rows(listener, shape).iter().map(|r| r.per_listener).fold(0, u64::saturating_add)
}

/// The machine's memory (`MemTotal` of /proc/meminfo), where it is known.
pub fn machine_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 =
        text.lines().find_map(|l| l.strip_prefix("MemTotal:"))?.trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenAddr;

    #[test]
    fn the_worst_case_is_the_sum_of_every_bound() {
        let mut l = ListenerConfig::new("t", ListenAddr::parse_addr("127.0.0.1:0").unwrap(), "x.wasm");
        l.max_connections = 10;
        l.memory_limit = 1 << 20;
        l.outbox_high_water = 64 << 10;
        l.kv_max_bytes = 8 << 20;
        l.backplane_max_bytes = 16 << 20;
        let per_conn: u64 = rows(&l, Shape::InstancePerConnection)
            .iter()
            .filter(|r| r.resource != "backplane mailboxes (backplane-max-bytes)")
            .filter_map(|r| r.per_connection)
            .sum();
        // Ten 1 MiB mailboxes are less than the 16 MiB listener budget.
        assert_eq!(worst_case(&l, Shape::InstancePerConnection), 10 * per_conn + (10 << 20) + (8 << 20));
        l.backplane_max_bytes = 1 << 20;
        assert_eq!(
            worst_case(&l, Shape::InstancePerConnection),
            10 * per_conn + (1 << 20) + (8 << 20),
            "the listener budget caps the mailboxes"
        );
        l.memory_limit *= 2;
        assert_eq!(worst_case(&l, Shape::InstancePerConnection), 10 * (per_conn + (1 << 20)) + (1 << 20) + (8 << 20));
        l.tls_cert = Some("cert.pem".into());
        assert_eq!(
            worst_case(&l, Shape::InstancePerConnection),
            10 * (per_conn + (1 << 20) + TLS_SESSION) + (1 << 20) + (8 << 20)
        );
    }

    #[test]
    fn one_instance_for_a_listener_is_counted_once() {
        let mut l = ListenerConfig::new("t", ListenAddr::parse_addr("127.0.0.1:0").unwrap(), "x.wasm");
        l.max_connections = 10;
        l.memory_limit = 16 << 20;
        let per_conn = 2 * l.outbox_high_water as u64 + READ_CHUNK as u64 + SERVER_CONNECTION_OVERHEAD;
        let once = l.memory_limit
            + ASYNC_STACK as u64
            + MAX_RESOURCES as u64 * RESOURCE_ENTRY
            + 2 * MAX_LOG_LINE as u64
            + CONNECTION_OVERHEAD
            + l.queue_max_bytes as u64
            + l.kv_max_bytes;
        assert_eq!(worst_case(&l, Shape::InstancePerListener), once + 10 * per_conn);
        l.max_connections = 20;
        assert_eq!(worst_case(&l, Shape::InstancePerListener), once + 20 * per_conn, "memory-limit is not multiplied");
    }

    #[test]
    fn machine_memory_is_read_where_proc_is() {
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(machine_memory().is_some_and(|m| m > 1 << 20));
        }
    }
}
