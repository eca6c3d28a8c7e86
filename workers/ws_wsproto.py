"""wsproto backend of the WebSocket cycle: bytes -> on_* calls, frames -> bytes.

Only the protocol lives here (what ``workers.websocket`` calls a backend); the
ASGI cycle, the limits, the close handshake's timing and the buffers are the
cycle's. Control frames are answered here, before the cycle hears of them:
a ping gets its pong, the client's close frame gets ours (RFC 6455 5.5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection
from wsproto.events import (
    AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, RejectConnection, RejectData,
    Request, TextMessage,
)
from wsproto.extensions import PerMessageDeflate
from wsproto.utilities import LocalProtocolError, RemoteProtocolError


class WsprotoBackend:
    name = "wsproto"

    def __init__(self, sink: Any, write: Callable[[bytes], None], max_size: int,
                 per_message_deflate: bool) -> None:
        self.sink = sink
        self.write = write
        self.per_message_deflate = per_message_deflate
        self.wsconn = WSConnection(ConnectionType.SERVER)  # the handshake, then the frames
        self.conn: Connection | None = None  # its open connection, once accepted: the fast path

    def receive(self, data: bytes) -> None:
        conn = self.conn
        if conn is None:
            self._receive_handshake(data)
            return
        try:
            conn.receive_data(data)
        except LocalProtocolError:
            return  # closed already: nothing more is read
        sink = self.sink
        for event in conn.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                sink.on_message(event.data, event.message_finished)
            elif kind is Ping:
                self._send(event.response())
            elif kind is Pong:
                sink.on_pong()
            elif kind is CloseConnection:
                self._send(event.response())  # ours, unless we sent it first
                sink.on_close_frame(event.code, event.reason or "")

    def _receive_handshake(self, data: bytes) -> None:
        try:
            self.wsconn.receive_data(data)
        except RemoteProtocolError:
            self.sink.on_bad_handshake()
            return
        for event in self.wsconn.events():
            if isinstance(event, Request):
                self.sink.on_request(list(event.subprotocols))

    def _send(self, event: Any) -> None:
        try:
            self.write(self.wsconn.send(event))
        except LocalProtocolError:
            pass  # not in this state (a close after ours, a pong after a close)

    # ---------------------------------------------------------- what the cycle sends

    def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        extensions = [PerMessageDeflate()] if self.per_message_deflate else []
        self.write(self.wsconn.send(AcceptConnection(
            subprotocol=subprotocol, extensions=extensions, extra_headers=headers)))
        self.conn = self.wsconn.connection

    def reject(self, status: int, headers: list[tuple[bytes, bytes]], has_body: bool) -> None:
        self._send(RejectConnection(status_code=status, headers=headers, has_body=has_body))

    def reject_body(self, body: bytes, finished: bool) -> None:
        self._send(RejectData(data=body, body_finished=finished))

    def send_text(self, text: str) -> None:
        assert self.conn is not None
        self.write(self.conn.send(TextMessage(data=text)))

    def send_bytes(self, data: bytes) -> None:
        assert self.conn is not None
        self.write(self.conn.send(BytesMessage(data=data)))

    def close(self, code: int, reason: str) -> None:
        self._send(CloseConnection(code=code, reason=reason))

    def ping(self, payload: bytes) -> None:
        self._send(Ping(payload=payload))
