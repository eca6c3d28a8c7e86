"""The websocket protocol without sockets: a wsproto client talks to it in memory."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection, BytesMessage, CloseConnection, RejectConnection, Request, TextMessage,
)

from workers.http.framing import is_websocket_upgrade as is_upgrade
from workers.websocket import ClientDisconnected, hand_over

HTTP_SCOPE = {"type": "http", "http_version": "1.1", "scheme": "http", "path": "/ws",
              "raw_path": b"/ws", "query_string": b"", "root_path": "", "headers": [],
              "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {},
              "method": "GET"}


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.protocol: Any = None
        self.paused = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def client_events(client: WSConnection, transport: FakeTransport) -> list[Any]:
    client.receive_data(bytes(transport.written))
    transport.written.clear()
    return list(client.events())


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)  # deliberate (noqa: sleep): one loop iteration, not a wait


def test_is_upgrade() -> None:
    assert is_upgrade([(b"connection", b"keep-alive, Upgrade"), (b"upgrade", b"WebSocket")])
    assert not is_upgrade([(b"upgrade", b"websocket")])
    assert not is_upgrade([(b"connection", b"upgrade"), (b"upgrade", b"h2c")])


def test_echo_roundtrip_and_close() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket" and scope["scheme"] == "ws"
        assert scope["subprotocols"] == ["chat"]
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept", "subprotocol": "chat"})
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "websocket.disconnect":
                return
            if "text" in message and message["text"] is not None:
                await send({"type": "websocket.send", "text": message["text"].upper()})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})

    async def main() -> None:
        client = WSConnection(ConnectionType.CLIENT)
        transport = FakeTransport()
        hand_over(transport, app, dict(HTTP_SCOPE),
                  client.send(Request(host="x", target="/ws", subprotocols=["chat"])))
        await settle()
        events = client_events(client, transport)
        assert isinstance(events[0], AcceptConnection) and events[0].subprotocol == "chat"
        transport.protocol.data_received(client.send(TextMessage(data="hi")))
        transport.protocol.data_received(client.send(BytesMessage(data=b"abc")))
        await settle()
        events = client_events(client, transport)
        assert [e.data for e in events] == ["HI", b"cba"]
        transport.protocol.data_received(client.send(CloseConnection(code=1000)))
        await settle()
        assert seen[-1] == {"type": "websocket.disconnect", "code": 1000, "reason": ""}
        assert transport.closing

    asyncio.run(main())


def test_close_before_accept_is_403_and_send_after_close_raises() -> None:
    errors: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close"})
        try:
            await send({"type": "websocket.send", "text": "late"})
        except ClientDisconnected as exc:
            errors.append(exc)

    async def main() -> None:
        client = WSConnection(ConnectionType.CLIENT)
        transport = FakeTransport()
        hand_over(transport, app, dict(HTTP_SCOPE), client.send(Request(host="x", target="/")))
        await settle()
        events = client_events(client, transport)
        assert isinstance(events[0], RejectConnection) and events[0].status_code == 403

    asyncio.run(main())
    assert errors and isinstance(errors[0], OSError)


def test_app_exception_after_accept_closes_1011() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise ValueError("app bug")

    async def main() -> None:
        client = WSConnection(ConnectionType.CLIENT)
        transport = FakeTransport()
        hand_over(transport, app, dict(HTTP_SCOPE), client.send(Request(host="x", target="/")))
        await settle()
        events = client_events(client, transport)
        assert isinstance(events[0], AcceptConnection)
        assert isinstance(events[1], CloseConnection) and events[1].code == 1011

    asyncio.run(main())


def test_reading_pauses_when_the_app_does_not_receive() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await asyncio.Event().wait()  # never reads

    async def main() -> None:
        client = WSConnection(ConnectionType.CLIENT)
        transport = FakeTransport()
        hand_over(transport, app, dict(HTTP_SCOPE), client.send(Request(host="x", target="/")))
        await settle()
        client_events(client, transport)
        for i in range(40):
            transport.protocol.data_received(client.send(TextMessage(data=str(i))))
        assert transport.paused
        transport.protocol.task.cancel()

    asyncio.run(main())


@pytest.mark.parametrize("junk", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"])
def test_bad_upgrade_request_is_400(junk: bytes) -> None:
    called = []  # (an exception raised in the app would only be logged by the server)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.append(scope)

    async def main() -> None:
        transport = FakeTransport()
        hand_over(transport, app, dict(HTTP_SCOPE), junk)
        await settle()
        assert transport.written.startswith(b"HTTP/1.1 400 ")
        assert transport.closing

    asyncio.run(main())
    assert called == [], "the app was run for a refused handshake"
