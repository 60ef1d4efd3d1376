//! The framing's unit tests, and its properties (`proptest`): a valid
//! stream parses to its requests however it is split into reads; any bytes,
//! split any way, give the same events as unsplit (so a stream never parses
//! as two different request sequences), never panic, and the split-head
//! buffer stays within `MAX_HEAD`. `PROPTEST_CASES=N` runs more cases.

use super::*;
use proptest::prelude::*;

/// An event, owned, to compare sequences.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Head { method: String, target: String, minor: u8, keep_alive: bool, expect_continue: bool, body: Body },
    End,
    Error(u16),
}

fn own(event: Event<'_>) -> Ev {
    match event {
        Event::Head(h) => Ev::Head {
            method: h.method.into(),
            target: h.target.into(),
            minor: h.minor,
            keep_alive: h.keep_alive,
            expect_continue: h.expect_continue,
            body: h.body,
        },
        Event::End => Ev::End,
        Event::Error(status) => Ev::Error(status),
    }
}

/// Feeds `input` in pieces ending at `cuts` (positions, any order); returns
/// the events and whether it closed, checking the buffer's bounds after
/// every read.
fn feed(input: &[u8], cuts: &[usize]) -> (Vec<Ev>, bool) {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
    cuts.push(input.len());
    cuts.sort_unstable();
    let mut framer = Framer::default();
    let mut events = Vec::new();
    let mut closed = false;
    let mut at = 0;
    for cut in cuts {
        let done = framer.feed(&input[at..cut], |e| events.push(own(e)));
        assert!(!closed || done, "a closed framer reopened");
        closed = done;
        at = cut;
        let (len, capacity) = framer.buffered();
        assert!(len <= MAX_HEAD, "{len} bytes buffered");
        assert!(capacity <= 2 * (MAX_HEAD + 1), "{capacity} bytes of buffer");
    }
    (events, closed)
}

fn bytewise(input: &[u8]) -> Vec<usize> {
    (1..input.len()).collect()
}

#[test]
fn a_get_is_a_head_and_an_end() {
    let (events, closed) = feed(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &[]);
    let head = Ev::Head {
        method: "GET".into(),
        target: "/hello".into(),
        minor: 1,
        keep_alive: true,
        expect_continue: false,
        body: Body::None,
    };
    assert_eq!(events, [head, Ev::End]);
    assert!(!closed);
}

#[test]
fn a_chunked_body_ends_at_its_last_chunk() {
    let stream = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                   4\r\nwiki\r\n5;ext\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\n\
                   GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n";
    for cuts in [vec![], bytewise(stream)] {
        let (events, closed) = feed(stream, &cuts);
        assert_eq!(events.len(), 4, "{events:?}");
        assert!(matches!(&events[0], Ev::Head { body: Body::Chunked, .. }), "{events:?}");
        assert!(matches!(&events[2], Ev::Head { keep_alive: false, .. }), "{events:?}");
        assert_eq!(events[3], Ev::End);
        assert!(closed);
    }
}

#[test]
fn the_phase_follows_heads_and_bodies() {
    let mut framer = Framer::default();
    let mut feed = |bytes: &[u8]| {
        framer.feed(bytes, |_| {});
        (framer.phase(), framer.heads())
    };
    assert_eq!(feed(b""), (Phase::Idle, 0));
    assert_eq!(feed(b"G"), (Phase::Head, 0), "one byte starts a head");
    assert_eq!(feed(b"ET / HTTP/1.1\r\nHost: x\r\n"), (Phase::Head, 0));
    assert_eq!(feed(b"\r\n"), (Phase::Idle, 1), "answered: between requests");
    assert_eq!(feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\na"), (Phase::Body, 2));
    assert_eq!(feed(b"b"), (Phase::Idle, 2));
    assert_eq!(feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /"), (Phase::Head, 3), "a pipelined head begun");
    assert_eq!(feed(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), (Phase::Done, 4));
    let mut framer = Framer::default();
    framer.feed(b"GET / HT", |_| {});
    framer.stop();
    assert_eq!((framer.phase(), framer.buffered().1), (Phase::Done, 0), "stopped: nothing held");
    assert!(framer.feed(b"TP/1.1\r\nHost: x\r\n\r\n", |_| panic!("input after stop")));
}

#[test]
fn limits_are_exact() {
    // A chunk of exactly the body limit (less its own line) is fine; one more byte is 413.
    let head = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let line = format!("{:x}\r\n", MAX_BODY);
    let fits = MAX_BODY - line.len() as u64;
    let mut framer = Framer::default();
    let mut events = Vec::new();
    framer.feed(head, |e| events.push(own(e)));
    framer.feed(format!("{fits:x}\r\n").as_bytes(), |e| events.push(own(e)));
    assert_eq!(events.len(), 1, "{events:?}");
    let (events, _) = feed(&[head.as_slice(), format!("{:x}\r\n", fits + 10).as_bytes()].concat(), &[]);
    assert_eq!(events.last(), Some(&Ev::Error(413)));
    // Content-Length at the limit is read.
    let (events, _) = feed(format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY}\r\n\r\n").as_bytes(), &[]);
    assert!(matches!(&events[..], [Ev::Head { body: Body::Length(MAX_BODY), .. }]), "{events:?}");
    // A trailer section of exactly MAX_TRAILERS bytes (with the final CRLF) is fine.
    let value = "t".repeat(MAX_TRAILERS as usize - 7);
    let body = format!("0\r\nX: {value}\r\n\r\n");
    let (events, closed) = feed(&[head.as_slice(), body.as_bytes()].concat(), &[]);
    assert_eq!(events.last(), Some(&Ev::End), "{closed}");
    let body = format!("0\r\nX: {value}t\r\n\r\n");
    let (events, _) = feed(&[head.as_slice(), body.as_bytes()].concat(), &[]);
    assert_eq!(events.last(), Some(&Ev::Error(431)));
}

/// One valid request: its bytes and the events it must give.
fn request(last: bool) -> impl Strategy<Value = (Vec<u8>, Vec<Ev>)> {
    let method = prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "BREW"]);
    let target = prop::sample::select(vec!["/", "/hello", "/a?b=c", "http://h/hello", "*"]);
    let fields = prop::collection::vec(
        (prop::sample::select(vec!["Accept", "X-Thing", "User-Agent", "Cookie"]), "[ -~]{0,40}"),
        0..4,
    );
    let chunks = prop::collection::vec((prop::collection::vec(any::<u8>(), 1..40), any::<bool>(), any::<bool>()), 0..5);
    let trailers = prop::collection::vec("[A-Za-z-]{1,10}: [ -~]{0,20}", 0..3);
    let body = prop_oneof![
        Just(None),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(|d| Some((d, None))),
        (chunks, trailers).prop_map(|c| Some((Vec::new(), Some(c)))),
    ];
    (method, target, any::<bool>(), fields, body, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        move |(method, target, http10, fields, body, expect, close, lf_only)| {
            let chunked = matches!(body, Some((_, Some(_))));
            // HTTP/1.0 has no chunked bodies.
            let minor = if http10 && !chunked { 0 } else { 1 };
            let close = last && close;
            let nl = if lf_only { "\n" } else { "\r\n" };
            let mut head = format!("{method} {target} HTTP/1.{minor}{nl}");
            if minor == 1 || method != "GET" {
                head += &format!("Host: example{nl}");
            }
            for (name, value) in fields {
                head += &format!("{name}: {}{nl}", value.trim());
            }
            match (minor, close) {
                (_, true) => head += &format!("Connection: close{nl}"),
                (0, false) => head += &format!("Connection: keep-alive{nl}"),
                _ => {}
            }
            if expect {
                head += &format!("Expect: 100-continue{nl}");
            }
            let mut wire = Vec::new();
            let framing = match &body {
                None => Body::None,
                Some((data, None)) => {
                    head += &format!("Content-Length: {}{nl}", data.len());
                    if data.is_empty() { Body::None } else { Body::Length(data.len() as u64) }
                }
                Some((_, Some((chunks, trailers)))) => {
                    head += &format!("Transfer-Encoding: chunked{nl}");
                    for (data, ext, upper) in chunks {
                        let size = if *upper { format!("{:X}", data.len()) } else { format!("{:x}", data.len()) };
                        wire.extend_from_slice(size.as_bytes());
                        if *ext {
                            wire.extend_from_slice(b" ; name=\"va;l\"");
                        }
                        wire.extend_from_slice(b"\r\n");
                        wire.extend_from_slice(data);
                        wire.extend_from_slice(b"\r\n");
                    }
                    wire.extend_from_slice(b"0\r\n");
                    for t in trailers {
                        wire.extend_from_slice(t.as_bytes());
                        wire.extend_from_slice(b"\r\n");
                    }
                    wire.extend_from_slice(b"\r\n");
                    Body::Chunked
                }
            };
            if let Some((data, None)) = &body {
                wire.extend_from_slice(data);
            }
            head += nl;
            let expect_continue = expect && minor == 1 && framing != Body::None;
            let events = vec![
                Ev::Head {
                    method: method.into(),
                    target: target.into(),
                    minor,
                    keep_alive: !close,
                    expect_continue,
                    body: framing,
                },
                Ev::End,
            ];
            ([head.into_bytes(), wire].concat(), events)
        },
    )
}

/// Several pipelined requests, the last perhaps closing.
fn stream() -> impl Strategy<Value = (Vec<u8>, Vec<Ev>, bool)> {
    (prop::collection::vec(request(false), 0..5), request(true)).prop_map(|(mut first, last)| {
        first.push(last);
        let closes = matches!(first.last().unwrap().1[0], Ev::Head { keep_alive: false, .. });
        let bytes = first.iter().flat_map(|(b, _)| b.clone()).collect();
        let events = first.into_iter().flat_map(|(_, e)| e).collect();
        (bytes, events, closes)
    })
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0usize..4096, 0..12)
}

/// Bytes made of pieces of HTTP and noise: what malformed streams look like.
fn noise() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            &b"GET "[..],
            b"POST ",
            b"/ ",
            b"/hello ",
            b"HTTP/1.1",
            b"HTTP/1.0",
            b"HTTP/2",
            b"\r\n",
            b"\r",
            b"\n",
            b"Host: x",
            b"Transfer-Encoding: chunked",
            b"Transfer-Encoding: gzip",
            b"Content-Length: 5",
            b"Content-Length: 0",
            b"Connection: close",
            b"Connection: keep-alive",
            b"Expect: 100-continue",
            b" ",
            b"\t",
            b":",
            b";",
            b"0",
            b"5",
            b"a",
            b"ff",
            b"\0",
            b"\r\n\r\n",
        ])
        .prop_map(<[u8]>::to_vec),
        prop::collection::vec(any::<u8>(), 1..8),
    ];
    prop::collection::vec(piece, 0..60).prop_map(|p| p.concat())
}

/// What can be done to a valid stream to break it.
#[derive(Debug, Clone)]
enum Edit {
    Insert(usize, u8),
    Delete(usize),
    Replace(usize, u8),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let edit = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Delete),
        (any::<usize>(), prop::sample::select(vec![b'\r', b'\n', b' ', b':', b'0', b'x', 0, 0x80]))
            .prop_map(|(i, b)| Edit::Replace(i, b)),
    ];
    prop::collection::vec(edit, 1..4)
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        let len = bytes.len().max(1);
        match *edit {
            Edit::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Edit::Delete(i) if !bytes.is_empty() => {
                bytes.remove(i % len);
            }
            Edit::Replace(i, b) if !bytes.is_empty() => bytes[i % len] = b,
            _ => {}
        }
    }
    bytes
}

/// More cases than proptest's 256 (they take milliseconds); `PROPTEST_CASES` sets them.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_valid_stream_parses_to_its_requests_however_split((bytes, want, closes) in stream(), cuts in cuts()) {
        let (whole, closed) = feed(&bytes, &[]);
        prop_assert_eq!(&whole, &want);
        prop_assert_eq!(closed, closes);
        prop_assert_eq!(feed(&bytes, &cuts), (want.clone(), closes));
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        prop_assert_eq!(feed(&bytes, &cuts), (want, closes));
    }

    #[test]
    fn any_bytes_give_the_same_events_however_split(bytes in noise(), cuts in cuts()) {
        let whole = feed(&bytes, &[]);
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        prop_assert_eq!(&feed(&bytes, &cuts), &whole);
        prop_assert_eq!(&feed(&bytes, &bytewise(&bytes)), &whole);
        // Errors are the last event; an End follows a Head.
        let errors = whole.0.iter().filter(|e| matches!(e, Ev::Error(_))).count();
        prop_assert!(errors == 0 || (errors == 1 && matches!(whole.0.last(), Some(Ev::Error(_))) && whole.1));
    }

    #[test]
    fn a_broken_stream_gives_the_same_events_however_split((bytes, _, _) in stream(), edits in edits(), cuts in cuts()) {
        let bytes = apply(bytes, &edits);
        let whole = feed(&bytes, &[]);
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        prop_assert_eq!(&feed(&bytes, &cuts), &whole);
        prop_assert_eq!(&feed(&bytes, &bytewise(&bytes)), &whole);
    }

    #[test]
    fn heads_around_the_limit_are_judged_the_same_however_split(
        pad in (MAX_HEAD - 120)..(MAX_HEAD + 120),
        bad in prop::option::of(0usize..MAX_HEAD + 200),
        cuts in cuts(),
    ) {
        let mut bytes = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", "p".repeat(pad)).into_bytes();
        if let Some(at) = bad {
            let at = at % bytes.len();
            bytes[at] = 0;
        }
        let whole = feed(&bytes, &[]);
        if bad.is_none() {
            let fits = pad + 36 <= MAX_HEAD;
            prop_assert_eq!(whole.0.len(), if fits { 4 } else { 1 });
        }
        let cuts: Vec<usize> = cuts.iter().map(|c| c * 3 % (bytes.len() + 1)).collect();
        prop_assert_eq!(&feed(&bytes, &cuts), &whole);
    }
}
