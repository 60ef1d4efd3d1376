//! A host-level fuzz (issue 13, "Fuzzing and properties"): many
//! connections to the `chaos` guest (tests/guests/chaos), which calls the
//! outbox in a seeded random order with random sizes and echoes what it
//! receives, from peers that send random bytes in random splits and end in
//! random ways (FIN after everything, FIN half-way, no FIN, an abort with a
//! reset). Asserted:
//!
//! - the host never panics: its stderr never says so, and it still answers
//!   a fresh request at the end;
//! - it never hangs past its deadlines: every connection ends within STEP
//!   (the idle timeout, 2 s here, ends those left with nothing to do);
//! - what each peer received is exactly what the guest says the host took
//!   (`took` in its last log line), byte for byte and in order, for every
//!   connection the guest finished and the host flushed; a prefix of it
//!   otherwise (`close` drops what is queued). Echoed bytes are the peer's
//!   own (below 0x80) and made-up bytes are `generated(seed, position)`
//!   (0x80 and up), so the check needs no framing;
//! - the guest saw no answer the contract in wit/pier.wit rules out.
//!
//! Deterministic: connection i uses seed `HOST_FUZZ_SEED + i` for the peer
//! and the guest alike (timing still differs run to run).
//! `HOST_FUZZ_CONNECTIONS` (default 200) and `HOST_FUZZ_SEED` scale and move
//! it (`make fuzz`). Seeds that failed are appended to
//! tests/fuzz-corpus/host-fuzz.txt and run again by every later run.

use crate::common::{Pier, STEP, connect, exchange};
use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const DEFAULT_CONNECTIONS: usize = 200;
const DEFAULT_SEED: u64 = 0x5EED_0000;
/// Peers at once.
const THREADS: usize = 8;
const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fuzz-corpus/host-fuzz.txt");

/// The byte the chaos guest makes up at `p` (tests/guests/chaos has the same).
fn generated(seed: u64, p: u64) -> u8 {
    0x80 | (mix(seed ^ p.wrapping_mul(0x9E37_79B9_7F4A_7C15)) as u8 & 0x7f)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// How a peer ends its side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Sends everything, then FIN; reads to the end.
    FinAfterAll,
    /// FIN after this many bytes; the rest is never sent.
    FinAfter(usize),
    /// Sends everything, no FIN; reads until the host ends the connection.
    NoFin,
    /// After this many bytes, stops reading and resets the connection.
    Abort(usize),
}

/// How the peer's reading ended.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    Eof,
    Reset,
    TimedOut,
    Error(String),
}

/// One peer's run.
struct Run {
    seed: u64,
    plan: Plan,
    /// The bytes after the seed line that the socket took, in order.
    sent: Vec<u8>,
    received: Vec<u8>,
    ending: Ending,
    elapsed: Duration,
}

/// What the guest said in its last log line.
#[derive(Debug)]
struct Report {
    took: u64,
    echoed: u64,
    end: String,
    reason: String,
    violations: u64,
    line: String,
}

fn peer(addr: SocketAddr, seed: u64) -> Run {
    let mut rng = Rng(mix(seed ^ 0xC0FF_EE00));
    let total = match rng.below(8) {
        0 => 0,
        1..=4 => rng.below(16 << 10),
        5 | 6 => rng.below(128 << 10),
        _ => rng.below(512 << 10),
    } as usize;
    let data: Vec<u8> = (0..total).map(|_| (rng.next() & 0x7f) as u8).collect();
    let plan = match rng.below(100) {
        0..80 => Plan::FinAfterAll,
        80..92 => Plan::FinAfter(rng.below(total as u64 + 1) as usize),
        92..95 => Plan::NoFin,
        _ => Plan::Abort(rng.below(total as u64 + 1) as usize),
    };
    let start = Instant::now();
    let mut stream = connect(addr);
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut wrng = Rng(rng.next());
    let write = std::thread::spawn(move || {
        let line = format!("seed {seed}\n").into_bytes();
        let cut = wrng.below(line.len() as u64) as usize;
        for piece in [&line[..cut], &line[cut..]] {
            if writer.write_all(piece).is_err() {
                return Vec::new();
            }
            if wrng.below(2) == 0 {
                std::thread::sleep(Duration::from_micros(wrng.below(500)));
            }
        }
        let limit = match plan {
            Plan::FinAfter(n) | Plan::Abort(n) => n,
            Plan::FinAfterAll | Plan::NoFin => data.len(),
        };
        let mut at = 0;
        while at < limit {
            let piece = match wrng.below(4) {
                0 => 1 + wrng.below(16),
                1 => 1 + wrng.below(1500),
                2 => 1 + wrng.below(16 << 10),
                _ => 1 + wrng.below(128 << 10),
            } as usize;
            let end = limit.min(at + piece);
            match writer.write(&data[at..end]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The host ended the connection (the guest finished or
                // closed); the bytes taken so far are what was sent.
                Err(_) => break,
            }
            if wrng.below(8) == 0 {
                std::thread::sleep(Duration::from_micros(wrng.below(2000)));
            }
        }
        match plan {
            Plan::FinAfterAll | Plan::FinAfter(_) => {
                let _ = writer.shutdown(Shutdown::Write);
            }
            Plan::NoFin => {}
            // Unblocks the reader, which then resets the connection.
            Plan::Abort(_) => {
                let _ = writer.shutdown(Shutdown::Read);
            }
        }
        data[..at].to_vec()
    });
    let mut received = Vec::new();
    let mut buf = vec![0; 64 << 10];
    let ending = loop {
        match stream.read(&mut buf) {
            Ok(0) => break Ending::Eof,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break Ending::Reset,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break Ending::TimedOut,
            Err(e) => break Ending::Error(e.to_string()),
        }
    };
    let sent = write.join().unwrap();
    if let Plan::Abort(_) = plan {
        reset(&stream);
    }
    drop(stream);
    Run { seed, plan, sent, received, ending, elapsed: start.elapsed() }
}

/// SO_LINGER 0: closing the socket sends a reset, not a FIN.
fn reset(stream: &TcpStream) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt on a socket this process owns, with a live value of
    // the size it is told.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
}

/// The guest's last log line of every connection, by seed.
fn reports(stderr: &str) -> HashMap<u64, Report> {
    let mut out = HashMap::new();
    for line in stderr.lines() {
        let Some(at) = line.find("chaos seed=") else { continue };
        let text = &line[at..];
        let mut fields = HashMap::new();
        for word in text.split(": ").next().unwrap_or("").split_whitespace() {
            if let Some((k, v)) = word.split_once('=') {
                fields.insert(k, v);
            }
        }
        let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(u64::MAX);
        let Ok(seed) = fields.get("seed").copied().unwrap_or("").parse::<u64>() else { continue };
        let report = Report {
            took: num("took"),
            echoed: num("echoed"),
            end: fields.get("end").copied().unwrap_or("?").to_string(),
            reason: fields.get("reason").copied().unwrap_or("?").to_string(),
            violations: num("violations"),
            line: text.to_string(),
        };
        out.insert(seed, report);
    }
    out
}

/// Checks one connection against the guest's report.
fn check(run: &Run, report: Option<&Report>) -> Result<(), String> {
    let Some(report) = report else {
        return Err("no `chaos seed=` line from the guest (did the instance trap?)".into());
    };
    if report.violations != 0 {
        return Err(format!("the guest saw answers the contract rules out: {}", report.line));
    }
    if run.ending == Ending::TimedOut || run.elapsed >= STEP {
        return Err(format!("the connection did not end within {STEP:?} ({:?}, {:?})", run.elapsed, run.ending));
    }
    if let Ending::Error(e) = &run.ending {
        return Err(format!("reading failed: {e}"));
    }
    // Only an aborting peer resets the connection.
    if report.reason == "peer-reset" && !matches!(run.plan, Plan::Abort(_)) {
        return Err(format!("the host saw a reset the peer did not make: {}", report.line));
    }
    let mut echo = 0;
    for (p, &b) in run.received.iter().enumerate() {
        if b < 0x80 {
            if run.sent.get(echo) != Some(&b) {
                return Err(format!(
                    "byte {p} is {b:#04x}: not the next echoed byte ({:?} of {} sent, the {echo}th)",
                    run.sent.get(echo),
                    run.sent.len()
                ));
            }
            echo += 1;
        } else if b != generated(run.seed, p as u64) {
            return Err(format!("byte {p} is {b:#04x}, not the generated {:#04x}", generated(run.seed, p as u64)));
        }
    }
    let got = run.received.len() as u64;
    if got > report.took || echo as u64 > report.echoed {
        return Err(format!("received {got} bytes ({echo} echoed): more than the host took: {}", report.line));
    }
    // The guest finished and the host says it flushed everything: the peer
    // has all of it, then a clean end.
    let flushed = report.end == "finish" && (report.reason == "finished" || report.reason == "peer-closed");
    if flushed && !matches!(run.plan, Plan::Abort(_)) {
        if run.ending != Ending::Eof {
            return Err(format!("a flushed connection ended with {:?} after {got} bytes: {}", run.ending, report.line));
        }
        if got != report.took || echo as u64 != report.echoed {
            return Err(format!("received {got} bytes ({echo} echoed), the host took: {}", report.line));
        }
    }
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Seeds kept from earlier failures.
fn corpus_seeds() -> Vec<u64> {
    let text = std::fs::read_to_string(CORPUS).unwrap_or_default();
    text.lines().filter_map(|l| l.split('#').next()?.trim().strip_prefix("seed ")?.trim().parse().ok()).collect()
}

fn keep_failing_seeds(seeds: &[u64]) {
    let known: BTreeSet<u64> = corpus_seeds().into_iter().collect();
    let mut text = std::fs::read_to_string(CORPUS).unwrap_or_default();
    for seed in seeds.iter().filter(|s| !known.contains(s)) {
        text.push_str(&format!("seed {seed}\n"));
    }
    if let Err(e) = std::fs::write(CORPUS, text) {
        eprintln!("host_fuzz: cannot keep the failing seeds in {CORPUS}: {e}");
    }
}

#[test]
fn chaos_guest_against_chaotic_peers() {
    let n = env_or("HOST_FUZZ_CONNECTIONS", DEFAULT_CONNECTIONS);
    let base = env_or("HOST_FUZZ_SEED", DEFAULT_SEED);
    let mut seeds: Vec<u64> = (0..n as u64).map(|i| base.wrapping_add(i)).collect();
    seeds.extend(corpus_seeds());
    seeds.sort_unstable();
    seeds.dedup();
    let pier = Pier::serve(
        "chaos",
        &["--outbox-high-water", "16KiB", "--outbox-low-water", "4KiB", "--idle-timeout", "2s", "--cpu-limit", "5s"],
    );
    let addr = pier.addr();
    let started = Instant::now();
    let seeds = Arc::new(seeds);
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (seeds, next) = (seeds.clone(), next.clone());
            std::thread::spawn(move || {
                let mut runs = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else { return runs };
                    runs.push(peer(addr, seed));
                }
            })
        })
        .collect();
    let runs: Vec<Run> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let elapsed = started.elapsed();
    let stderr = pier.wait_for_logs("chaos seed=", runs.len());
    let reports = reports(&stderr);

    let mut failures = Vec::new();
    for run in &runs {
        if let Err(e) = check(run, reports.get(&run.seed)) {
            failures.push((run.seed, format!("seed {} ({:?}, {} sent): {e}", run.seed, run.plan, run.sent.len())));
        }
    }
    // The host took everything in its stride: no panic, and a fresh request
    // is answered.
    assert_eq!(exchange(addr, b"echo\nstill there?"), b"still there?", "pier stopped answering");
    assert!(!pier.stderr().contains("panicked"), "pier panicked:\n{}", pier.stderr());

    let mut tally: HashMap<String, usize> = HashMap::new();
    for r in reports.values() {
        *tally.entry(format!("{}/{}", r.end, r.reason)).or_default() += 1;
    }
    let mut tally: Vec<_> = tally.into_iter().collect();
    tally.sort();
    let bytes: usize = runs.iter().map(|r| r.sent.len() + r.received.len()).sum();
    eprintln!("host_fuzz: {} connections, {bytes} bytes, in {elapsed:?}; end/reason: {tally:?}", runs.len());
    if !failures.is_empty() {
        keep_failing_seeds(&failures.iter().map(|(s, _)| *s).collect::<Vec<_>>());
        let shown: Vec<&str> = failures.iter().take(10).map(|(_, e)| e.as_str()).collect();
        panic!(
            "{} of {} connections failed (seeds kept in {CORPUS}):\n{}",
            failures.len(),
            runs.len(),
            shown.join("\n")
        );
    }
}
