//! The RESP guest with redis-cli, redis-benchmark and raw sockets, on the
//! listener's shared key-value store.

use crate::common::*;
use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs the command lines of `script` through one redis-cli connection
/// (redis-cli reads commands from stdin); its output, trimmed.
fn cli_script(port: u16, script: &str) -> String {
    let mut child = Command::new("timeout")
        .args(["20", "redis-cli", "-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli (`make setup` installs redis-tools)");
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "redis-cli <<{script:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// Sends `request` and reads exactly as many bytes as `want` has.
fn ask(s: &mut std::net::TcpStream, request: &[u8], want: &[u8]) {
    s.write_all(request).unwrap();
    let got = read_n(s, want.len());
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
}

/// A RESP SET request for a value of any bytes.
fn set_request(key: &str, value: &[u8]) -> Vec<u8> {
    let mut r = format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n", key.len(), value.len()).into_bytes();
    r.extend_from_slice(value);
    r.extend_from_slice(b"\r\n");
    r
}

/// A bulk-string reply.
fn bulk(value: &[u8]) -> Vec<u8> {
    let mut r = format!("${}\r\n", value.len()).into_bytes();
    r.extend_from_slice(value);
    r.extend_from_slice(b"\r\n");
    r
}

#[test]
fn redis_cli_round_trips_every_command() {
    let pier = Pier::serve("resp", &[]);
    let p = pier.addr().port();
    assert_eq!(redis_cli(p, &["ping"]), "PONG");
    assert_eq!(redis_cli(p, &["ping", "hello"]), "hello");
    assert_eq!(redis_cli(p, &["echo", "pier"]), "pier");
    assert_eq!(redis_cli(p, &["set", "k", "v"]), "OK");
    assert_eq!(redis_cli(p, &["get", "k"]), "v");
    assert_eq!(redis_cli(p, &["get", "missing"]), "");
    assert_eq!(redis_cli(p, &["set", "k", "w", "nx"]), "");
    assert_eq!(redis_cli(p, &["set", "k", "w", "xx"]), "OK");
    assert_eq!(redis_cli(p, &["set", "k", "x", "get"]), "w");
    assert_eq!(redis_cli(p, &["incr", "n"]), "1");
    assert_eq!(redis_cli(p, &["incrby", "n", "10"]), "11");
    assert_eq!(redis_cli(p, &["decr", "n"]), "10");
    assert_eq!(redis_cli(p, &["decrby", "n", "25"]), "-15");
    assert_eq!(redis_cli(p, &["incr", "k"]), "ERR value is not an integer or out of range");
    assert_eq!(redis_cli(p, &["mset", "a", "1", "b", "2"]), "OK");
    assert_eq!(redis_cli(p, &["mget", "a", "b", "nope"]), "1\n2", "a nil prints as an empty line");
    assert_eq!(redis_cli(p, &["append", "a", "xyz"]), "4");
    assert_eq!(redis_cli(p, &["get", "a"]), "1xyz");
    assert_eq!(redis_cli(p, &["strlen", "a"]), "4");
    assert_eq!(redis_cli(p, &["exists", "a", "b", "nope"]), "2");
    assert_eq!(redis_cli(p, &["del", "a", "nope"]), "1");
    assert_eq!(redis_cli(p, &["exists", "a"]), "0");
    assert_eq!(redis_cli(p, &["ttl", "b"]), "-1");
    assert_eq!(redis_cli(p, &["expire", "b", "100"]), "1");
    assert_eq!(redis_cli(p, &["ttl", "b"]), "100");
    let pttl: i64 = redis_cli(p, &["pttl", "b"]).parse().unwrap();
    assert!(pttl > 90_000 && pttl <= 100_000, "pttl {pttl}");
    assert_eq!(redis_cli(p, &["persist", "b"]), "1");
    assert_eq!(redis_cli(p, &["ttl", "b"]), "-1");
    assert_eq!(redis_cli(p, &["pexpire", "b", "100000"]), "1");
    assert_eq!(redis_cli(p, &["ttl", "b"]), "100");
    assert_eq!(redis_cli(p, &["ttl", "nope"]), "-2");
    assert_eq!(redis_cli(p, &["set", "b", "again"]), "OK");
    assert_eq!(redis_cli(p, &["ttl", "b"]), "-1", "SET clears the expiry");
    assert_eq!(redis_cli(p, &["set", "e", "v", "ex", "30"]), "OK");
    assert_eq!(redis_cli(p, &["ttl", "e"]), "30");
    assert_eq!(redis_cli(p, &["set", "e", "v", "ex", "0"]), "ERR invalid expire time in 'set' command");

    // A key set with PX 200 is gone once its deadline passes.
    assert_eq!(redis_cli(p, &["set", "t", "v", "px", "200"]), "OK");
    let set_at = Instant::now();
    let pttl: i64 = redis_cli(p, &["pttl", "t"]).parse().unwrap();
    assert!(pttl > 0 && pttl <= 200, "pttl {pttl}");
    let deadline = Instant::now() + STEP;
    while !redis_cli(p, &["get", "t"]).is_empty() {
        assert!(Instant::now() < deadline, "the key never expired");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(set_at.elapsed() >= Duration::from_millis(150), "expired early: {:?}", set_at.elapsed());
    assert_eq!(redis_cli(p, &["exists", "t"]), "0");
    assert_eq!(redis_cli(p, &["ttl", "t"]), "-2");

    // What clients send on connecting, and the rest.
    assert_eq!(redis_cli(p, &["command"]), "");
    assert_eq!(redis_cli(p, &["command", "docs"]), "");
    assert_eq!(redis_cli(p, &["config", "get", "save"]), "save");
    assert_eq!(redis_cli(p, &["config", "get", "appendonly"]), "appendonly\nno");
    assert_eq!(redis_cli(p, &["select", "0"]), "OK");
    assert_eq!(redis_cli(p, &["select", "1"]), "ERR DB index is out of range");
    assert_eq!(cli_script(p, "client setname worker\nclient getname\nclient setinfo lib-name x\n"), "OK\nworker\nOK");
    assert_eq!(redis_cli(p, &["quit"]), "OK");
    assert_eq!(redis_cli(p, &["foo", "bar"]), "ERR unknown command 'foo', with args beginning with: 'bar'");
    assert_eq!(redis_cli(p, &["get"]), "ERR wrong number of arguments for 'get' command");
    assert_eq!(redis_cli(p, &["mset", "a"]), "ERR wrong number of arguments for 'mset' command");
}

#[test]
fn connections_share_the_store_and_incr_is_atomic() {
    let pier = Pier::serve("resp", &[]);
    let addr = pier.addr();
    assert_eq!(redis_cli(addr.port(), &["set", "shared", "from-one"]), "OK");
    assert_eq!(redis_cli(addr.port(), &["get", "shared"]), "from-one", "another connection reads it");
    // Two connections open at once see each other's writes at once.
    let (mut a, mut b) = (connect(addr), connect(addr));
    ask(&mut a, b"SET live 1\r\n", b"+OK\r\n");
    ask(&mut b, b"GET live\r\n", b"$1\r\n1\r\n");
    ask(&mut b, b"APPEND live 2\r\n", b":2\r\n");
    ask(&mut a, b"GET live\r\n", b"$2\r\n12\r\n");

    // 8 connections x 200 pipelined INCRs, and 4 x 100 DECRs, all at once.
    let worker = move |command: &'static str, times: usize| {
        std::thread::spawn(move || {
            let mut s = connect(addr);
            let request = format!("*2\r\n${}\r\n{command}\r\n$7\r\ncounter\r\n", command.len()).repeat(times);
            s.write_all(request.as_bytes()).unwrap();
            let mut got = Vec::new();
            while got.iter().filter(|&&b| b == b'\n').count() < times {
                got.extend(read_n(&mut s, 1));
            }
            let text = String::from_utf8(got).unwrap();
            assert!(text.lines().all(|l| l.starts_with(':')), "every reply is an integer: {text}");
        })
    };
    let workers: Vec<_> = (0..8).map(|_| worker("INCR", 200)).chain((0..4).map(|_| worker("DECR", 100))).collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(redis_cli(addr.port(), &["get", "counter"]), "1200");
    let workers: Vec<_> = (0..4).map(|_| worker("INCR", 100)).collect();
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(redis_cli(addr.port(), &["get", "counter"]), "1600");
}

#[test]
fn pipelined_split_and_inline_requests() {
    let pier = Pier::serve("resp", &["--nodelay"]);
    let mut s = connect(pier.addr());
    s.set_nodelay(true).unwrap();
    // Three commands in one write, answered in order.
    ask(
        &mut s,
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n",
        b"+OK\r\n$2\r\nv1\r\n+PONG\r\n",
    );
    // One command a byte at a time.
    for byte in b"*2\r\n$4\r\nECHO\r\n$5\r\nsplit\r\n" {
        s.write_all(&[*byte]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(read_n(&mut s, 11), b"$5\r\nsplit\r\n");
    // Inline commands as typed into telnet, quotes and escapes included.
    ask(&mut s, b"set greeting \"hello world\\n\"\r\nget greeting\r\n", b"+OK\r\n$12\r\nhello world\n\r\n");
    ask(&mut s, b"\r\n\r\nexists greeting 'k'\n", b":2\r\n");
    // Binary-safe keys and values.
    let value = pattern(1, 1000);
    s.write_all(&set_request("\u{1}\r\n", &value)).unwrap();
    ask(&mut s, b"*2\r\n$3\r\nGET\r\n$3\r\n\x01\r\n\r\n", &[&b"+OK\r\n"[..], &bulk(&value)].concat());
    // QUIT: the replies before it, +OK, then the server closes.
    s.write_all(b"PING\r\nQUIT\r\nPING\r\n").unwrap();
    assert_eq!(read_to_eof(&mut s), b"+PONG\r\n+OK\r\n");
}

#[test]
fn garbage_gets_an_error_and_the_server_lives() {
    let pier = Pier::serve("resp", &[]);
    let addr = pier.addr();
    // Protocol errors: Redis's message, then the server closes.
    for (garbage, error) in [
        (&b"*1\r\n$nope\r\n"[..], "invalid bulk length"),
        (b"*x\r\n", "invalid multibulk length"),
        (b"*1\r\n+PING\r\n", "expected '$', got '+'"),
        (b"*1\r\n$3\r\nPINGPONG\r\n", "bulk string not terminated by CRLF"),
        (b"*1\r\n$99999999999\r\n", "invalid bulk length"),
        (b"get \"unbalanced\r\n", "unbalanced quotes in request"),
    ] {
        let mut s = connect(addr);
        s.write_all(garbage).unwrap();
        let answer = String::from_utf8(read_to_eof(&mut s)).unwrap();
        assert_eq!(answer, format!("-ERR Protocol error: {error}\r\n"), "{garbage:?}");
    }
    // A length line that never ends: refused after 64 KiB, not buffered forever.
    let mut s = connect(addr);
    let mut endless = b"*1\r\n$".to_vec();
    endless.resize(100_000, b'7');
    s.write_all(&endless).unwrap();
    assert_eq!(read_to_eof(&mut s), b"-ERR Protocol error: too big bulk count string\r\n");
    // A huge announced array costs nothing until it arrives.
    let mut s = connect(addr);
    s.write_all(b"*1000000\r\n$4\r\nPING\r\n").unwrap();
    // Binary junk: an unknown command, and the connection goes on. Control
    // bytes in the name stay inside the one error line.
    let mut s2 = connect(addr);
    s2.write_all(b"\x00\x01\x02 binary junk\r\n*1\r\n$6\r\nA\r\nB\nC\r\nPING\r\n").unwrap();
    let mut answer = Vec::new();
    while answer.iter().filter(|&&b| b == b'\n').count() < 3 {
        answer.extend(read_n(&mut s2, 1));
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let lines: Vec<&str> = answer.split("\r\n").collect();
    assert_eq!(lines[0], "-ERR unknown command '\u{1}\u{2}', with args beginning with: 'binary' 'junk' ", "{answer}");
    assert_eq!(lines[1], "-ERR unknown command 'A  B C', with args beginning with: ", "{answer}");
    assert_eq!(lines[2], "+PONG", "{answer}");
    drop(s);
    assert_eq!(redis_cli(addr.port(), &["ping"]), "PONG");
    assert!(!pier.stderr().contains("handler failed"), "{}", pier.stderr());
}

/// The demo config's promise: a 16 MiB value in a 32 MiB instance. The
/// handler neither copies the value nor grows its buffer by doubling.
#[test]
fn a_16_mib_value_fits_a_32_mib_instance() {
    let pier = Pier::serve("resp", &["--memory-limit", "32MiB"]);
    let mut s = connect(pier.addr());
    let value = pattern(7, 16 << 20);
    for round in 0..2 {
        let writer = {
            let mut w = s.try_clone().unwrap();
            let request = set_request(&format!("big{round}"), &value);
            std::thread::spawn(move || w.write_all(&request).unwrap())
        };
        assert_eq!(read_n(&mut s, 5), b"+OK\r\n", "round {round}");
        writer.join().unwrap();
        s.write_all(format!("GET big{round}\r\n").as_bytes()).unwrap();
        let want = bulk(&value);
        assert!(read_n(&mut s, want.len()) == want, "the value comes back whole");
    }
    assert_eq!(redis_cli(pier.addr().port(), &["strlen", "big1"]), (16 << 20).to_string());
    // Larger than the limit: refused before it is read.
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16777217\r\n").unwrap();
    assert_eq!(read_to_eof(&mut s), b"-ERR Protocol error: invalid bulk length\r\n");
    assert!(!pier.stderr().contains("handler failed"), "{}", pier.stderr());
}

/// A client that pipelines many GETs of a large value and reads slowly gets
/// every answer from an instance that could not hold them all: the handler
/// stops running commands while its output is held back. The peer's FIN
/// meanwhile still gets every answer before the close.
#[test]
fn pipelined_output_is_bounded_by_backpressure() {
    let pier = Pier::serve("resp", &["--memory-limit", "8MiB"]);
    let addr: SocketAddr = pier.addr();
    let value = pattern(3, 1 << 20);
    let mut s = connect(addr);
    s.write_all(&set_request("big", &value)).unwrap();
    assert_eq!(read_n(&mut s, 5), b"+OK\r\n");
    let gets = 100;
    s.write_all(&b"GET big\r\n".repeat(gets)).unwrap();
    s.write_all(b"PING\r\n").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let got = read_to_eof(&mut s);
    let one = bulk(&value);
    assert_eq!(got.len(), gets * one.len() + 7, "every answer, then the close");
    assert!(got.chunks(one.len()).take(gets).all(|c| c == one.as_slice()));
    assert!(got.ends_with(b"+PONG\r\n"));
    assert!(!pier.stderr().contains("handler failed"), "{}", pier.stderr());
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
        let errors = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "redis-benchmark {extra:?} failed: {text}\n{errors}");
        // With -q each test prints progress lines ending in `\r`, then
        // `NAME: N requests per second, p50=...`.
        for test in ["PING_INLINE", "PING_MBULK", "SET", "GET"] {
            let line = text
                .split('\r')
                .flat_map(|l| l.lines())
                .find(|l| l.trim_start().starts_with(&format!("{test}: ")) && l.contains("requests per second"));
            let Some(line) = line else { panic!("no {test} result with {extra:?}:\n{text}\n{errors}") };
            eprintln!("redis-benchmark {extra:?} {}", line.trim());
        }
        for output in [&text, &errors] {
            assert!(!output.to_lowercase().contains("error"), "{text}\n{errors}");
            assert!(!output.contains("WARNING"), "{text}\n{errors}");
        }
    }
    assert!(!pier.stderr().contains("handler failed"), "{}", pier.stderr());
}

/// Redis's `timeout`, here `config = { timeout = "1" }`: a client idle for a
/// second is closed, without a reply; one that sends a PING every 300 ms,
/// for more than two seconds, is not. CONFIG GET answers the setting.
#[test]
fn an_idle_client_is_closed_after_timeout_and_a_busy_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        dir.path(),
        "[[listener]]\nname = \"resp\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:resp}\"\n\
         config = { timeout = \"1\" }\n",
    );
    let pier = Pier::start(&["--config", &cfg], 1);
    let addr = pier.addr();
    let idle = std::thread::spawn(move || {
        let mut s = connect(addr);
        let asked = Instant::now();
        ask(&mut s, b"PING\r\n", b"+PONG\r\n");
        assert_eq!(read_to_eof(&mut s), b"", "closed without a reply");
        asked.elapsed()
    });
    let mut s = connect(addr);
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(300));
        ask(&mut s, b"*1\r\n$4\r\nPING\r\n", b"+PONG\r\n");
    }
    let asked = Instant::now();
    ask(&mut s, b"CONFIG GET timeout\r\n", b"*2\r\n$7\r\ntimeout\r\n$1\r\n1\r\n");
    // Measured from before the last command, so never less than the timeout.
    let waited = idle.join().unwrap();
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(5), "closed after {waited:?}");
    assert_eq!(redis_cli(addr.port(), &["config", "get", "timeout"]), "timeout\n1");
    // And the busy one, left alone now, goes the same way.
    assert_eq!(read_to_eof(&mut s), b"");
    assert!(asked.elapsed() >= Duration::from_secs(1), "closed after {:?}", asked.elapsed());
}
