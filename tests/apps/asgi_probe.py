"""Test app that reports what the server gave it: scope, disconnects, websockets."""

import asyncio
import json

from app_lifespan import serve_lifespan

EVENTS: dict[str, str] = {}


def _scope_json(scope) -> bytes:
    return json.dumps({
        "type": scope["type"], "http_version": scope["http_version"],
        "method": scope.get("method"), "scheme": scope["scheme"], "path": scope["path"],
        "raw_path": scope["raw_path"].decode("latin-1"), "root_path": scope["root_path"],
        "query_string": scope["query_string"].decode("latin-1"),
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in scope["headers"]],
        "client": scope["client"], "server": scope["server"],
        "asgi": scope["asgi"], "state": scope.get("state"),
        "extensions": sorted(scope.get("extensions") or {}),
    }).encode()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send, on_startup=lambda: scope["state"].update(ready="yes"))
        return
    if scope["type"] == "websocket":
        await websocket(scope, receive, send)
        return
    path = scope["path"]
    if path.endswith("/wait-disconnect"):
        # answer nothing; wait for the client to go, then try to send anyway
        message = await receive()
        while message["type"] != "http.disconnect":
            message = await receive()
        EVENTS["disconnect"] = "seen"
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"too late"})
            EVENTS["late_send"] = "no error"
        except OSError as exc:
            EVENTS["late_send"] = type(exc).__name__
        return
    if path.endswith("/events"):
        body = json.dumps(EVENTS).encode()
    else:
        body = _scope_json(scope)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def websocket(scope, receive, send):
    message = await receive()
    assert message["type"] == "websocket.connect"
    if scope["path"] == "/ws/deny":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            reply = {"type": "websocket.send", "text": "echo:" + message["text"]}
        else:
            reply = {"type": "websocket.send", "bytes": message["bytes"][::-1]}
        await send(reply)
        await asyncio.sleep(0)
