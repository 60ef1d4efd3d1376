//! One connection: the framed requests in, the responses out, in order.
//!
//! Pure (no host calls): `Conn::feed` takes what the peer sent and the
//! clock, and appends the answers to a buffer, so the whole protocol is
//! unit-tested natively and the handler only forwards bytes. Framing (what a
//! request is, which are malformed) is `framing`'s; this file answers.

use crate::framing::{Event, Framer, Phase};
use crate::response::{CONTINUE, Connection, Date, Response, route};

/// One connection's state.
#[derive(Debug, Default)]
pub struct Conn {
    framer: Framer,
    /// The answer to the request whose body is being read, sent when it ends.
    pending: Option<(Response, Connection, bool)>,
    date: Date,
}

impl Conn {
    /// Feeds bytes from the peer and appends the answers to every complete
    /// request in them to `out`, in order. `now` gives the time in seconds
    /// since the Unix epoch, for `Date`; it is called at most once, and only
    /// if something is answered. Returns true when the connection must close
    /// once `out` is sent (the client asked, or the request was bad); later
    /// input is ignored.
    pub fn feed(&mut self, bytes: &[u8], now: impl FnOnce() -> u64, out: &mut Vec<u8>) -> bool {
        let Conn { framer, pending, date } = self;
        let mut clock = Some(now);
        let mut stamp = || match clock.take() {
            Some(now) => *date.at(now()),
            None => *date.current(),
        };
        framer.feed(bytes, |event| match event {
            Event::Head(head) => {
                if head.expect_continue {
                    out.extend_from_slice(CONTINUE);
                }
                let connection = match (head.keep_alive, head.minor) {
                    (false, _) => Connection::Close,
                    (true, 0) => Connection::KeepAlive,
                    (true, _) => Connection::Persist,
                };
                *pending = Some((route(head.method, head.target), connection, head.method == "HEAD"));
            }
            Event::End => {
                if let Some((response, connection, head_only)) = pending.take() {
                    response.encode(out, &stamp(), connection, head_only);
                }
            }
            Event::Error(status) => {
                *pending = None;
                Response::status(status).encode(out, &stamp(), Connection::Close, false);
            }
        })
    }

    /// Where the stream is, for the timeouts: between requests, within a
    /// head or a body, or done.
    pub fn phase(&self) -> Phase {
        self.framer.phase()
    }

    /// Request heads parsed so far.
    pub fn heads(&self) -> u64 {
        self.framer.heads()
    }

    /// The request head did not arrive in time: appends `408 Request
    /// Timeout` (the connection must close once it is sent) and ignores
    /// later input. `now` is the time in seconds since the Unix epoch.
    pub fn time_out(&mut self, now: u64, out: &mut Vec<u8>) {
        self.framer.stop();
        self.pending = None;
        Response::status(408).encode(out, self.date.at(now), Connection::Close, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::{MAX_BODY, MAX_HEAD, MAX_HEADERS};

    /// 1994-11-06 08:49:37, RFC 9110's example date.
    const T: u64 = 784_111_777;

    /// Feeds `chunks` one by one; returns what was sent and whether it closed.
    fn run(chunks: &[&[u8]]) -> (String, bool) {
        let mut conn = Conn::default();
        let mut out = Vec::new();
        let mut closed = false;
        for chunk in chunks {
            closed = conn.feed(chunk, || T, &mut out);
        }
        (String::from_utf8(out).unwrap(), closed)
    }

    fn statuses(text: &str) -> Vec<&str> {
        text.split(['\r', '\n']).filter(|l| l.starts_with("HTTP/1.1 ")).collect()
    }

    const HELLO: &[u8] = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n";

    #[test]
    fn answers_hello_and_keeps_the_connection() {
        let (text, closed) = run(&[HELLO]);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nServer: pier\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
             Content-Type: text/plain; charset=utf-8\r\nContent-Length: 14\r\n\r\nHello, world!\n"
        );
        assert!(!closed);
    }

    #[test]
    fn the_clock_is_read_once_per_feed_and_only_to_answer() {
        let mut conn = Conn::default();
        let mut out = Vec::new();
        let reads = std::cell::Cell::new(0);
        let clock = || {
            reads.set(reads.get() + 1);
            T + 1
        };
        conn.feed(&[HELLO, HELLO, HELLO].concat(), clock, &mut out);
        assert_eq!(reads.get(), 1);
        conn.feed(b"GET /hello HTTP/1.1\r\n", clock, &mut out);
        assert_eq!(reads.get(), 1, "nothing answered, no clock");
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("Date: Sun, 06 Nov 1994 08:49:38 GMT\r\n").count(), 3, "{text}");
    }

    #[test]
    fn a_request_split_anywhere_gives_the_same_answer() {
        let two =
            [HELLO, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"].concat();
        let (whole, _) = run(&[&two]);
        assert_eq!(statuses(&whole), ["HTTP/1.1 200 OK", "HTTP/1.1 405 Method Not Allowed"]);
        for cut in 1..two.len() {
            assert_eq!(run(&[&two[..cut], &two[cut..]]).0, whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = two.chunks(1).collect();
        assert_eq!(run(&bytes).0, whole);
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let (text, closed) =
            run(&[b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert_eq!(statuses(&text), ["HTTP/1.1 200 OK", "HTTP/1.1 404 Not Found", "HTTP/1.1 200 OK"]);
        assert!(text.contains("<h1>pier</h1>") && text.ends_with("Hello, world!\n"), "{text}");
        assert!(!closed);
    }

    #[test]
    fn head_has_the_get_headers_and_no_body() {
        let (get, _) = run(&[HELLO]);
        let (head, _) = run(&[b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert_eq!(head, get.strip_suffix("Hello, world!\n").unwrap());
        // httparse skips blank lines before a request line; HEAD is still HEAD.
        let (head, _) = run(&[b"\r\nHEAD /hello HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }

    #[test]
    fn connection_close_and_http_1_0() {
        // (request, closes, the Connection header of the answer)
        let cases: [(&[u8], bool, Option<&str>); 7] = [
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", true, Some("close")),
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: TE, Close\r\n\r\n", true, Some("close")),
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", false, None),
            (b"GET / HTTP/1.0\r\n\r\n", true, Some("close")),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", false, Some("keep-alive")),
            (b"GET / HTTP/1.0\r\nConnection: close\r\n\r\n", true, Some("close")),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", true, Some("close")),
        ];
        for (request, close, header) in cases {
            let (text, closed) = run(&[request, HELLO]);
            assert_eq!(closed, close, "{}", String::from_utf8_lossy(request));
            assert_eq!(statuses(&text).len(), if close { 1 } else { 2 }, "{text}");
            let first = &text[..text.find("\r\n\r\n").unwrap() + 2];
            match header {
                Some(value) => assert!(first.contains(&format!("\r\nConnection: {value}\r\n")), "{text}"),
                None => assert!(!first.contains("Connection:"), "{text}"),
            }
        }
    }

    #[test]
    fn nothing_is_answered_after_a_close() {
        let (text, closed) = run(&[b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", HELLO, HELLO]);
        assert_eq!(statuses(&text).len(), 1);
        assert!(closed);
    }

    #[test]
    fn bodies_are_read_and_discarded() {
        // A body that looks like a request, split across reads: skipped.
        let post = b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n";
        let (text, _) = run(&[post, b"GET /hello ", b"HTTP", HELLO]);
        assert_eq!(statuses(&text), ["HTTP/1.1 405 Method Not Allowed", "HTTP/1.1 200 OK"]);
        assert!(text.contains("Allow: GET, HEAD\r\n"), "{text}");
        let (text, _) = run(&[&[post.as_slice(), b"GET /hello HTTP", HELLO].concat()]);
        assert_eq!(statuses(&text), ["HTTP/1.1 405 Method Not Allowed", "HTTP/1.1 200 OK"]);
        // The answer waits for the end of the body.
        let (text, _) = run(&[post, b"GET /hello"]);
        assert_eq!(text, "");
        // Chunked, with extensions and trailers, then a pipelined request.
        let chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                        5;name=value\r\nhello\r\nA \t; x=\"y\"\r\n0123456789\r\n000\r\nTrailer: t\r\nX-2: \r\n\r\n";
        let (text, closed) = run(&[chunked, HELLO]);
        assert_eq!(statuses(&text), ["HTTP/1.1 405 Method Not Allowed", "HTTP/1.1 200 OK"], "{text}");
        assert!(!closed);
    }

    #[test]
    fn expect_100_continue_is_answered_before_the_body() {
        let head = b"POST /hello HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        let mut conn = Conn::default();
        let mut out = Vec::new();
        assert!(!conn.feed(head, || T, &mut out));
        assert_eq!(out, b"HTTP/1.1 100 Continue\r\n\r\n");
        conn.feed(b"abc", || T, &mut out);
        assert_eq!(
            statuses(&String::from_utf8(out).unwrap()),
            ["HTTP/1.1 100 Continue", "HTTP/1.1 405 Method Not Allowed"]
        );
        // Chunked too; not without a body, not for HTTP/1.0.
        let (text, _) =
            run(&[b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]);
        assert!(text.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 405 "), "{text}");
        let (text, _) = run(&[b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n"]);
        assert_eq!(statuses(&text), ["HTTP/1.1 200 OK"]);
        let (text, _) = run(&[b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"]);
        assert_eq!(statuses(&text), ["HTTP/1.1 405 Method Not Allowed"]);
        // Past the body limit: the final answer at once, no 100.
        let big =
            format!("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        let (text, closed) = run(&[big.as_bytes()]);
        assert_eq!(statuses(&text), ["HTTP/1.1 413 Content Too Large"]);
        assert!(closed);
    }

    /// Each malformed request, the status it gets, and the close after it.
    #[test]
    fn bad_requests_get_their_status_and_close() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(MAX_HEAD));
        let long_field = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let many = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        let big_length = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", MAX_BODY + 1);
        let big_chunk =
            format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", MAX_BODY + 1);
        let long_ext =
            format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\n", "e".repeat(2000));
        let big_trailers = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: {}\r\n\r\n",
            "t".repeat(9000)
        );
        let cases: Vec<(&[u8], u16)> = vec![
            (b"THIS IS NOT HTTP\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tfolded\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHo(st: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\n: empty name\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
            (b"GET / HTTP/1.1\rHost: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\0\r\n\r\n", 400),
            (b"GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3 3\r\n\r\nabc", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n", 501),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n;x\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;a\0\r\nx\r\n0\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n folded: t\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX : t\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\rb\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n", 400),
            (b"POST / HTTP/1.1\r\nHost: x\r\nExpect: the-unexpected\r\nContent-Length: 1\r\n\r\nx", 417),
            (big_length.as_bytes(), 413),
            (big_chunk.as_bytes(), 413),
            (long_ext.as_bytes(), 413),
            (big_trailers.as_bytes(), 431),
            (long_field.as_bytes(), 431),
            (many.as_bytes(), 431),
            (long_target.as_bytes(), 414),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            (b"GET / HTTP/3\r\n", 505),
            (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
            (b"GET / HTTP/1.x\r\nHost: x\r\n\r\n", 400),
            (b"GET / HTTP/11\r\nHost: x\r\n\r\n", 400),
            (b"GET / FTP/1.1\r\nHost: x\r\n\r\n", 400),
        ];
        for (request, status) in cases {
            let shown = String::from_utf8_lossy(&request[..request.len().min(120)]).into_owned();
            for split in [request.len(), request.len() / 2, 1] {
                let pieces: Vec<&[u8]> = request.chunks(split.max(1)).chain([HELLO]).collect();
                let (text, closed) = run(&pieces);
                let got = statuses(&text);
                assert_eq!(got.len(), 1, "{shown:?} (pieces of {split}): {text}");
                assert!(got[0].starts_with(&format!("HTTP/1.1 {status} ")), "{shown:?}: {text}");
                assert!(closed && text.contains("\r\nConnection: close\r\n"), "{shown:?}: {text}");
            }
        }
        // An unknown method is a valid request: 501, and the connection stays.
        let (text, closed) = run(&[b"BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n", HELLO]);
        assert_eq!(statuses(&text), ["HTTP/1.1 501 Not Implemented", "HTTP/1.1 200 OK"]);
        assert!(!closed);
        // Equal Content-Lengths are one length.
        let (text, _) =
            run(&[b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc", HELLO]);
        assert_eq!(statuses(&text), ["HTTP/1.1 405 Method Not Allowed", "HTTP/1.1 200 OK"]);
        let (text, _) = run(&[b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc", HELLO]);
        assert_eq!(statuses(&text), ["HTTP/1.1 405 Method Not Allowed", "HTTP/1.1 200 OK"]);
    }

    #[test]
    fn the_head_size_and_header_count_are_bounded() {
        // Just under the limit is fine.
        let fits = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD - 50));
        let (text, closed) = run(&[fits.as_bytes()]);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && !closed, "{text}");
        let (text, closed) = run(&[&fits.as_bytes()[..100], &fits.as_bytes()[100..]]);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && !closed, "{text}");
        let most: String = (1..MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let (text, closed) = run(&[format!("GET / HTTP/1.1\r\nHost: x\r\n{most}\r\n").as_bytes()]);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && !closed, "{text}");
    }

    #[test]
    fn a_timeout_answers_408_and_closes() {
        let mut conn = Conn::default();
        let mut out = Vec::new();
        assert!(!conn.feed(b"GET /hello HTTP/1.1\r\nHo", || T, &mut out));
        assert_eq!(conn.phase(), Phase::Head);
        conn.time_out(T, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n") && text.ends_with("\r\n\r\nrequest timeout\n"), "{text}");
        assert_eq!(conn.phase(), Phase::Done);
        assert!(conn.feed(b"st: x\r\n\r\n", || T, &mut out), "later input is ignored");
        assert_eq!(out.len(), text.len());
    }

    #[test]
    fn a_partial_head_is_kept_until_complete() {
        let mut conn = Conn::default();
        let mut out = Vec::new();
        assert!(!conn.feed(b"GET /hel", || T, &mut out));
        assert!(out.is_empty());
        assert!(!conn.feed(b"lo HTTP/1.1\r\nHost: x\r\n\r\nGET", || T, &mut out));
        assert!(String::from_utf8_lossy(&out).ends_with("Hello, world!\n"));
        assert_eq!(conn.framer.buffered().0, 3);
    }
}
