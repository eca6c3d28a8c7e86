"""Lifespan startup fails: workers exit 3, the first generation stops the master with 3."""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "database unreachable"})
        return
