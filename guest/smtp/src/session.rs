//! The SMTP conversation without host calls: bytes in, replies out, accepted
//! messages handed to a [`Mailbox`]. `lib.rs` wires it to the outbox, the
//! key-value store and STARTTLS.

use crate::address::{self, PathError};
use crate::data::Unstuff;
use pier_guest::alarm::parse_duration;

/// Longest command line, its CRLF included (RFC 5321 4.5.3.1.6's text line;
/// a command line with extensions fits).
pub const MAX_LINE: usize = 1000;

/// What the listener's `config` table chose.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Named in the greeting and the EHLO reply.
    pub hostname: String,
    /// Largest message accepted, in bytes after un-stuffing (SIZE).
    pub max_size: usize,
    /// Most recipients per message; past it RCPT answers 452.
    pub max_recipients: usize,
    /// The operator says the listener has `starttls = true` (and a
    /// certificate): EHLO offers STARTTLS and the command is accepted.
    pub starttls: bool,
    /// RFC 5321 4.5.3.2's timeouts, in milliseconds (0: none): a complete
    /// command must arrive this long after the last one (after the
    /// greeting, for the first); during DATA, each chunk of the message
    /// within this long of the last. The RFC's 5 minutes for commands is
    /// the default; its 3 minutes for a data block are not told apart, so
    /// one setting serves both.
    pub command_timeout_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            max_size: 10 << 20,
            max_recipients: 100,
            starttls: false,
            command_timeout_ms: 5 * 60_000,
        }
    }
}

impl Settings {
    /// The settings of a listener's `config` table (`hostname`, `max-size`
    /// in bytes or with a `KiB`/`MiB`/`GiB` suffix, `max-recipients`,
    /// `starttls = "true"`, `command-timeout` as `5m`, `30s`, `500ms` or
    /// milliseconds), and a warning for each value not understood (its
    /// default is used).
    pub fn from_config(get: impl Fn(&str) -> Option<String>) -> (Settings, Vec<String>) {
        let mut settings = Settings::default();
        let mut warnings = Vec::new();
        if let Some(name) = get("hostname") {
            if !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| b.is_ascii_graphic()) {
                settings.hostname = name;
            } else {
                warnings.push(format!("config hostname {name:?} is not a host name; using localhost"));
            }
        }
        if let Some(size) = get("max-size") {
            match parse_size(&size) {
                Some(n) => settings.max_size = n,
                None => warnings.push(format!("config max-size {size:?} is not a size; using {}", settings.max_size)),
            }
        }
        if let Some(max) = get("max-recipients") {
            match max.parse() {
                Ok(n) if n > 0 => settings.max_recipients = n,
                _ => warnings.push(format!("config max-recipients {max:?} is not a positive number; using 100")),
            }
        }
        if let Some(on) = get("starttls") {
            match on.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => settings.starttls = true,
                "false" | "no" | "0" => settings.starttls = false,
                _ => warnings.push(format!("config starttls {on:?} is not true or false; STARTTLS is off")),
            }
        }
        if let Some(text) = get("command-timeout") {
            match parse_duration(&text) {
                Some(ms) => settings.command_timeout_ms = ms,
                None => warnings.push(format!("config command-timeout {text:?} is not a duration; using 5m")),
            }
        }
        (settings, warnings)
    }
}

/// `1000`, `64KiB`, `10MiB`, `1GiB`.
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let (digits, shift) = [("GiB", 30), ("MiB", 20), ("KiB", 10), ("B", 0)]
        .iter()
        .find_map(|(unit, shift)| text.strip_suffix(unit).map(|d| (d.trim_end(), *shift)))
        .unwrap_or((text, 0));
    let n: usize = digits.parse().ok()?;
    n.checked_mul(1 << shift).filter(|&n| n > 0)
}

/// The envelope of one transaction: MAIL FROM's path (empty for the null
/// reverse-path `<>`) and RCPT TO's.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub from: String,
    pub to: Vec<String>,
}

/// A message accepted after the final `.`.
#[derive(Debug)]
pub struct Delivery<'a> {
    pub envelope: &'a Envelope,
    /// The message, un-stuffed: every line with its CRLF.
    pub message: &'a [u8],
    /// Whether the message came over TLS.
    pub tls: bool,
}

impl Delivery<'_> {
    /// The log line of a message stored under `mail/<n>`.
    pub fn log_line(&self, n: u64) -> String {
        let from = if self.envelope.from.is_empty() { "<>" } else { &self.envelope.from };
        format!(
            "delivered mail/{n} from={from} to={} bytes={} tls={}",
            self.envelope.to.join(","),
            self.message.len(),
            if self.tls { "yes" } else { "no" }
        )
    }
}

/// Why a mailbox did not take a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The store is out of budget: 452, the client may try later.
    Full,
    /// Any other failure of the store: 451.
    Failed,
}

/// Where accepted messages go.
pub trait Mailbox {
    /// Stores a message; the number it is stored under.
    fn deliver(&mut self, delivery: &Delivery) -> Result<u64, Refused>;
}

/// What the caller does after [`Session::feed`] (after sending the replies).
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for more input.
    More,
    /// The 220 to STARTTLS is the last reply: once it is out, start TLS and
    /// call [`Session::tls_started`]. The rest of the input was dropped.
    StartTls,
    /// QUIT was answered: finish the connection.
    Quit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reading command lines.
    Command,
    /// Between the 354 and the final `.`.
    Data,
    /// STARTTLS was answered: nothing more is read in plaintext.
    AwaitTls,
    /// QUIT was answered.
    Done,
}

/// One SMTP session: a connection's state.
#[derive(Debug)]
pub struct Session {
    settings: Settings,
    tls: bool,
    mode: Mode,
    /// HELO or EHLO seen (since the connection or STARTTLS).
    greeted: bool,
    /// The transaction, from MAIL FROM on.
    tx: Option<Envelope>,
    /// The command line so far, without its LF (at most `MAX_LINE - 1`).
    line: Vec<u8>,
    /// The line passed `MAX_LINE`: dropped up to its LF, then refused.
    too_long: bool,
    unstuff: Unstuff,
    /// The message so far, at most `max_size` bytes of it.
    message: Vec<u8>,
    /// Its whole size, stored or not.
    size: usize,
    replies: Vec<u8>,
    /// Complete command lines and chunks of DATA received: what restarts
    /// the command timeout.
    progress: u64,
}

impl Session {
    /// A session whose greeting is ready in [`take_replies`](Self::take_replies);
    /// `tls` if the connection is TLS from its start.
    pub fn new(settings: Settings, tls: bool) -> Self {
        let mut session = Session {
            settings,
            tls,
            mode: Mode::Command,
            greeted: false,
            tx: None,
            line: Vec::new(),
            too_long: false,
            unstuff: Unstuff::default(),
            message: Vec::new(),
            size: 0,
            replies: Vec::new(),
            progress: 0,
        };
        let greeting = format!("220 {} ESMTP pier", session.settings.hostname);
        session.reply(&greeting);
        session
    }

    /// The replies gathered so far, to be sent in this order.
    pub fn take_replies(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.replies)
    }

    /// Whether the connection is still in plaintext and the peer still
    /// reading replies: a goodbye at server shutdown can reach it.
    pub fn can_say_goodbye(&self) -> bool {
        matches!(self.mode, Mode::Command | Mode::Data)
    }

    /// The settings the session was made with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Counts the complete command lines and the chunks of DATA received:
    /// a change since the last look restarts the command timeout. Bytes of
    /// a line not yet complete do not count, so a command trickled in a
    /// byte at a time gets no more time than a silent peer.
    pub fn progress(&self) -> u64 {
        self.progress
    }

    /// The command timeout ran out: the 421 is the last reply; finish
    /// once it is sent (RFC 5321 4.5.3.2, with Postfix's wording).
    pub fn timed_out(&mut self) {
        let reply = format!("421 4.4.2 {} Error: timeout exceeded", self.settings.hostname);
        self.reply(&reply);
        self.mode = Mode::Done;
    }

    /// TLS is on after [`Next::StartTls`]: RFC 3207 4.2, the session
    /// starts over (the client must EHLO again) and STARTTLS is not offered.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.greeted = false;
        self.tx = None;
        self.line.clear();
        self.too_long = false;
        self.mode = Mode::Command;
    }

    /// Handles the bytes of one `data` call. After [`Next::StartTls`] and
    /// [`Next::Quit`] the rest of `input` is dropped, unread: in particular
    /// nothing the peer sent after STARTTLS in plaintext is acted on
    /// (CVE-2011-0411).
    pub fn feed(&mut self, mut input: &[u8], mailbox: &mut impl Mailbox) -> Next {
        while !input.is_empty() {
            match self.mode {
                Mode::AwaitTls | Mode::Done => break,
                Mode::Data => {
                    self.progress += 1;
                    let (message, size, max) = (&mut self.message, &mut self.size, self.settings.max_size);
                    let end = self.unstuff.feed(input, |bytes| keep(message, size, max, bytes));
                    match end {
                        Some(used) => {
                            input = &input[used..];
                            self.end_of_data(mailbox);
                        }
                        None => input = &[],
                    }
                }
                Mode::Command => {
                    let (used, complete) = match input.iter().position(|&b| b == b'\n') {
                        Some(lf) => (lf + 1, true),
                        None => (input.len(), false),
                    };
                    let part = &input[..used - usize::from(complete)];
                    input = &input[used..];
                    if !self.too_long {
                        if self.line.len() + part.len() > MAX_LINE - 1 {
                            self.too_long = true;
                            self.line = Vec::new();
                        } else {
                            self.line.extend_from_slice(part);
                        }
                    }
                    if !complete {
                        continue;
                    }
                    self.progress += 1;
                    let next = if std::mem::take(&mut self.too_long) {
                        self.reply("500 5.5.2 Error: line too long");
                        Next::More
                    } else {
                        let line = std::mem::take(&mut self.line);
                        let next = self.command(&line);
                        self.line = line;
                        self.line.clear();
                        next
                    };
                    if next != Next::More {
                        return next;
                    }
                }
            }
        }
        match self.mode {
            Mode::AwaitTls => Next::StartTls,
            Mode::Done => Next::Quit,
            Mode::Command | Mode::Data => Next::More,
        }
    }

    fn reply(&mut self, text: &str) {
        self.replies.extend_from_slice(text.as_bytes());
        self.replies.extend_from_slice(b"\r\n");
    }

    /// One command line, without its LF.
    fn command(&mut self, line: &[u8]) -> Next {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Ok(text) = std::str::from_utf8(line) else {
            self.reply("500 5.5.2 Error: bad syntax");
            return Next::More;
        };
        let (verb, arg) = text.split_once(' ').unwrap_or((text, ""));
        let arg = arg.trim_matches(' ');
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => self.ehlo(arg),
            "HELO" => self.helo(arg),
            "MAIL" => self.mail(arg),
            "RCPT" => self.rcpt(arg),
            "DATA" => self.data(arg),
            "RSET" if !arg.is_empty() => self.reply("501 5.5.4 Syntax: RSET"),
            "RSET" => {
                self.tx = None;
                self.reply("250 2.0.0 Ok");
            }
            "NOOP" => self.reply("250 2.0.0 Ok"),
            "QUIT" => {
                self.reply("221 2.0.0 Bye");
                self.mode = Mode::Done;
                return Next::Quit;
            }
            "VRFY" if arg.is_empty() => self.reply("501 5.5.4 Syntax: VRFY address"),
            "VRFY" => self.reply("252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"),
            "EXPN" => self.reply("502 5.5.1 Error: command not implemented"),
            "HELP" => {
                let tls = if self.offers_starttls() { " STARTTLS" } else { "" };
                let help = format!("214 2.0.0 Commands: HELO EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP{tls}");
                self.reply(&help);
            }
            "STARTTLS" => return self.starttls(arg),
            "" => self.reply("500 5.5.2 Error: bad syntax"),
            _ => self.reply("500 5.5.2 Error: command not recognized"),
        }
        Next::More
    }

    fn offers_starttls(&self) -> bool {
        self.settings.starttls && !self.tls
    }

    /// HELO and EHLO begin the session anew (RFC 5321 4.1.4: as RSET).
    fn greet(&mut self, verb: &str, domain: &str) -> bool {
        if domain.is_empty() || domain.contains(' ') {
            self.reply(&format!("501 Syntax: {verb} hostname"));
            return false;
        }
        self.greeted = true;
        self.tx = None;
        true
    }

    fn helo(&mut self, domain: &str) {
        if self.greet("HELO", domain) {
            let reply = format!("250 {}", self.settings.hostname);
            self.reply(&reply);
        }
    }

    fn ehlo(&mut self, domain: &str) {
        if !self.greet("EHLO", domain) {
            return;
        }
        let mut lines = vec![
            self.settings.hostname.clone(),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.settings.max_size),
            "8BITMIME".to_string(),
        ];
        if self.offers_starttls() {
            lines.push("STARTTLS".to_string());
        }
        lines.push("ENHANCEDSTATUSCODES".to_string());
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            self.replies.extend_from_slice(format!("250{sep}{line}\r\n").as_bytes());
        }
    }

    fn mail(&mut self, arg: &str) {
        if !self.greeted {
            return self.reply("503 5.5.1 Error: send HELO/EHLO first");
        }
        if self.tx.is_some() {
            return self.reply("503 5.5.1 Error: nested MAIL command");
        }
        let (path, params) = match address::split(arg, "FROM:") {
            Ok(split) => split,
            Err(PathError::Syntax) => return self.reply("501 5.5.4 Syntax: MAIL FROM:<address>"),
            Err(PathError::Address) => return self.reply("501 5.1.7 Bad sender address syntax"),
        };
        let from = if path.is_empty() {
            ""
        } else {
            match address::mailbox(path) {
                Some(mailbox) => mailbox,
                None => return self.reply("501 5.1.7 Bad sender address syntax"),
            }
        };
        for param in params.split(' ').filter(|p| !p.is_empty()) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            if key.eq_ignore_ascii_case("SIZE") {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return self.reply("501 5.5.4 Bad SIZE parameter");
                }
                // Too many digits for a u64 is too large too.
                if value.parse::<u64>().map_or(true, |n| n > self.settings.max_size as u64) {
                    return self.reply("552 5.3.4 Message size exceeds fixed limit");
                }
            } else if key.eq_ignore_ascii_case("BODY") {
                if !(value.eq_ignore_ascii_case("7BIT") || value.eq_ignore_ascii_case("8BITMIME")) {
                    return self.reply("501 5.5.4 Bad BODY parameter");
                }
            } else {
                let key = key.to_ascii_uppercase();
                return self.reply(&format!("555 5.5.4 Unsupported option: {key}"));
            }
        }
        self.tx = Some(Envelope { from: from.to_string(), to: Vec::new() });
        self.reply("250 2.1.0 Ok");
    }

    fn rcpt(&mut self, arg: &str) {
        let max = self.settings.max_recipients;
        let Some(count) = self.tx.as_ref().map(|tx| tx.to.len()) else {
            return self.reply("503 5.5.1 Error: need MAIL command");
        };
        let path = match address::split(arg, "TO:") {
            Ok((path, "")) => path,
            Ok((_, params)) => {
                let key = params.split(['=', ' ']).next().unwrap_or("").to_ascii_uppercase();
                return self.reply(&format!("555 5.5.4 Unsupported option: {key}"));
            }
            Err(PathError::Syntax) => return self.reply("501 5.5.4 Syntax: RCPT TO:<address>"),
            Err(PathError::Address) => return self.reply("501 5.1.3 Bad recipient address syntax"),
        };
        // RFC 5321 4.5.1: `<postmaster>` without a domain is a recipient too.
        let Some(to) = address::mailbox(path).or(path.eq_ignore_ascii_case("postmaster").then_some(path)) else {
            return self.reply("501 5.1.3 Bad recipient address syntax");
        };
        if count >= max {
            return self.reply("452 4.5.3 Error: too many recipients");
        }
        let to = to.to_string();
        if let Some(tx) = &mut self.tx {
            tx.to.push(to);
        }
        self.reply("250 2.1.5 Ok");
    }

    fn data(&mut self, arg: &str) {
        let Some(tx) = &self.tx else {
            return self.reply("503 5.5.1 Error: need MAIL command");
        };
        if tx.to.is_empty() {
            return self.reply("503 5.5.1 Error: need RCPT command");
        }
        if !arg.is_empty() {
            return self.reply("501 5.5.4 Syntax: DATA");
        }
        self.mode = Mode::Data;
        self.unstuff = Unstuff::default();
        self.message = Vec::new();
        self.size = 0;
        self.reply("354 End data with <CR><LF>.<CR><LF>");
    }

    fn end_of_data(&mut self, mailbox: &mut impl Mailbox) {
        self.mode = Mode::Command;
        let envelope = self.tx.take().unwrap_or_default();
        let message = std::mem::take(&mut self.message);
        if self.size > self.settings.max_size {
            return self.reply("552 5.3.4 Error: message file too big");
        }
        match mailbox.deliver(&Delivery { envelope: &envelope, message: &message, tls: self.tls }) {
            Ok(n) => self.reply(&format!("250 2.0.0 Ok: queued as {n}")),
            Err(Refused::Full) => self.reply("452 4.3.1 Insufficient system storage"),
            Err(Refused::Failed) => self.reply("451 4.3.0 Error: local error in processing"),
        }
    }

    fn starttls(&mut self, arg: &str) -> Next {
        if !arg.is_empty() {
            self.reply("501 5.5.4 Syntax: STARTTLS");
        } else if self.tls {
            self.reply("503 5.5.1 Error: TLS already active");
        } else if !self.settings.starttls {
            self.reply("502 5.5.1 Error: command not implemented");
        } else {
            self.reply("220 2.0.0 Ready to start TLS");
            self.mode = Mode::AwaitTls;
            self.greeted = false;
            self.tx = None;
            self.line.clear();
            return Next::StartTls;
        }
        Next::More
    }
}

/// Keeps message bytes up to `max` and counts them all. The buffer grows to
/// at most `max`, never to a doubling past it.
fn keep(message: &mut Vec<u8>, size: &mut usize, max: usize, bytes: &[u8]) {
    *size = size.saturating_add(bytes.len());
    let take = bytes.len().min(max.saturating_sub(message.len()));
    if take == 0 {
        return;
    }
    let need = message.len() + take;
    if need > message.capacity() {
        let want = need.max(message.capacity() * 2).max(4096).min(max);
        message.reserve_exact(want - message.len());
    }
    message.extend_from_slice(&bytes[..take]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keeps what it was given; refuses when `refuse` says so.
    #[derive(Default)]
    struct Inbox {
        got: Vec<(Envelope, Vec<u8>, bool)>,
        refuse: Option<Refused>,
    }

    impl Mailbox for Inbox {
        fn deliver(&mut self, d: &Delivery) -> Result<u64, Refused> {
            if let Some(r) = self.refuse.take() {
                return Err(r);
            }
            self.got.push((d.envelope.clone(), d.message.to_vec(), d.tls));
            Ok(self.got.len() as u64)
        }
    }

    fn session(starttls: bool) -> Session {
        let mut s = Session::new(
            Settings { hostname: "mx.test".into(), max_size: 100, starttls, ..Settings::default() },
            false,
        );
        assert_eq!(s.take_replies(), b"220 mx.test ESMTP pier\r\n");
        s
    }

    /// Feeds `input` and returns the replies, as text, and what comes next.
    fn talk(s: &mut Session, inbox: &mut Inbox, input: &str) -> (String, Next) {
        let next = s.feed(input.as_bytes(), inbox);
        (String::from_utf8(s.take_replies()).unwrap(), next)
    }

    /// The reply codes, one per reply line.
    fn codes(replies: &str) -> Vec<&str> {
        replies.lines().map(|l| &l[..3]).collect()
    }

    #[test]
    fn settings_from_config() {
        let table = |pairs: &'static [(&'static str, &'static str)]| {
            move |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
        };
        let (s, warnings) = Settings::from_config(table(&[]));
        assert_eq!(
            (s.hostname.as_str(), s.max_size, s.max_recipients, s.starttls, s.command_timeout_ms),
            ("localhost", 10 << 20, 100, false, 300_000)
        );
        assert!(warnings.is_empty());
        let (s, warnings) = Settings::from_config(table(&[
            ("hostname", "mx.example"),
            ("max-size", "64KiB"),
            ("max-recipients", "5"),
            ("starttls", "true"),
            ("command-timeout", "500ms"),
        ]));
        assert_eq!(
            (s.hostname.as_str(), s.max_size, s.max_recipients, s.starttls, s.command_timeout_ms),
            ("mx.example", 65536, 5, true, 500)
        );
        assert!(warnings.is_empty());
        assert_eq!(Settings::from_config(table(&[("command-timeout", "30")])).0.command_timeout_ms, 30);
        assert_eq!(Settings::from_config(table(&[("max-size", "1000")])).0.max_size, 1000);
        let (s, warnings) = Settings::from_config(table(&[
            ("hostname", "a b\r\n250 x"),
            ("max-size", "lots"),
            ("max-recipients", "0"),
            ("starttls", "maybe"),
            ("command-timeout", "forever"),
        ]));
        assert_eq!(
            (s.hostname.as_str(), s.max_size, s.max_recipients, s.starttls, s.command_timeout_ms),
            ("localhost", 10 << 20, 100, false, 300_000)
        );
        assert_eq!(warnings.len(), 5, "{warnings:?}");
    }

    #[test]
    fn a_transaction_pipelined_in_one_chunk() {
        let (mut s, mut inbox) = (session(false), Inbox::default());
        let input = "EHLO c\r\nMAIL FROM:<a@x.org> SIZE=20\r\nRCPT TO:<b@y.org>\r\nRCPT TO:<c@y.org>\r\nDATA\r\n\
                     hi\r\n..dot\r\n.\r\nQUIT\r\nNOOP\r\n";
        let (replies, next) = talk(&mut s, &mut inbox, input);
        assert_eq!(next, Next::Quit);
        assert!(replies.starts_with("250-mx.test\r\n250-PIPELINING\r\n250-SIZE 100\r\n250-8BITMIME\r\n"), "{replies}");
        assert!(!replies.contains("STARTTLS"));
        assert!(replies.ends_with("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 1\r\n221 2.0.0 Bye\r\n"), "{replies}");
        let envelope = Envelope { from: "a@x.org".into(), to: vec!["b@y.org".into(), "c@y.org".into()] };
        assert_eq!(inbox.got, [(envelope, b"hi\r\n.dot\r\n".to_vec(), false)]);
        assert_eq!(talk(&mut s, &mut inbox, "NOOP\r\n"), (String::new(), Next::Quit), "nothing after QUIT");
    }

    #[test]
    fn one_byte_at_a_time() {
        let (mut s, mut inbox) = (session(false), Inbox::default());
        let input = b"HELO c\r\nMAIL FROM:<>\r\nRCPT TO:<Postmaster>\r\nDATA\r\nx\r\n.\r\n";
        let mut replies = String::new();
        for b in input {
            assert_eq!(s.feed(&[*b], &mut inbox), Next::More);
            replies.push_str(std::str::from_utf8(&s.take_replies()).unwrap());
        }
        assert_eq!(codes(&replies), ["250", "250", "250", "354", "250"]);
        assert_eq!(inbox.got[0].0, Envelope { from: String::new(), to: vec!["Postmaster".into()] });
        let d = Delivery { envelope: &inbox.got[0].0, message: b"x\r\n", tls: false };
        assert_eq!(d.log_line(7), "delivered mail/7 from=<> to=Postmaster bytes=3 tls=no");
    }

    #[test]
    fn order_and_syntax() {
        let (mut s, mut inbox) = (session(false), Inbox::default());
        let cases = [
            ("MAIL FROM:<a@b>", "503"),
            ("EHLO", "501"),
            ("HELO c", "250"),
            ("RCPT TO:<a@b>", "503"),
            ("DATA", "503"),
            ("MAIL FROM:bad", "501"),
            ("MAIL FROM:<bad>", "501"),
            ("MAIL FROM:<a@b> SIZE=101", "552"),
            ("MAIL FROM:<a@b> SIZE=x", "501"),
            ("MAIL FROM:<a@b> AUTH=<>", "555"),
            ("MAIL FROM:<a@b> BODY=8BITMIME", "250"),
            ("MAIL FROM:<a@b>", "503"),
            ("DATA", "503"),
            ("RCPT TO:<>", "501"),
            ("RCPT TO:b@c", "501"),
            ("RCPT TO:<b@c> NOTIFY=NEVER", "555"),
            ("RSET", "250"),
            ("RCPT TO:<b@c>", "503"),
            ("RSET x", "501"),
            ("NOOP whatever", "250"),
            ("VRFY bob", "252"),
            ("VRFY", "501"),
            ("EXPN list", "502"),
            ("HELP", "214"),
            ("STARTTLS", "502"),
            ("FOO", "500"),
            ("", "500"),
        ];
        for (line, code) in cases {
            let (replies, _) = talk(&mut s, &mut inbox, &format!("{line}\r\n"));
            assert_eq!(codes(&replies), [code], "{line:?}: {replies}");
        }
        assert!(inbox.got.is_empty());
    }

    #[test]
    fn line_length() {
        let (mut s, mut inbox) = (session(false), Inbox::default());
        let fits = format!("NOOP {}\r\n", "x".repeat(MAX_LINE - 7));
        assert_eq!(fits.len(), MAX_LINE);
        assert_eq!(codes(&talk(&mut s, &mut inbox, &fits).0), ["250"]);
        let over = format!("NOOP {}\r\nNOOP\r\n", "x".repeat(MAX_LINE - 6));
        assert_eq!(codes(&talk(&mut s, &mut inbox, &over).0), ["500", "250"]);
        // A line that never ends is dropped as it comes: the buffer stays small.
        for _ in 0..100 {
            talk(&mut s, &mut inbox, &"y".repeat(10_000));
            assert!(s.line.capacity() <= MAX_LINE);
        }
        assert_eq!(codes(&talk(&mut s, &mut inbox, "\r\nNOOP\r\n").0), ["500", "250"]);
    }

    #[test]
    fn message_size() {
        let (mut s, mut inbox) = (session(false), Inbox::default());
        let big = format!("HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<b@c>\r\nDATA\r\n{}\r\n.\r\n", "z".repeat(500));
        assert_eq!(codes(&talk(&mut s, &mut inbox, &big).0), ["250", "250", "250", "354", "552"]);
        assert!(s.message.capacity() <= 100);
        assert!(inbox.got.is_empty());
        // Exactly the limit is accepted (98 bytes and the CRLF).
        let fits = format!("MAIL FROM:<a@b>\r\nRCPT TO:<b@c>\r\nDATA\r\n{}\r\n.\r\n", "z".repeat(98));
        assert_eq!(codes(&talk(&mut s, &mut inbox, &fits).0), ["250", "250", "354", "250"]);
        assert_eq!(inbox.got[0].1.len(), 100);
    }

    #[test]
    fn recipients_are_capped() {
        let mut s = Session::new(Settings { max_recipients: 3, ..Settings::default() }, false);
        let mut inbox = Inbox::default();
        let mut input = "HELO c\r\nMAIL FROM:<a@b>\r\n".to_string();
        for i in 0..5 {
            input.push_str(&format!("RCPT TO:<r{i}@c>\r\n"));
        }
        let (replies, _) = talk(&mut s, &mut inbox, &input);
        assert_eq!(codes(&replies), ["220", "250", "250", "250", "250", "250", "452", "452"]);
    }

    #[test]
    fn a_full_store_answers_452() {
        let (mut s, mut inbox) = (session(false), Inbox { refuse: Some(Refused::Full), ..Inbox::default() });
        let input = "HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<b@c>\r\nDATA\r\nx\r\n.\r\n";
        assert_eq!(codes(&talk(&mut s, &mut inbox, input).0), ["250", "250", "250", "354", "452"]);
        assert_eq!(codes(&talk(&mut s, &mut inbox, "RCPT TO:<b@c>\r\n").0), ["503"], "the transaction is over");
    }

    #[test]
    fn starttls_drops_what_follows_and_starts_over() {
        let (mut s, mut inbox) = (session(true), Inbox::default());
        let (replies, _) = talk(&mut s, &mut inbox, "EHLO c\r\n");
        assert!(replies.contains("250-STARTTLS\r\n"), "{replies}");
        let (replies, next) =
            talk(&mut s, &mut inbox, "MAIL FROM:<a@b>\r\nSTARTTLS\r\nMAIL FROM:<evil@x>\r\nRCPT TO:<v@x>\r\n");
        assert_eq!((codes(&replies), next), (vec!["250", "220"], Next::StartTls));
        // Whatever arrives before the handshake is done is dropped too.
        assert_eq!(talk(&mut s, &mut inbox, "RCPT TO:<v@x>\r\n"), (String::new(), Next::StartTls));
        assert!(!s.can_say_goodbye());
        s.tls_started();
        assert_eq!(codes(&talk(&mut s, &mut inbox, "MAIL FROM:<a@b>\r\n").0), ["503"], "EHLO again first");
        let (replies, _) = talk(&mut s, &mut inbox, "EHLO c\r\nRCPT TO:<b@c>\r\nSTARTTLS\r\n");
        assert!(!replies.contains("STARTTLS"), "{replies}");
        assert_eq!(codes(&replies)[codes(&replies).len() - 2..], ["503", "503"], "{replies}");
        let input = "MAIL FROM:<a@b>\r\nRCPT TO:<b@c>\r\nDATA\r\nx\r\n.\r\n";
        assert_eq!(codes(&talk(&mut s, &mut inbox, input).0), ["250", "250", "354", "250"]);
        assert!(inbox.got[0].2, "delivered over TLS");
    }

    #[test]
    fn progress_counts_complete_commands_and_data_chunks() {
        let (mut s, mut inbox) = (session(false), Inbox::default());
        assert_eq!(s.progress(), 0);
        talk(&mut s, &mut inbox, "NO");
        talk(&mut s, &mut inbox, "OP");
        assert_eq!(s.progress(), 0, "half a command is none");
        talk(&mut s, &mut inbox, "\r\nHELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<b@c>\r\nDATA\r\n");
        assert_eq!(s.progress(), 5);
        for part in ["Sub", "ject: x\r\n", "\r\nbody"] {
            let before = s.progress();
            talk(&mut s, &mut inbox, part);
            assert!(s.progress() > before, "a chunk of DATA counts: {part:?}");
        }
        assert_eq!(codes(&talk(&mut s, &mut inbox, "\r\n.\r\n").0), ["250"]);
        s.timed_out();
        assert_eq!(String::from_utf8(s.take_replies()).unwrap(), "421 4.4.2 mx.test Error: timeout exceeded\r\n");
        assert!(!s.can_say_goodbye());
        assert_eq!(talk(&mut s, &mut inbox, "NOOP\r\n"), (String::new(), Next::Quit), "nothing after it");
    }

    #[test]
    fn a_partial_line_before_starttls_is_forgotten() {
        let (mut s, mut inbox) = (session(true), Inbox::default());
        talk(&mut s, &mut inbox, "EHLO c\r\n");
        assert_eq!(talk(&mut s, &mut inbox, "STARTTLS\r\nMAIL FR").1, Next::StartTls);
        s.tls_started();
        assert_eq!(codes(&talk(&mut s, &mut inbox, "OM:<a@b>\r\n").0), ["500"]);
    }
}
