//! Reload on SIGHUP: the file is read again and applied without dropping a
//! connection; a reload that fails changes nothing.

use crate::common::*;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A config of an echo listener and a `misbehave` one whose `motd` is given.
fn two_listeners(motd: &str, misbehave: &str) -> String {
    format!(
        "[[listener]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{{guest:echo}}\"\n\
         [[listener]]\nname = \"tenant\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{misbehave}\"\n\
         config = {{ motd = \"{motd}\" }}\n"
    )
}

/// Asks a misbehave connection for its `motd`.
fn motd(s: &mut TcpStream) -> Vec<u8> {
    s.write_all(b"config motd\n").unwrap();
    read_to_eof(s)
}

fn reload(pier: &Pier, count: usize) -> String {
    pier.signal(libc::SIGHUP);
    pier.wait_for_logs("SIGHUP: reloading", count);
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let log = pier.stderr();
        let done = log.matches("reloaded summary").count() + log.matches("reload failed").count();
        if done >= count {
            return log;
        }
        assert!(std::time::Instant::now() < deadline, "no reload outcome logged:\n{log}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// 50 echo connections open across a reload keep echoing; the changed
/// listener's new connections get its new settings while a connection
/// from before keeps its own.
#[test]
fn a_reload_changes_new_connections_and_keeps_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &two_listeners("before", "{guest:misbehave}"));
    let pier = Pier::start(&["--config", &cfg], 2);
    let (echo, tenant) = (pier.addrs[0].1, pier.addrs[1].1);
    let mut echoes: Vec<TcpStream> = (0..50).map(|_| connect(echo)).collect();
    for (i, s) in echoes.iter_mut().enumerate() {
        s.write_all(format!("{i}\n").as_bytes()).unwrap();
        assert_eq!(read_n(s, format!("{i}\n").len()), format!("{i}\n").as_bytes());
    }
    let mut old = connect(tenant);
    config_file(dir.path(), &two_listeners("after", "{guest:misbehave}"));
    let log = reload(&pier, 1);
    assert!(log.contains("1 kept, 1 reloaded, 0 bound, 0 removed"), "{log}");
    assert_eq!(motd(&mut connect(tenant)), b"ok: after\n", "a new connection gets the new config");
    assert_eq!(motd(&mut old), b"ok: before\n", "a connection from before keeps its own");
    for (i, s) in echoes.iter_mut().enumerate() {
        let line = format!("again {i}\n");
        s.write_all(line.as_bytes()).unwrap();
        assert_eq!(read_n(s, line.len()), line.as_bytes(), "echo connection {i} after the reload");
    }
}

/// A plugin that fails to load on reload leaves the old handler serving,
/// says why, and counts a failed reload; so does a config file that does
/// not parse.
#[test]
fn a_failed_reload_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &two_listeners("same", "{guest:misbehave}"));
    let pier = Pier::start(&["--config", &cfg, "--metrics", "127.0.0.1:0"], 2);
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"not a component").unwrap();
    config_file(dir.path(), &two_listeners("changed", broken.to_str().unwrap()));
    let log = reload(&pier, 1);
    assert!(log.contains("reload failed; serving on as before"), "{log}");
    assert_eq!(motd(&mut connect(pier.addrs[1].1)), b"ok: same\n", "the old handler and config still serve");
    std::fs::write(&cfg, "[[listener]\nname = ").unwrap();
    let log = reload(&pier, 2);
    assert_eq!(log.matches("reload failed").count(), 2, "{log}");
    assert_eq!(exchange(pier.addrs[0].1, b"still\n"), b"still\n");
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", &format!("http://{}/metrics", pier.metrics.unwrap())])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pier_reloads_total{result=\"failed\"} 2"), "{text}");
    assert!(text.contains("pier_reloads_total{result=\"ok\"} 0"), "{text}");
}

/// A listener added to the file is bound on reload; one removed stops
/// accepting and its live connection is closed in order (EOF).
#[test]
fn a_reload_binds_new_listeners_and_drains_removed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &two_listeners("x", "{guest:misbehave}"));
    let pier = Pier::start(&["--config", &cfg], 2);
    let tenant = pier.addrs[1].1;
    let mut live = connect(pier.addrs[0].1);
    live.write_all(b"hi\n").unwrap();
    assert_eq!(read_n(&mut live, 3), b"hi\n");
    config_file(
        dir.path(),
        "[[listener]]\nname = \"tenant\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:misbehave}\"\n\
         config = { motd = \"x\" }\n\
         [[listener]]\nname = \"fresh\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:echo}\"\n",
    );
    let log = reload(&pier, 1);
    assert!(log.contains("1 kept, 0 reloaded, 1 bound, 1 removed"), "{log}");
    // The removed echo listener's connection is told to finish, then closes.
    assert_eq!(read_to_eof(&mut live), b"", "the removed listener's connection ends in order");
    let fresh: SocketAddr =
        log_field(&log, &["listening", "listener=\"fresh\""], "addr").expect("a listening line for the new listener");
    assert_eq!(exchange(fresh, b"new\n"), b"new\n");
    assert_eq!(motd(&mut connect(tenant)), b"ok: x\n", "the kept listener is untouched");
    assert!(pier.listens_on(tenant.port()), "the kept listener's socket is seen");
    let deadline = Instant::now() + STEP;
    while pier.listens_on(pier.addrs[0].1.port()) {
        assert!(Instant::now() < deadline, "the removed listener's socket is still open");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A reload that changes a RESP listener's settings keeps its keys.
#[test]
fn a_reloaded_listener_keeps_its_key_value_store() {
    let dir = tempfile::tempdir().unwrap();
    let resp = |limit: &str| {
        format!(
            "[[listener]]\nname = \"kv\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{{guest:resp}}\"\ncpu-limit = \"{limit}\"\n"
        )
    };
    let cfg = config_file(dir.path(), &resp("1s"));
    let pier = Pier::start(&["--config", &cfg], 1);
    let port = pier.addr().port();
    assert_eq!(redis_cli(port, &["set", "k", "v"]), "OK");
    config_file(dir.path(), &resp("2s"));
    let log = reload(&pier, 1);
    assert!(log.contains("0 kept, 1 reloaded"), "{log}");
    assert_eq!(redis_cli(port, &["get", "k"]), "v");
}

/// A reloaded `server-handler` listener gives new connections a new
/// instance, with memory of its own, while the old instance serves the
/// connections it has until they end.
#[test]
fn a_reloaded_server_handler_starts_a_new_instance_for_new_connections() {
    let dir = tempfile::tempdir().unwrap();
    let room = |idle: &str| {
        format!(
            "[[listener]]\nname = \"room\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{{guest:server_chat}}\"\n\
             idle-timeout = \"{idle}\"\n"
        )
    };
    let cfg = config_file(dir.path(), &room("5m"));
    let pier = Pier::start(&["--config", &cfg], 1);
    let mut a = Chatter::join(pier.addr());
    let mut b = Chatter::join(pier.addr());
    assert_eq!(a.line(), format!("* {} joined\n", b.nick));
    config_file(dir.path(), &room("6m"));
    let log = reload(&pier, 1);
    assert!(log.contains("0 kept, 1 reloaded"), "{log}");
    let mut c = Chatter::join(pier.addr());
    let mut d = Chatter::join(pier.addr());
    assert_eq!(c.line(), format!("* {} joined\n", d.nick), "the new instance's room");
    a.say("old room");
    assert_eq!(b.line(), format!("<{}> old room\n", a.nick));
    c.say("new room");
    assert_eq!(d.line(), format!("<{}> new room\n", c.nick));
    assert_eq!(a.line_within(Duration::from_millis(300)), None, "the rooms are apart");
}
