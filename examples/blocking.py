"""DEMONSTRATION ONLY: an app that blocks its event loop, to show --warn-blocking.

    arbiter examples.blocking:app        # then: curl http://127.0.0.1:8000/block

``/block`` calls ``time.sleep(1)`` inside ``async def``: a synchronous call that
holds the worker's event loop, so no other request on that worker is served
meanwhile. It is deliberate: the worker logs one WARNING naming this file and
line. Real code awaits (``await asyncio.sleep(1)``) or moves blocking work off
the loop (``await asyncio.to_thread(...)``). Anything else answers at once.
"""

import time


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/block":
        time.sleep(1)  # deliberate: a demonstration of the blocked-loop warning
        body = b"blocked the event loop for 1 s (see the error log)\n"
    else:
        body = b"Hello! Try /block and watch the error log.\n"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
