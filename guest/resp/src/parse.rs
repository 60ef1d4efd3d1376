//! An incremental RESP2 request parser: arrays of bulk strings, as clients
//! send commands, and inline commands, as typed into `nc` or telnet.

/// Longest bulk string accepted (Redis allows 512 MiB; a handler's memory
/// limit is far lower, so refuse early and clearly).
pub const MAX_BULK: usize = 16 << 20;
/// Most arguments in one command.
pub const MAX_ARGS: usize = 1 << 20;
/// Longest inline command line.
pub const MAX_INLINE: usize = 64 << 10;

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A command and the bytes it used.
    Command(Vec<Vec<u8>>, usize),
    /// Bytes that carry no command (an empty line): skip them.
    Skip(usize),
    /// More bytes are needed.
    Incomplete,
}

/// A request that can never become valid: answer it and close.
#[derive(Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

/// The line at the start of `buf`, without its `\r\n`, and its length with.
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    let end = if nl > 0 && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
    Some((&buf[..end], nl + 1))
}

fn number(text: &[u8], what: &str) -> Result<i64, ProtocolError> {
    std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()).ok_or_else(|| ProtocolError(format!("invalid {what}")))
}

pub fn parse(buf: &[u8]) -> Result<Parsed, ProtocolError> {
    match buf.first() {
        None => Ok(Parsed::Incomplete),
        Some(b'*') => parse_array(buf),
        Some(_) => parse_inline(buf),
    }
}

fn parse_array(buf: &[u8]) -> Result<Parsed, ProtocolError> {
    let Some((head, mut at)) = line(buf) else {
        return if buf.len() > MAX_INLINE {
            Err(ProtocolError("too big mbulk count string".into()))
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let count = number(&head[1..], "multibulk length")?;
    if count <= 0 {
        return Ok(Parsed::Skip(at));
    }
    if count as usize > MAX_ARGS {
        return Err(ProtocolError("invalid multibulk length".into()));
    }
    let mut args = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let Some((head, used)) = line(&buf[at..]) else { return Ok(Parsed::Incomplete) };
        if head.first() != Some(&b'$') {
            let got = head.first().map_or(' ', |&b| b as char);
            return Err(ProtocolError(format!("expected '$', got '{got}'")));
        }
        let len = number(&head[1..], "bulk length")?;
        if len < 0 || len as usize > MAX_BULK {
            return Err(ProtocolError("invalid bulk length".into()));
        }
        let len = len as usize;
        let start = at + used;
        if buf.len() < start + len + 2 {
            return Ok(Parsed::Incomplete);
        }
        if &buf[start + len..start + len + 2] != b"\r\n" {
            return Err(ProtocolError("bulk string not terminated by CRLF".into()));
        }
        args.push(buf[start..start + len].to_vec());
        at = start + len + 2;
    }
    Ok(Parsed::Command(args, at))
}

fn parse_inline(buf: &[u8]) -> Result<Parsed, ProtocolError> {
    let Some((text, used)) = line(buf) else {
        return if buf.len() > MAX_INLINE {
            Err(ProtocolError("too big inline request".into()))
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let args: Vec<Vec<u8>> =
        text.split(|b| b.is_ascii_whitespace()).filter(|w| !w.is_empty()).map(<[u8]>::to_vec).collect();
    if args.is_empty() { Ok(Parsed::Skip(used)) } else { Ok(Parsed::Command(args, used)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str], used: usize) -> Parsed {
        Parsed::Command(args.iter().map(|a| a.as_bytes().to_vec()).collect(), used)
    }

    #[test]
    fn arrays_inline_and_partial() {
        let req = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
        assert_eq!(parse(req), Ok(cmd(&["GET", "k"], req.len())));
        for cut in 0..req.len() {
            assert_eq!(parse(&req[..cut]), Ok(Parsed::Incomplete), "cut at {cut}");
        }
        assert_eq!(parse(b"PING\r\n"), Ok(cmd(&["PING"], 6)));
        assert_eq!(parse(b"set  a b\n"), Ok(cmd(&["set", "a", "b"], 9)));
        assert_eq!(parse(b"\r\n"), Ok(Parsed::Skip(2)));
        assert_eq!(parse(b"*0\r\n"), Ok(Parsed::Skip(4)));
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        assert!(parse(b"*x\r\n").is_err());
        assert!(parse(b"*1\r\n+oops\r\n").is_err());
        assert!(parse(b"*1\r\n$3\r\nabcd\r\n").is_err());
        assert!(parse(b"*1\r\n$999999999999\r\n").is_err());
        assert!(parse(&vec![b'a'; MAX_INLINE + 1]).is_err());
    }
}
