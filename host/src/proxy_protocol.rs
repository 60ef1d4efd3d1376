//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a load
//! balancer sends first on each connection it opens to a backend, naming
//! the client it proxies. [`parse`] reads one from bytes (pure, no I/O);
//! [`read_header`] reads exactly its bytes from a socket, so what follows
//! (the handler's bytes, or a TLS handshake) stays in the socket.
//!
//! Accepted: v1 `PROXY TCP4 ...`, `PROXY TCP6 ...` and `PROXY UNKNOWN ...`
//! lines; v2 `LOCAL`, and `PROXY` over AF_INET or AF_INET6 STREAM (UNSPEC
//! and AF_UNIX leave the socket's addresses, as `LOCAL` does); v2 TLVs are
//! skipped. Everything else, datagram (UDP) headers included, is an error.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a client of a `proxy-protocol` listener may take to send its
/// whole header, counted from the accept.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest v1 header, CRLF included (the specification's bound).
pub(crate) const V1_MAX: usize = 107;

/// The v2 signature: the first 12 bytes of every v2 header.
pub(crate) const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// v2's fixed part: the signature, version and command, family and
/// protocol, and the length of the rest.
const V2_FIXED: usize = 16;

/// What a header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Header {
    /// The connection's own addresses stand: v2 `LOCAL` (the balancer's own
    /// connection, a health check), v1 `UNKNOWN`, or a v2 address family
    /// that is not IP (UNSPEC, AF_UNIX).
    Local,
    /// The balancer proxies `source` (the client), which connected to
    /// `destination`.
    Proxied { source: SocketAddr, destination: SocketAddr },
}

/// Why some bytes are not a PROXY protocol header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn error(text: impl Into<String>) -> Error {
    Error(text.into())
}

/// Reads a header from the start of `buf`: the header and its length in
/// bytes (what follows is not the header's), `Ok(None)` while `buf` is a
/// prefix of a header that needs more bytes, or why it is not one. Once a
/// prefix answers `Some` or `Err`, every longer input answers the same.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    match buf.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Err(not_a_header(buf)),
    }
}

/// The error for bytes that begin neither version's header.
fn not_a_header(buf: &[u8]) -> Error {
    let start = &buf[..buf.len().min(16)];
    error(format!(
        "not a PROXY protocol header (the connection starts with `{}`): is the balancer sending one? \
         (HAProxy: send-proxy or send-proxy-v2; nginx: proxy_protocol on)",
        start.escape_ascii()
    ))
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    const PREFIX: &[u8] = b"PROXY ";
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return Err(not_a_header(buf));
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    for (i, &b) in window.iter().enumerate() {
        match b {
            b'\n' => return Err(error("a PROXY v1 line ends in LF without CR")),
            b'\r' => match window.get(i + 1) {
                Some(b'\n') => return v1_line(&buf[..i]).map(|h| Some((h, i + 2))),
                Some(_) => return Err(error("a PROXY v1 line has a CR not followed by LF")),
                None => {}
            },
            0x20..=0x7e => {}
            _ => return Err(error(format!("a PROXY v1 line holds the byte 0x{b:02x}"))),
        }
    }
    if window.len() >= V1_MAX {
        return Err(error(format!("a PROXY v1 line longer than {V1_MAX} bytes")));
    }
    Ok(None)
}

/// One v1 line, without its CRLF: printable ASCII.
fn v1_line(line: &[u8]) -> Result<Header, Error> {
    let text = std::str::from_utf8(line).map_err(|_| error("a PROXY v1 line is not ASCII"))?;
    let fields: Vec<&str> = text.split(' ').collect();
    let v6 = match fields.get(1).copied() {
        Some("UNKNOWN") => return Ok(Header::Local),
        Some("TCP4") => false,
        Some("TCP6") => true,
        _ => return Err(error(format!("a PROXY v1 line of unknown protocol: `{text}`"))),
    };
    let [_, _, source, destination, source_port, destination_port] = fields[..] else {
        return Err(error(format!("a PROXY v1 line needs 4 fields after its protocol, single-spaced: `{text}`")));
    };
    let ip = |text: &str| -> Result<IpAddr, Error> {
        let ip = if v6 { text.parse::<Ipv6Addr>().map(IpAddr::V6) } else { text.parse::<Ipv4Addr>().map(IpAddr::V4) };
        ip.map_err(|_| error(format!("a PROXY v1 line with a bad {} address `{text}`", fields[1])))
    };
    let port = |text: &str| -> Result<u16, Error> {
        let digits = !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit());
        digits
            .then(|| text.parse().ok())
            .flatten()
            .ok_or_else(|| error(format!("a PROXY v1 line with a bad port `{text}`")))
    };
    Ok(Header::Proxied {
        source: SocketAddr::new(ip(source)?, port(source_port)?),
        destination: SocketAddr::new(ip(destination)?, port(destination_port)?),
    })
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, Error> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Err(not_a_header(buf));
    }
    let local = match buf.get(12) {
        None => return Ok(None),
        Some(0x20) => true,
        Some(0x21) => false,
        Some(&b) if b >> 4 != 2 => {
            return Err(error(format!("a PROXY header of version {} (pier reads 1 and 2)", b >> 4)));
        }
        Some(&b) => return Err(error(format!("a PROXY v2 header with an unknown command 0x{:x}", b & 0x0f))),
    };
    // Family (high nibble) and transport (low): UNSPEC, INET, INET6, UNIX;
    // UNSPEC, STREAM, DGRAM.
    let Some(&family) = buf.get(13) else { return Ok(None) };
    let least = match family {
        0x00 => 0,
        0x11 => 12,
        0x21 => 36,
        0x31 => 216,
        0x12 | 0x22 | 0x32 if !local => {
            return Err(error("a PROXY v2 header for a datagram (UDP) connection: pier serves TCP"));
        }
        _ if local => 0,
        _ => return Err(error(format!("a PROXY v2 header with an unknown address family 0x{family:02x}"))),
    };
    let Some(len) = buf.get(14..16) else { return Ok(None) };
    let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
    if !local && len < least {
        return Err(error(format!(
            "a PROXY v2 header too short for its addresses ({len} bytes, family 0x{family:02x} needs {least})"
        )));
    }
    let total = V2_FIXED + len;
    let Some(body) = buf.get(V2_FIXED..total) else { return Ok(None) };
    let header = match family {
        _ if local => Header::Local,
        0x11 => {
            let ip = |at: usize| IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(&body[at..at + 4]).unwrap()));
            Header::Proxied {
                source: SocketAddr::new(ip(0), port(body, 8)),
                destination: SocketAddr::new(ip(4), port(body, 10)),
            }
        }
        0x21 => {
            let ip = |at: usize| IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&body[at..at + 16]).unwrap()));
            Header::Proxied {
                source: SocketAddr::new(ip(0), port(body, 32)),
                destination: SocketAddr::new(ip(16), port(body, 34)),
            }
        }
        // UNSPEC, AF_UNIX: no IP address to take.
        _ => Header::Local,
    };
    // The rest of the body is TLVs: skipped.
    Ok(Some((header, total)))
}

fn port(body: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([body[at], body[at + 1]])
}

/// v2's total length, once its fixed part is in `buf`.
fn v2_total(buf: &[u8]) -> Option<usize> {
    let fixed = buf.get(..V2_FIXED)?;
    (fixed[..12] == V2_SIGNATURE).then(|| V2_FIXED + usize::from(u16::from_be_bytes([fixed[14], fixed[15]])))
}

/// Reads a PROXY protocol header from the start of `stream`, consuming its
/// bytes and no more, within `timeout`: the client's address, `None` when
/// the header leaves the socket's own (`LOCAL`, `UNKNOWN`), or why the
/// connection must close.
pub(crate) async fn read_header(stream: &mut TcpStream, timeout: Duration) -> Result<Option<SocketAddr>, String> {
    let header = match tokio::time::timeout(timeout, read(stream)).await {
        Ok(header) => header?,
        Err(_) => {
            return Err(format!("no complete PROXY protocol header within {}", humantime::format_duration(timeout)));
        }
    };
    Ok(match header {
        Header::Local => None,
        Header::Proxied { source, destination } => {
            tracing::trace!(%source, %destination, "PROXY protocol header");
            Some(source)
        }
    })
}

/// Peeks at what has arrived and parses it with what was read before. A
/// complete header: read exactly its bytes. An incomplete one: everything
/// peeked is header, so read it all (the next peek then waits for more).
async fn read(stream: &mut TcpStream) -> Result<Header, String> {
    let mut seen = Vec::with_capacity(V1_MAX);
    let mut chunk = [0u8; 256];
    loop {
        // v2's length is known: the rest up to it is header.
        if let Some(total) = v2_total(&seen)
            && total > seen.len()
        {
            let old = seen.len();
            seen.resize(total, 0);
            stream.read_exact(&mut seen[old..]).await.map_err(|e| cut_short(&e))?;
        }
        let n = if v2_total(&seen).is_some_and(|total| total == seen.len()) {
            0
        } else {
            let n = stream.peek(&mut chunk).await.map_err(|e| format!("reading the PROXY protocol header: {e}"))?;
            if n == 0 {
                return Err(cut_short(&std::io::ErrorKind::UnexpectedEof.into()));
            }
            n
        };
        let old = seen.len();
        seen.extend_from_slice(&chunk[..n]);
        match parse(&seen) {
            Ok(Some((header, used))) => {
                // Of the bytes peeked now, the header's are `used - old`.
                stream.read_exact(&mut chunk[..used - old]).await.map_err(|e| cut_short(&e))?;
                return Ok(header);
            }
            Ok(None) => {
                stream.read_exact(&mut chunk[..n]).await.map_err(|e| cut_short(&e))?;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn cut_short(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        "the peer closed before its PROXY protocol header ended".to_string()
    } else {
        format!("reading the PROXY protocol header: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn proxied(source: &str, destination: &str) -> Header {
        Header::Proxied { source: addr(source), destination: addr(destination) }
    }

    /// A v2 header: command, family, address block, TLVs.
    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(addresses.len() + tlvs.len()).unwrap().to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    fn v2_inet(source: SocketAddr, destination: SocketAddr, tlvs: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        let family = match (source.ip(), destination.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                a.extend_from_slice(&s.octets());
                a.extend_from_slice(&d.octets());
                0x11
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                a.extend_from_slice(&s.octets());
                a.extend_from_slice(&d.octets());
                0x21
            }
            _ => panic!("one family"),
        };
        a.extend_from_slice(&source.port().to_be_bytes());
        a.extend_from_slice(&destination.port().to_be_bytes());
        v2(1, family, &a, tlvs)
    }

    #[test]
    fn v1_lines_parse_to_their_addresses() {
        let line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\nhello";
        assert_eq!(parse(line), Ok(Some((proxied("1.2.3.4:1111", "5.6.7.8:2222"), 38))));
        let line = b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
        assert_eq!(parse(line), Ok(Some((proxied("[2001:db8::1]:65535", "[::1]:0"), line.len()))));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n"), Ok(Some((Header::Local, 15))));
        let line = b"PROXY UNKNOWN ffff:f...f:ffff 1.2.3.4 65535 65535\r\nGET";
        assert_eq!(parse(line), Ok(Some((Header::Local, line.len() - 3))));
    }

    #[test]
    fn a_v1_prefix_needs_more_and_bad_lines_are_errors() {
        for prefix in ["", "P", "PROXY", "PROXY ", "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222", "PROXY TCP4 1\r"] {
            assert_eq!(parse(prefix.as_bytes()), Ok(None), "{prefix:?}");
        }
        for bad in [
            "GET / HTTP/1.1\r\n",
            "PROXX TCP4",
            "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\rX",
            "PROXY TCP5 1.2.3.4 5.6.7.8 1111 2222\r\n",
            "PROXY TCP4 1.2.3.4  5.6.7.8 1111 2222\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222 \r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1111\r\n",
            "PROXY TCP4 ::1 ::1 1111 2222\r\n",
            "PROXY TCP6 1.2.3.4 5.6.7.8 1111 2222\r\n",
            "PROXY TCP4 1.2.3.256 5.6.7.8 1111 2222\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2222\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 +111 2222\r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2222\r\n",
            "PROXY UNKNOWNX\r\n",
            "PROXY \u{7f}",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let long = format!("PROXY UNKNOWN {}", "x".repeat(V1_MAX));
        assert_eq!(parse(&long.as_bytes()[..V1_MAX - 1]), Ok(None));
        assert!(parse(&long.as_bytes()[..V1_MAX]).unwrap_err().to_string().contains("longer than 107"));
        let longest = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 16));
        assert_eq!(parse(longest.as_bytes()), Ok(Some((Header::Local, V1_MAX))));
    }

    #[test]
    fn v2_headers_parse_and_their_tlvs_are_skipped() {
        let tlvs = [0x04, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef]; // PP2_TYPE_NOOP
        let h = v2_inet(addr("10.0.0.1:40000"), addr("10.0.0.2:443"), &tlvs);
        let mut input = h.clone();
        input.extend_from_slice(b"\x16\x03\x01 a TLS hello");
        assert_eq!(parse(&input), Ok(Some((proxied("10.0.0.1:40000", "10.0.0.2:443"), 16 + 12 + 7))));
        let h6 = v2_inet(addr("[2001:db8::7]:1"), addr("[::1]:2"), &[]);
        assert_eq!(parse(&h6), Ok(Some((proxied("[2001:db8::7]:1", "[::1]:2"), 52))));
        assert_eq!(parse(&v2(0, 0, &[], &[])), Ok(Some((Header::Local, 16))));
        // LOCAL ignores whatever address block a balancer put in.
        let mut local = h.clone();
        local[12] = 0x20;
        assert_eq!(parse(&local), Ok(Some((Header::Local, h.len()))));
        assert_eq!(parse(&v2(1, 0x00, &[1, 2, 3], &[])), Ok(Some((Header::Local, 19))));
        assert_eq!(parse(&v2(1, 0x31, &[0; 216], &[])), Ok(Some((Header::Local, 232))));
        for prefix in 0..h.len() {
            assert_eq!(parse(&h[..prefix]), Ok(None), "prefix {prefix}");
        }
    }

    #[test]
    fn bad_v2_headers_are_errors() {
        let good = v2_inet(addr("10.0.0.1:1"), addr("10.0.0.2:2"), &[]);
        let with = |at: usize, b: u8| {
            let mut h = good.clone();
            h[at] = b;
            h
        };
        assert!(parse(&with(12, 0x11)).unwrap_err().to_string().contains("version 1"));
        assert!(parse(&with(12, 0x22)).unwrap_err().to_string().contains("command"));
        assert!(parse(&with(13, 0x12)).unwrap_err().to_string().contains("UDP"));
        assert!(parse(&with(13, 0x41)).unwrap_err().to_string().contains("family"));
        assert!(parse(&with(15, 11)).unwrap_err().to_string().contains("too short"));
        assert!(parse(&with(7, b'X')).is_err(), "a broken signature");
        assert!(parse(b"\r\n\r\n\r\n").is_err());
        assert!(parse(&with(12, 0x11)[..13]).is_err(), "known wrong as soon as the byte is in");
    }

    /// Any header pier writes in these tests, with what it means.
    fn any_header() -> impl Strategy<Value = (Vec<u8>, Header)> {
        let v4 = any::<([u8; 4], u16)>().prop_map(|(ip, port)| SocketAddr::new(Ipv4Addr::from(ip).into(), port));
        let v6 = any::<([u8; 16], u16)>().prop_map(|(ip, port)| SocketAddr::new(Ipv6Addr::from(ip).into(), port));
        let v1 = |name: &'static str| {
            move |(s, d): (SocketAddr, SocketAddr)| {
                let line = format!("PROXY {name} {} {} {} {}\r\n", s.ip(), d.ip(), s.port(), d.port());
                (line.into_bytes(), Header::Proxied { source: s, destination: d })
            }
        };
        let tlvs = proptest::collection::vec(any::<u8>(), 0..300);
        prop_oneof![
            (v4.clone(), v4.clone()).prop_map(v1("TCP4")),
            (v6.clone(), v6.clone()).prop_map(v1("TCP6")),
            "[ -~]{0,90}".prop_map(|rest| (format!("PROXY UNKNOWN {rest}\r\n").into_bytes(), Header::Local)),
            (v4.clone(), v4, tlvs.clone())
                .prop_map(|(s, d, t)| (v2_inet(s, d, &t), Header::Proxied { source: s, destination: d })),
            (v6.clone(), v6, tlvs.clone())
                .prop_map(|(s, d, t)| (v2_inet(s, d, &t), Header::Proxied { source: s, destination: d })),
            (any::<u8>(), tlvs).prop_map(|(family, t)| (v2(0, family, &[], &t), Header::Local)),
        ]
    }

    proptest! {
        /// A header followed by anything parses to itself and its length,
        /// however it arrives: every cut of it is a prefix needing more.
        #[test]
        fn random_splits_of_valid_headers_parse_the_same(
            (header, meaning) in any_header(),
            after in proptest::collection::vec(any::<u8>(), 0..64),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut input = header.clone();
            input.extend_from_slice(&after);
            prop_assert_eq!(parse(&input), Ok(Some((meaning, header.len()))));
            let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(header.len())).collect();
            cuts.sort_unstable();
            for cut in cuts {
                prop_assert_eq!(parse(&input[..cut]), Ok(None), "cut at {}", cut);
            }
        }

        /// No input panics, and an answer given on a prefix stays the
        /// answer for the whole.
        #[test]
        fn random_bytes_never_panic_and_answers_never_change(
            start in prop_oneof![Just(Vec::new()), Just(b"PROXY ".to_vec()), Just(V2_SIGNATURE.to_vec())],
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut input = start;
            input.extend_from_slice(&bytes);
            let whole = parse(&input);
            if let Ok(Some((_, used))) = &whole {
                prop_assert!(*used <= input.len());
            }
            match (parse(&input[..cut.index(input.len() + 1)]), &whole) {
                (Ok(None), _) | (Err(_), Err(_)) => {}
                (Ok(Some(early)), Ok(Some(later))) => prop_assert_eq!(&early, later),
                (early, whole) => prop_assert!(false, "a prefix said {:?}, the whole {:?}", early, whole),
            }
        }
    }

    /// A connected pair over loopback: (client, server side).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (client, listener.accept().await.unwrap().0)
    }

    #[tokio::test]
    async fn read_header_takes_the_header_in_pieces_and_leaves_what_follows() {
        for header in [
            b"PROXY TCP4 192.0.2.1 192.0.2.2 5555 80\r\n".to_vec(),
            v2_inet(addr("192.0.2.1:5555"), addr("192.0.2.2:80"), &[0x04, 0x00, 0x01, 0x00]),
        ] {
            let (mut client, mut server) = pair().await;
            let reader = tokio::spawn(async move {
                let peer = read_header(&mut server, Duration::from_secs(5)).await;
                let mut rest = Vec::new();
                server.read_to_end(&mut rest).await.unwrap();
                (peer, rest)
            });
            for piece in [&header[..3], &header[3..header.len() - 1], &header[header.len() - 1..]] {
                client.write_all(piece).await.unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client.write_all(b"after").await.unwrap();
            client.shutdown().await.unwrap();
            let (peer, rest) = reader.await.unwrap();
            assert_eq!(peer, Ok(Some(addr("192.0.2.1:5555"))));
            assert_eq!(rest, b"after");
        }
    }

    #[tokio::test]
    async fn read_header_gives_up_on_silence_garbage_and_early_close() {
        let (_client, mut server) = pair().await;
        let why = read_header(&mut server, Duration::from_millis(50)).await.unwrap_err();
        assert!(why.contains("within 50ms"), "{why}");
        let (mut client, mut server) = pair().await;
        client.write_all(b"SSH-2.0-OpenSSH\r\n").await.unwrap();
        let why = read_header(&mut server, Duration::from_secs(5)).await.unwrap_err();
        assert!(why.contains("not a PROXY protocol header") && why.contains("SSH-2.0"), "{why}");
        let (mut client, mut server) = pair().await;
        client.write_all(b"PROXY TCP4 1.2").await.unwrap();
        drop(client);
        let why = read_header(&mut server, Duration::from_secs(5)).await.unwrap_err();
        assert!(why.contains("closed before"), "{why}");
        let (mut client, mut server) = pair().await;
        client.write_all(&v2(0, 0, &[], &[])).await.unwrap();
        assert_eq!(read_header(&mut server, Duration::from_secs(5)).await, Ok(None));
    }
}
