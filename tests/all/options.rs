//! Settings as a user gives them: flags over a config file, `check` saying
//! what `serve` would do, and a closed stdout that is not a crash.

use crate::common::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A flag given with --config overrides that setting for every listener of
/// the file: a spinning handler is cut at the flag's 100 ms, not the
/// file's minute.
#[test]
fn a_listener_flag_overrides_the_file_for_every_listener() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        dir.path(),
        r#"
[[listener]]
name = "a"
listen = "127.0.0.1:0"
plugin = "{guest:misbehave}"
cpu-limit = "60s"
[[listener]]
name = "b"
listen = "127.0.0.1:0"
plugin = "{guest:misbehave}"
cpu-limit = "60s"
"#,
    );
    let pier = Pier::start(&["--config", &cfg, "--cpu-limit", "100ms"], 2);
    for (_, addr) in &pier.addrs {
        let mut s = connect(*addr);
        s.write_all(b"spin\n").unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    let log = pier.wait_for_logs("reason=cpu-limit", 2);
    assert!(log.contains("listener=\"a\"") || log.contains("listener=a"), "{log}");
}

/// `--grace 5s` overrides a file's longer grace even though 5s is also the
/// default (the drain logs the grace period it was given).
#[test]
fn grace_given_as_its_default_still_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        dir.path(),
        "grace = \"60s\"\n[[listener]]\nname = \"e\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:echo}\"\n",
    );
    let mut pier = Pier::start(&["--config", &cfg, "--grace", "5s"], 1);
    pier.signal(libc::SIGTERM);
    assert!(pier.wait(STEP).expect("pier exits").success());
    let log = pier.stderr();
    assert!(log.contains("grace=5s"), "{log}");
}

/// A handler whose initial memory exceeds its listener's memory limit can
/// never serve a connection: `check` and `serve` both say so at once, naming
/// the listener and its limit: alone (the pool is sized to that limit) or
/// beside a listener with a larger one (the first instance hits it).
#[test]
fn a_handler_over_its_memory_limit_fails_check_and_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = "[[listener]]\nname = \"tiny\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:echo}\"\nmemory-limit = \"64KiB\"\n";
    let roomy = "[[listener]]\nname = \"roomy\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:echo}\"\n";
    for (text, cause) in [(tiny.to_string(), "exceeds the limit"), (format!("{roomy}{tiny}"), "memory limit reached")] {
        let cfg = config_file(dir.path(), &text);
        for command in ["check", "serve"] {
            let out = run_pier(&[command, "--config", &cfg]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{command}: {err}");
            assert!(err.contains("listener `tiny` (memory-limit 64KiB)"), "{command}: {err}");
            assert!(err.contains(cause), "{command}: the cause is kept: {err}");
            assert_eq!(err.lines().filter(|l| l.starts_with("pier: ")).count(), 1, "{err}");
            assert!(String::from_utf8_lossy(&out.stdout).is_empty(), "nothing was bound or listed");
        }
    }
}

/// `pier check ... | head -1` and `pier serve ... | head -1`: a reader that
/// goes away is not a crash.
#[test]
fn a_closed_stdout_is_not_a_crash() {
    let echo = guest("echo");
    let closed_stdout = |args: &[&str]| {
        let mut cmd = Command::new(pier_bin());
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        drop(child.stdout.take());
        child
    };
    let mut check = closed_stdout(&["check", echo.to_str().unwrap()]);
    let status = wait_child(&mut check);
    let mut err = String::new();
    check.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert!(status.success(), "{status:?}: {err}");

    let mut serve = closed_stdout(&["serve", "--listen", "127.0.0.1:0", "--plugin", echo.to_str().unwrap()]);
    let mut log = std::io::BufReader::new(serve.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut log, &mut line).unwrap() > 0, "pier exited");
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    assert_eq!(exchange(addr, b"still here"), b"still here");
    let _ = serve.kill();
    let _ = serve.wait();
}

fn wait_child(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "pier did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `reuse-port`: two pier processes on one port; the kernel spreads new
/// connections over both, and each serves its share.
#[test]
fn two_processes_share_a_port_with_reuse_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let start = |motd: &str| {
        let sub = dir.path().join(motd);
        std::fs::create_dir(&sub).unwrap();
        let cfg = config_file(
            &sub,
            &format!(
                "[[listener]]\nname = \"shared\"\nlisten = \"127.0.0.1:{port}\"\nplugin = \"{{guest:misbehave}}\"\n\
                 reuse-port = true\nconfig = {{ motd = \"{motd}\" }}\n"
            ),
        );
        Pier::start(&["--config", &cfg], 1)
    };
    let (one, two) = (start("one"), start("two"));
    assert_eq!(one.addr(), two.addr());
    let mut served = std::collections::BTreeMap::new();
    for _ in 0..40 {
        let mut s = connect(one.addr());
        s.write_all(b"config motd\n").unwrap();
        *served.entry(String::from_utf8(read_to_eof(&mut s)).unwrap()).or_insert(0) += 1;
    }
    assert_eq!(served.keys().collect::<Vec<_>>(), ["ok: one\n", "ok: two\n"], "both served: {served:?}");
}
