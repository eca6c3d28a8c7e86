"""Test app for long-lived connections across stops and reloads. The sleeps here are
app behaviour (a stream's pacing, a hanging handler), not test synchronisation.

Printed on stdout, one write per line (workers share it):
``WS OPEN <id> <pid>``, ``WS DISCONNECT <id> <code>``, ``WS CLEANED <id>``,
``WS FINALLY <id>``;
``STREAM FINALLY <id> <chunks sent>``; ``LIFESPAN SHUTDOWN START|FINALLY <pid>``.

WebSockets: ``/ws?id=X&cleanup=S`` accepts, sends ``{"pid": ..., "id": X}`` and
echoes text until the disconnect, then takes S seconds to clean up (say, saving
the session) and prints ``WS CLEANED`` (a task cancelled meanwhile never does); ``/ws/stubborn?id=X`` ignores the disconnect and awaits
forever (it is cancelled at the graceful timeout); ``/ws/deaf?id=X`` never
receives after its hello (ends when the client goes); ``/ws/flood?mib=N`` sends N
messages of 1 MiB of random bytes as fast as send() lets it (progress at
``/flood``); ``/ws/deny`` answers the upgrade with a 401 and a body.
HTTP: ``/stream?id=X&n=N&every=S`` sends N chunks ``data: i``, one every S
seconds; ``/pid``; ``/flood`` (JSON: messages sent so far); anything else: ok.
Lifespan: env ``STARTUP_HANG`` / ``SHUTDOWN_HANG`` (seconds) hang that phase.
"""

import asyncio
import json
import os
from urllib.parse import parse_qs

FLOOD = {"sent": 0, "done": False}
DENY_BODY = b"no entry without a token\n"


def _say(line):
    os.write(1, (line + "\n").encode())  # one write: lines from two workers never interleave


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await asyncio.sleep(float(os.environ.get("STARTUP_HANG", "0")))
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            _say(f"LIFESPAN SHUTDOWN START {os.getpid()}")
            try:
                await asyncio.sleep(float(os.environ.get("SHUTDOWN_HANG", "0")))
                await send({"type": "lifespan.shutdown.complete"})
            finally:
                _say(f"LIFESPAN FINALLY {os.getpid()}")
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    if scope["type"] == "websocket":
        await _websocket(scope, receive, send, query)
        return
    path = scope["path"]
    if path == "/stream":
        await _stream(send, query)
        return
    if path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/flood":
        body = json.dumps(FLOOD).encode()
    elif path == "/healthz":
        body = b"the app was called for the health path"
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": body})
        return
    else:
        body = b"ok"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode()),
                            (b"x-worker-pid", str(os.getpid()).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _stream(send, query):
    count, every, ident = int(query.get("n", "5")), float(query.get("every", "0.2")), \
        query.get("id", "-")
    sent = 0
    try:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for i in range(count):
            await send({"type": "http.response.body", "body": f"data: {i}\n\n".encode(),
                        "more_body": True})
            sent += 1
            await asyncio.sleep(every)
        await send({"type": "http.response.body", "body": b""})
    finally:
        _say(f"STREAM FINALLY {ident} {sent}")


async def _websocket(scope, receive, send, query):
    ident = query.get("id", "-")
    path = scope["path"]
    message = await receive()
    assert message["type"] == "websocket.connect"
    if path == "/ws/deny":
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain"),
                                (b"www-authenticate", b'Bearer realm="test"'),
                                (b"content-length", str(len(DENY_BODY)).encode())]})
        await send({"type": "websocket.http.response.body", "body": DENY_BODY})
        return
    try:
        await send({"type": "websocket.accept"})
        _say(f"WS OPEN {ident} {os.getpid()}")
        if path == "/ws/flood":
            await _flood(send, int(query.get("mib", "100")))
        elif path == "/ws/deaf":
            while True:  # never receives: sends a ping-like message until the client goes
                await send({"type": "websocket.send", "text": "still here"})
                await asyncio.sleep(0.2)
        else:
            await send({"type": "websocket.send",
                        "text": json.dumps({"pid": os.getpid(), "id": ident})})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                _say(f"WS DISCONNECT {ident} {message.get('code')}")
                if path == "/ws/stubborn":
                    await asyncio.Event().wait()  # ignores it: only a cancel ends this
                await asyncio.sleep(float(query.get("cleanup", "0")))
                _say(f"WS CLEANED {ident}")
                return
            await send({"type": "websocket.send", "text": "echo:" + (message.get("text") or "")})
    finally:
        _say(f"WS FINALLY {ident}")


async def _flood(send, mib):
    chunk = os.urandom(1024 * 1024)  # random: permessage-deflate cannot shrink it
    for _ in range(mib):
        await send({"type": "websocket.send", "bytes": chunk})
        FLOOD["sent"] += 1
    FLOOD["done"] = True
