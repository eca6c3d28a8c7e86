"""HTTP/1.1 for the ASGI workers: one cycle, two parser backends (h11, httptools).

HttpServer is loaded on first use, so that ``workers.websocket`` can import
``workers.http.errors`` without importing the server (which imports it back).
"""

__all__ = ["HttpServer"]


def __getattr__(name: str) -> object:
    if name == "HttpServer":
        from workers.http.server import HttpServer
        return HttpServer
    raise AttributeError(name)
