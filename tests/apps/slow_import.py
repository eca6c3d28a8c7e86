"""Test app whose import takes IMPORT_DELAY seconds (app behaviour: a module that
does slow work at import), for the master's --boot-timeout. A hanging lifespan
startup is reported by the worker itself (just before the boot timeout); a hanging
import is caught by the master."""

import os
import time

time.sleep(float(os.environ.get("IMPORT_DELAY", "0")))


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
