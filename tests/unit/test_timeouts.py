"""The expiry of a connection's deadline, decided without I/O, and the gate's
notion of a head in progress that the decision rests on."""

from __future__ import annotations

import pytest

from arbiter.config import resolve
from workers.http.framing import RequestGate
from workers.http.parser_h11 import H11Parser
from workers.http.parser_httptools import HttptoolsParser
from workers.http.timeouts import Expiry, on_deadline

LIMITS = resolve({}, {}).http()

# (between_requests, head_started, app_awaits_body, response_started) -> verdict
TABLE = [
    ((True, False, False, False), Expiry.CLOSE),  # silent new or idle keep-alive connection
    ((True, True, False, False), Expiry.ANSWER_408),  # part of a head, then a stall
    ((False, False, True, False), Expiry.ANSWER_408),  # stalled body, nothing answered yet
    ((False, False, True, True), Expiry.CLOSE),  # stalled body, response under way
    ((False, False, False, False), Expiry.KEEP),  # the app is busy, not waiting on the body
    ((False, False, False, True), Expiry.KEEP),  # the app is busy streaming its response
    ((False, True, False, False), Expiry.KEEP),  # the next head is pipelined behind a busy app
]


@pytest.mark.parametrize("state, verdict", TABLE)
def test_on_deadline(state: tuple[bool, bool, bool, bool], verdict: Expiry) -> None:
    between, started, awaits, responded = state
    assert on_deadline(between_requests=between, head_started=started,
                       app_awaits_body=awaits, response_started=responded) is verdict


@pytest.mark.parametrize("fed, pending", [
    (b"", False),
    (b"G", True),
    (b"GET / HTTP/1.1\r\nHo", True),
    (b"\r\n\r\n", False),  # blank lines before a request line are ignored (RFC 9112 2.2)
    (b"\r\n\r\nGET", True),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False),  # a whole head
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc", False),  # in a body
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3", False),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET /next HT", True),  # pipelined, the next unfinished
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGE", True),
])
def test_head_pending(fed: bytes, pending: bool) -> None:
    gate = RequestGate(LIMITS)
    gate.feed(fed)
    assert gate.head_pending() is pending
    byte_by_byte = RequestGate(LIMITS)  # however the bytes were split
    for i in range(len(fed)):
        byte_by_byte.feed(fed[i:i + 1])
    assert byte_by_byte.head_pending() is pending


class _Sink:
    upgrade_head = None

    def on_head(self, head: object) -> None: ...
    def on_body(self, data: bytes) -> None: ...
    def on_end(self) -> None: ...


@pytest.mark.parametrize("parser_class", [H11Parser, HttptoolsParser])
def test_both_backends_report_the_gate_s_head_in_progress(parser_class: type) -> None:
    parser = parser_class(_Sink(), LIMITS)
    assert not parser.head_pending()
    parser.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab")
    assert not parser.head_pending()
    parser.feed(b"GET / HTTP/1.1\r\nHo")
    assert parser.head_pending()
    parser.feed(b"st: x\r\n\r\n")
    assert not parser.head_pending()
