//! Timers: a handler asks to be called back later; pending timers cost no
//! CPU, are bounded per connection, and end with it.

use crate::common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Sends one misbehave command and reads its answer to EOF.
fn ask(pier: &Pier, command: &str) -> String {
    let mut s = connect(pier.addr());
    s.write_all(format!("{command}\n").as_bytes()).unwrap();
    String::from_utf8(read_to_eof(&mut s)).unwrap()
}

/// The number in `text` after `before`.
fn number_after(text: &str, before: &str) -> u64 {
    let rest = &text[text.find(before).unwrap_or_else(|| panic!("`{before}` in {text}")) + before.len()..];
    rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
}

#[test]
fn a_timer_fires_once_and_never_early() {
    let pier = Pier::serve("misbehave", &[]);
    let answer = ask(&pier, "after 200");
    let ms = number_after(&answer, "fired after ");
    assert!(answer.starts_with("ok: fired after"), "{answer}");
    assert!(ms >= 200, "a timer never fires early: {answer}");
    assert!(ms < 200 + STEP.as_millis() as u64, "{answer}");
}

#[test]
fn a_cancelled_timer_does_not_fire() {
    let pier = Pier::serve("misbehave", &[]);
    let answer = ask(&pier, "cancel 100");
    assert!(answer.starts_with("ok: timer 2 fired after"), "the second fired, not the first: {answer}");
    assert!(answer.ends_with("timer 1 cancelled: true\n"), "{answer}");
    assert!(number_after(&answer, "fired after ") >= 200, "{answer}");
}

/// A handler that sets timers in a loop is refused at `max-timers`, with
/// the number, and its connection goes on.
#[test]
fn a_timer_flood_stops_at_the_budget() {
    let pier = Pier::serve("misbehave", &["--max-timers", "16"]);
    assert_eq!(ask(&pier, "timers"), "ok: set 16, then TimerError::TooMany(16)\n");
    let pier = Pier::serve("misbehave", &[]);
    assert_eq!(ask(&pier, "timers"), "ok: set 64, then TimerError::TooMany(64)\n", "the default budget");
}

/// Server CPU time of `pid` so far, in clock ticks (/proc/PID/stat).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split_whitespace().collect();
    // utime and stime: fields 14 and 15 of the whole line.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// 2,000 connections each with a timer pending for a minute: while they
/// wait, pier uses (next to) no CPU; closing them drops their timers.
#[test]
fn pending_timers_cost_no_cpu_while_idle() {
    let pier = Pier::serve("misbehave", &["--metrics", "127.0.0.1:0"]);
    let conns: Vec<TcpStream> = (0..2000)
        .map(|_| {
            let mut s = connect(pier.addr());
            s.write_all(b"after 60000\n").unwrap();
            s
        })
        .collect();
    // Every connection's command has been read (and at once run: set its timer).
    let received = || metric(&pier, "pier_received_bytes_total{listener=\"main\"}");
    let deadline = Instant::now() + STEP;
    while received() < 2000 * 12 {
        assert!(Instant::now() < deadline, "{} of 24000 bytes read", received());
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = cpu_ticks(pier.pid());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pier.pid()) - before;
    // 100 ticks are one core for the second; waiting timers take none of it.
    assert!(used <= 5, "pier used {used} ticks of CPU in one idle second with 2,000 timers pending");
    drop(conns);
    let deadline = Instant::now() + STEP;
    while pier.open_fds() > 100 {
        assert!(Instant::now() < deadline, "connections with pending timers did not close");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ask(&pier, "after 1").starts_with("ok: fired after"), "the server goes on");
    // Call counts are added to the listener's as each connection ends.
    let timer_calls = metric(&pier, "pier_call_seconds_count{listener=\"main\",call=\"timer\"}");
    assert_eq!(timer_calls, 1, "the closed connections' timers died with them");
}
