"""Raw ASGI plaintext: the smallest useful HTTP response.

The x-pid header names the worker process that answered, so the bench can
count how requests spread over workers and find the worker pids.
"""
from _lifespan import lifespan, pid as _pid

BODY = b"Hello, world!"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", b"text/plain"),
            (b"content-length", b"13"),
            (b"x-pid", _pid.value),
        ],
    })
    await send({"type": "http.response.body", "body": BODY})
