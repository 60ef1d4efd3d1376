//! What an operator sees: `--metrics` scraped with `curl` and checked with
//! `promtool` against what the test did, `/healthz`, and `--log-format json`.

use crate::common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Instant;

/// `curl -s URL` with headers `-H` given, its body; panics if curl fails.
fn curl(url: &str, headers: &[&str]) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--max-time", "10", url]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd.output().expect("curl (`make setup` installs it)");
    assert!(out.status.success(), "curl {url}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// `curl`'s status code for `url`.
fn status(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", url])
        .output()
        .expect("curl");
    String::from_utf8(out.stdout).unwrap()
}

/// One sample's value: `name{labels}` exactly as the text has it.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn scrape(addr: SocketAddr) -> String {
    curl(&format!("http://{addr}/metrics"), &[])
}

/// Scrapes until `series` reads `want`, at most `STEP`; returns the text.
fn scrape_until(addr: SocketAddr, series: &str, want: u64) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let text = scrape(addr);
        if sample(&text, series) == Some(want) {
            return text;
        }
        assert!(Instant::now() < deadline, "{series} never read {want}:\n{text}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Three echo connections opened and closed read as accepted 3, open 0,
/// three `peer-closed` ends and their bytes; a live one as open 1 with its
/// bytes counted before it ends; `promtool check metrics` accepts the text.
#[test]
fn a_scrape_counts_what_the_connections_did_and_promtool_accepts_it() {
    let pier = Pier::serve("echo", &["--metrics", "127.0.0.1:0"]);
    let metrics = pier.metrics.expect("a metrics line");
    for _ in 0..3 {
        assert_eq!(exchange(pier.addr(), b"hello\n"), b"hello\n");
    }
    let text = scrape_until(metrics, "pier_connection_ends_total{listener=\"main\",reason=\"peer-closed\"}", 3);
    assert_eq!(sample(&text, "pier_connections_accepted_total{listener=\"main\"}"), Some(3), "{text}");
    assert_eq!(sample(&text, "pier_connections_open{listener=\"main\"}"), Some(0), "{text}");
    assert_eq!(sample(&text, "pier_received_bytes_total{listener=\"main\"}"), Some(18), "{text}");
    assert_eq!(sample(&text, "pier_sent_bytes_total{listener=\"main\"}"), Some(18), "{text}");
    assert_eq!(sample(&text, "pier_connection_ends_total{listener=\"main\",reason=\"cpu-limit\"}"), Some(0));
    assert!(text.contains("pier_build_info{version=\""), "{text}");
    // Each connection's call times are added to the listener's when it ends.
    for call in ["new-csa", "data", "end-of-input", "shutdown-csa"] {
        let series = format!("pier_call_seconds_count{{listener=\"main\",call=\"{call}\"}}");
        assert_eq!(sample(&text, &series), Some(3), "{series} in\n{text}");
    }
    assert_eq!(sample(&text, "pier_instantiate_seconds_count{listener=\"main\"}"), Some(3), "{text}");
    // A live connection's bytes count before it ends.
    let mut live = connect(pier.addr());
    live.write_all(&[b'x'; 1000]).unwrap();
    assert_eq!(read_n(&mut live, 1000).len(), 1000);
    let text = scrape_until(metrics, "pier_received_bytes_total{listener=\"main\"}", 1018);
    assert_eq!(sample(&text, "pier_connections_open{listener=\"main\"}"), Some(1), "{text}");
    assert_eq!(sample(&text, "pier_sent_bytes_total{listener=\"main\"}"), Some(1018), "{text}");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (`make setup` installs the prometheus package)");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Asked for OpenMetrics, the same numbers in that format.
    let om = curl(&format!("http://{metrics}/metrics"), &["Accept: application/openmetrics-text"]);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE pier_connections_accepted counter"), "{om}");
}

/// Each listener has its own series, and a trap is counted by its kind.
#[test]
fn every_listener_counts_its_own_ends_by_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        dir.path(),
        "metrics = \"127.0.0.1:0\"\n\
         [[listener]]\nname = \"calm\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:echo}\"\n\
         [[listener]]\nname = \"wild\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:misbehave}\"\ncpu-limit = \"50ms\"\n",
    );
    let pier = Pier::start(&["--config", &cfg], 2);
    let metrics = pier.metrics.expect("a metrics line");
    let mut spin = connect(pier.addrs[1].1);
    spin.write_all(b"spin\n").unwrap();
    assert_eq!(read_to_eof(&mut spin), b"");
    let mut oops = connect(pier.addrs[1].1);
    oops.write_all(b"panic\n").unwrap();
    assert_eq!(read_to_eof(&mut oops), b"");
    assert_eq!(exchange(pier.addrs[0].1, b"calm\n"), b"calm\n");
    let text = scrape_until(metrics, "pier_connection_ends_total{listener=\"wild\",reason=\"trapped\"}", 1);
    assert_eq!(sample(&text, "pier_connection_ends_total{listener=\"wild\",reason=\"cpu-limit\"}"), Some(1), "{text}");
    assert_eq!(sample(&text, "pier_connections_accepted_total{listener=\"wild\"}"), Some(2), "{text}");
    let text = scrape_until(metrics, "pier_connection_ends_total{listener=\"calm\",reason=\"peer-closed\"}", 1);
    assert_eq!(sample(&text, "pier_connection_ends_total{listener=\"calm\",reason=\"trapped\"}"), Some(0), "{text}");
    assert_eq!(sample(&text, "pier_connections_accepted_total{listener=\"calm\"}"), Some(1), "{text}");
}

/// `/healthz` answers 200 while serving and 503 while draining.
#[test]
fn healthz_turns_503_while_the_server_drains() {
    let pier = Pier::serve("misbehave", &["--metrics", "127.0.0.1:0", "--cpu-limit", "60s", "--grace", "5s"]);
    let health = format!("http://{}/healthz", pier.metrics.unwrap());
    assert_eq!(status(&health), "200");
    assert_eq!(status(&format!("http://{}/nope", pier.metrics.unwrap())), "404");
    // A call that will not end before the grace period keeps pier draining.
    let mut spin = connect(pier.addr());
    spin.write_all(b"spin\n").unwrap();
    pier.wait_for_log("spinning");
    pier.signal(libc::SIGTERM);
    let deadline = Instant::now() + STEP;
    while status(&health) != "503" {
        assert!(Instant::now() < deadline, "healthz never said 503 while draining");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A metrics address in use is a one-line error naming it.
#[test]
fn a_metrics_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let echo = guest("echo");
    let out = run_pier(&["serve", "--listen", "127.0.0.1:0", "--plugin", echo.to_str().unwrap(), "--metrics", &addr]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&format!("metrics address {addr}")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// `--log-format json`: every stderr line is one JSON object, and a
/// connection's lines (the guest's own output too) carry its listener, id
/// and peer.
#[test]
fn json_logs_tag_every_line_of_a_connection() {
    let mut pier = Pier::serve("misbehave", &["--log-format", "json"]);
    let mut s = connect(pier.addr());
    s.write_all(b"log 2\n").unwrap();
    assert_eq!(read_to_eof(&mut s), b"ok: logged 2\n");
    pier.wait_for_log("connection closed");
    pier.signal(libc::SIGTERM);
    assert!(pier.wait(STEP).is_some_and(|s| s.success()));
    let log = pier.stderr();
    for line in log.lines() {
        assert!(line.starts_with('{') && line.ends_with('}'), "not a JSON object: {line}");
    }
    let guest: Vec<&str> = log.lines().filter(|l| l.contains("\"message\":\"log line ")).collect();
    assert_eq!(guest.len(), 2, "{log}");
    for line in guest {
        assert!(
            line.contains("\"conn\":1")
                && line.contains("\"listener\":\"main\"")
                && line.contains("\"peer\":\"127.0.0.1:"),
            "{line}"
        );
    }
}

/// Kills a process by pid when dropped (the successor of an upgrade is not
/// the test's child).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a pid this test learnt from pier's own log.
        unsafe { libc::kill(self.0, libc::SIGKILL) };
    }
}

/// SIGUSR2 upgrades the binary in place: the running pier starts its
/// successor with the listening sockets, and once it serves, drains and
/// exits 0. A client connecting, echoing a line and closing as fast as it
/// can throughout sees no refused connection, no reset and no lost byte,
/// and the successor serves afterwards.
#[test]
fn sigusr2_upgrades_without_refusing_a_connection() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mut pier = Pier::serve("echo", &["--metrics", "127.0.0.1:0"]);
    let addr = pier.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let line = format!("client {c} round {n}\n");
                    let result = (|| -> std::io::Result<Vec<u8>> {
                        let mut s = TcpStream::connect(addr)?;
                        s.set_read_timeout(Some(STEP))?;
                        s.write_all(line.as_bytes())?;
                        s.shutdown(std::net::Shutdown::Write)?;
                        let mut got = Vec::new();
                        std::io::Read::read_to_end(&mut s, &mut got)?;
                        Ok(got)
                    })();
                    match result {
                        Ok(got) if got == line.as_bytes() => {}
                        Ok(got) => failures.push(format!("round {n}: got {got:?}")),
                        Err(e) => failures.push(format!("round {n}: {e}")),
                    }
                    n += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                (n, failures)
            })
        })
        .collect();
    let wait_rounds = |more: u64| {
        let target = done.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + STEP;
        while done.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "the clients stalled");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    };
    wait_rounds(200);
    pier.signal(libc::SIGUSR2);
    let log = pier.wait_for_log("upgrade: the successor serves");
    let successor: i32 = log_field(&log, &["upgrade: the successor serves"], "successor").expect("the successor's pid");
    let _successor = KillOnDrop(successor);
    let status = pier.wait(STEP).expect("the old pier exits");
    assert!(status.success(), "{status:?}");
    // Served by the successor alone now.
    wait_rounds(200);
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        let (n, failures) = c.join().unwrap();
        assert!(failures.is_empty(), "{} failed connections, e.g. {:?}", failures.len(), &failures[..1]);
        total += n;
    }
    assert!(total >= 400, "{total} rounds");
    let health = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", &format!("http://{}/healthz", pier.metrics.unwrap())])
        .output()
        .unwrap();
    assert_eq!(health.stdout, b"ok\n", "the successor serves the metrics socket too");
}

/// systemd socket activation (`systemd-socket-activate`, as a `.socket`
/// unit does): pier serves the socket it is handed under its listener's
/// `FileDescriptorName`, and binds nothing itself (its own `--listen`
/// address here could not be bound).
#[test]
fn a_socket_handed_by_systemd_is_served() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let echo = guest("echo");
    let mut activate = Command::new("systemd-socket-activate")
        .args(["-l", &format!("127.0.0.1:{port}"), "--fdname=main"])
        .arg(pier_bin())
        .args(["serve", "--listen", "127.0.0.1:1", "--plugin", echo.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-socket-activate (`make setup` installs systemd)");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + STEP;
    let got = loop {
        // The first connection starts pier, which then accepts it.
        if let Ok(mut s) = TcpStream::connect(addr) {
            s.set_read_timeout(Some(STEP)).unwrap();
            s.write_all(b"activated\n").unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
            break read_to_eof(&mut s);
        }
        assert!(Instant::now() < deadline, "systemd-socket-activate never listened");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    assert_eq!(got, b"activated\n");
    assert_eq!(exchange(addr, b"again\n"), b"again\n");
    let _ = activate.kill();
    let out = activate.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("using an inherited socket"), "{err}");
}

/// `Type=notify`: pier tells `$NOTIFY_SOCKET` it is ready once serving,
/// reloading (then ready) on SIGHUP, and stopping on SIGTERM.
#[test]
fn systemd_hears_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(STEP)).unwrap();
    let echo = guest("echo");
    let args = ["--listen", "127.0.0.1:0", "--plugin", echo.to_str().unwrap()];
    let mut pier = Pier::start_with(&args, 1, |cmd| {
        cmd.env("NOTIFY_SOCKET", &path);
    });
    let next = || {
        let mut buf = [0; 256];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(), "READY=1");
    pier.signal(libc::SIGHUP);
    assert_eq!(next(), "RELOADING=1");
    assert_eq!(next(), "READY=1");
    pier.signal(libc::SIGTERM);
    assert_eq!(next(), "STOPPING=1");
    assert!(pier.wait(STEP).is_some_and(|s| s.success()));
}

/// `GET /connections` lists the live connections as JSON, a page at a time,
/// with what each has moved.
#[test]
fn connections_are_listed_a_page_at_a_time() {
    let pier = Pier::serve("echo", &["--metrics", "127.0.0.1:0"]);
    let base = format!("http://{}/connections", pier.metrics.unwrap());
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(pier.addr())).collect();
    held[1].write_all(&[b'x'; 1000]).unwrap();
    assert_eq!(read_n(&mut held[1], 1000).len(), 1000);
    let deadline = Instant::now() + STEP;
    let all: serde_json::Value = loop {
        let v: serde_json::Value = serde_json::from_str(&curl(&format!("{base}?limit=10"), &[])).unwrap();
        if v["total"] == 3 {
            break v;
        }
        assert!(Instant::now() < deadline, "never 3 connections: {v}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let conns = all["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 3);
    assert!(conns.iter().all(|c| c["listener"] == "main" && c["state"] == "open"), "{all}");
    assert!(conns.iter().any(|c| c["received_bytes"] == 1000 && c["sent_bytes"] == 1000), "{all}");
    let ids: Vec<u64> = conns.iter().map(|c| c["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "by id: {ids:?}");
    let page: serde_json::Value = serde_json::from_str(&curl(&format!("{base}?offset=2&limit=2"), &[])).unwrap();
    assert_eq!(page["total"], 3);
    assert_eq!(page["connections"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(page["connections"][0]["id"].as_u64(), Some(ids[2]));
}

/// The backplane counters: what a listener's connections published, and
/// what was lost (here: messages over the 64 KiB a message may have).
#[test]
fn backplane_publishes_and_drops_are_counted() {
    let pier = Pier::serve("hostile", &["--metrics", "127.0.0.1:0"]);
    let mut s = connect(pier.addr());
    s.write_all(b"publish news 3 100\npublish news 2 100000\n").unwrap();
    let mut lines = std::io::BufReader::new(s.try_clone().unwrap());
    for want in ["published 3\n", "published 2\n"] {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
        assert_eq!(line, want);
    }
    let text = scrape(pier.metrics.unwrap());
    assert_eq!(sample(&text, "pier_backplane_published_total{listener=\"main\"}"), Some(5), "{text}");
    assert_eq!(sample(&text, "pier_backplane_dropped_total{listener=\"main\"}"), Some(2), "{text}");
}

/// Clients held in the backlog by `max-connections` show as waiting.
#[test]
fn clients_held_by_max_connections_show_as_waiting() {
    let pier = Pier::serve("echo", &["--metrics", "127.0.0.1:0", "--max-connections", "1"]);
    let mut first = connect(pier.addr());
    first.write_all(b"in\n").unwrap();
    assert_eq!(read_n(&mut first, 3), b"in\n");
    let _held: Vec<TcpStream> = (0..3).map(|_| connect(pier.addr())).collect();
    let text = scrape_until(pier.metrics.unwrap(), "pier_connections_waiting{listener=\"main\"}", 3);
    assert_eq!(sample(&text, "pier_connections_open{listener=\"main\"}"), Some(1), "{text}");
}

/// A listener a reload added is handed to the successor too: the upgrade
/// hands over the sockets as they stand, not as they were at start.
#[test]
fn an_upgrade_after_a_reload_hands_over_the_new_listener() {
    let dir = tempfile::tempdir().unwrap();
    let one = "[[listener]]\nname = \"first\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:echo}\"\n";
    let cfg = config_file(dir.path(), one);
    let mut pier = Pier::start(&["--config", &cfg], 1);
    config_file(
        dir.path(),
        &format!("{one}[[listener]]\nname = \"added\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{{guest:echo}}\"\n"),
    );
    pier.signal(libc::SIGHUP);
    let log = pier.wait_for_log("1 bound");
    let added: SocketAddr =
        log_field(&log, &["listening", "listener=\"added\""], "addr").expect("the added listener's address");
    pier.signal(libc::SIGUSR2);
    let log = pier.wait_for_log("upgrade: the successor serves");
    let successor: i32 = log_field(&log, &["upgrade: the successor serves"], "successor").expect("the successor's pid");
    let _successor = KillOnDrop(successor);
    assert!(pier.wait(STEP).is_some_and(|s| s.success()));
    assert_eq!(pier.stderr().matches("using an inherited socket").count(), 2, "{}", pier.stderr());
    assert_eq!(exchange(added, b"still here\n"), b"still here\n", "the successor serves the added listener");
    assert_eq!(exchange(pier.addrs[0].1, b"and here\n"), b"and here\n");
}
