//! Faults under load: a shutdown while every connection is busy, and a
//! server out of file descriptors.

use crate::common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
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
