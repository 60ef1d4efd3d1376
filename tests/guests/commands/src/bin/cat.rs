//! `cat`: stdin to stdout until EOF, each read written and flushed at once
//! (std's stdout is line-buffered: without the flush, bytes after the last
//! newline would wait for the next one).
use std::io::{Read, Write};

fn main() -> std::io::Result<()> {
    let (mut input, mut output) = (std::io::stdin().lock(), std::io::stdout().lock());
    let mut buf = vec![0; 64 << 10];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        output.write_all(&buf[..n])?;
        output.flush()?;
    }
}
