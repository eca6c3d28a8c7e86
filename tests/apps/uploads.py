"""Test app for request bodies the app does not read at once: raw ASGI.

``POST /hold`` reads nothing until ``GET /release`` (on any connection) lets
it; then it reads the whole body and answers its length in bytes.
"""

import asyncio

RELEASE: list[asyncio.Event] = []  # made on first use, inside the worker's loop


def _release_event() -> asyncio.Event:
    if not RELEASE:
        RELEASE.append(asyncio.Event())
    return RELEASE[0]


async def app(scope, receive, send):
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["path"] == "/release":
        _release_event().set()
        payload = b"released"
    else:
        if scope["path"] == "/hold":
            await _release_event().wait()
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        payload = str(size).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})
