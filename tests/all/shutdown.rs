//! `serverShutdown` through SIGTERM: every client sees an orderly close and
//! the process exits 0 within the grace period.

use crate::common::*;
use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

#[test]
fn sigterm_closes_every_connection_in_order_and_exits_zero() {
    let mut pier = Pier::serve("echo", &["--grace", "3s"]);
    let mut clients: Vec<_> = (0..5).map(|_| connect(pier.addr())).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let msg = format!("client {i}\n");
        c.write_all(msg.as_bytes()).unwrap();
        assert_eq!(read_n(c, msg.len()), msg.as_bytes(), "live before the signal");
    }
    let start = Instant::now();
    pier.signal(libc::SIGTERM);
    for c in &mut clients {
        let mut buf = [0u8; 16];
        match c.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("unexpected {n} bytes after shutdown"),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => panic!("reset instead of an orderly close"),
            Err(e) => panic!("no close seen: {e}"),
        }
    }
    let status = pier.wait(Duration::from_secs(3) + STEP).expect("pier exited");
    assert!(status.success(), "exit status {status}");
    assert!(start.elapsed() < Duration::from_secs(3) + Duration::from_secs(2), "took {:?}", start.elapsed());
    assert!(pier.stderr().contains("server stopped"));
}

#[test]
fn sigterm_with_no_connections_exits_promptly() {
    let mut pier = Pier::serve("echo", &[]);
    pier.signal(libc::SIGINT);
    let status = pier.wait(STEP).expect("pier exited");
    assert!(status.success(), "exit status {status}");
}
