"""Raw ASGI: a 1 MiB response sent as 16 body messages of 64 KiB each."""
from _lifespan import lifespan, pid as _pid

CHUNK = bytes(range(256)) * 256  # 64 KiB with a checkable pattern
CHUNKS = 16
TOTAL = len(CHUNK) * CHUNKS  # 1 MiB


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
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(TOTAL).encode()),
            (b"x-pid", _pid.value),
        ],
    })
    for i in range(CHUNKS):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": i < CHUNKS - 1})
