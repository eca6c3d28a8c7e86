"""h11 and httptools must agree: on the corpus, event for event, and on random
input (hypothesis) in framing round-trips and in how they fail."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.http_corpus import CASES, Case, RecordingSink, limits, run
from workers.http.errors import RemoteProtocolError
from workers.http.parser_h11 import H11Parser
from workers.http.parser_httptools import HttptoolsParser

PARSERS = [H11Parser, HttptoolsParser]


@pytest.mark.parametrize("split", ["whole", "bytes"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_backends_agree_on_corpus(case: Case, split: str) -> None:
    h11_result = run(H11Parser, case.raw, split)
    httptools_result = run(HttptoolsParser, case.raw, split)
    assert h11_result == httptools_result


def _feed_all(parser_class: type, pieces: list[bytes]) -> tuple[int | None, list[tuple]]:
    sink = RecordingSink(limit_body=0)
    parser = parser_class(sink, limits())
    try:
        for piece in pieces:
            parser.feed(piece)
    except RemoteProtocolError as exc:
        return exc.status, sink.frozen()
    return None, sink.frozen()


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:])]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=600), sizes=st.lists(st.integers(1, 64), max_size=40),
       cuts=st.lists(st.integers(0, 2000), max_size=12), upper=st.booleans(),
       chunked=st.booleans())
def test_random_bodies_round_trip(body: bytes, sizes: list[int], cuts: list[int],
                                  upper: bool, chunked: bool) -> None:
    head = b"POST /up HTTP/1.1\r\nHost: h\r\n"
    if chunked:
        wire, rest = b"", body
        for size in sizes or [len(body) or 1]:
            piece, rest = rest[:size], rest[size:]
            if piece:
                wire += (b"%X" if upper else b"%x") % len(piece) + b"\r\n" + piece + b"\r\n"
        if rest:
            wire += b"%x\r\n" % len(rest) + rest + b"\r\n"
        raw = head + b"Transfer-Encoding: chunked\r\n\r\n" + wire + b"0\r\n\r\n"
    else:
        raw = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    raw += b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"  # a pipelined follower
    results = [_feed_all(p, _splits(raw, cuts)) for p in PARSERS]
    assert results[0] == results[1]
    status, events = results[0]
    assert status is None
    got = b"".join(e[1] for e in events if e[0] == "body")
    assert got == body
    assert [e[2] for e in events if e[0] == "head"] == [b"/up", b"/next"]
    assert events.count(("end",)) == 2


FRAGMENTS = [b"GET ", b"POST ", b"/ ", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b"\n", b"\r",
             b"Host: h", b"Content-Length: ", b"Transfer-Encoding: chunked", b"5", b"0",
             b"ff", b";x=y", b"hello", b": ", b" ", b"\t", b"\x00", b"\xff", b"\r\n\r\n"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=8)), max_size=30),
       st.lists(st.integers(0, 400), max_size=6))
def test_random_bytes_only_ever_raise_remote_protocol_error(parts: list[bytes],
                                                           cuts: list[int]) -> None:
    raw = b"".join(parts)
    results = []
    for parser_class in PARSERS:
        # anything else than RemoteProtocolError propagates and fails the test
        results.append(_feed_all(parser_class, _splits(raw, cuts)))
    assert results[0] == results[1], raw


WEBSOCKET_HEAD = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.mark.parametrize("split", ["whole", "halves", "bytes"])
@pytest.mark.parametrize("head", [WEBSOCKET_HEAD, WEBSOCKET_HEAD.replace(b"Host: x", b"Host:  x ")],
                         ids=["canonical", "blanks"])
def test_backends_agree_on_a_websocket_upgrade(head: bytes, split: str) -> None:
    """The head, then every byte after it for the WebSocket, none lost or parsed."""
    frames = b"\x81\x85abGET / HTTP/1.1\r\n\r\n"
    results = [run(p, head + frames, split) for p in PARSERS]
    assert results[0] == results[1]
    status, events = results[0]
    assert status is None and [e[0] for e in events] == ["head", "upgrade"]
    if split == "whole":
        assert events[1][1] == frames
    else:
        assert frames.endswith(events[1][1])


H2C = b"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"


@pytest.mark.parametrize("split", ["whole", "halves", "bytes"])
@pytest.mark.parametrize("raw, body", [
    (b"GET /up HTTP/1.1\r\nHost: x\r\n" + H2C + b"\r\n", b""),
    (b"POST /up HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: foo\r\n"
     b"Content-Length: 5\r\n\r\nhello", b"hello"),
    (b"POST /up HTTP/1.1\r\nHost: x\r\nUpgrade: foo/2, bar\r\nConnection: Upgrade\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", b"abcde"),
    (b"GET /up HTTP/1.1\r\nHost:  x \r\nUpgrade: websocket\r\n\r\n", b""),  # no Connection
    (b"GET /up HTTP/1.0\r\nConnection: Upgrade, keep-alive\r\nUpgrade: websocket\r\n\r\n", b""),
], ids=["h2c", "foo-length", "foo-chunked", "no-connection-option", "http-1.0"])
def test_an_upgrade_not_taken_is_plain_http_on_both(raw: bytes, body: bytes, split: str) -> None:
    """RFC 9110 7.8: an upgrade the server does not take is ignored. The request
    is framed and served as HTTP/1.1 (a pipelined request after it too), and
    neither backend nor the app sees the upgrade offer."""
    raw += b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"
    results = [run(p, raw, split) for p in PARSERS]
    assert results[0] == results[1]
    status, events = results[0]
    assert status is None, events
    assert [e[0] for e in events] == ["head"] + (["body"] if body else []) + ["end", "head", "end"]
    assert [e[2] for e in events if e[0] == "head"] == [b"/up", b"/next"]
    assert b"".join(e[1] for e in events if e[0] == "body") == body
    headers = dict(events[0][4])
    assert b"upgrade" not in headers
    assert b"upgrade" not in headers.get(b"connection", b"").lower()
    if raw.startswith(b"GET /up HTTP/1.1\r\nHost: x\r\nUpgrade: h2c"):
        assert headers[b"connection"] == b"HTTP2-Settings"


@pytest.mark.parametrize("raw", [
    WEBSOCKET_HEAD.replace(b"GET", b"POST"),
    WEBSOCKET_HEAD.replace(b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\nhi"),
    WEBSOCKET_HEAD.replace(b"\r\n\r\n", b"\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
], ids=["post", "length", "chunked"])
def test_a_websocket_upgrade_that_cannot_be_one_is_400_on_both(raw: bytes) -> None:
    results = [run(p, raw) for p in PARSERS]
    assert results[0] == results[1]
    assert results[0][0] == 400
