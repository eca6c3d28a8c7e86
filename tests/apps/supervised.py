"""Test app for the supervision tests. Sleeps and exits here are app behaviour.

Printed: ``IMPORTED <pid>`` at import (shows where --preload imported it) and
``LIFESPAN SHUTDOWN <pid>`` when a worker's lifespan ends.

Lifespan startup reads two optional files named by environment variables, at
the moment each worker boots (so a test can change them between generations):

- ``BOOT_DELAY_FILE``: seconds to await before startup completes (printed as
  ``BOOT DELAY <pid> <s>`` when not 0);
- ``CRASH_FILE``: when it exists, the worker exits with code 7 in its first
  request, before answering it (every new worker then crash-loops until the
  file goes: it never completes a response).

Endpoints: ``/pid``; ``/slow?s=N`` (awaits N s); ``/grow?mib=N`` (allocates N
MiB and keeps them, touching every page so RSS grows); ``/exit?code=N`` (this
worker exits with N right after answering); ``/log`` (writes a line to the
error log, with the worker's pid); ``/gc`` (gc.get_freeze_count()); anything
else: ``ok``.
"""

import asyncio
import gc
import logging
import os
from urllib.parse import parse_qs

print(f"IMPORTED {os.getpid()}", flush=True)  # one write: workers share stdout

_HELD = []  # memory kept alive by /grow
_CRASH_IN_FIRST_REQUEST = []  # set at boot when CRASH_FILE exists


def _number(path, default):
    try:
        with open(path) as f:
            return float(f.read().strip() or default)
    except (OSError, ValueError):
        return default


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            delay_file = os.environ.get("BOOT_DELAY_FILE")
            if delay_file:
                delay = _number(delay_file, 0.0)
                if delay:
                    print(f"BOOT DELAY {os.getpid()} {delay:g}", flush=True)
                await asyncio.sleep(delay)
            crash_file = os.environ.get("CRASH_FILE")
            if crash_file and os.path.exists(crash_file):
                _CRASH_IN_FIRST_REQUEST.append(True)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            print(f"LIFESPAN SHUTDOWN {os.getpid()}", flush=True)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if _CRASH_IN_FIRST_REQUEST:
        os._exit(7)
    query = parse_qs(scope["query_string"].decode())
    while (await receive()).get("more_body"):
        pass
    path = scope["path"]
    if path == "/pid":
        payload = str(os.getpid()).encode()
    elif path == "/slow":
        await asyncio.sleep(float(query.get("s", ["1"])[0]))
        payload = b"slow done"
    elif path == "/grow":
        mib = int(query.get("mib", ["100"])[0])
        _HELD.append(bytearray(b"\x01") * (mib * 1024 * 1024))
        payload = str(os.getpid()).encode()
    elif path == "/exit":
        asyncio.get_running_loop().call_later(0.05, os._exit, int(query.get("code", ["7"])[0]))
        payload = str(os.getpid()).encode()
    elif path == "/log":
        logging.getLogger("arbiter.error").warning("app log line from worker %d", os.getpid())
        payload = str(os.getpid()).encode()
    elif path == "/gc":
        payload = str(gc.get_freeze_count()).encode()
    else:
        payload = b"ok"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(payload)).encode()),
                            (b"x-worker-pid", str(os.getpid()).encode())]})
    await send({"type": "http.response.body", "body": payload})
