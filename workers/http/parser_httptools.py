"""httptools backend: bytes -> head / body / end calls on the connection.

Every byte passes the shared strict gate (``framing.RequestGate``) first, and
the head handed on is the gate's (llhttp keeps trailing blanks in values and
reports trailer fields through the same callback as headers), so both
backends report the same request.
"""

from __future__ import annotations

from typing import Any

import httptools

from workers.http.errors import RemoteProtocolError, backend_refused
from workers.http.framing import GatedParser


class HttptoolsParser(GatedParser):
    def __init__(self, sink: Any, limits: Any) -> None:
        super().__init__(sink, limits)
        self.parser = httptools.HttpRequestParser(self)

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # the gate takes the WebSocket upgrade itself and drops any other
            # from the head: llhttp is never meant to see one (a backstop)
            raise backend_refused() from None
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, RemoteProtocolError):
                raise exc.__context__ from None  # raised by our sink inside a callback
            invalid_coding = str(exc).startswith("Request has invalid `Transfer-Encoding`")
            raise backend_refused(501 if invalid_coding else 400) from None

    def on_headers_complete(self) -> None:
        head = self.gate.heads.popleft()
        self.sink.on_head(head)

    def on_body(self, body: bytes) -> None:
        self.sink.on_body(body)

    def on_message_complete(self) -> None:
        self.sink.on_end()
