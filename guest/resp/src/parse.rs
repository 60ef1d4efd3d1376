//! An incremental RESP2 request parser: arrays of bulk strings, as clients
//! such as redis-cli and redis-benchmark send commands, and inline commands,
//! as typed into telnet or `nc` (split like Redis's `sdssplitargs`, quotes
//! and escapes included).
//!
//! Why not a crate: the RESP crates parse what servers send (replies), not
//! inline commands, which redis-benchmark's PING_INLINE and every telnet user
//! need; a request parser is small.
//!
//! The parser keeps its place inside an array that has not fully arrived, so
//! a command sent in many pieces (a large value arrives in 32 KiB chunks) is
//! read once, not re-read from its start on every chunk. Arguments are
//! returned as slices of the caller's buffer: a value is never copied.

use std::borrow::Cow;
use std::ops::Range;

/// Longest bulk string (one argument) accepted. Redis allows 512 MiB; a
/// handler instance's memory is limited (pier's default is 64 MiB), so refuse
/// early and clearly rather than trap half-way through a value.
pub const MAX_BULK: usize = 16 << 20;
/// Longest request (one whole command, all its arguments): one value of the
/// largest size plus room for its key and command.
pub const MAX_REQUEST: usize = MAX_BULK + (1 << 20);
/// Most arguments in one command (Redis's limit).
pub const MAX_ARGS: usize = 1 << 20;
/// Longest inline command, and longest `*count` or `$length` line (Redis's
/// `PROTO_INLINE_MAX_SIZE`).
pub const MAX_INLINE: usize = 64 << 10;

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed<'b> {
    /// A command (never empty) and the number of bytes it used.
    Command(Vec<Cow<'b, [u8]>>, usize),
    /// Bytes that carry no command (an empty line, `*0`): skip them.
    Skip(usize),
    /// More bytes are needed; `need` is how many the buffer must hold at
    /// least (known exactly once a bulk length has been read), so the caller
    /// can make room for a large value at once.
    Incomplete { need: usize },
}

/// A request that can never become valid: the caller answers
/// `-ERR Protocol error: ...` and closes, as Redis does.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

fn error(text: &str) -> ProtocolError {
    ProtocolError(text.to_string())
}

/// Where the parser is inside an array that has not fully arrived.
///
/// Contract: after `Incomplete`, the next call must be given a buffer that
/// starts at the same byte (the same unfinished command) and holds at least
/// the bytes seen before. After any other outcome the parser starts afresh.
#[derive(Debug, Default)]
pub struct Parser {
    /// Arguments the array announced; 0 when no array is being read.
    want: usize,
    /// The arguments read so far, as ranges of the buffer.
    args: Vec<Range<usize>>,
    /// Offset of the first byte not yet read.
    at: usize,
}

impl Parser {
    /// Reads the command at the start of `buf`.
    pub fn parse<'b>(&mut self, buf: &'b [u8]) -> Result<Parsed<'b>, ProtocolError> {
        let result = self.parse_inner(buf);
        if !matches!(result, Ok(Parsed::Incomplete { .. })) {
            self.want = 0;
            self.args.clear();
            self.at = 0;
        }
        result
    }

    fn parse_inner<'b>(&mut self, buf: &'b [u8]) -> Result<Parsed<'b>, ProtocolError> {
        if self.want == 0 {
            match buf.first() {
                None => return Ok(incomplete(buf)),
                Some(b'*') => {}
                Some(_) => return parse_inline(buf),
            }
            let Some((head, used)) = line(buf) else {
                return too_long(buf, "too big mbulk count string");
            };
            let count = integer(&head[1..]).ok_or_else(|| error("invalid multibulk length"))?;
            if count <= 0 {
                return Ok(Parsed::Skip(used));
            }
            if count > MAX_ARGS as i64 {
                return Err(error("invalid multibulk length"));
            }
            self.want = count as usize;
            self.at = used;
            // Capacity as arguments arrive: a `*1000000` costs nothing yet.
            self.args.reserve(self.want.min(16));
        }
        while self.args.len() < self.want {
            let rest = &buf[self.at..];
            let Some((head, used)) = line(rest) else {
                return too_long(rest, "too big bulk count string").map(|_| incomplete(buf));
            };
            match head.first() {
                Some(b'$') => {}
                Some(&got) => return Err(ProtocolError(format!("expected '$', got '{}'", got as char))),
                None => return Err(error("expected '$', got an empty line")),
            }
            let len = integer(&head[1..]).filter(|&n| (0..=MAX_BULK as i64).contains(&n));
            let len = len.ok_or_else(|| error("invalid bulk length"))? as usize;
            let start = self.at + used;
            let end = start + len;
            if end + 2 > MAX_REQUEST {
                return Err(error("request too large"));
            }
            if buf.len() < end + 2 {
                return Ok(Parsed::Incomplete { need: end + 2 });
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(error("bulk string not terminated by CRLF"));
            }
            self.args.push(start..end);
            self.at = end + 2;
        }
        let args = self.args.drain(..).map(|r| Cow::Borrowed(&buf[r])).collect();
        Ok(Parsed::Command(args, self.at))
    }
}

fn incomplete(buf: &[u8]) -> Parsed<'static> {
    Parsed::Incomplete { need: buf.len() + 1 }
}

/// No line end yet: wait for one, unless the line is already too long.
fn too_long(buf: &[u8], what: &str) -> Result<Parsed<'static>, ProtocolError> {
    if buf.len() > MAX_INLINE { Err(error(what)) } else { Ok(incomplete(buf)) }
}

/// The line at the start of `buf` without its `\r\n` (or bare `\n`), and its
/// length with it.
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    let end = if nl > 0 && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
    Some((&buf[..end], nl + 1))
}

/// A decimal integer in Redis's strict form (its `string2ll`): an optional
/// `-`, no `+`, no leading zeros, no spaces, within i64.
pub fn integer(text: &[u8]) -> Option<i64> {
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    let canonical = match digits {
        [] => false,
        [b'0'] => digits.len() == text.len(),
        [first, ..] => (b'1'..=b'9').contains(first) && digits.iter().all(u8::is_ascii_digit),
    };
    if !canonical {
        return None;
    }
    // Accumulated downwards, so that i64::MIN, which has no positive
    // counterpart, fits; every length and count of every request comes here.
    let mut n: i64 = 0;
    for &d in digits {
        n = n.checked_mul(10)?.checked_sub(i64::from(d - b'0'))?;
    }
    if digits.len() == text.len() { n.checked_neg() } else { Some(n) }
}

fn parse_inline(buf: &[u8]) -> Result<Parsed<'_>, ProtocolError> {
    let Some((text, used)) = line(buf) else {
        return too_long(buf, "too big inline request");
    };
    if text.len() > MAX_INLINE {
        return Err(error("too big inline request"));
    }
    let args = split_args(text).ok_or_else(|| error("unbalanced quotes in request"))?;
    if args.is_empty() {
        Ok(Parsed::Skip(used))
    } else {
        Ok(Parsed::Command(args.into_iter().map(Cow::Owned).collect(), used))
    }
}

/// Whitespace between inline arguments: C's `isspace`, and NUL (which ends
/// an inline command in Redis; here it only separates, so the bytes after it
/// are not silently dropped).
fn is_separator(b: u8) -> bool {
    b.is_ascii_whitespace() || b == 0x0b || b == 0
}

/// Splits an inline command into arguments as Redis's `sdssplitargs` does:
/// whitespace separates; `"..."` takes `\n \r \t \b \a \\ \"` and `\xHH`
/// escapes; `'...'` takes only `\'`; a closing quote must be followed by
/// whitespace or the end. None for unbalanced quotes.
pub fn split_args(text: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < text.len() && is_separator(text[i]) {
            i += 1;
        }
        if i == text.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        let (mut double, mut single) = (false, false);
        loop {
            let c = text.get(i).copied();
            if double {
                match (c, text.get(i + 1).copied()) {
                    (None, _) => return None,
                    (Some(b'\\'), Some(b'x'))
                        if i + 3 < text.len() && text[i + 2].is_ascii_hexdigit() && text[i + 3].is_ascii_hexdigit() =>
                    {
                        let hex = std::str::from_utf8(&text[i + 2..i + 4]).ok()?;
                        arg.push(u8::from_str_radix(hex, 16).ok()?);
                        i += 3;
                    }
                    (Some(b'\\'), Some(e)) => {
                        arg.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 1;
                    }
                    (Some(b'"'), next) => {
                        if next.is_some_and(|n| !is_separator(n)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    (Some(c), _) => arg.push(c),
                }
            } else if single {
                match (c, text.get(i + 1).copied()) {
                    (None, _) => return None,
                    (Some(b'\\'), Some(b'\'')) => {
                        arg.push(b'\'');
                        i += 1;
                    }
                    (Some(b'\''), next) => {
                        if next.is_some_and(|n| !is_separator(n)) {
                            return None;
                        }
                        i += 1;
                        break;
                    }
                    (Some(c), _) => arg.push(c),
                }
            } else {
                match c {
                    None => break,
                    Some(c) if is_separator(c) => break,
                    Some(b'"') => double = true,
                    Some(b'\'') => single = true,
                    Some(c) => arg.push(c),
                }
            }
            i += 1;
        }
        args.push(arg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str], used: usize) -> Parsed<'static> {
        Parsed::Command(args.iter().map(|a| Cow::Owned(a.as_bytes().to_vec())).collect(), used)
    }

    fn parse(buf: &[u8]) -> Result<Parsed<'_>, ProtocolError> {
        Parser::default().parse(buf)
    }

    #[test]
    fn arrays_of_bulk_strings() {
        let req = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(parse(req), Ok(cmd(&["GET", "k"], req.len())));
        assert_eq!(parse(b"*1\r\n$0\r\n\r\n"), Ok(cmd(&[""], 10)));
        let binary = b"*2\r\n$4\r\nECHO\r\n$4\r\n\r\n\0\xff\r\n";
        let Ok(Parsed::Command(args, _)) = parse(binary) else { panic!() };
        assert_eq!(args[1].as_ref(), b"\r\n\0\xff", "bulk strings are binary-safe");
    }

    #[test]
    fn every_prefix_is_incomplete_and_pipelines_split() {
        let req = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
        for cut in 0..req.len() {
            assert!(matches!(parse(&req[..cut]), Ok(Parsed::Incomplete { .. })), "cut at {cut}");
        }
        let two = b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\n";
        assert_eq!(parse(two), Ok(cmd(&["PING"], 14)));
        assert_eq!(parse(&two[14..]), Ok(cmd(&["PING"], 14)));
    }

    #[test]
    fn resumes_where_it_stopped_and_announces_the_size_it_needs() {
        let mut value = vec![b'v'; 100_000];
        let mut req = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n".to_vec();
        let head = req.len();
        req.append(&mut value);
        req.extend_from_slice(b"\r\n");
        let mut parser = Parser::default();
        assert_eq!(parser.parse(&req[..head + 10]), Ok(Parsed::Incomplete { need: req.len() }));
        // Fed one growing buffer, chunk by chunk, as the handler does.
        for cut in (head + 10..req.len()).step_by(32 << 10) {
            assert_eq!(parser.parse(&req[..cut]), Ok(Parsed::Incomplete { need: req.len() }));
        }
        let Ok(Parsed::Command(args, used)) = parser.parse(&req) else { panic!() };
        assert_eq!((args.len(), args[2].len(), used), (3, 100_000, req.len()));
        assert!(matches!(args[2], Cow::Borrowed(_)), "values are not copied");
        // Fresh state afterwards.
        assert_eq!(parser.parse(b"PING\r\n"), Ok(cmd(&["PING"], 6)));
    }

    #[test]
    fn inline_commands() {
        assert_eq!(parse(b"PING\r\n"), Ok(cmd(&["PING"], 6)));
        assert_eq!(parse(b"set  a b\n"), Ok(cmd(&["set", "a", "b"], 9)));
        assert_eq!(parse(b"set k \"hello world\"\r\n"), Ok(cmd(&["set", "k", "hello world"], 21)));
        assert_eq!(parse(b"set k 'a\\'b'\r\n"), Ok(cmd(&["set", "k", "a'b"], 14)));
        assert_eq!(parse(b"echo \"\\x41\\n\\\"\"\r\n"), Ok(cmd(&["echo", "A\n\""], 17)));
        assert_eq!(parse(b"\r\n"), Ok(Parsed::Skip(2)));
        assert_eq!(parse(b"   \n"), Ok(Parsed::Skip(4)));
        assert_eq!(parse(b"*0\r\n"), Ok(Parsed::Skip(4)));
        assert_eq!(parse(b"*-1\r\n"), Ok(Parsed::Skip(5)));
        assert_eq!(parse(b"PIN"), Ok(Parsed::Incomplete { need: 4 }));
        assert_eq!(parse(b"\0\x01 junk\0\r\n"), Ok(cmd(&["\x01", "junk"], 10)));
    }

    /// Random bytes, fed as the handler feeds them (growing buffer, consumed
    /// prefix dropped): every outcome is a command, a skip, a wait or an
    /// error, never a panic or a loop that makes no progress.
    #[test]
    fn random_garbage_never_panics_or_stalls() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        // Mostly protocol bytes, so the parser gets deep as well.
        let alphabet = b"*$\r\n0123-4 \"'\\xA\0PING\xff";
        let mut byte = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            alphabet[(x % alphabet.len() as u64) as usize]
        };
        for _ in 0..2_000 {
            let input: Vec<u8> = (0..64).map(|_| byte()).collect();
            let mut parser = Parser::default();
            let mut buf = Vec::new();
            for chunk in input.chunks(7) {
                buf.extend_from_slice(chunk);
                loop {
                    match parser.parse(&buf) {
                        Ok(Parsed::Command(_, used) | Parsed::Skip(used)) => {
                            assert!(used > 0 && used <= buf.len());
                            buf.drain(..used);
                        }
                        Ok(Parsed::Incomplete { need }) => {
                            assert!(need > buf.len());
                            break;
                        }
                        Err(_) => {
                            buf.clear();
                            parser = Parser::default();
                            break;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn unbalanced_quotes_are_protocol_errors() {
        for bad in [&b"get \"unbalanced\r\n"[..], b"set k \"a\"b\r\n", b"set k 'oops\r\n"] {
            assert_eq!(parse(bad), Err(error("unbalanced quotes in request")), "{bad:?}");
        }
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let cases: &[(&[u8], &str)] = &[
            (b"*x\r\n", "invalid multibulk length"),
            (b"*+1\r\n", "invalid multibulk length"),
            (b"*2000000\r\n", "invalid multibulk length"),
            (b"*1\r\n+oops\r\n", "expected '$', got '+'"),
            (b"*1\r\nPING\r\n", "expected '$', got 'P'"),
            (b"*1\r\n$nope\r\n", "invalid bulk length"),
            (b"*1\r\n$04\r\nPING\r\n", "invalid bulk length"),
            (b"*1\r\n$-1\r\n", "invalid bulk length"),
            (b"*1\r\n$999999999999\r\n", "invalid bulk length"),
            (b"*1\r\n$3\r\nabcd\r\n", "bulk string not terminated by CRLF"),
        ];
        for (input, error) in cases {
            assert_eq!(parse(input), Err(super::error(error)), "{:?}", String::from_utf8_lossy(input));
        }
        let mut huge = b"*2\r\n$16777216\r\n".to_vec();
        huge.resize(huge.len() + MAX_BULK, b'v');
        huge.extend_from_slice(b"\r\n$16777216\r\n");
        assert_eq!(parse(&huge), Err(error("request too large")));
        let long = vec![b'a'; MAX_INLINE + 1];
        assert_eq!(parse(&long), Err(error("too big inline request")));
        let mut count = b"*".to_vec();
        count.extend(std::iter::repeat_n(b'1', MAX_INLINE + 1));
        assert_eq!(parse(&count), Err(error("too big mbulk count string")));
        let mut length = b"*1\r\n$".to_vec();
        length.extend(std::iter::repeat_n(b'1', MAX_INLINE + 1));
        assert_eq!(parse(&length), Err(error("too big bulk count string")));
    }

    #[test]
    fn redis_integers() {
        for (text, value) in [
            ("0", Some(0)),
            ("42", Some(42)),
            ("-7", Some(-7)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775807", Some(i64::MAX)),
        ] {
            assert_eq!(integer(text.as_bytes()), value, "{text}");
        }
        for bad in ["", "-", "+1", "01", "-0", " 1", "1 ", "1.5", "9223372036854775808", "-9223372036854775809", "0x10"]
        {
            assert_eq!(integer(bad.as_bytes()), None, "{bad:?}");
        }
    }
}

#[cfg(test)]
#[path = "parse_props.rs"]
mod props;
