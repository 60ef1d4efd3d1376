"""Echo (RFC 862) in Python as a server-handler: one instance serves every
connection of the listener, so CPython starts once per listener, not once
per connection.

Each connection is a `conn` kept by id. Bytes the host refuses with
would-block wait, that peer's reading paused, until its `writable`; on the
peer's FIN, `finish` once nothing waits; the `conn` is dropped after
`shutdown-csa`, as the contract asks.
"""
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import types


class Peer:
    __slots__ = ("conn", "waiting", "ended")

    def __init__(self, conn):
        self.conn = conn
        self.waiting = b""
        self.ended = False

    def send(self, data):
        if self.waiting:
            self.waiting += data
            return
        try:
            self.conn.send(data)
        except Err as e:
            if isinstance(e.value, types.SendError_WouldBlock):
                self.waiting = data
                self.conn.pause_reading()


peers = {}


class ServerInbox(exports.ServerInbox):
    def new_csa(self, conn, info):
        peers[info.id] = Peer(conn)

    def data(self, id, bytes):
        peers[id].send(bytes)

    def writable(self, id):
        peer = peers[id]
        data, peer.waiting = peer.waiting, b""
        peer.conn.resume_reading()
        peer.send(data)
        if peer.ended and not peer.waiting:
            peer.conn.finish()

    def end_of_input(self, id):
        peer = peers[id]
        peer.ended = True
        if not peer.waiting:
            peer.conn.finish()

    def shutdown_csa(self, id, reason):
        peer = peers.pop(id, None)
        if peer is not None:
            peer.conn.__exit__(None, None, None)
