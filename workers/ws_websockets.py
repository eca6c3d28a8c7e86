"""websockets backend of the WebSocket cycle: the sans-I/O ``ServerProtocol`` of
the ``websockets`` library (C-accelerated unmasking), bytes -> on_* calls.

Only the protocol lives here, as in ``ws_wsproto``: the cycle owns the ASGI
side, the timers and the buffers. The library answers pings and the client's
close frame itself; a frame it refuses (bad opcode, bad UTF-8 in a text
message, over ``max_size``: it knows from the header, before buffering the
payload) fails the connection with the library's close frame, and the cycle
hears it as a close with that code.
"""

from __future__ import annotations

import codecs
import http
import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any

from websockets import http11
from websockets.datastructures import Headers
from websockets.exceptions import InvalidState, ProtocolError
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.frames import apply_mask  # C (websockets.speedups) where built
from websockets.server import ServerProtocol

# The request head was checked by the HTTP gate (--limit-request-*, up to 64 KiB
# lines, 1 MiB fields, 32768 fields) before it is handed over: websockets' own
# head limits (8 KiB lines, 128 fields, read at parse time) must not refuse what
# the gate let through. Its frame limit (max_size) stays per connection.
http11.MAX_LINE_LENGTH = max(http11.MAX_LINE_LENGTH, 2 * 1024 * 1024)
http11.MAX_NUM_HEADERS = max(http11.MAX_NUM_HEADERS, 32768)



class _WarningsOnly(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The library's errors go to our error log; its per-connection info lines
    ("connection open") and debug traces do not."""

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.WARNING and self.logger.isEnabledFor(level)


_log = _WarningsOnly(logging.getLogger("arbiter.error"), {})

TEXT, BINARY, CONT, PONG, CLOSE = Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PONG, Opcode.CLOSE
_utf8 = codecs.getincrementaldecoder("utf-8")


def _frame_head(head1: int, length: int) -> bytes:
    """A final, unmasked frame's header (RFC 6455 5.2): what a server sends."""
    if length < 126:
        return bytes((head1, length))
    if length < 65536:
        return struct.pack("!BBH", head1, 126, length)
    return struct.pack("!BBQ", head1, 127, length)


class WebsocketsBackend:
    name = "websockets"

    def __init__(self, sink: Any, write: Callable[[bytes], None], max_size: int,
                 per_message_deflate: bool) -> None:
        self.sink = sink
        self.write = write
        self.offered: list[str] = []
        self.conn = ServerProtocol(
            extensions=[ServerPerMessageDeflateFactory()] if per_message_deflate else None,
            select_subprotocol=lambda _, offered: self._note_offered(offered),
            max_size=max_size, logger=_log)
        self.max_size = max_size
        self.response: Response | None = None  # the 101, until the app accepts
        self.text: Any = None  # the UTF-8 decoder of a fragmented text message
        self.failed = False
        # The fast path (see _split): on while the connection is open without
        # extensions; owed/held track the frame boundaries the library must see.
        self.fast = False
        self.owed = 0  # bytes the library still needs to finish the frame it is in
        self.held = b""  # the start of a frame header, not yet given to anyone
        self.early = False  # bytes came after the request head, before our 101
        self.reject_head: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self.reject_parts: list[bytes] = []

    def _note_offered(self, subprotocols: Sequence[str]) -> None:
        self.offered = list(subprotocols)  # the app picks one later, in its accept
        return None

    def receive(self, data: bytes) -> None:
        if self.fast:
            self._split(data)
        else:
            self._library(data)

    def _split(self, data: bytes) -> None:
        """The common frame, whole in ``data``: final, text or binary, masked, no
        reserved bit, no fragmented message in progress, at most --ws-max-size.
        It changes nothing in the library's state, so it is unmasked (the
        library's C code) and handed on here, without the library's generator
        parser: about 40% of the CPU of a small echo. Every other frame, whole or
        in part, goes to the library, and the walk over frame headers below only
        keeps track of where the next frame starts."""
        if self.held:
            data, self.held = self.held + data, b""
        i, n = 0, len(data)
        if self.owed:
            i = min(self.owed, n)
            self.owed -= i
            self._library(data[:i])
        while i < n and self.fast:
            head1, head2 = data[i], data[i + 1] if i + 1 < n else -1
            length = head2 & 0x7F
            start = i + (6 if head2 & 0x80 else 2)  # the payload's: 2 bytes of header, a mask
            if length == 126:
                start += 2
            elif length == 127:
                start += 8
            if head2 < 0 or start > n:
                self.held = data[i:]  # a header cut short: the rest comes next
                return
            if length >= 126:
                length = int.from_bytes(data[i + 2:i + (4 if length == 126 else 10)], "big")
            end = start + length
            if (head1 == 0x81 or head1 == 0x82) and head2 & 0x80 and end <= n \
                    and length <= self.max_size and self.text is None \
                    and self.conn.current_size is None:
                payload = apply_mask(data[start:end], data[start - 4:start])
                if head1 == 0x82:
                    self.sink.on_message(payload, True)
                else:
                    try:
                        text = payload.decode()
                    except UnicodeDecodeError:
                        self._fail(1007, "invalid UTF-8 in a text message")
                        return
                    self.sink.on_message(text, True)
            else:
                self.owed = max(0, end - n)
                self._library(data[i:end])
            i = end
        if i < n:  # the library failed the connection or it closed: it takes the rest
            self._library(data[i:])

    def _library(self, data: bytes) -> None:
        conn = self.conn
        if conn.state is State.CONNECTING:
            # frames a client sent before our 101 (it may not): the library alone
            # reads that connection, the fast path cannot know where frames start
            end = data.find(b"\r\n\r\n")
            self.early = self.early or self.response is not None or end + 4 != len(data)
        conn.receive_data(data)
        if conn.state is State.CONNECTING:
            self._receive_handshake()
            return
        events = conn.events_received()
        if conn.writes:  # a pong, the answer to a close, a failure's close frame
            self._flush()
        sink = self.sink
        for frame in events:
            opcode = frame.opcode
            if opcode is TEXT:
                if frame.fin:
                    try:
                        text = frame.data.decode()
                    except UnicodeDecodeError:
                        self._fail(1007, "invalid UTF-8 in a text message")
                        return
                    sink.on_message(text, True)
                else:
                    self.text = _utf8()
                    if not self._text_part(frame.data, False):
                        return
            elif opcode is BINARY:
                sink.on_message(bytes(frame.data), frame.fin)
            elif opcode is CONT:
                if self.text is not None:
                    if not self._text_part(frame.data, frame.fin):
                        return
                else:
                    sink.on_message(bytes(frame.data), frame.fin)
            elif opcode is PONG:
                sink.on_pong()
            elif opcode is CLOSE:
                close = conn.close_rcvd
                sink.on_close_frame(close.code if close else 1005, close.reason if close else "")
                return
        if conn.state is not State.OPEN:
            self.fast = False
        if conn.parser_exc is not None and not self.failed:
            self.failed = True  # the library sent its close frame (1002, 1007, 1009)
            close = conn.close_sent
            sink.on_close_frame(close.code if close else 1006, close.reason if close else "")

    def _text_part(self, data: bytes, fin: bool) -> bool:
        try:
            text = self.text.decode(data, fin)
        except UnicodeDecodeError:
            self._fail(1007, "invalid UTF-8 in a text message")
            return False
        if fin:
            self.text = None
        self.sink.on_message(text, fin)
        return True

    def _fail(self, code: int, reason: str) -> None:
        self.failed = True
        self.fast = False
        self.conn.fail(code, reason)
        self._flush()
        self.sink.on_close_frame(code, reason)

    def _receive_handshake(self) -> None:
        conn = self.conn
        for event in conn.events_received():
            if isinstance(event, Request):
                response = conn.accept(event)
                if response.status_code != 101:
                    self.sink.on_bad_handshake()
                    return
                self.response = response
                self.sink.on_request(self.offered)
                return
        if conn.handshake_exc is not None:  # not a request it could read
            self.sink.on_bad_handshake()

    def _flush(self) -> None:
        writes = self.conn.data_to_send()
        data = writes[0] if len(writes) == 1 else b"".join(writes)  # b"": EOF, the cycle's
        if data:
            self.write(data)

    # ---------------------------------------------------------- what the cycle sends

    def accept(self, subprotocol: str | None, headers: list[tuple[bytes, bytes]]) -> None:
        response = self.response
        assert response is not None
        self.conn.data_to_send()  # a pong to a frame sent before our 101 (a client may not)
        for name, value in headers:
            response.headers[name.decode("latin-1")] = value.decode("latin-1")
        if subprotocol is not None:
            response.headers["Sec-WebSocket-Protocol"] = subprotocol
        self.conn.send_response(response)
        self._flush()
        # permessage-deflate negotiated: every frame is the library's
        self.fast = not self.conn.extensions and not self.early

    def reject(self, status: int, headers: list[tuple[bytes, bytes]], has_body: bool) -> None:
        self.reject_head = (status, headers)
        if not has_body:
            self.reject_body(b"", True)

    def reject_body(self, body: bytes, finished: bool) -> None:
        """The library writes a response whole: the body is gathered until its end."""
        if self.reject_head is None:
            return
        self.reject_parts.append(body)
        if not finished:
            return
        status, raw = self.reject_head
        self.reject_head = None
        body = b"".join(self.reject_parts)
        headers = Headers([(n.decode("latin-1"), v.decode("latin-1")) for n, v in raw])
        if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
            headers["Content-Length"] = str(len(body))
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        self.conn.send_response(Response(status, phrase, headers, body))
        self._flush()

    def send_text(self, text: str) -> None:
        data = text.encode()
        if self.fast:  # open, no extension: a server frame is a header and the payload
            self.write(_frame_head(0x81, len(data)) + data)
            return
        self.conn.send_text(data)
        self._flush()

    def send_bytes(self, data: bytes) -> None:
        if self.fast:
            self.write(_frame_head(0x82, len(data)) + data)
            return
        self.conn.send_binary(data)
        self._flush()

    def close(self, code: int, reason: str) -> None:
        self.fast = False
        try:
            self.conn.send_close(code, reason)
        except InvalidState:
            return  # a close frame went already, one way or the other
        except ProtocolError:  # a code no close frame may carry (1005, 1006...): none at all
            self.conn.send_close()
        self._flush()

    def ping(self, payload: bytes) -> None:
        try:
            self.conn.send_ping(payload)
        except InvalidState:
            return
        self._flush()
