//! Property tests of what reads a person's input (issue 13, "Fuzzing and
//! properties"), through pier's public library API: the size and duration
//! parsers (`pier::config::{parse_size, parse_duration}` and the
//! formatters beside them) and the config-file loader
//! (`pier::config::file::load`).
//!
//! - What pier writes it reads back: `format_size`, `format_duration` and a
//!   serialized listener (pier.toml with every setting written out).
//! - Nothing panics on any text, and the loader answers Ok or one line.
//!
//! Case counts are small by default (`make test` runs them in seconds);
//! `PROPTEST_CASES` overrides them (`make fuzz`). A failing case is kept in
//! `tests/fuzz-corpus/` and replayed first by every later run.

use pier::config::file;
use pier::config::units::{format_duration, format_size, format_size_rounded};
use pier::config::{ListenAddr, ListenerConfig, Size, Time, parse_duration, parse_size};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use std::path::Path;
use std::time::Duration;

/// The regression file of one property, under `tests/fuzz-corpus/`.
macro_rules! corpus {
    ($name:literal) => {
        FileFailurePersistence::Direct(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fuzz-corpus/", $name, ".txt"))
    };
}

/// `cases` unless `PROPTEST_CASES` says otherwise; failures kept in `corpus`.
fn config(cases: u32, corpus: FileFailurePersistence) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config.failure_persistence = Some(Box::new(corpus));
    config
}

/// Sizes people write: round numbers of each unit, and any number at all.
fn size() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        0u64..5000,
        (0u64..(1 << 20), 0u32..4).prop_map(|(n, unit)| n << (10 * unit)),
        (1u64..=16, 0u32..4).prop_map(|(n, unit)| (n << (10 * unit)).wrapping_sub(1)),
    ]
}

/// Durations people write, and any at all that humantime can say.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        (0u64..100_000, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        (0u64..100_000).prop_map(Duration::from_millis),
        (0u64..10_000).prop_map(Duration::from_secs),
        (0u64..(1 << 40), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

/// Text near the grammar (digits, units, spaces, signs, dots) and anything.
fn near_size_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9 ]{0,24}[kKmMgGiIbBsS ]{0,4}",
        "[0-9]{15,25}(KiB|MiB|GiB|kb|MB|g|B|)",
        "[-+.0-9eE_ ]{0,10}(k|m|g|ms|s|h|d|min|us|ns|years|y|w|)",
        "([0-9]{1,12}(ns|us|ms|s|m|h|d|w|M|y|msec|sec|min|hr|days|weeks|months|years) ?){0,6}",
    ]
}

proptest! {
    #![proptest_config(config(512, corpus!("units")))]

    /// `format_size` writes what `parse_size` reads back, for every size;
    /// so do `Size`'s Display and FromStr.
    #[test]
    fn sizes_round_trip(n in size()) {
        let text = format_size(n);
        prop_assert_eq!(parse_size(&text), Ok(n), "`{}`", text);
        prop_assert_eq!(Size(n).to_string().parse::<Size>(), Ok(Size(n)));
        // The rounded form is for people only, but it must not panic.
        let _ = format_size_rounded(n);
    }

    /// A number and a unit, in any case and spacing: the product, or the
    /// "too large" error exactly when it does not fit in 64 bits.
    #[test]
    fn sizes_with_units_multiply_or_say_too_large(
        n in prop_oneof![any::<u64>(), 0u64..100_000, (1u64 << 30)..(1u64 << 36)],
        unit in prop_oneof![
            Just(("", 0)), Just(("b", 0)), Just(("k", 10)), Just(("kb", 10)), Just(("kib", 10)),
            Just(("m", 20)), Just(("mb", 20)), Just(("mib", 20)),
            Just(("g", 30)), Just(("gb", 30)), Just(("gib", 30)),
        ],
        upper in proptest::collection::vec(any::<bool>(), 3),
        spaces in ("[ \t]{0,2}", "[ \t]{0,2}", "[ \t]{0,2}"),
    ) {
        let (unit, shift) = unit;
        let unit: String = unit
            .chars()
            .zip(upper.iter().cycle())
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
            .collect();
        let text = format!("{}{n}{}{unit}{}", spaces.0, spaces.1, spaces.2);
        match n.checked_mul(1u64 << shift) {
            Some(bytes) => prop_assert_eq!(parse_size(&text), Ok(bytes), "`{}`", text),
            None => {
                let err = parse_size(&text).unwrap_err();
                prop_assert!(err.contains("too large"), "`{}`: {}", text, err);
            }
        }
    }

    /// `format_duration` writes what `parse_duration` reads back; so do
    /// `Time`'s Display and FromStr.
    #[test]
    fn durations_round_trip(d in duration()) {
        let text = format_duration(d);
        prop_assert_eq!(parse_duration(&text), Ok(d), "`{}`", text);
        prop_assert_eq!(Time(d).to_string().parse::<Time>(), Ok(Time(d)));
    }

    /// No text makes either parser panic; an error names the text.
    #[test]
    fn parsers_never_panic(text in near_size_text()) {
        match parse_size(&text) {
            Ok(n) => prop_assert_eq!(parse_size(&format_size(n)), Ok(n)),
            Err(e) => prop_assert!(e.contains(&format!("`{text}`")), "{}", e),
        }
        match parse_duration(&text) {
            Ok(d) => prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d), "from `{}`", text),
            Err(e) => prop_assert!(e.contains(&format!("`{text}`")), "{}", e),
        }
        let _ = text.parse::<Size>();
        let _ = text.parse::<Time>();
    }
}

/// Every key pier.toml knows, server level and listener level.
const SERVER_KEYS: &[&str] = &["grace", "workers"];
const LISTENER_KEYS: &[&str] = &[
    "name",
    "listen",
    "port-range",
    "plugin",
    "backlog",
    "nodelay",
    "keepalive",
    "reuse-port",
    "max-connections",
    "memory-limit",
    "cpu-limit",
    "idle-timeout",
    "outbox-high-water",
    "outbox-low-water",
    "cpu-budget",
    "kv-max-bytes",
    "kv-max-keys",
    "backplane-max-bytes",
    "log-rate",
    "allow-dirs",
    "env",
    "config",
    "backplane",
];

/// A TOML value, written out by `render`.
#[derive(Clone, Debug)]
enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Value>),
    Table(Vec<(String, Value)>),
}

/// A TOML basic string: every character that needs it escaped.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A key, bare when TOML allows it, else quoted.
fn key(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        k.to_string()
    } else {
        quote(k)
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::Str(s) => quote(s),
        Value::Int(n) => n.to_string(),
        Value::Float(f) if f.is_finite() => format!("{f:?}"),
        Value::Float(f) if f.is_nan() => "nan".into(),
        Value::Float(f) => if *f > 0.0 { "inf" } else { "-inf" }.into(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => format!("[{}]", items.iter().map(render).collect::<Vec<_>>().join(", ")),
        Value::Table(entries) => {
            let body: Vec<String> = entries.iter().map(|(k, v)| format!("{} = {}", key(k), render(v))).collect();
            format!("{{ {} }}", body.join(", "))
        }
    }
}

/// Strings a setting might be given: sizes, durations, addresses, ranges,
/// paths, words, and any text (newlines too: see
/// `errors_that_echo_a_value_stay_one_line`).
fn text() -> impl Strategy<Value = String> {
    any_text()
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        near_size_text(),
        Just("127.0.0.1:0".to_string()),
        "(127\\.0\\.0\\.1|\\[::1\\]|0\\.0\\.0\\.0|localhost|[0-9.:]{1,12})(:[0-9]{1,6})?",
        "[0-9]{1,6}-[0-9]{1,6}",
        Just("off".to_string()),
        Just("on".to_string()),
        Just(".".to_string()),
        Just("/".to_string()),
        "[a-z.\\-/]{0,12}",
        any::<String>(),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => text().prop_map(Value::Str),
        2 => prop_oneof![any::<i64>(), -2i64..70_000, Just(i64::MAX), Just(i64::MIN)].prop_map(Value::Int),
        1 => any::<f64>().prop_map(Value::Float),
        1 => any::<bool>().prop_map(Value::Bool),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-zA-Z_-]{1,8}|.{0,6}", inner), 0..4).prop_map(Value::Table),
        ]
    })
}

/// A key: mostly one pier.toml knows (at the level it belongs or the other),
/// sometimes anything.
fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => proptest::sample::select(LISTENER_KEYS).prop_map(str::to_string),
        2 => proptest::sample::select(SERVER_KEYS).prop_map(str::to_string),
        1 => "[a-z-]{1,16}",
        1 => ".{0,8}",
    ]
}

/// A structurally valid pier.toml: top-level keys, then `[[listener]]`
/// tables (or a `[listener]` table, or stray tables), with random keys and
/// values. A key appears at most once per table, so the text parses as
/// TOML; what pier makes of it is the question.
fn toml_file() -> impl Strategy<Value = String> {
    (
        proptest::collection::btree_map(any_key(), value(), 0..3),
        proptest::collection::vec((listener_table(), 0u8..8), 0..4),
        any::<bool>(),
    )
        .prop_map(|(top, tables, comments)| {
            let mut out = String::new();
            for (k, v) in &top {
                out.push_str(&format!("{} = {}\n", key(k), render(v)));
            }
            let mut seen_single = false;
            for (i, (table, kind)) in tables.iter().enumerate() {
                let header = match kind {
                    0 if !seen_single => {
                        seen_single = true;
                        "[listener]".to_string()
                    }
                    1 => format!("[extra{i}]"),
                    _ => "[[listener]]".to_string(),
                };
                out.push_str(&header);
                if comments {
                    out.push_str(" # a table");
                }
                out.push('\n');
                for (k, v) in table {
                    out.push_str(&format!("{} = {}\n", key(k), render(v)));
                }
            }
            out
        })
}

/// A listener's keys and values: often the three it needs (so that the
/// loader gets as far as checking the rest), then random keys, their values
/// mostly of the key's own type (so that the checks after parsing are
/// reached), sometimes anything.
fn listener_table() -> impl Strategy<Value = std::collections::BTreeMap<String, Value>> {
    let needed = (
        prop_oneof![3 => "[a-z][a-z0-9-]{0,8}".boxed(), 1 => text().boxed()],
        prop_oneof![3 => Just("127.0.0.1:0".to_string()).boxed(), 1 => text().boxed()],
        prop_oneof![3 => Just("a.wasm".to_string()).boxed(), 1 => text().boxed()],
    );
    let entry = any_key().prop_flat_map(|k| {
        let v = prop_oneof![6 => typed_value(&k), 1 => value().boxed()];
        (Just(k), v)
    });
    (proptest::option::weighted(0.7, needed), proptest::collection::vec(entry, 0..8)).prop_map(|(needed, entries)| {
        let mut table: std::collections::BTreeMap<String, Value> = entries.into_iter().collect();
        if let Some((name, listen, plugin)) = needed {
            for (k, v) in [("name", name), ("listen", listen), ("plugin", plugin)] {
                table.entry(k.to_string()).or_insert(Value::Str(v));
            }
        }
        table
    })
}

/// A value of the type `key` takes (a size, a duration, a number, a flag,
/// an address...), of any magnitude, valid or not.
fn typed_value(key: &str) -> BoxedStrategy<Value> {
    let int = || prop_oneof![-1i64..70_000, any::<i64>(), Just(0)].prop_map(Value::Int);
    let size = || {
        prop_oneof![
            size().prop_map(|n| Value::Str(format_size(n))),
            size().prop_map(|n| Value::Int(n as i64)),
            near_size_text().prop_map(Value::Str),
        ]
    };
    let time = || {
        prop_oneof![
            duration().prop_map(|d| Value::Str(format_duration(d))),
            near_size_text().prop_map(Value::Str),
            Just(Value::Str("0s".into())),
        ]
    };
    let word = || "[a-zA-Z0-9_ -]{0,10}".prop_map(Value::Str);
    match key {
        "name" | "backplane" => word().boxed(),
        "listen" => text().prop_map(Value::Str).boxed(),
        "port-range" => "[0-9]{1,6}-[0-9]{1,6}|[0-9]{1,5}".prop_map(Value::Str).boxed(),
        "plugin" => prop_oneof![Just(Value::Str("a.wasm".into())), text().prop_map(Value::Str)].boxed(),
        "backlog" | "max-connections" | "kv-max-keys" | "log-rate" | "workers" => int().boxed(),
        "nodelay" | "reuse-port" => any::<bool>().prop_map(Value::Bool).boxed(),
        "keepalive" => prop_oneof![any::<bool>().prop_map(Value::Bool), time(), Just(Value::Str("off".into()))].boxed(),
        "memory-limit" | "outbox-high-water" | "outbox-low-water" | "kv-max-bytes" | "backplane-max-bytes" => {
            size().boxed()
        }
        "cpu-limit" | "idle-timeout" | "cpu-budget" | "grace" => time().boxed(),
        "allow-dirs" => proptest::collection::vec(
            prop_oneof![Just(".".to_string()), Just("/".to_string()), text()].prop_map(Value::Str),
            0..3,
        )
        .prop_map(Value::Array)
        .boxed(),
        "env" | "config" => proptest::collection::vec(("[A-Za-z_.]{1,8}", text().prop_map(Value::Str)), 0..3)
            .prop_map(Value::Table)
            .boxed(),
        _ => value().boxed(),
    }
}

/// Text that is mostly TOML-shaped: a valid file with bytes changed,
/// inserted or cut, or lines of TOML-ish tokens, or anything.
fn tomlish() -> impl Strategy<Value = String> {
    prop_oneof![
        (toml_file(), proptest::collection::vec((any::<proptest::sample::Index>(), any::<char>(), 0u8..3), 1..5))
            .prop_map(|(text, edits)| {
                let mut chars: Vec<char> = text.chars().collect();
                for (at, c, kind) in edits {
                    let i = at.index(chars.len() + 1);
                    match kind {
                        0 if i < chars.len() => chars[i] = c,
                        1 => chars.insert(i, c),
                        _ if i < chars.len() => {
                            chars.truncate(i);
                        }
                        _ => chars.push(c),
                    }
                }
                chars.into_iter().collect()
            }),
        proptest::collection::vec(
            "(\\[\\[listener\\]\\]|\\[listener\\]|[a-z-]{1,12} ?= ?(\"[^\"\n]{0,12}\"|[0-9]{1,20}|true|\\[\\]|\\{\\})|#.{0,8}|)",
            0..12
        )
        .prop_map(|lines| lines.join("\n")),
        any::<String>(),
    ]
}

/// Loads `text` as pier.toml from a file in `dir`.
fn load_text(dir: &Path, text: &str) -> anyhow::Result<pier::ServerConfig> {
    let path = dir.join("pier.toml");
    std::fs::write(&path, text).unwrap();
    file::load(&path)
}

/// The loader's answer to any text: a config, or an error of one line.
fn assert_ok_or_one_line(dir: &Path, text: &str) -> Result<(), TestCaseError> {
    match std::panic::catch_unwind(|| load_text(dir, text)) {
        Err(_) => Err(TestCaseError::fail(format!("the loader panicked on {text:?}"))),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            let shown = format!("{e:#}");
            prop_assert!(!shown.is_empty());
            prop_assert!(!shown.contains('\n'), "a multi-line error for {:?}:\n{}", text, shown);
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(config(256, corpus!("config")))]

    /// Structurally valid TOML with random keys and values: Ok or one line.
    #[test]
    fn loader_answers_valid_toml_with_ok_or_one_line(text in toml_file()) {
        let dir = tempfile::tempdir().unwrap();
        assert_ok_or_one_line(dir.path(), &text)?;
    }

    /// Damaged and arbitrary text: Ok or one line, never a panic.
    #[test]
    fn loader_answers_any_text_with_ok_or_one_line(text in tomlish()) {
        let dir = tempfile::tempdir().unwrap();
        assert_ok_or_one_line(dir.path(), &text)?;
    }

    /// A server pier could serve, written out as pier writes a listener's
    /// table (every setting, sizes and durations as people write them),
    /// loads back to the same server.
    #[test]
    fn a_written_config_loads_back_the_same(
        listeners in proptest::collection::vec(listener(), 1..4),
        grace in duration(),
        workers in proptest::option::of(1usize..=1024),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut doc = toml::Table::new();
        doc.insert("grace".into(), format_duration(grace).into());
        if let Some(n) = workers {
            doc.insert("workers".into(), toml::Value::Integer(n as i64));
        }
        let listeners: Vec<ListenerConfig> = listeners
            .into_iter()
            .enumerate()
            .map(|(i, mut l)| {
                l.name = format!("{}{i}", l.name);
                // Fixed ports differ: two listeners may not share one.
                if let ListenAddr::Addr(addr) = &mut l.listen
                    && addr.port() != 0
                {
                    addr.set_port(7000 + i as u16);
                }
                l.plugin = dir.path().join(format!("{}.wasm", l.name));
                l.allow_dirs = l.allow_dirs.iter().map(|_| dir.path().to_path_buf()).collect();
                l
            })
            .collect();
        let tables = listeners.iter().map(|l| toml::Value::try_from(l).unwrap()).collect();
        doc.insert("listener".into(), toml::Value::Array(tables));
        let text = toml::to_string(&doc).unwrap();
        let loaded = load_text(dir.path(), &text).map_err(|e| TestCaseError::fail(format!("{e:#}\n{text}")))?;
        prop_assert_eq!(loaded.grace, grace);
        prop_assert_eq!(loaded.workers, workers);
        prop_assert_eq!(loaded.listeners.len(), listeners.len());
        for (got, want) in loaded.listeners.iter().zip(&listeners) {
            prop_assert_eq!(format!("{got:?}"), format!("{want:?}"), "from\n{}", text);
        }
    }
}

/// A listener that passes validation, with random settings.
fn listener() -> impl Strategy<Value = ListenerConfig> {
    let words = proptest::collection::btree_map("[A-Z_]{1,6}", ".{0,10}", 0..3);
    let settings = proptest::collection::btree_map("[a-z.]{1,6}", ".{0,10}", 0..3);
    (
        ("[a-z][a-z0-9_-]{0,8}", 0u16..3, 1u32..5000, any::<bool>(), proptest::option::of(duration())),
        (any::<bool>(), 1u32..100_000, size(), duration(), duration()),
        (size(), size(), duration(), size(), 1u64..=i64::MAX as u64, size(), 1u32..1000),
        (0usize..2, words, settings, proptest::option::of("[a-z]{1,8}")),
    )
        .prop_map(|(a, b, c, d)| {
            let (name, port, backlog, nodelay, keepalive) = a;
            let (reuse_port, max_connections, memory, cpu, idle) = b;
            let (high, low, budget, kv_bytes, kv_keys, backplane_bytes, log_rate) = c;
            let (dirs, env, settings, backplane) = d;
            let addr = match port {
                0 => "127.0.0.1:0".to_string(),
                1 => "[::1]:7000".to_string(),
                _ => "0.0.0.0:65535".to_string(),
            };
            let mut l = ListenerConfig::new(name, ListenAddr::parse_addr(&addr).unwrap(), "x.wasm");
            l.backlog = backlog;
            l.nodelay = nodelay;
            l.keepalive = keepalive;
            l.reuse_port = reuse_port;
            l.max_connections = max_connections;
            l.memory_limit = memory.max(64 << 10);
            l.cpu_limit = cpu.max(Duration::from_nanos(1));
            l.idle_timeout = idle.max(Duration::from_nanos(1));
            let high = usize::try_from(high.max(1)).unwrap_or(usize::MAX);
            let low = usize::try_from(low).unwrap_or(usize::MAX);
            l.outbox_high_water = high;
            l.outbox_low_water = low.min(high);
            l.cpu_budget = budget.max(Duration::from_nanos(1));
            l.kv_max_bytes = kv_bytes.max(1);
            l.kv_max_keys = kv_keys;
            l.backplane_max_bytes = usize::try_from(backplane_bytes.max(1)).unwrap_or(usize::MAX);
            l.log_rate = log_rate;
            l.allow_dirs = vec![std::path::PathBuf::new(); dirs];
            l.env = env;
            l.settings = settings;
            l.backplane = backplane;
            l
        })
}

/// Values the loader echoes in its errors (a name, an address, a range, a
/// size, a duration) may hold a newline, written `\n` in TOML: the error
/// stays one line all the same.
#[test]
fn errors_that_echo_a_value_stay_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nplugin = \"a.wasm\"\n";
    let cases = [
        "[[listener]]\nname = \"a\\nb\"\nlisten = \"127.0.0.1:0\"\nplugin = \"a.wasm\"\n".to_string(),
        "[[listener]]\nname = \"a\\nb\"\n".to_string(),
        "[[listener]]\nname = \"a\"\nlisten = \"1\\n2\"\nplugin = \"a.wasm\"\n".to_string(),
        "[[listener]]\nname = \"a\"\nport-range = \"1-x\\ny\"\nplugin = \"a.wasm\"\n".to_string(),
        format!("{base}memory-limit = \"1\\nparsec\"\n"),
        format!("{base}cpu-limit = \"soon\\nish\"\n"),
        format!("{base}keepalive = \"x\\ny\"\n"),
        format!("{base}allow-dirs = [\"no\\nsuch\"]\n"),
        format!("grace = \"1\\nx\"\n{base}"),
    ];
    let mut multi = Vec::new();
    for text in cases {
        let err = load_text(dir.path(), &text).expect_err(&text);
        let shown = format!("{err:#}");
        if shown.contains('\n') {
            multi.push(format!("{text:?}:\n  {}", shown.replace('\n', "\n  ")));
        }
    }
    assert!(multi.is_empty(), "multi-line errors:\n{}", multi.join("\n"));
}
