//! `pier.toml`: server settings and any number of `[[listener]]` tables
//! ([`Settings`]). Unknown keys are rejected with their name and line;
//! relative paths are relative to the file's own directory.

use super::ServerConfig;
use super::settings::{ListenerSettings, Settings};
use anyhow::Context;
use std::path::Path;

/// Reads and checks a config file; errors are one line naming the file, the
/// line and the key.
pub fn load(path: &Path) -> anyhow::Result<ServerConfig> {
    load_with(path, &Settings::default(), &ListenerSettings::default())
}

/// [`load`], with `pier serve`'s flags laid over the file: server flags over
/// its top level, listener flags over every one of its listeners.
pub fn load_with(path: &Path, server: &Settings, listener: &ListenerSettings) -> anyhow::Result<ServerConfig> {
    // An error may quote a value as given, newlines and all: keep it one line.
    load_unflattened(path, server, listener).map_err(|e| anyhow::anyhow!("{}", one_line(&format!("{e:#}"))))
}

/// A message with its line breaks shown as `\n`.
fn one_line(message: &str) -> String {
    message.replace('\r', "\\r").replace('\n', "\\n")
}

fn load_unflattened(path: &Path, server: &Settings, listener: &ListenerSettings) -> anyhow::Result<ServerConfig> {
    let shown = path.display();
    let base = path.parent().unwrap_or(Path::new("."));
    let mut config = read(path)?.resolve(base).with_context(|| shown.to_string())?;
    server.apply(&mut config);
    for l in &mut config.listeners {
        listener.apply(l, Path::new(""));
    }
    config.validate().with_context(|| shown.to_string())?;
    Ok(config)
}

/// Parses a config file, naming the line of the first error.
pub fn read(path: &Path) -> anyhow::Result<Settings> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => anyhow::anyhow!("config file `{shown}` not found: check the path"),
        _ => anyhow::Error::new(e).context(format!("cannot read config file `{shown}`")),
    })?;
    toml::from_str(&text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start].matches('\n').count() + 1);
        let msg = e.message().trim().replace('\n', " ");
        match line {
            Some(line) => anyhow::anyhow!("{shown} line {line}: {msg}"),
            None => anyhow::anyhow!("{shown}: {msg}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenAddr;
    use std::time::Duration;

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
