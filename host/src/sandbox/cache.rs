//! Compile once: each plugin's compiled code kept in the cache directory
//! (`cache-dir`), so that a restart or a reload of an unchanged component
//! loads it (milliseconds) instead of compiling it again (seconds for a
//! CPython handler).
//!
//! One file per plugin path, `<stem>-<path hash>-<key>.cwasm`, where the key
//! hashes the component's bytes and the engine's compatibility hash
//! (wasmtime's version, target, compiler flags and the settings compiled
//! code depends on): a changed plugin, a new pier or other engine settings
//! make a new key, the file of the old one is removed, so the cache holds
//! one file per plugin path. A file is written to a temporary name, then
//! renamed, so a reader never sees half of one. A file that does not load
//! (corrupt, truncated, from another wasmtime) is compiled again and
//! replaced. A directory that cannot be written is a warning, never an
//! error: the plugin is compiled, as without a cache.
//!
//! Loading a file runs the machine code in it: the directory must be as
//! trusted as the pier binary (it is the user's own cache by default).

use super::engine::Needs;
use super::plugin;
use anyhow::Context;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use tracing::{debug, info, warn};
use wasmtime::Engine;
use wasmtime::component::Component;

/// A plugin compiled by the compiling engine: what it needs from the pool,
/// and its code, to load into the serving engine.
pub(crate) struct Compiled {
    pub(crate) needs: Needs,
    code: Code,
}

enum Code {
    /// The cache file it was compiled into (or found in).
    File(PathBuf),
    /// Serialized in memory: no cache, or one that could not be written.
    Bytes(Vec<u8>),
}

impl Compiled {
    /// Loads the code into `engine`, which must be built from the same
    /// settings as the one that compiled it (see `engine::compiler`).
    pub(crate) fn load(&self, engine: &Engine) -> anyhow::Result<Component> {
        match &self.code {
            // SAFETY: the file is one this module wrote from the compiling
            // engine's output (in a directory trusted as the binary is), and
            // wasmtime checks it was made for this engine's settings.
            Code::File(path) => unsafe { Component::deserialize_file(engine, path) },
            // SAFETY: these bytes are `Component::serialize`'s output.
            Code::Bytes(bytes) => unsafe { Component::deserialize(engine, bytes) },
        }
        .map_err(anyhow::Error::from)
    }
}

/// Compiles the plugin read from `path` (its `bytes`, [`plugin::scan`]ned
/// as `scanned`) with `compiler`, or finds it in `dir`.
pub(crate) fn compile(
    compiler: &Engine,
    dir: Option<&Path>,
    path: &Path,
    bytes: &[u8],
    scanned: Needs,
) -> anyhow::Result<Compiled> {
    let Some(dir) = dir else {
        let component = plugin::compile(compiler, bytes, path)?;
        let needs = plugin::complete(scanned, &component, path)?;
        return Ok(Compiled { needs, code: Code::Bytes(component.serialize()?) });
    };
    let (prefix, file) = file_name(compiler, path, bytes);
    let cached = dir.join(&file);
    if cached.is_file() {
        // SAFETY: as in `Compiled::load`.
        match unsafe { Component::deserialize_file(compiler, &cached) } {
            Ok(component) => {
                debug!(plugin = %path.display(), cache = %cached.display(), "compiled code found in the cache");
                let needs = plugin::complete(scanned, &component, path)?;
                return Ok(Compiled { needs, code: Code::File(cached) });
            }
            Err(e) => {
                warn!(cache = %cached.display(), error = %format!("{e:#}"), "cached code does not load; compiling again")
            }
        }
    }
    let started = std::time::Instant::now();
    let component = plugin::compile(compiler, bytes, path)?;
    let needs = plugin::complete(scanned, &component, path)?;
    let code = component.serialize()?;
    info!(plugin = %path.display(), secs = started.elapsed().as_secs_f64(), "compiled");
    match store(dir, &prefix, &file, &code) {
        Ok(()) => Ok(Compiled { needs, code: Code::File(cached) }),
        Err(e) => {
            warn!(
                cache_dir = %dir.display(),
                error = %format!("{e:#}"),
                "cannot write the compile cache; the next start compiles again (give a writable --cache-dir, or --no-cache)"
            );
            Ok(Compiled { needs, code: Code::Bytes(code) })
        }
    }
}

/// `(prefix, file name)` of the cache file for the plugin at `path` with
/// contents `bytes`: the prefix names the plugin path, the rest the key.
fn file_name(engine: &Engine, path: &Path, bytes: &[u8]) -> (String, String) {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let stem: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let prefix = format!("{stem}-{:016x}", hash64(0, |h| absolute.hash(h)));
    // 128 bits of key: two hashes with different seeds.
    let key = |seed| {
        hash64(seed, |h| {
            bytes.hash(h);
            engine.precompile_compatibility_hash().hash(h);
        })
    };
    let file = format!("{prefix}-{:016x}{:016x}.cwasm", key(1), key(2));
    (prefix, file)
}

fn hash64(seed: u64, feed: impl FnOnce(&mut std::hash::DefaultHasher)) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    seed.hash(&mut h);
    feed(&mut h);
    h.finish()
}

/// Writes `code` as `dir/file` (through a temporary file and a rename),
/// then removes the plugin's files of other keys.
fn store(dir: &Path, prefix: &str, file: &str, code: &[u8]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".{file}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, code).with_context(|| format!("writing {}", tmp.display()))?;
    if let Err(e) = std::fs::rename(&tmp, dir.join(file)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("renaming {}", tmp.display()));
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let same_plugin =
            name.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('-') && rest.ends_with(".cwasm"));
        if same_plugin && name != file {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_the_bytes_and_the_prefix_the_path() {
        let engine = Engine::default();
        let (p1, f1) = file_name(&engine, Path::new("/a/echo.wasm"), b"one");
        let (p2, f2) = file_name(&engine, Path::new("/a/echo.wasm"), b"two");
        let (p3, _) = file_name(&engine, Path::new("/b/echo.wasm"), b"one");
        assert_eq!(p1, p2);
        assert_ne!(f1, f2);
        assert_ne!(p1, p3);
        assert!(f1.starts_with("echo-") && f1.ends_with(".cwasm"), "{f1}");
    }

    #[test]
    fn storing_a_new_key_removes_the_old_file_of_the_plugin_only() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), "echo-1", "echo-1-aa.cwasm", b"old").unwrap();
        store(dir.path(), "echo-12", "echo-12-aa.cwasm", b"other").unwrap();
        store(dir.path(), "echo-1", "echo-1-bb.cwasm", b"new").unwrap();
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["echo-1-bb.cwasm", "echo-12-aa.cwasm"]);
    }
}
