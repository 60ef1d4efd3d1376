//! The command line: ports, ranges, and one clear line for each bad input.

use crate::common::*;
use std::process::Output;

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A user error: exit 1, one line naming the problem, no panic.
fn assert_user_error(out: &Output, needle: &str) {
    let err = stderr_of(out);
    assert_eq!(out.status.code(), Some(1), "exit status; stderr:\n{err}");
    assert!(err.contains(needle), "stderr should mention `{needle}`:\n{err}");
    assert!(!err.contains("panicked"), "a user error must not panic:\n{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("pier: ")).count(), 1, "one error line:\n{err}");
}

fn echo() -> String {
    guest("echo").to_str().unwrap().to_string()
}

#[test]
fn port_zero_prints_the_real_port() {
    let pier = Pier::start(&["--listen", "127.0.0.1:0", "--plugin", &echo(), "--name", "tenant-a"], 1);
    assert_eq!(pier.addrs[0].0, "tenant-a");
    assert_ne!(pier.addr().port(), 0);
    assert_eq!(exchange(pier.addr(), b"ping"), b"ping");
}

#[test]
fn ipv6_loopback_works() {
    let pier = Pier::start(&["--listen", "[::1]:0", "--plugin", &echo()], 1);
    assert!(pier.addr().is_ipv6());
    assert_eq!(exchange(pier.addr(), b"six"), b"six");
}

#[test]
fn port_range_lands_inside_the_range() {
    let pier = Pier::start(&["--listen", "127.0.0.1", "--port-range", "42000-42999", "--plugin", &echo()], 1);
    let port = pier.addr().port();
    assert!((42000..=42999).contains(&port), "port {port} outside 42000-42999");
    assert_eq!(exchange(pier.addr(), b"r"), b"r");
}

#[test]
fn second_server_on_the_same_port_fails_clearly() {
    let first = Pier::start(&["--listen", "127.0.0.1:0", "--plugin", &echo()], 1);
    let taken = first.addr().to_string();
    let out = run_pier(&["serve", "--listen", &taken, "--plugin", &echo()]);
    assert_user_error(&out, &format!("cannot bind {taken}"));
    assert!(stderr_of(&out).contains("pick another port"));
    // The first server is untouched.
    assert_eq!(exchange(first.addr(), b"ok"), b"ok");
}

#[test]
fn full_port_range_fails_clearly() {
    let first = Pier::start(&["--listen", "127.0.0.1:0", "--plugin", &echo()], 1);
    let port = first.addr().port().to_string();
    let range = format!("{port}-{port}");
    let out = run_pier(&["serve", "--listen", "127.0.0.1", "--port-range", &range, "--plugin", &echo()]);
    assert_user_error(&out, "no free port in 127.0.0.1:");
}

#[test]
fn bad_inputs_each_get_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "just some text\n").unwrap();
    let missing = dir.path().join("missing.wasm");
    let wrong = guest("wrong_world");
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let serve = |plugin: &str, listen: &str| run_pier(&["serve", "--listen", listen, "--plugin", plugin]);

    assert_user_error(&serve(&p(&missing), "127.0.0.1:0"), "not found");
    assert_user_error(&serve(&p(&core), "127.0.0.1:0"), "is a core wasm module, not a component");
    assert_user_error(&serve(&p(&text), "127.0.0.1:0"), "is not a WebAssembly component");
    assert_user_error(&serve(&p(&wrong), "127.0.0.1:0"), "is not a pier connection-handler");
    assert_user_error(&serve(&echo(), "localhost:http"), "invalid listen address `localhost:http`");
    let out = run_pier(&["serve", "--listen", "127.0.0.1", "--port-range", "7010-7000", "--plugin", &echo()]);
    assert_user_error(&out, "invalid port range `7010-7000`: it is empty");
    let out = run_pier(&["serve", "--listen", "127.0.0.1:0", "--plugin", &echo(), "--workers", "0"]);
    assert_user_error(&out, "workers = 0: give a number of threads from 1 to 1024");
}

/// `--workers N` sets the runtime's thread count (redis-server, say, runs
/// commands on one thread; an operator may pin pier the same way).
#[test]
fn workers_sets_the_number_of_worker_threads() {
    for n in [1, 3] {
        let pier = Pier::serve("echo", &["--workers", &n.to_string()]);
        assert_eq!(exchange(pier.addr(), b"ping\n"), b"ping\n");
        let tasks = std::fs::read_dir(format!("/proc/{}/task", pier.pid())).unwrap();
        let workers = tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "tokio-rt-worker")
            .count();
        assert_eq!(workers, n, "worker threads with --workers {n}");
    }
}

#[test]
fn check_accepts_echo_and_rejects_non_components() {
    let out = run_pier(&["check", &echo()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stderr: {}", stderr_of(&out));
    assert!(stdout.contains("world: pier:server/connection-handler@0.1.0"), "{stdout}");
    assert!(stdout.contains("export instance pier:server/inbox@0.1.0"), "{stdout}");
    assert!(stdout.contains("import instance pier:server/outbox@0.1.0"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    assert_user_error(&run_pier(&["check", core.to_str().unwrap()]), "core wasm module");
    let text = dir.path().join("readme.txt");
    std::fs::write(&text, "hello").unwrap();
    assert_user_error(&run_pier(&["check", text.to_str().unwrap()]), "not a WebAssembly component");
    let wrong = guest("wrong_world");
    assert_user_error(&run_pier(&["check", wrong.to_str().unwrap()]), "is not a pier connection-handler");
}
