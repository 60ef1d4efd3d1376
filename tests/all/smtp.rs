//! The SMTP guest (guest/smtp) against real clients: swaks with and without
//! STARTTLS, `openssl s_client -starttls smtp`, a rustls client for the
//! STARTTLS command injection (CVE-2011-0411), raw sockets for the protocol's
//! edges. Every external command runs under `timeout 20`; every socket read
//! has the harness's deadline.

use crate::common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `starttls`: a listener with a certificate and `starttls = true`, whose
/// guest is told so; `roomy`: the same with the default `max-size`; `smtps`:
/// TLS from the first byte (RFC 8314), the guest told STARTTLS is on; `plain`: no TLS at all; `tiny`: a store too small for a
/// message; `misconfigured`: the guest is told STARTTLS is on, the listener
/// has no certificate. Few connections each: six listeners at the default
/// 10,000 would pass the machine's `vm.max_map_count`.
const CONFIG: &str = r#"
[[listener]]
name = "starttls"
listen = "127.0.0.1:0"
plugin = "{guest:smtp}"
max-connections = 16
tls-cert = "server.pem"
tls-key = "server.key"
starttls = true
config = { hostname = "mx.test", starttls = "true", max-size = "4096" }

[[listener]]
name = "roomy"
listen = "127.0.0.1:0"
plugin = "{guest:smtp}"
max-connections = 16
tls-cert = "server.pem"
tls-key = "server.key"
starttls = true
config = { starttls = "true" }

[[listener]]
name = "smtps"
listen = "127.0.0.1:0"
plugin = "{guest:smtp}"
max-connections = 16
tls-cert = "server.pem"
tls-key = "server.key"
config = { hostname = "smtps.test", starttls = "true" }

[[listener]]
name = "plain"
listen = "127.0.0.1:0"
plugin = "{guest:smtp}"
max-connections = 16
config = { hostname = "plain.test", max-size = "4096" }

[[listener]]
name = "tiny"
listen = "127.0.0.1:0"
plugin = "{guest:smtp}"
max-connections = 16
kv-max-bytes = "1KiB"

[[listener]]
name = "misconfigured"
listen = "127.0.0.1:0"
plugin = "{guest:smtp}"
max-connections = 16
config = { starttls = "true" }
"#;

struct Smtp {
    dir: tempfile::TempDir,
    certs: Certs,
    pier: Pier,
}

impl Smtp {
    fn start() -> Smtp {
        let dir = tempfile::tempdir().unwrap();
        let certs = tls_certs(dir.path());
        let cfg = config_file(dir.path(), CONFIG);
        let pier = Pier::start(&["--config", &cfg], 6);
        Smtp { dir, certs, pier }
    }

    fn addr(&self, listener: &str) -> SocketAddr {
        self.pier.addrs.iter().find(|(name, _)| name == listener).unwrap_or_else(|| panic!("no {listener}")).1
    }

    /// The fields of the `delivered` line whose sender is `from`, once pier
    /// has logged it.
    fn delivered(&self, from: &str) -> HashMap<String, String> {
        let needle = format!(" from={from} ");
        let log = self.pier.wait_for_log(&needle);
        let line = log.lines().find(|l| l.contains("delivered mail/") && l.contains(&needle)).expect("the line");
        let fields = &line[line.find("delivered mail/").unwrap()..];
        let mut map: HashMap<String, String> = fields
            .split_whitespace()
            .filter_map(|f| f.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.insert("key".into(), fields.split_whitespace().nth(1).unwrap().to_string());
        map
    }
}

/// Runs `timeout 20 PROGRAM ARGS` with `input` on its stdin.
fn run(program: &str, args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new("timeout")
        .arg("20")
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (apt-get install swaks openssl)"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().unwrap();
    assert_ne!(out.status.code(), Some(124), "{program} timed out: {}", String::from_utf8_lossy(&out.stdout));
    out
}

/// One reply, every line of it (`250-...` lines, then the `250 ...` one),
/// read a byte at a time so that nothing after it is consumed (the TLS
/// handshake follows a 220 on the same socket).
fn reply(s: &mut impl Read) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut line = Vec::new();
        while !line.ends_with(b"\r\n") {
            let mut b = [0];
            match s.read(&mut b) {
                Ok(1) => line.push(b[0]),
                other => panic!("reply cut short after {:?}: {other:?}", String::from_utf8_lossy(&line)),
            }
        }
        let line = String::from_utf8(line[..line.len() - 2].to_vec()).unwrap();
        let last = line.as_bytes().get(3) != Some(&b'-');
        lines.push(line);
        if last {
            return lines;
        }
    }
}

/// Sends a command line, returns its reply.
fn cmd(s: &mut (impl Read + Write), line: &str) -> Vec<String> {
    s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    reply(s)
}

/// The code of a one-line reply.
fn code(reply: &[String]) -> &str {
    assert_eq!(reply.len(), 1, "{reply:?}");
    &reply[0][..3]
}

/// A connection past the greeting.
fn session(addr: SocketAddr, greeting: &str) -> TcpStream {
    let mut s = connect(addr);
    assert_eq!(reply(&mut s), [format!("220 {greeting} ESMTP pier")]);
    s
}

fn offers_starttls(ehlo: &[String]) -> bool {
    ehlo.iter().any(|l| l[4..].eq_ignore_ascii_case("STARTTLS"))
}

/// A `--data` file for swaks, which ends the DATA with CRLF `.` CRLF of its
/// own: the message is this and that CRLF.
const MESSAGE: &str = "From: a@example.com\r\nTo: b@example.com\r\nSubject: pier smtp\r\n\r\nhello from swaks";

#[test]
fn swaks_delivers_in_plaintext() {
    let smtp = Smtp::start();
    let data = smtp.dir.path().join("message.eml");
    std::fs::write(&data, MESSAGE).unwrap();
    let server = smtp.addr("plain").to_string();
    let data_arg = format!("@{}", data.display());
    let out = run(
        "swaks",
        &["--server", &server, "--from", "a@example.com", "--to", "b@example.com", "--data", &data_arg, "--pipeline"],
        b"",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("<-  250-PIPELINING"), "{text}");
    assert!(!text.contains("STARTTLS"), "a plaintext listener offers no STARTTLS: {text}");
    assert!(text.contains("<-  250 2.0.0 Ok: queued as 1"), "{text}");
    let fields = smtp.delivered("a@example.com");
    assert_eq!(fields["key"], "mail/1");
    assert_eq!(fields["to"], "b@example.com");
    assert_eq!(fields["bytes"], (MESSAGE.len() + 2).to_string(), "{text}");
    assert_eq!(fields["tls"], "no");
}

#[test]
fn swaks_delivers_over_starttls_with_a_verified_certificate() {
    let smtp = Smtp::start();
    let server = smtp.addr("starttls").to_string();
    let ca = smtp.certs.ca.to_str().unwrap();
    let out = run(
        "swaks",
        &[
            "--server",
            &server,
            "--from",
            "tls@example.com",
            "--to",
            "b@example.com,c@example.com",
            "--body",
            "over TLS",
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            ca,
        ],
        b"",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("<-  250-STARTTLS"), "{text}");
    assert!(text.contains("<-  220 2.0.0 Ready to start TLS"), "{text}");
    assert!(text.contains("=== TLS started"), "{text}");
    let fields = smtp.delivered("tls@example.com");
    assert_eq!(fields["to"], "b@example.com,c@example.com");
    assert_eq!(fields["tls"], "yes");
    // After the handshake swaks says EHLO again; STARTTLS is not offered twice.
    let after = &text[text.find("=== TLS started").unwrap()..];
    assert!(after.contains(" -> EHLO") || after.contains(" ~> EHLO"), "{after}");
    assert!(!after.contains("250-STARTTLS") && !after.contains("250 STARTTLS"), "{after}");
}

/// Implicit TLS (SMTPS, RFC 8314): the connection is TLS from its start, so
/// the guest neither offers nor accepts STARTTLS, whatever its config says.
#[test]
fn swaks_delivers_over_implicit_tls() {
    let smtp = Smtp::start();
    let server = smtp.addr("smtps").to_string();
    let ca = smtp.certs.ca.to_str().unwrap();
    let args = ["--server", &server, "--from", "smtps@example.com", "--to", "b@example.com", "--body", "tls first"];
    let tls = ["--tls-on-connect", "--tls-verify", "--tls-ca-path", ca];
    let out = run("swaks", &[&args[..], &tls[..]].concat(), b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "swaks: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("~> EHLO"), "{text}");
    assert!(!text.contains("STARTTLS"), "{text}");
    assert_eq!(smtp.delivered("smtps@example.com")["tls"], "yes");
}

#[test]
fn openssl_s_client_starttls_with_dot_stuffing() {
    let smtp = Smtp::start();
    let connect = smtp.addr("starttls").to_string();
    let ca = smtp.certs.ca.to_str().unwrap();
    // s_client says EHLO and STARTTLS itself; this is what it sends after
    // the handshake (`-crlf`: each LF goes out as CRLF). The client stuffs:
    // `..leading dot` on the wire is `.leading dot` in the message.
    let script = "EHLO client.test\nMAIL FROM:<s@example.com>\nRCPT TO:<r@example.com>\nDATA\n\
                  Subject: dots\n\n..leading dot\n...two dots\nend\n.\nQUIT\n";
    let out = run(
        "openssl",
        &[
            "s_client",
            "-starttls",
            "smtp",
            "-connect",
            &connect,
            "-CAfile",
            ca,
            "-verify_return_error",
            "-verify_ip",
            "127.0.0.1",
            "-quiet",
            "-crlf",
        ],
        script.as_bytes(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("verify return:1"), "the certificate verified: {err}");
    assert!(text.contains("250 2.0.0 Ok: queued as"), "{text}{err}");
    assert!(text.contains("221 2.0.0 Bye"), "{text}");
    assert!(!text.contains("STARTTLS"), "not offered again over TLS: {text}");
    let fields = smtp.delivered("s@example.com");
    assert_eq!(fields["to"], "r@example.com");
    assert_eq!(fields["tls"], "yes");
    let message = "Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\nend\r\n";
    assert_eq!(fields["bytes"], message.len().to_string());
}

/// A TLS client over an already connected socket, trusting the test CA.
fn tls_client(s: TcpStream, certs: &Certs) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&certs.ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap()).unwrap();
    rustls::StreamOwned::new(conn, s)
}

/// CVE-2011-0411: a command sent in plaintext in the same packet as
/// STARTTLS must not be executed once TLS is on (nor answered at all).
#[test]
fn starttls_command_injection_is_dropped() {
    let smtp = Smtp::start();
    let mut s = session(smtp.addr("starttls"), "mx.test");
    let ehlo = cmd(&mut s, "EHLO x");
    assert!(offers_starttls(&ehlo), "{ehlo:?}");
    s.write_all(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n").unwrap();
    assert_eq!(reply(&mut s), ["220 2.0.0 Ready to start TLS"]);
    let mut tls = tls_client(s, &smtp.certs);
    // The first reply over TLS is EHLO's: no reply to the injected MAIL
    // was queued ahead of it.
    let ehlo = cmd(&mut tls, "EHLO x");
    assert_eq!(ehlo[0], "250-mx.test", "{ehlo:?}");
    assert!(!offers_starttls(&ehlo), "STARTTLS is not offered over TLS: {ehlo:?}");
    let rcpt = cmd(&mut tls, "RCPT TO:<b@example.com>");
    assert_eq!(code(&rcpt), "503", "the injected MAIL FROM was not executed: {rcpt:?}");
    assert_eq!(code(&cmd(&mut tls, "STARTTLS")), "503", "TLS is already on");
    // The session goes on over TLS.
    assert_eq!(code(&cmd(&mut tls, "MAIL FROM:<good@x.test>")), "250");
    assert_eq!(code(&cmd(&mut tls, "RCPT TO:<b@example.com>")), "250");
    assert_eq!(code(&cmd(&mut tls, "DATA")), "354");
    assert_eq!(code(&cmd(&mut tls, "Subject: t\r\n\r\nsecret\r\n.")), "250");
    assert_eq!(code(&cmd(&mut tls, "QUIT")), "221");
    let fields = smtp.delivered("good@x.test");
    assert_eq!((fields["tls"].as_str(), fields["bytes"].as_str()), ("yes", "22"));
    assert!(!smtp.pier.stderr().contains("evil@x.test"), "the injected command left no trace");
}

/// A listener without TLS: EHLO does not offer STARTTLS and the command is
/// not implemented there (Postfix's answer), and the session goes on.
#[test]
fn a_plaintext_listener_does_not_offer_starttls() {
    let smtp = Smtp::start();
    let mut s = session(smtp.addr("plain"), "plain.test");
    let ehlo = cmd(&mut s, "EHLO x");
    assert_eq!(ehlo.last().unwrap(), "250 ENHANCEDSTATUSCODES", "{ehlo:?}");
    assert!(ehlo.contains(&"250-SIZE 4096".to_string()), "{ehlo:?}");
    assert!(!offers_starttls(&ehlo), "{ehlo:?}");
    assert_eq!(cmd(&mut s, "STARTTLS"), ["502 5.5.1 Error: command not implemented"]);
    assert_eq!(code(&cmd(&mut s, "NOOP")), "250");
    assert_eq!(code(&cmd(&mut s, "QUIT")), "221");
    assert!(read_to_eof(&mut s).is_empty());
}

/// The guest told STARTTLS is on by a listener that has no certificate:
/// once its 220 is out it cannot take it back, so it closes.
#[test]
fn starttls_on_a_listener_without_tls_closes() {
    let smtp = Smtp::start();
    let mut s = session(smtp.addr("misconfigured"), "localhost");
    assert!(offers_starttls(&cmd(&mut s, "EHLO x")));
    assert_eq!(cmd(&mut s, "STARTTLS"), ["220 2.0.0 Ready to start TLS"]);
    assert!(read_to_eof(&mut s).is_empty(), "closed, nothing more in plaintext");
    smtp.pier.wait_for_log("STARTTLS failed after its 220");
}

#[test]
fn protocol_edges() {
    let smtp = Smtp::start();
    let mut s = session(smtp.addr("plain"), "plain.test");
    assert_eq!(cmd(&mut s, "DATA"), ["503 5.5.1 Error: need MAIL command"]);
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.test>")), "503", "HELO first");
    assert_eq!(cmd(&mut s, "HELO client.test"), ["250 plain.test"]);
    assert_eq!(cmd(&mut s, "MAIL FROM:bad"), ["501 5.5.4 Syntax: MAIL FROM:<address>"]);
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<not an address>")), "501");
    assert_eq!(code(&cmd(&mut s, "FROB")), "500");
    assert_eq!(code(&cmd(&mut s, "VRFY bob")), "252");
    assert_eq!(code(&cmd(&mut s, "HELP")), "214");
    // RFC 5321 4.5.3.1.6: 1000 octets with the CRLF fit, 1001 do not.
    assert_eq!(code(&cmd(&mut s, &format!("NOOP {}", "x".repeat(993)))), "250");
    assert_eq!(cmd(&mut s, &format!("NOOP {}", "x".repeat(994))), ["500 5.5.2 Error: line too long"]);
    assert_eq!(code(&cmd(&mut s, &format!("MAIL FROM:<{}@b.test>", "x".repeat(100_000)))), "500");
    // RSET ends the transaction.
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.test>")), "250");
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.test>")), "503", "nested MAIL");
    assert_eq!(code(&cmd(&mut s, "RCPT TO:<c@d.test>")), "250");
    assert_eq!(code(&cmd(&mut s, "RSET")), "250");
    assert_eq!(code(&cmd(&mut s, "RCPT TO:<c@d.test>")), "503", "RSET cleared MAIL");
    assert_eq!(code(&cmd(&mut s, "DATA")), "503");
    // SIZE announced over the limit, then a message over it.
    assert_eq!(cmd(&mut s, "MAIL FROM:<big@b.test> SIZE=5000"), ["552 5.3.4 Message size exceeds fixed limit"]);
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<big@b.test>")), "250");
    assert_eq!(code(&cmd(&mut s, "RCPT TO:<c@d.test>")), "250");
    assert_eq!(code(&cmd(&mut s, "DATA")), "354");
    let line = format!("{}\r\n", "y".repeat(98));
    s.write_all(line.repeat(50).as_bytes()).unwrap();
    assert_eq!(cmd(&mut s, "."), ["552 5.3.4 Error: message file too big"]);
    // The session is still good, and the transaction is over.
    assert_eq!(code(&cmd(&mut s, "RCPT TO:<c@d.test>")), "503");
    assert_eq!(cmd(&mut s, "QUIT"), ["221 2.0.0 Bye"]);
    assert!(read_to_eof(&mut s).is_empty(), "EOF after 221");
    assert!(!smtp.pier.stderr().contains("from=big@b.test"), "nothing was delivered");
}

/// PIPELINING: a whole transaction in one write, answered in order; three
/// messages in a row are numbered by the store's counter.
#[test]
fn a_pipelined_transaction_in_one_write() {
    let smtp = Smtp::start();
    let mut s = session(smtp.addr("plain"), "plain.test");
    let mut batch = String::from("EHLO p\r\n");
    for i in 1..=3 {
        batch.push_str(&format!(
            "MAIL FROM:<p{i}@x.test> BODY=8BITMIME\r\nRCPT TO:<r@x.test>\r\nDATA\r\nmessage {i}\r\n.\r\n"
        ));
    }
    batch.push_str("QUIT\r\n");
    s.write_all(batch.as_bytes()).unwrap();
    let ehlo = reply(&mut s);
    assert!(ehlo.contains(&"250-PIPELINING".to_string()), "{ehlo:?}");
    for i in 1..=3 {
        assert_eq!(code(&reply(&mut s)), "250");
        assert_eq!(code(&reply(&mut s)), "250");
        assert_eq!(code(&reply(&mut s)), "354");
        assert_eq!(reply(&mut s), [format!("250 2.0.0 Ok: queued as {i}")]);
        let fields = smtp.delivered(&format!("p{i}@x.test"));
        assert_eq!((fields["key"].clone(), fields["bytes"].as_str()), (format!("mail/{i}"), "11"));
    }
    assert_eq!(code(&reply(&mut s)), "221");
    assert!(read_to_eof(&mut s).is_empty());
}

/// A store out of budget refuses the message with 452 and the session goes on.
#[test]
fn a_full_store_answers_452() {
    let smtp = Smtp::start();
    let mut s = session(smtp.addr("tiny"), "localhost");
    assert_eq!(code(&cmd(&mut s, "HELO c")), "250");
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<a@b.test>")), "250");
    assert_eq!(code(&cmd(&mut s, "RCPT TO:<c@d.test>")), "250");
    assert_eq!(code(&cmd(&mut s, "DATA")), "354");
    s.write_all(format!("{}\r\n", "z".repeat(2000)).as_bytes()).unwrap();
    assert_eq!(cmd(&mut s, "."), ["452 4.3.1 Insufficient system storage"]);
    assert_eq!(code(&cmd(&mut s, "NOOP")), "250");
    smtp.pier.wait_for_log("refused a message of 2002 bytes: out of budget");
}

/// STARTTLS at the end of 2,000 pipelined NOOPs in one write: every reply
/// and then the 220 reach the peer in plaintext, in order, before the
/// handshake, and the NOOP sent after STARTTLS is dropped. (The guest's
/// unit tests cover the case of replies still held back by the SDK, which
/// loopback's socket buffers make too rare to provoke from here.)
#[test]
fn starttls_after_a_backlog_of_replies() {
    let smtp = Smtp::start();
    let mut s = session(smtp.addr("roomy"), "localhost");
    assert!(offers_starttls(&cmd(&mut s, "EHLO x")));
    let mut batch = "NOOP\r\n".repeat(2000);
    batch.push_str("STARTTLS\r\nNOOP\r\n");
    s.write_all(batch.as_bytes()).unwrap();
    for i in 0..2000 {
        assert_eq!(reply(&mut s), ["250 2.0.0 Ok"], "NOOP {i}");
    }
    assert_eq!(reply(&mut s), ["220 2.0.0 Ready to start TLS"]);
    let mut tls = tls_client(s, &smtp.certs);
    let ehlo = cmd(&mut tls, "EHLO x");
    assert_eq!(ehlo[0], "250-localhost", "the NOOP after STARTTLS was dropped: {ehlo:?}");
    assert!(!offers_starttls(&ehlo));
    assert_eq!(code(&cmd(&mut tls, "QUIT")), "221");
}

/// A 3 MiB message (under the default 10 MiB `max-size`), in lines of 998
/// octets, a tenth of them stuffed, arrives whole.
#[test]
fn a_large_message_is_delivered_whole() {
    let smtp = Smtp::start();
    let mut s = session(smtp.addr("roomy"), "localhost");
    assert_eq!(code(&cmd(&mut s, "HELO c")), "250");
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<large@x.test> SIZE=3200000")), "250");
    assert_eq!(code(&cmd(&mut s, "RCPT TO:<r@x.test>")), "250");
    assert_eq!(code(&cmd(&mut s, "DATA")), "354");
    let (mut wire, mut bytes) = (Vec::new(), 0);
    for i in 0..3000 {
        let line = format!("{i:06}{}\r\n", "m".repeat(992));
        if i % 10 == 0 {
            wire.push(b'.'); // stuffed: the message line starts with `.`
            wire.push(b'.');
            bytes += 1;
        }
        wire.extend_from_slice(line.as_bytes());
        bytes += line.len();
    }
    s.write_all(&wire).unwrap();
    assert_eq!(code(&cmd(&mut s, ".")), "250");
    let fields = smtp.delivered("large@x.test");
    assert_eq!(fields["bytes"], bytes.to_string());
    assert_eq!(code(&cmd(&mut s, "QUIT")), "221");
}

/// RFC 5321 4.5.3.2 with `command-timeout = "500ms"`: silence after the
/// greeting gets `421 4.4.2` and EOF; each complete command restarts the
/// timeout, and during DATA each chunk does, so a message sent a line every
/// 200 ms, for a second and more, is delivered.
#[test]
fn a_silent_client_gets_421_and_data_chunks_restart_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        dir.path(),
        "[[listener]]\nname = \"hasty\"\nlisten = \"127.0.0.1:0\"\nplugin = \"{guest:smtp}\"\nmax-connections = 16\n\
         config = { hostname = \"mx.test\", command-timeout = \"500ms\" }\n",
    );
    let pier = Pier::start(&["--config", &cfg], 1);
    let addr = pier.addr();
    let silent = std::thread::spawn(move || {
        let start = Instant::now();
        let mut s = session(addr, "mx.test");
        assert_eq!(reply(&mut s), ["421 4.4.2 mx.test Error: timeout exceeded"]);
        let took = start.elapsed();
        assert_eq!(read_to_eof(&mut s), b"", "then the server closes");
        took
    });
    let mut s = session(addr, "mx.test");
    assert_eq!(code(&cmd(&mut s, "HELO client")), "250");
    assert_eq!(code(&cmd(&mut s, "MAIL FROM:<slow@example.com>")), "250");
    assert_eq!(code(&cmd(&mut s, "RCPT TO:<b@example.com>")), "250");
    assert_eq!(code(&cmd(&mut s, "DATA")), "354");
    for i in 0..6 {
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(format!("line {i}\r\n").as_bytes()).unwrap();
    }
    // Measured from before the last command, so never less than the timeout.
    let asked = Instant::now();
    assert_eq!(code(&cmd(&mut s, ".")), "250");
    assert_eq!(reply(&mut s), ["421 4.4.2 mx.test Error: timeout exceeded"]);
    assert!(asked.elapsed() >= Duration::from_millis(500), "421 after {:?}", asked.elapsed());
    assert_eq!(read_to_eof(&mut s), b"");
    let took = silent.join().unwrap();
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(5), "421 after {took:?}");
    assert!(pier.wait_for_log("delivered mail/1 from=slow@example.com").contains("bytes=48"));
}
