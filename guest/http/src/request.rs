//! Request framing: the byte stream in, the responses out, in order.
//!
//! Pure (no host calls): `Conn::feed` takes what the peer sent and appends
//! the answers to a buffer, so the whole protocol is unit-tested natively and
//! the handler only forwards bytes. Requests are parsed with `httparse`;
//! nothing here parses HTTP by hand beyond reading header values.

use crate::response::{Response, route};

/// Largest request head (request line and headers) accepted: past it, 431
/// and close, so a peer that never ends its head cannot grow our memory.
pub const MAX_HEAD: usize = 8 << 10;
/// Most headers in one request (httparse needs a fixed array): past it, 431.
pub const MAX_HEADERS: usize = 64;

/// One connection's framing state.
#[derive(Debug, Default)]
pub struct Conn {
    /// Bytes received and not yet consumed: at most one partial request head
    /// (bounded by `MAX_HEAD`), since bodies are skipped as they come.
    buf: Vec<u8>,
    /// Body bytes of the last request still to skip.
    skip: u64,
    /// An answer said `Connection: close`: ignore everything after it.
    closing: bool,
}

impl Conn {
    /// Feeds bytes from the peer and appends the answers to every complete
    /// request in them to `out`, in order. Returns true when the connection
    /// must close once `out` is sent (the client asked, or the request was
    /// bad); later input is ignored.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> bool {
        if self.closing {
            return true;
        }
        if self.buf.is_empty() {
            // The common case (one or more whole requests per read): parse in
            // place and keep only an unfinished tail.
            let used = self.serve(bytes, out);
            if !self.closing {
                self.buf.extend_from_slice(&bytes[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(bytes);
            let used = self.serve(&buf, out);
            buf.drain(..used);
            self.buf = buf;
        }
        if self.closing {
            self.buf = Vec::new();
        }
        self.closing
    }

    /// Answers the requests at the start of `input`; returns how many bytes
    /// were consumed (whole requests and skipped body bytes).
    fn serve(&mut self, input: &[u8], out: &mut Vec<u8>) -> usize {
        let mut rest = input;
        while !self.closing {
            if self.skip > 0 {
                let n = rest.len().min(usize::try_from(self.skip).unwrap_or(usize::MAX));
                self.skip -= n as u64;
                rest = &rest[n..];
                if self.skip > 0 {
                    break;
                }
            }
            if rest.is_empty() {
                break;
            }
            match parse(rest) {
                Parsed::Request(head) => {
                    route(head.method, head.path).encode(out, head.keep_alive, head.method == "HEAD");
                    rest = &rest[head.len..];
                    self.skip = head.body;
                    self.closing = !head.keep_alive;
                }
                Parsed::Partial => break,
                Parsed::Bad(status) => {
                    Response::status(status).encode(out, false, false);
                    self.closing = true;
                }
            }
        }
        input.len() - rest.len()
    }
}

/// A complete request head, as much of it as the answer needs.
#[derive(Debug)]
struct Head<'a> {
    method: &'a str,
    path: &'a str,
    /// Length of the head in bytes; the body follows.
    len: usize,
    /// Length of the body (`Content-Length`), to skip.
    body: u64,
    keep_alive: bool,
}

#[derive(Debug)]
enum Parsed<'a> {
    Request(Head<'a>),
    /// The head is not complete yet: wait for more bytes.
    Partial,
    /// Answer with this status and close: after a bad head the stream
    /// cannot be framed any more.
    Bad(u16),
}

fn parse(buf: &[u8]) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return Parsed::Bad(431),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Parsed::Bad(431),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Bad(431),
        Err(_) => return Parsed::Bad(400),
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Parsed::Bad(400);
    };
    let values =
        |name: &'static str| req.headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    // RFC 9112 3.2: an HTTP/1.1 request without Host gets 400.
    if version == 1 && values("host").next().is_none() {
        return Parsed::Bad(400);
    }
    // Bodies are framed by Content-Length only; rather than decode chunked
    // bodies just to throw them away, ask for a length (411) and close.
    if values("transfer-encoding").next().is_some() {
        return Parsed::Bad(411);
    }
    let Some(body) = content_length(values("content-length")) else {
        return Parsed::Bad(400);
    };
    let tokens = || values("connection").flat_map(|v| v.split(|&b| b == b',')).map(<[u8]>::trim_ascii);
    let keep_alive = match version {
        1 => !tokens().any(|t| t.eq_ignore_ascii_case(b"close")),
        _ => tokens().any(|t| t.eq_ignore_ascii_case(b"keep-alive")),
    };
    Parsed::Request(Head { method, path, len, body, keep_alive })
}

/// The body length: 0 without the header; None (400) unless every
/// Content-Length is the same plain decimal number, since two framings of
/// one body are how requests get smuggled (RFC 9112 6.3).
fn content_length<'a>(values: impl Iterator<Item = &'a [u8]>) -> Option<u64> {
    let mut length = None;
    for value in values {
        let value = value.trim_ascii();
        if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    Some(length.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one by one; returns what was sent and whether it closed.
    fn run(chunks: &[&[u8]]) -> (String, bool) {
        let mut conn = Conn::default();
        let mut out = Vec::new();
        let mut closed = false;
        for chunk in chunks {
            closed = conn.feed(chunk, &mut out);
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
            "HTTP/1.1 200 OK\r\nServer: pier\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 14\r\nConnection: keep-alive\r\n\r\nHello, world!\n"
        );
        assert!(!closed);
    }

    #[test]
    fn a_request_split_anywhere_gives_the_same_answer() {
        let two = [HELLO, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"].concat();
        let (whole, _) = run(&[&two]);
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
        let cases: [(&[u8], bool); 6] = [
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: TE, Close\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\n\r\n", true),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: close\r\n\r\n", true),
        ];
        for (request, close) in cases {
            let (text, closed) = run(&[request]);
            assert_eq!(closed, close, "{}", String::from_utf8_lossy(request));
            let want = if close { "Connection: close\r\n" } else { "Connection: keep-alive\r\n" };
            assert!(text.contains(want), "{text}");
        }
    }

    #[test]
    fn nothing_is_answered_after_a_close() {
        let (text, closed) = run(&[b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", HELLO, HELLO]);
        assert_eq!(statuses(&text).len(), 1);
        assert!(closed);
    }

    #[test]
    fn bodies_are_skipped_by_content_length() {
        // A body that looks like a request, split across reads: skipped.
        let post = b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 15\r\n\r\n";
        let (text, _) = run(&[post, b"GET /hello ", b"HTTP", HELLO]);
        assert_eq!(statuses(&text), ["HTTP/1.1 405 Method Not Allowed", "HTTP/1.1 200 OK"]);
        assert!(text.contains("Allow: GET, HEAD\r\n"), "{text}");
        let (text, _) = run(&[&[post.as_slice(), b"GET /hello HTTP", HELLO].concat()]);
        assert_eq!(statuses(&text), ["HTTP/1.1 405 Method Not Allowed", "HTTP/1.1 200 OK"]);
    }

    #[test]
    fn bad_requests_get_an_error_and_close() {
        let cases: [(&[u8], &str); 8] = [
            (b"THIS IS NOT HTTP\r\n\r\n", "400 Bad Request"),
            (b"GET / HTTP/1.1\r\n\r\n", "400 Bad Request"),
            (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", "400 Bad Request"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", "400 Bad Request"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", "400 Bad Request"),
            (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "411 Length Required"),
            (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n", "400 Bad Request"),
            (b"GET /\0 HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request"),
        ];
        for (request, status) in cases {
            let (text, closed) = run(&[request, HELLO]);
            assert_eq!(statuses(&text), [format!("HTTP/1.1 {status}")], "{}", String::from_utf8_lossy(request));
            assert!(closed && text.contains("Connection: close\r\n"), "{text}");
        }
        let (text, _) = run(&[b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\ncontent-length: 3\r\n\r\nabc"]);
        assert_eq!(statuses(&text), ["HTTP/1.1 405 Method Not Allowed"]);
    }

    #[test]
    fn the_head_size_and_header_count_are_bounded() {
        // An unfinished head past the limit, fed in pieces.
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}", "a".repeat(MAX_HEAD));
        let (text, closed) = run(&[&big.as_bytes()[..100], &big.as_bytes()[100..]]);
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n") && closed, "{text}");
        // A complete head past the limit, in one read.
        let (text, _) = run(&[format!("{big}\r\nHost: x\r\n\r\n").as_bytes()]);
        assert!(text.starts_with("HTTP/1.1 431 "), "{text}");
        // Just under the limit is fine.
        let fits = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD - 50));
        let (text, closed) = run(&[fits.as_bytes()]);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && !closed, "{text}");
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: y\r\n")).collect();
        let (text, closed) = run(&[format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()]);
        assert!(text.starts_with("HTTP/1.1 431 ") && closed, "{text}");
    }

    #[test]
    fn a_partial_head_is_kept_until_complete() {
        let mut conn = Conn::default();
        let mut out = Vec::new();
        assert!(!conn.feed(b"GET /hel", &mut out));
        assert!(out.is_empty());
        assert!(!conn.feed(b"lo HTTP/1.1\r\nHost: x\r\n\r\nGET", &mut out));
        assert!(String::from_utf8_lossy(&out).ends_with("Hello, world!\n"));
        assert_eq!(conn.buf, b"GET");
    }
}
