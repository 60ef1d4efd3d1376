//! `proxy-protocol = true`: pier behind real load balancers that send the
//! PROXY protocol header (HAProxy 2.6's `send-proxy-v2` and `send-proxy`,
//! in TCP mode in front of two pier processes; nginx's stream module with
//! `proxy_protocol on`), and raw clients sending headers split over
//! segments, garbage, silence, v2 `LOCAL` and v1 `UNKNOWN`. The handler's
//! `connection-info.peer` (the misbehave guest's `peer` command), the log
//! span, `/connections`, the server events and the end counters all name
//! the client, never the balancer. The balancers run on loopback ports
//! picked free, from a config in the test's temporary directory, and are
//! stopped when the test ends (SIGTERM, then SIGKILL).

use crate::common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A balancer process (haproxy, nginx): stopped on drop, its output printed
/// if the test failed.
struct Balancer {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Balancer {
    /// Starts `cmd`, its output to `log`, and waits until it accepts on
    /// every one of `ports`.
    fn start(name: &'static str, mut cmd: Command, log: PathBuf, ports: &[u16]) -> Balancer {
        let out = std::fs::File::create(&log).unwrap();
        cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("{name}: {e} (`make setup-test` installs it)"));
        let mut balancer = Balancer { name, child, log };
        let deadline = Instant::now() + STEP;
        for &port in ports {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Some(status) = balancer.child.try_wait().unwrap() {
                    panic!("{name} exited ({status}) before listening on {addr}:\n{}", balancer.output());
                }
                assert!(Instant::now() < deadline, "{name} never listened on {addr}:\n{}", balancer.output());
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        balancer
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Balancer {
    /// SIGTERM, so that it stops whatever it started; SIGKILL if it is
    /// still there after a few seconds.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- {} output ----\n{}", self.name, self.output());
        }
    }
}

/// A loopback port free now (a balancer binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A pier serving `echo` and `peer` (misbehave) listeners, both with
/// `proxy-protocol = true`, from a config file.
fn pier_behind_a_balancer(dir: &Path) -> Pier {
    let config = config_file(
        dir,
        "[[listener]]\nname = \"echo\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:echo}\"\nproxy-protocol = true\n\n\
         [[listener]]\nname = \"peer\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:misbehave}\"\nproxy-protocol = true\n",
    );
    Pier::start(&["--config", &config], 2)
}

fn listener(pier: &Pier, name: &str) -> SocketAddr {
    pier.addrs.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no listener {name}")).1
}

/// Asks the misbehave guest behind `addr` for its `connection-info.peer`;
/// returns its answer and the client socket's own address.
fn handler_peer(addr: SocketAddr) -> (String, SocketAddr) {
    let mut s = connect(addr);
    let me = s.local_addr().unwrap();
    s.write_all(b"peer\n").unwrap();
    (String::from_utf8(read_to_eof(&mut s)).unwrap(), me)
}

/// Whether `log` has a connection span whose peer is `addr`.
fn logged_peer(log: &str, addr: SocketAddr) -> bool {
    log.contains(&format!("peer={addr} ")) || log.contains(&format!("peer={addr}}}"))
}

/// The `via` field (the balancer's connection) of the span whose peer is
/// `addr`.
fn via_of(log: &str, addr: SocketAddr) -> Option<SocketAddr> {
    let line = log.lines().find(|l| l.contains(&format!("peer={addr} ")))?;
    let via = line.split("via=").nth(1)?;
    via.split(|c: char| c == '}' || c.is_whitespace()).next()?.parse().ok()
}

/// Waits until one of `piers` logged a connection from `addr`; its index.
fn which_pier_logged(piers: &[&Pier], addr: SocketAddr) -> usize {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(i) = piers.iter().position(|p| logged_peer(&p.stderr(), addr)) {
            return i;
        }
        assert!(Instant::now() < deadline, "no pier logged peer={addr}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// HAProxy in TCP mode, round robin over two piers, `option` on each
/// server line: echo comes back byte for byte, and each handler sees the
/// test's own client address (its log span too, with HAProxy's connection
/// as `via`), on both piers.
fn behind_haproxy(option: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (pier_behind_a_balancer(dir.path()), pier_behind_a_balancer(dir.path()));
    let (echo_port, peer_port) = (free_port(), free_port());
    let cfg = format!(
        "global\n    nbthread 1\n\ndefaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\n\
         frontend echo\n    bind 127.0.0.1:{echo_port}\n    default_backend echo\n\
         backend echo\n    balance roundrobin\n    server a {} {option}\n    server b {} {option}\n\n\
         frontend peer\n    bind 127.0.0.1:{peer_port}\n    default_backend peer\n\
         backend peer\n    balance roundrobin\n    server a {} {option}\n    server b {} {option}\n",
        listener(&a, "echo"),
        listener(&b, "echo"),
        listener(&a, "peer"),
        listener(&b, "peer"),
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.arg("-f").arg(&path).arg("-db");
    let _haproxy = Balancer::start("haproxy", cmd, dir.path().join("haproxy.log"), &[echo_port, peer_port]);

    for i in 0..4 {
        let data = pattern(i, 3 * 4096 + 17);
        let got = exchange(local(echo_port), &data);
        assert!(got == data, "echo {i} through haproxy: {} bytes back of {}", got.len(), data.len());
    }
    let mut served = [0; 2];
    for _ in 0..6 {
        let (answer, me) = handler_peer(local(peer_port));
        assert_eq!(answer, format!("ok: {me}\n"), "the handler sees the client, not haproxy");
        let i = which_pier_logged(&[&a, &b], me);
        served[i] += 1;
        let log = [&a, &b][i].stderr();
        let via = via_of(&log, me).expect("a via field");
        assert_ne!(via, me, "via is haproxy's connection");
        assert_eq!(via.ip(), me.ip());
    }
    assert!(served.iter().all(|&n| n > 0), "round robin reaches both piers: {served:?}");
    for pier in [&a, &b] {
        assert!(!pier.stderr().contains("proxy-header-invalid"), "{}", pier.stderr());
    }
}

#[test]
fn haproxy_send_proxy_v2_in_front_of_two_piers() {
    behind_haproxy("send-proxy-v2");
}

#[test]
fn haproxy_send_proxy_v1_in_front_of_two_piers() {
    behind_haproxy("send-proxy");
}

/// TLS passes through HAProxy (TCP mode, `send-proxy-v2`) to a TLS
/// listener: the header comes off before the handshake, which then works
/// (curl verifies the certificate), and the connection is curl's own
/// address (listed while it is open, logged once it ends).
#[test]
fn tls_after_the_header_through_haproxy() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_certs(dir.path());
    let (cert, key) = (certs.cert.to_str().unwrap(), certs.key.to_str().unwrap());
    let pier =
        Pier::serve("http", &["--proxy-protocol", "--tls-cert", cert, "--tls-key", key, "--metrics", "127.0.0.1:0"]);
    let port = free_port();
    let cfg = format!(
        "defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         listen https\n    bind 127.0.0.1:{port}\n    server pier {} send-proxy-v2\n",
        pier.addr()
    );
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let mut cmd = Command::new("haproxy");
    cmd.arg("-f").arg(&path).arg("-db");
    let _haproxy = Balancer::start("haproxy", cmd, dir.path().join("haproxy.log"), &[port]);
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert", certs.ca.to_str().unwrap(), "-w", "\n%{http_code} %{local_port}"])
        .arg(format!("https://localhost:{port}/hello"))
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, last) = text.rsplit_once('\n').unwrap();
    let (code, curl_port) = last.split_once(' ').unwrap();
    assert_eq!(code, "200", "{body}");
    let curl = local(curl_port.trim().parse().unwrap());
    let url = format!("http://{}/connections", pier.metrics.unwrap());
    let deadline = Instant::now() + STEP;
    loop {
        let listed = Command::new("curl").args(["-s", "--max-time", "10", &url]).output().expect("curl");
        if String::from_utf8_lossy(&listed.stdout).contains(&format!("\"{curl}\"")) || logged_peer(&pier.stderr(), curl)
        {
            break;
        }
        assert!(Instant::now() < deadline, "pier never named {curl}:\n{}", pier.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// nginx's stream module (`proxy_protocol on`, v1) in front of pier.
#[test]
fn nginx_stream_proxy_protocol_in_front_of_pier() {
    let dir = tempfile::tempdir().unwrap();
    let pier = pier_behind_a_balancer(dir.path());
    let (echo_port, peer_port) = (free_port(), free_port());
    let d = dir.path().display();
    let cfg = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         worker_processes 1;\nerror_log {d}/error.log info;\npid {d}/nginx.pid;\n\
         events {{ worker_connections 64; }}\n\
         stream {{\n\
         \x20   server {{ listen 127.0.0.1:{echo_port}; proxy_pass {}; proxy_protocol on; }}\n\
         \x20   server {{ listen 127.0.0.1:{peer_port}; proxy_pass {}; proxy_protocol on; }}\n\
         }}\n",
        listener(&pier, "echo"),
        listener(&pier, "peer"),
    );
    let path = dir.path().join("nginx.conf");
    std::fs::write(&path, cfg).unwrap();
    let mut cmd = Command::new("nginx");
    cmd.arg("-p").arg(dir.path()).arg("-e").arg(dir.path().join("error.log")).arg("-c").arg(&path);
    cmd.args(["-g", "daemon off;"]);
    let _nginx = Balancer::start("nginx", cmd, dir.path().join("nginx.out"), &[echo_port, peer_port]);

    let (answer, me) = handler_peer(local(peer_port));
    assert_eq!(answer, format!("ok: {me}\n"), "the handler sees the client, not nginx");
    which_pier_logged(&[&pier], me);
    // nginx closes both ways on the client's FIN (no proxy_half_close):
    // read the echo back before closing.
    let mut s = connect(local(echo_port));
    let data = pattern(9, 8 * 1024);
    s.write_all(&data).unwrap();
    assert!(read_n(&mut s, data.len()) == data, "echo through nginx");
    assert!(!pier.stderr().contains("proxy-header-invalid"), "{}", pier.stderr());
}

/// A v2 header: `command` 0 (LOCAL) or 1 (PROXY), TCP over IPv4.
fn v2_header(command: u8, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (source, destination) else { panic!("IPv4 only") };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x20 | command, 0x11, 0, 12 + 4]);
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&d.ip().octets());
    h.extend_from_slice(&s.port().to_be_bytes());
    h.extend_from_slice(&d.port().to_be_bytes());
    h.extend_from_slice(&[0x04, 0x00, 0x01, 0xaa]); // a NOOP TLV, skipped
    h
}

/// Sends `pieces` as separate segments (TCP_NODELAY, a pause between),
/// then `peer\n`; the handler's answer.
fn peer_after(addr: SocketAddr, pieces: &[&[u8]]) -> (String, SocketAddr) {
    let mut s = connect(addr);
    s.set_nodelay(true).unwrap();
    for piece in pieces {
        s.write_all(piece).unwrap();
        std::thread::sleep(Duration::from_millis(30));
    }
    let me = s.local_addr().unwrap();
    s.write_all(b"peer\n").unwrap();
    (String::from_utf8(read_to_eof(&mut s)).unwrap(), me)
}

/// A header split over three writes is read whole; one sent with the
/// first command in the same segment is stripped from it; v1 and v2; the
/// connection's listing and the log name the client the header gave.
#[test]
fn a_header_in_pieces_or_with_data_names_the_client() {
    let pier = Pier::serve("misbehave", &["--proxy-protocol", "--metrics", "127.0.0.1:0"]);
    let v1 = b"PROXY TCP4 192.0.2.7 127.0.0.1 4321 80\r\n";
    let (answer, _) = peer_after(pier.addr(), &[&v1[..5], &v1[5..20], &v1[20..]]);
    assert_eq!(answer, "ok: 192.0.2.7:4321\n");
    let v2 = v2_header(1, "198.51.100.3:999".parse().unwrap(), "127.0.0.1:80".parse().unwrap());
    let (answer, _) = peer_after(pier.addr(), &[&v2[..7], &v2[7..15], &v2[15..]]);
    assert_eq!(answer, "ok: 198.51.100.3:999\n");
    let six = b"PROXY TCP6 2001:db8::5 ::1 6000 80\r\npeer\n";
    let mut s = connect(pier.addr());
    s.write_all(six).unwrap();
    assert_eq!(read_to_eof(&mut s), b"ok: [2001:db8::5]:6000\n", "header and command in one segment");
    pier.wait_for_log("peer=[2001:db8::5]:6000");

    // A connection held open is listed under the client's address.
    let mut held = connect(pier.addr());
    held.write_all(b"PROXY TCP4 203.0.113.50 127.0.0.1 50000 80\r\n").unwrap();
    let url = format!("http://{}/connections", pier.metrics.unwrap());
    let deadline = Instant::now() + STEP;
    loop {
        let out = Command::new("curl").args(["-s", "--max-time", "10", &url]).output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("\"203.0.113.50:50000\"") {
            break;
        }
        assert!(Instant::now() < deadline, "never listed under the client's address: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
    held.write_all(b"peer\n").unwrap();
    assert_eq!(read_to_eof(&mut held), b"ok: 203.0.113.50:50000\n");
}

/// v2 `LOCAL` (a balancer's health check) and v1 `UNKNOWN` keep the
/// socket's own peer address.
#[test]
fn local_and_unknown_keep_the_socket_address() {
    let pier = Pier::serve("misbehave", &["--proxy-protocol"]);
    let local = v2_header(0, "192.0.2.1:1".parse().unwrap(), "192.0.2.2:2".parse().unwrap());
    let (answer, me) = peer_after(pier.addr(), &[&local]);
    assert_eq!(answer, format!("ok: {me}\n"));
    let (answer, me) = peer_after(pier.addr(), &[b"PROXY UNKNOWN\r\n"]);
    assert_eq!(answer, format!("ok: {me}\n"));
}

/// Reads until the server closes: EOF, or a reset (unread garbage in its
/// receive buffer makes Linux answer the close with RST).
fn closed_by_server(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => got,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => got,
        Err(e) => panic!("expected the server to close: {e}"),
    }
}

/// A client sending no header (garbage, or a plain request) is closed,
/// logged with `reason=proxy-header-invalid` (a warning at most once a
/// second, however many), counted in the metrics, and never reaches a
/// handler; the next valid client is served.
#[test]
fn garbage_is_closed_logged_and_counted() {
    let pier = Pier::serve("misbehave", &["--proxy-protocol", "--metrics", "127.0.0.1:0"]);
    let mut s = connect(pier.addr());
    s.write_all(b"peer\n").unwrap();
    assert_eq!(closed_by_server(&mut s), b"", "no handler answered");
    let log = pier.wait_for_log("reason=proxy-header-invalid");
    assert!(log.contains("not a PROXY protocol header (the connection starts with `p"), "{log}");
    for _ in 0..30 {
        let mut s = connect(pier.addr());
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        closed_by_server(&mut s);
    }
    let log = pier.wait_for_logs("connection closed reason=proxy-header-invalid", 31);
    let warnings = log.lines().filter(|l| l.contains("WARN") && l.contains("no valid PROXY protocol header")).count();
    assert!((1..=3).contains(&warnings), "{warnings} warnings for 31 bad clients:\n{log}");

    let (answer, _) = peer_after(pier.addr(), &[b"PROXY TCP4 192.0.2.8 127.0.0.1 1000 80\r\n"]);
    assert_eq!(answer, "ok: 192.0.2.8:1000\n", "the next valid client is served");
    let url = format!("http://{}/metrics", pier.metrics.unwrap());
    let out = Command::new("curl").args(["-s", "--max-time", "10", &url]).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let series = "pier_connection_ends_total{listener=\"main\",reason=\"proxy-header-invalid\"} 31";
    assert!(text.lines().any(|l| l == series), "{text}");
}

/// A client that connects and says nothing is closed once the header's
/// 5 s are up; other clients are served meanwhile.
#[test]
fn a_silent_client_is_cut_after_five_seconds() {
    let pier = Pier::serve("misbehave", &["--proxy-protocol"]);
    let started = Instant::now();
    let mut silent = connect(pier.addr());
    let (answer, _) = peer_after(pier.addr(), &[b"PROXY TCP4 192.0.2.9 127.0.0.1 1 2\r\n"]);
    assert_eq!(answer, "ok: 192.0.2.9:1\n", "served while another client is silent");
    assert_eq!(closed_by_server(&mut silent), b"");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(4900) && took < STEP, "closed after {took:?}");
    pier.wait_for_log("reason=proxy-header-invalid: no complete PROXY protocol header within 5s");
}

/// An embedding program's `NewCsa` event carries the client the header
/// named; the handler gets only what follows the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_events_name_the_client() {
    use pier::{ListenAddr, ListenerConfig, Server, ServerConfig, ServerEvent};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = ListenerConfig::new("proxied", ListenAddr::parse_addr("127.0.0.1:0").unwrap(), guest("echo"));
    config.proxy_protocol = true;
    let server = Server::bind(ServerConfig::new(vec![config])).await.expect("bind");
    let addr = server.local_addrs()[0].1;
    let mut events = server.subscribe();
    let stop = server.shutdown_handle();
    tokio::spawn(server.run());
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.write_all(b"PROXY TCP4 192.0.2.44 127.0.0.1 4444 80\r\nhi").await.unwrap();
    let event = tokio::time::timeout(STEP, events.recv()).await.expect("an event in time").unwrap();
    let ServerEvent::NewCsa { peer, local, .. } = event else { panic!("expected NewCsa, got {event:?}") };
    assert_eq!(peer, "192.0.2.44:4444".parse().unwrap());
    assert_eq!(local, addr, "the socket's own local address");
    let mut buf = [0u8; 2];
    tokio::time::timeout(STEP, client.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"hi");
    stop.shutdown();
}
