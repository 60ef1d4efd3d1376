//! `rev`: each line reversed (by characters), until EOF.
use std::io::{BufRead, Write};

fn main() -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let reversed: String = line?.chars().rev().collect();
        writeln!(out, "{reversed}")?;
        out.flush()?;
    }
    Ok(())
}
