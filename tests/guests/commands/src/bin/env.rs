//! Prints its arguments and environment, sorted, then exits with a failure
//! status (WASI 0.2 carries success or failure, not a number).
fn main() {
    println!("argv {:?}", std::env::args().collect::<Vec<_>>());
    let mut vars: Vec<_> = std::env::vars().collect();
    vars.sort();
    for (key, value) in vars {
        println!("{key}={value}");
    }
    std::process::exit(1);
}
