"""The file sender on real loopback sockets and both loops, in process: what the
transport still holds goes out before the file's first byte; a client that goes
away mid-file is reported as ClientDisconnected and the connection is closed."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path

import pytest
import uvloop

from arbiter.config import resolve
from workers.http.connection import HttpConnection
from workers.http.errors import ClientDisconnected
from workers.http.server import HttpServer

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
RUNNERS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


async def _no_app(scope, receive, send):  # pragma: no cover - the test drives the connection
    raise AssertionError("not called")


async def _connected(rcvbuf: int) -> tuple[HttpConnection, socket.socket, asyncio.Server]:
    loop = asyncio.get_running_loop()
    server = HttpServer(_no_app, resolve({"app": "x:app"}, {}).http(), lifespan_state={},
                        loop=loop)
    made: asyncio.Future[HttpConnection] = loop.create_future()

    def protocol() -> HttpConnection:
        conn = HttpConnection(server)
        made.set_result(conn)
        return conn

    listener = await loop.create_server(protocol, "127.0.0.1", 0)
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    client.setblocking(False)
    await loop.sock_connect(client, listener.sockets[0].getsockname())
    return await asyncio.wait_for(made, 10), client, listener


def _read(client: socket.socket, want: int, out: list[bytes]) -> None:
    client.setblocking(True)
    client.settimeout(30)
    data = bytearray()
    while len(data) < want:
        chunk = client.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    out.append(bytes(data))


@pytest.mark.parametrize("round_", range(4))  # which callback the loop runs first varies
@pytest.mark.parametrize("loop", list(RUNNERS))
def test_queued_bytes_go_before_the_file(loop: str, round_: int, tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(os.urandom(3 * MIB))
    queued = b"q" * (4 * MIB)

    async def scenario() -> tuple[int, bytes]:
        conn, client, listener = await _connected(rcvbuf=64 * 1024)
        conn.write(queued)  # far more than the socket takes: the transport keeps the rest
        held = conn.transport.get_write_buffer_size()
        out: list[bytes] = []
        reader = threading.Thread(target=_read, args=(client, len(queued) + 3 * MIB, out))
        reader.start()
        with open(path, "rb") as f:
            await conn.send_file(f.fileno(), 0, 3 * MIB)
        await asyncio.get_running_loop().run_in_executor(None, reader.join, 30)
        conn.transport.close()
        client.close()
        listener.close()
        return held, out[0]

    held, received = RUNNERS[loop](scenario())
    assert held > 0  # the case under test: the file waited for these
    assert received[:len(queued)] == queued
    assert received[len(queued):] == path.read_bytes()


@pytest.mark.parametrize("loop", list(RUNNERS))
def test_a_client_gone_mid_file_is_client_disconnected(loop: str, tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(os.urandom(16 * MIB))

    async def scenario() -> bool:
        conn, client, listener = await _connected(rcvbuf=64 * 1024)
        loop_ = asyncio.get_running_loop()
        # the client reads nothing, then resets the connection; deliberate
        # (noqa: sleep): the moment is client behaviour, any moment mid-file will do
        loop_.call_later(0.2, lambda: (client.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0"), client.close()))
        with open(path, "rb") as f:
            with pytest.raises(ClientDisconnected):
                await asyncio.wait_for(conn.send_file(f.fileno(), 0, 16 * MIB), 30)
        listener.close()
        return conn.closed

    assert RUNNERS[loop](scenario())
