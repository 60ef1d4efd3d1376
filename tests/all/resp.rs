//! The RESP guest with redis-cli and redis-benchmark, on the listener's
//! shared key-value store.

use crate::common::*;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

/// Runs `redis-cli -p PORT ARGS` and returns its output, trimmed.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["20", "redis-cli", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (`make setup` installs redis-tools)");
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

#[test]
fn redis_cli_round_trips_every_command() {
    let pier = Pier::serve("resp", &[]);
    let p = pier.addr().port();
    assert_eq!(cli(p, &["ping"]), "PONG");
    assert_eq!(cli(p, &["ping", "hello"]), "hello");
    assert_eq!(cli(p, &["echo", "pier"]), "pier");
    assert_eq!(cli(p, &["set", "k", "v"]), "OK");
    assert_eq!(cli(p, &["get", "k"]), "v");
    assert_eq!(cli(p, &["get", "missing"]), "");
    assert_eq!(cli(p, &["set", "k", "w", "nx"]), "");
    assert_eq!(cli(p, &["set", "k", "w", "xx"]), "OK");
    assert_eq!(cli(p, &["incr", "n"]), "1");
    assert_eq!(cli(p, &["incrby", "n", "10"]), "11");
    assert_eq!(cli(p, &["decr", "n"]), "10");
    assert_eq!(cli(p, &["decrby", "n", "25"]), "-15");
    assert_eq!(cli(p, &["incr", "k"]), "ERR value is not an integer or out of range");
    assert_eq!(cli(p, &["mset", "a", "1", "b", "2"]), "OK");
    assert_eq!(cli(p, &["mget", "a", "b", "nope"]), "1\n2");
    assert_eq!(cli(p, &["append", "a", "xyz"]), "4");
    assert_eq!(cli(p, &["strlen", "a"]), "4");
    assert_eq!(cli(p, &["exists", "a", "b", "nope"]), "2");
    assert_eq!(cli(p, &["del", "a", "nope"]), "1");
    assert_eq!(cli(p, &["exists", "a"]), "0");
    assert_eq!(cli(p, &["ttl", "b"]), "-1");
    assert_eq!(cli(p, &["expire", "b", "100"]), "1");
    assert_eq!(cli(p, &["ttl", "b"]), "100");
    assert_eq!(cli(p, &["ttl", "nope"]), "-2");
    assert_eq!(cli(p, &["set", "b", "again"]), "OK");
    assert_eq!(cli(p, &["ttl", "b"]), "-1", "SET clears the expiry");
    assert_eq!(cli(p, &["set", "t", "v", "px", "200"]), "OK");
    let ttl: i64 = cli(p, &["pttl", "t"]).parse().unwrap();
    assert!(ttl > 0 && ttl <= 200, "pttl {ttl}");
    let deadline = Instant::now() + STEP;
    while !cli(p, &["get", "t"]).is_empty() {
        assert!(Instant::now() < deadline, "the key never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cli(p, &["exists", "t"]), "0");
    assert_eq!(cli(p, &["foo", "bar"]), "ERR unknown command 'foo', with args beginning with: 'bar'");
    assert_eq!(cli(p, &["get"]), "ERR wrong number of arguments for 'get' command");
    assert_eq!(cli(p, &["command"]), "");
}

#[test]
fn connections_share_the_store_and_incr_is_atomic() {
    let pier = Pier::serve("resp", &[]);
    let addr = pier.addr();
    assert_eq!(cli(addr.port(), &["set", "shared", "from-one"]), "OK");
    assert_eq!(cli(addr.port(), &["get", "shared"]), "from-one", "another connection reads it");
    let workers: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let request = b"*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n".repeat(200);
                s.write_all(&request).unwrap();
                let mut got = Vec::new();
                while got.iter().filter(|&&b| b == b'\n').count() < 200 {
                    got.extend(read_n(&mut s, 1));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(cli(addr.port(), &["get", "counter"]), "1600");
}

#[test]
fn garbage_gets_an_error_and_the_server_lives() {
    let pier = Pier::serve("resp", &[]);
    let mut s = connect(pier.addr());
    s.write_all(b"*1\r\n$nope\r\n").unwrap();
    let answer = String::from_utf8(read_to_eof(&mut s)).unwrap();
    assert!(answer.starts_with("-ERR Protocol error"), "{answer}");
    let mut s = connect(pier.addr());
    s.write_all(b"\x00\x01\x02 binary junk\r\nPING\r\n").unwrap();
    let mut answer = Vec::new();
    while answer.iter().filter(|&&b| b == b'\n').count() < 2 {
        answer.extend(read_n(&mut s, 1));
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("-ERR unknown command"), "{answer}");
    assert!(answer.ends_with("\r\n+PONG\r\n"), "the connection goes on after an error: {answer}");
    assert_eq!(cli(pier.addr().port(), &["ping"]), "PONG");
}

#[test]
fn redis_benchmark_runs_without_errors() {
    let pier = Pier::serve("resp", &["--nodelay"]);
    let port = pier.addr().port().to_string();
    for extra in [&[][..], &["-P", "16"], &["-d", "4096"]] {
        let out = Command::new("timeout")
            .args(["60", "redis-benchmark", "-p", &port, "-t", "ping,set,get", "-n", "20000", "-q"])
            .args(extra)
            .output()
            .expect("redis-benchmark (`make setup` installs redis-tools)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "redis-benchmark {extra:?} failed: {text}");
        for test in ["PING_INLINE", "PING_MBULK", "SET", "GET"] {
            let line = text
                .split('\r')
                .flat_map(|l| l.lines())
                .find(|l| l.trim_start().starts_with(&format!("{test}: ")) && l.contains("requests per second"));
            assert!(line.is_some(), "no {test} result with {extra:?}:\n{text}");
        }
        assert!(!text.to_lowercase().contains("error"), "{text}");
    }
    assert!(!pier.stderr().contains("handler failed"), "{}", pier.stderr());
}
