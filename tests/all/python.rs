//! Handlers written in Python (guest/python, built by componentize-py into
//! target/python/NAME.wasm): the echo and chat tests of the Rust guests (and
//! the echo's in the `server-handler` world),
//! a handler that raises, a Python and a Rust listener in one process, and
//! the compile cache that makes their start-up fast.

use crate::common::*;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Compiling a CPython component takes seconds (tens on a busy machine);
/// the first test to use one compiles it, once, into this cache.
const FIRST_COMPILE: Duration = Duration::from_secs(300);

/// The compile cache these tests share, under target/ (what
/// `XDG_CACHE_HOME=target/test-cache` makes pier's default).
fn cache_dir() -> PathBuf {
    test_cache_home().join("pier")
}

/// A Python guest built by `make build`, compiled into the tests' cache.
fn python_guest(name: &str) -> PathBuf {
    static WARM: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let path = target_dir().join("python").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `make build` first", path.display());
    let mut warm = WARM.lock().unwrap_or_else(|e| e.into_inner());
    if warm.get_or_insert_with(HashSet::new).insert(name.to_string()) {
        // `pier check` compiles and caches it as `serve` would.
        let mut child = Command::new(pier_bin())
            .arg("check")
            .arg(&path)
            .env("XDG_CACHE_HOME", cache_dir().parent().unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning pier check");
        let deadline = Instant::now() + FIRST_COMPILE;
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "compiling {} took over {FIRST_COMPILE:?}", path.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "pier check {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
    path
}

/// `pier serve` of one Python guest, with the tests' compile cache.
fn serve(name: &str, extra: &[&str]) -> Pier {
    let plugin = python_guest(name);
    let cache = cache_dir();
    let mut args = vec!["--listen", "127.0.0.1:0", "--plugin", plugin.to_str().unwrap()];
    args.extend_from_slice(&["--cache-dir", cache.to_str().unwrap()]);
    args.extend_from_slice(extra);
    Pier::start(&args, 1)
}

#[test]
fn python_echo_one_byte_and_a_line_come_back() {
    crate::echo::one_byte_and_a_line(serve("echo", &[]).addr());
}

#[test]
fn python_echo_four_mebibytes_written_and_read_concurrently() {
    crate::echo::four_mebibytes(serve("echo", &[]).addr());
}

#[test]
fn python_echo_hundred_concurrent_connections_get_their_own_bytes() {
    crate::echo::hundred_connections(serve("echo", &[]).addr());
}

#[test]
fn python_chat_a_line_reaches_the_others_in_order_and_leaving_is_announced() {
    crate::chat::a_line_reaches_exactly_the_others(serve("chat", &[]).addr());
}

/// An exception ends its own instance (a trap, logged with the Python
/// traceback on the handler's stderr) and its connection; another
/// connection, opened before and after, goes on.
/// The Python echo of the `server-handler` world: the same bytes, and one
/// CPython instance for every connection.
#[test]
fn python_server_echo_round_trips_four_mebibytes_and_a_hundred_connections_on_one_instance() {
    let pier = serve("server-echo", &["--metrics", "127.0.0.1:0"]);
    crate::echo::one_byte_and_a_line(pier.addr());
    crate::echo::four_mebibytes(pier.addr());
    crate::echo::hundred_connections(pier.addr());
    assert_eq!(metric(&pier, "pier_instantiate_seconds_count{listener=\"main\"}"), 1);
}

#[test]
fn a_python_exception_ends_its_connection_only() {
    let pier = serve("raise", &[]);
    let mut calm = connect(pier.addr());
    assert_eq!(read_n(&mut calm, 6), b"ready\n");
    let mut doomed = connect(pier.addr());
    assert_eq!(read_n(&mut doomed, 6), b"ready\n");
    doomed.write_all(b"raise\n").unwrap();
    let mut rest = Vec::new();
    // The instance is gone: the host closes (or resets) the connection.
    match doomed.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection neither closed nor reset: {e}"),
    }
    assert_eq!(rest, b"", "nothing echoed after the exception");
    let log = pier.wait_for_log("reason=trapped");
    assert!(log.contains("RuntimeError: asked to raise"), "the traceback reaches the log:\n{log}");
    calm.write_all(b"still here\n").unwrap();
    assert_eq!(read_n(&mut calm, 11), b"still here\n");
    let mut after = connect(pier.addr());
    assert_eq!(read_n(&mut after, 6), b"ready\n");
    after.write_all(b"hi\n").unwrap();
    assert_eq!(read_n(&mut after, 3), b"hi\n");
}

/// One process, one pool sized for both: a CPython listener (14 core
/// instances an instance) next to a Rust one (3), each at its
/// max-connections at once.
#[test]
fn a_python_and_a_rust_listener_serve_side_by_side_at_their_max_connections() {
    let dir = tempfile::tempdir().unwrap();
    let py = python_guest("echo");
    let cfg = config_file(
        dir.path(),
        &format!(
            "cache-dir = \"{}\"\n\
             [[listener]]\nname = \"py\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{}\"\nmax-connections = 20\n\
             [[listener]]\nname = \"rust\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{{guest:echo}}\"\nmax-connections = 20\n",
            cache_dir().display(),
            py.display()
        ),
    );
    let pier = Pier::start(&["--config", &cfg], 2);
    let held: Vec<(TcpStream, Vec<u8>)> = pier
        .addrs
        .iter()
        .flat_map(|(name, addr)| {
            (0..20).map(move |i| {
                let mut s = connect(*addr);
                let line = format!("{name} {i}\n").into_bytes();
                s.write_all(&line).unwrap();
                (s, line)
            })
        })
        .collect();
    for (mut s, line) in held {
        assert_eq!(read_n(&mut s, line.len()), line, "every one of the 40 connections is served at once");
    }
    assert!(!pier.stderr().contains("WARN"), "{}", pier.stderr());
}

fn cached_start(plugin: &Path, cache: &Path) -> (Pier, Duration) {
    let started = Instant::now();
    let pier = Pier::start(
        &["--listen", "127.0.0.1:0", "--plugin", plugin.to_str().unwrap(), "--cache-dir", cache.to_str().unwrap()],
        1,
    );
    (pier, started.elapsed())
}

/// The Python echo, already compiled, listens within a second (its first
/// start compiles for seconds), and `--no-cache` compiles again.
#[test]
fn a_cached_python_plugin_starts_without_compiling() {
    let plugin = python_guest("echo");
    let (pier, took) = cached_start(&plugin, &cache_dir());
    let log = pier.stderr();
    assert!(log.contains("compiled code found in the cache"), "{log}");
    assert!(!log.contains(": compiled plugin="), "{log}");
    assert!(took < Duration::from_secs(3), "a cached start took {took:?}");
    assert_eq!(exchange(pier.addr(), b"fast"), b"fast");
}

/// With the Rust echo (which compiles in a moment): the first start
/// compiles and writes one file, the second loads it, a corrupt file is
/// compiled again and replaced, and a cache that cannot be written is a
/// warning, not an error.
#[test]
fn the_compile_cache_is_written_read_repaired_and_optional() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let echo = guest("echo");
    let files = || -> Vec<PathBuf> { std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect() };

    let (pier, _) = cached_start(&echo, &cache);
    assert!(pier.stderr().contains(": compiled plugin="), "{}", pier.stderr());
    assert_eq!(exchange(pier.addr(), b"one"), b"one");
    drop(pier);
    let written = files();
    assert_eq!(written.len(), 1, "one file per plugin: {written:?}");

    let (pier, _) = cached_start(&echo, &cache);
    assert!(pier.stderr().contains("compiled code found in the cache"), "{}", pier.stderr());
    assert_eq!(exchange(pier.addr(), b"two"), b"two");
    drop(pier);

    std::fs::write(&written[0], b"not compiled code").unwrap();
    let (pier, _) = cached_start(&echo, &cache);
    assert!(pier.stderr().contains("cached code does not load; compiling again"), "{}", pier.stderr());
    assert_eq!(exchange(pier.addr(), b"three"), b"three");
    drop(pier);
    assert_eq!(files().len(), 1);
    assert!(std::fs::read(&written[0]).unwrap().len() > 1000, "the corrupt file was replaced");

    // A regular file where the directory should be: cannot be written.
    let blocked = dir.path().join("blocked");
    std::fs::write(&blocked, b"").unwrap();
    let (pier, _) = cached_start(&echo, &blocked.join("pier"));
    assert!(pier.stderr().contains("cannot write the compile cache"), "{}", pier.stderr());
    assert_eq!(exchange(pier.addr(), b"four"), b"four");

    let pier = Pier::serve("echo", &["--no-cache"]);
    assert!(!pier.stderr().contains("found in the cache"), "{}", pier.stderr());
    assert_eq!(exchange(pier.addr(), b"five"), b"five");
}

/// A reload that changes a Python listener's settings, not its plugin,
/// loads the plugin from the cache: no compiling on the reload path.
#[test]
fn reloading_a_python_listener_does_not_compile_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let py = python_guest("echo");
    let write = |idle: &str| {
        config_file(
            dir.path(),
            &format!(
                "cache-dir = \"{}\"\n[[listener]]\nname = \"py\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{}\"\n\
                 idle-timeout = \"{idle}\"\n",
                cache_dir().display(),
                py.display()
            ),
        )
    };
    let cfg = write("60s");
    let pier = Pier::start(&["--config", &cfg], 1);
    let mut before = connect(pier.addr());
    write("90s");
    let started = Instant::now();
    pier.signal(libc::SIGHUP);
    let log = pier.wait_for_log("reloaded summary");
    assert!(log.contains("0 kept, 1 reloaded"), "{log}");
    assert!(started.elapsed() < Duration::from_secs(5), "the reload took {:?}", started.elapsed());
    assert!(!log.contains(": compiled plugin="), "{log}");
    assert_eq!(exchange(pier.addr(), b"after"), b"after");
    before.write_all(b"before\n").unwrap();
    assert_eq!(read_n(&mut before, 7), b"before\n");
}
