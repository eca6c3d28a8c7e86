"""Test app for --user/--group: reports the worker's ids and tries a write.

It imports only modules the worker already holds (json, os), because the worker
has given up root and may not read the Python installation (CI's is under /root).
``/ids``: uid, euid, gid, egid, supplementary groups and umask. ``/write?path=P``:
appends to P and answers ``written`` or the error's name.
"""

import json
import os


def _ids() -> bytes:
    umask = os.umask(0)
    os.umask(umask)
    return json.dumps({"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(),
                       "egid": os.getegid(), "groups": sorted(os.getgroups()),
                       "umask": umask, "pid": os.getpid()}).encode()


def _write(path: str) -> bytes:
    try:
        with open(path, "a") as f:
            f.write("written by the app\n")
    except OSError as exc:
        return type(exc).__name__.encode()
    return b"written"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    while (await receive()).get("more_body"):
        pass
    query = scope["query_string"].decode()
    if scope["path"] == "/write":
        body = _write(query.partition("path=")[2])
    else:
        body = _ids()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
