"""Helpers shared by the raw ASGI bench apps: lifespan handling and the worker pid."""
import os


async def lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class _Pid:
    """os.getpid() as bytes, refreshed after a fork (apps may be preloaded)."""

    def __init__(self):
        self.refresh()

    def refresh(self):
        self.value = str(os.getpid()).encode()


pid = _Pid()
os.register_at_fork(after_in_child=pid.refresh)
