//! Reads one line, then panics.
fn main() {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    panic!("giving up on {:?}", line.trim());
}
