"""An HttpConnection on a recording fake transport, for in-process tests of the HTTP
stack on both loops (no sockets)."""

from __future__ import annotations

import asyncio
from typing import Any

import uvloop

from arbiter.config import resolve
from workers.http.connection import HttpConnection
from workers.http.server import HttpServer

RUNNERS = {"asyncio": asyncio.run, "uvloop": uvloop.run}
REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class Transport:
    """Records what reaches the transport and in how many calls."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.calls = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "a write after close"
        self.out += data
        self.calls += 1

    def writelines(self, data: list[bytes]) -> None:
        assert not self.closed, "a write after close"
        self.out += b"".join(data)
        self.calls += 1

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name)

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def get_write_buffer_size(self) -> int: return 0

    def close(self) -> None:
        self.closed = True


def connected(app: Any, loop: asyncio.AbstractEventLoop,
              ) -> tuple[HttpServer, HttpConnection, Transport]:
    """A server for ``app`` and one connection made on a fresh Transport."""
    config = resolve({"app": "x:app", "access_log": False}, {}).http()
    server = HttpServer(app, config, lifespan_state={}, loop=loop)
    conn = HttpConnection(server)
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return server, conn, transport
