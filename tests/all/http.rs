//! The HTTP/1.1 guest with curl, wrk and raw sockets.

use crate::common::*;
use std::io::Write;
use std::process::Command;

fn curl(args: &[&str]) -> (String, String) {
    let out =
        Command::new("timeout").arg("20").arg("curl").args(args).output().expect("curl (`make setup` installs it)");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn curl_gets_pages_errors_and_heads() {
    let pier = Pier::serve("http", &[]);
    let base = format!("http://{}", pier.addr());
    let (page, _) = curl(&["-si", &format!("{base}/")]);
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("Content-Type: text/html") && page.contains("<h1>pier</h1>"), "{page}");
    let (hello, _) = curl(&["-si", &format!("{base}/hello")]);
    assert!(hello.starts_with("HTTP/1.1 200 OK\r\n") && hello.ends_with("\r\n\r\nHello, world!\n"), "{hello}");
    assert!(hello.contains("Content-Length: 14\r\n"), "{hello}");
    let (missing, _) = curl(&["-si", &format!("{base}/nope")]);
    assert!(missing.starts_with("HTTP/1.1 404 Not Found\r\n"), "{missing}");
    let (post, _) = curl(&["-si", "-X", "POST", &format!("{base}/hello")]);
    assert!(post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && post.contains("Allow: GET, HEAD\r\n"), "{post}");
    let (head, _) = curl(&["-sI", &format!("{base}/hello")]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Content-Length: 14\r\n"), "{head}");
    assert!(!head.contains("Hello, world!"), "HEAD has no body: {head}");
}

#[test]
fn keep_alive_reuses_one_connection_for_two_urls() {
    let pier = Pier::serve("http", &[]);
    let base = format!("http://{}", pier.addr());
    // `num_connects` is how many connections curl opened for each transfer:
    // 0 for the second URL means it went over the first one's connection.
    let (body, log) =
        curl(&["-sv", "-w", "[connects=%{num_connects}]\n", &format!("{base}/hello"), &format!("{base}/")]);
    assert!(body.starts_with("Hello, world!\n[connects=1]\n"), "{body}\n{log}");
    assert!(body.contains("<h1>pier</h1>") && body.ends_with("</html>\n[connects=0]\n"), "{body}\n{log}");
    assert!(log.contains("Re-using existing"), "curl did not reuse the connection:\n{log}");
}

#[test]
fn a_request_split_across_writes_and_http_1_0() {
    let pier = Pier::serve("http", &["--nodelay"]);
    let mut s = connect(pier.addr());
    s.set_nodelay(true).unwrap();
    for part in [&b"GET /hel"[..], b"lo HTTP/1.1\r\nHo", b"st: x\r\nConnection: close\r\n", b"\r\n"] {
        s.write_all(part).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    let text = String::from_utf8(read_to_eof(&mut s)).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.ends_with("\r\n\r\nHello, world!\n"), "{text}");
    // HTTP/1.0 without keep-alive: one answer, then the server closes.
    let mut s = connect(pier.addr());
    s.write_all(b"GET /hello HTTP/1.0\r\n\r\n").unwrap();
    let text = String::from_utf8(read_to_eof(&mut s)).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("Connection: close\r\n"), "{text}");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let pier = Pier::serve("http", &[]);
    let mut s = connect(pier.addr());
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nHEAD / HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let text = String::from_utf8(read_to_eof(&mut s)).unwrap();
    let statuses: Vec<&str> = text.lines().filter(|l| l.starts_with("HTTP/1.1 ")).collect();
    assert_eq!(statuses, ["HTTP/1.1 200 OK", "HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found"], "{text}");
    assert!(text.ends_with("not found\n"), "{text}");
}

#[test]
fn a_malformed_request_gets_400_and_the_server_lives() {
    let pier = Pier::serve("http", &[]);
    let mut s = connect(pier.addr());
    s.write_all(b"THIS IS NOT HTTP\r\n\r\n").unwrap();
    let text = String::from_utf8(read_to_eof(&mut s)).unwrap();
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n") && text.contains("Connection: close"), "{text}");
    let mut s = connect(pier.addr());
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000));
    s.write_all(huge.as_bytes()).unwrap();
    let text = String::from_utf8(read_to_eof(&mut s)).unwrap();
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
    let (hello, _) = curl(&["-s", &format!("http://{}/hello", pier.addr())]);
    assert_eq!(hello, "Hello, world!\n");
}

#[test]
fn wrk_runs_without_socket_errors() {
    let pier = Pier::serve("http", &["--nodelay"]);
    let out = Command::new("timeout")
        .args(["30", "wrk", "-t2", "-c32", "-d3s", &format!("http://{}/hello", pier.addr())])
        .output()
        .expect("wrk (`make setup` installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {text}");
    assert!(!text.contains("Socket errors"), "{text}");
    assert!(!text.contains("Non-2xx"), "{text}");
    let field = |prefix: &str| {
        let line = text.lines().find(|l| l.trim_start().starts_with(prefix));
        line.map(|l| l.trim_start()[prefix.len()..].split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no `{prefix}` in wrk's output:\n{text}"))
    };
    let rps: f64 = field("Requests/sec:").parse().unwrap_or_else(|_| panic!("{text}"));
    eprintln!("wrk -t2 -c32 -d3s /hello: {rps:.0} requests/s, mean latency {}", field("Latency"));
    assert!(rps > 0.0, "{text}");
}
