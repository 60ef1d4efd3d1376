//! Multi-tenant isolation: config files, per-listener limits, denied WASI,
//! misbehaving handlers that cost only their own connection.

use crate::common::*;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

/// Sends a command line to the misbehave guest and returns its answer.
fn ask(addr: std::net::SocketAddr, command: &str) -> String {
    let mut s = connect(addr);
    s.write_all(format!("{command}\n").as_bytes()).unwrap();
    String::from_utf8(read_to_eof(&mut s)).unwrap()
}

#[test]
fn a_spinning_tenant_does_not_starve_an_echo_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        dir.path(),
        r#"
[[listener]]
name = "tenant-a"
listen = "127.0.0.1:0"
plugin = "{guest:misbehave}"
cpu-limit = "200ms"
[[listener]]
name = "tenant-b"
listen = "127.0.0.1:0"
plugin = "{guest:echo}"
"#,
    );
    let pier = Pier::start(&["--config", &cfg], 2);
    let (a, b) = (pier.addrs[0].1, pier.addrs[1].1);
    let rss_before = pier.rss_kib();
    let spinners: Vec<_> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut s = connect(a);
                s.write_all(b"spin\n").unwrap();
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink);
                start.elapsed()
            })
        })
        .collect();
    let echoers: Vec<_> = (0..50u64)
        .map(|i| {
            std::thread::spawn(move || {
                let data = pattern(i, 20_000);
                assert!(exchange(b, &data) == data, "echo client {i} lost bytes");
            })
        })
        .collect();
    for e in echoers {
        e.join().expect("echo client");
    }
    for s in spinners {
        let took = s.join().expect("spinner");
        assert!(took < STEP, "a spinning connection took {took:?} to be cut");
    }
    // Every spinner is cut for its CPU.
    pier.wait_for_logs("reason=cpu-limit", 20);
    let growth = pier.rss_kib().saturating_sub(rss_before);
    assert!(growth < 64 << 10, "RSS grew by {growth} KiB");
    assert_eq!(exchange(b, b"alive"), b"alive");
}

/// With one worker thread the spinning guest is cut at its `cpu-limit`,
/// within a few epoch ticks, not when tokio's timer next runs (every 61
/// polls of a task that yields at each 10 ms tick: 610 ms). Measured by the
/// guest's own clock, which only runs while the guest does, so a loaded
/// machine makes it smaller, never larger.
#[test]
fn cpu_limit_holds_with_one_worker() {
    let pier = Pier::serve("misbehave", &["--workers", "1", "--cpu-limit", "100ms"]);
    let mut s = connect(pier.addr());
    s.write_all(b"spin\n").unwrap();
    assert_eq!(read_to_eof(&mut s), b"", "cut without an answer");
    let log = pier.wait_for_log("reason=cpu-limit");
    let ran: u64 =
        log.lines().filter_map(|l| l.split("spun ").nth(1)?.strip_suffix(" ms")?.parse().ok()).max().unwrap_or(0);
    assert!(ran < 400, "a 100 ms cpu-limit let the guest run {ran} ms");
}

#[test]
fn traps_end_only_their_connection_with_their_reason() {
    let pier = Pier::serve("misbehave", &["--memory-limit", "8MiB"]);
    let addr = pier.addr();
    // A bystander connection, open throughout.
    let mut bystander = connect(addr);
    for (command, reason) in [
        ("oom", "reason=memory-limit"),
        ("panic", "reason=trapped: wasm trap: wasm `unreachable` instruction executed"),
        ("overflow", "reason=trapped: wasm trap: call stack exhausted"),
    ] {
        let start = Instant::now();
        let answer = ask(addr, command);
        assert_eq!(answer, "", "{command}: no answer, the connection just ends");
        assert!(start.elapsed() < STEP);
        pier.wait_for_log(reason);
    }
    assert!(pier.stderr().contains("the handler gave up"), "the panic message reaches the log");
    bystander.write_all(b"config missing\n").unwrap();
    assert_eq!(read_to_eof(&mut bystander), b"denied: no config key `missing`\n", "the bystander is untouched");
}

#[test]
fn the_sandbox_denies_files_env_and_sockets_by_default() {
    let pier = Pier::serve("misbehave", &[]);
    let addr = pier.addr();
    let secret = tempfile::tempdir().unwrap();
    let file = secret.path().join("secret.txt");
    std::fs::write(&file, "top secret\n").unwrap();
    let fs = ask(addr, &format!("fs {}", file.display()));
    assert!(fs.starts_with("denied: "), "{fs}");
    let env = ask(addr, "env HOME");
    assert!(env.starts_with("denied: "), "{env}");
    let sock = ask(addr, &format!("socket {addr}"));
    assert!(sock.starts_with("denied: "), "{sock}");
}

#[test]
fn a_listener_may_grant_a_directory_env_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("motd.txt"), "welcome tenant\n").unwrap();
    let cfg = config_file(
        dir.path(),
        r#"
[[listener]]
name = "granted"
listen = "127.0.0.1:0"
plugin = "{guest:misbehave}"
allow-dirs = ["data"]
env = { GREETING = "hello" }
config = { colour = "blue" }
[[listener]]
name = "fortune"
listen = "127.0.0.1:0"
plugin = "{guest:fortune}"
config = { fortune = "Tenant wisdom." }
"#,
    );
    let pier = Pier::start(&["--config", &cfg], 2);
    let addr = pier.addrs[0].1;
    let motd = data.join("motd.txt");
    assert_eq!(ask(addr, &format!("fs {}", motd.display())), "ok: welcome tenant\n");
    let outside = dir.path().join("pier.toml");
    assert!(ask(addr, &format!("fs {}", outside.display())).starts_with("denied: "), "only the granted dir");
    assert_eq!(ask(addr, "env GREETING"), "ok: hello\n");
    assert!(ask(addr, "env HOME").starts_with("denied: "));
    assert_eq!(ask(addr, "config colour"), "ok: blue\n");
    let mut f = connect(pier.addrs[1].1);
    assert_eq!(read_to_eof(&mut f), b"Tenant wisdom.\n");
}

#[test]
fn max_connections_makes_the_next_client_wait_not_fail() {
    let pier = Pier::serve("echo", &["--max-connections", "2"]);
    let mut first = connect(pier.addr());
    let mut second = connect(pier.addr());
    for s in [&mut first, &mut second] {
        s.write_all(b"in").unwrap();
        assert_eq!(read_n(s, 2), b"in");
    }
    // The third connects (the kernel backlog holds it) but is not served.
    let mut third = connect(pier.addr());
    third.write_all(b"waiting").unwrap();
    third.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 7];
    match third.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("the third client was served or refused while two were live: {other:?}"),
    }
    drop(first);
    third.set_read_timeout(Some(STEP)).unwrap();
    assert_eq!(read_n(&mut third, 7), b"waiting", "served once a slot freed");
}

#[test]
fn idle_timeout_closes_idle_connections_only() {
    let pier = Pier::serve("echo", &["--idle-timeout", "1s"]);
    let mut idle = connect(pier.addr());
    let mut busy = connect(pier.addr());
    let start = Instant::now();
    let waiter = std::thread::spawn(move || {
        let got = read_to_eof(&mut idle);
        (got, start.elapsed())
    });
    while start.elapsed() < Duration::from_millis(2500) {
        busy.write_all(b"tick").unwrap();
        assert_eq!(read_n(&mut busy, 4), b"tick", "the busy connection stays open");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (got, took) = waiter.join().unwrap();
    assert!(got.is_empty());
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "idle close after {took:?}");
    pier.wait_for_log("reason=idle-timeout");
}

#[test]
fn config_errors_are_one_clear_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[[listener]]\nname = \"a\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:echo}\"\n";
    let cases = [
        (format!("{base}max-conections = 3\n"), "line 5: unknown field `max-conections`"),
        (format!("{base}backlog = \"lots\"\n"), "line 5: invalid type"),
        (format!("{base}{base}"), "listener name `a` is used twice"),
        (
            base.replace("127.0.0.1:0", "127.0.0.1:7999")
                + &base.replace("\"a\"", "\"b\"").replace("127.0.0.1:0", "127.0.0.1:7999"),
            "both listen on 127.0.0.1:7999",
        ),
        (base.replace("{guest:echo}", "nope.wasm"), "plugin `"),
        (format!("workers = 0\n{base}"), "workers = 0: give a number of threads"),
    ];
    for (text, needle) in cases {
        let cfg = config_file(dir.path(), &text);
        for command in ["serve", "check"] {
            let out = run_pier(&[command, "--config", &cfg]);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{command} {needle}: {err}");
            assert!(err.contains(needle), "{command}: expected `{needle}` in:\n{err}");
            assert_eq!(err.lines().filter(|l| l.starts_with("pier: ")).count(), 1, "{err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    let out = run_pier(&["check", "--config", &config_file(dir.path(), base)]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("LISTENER"));
}

#[test]
fn the_demo_config_checks() {
    let root = target_dir().parent().unwrap().to_path_buf();
    let out = run_pier(&["check", "--config", root.join("examples/pier.toml").to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for name in ["echo", "chargen", "chat", "fortune", "resp", "http"] {
        assert!(stdout.lines().any(|l| l.starts_with(name)), "{name} missing from:\n{stdout}");
    }
}

/// A server started with the common default soft limit of 1024 open files
/// (here 256) would refuse connections long before max-connections; `pier
/// serve` raises its soft limit to the hard one, as servers do.
#[test]
fn serve_raises_a_low_open_files_limit() {
    use std::os::unix::process::CommandExt;
    const SOFT: u64 = 256;
    let plugin = guest("echo");
    let args = ["--listen", "127.0.0.1:0", "--max-connections", "400", "--plugin", plugin.to_str().unwrap()];
    let pier = Pier::start_with(&args, 1, |cmd| {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                lim.rlim_cur = SOFT.min(lim.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                Ok(())
            })
        };
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", pier.pid())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    let (soft, hard) = (nums[0], nums[1]);
    // An unlimited hard limit is raised to fs.nr_open, the most files allow.
    assert!(
        soft == hard || (hard == "unlimited" && soft.parse::<u64>().is_ok_and(|n| n > SOFT)),
        "soft open-files limit not raised to the hard one: {line}"
    );
    if hard.parse::<u64>().is_ok_and(|hard| hard < 400) {
        return; // this machine's hard limit is too low to show more
    }
    // More connections than the old soft limit, all live at once.
    let mut conns: Vec<_> = (0..300).map(|_| connect(pier.addr())).collect();
    for (i, c) in conns.iter_mut().enumerate() {
        let msg = format!("{i}\n");
        c.write_all(msg.as_bytes()).unwrap();
        assert_eq!(read_n(c, msg.len()), msg.as_bytes(), "connection {i}");
    }
}
