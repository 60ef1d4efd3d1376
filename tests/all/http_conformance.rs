//! The HTTP guest against RFC 9112 with real clients (curl, Python's
//! `http.client`, wrk) and raw sockets: chunked uploads, `Expect:
//! 100-continue`, HTTP/1.0 keep-alive, parallel and pipelined requests, and
//! a table of malformed requests, each with the status it must get and the
//! close after it. Every client runs under `timeout`, every socket read has
//! a deadline.

use crate::common::*;
use std::io::Write;
use std::process::Command;

/// Runs `curl ARGS` (at most 20 s); stdout and stderr.
fn curl(args: &[&str]) -> (String, String) {
    let out =
        Command::new("timeout").arg("20").arg("curl").args(args).output().expect("curl (`make setup` installs it)");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The status lines in `text`, in order.
fn statuses(text: &str) -> Vec<&str> {
    text.split(['\r', '\n']).filter(|l| l.starts_with("HTTP/1.")).collect()
}

#[test]
fn curl_uploads_a_chunked_megabyte_and_reuses_the_connection() {
    let pier = Pier::serve("http", &[]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, pattern(13, 1_500_000)).unwrap();
    let data = format!("@{}", file.display());
    let url = format!("http://{}/hello", pier.addr());
    // Two URLs, one connection: the second request follows a chunked body
    // of 1.5 MB (more than one read), so it is answered only if the body
    // was framed right. curl asks `Expect: 100-continue` for a body this big.
    let (out, log) = curl(&[
        "-sv",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &data,
        "-w",
        "[%{http_code} connects=%{num_connects}]\n",
        &url,
        &url,
    ]);
    assert_eq!(out, "method not allowed\n[405 connects=1]\nmethod not allowed\n[405 connects=0]\n", "{log}");
    assert!(log.contains("> Transfer-Encoding: chunked"), "{log}");
    assert!(log.contains("Re-using existing"), "{log}");
    if log.contains("> Expect: 100-continue") {
        assert!(log.contains("< HTTP/1.1 100 Continue"), "{log}");
    }
    // A GET with a chunked body is answered after the body, then a second GET.
    let (out, log) = curl(&["-s", "-X", "GET", "-H", "Transfer-Encoding: chunked", "--data-binary", &data, &url, &url]);
    assert_eq!(out, "Hello, world!\nHello, world!\n", "{log}");
}

#[test]
fn curl_http_1_0_closes_unless_asked_to_keep_alive() {
    let pier = Pier::serve("http", &[]);
    let url = format!("http://{}/hello", pier.addr());
    let (out, _) = curl(&["-si", "--http1.0", &url]);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n") && out.contains("\r\nConnection: close\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\nHello, world!\n"), "{out}");
    let (out, log) =
        curl(&["-sv", "--http1.0", "-H", "Connection: keep-alive", "-w", "[connects=%{num_connects}]\n", &url, &url]);
    assert_eq!(out, "Hello, world!\n[connects=1]\nHello, world!\n[connects=0]\n", "{log}");
    assert!(log.contains("< Connection: keep-alive"), "{log}");
    // Without the header, curl must connect twice.
    let (out, _) = curl(&["-s", "--http1.0", "-w", "[connects=%{num_connects}]\n", &url, &url]);
    assert_eq!(out, "Hello, world!\n[connects=1]\nHello, world!\n[connects=1]\n");
}

#[test]
fn curl_parallel_transfers() {
    let pier = Pier::serve("http", &[]);
    let urls: Vec<String> =
        (0..12).map(|i| format!("http://{}/{}", pier.addr(), if i % 3 == 0 { "" } else { "hello" })).collect();
    let mut args = vec!["-s", "-Z", "--parallel-max", "4", "-w", "%{http_code} %{size_download}\n"];
    for url in &urls {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let (out, _) = curl(&args);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    let mut want = vec!["200 14"; 8];
    want.extend(["200 255"; 4]);
    assert_eq!(lines, want, "{out}");
}

#[test]
fn python_http_client_keeps_one_connection() {
    let pier = Pier::serve("http", &[]);
    let script = r#"
import http.client, sys, email.utils, time
conn = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=10)
sock = None
def check(method, path, body=None, **kw):
    global sock
    conn.request(method, path, body=body, **kw)
    r = conn.getresponse()
    data = r.read()
    date = email.utils.parsedate_to_datetime(r.getheader("Date"))
    assert abs(date.timestamp() - time.time()) < 60, date
    assert r.getheader("Server") == "pier", r.getheaders()
    if sock is None:
        sock = conn.sock
    # After `Connection: close` http.client drops the socket; before, it reuses it.
    closes = r.getheader("Connection") == "close"
    assert conn.sock is (None if closes else sock), "a new connection"
    print(r.status, len(data), r.getheader("Connection"))
for _ in range(4):
    check("GET", "/hello")
check("HEAD", "/")
check("POST", "/hello", body=iter([b"abc", b"x" * 70000, b""]), encode_chunked=True)
check("POST", "/", body=b"y" * 5000)
check("GET", "/nope")
check("GET", "/hello", headers={"Connection": "close"})
"#;
    let out = Command::new("timeout")
        .args(["20", "python3", "-c", script, "127.0.0.1", &pier.addr().port().to_string()])
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let want = "200 14 None\n200 14 None\n200 14 None\n200 14 None\n200 0 None\n\
                405 19 None\n405 19 None\n404 10 None\n200 14 close\n";
    assert_eq!(stdout, want);
}

#[test]
fn wrk_for_a_second() {
    let pier = Pier::serve("http", &[]);
    let out = Command::new("timeout")
        .args(["20", "wrk", "-t1", "-c4", "-d1s", &format!("http://{}/hello", pier.addr())])
        .output()
        .expect("wrk (`make setup` installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    assert!(!text.contains("Socket errors") && !text.contains("Non-2xx"), "{text}");
    let requests: u64 = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's output:\n{text}"));
    assert!(requests > 0, "{text}");
}

#[test]
fn expect_100_continue_comes_before_the_body_is_sent() {
    let pier = Pier::serve("http", &[]);
    let mut s = connect(pier.addr());
    s.write_all(b"PUT /hello HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    // Nothing else is sent until the 100 arrives (a read with a deadline).
    let (head, body) = read_http_response(&mut s);
    assert_eq!(head, "HTTP/1.1 100 Continue\r\n\r\n");
    assert!(body.is_empty());
    s.write_all(b"hello").unwrap();
    let (head, body) = read_http_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{head}");
    assert_eq!(body, b"method not allowed\n");
    // The same connection goes on, with chunked and 100-continue.
    s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    assert_eq!(read_http_response(&mut s).0, "HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"3\r\nabc\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    assert!(read_http_response(&mut s).0.starts_with("HTTP/1.1 405 "));
    let (head, body) = read_http_response(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("\r\nConnection: close\r\n"), "{head}");
    assert_eq!(body, b"Hello, world!\n");
    assert!(read_to_eof(&mut s).is_empty());
}

#[test]
fn pipelined_chunked_bodies_and_http_1_0_keep_alive_over_one_socket() {
    let pier = Pier::serve("http", &[]);
    let mut s = connect(pier.addr());
    let mut stream = Vec::new();
    stream.extend_from_slice(b"POST /hello HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    for size in [1usize, 100, 40_000, 3] {
        stream.extend_from_slice(format!("{size:x};ext=1\r\n").as_bytes());
        stream.extend_from_slice(&pattern(size as u64, size));
        stream.extend_from_slice(b"\r\n");
    }
    stream.extend_from_slice(b"0\r\nX-Trailer: yes\r\n\r\n");
    stream.extend_from_slice(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    stream.extend_from_slice(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nGET / H");
    stream.extend_from_slice(b"HEAD /hello HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    stream.extend_from_slice(b"GET / HTTP/1.0\r\n\r\n");
    stream.extend_from_slice(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(&stream).unwrap();
    let text = String::from_utf8_lossy(&read_to_eof(&mut s)).into_owned();
    assert_eq!(
        statuses(&text),
        [
            "HTTP/1.1 405 Method Not Allowed",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 405 Method Not Allowed",
            "HTTP/1.1 200 OK",
            "HTTP/1.1 200 OK"
        ],
        "{text}"
    );
    let heads: Vec<&str> = text.split("\r\n\r\n").collect();
    assert!(heads[1].contains("\r\nConnection: keep-alive"), "{text}");
    assert!(text.ends_with("</body></html>\n"), "the last GET is not answered after a close: {text}");
    assert!(text.matches("Server: pier\r\n").count() == 5 && text.matches("\r\nDate: ").count() == 5, "{text}");
}

/// Each malformed request, sent raw (a valid request after it that must not
/// be answered), gets exactly this status, then the server closes.
#[test]
fn malformed_requests_get_their_status_and_the_connection_closes() {
    let pier = Pier::serve("http", &[]);
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let long_field = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(9000));
    let many: String = (0..70).map(|i| format!("X-{i}: y\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    let te = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let big_chunk = format!("{te}1000001\r\n");
    let long_ext = format!("{te}1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(2000));
    let big_trailers = format!("{te}0\r\nX: {}\r\n\r\n", "t".repeat(9000));
    let table: Vec<(&str, &[u8], u16)> = vec![
        ("not HTTP", b"THIS IS NOT HTTP\r\n\r\n", 400),
        ("HTTP/1.1 without Host", b"GET / HTTP/1.1\r\n\r\n", 400),
        ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
        ("space before colon", b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        ("invalid header name", b"GET / HTTP/1.1\r\nHost: x\r\nX@Y: 1\r\n\r\n", 400),
        ("bare CR", b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400),
        ("NUL in a value", b"GET / HTTP/1.1\r\nHost: x\0\r\n\r\n", 400),
        ("Content-Length not a number", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n", 400),
        ("two Content-Lengths", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx", 400),
        (
            "Transfer-Encoding and Content-Length",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
            400,
        ),
        ("chunked not last", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
        ("bad chunk size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n", 400),
        (
            "chunk longer than its size",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        ("unknown coding", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: rot13, chunked\r\n\r\n", 501),
        ("HTTP/1.0 chunked", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
        ("body too large", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n", 413),
        ("chunk too large", big_chunk.as_bytes(), 413),
        ("chunk extensions too long", long_ext.as_bytes(), 413),
        ("target too long", long_target.as_bytes(), 414),
        ("unknown expectation", b"POST / HTTP/1.1\r\nHost: x\r\nExpect: tea\r\nContent-Length: 1\r\n\r\nx", 417),
        ("field too long", long_field.as_bytes(), 431),
        ("too many fields", many.as_bytes(), 431),
        ("trailers too long", big_trailers.as_bytes(), 431),
        ("HTTP/2.0", b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ];
    for (what, request, status) in table {
        let mut s = connect(pier.addr());
        s.write_all(&[request, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"].concat()).unwrap();
        // read_to_eof has the socket's deadline: the server must close.
        let text = String::from_utf8_lossy(&read_to_eof(&mut s)).into_owned();
        let want = format!("HTTP/1.1 {status} ");
        assert_eq!(statuses(&text).len(), 1, "{what}: {text}");
        assert!(text.starts_with(&want) && text.contains("\r\nConnection: close\r\n"), "{what}: {text}");
        assert!(text.contains("\r\nServer: pier\r\n") && text.contains("\r\nDate: "), "{what}: {text}");
    }
    // The server lives on.
    let (out, _) = curl(&["-s", &format!("http://{}/hello", pier.addr())]);
    assert_eq!(out, "Hello, world!\n");
}
