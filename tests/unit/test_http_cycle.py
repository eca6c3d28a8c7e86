"""The ASGI http cycle and both parsers without I/O: bytes in, calls and bytes out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from arbiter.config import resolve
from workers.http.cycle import HttpCycle
from workers.http.errors import ClientDisconnected, RemoteProtocolError, backend_refused
from workers.http.parser_h11 import H11Parser
from workers.http.parser_httptools import HttptoolsParser

LIMITS = resolve({}, {}).http()
PARSERS = [H11Parser, HttptoolsParser]


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_head(self, head: Any) -> None:
        self.events.append(("head", head.method, head.target, head.version,
                            tuple(head.headers), head.keep_alive))

    def on_body(self, data: bytes) -> None:
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)
        else:
            self.events.append(("body", data))

    def on_end(self) -> None:
        self.events.append(("end",))


REQUESTS = [
    b"GET /a?x=1 HTTP/1.1\r\nHost: h\r\nX-Dup: 1\r\nX-Dup: 2\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
]


def parse(parser_class: type, data: bytes, byte_by_byte: bool = False) -> list[Any]:
    sink = Sink()
    parser = parser_class(sink, LIMITS)
    if byte_by_byte:
        for i in range(len(data)):
            parser.feed(data[i:i + 1])
    else:
        parser.feed(data)
    return sink.events


@pytest.mark.parametrize("raw", REQUESTS)
def test_backends_agree_whole_and_byte_by_byte(raw: bytes) -> None:
    results = [parse(p, raw, split) for p in PARSERS for split in (False, True)]
    assert all(r == results[0] for r in results), results
    assert results[0][-1] == ("end",)


def test_pipelined_requests_parse_in_order() -> None:
    raw = b"".join(REQUESTS[:3])
    for parser_class in PARSERS:
        heads = [e[2] for e in parse(parser_class, raw) if e[0] == "head"]
        assert heads == [b"/a?x=1", b"/p", b"/c"]


def test_header_names_lowercased_duplicates_kept() -> None:
    for parser_class in PARSERS:
        head = parse(parser_class, REQUESTS[0])[0]
        assert (b"x-dup", b"1") in head[4] and (b"x-dup", b"2") in head[4]


@pytest.mark.parametrize("raw", [b"GET / HTTP/1.1\r\nHost: h\r\nBad\x00: x\r\n\r\n",
                                 b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
                                 b"\x16\x03\x01garbage\r\n\r\n"])
def test_malformed_is_a_remote_error_on_both(raw: bytes) -> None:
    for parser_class in PARSERS:
        with pytest.raises(RemoteProtocolError) as info:
            parse(parser_class, raw)
        assert info.value.status == 400


@pytest.mark.parametrize("hint, status", [(400, 400), (431, 431), (501, 501), (413, 400),
                                          (505, 400)])
def test_a_backend_refusal_is_answered_the_same_from_either_backend(hint: int,
                                                                    status: int) -> None:
    assert backend_refused(hint).status == status


@pytest.mark.parametrize("parser_class", PARSERS, ids=["h11", "httptools"])
@pytest.mark.parametrize("raw", REQUESTS[:3] + [b"\r\n\r\n" + REQUESTS[1]],
                         ids=["get", "length", "chunked", "blank-lines-first"])
def test_a_canonical_head_gets_no_second_opinion_however_split(parser_class: type,
                                                                raw: bytes) -> None:
    """The gate decides which heads a backend parses again by their bytes, not by
    how they were split: a canonical head that comes in pieces costs no more
    than one read whole (on h11, the second opinion was most of the cost)."""
    checked: list[bytes] = []

    class Spy(parser_class):  # type: ignore[misc, valid-type]
        def _check(self, head: Any) -> None:
            checked.append(head.target)
            super()._check(head)

    for byte_by_byte in (False, True):
        sink = Sink()
        parser = Spy(sink, LIMITS)
        pieces = [raw[i:i + 1] for i in range(len(raw))] if byte_by_byte else [raw]
        for piece in pieces:
            parser.feed(piece)
        assert sink.events[-1] == ("end",)
    assert checked == []


def _head(headers: list[tuple[bytes, bytes]], target: bytes = b"/") -> Any:
    from workers.http.framing import NO_BODY, Head
    return Head("GET", target, "1.1", headers, True, NO_BODY)


@pytest.mark.parametrize("parser_class", PARSERS, ids=["h11", "httptools"])
def test_the_second_opinion_refuses_what_the_backend_refuses(parser_class: type) -> None:
    """The backstop itself: a head the gate would never accept, handed to the
    backend's check directly, is refused with 400; a good one passes."""
    parser = parser_class(Sink(), LIMITS)
    parser._check(_head([(b"host", b"h"), (b"content-length", b"5")]))  # framing is the gate's
    for bad in ([(b"host", b"h"), (b"x bad", b"1")], [(b"host", b"h\r\nx: 1\r\nx")]):
        with pytest.raises(RemoteProtocolError) as info:
            parser._check(_head(bad))
        assert info.value.status == 400


class IO:
    def __init__(self) -> None:
        self.out = bytearray()
        self.done = False

    def write(self, data: bytes) -> None:
        self.out += data

    queue = write  # (the connection batches these; in memory, order is all that counts)

    def drain(self) -> None:
        return None

    def wait_body(self) -> Any:
        raise AssertionError("body is fed up front in these tests")

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def cycle_done(self, cycle: HttpCycle) -> None:
        self.done = True


def make_cycle(method: str = "GET", keep_alive: bool = True) -> tuple[HttpCycle, IO]:
    io = IO()
    scope = {"method": method}
    return HttpCycle(scope, io, keep_alive=keep_alive, expect_continue=False,
                     default_headers=lambda: b"server: arbiter\r\n"), io


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_content_length_response_in_one_write() -> None:
    cycle, io = make_cycle()

    async def go() -> None:
        await cycle.send({"type": "http.response.start", "status": 200,
                          "headers": [(b"content-length", b"2")]})
        assert io.out == b""  # head waits for the body: one write
        await cycle.send({"type": "http.response.body", "body": b"hi"})

    run(go())
    assert io.out == b"HTTP/1.1 200 OK\r\nserver: arbiter\r\ncontent-length: 2\r\n\r\nhi"
    assert io.done and cycle.keep_alive


def test_no_length_means_chunked_and_app_transfer_encoding_ignored() -> None:
    cycle, io = make_cycle()

    async def go() -> None:
        await cycle.send({"type": "http.response.start", "status": 200,
                          "headers": [(b"transfer-encoding", b"gzip")]})
        await cycle.send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await cycle.send({"type": "http.response.body", "body": b""})

    run(go())
    assert io.out.endswith(b"transfer-encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n")
    assert b"gzip" not in io.out


def test_head_response_has_no_body() -> None:
    cycle, io = make_cycle("HEAD")

    async def go() -> None:
        await cycle.send({"type": "http.response.start", "status": 200,
                          "headers": [(b"content-length", b"5")]})
        await cycle.send({"type": "http.response.body", "body": b"hello"})

    run(go())
    assert io.out.endswith(b"content-length: 5\r\n\r\n")


@pytest.mark.parametrize("headers", [[(b"x-bad", b"a\r\nset-cookie: x")],
                                     [(b"x\nbad", b"v")], [(b"x", b"nul\x00")]])
def test_response_header_injection_is_refused(headers: list[Any]) -> None:
    assert_head_refused(headers)


def assert_head_refused(headers: list[Any]) -> None:
    """A refused response start leaves no trace: the connection can still
    answer 500 in its place, and no later message puts the bad head on the
    wire (the head is only written with the first body message)."""
    cycle, io = make_cycle()
    with pytest.raises(ValueError):
        run(cycle.send({"type": "http.response.start", "status": 200, "headers": headers}))
    assert not cycle.response_started
    with pytest.raises(RuntimeError):
        run(cycle.send({"type": "http.response.body", "body": b"x"}))
    assert io.out == b""


@pytest.mark.parametrize("status", [99, 600, 1000])
def test_status_out_of_range_is_refused(status: int) -> None:
    cycle, _ = make_cycle()
    with pytest.raises(ValueError):
        run(cycle.send({"type": "http.response.start", "status": status, "headers": []}))


def test_receive_body_then_disconnect_and_send_after_disconnect_raises_oserror() -> None:
    cycle, _ = make_cycle("POST")
    cycle.feed_body(b"abc")
    cycle.feed_end()
    assert run(cycle.receive()) == {"type": "http.request", "body": b"abc", "more_body": False}
    cycle.client_gone()
    assert run(cycle.receive()) == {"type": "http.disconnect"}
    with pytest.raises(ClientDisconnected) as info:
        run(cycle.send({"type": "http.response.start", "status": 200, "headers": []}))
    assert isinstance(info.value, OSError)


def test_connection_close_from_app_or_client() -> None:
    cycle, io = make_cycle(keep_alive=False)

    async def go() -> None:
        await cycle.send({"type": "http.response.start", "status": 204, "headers": []})
        await cycle.send({"type": "http.response.body"})

    run(go())
    assert b"connection: close\r\n" in io.out and b"transfer-encoding" not in io.out


def test_receive_after_the_whole_body_waits_for_the_disconnect() -> None:
    """A second receive() must not return the body again (an app looping on
    receive() until http.disconnect would spin forever): it waits."""
    cycle, io = make_cycle("POST")
    cycle.feed_body(b"abc")
    cycle.feed_end()
    waited: list[bool] = []

    async def go() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        gone = loop.create_future()

        def wait_body() -> Any:
            waited.append(True)
            return gone
        io.wait_body = wait_body  # type: ignore[method-assign]
        first = await cycle.receive()
        assert first == {"type": "http.request", "body": b"abc", "more_body": False}
        second = asyncio.ensure_future(cycle.receive())
        await asyncio.sleep(0)  # deliberate (noqa: sleep): one loop turn: receive() blocks
        assert not second.done()  # waiting, not spinning
        cycle.client_gone()
        gone.set_result(None)
        return await second

    assert run(go()) == {"type": "http.disconnect"}
    assert waited


@pytest.mark.parametrize("name, value", [
    (b"x-a", b"1\r\nset-cookie: evil"), (b"x-a\r\nb", b"1"), (b"x-a", b"1\x00"), (b"", b"1"),
    (b"x:a", b"1")])
def test_each_bad_response_header_field_is_refused(name: bytes, value: bytes) -> None:
    assert_head_refused([(name, value)])


def test_the_servers_own_answer_is_the_whole_response() -> None:
    """A 503 or 500 the server writes in the app's place marks the cycle
    answered, so nothing can follow it: one request, one response."""
    cycle, io = make_cycle()
    cycle.answer(503, "Service Unavailable", b"retry-after: 1\r\n")
    assert io.out == (b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nserver: arbiter\r\n"
                      b"content-type: text/plain; charset=utf-8\r\ncontent-length: 20\r\n"
                      b"connection: close\r\n\r\nService Unavailable\n")
    assert cycle.response_started and cycle.response_complete and not cycle.keep_alive
    assert io.done and cycle.status == 503
    with pytest.raises(RuntimeError):
        run(cycle.send({"type": "http.response.start", "status": 200, "headers": []}))
    assert io.out.count(b"HTTP/1.1 ") == 1


@pytest.mark.parametrize("method, keep_alive, close_after, want_close, body", [
    ("GET", True, False, False, b"OK\n"),
    ("HEAD", True, False, False, b""),  # HEAD: the length a GET gets, no body
    ("GET", False, False, True, b"OK\n"),  # the request said close
    ("GET", True, True, True, b"OK\n"),  # the worker is stopping
])
def test_an_uncounted_keep_alive_answer(method: str, keep_alive: bool, close_after: bool,
                                        want_close: bool, body: bytes) -> None:
    """The health path's answer: keep-alive when the request allows it, HEAD without
    a body, and not counted (the connection's cycle_done is not called)."""
    cycle, io = make_cycle(method, keep_alive)
    cycle.close_after = close_after
    cycle.answer(200, "OK", keep_alive=True, counted=False)
    assert io.out == (b"HTTP/1.1 200 OK\r\nserver: arbiter\r\ncontent-type: text/plain; "
                      b"charset=utf-8\r\ncontent-length: 3\r\n"
                      + (b"connection: close\r\n" if want_close else b"") + b"\r\n" + body)
    assert cycle.keep_alive is not want_close and cycle.response_complete
    assert not io.done
