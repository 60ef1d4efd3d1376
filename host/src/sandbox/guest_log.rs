//! A guest's stdout and stderr, turned into host log lines. They are
//! written inside the connection's span, which tags them with the listener,
//! the connection id and the peer. Lines longer than `MAX_LINE` are split so
//! a guest cannot grow host memory by never writing a newline, and a
//! connection writes at most `log-rate` lines a second: the rest are dropped
//! and counted in one line when the connection ends.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::AsyncWrite;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

pub(crate) const MAX_LINE: usize = 4096;

/// Which of the guest's streams.
#[derive(Clone, Copy, Debug)]
pub enum Stdio {
    Stdout,
    Stderr,
}

/// Makes the output streams that WASI asks for. All of one connection's
/// streams of one kind (however many the guest opens) write into one line
/// buffer, so a guest's partial lines hold at most `MAX_LINE` bytes of host
/// memory per kind; and both kinds share the connection's rate.
#[derive(Clone)]
pub struct GuestLog(Arc<Mutex<Line>>);

impl GuestLog {
    pub fn new(stdio: Stdio, rate: Arc<LogRate>) -> Self {
        Self(Arc::new(Mutex::new(Line { stdio, rate, buf: Vec::new() })))
    }

    fn write_bytes(&self, bytes: &[u8]) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).write_bytes(bytes);
    }
}

/// A token bucket of log lines: `rate` a second, as many at once.
#[derive(Debug)]
pub struct LogRate {
    rate: u32,
    state: Mutex<RateState>,
}

#[derive(Debug)]
struct RateState {
    tokens: f64,
    last: Instant,
    dropped: u64,
}

impl LogRate {
    pub fn new(rate: u32) -> Arc<Self> {
        let state = RateState { tokens: f64::from(rate), last: Instant::now(), dropped: 0 };
        Arc::new(Self { rate, state: Mutex::new(state) })
    }

    /// Whether one more line may be written now; counts it if not.
    fn allow(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let rate = f64::from(self.rate);
        s.tokens = (s.tokens + now.duration_since(s.last).as_secs_f64() * rate).min(rate);
        s.last = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            true
        } else {
            s.dropped += 1;
            false
        }
    }
}

impl Drop for LogRate {
    /// The connection's streams are gone: say what was dropped, once.
    fn drop(&mut self) {
        let dropped = self.state.get_mut().map_or(0, |s| s.dropped);
        if dropped > 0 {
            tracing::warn!(target: "pier::guest", dropped, rate = self.rate, "guest log lines dropped past log-rate");
        }
    }
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineLogger(self.clone()))
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineLogger(self.clone()))
    }
}

/// One output stream the guest holds.
struct LineLogger(GuestLog);

/// The partial line of one kind of stream.
struct Line {
    stdio: Stdio,
    rate: Arc<LogRate>,
    buf: Vec<u8>,
}

impl Line {
    fn write_bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = MAX_LINE - self.buf.len();
            let take = bytes.iter().take(room).position(|&b| b == b'\n');
            match take {
                Some(nl) => {
                    self.buf.extend_from_slice(&bytes[..nl]);
                    self.emit();
                    bytes = &bytes[nl + 1..];
                }
                None => {
                    let n = bytes.len().min(room);
                    self.buf.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if self.buf.len() == MAX_LINE {
                        self.emit();
                    }
                }
            }
        }
    }

    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.buf);
        if self.rate.allow() {
            match self.stdio {
                Stdio::Stdout => tracing::info!(target: "pier::guest", "{text}"),
                Stdio::Stderr => tracing::warn!(target: "pier::guest", "{text}"),
            }
        }
        self.buf.clear();
    }
}

impl Drop for Line {
    /// The connection's last stream of this kind is gone: write what is left.
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.emit();
        }
    }
}

#[async_trait]
impl Pollable for LineLogger {
    async fn ready(&mut self) {}
}

impl OutputStream for LineLogger {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.0.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_LINE)
    }
}

impl AsyncWrite for LineLogger {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.0.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_past_the_rate_are_dropped_and_counted() {
        let rate = LogRate::new(5);
        let allowed = (0..100).filter(|_| rate.allow()).count();
        assert_eq!(allowed, 5, "a burst of one second's lines, no more");
        assert_eq!(rate.state.lock().unwrap().dropped, 95);
    }

    #[test]
    fn every_stream_of_a_kind_shares_one_bounded_line() {
        let log = GuestLog::new(Stdio::Stdout, LogRate::new(1000));
        let streams: Vec<_> = (0..100).map(|_| LineLogger(log.clone())).collect();
        for s in &streams {
            s.0.write_bytes(&[b'x'; MAX_LINE - 1]);
        }
        assert!(log.0.lock().unwrap().buf.len() < MAX_LINE, "100 streams, one partial line");
    }
}
