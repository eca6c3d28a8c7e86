"""Test app for arbiter behind nginx and HAProxy (deploy/nginx, deploy/haproxy).

``/scope``: the client, scheme and headers the app was given; ``/upload``: the
size and SHA-256 of the request body; ``/pid``: the worker's pid; ``/healthz``:
``ok`` (what a load balancer's health check asks for); any other path: 404. A WebSocket echoes text as ``echo:TEXT`` and bytes reversed, and
answers the text ``scope`` with the client and scheme of its own scope.
"""

import hashlib
import json
import os

from app_lifespan import serve_lifespan


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
        return
    digest, size = hashlib.sha256(), 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        digest.update(chunk)
        size += len(chunk)
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == "/scope":
        body = json.dumps(_scope(scope)).encode()
    elif path == "/upload":
        body = json.dumps({"size": size, "sha256": digest.hexdigest()}).encode()
    elif path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/healthz":
        body = b"ok"
    else:
        body = b"not found"
    await send({"type": "http.response.start", "status": 404 if body == b"not found" else 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode()),
                            (b"x-worker-pid", str(os.getpid()).encode())]})
    await send({"type": "http.response.body", "body": body})


def _scope(scope):
    return {"client": scope["client"], "scheme": scope["scheme"], "path": scope["path"],
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]]}


async def websocket(scope, receive, send):
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text == "scope":
            await send({"type": "websocket.send", "text": json.dumps(_scope(scope))})
        elif text is not None:
            await send({"type": "websocket.send", "text": "echo:" + text})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})
