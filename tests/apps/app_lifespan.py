"""The ASGI lifespan loop the test apps share: complete startup, then shutdown, and return.

An app imports it as a top-level module (``from app_lifespan import serve_lifespan``):
the server puts the app dir, tests/apps, first on sys.path. Apps that a test copies
on their own into another directory (basic, lifecycle, privileged, supervised) keep
their own loop, since the copy could not import this one.
"""


async def serve_lifespan(receive, send, on_startup=None):
    """Answer lifespan.startup (after ``on_startup()``, if given) and lifespan.shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if on_startup is not None:
                on_startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
