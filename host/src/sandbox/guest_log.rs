//! A guest's stdout and stderr, turned into host log lines. They are
//! written inside the connection's span, which tags them with the listener,
//! the connection id and the peer. Lines longer than `MAX_LINE` are split so
//! a guest cannot grow host memory by never writing a newline.

use bytes::Bytes;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::async_trait;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

const MAX_LINE: usize = 4096;

/// Which of the guest's streams.
#[derive(Clone, Copy, Debug)]
pub enum Stdio {
    Stdout,
    Stderr,
}

/// Makes the per-stream loggers that WASI asks for.
#[derive(Clone, Copy)]
pub struct GuestLog(pub Stdio);

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineLogger::new(self.0))
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineLogger::new(self.0))
    }
}

struct LineLogger {
    stdio: Stdio,
    line: Vec<u8>,
}

impl LineLogger {
    fn new(stdio: Stdio) -> Self {
        Self { stdio, line: Vec::new() }
    }

    fn write_bytes(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let room = MAX_LINE - self.line.len();
            let take = bytes.iter().take(room).position(|&b| b == b'\n');
            match take {
                Some(nl) => {
                    self.line.extend_from_slice(&bytes[..nl]);
                    self.emit();
                    bytes = &bytes[nl + 1..];
                }
                None => {
                    let n = bytes.len().min(room);
                    self.line.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if self.line.len() == MAX_LINE {
                        self.emit();
                    }
                }
            }
        }
    }

    fn emit(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        match self.stdio {
            Stdio::Stdout => tracing::info!(target: "pier::guest", "{text}"),
            Stdio::Stderr => tracing::warn!(target: "pier::guest", "{text}"),
        }
        self.line.clear();
    }
}

impl Drop for LineLogger {
    fn drop(&mut self) {
        if !self.line.is_empty() {
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
        self.write_bytes(&bytes);
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
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
