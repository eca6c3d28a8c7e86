"""Body messages with more to come are batched into vectored writes: a
response streamed without waiting costs a write per FLUSH_AT bytes, not one per message; what
is queued goes out before the app waits on anything else, before anything
written after it, before a close, and at once past FLUSH_AT bytes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.unit.fake_http import REQUEST, RUNNERS, Transport, connected
from workers.http.connection import FLUSH_AT

CHUNK = bytes(range(256)) * 256  # 64 KiB


def _serve(runner: str, app: Any, check: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server, conn, transport = connected(app, loop)
        loop.call_soon(conn.data_received, REQUEST)  # from the loop, as a socket read
        await asyncio.sleep(0)  # deliberate (noqa: sleep): one loop turn
        await check(transport)
        for task in list(server.tasks):
            task.cancel()
        await asyncio.sleep(0)  # deliberate (noqa: sleep): one loop turn
    RUNNERS[runner](main())


def _head_end(out: bytes) -> int:
    return out.index(b"\r\n\r\n") + 4


async def _turns(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)  # deliberate (noqa: sleep): one loop turn


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
def test_a_stream_sent_without_waiting_takes_a_write_per_flush_at(runner: str, length: bool) -> None:
    async def app(scope, receive, send):
        headers = [(b"content-length", b"%d" % (16 * len(CHUNK)))] if length else []
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(16):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": i < 15})

    async def check(transport: Transport) -> None:
        await _turns()
        out = bytes(transport.out)
        body = out[_head_end(out):]
        if length:
            assert body == CHUNK * 16
        else:
            assert body == (b"10000\r\n" + CHUNK + b"\r\n") * 16 + b"0\r\n\r\n"
        # 1 MiB queued crosses FLUSH_AT a few times: a write per FLUSH_AT, not per message
        assert transport.calls <= 16 * len(CHUNK) // FLUSH_AT + 1, transport.calls

    _serve(runner, app, check)


@pytest.mark.parametrize("runner", RUNNERS)
def test_queued_bytes_go_out_while_the_app_waits(runner: str) -> None:
    gate: list[asyncio.Future[None]] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        gate.append(asyncio.get_running_loop().create_future())
        await gate[0]  # an event stream waiting for its next event
        await send({"type": "http.response.body", "body": b"data: 2\n\n"})

    async def check(transport: Transport) -> None:
        await _turns()
        assert gate and not gate[0].done()
        assert bytes(transport.out).endswith(b"9\r\ndata: 1\n\n\r\n")
        gate[0].set_result(None)
        await _turns()
        assert bytes(transport.out).endswith(b"9\r\ndata: 2\n\n\r\n0\r\n\r\n")

    _serve(runner, app, check)


@pytest.mark.parametrize("runner", RUNNERS)
def test_queued_bytes_past_flush_at_are_written_at_once(runner: str) -> None:
    seen: list[int] = []
    transports: list[Transport] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(FLUSH_AT // len(CHUNK) + 1):
            await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
            seen.append(len(transports[0].out))
        await send({"type": "http.response.body", "body": b""})

    async def check(transport: Transport) -> None:
        await _turns()

    # the app looks at the transport during its own step, before any turn ends
    original = Transport.__init__

    def init(self: Transport) -> None:
        original(self)
        transports.append(self)

    Transport.__init__ = init  # type: ignore[method-assign]
    try:
        _serve(runner, app, check)
    finally:
        Transport.__init__ = original  # type: ignore[method-assign]
    assert seen[0] == 0  # the first message is queued...
    assert seen[-1] >= FLUSH_AT  # ...but never more than FLUSH_AT of them


@pytest.mark.parametrize("runner", RUNNERS)
def test_queued_bytes_go_out_before_the_close_after_an_app_error(runner: str) -> None:
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"100")]})
        await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
        raise RuntimeError("boom")

    async def check(transport: Transport) -> None:
        await _turns()
        assert transport.closed
        assert bytes(transport.out).endswith(b"\r\n\r\n" + b"x" * 10)

    _serve(runner, app, check)
