"""WebSocket keepalive pings and the message size limit, against a real server."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time

import pytest
import websockets
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Ping, Request

from tests.integration.conftest import servers_on_each_ws_backend

pytestmark = pytest.mark.slow
arbiter_process = servers_on_each_ws_backend()  # every test on --ws websockets and wsproto


def handshake(server) -> tuple[socket.socket, WSConnection]:
    """A client that completes the handshake with wsproto and then never answers."""
    sock = socket.create_connection(server.address, timeout=10)
    client = WSConnection(ConnectionType.CLIENT)
    sock.sendall(client.send(Request(host="x", target="/ws")))
    while True:
        client.receive_data(sock.recv(65536))
        events = list(client.events())
        if any(isinstance(e, AcceptConnection) for e in events):
            return sock, client


def test_a_peer_that_never_answers_pings_is_closed_with_1011(arbiter_process) -> None:
    server = arbiter_process(["asgi_probe:app", "--ws-ping-interval", "0.3",
                              "--ws-ping-timeout", "0.5"]).wait_ready()
    sock, client = handshake(server)
    start = time.monotonic()
    seen_ping = False
    close_code = None
    with sock:
        while close_code is None:
            data = sock.recv(65536)  # we read, but never send the pong
            if not data:
                break
            client.receive_data(data)
            for event in client.events():
                seen_ping = seen_ping or isinstance(event, Ping)
                if isinstance(event, CloseConnection):
                    close_code = event.code
    elapsed = time.monotonic() - start
    assert seen_ping
    assert close_code == 1011
    assert 0.6 < elapsed < 5


def test_a_client_that_answers_pings_stays_connected(arbiter_process) -> None:
    server = arbiter_process(["asgi_probe:app", "--ws-ping-interval", "0.2",
                              "--ws-ping-timeout", "0.3"]).wait_ready()
    url = f"ws://{server.address[0]}:{server.address[1]}/ws"

    async def talk() -> None:
        async with websockets.connect(url, ping_interval=None) as ws:
            deadline = time.monotonic() + 1.5  # several ping rounds
            while time.monotonic() < deadline:
                await ws.send("x")
                assert await ws.recv() == "echo:x"
                await asyncio.sleep(0.1)  # deliberate (noqa: sleep): client pacing between pings
    asyncio.run(talk())


def test_a_message_over_ws_max_size_closes_with_1009(arbiter_process) -> None:
    server = arbiter_process(["asgi_probe:app", "--ws-max-size", "1000"]).wait_ready()
    url = f"ws://{server.address[0]}:{server.address[1]}/ws"

    async def talk() -> int | None:
        async with websockets.connect(url) as ws:
            await ws.send("a" * 500)
            assert await ws.recv() == "echo:" + "a" * 500
            await ws.send(base64.b64encode(os.urandom(3000)).decode())
            with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code if closed.value.rcvd else None
    assert asyncio.run(talk()) == 1009
