//! The hostile-guest suite (issue 12): one pier, two tenants. Tenant A runs
//! `tests/guests/hostile` under small budgets and attacks every host-side
//! resource it can reach; tenant B is `echo`, with clients doing round trips
//! of random sizes throughout. Each test asserts that the attack is
//! contained as its budget says, that pier's RSS grows by less than the
//! worst case the budgets allow ([`rss_bound_kib`]), and that B gets every
//! byte back and still answers afterwards.
//!
//! Synchronisation is on the guest's answer lines and on pier's log lines,
//! each with a deadline; nothing waits on a sleep and nothing asserts a
//! latency.

use crate::common::*;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// One listener's settings that bound what its connections can make pier
/// hold, as the config file below gives them.
#[derive(Clone, Copy)]
struct Budgets {
    kv_max_bytes: u64,
    backplane_max_bytes: u64,
    memory_limit: u64,
    outbox_high_water: u64,
}

/// Tenant A: the attacker.
const A: Budgets =
    Budgets { kv_max_bytes: 4 * MIB, backplane_max_bytes: MIB, memory_limit: 16 * MIB, outbox_high_water: 64 * KIB };
const A_LOG_RATE: u64 = 50;
/// A's deadline per call. 2 s rather than the 1 s the `slow` attack is
/// usually described with: its 900 ms calls must stay under it on a loaded
/// 2-core machine running the suite's tests in parallel, where a 900 ms
/// call was seen cut at 1.17 s (the deadline is wall-clock and counts time
/// spent waiting for a CPU).
const A_CPU_LIMIT: &str = "2s";
const A_CPU_BUDGET: &str = "3s";
/// Tenant B: echo, whose clients must not notice. Its store and backplane
/// are unused, and given small budgets so the bound stays tight.
const B: Budgets =
    Budgets { kv_max_bytes: MIB, backplane_max_bytes: MIB, memory_limit: 4 * MIB, outbox_high_water: 64 * KIB };
const ECHO_CLIENTS: usize = 8;

/// What pier itself may grow by besides what the budgets account for:
/// allocator slack and fragmentation, the thread stacks and buffers of the
/// server, and the noise of RSS itself. Measured on the 2-core development
/// machine, the eight tests running in parallel (`--nocapture` prints the
/// numbers): with B's eight echo clients and one or two A connections
/// (odd orders, slow calls, log flood, WASI exhaustion) pier grew by
/// 1.1-1.8 MiB; the kv flood by 6.3 MiB, 4 MiB of it the store; the most
/// seen past the budget terms was under 3 MiB. 16 MiB leaves room for a
/// busier machine. (Per-connection host state, about 75 KiB a connection
/// measured with 200 idle subscribers, is inside the formula's
/// `memory-limit` term, which no test's guest comes near.)
const MARGIN: u64 = 16 * MIB;

/// The most pier's RSS may grow, in KiB, while `connections` connections of
/// a listener with `budgets` live (summed over the listeners given): pier's
/// own worst case for such a listener, as `pier check --config` prints it
/// ([`pier::footprint`]: every connection's linear memory, stack, outbox,
/// buffers and tables, the listener's store and backplane budgets), plus
/// [`MARGIN`] once.
fn rss_bound_kib(listeners: &[(Budgets, u64)]) -> u64 {
    let worst = |(b, connections): &(Budgets, u64)| {
        let listen = pier::ListenAddr::parse_addr("127.0.0.1:0").unwrap();
        let mut l = pier::ListenerConfig::new("bound", listen, "bound.wasm");
        l.max_connections = u32::try_from(*connections).unwrap();
        l.kv_max_bytes = b.kv_max_bytes;
        l.backplane_max_bytes = b.backplane_max_bytes as usize;
        l.memory_limit = b.memory_limit;
        l.outbox_high_water = b.outbox_high_water as usize;
        pier::footprint::worst_case(&l, pier::footprint::Shape::InstancePerConnection)
    };
    (listeners.iter().map(worst).sum::<u64>() + MARGIN) / KIB
}

/// One pier serving A (hostile) and B (echo).
struct Tenants {
    pier: Pier,
    a: SocketAddr,
    b: SocketAddr,
    /// RSS right after start, before B's load: the bound's zero.
    rss_start: u64,
    _dir: tempfile::TempDir,
}

impl Tenants {
    /// `rust_log`: pier's RUST_LOG (the flood tests keep per-message debug
    /// lines out of the log).
    fn start(rust_log: &str) -> Tenants {
        let dir = tempfile::tempdir().unwrap();
        let size = |n: u64| format!("\"{}KiB\"", n / KIB);
        let cfg = config_file(
            dir.path(),
            &format!(
                r#"
workers = 2

[[listener]]
name = "a"
listen = "127.0.0.1:0"
plugin = "{{guest:hostile}}"
max-connections = 300
memory-limit = {}
cpu-limit = "{A_CPU_LIMIT}"
cpu-budget = "{A_CPU_BUDGET}"
idle-timeout = "1m"
outbox-high-water = {}
outbox-low-water = "32KiB"
kv-max-bytes = {}
backplane-max-bytes = {}
log-rate = {A_LOG_RATE}

[[listener]]
name = "b"
listen = "127.0.0.1:0"
plugin = "{{guest:echo}}"
max-connections = 32
memory-limit = {}
outbox-high-water = {}
kv-max-bytes = {}
backplane-max-bytes = {}
"#,
                size(A.memory_limit),
                size(A.outbox_high_water),
                size(A.kv_max_bytes),
                size(A.backplane_max_bytes),
                size(B.memory_limit),
                size(B.outbox_high_water),
                size(B.kv_max_bytes),
                size(B.backplane_max_bytes),
            ),
        );
        let pier = Pier::start_with(&["--config", &cfg], 2, |cmd| {
            cmd.env("RUST_LOG", rust_log);
        });
        let addr = |name: &str| pier.addrs.iter().find(|(n, _)| n == name).expect("listener").1;
        let (a, b) = (addr("a"), addr("b"));
        let rss_start = pier.rss_kib();
        Tenants { pier, a, b, rss_start, _dir: dir }
    }

    /// Asserts that pier's RSS, at its highest while `watch` ran, grew by
    /// less than the budgets allow for `a_connections` on A (and B's echo
    /// clients), and prints the numbers. Returns the growth, in KiB.
    fn assert_rss_bounded(&self, attack: &str, watch: RssWatch, a_connections: u64) -> u64 {
        self.assert_rss_within(attack, watch, A, a_connections)
    }

    /// [`Self::assert_rss_bounded`], with A's budgets as given.
    fn assert_rss_within(&self, attack: &str, watch: RssWatch, a: Budgets, a_connections: u64) -> u64 {
        let peak = watch.stop();
        let now = self.pier.rss_kib();
        let grown = peak.max(now).saturating_sub(self.rss_start);
        let bound = rss_bound_kib(&[(a, a_connections), (B, ECHO_CLIENTS as u64 + 2)]);
        eprintln!(
            "hostile {attack}: RSS at start {} KiB, peak {peak} KiB, after {now} KiB: grew {grown} KiB; bound {bound} KiB",
            self.rss_start
        );
        assert!(grown < bound, "{attack}: pier grew by {grown} KiB, past the budgets' {bound} KiB");
        grown
    }

    /// B still answers, byte for byte.
    fn assert_b_answers(&self) {
        let data = pattern(0xB, 100_000);
        assert!(exchange(self.b, &data) == data, "B lost bytes after the attack");
    }
}

/// Samples pier's RSS every few milliseconds and keeps the highest.
struct RssWatch {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl RssWatch {
    fn start(pier: &Pier) -> RssWatch {
        let status = format!("/proc/{}/status", pier.pid());
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            loop {
                if let Ok(text) = std::fs::read_to_string(&status) {
                    let rss = text
                        .lines()
                        .find_map(|l| l.strip_prefix("VmRSS:"))
                        .and_then(|v| v.split_whitespace().next()?.parse().ok())
                        .unwrap_or(0);
                    peak = peak.max(rss);
                }
                if flag.load(Ordering::Acquire) {
                    return peak;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        RssWatch { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("RSS watcher")
    }
}

/// B's clients: each does round trips of random sizes on its own
/// connection until told to stop, checking every byte.
struct EchoLoad {
    stop: Arc<AtomicBool>,
    clients: Vec<JoinHandle<(u64, u64)>>,
}

impl EchoLoad {
    /// Starts `n` clients and returns once each has made a round trip.
    fn start(b: SocketAddr, n: usize) -> EchoLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicU64::new(0));
        let clients = (0..n as u64)
            .map(|i| {
                let (stop, started) = (stop.clone(), started.clone());
                std::thread::spawn(move || {
                    let mut s = connect(b);
                    let mut rng = 0x2545_F491_4F6C_DD1D ^ (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    let (mut trips, mut bytes) = (0u64, 0u64);
                    loop {
                        rng ^= rng << 13;
                        rng ^= rng >> 7;
                        rng ^= rng << 17;
                        let len = 1 + (rng % (48 << 10)) as usize;
                        let data = pattern(rng, len);
                        s.write_all(&data).unwrap_or_else(|e| panic!("echo client {i}: write: {e}"));
                        let mut got = vec![0; len];
                        s.read_exact(&mut got).unwrap_or_else(|e| panic!("echo client {i}: read: {e}"));
                        assert!(got == data, "echo client {i}: round trip {trips} ({len} bytes) came back different");
                        trips += 1;
                        bytes += len as u64;
                        if trips == 1 {
                            started.fetch_add(1, Ordering::AcqRel);
                        }
                        if stop.load(Ordering::Acquire) {
                            return (trips, bytes);
                        }
                    }
                })
            })
            .collect();
        let deadline = Instant::now() + STEP;
        while started.load(Ordering::Acquire) < n as u64 {
            assert!(Instant::now() < deadline, "B's echo clients did not all start");
            std::thread::sleep(Duration::from_millis(5));
        }
        EchoLoad { stop, clients }
    }

    /// Stops the clients; each got every byte back (a client that did not
    /// panics, and so fails the test here).
    fn finish(self) {
        self.stop.store(true, Ordering::Release);
        let (mut trips, mut bytes) = (0, 0);
        for (i, c) in self.clients.into_iter().enumerate() {
            let (t, b) = c.join().unwrap_or_else(|_| panic!("echo client {i} failed"));
            trips += t;
            bytes += b;
        }
        eprintln!("hostile: B's {ECHO_CLIENTS} echo clients made {trips} round trips, {bytes} bytes, all exact");
    }
}

/// A command connection to the hostile guest.
struct Conn {
    s: TcpStream,
    lines: BufReader<TcpStream>,
}

impl Conn {
    fn open(addr: SocketAddr) -> Conn {
        let s = connect(addr);
        let lines = BufReader::new(s.try_clone().unwrap());
        Conn { s, lines }
    }

    fn send(&mut self, command: &str) {
        self.s.write_all(format!("{command}\n").as_bytes()).expect("writing a command");
    }

    /// The next answer line, without its newline.
    fn line(&mut self) -> String {
        let mut line = String::new();
        let n = self.lines.read_line(&mut line).expect("reading an answer");
        assert!(n > 0, "the connection closed before answering");
        line.trim_end().to_string()
    }

    fn ask(&mut self, command: &str) -> String {
        self.send(command);
        self.line()
    }

    /// Reads what is left until EOF (a reset counts as the end too); returns
    /// it and whether it ended with a reset.
    fn rest(&mut self) -> (Vec<u8>, bool) {
        let mut got = self.lines.buffer().to_vec();
        self.lines.consume(got.len());
        let mut buf = [0u8; 64 << 10];
        loop {
            match self.lines.get_mut().read(&mut buf) {
                Ok(0) => return (got, false),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, true),
                Err(e) => panic!("reading to the end: {e}"),
            }
        }
    }
}

/// The numbers of a `kv stored S refused R errors E used U` answer.
fn kv_answer(line: &str) -> (u64, u64, u64, u64) {
    let w: Vec<&str> = line.split_whitespace().collect();
    assert!(w.len() == 9 && w[0] == "kv", "unexpected answer `{line}`");
    let n = |i: usize| w[i].parse::<u64>().unwrap_or_else(|_| panic!("unexpected answer `{line}`"));
    (n(2), n(4), n(6), n(8))
}

/// The `key=N` numbers of the log lines containing `needle`.
fn logged_number(log: &str, needle: &str, key: &str) -> Vec<u64> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.split(&format!("{key}=")).nth(1)?.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Four connections flood the shared key-value store with 64 KiB values,
/// 10 MiB offered against a 4 MiB budget: every set past it is refused with
/// `out of budget`, none fails otherwise, the store ends full to within one
/// value, and a larger value is refused too.
#[test]
fn a_key_value_flood_is_refused_at_the_budget() {
    const CONNS: u64 = 4;
    const KEYS: u64 = 40;
    const SIZE: u64 = 64 * KIB;
    let t = Tenants::start("pier=debug,warn");
    let load = EchoLoad::start(t.b, ECHO_CLIENTS);
    let watch = RssWatch::start(&t.pier);
    let a = t.a;
    let floods: Vec<_> =
        (0..CONNS).map(|_| std::thread::spawn(move || Conn::open(a).ask(&format!("kv {KEYS} {SIZE}")))).collect();
    let answers: Vec<_> = floods.into_iter().map(|f| kv_answer(&f.join().expect("kv flood"))).collect();
    let stored: u64 = answers.iter().map(|a| a.0).sum();
    let refused: u64 = answers.iter().map(|a| a.1).sum();
    for &(s, r, e, _) in &answers {
        assert_eq!(e, 0, "a set failed other than by the budget: {answers:?}");
        assert_eq!(s + r, KEYS, "{answers:?}");
    }
    assert!(refused > 0, "10 MiB went into a 4 MiB store: {answers:?}");
    // Each stored key costs its value, its key (under 32 bytes) and 96.
    assert!(stored * (SIZE + 96) <= A.kv_max_bytes, "{stored} values of 64 KiB in a 4 MiB store");
    let mut c = Conn::open(t.a);
    let (_, _, _, used) = kv_answer(&c.ask("kv 0 0"));
    assert!(used <= A.kv_max_bytes && used > A.kv_max_bytes - (SIZE + 96 + 32), "used {used} of 4 MiB");
    assert_eq!(kv_answer(&c.ask("kv 1 1048576")).1, 1, "a 1 MiB value is refused in a full store");
    t.assert_rss_bounded("kv flood", watch, CONNS + 1);
    load.finish();
    t.assert_b_answers();
}

/// 200 subscribers that never read: 168 that take their mail and drop it,
/// and 32 whose connections are stalled (finishing, with an outbox the peer
/// never reads), which take no mail at all. A publisher floods all of them
/// with 40,000-byte messages, 2.5 MB to each stalled one: without the
/// listener's budget the stalled mailboxes alone would hold 32 MiB (1 MiB
/// each); with it, pier grows by little more than backplane-max-bytes
/// (1 MiB). Once the subscribers are gone, their undelivered bytes leave the
/// budget: a new subscriber gets its mail.
///
/// The size is chosen so that the budget never fills to the byte: at most
/// 26 messages (1,040,000 bytes) are undelivered at once, so the short
/// `report` the test synchronises on always fits.
#[test]
fn a_publish_flood_to_subscribers_that_never_read_stays_within_the_backplane_budget() {
    const PLAIN: usize = 168;
    const STALLED: usize = 32;
    const SIZE: u64 = 40_000;
    // The backplane logs every dropped message at debug: keep those out,
    // and the connections' ends in.
    let t = Tenants::start("pier=info,pier::listener=debug,warn");
    let load = EchoLoad::start(t.b, ECHO_CLIENTS);
    let mut plain: Vec<Conn> = (0..PLAIN).map(|_| Conn::open(t.a)).collect();
    for c in &mut plain {
        assert_eq!(c.ask("subscribe fan 1"), "subscribed 1");
    }
    let stalled: Vec<Conn> = (0..STALLED)
        .map(|i| {
            let mut c = Conn::open(t.a);
            assert_eq!(c.ask(&format!("subscribe stall{i}- 1")), "subscribed 1");
            // From here on the test never reads this connection.
            c.send("stall");
            c
        })
        .collect();
    t.pier.wait_for_logs("hostile stalled after", STALLED);
    let mut publisher = Conn::open(t.a);
    // To the subscribers that take their mail: each has taken all of it
    // once it answers the report (one mailbox, in order). Each instance's
    // linear memory grows by about one message (the call's argument),
    // which the bound counts besides the budget.
    let before = t.pier.rss_kib();
    let watch = RssWatch::start(&t.pier);
    assert_eq!(publisher.ask(&format!("publish fan0 200 {SIZE}")), "published 200");
    assert_eq!(publisher.ask("report fan0"), "reported");
    for (i, c) in plain.iter_mut().enumerate() {
        let line = c.line();
        let received: u64 = line.strip_prefix("received ").and_then(|n| n.parse().ok()).unwrap_or_else(|| {
            panic!("plain subscriber {i}: unexpected `{line}`");
        });
        assert!(received <= 200, "subscriber {i} received {received} of 200");
    }
    let peak = watch.stop();
    let grown = peak.max(t.pier.rss_kib()).saturating_sub(before);
    let bound = (A.backplane_max_bytes + PLAIN as u64 * (SIZE + 64 * KIB) + 8 * MIB) / KIB;
    eprintln!(
        "hostile publish flood, {PLAIN} subscribers that take their mail: RSS before {before} KiB (start {} KiB), peak {peak} KiB: grew {grown} KiB; bound {bound} KiB",
        t.rss_start
    );
    assert!(grown < bound, "a backplane flood grew pier by {grown} KiB, past {bound} KiB");
    // To the subscribers that take none: all that may stay is the budget.
    let before = t.pier.rss_kib();
    let watch = RssWatch::start(&t.pier);
    for i in 0..STALLED {
        assert_eq!(publisher.ask(&format!("publish stall{i}-0 64 {SIZE}")), "published 64");
    }
    let peak = watch.stop();
    let grown = peak.max(t.pier.rss_kib()).saturating_sub(before);
    let bound = (A.backplane_max_bytes + 4 * MIB) / KIB;
    eprintln!(
        "hostile publish flood, {STALLED} stalled subscribers: RSS before {before} KiB, peak {peak} KiB: grew {grown} KiB; bound {bound} KiB (without the budget: {} KiB more)",
        STALLED * 1024
    );
    assert!(grown < bound, "a backplane flood grew pier by {grown} KiB, past backplane-max-bytes + 4 MiB");
    let watch = RssWatch::start(&t.pier);
    let connections = (PLAIN + STALLED + 1) as u64;
    drop(stalled);
    drop(plain);
    // Each stalled subscriber lost most of its 64 messages, and says so as
    // its connection ends.
    let log = t.pier.wait_for_logs("backplane messages dropped", STALLED);
    let dropped: u64 = logged_number(&log, "backplane messages dropped", "dropped").iter().sum();
    assert!(dropped >= (STALLED * 38) as u64, "only {dropped} messages dropped");
    t.pier.wait_for_logs("connection closed", PLAIN + STALLED);
    // The budget is whole again: new mail is delivered.
    let mut late = Conn::open(t.a);
    assert_eq!(late.ask("subscribe late 1"), "subscribed 1");
    assert_eq!(publisher.ask(&format!("publish late0 3 {SIZE}")), "published 3");
    assert_eq!(publisher.ask("report late0"), "reported");
    assert_eq!(late.line(), "received 3", "the budget was not released with the subscribers");
    t.assert_rss_bounded("publish flood", watch, connections + 1);
    load.finish();
    t.assert_b_answers();
}

/// A connection subscribing to 1000 topics gets the first 64 (the host's
/// cap per connection); 20 connections asking for 10,000 each cost pier
/// next to nothing.
#[test]
fn subscriptions_are_capped_per_connection() {
    const CAP: u64 = 64;
    let t = Tenants::start("pier=info,warn");
    let load = EchoLoad::start(t.b, ECHO_CLIENTS);
    let watch = RssWatch::start(&t.pier);
    let mut sub = Conn::open(t.a);
    assert_eq!(sub.ask("subscribe cap 1000"), "subscribed 1000");
    let mut publisher = Conn::open(t.a);
    // Pipelined: one message to each of cap1..cap999, then the report on
    // cap0, which the subscriber answers after every message before it.
    for i in 1..1000 {
        publisher.send(&format!("publish cap{i} 1 16"));
    }
    publisher.send("report cap0");
    for _ in 1..1000 {
        assert_eq!(publisher.line(), "published 1");
    }
    assert_eq!(publisher.line(), "reported");
    assert_eq!(sub.line(), format!("received {}", CAP - 1), "topics past the cap delivered");
    let a = t.a;
    let greedy: Vec<_> = (0..20)
        .map(|i| std::thread::spawn(move || Conn::open(a).ask(&format!("subscribe greedy{i}- 10000"))))
        .collect();
    for g in greedy {
        assert_eq!(g.join().expect("greedy subscriber"), "subscribed 10000");
    }
    t.assert_rss_bounded("subscriptions", watch, 22);
    load.finish();
    t.assert_b_answers();
}

/// A connection logging 20,000 lines writes about `log-rate` of them and
/// counts the rest in one line; one logging until its cpu-limit ends the
/// call writes no more than the rate allows over that time.
#[test]
fn a_log_flood_is_cut_to_the_rate_and_counted() {
    let t = Tenants::start("pier=debug,warn");
    let load = EchoLoad::start(t.b, ECHO_CLIENTS);
    let watch = RssWatch::start(&t.pier);
    let start = Instant::now();
    let mut c = Conn::open(t.a);
    assert_eq!(c.ask("log 20000"), "logged 20000");
    drop(c);
    let log = t.pier.wait_for_log("guest log lines dropped past log-rate");
    let elapsed = start.elapsed().as_secs_f64();
    let written = log.matches("hostile log line").count() as u64;
    let dropped = logged_number(&log, "past log-rate", "dropped");
    assert_eq!(dropped.len(), 1, "one summary line");
    assert_eq!(written + dropped[0], 20_000, "every line written or counted");
    let allowed = A_LOG_RATE + (A_LOG_RATE as f64 * elapsed) as u64 + 1;
    assert!(written <= allowed, "{written} lines written in {elapsed:.2} s at {A_LOG_RATE}/s");
    // Until the call is cut: at most the burst plus the rate over the call.
    let start = Instant::now();
    let mut c = Conn::open(t.a);
    c.send("log");
    let (_, _) = c.rest();
    // The summary comes as the instance is dropped, just before the reason.
    t.pier.wait_for_log("reason=cpu-limit");
    let log = t.pier.wait_for_logs("guest log lines dropped past log-rate", 2);
    let elapsed = start.elapsed().as_secs_f64();
    let endless = log.matches("hostile log line").count() as u64 - written;
    let allowed = A_LOG_RATE + (A_LOG_RATE as f64 * elapsed) as u64 + 1;
    assert!(endless <= allowed, "{endless} lines written in {elapsed:.2} s at {A_LOG_RATE}/s");
    let dropped = logged_number(&log, "past log-rate", "dropped");
    assert!(dropped.len() == 2 && dropped[1] > 0, "{dropped:?}");
    eprintln!("hostile log flood: {written} + {endless} lines written, {dropped:?} dropped");
    t.assert_rss_bounded("log flood", watch, 2);
    load.finish();
    t.assert_b_answers();
}

/// 16 connections each try one `send` of 12 MiB (under their 16 MiB memory
/// limit, 192 times the high-water mark) to peers that do not read yet: the
/// host refuses it (`too-large`), or takes it and pier must still stay
/// within the bound, which counts twice the high-water mark per connection,
/// not the send. (A host that queued a copy of each send would hold 16 ×
/// 12 MiB more, less what the sockets took.)
#[test]
fn a_huge_send_is_refused_or_bounded() {
    const CONNS: usize = 16;
    const SIZE: usize = 12 << 20;
    let t = Tenants::start("pier=debug,warn");
    let load = EchoLoad::start(t.b, ECHO_CLIENTS);
    let watch = RssWatch::start(&t.pier);
    let mut conns: Vec<Conn> = (0..CONNS).map(|_| Conn::open(t.a)).collect();
    for c in &mut conns {
        c.send(&format!("send {SIZE}"));
    }
    let log = t.pier.wait_for_logs("hostile send ", CONNS);
    eprintln!("hostile huge send: {}", log.lines().find(|l| l.contains("hostile send ")).unwrap());
    // Measured while every send is held (or was refused) and nobody reads.
    // The guests' own copies (12 MiB each, in their linear memory) are
    // most of it; so the bound that catches a host copy of the send counts
    // each guest's memory as what it touched (the send and 2 MiB besides)
    // rather than the whole memory-limit.
    let touched = Budgets { memory_limit: SIZE as u64 + 2 * MIB, ..A };
    t.assert_rss_within("huge send (guest memory as touched)", watch, touched, CONNS as u64);
    for (i, c) in conns.iter_mut().enumerate() {
        c.s.shutdown(std::net::Shutdown::Write).unwrap();
        let (got, reset) = c.rest();
        assert!(!reset, "connection {i} was reset");
        let text = String::from_utf8_lossy(&got);
        let at = text.rfind("send ").unwrap_or_else(|| panic!("connection {i}: no answer"));
        let (payload, answer) = (&got[..at], text[at..].trim_end());
        match answer {
            "send ok" => assert!(payload.len() == SIZE && payload.iter().all(|&b| b == b'x'), "connection {i}"),
            refused => {
                assert!(refused.contains("TooLarge"), "connection {i}: `{refused}`");
                assert!(payload.is_empty(), "connection {i}: a refused send sent {} bytes", payload.len());
            }
        }
    }
    load.finish();
    t.assert_b_answers();
}

/// A guest that makes WASI resources without end hits the host's table cap
/// (1024 entries) and loses its connection, trapped; one that stays under
/// it gets them back when it drops them; a neighbour on A goes on.
#[test]
fn wasi_resource_exhaustion_ends_only_that_connection() {
    let t = Tenants::start("pier=debug,warn");
    let load = EchoLoad::start(t.b, ECHO_CLIENTS);
    let watch = RssWatch::start(&t.pier);
    let mut neighbour = Conn::open(t.a);
    assert_eq!(neighbour.ask("ping"), "pong");
    let mut modest = Conn::open(t.a);
    for _ in 0..3 {
        modest.send("wasi 500");
        for k in 1..=5 {
            assert_eq!(modest.line(), format!("wasi made {}", k * 100));
        }
        assert_eq!(modest.line(), "wasi done 500", "resources given back are made again");
    }
    let mut greedy: Vec<Conn> = (0..10).map(|_| Conn::open(t.a)).collect();
    for c in &mut greedy {
        c.send("wasi");
    }
    for (i, c) in greedy.iter_mut().enumerate() {
        let (got, _) = c.rest();
        let text = String::from_utf8_lossy(&got);
        let made: u64 = text.lines().filter_map(|l| l.strip_prefix("wasi made ")?.parse().ok()).max().unwrap_or(0);
        assert!(!text.contains("wasi done"), "connection {i} made endless resources: {text}");
        assert!((100..1024).contains(&made), "connection {i} made {made} resources");
        if i == 0 {
            eprintln!("hostile wasi: the first greedy connection reported {made} resources made before it ended");
        }
    }
    let log = t.pier.wait_for_logs("handler failed; connection closed reason=trapped", 10);
    let line = log.lines().find(|l| l.contains("reason=trapped")).unwrap();
    eprintln!("hostile wasi: {line}");
    assert_eq!(neighbour.ask("ping"), "pong");
    modest.send("wasi 500");
    let after: Vec<String> = (0..6).map(|_| modest.line()).collect();
    assert_eq!(after.last().map(String::as_str), Some("wasi done 500"), "after the traps: {after:?}");
    t.assert_rss_bounded("wasi exhaustion", watch, 12);
    load.finish();
    t.assert_b_answers();
}

/// Every odd order of outbox calls, each on its own connection, ends as the
/// WIT says and never takes the host down.
#[test]
fn odd_outbox_orders_end_each_connection_as_the_wit_says() {
    let t = Tenants::start("pier=debug,warn");
    let load = EchoLoad::start(t.b, ECHO_CLIENTS);
    let watch = RssWatch::start(&t.pier);
    let ended = |order: &str, expect: &[u8]| {
        let mut c = Conn::open(t.a);
        c.send(order);
        let (got, reset) = c.rest();
        assert!(!reset, "{order}: reset");
        assert!(expect.starts_with(&got), "{order}: got {:?}", String::from_utf8_lossy(&got));
        got.len()
    };
    // close, then send: nothing comes, the send is refused.
    ended("odd1", b"");
    t.pier.wait_for_log("odd1 send after close: closed");
    // send, finish twice, send: the first bytes, in full; the last refused.
    assert_eq!(ended("odd2", b"odd2 a\n"), 7, "finish loses nothing queued");
    t.pier.wait_for_log("odd2 send after finish: closed");
    // send, finish, close: a prefix (close drops what is still queued).
    ended("odd3", b"odd3 a\n");
    // close twice, finish, pause, resume, send: closed.
    ended("odd7", b"");
    t.pier.wait_for_log("odd7 send after close: closed");
    // finish with nothing queued, then pause; the outbox again from
    // shutdown-csa, which is told `finished`.
    ended("odd8", b"");
    t.pier.wait_for_log("odd8 shutdown-csa finished send: closed");
    // Orders that keep the connection: it still reads and answers.
    for (order, answer) in [("odd4", "odd4 ok"), ("odd5", "odd5 ok"), ("odd6", "odd6 ok ok")] {
        let mut c = Conn::open(t.a);
        assert_eq!(c.ask(order), answer);
        assert_eq!(c.ask("ping"), "pong", "{order}: the connection stopped reading");
        c.s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(c.rest(), (Vec::new(), false), "{order}: end-of-input, then finish");
    }
    // The reasons the host logs for A's connections: wait for all eight.
    let log = {
        let deadline = Instant::now() + STEP;
        loop {
            let log = t.pier.stderr();
            let n = log.lines().filter(|l| l.contains("listener=\"a\"") && l.contains("connection closed")).count();
            if n >= 8 || Instant::now() > deadline {
                break log;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let count = |reason: &str| {
        log.lines()
            .filter(|l| l.contains("listener=\"a\"") && l.ends_with(&format!("connection closed reason={reason}")))
            .count()
    };
    assert_eq!(count("closed"), 3, "odd1, odd3, odd7 closed:\n{log}");
    assert_eq!(count("finished"), 2, "odd2, odd8 finished:\n{log}");
    assert_eq!(count("peer-closed"), 3, "odd4, odd5, odd6 saw end-of-input:\n{log}");
    assert_eq!(Conn::open(t.a).ask("ping"), "pong");
    t.assert_rss_bounded("odd orders", watch, 2);
    load.finish();
    t.assert_b_answers();
}

/// A connection whose every call burns ~900 ms, each under the cpu-limit,
/// is ended by its 3 s cpu-budget after at most three answers, and not by
/// the deadline of any one call.
#[test]
fn slow_calls_forever_are_ended_by_the_cpu_budget() {
    let t = Tenants::start("pier=debug,warn");
    let load = EchoLoad::start(t.b, ECHO_CLIENTS);
    let watch = RssWatch::start(&t.pier);
    let mut neighbour = Conn::open(t.a);
    let mut c = Conn::open(t.a);
    assert_eq!(c.ask("slow 900"), "slow");
    let mut answers = 0;
    let mut took = Vec::new();
    loop {
        let asked = Instant::now();
        if c.s.write_all(b"again\n").is_err() {
            break;
        }
        let mut line = String::new();
        match c.lines.read_line(&mut line) {
            Ok(n) if n > 0 => {
                answers += 1;
                took.push(asked.elapsed());
                assert_eq!(line, format!("slow {answers}\n"));
            }
            _ => break,
        }
        assert!(answers < 10, "the budget never ran out");
    }
    t.pier.wait_for_log("reason=cpu-budget");
    eprintln!("hostile slow calls: {answers} answers ({took:?}) before reason=cpu-budget");
    // Three on a quiet machine; the budget counts the time spent inside the
    // calls, so on a loaded one (the suite's tests in parallel on 2 cores)
    // it is spent sooner: one run saw a single answer.
    assert!((1..=3).contains(&answers), "{answers} calls of 900 ms in a 3 s budget");
    assert!(!t.pier.stderr().contains("reason=cpu-limit"), "a call was cut by its deadline instead");
    assert_eq!(neighbour.ask("ping"), "pong");
    t.assert_rss_bounded("slow calls", watch, 2);
    load.finish();
    t.assert_b_answers();
}
