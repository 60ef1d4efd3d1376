//! Kamaelia's chat server as a `server-handler`: one instance serves every
//! client of the listener, so the room is a map in its memory and a line is
//! sent straight to each other member's `conn` (no backplane). The protocol
//! is the `chat` guest's, byte for byte: a line from one client goes to every
//! other client; `/nick NAME` renames, `/quit` leaves; joins and leaves are
//! announced.
//!
//! A slow reader cannot stall the room: `send` never blocks (the SDK holds
//! what its host queue refuses), and a client with more than `MAX_BACKLOG`
//! bytes held for it loses the messages for it until it catches up.

use pier_server_guest::keyvalue::{atomics, store};
use pier_server_guest::{ConnectionInfo, Conns, Lines, Server, ShutdownReason};
use std::collections::BTreeMap;

const MAX_LINE: usize = 1024;
const MAX_NICK: usize = 32;
/// Bytes held for a peer that does not read before its messages are dropped.
const MAX_BACKLOG: usize = 64 << 10;

/// One client, from its connect to its shutdown.
struct Member {
    nick: String,
    lines: Lines,
    /// It left the room (`/quit`, FIN, or the connection ended): it hears
    /// and says nothing more.
    left: bool,
    /// Messages dropped for it while its backlog was full.
    dropped: u64,
}

#[derive(Default)]
struct Chat {
    /// Every client by connection id; the room is those not `left`.
    members: BTreeMap<u64, Member>,
    /// The listener's key-value bucket, opened once for every nick number.
    bucket: Option<store::Bucket>,
}

impl Chat {
    /// Sends `text` to everyone in the room but `from`, as the backplane
    /// does (a publisher does not get its own message).
    fn say(&mut self, conns: &mut Conns, from: u64, text: &str) {
        for (&id, member) in &mut self.members {
            if id == from || member.left {
                continue;
            }
            if conns.pending(id) > MAX_BACKLOG {
                member.dropped += 1;
            } else {
                conns.send(id, text.as_bytes());
            }
        }
    }

    fn leave(&mut self, conns: &mut Conns, id: u64) {
        let Some(member) = self.members.get_mut(&id).filter(|m| !m.left) else { return };
        member.left = true;
        let text = format!("* {} left\n", member.nick);
        self.say(conns, id, &text);
    }

    fn command(&mut self, conns: &mut Conns, id: u64, line: &str) {
        let Some(member) = self.members.get_mut(&id) else { return };
        if let Some(nick) = line.strip_prefix("/nick ") {
            let nick: String = nick.trim().chars().filter(|c| !c.is_control()).take(MAX_NICK).collect();
            if nick.is_empty() || nick.contains(' ') {
                conns.send(id, b"* a nick is one word\n");
                return;
            }
            let old = std::mem::replace(&mut member.nick, nick.clone());
            self.say(conns, id, &format!("* {old} is now known as {nick}\n"));
            conns.send(id, format!("* you are now {nick}\n").as_bytes());
        } else if line == "/quit" {
            conns.send(id, b"* bye\n");
            self.leave(conns, id);
            conns.finish(id);
        } else if !line.is_empty() {
            let text = format!("<{}> {line}\n", member.nick);
            self.say(conns, id, &text);
        }
    }

    /// A number for a new client's nick: the listener's count of clients,
    /// from its key-value store, so that clients of two pier processes
    /// sharing one Redis never get the same nick; the connection's id if the
    /// store fails.
    fn number(&mut self, id: u64) -> u64 {
        if self.bucket.is_none() {
            self.bucket = store::open("").ok();
        }
        self.bucket.as_ref().and_then(|bucket| atomics::increment(bucket, "chat/clients", 1).ok()).unwrap_or(id)
    }
}

impl Server for Chat {
    fn on_connect(&mut self, conns: &mut Conns, id: u64, _info: &ConnectionInfo) {
        let nick = format!("user{}", self.number(id));
        let member = Member { nick: nick.clone(), lines: Lines::new(MAX_LINE), left: false, dropped: 0 };
        self.members.insert(id, member);
        // Announce first: once a client reads its welcome, the room knows it.
        self.say(conns, id, &format!("* {nick} joined\n"));
        conns.send(id, format!("* welcome {nick}; /nick NAME to rename, /quit to leave\n").as_bytes());
    }

    fn on_data(&mut self, conns: &mut Conns, id: u64, bytes: &[u8]) {
        let Some(member) = self.members.get_mut(&id) else { return };
        let mut lines = Vec::new();
        member.lines.feed(bytes, |line| lines.push(String::from_utf8_lossy(line).into_owned()));
        for line in lines {
            // After `/quit` the client has left: the rest of its chunk is not said.
            if self.members.get(&id).is_none_or(|m| m.left) {
                break;
            }
            self.command(conns, id, &line);
        }
    }

    fn on_end(&mut self, conns: &mut Conns, id: u64) {
        self.leave(conns, id);
        conns.finish(id);
    }

    fn on_shutdown(&mut self, conns: &mut Conns, id: u64, reason: &ShutdownReason) {
        // The one reason with the connection still open: say why it ends.
        if matches!(reason, ShutdownReason::ServerShutdown) {
            conns.send(id, b"* server shutting down\n");
        }
        self.leave(conns, id);
        if let Some(member) = self.members.remove(&id).filter(|m| m.dropped > 0) {
            eprintln!("{}: dropped {} messages for a slow reader", member.nick, member.dropped);
        }
    }
}

pier_server_guest::server!(Chat);
