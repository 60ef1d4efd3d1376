//! Budgets on what a tenant can fill outside its sandbox: the key-value
//! store, the guest log, CPU over a connection's life. Each test fills one
//! and checks that it holds and the server goes on.

use crate::common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;

/// The issue's flood: redis-benchmark SETs of 1 MB values under random keys.
/// Past `kv-max-bytes` every SET answers -OOM, reads and DELs go on, and
/// the server's memory stays within the budget.
#[test]
fn a_key_value_flood_is_refused_at_the_budget() {
    let pier = Pier::serve("resp", &["--memory-limit", "32MiB", "--kv-max-bytes", "8MiB"]);
    let port = pier.addr().port();
    let before = pier.rss_kib();
    let out = Command::new("timeout")
        .args(["60", "redis-benchmark", "-p", &port.to_string(), "-t", "set", "-d", "1000000"])
        .args(["-r", "100000000", "-n", "300", "-c", "4", "-q"])
        .output()
        .expect("redis-benchmark");
    assert!(out.status.code().is_some(), "redis-benchmark ran");
    let grown = pier.rss_kib().saturating_sub(before);
    // 300 MB were offered; 8 MiB of them may stay, plus what the four
    // connections' instances and buffers hold while they run.
    assert!(grown < 64 << 10, "pier grew by {grown} KiB for an 8 MiB budget");
    // A value larger than the room left (under 1 MB of the 8 MiB).
    let mut s = connect(pier.addr());
    let value = vec![b'v'; 2 << 20];
    s.write_all(format!("*3\r\n$3\r\nSET\r\n$8\r\none-more\r\n${}\r\n", value.len()).as_bytes()).unwrap();
    s.write_all(&value).unwrap();
    s.write_all(b"\r\n").unwrap();
    let oom = b"-OOM command not allowed when used memory > 'maxmemory'.\r\n";
    assert_eq!(read_n(&mut s, oom.len()), oom);
    let info = redis_cli(port, &["info", "memory"]);
    let used: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no used_memory in {info}"));
    assert!(used > 0 && used <= 8 << 20, "used_memory {used}");
    assert!(info.contains("maxmemory:8388608"), "{info}");
    // Reads and deletes still work, and a delete makes room again.
    assert_eq!(redis_cli(port, &["get", "one-more"]), "");
    let keys = redis_cli(port, &["info", "keyspace"]);
    assert!(keys.contains("db0:keys="), "{keys}");
    assert_eq!(redis_cli(port, &["ping"]), "PONG");
}

/// A handler that logs as fast as it can writes `log-rate` lines a second;
/// the rest are dropped, and counted in one line when its connection ends.
#[test]
fn a_log_flood_is_cut_to_the_rate_and_counted() {
    // A generous cpu-limit: 100,000 host calls may take seconds on a loaded machine.
    let pier = Pier::serve("misbehave", &["--log-rate", "20", "--cpu-limit", "20s"]);
    let mut s = connect(pier.addr());
    let start = std::time::Instant::now();
    s.write_all(b"log 100000\n").unwrap();
    assert_eq!(read_to_eof(&mut s), b"ok: logged 100000\n");
    // A one-second burst, then 20 a second for as long as the call ran (on
    // a loaded machine it may run for seconds).
    let most = 20 * (2 + start.elapsed().as_secs() as usize);
    let log = pier.wait_for_log("guest log lines dropped past log-rate");
    let written = log.matches("log line ").count();
    assert!((1..=most).contains(&written), "{written} lines written at a rate of 20/s, at most {most}");
    let dropped: u64 = log
        .lines()
        .find(|l| l.contains("past log-rate"))
        .and_then(|l| l.split("dropped=").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("a dropped= count");
    assert_eq!(dropped + written as u64, 100_000, "every line written or counted");
}

/// A connection whose calls each stay under `cpu-limit` is still ended once
/// together they pass `cpu-budget`; its neighbour goes on.
#[test]
fn calls_under_the_limit_still_spend_the_budget() {
    let pier = Pier::serve("misbehave", &["--cpu-limit", "1s", "--cpu-budget", "300ms"]);
    let bystander = connect(pier.addr());
    let mut s = connect(pier.addr());
    let mut answers = BufReader::new(s.try_clone().unwrap());
    let mut burned = 0;
    loop {
        if s.write_all(b"burn 50\n").is_err() {
            break;
        }
        let mut line = String::new();
        match answers.read_line(&mut line) {
            Ok(n) if n > 0 => burned += 1,
            _ => break,
        }
        assert!(burned < 100, "the budget never ran out");
    }
    assert!((4..=7).contains(&burned), "{burned} calls of 50 ms within a 300 ms budget");
    pier.wait_for_log("reason=cpu-budget");
    drop(bystander);
    let mut again = connect(pier.addr());
    again.write_all(b"config none\n").unwrap();
    let mut answer = String::new();
    again.read_to_string(&mut answer).unwrap();
    assert_eq!(answer, "denied: no config key `none`\n");
}

/// `pier check --config` prints each listener's worst-case host memory,
/// the sum, and warns when the sum is more than the machine has.
#[test]
fn check_prints_the_worst_case_and_warns_past_the_machine() {
    let dir = tempfile::tempdir().unwrap();
    let small = "[[listener]]\nname = \"small\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:echo}\"\n\
                 max-connections = 10\nmemory-limit = \"2MiB\"\nkv-max-bytes = \"1MiB\"\n";
    let out = run_pier(&["check", "--config", &config_file(dir.path(), small)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut l = pier::ListenerConfig::new("small", pier::ListenAddr::parse_addr("127.0.0.1:0").unwrap(), "x");
    l.max_connections = 10;
    l.memory_limit = 2 << 20;
    l.kv_max_bytes = 1 << 20;
    let want = format!(
        "{:.1} MiB",
        pier::footprint::worst_case(&l, pier::footprint::Shape::InstancePerConnection) as f64 / f64::from(1u32 << 20)
    );
    let row = stdout.lines().find(|r| r.starts_with("small")).expect("the listener's row");
    assert!(row.contains(&want), "worst case {want} in:\n{stdout}");
    assert!(stdout.contains(&format!("worst-case host memory, all listeners: {want}")), "{stdout}");
    assert!(!stdout.contains("warning:"), "{stdout}");
    // A server-handler's one instance counts its memory-limit once.
    let room = "[[listener]]\nname = \"room\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:server_chat}\"\n\
                max-connections = 10\nmemory-limit = \"2MiB\"\nkv-max-bytes = \"1MiB\"\n";
    let out = run_pier(&["check", "--config", &config_file(dir.path(), room)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let one = pier::footprint::worst_case(&l, pier::footprint::Shape::InstancePerListener);
    let want = format!("{:.1} MiB", one as f64 / f64::from(1u32 << 20));
    let row = stdout.lines().find(|r| r.starts_with("room")).expect("the listener's row");
    assert!(row.contains(" server ") && row.contains(&want), "server, {want} in:\n{stdout}");
    // Defaults: 10,000 connections of 64 MiB each, more than any test machine.
    let big = "[[listener]]\nname = \"big\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:echo}\"\n";
    let out = run_pier(&["check", "--config", &config_file(dir.path(), big)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "a warning is not an error: {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("warning: that is more than this machine's"), "{stdout}");
}
