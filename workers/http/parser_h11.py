"""h11 backend: bytes -> head / body / end calls on the connection.

h11 is used as a parser only; responses are written by the shared cycle. A
fresh h11 state machine per request, fed the bytes the previous one left over.
"""

from __future__ import annotations

import re
from typing import Any

import h11

from workers.http.errors import RemoteProtocolError


class H11Parser:
    def __init__(self, sink: Any, limits: Any) -> None:
        self.sink = sink
        self.limits = limits
        self.max_head = (limits.limit_request_line or 65536) + \
            (limits.limit_request_fields or 100) * ((limits.limit_request_field_size or 8190) + 4)
        self.conn = self._new()
        self.in_body = False

    def _new(self) -> h11.Connection:
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)

    def feed(self, data: bytes) -> None:
        self._recent = data
        if not self.in_body:
            self._head = (getattr(self, "_head", b"") + data)[-self.max_head - 4:]
            end = self._head.find(b"\r\n\r\n")
            head = self._head if end < 0 else self._head[:end]
            if b"\r\n " in head or b"\r\n\t" in head:
                raise RemoteProtocolError(400, "Obsolete line folding in headers")
        self.conn.receive_data(data)
        self._pump()

    def _pump(self) -> None:
        while True:
            if not self.in_body:
                self._check_head_limits()
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                text = str(exc).lower()
                status = getattr(exc, "error_status_hint", 400)
                if "transfer-encoding" in text:
                    status = self._transfer_encoding_status()
                if status == 431 or "exceeded" in text:
                    status = 431
                raise RemoteProtocolError(status, "Invalid HTTP request") from None
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._on_request(event)
            elif isinstance(event, h11.Data):
                self.sink.on_body(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                self.in_body = False
                leftover = self.conn.trailing_data[0]
                self.conn = self._new()
                self.sink.on_end()
                if getattr(self.sink, "upgrade_head", None) is not None:
                    self.sink.on_upgrade(bytes(leftover))
                if leftover:
                    self.conn.receive_data(leftover)
                else:
                    return
            elif isinstance(event, h11.ConnectionClosed):
                return

    def _transfer_encoding_status(self) -> int:
        """501 for codings we do not support; 400 when chunked is not the final one."""
        match = re.search(rb"(?im)^transfer-encoding:([^\r\n]*)", getattr(self, "_recent", b""))
        tokens = [t.strip().lower() for t in match.group(1).split(b",")] if match else []
        return 400 if b"chunked" in tokens[:-1] else 501

    def _check_head_limits(self) -> None:
        buffered = bytes(self.conn.trailing_data[0])
        end = buffered.find(b"\r\n")
        line_len = end if end >= 0 else len(buffered)
        if self.limits.limit_request_line and line_len > self.limits.limit_request_line + 16:
            raise RemoteProtocolError(414, "Request line too long")

    def _on_request(self, event: h11.Request) -> None:
        target = bytes(event.target)
        if self.limits.limit_request_line and len(target) > self.limits.limit_request_line:
            raise RemoteProtocolError(414, "Request line too long")
        headers = [(bytes(n), bytes(v)) for n, v in event.headers]
        if self.limits.limit_request_fields and len(headers) > self.limits.limit_request_fields:
            raise RemoteProtocolError(431, "Too many request headers")
        size = self.limits.limit_request_field_size
        if size and any(len(n) + len(v) > size for n, v in headers):
            raise RemoteProtocolError(431, "Request header field too large")
        version = event.http_version.decode()
        keep_alive = version == "1.1"
        for name, value in headers:
            if name == b"connection":
                tokens = {t.strip() for t in value.lower().split(b",")}
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
        self.in_body = True
        self._head = b""
        self.sink.on_head(event.method.decode("ascii"), target, version, headers, keep_alive)
