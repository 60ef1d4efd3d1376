//! Fortune cookie: sends one fortune, chosen by connection id, then
//! `finish`es, so the connection closes right after the last byte. A
//! listener can set its own text with `config = { fortune = "..." }`.

wit_bindgen::generate!({ path: "../../wit", world: "connection-handler" });

use exports::pier::server::inbox::{ConnectionInfo, Guest, ShutdownReason};
use pier::server::{config, outbox};

/// Fortunes separated by lines holding a single `%` (the fortune(6) format).
const FORTUNES: &str = include_str!("fortunes.txt");

fn pick(id: u64) -> String {
    let all: Vec<&str> = FORTUNES.split("\n%\n").map(str::trim).filter(|f| !f.is_empty()).collect();
    format!("{}\n", all[(id as usize) % all.len()])
}

struct Fortune;

impl Guest for Fortune {
    fn new_csa(info: ConnectionInfo) {
        // A fresh outbox is empty, so this one send is always taken whole.
        let text = config::get("fortune").map(|f| format!("{f}\n")).unwrap_or_else(|| pick(info.id));
        let _ = outbox::send(text.as_bytes());
        outbox::finish();
    }

    fn data(_bytes: Vec<u8>) {}

    fn end_of_input() {}

    fn writable() {}

    fn shutdown_csa(_reason: ShutdownReason) {}
}

export!(Fortune);
