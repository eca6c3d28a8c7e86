"""Test app for the master lifecycle tests. Deliberate sleeps here are app behaviour.

Endpoints: ``/pid``; ``/slow?s=`` (awaits, the loop stays responsive);
``/block?s=`` (blocks the event loop, so the worker cannot react to signals);
``/grandchild?release=PATH`` (double-forks a grandchild that waits for PATH to
exist, then exits; answers with the grandchild's pid).
"""

import asyncio
import os
import time
from urllib.parse import parse_qs

BODY = b"version one"


def _grandchild(release: str) -> int:
    """Fork a child that forks the grandchild and exits at once, orphaning it."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            grandchild = os.fork()
            if grandchild == 0:
                os.closerange(3, 1024)  # hold no listener or heartbeat pipe of the worker
                deadline = time.monotonic() + 20
                while not os.path.exists(release) and time.monotonic() < deadline:
                    time.sleep(0.02)
                os._exit(0)
            os.write(w, str(grandchild).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(child, 0)  # the worker reaps its own child; the grandchild is orphaned
    with os.fdopen(r, "rb") as f:
        return int(f.read())


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = parse_qs(scope["query_string"].decode())
    while (await receive()).get("more_body"):
        pass
    path = scope["path"]
    if path == "/slow":
        print("IN FLIGHT", path, os.getpid(), flush=True)
        await asyncio.sleep(float(query.get("s", ["1"])[0]))
        payload = b"slow done"
    elif path == "/block":
        print("IN FLIGHT", path, os.getpid(), flush=True)
        time.sleep(float(query.get("s", ["30"])[0]))
        payload = b"blocked"
    elif path == "/pid":
        payload = str(os.getpid()).encode()
    elif path == "/grandchild":
        payload = str(_grandchild(query["release"][0])).encode()
    else:
        payload = BODY
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": payload})
