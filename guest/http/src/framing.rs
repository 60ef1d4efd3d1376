//! RFC 9112 request framing: where each request's head and body begin and
//! end in the byte stream, and which requests are malformed.
//!
//! Pure (no host calls, no clock): `Framer::feed` takes what the peer sent
//! and reports, in order, each request head, the end of each request's body
//! (the moment to answer it) and the first error (answer it, then close).
//! Heads are parsed with `httparse`; bodies are read and discarded, framed by
//! `Content-Length` or the chunked transfer coding (RFC 9112 section 7.1),
//! byte by byte, with no buffering. The only buffer is one request head
//! split across reads, at most `MAX_HEAD` bytes.
//!
//! Every decision depends only on the bytes, never on how they were split
//! into reads: the head parser sees at most `MAX_HEAD + 1` bytes of the
//! stream however much has arrived, and the body decoder is a state machine
//! fed byte by byte (the property tests below check it).

/// Largest request head (request line and header fields): past it, 431 (or
/// 414 when the request line itself has not ended), so a peer that never
/// ends its head cannot grow our memory.
pub const MAX_HEAD: usize = 8 << 10;
/// Most header fields in one request (httparse needs a fixed array): past it, 431.
pub const MAX_HEADERS: usize = 64;
/// Largest request body, by `Content-Length` or on the wire when chunked:
/// past it, 413. Bodies are discarded, so this bounds time, not memory.
pub const MAX_BODY: u64 = 16 << 20;
/// Longest chunk-size line (size and chunk extensions): past it, 413.
pub const MAX_CHUNK_LINE: u32 = 1 << 10;
/// Largest trailer section of a chunked body: past it, 431.
pub const MAX_TRAILERS: u32 = 8 << 10;

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
}

/// A complete, valid request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head<'a> {
    pub method: &'a str,
    pub target: &'a str,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// The connection stays open after this request (RFC 9112 9.3 and
    /// appendix C.2.2: HTTP/1.1 unless `Connection: close`, HTTP/1.0 only
    /// with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request with a body: answer
    /// `100 Continue` now, before the body is read.
    pub expect_continue: bool,
    pub body: Body,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A request head; its body, if any, follows.
    Head(Head<'a>),
    /// The last request's body has been read: answer it now.
    End,
    /// Answer this status and close: the stream cannot be framed any more.
    /// Nothing follows.
    Error(u16),
}

/// One connection's framing state.
#[derive(Debug, Default)]
pub struct Framer {
    /// A request head split across reads, at most `MAX_HEAD` bytes; empty
    /// unless `state` is `Head`.
    buf: Vec<u8>,
    state: State,
    /// The current request keeps the connection open.
    keep_alive: bool,
    /// Valid request heads parsed so far.
    heads: u64,
}

/// Where the connection is between reads, for its timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests: no byte of the next head has arrived.
    Idle,
    /// Part of a request head has arrived, not all of it.
    Head,
    /// A request's body is being read.
    Body,
    /// After a request that closes, or an error: input is ignored.
    Done,
}

#[derive(Debug, Default, Clone, Copy)]
enum State {
    #[default]
    Head,
    /// Body bytes still to read.
    Length(u64),
    Chunked(Chunked),
    /// After a request that closes, or an error: input is ignored.
    Done,
}

impl Framer {
    /// Feeds bytes from the peer, calling `on` for each event in them, in
    /// order. Returns true once the connection is to close after the answers
    /// (the last request asked for it, or an error); later input is ignored.
    pub fn feed(&mut self, bytes: &[u8], mut on: impl FnMut(Event<'_>)) -> bool {
        let mut rest = bytes;
        if !self.buf.is_empty() && !rest.is_empty() {
            // The rest of a head begun in an earlier read: complete it from
            // `bytes`, giving the parser no more than MAX_HEAD + 1 bytes.
            let old = self.buf.len();
            let take = rest.len().min(MAX_HEAD + 1 - old);
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(&rest[..take]);
            match self.head(&buf, &mut on) {
                // A partial head: `buf` is at most MAX_HEAD, so all of `rest` is in it.
                None => {
                    self.buf = buf;
                    return false;
                }
                // The head ended in `bytes` (it had not ended in `buf`).
                Some(len) => rest = &rest[len.saturating_sub(old).min(rest.len())..],
            }
            buf.clear();
            self.buf = buf;
        }
        loop {
            match &mut self.state {
                State::Done => {
                    self.buf = Vec::new();
                    return true;
                }
                State::Head => {
                    if rest.is_empty() {
                        return false;
                    }
                    let window = &rest[..rest.len().min(MAX_HEAD + 1)];
                    match self.head(window, &mut on) {
                        Some(len) => rest = &rest[len..],
                        None => {
                            // Partial, so `window` is all of `rest`, at most MAX_HEAD.
                            self.buf.extend_from_slice(rest);
                            return false;
                        }
                    }
                }
                State::Length(left) => {
                    let n = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= n as u64;
                    rest = &rest[n..];
                    if *left > 0 {
                        return false;
                    }
                    self.end(&mut on);
                }
                State::Chunked(chunked) => match chunked.advance(rest) {
                    Ok((_, false)) => return false,
                    Ok((n, true)) => {
                        rest = &rest[n..];
                        self.end(&mut on);
                    }
                    Err(status) => {
                        on(Event::Error(status));
                        self.state = State::Done;
                    }
                },
            }
        }
    }

    /// Where the stream is now: between requests, within a head or a body,
    /// or done.
    pub fn phase(&self) -> Phase {
        match self.state {
            State::Head if self.buf.is_empty() => Phase::Idle,
            State::Head => Phase::Head,
            State::Length(_) | State::Chunked(_) => Phase::Body,
            State::Done => Phase::Done,
        }
    }

    /// How many valid request heads have been parsed: a change between two
    /// reads means a new request began.
    pub fn heads(&self) -> u64 {
        self.heads
    }

    /// Ignores all later input (the connection is closing for another
    /// reason, a timeout).
    pub fn stop(&mut self) {
        self.state = State::Done;
        self.buf = Vec::new();
    }

    /// How many bytes of a split head are held (at most `MAX_HEAD`).
    #[cfg(test)]
    pub fn buffered(&self) -> (usize, usize) {
        (self.buf.len(), self.buf.capacity())
    }

    fn end(&mut self, on: &mut impl FnMut(Event<'_>)) {
        on(Event::End);
        self.state = if self.keep_alive { State::Head } else { State::Done };
    }

    /// Parses a head at the start of `input`: None if it is not complete
    /// yet, else how many bytes it took (the events are sent and the state
    /// set, `Done` on an error).
    fn head(&mut self, input: &[u8], on: &mut impl FnMut(Event<'_>)) -> Option<usize> {
        match parse(input) {
            Parsed::Partial => None,
            Parsed::Bad(status) => {
                on(Event::Error(status));
                self.state = State::Done;
                Some(input.len())
            }
            Parsed::Request(head, len) => {
                self.keep_alive = head.keep_alive;
                self.heads += 1;
                let body = head.body;
                on(Event::Head(head));
                match body {
                    Body::None | Body::Length(0) => self.end(on),
                    Body::Length(n) => self.state = State::Length(n),
                    Body::Chunked => self.state = State::Chunked(Chunked::default()),
                }
                Some(len)
            }
        }
    }
}

enum Parsed<'a> {
    /// A valid head and its length in bytes.
    Request(Head<'a>, usize),
    Partial,
    Bad(u16),
}

/// Parses and checks one request head (RFC 9112 sections 2 to 7).
fn parse(buf: &[u8]) -> Parsed<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    // httparse rejects what RFC 9112 says to reject in a head: obs-fold (a
    // line starting with SP or HTAB) and a space before the colon (invalid
    // header names), non-token names, bare CR, control bytes in values, a
    // malformed request line.
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return Parsed::Bad(431),
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Parsed::Bad(too_long(buf)),
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Bad(431),
        Err(httparse::Error::Version) => return Parsed::Bad(version_error(buf)),
        Err(_) => return Parsed::Bad(400),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Parsed::Bad(400);
    };
    // One pass over the fields, matching names by length first: every
    // request pays for this loop.
    let mut hosts = 0u32;
    let mut length: Option<u64> = None;
    let mut bad_length = false;
    let mut codings = Codings::default();
    let (mut close, mut keep_alive) = (false, false);
    let mut expect = Expect::None;
    for field in req.headers.iter() {
        let (name, value) = (field.name.as_bytes(), field.value.trim_ascii());
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => hosts += 1,
            6 if name.eq_ignore_ascii_case(b"expect") => {
                expect = if value.eq_ignore_ascii_case(b"100-continue") && expect != Expect::Other {
                    Expect::Continue
                } else {
                    Expect::Other
                }
            }
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in list(value) {
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                // RFC 9112 6.3: a list of identical values may be taken as
                // that one value; anything else is an error.
                for item in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    match decimal(item) {
                        Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                        _ => bad_length = true,
                    }
                }
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => codings.add(value),
            _ => {}
        }
    }
    // RFC 9112 3.2: 400 for an HTTP/1.1 request without Host, and for any
    // request with more than one.
    if hosts > 1 || (minor == 1 && hosts == 0) {
        return Parsed::Bad(400);
    }
    let body = if codings.present {
        // RFC 9112 6.1 and 6.3. Both framings at once is how requests are
        // smuggled: 400, as for a Content-Length that is not a number.
        if length.is_some() || bad_length {
            return Parsed::Bad(400);
        }
        // HTTP/1.0 has no transfer codings: ask for a length, and close.
        if minor == 0 {
            return Parsed::Bad(411);
        }
        if codings.unknown {
            return Parsed::Bad(501);
        }
        // Chunked must be the last coding, and only once, or the body
        // cannot be framed.
        if codings.chunked != 1 || !codings.last_chunked {
            return Parsed::Bad(400);
        }
        Body::Chunked
    } else {
        match length {
            _ if bad_length => return Parsed::Bad(400),
            Some(n) if n > MAX_BODY => return Parsed::Bad(413),
            Some(n) if n > 0 => Body::Length(n),
            _ => Body::None,
        }
    };
    // RFC 9110 10.1.1: HTTP/1.0 requests' Expect is ignored; an expectation
    // other than 100-continue may get 417.
    let expect_continue = match (minor, expect) {
        (0, _) | (_, Expect::None) => false,
        (_, Expect::Continue) => body != Body::None,
        (_, Expect::Other) => return Parsed::Bad(417),
    };
    let keep_alive = !close && (minor == 1 || keep_alive);
    Parsed::Request(Head { method, target, minor, keep_alive, expect_continue, body }, len)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    None,
    Continue,
    Other,
}

/// The transfer codings of all `Transfer-Encoding` fields, as one list.
#[derive(Default)]
struct Codings {
    present: bool,
    chunked: u32,
    last_chunked: bool,
    /// A coding this server does not know (RFC 9112 6.1: 501).
    unknown: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) {
        self.present = true;
        for coding in list(value) {
            self.last_chunked = coding.eq_ignore_ascii_case(b"chunked");
            if self.last_chunked {
                self.chunked += 1;
            } else if !KNOWN_CODINGS.iter().any(|c| coding.eq_ignore_ascii_case(c)) {
                self.unknown = true;
            }
        }
    }
}

/// The registered codings besides chunked; bodies are discarded, so they
/// need only be recognised, never decoded.
const KNOWN_CODINGS: [&[u8]; 5] = [b"gzip", b"x-gzip", b"deflate", b"compress", b"x-compress"];

/// The non-empty elements of a comma-separated field value.
fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|t| !t.is_empty())
}

/// A plain decimal number (no sign, no spaces), at most `u64::MAX`.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| match d {
        b'0'..=b'9' => n.checked_mul(10)?.checked_add(u64::from(d - b'0')),
        _ => None,
    })
}

/// The request line (after the empty lines a parser skips, RFC 9112 2.2).
fn request_line(buf: &[u8]) -> &[u8] {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let line = &buf[start..];
    &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())]
}

/// A head past `MAX_HEAD`: 414 while the request line has not ended (the
/// target is what is too long), 431 otherwise.
fn too_long(buf: &[u8]) -> u16 {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    if buf[start..].contains(&b'\n') { 431 } else { 414 }
}

/// httparse refused the version: 505 for a well-formed `HTTP/x.y` other than
/// 1.0 and 1.1 (judged from the bytes httparse saw before refusing, so that
/// the answer does not depend on how the line was split), else 400.
fn version_error(buf: &[u8]) -> u16 {
    let version = request_line(buf).splitn(3, |&b| b == b' ').nth(2).unwrap_or(b"");
    let Some(rest) = version.strip_prefix(b"HTTP/") else { return 400 };
    match rest {
        [major, ..] if major.is_ascii_digit() && *major != b'1' => 505,
        [b'1', b'.', minor, ..] if minor.is_ascii_digit() => 505,
        _ => 400,
    }
}

/// The chunked body decoder (RFC 9112 7.1), one byte at a time except for
/// chunk data, which is skipped in bulk. CRLF is required in the framing
/// (a bare LF or CR is a 400); chunk extensions and trailer fields are
/// checked for their syntax and discarded.
#[derive(Debug, Default, Clone, Copy)]
struct Chunked {
    step: Step,
    /// The chunk size being read, then the data bytes still to skip.
    size: u64,
    /// Bytes of the current chunk-size line, or of the trailer section.
    line: u32,
    /// Bytes of the body so far, framing included, trailers excluded.
    total: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// The first hex digit of a chunk size.
    #[default]
    Start,
    /// More hex digits.
    Size,
    /// Chunk extensions, up to CR.
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// The start of a trailer field line, or the final CRLF.
    Trailer,
    TrailerName,
    TrailerValue,
    TrailerLf,
    EndLf,
}

impl Chunked {
    /// Consumes body bytes from `input`: how many, and whether the body
    /// ended there; or the status to answer.
    fn advance(&mut self, input: &[u8]) -> Result<(usize, bool), u16> {
        let mut i = 0;
        while i < input.len() {
            if self.step == Step::Data {
                let n = (input.len() - i).min(usize::try_from(self.size).unwrap_or(usize::MAX));
                self.size -= n as u64;
                self.total += n as u64;
                i += n;
                if self.size == 0 {
                    self.step = Step::DataCr;
                }
                continue;
            }
            let b = input[i];
            i += 1;
            if matches!(
                self.step,
                Step::Trailer | Step::TrailerName | Step::TrailerValue | Step::TrailerLf | Step::EndLf
            ) {
                self.line += 1;
                if self.line > MAX_TRAILERS {
                    return Err(431);
                }
            } else {
                self.total += 1;
                if self.total > MAX_BODY {
                    return Err(413);
                }
                if matches!(self.step, Step::Start | Step::Size | Step::Ext | Step::SizeLf) {
                    self.line += 1;
                    if self.line > MAX_CHUNK_LINE {
                        return Err(413);
                    }
                }
            }
            self.step = match (self.step, b) {
                (Step::Start | Step::Size, _) if b.is_ascii_hexdigit() => {
                    let digit = (b as char).to_digit(16).unwrap_or(0);
                    self.size = self.size * 16 + u64::from(digit);
                    if self.total + self.size > MAX_BODY {
                        return Err(413);
                    }
                    Step::Size
                }
                (Step::Size, b'\r') => Step::SizeLf,
                (Step::Size, b';' | b' ' | b'\t') => Step::Ext,
                (Step::Ext, b'\r') => Step::SizeLf,
                (Step::Ext, b'\t' | b' '..=b'~' | 0x80..) => Step::Ext,
                (Step::SizeLf, b'\n') => {
                    self.line = 0;
                    if self.size == 0 { Step::Trailer } else { Step::Data }
                }
                (Step::DataCr, b'\r') => Step::DataLf,
                (Step::DataLf, b'\n') => Step::Start,
                (Step::Trailer, b'\r') => Step::EndLf,
                (Step::Trailer | Step::TrailerName, _) if is_token(b) => Step::TrailerName,
                (Step::TrailerName, b':') => Step::TrailerValue,
                (Step::TrailerValue, b'\r') => Step::TrailerLf,
                (Step::TrailerValue, b'\t' | b' '..=b'~' | 0x80..) => Step::TrailerValue,
                (Step::TrailerLf, b'\n') => Step::Trailer,
                (Step::EndLf, b'\n') => return Ok((i, true)),
                _ => return Err(400),
            };
        }
        Ok((i, false))
    }
}

/// A `tchar` of RFC 9110 5.6.2.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests;
