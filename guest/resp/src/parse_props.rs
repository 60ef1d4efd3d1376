//! Property tests of the request parser (issue 13, "Fuzzing and
//! properties"): a valid stream of commands split anywhere parses to the
//! same commands; no input panics or stalls; the parser never asks for, nor
//! makes the handler hold, more than its documented bounds.
//!
//! Inputs are fed as the handler (`lib.rs`, `Resp::serve`) feeds them: the
//! received bytes are appended to one buffer, every complete command at its
//! start is parsed off, the consumed prefix is dropped, and the parser is
//! called again on the same unfinished command when more bytes come.
//!
//! Case counts are small by default (`make test` runs them in seconds);
//! `PROPTEST_CASES` overrides them (`make fuzz`). A failing case is kept in
//! `tests/fuzz-corpus/` and replayed first by every later run.

use super::*;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;

/// The regression file of one property, under `tests/fuzz-corpus/`.
macro_rules! corpus {
    ($name:literal) => {
        FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fuzz-corpus/resp-parse-",
            $name,
            ".txt"
        ))
    };
}

/// `cases` unless `PROPTEST_CASES` says otherwise; failures kept in `corpus`.
fn config(cases: u32, corpus: FileFailurePersistence) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config.failure_persistence = Some(Box::new(corpus));
    config
}

/// Most bytes the parser may ask the buffer to hold while a command is
/// unfinished: MAX_REQUEST for the command itself, plus a `$length` line of
/// the next argument that has not ended yet (see
/// `need_stays_within_max_request_plus_one_length_line`).
const NEED_BOUND: usize = MAX_REQUEST + MAX_INLINE + 1;

/// What feeding a stream produced.
#[derive(Debug, Default, PartialEq)]
struct Outcome {
    commands: Vec<Vec<Vec<u8>>>,
    skips: usize,
    error: Option<ProtocolError>,
    /// Bytes left in the buffer at the end: an unfinished command.
    rest: usize,
}

/// Feeds `chunks` as the handler does, checking the parser's contract on
/// every call: progress, `need` beyond what it has and within its bound,
/// its own state within the buffer.
fn feed<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
    let mut parser = Parser::default();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Outcome::default();
    // The largest count announced so far: the parser keeps its argument
    // list's capacity from one command to the next.
    let mut widest = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let mut at = 0;
        while at < buf.len() {
            let have = buf.len() - at;
            match parser.parse(&buf[at..]) {
                Ok(Parsed::Command(args, used)) => {
                    assert!(used > 0 && used <= have, "used {used} of {have}");
                    assert!(!args.is_empty(), "a command is never empty");
                    let total: usize = args.iter().map(|a| a.len()).sum();
                    assert!(total <= used, "arguments are made of the bytes used");
                    assert!(used <= MAX_REQUEST.max(MAX_INLINE + 2), "a command of {used} bytes");
                    assert!(args.len() <= MAX_ARGS);
                    out.commands.push(args.iter().map(|a| a.to_vec()).collect());
                    at += used;
                    assert_fresh(&parser);
                }
                Ok(Parsed::Skip(used)) => {
                    assert!(used > 0 && used <= have, "skipped {used} of {have}");
                    out.skips += 1;
                    at += used;
                    assert_fresh(&parser);
                }
                Ok(Parsed::Incomplete { need }) => {
                    assert!(need > have, "needs {need} but has {have}");
                    assert!(need <= NEED_BOUND, "needs {need}, past the bound {NEED_BOUND}");
                    widest = widest.max(parser.want);
                    assert_holds_little(&parser, have, widest);
                    break;
                }
                Err(e) => {
                    assert_fresh(&parser);
                    // The handler answers the error and finishes: no more parsing.
                    out.error = Some(e);
                    out.rest = buf.len() - at;
                    return out;
                }
            }
        }
        buf.drain(..at);
    }
    out.rest = buf.len();
    out
}

/// After any outcome but `Incomplete`, the parser starts afresh.
fn assert_fresh(parser: &Parser) {
    assert_eq!((parser.want, parser.args.len(), parser.at), (0, 0, 0), "state left behind");
}

/// While waiting, the parser's state points into the bytes it was given and
/// its argument list grows with the arguments seen, not with the count
/// announced (its capacity is kept between commands: at most twice the
/// largest count `widest` seen on the connection).
fn assert_holds_little(parser: &Parser, have: usize, widest: usize) {
    assert!(parser.at <= have, "at {} past {have}", parser.at);
    assert!(parser.want <= MAX_ARGS);
    assert!(parser.args.len() <= parser.want || parser.want == 0);
    assert!(parser.args.iter().all(|r| r.start <= r.end && r.end + 2 <= parser.at.max(2)));
    let capacity = parser.args.capacity();
    assert!(capacity <= 16.max(2 * parser.args.len()).max(2 * widest.min(MAX_ARGS)), "capacity {capacity}");
}

/// One item of a generated stream.
#[derive(Clone, Debug)]
enum Item {
    /// An array of bulk strings; `bare_lf`: `*N` and `$N` lines end in `\n`.
    Bulk { args: Vec<Vec<u8>>, bare_lf: bool },
    /// An inline command, each argument written in one of three ways.
    Inline { args: Vec<(Vec<u8>, Quote)>, lead: String, seps: Vec<String>, crlf: bool },
    /// Bytes that carry no command.
    Skip(&'static str),
}

#[derive(Clone, Copy, Debug)]
enum Quote {
    Plain,
    Double,
    Single,
}

impl Item {
    fn command(&self) -> Option<Vec<Vec<u8>>> {
        match self {
            Item::Bulk { args, .. } => Some(args.clone()),
            Item::Inline { args, .. } => Some(args.iter().map(|(a, _)| a.clone()).collect()),
            Item::Skip(_) => None,
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Item::Bulk { args, bare_lf } => {
                let eol: &[u8] = if *bare_lf { b"\n" } else { b"\r\n" };
                out.extend_from_slice(format!("*{}", args.len()).as_bytes());
                out.extend_from_slice(eol);
                for arg in args {
                    out.extend_from_slice(format!("${}", arg.len()).as_bytes());
                    out.extend_from_slice(eol);
                    out.extend_from_slice(arg);
                    out.extend_from_slice(b"\r\n");
                }
            }
            Item::Inline { args, lead, seps, crlf } => {
                out.extend_from_slice(lead.as_bytes());
                for (i, (arg, quote)) in args.iter().enumerate() {
                    if i > 0 {
                        out.extend_from_slice(seps[i % seps.len()].as_bytes());
                    }
                    // The first byte of a line decides its kind: an inline
                    // command must not start with `*`.
                    let starts_line = i == 0 && lead.is_empty();
                    encode_inline_arg(arg, *quote, starts_line, out);
                }
                out.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
            }
            Item::Skip(text) => out.extend_from_slice(text.as_bytes()),
        }
    }
}

fn plain_ok(arg: &[u8], starts_line: bool) -> bool {
    !arg.is_empty()
        && arg.iter().all(|&b| !is_separator(b) && b != b'"' && b != b'\'')
        && !(starts_line && arg[0] == b'*')
}

fn single_ok(arg: &[u8]) -> bool {
    arg.iter().all(|&b| b.is_ascii_graphic() || b == b' ') && !arg.contains(&b'\'') && !arg.contains(&b'\\')
}

/// Writes one inline argument so that `split_args` reads it back as `arg`:
/// plain or single-quoted where that can hold it, else double-quoted with
/// escapes (the named ones and `\xHH`, chosen by the byte).
fn encode_inline_arg(arg: &[u8], quote: Quote, starts_line: bool, out: &mut Vec<u8>) {
    match quote {
        Quote::Plain if plain_ok(arg, starts_line) => out.extend_from_slice(arg),
        Quote::Single if single_ok(arg) => {
            out.push(b'\'');
            out.extend_from_slice(arg);
            out.push(b'\'');
        }
        _ => {
            out.push(b'"');
            for &b in arg {
                match b {
                    b'"' => out.extend_from_slice(b"\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    0x07 => out.extend_from_slice(b"\\a"),
                    0x08 => out.extend_from_slice(b"\\b"),
                    b' '..=b'~' if b % 7 != 0 => out.push(b),
                    _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
                }
            }
            out.push(b'"');
        }
    }
}

/// An argument: often short words, sometimes empty, binary, protocol-like
/// or a few KiB long.
fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::string::bytes_regex("(?s-u:[a-zA-Z0-9_:.-]{1,12})").unwrap(),
        2 => proptest::collection::vec(any::<u8>(), 0..24),
        1 => Just(Vec::new()),
        1 => proptest::string::bytes_regex("(?s-u:[*$\r\n0-9 \"'\\\\x]{0,16})").unwrap(),
        1 => proptest::collection::vec(any::<u8>(), 0..6000),
    ]
}

fn quote() -> impl Strategy<Value = Quote> {
    prop_oneof![Just(Quote::Plain), Just(Quote::Double), Just(Quote::Single)]
}

fn item() -> impl Strategy<Value = Item> {
    let inline_arg = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..24),
        proptest::string::bytes_regex("(?s-u:[a-zA-Z0-9*]{1,10})").unwrap(),
    ];
    prop_oneof![
        5 => (proptest::collection::vec(arg(), 1..6), any::<bool>())
            .prop_map(|(args, bare_lf)| Item::Bulk { args, bare_lf }),
        3 => (
            proptest::collection::vec((inline_arg, quote()), 1..6),
            prop_oneof![Just(""), Just(" "), Just("\t "), Just("\0")],
            proptest::collection::vec(prop_oneof![Just(" "), Just("  "), Just("\t"), Just("\x0b"), Just("\0")], 1..4),
            any::<bool>(),
        )
            .prop_map(|(args, lead, seps, crlf)| Item::Inline {
                args,
                lead: lead.to_string(),
                seps: seps.into_iter().map(str::to_string).collect(),
                crlf
            }),
        1 => prop_oneof![
            Just("\r\n"),
            Just("\n"),
            Just("   \r\n"),
            Just("\t\0\n"),
            Just("*0\r\n"),
            Just("*-1\r\n"),
            Just("*-7\n"),
        ]
        .prop_map(Item::Skip),
    ]
}

/// A stream of items, and where to cut it into the pieces it arrives in.
fn stream() -> impl Strategy<Value = (Vec<Item>, Vec<Index>)> {
    (proptest::collection::vec(item(), 0..12), proptest::collection::vec(any::<Index>(), 0..40))
}

fn encode(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        item.encode(&mut out);
    }
    out
}

/// `bytes` cut at the given places (sorted, duplicates make empty pieces).
fn pieces<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::new();
    let mut prev = 0;
    for cut in at {
        out.push(&bytes[prev..cut]);
        prev = cut;
    }
    out.push(&bytes[prev..]);
    out
}

proptest! {
    #![proptest_config(config(256, corpus!("split")))]

    /// Any split of a valid stream parses to the commands it was made of,
    /// in order, with nothing left over and no error.
    #[test]
    fn any_split_of_a_valid_stream_parses_to_the_same_commands((items, cuts) in stream()) {
        let bytes = encode(&items);
        let expected: Vec<Vec<Vec<u8>>> = items.iter().filter_map(Item::command).collect();
        let whole = feed([&bytes[..]]);
        prop_assert_eq!(&whole.error, &None);
        prop_assert_eq!(&whole.commands, &expected);
        prop_assert_eq!(whole.rest, 0);
        let split = feed(pieces(&bytes, &cuts));
        prop_assert_eq!(&split, &whole);
        // One byte at a time: the hardest split.
        if bytes.len() < 4096 {
            prop_assert_eq!(&feed(bytes.chunks(1)), &whole);
        }
    }
}

proptest! {
    #![proptest_config(config(256, corpus!("garbage")))]

    /// Arbitrary bytes, split anywhere: every call is a command, a skip, a
    /// wait or an error (never a panic, never a stall), within the bounds;
    /// and how the bytes are split changes nothing.
    #[test]
    fn arbitrary_bytes_never_panic_and_split_the_same(
        bytes in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..512),
            proptest::string::bytes_regex("(?s-u:[*$\r\n0-9 \"'\\\\xA-F-]{0,300})").unwrap(),
        ],
        cuts in proptest::collection::vec(any::<Index>(), 0..20),
    ) {
        let whole = feed([&bytes[..]]);
        let split = feed(pieces(&bytes, &cuts));
        prop_assert_eq!(&split.commands, &whole.commands);
        prop_assert_eq!(&split.error, &whole.error);
        if whole.error.is_none() {
            prop_assert_eq!(split.rest, whole.rest);
        }
    }

    /// A valid stream with a few bytes changed, inserted or removed: no
    /// panic, the bounds hold, and the split still does not matter.
    #[test]
    fn damaged_streams_never_panic(
        (items, cuts) in stream(),
        edits in proptest::collection::vec((any::<Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = encode(&items);
        for (at, byte, kind) in edits {
            let i = at.index(bytes.len() + 1);
            match kind {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i, byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => bytes.push(byte),
            }
        }
        let whole = feed([&bytes[..]]);
        let split = feed(pieces(&bytes, &cuts));
        prop_assert_eq!(&split.commands, &whole.commands);
        prop_assert_eq!(&split.error, &whole.error);
    }

    /// Counts and lengths of any size: a count past MAX_ARGS or a length
    /// past MAX_BULK is refused at once; otherwise the parser waits, asking
    /// for exactly the bytes the announced argument needs, never more than
    /// MAX_REQUEST, and without reserving room for the announced count.
    #[test]
    fn announced_sizes_are_bounded(
        count in prop_oneof![any::<i64>(), 0i64..4, (MAX_ARGS as i64 - 2)..(MAX_ARGS as i64 + 2)],
        len in prop_oneof![any::<i64>(), 0i64..100, (MAX_BULK as i64 - 2)..(MAX_BULK as i64 + 2)],
        bare_lf in any::<bool>(),
    ) {
        let eol = if bare_lf { "\n" } else { "\r\n" };
        let head = format!("*{count}{eol}${len}{eol}");
        let mut parser = Parser::default();
        let got = parser.parse(head.as_bytes());
        match got {
            _ if count <= 0 => prop_assert_eq!(got, Ok(Parsed::Skip(format!("*{count}{eol}").len()))),
            Err(ProtocolError(e)) if count > MAX_ARGS as i64 => prop_assert_eq!(e, "invalid multibulk length"),
            Err(ProtocolError(e)) => {
                prop_assert!(!(0..=MAX_BULK as i64).contains(&len), "{e} for length {len}");
                prop_assert_eq!(e, "invalid bulk length");
            }
            Ok(Parsed::Incomplete { need }) => {
                prop_assert!(count <= MAX_ARGS as i64 && (0..=MAX_BULK as i64).contains(&len));
                prop_assert_eq!(need, head.len() + len as usize + 2);
                prop_assert!(need <= MAX_REQUEST);
                prop_assert!(parser.args.capacity() <= 16);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }

    /// Inline arguments of any bytes, written with quotes and escapes,
    /// split back exactly (Redis's `sdssplitargs`).
    #[test]
    fn inline_quoting_round_trips(
        args in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..40), quote()), 1..8),
    ) {
        let mut line = Vec::new();
        for (i, (arg, quote)) in args.iter().enumerate() {
            if i > 0 {
                line.push(b' ');
            }
            encode_inline_arg(arg, *quote, i == 0, &mut line);
        }
        let expected: Vec<Vec<u8>> = args.into_iter().map(|(a, _)| a).collect();
        prop_assert_eq!(split_args(&line), Some(expected.clone()));
        line.extend_from_slice(b"\r\n");
        let Ok(Parsed::Command(got, used)) = Parser::default().parse(&line) else {
            return Err(TestCaseError::fail("not a command"));
        };
        prop_assert_eq!(used, line.len());
        prop_assert_eq!(got.into_iter().map(|a| a.into_owned()).collect::<Vec<_>>(), expected);
    }

    /// `integer` reads exactly the canonical decimal form of every i64.
    #[test]
    fn integers_read_their_canonical_form(n in any::<i64>(), junk in "[0-9+ -]{0,3}") {
        prop_assert_eq!(integer(n.to_string().as_bytes()), Some(n));
        let text = format!("{junk}{n}");
        if text != n.to_string() {
            prop_assert_ne!(integer(text.as_bytes()), Some(n));
        }
    }
}

/// Bulk strings are slices of the caller's buffer, however they arrived.
#[test]
fn bulk_arguments_are_borrowed() {
    let req = b"*2\r\n$3\r\nGET\r\n$5\r\nk\0\r\ny\r\n";
    let mut parser = Parser::default();
    for cut in 1..req.len() {
        assert!(matches!(parser.parse(&req[..cut]), Ok(Parsed::Incomplete { .. })), "cut at {cut}");
    }
    let Ok(Parsed::Command(args, _)) = parser.parse(req) else { panic!() };
    assert!(args.iter().all(|a| matches!(a, Cow::Borrowed(_))));
}

/// The largest request: a MAX_BULK value and a second argument that ends
/// exactly at MAX_REQUEST, then the start of a third argument's `$length`
/// line. The command can never be valid (it is already MAX_REQUEST long),
/// but until that line ends the parser answers `Incomplete` with `need` one
/// past the buffer, so the handler buffers up to MAX_INLINE bytes past
/// MAX_REQUEST before the error: the bound is NEED_BOUND, as `lib.rs`
/// says, which this test checks.
#[test]
fn need_stays_within_max_request_plus_one_length_line() {
    let (req, head) = largest_request_then_long_length_line();
    let mut parser = Parser::default();
    // Fed as it arrives: the value in 32 KiB reads, then the length line.
    let mut cut = head;
    while cut < req.len() {
        match parser.parse(&req[..cut]) {
            Ok(Parsed::Incomplete { need }) => assert!(need > cut && need <= NEED_BOUND, "need {need} at {cut}"),
            other => panic!("at {cut}: {other:?}"),
        }
        cut = (cut + (32 << 10)).min(req.len());
    }
    let Ok(Parsed::Incomplete { need }) = parser.parse(&req) else { panic!() };
    assert!(need <= NEED_BOUND);
    // One more digit and the line is too long: the error comes at once.
    let mut longer = req;
    longer.push(b'1');
    assert_eq!(parser.parse(&longer), Err(error("too big bulk count string")));
}

/// `*3`, a MAX_BULK argument, an argument ending exactly at MAX_REQUEST, and
/// MAX_INLINE bytes of a `$length` line; and the length of the `*3` line.
fn largest_request_then_long_length_line() -> (Vec<u8>, usize) {
    let mut req = b"*3\r\n".to_vec();
    let head = req.len();
    req.extend_from_slice(format!("${MAX_BULK}\r\n").as_bytes());
    req.resize(req.len() + MAX_BULK, b'v');
    req.extend_from_slice(b"\r\n");
    // The second argument's header and data end exactly at MAX_REQUEST.
    let mut second = MAX_REQUEST - req.len() - 2 - 2 - 7;
    while req.len() + format!("${second}\r\n").len() + second + 2 > MAX_REQUEST {
        second -= 1;
    }
    while req.len() + format!("${}\r\n", second + 1).len() + second + 3 <= MAX_REQUEST {
        second += 1;
    }
    req.extend_from_slice(format!("${second}\r\n").as_bytes());
    req.resize(req.len() + second, b'w');
    req.extend_from_slice(b"\r\n");
    assert_eq!(req.len(), MAX_REQUEST);
    // A `$length` line that has not ended: as long as it may be.
    req.push(b'$');
    req.resize(req.len() + MAX_INLINE - 1, b'1');
    (req, head)
}
