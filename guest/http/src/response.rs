//! Routes and responses. Every response has a `Content-Length`, so
//! keep-alive and pipelining need no other framing, and no `Date`: the
//! answers are deterministic (byte-for-byte testable) and need no clock.

/// The built-in page at `/`.
const INDEX: &str = "<!doctype html>
<html><head><title>pier</title></head>
<body><h1>pier</h1>
<p>This page is served by an HTTP/1.1 handler running in its own
WebAssembly sandbox, one fresh instance per connection.</p>
<p>Try <a href=\"/hello\">/hello</a>.</p>
</body></html>
";

pub struct Response {
    status: u16,
    content_type: &'static str,
    body: &'static [u8],
    allow: bool,
}

impl Response {
    /// An error status with a short plain-text body.
    pub fn status(status: u16) -> Self {
        let body: &'static [u8] = match status {
            400 => b"bad request\n",
            404 => b"not found\n",
            405 => b"method not allowed\n",
            411 => b"length required\n",
            431 => b"request header fields too large\n",
            _ => b"error\n",
        };
        Response { status, content_type: "text/plain; charset=utf-8", body, allow: status == 405 }
    }

    /// Appends the whole response to `out`; `head_only` leaves out the body
    /// but keeps its `Content-Length` (HEAD answers what GET would).
    pub fn encode(&self, out: &mut Vec<u8>, keep_alive: bool, head_only: bool) {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            411 => "Length Required",
            431 => "Request Header Fields Too Large",
            _ => "Error",
        };
        // Written piece by piece, numbers by `itoa`: every response pays for
        // this head, and `format!` shows in profiles of it.
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\nServer: pier\r\nContent-Type: ");
        out.extend_from_slice(self.content_type.as_bytes());
        out.extend_from_slice(b"\r\nContent-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(self.body.len()).as_bytes());
        out.extend_from_slice(if keep_alive {
            b"\r\nConnection: keep-alive\r\n"
        } else {
            b"\r\nConnection: close\r\n"
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

/// The response for a method and a path.
pub fn route(method: &str, path: &str) -> Response {
    let path = path.split('?').next().unwrap_or(path);
    let page = match path {
        "/" => Some(("text/html; charset=utf-8", INDEX.as_bytes())),
        "/hello" => Some(("text/plain; charset=utf-8", b"Hello, world!\n".as_slice())),
        _ => None,
    };
    match (page, method) {
        (None, _) => Response::status(404),
        (Some((content_type, body)), "GET" | "HEAD") => Response { status: 200, content_type, body, allow: false },
        (Some(_), _) => Response::status(405),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(method: &str, path: &str) -> u16 {
        route(method, path).status
    }

    #[test]
    fn routes() {
        assert_eq!(status("GET", "/"), 200);
        assert_eq!(status("HEAD", "/hello"), 200);
        assert_eq!(status("GET", "/hello?name=x"), 200);
        assert_eq!(status("GET", "/hello/"), 404);
        assert_eq!(status("DELETE", "/nope"), 404);
        assert_eq!(status("POST", "/"), 405);
        assert_eq!(status("get", "/"), 405, "methods are case-sensitive");
    }

    #[test]
    fn hello_byte_for_byte() {
        let mut out = Vec::new();
        route("GET", "/hello").encode(&mut out, true, false);
        let want = "HTTP/1.1 200 OK\r\nServer: pier\r\nContent-Type: text/plain; charset=utf-8\r\n\
                    Content-Length: 14\r\nConnection: keep-alive\r\n\r\nHello, world!\n";
        assert_eq!(String::from_utf8(out).unwrap(), want);
        let mut out = Vec::new();
        route("HEAD", "/").encode(&mut out, false, true);
        let text = String::from_utf8(out).unwrap();
        let length = format!("Content-Length: {}\r\n", INDEX.len());
        assert!(text.contains(&length) && text.ends_with("Connection: close\r\n\r\n"), "{text}");
    }

    #[test]
    fn only_405_says_allow() {
        let mut out = Vec::new();
        route("PUT", "/hello").encode(&mut out, true, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && text.contains("\r\nAllow: GET, HEAD\r\n"));
        assert!(text.ends_with("\r\n\r\nmethod not allowed\n"), "{text}");
        let mut out = Vec::new();
        route("GET", "/nope").encode(&mut out, true, false);
        assert!(!String::from_utf8(out).unwrap().contains("Allow:"));
    }
}
