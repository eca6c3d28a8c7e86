"""Test app for timeouts, flow control, concurrency limits and TLS.

Raw ASGI. Sleeps here are app behaviour (a slow handler), not test syncing.

- ``/pid``: the worker's pid.
- ``/slow?s=N``: answers after N seconds.
- ``/hold?s=N``: sends the head and a first chunk holding the pid at once,
  then keeps the request in flight for N seconds before finishing.
- ``/stream?chunks=N&size=S``: a chunked response of N fresh chunks of S
  bytes, each built anew so the server cannot hold on to one shared object.
- ``/blob?size=S``: S bytes in a single body message.
- ``/scope``: JSON of the scheme, the TLS extension (if any), client and server.
- ``/upload``: reads the body and answers with its length; if ``receive()``
  says ``http.disconnect`` first, it notes how many bytes it had got.
  ``/upload?respond_first=1`` sends the head and a first chunk before reading.
- ``/uploads``: JSON list of what each ``/upload`` of this worker ended with.
- anything else: a short text.
"""

import asyncio
import json
import os
from urllib.parse import parse_qs

from app_lifespan import serve_lifespan

_uploads = []  # what each /upload ended with, in order, for /uploads to report


def _query(scope, name, default):
    values = parse_qs(scope["query_string"].decode()).get(name)
    return type(default)(values[0]) if values else default


async def _start(send, content_type=b"text/plain", length=None):
    headers = [(b"content-type", content_type), (b"x-worker-pid", str(os.getpid()).encode())]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    path = scope["path"]
    if path == "/upload":
        await _upload(scope, receive, send)
        return
    while True:  # drain the request body
        message = await receive()
        if not message.get("more_body"):
            break
    if path == "/stream":
        chunks = _query(scope, "chunks", 16)
        size = _query(scope, "size", 65536)
        filler = b"x" * size
        await _start(send)
        for i in range(chunks):
            chunk = i.to_bytes(8, "big") + filler[8:]  # a new object every time
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    if path == "/blob":  # one body message, nothing for the server to wait on
        size = _query(scope, "size", 1 << 20)
        await _start(send, length=size)
        await send({"type": "http.response.body", "body": bytes(size)})
        return
    if path == "/hold":
        await _start(send)
        await send({"type": "http.response.body", "body": b"%d\n" % os.getpid(),
                    "more_body": True})
        await asyncio.sleep(_query(scope, "s", 2.0))
        await send({"type": "http.response.body", "body": b"done\n"})
        return
    if path == "/slow":
        await asyncio.sleep(_query(scope, "s", 1.0))
        payload = b"slow done"
    elif path == "/uploads":
        payload = json.dumps(_uploads).encode()
    elif path == "/pid":
        payload = str(os.getpid()).encode()
    elif path == "/scope":
        tls = scope.get("extensions", {}).get("tls")
        if tls is not None:
            tls = dict(tls, client_cert_chain=list(tls.get("client_cert_chain", ())))
        payload = json.dumps({"scheme": scope["scheme"], "tls": tls, "client": scope["client"],
                              "server": scope["server"]}).encode()
    else:
        payload = b"Hello, world!"
    await _start(send, length=len(payload))
    await send({"type": "http.response.body", "body": payload})


async def _upload(scope, receive, send):
    respond_first = _query(scope, "respond_first", 0)
    if respond_first:
        await _start(send)
        await send({"type": "http.response.body", "body": b"reading\n", "more_body": True})
    received = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            _uploads.append({"disconnect_after": received})
            return
        received += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    _uploads.append({"complete": received})
    payload = b"%d" % received
    if respond_first:
        await send({"type": "http.response.body", "body": payload})
        return
    await _start(send, length=len(payload))
    await send({"type": "http.response.body", "body": payload})
