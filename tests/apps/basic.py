"""Test apps: raw ASGI, no framework. Deliberate sleeps here are app behaviour."""

import asyncio
import json
import os
import time
from urllib.parse import parse_qs

STATE = {"started": False}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["greeting"] = "hello from lifespan"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                print("LIFESPAN SHUTDOWN in", os.getpid(), flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    query = parse_qs(scope["query_string"].decode())
    path = scope["path"]
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if path == "/slow":
        await asyncio.sleep(float(query.get("s", ["1"])[0]))
        payload = b"slow done"
    elif path == "/block":  # blocks the event loop: what --timeout must catch
        time.sleep(float(query.get("s", ["60"])[0]))
        payload = b"blocked"
    elif path == "/pid":
        payload = str(os.getpid()).encode()
    elif path == "/state":
        payload = scope["state"].get("greeting", "").encode()
    elif path == "/echo":
        payload = body
    elif path == "/scope":
        payload = json.dumps({
            "client": scope["client"], "server": scope["server"], "scheme": scope["scheme"],
            "path": scope["path"], "raw_path": scope["raw_path"].decode("latin-1"),
            "root_path": scope["root_path"], "http_version": scope["http_version"],
            "query_string": scope["query_string"].decode("latin-1"),
            "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
            "extensions": sorted(scope.get("extensions") or {}),
        }).encode()
    elif path == "/env":  # the names of the worker's environment variables
        payload = json.dumps(sorted(os.environ)).encode()
    elif path == "/error":
        raise RuntimeError("boom")
    else:
        payload = b"Hello, world!"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"x-worker-pid", str(os.getpid()).encode())]})
    await send({"type": "http.response.body", "body": payload})
