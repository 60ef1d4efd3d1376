//! Routes and responses. Every response has a `Content-Length`, so
//! keep-alive and pipelining need no other framing, a `Server` header and a
//! `Date` (RFC 9110 6.6.1), formatted once per second by `Date`.

/// The built-in page at `/`.
const INDEX: &str = "<!doctype html>
<html><head><title>pier</title></head>
<body><h1>pier</h1>
<p>This page is served by an HTTP/1.1 handler running in its own
WebAssembly sandbox, one fresh instance per connection.</p>
<p>Try <a href=\"/hello\">/hello</a>.</p>
</body></html>
";

#[derive(Debug, Clone, Copy)]
pub struct Response {
    status: u16,
    content_type: &'static str,
    body: &'static [u8],
    allow: bool,
}

/// What the `Connection` header of a response says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// HTTP/1.1 keeping the connection: no header, persistence is the default.
    Persist,
    /// An HTTP/1.0 client that asked to keep the connection (RFC 9112 C.2.2).
    KeepAlive,
    Close,
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

impl Response {
    /// An error status with a short plain-text body.
    pub fn status(status: u16) -> Self {
        let body: &'static [u8] = match status {
            400 => b"bad request\n",
            404 => b"not found\n",
            405 => b"method not allowed\n",
            408 => b"request timeout\n",
            411 => b"length required\n",
            413 => b"content too large\n",
            414 => b"uri too long\n",
            417 => b"expectation failed\n",
            431 => b"request header fields too large\n",
            501 => b"not implemented\n",
            505 => b"http version not supported\n",
            _ => b"error\n",
        };
        Response { status, content_type: "text/plain; charset=utf-8", body, allow: status == 405 }
    }

    /// Appends the whole response to `out`; `head_only` leaves out the body
    /// but keeps its `Content-Length` (HEAD answers what GET would).
    pub fn encode(&self, out: &mut Vec<u8>, date: &[u8; DATE_LEN], connection: Connection, head_only: bool) {
        // Written piece by piece, numbers by `itoa`: every response pays for
        // this head, and `format!` shows in profiles of it.
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason(self.status).as_bytes());
        out.extend_from_slice(b"\r\nServer: pier\r\nDate: ");
        out.extend_from_slice(date);
        out.extend_from_slice(b"\r\nContent-Type: ");
        out.extend_from_slice(self.content_type.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(self.body.len()).as_bytes());
        out.extend_from_slice(match connection {
            Connection::Persist => b"\r\n",
            Connection::KeepAlive => b"\r\nConnection: keep-alive\r\n",
            Connection::Close => b"\r\nConnection: close\r\n",
        });
        if self.allow {
            out.extend_from_slice(b"Allow: GET, HEAD\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(self.body);
        }
    }
}

/// The methods of RFC 9110 and PATCH: others get 501 (RFC 9110 9.1).
const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];

/// The response for a method and a request target (origin-form, or
/// absolute-form, whose scheme and authority are ignored).
pub fn route(method: &str, target: &str) -> Response {
    let path = origin_path(target);
    let path = path.split('?').next().unwrap_or(path);
    let page = match path {
        "/" => Some(("text/html; charset=utf-8", INDEX.as_bytes())),
        "/hello" => Some(("text/plain; charset=utf-8", b"Hello, world!\n".as_slice())),
        _ => None,
    };
    match (page, method) {
        (Some((content_type, body)), "GET" | "HEAD") => Response { status: 200, content_type, body, allow: false },
        _ if !METHODS.contains(&method) => Response::status(501),
        (None, _) => Response::status(404),
        (Some(_), _) => Response::status(405),
    }
}

/// The path of an absolute-form target (`http://host/path`, RFC 9112 3.2.2).
fn origin_path(target: &str) -> &str {
    if target.starts_with('/') {
        return target;
    }
    let b = target.as_bytes();
    let after = if b.len() >= 7 && b[..7].eq_ignore_ascii_case(b"http://") {
        7
    } else if b.len() >= 8 && b[..8].eq_ignore_ascii_case(b"https://") {
        8
    } else {
        return target;
    };
    let rest = &target[after..];
    match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => &rest[i..],
        _ => "/",
    }
}

/// Length of an IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_LEN: usize = 29;

/// The `Date` value, formatted again only when the second changes.
#[derive(Debug)]
pub struct Date {
    secs: u64,
    text: [u8; DATE_LEN],
}

impl Default for Date {
    fn default() -> Self {
        Date { secs: 0, text: imf_fixdate(0) }
    }
}

impl Date {
    /// The date of `secs` (seconds since the Unix epoch).
    pub fn at(&mut self, secs: u64) -> &[u8; DATE_LEN] {
        if secs != self.secs {
            self.secs = secs;
            self.text = imf_fixdate(secs);
        }
        &self.text
    }

    /// The date last formatted.
    pub fn current(&self) -> &[u8; DATE_LEN] {
        &self.text
    }
}

/// RFC 9110 5.6.7: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn imf_fixdate(secs: u64) -> [u8; DATE_LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] =
        [b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec"];
    let days = secs / 86_400;
    let time = secs % 86_400;
    // Howard Hinnant's civil_from_days, for days since 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = (yoe + era * 400 + u64::from(month <= 2)).min(9999);
    let mut text = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    text[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    let two = |text: &mut [u8; DATE_LEN], at: usize, n: u64| {
        text[at] = b'0' + (n / 10) as u8;
        text[at + 1] = b'0' + (n % 10) as u8;
    };
    two(&mut text, 5, day);
    text[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    two(&mut text, 12, year / 100);
    two(&mut text, 14, year % 100);
    two(&mut text, 17, time / 3600);
    two(&mut text, 20, time / 60 % 60);
    two(&mut text, 23, time % 60);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(method: &str, path: &str) -> u16 {
        route(method, path).status
    }

    const DATE: &[u8; DATE_LEN] = b"Sun, 06 Nov 1994 08:49:37 GMT";

    #[test]
    fn routes() {
        assert_eq!(status("GET", "/"), 200);
        assert_eq!(status("HEAD", "/hello"), 200);
        assert_eq!(status("GET", "/hello?name=x"), 200);
        assert_eq!(status("GET", "/hello/"), 404);
        assert_eq!(status("DELETE", "/nope"), 404);
        assert_eq!(status("POST", "/"), 405);
        assert_eq!(status("get", "/"), 501, "methods are case-sensitive");
        assert_eq!(status("BREW", "/nope"), 501);
        assert_eq!(status("GET", "http://example.com/hello"), 200);
        assert_eq!(status("GET", "HTTP://example.com:80/hello?x"), 200);
        assert_eq!(status("GET", "http://example.com"), 200);
        assert_eq!(status("GET", "http://example.com?x=/hello"), 200);
        assert_eq!(status("GET", "ftp://example.com/hello"), 404);
        assert_eq!(status("OPTIONS", "*"), 404);
    }

    #[test]
    fn hello_byte_for_byte() {
        let mut out = Vec::new();
        route("GET", "/hello").encode(&mut out, DATE, Connection::Persist, false);
        let want = "HTTP/1.1 200 OK\r\nServer: pier\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
                    Content-Type: text/plain; charset=utf-8\r\nContent-Length: 14\r\n\r\nHello, world!\n";
        assert_eq!(String::from_utf8(out).unwrap(), want);
        let mut out = Vec::new();
        route("HEAD", "/").encode(&mut out, DATE, Connection::Close, true);
        let text = String::from_utf8(out).unwrap();
        let length = format!("Content-Length: {}\r\n", INDEX.len());
        assert!(text.contains(&length) && text.ends_with("Connection: close\r\n\r\n"), "{text}");
        let mut out = Vec::new();
        route("GET", "/").encode(&mut out, DATE, Connection::KeepAlive, false);
        assert!(String::from_utf8(out).unwrap().contains("\r\nConnection: keep-alive\r\n"));
    }

    #[test]
    fn only_405_says_allow() {
        let mut out = Vec::new();
        route("PUT", "/hello").encode(&mut out, DATE, Connection::Persist, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && text.contains("\r\nAllow: GET, HEAD\r\n"));
        assert!(text.ends_with("\r\n\r\nmethod not allowed\n"), "{text}");
        let mut out = Vec::new();
        route("GET", "/nope").encode(&mut out, DATE, Connection::Persist, false);
        assert!(!String::from_utf8(out).unwrap().contains("Allow:"));
    }

    #[test]
    fn dates_are_imf_fixdates() {
        let date = |secs| String::from_utf8(imf_fixdate(secs).to_vec()).unwrap();
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(date(1_709_251_199), "Thu, 29 Feb 2024 23:59:59 GMT");
        assert_eq!(date(4_102_444_800), "Fri, 01 Jan 2100 00:00:00 GMT");
        assert_eq!(date(1_764_590_400), "Mon, 01 Dec 2025 12:00:00 GMT");
        let mut cache = Date::default();
        assert_eq!(cache.at(784_111_777), DATE);
        assert_eq!(cache.at(784_111_778)[..], *b"Sun, 06 Nov 1994 08:49:38 GMT");
    }
}
