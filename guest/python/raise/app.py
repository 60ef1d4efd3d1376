"""A handler that raises: it echoes lines, and a line `raise` raises an
exception, which ends its instance (a trap) and its connection only.
"""
from wit_world import exports
from wit_world.imports import outbox


class Inbox(exports.Inbox):
    def new_csa(self, info):
        outbox.send(b"ready\n")

    def data(self, bytes):
        if bytes.startswith(b"raise"):
            raise RuntimeError("asked to raise")
        outbox.send(bytes)

    def end_of_input(self):
        outbox.finish()

    def writable(self):
        pass

    def message(self, topic, message):
        pass

    def timer(self, id):
        pass

    def upstream(self, id, event):
        pass

    def shutdown_csa(self, reason):
        pass
