//! The echo guest end to end, and one instance per connection.

use crate::common::*;
use std::io::Write;
use std::net::{Shutdown, SocketAddr};

#[test]
fn one_byte_and_a_line_come_back() {
    let pier = Pier::serve("echo", &[]);
    one_byte_and_a_line(pier.addr());
}

#[test]
fn four_mebibytes_written_and_read_concurrently() {
    let pier = Pier::serve("echo", &[]);
    four_mebibytes(pier.addr());
}

#[test]
fn hundred_concurrent_connections_get_their_own_bytes() {
    let pier = Pier::serve("echo", &[]);
    hundred_connections(pier.addr());
}

// What any echo handler must do (the Python one's tests call these too).

/// A byte and a line come back, then EOF after a half-close.
pub(crate) fn one_byte_and_a_line(addr: SocketAddr) {
    let mut s = connect(addr);
    s.write_all(b"x").unwrap();
    assert_eq!(read_n(&mut s, 1), b"x");
    s.write_all(b"hello, pier\n").unwrap();
    assert_eq!(read_n(&mut s, 12), b"hello, pier\n");
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"", "EOF after the echo of a half-closed connection");
}

/// 4 MiB written while its echo is read.
pub(crate) fn four_mebibytes(addr: SocketAddr) {
    let data = pattern(4, 4 << 20);
    let got = exchange(addr, &data);
    assert_eq!(got.len(), data.len());
    assert!(got == data, "echoed bytes differ");
}

/// 100 connections at once each get their own bytes back, and the server
/// still answers after.
pub(crate) fn hundred_connections(addr: SocketAddr) {
    let clients: Vec<_> = (0..100u64)
        .map(|i| {
            std::thread::spawn(move || {
                let data = pattern(i + 100, 1000 + i as usize * 37);
                let got = exchange(addr, &data);
                assert!(got == data, "connection {i} got someone else's bytes");
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    assert_eq!(exchange(addr, b"still here"), b"still here");
}

#[test]
fn every_connection_has_its_own_instance() {
    let pier = Pier::serve("counter", &[]);
    let mut a = connect(pier.addr());
    let mut b = connect(pier.addr());
    let ask = |s: &mut std::net::TcpStream, bytes: &[u8]| {
        s.write_all(bytes).unwrap();
        let mut line = Vec::new();
        while !line.ends_with(b"\n") {
            line.extend(read_n(s, 1));
        }
        String::from_utf8(line).unwrap()
    };
    assert_eq!(ask(&mut a, b"aaaa"), "4\n");
    assert_eq!(ask(&mut b, b"bb"), "2\n", "b must not see a's count");
    assert_eq!(ask(&mut a, b"cc"), "6\n");
    drop(a);
    let mut c = connect(pier.addr());
    assert_eq!(ask(&mut c, b"z"), "1\n", "a new connection starts from zero");
    assert_eq!(ask(&mut b, b"b"), "3\n");
}
