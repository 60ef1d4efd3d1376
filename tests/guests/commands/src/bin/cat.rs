//! `cat`: stdin to stdout until EOF.
fn main() -> std::io::Result<()> {
    std::io::copy(&mut std::io::stdin().lock(), &mut std::io::stdout().lock())?;
    Ok(())
}
