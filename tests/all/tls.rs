//! TLS listeners and STARTTLS: the host terminates TLS with rustls; real
//! clients (`openssl s_client`, `curl`, `redis-cli --tls`) and a rustls
//! client in the test talk to real handlers that see only plaintext.

use crate::common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

/// `--tls-cert` and `--tls-key` for `certs`, and `more` flags.
fn tls_flags<'a>(certs: &'a Certs, more: &[&'a str]) -> Vec<&'a str> {
    let mut flags = vec!["--tls-cert", certs.cert.to_str().unwrap(), "--tls-key", certs.key.to_str().unwrap()];
    flags.extend_from_slice(more);
    flags
}

/// `openssl s_client` to `addr` with `args`, fed `input`; its stdout once
/// the server closed the connection (s_client's `-quiet` waits for that).
fn s_client(addr: SocketAddr, args: &[&str], input: &str) -> (bool, String) {
    let mut child = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect", &addr.to_string(), "-servername", "localhost", "-quiet"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl (`make setup`)");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A rustls client trusting `ca`, optionally presenting a client certificate.
fn client_config(ca: &Path, client: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert).unwrap().map(Result::unwrap).collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
    })
}

/// A TLS stream over `socket` (fresh, or after a STARTTLS exchange).
fn tls_over(
    socket: TcpStream,
    config: Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    socket.set_read_timeout(Some(STEP)).unwrap();
    let conn = rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    rustls::StreamOwned::new(conn, socket)
}

/// Reads a TLS stream to its end (close_notify or EOF).
fn read_all(tls: &mut impl Read) -> Vec<u8> {
    let mut got = Vec::new();
    match tls.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => panic!("reading the TLS stream: {e}"),
    }
    got
}

/// Waits (with a deadline) for pier to log a connection end whose reason
/// starts with `reason`, and returns that line.
fn ended_with(pier: &Pier, reason: &str) -> String {
    let log = pier.wait_for_log(&format!("reason={reason}"));
    log.lines().find(|l| l.contains(&format!("reason={reason}"))).unwrap().to_string()
}

#[test]
fn openssl_s_client_echoes_a_line_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_certs(dir.path());
    let pier = Pier::serve("echo", &tls_flags(&certs, &[]));
    let mut child = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect", &pier.addr().to_string(), "-quiet", "-verify_return_error"])
        .args(["-CAfile", certs.ca.to_str().unwrap(), "-servername", "localhost"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello over tls\n").unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(line, "hello over tls\n");
}

#[test]
fn the_handler_sees_the_negotiated_details_alpn_and_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_certs(dir.path());
    let (ca, cert, key) =
        (certs.ca.to_str().unwrap(), certs.client_cert.to_str().unwrap(), certs.client_key.to_str().unwrap());
    let flags = tls_flags(&certs, &["--tls-alpn", "h2,http/1.1"]);
    let pier = Pier::serve("misbehave", &flags);
    let (ok, out) = s_client(pier.addr(), &["-CAfile", ca, "-alpn", "http/1.1", "-verify_return_error"], "tls\n");
    assert!(ok, "{out}");
    assert!(out.starts_with("ok: TLSv1.3 TLS13_"), "{out}");
    assert!(out.contains("sni=localhost alpn=http/1.1 client=none"), "{out}");

    let flags = tls_flags(&certs, &["--tls-client-ca", ca]);
    let pier = Pier::serve("misbehave", &flags);
    let (ok, out) = s_client(pier.addr(), &["-CAfile", ca, "-cert", cert, "-key", key], "tls\n");
    assert!(ok, "{out}");
    assert!(out.contains("alpn=none client=CN=alice, O=Example"), "{out}");
    // Without a client certificate the handshake fails and no handler runs.
    let (_, out) = s_client(pier.addr(), &["-CAfile", ca], "tls\n");
    assert!(!out.contains("ok:"), "{out}");
    assert!(ended_with(&pier, "tls-handshake-failed").contains("certificate"));
}

/// A client that does not trust the certificate fails the handshake on
/// its side; pier ends that connection with `tls-handshake-failed` and goes
/// on serving, as does a plaintext client's mistake.
#[test]
fn a_failed_handshake_ends_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_certs(dir.path());
    let other = tempfile::tempdir().unwrap();
    let stranger = tls_certs(other.path());
    let pier = Pier::serve("misbehave", &tls_flags(&certs, &["--metrics", "127.0.0.1:0"]));
    let (ok, out) =
        s_client(pier.addr(), &["-CAfile", stranger.ca.to_str().unwrap(), "-verify_return_error"], "config x\n");
    assert!(!ok && out.is_empty(), "the client refuses the server: {out}");
    assert!(ended_with(&pier, "tls-handshake-failed").contains("alert"));

    let mut plain = connect(pier.addr());
    plain.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let _ = read_to_eof(&mut plain);

    let mut tls = tls_over(connect(pier.addr()), client_config(&certs.ca, None));
    tls.write_all(b"tls\n").unwrap();
    let answer = String::from_utf8(read_all(&mut tls)).unwrap();
    assert!(answer.starts_with("ok: TLSv1.3"), "{answer}");
    let log = pier.stderr();
    assert_eq!(log.matches("reason=tls-handshake-failed").count(), 2, "{log}");
    let metrics = Command::new("curl")
        .args(["-s", "--max-time", "10", &format!("http://{}/metrics", pier.metrics.unwrap())])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&metrics.stdout);
    let instances = text.lines().find(|l| l.starts_with("pier_instantiate_seconds_count")).unwrap_or_default();
    assert!(instances.ends_with(" 1"), "one instance, for the one good handshake: {text}");
    assert!(text.contains("reason=\"tls-handshake-failed\"} 2"), "{text}");
}

/// A client that connects and never says hello is cut at the handshake
/// timeout, not the idle timeout.
#[test]
fn a_silent_client_is_cut_at_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_certs(dir.path());
    let pier = Pier::serve("echo", &tls_flags(&certs, &["--tls-handshake-timeout", "200ms"]));
    let mut silent = connect(pier.addr());
    let started = Instant::now();
    assert_eq!(read_to_eof(&mut silent), b"");
    assert!(started.elapsed() < STEP);
    assert!(ended_with(&pier, "tls-handshake-failed").contains("no handshake within"));
}

/// Many bytes both ways through the record layer, with backpressure: the
/// client keeps up to 64 KiB ahead of what it has read back.
#[test]
fn four_mebibytes_round_trip_through_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_certs(dir.path());
    let pier = Pier::serve("echo", &tls_flags(&certs, &[]));
    let data = pattern(7, 4 << 20);
    let mut tls = tls_over(connect(pier.addr()), client_config(&certs.ca, None));
    let (mut sent, mut got) = (0, Vec::with_capacity(data.len()));
    let mut buf = vec![0; 64 << 10];
    while got.len() < data.len() {
        if sent < data.len() && sent - got.len() < 64 << 10 {
            let piece = &data[sent..(sent + (16 << 10)).min(data.len())];
            tls.write_all(piece).unwrap();
            sent += piece.len();
            continue;
        }
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0, "the echo ended after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got == data, "the echo differs");
}

#[test]
fn curl_fetches_over_https_on_one_kept_alive_connection() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_certs(dir.path());
    let pier = Pier::serve("http", &tls_flags(&certs, &["--tls-alpn", "http/1.1"]));
    let port = pier.addr().port();
    let url = format!("https://localhost:{port}/hello");
    let out = Command::new("curl")
        .args(["-sv", "--max-time", "10", "--cacert", certs.ca.to_str().unwrap()])
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1"), &url, &url, &url])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.matches("Hello, world!").count(), 3, "{stdout}");
    assert!(stderr.contains("ALPN: server accepted http/1.1"), "{stderr}");
    assert_eq!(stderr.matches("Re-using existing connection").count(), 2, "{stderr}");
    // curl's close (close_notify, FIN) ends the connection in order: pier
    // sends its own close_notify, then FIN, and lets it go.
    pier.wait_for_log("connection closed reason=peer-closed");
}

#[test]
fn redis_cli_speaks_to_the_resp_guest_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_certs(dir.path());
    let pier = Pier::serve("resp", &tls_flags(&certs, &[]));
    let cli = |args: &[&str]| {
        let out = Command::new("timeout")
            .args(["10", "redis-cli", "--tls", "--cacert", certs.ca.to_str().unwrap(), "--sni", "localhost"])
            .args(["-h", "127.0.0.1", "-p", &pier.addr().port().to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(cli(&["set", "k", "over tls"]), "OK");
    assert_eq!(cli(&["get", "k"]), "over tls");
}

/// STARTTLS from the handler's side: plaintext first, then `start-tls`,
/// the handshake on the same socket, and decrypted bytes after it. A second
/// `start-tls`, or one on a listener without `starttls`, is an error the
/// handler sees.
#[test]
fn start_tls_switches_a_plaintext_connection() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_certs(dir.path());
    let pier = Pier::serve("misbehave", &tls_flags(&certs, &["--starttls"]));
    let mut plain = connect(pier.addr());
    plain.write_all(b"tls\n").unwrap();
    assert_eq!(read_to_eof(&mut plain), b"denied: plaintext\n", "plaintext first");

    let mut socket = connect(pier.addr());
    socket.write_all(b"starttls\n").unwrap();
    // As a STARTTLS client does: the handshake starts after the reply.
    assert_eq!(read_n(&mut socket, 17), b"ok: starting tls\n");
    let mut tls = tls_over(socket, client_config(&certs.ca, None));
    tls.write_all(b"again\n").unwrap();
    let answer = String::from_utf8(read_all(&mut tls)).unwrap();
    assert!(answer.starts_with("denied: TLS is already on"), "{answer}");
    // After the switch the handler can ask what was negotiated.
    let mut socket = connect(pier.addr());
    socket.write_all(b"starttls\n").unwrap();
    assert_eq!(read_n(&mut socket, 17), b"ok: starting tls\n");
    let mut tls = tls_over(socket, client_config(&certs.ca, None));
    tls.write_all(b"tls-now\n").unwrap();
    let answer = String::from_utf8(read_all(&mut tls)).unwrap();
    assert!(answer.starts_with("ok: TLSv1.3 TLS13_") && answer.contains("sni=localhost"), "{answer}");

    let plain_only = Pier::serve("misbehave", &[]);
    let mut s = connect(plain_only.addr());
    s.write_all(b"starttls\n").unwrap();
    let answer = String::from_utf8(read_to_eof(&mut s)).unwrap();
    assert!(answer.starts_with("ok: starting tls\ndenied: this listener does not offer STARTTLS"), "{answer}");
}

/// Bytes the peer sends after its STARTTLS command, before the handshake,
/// are never taken as plaintext. Arriving in the same read as the command,
/// the handler drops them (as the WIT asks); arriving later, the host takes
/// them as TLS, and they are no TLS hello. Either way no plaintext command
/// runs, and the connection ends with `tls-handshake-failed`.
#[test]
fn plaintext_after_start_tls_is_never_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_certs(dir.path());
    let pier = Pier::serve("misbehave", &tls_flags(&certs, &["--starttls", "--tls-handshake-timeout", "1s"]));
    for split in [false, true] {
        let mut s = connect(pier.addr());
        if split {
            s.write_all(b"starttls\n").unwrap();
            s.write_all(b"config motd\n").unwrap();
        } else {
            s.write_all(b"starttls\nconfig motd\n").unwrap();
        }
        let got = read_to_eof(&mut s);
        let rest = got.strip_prefix(b"ok: starting tls\n").expect("the plaintext reply to STARTTLS");
        // Nothing after it but, perhaps, rustls's alert refusing the bytes
        // as a handshake (a TLS record of type 21): no answer to the command.
        assert!(rest.is_empty() || rest[0] == 21, "no answer to the injected command: {rest:?}");
    }
    pier.wait_for_logs("reason=tls-handshake-failed", 2);
}

/// Bad TLS files are one clear line at start-up, from `serve` and `check`.
#[test]
fn bad_tls_files_fail_start_up_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_certs(dir.path());
    let other = tempfile::tempdir().unwrap();
    let stranger = tls_certs(other.path());
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    let (expired_cert, expired_key) = expired_certificate(dir.path());
    let cases = [
        (Path::new("/nonexistent/cert.pem"), certs.key.as_path(), "cannot be read"),
        (certs.cert.as_path(), stranger.key.as_path(), "does not belong to tls-cert"),
        (not_pem.as_path(), certs.key.as_path(), "no `BEGIN CERTIFICATE` block"),
        (expired_cert.as_path(), expired_key.as_path(), "not now: renew it"),
    ];
    for (cert, key, expected) in cases {
        let cfg = config_file(
            dir.path(),
            &format!(
                "[[listener]]\nname = \"tls\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{{guest:echo}}\"\n\
                 tls-cert = \"{}\"\ntls-key = \"{}\"\n",
                cert.display(),
                key.display()
            ),
        );
        for command in ["serve", "check"] {
            let out = run_pier(&[command, "--config", &cfg]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{command} {}: {stderr}", cert.display());
            assert!(stderr.contains(expected), "{command}: {stderr}");
            assert!(stderr.contains("listener `tls`: tls-"), "{command}: {stderr}");
            assert_eq!(stderr.trim().lines().count(), 1, "{command}: one line: {stderr}");
        }
    }
}

/// A certificate whose validity ended yesterday (made with `openssl ca`,
/// which can back-date one).
fn expired_certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "01\n").unwrap();
    let conf = "[ca]\ndefault_ca = ca\n[ca]\ndatabase = index.txt\nserial = serial\nnew_certs_dir = .\n\
                default_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n";
    std::fs::write(dir.join("ca.cnf"), conf).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "old.key",
        "-out",
        "old.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-cert",
        "ca.pem",
        "-keyfile",
        "ca.key",
        "-in",
        "old.csr",
        "-out",
        "old.pem",
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20200102000000Z",
        "-notext",
    ]);
    (dir.join("old.pem"), dir.join("old.key"))
}

/// A renewed certificate is picked up by SIGHUP without a restart; a broken
/// one keeps the old and says why.
#[test]
fn sighup_picks_up_a_renewed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls_certs(dir.path());
    let cfg = config_file(
        dir.path(),
        "[[listener]]\nname = \"tls\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:misbehave}\"\n\
         tls-cert = \"server.pem\"\ntls-key = \"server.key\"\nconfig = { motd = \"hi\" }\n",
    );
    let pier = Pier::start(&["--config", &cfg], 1);
    let motd = |ca: &Path| {
        let mut tls = tls_over(connect(pier.addr()), client_config(ca, None));
        tls.write_all(b"config motd\n").map(|()| read_all(&mut tls))
    };
    assert_eq!(motd(&certs.ca).unwrap(), b"ok: hi\n");
    // Renew: a new CA signs a new certificate, written over the old files.
    let renewed = tempfile::tempdir().unwrap();
    let new = tls_certs(renewed.path());
    std::fs::copy(&new.cert, &certs.cert).unwrap();
    std::fs::copy(&new.key, &certs.key).unwrap();
    pier.signal(libc::SIGHUP);
    pier.wait_for_log("reloaded summary=0 kept, 1 reloaded");
    assert_eq!(motd(&new.ca).unwrap(), b"ok: hi\n", "the renewed certificate serves");
    assert!(motd(&certs.ca).is_err(), "the old one is gone");
    // A broken renewal keeps the one that works.
    std::fs::write(&certs.cert, "garbage\n").unwrap();
    pier.signal(libc::SIGHUP);
    let log = pier.wait_for_log("reload failed");
    assert!(log.contains("tls-cert"), "{log}");
    assert_eq!(motd(&new.ca).unwrap(), b"ok: hi\n");
}
