"""HTTP/1.1 for the ASGI workers: one cycle, two parser backends (h11, httptools)."""

from workers.http.server import HttpServer

__all__ = ["HttpServer"]
