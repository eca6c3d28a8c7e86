"""httptools backend: bytes -> head / body / end calls on the connection."""

from __future__ import annotations

from typing import Any

import httptools

from workers.http.errors import RemoteProtocolError


class HttptoolsParser:
    def __init__(self, sink: Any, limits: Any) -> None:
        self.sink = sink
        self.limits = limits
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            offset = self.parser_upgrade_offset(data)
            self.sink.on_upgrade(data[offset:] if offset is not None else b"")
        except httptools.HttpParserInvalidMethodError:
            raise RemoteProtocolError(400, "Invalid HTTP method") from None
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, RemoteProtocolError):
                raise exc.__context__ from None
            message = str(exc)
            if message.startswith("Request has invalid `Transfer-Encoding`"):
                raise RemoteProtocolError(501, "Unsupported Transfer-Encoding") from None
            raise RemoteProtocolError(400, "Invalid HTTP request") from None

    @staticmethod
    def parser_upgrade_offset(data: bytes) -> int | None:
        end = data.find(b"\r\n\r\n")
        return None if end < 0 else end + 4

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        if self.limits.limit_request_line and len(self.url) > self.limits.limit_request_line:
            raise RemoteProtocolError(414, "Request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.limits.limit_request_field_size and \
                len(name) + len(value) > self.limits.limit_request_field_size:
            raise RemoteProtocolError(431, "Request header field too large")
        self.headers.append((name.lower(), value))
        if self.limits.limit_request_fields and \
                len(self.headers) > self.limits.limit_request_fields:
            raise RemoteProtocolError(431, "Too many request headers")

    def on_headers_complete(self) -> None:
        p = self.parser
        self.sink.on_head(p.get_method().decode("ascii"), self.url, p.get_http_version(),
                          self.headers, p.should_keep_alive())

    def on_body(self, body: bytes) -> None:
        self.sink.on_body(body)

    def on_message_complete(self) -> None:
        self.sink.on_end()
