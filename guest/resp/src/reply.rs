//! RESP2 replies, gathered for one batch of pipelined commands.
//!
//! Small replies go into one buffer, so a batch of pipelined commands costs
//! one `send`. A large value the store handed over is kept as a part of its
//! own instead of being copied: a handler's memory is limited, and a 16 MiB
//! GET must not need 32 MiB.

/// Values at least this long are moved into their own part, not copied.
const OWN_PART: usize = 64 << 10;

#[derive(Debug, Default)]
pub struct Reply {
    /// The bytes to send, in order; the last part is the one appended to.
    parts: Vec<Vec<u8>>,
    len: usize,
}

impl Reply {
    /// Total bytes gathered.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Hands over the gathered parts, in order, leaving this empty.
    pub fn take(&mut self) -> Vec<Vec<u8>> {
        self.len = 0;
        std::mem::take(&mut self.parts)
    }

    fn tail(&mut self) -> &mut Vec<u8> {
        if self.parts.is_empty() {
            self.parts.push(Vec::with_capacity(256));
        }
        self.parts.last_mut().expect("a part was just pushed")
    }

    fn put(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        self.tail().extend_from_slice(bytes);
    }

    /// `+OK`, `+PONG`: a status.
    pub fn simple(&mut self, text: &str) {
        self.len += text.len() + 3;
        let tail = self.tail();
        tail.push(b'+');
        tail.extend_from_slice(text.as_bytes());
        tail.extend_from_slice(b"\r\n");
    }

    pub fn ok(&mut self) {
        self.put(b"+OK\r\n");
    }

    /// An error line. CR and LF become spaces, as in Redis: the text may
    /// quote a client's bytes, and a line break would end the reply early
    /// and desynchronise the client.
    pub fn error(&mut self, text: &str) {
        let tail = self.tail();
        let before = tail.len();
        tail.push(b'-');
        tail.extend(text.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
        tail.extend_from_slice(b"\r\n");
        self.len += tail.len() - before;
    }

    pub fn int(&mut self, n: i64) {
        self.number_line(b':', n);
    }

    /// `<kind><n>\r\n` for the integers, lengths and counts of nearly every
    /// reply, formatted by `itoa`: `fmt`'s machinery shows in profiles of
    /// pipelined commands.
    fn number_line(&mut self, kind: u8, n: impl itoa::Integer) {
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(n).as_bytes();
        self.len += digits.len() + 3;
        let tail = self.tail();
        tail.push(kind);
        tail.extend_from_slice(digits);
        tail.extend_from_slice(b"\r\n");
    }

    /// The null bulk string, Redis's "no such key".
    pub fn nil(&mut self) {
        self.put(b"$-1\r\n");
    }

    pub fn bulk(&mut self, value: &[u8]) {
        self.number_line(b'$', value.len());
        self.put(value);
        self.put(b"\r\n");
    }

    /// A bulk string the caller owns: a large one becomes its own part.
    pub fn bulk_owned(&mut self, value: Vec<u8>) {
        if value.len() < OWN_PART {
            return self.bulk(&value);
        }
        self.number_line(b'$', value.len());
        self.len += value.len();
        self.parts.push(value);
        self.parts.push(Vec::new());
        self.put(b"\r\n");
    }

    /// A bulk string, or nil for none.
    pub fn maybe_bulk(&mut self, value: Option<Vec<u8>>) {
        match value {
            Some(value) => self.bulk_owned(value),
            None => self.nil(),
        }
    }

    /// The header of an array of `n` replies, which the caller then writes.
    pub fn array(&mut self, n: usize) {
        self.number_line(b'*', n);
    }
}

#[cfg(test)]
impl Reply {
    /// Everything gathered, as one byte string.
    pub fn bytes(&self) -> Vec<u8> {
        self.parts.concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_reply() {
        let mut r = Reply::default();
        r.ok();
        r.simple("PONG");
        r.int(-15);
        r.int(0);
        r.int(i64::MIN);
        r.nil();
        r.array(2);
        r.bulk(b"v");
        r.bulk(b"");
        r.error("ERR unknown command 'a\r\nb'");
        let want = b"+OK\r\n+PONG\r\n:-15\r\n:0\r\n:-9223372036854775808\r\n$-1\r\n*2\r\n$1\r\nv\r\n$0\r\n\r\n-ERR unknown command 'a  b'\r\n";
        assert_eq!(r.bytes(), want);
        assert_eq!(r.len(), want.len());
        assert_eq!(r.take().len(), 1, "small replies share one part");
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_large_value_is_moved_not_copied() {
        let mut r = Reply::default();
        r.ok();
        let value = vec![b'x'; OWN_PART];
        let at = value.as_ptr();
        r.bulk_owned(value);
        r.int(1);
        assert_eq!(r.len(), 5 + 8 + OWN_PART + 2 + 4);
        let parts = r.take();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0], b"+OK\r\n$65536\r\n");
        assert_eq!(parts[1].as_ptr(), at);
        assert_eq!(parts[2], b"\r\n:1\r\n");
    }
}
