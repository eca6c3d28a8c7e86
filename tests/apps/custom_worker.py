"""A worker class defined outside the arbiter packages: proves the plug-in contract."""

from workers.asgi import UvloopWorker


class HeaderWorker(UvloopWorker):
    def wrap_app(self, app):
        async def wrapped(scope, receive, send):
            async def send_with_header(message):
                if message["type"] == "http.response.start":
                    message = dict(message)
                    message["headers"] = [*message.get("headers", []),
                                          (b"x-custom-worker", f"slot-{self.slot}".encode())]
                await send(message)

            await app(scope, receive, send_with_header)

        return wrapped
