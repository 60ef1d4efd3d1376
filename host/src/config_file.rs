//! `pier.toml`: any number of `[[listener]]` tables. Unknown keys are
//! rejected with their name and line; relative paths are relative to the
//! file's own directory.

use crate::config::{ListenAddr, ListenerConfig, ServerConfig, parse_duration, parse_size};
use anyhow::Context;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    #[serde(default, deserialize_with = "duration")]
    grace: Option<Duration>,
    workers: Option<usize>,
    #[serde(default)]
    listener: Vec<Listener>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Listener {
    name: String,
    listen: Option<String>,
    port_range: Option<String>,
    plugin: PathBuf,
    backlog: Option<u32>,
    nodelay: Option<bool>,
    /// `false`, or the idle time before probes (`"60s"`).
    #[serde(default)]
    keepalive: Option<Keepalive>,
    reuse_port: Option<bool>,
    max_connections: Option<u32>,
    #[serde(default, deserialize_with = "size")]
    memory_limit: Option<u64>,
    #[serde(default, deserialize_with = "duration")]
    cpu_limit: Option<Duration>,
    #[serde(default, deserialize_with = "duration")]
    idle_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "size")]
    outbox_high_water: Option<u64>,
    #[serde(default, deserialize_with = "size")]
    outbox_low_water: Option<u64>,
    #[serde(default)]
    allow_dirs: Vec<PathBuf>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    config: BTreeMap<String, String>,
    /// Share a named backplane with the listeners that give the same name.
    backplane: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Keepalive {
    Off(bool),
    After(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match SizeValue::deserialize(d)? {
        SizeValue::Bytes(n) => Ok(Some(n)),
        SizeValue::Text(t) => parse_size(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
}

/// Reads and checks a config file; errors are one line naming the file, the
/// line and the key.
pub fn load(path: &Path) -> anyhow::Result<ServerConfig> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("config file `{shown}` not found: check the path"),
        _ => anyhow::anyhow!("cannot read config file `{shown}`: {e}"),
    })?;
    let file: File = toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
        let msg = e.message().trim().replace('\n', " ");
        match line {
            Some(line) => anyhow::anyhow!("{shown} line {line}: {msg}"),
            None => anyhow::anyhow!("{shown}: {msg}"),
        }
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let listeners = file
        .listener
        .into_iter()
        .map(|l| listener(l, base).with_context(|| shown.to_string()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut config = ServerConfig::new(listeners);
    if let Some(grace) = file.grace {
        config.grace = grace;
    }
    config.workers = file.workers;
    config.validate().with_context(|| shown.to_string())?;
    Ok(config)
}

fn listener(l: Listener, base: &Path) -> anyhow::Result<ListenerConfig> {
    let listen = ListenAddr::from_parts(l.listen.as_deref(), l.port_range.as_deref())
        .with_context(|| format!("listener `{}`", l.name))?;
    let mut c = ListenerConfig::new(l.name, listen, base.join(l.plugin));
    set(&mut c.backlog, l.backlog);
    set(&mut c.nodelay, l.nodelay);
    set(&mut c.reuse_port, l.reuse_port);
    set(&mut c.max_connections, l.max_connections);
    set(&mut c.memory_limit, l.memory_limit);
    set(&mut c.cpu_limit, l.cpu_limit);
    set(&mut c.idle_timeout, l.idle_timeout);
    set(&mut c.outbox_high_water, l.outbox_high_water.map(|n| n as usize));
    set(&mut c.outbox_low_water, l.outbox_low_water.map(|n| n as usize));
    c.keepalive = match l.keepalive {
        None | Some(Keepalive::Off(false)) => None,
        Some(Keepalive::Off(true)) => Some(Duration::from_secs(60)),
        Some(Keepalive::After(t)) => {
            Some(parse_duration(&t).map_err(|e| anyhow::anyhow!("listener `{}`: keepalive {e}", c.name))?)
        }
    };
    c.allow_dirs = l.allow_dirs.into_iter().map(|d| base.join(d)).collect();
    c.env = l.env;
    c.settings = l.config;
    c.backplane = l.backplane;
    Ok(c)
}

/// Overrides a default with a value the file gives.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> anyhow::Result<ServerConfig> {
        let dir = std::env::temp_dir().join(format!("pier-config-test-{}-{}", std::process::id(), text.len()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pier.toml");
        std::fs::write(&path, text).unwrap();
        load(&path)
    }

    #[test]
    fn full_listener() {
        let c = load_text(
            r#"
grace = "2s"
[[listener]]
name = "a"
listen = "127.0.0.1:0"
plugin = "a.wasm"
memory-limit = "16MiB"
cpu-limit = "100ms"
idle-timeout = "1s"
outbox-high-water = 131072
keepalive = "30s"
env = { GREETING = "hi" }
config = { fortune = "be kind" }
[[listener]]
name = "b"
listen = "127.0.0.1"
port-range = "7000-7010"
plugin = "b.wasm"
keepalive = false
"#,
        )
        .unwrap();
        assert_eq!(c.grace, Duration::from_secs(2));
        let a = &c.listeners[0];
        assert_eq!(a.memory_limit, 16 << 20);
        assert_eq!(a.cpu_limit, Duration::from_millis(100));
        assert_eq!(a.outbox_high_water, 131072);
        assert_eq!(a.keepalive, Some(Duration::from_secs(30)));
        assert_eq!(a.settings["fortune"], "be kind");
        assert!(a.plugin.ends_with("a.wasm") && a.plugin.is_absolute() || a.plugin.starts_with(std::env::temp_dir()));
        assert!(matches!(c.listeners[1].listen, ListenAddr::Range { lo: 7000, hi: 7010, .. }));
    }

    #[test]
    fn errors_name_key_and_line() {
        let err = load_text("[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nplugin = \"a.wasm\"\nbogus = 1\n")
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("line 5") && msg.contains("unknown field `bogus`"), "{msg}");
        let err = load_text(
            "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nplugin = \"a.wasm\"\nbacklog = \"many\"\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("line 5"), "{err:#}");
        let err = load_text(
            "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nplugin = \"a.wasm\"\ncpu-limit = \"soon\"\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("not a duration"), "{err:#}");
    }
}
