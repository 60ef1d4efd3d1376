//! A Redis-protocol (RESP2) server on pier. Data lives in the listener's
//! shared `wasi:keyvalue` bucket, so every connection of the listener sees
//! the same keys; INCR and friends use the store's atomic increment.
//! Pipelined commands are answered in order, with one `send` per read.
//!
//! Expiry: a key's deadline (ms since the epoch) is kept under a companion
//! key `"\0ttl:" + key` and checked lazily whenever the key is touched.
//! Keys are strings in `wasi:keyvalue`; non-UTF-8 key bytes are replaced.

mod commands;
mod parse;

use parse::{Parsed, parse};
use pier_guest::keyvalue::store::{self, Bucket};
use pier_guest::{ConnectionInfo, Handler, Outbox};

struct Resp {
    /// Bytes of an incomplete command.
    buf: Vec<u8>,
    bucket: Option<Bucket>,
    closing: bool,
}

impl Resp {
    /// Answers every complete command in the buffer.
    fn serve(&mut self, out: &mut Outbox) {
        let mut replies = Vec::new();
        let mut at = 0;
        while !self.closing && at < self.buf.len() {
            match parse(&self.buf[at..]) {
                Ok(Parsed::Command(args, used)) => {
                    at += used;
                    let Some(bucket) = &self.bucket else {
                        replies.extend_from_slice(b"-ERR the key-value store is not available\r\n");
                        continue;
                    };
                    if commands::run(bucket, &args, &mut replies) == commands::Next::Quit {
                        self.closing = true;
                    }
                }
                Ok(Parsed::Skip(used)) => at += used,
                Ok(Parsed::Incomplete) => break,
                Err(e) => {
                    replies.extend_from_slice(format!("-ERR Protocol error: {}\r\n", e.0).as_bytes());
                    self.closing = true;
                }
            }
        }
        self.buf.drain(..at.min(self.buf.len()));
        if !replies.is_empty() {
            out.send(&replies);
        }
        if self.closing {
            self.buf.clear();
            out.finish();
        }
    }
}

impl Handler for Resp {
    fn on_connect(_info: &ConnectionInfo, _out: &mut Outbox) -> Self {
        Resp { buf: Vec::new(), bucket: store::open("").ok(), closing: false }
    }

    fn on_data(&mut self, out: &mut Outbox, bytes: &[u8]) {
        if self.closing {
            return;
        }
        self.buf.extend_from_slice(bytes);
        self.serve(out);
    }
}

pier_guest::handler!(Resp);
