"""Echo (RFC 862) in Python: every byte that comes in goes back out.

One instance serves one connection, so the module's globals are the
connection's state (componentize-py makes a new Inbox object for each call).
Bytes the host refuses with would-block wait, reading paused, until
`writable`; on the peer's FIN, `finish` once nothing waits.
"""
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import outbox, types

waiting = b""
ended = False


def send(data):
    global waiting
    if waiting:
        waiting += data
        return
    try:
        outbox.send(data)
    except Err as e:
        if isinstance(e.value, types.SendError_WouldBlock):
            waiting = data
            outbox.pause_reading()


class Inbox(exports.Inbox):
    def new_csa(self, info):
        pass

    def data(self, bytes):
        send(bytes)

    def writable(self):
        global waiting
        data, waiting = waiting, b""
        outbox.resume_reading()
        send(data)
        if ended and not waiting:
            outbox.finish()

    def end_of_input(self):
        global ended
        ended = True
        if not waiting:
            outbox.finish()

    def message(self, topic, message):
        pass

    def timer(self, id):
        pass

    def upstream(self, id, event):
        pass

    def shutdown_csa(self, reason):
        pass
