"""h11 backend: bytes -> head / body / end calls on the connection.

h11 is used as a parser only; responses are written by the shared cycle. A
fresh h11 state machine per request, fed the bytes the previous one left over.
Every byte passes the shared strict gate (``framing.RequestGate``) first, and
the head handed on is the gate's, so both backends report the same request.
"""

from __future__ import annotations

from typing import Any

import h11

from workers.http.errors import backend_refused
from workers.http.framing import GatedParser


class H11Parser(GatedParser):
    def __init__(self, sink: Any, limits: Any) -> None:
        super().__init__(sink, limits)
        self.max_head = self.gate.max_head + 1024
        self.conn = self._new()

    def _new(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)

    def _feed(self, data: bytes) -> None:
        self.conn.receive_data(data)
        self._pump()

    def _pump(self) -> None:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise backend_refused(exc.error_status_hint) from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._on_request()
            elif isinstance(event, h11.Data):
                self.sink.on_body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                leftover = self.conn.trailing_data[0]
                self.conn = self._new()
                self.sink.on_end()
                if leftover:
                    self.conn.receive_data(leftover)
                else:
                    return
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _on_request(self) -> None:
        self.sink.on_head(self.gate.heads.popleft())
