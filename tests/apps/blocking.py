"""Test app for --warn-blocking. Its sleeps are the behaviour under test.

``/block?s=N`` holds the event loop with a synchronous ``time.sleep(N)`` inside
``async def`` (the mistake the warning exists for); ``/await?s=N`` awaits
``asyncio.sleep(N)`` instead, which lets the loop run. Anything else: ``ok``.
The blocking call's line carries the marker ``# THE BLOCKING LINE`` so a test
can find its number. ``BLOCK_AT_IMPORT=N`` makes the import itself sleep N s
(boot, before the worker serves, is not watched).
"""

import asyncio
import os
import time
from urllib.parse import parse_qs

from app_lifespan import serve_lifespan

time.sleep(float(os.environ.get("BLOCK_AT_IMPORT", "0")))  # deliberate (noqa: sleep) (a slow import)


def _seconds(scope):
    return float(parse_qs(scope["query_string"].decode()).get("s", ["1"])[0])


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    if scope["path"] == "/block":
        time.sleep(_seconds(scope))  # THE BLOCKING LINE  # deliberate (noqa: sleep) (blocks on purpose)
    elif scope["path"] == "/await":
        await asyncio.sleep(_seconds(scope))  # deliberate (noqa: sleep) (awaits on purpose)
    body = b"ok"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
