//! Fortune cookie: sends one fortune, chosen by connection id, then
//! `finish`es, so the connection closes right after the last byte. A
//! listener can set its own text with `config = { fortune = "..." }`.

use pier_guest::{ConnectionInfo, Handler, Outbox, config};

/// Fortunes separated by lines holding a single `%` (the fortune(6) format).
const FORTUNES: &str = include_str!("fortunes.txt");

fn pick(id: u64) -> String {
    let all: Vec<&str> = FORTUNES.split("\n%\n").map(str::trim).filter(|f| !f.is_empty()).collect();
    format!("{}\n", all[(id as usize) % all.len()])
}

struct Fortune;

impl Handler for Fortune {
    fn on_connect(info: &ConnectionInfo, out: &mut Outbox) -> Self {
        let text = config::get("fortune").map(|f| format!("{f}\n")).unwrap_or_else(|| pick(info.id));
        out.send(text.as_bytes());
        out.finish();
        Fortune
    }
}

pier_guest::handler!(Fortune);
