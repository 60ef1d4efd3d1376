//! The full CSA: bounded outbox, `writable`, finish vs close, pause and
//! resume reading, half-close; with the chargen, fortune and flow guests.

use crate::common::*;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// Checks bytes against the RFC 864 stream, from its first byte on.
struct ChargenCheck {
    offset: u64,
}

impl ChargenCheck {
    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let (line, col) = (self.offset / 74, self.offset % 74);
            let want = match col {
                72 => b'\r',
                73 => b'\n',
                _ => b' ' + ((line + col) % 95) as u8,
            };
            assert_eq!(b, want, "chargen byte {} (line {line}, column {col}) is wrong", self.offset);
            self.offset += 1;
        }
    }
}

#[test]
fn chargen_with_a_slow_reader_keeps_memory_flat_and_the_pattern_exact() {
    let pier = Pier::serve("chargen", &[]);
    let mut s = connect(pier.addr());
    let mut check = ChargenCheck { offset: 0 };
    let mut buf = [0u8; 1024];
    // Let the first connection settle, then measure from there.
    s.read_exact(&mut buf).unwrap();
    check.feed(&buf);
    let rss_before = pier.rss_kib();
    let mut peak = rss_before;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        s.read_exact(&mut buf).unwrap();
        check.feed(&buf);
        std::thread::sleep(Duration::from_millis(2));
        peak = peak.max(pier.rss_kib());
    }
    let growth_kib = peak.saturating_sub(rss_before);
    eprintln!("chargen slow reader: {} bytes read, RSS {rss_before} KiB -> peak {peak} KiB", check.offset);
    assert!(growth_kib < 16 << 10, "RSS grew by {growth_kib} KiB with a slow reader (bound: 16 MiB)");
    assert!(check.offset > 100_000, "the reader got too little: {}", check.offset);
}

#[test]
fn chargen_with_a_fast_reader_sends_256_mib_exactly() {
    let pier = Pier::serve("chargen", &[]);
    let mut s = connect(pier.addr());
    let mut check = ChargenCheck { offset: 0 };
    let mut buf = vec![0u8; 256 << 10];
    let total = 256u64 << 20;
    while check.offset < total {
        let want = buf.len().min((total - check.offset) as usize);
        let n = s.read(&mut buf[..want]).expect("read");
        assert!(n > 0, "chargen stopped after {} bytes", check.offset);
        check.feed(&buf[..n]);
    }
    assert_eq!(check.offset, total);
}

#[test]
fn fortune_sends_one_text_then_eof() {
    let pier = Pier::serve("fortune", &[]);
    let all = include_str!("../../guest/fortune/src/fortunes.txt");
    let fortunes: Vec<String> = all.split("\n%\n").map(|f| format!("{}\n", f.trim())).collect();
    for _ in 0..3 {
        let mut s = connect(pier.addr());
        let text = String::from_utf8(read_to_eof(&mut s)).unwrap();
        assert!(fortunes.contains(&text), "not one of the fortunes: {text:?}");
    }
}

#[test]
fn finish_flushes_eight_mebibytes_then_eof() {
    let pier = Pier::serve("flow", &[]);
    let mut s = connect(pier.addr());
    s.write_all(format!("finish {}\n", 8 << 20).as_bytes()).unwrap();
    let got = read_to_eof(&mut s);
    assert_eq!(got.len(), 8 << 20, "every queued byte before EOF");
    assert!(got.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "bytes in order");
}

/// One `send` may give at most the high-water mark: a larger one is refused
/// whole with `too-large` and the mark, so a connection's queue is bounded
/// by its configuration, not by its handler's memory limit.
#[test]
fn one_send_past_the_high_water_mark_is_refused_whole() {
    let pier = Pier::serve("flow", &["--outbox-high-water", "8KiB", "--outbox-low-water", "4KiB"]);
    let mut s = connect(pier.addr());
    s.write_all(format!("big {}\n", 1 << 20).as_bytes()).unwrap();
    assert_eq!(read_to_eof(&mut s), b"Err(SendError::TooLarge(8192))\n", "nothing of the big send reaches the peer");
    let mut s = connect(pier.addr());
    s.write_all(b"big 8192\n").unwrap();
    let got = read_to_eof(&mut s);
    assert_eq!(got.len(), 8192 + b"Ok(())\n".len(), "the mark itself is taken");
    assert!(got.ends_with(b"Ok(())\n"));
}

/// The SDK splits what the host would refuse as too large: the echo guest
/// sends each 32 KiB read whole, and with a 1 KiB high-water mark every byte
/// still comes back in order.
#[test]
fn the_sdk_splits_sends_past_the_high_water_mark() {
    let pier = Pier::serve("echo", &["--outbox-high-water", "1KiB", "--outbox-low-water", "512B"]);
    let sent = pattern(7, 4 << 20);
    assert!(exchange(pier.addr(), &sent) == sent, "4 MiB echoed exactly through a 1 KiB outbox");
}

#[test]
fn close_drops_the_queue_and_closes_promptly() {
    let pier = Pier::serve("flow", &[]);
    let mut s = connect(pier.addr());
    // Far more than loopback's socket buffers can take at once (several
    // MiB when autotuned), so that most of it is still queued at `close`.
    s.write_all(format!("close {}\n", 32 << 20).as_bytes()).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("expected EOF or reset, got {e}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2), "close took {:?}", start.elapsed());
    assert!(got.len() < 32 << 20, "close must drop the queue, yet all {} bytes came", got.len());
    // The server is fine.
    let mut s = connect(pier.addr());
    s.write_all(b"finish 10\n").unwrap();
    assert_eq!(read_to_eof(&mut s).len(), 10);
}

#[test]
fn a_guest_ignoring_would_block_pays_with_its_own_connection() {
    let pier = Pier::serve("flow", &["--cpu-limit", "500ms"]);
    let rss_before = pier.rss_kib();
    let mut flood = connect(pier.addr());
    flood.write_all(b"flood\n").unwrap();
    // Meanwhile another connection is served normally.
    let mut other = connect(pier.addr());
    other.write_all(b"finish 1000\n").unwrap();
    assert_eq!(read_to_eof(&mut other).len(), 1000);
    // The flooder got what the socket buffers and the outbox hold, then its
    // connection ended.
    let start = Instant::now();
    let mut got = Vec::new();
    let _ = flood.read_to_end(&mut got);
    assert!(start.elapsed() < STEP);
    assert!(got.len() <= 16 << 20, "the flooder got {} bytes", got.len());
    assert!(got.iter().all(|&b| b == b'F'));
    pier.wait_for_log("cpu-limit");
    let growth = pier.rss_kib().saturating_sub(rss_before);
    assert!(growth < 16 << 10, "RSS grew by {growth} KiB");
    let mut again = connect(pier.addr());
    again.write_all(b"finish 5\n").unwrap();
    assert_eq!(read_to_eof(&mut again).len(), 5, "the server still answers");
}

#[test]
fn pause_reading_blocks_the_client_and_resume_delivers_everything_in_order() {
    let pier = Pier::serve("flow", &[]);
    let mut s = connect(pier.addr());
    s.write_all(b"pause\n").unwrap();
    // The first `P` says the guest has paused.
    assert_eq!(read_n(&mut s, 1), b"P");
    // Write without blocking until the kernel buffers are full: the server
    // reads nothing while paused, so this must stop.
    s.set_nonblocking(true).unwrap();
    // Lowercase letters only, so the echo is told apart from the `P`s.
    let data: Vec<u8> = pattern(7, 64 << 20).iter().map(|b| b'a' + b % 26).collect();
    let mut written = 0;
    let deadline = Instant::now() + STEP;
    loop {
        match s.write(&data[written..(written + (64 << 10)).min(data.len())]) {
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("write failed: {e}"),
        }
        assert!(written < data.len(), "the client never blocked: the server kept reading while paused");
        assert!(Instant::now() < deadline, "no backpressure in time");
    }
    eprintln!("paused: the client blocked after {written} bytes");
    s.set_nonblocking(false).unwrap();
    // Read the `P`s: the outbox drains, the guest resumes reading, and
    // echoes everything written while paused, in order.
    let mut reader = s.try_clone().unwrap();
    let echoed = std::thread::spawn(move || {
        let mut got = read_to_eof(&mut reader);
        let ps = got.iter().take_while(|&&b| b == b'P').count();
        got.drain(..ps);
        got
    });
    s.write_all(&data[written..written + 4096]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let echoed = echoed.join().unwrap();
    assert!(echoed == data[..written + 4096], "bytes lost or reordered across pause/resume");
}

#[test]
fn half_close_with_nc_gets_the_answer() {
    let pier = Pier::serve("echo", &[]);
    let port = pier.addr().port().to_string();
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("printf 'hi' | timeout 10 nc -N 127.0.0.1 {port}")])
        .output()
        .expect("nc (netcat-openbsd; `make setup` installs it)");
    assert!(out.status.success(), "nc failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, b"hi");
}

#[test]
fn half_close_from_a_socket_gets_the_answer_then_eof() {
    let pier = Pier::serve("echo", &[]);
    let mut s = connect(pier.addr());
    s.write_all(b"last words").unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut s), b"last words");
    let _ = TcpStream::peer_addr(&s);
}
