//! Line framing for text protocols.

/// Splits a byte stream into lines (`\n`, with an optional `\r` before it).
/// A line longer than the limit is cut: its first `max` bytes are delivered
/// as a line and the rest is dropped up to the next newline, so a peer that
/// never sends a newline cannot grow the handler's memory.
#[derive(Debug)]
pub struct Lines {
    buf: Vec<u8>,
    max: usize,
    discarding: bool,
}

impl Lines {
    pub fn new(max: usize) -> Self {
        Self { buf: Vec::new(), max, discarding: false }
    }

    /// Feeds bytes; calls `each` for every complete line, without its ending.
    pub fn feed(&mut self, mut bytes: &[u8], mut each: impl FnMut(&[u8])) {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            if !self.discarding {
                self.buf.extend_from_slice(&bytes[..nl]);
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
                self.buf.truncate(self.max);
                each(&self.buf);
            }
            self.buf.clear();
            self.discarding = false;
            bytes = &bytes[nl + 1..];
        }
        if self.discarding {
            return;
        }
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > self.max {
            self.buf.truncate(self.max);
            each(&self.buf);
            self.buf.clear();
            self.discarding = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(max: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut l = Lines::new(max);
        let mut out = Vec::new();
        for c in chunks {
            l.feed(c, |line| out.push(String::from_utf8_lossy(line).into_owned()));
        }
        out
    }

    #[test]
    fn splits_and_joins() {
        assert_eq!(lines(100, &[b"a\nb", b"c\r\nd"]), ["a", "bc"]);
        assert_eq!(lines(100, &[b"\n\n"]), ["", ""]);
    }

    #[test]
    fn cuts_long_lines() {
        assert_eq!(lines(3, &[b"abcdef", b"gh\nxy\n"]), ["abc", "xy"]);
    }
}
