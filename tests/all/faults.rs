//! Faults under load: a shutdown while every connection is busy, a server
//! out of file descriptors, thousands of slow clients beside normal ones, and
//! a connect/close soak.

use crate::common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// SIGTERM with 200 busy echo connections: each client, writing and reading
/// in turn, sees an orderly close (FIN, not RST), what it got back is an
/// exact prefix of what it sent, and pier exits 0 within the grace period.
#[test]
fn sigterm_under_load_closes_every_connection_in_order() {
    const CLIENTS: u64 = 200;
    let mut pier = Pier::serve("echo", &["--grace", "5s"]);
    let addr = pier.addr();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let ready = ready_tx.clone();
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let sent = pattern(i, 1 << 20);
                let mut got = Vec::new();
                let mut buf = [0; 4096];
                for (n, chunk) in sent.chunks(1024).enumerate() {
                    if n == 4 {
                        ready.send(()).unwrap();
                    }
                    if s.write_all(chunk).is_err() {
                        break;
                    }
                    let want = got.len() + chunk.len();
                    while got.len() < want {
                        match s.read(&mut buf) {
                            Ok(0) => return (got, sent, true),
                            Ok(k) => got.extend_from_slice(&buf[..k]),
                            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, sent, false),
                            Err(e) => panic!("client {i}: {e}"),
                        }
                    }
                }
                panic!("client {i} sent everything before the shutdown");
            })
        })
        .collect();
    for _ in 0..CLIENTS {
        ready_rx.recv_timeout(STEP).expect("every client busy");
    }
    let start = Instant::now();
    pier.signal(libc::SIGTERM);
    for (i, c) in clients.into_iter().enumerate() {
        let (got, sent, orderly) = c.join().expect("client thread");
        assert!(orderly, "client {i}: reset instead of an orderly close");
        assert!(sent.starts_with(&got), "client {i}: what came back is not a prefix of what was sent");
    }
    let status = pier.wait(Duration::from_secs(5) + STEP).expect("pier exits");
    assert!(status.success(), "{status:?}");
    assert!(start.elapsed() < Duration::from_secs(5) + Duration::from_secs(3), "took {:?}", start.elapsed());
}

/// Out of file descriptors, pier keeps serving the connections it has,
/// logs the failing accept at most once a second, and accepts again once
/// descriptors are free.
#[test]
fn out_of_file_descriptors_the_server_goes_on_and_recovers() {
    use std::os::unix::process::CommandExt;
    const FILES: u64 = 64;
    let plugin = guest("echo");
    let args = ["--listen", "127.0.0.1:0", "--plugin", plugin.to_str().unwrap()];
    let pier = Pier::start_with(&args, 1, |cmd| {
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit { rlim_cur: FILES, rlim_max: FILES };
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                Ok(())
            })
        };
    });
    let addr = pier.addr();
    let mut keeper = connect(addr);
    keeper.write_all(b"first\n").unwrap();
    assert_eq!(read_n(&mut keeper, 6), b"first\n");
    // More connections than descriptors: the rest wait in the backlog.
    let crowd: Vec<TcpStream> = (0..FILES + 20).map(|_| connect(addr)).collect();
    pier.wait_for_log("accept failed");
    keeper.write_all(b"still\n").unwrap();
    assert_eq!(read_n(&mut keeper, 6), b"still\n", "a live connection is still served");
    let window = Instant::now();
    let before = pier.stderr().matches("accept failed").count();
    while window.elapsed() < Duration::from_millis(2500) {
        keeper.write_all(b"x").unwrap();
        assert_eq!(read_n(&mut keeper, 1), b"x");
    }
    let logged = pier.stderr().matches("accept failed").count() - before;
    assert!(logged <= 3, "{logged} accept-failure lines in 2.5 s");
    drop(crowd);
    let deadline = Instant::now() + STEP;
    loop {
        let mut fresh = connect(addr);
        fresh.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
        if fresh.write_all(b"again\n").is_ok() {
            let mut got = [0; 6];
            if fresh.read_exact(&mut got).is_ok() {
                assert_eq!(&got, b"again\n");
                break;
            }
        }
        assert!(Instant::now() < deadline, "pier never accepted again");
    }
}

/// A handler busy in a long call when the grace period ends is cut then:
/// the server exits within its grace, not the call's `cpu-limit`.
#[test]
fn the_grace_period_ends_a_long_call_too() {
    let mut pier = Pier::serve("misbehave", &["--cpu-limit", "60s", "--grace", "1s"]);
    let mut spinner = connect(pier.addr());
    spinner.write_all(b"spin\n").unwrap();
    pier.wait_for_log("spinning");
    pier.signal(libc::SIGTERM);
    let status = pier.wait(STEP).expect("pier exits once the grace period is over");
    assert!(status.success(), "{status:?}");
    assert!(pier.stderr().contains("grace period over"));
}

/// One of the slow clients: what it trickled, what came back, when it last
/// wrote and when it saw the server's FIN.
struct Slow {
    s: TcpStream,
    sent: Vec<u8>,
    got: Vec<u8>,
    last_write: Instant,
    eof: Option<Instant>,
}

/// Reads whatever the slow connections have for us, in one thread with
/// poll(2), until `until` or until `done` holds. A reset fails the test: an
/// idle-timeout close must be a FIN.
fn pump(conns: &mut [Slow], until: Instant, done: impl Fn(&[Slow]) -> bool) {
    let mut buf = [0; 256];
    while !done(conns) {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let open: Vec<usize> = (0..conns.len()).filter(|&i| conns[i].eof.is_none()).collect();
        let mut fds: Vec<libc::pollfd> = open
            .iter()
            .map(|&i| libc::pollfd { fd: conns[i].s.as_raw_fd(), events: libc::POLLIN, revents: 0 })
            .collect();
        let timeout = i32::try_from(left.as_millis() + 1).unwrap_or(i32::MAX);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), ErrorKind::Interrupted, "poll: {e}");
            continue;
        }
        for (fd, &i) in fds.iter().zip(&open) {
            if fd.revents == 0 {
                continue;
            }
            let c = &mut conns[i];
            loop {
                match c.s.read(&mut buf) {
                    Ok(0) => {
                        c.eof = Some(Instant::now());
                        break;
                    }
                    Ok(k) => c.got.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("slow client {i}: {e} (an idle-timeout close must be a FIN)"),
                }
            }
        }
    }
}

/// 2,000 clients trickling one byte a second on one listener (`slow`,
/// idle-timeout 2s) while 50 clients on another (`fast`) do echo round
/// trips. Proves that: every fast client gets every byte back and all
/// 50 x 200 round trips complete while all 2,000 slow connections are still
/// open and served (no timing threshold: the numbers are printed); a
/// connection that keeps trickling outlives the idle timeout (it measures
/// silence, not age); and once the slow clients go quiet each sees a FIN
/// no sooner than the idle timeout after its last byte and within a bounded
/// wait, with pier logging 2,000 `idle-timeout` ends on `slow`.
#[test]
fn slow_clients_do_not_delay_others_and_are_closed_when_idle() {
    const SLOW: usize = 2000;
    const FAST: u64 = 50;
    const ROUND_TRIPS: usize = 200;
    const IDLE: Duration = Duration::from_secs(2);
    const TICK: Duration = Duration::from_secs(1);
    let dir = tempfile::tempdir().unwrap();
    // max-connections: the default (10,000) holds 2,000 too; these keep the
    // instance pool (sized from their sum) small.
    let config = config_file(
        dir.path(),
        r#"
[[listener]]
name = "slow"
listen = "127.0.0.1:0"
plugin = "{guest:echo}"
idle-timeout = "2s"
max-connections = 2100

[[listener]]
name = "fast"
listen = "127.0.0.1:0"
plugin = "{guest:echo}"
max-connections = 100
"#,
    );
    let pier = Pier::start(&["--config", &config], 2);
    let addr = |name: &str| pier.addrs.iter().find(|(n, _)| n == name).expect("listener").1;
    let (slow_addr, fast_addr) = (addr("slow"), addr("fast"));

    let start = Instant::now();
    let mut conns: Vec<Slow> = (0..SLOW)
        .map(|_| {
            let s = connect(slow_addr);
            s.set_nonblocking(true).unwrap();
            Slow { s, sent: Vec::new(), got: Vec::new(), last_write: Instant::now(), eof: None }
        })
        .collect();
    let connected = start.elapsed();

    let mut fast = Vec::new();
    let mut ticks = 0;
    loop {
        let tick = Instant::now();
        for (i, c) in conns.iter_mut().enumerate() {
            let byte = b'a' + (i % 26) as u8;
            // Taken before the write: pier cannot see the byte earlier.
            c.last_write = Instant::now();
            assert_eq!(c.s.write(&[byte]).expect("trickle"), 1);
            c.sent.push(byte);
        }
        ticks += 1;
        if ticks == 1 {
            // Readiness, not a sleep: every slow connection is accepted and
            // served once its first byte has come back.
            pump(&mut conns, tick + STEP, |cs| cs.iter().all(|c| c.got.len() == 1 || c.eof.is_some()));
            let served = conns.iter().filter(|c| c.got.len() == 1).count();
            assert_eq!(served, SLOW, "slow connections served after {:?}", start.elapsed());
            fast = (0..FAST).map(|i| std::thread::spawn(move || fast_client(fast_addr, i, ROUND_TRIPS))).collect();
        }
        pump(&mut conns, tick + TICK, |_| false);
        let closed = conns.iter().filter(|c| c.eof.is_some()).count();
        assert_eq!(closed, 0, "slow connections closed while trickling (tick {ticks}, {:?})", start.elapsed());
        let fast_finished = !fast.is_empty() && fast.iter().all(|t| t.is_finished());
        // Trickle until the fast clients are done and every slow connection
        // is older than the idle timeout by a tick: only silence may end it.
        if fast_finished && start.elapsed() > connected + IDLE + TICK {
            break;
        }
        assert!(start.elapsed() < 3 * STEP, "the fast clients did not finish in time");
    }
    let trickled = start.elapsed();
    let mut latencies: Vec<Duration> = fast.into_iter().flat_map(|t| t.join().expect("fast client")).collect();
    assert_eq!(latencies.len(), FAST as usize * ROUND_TRIPS, "fast round trips completed");

    // Every trickled byte came back, and the slow connections, all older
    // than the idle timeout, are still open: the timeout measures silence.
    pump(&mut conns, Instant::now() + STEP, |cs| cs.iter().all(|c| c.got.len() == c.sent.len() || c.eof.is_some()));
    for (i, c) in conns.iter().enumerate() {
        assert_eq!(c.got, c.sent, "slow client {i}: every trickled byte echoed");
        assert!(c.eof.is_none(), "slow client {i} closed while it trickled");
    }

    // Now they are quiet: each must see a FIN once the idle timeout has passed.
    let last_write = conns.iter().map(|c| c.last_write).max().unwrap();
    pump(&mut conns, last_write + IDLE + STEP, |cs| cs.iter().all(|c| c.eof.is_some()));
    let mut waited = Vec::new();
    for (i, c) in conns.iter().enumerate() {
        let eof = c.eof.unwrap_or_else(|| panic!("slow client {i}: no FIN within idle-timeout + {STEP:?}"));
        let quiet = eof - c.last_write;
        assert!(quiet >= IDLE, "slow client {i}: closed after only {quiet:?} of silence");
        waited.push(quiet);
    }
    let text = pier.wait_for_logs("reason=idle-timeout", SLOW);
    let ends = |l: &str| text.lines().filter(|x| x.contains(l) && x.contains("reason=idle-timeout")).count();
    assert_eq!(ends("listener=\"slow\""), SLOW, "idle-timeout ends logged on `slow`");
    assert_eq!(ends("listener=\"fast\""), 0, "no fast client timed out");

    latencies.sort();
    waited.sort();
    let pct = |v: &[Duration], p: usize| v[(v.len() - 1) * p / 100];
    eprintln!(
        "slow clients: {SLOW} connected in {connected:?}, trickled {ticks} ticks ({trickled:?}); fast round trips \
         p50 {:?} p99 {:?} max {:?}; FIN after {:?}..{:?} of silence",
        pct(&latencies, 50),
        pct(&latencies, 99),
        pct(&latencies, 100),
        waited[0],
        waited[waited.len() - 1],
    );
}

/// One normal client: `n` echo round trips of 512 bytes, each checked
/// exactly; returns each round trip's latency.
fn fast_client(addr: SocketAddr, seed: u64, n: usize) -> Vec<Duration> {
    let mut s = connect(addr);
    s.set_nodelay(true).unwrap();
    (0..n)
        .map(|r| {
            let sent = pattern(seed * 1000 + r as u64, 512);
            let t = Instant::now();
            s.write_all(&sent).expect("fast write");
            assert_eq!(read_n(&mut s, sent.len()), sent, "fast client {seed}, round trip {r}: exact echo");
            t.elapsed()
        })
        .collect()
}

/// Opens, uses and closes `connections` echo connections from 4 client
/// threads; each sends 16 bytes and must get exactly those back.
///
/// One connection in 8 closes in order (FIN); the others reset (linger 0).
/// A client that closes first leaves a TIME_WAIT socket for a minute, and
/// 100,000 of them would need more than the 28,000 ephemeral ports (or the
/// kernel's `tcp_tw_reuse`); 12,500 fit. Binding clients to other source
/// addresses would not do: ports taken by `bind` stay unusable for every
/// later `connect` on the machine until their TIME_WAIT ends, which starved
/// the next test run of ports. Both ends of a connection are so exercised.
fn open_and_close(addr: SocketAddr, connections: usize) {
    const THREADS: usize = 4;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                for n in (t..connections).step_by(THREADS) {
                    let mut s =
                        TcpStream::connect_timeout(&addr, STEP).unwrap_or_else(|e| panic!("connection {n}: {e}"));
                    s.set_read_timeout(Some(STEP)).unwrap();
                    s.set_write_timeout(Some(STEP)).unwrap();
                    let sent = pattern(n as u64, 16);
                    s.write_all(&sent).expect("write");
                    assert_eq!(read_n(&mut s, sent.len()), sent, "connection {n}: exact echo");
                    if n % 8 != 0 {
                        socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

/// Waits (at most `STEP`) until pier has at most `limit` files open, and
/// returns how many it has.
fn wait_for_fds_at_most(pier: &Pier, limit: usize) -> usize {
    let deadline = Instant::now() + STEP;
    loop {
        let fds = pier.open_fds();
        if fds <= limit {
            return fds;
        }
        assert!(Instant::now() < deadline, "pier still has {fds} files open, more than {limit}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The soak of [`connect_close_soak_leaks_no_files_or_memory`], and its
/// margins, from what this 2-core machine measured over 100,000
/// connections. Open files: after the soak no more than after the warm-up,
/// which may hold up to `FD_WARM_UP` more than the idle server (files
/// opened once on first use); measured 14 idle, 14 after (15 when sampled
/// after the warm-up with its last close still in flight). RSS: it grew by
/// 0.4-0.6 MiB (allocator and pool slots still settling), so 4 MiB is
/// allowed, which a leak of 42 bytes per connection would exceed.
fn soak(connections: usize) {
    const FD_WARM_UP: usize = 2;
    const RSS_MARGIN_KIB: u64 = 4 << 10;
    // Info, not the harness's debug: two log lines per connection would
    // cost 100,000 connections more than the connections do.
    let plugin = guest("echo");
    let args = ["--listen", "127.0.0.1:0", "--plugin", plugin.to_str().unwrap()];
    let pier = Pier::start_with(&args, 1, |cmd| {
        cmd.env("RUST_LOG", "pier=info,warn");
    });
    let addr = pier.addr();
    let idle_fds = pier.open_fds();
    let idle_rss = pier.rss_kib();
    // Pools and allocator warm up over the first connections: the baseline
    // is taken after them, once their files are closed.
    open_and_close(addr, 1000);
    let fds_before = wait_for_fds_at_most(&pier, idle_fds + FD_WARM_UP);
    let rss_before = pier.rss_kib();
    let start = Instant::now();
    open_and_close(addr, connections);
    let took = start.elapsed();
    let fds_after = wait_for_fds_at_most(&pier, fds_before);
    let rss_after = pier.rss_kib();
    eprintln!(
        "soak: {connections} connections in {took:?}; fds {idle_fds} idle, {fds_before} after warm-up, \
         {fds_after} after; RSS {idle_rss} KiB idle, {rss_before} KiB after warm-up, {rss_after} KiB after"
    );
    assert!(
        rss_after <= rss_before + RSS_MARGIN_KIB,
        "RSS grew from {rss_before} KiB to {rss_after} KiB over {connections} connections"
    );
}

/// The connect/close soak of issue 12: 100,000 echo connections, each
/// echoing 16 bytes exactly, then closed by the client. Proves pier keeps
/// nothing per connection once it is gone: its open files and RSS come back
/// to their level after a 1,000-connection warm-up, within the margins in
/// [`soak`]. 8-14 s on this 2-core machine, so it runs in `make test`.
#[test]
fn connect_close_soak_leaks_no_files_or_memory() {
    soak(100_000);
}
