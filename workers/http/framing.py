"""Request framing rules shared by both parser backends (sans-IO).

The parsers disagree on some edge cases of RFC 9112 section 6, and a
disagreement between two HTTP hops is what request smuggling exploits. So the
final word on how a request body is delimited is said here, once, for both.
"""

from __future__ import annotations

import re
from typing import Any

from workers.http.errors import RemoteProtocolError


class Framing:
    """How the body of one request is delimited, and whether 100 is expected."""

    __slots__ = ("content_length", "chunked", "expect_continue")

    def __init__(self, content_length: int | None, chunked: bool,
                 expect_continue: bool) -> None:
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue


NO_BODY = Framing(None, False, False)


def request_framing(headers: list[tuple[bytes, bytes]], limit_body: int = 0) -> Framing:
    """Validate the framing headers of a request head; raise the status to answer."""
    expect = False
    length: int | None = None
    lengths = 0
    encodings: list[bytes] = []
    for name, value in headers:
        if name == b"content-length":
            lengths += 1
            value = value.strip(b" \t")  # OWS only: bytes.strip() would eat VT and FF
            if not value.isdigit() or not value.isascii() or len(value) > 19 \
                    or int(value) >= 1 << 63:
                raise RemoteProtocolError(400, "Invalid Content-Length")
            length = int(value)
        elif name == b"transfer-encoding":
            for token in value.split(b","):
                token = token.strip(b" \t").lower()
                if _TOKEN_RE.fullmatch(token) is None:
                    raise RemoteProtocolError(400, "Invalid Transfer-Encoding")
                encodings.append(token)
        elif name == b"expect" and value.lower() == b"100-continue":
            expect = True
    if lengths > 1 or (lengths and encodings):
        raise RemoteProtocolError(400, "Ambiguous request framing")
    if encodings and encodings != [b"chunked"]:
        if b"chunked" in encodings[:-1]:
            # chunked must be applied exactly once, and last
            raise RemoteProtocolError(400, "Invalid Transfer-Encoding")
        raise RemoteProtocolError(501, "Unsupported Transfer-Encoding")
    if limit_body and length is not None and length > limit_body:
        raise RemoteProtocolError(413, "Request body too large")
    if length is None and not encodings and not expect:
        return NO_BODY
    return Framing(length, bool(encodings), expect)


def is_websocket_upgrade(headers: list[tuple[bytes, bytes]]) -> bool:
    """True for a request asking to switch to the WebSocket protocol
    (``Connection: upgrade`` and ``Upgrade: websocket``), the one upgrade served."""
    upgrade = connection = False
    for name, value in headers:
        if name == b"upgrade" and value.strip(b" \t").lower() == b"websocket":
            upgrade = True
        elif name == b"connection" and b"upgrade" in _connection_options(value):
            connection = True
    return upgrade and connection


def _connection_options(value: bytes) -> set[bytes]:
    return {token.strip(b" \t") for token in value.lower().split(b",")}


def without_upgrade(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The head of a request whose upgrade is not taken, as the app and the
    parser backends see it: served as plain HTTP/1.1 (RFC 9110 7.8), so the
    Upgrade field and Connection's ``upgrade`` option are dropped, not passed on."""
    kept = []
    for name, value in headers:
        if name == b"upgrade":
            continue
        if name == b"connection":
            options = [token.strip(b" \t") for token in value.split(b",")]
            options = [token for token in options if token and token.lower() != b"upgrade"]
            if not options:
                continue
            value = b", ".join(options)
        kept.append((name, value))
    return kept


# ---------------------------------------------------------------------------
# The gate: one strict pass over the raw byte stream, ahead of either parser.
#
# Both parsers are lenient in different places (h11: bare LF line endings,
# control bytes in values, any chunk extension, blanks after a chunk size;
# llhttp: blanks in the request line, HTTP/0.9 and 2.0 request lines, no Host
# check). Rather than patch each one, every byte goes through this gate first;
# a parser only ever sees a stream the gate has accepted, so both backends give
# the same answer by construction. The gate also owns the size limits and the
# parsed head (method, target, version, headers) the parsers hand on.

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)
_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ \t]*(.*?)[ \t]*")
_VALUE = re.compile(rb"(?:[\x21-\x7e\x80-\xff](?:[ \t]*[\x21-\x7e\x80-\xff])*)?")
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/(1\.[01])")
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,16})"
    rb"(?:;" + _TOKEN + rb"(?:=(?:" + _TOKEN + rb"|\"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*\"))?)*")
# The fast path: one C-level match of a whole, canonical head (CRLF endings,
# token names, visible values); anything else takes the line-by-line path
# below, which gives the exact status. Measured on hello: the gate went from
# about 40 us to about 4 us per request (bench/micro.py on a loaded 2-core VM).
# (possessive quantifiers: no backtracking, about 4x faster on a browser's head)
_FAST_VALUE = rb"(?:[\x21-\x7e\x80-\xff]++(?:[ \t]++[\x21-\x7e\x80-\xff]++)*+)?+"
_FAST_HEAD = re.compile(
    rb"(" + _TOKEN + rb") ([\x21-\x7e]++) HTTP/(1\.[01])\r\n"
    rb"(?:" + _TOKEN + rb":[ \t]*+" + _FAST_VALUE + rb"[ \t]*+\r\n)*+\r\n")
_FAST_FIELD = re.compile(rb"(" + _TOKEN + rb"):[ \t]*+(" + _FAST_VALUE + rb")[ \t]*+\r\n")
_BAD_PARTIAL_LINE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# The methods llhttp knows (minus CONNECT, PRI and the RTSP ones): h11 alone
# would take any token, and both backends must agree.
METHODS = frozenset(
    "GET HEAD POST PUT DELETE OPTIONS TRACE PATCH COPY LOCK MKCOL MOVE PROPFIND PROPPATCH "
    "SEARCH UNLOCK BIND REBIND UNBIND ACL REPORT MKACTIVITY CHECKOUT MERGE M-SEARCH NOTIFY "
    "SUBSCRIBE UNSUBSCRIBE PURGE MKCALENDAR LINK UNLINK SOURCE QUERY".split())
# Fields that must not appear in a trailer section (RFC 9110 6.5.1).
_NOT_IN_TRAILERS = frozenset((b"content-length", b"transfer-encoding", b"host"))
_MAX_CHUNK_LINE = 1024
_FRAMING_FIELDS = frozenset((b"content-length", b"transfer-encoding", b"expect"))

_HEAD, _BODY, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _PASS, _CLOSED = range(8)


class Head:
    """A request head the gate accepted, with the facts the parsers pass on."""

    __slots__ = ("method", "target", "version", "headers", "keep_alive", "framing", "upgrade",
                 "odd")

    def __init__(self, method: str, target: bytes, version: str,
                 headers: list[tuple[bytes, bytes]], keep_alive: bool,
                 framing: Framing) -> None:
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.framing = framing
        self.upgrade = False  # a WebSocket upgrade: what follows the head is not HTTP
        self.odd = False  # accepted, yet not in canonical form: a backend parses it too


class _EndOfMessage:
    """The request's body (if any) is complete: the one marker ``feed`` emits."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END = _EndOfMessage()


class RequestGate:
    """Validate a request stream and frame it: the one body path for both backends.

    ``feed(data)`` returns ``(items, error)``: the caller hands the items on in
    order and then raises ``error`` if there is one. Items are a ``Head`` (a
    request head, accepted whole: a head is held back until complete, so nothing
    acts on a head the gate would refuse), body bytes (already de-chunked: chunk
    size lines, extensions and trailers are validated here and dropped), ``END``
    (the request is complete), and after a WebSocket upgrade's head, the raw
    bytes that follow it.
    """

    def __init__(self, limits: Any) -> None:
        self.limit_line = limits.limit_request_line or 0
        self.limit_fields = limits.limit_request_fields or 0
        self.limit_field_size = limits.limit_request_field_size or 0
        self.limit_body = limits.limit_request_body or 0
        self.max_head = (self.limit_line or 8190) + 16 + \
            ((self.limit_fields or 100) + 1) * ((self.limit_field_size or 8190) + 4) + 4
        self.buf = bytearray()
        self._to(_HEAD)
        self.remaining = 0
        self.body_seen = 0
        self.keep_alive = True
        self.error: RemoteProtocolError | None = None

    def feed(self, data: bytes) -> tuple[list[Any], RemoteProtocolError | None]:
        """Check ``data``; return what passed, in order, and the error if any."""
        if self.error is not None:
            return [], self.error
        state = self.state
        if (state == _BODY or state == _CHUNK_DATA) and len(data) < self.remaining:
            # the middle of a body, the bulk of an upload: passed on uncopied
            self.remaining -= len(data)
            return [data], None
        items: list[Any] = []
        pos = 0
        size = len(data)
        try:
            while pos < size:
                state = self.state
                if state == _HEAD and not self.buf:
                    match = _FAST_HEAD.match(data, pos)
                    head = self._fast_head(data, match) if match is not None else None
                    if head is not None:
                        pos = match.end()  # type: ignore[union-attr]
                        self._start(head, items)
                        continue
                if state == _BODY or state == _CHUNK_DATA:
                    take = min(self.remaining, size - pos)
                    items.append(data[pos:pos + take])  # (all of data: not copied)
                    pos += take
                    self.remaining -= take
                    if not self.remaining:
                        if state == _BODY:
                            self._end(items)
                        else:
                            self._to(_CHUNK_END)
                elif state == _PASS:
                    items.append(data[pos:])  # the WebSocket's bytes, after its head
                    pos = size
                elif state == _CLOSED:
                    pos = size  # after Connection: close nothing more is read
                else:
                    pos = self._line_state(data, pos, items)
        except RemoteProtocolError as exc:
            self.error = exc
            self.buf.clear()
            return items, exc
        return items, None

    def head_pending(self) -> bool:
        """Bytes of an unfinished head are held (a whole head never is)."""
        return self.state == _HEAD and bool(self.buf)

    # -------------------------------------------------------------- helpers

    def _fast_head(self, data: bytes, match: re.Match[bytes]) -> Head | None:
        """The head the fast pattern matched, checked; None leaves it to the
        line-by-line path (a limit is hit, or the method is unknown), which
        then answers with the precise status. Changes no state."""
        method_b, target, version_b = match.group(1, 2, 3)
        size = match.end() - match.start()
        if (self.limit_line and len(target) > self.limit_line) or size > self.max_head:
            return None
        method = method_b.decode("ascii")
        if method not in METHODS:
            return None
        fields = _FAST_FIELD.findall(data, match.end(3) + 2, match.end())
        if self.limit_fields and len(fields) > self.limit_fields:
            return None
        if self.limit_field_size and size > self.limit_field_size and \
                any(len(n) + len(v) > self.limit_field_size for n, v in fields):
            return None
        return self._finish_head(method, target, version_b.decode("ascii"),
                                 [(n.lower(), v) for n, v in fields])

    def _to(self, state: int) -> None:
        self.state = state
        self.buf.clear()
        self.line_start = 0
        self.request: tuple[str, bytes, str] | None = None
        self.fields: list[tuple[bytes, bytes]] = []

    def _start(self, head: Head, items: list[Any]) -> None:
        """A head accepted: emit it and frame what follows it."""
        items.append(head)
        if head.upgrade:
            self._to(_PASS)  # a whole message; the rest is the WebSocket's
            return
        self.keep_alive = head.keep_alive
        self.body_seen = 0
        framing = head.framing
        if framing.chunked:
            self._to(_CHUNK_SIZE)
        elif framing.content_length:
            self._to(_BODY)
            self.remaining = framing.content_length
        else:
            self._end(items)

    def _end(self, items: list[Any]) -> None:
        items.append(END)
        self._to(_HEAD if self.keep_alive else _CLOSED)

    def _line_state(self, data: bytes, pos: int, items: list[Any]) -> int:
        """Buffer data for a line-oriented state; act on complete lines (a head
        or the end of a message goes to ``items``). Returns the new pos."""
        state = self.state
        if not self.buf:
            # the common case, a chunk's framing whole within data: read in place,
            # not copied; an unfinished or wrong line takes the buffered path
            # below, which says precisely what is wrong
            if state == _CHUNK_END and data.startswith(b"\r\n", pos):
                self._to(_CHUNK_SIZE)
                return pos + 2
            if state == _CHUNK_SIZE:
                end = data.find(b"\r\n", pos, pos + _MAX_CHUNK_LINE + 2)
                match = _CHUNK_LINE.fullmatch(data, pos, end) if end >= 0 else None
                if match is not None:  # (the pattern admits no CR or LF)
                    self._chunk(int(match.group(1), 16))
                    return end + 2
        if state == _CHUNK_END:
            need = 2 - len(self.buf)
            self.buf += data[pos:pos + need]
            if self.buf != b"\r\n"[:len(self.buf)]:
                raise RemoteProtocolError(400, "Chunk data not followed by CRLF")
            if len(self.buf) == 2:
                self._to(_CHUNK_SIZE)
            return pos + need
        start = len(self.buf)  # bytes of buf that came from earlier feeds
        self.buf += data[pos:]
        buf = self.buf
        if state == _HEAD and self.request is None and self.line_start == 0:
            # RFC 9112 2.2: empty lines before a request line are ignored
            skip = 0
            while buf.startswith(b"\r\n", skip):
                skip += 2
            if skip:
                del buf[:skip]
                start -= skip
        if state == _CHUNK_SIZE:
            end = buf.find(b"\r\n")
            _check_partial_line(buf, 0, end)
            if end < 0:
                # (a CR at the end may be the start of the CRLF: not counted,
                # so a line at the limit passes however it is split)
                if len(buf) - buf.endswith(b"\r") > _MAX_CHUNK_LINE:
                    raise RemoteProtocolError(400, "Chunk size line too long")
                return len(data)
            match = _CHUNK_LINE.fullmatch(buf, 0, end)
            if match is None or end > _MAX_CHUNK_LINE:
                raise RemoteProtocolError(400, "Invalid chunk size line")
            self._chunk(int(match.group(1), 16))  # extensions validated, then dropped
            return pos + end + 2 - start
        # _HEAD or _TRAILERS: field lines up to an empty line, checked one by one
        trailers = state == _TRAILERS
        while True:
            end = buf.find(b"\r\n", self.line_start)
            if end < 0:
                break
            line = bytes(buf[self.line_start:end])
            if b"\r" in line or b"\n" in line:
                raise RemoteProtocolError(400, "Bare CR or LF in request head")
            self.line_start = end + 2
            if not line:
                used = self.line_start - start
                if trailers:
                    self._end(items)  # trailers validated, then dropped
                else:
                    assert self.request is not None
                    head = self._finish_head(*self.request, self.fields)
                    # odd by its bytes, not by how they were split: a canonical
                    # head that came in pieces is no odder than one read whole
                    head.odd = not head.upgrade and \
                        _FAST_HEAD.fullmatch(buf, 0, self.line_start) is None
                    self._start(head, items)
                return pos + used
            if not trailers and self.request is None:
                self.request = _request_line(line, self.limit_line)
            else:
                self.fields.append(self._field(line, trailers))
                if self.limit_fields and len(self.fields) > self.limit_fields:
                    raise RemoteProtocolError(431, "Too many request headers")
        _check_partial_line(buf, self.line_start, -1)
        if not trailers and self.request is None:
            partial = buf[self.line_start:]
            if partial.endswith(b"\r"):
                partial = partial[:-1]
            if _BAD_PARTIAL_LINE.search(partial):
                raise RemoteProtocolError(400, "Invalid request line")
            if self.limit_line and len(partial) > self.limit_line + 16:
                raise RemoteProtocolError(414, "Request line too long")
        elif self.limit_field_size and len(buf) - self.line_start > self.limit_field_size + 64:
            raise RemoteProtocolError(431, "Request header field too large")
        if len(buf) > self.max_head:
            raise RemoteProtocolError(431, "Request head too large")
        return len(data)

    def _chunk(self, size: int) -> None:
        """A valid chunk size line: the chunk's data follows, or the trailers."""
        self.body_seen += size
        if self.limit_body and self.body_seen > self.limit_body:
            raise RemoteProtocolError(413, "Request body too large")
        if size:
            self._to(_CHUNK_DATA)
            self.remaining = size
        else:
            self._to(_TRAILERS)

    def _field(self, line: bytes, trailers: bool) -> tuple[bytes, bytes]:
        match = _FIELD.fullmatch(line)
        if match is None:
            raise RemoteProtocolError(400, "Invalid header line")
        name, value = match.groups()
        if self.limit_field_size and len(name) + len(value) > self.limit_field_size:
            raise RemoteProtocolError(431, "Request header field too large")
        if _VALUE.fullmatch(value) is None:
            raise RemoteProtocolError(400, "Invalid header value")
        name = name.lower()
        if trailers and name in _NOT_IN_TRAILERS:
            raise RemoteProtocolError(400, "Framing field in trailers")
        return name, value

    def _finish_head(self, method: str, target: bytes, version: str,
                     headers: list[tuple[bytes, bytes]]) -> Head:
        # one pass; the few fields that frame the message go to request_framing
        hosts = 0
        framing_fields = []
        keep_alive = version == "1.1"
        upgrade_field = False
        for field in headers:
            name = field[0]
            if name == b"host":
                hosts += 1
            elif name in _FRAMING_FIELDS:
                framing_fields.append(field)
            elif name == b"connection":
                tokens = _connection_options(field[1])
                if b"close" in tokens:
                    keep_alive = False
                elif b"keep-alive" in tokens:
                    keep_alive = True
            elif name == b"upgrade":
                upgrade_field = True
        if hosts > 1 or (version == "1.1" and not hosts):
            raise RemoteProtocolError(400, "A request needs exactly one Host header")
        framing = request_framing(framing_fields, self.limit_body) if framing_fields else NO_BODY
        if not upgrade_field:
            return Head(method, target, version, headers, keep_alive, framing)
        # the one upgrade taken (RFC 9110 7.8: never from HTTP/1.0); any other is ignored
        if version == "1.1" and is_websocket_upgrade(headers):
            if method != "GET" or framing.chunked or framing.content_length:
                raise RemoteProtocolError(400, "Invalid WebSocket upgrade request")
            head = Head(method, target, version, headers, keep_alive, NO_BODY)
            head.upgrade = True
            return head
        return Head(method, target, version, without_upgrade(headers), keep_alive, framing)


def bodiless_head_bytes(head: Head) -> bytes:
    """The head in canonical form (so that no quirk of a backend's own, OWS or
    case, can change the outcome), without the fields that frame a body: what a
    backend is asked for its second opinion on. The gate frames the body itself."""
    return b"%s %s HTTP/%s\r\n%s\r\n" % (
        head.method.encode(), head.target, head.version.encode(),
        b"".join(b"%s: %s\r\n" % field for field in head.headers
                 if field[0] != b"content-length" and field[0] != b"transfer-encoding"))


def _request_line(line: bytes, limit: int) -> tuple[str, bytes, str]:
    match = _REQUEST_LINE.fullmatch(line)
    if match is None:
        if limit and len(line) > limit + 16:
            raise RemoteProtocolError(414, "Request line too long")
        raise RemoteProtocolError(400, "Invalid request line")
    method = match.group(1).decode("ascii")
    if method not in METHODS:
        raise RemoteProtocolError(400, "Unknown HTTP method")
    target = match.group(2)
    if limit and len(target) > limit:
        raise RemoteProtocolError(414, "Request line too long")
    return method, target, match.group(3).decode("ascii")


def _check_partial_line(buf: bytearray, start: int, end: int) -> None:
    """Only CRLF ends a line: refuse a bare LF, or a CR before anything but LF,
    in buf[start:end] (end < 0: up to the end, where a CR may still get its LF)."""
    stop = len(buf) if end < 0 else end
    if buf.find(b"\n", start, stop) >= 0:
        raise RemoteProtocolError(400, "Bare LF in request")
    cr = buf.find(b"\r", start, stop)
    if cr >= 0 and (end >= 0 or cr + 1 < len(buf)):
        raise RemoteProtocolError(400, "Bare CR in request")


class GatedParser:
    """What both parser backends share: every byte through the gate, which
    frames every request, and its heads, bodies and ends straight to the sink;
    the WebSocket upgrade handed to the sink with the bytes after its head. A
    backend sees no byte of a body: it only gives its second opinion (``_check``)
    on an odd head, one the gate accepted whose bytes its canonical pattern does
    not match. That is a backstop: the gate's rules leave no such head today (no
    corpus case, hypothesis example or random split makes one), so in practice
    neither backend parses anything and both behave alike by construction."""

    def __init__(self, sink: Any, limits: Any) -> None:
        self.sink = sink
        self.limits = limits
        self.gate = RequestGate(limits)
        self.upgraded = False  # the rest of the stream is not HTTP/1.1 any more

    def feed(self, data: bytes) -> None:
        if self.upgraded:
            return
        items, error = self.gate.feed(data)
        sink = self.sink
        for index, item in enumerate(items):
            if item is END:
                sink.on_end()
            elif type(item) is Head:
                if item.odd:
                    self._check(item)
                sink.on_head(item)
                if item.upgrade:
                    self.upgraded = True
                    rest = items[index + 1:]  # all bytes: after the head the gate passes them on
                    sink.on_upgrade(b"".join(rest))
                    return
            else:
                sink.on_body(item)
        if error is not None:
            raise error

    def head_pending(self) -> bool:
        """Part of a request head has arrived and waits for the rest (blank
        lines before a request line do not count: RFC 9112 2.2 ignores them)."""
        return self.gate.head_pending()

    def _check(self, head: Head) -> None:
        """Raise the backend's refusal of an odd head the gate accepted (a backstop)."""
        raise NotImplementedError


def origin_form(target: bytes) -> bytes:
    """RFC 9112 3.2.2: a server must accept the absolute form (what a proxy
    sends); the app sees the path and query as if the origin form came."""
    scheme, sep, rest = target.partition(b"://")
    if not sep or scheme.lower() not in (b"http", b"https"):
        return target
    start = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
    path = rest[start:]
    return path if path.startswith(b"/") else b"/" + path
