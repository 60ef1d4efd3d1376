//! The DATA phase's framing (RFC 5321 4.1.1.4 and 4.5.2): the message ends
//! with a line holding only `.`, and a leading `.` of any other line is
//! transparency (dot-stuffing) and is removed.
//!
//! Lines end with CRLF only. A bare LF or a bare CR is message content, never
//! a line ending, so `\n.\n`, `\r.\r` or `\n.\r\n` do not end the message:
//! the end of data is `CRLF . CRLF` and nothing else, which is what keeps a
//! message from smuggling a second one past a relay that reads line endings
//! differently ("SMTP smuggling"). The DATA command's own CRLF counts as the
//! one before the first line, so `.` CRLF right after the 354 is an empty
//! message.

/// Where the decoder is within a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// At the start of a line.
    LineStart,
    /// A `.` at the start of a line (held back: stuffing or the end).
    Dot,
    /// `.` CR at the start of a line: LF next ends the message.
    DotCr,
    /// Within a line.
    Mid,
    /// Within a line, just after a CR.
    Cr,
}

/// An incremental DATA decoder: feed it the bytes after the 354 in any
/// chunks; it gives back the message bytes, un-stuffed, and says where the
/// message ended.
#[derive(Debug)]
pub struct Unstuff {
    at: At,
}

impl Default for Unstuff {
    fn default() -> Self {
        Self { at: At::LineStart }
    }
}

impl Unstuff {
    /// Decodes `input`, giving message bytes to `sink` (in order, possibly in
    /// many pieces). Returns `Some(n)` when the end-of-data line ended at
    /// `input[n - 1]`: the bytes from `n` on are not the message's.
    pub fn feed(&mut self, input: &[u8], mut sink: impl FnMut(&[u8])) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            match self.at {
                At::Mid => {
                    let rest = &input[i..];
                    match rest.iter().position(|&b| b == b'\r') {
                        Some(p) => {
                            sink(&rest[..=p]);
                            i += p + 1;
                            self.at = At::Cr;
                        }
                        None => {
                            sink(rest);
                            i = input.len();
                        }
                    }
                }
                At::Cr => {
                    let b = input[i];
                    i += 1;
                    sink(&[b]);
                    self.at = match b {
                        b'\n' => At::LineStart,
                        b'\r' => At::Cr,
                        _ => At::Mid,
                    };
                }
                At::LineStart => {
                    if input[i] == b'.' {
                        i += 1;
                        self.at = At::Dot;
                    } else {
                        self.at = At::Mid;
                    }
                }
                At::Dot => {
                    if input[i] == b'\r' {
                        i += 1;
                        self.at = At::DotCr;
                    } else {
                        // A stuffed line: the dot is dropped, the rest is content.
                        self.at = At::Mid;
                    }
                }
                At::DotCr => {
                    if input[i] == b'\n' {
                        self.at = At::LineStart;
                        return Some(i + 1);
                    }
                    // `.` CR and more: a stuffed line whose content starts with CR.
                    sink(b"\r");
                    self.at = At::Cr;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` split into chunks at `cuts`; the message and the
    /// bytes left after its end.
    fn decode(input: &[u8], cuts: &[usize]) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut d = Unstuff::default();
        let mut msg = Vec::new();
        let mut start = 0;
        for end in cuts.iter().copied().chain([input.len()]) {
            let chunk = &input[start..end];
            if let Some(n) = d.feed(chunk, |b| msg.extend_from_slice(b)) {
                return Some((msg, input[start + n..].to_vec()));
            }
            start = end;
        }
        None
    }

    fn every_split(input: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let whole = decode(input, &[]).expect("the message ends");
        for a in 0..=input.len() {
            for b in a..=input.len() {
                assert_eq!(decode(input, &[a, b]).as_ref(), Some(&whole), "cut at {a} and {b}");
            }
        }
        whole
    }

    #[test]
    fn ends_at_a_lone_dot_and_keeps_what_follows() {
        let (msg, rest) = every_split(b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n");
        assert_eq!(msg, b"Subject: x\r\n\r\nhello\r\n");
        assert_eq!(rest, b"QUIT\r\n");
    }

    #[test]
    fn an_empty_message() {
        assert_eq!(every_split(b".\r\nNOOP"), (Vec::new(), b"NOOP".to_vec()));
    }

    #[test]
    fn removes_the_stuffed_dot() {
        let (msg, _) = every_split(b"..leading\r\n...two\r\n.\r\r\n. \r\nmid.dle\r\n.\r\n");
        assert_eq!(msg, b".leading\r\n..two\r\n\r\r\n \r\nmid.dle\r\n");
    }

    #[test]
    fn bare_line_endings_are_content() {
        for input in [&b"a\n.\nb\r\n.\r\n"[..], b"a\r.\rb\r\n.\r\n", b"a\n.\r\nb\r\n.\r\n"] {
            let (msg, rest) = every_split(input);
            assert_eq!(msg, &input[..input.len() - 3], "{:?}", String::from_utf8_lossy(input));
            assert!(rest.is_empty());
        }
        assert_eq!(decode(b"x\n.\n", &[]), None);
        // `.` LF at a line's start is a line with more than the dot: stuffed.
        assert_eq!(every_split(b"a\r\n.\nb\r\n.\r\n").0, b"a\r\n\nb\r\n");
    }

    #[test]
    fn cr_runs() {
        let (msg, _) = every_split(b"a\r\r\n.\r\n");
        assert_eq!(msg, b"a\r\r\n");
    }
}
