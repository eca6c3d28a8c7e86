"""Request framing rules shared by both parser backends (sans-IO).

The parsers disagree on some edge cases of RFC 9112 section 6, and a
disagreement between two HTTP hops is what request smuggling exploits. So the
final word on how a request body is delimited is said here, once, for both.
"""

from __future__ import annotations

from workers.http.errors import RemoteProtocolError


class Framing:
    """How the body of one request is delimited, and whether 100 is expected."""

    __slots__ = ("content_length", "chunked", "expect_continue", "upgrade")

    def __init__(self, content_length: int | None, chunked: bool,
                 expect_continue: bool, upgrade: bool = False) -> None:
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue
        self.upgrade = upgrade  # an Upgrade header is present (maybe a websocket)


NO_BODY = Framing(None, False, False)


def request_framing(headers: list[tuple[bytes, bytes]], limit_body: int = 0) -> Framing:
    """Validate the framing headers of a request head; raise the status to answer."""
    expect = False
    length: int | None = None
    lengths = 0
    encodings: list[bytes] = []
    upgrade = False
    for name, value in headers:
        if name == b"content-length":
            lengths += 1
            value = value.strip()
            if not value.isdigit() or not value.isascii():
                raise RemoteProtocolError(400, "Invalid Content-Length")
            length = int(value)
        elif name == b"transfer-encoding":
            encodings += [t.strip().lower() for t in value.split(b",")]
        elif name == b"expect" and value.lower() == b"100-continue":
            expect = True
        elif name == b"upgrade":
            upgrade = True
    if lengths > 1 or (lengths and encodings):
        raise RemoteProtocolError(400, "Ambiguous request framing")
    if encodings and encodings != [b"chunked"]:
        if b"chunked" in encodings[:-1]:
            # chunked must be applied exactly once, and last
            raise RemoteProtocolError(400, "Invalid Transfer-Encoding")
        raise RemoteProtocolError(501, "Unsupported Transfer-Encoding")
    if limit_body and length is not None and length > limit_body:
        raise RemoteProtocolError(413, "Request body too large")
    if length is None and not encodings and not expect and not upgrade:
        return NO_BODY
    return Framing(length, bool(encodings), expect, upgrade)
