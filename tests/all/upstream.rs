//! Outbound connections: the proxy guest (guest/proxy) in front of a real
//! `redis-server` and of test servers that misbehave on purpose; the
//! listener's `allow-connect` enforced by the host.

use crate::common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;

/// pier serving the proxy guest towards `upstream`, allowing `allow`.
fn proxy(upstream: SocketAddr, allow: &str) -> (tempfile::TempDir, Pier) {
    proxy_to(&upstream.to_string(), allow, "")
}

/// [`proxy`] to an upstream given as text, with `more` listener settings.
fn proxy_to(upstream: &str, allow: &str, more: &str) -> (tempfile::TempDir, Pier) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        dir.path(),
        &format!(
            "[[listener]]\nname = \"proxy\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{{guest:proxy}}\"\nnodelay = true\n\
             allow-connect = [\"{allow}\"]\n{more}config = {{ upstream = \"{upstream}\" }}\n"
        ),
    );
    let pier = Pier::start(&["--config", &cfg], 1);
    (dir, pier)
}

/// With `allow-dns`, a name is resolved and connected to only at an
/// address `allow-connect` lists; without it, a name is refused.
#[test]
fn names_resolve_only_with_allow_dns_and_only_to_allowed_addresses() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        s.set_read_timeout(Some(STEP)).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(&got).unwrap();
    });
    let allowed = format!("127.0.0.1:{port}");
    let (_d1, pier) = proxy_to(&format!("localhost:{port}"), &allowed, "allow-dns = true\n");
    assert_eq!(exchange(pier.addr(), b"by name"), b"by name", "localhost resolved to an allowed address");
    upstream.join().unwrap();

    let (_d2, pier) = proxy_to(&format!("localhost:{port}"), &allowed, "");
    assert_eq!(read_to_eof(&mut connect(pier.addr())), b"");
    assert!(pier.wait_for_log("no upstream").contains("names are not resolved"));

    let (_d3, pier) = proxy_to(&format!("localhost:{}", port + 1), &allowed, "allow-dns = true\n");
    assert_eq!(read_to_eof(&mut connect(pier.addr())), b"");
    assert!(pier.wait_for_log("upstream closed").contains("resolves to no address"));
}

#[test]
fn redis_cli_and_redis_benchmark_work_through_the_proxy() {
    let redis = RedisServer::start();
    let (_dir, pier) = proxy(redis.addr, &redis.addr.to_string());
    let port = pier.addr().port();
    assert_eq!(redis_cli(port, &["set", "through", "the proxy"]), "OK");
    assert_eq!(redis_cli(redis.addr.port(), &["get", "through"]), "the proxy", "it reached the real server");
    let out = Command::new("timeout")
        .args(["60", "redis-benchmark", "-p", &port.to_string(), "-t", "set,get", "-n", "2000", "-c", "10", "-q"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches("requests per second").count(), 2, "{text}");
    assert!(!text.contains("rror"), "{text}");
}

/// An address the listener does not allow is refused by the host: the
/// handler sees the error (and closes), the host logs it.
#[test]
fn an_address_outside_allow_connect_is_denied() {
    let redis = RedisServer::start();
    let (_dir, pier) = proxy(redis.addr, "127.0.0.1:1");
    let mut s = connect(pier.addr());
    s.write_all(b"PING\r\n").unwrap();
    assert_eq!(read_to_eof(&mut s), b"", "nothing reached the upstream");
    let log = pier.wait_for_log("upstream connect denied");
    assert!(log.contains("is not in this listener's allow-connect"), "{log}");
}

/// A refused connection reaches the handler as `closed` with the reason.
#[test]
fn a_refused_upstream_closes_the_client() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let (_dir, pier) = proxy(target, &target.to_string());
    let mut s = connect(pier.addr());
    assert_eq!(read_to_eof(&mut s), b"");
    assert!(pier.wait_for_log("upstream closed").contains("refused"));
}

/// The client's FIN reaches the upstream, whose answer still comes back.
#[test]
fn half_close_passes_through() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = server.local_addr().unwrap();
    let upstream = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        s.set_read_timeout(Some(STEP)).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        s.write_all(format!("got {} bytes\n", got.len()).as_bytes()).unwrap();
    });
    let (_dir, pier) = proxy(target, &target.to_string());
    let data = pattern(3, 300_000);
    assert_eq!(exchange(pier.addr(), &data), b"got 300000 bytes\n");
    upstream.join().unwrap();
}

/// A fast client and an upstream that never reads: the writes stall and
/// pier holds about an outbox, not what the client tried to send; and the
/// other way, an upstream that floods a client that never reads.
#[test]
fn backpressure_holds_both_ways() {
    // Client to upstream.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = server.local_addr().unwrap();
    let (_dir, pier) = proxy(target, &target.to_string());
    let before = pier.rss_kib();
    let mut s = connect(pier.addr());
    let (_held, _) = server.accept().unwrap();
    let written = write_until_stalled(&mut s, 1, 64 << 20);
    assert!(written < 64 << 20, "the client's writes stalled ({written} bytes taken)");
    let grown = pier.rss_kib().saturating_sub(before);
    assert!(grown < 16 << 10, "pier grew by {grown} KiB in front of a stalled upstream");

    // Upstream to client.
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = server.local_addr().unwrap();
    let (_dir2, pier) = proxy(target, &target.to_string());
    let before = pier.rss_kib();
    let _client = connect(pier.addr());
    let (mut up, _) = server.accept().unwrap();
    let written = write_until_stalled(&mut up, 1, 64 << 20);
    assert!(written < 64 << 20, "the upstream's writes stalled ({written} bytes taken)");
    let grown = pier.rss_kib().saturating_sub(before);
    assert!(grown < 16 << 10, "pier grew by {grown} KiB in front of a client that does not read");
}

/// A handler that connects in a loop stops at `max-upstreams`; addresses
/// outside `allow-connect`, or not `IP:PORT`, are refused with the reason.
#[test]
fn upstream_connects_are_bounded_and_checked() {
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = server.local_addr().unwrap().to_string();
    let allow = format!("--allow-connect={target}");
    let pier = Pier::serve("misbehave", &[&allow, "--max-upstreams", "3"]);
    let ask = |command: &str| {
        let mut s = connect(pier.addr());
        s.write_all(format!("{command}\n").as_bytes()).unwrap();
        String::from_utf8(read_to_eof(&mut s)).unwrap()
    };
    assert_eq!(ask(&format!("upstreams {target}")), "ok: connected 3, then ConnectError::TooMany(3)\n");
    let denied = ask("upstreams 127.0.0.1:1");
    assert!(denied.starts_with("ok: connected 0, then ConnectError::Denied(\"127.0.0.1:1 is not in"), "{denied}");
    let invalid = ask("upstreams localhost:80");
    assert!(invalid.starts_with("ok: connected 0, then ConnectError::Invalid("), "{invalid}");
}
