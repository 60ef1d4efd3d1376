//! Test harness: start the real `pier` binary, find its ports from its
//! `listening` lines, talk to it over TCP. Every wait has a deadline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest any single step of a test may wait.
pub const STEP: Duration = Duration::from_secs(10);

/// `target/` of this workspace, found from the test binary's own path.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/all-<hash>
    exe.ancestors().nth(3).expect("target dir").to_path_buf()
}

/// A guest built by `make build`.
pub fn guest(name: &str) -> PathBuf {
    let path = target_dir().join("wasm32-wasip2/release").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is missing: run `make build` first", path.display());
    path
}

/// Where the pier processes of the tests keep their compile cache (their
/// `$XDG_CACHE_HOME`): under target/, not the user's own.
pub fn test_cache_home() -> PathBuf {
    target_dir().join("test-cache")
}

pub fn pier_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pier"))
}

/// A running `pier serve`; killed on drop, its stderr printed if the test failed.
pub struct Pier {
    child: Child,
    pub addrs: Vec<(String, SocketAddr)>,
    /// The `metrics` line's address, with `--metrics`.
    pub metrics: Option<SocketAddr>,
    stderr: Arc<Mutex<String>>,
}

impl Pier {
    /// Starts `pier serve ARGS` and waits for `listeners` `listening` lines.
    pub fn start(args: &[&str], listeners: usize) -> Pier {
        Pier::start_with(args, listeners, |_| {})
    }

    /// [`Pier::start`], with a last say on the command (its limits, say).
    pub fn start_with(args: &[&str], listeners: usize, setup: impl FnOnce(&mut Command)) -> Pier {
        let mut cmd = Command::new(pier_bin());
        cmd.arg("serve")
            .args(args)
            .env("RUST_LOG", "pier=debug,warn")
            .env("XDG_CACHE_HOME", test_cache_home())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        setup(&mut cmd);
        let mut child = cmd.spawn().expect("spawning pier");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            let mut line = String::new();
            while err.read_line(&mut line).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let (tx, rx) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut pier = Pier { child, addrs: Vec::new(), metrics: None, stderr };
        let deadline = Instant::now() + STEP;
        while pier.addrs.len() < listeners {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!("pier printed no `listening` line in time; stderr:\n{}", pier.stderr()),
            };
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let ["metrics", addr] = parts[..] {
                pier.metrics = Some(addr.parse().expect("metrics address"));
                continue;
            }
            assert_eq!(parts.len(), 3, "unexpected stdout line `{line}`");
            assert_eq!(parts[0], "listening", "unexpected stdout line `{line}`");
            pier.addrs.push((parts[1].to_string(), parts[2].parse().expect("listening address")));
        }
        pier
    }

    /// Serves one guest on 127.0.0.1, any port, with extra `pier serve` flags.
    pub fn serve(guest_name: &str, extra: &[&str]) -> Pier {
        let plugin = guest(guest_name);
        let mut args = vec!["--listen", "127.0.0.1:0", "--plugin", plugin.to_str().unwrap()];
        args.extend_from_slice(extra);
        Pier::start(&args, 1)
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[0].1
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0, "kill failed");
    }

    /// Waits for the process to exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until stderr contains `needle`, at most `STEP`.
    #[allow(dead_code, reason = "used by some test modules only")]
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_logs(needle, 1)
    }

    /// Waits until stderr contains `needle` at least `count` times.
    pub fn wait_for_logs(&self, needle: &str, count: usize) -> String {
        let deadline = Instant::now() + STEP;
        loop {
            let text = self.stderr();
            if text.matches(needle).count() >= count {
                return text;
            }
            assert!(Instant::now() < deadline, "pier never logged `{needle}` {count} times; stderr:\n{text}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident set size of the server process, in KiB (from /proc).
    #[allow(dead_code, reason = "used by some test modules only")]
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Open file descriptors of the server process (entries of /proc/PID/fd).
    #[allow(dead_code, reason = "used by some test modules only")]
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).expect("proc fd").count()
    }

    /// Whether the server process holds a listening socket on `port`, as
    /// Linux reports it (`/proc/net/tcp{,6}` state 0A, matched to the
    /// process's fds by inode). Unlike a connect, another process that
    /// happens to bind the freed port cannot make this true.
    #[allow(dead_code, reason = "used by some test modules only")]
    pub fn listens_on(&self, port: u16) -> bool {
        let mut inodes = Vec::new();
        for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                let local_port = f.get(1).and_then(|a| a.rsplit_once(':')).map(|(_, p)| p);
                if f.len() > 9 && f[3] == "0A" && local_port == Some(&format!("{port:04X}")) {
                    inodes.push(format!("socket:[{}]", f[9]));
                }
            }
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else { return false };
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|link| inodes.iter().any(|i| link.as_os_str() == i.as_str()))
        })
    }
}

impl Drop for Pier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- pier stderr ----\n{}", self.stderr());
        }
    }
}

/// Runs `pier ARGS` to completion (at most `STEP`), for commands that exit.
pub fn run_pier(args: &[&str]) -> Output {
    let mut child = Command::new(pier_bin())
        .args(args)
        .env("XDG_CACHE_HOME", test_cache_home())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning pier");
    let deadline = Instant::now() + STEP;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("`pier {}` did not exit within {STEP:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().expect("pier output")
}

/// A client socket whose every read and write times out.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, STEP).expect("connect");
    s.set_read_timeout(Some(STEP)).unwrap();
    s.set_write_timeout(Some(STEP)).unwrap();
    s
}

/// Reads exactly `n` bytes.
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    s.read_exact(&mut buf).expect("read_exact");
    buf
}

/// Reads until the peer closes; panics on timeout or reset.
pub fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).expect("read to EOF");
    buf
}

/// Sends `data`, closes the write side, returns everything read back.
pub fn exchange(addr: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    let writer = {
        let mut w = s.try_clone().unwrap();
        let data = data.to_vec();
        std::thread::spawn(move || {
            w.write_all(&data).expect("write");
            w.shutdown(Shutdown::Write).expect("shutdown");
        })
    };
    let got = read_to_eof(&mut s);
    writer.join().unwrap();
    got
}

/// Writes 1 MiB chunks of `byte` to a peer that does not read until a write
/// blocks for 2 s, or `most` bytes went; returns the bytes written. For
/// tests that stall a pipeline on purpose.
#[allow(dead_code, reason = "used by some test modules only")]
pub fn write_until_stalled(s: &mut TcpStream, byte: u8, most: usize) -> usize {
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let chunk = vec![byte; 1 << 20];
    let mut written = 0;
    while written < most {
        match s.write(&chunk) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    written
}

/// A deterministic byte pattern unique to `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes a config file whose `{guest:NAME}` placeholders become guest paths.
pub fn config_file(dir: &std::path::Path, text: &str) -> String {
    let mut text = text.to_string();
    while let Some(start) = text.find("{guest:") {
        let end = start + text[start..].find('}').unwrap();
        let name = &text[start + 7..end];
        let path = guest(name).to_str().unwrap().to_string();
        text.replace_range(start..=end, &path);
    }
    let path = dir.join("pier.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// Runs `redis-cli -p PORT ARGS` (one connection, one command) and returns
/// its output, trimmed.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("timeout")
        .args(["20", "redis-cli", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli (`make setup` installs redis-tools)");
    assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// The `key=value` field of the first log line holding every one of
/// `needles`, parsed: a pid, an address pier logged.
#[allow(dead_code, reason = "used by some test modules only")]
pub fn log_field<T: std::str::FromStr>(log: &str, needles: &[&str], key: &str) -> Option<T> {
    let line = log.lines().find(|l| needles.iter().all(|n| l.contains(n)))?;
    line.split(&format!("{key}=")).nth(1)?.split_whitespace().next()?.parse().ok()
}

/// Test certificates made with the real `openssl` CLI: a CA, a server
/// certificate it signed for `localhost` and 127.0.0.1, and a client
/// certificate (`CN=alice`) it signed too. Nothing is committed: each test
/// makes its own in its temporary directory.
#[allow(dead_code, reason = "used by some test modules only")]
pub struct Certs {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

#[allow(dead_code, reason = "used by some test modules only")]
pub fn tls_certs(dir: &std::path::Path) -> Certs {
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl (`make setup`)");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        &[
            &["req", "-x509"],
            &ec[..],
            &["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=pier test CA", "-days", "2"],
        ]
        .concat(),
    );
    let sign = |name: &str, subject: &str, ext: &str| {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            &[
                &["req"],
                &ec[..],
                &["-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr"), "-subj", subject],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    };
    sign("server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n");
    sign("client", "/CN=alice/O=Example", "extendedKeyUsage=clientAuth\n");
    Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    }
}

/// A `redis-server` on a free loopback port, without persistence; killed
/// on drop.
#[allow(dead_code, reason = "used by some test modules only")]
pub struct RedisServer {
    child: Child,
    pub addr: SocketAddr,
}

impl RedisServer {
    #[allow(dead_code, reason = "used by some test modules only")]
    pub fn start() -> RedisServer {
        // The port is free when asked; another process taking it before
        // redis-server binds makes redis-server exit, and we try again.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut server = RedisServer { child: Self::spawn(port), addr: SocketAddr::from(([127, 0, 0, 1], port)) };
            if server.ready() {
                return server;
            }
        }
        panic!("redis-server did not start");
    }

    fn spawn(port: u16) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (`make setup-test` installs it)")
    }

    /// `redis://` and its address.
    #[allow(dead_code, reason = "used by some test modules only")]
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Stops it (SIGKILL: an outage, not a goodbye).
    #[allow(dead_code, reason = "used by some test modules only")]
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends it `sig` (SIGSTOP: a Redis that hangs, SIGCONT: back).
    #[allow(dead_code, reason = "used by some test modules only")]
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0, "kill failed");
    }

    /// Starts it again on the same port, empty.
    #[allow(dead_code, reason = "used by some test modules only")]
    pub fn restart(&mut self) {
        self.stop();
        for _ in 0..5 {
            self.child = Self::spawn(self.addr.port());
            if self.ready() {
                return;
            }
        }
        panic!("redis-server did not start again on {}", self.addr);
    }

    /// Retries PING until it answers, the process exits, or the deadline.
    fn ready(&mut self) -> bool {
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if let Ok(mut s) = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
                let mut pong = [0; 7];
                if s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut pong).is_ok() && &pong == b"+PONG\r\n" {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one HTTP response head (up to the blank line) and its
/// `Content-Length` body; the head as text and the body.
#[allow(dead_code, reason = "used by some test modules only")]
pub fn read_http_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("a response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .unwrap_or(0);
    (head, read_n(s, length))
}

/// The value of the series `series` (whole, labels included) on pier's
/// /metrics; 0 if absent.
#[allow(dead_code, reason = "used by some test modules only")]
pub fn metric(pier: &Pier, series: &str) -> u64 {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", &format!("http://{}/metrics", pier.metrics.unwrap())])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let prefix = format!("{series} ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).map_or(0, |n| n.parse().unwrap())
}

/// A client of the chat guest (Rust or Python): its nick, from the
/// welcome line.
#[allow(dead_code, reason = "used by some test modules only")]
pub struct Chatter {
    w: TcpStream,
    r: BufReader<TcpStream>,
    pub nick: String,
}

#[allow(dead_code, reason = "used by some test modules only")]
impl Chatter {
    /// Connects and reads the welcome line, which names the client.
    pub fn join(addr: SocketAddr) -> Chatter {
        let w = connect(addr);
        let mut r = std::io::BufReader::new(w.try_clone().unwrap());
        let mut welcome = String::new();
        r.read_line(&mut welcome).unwrap();
        let nick =
            welcome.strip_prefix("* welcome ").and_then(|t| t.split(';').next()).expect("welcome line").to_string();
        Chatter { w, r, nick }
    }

    pub fn say(&mut self, line: &str) {
        self.w.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// The next line (within `STEP`).
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).expect("a line in time");
        line
    }

    /// Everything left until the server closes; panics on timeout or reset.
    pub fn rest(&mut self) -> String {
        let mut rest = String::new();
        self.r.read_to_string(&mut rest).expect("read to EOF");
        rest
    }

    /// The next line within `wait`, if any.
    pub fn line_within(&mut self, wait: Duration) -> Option<String> {
        self.w.set_read_timeout(Some(wait)).unwrap();
        let mut line = String::new();
        let got = match self.r.read_line(&mut line) {
            Ok(n) if n > 0 => Some(line),
            Ok(_) => panic!("{} was disconnected", self.nick),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => None,
            Err(e) => panic!("{}: {e}", self.nick),
        };
        self.w.set_read_timeout(Some(STEP)).unwrap();
        got
    }

    /// Asserts that nothing arrives for a moment.
    pub fn quiet(&mut self) {
        if let Some(line) = self.line_within(Duration::from_millis(200)) {
            panic!("{} got something unexpected: {line:?}", self.nick);
        }
    }

    /// Reads lines until `want`, skipping join and leave notices; panics
    /// on anything else, or at the deadline.
    pub fn expect(&mut self, want: &str) {
        let deadline = Instant::now() + STEP;
        while Instant::now() < deadline {
            match self.line_within(Duration::from_millis(200)) {
                Some(line) if line == want => return,
                Some(line) if line.starts_with("* ") => {}
                Some(line) => panic!("{} expected {want:?}, got {line:?}", self.nick),
                None => {}
            }
        }
        panic!("{} never got {want:?}", self.nick);
    }

    /// Says `line` again and again until `other` hears it (a subscription
    /// in another process may take a moment to reach Redis); then drains
    /// the repeats.
    pub fn say_until_heard(&mut self, other: &mut Chatter, line: &str) {
        let want = format!("<{}> {line}\n", self.nick);
        let deadline = Instant::now() + STEP;
        loop {
            assert!(Instant::now() < deadline, "{} never heard {want:?}", other.nick);
            self.say(line);
            if other.line_within(Duration::from_millis(200)).is_some_and(|got| got == want) {
                break;
            }
        }
        self.say("sync");
        let sync = format!("<{}> sync\n", self.nick);
        while other.line_within(STEP).expect("the sync line") != sync {}
    }
}
