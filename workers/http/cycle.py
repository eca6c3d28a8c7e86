"""The one ASGI http cycle: scope, receive(), send() and response framing.

Both parser backends feed it through plain method calls (``feed_body``,
``feed_end``, ``client_gone``); it writes response bytes through the small
``CycleIO`` interface the connection provides. No asyncio or socket imports:
waiting is done on awaitables handed in by the connection, and file bytes
are moved by the connection's ``send_file`` (zero-copy where it can).
Besides the core messages it implements the ASGI extensions pathsend,
zerocopysend, trailers and early_hint (``EXTENSIONS_HTTP11``).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from workers.http.errors import ClientDisconnected

log = logging.getLogger("arbiter.error")

STATUS_PHRASES = {
    100: b"Continue", 101: b"Switching Protocols", 200: b"OK", 201: b"Created",
    202: b"Accepted", 204: b"No Content", 206: b"Partial Content", 301: b"Moved Permanently",
    302: b"Found", 303: b"See Other", 304: b"Not Modified", 307: b"Temporary Redirect",
    308: b"Permanent Redirect", 400: b"Bad Request", 401: b"Unauthorized", 403: b"Forbidden",
    404: b"Not Found", 405: b"Method Not Allowed", 408: b"Request Timeout", 409: b"Conflict",
    413: b"Content Too Large", 414: b"URI Too Long", 415: b"Unsupported Media Type",
    422: b"Unprocessable Content", 429: b"Too Many Requests",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 502: b"Bad Gateway", 503: b"Service Unavailable",
    504: b"Gateway Timeout",
}
_STATUS_LINES = {code: b"HTTP/1.1 %d %s\r\n" % (code, phrase)
                 for code, phrase in STATUS_PHRASES.items()}
BODY_HIGH_WATER = 256 * 1024
_COPY_LIMIT = 16 * 1024


# The ASGI extensions the cycle implements (asgiref docs/extensions.rst). To an
# HTTP/1.0 client there is no chunked framing (so no trailers) and no interim
# 1xx response (so no early hints): those two are advertised on HTTP/1.1 only.
EXTENSIONS_HTTP11 = ("http.response.pathsend", "http.response.zerocopysend",
                     "http.response.trailers", "http.response.early_hint")
EXTENSIONS_HTTP10 = ("http.response.pathsend", "http.response.zerocopysend")
# The highest version of the ASGI HTTP+WebSocket spec whose every requirement is
# met: 2.1 accept headers, 2.2 a None port, 2.3 the close reason, 2.4 send() on a
# closed connection raises an OSError, 2.5 the disconnect reason.
SPEC_VERSION = "2.5"


def scope_extensions(tls: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """``scope["extensions"]`` for HTTP/1.1 and for HTTP/1.0 requests. Built once
    per server (once per connection under TLS) and shared by every request."""
    base = {} if tls is None else {"tls": tls}
    return ({**base, **{name: {} for name in EXTENSIONS_HTTP11}},
            {**base, **{name: {} for name in EXTENSIONS_HTTP10}})


class CycleIO(Protocol):
    def write(self, data: bytes) -> None: ...
    def queue(self, data: bytes) -> None: ...  # written with the next write, flush or turn
    def drain(self) -> Awaitable[None] | None: ...
    def send_file(self, fd: int, offset: int, count: int) -> Awaitable[None]: ...
    def wait_body(self) -> Awaitable[None]: ...
    def resume_reading(self) -> None: ...
    def pause_reading(self) -> None: ...
    def cycle_done(self, cycle: HttpCycle) -> None: ...


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else b"HTTP/1.1 %d \r\n" % status


def simple_response(status: int, message: str, default_headers: bytes, *, close: bool = True,
                    with_body: bool = True) -> bytes:
    """A server-made plain-text response; ``with_body=False`` for HEAD (the
    Content-Length still says what a GET would get)."""
    body = message.encode() + b"\n"
    return (status_line(status) + default_headers
            + b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            % len(body) + (b"connection: close\r\n\r\n" if close else b"\r\n")
            + (body if with_body else b""))


def field_line(name: bytes, value: bytes) -> bytes:
    """One response field (header, trailer or early-hint Link) as a wire line,
    refused if it could end the line or the field early: the one check against
    header injection."""
    if b"\r" in value or b"\n" in value or b"\x00" in value or b"\r" in name \
            or b"\n" in name or b"\x00" in name or b":" in name or not name:
        raise ValueError(f"invalid response field {name!r}: empty, or CR, LF, "
                         "NUL or a colon in it")
    return name + b": " + value + b"\r\n"


_BLOCK_CACHE: dict[Any, tuple[bytes, int | None, bool]] = {}
_BLOCK_CACHE_SIZE = 512


def header_block(headers: Any) -> tuple[bytes, int | None, bool]:
    """The app's response headers as validated wire bytes (Content-Length
    normalised, Transfer-Encoding and Connection: close dropped since we frame
    the message), with the Content-Length and whether the app asked to close.

    Apps send the same few header lists over and over, so validated blocks are
    cached by value (measured: _start went from ~5 us to ~1 us on hello).
    """
    try:
        key = tuple(headers)
        cached = _BLOCK_CACHE.get(key)
    except TypeError:  # unhashable (bytearray, lists): no caching
        key, cached = None, None
    if cached is not None:
        return cached
    lines = []
    length = None
    close = False
    for name, value in headers:
        name, value = bytes(name), bytes(value)
        lower = name.lower()
        if lower == b"content-length":
            declared = int(value)
            if declared < 0 or (length is not None and declared != length):
                raise ValueError(f"invalid response Content-Length {value!r}")
            if length is not None:
                continue  # the same value twice: send it once
            length = declared
            lines.append(b"content-length: %d\r\n" % length)
        elif lower == b"transfer-encoding":
            pass  # we frame the body ourselves
        elif lower == b"connection" and value.lower() == b"close":
            close = True
        else:
            lines.append(field_line(name, value))
    result = (b"".join(lines), length, close)
    if key is not None:
        if len(_BLOCK_CACHE) >= _BLOCK_CACHE_SIZE:
            _BLOCK_CACHE.clear()
        _BLOCK_CACHE[key] = result
    return result


class HttpCycle:
    """One request and its response."""

    __slots__ = ("scope", "io", "keep_alive", "expect_continue", "default_headers", "body",
                 "body_done", "disconnected", "response_started", "response_complete",
                 "chunked", "expected_length", "sent_length", "head_only", "status", "started",
                 "close_after", "continue_sent", "head_bytes", "body_delivered", "trailers")

    def __init__(self, scope: dict[str, Any], io: CycleIO, keep_alive: bool,
                 expect_continue: bool, default_headers: Callable[[], bytes]) -> None:
        self.scope = scope
        self.io = io
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.continue_sent = False
        self.default_headers = default_headers
        self.body: list[bytes] = []
        self.body_done = False
        self.body_delivered = False
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.chunked = False
        self.expected_length: int | None = None
        self.sent_length = 0
        self.head_only = scope["method"] == "HEAD"
        self.status = 0
        self.started = time.monotonic()
        self.close_after = False
        self.head_bytes: bytes | None = None  # the response head, until the first body bytes
        self.trailers: _Trailers | None = None  # the app promised http.response.trailers

    # ------------------------------------------------------------ parser side

    def feed_body(self, data: bytes) -> None:
        self.body.append(data)
        if sum(map(len, self.body)) > BODY_HIGH_WATER:
            self.io.pause_reading()

    def feed_end(self) -> None:
        self.body_done = True

    def client_gone(self) -> None:
        self.disconnected = True

    # ------------------------------------------------------------ server side

    def answer(self, status: int, message: str, extra_headers: bytes = b"", *,
               keep_alive: bool = False, counted: bool = True) -> None:
        """The server's own whole response in place of the app's (a 503 at the
        concurrency limit, a 500 for an app that failed, the health path), then
        close unless ``keep_alive`` (and the request allows it). It marks the
        cycle answered, as a response from the app would: one request, one
        response, whichever path comes next. ``counted=False``: not a request
        of the app's (no request total, no access log line from here)."""
        self.status = status
        self.response_started = self.response_complete = True
        self.keep_alive = keep_alive and self.keep_alive and not self.close_after
        response = simple_response(status, message, extra_headers + self.default_headers(),
                                   close=not self.keep_alive, with_body=not self.head_only)
        self.sent_length = len(message.encode()) + 1 if not self.head_only else 0
        self.io.write(response)
        if counted:
            self.io.cycle_done(self)

    # ------------------------------------------------------------ ASGI side

    async def receive(self) -> dict[str, Any]:
        if self.expect_continue and not self.continue_sent and not self.response_started:
            self.continue_sent = True
            self.io.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.body_delivered:
            # the whole body was handed over: the next event is the disconnect,
            # whenever it comes (or once the response is complete)
            while not self.disconnected and not self.response_complete:
                await self.io.wait_body()
            return {"type": "http.disconnect"}
        while not self.body and not self.body_done and not self.disconnected \
                and not self.response_complete:
            self.io.resume_reading()
            await self.io.wait_body()
        if self.disconnected or self.response_complete:
            return {"type": "http.disconnect"}
        data = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        self.body.clear()
        self.io.resume_reading()
        if self.body_done:
            self.body_delivered = True
        return {"type": "http.request", "body": data, "more_body": not self.body_done}

    async def send(self, message: dict[str, Any]) -> None:
        if self.disconnected:
            raise ClientDisconnected("the client closed the connection")
        kind = message["type"]
        if kind == "http.response.body":
            if not self.response_started:
                raise RuntimeError("http.response.body sent before http.response.start")
            if self.response_complete or (self.trailers is not None and self.trailers.body_done):
                raise RuntimeError("http.response.body sent after the response completed")
            if self._body(message):
                waiter = self.io.drain()
                if waiter is not None:
                    await waiter
                    if self.disconnected:
                        raise ClientDisconnected("the client closed the connection")
        elif kind == "http.response.start":
            if self.response_started:
                raise RuntimeError("http.response.start sent twice")
            self._start(message)
        else:
            extension = _EXTENSION_SENDS.get(kind)
            if extension is None:
                raise RuntimeError(f"unexpected ASGI message {kind!r} in an http cycle")
            await extension(self, message)

    def _start(self, message: dict[str, Any]) -> None:
        status = message["status"]
        if type(status) is not int:
            status = int(status)
        if not 100 <= status <= 599:
            raise ValueError(f"invalid status code {status}")
        block, length, close = header_block(message.get("headers") or ())
        if close:
            self.keep_alive = False
        no_body = self.head_only or status in (204, 304) or status < 200
        if message.get("trailers"):
            block, length = self._announce_trailers(block, length, no_body)
        if length is not None:
            self.expected_length = length
        elif not no_body:
            if self.scope.get("http_version") == "1.0":
                self.keep_alive = False  # no chunked coding for HTTP/1.0: the close ends the body
            else:
                self.chunked = True
                block += b"transfer-encoding: chunked\r\n"
        if not self.keep_alive or self.close_after:
            self.keep_alive = False
            block += b"connection: close\r\n"
        self.status = status
        self.response_started = True
        self.head_bytes = status_line(status) + self.default_headers() + block + b"\r\n"

    def _body(self, message: dict[str, Any]) -> bool:
        """Write one body message (with the head before the first); True when
        more is coming, so the caller should respect flow control."""
        body = message.get("body", b"")
        more = message.get("more_body", False)
        out = self.head_bytes
        if out is not None:
            self.head_bytes = None
        else:
            out = b""
        if body and not self.head_only:
            self.sent_length += len(body)
            if self.expected_length is not None and self.sent_length > self.expected_length:
                raise RuntimeError("response body longer than its Content-Length")
            if self.chunked:
                out += b"%x\r\n" % len(body)
            if len(body) > _COPY_LIMIT:  # large: pass it on as is rather than copy it
                if out:
                    self.io.queue(out)
                out = b"\r\n" if self.chunked else b""
                self.io.queue(body)
            else:
                out += body + b"\r\n" if self.chunked else body
        if more or self.trailers is not None:  # (trailers: their message ends the response)
            if not more:
                self.trailers.body_done = True  # type: ignore[union-attr]
            if out:
                self.io.queue(out)
            return True
        if self.chunked and not self.head_only:
            out += b"0\r\n\r\n"
        self._complete(out)
        return False

    def _complete(self, out: bytes) -> None:
        """The last bytes of the response: the cycle is done."""
        self.response_complete = True
        if self.expected_length is not None and self.sent_length < self.expected_length \
                and not self.head_only:
            self.keep_alive = False  # the body is short: the connection cannot be reused
        if out:
            self.io.write(out)
        self.io.cycle_done(self)

    def _unstart(self) -> None:
        """Forget a response start none of whose bytes went out (the head waits
        for the first body bytes), so the connection can answer 500 instead."""
        self.response_started = False
        self.head_bytes = None
        self.chunked = False
        self.expected_length = None
        self.trailers = None
        self.status = 0

    # ------------------------------------------------------------ ASGI extensions

    async def _pathsend(self, message: dict[str, Any]) -> None:
        """``http.response.pathsend``: the whole body is the file at ``path``,
        sent by the connection (zero-copy where it can); Content-Length from the
        file when the app gave none."""
        if not self.response_started or self.head_bytes is None:
            raise RuntimeError("http.response.pathsend must come right after "
                               "http.response.start, instead of any body")
        try:
            fd = os.open(message["path"], os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            self._unstart()
            raise
        try:
            size = _regular_file_size(fd, message["path"], self)
            if self.expected_length is not None and self.expected_length != size \
                    and not self.head_only:
                self._unstart()
                raise RuntimeError(f"http.response.pathsend: {message['path']} is {size} bytes, "
                                   f"its Content-Length says {self.expected_length}")
            self._length_from_file(size)
            await self._send_file(fd, 0, size, False)
        finally:
            os.close(fd)

    async def _zerocopysend(self, message: dict[str, Any]) -> None:
        """``http.response.zerocopysend``: ``count`` bytes of an open file from
        ``offset`` (default: its position, which then moves on, as a read would)."""
        if not self.response_started or self.response_complete \
                or (self.trailers is not None and self.trailers.body_done):
            raise RuntimeError("http.response.zerocopysend outside a response body")
        file = message["file"]
        fd = file if isinstance(file, int) else file.fileno()
        size = _regular_file_size(fd, file, self)
        offset = message.get("offset")
        at_position = offset is None
        if at_position:
            offset = os.lseek(fd, 0, os.SEEK_CUR)
        count = message.get("count")
        if count is None:
            count = max(size - offset, 0)
        more = bool(message.get("more_body", False))
        if offset < 0 or count < 0 or offset + count > size:
            if self.head_bytes is not None:
                self._unstart()
            raise ValueError(f"http.response.zerocopysend: offset {offset} and count {count} "
                             f"do not fit a file of {size} bytes")
        if not more and self.head_bytes is not None:
            self._length_from_file(count)  # the whole body in one message: say how long
        await self._send_file(fd, offset, count, more)
        if at_position:
            os.lseek(fd, offset + count, os.SEEK_SET)

    async def _send_file(self, fd: int, offset: int, count: int, more: bool) -> None:
        """File bytes as body bytes, framed like any body, then the rest of the
        body message (the head if nothing went yet, the end of the body)."""
        if count and not self.head_only:
            if self.expected_length is not None \
                    and self.sent_length + count > self.expected_length:
                if self.head_bytes is not None:
                    self._unstart()
                raise RuntimeError("response body longer than its Content-Length")
            out = self.head_bytes or b""
            self.head_bytes = None
            if self.chunked:
                out += b"%x\r\n" % count
            if out:
                self.io.write(out)
            try:
                await self.io.send_file(fd, offset, count)
            except BaseException:
                self.keep_alive = False  # part of the file may be out: never reuse
                raise
            self.sent_length += count
            if self.chunked:
                self.io.write(b"\r\n")
        if self._body(_MORE_BODY if more else _LAST_BODY):
            waiter = self.io.drain()
            if waiter is not None:
                await waiter
                if self.disconnected:
                    raise ClientDisconnected("the client closed the connection")

    def _length_from_file(self, size: int) -> None:
        """Content-Length for a body whose size is known before its first byte,
        in place of the chunked coding (or of none: HEAD, HTTP/1.0)."""
        head = self.head_bytes
        if head is None or self.expected_length is not None \
                or self.status < 200 or self.status in (204, 304) \
                or (self.trailers is not None and self.trailers.send):
            return
        length = b"content-length: %d\r\n" % size
        if self.chunked:  # our own coding line is the last one in the head
            before, _, after = head.rpartition(b"transfer-encoding: chunked\r\n")
            head = before + length + after
            self.chunked = False
        else:  # HEAD, or HTTP/1.0 (which still closes after it)
            head = head[:-2] + length + b"\r\n"
        self.head_bytes = head
        self.expected_length = size

    def _announce_trailers(self, block: bytes, length: int | None,
                           no_body: bool) -> tuple[bytes, int | None]:
        """``trailers: true`` on the start: the trailers message will end the
        response. They are sent only to a client that said ``TE: trailers``,
        which needs the chunked coding (so a Content-Length given is dropped)."""
        send = not no_body and accepts_trailers(self.scope)
        self.trailers = _Trailers(send)
        if send and length is not None:
            line = b"content-length: %d" % length
            block = b"".join(kept + b"\r\n" for kept in block.split(b"\r\n")[:-1]
                             if kept != line)
            length = None
        return block, length

    async def _send_trailers(self, message: dict[str, Any]) -> None:
        """``http.response.trailers``: fields after the last chunk (checked like
        headers), written with the end of the body when the last one comes."""
        trailers = self.trailers
        if trailers is None or not trailers.body_done or self.response_complete:
            raise RuntimeError("http.response.trailers without trailers: true on the start, "
                               "or before the last http.response.body")
        lines = b"".join(_trailer_line(bytes(name), bytes(value))
                         for name, value in message.get("headers") or ())
        if trailers.send:
            trailers.lines.append(lines)
        if message.get("more_trailers", False):
            return
        if self.chunked and not self.head_only:
            self._complete(b"0\r\n" + b"".join(trailers.lines) + b"\r\n")
        else:
            self._complete(b"")

    async def _early_hint(self, message: dict[str, Any]) -> None:
        """``http.response.early_hint``: a 103 with the Link fields, before the
        final response head; dropped for HTTP/1.0 and once the head went out."""
        try:
            lines = b"".join(field_line(b"link", bytes(link))
                             for link in message.get("links") or ())
        except ValueError:
            if self.head_bytes is not None:
                self._unstart()  # nothing is out yet: the connection can answer 500
            raise
        if self.response_complete:
            raise RuntimeError("http.response.early_hint after the response completed")
        if not lines or self.scope.get("http_version") != "1.1" \
                or (self.response_started and self.head_bytes is None):
            return
        self.io.write(b"HTTP/1.1 103 Early Hints\r\n" + lines + b"\r\n")


class _Trailers:
    """What a response that announced trailers still owes."""

    __slots__ = ("send", "lines", "body_done")

    def __init__(self, send: bool) -> None:
        self.send = send
        self.lines: list[bytes] = []
        self.body_done = False


_EXTENSION_SENDS = {
    "http.response.pathsend": HttpCycle._pathsend,
    "http.response.zerocopysend": HttpCycle._zerocopysend,
    "http.response.trailers": HttpCycle._send_trailers,
    "http.response.early_hint": HttpCycle._early_hint,
}
_MORE_BODY: dict[str, Any] = {"body": b"", "more_body": True}
_LAST_BODY: dict[str, Any] = {"body": b"", "more_body": False}
# RFC 9110 6.5.1: fields that frame the message or manage the connection are
# never trailers (a recipient that merged them into the header section would
# be misled about where the message ends)
_NOT_TRAILERS = frozenset((b"content-length", b"transfer-encoding", b"host", b"connection",
                           b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"))


def _trailer_line(name: bytes, value: bytes) -> bytes:
    line = field_line(name, value)
    if name.lower() in _NOT_TRAILERS:
        raise ValueError(f"response field {name!r} is not allowed in trailers")
    return line


def accepts_trailers(scope: dict[str, Any]) -> bool:
    """The request said ``TE: trailers`` (RFC 9110 10.1.4), on HTTP/1.1."""
    if scope.get("http_version") != "1.1":
        return False
    for name, value in scope["headers"]:
        if name == b"te" and b"trailers" in (token.split(b";")[0].strip(b" \t").lower()
                                            for token in value.split(b",")):
            return True
    return False


def _regular_file_size(fd: int, name: Any, cycle: HttpCycle) -> int:
    """The size of the open file ``fd``; only regular files can be sent."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        if cycle.head_bytes is not None:
            cycle._unstart()
        raise ValueError(f"{name!r} is not a regular file")
    return info.st_size
