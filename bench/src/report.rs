//! Turning measurements into the one table (metric | pier | baseline |
//! ratio), `latest.md` and `latest.json`, with the machine they ran on.
//!
//! These machines are shared and noisy, so the ratio, taken in the same run,
//! is the number that means something; the absolute values are there to
//! explain it. The ratio is always pier / baseline: for throughput (↑) above
//! 1 means pier is better, for costs (↓: latency, CPU, memory) below 1 does.

use crate::load::{ChurnStats, EchoStats, IdleStats};
use crate::proc::Nofile;
use serde::Serialize;
use std::fmt::Write as _;

/// A scenario's result for one server, or why it has none.
pub type Outcome = Result<Measured, String>;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Measured {
    Echo(EchoStats),
    Churn(ChurnStats),
    Idle(IdleStats),
}

/// One scenario, run against both servers.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioResult {
    /// Short name for plots, e.g. "echo 4 KiB".
    pub short: String,
    /// Full name for the table, e.g. "echo 4 KiB × 64 conns".
    pub label: String,
    pub kind: Kind,
    pub pier: Outcome,
    pub native: Outcome,
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Echo,
    Churn,
    /// Churn over TLS: each connection a full handshake (`tls-handshake`).
    Handshake,
    Idle,
}

/// Which way is good for a metric.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Higher,
    Lower,
}

impl Better {
    fn arrow(self) -> &'static str {
        match self {
            Better::Higher => "↑",
            Better::Lower => "↓",
        }
    }
}

/// How to read one number out of a scenario's result.
struct MetricDef {
    name: &'static str,
    unit: &'static str,
    better: Better,
    get: fn(&Measured) -> Option<f64>,
}

fn echo(m: &Measured) -> Option<&EchoStats> {
    if let Measured::Echo(s) = m { Some(s) } else { None }
}
fn churn(m: &Measured) -> Option<&ChurnStats> {
    if let Measured::Churn(s) = m { Some(s) } else { None }
}
fn idle(m: &Measured) -> Option<&IdleStats> {
    if let Measured::Idle(s) = m { Some(s) } else { None }
}

const ECHO_METRICS: &[MetricDef] = &[
    MetricDef { name: "throughput", unit: "msg/s", better: Better::Higher, get: |m| echo(m).map(|s| s.msgs_per_sec) },
    MetricDef { name: "payload", unit: "MB/s", better: Better::Higher, get: |m| echo(m).map(|s| s.mb_per_sec) },
    MetricDef {
        name: "round trip p50", unit: "µs", better: Better::Lower, get: |m| echo(m).map(|s| s.latency.p50_us)
    },
    MetricDef {
        name: "round trip p99", unit: "µs", better: Better::Lower, get: |m| echo(m).map(|s| s.latency.p99_us)
    },
    MetricDef {
        name: "server CPU per message",
        unit: "µs",
        better: Better::Lower,
        get: |m| echo(m).and_then(|s| s.server_cpu_us_per_msg),
    },
];

/// Latency rows shared by churn and TLS handshakes (a handshake is a churn
/// connection over TLS).
const CONNECT_TO_CLOSE_P50: MetricDef = MetricDef {
    name: "connect-to-close p50",
    unit: "µs",
    better: Better::Lower,
    get: |m| churn(m).map(|s| s.latency.p50_us),
};
const CONNECT_TO_CLOSE_P99: MetricDef = MetricDef {
    name: "connect-to-close p99",
    unit: "µs",
    better: Better::Lower,
    get: |m| churn(m).map(|s| s.latency.p99_us),
};

const CHURN_METRICS: &[MetricDef] = &[
    MetricDef {
        name: "connections",
        unit: "conn/s",
        better: Better::Higher,
        get: |m| churn(m).map(|s| s.conns_per_sec),
    },
    CONNECT_TO_CLOSE_P50,
    CONNECT_TO_CLOSE_P99,
    MetricDef {
        name: "server CPU per connection",
        unit: "µs",
        better: Better::Lower,
        get: |m| churn(m).and_then(|s| s.server_cpu_us_per_conn),
    },
];

const HANDSHAKE_METRICS: &[MetricDef] = &[
    MetricDef { name: "handshakes", unit: "hs/s", better: Better::Higher, get: |m| churn(m).map(|s| s.conns_per_sec) },
    CONNECT_TO_CLOSE_P50,
    CONNECT_TO_CLOSE_P99,
    MetricDef {
        name: "server CPU per handshake",
        unit: "µs",
        better: Better::Lower,
        get: |m| churn(m).and_then(|s| s.server_cpu_us_per_conn),
    },
];

const IDLE_METRICS: &[MetricDef] = &[
    MetricDef {
        name: "RSS per connection",
        unit: "KiB",
        better: Better::Lower,
        get: |m| idle(m).map(|s| s.rss_per_conn / 1024.0),
    },
    MetricDef {
        name: "memory mappings per connection",
        unit: "maps",
        better: Better::Lower,
        get: |m| idle(m).map(|s| s.maps_per_conn),
    },
];

impl Kind {
    fn metrics(self) -> &'static [MetricDef] {
        match self {
            Kind::Echo => ECHO_METRICS,
            Kind::Churn => CHURN_METRICS,
            Kind::Handshake => HANDSHAKE_METRICS,
            Kind::Idle => IDLE_METRICS,
        }
    }
}

/// One line of the table, one object of `latest.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub unit: String,
    pub better: Better,
    pub pier: Option<f64>,
    pub baseline: Option<f64>,
    /// pier / baseline.
    pub ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A row without a baseline column: a scenario not built yet, or a
/// measurement of pier alone (the instantiate micro-benchmark).
#[derive(Clone, Debug, Serialize)]
pub struct Pending {
    pub scenario: &'static str,
    pub status: String,
}

pub fn rows(results: &[ScenarioResult]) -> Vec<Row> {
    let mut rows = Vec::new();
    for r in results {
        let error = match (&r.pier, &r.native) {
            (Err(p), Err(n)) => Some(format!("pier: {p}; baseline: {n}")),
            (Err(p), Ok(_)) => Some(format!("pier: {p}")),
            (Ok(_), Err(n)) => Some(format!("baseline: {n}")),
            (Ok(_), Ok(_)) => None,
        };
        for def in r.kind.metrics() {
            let pier = r.pier.as_ref().ok().and_then(def.get);
            let baseline = r.native.as_ref().ok().and_then(def.get);
            let ratio = match (pier, baseline) {
                (Some(p), Some(b)) if b > 0.0 && p >= 0.0 => Some(p / b),
                _ => None,
            };
            rows.push(Row {
                scenario: r.label.clone(),
                metric: def.name.to_string(),
                unit: def.unit.to_string(),
                better: def.better,
                pier,
                baseline,
                ratio,
                error: error.clone(),
            });
        }
    }
    rows
}

/// True if every scenario produced numbers for both servers.
pub fn complete(results: &[ScenarioResult]) -> bool {
    !results.is_empty() && results.iter().all(|r| r.pier.is_ok() && r.native.is_ok())
}

/// `1234567.8` as `1,234,568`.
fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 && digits != "0" { format!("-{out}") } else { out }
}

fn value(v: Option<f64>, unit: &str, failed: bool) -> String {
    match v {
        None if failed => "error".into(),
        None => "–".into(),
        Some(v) => match unit {
            "msg/s" | "conn/s" | "hs/s" => thousands(v),
            "maps" => format!("{v:.2}"),
            _ => format!("{v:.1}"),
        },
    }
}

/// The table, as Markdown (it reads as well in a terminal), followed by its
/// notes: how to read the ratio, the errors, the scenarios not yet built.
pub fn table(rows: &[Row], pending: &[Pending]) -> String {
    let head = ["metric", "pier", "baseline", "ratio (pier/baseline)"];
    let mut lines: Vec<[String; 4]> = Vec::new();
    for r in rows {
        let failed = r.error.is_some();
        lines.push([
            format!("{}: {} ({}) {}", r.scenario, r.metric, r.unit, r.better.arrow()),
            value(r.pier, &r.unit, failed),
            value(r.baseline, &r.unit, failed),
            r.ratio.map_or_else(|| "–".into(), |x| format!("{x:.2}×")),
        ]);
    }
    for p in pending {
        lines.push([p.scenario.to_string(), p.status.to_string(), "–".into(), "–".into()]);
    }
    let width =
        |i: usize| lines.iter().map(|l| l[i].chars().count()).chain([head[i].chars().count()]).max().unwrap_or(0);
    let widths = [width(0), width(1), width(2), width(3)];
    let pad = |s: &str, w: usize, right: bool| {
        let fill = " ".repeat(w.saturating_sub(s.chars().count()));
        if right { format!("{fill}{s}") } else { format!("{s}{fill}") }
    };
    let mut out = String::new();
    let row = |cells: [&str; 4]| -> String {
        format!(
            "| {} | {} | {} | {} |\n",
            pad(cells[0], widths[0], false),
            pad(cells[1], widths[1], true),
            pad(cells[2], widths[2], true),
            pad(cells[3], widths[3], true)
        )
    };
    out.push_str(&row(head));
    let _ = writeln!(
        out,
        "|{}|{}:|{}:|{}:|",
        "-".repeat(widths[0] + 2),
        "-".repeat(widths[1] + 1),
        "-".repeat(widths[2] + 1),
        "-".repeat(widths[3] + 1)
    );
    for l in &lines {
        out.push_str(&row([&l[0], &l[1], &l[2], &l[3]]));
    }
    out.push_str("\nbaseline: the native tokio echo server (`pier-bench native-echo`), same run, same machine.\n");
    if rows.iter().any(|r| r.scenario.contains("TLS") || r.scenario.starts_with("tls")) {
        out.push_str(
            "TLS rows: pier's echo guest on a TLS listener vs `pier-bench native-tls-echo` (the same server behind \
             tokio-rustls), both with rustls 0.23 and its ring provider and one ECDSA P-256 certificate; \
             the client does a full TLS 1.3 handshake per connection.\n",
        );
    }
    if rows.iter().any(|r| r.scenario.starts_with("inetd")) {
        out.push_str(
            "inetd rows: a plain wasi:cli `cat` command served inetd-style (the pier column) vs pier's own echo \
             handler (the baseline column), both in pier.\n",
        );
    }
    out.push_str(
        "ratio = pier / baseline. ↑ higher is better: a ratio above 1 favours pier. \
         ↓ lower is better (a cost): a ratio below 1 favours pier.\n",
    );
    let mut seen = Vec::new();
    for r in rows {
        if let Some(e) = &r.error
            && !seen.contains(&(&r.scenario, e))
        {
            seen.push((&r.scenario, e));
            let _ = writeln!(out, "error in {}: {e}", r.scenario);
        }
    }
    out
}

/// Where the numbers came from.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub date: String,
    pub nproc: usize,
    pub kernel: String,
    pub cpu_model: String,
    pub mem_total_kib: Option<u64>,
    pub nofile: Nofile,
    pub max_map_count: Option<u64>,
    /// RUST_BACKTRACE as the servers inherited it (it costs wasmtime time).
    pub rust_backtrace: Option<String>,
    pub git_commit: Option<String>,
}

impl Machine {
    pub fn probe(nofile: Nofile) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let field = |text: &str, key: &str| {
            text.lines()
                .find(|l| l.split(':').next().is_some_and(|k| k.trim() == key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let git = std::process::Command::new("git")
            .args(["describe", "--always", "--dirty", "--abbrev=12"])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
        Machine {
            date: utc_now(),
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            mem_total_kib: field(&read("/proc/meminfo"), "MemTotal")
                .and_then(|v| v.trim_end_matches("kB").trim().parse().ok()),
            nofile,
            max_map_count: crate::proc::max_map_count(),
            rust_backtrace: std::env::var("RUST_BACKTRACE").ok(),
            git_commit: git,
        }
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "- date: {}", self.date);
        let _ = writeln!(s, "- nproc: {}", self.nproc);
        let _ = writeln!(s, "- kernel (`uname -r`): {}", self.kernel);
        let _ = writeln!(s, "- CPU: {}", self.cpu_model);
        if let Some(kib) = self.mem_total_kib {
            let _ = writeln!(s, "- memory: {:.1} GiB", kib as f64 / (1 << 20) as f64);
        }
        let _ = writeln!(s, "- open files limit: {} (raised from {})", self.nofile.now, self.nofile.before);
        if let Some(m) = self.max_map_count {
            let _ = writeln!(s, "- vm.max_map_count: {m}");
        }
        let _ = writeln!(s, "- RUST_BACKTRACE: {}", self.rust_backtrace.as_deref().unwrap_or("unset"));
        if let Some(g) = &self.git_commit {
            let _ = writeln!(s, "- commit: {g}");
        }
        s
    }
}

/// Now, as `YYYY-MM-DDTHH:MM:SSZ`, without a date crate.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Everything `latest.json` holds.
#[derive(Serialize)]
pub struct Report<'a> {
    pub mode: &'a str,
    pub command: String,
    pub machine: &'a Machine,
    pub config: serde_json::Value,
    pub metrics: &'a [Row],
    pub pending: &'a [Pending],
    pub scenarios: &'a [ScenarioResult],
}

impl Report<'_> {
    pub fn markdown(&self, table: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# pier benchmark: pier + echo guest vs native tokio echo\n");
        let _ = writeln!(
            s,
            "`{}` ({} mode), on loopback, client and servers on the same machine.\n",
            self.command, self.mode
        );
        s.push_str(table);
        let _ = writeln!(s, "\n![throughput and latency per scenario](latest.svg)\n");
        let _ = writeln!(s, "## Machine\n");
        s.push_str(&self.machine.markdown());
        let _ = writeln!(s, "\n## Settings\n");
        let args = |v: &serde_json::Value| {
            v.as_array().map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(" ")).unwrap_or_default()
        };
        let c = &self.config;
        let pier_bin = c["pier"]["binary"].as_str().unwrap_or("pier");
        let _ = writeln!(s, "- pier: `{pier_bin} {}`", args(&c["pier"]["args"]));
        let _ = writeln!(s, "- baseline: `pier-bench {}`", args(&c["baseline"]["args"]));
        if self.scenarios.iter().any(|r| r.label.starts_with("tls") || r.label.contains("TLS")) {
            let t = &c["tls"];
            let _ = writeln!(s, "- pier (TLS rows): `{pier_bin} {}`", args(&t["pier_args"]));
            let _ = writeln!(s, "- baseline (TLS rows): `pier-bench {}`", args(&t["baseline_args"]));
            let _ = writeln!(s, "- TLS certificate: {}", t["certificate"].as_str().unwrap_or("?"));
            let _ = writeln!(s, "- TLS client: {}", t["client"].as_str().unwrap_or("?"));
        }
        for (key, kind) in [("wasmtime_serve", "WASI 0.2"), ("wasmtime_serve_p3", "WASI 0.3")] {
            if let Some(wasmtime) = c[key]["binary"].as_str() {
                let _ = writeln!(s, "- `wasmtime serve` row ({kind}): `{wasmtime} {}`", args(&c[key]["args"]));
            }
        }
        let _ = writeln!(s, "- scenarios: `{}`", c["plan"]);
        let _ = writeln!(s, "- every connect, read and write times out after {} s", c["io_timeout_secs"]);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::{civil_from_days, thousands};

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn separators() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.2), "0");
    }
}
