//! The `server-handler` world: one instance per listener for every
//! connection (guest/server-echo, guest/server-chat). Their
//! `connection-handler` twins' scenarios, one instance shown to serve them
//! all, and what a fault costs: the listener's connections, after which a
//! fresh instance serves the next ones.

use crate::common::*;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const INSTANCES: &str = "pier_instantiate_seconds_count{listener=\"main\"}";

fn metrics(extra: &[&str], guest_name: &str) -> Pier {
    let mut args = vec!["--metrics", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    Pier::serve(guest_name, &args)
}

#[test]
fn server_echo_one_byte_and_a_line_come_back() {
    crate::echo::one_byte_and_a_line(Pier::serve("server_echo", &[]).addr());
}

#[test]
fn server_echo_four_mebibytes_written_and_read_concurrently() {
    crate::echo::four_mebibytes(Pier::serve("server_echo", &[]).addr());
}

#[test]
fn server_echo_hundred_concurrent_connections_share_one_instance() {
    let pier = metrics(&[], "server_echo");
    crate::echo::hundred_connections(pier.addr());
    assert_eq!(metric(&pier, "pier_connections_accepted_total{listener=\"main\"}"), 101);
    assert_eq!(metric(&pier, INSTANCES), 1, "one instance served all 101 connections");
}

#[test]
fn server_chat_a_line_reaches_the_others_in_order_and_leaving_is_announced() {
    crate::chat::a_line_reaches_exactly_the_others(Pier::serve("server_chat", &[]).addr());
}

#[test]
fn server_chat_a_slow_reader_does_not_stall_the_others() {
    crate::chat::a_slow_reader_does_not_stall_the_others("server_chat");
}

#[test]
fn server_chat_talks_with_socat() {
    crate::chat::talks_with_socat("server_chat");
}

#[test]
fn server_chat_says_goodbye_on_sigterm_then_exits_zero() {
    crate::chat::says_goodbye_on_sigterm_then_exits_zero("server_chat");
}

/// A connection with no byte either way is closed at the idle timeout; one
/// that only receives, from another connection's calls, is not idle.
#[test]
fn the_idle_timeout_closes_quiet_connections_only() {
    let echo = Pier::serve("server_echo", &["--idle-timeout", "1s"]);
    let mut quiet = echoing(echo.addr(), 1);
    let started = Instant::now();
    assert_eq!(read_to_eof(&mut quiet[0]), b"");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed after {:?}", started.elapsed());
    echo.wait_for_log("reason=idle-timeout");

    let chat = Pier::serve("server_chat", &["--idle-timeout", "1s"]);
    let mut talker = Chatter::join(chat.addr());
    let mut hearer = Chatter::join(chat.addr());
    assert_eq!(talker.line(), format!("* {} joined\n", hearer.nick));
    for i in 0..8 {
        talker.say(&format!("line {i}"));
        assert_eq!(hearer.line(), format!("<{}> line {i}\n", talker.nick));
        std::thread::sleep(Duration::from_millis(250));
    }
    hearer.say("still here after 2 s");
    assert_eq!(talker.line(), format!("<{}> still here after 2 s\n", hearer.nick));
}

/// Connects `n` echo clients and checks each answers.
fn echoing(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = connect(addr);
            let line = format!("client {i}\n");
            s.write_all(line.as_bytes()).unwrap();
            assert_eq!(read_n(&mut s, line.len()), line.as_bytes());
            s
        })
        .collect()
}

/// Every client of `clients` sees its connection closed.
fn all_closed(clients: &mut [TcpStream]) {
    for (i, s) in clients.iter_mut().enumerate() {
        let mut rest = Vec::new();
        let end = s.read_to_end(&mut rest);
        assert!(end.is_ok() || rest.is_empty(), "client {i}: {end:?}");
    }
}

#[test]
fn a_trap_ends_the_listeners_connections_and_a_fresh_instance_serves_the_next() {
    let pier = metrics(&[], "server_faults");
    let mut clients = echoing(pier.addr(), 3);
    clients[0].write_all(b"trap\n").unwrap();
    all_closed(&mut clients);
    let log = pier.wait_for_log("server-handler instance failed");
    assert!(log.contains("connections=3"), "{log}");
    assert_eq!(metric(&pier, "pier_connection_ends_total{listener=\"main\",reason=\"trapped\"}"), 3);
    let mut after = echoing(pier.addr(), 2);
    after[1].shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut after[1]), b"");
    assert_eq!(metric(&pier, INSTANCES), 2, "the fresh instance is the second");
    let log = pier.stderr();
    assert_eq!(log.matches("server-handler instance failed").count(), 1, "{log}");
    assert!(!log.contains("handler failed; connection closed"), "one warning, not one per connection:\n{log}");
}

/// A fault costs the listener, not its neighbours: another tenant's
/// server-handler and connection-handler clients go on, byte for byte.
#[test]
fn a_trap_costs_its_listener_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        dir.path(),
        "[[listener]]\nname = \"faulty\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:server_faults}\"\n\
         [[listener]]\nname = \"room\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:server_echo}\"\n\
         [[listener]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:echo}\"\n",
    );
    let pier = Pier::start(&["--config", &cfg], 3);
    let mut faulty = echoing(pier.addrs[0].1, 3);
    let mut room = echoing(pier.addrs[1].1, 3);
    let mut echo = echoing(pier.addrs[2].1, 3);
    faulty[0].write_all(b"trap\n").unwrap();
    all_closed(&mut faulty);
    for (i, s) in room.iter_mut().chain(echo.iter_mut()).enumerate() {
        let line = format!("still here {i}\n");
        s.write_all(line.as_bytes()).unwrap();
        assert_eq!(read_n(s, line.len()), line.as_bytes());
    }
}

#[test]
fn a_call_past_cpu_limit_ends_the_listeners_connections_and_service_goes_on() {
    one_fault_ends_every_connection(&["--cpu-limit", "200ms"], b"loop\n", "cpu-limit");
}

#[test]
fn growing_past_memory_limit_ends_the_listeners_connections_and_service_goes_on() {
    one_fault_ends_every_connection(&["--memory-limit", "8MiB"], b"grow\n", "memory-limit");
}

/// `command`, sent by one of two connections to `server_faults` served
/// with `args`, ends both with `reason`; the next connection is served.
fn one_fault_ends_every_connection(args: &[&str], command: &[u8], reason: &str) {
    let pier = metrics(args, "server_faults");
    let mut clients = echoing(pier.addr(), 2);
    clients[1].write_all(command).unwrap();
    all_closed(&mut clients);
    pier.wait_for_log("server-handler instance failed");
    let ends = format!("pier_connection_ends_total{{listener=\"main\",reason=\"{reason}\"}}");
    assert_eq!(metric(&pier, &ends), 2);
    echoing(pier.addr(), 1);
}

/// A peer faster than the instance is slowed by TCP: while the instance is
/// busy, each connection has at most one read waiting for it, and the rest
/// stays in the kernel's buffers.
#[test]
fn peers_faster_than_the_instance_are_held_back_by_tcp() {
    let pier = metrics(&["--cpu-limit", "4s"], "server_faults");
    let before = pier.rss_kib();
    let mut busy = echoing(pier.addr(), 1);
    busy[0].write_all(b"loop\n").unwrap();
    let floods: Vec<_> = (0..16u8)
        .map(|i| {
            let addr = pier.addr();
            std::thread::spawn(move || {
                let mut s = connect(addr);
                write_until_stalled(&mut s, i, 64 << 20)
            })
        })
        .collect();
    let pushed: usize = floods.into_iter().map(|f| f.join().unwrap()).sum();
    let grown = pier.rss_kib().saturating_sub(before);
    assert!(pushed < 16 * (64 << 20), "every flooding client was stalled by TCP");
    assert!(grown < 16 << 10, "pier grew {grown} KiB while peers pushed {pushed} bytes at a busy instance");
    all_closed(&mut busy);
    echoing(pier.addr(), 1);
}

/// Bytes read and waiting for a busy instance never pass `queue-max-bytes`:
/// the connections that find it full stop reading.
#[test]
fn bytes_waiting_for_the_instance_stay_within_queue_max_bytes() {
    const QUEUED: &str = "pier_queued_bytes{listener=\"main\"}";
    let pier = metrics(&["--cpu-limit", "3s", "--queue-max-bytes", "32KiB"], "server_faults");
    // Connected (and echoed) first: a connection's new-csa would otherwise
    // wait behind the busy call, and nothing of it be read.
    let mut senders = echoing(pier.addr(), 8);
    let mut busy = echoing(pier.addr(), 1);
    busy[0].write_all(b"loop\n").unwrap();
    // Busy once a byte no longer comes back at once.
    let (probe, rest) = senders.split_first_mut().unwrap();
    probe.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        probe.write_all(b"?").unwrap();
        if probe.read(&mut [0]).is_err() {
            break;
        }
        assert!(Instant::now() < deadline, "the instance never got busy");
    }
    for s in rest {
        s.write_all(&[b'x'; 20 << 10]).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut most = 0;
    while Instant::now() < deadline {
        most = most.max(metric(&pier, QUEUED));
        assert!(most <= 32 << 10, "{most} bytes waiting, past queue-max-bytes");
    }
    assert!(most > 4 << 10, "senders' bytes were queued behind the busy call ({most})");
    all_closed(&mut busy);
    all_closed(&mut senders);
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&pier, QUEUED) > 0 {
        assert!(Instant::now() < deadline, "the queue never drained");
        std::thread::sleep(Duration::from_millis(20));
    }
    echoing(pier.addr(), 1);
}

#[test]
fn an_instance_that_never_drops_its_handles_is_replaced_and_service_goes_on() {
    // Two connections at a time: the instance may hold four handles.
    let pier = metrics(&["--max-connections", "2"], "server_faults");
    let mut first = echoing(pier.addr(), 1);
    first[0].write_all(b"hoard\n").unwrap();
    assert_eq!(read_n(&mut first[0], 6), b"hoard\n");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pier.stderr().contains("conn handles") {
        assert!(Instant::now() < deadline, "the hoarding instance was never replaced:\n{}", pier.stderr());
        let mut s = echoing(pier.addr(), 1);
        s[0].shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut s[0]), b"");
    }
    let log = pier.stderr();
    assert!(log.contains("holds 4 conn handles"), "{log}");
    echoing(pier.addr(), 2);
}

/// A listener of 100,000 connections takes two pool slots, not 100,000: no
/// warning that the kernel's memory mappings would run out.
#[test]
fn a_server_handler_takes_two_pool_slots_whatever_its_max_connections() {
    let pier = Pier::serve("server_echo", &["--max-connections", "100000"]);
    echoing(pier.addr(), 3);
    let log = pier.stderr();
    assert!(!log.contains("vm.max_map_count"), "{log}");
}

#[test]
fn check_names_the_server_handler_world() {
    let plugin = guest("server_echo");
    let out = run_pier(&["check", plugin.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("world: pier:server/server-handler@0.1.0"), "{text}");
    assert!(text.contains("export instance pier:server/server-inbox@0.1.0"), "{text}");
}

#[test]
fn a_server_handler_over_tls_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_certs(dir.path());
    let plugin = guest("server_echo");
    let out = run_pier(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--plugin",
        plugin.to_str().unwrap(),
        "--tls-cert",
        certs.cert.to_str().unwrap(),
        "--tls-key",
        certs.key.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a server-handler, which pier does not serve over TLS yet"), "{err}");
}
