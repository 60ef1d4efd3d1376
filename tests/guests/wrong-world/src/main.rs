//! A plain WASI command: a real component, but not a pier connection-handler.
fn main() {
    println!("not a pier handler");
}
