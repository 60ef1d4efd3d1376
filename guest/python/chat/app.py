"""Kamaelia's chat server on pier's backplane, in Python, as guest/chat is in
Rust: a line from one client goes to every other client of the listener.
`/nick NAME` renames, `/quit` leaves; joins and leaves are announced.

One instance serves one connection: `me` holds its state (componentize-py
makes a new Inbox object for each call). The backplane never blocks a
publisher; bytes the host refuses with would-block wait here until
`writable`, and messages for a peer that does not read are dropped once
more than MAX_BACKLOG bytes wait for it.
"""
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import backplane, outbox, types

ROOM = "chat"
MAX_LINE = 1024
MAX_NICK = 32
MAX_BACKLOG = 64 << 10


class Chat:
    nick = ""
    buf = b""
    waiting = b""
    left = False
    dropped = 0

    def say(self, text):
        backplane.publish(ROOM, text.encode())

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        if self.waiting:
            self.waiting += data
            return
        try:
            outbox.send(data)
        except Err as e:
            if isinstance(e.value, types.SendError_WouldBlock):
                self.waiting = data

    def leave(self):
        if not self.left:
            self.left = True
            self.say(f"* {self.nick} left\n")
            backplane.unsubscribe(ROOM)

    def command(self, line):
        if line.startswith("/nick "):
            nick = "".join(c for c in line[6:].strip() if c.isprintable())[:MAX_NICK]
            if not nick or " " in nick:
                self.send("* a nick is one word\n")
                return
            self.say(f"* {self.nick} is now known as {nick}\n")
            self.send(f"* you are now {nick}\n")
            self.nick = nick
        elif line == "/quit":
            self.send("* bye\n")
            self.leave()
            outbox.finish()
        elif line:
            self.say(f"<{self.nick}> {line}\n")


me = Chat()


class Inbox(exports.Inbox):
    def new_csa(self, info):
        me.nick = f"user{info.id}"
        backplane.subscribe(ROOM)
        # Announce first: once a client reads its welcome, the room knows it.
        me.say(f"* {me.nick} joined\n")
        me.send(f"* welcome {me.nick}; /nick NAME to rename, /quit to leave\n")

    def data(self, bytes):
        *lines, me.buf = (me.buf + bytes).split(b"\n")
        if len(me.buf) > MAX_LINE:
            lines.append(me.buf)
            me.buf = b""
        for line in lines:
            me.command(line.rstrip(b"\r")[:MAX_LINE].decode(errors="replace"))

    def writable(self):
        data, me.waiting = me.waiting, b""
        me.send(data)

    def end_of_input(self):
        me.leave()
        outbox.finish()

    def message(self, topic, message):
        if len(me.waiting) > MAX_BACKLOG:
            me.dropped += 1
        else:
            me.send(message)

    def timer(self, id):
        pass

    def upstream(self, id, event):
        pass

    def shutdown_csa(self, reason):
        # The one reason with the connection still open: say why it ends.
        if isinstance(reason, types.ShutdownReason_ServerShutdown):
            me.send("* server shutting down\n")
        me.leave()
        if me.dropped:
            print(f"{me.nick}: dropped {me.dropped} messages for a slow reader")
