//! The metrics endpoint (`--metrics HOST:PORT`): `GET /metrics` in the
//! Prometheus text format, made by `prometheus-client` from each listener's
//! counters at the moment of the scrape; `GET /healthz` (200 while
//! serving, 503 once draining); `GET /connections`, the live connections as
//! JSON, a page at a time.

use crate::listener::Roster;
use crate::stats::{Snapshot, Times};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode, body::Incoming, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Scrapers served at once; more wait in the backlog.
const MAX_SCRAPERS: usize = 16;
/// How long a scraper may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The wasmtime pier runs on (host/Cargo.toml pins it; a test checks).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Every listener's counters, read at each scrape.
struct Listeners(Arc<Roster>);

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Listeners")
    }
}

/// What one scrape reads of one listener.
struct Reading {
    name: Arc<str>,
    stats: Snapshot,
    kv: crate::services::keyvalue::Usage,
    mail_bytes: u64,
    mail_max: u64,
    published: u64,
    dropped: u64,
    waiting: u64,
    /// A `server-handler`'s bytes waiting for its instance (0 for others).
    queued: u64,
}

impl Collector for Listeners {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let queues = crate::listener::accept_queues();
        let readings: Vec<Reading> = self
            .0
            .slots()
            .iter()
            .map(|slot| (slot.serving(), queues.get(&slot.addr).copied().unwrap_or(0)))
            .map(|((t, instance), waiting)| Reading {
                waiting,
                queued: instance.map_or(0, |i| i.queued() as u64),
                name: t.name.clone(),
                stats: t.stats.snapshot(),
                kv: t.store.usage(),
                mail_bytes: t.mail_budget.used() as u64,
                mail_max: t.mail_budget.max() as u64,
                published: t.mail_budget.published.load(Ordering::Relaxed),
                dropped: t.mail_budget.dropped.load(Ordering::Relaxed),
            })
            .collect();
        type Pick = fn(&Reading) -> u64;
        let counters: [(&str, &str, Pick); 5] = [
            ("pier_connections_accepted", "Connections accepted.", |r| r.stats.accepted),
            ("pier_received_bytes", "Bytes read from peers.", |r| r.stats.received_bytes),
            ("pier_sent_bytes", "Bytes written to peers.", |r| r.stats.sent_bytes),
            ("pier_backplane_published", "Backplane messages the listener's connections published.", |r| r.published),
            (
                "pier_backplane_dropped",
                "Backplane messages lost: to the listener's full mailboxes or budget, or too large.",
                |r| r.dropped,
            ),
        ];
        for (name, help, pick) in counters {
            let mut metric = encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
            for r in &readings {
                ConstCounter::new(pick(r)).encode(metric.encode_family(&[("listener", &*r.name)])?)?;
            }
        }
        let gauges: [(&str, &str, Pick); 9] = [
            ("pier_connections_open", "Connections open now.", |r| r.stats.open),
            (
                "pier_connections_waiting",
                "Clients in the listening socket's accept queue: held back by max-connections, or not yet accepted.",
                |r| r.waiting,
            ),
            ("pier_kv_bytes", "Bytes the listener's key-value store holds, as kv-max-bytes counts them.", |r| {
                r.kv.bytes
            }),
            ("pier_kv_max_bytes", "The listener's kv-max-bytes.", |r| r.kv.max_bytes),
            ("pier_kv_keys", "Keys in the listener's key-value store.", |r| r.kv.keys),
            ("pier_kv_max_keys", "The listener's kv-max-keys.", |r| r.kv.max_keys),
            ("pier_backplane_undelivered_bytes", "Backplane bytes waiting in the listener's mailboxes.", |r| {
                r.mail_bytes
            }),
            ("pier_backplane_max_bytes", "The listener's backplane-max-bytes.", |r| r.mail_max),
            (
                "pier_queued_bytes",
                "A server-handler listener's bytes read from its peers and waiting for its instance (queue-max-bytes).",
                |r| r.queued,
            ),
        ];
        for (name, help, pick) in gauges {
            let mut metric = encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
            for r in &readings {
                let value = i64::try_from(pick(r)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(metric.encode_family(&[("listener", &*r.name)])?)?;
            }
        }
        let mut ends = encoder.encode_descriptor(
            "pier_connection_ends",
            "Connections ended, by reason (the shutdown-csa reasons, traps and limits).",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for r in &readings {
            for &(reason, n) in &r.stats.ends {
                let labels = [("listener", &*r.name), ("reason", reason)];
                ConstCounter::new(n).encode(ends.encode_family(&labels)?)?;
            }
        }
        let mut calls = encoder.encode_descriptor(
            "pier_call_seconds",
            "Inbox calls into handlers, by call: how long each took, start to end.",
            None,
            MetricType::Histogram,
        )?;
        for r in &readings {
            for (call, times) in &r.stats.calls {
                let labels = [("listener", &*r.name), ("call", call)];
                let family = calls.encode_family(&labels)?;
                encode_times(family, times)?;
            }
        }
        let mut instantiate = encoder.encode_descriptor(
            "pier_instantiate_seconds",
            "Making a connection's store and handler instance.",
            None,
            MetricType::Histogram,
        )?;
        for r in &readings {
            encode_times(instantiate.encode_family(&[("listener", &*r.name)])?, &r.stats.instantiate)?;
        }
        let mut info = encoder.encode_descriptor(
            "pier_build_info",
            "The pier and wasmtime versions of this process.",
            None,
            ConstGauge::new(0i64).metric_type(),
        )?;
        let labels = [("version", env!("CARGO_PKG_VERSION")), ("wasmtime", WASMTIME_VERSION)];
        ConstGauge::new(1i64).encode(info.encode_family(&labels)?)?;
        let slots = self.0.slots();
        if let Some(redis) = slots.iter().find_map(|s| s.current().redis.clone()) {
            let up = encoder.encode_descriptor(
                "pier_redis_up",
                "1 while the Redis holding shared state answers, 0 during an outage.",
                None,
                ConstGauge::new(0i64).metric_type(),
            )?;
            ConstGauge::new(i64::from(redis.is_up())).encode(up)?;
        }
        let mut reloads = encoder.encode_descriptor(
            "pier_reloads",
            "Reloads (SIGHUP), by result; a failed one changed nothing.",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (result, n) in [("ok", &self.0.reloads_ok), ("failed", &self.0.reloads_failed)] {
            ConstCounter::new(n.load(Ordering::Relaxed)).encode(reloads.encode_family(&[("result", result)])?)?;
        }
        Ok(())
    }
}

fn encode_times(mut encoder: MetricEncoder<'_>, times: &Times) -> Result<(), std::fmt::Error> {
    encoder.encode_histogram::<NoLabelSet>(times.sum_seconds, times.count, &times.buckets, None)
}

/// The OpenMetrics text of a scrape.
fn render(roster: &Arc<Roster>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Listeners(roster.clone())));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// OpenMetrics text as the Prometheus text format (0.0.4) has it, for
/// scrapers that do not ask for OpenMetrics (`promtool`, `curl`): a
/// counter's HELP and TYPE lines name its `_total` samples, and there is
/// no `# EOF`.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines().filter(|&l| l != "# EOF") {
        let named = ["# HELP ", "# TYPE "].iter().find_map(|p| Some((*p, line.strip_prefix(p)?)));
        match named {
            Some((prefix, rest)) if counters.contains(rest.split(' ').next().unwrap_or("")) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(&format!("{prefix}{name}_total {tail}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// Serves the endpoint until the process ends; `draining` turns
/// `/healthz` to 503.
pub(crate) async fn serve(socket: TcpListener, roster: Arc<Roster>, draining: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_SCRAPERS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let stream = match socket.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (roster, draining) = (roster.clone(), draining.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let reply = respond(&req, &roster, draining.is_cancelled());
                async move { Ok::<_, std::convert::Infallible>(reply) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(error = %e, "metrics: connection ended");
            }
            drop(permit);
        });
    }
}

fn wants_openmetrics(req: &Request<Incoming>) -> bool {
    req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("openmetrics"))
}

/// Most connections one `/connections` page lists.
const MAX_PAGE: usize = 1000;

/// `GET /connections?offset=N&limit=M`: the live connections of every
/// listener as JSON, a page at a time (by listener, then id).
fn connections(req: &Request<Incoming>, roster: &Roster) -> String {
    let param = |key: &str| {
        req.uri().query().unwrap_or("").split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    let offset: usize = param("offset").unwrap_or(0);
    let limit: usize = param("limit").unwrap_or(100).min(MAX_PAGE);
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        listener: &'a str,
        #[serde(flatten)]
        conn: crate::stats::Connection,
    }
    let tenants = roster.tenants();
    let all: Vec<(&str, crate::stats::Connection)> =
        tenants.iter().flat_map(|t| t.stats.connections().into_iter().map(|c| (&*t.name, c))).collect();
    let page: Vec<Entry> =
        all.iter().skip(offset).take(limit).map(|(listener, conn)| Entry { listener, conn: conn.clone() }).collect();
    let body = serde_json::json!({ "total": all.len(), "offset": offset, "limit": limit, "connections": page });
    format!("{body}\n")
}

fn respond(req: &Request<Incoming>, roster: &Arc<Roster>, draining: bool) -> Response<Full<Bytes>> {
    let (status, kind, body) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/connections") => (StatusCode::OK, "application/json", connections(req, roster)),
        (&hyper::Method::GET, "/metrics") if wants_openmetrics(req) => {
            (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", render(roster))
        }
        (&hyper::Method::GET, "/metrics") => {
            (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", prometheus_text(&render(roster)))
        }
        (&hyper::Method::GET, "/healthz") if draining => {
            (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n".into())
        }
        (&hyper::Method::GET, "/healthz") => (StatusCode::OK, "text/plain", "ok\n".into()),
        (&hyper::Method::GET, _) => {
            (StatusCode::NOT_FOUND, "text/plain", "try /metrics, /healthz or /connections\n".into())
        }
        _ => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "GET only\n".into()),
    };
    let mut reply = Response::new(Full::new(Bytes::from(body)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(kind));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_in_the_prometheus_format() {
        let om = "# HELP a_bytes Bytes.\n# TYPE a_bytes counter\na_bytes_total{l=\"x\"} 3\n\
                  # HELP b Open.\n# TYPE b gauge\nb 1\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP a_bytes_total Bytes.\n# TYPE a_bytes_total counter\na_bytes_total{l=\"x\"} 3\n\
             # HELP b Open.\n# TYPE b gauge\nb 1\n"
        );
    }
}
