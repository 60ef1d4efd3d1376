//! Kamaelia's chat server on pier's backplane: a line from one client goes to
//! every other client of the listener. `/nick NAME` renames, `/quit` leaves;
//! joins and leaves are announced.
//!
//! A slow reader cannot stall the room: the backplane never blocks a
//! publisher, and this handler drops messages for its own peer once more
//! than `MAX_BACKLOG` bytes wait to be sent to it.

use pier_guest::keyvalue::{atomics, store};
use pier_guest::{ConnectionInfo, Handler, Lines, Outbox, ShutdownReason, backplane};

const ROOM: &str = "chat";
const MAX_LINE: usize = 1024;
const MAX_NICK: usize = 32;
/// Bytes held for a peer that does not read before its messages are dropped.
const MAX_BACKLOG: usize = 64 << 10;

struct Chat {
    nick: String,
    lines: Lines,
    left: bool,
    dropped: u64,
}

impl Chat {
    fn say(&self, text: &str) {
        backplane::publish(ROOM, text.as_bytes());
    }

    fn leave(&mut self) {
        if !self.left {
            self.left = true;
            self.say(&format!("* {} left\n", self.nick));
            backplane::unsubscribe(ROOM);
        }
    }

    fn command(&mut self, out: &mut Outbox, line: &str) {
        if let Some(nick) = line.strip_prefix("/nick ") {
            let nick: String = nick.trim().chars().filter(|c| !c.is_control()).take(MAX_NICK).collect();
            if nick.is_empty() || nick.contains(' ') {
                out.send(b"* a nick is one word\n");
                return;
            }
            self.say(&format!("* {} is now known as {nick}\n", self.nick));
            out.send(format!("* you are now {nick}\n").as_bytes());
            self.nick = nick;
        } else if line == "/quit" {
            out.send(b"* bye\n");
            self.leave();
            out.finish();
        } else if !line.is_empty() {
            self.say(&format!("<{}> {line}\n", self.nick));
        }
    }
}

impl Handler for Chat {
    fn on_connect(info: &ConnectionInfo, out: &mut Outbox) -> Self {
        let chat = Chat { nick: format!("user{}", number(info)), lines: Lines::new(MAX_LINE), left: false, dropped: 0 };
        backplane::subscribe(ROOM);
        // Announce first: once a client reads its welcome, the room knows it.
        chat.say(&format!("* {} joined\n", chat.nick));
        out.send(format!("* welcome {}; /nick NAME to rename, /quit to leave\n", chat.nick).as_bytes());
        chat
    }

    fn on_data(&mut self, out: &mut Outbox, bytes: &[u8]) {
        let mut lines = Vec::new();
        self.lines.feed(bytes, |line| lines.push(String::from_utf8_lossy(line).into_owned()));
        for line in lines {
            self.command(out, &line);
        }
    }

    fn on_end(&mut self, out: &mut Outbox) {
        self.leave();
        out.finish();
    }

    fn on_message(&mut self, out: &mut Outbox, _topic: &str, message: &[u8]) {
        if out.pending() > MAX_BACKLOG {
            self.dropped += 1;
            return;
        }
        out.send(message);
    }

    fn on_shutdown(&mut self, out: &mut Outbox, reason: &ShutdownReason) {
        // The one reason with the connection still open: say why it ends.
        if matches!(reason, ShutdownReason::ServerShutdown) {
            out.send(b"* server shutting down\n");
        }
        self.leave();
        if self.dropped > 0 {
            eprintln!("{}: dropped {} messages for a slow reader", self.nick, self.dropped);
        }
    }
}

pier_guest::handler!(Chat);

/// A number for a new client's nick: the listener's count of clients, from
/// its key-value store, so that clients of two pier processes sharing one
/// Redis never get the same nick; the connection's id if the store fails.
fn number(info: &ConnectionInfo) -> u64 {
    store::open("").and_then(|bucket| atomics::increment(&bucket, "chat/clients", 1)).unwrap_or(info.id)
}
