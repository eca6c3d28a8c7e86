"""The websocket protocol without sockets: a wsproto client talks to it in memory,
every test on both protocol backends (websockets, wsproto)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from typing import Any

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, RejectConnection, RejectData,
    Request, TextMessage,
)

from workers.http.framing import is_websocket_upgrade as is_upgrade
from workers import websocket
from workers.websocket import ClientDisconnected, WebSocketLimits

BACKEND = "websockets"  # set for each test by the backend fixture


@pytest.fixture(autouse=True, params=["websockets", "wsproto"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sys.modules[__name__], "BACKEND", request.param)
    return request.param


def hand_over(transport: Any, app: Any, scope: dict[str, Any], data: bytes,
              on_close: Any = None, limits: WebSocketLimits | None = None) -> Any:
    """workers.websocket.hand_over on this test's backend."""
    limits = dataclasses.replace(limits or WebSocketLimits(), backend=BACKEND)
    protocol = websocket.hand_over(transport, app, scope, data, on_close=on_close,
                                   limits=limits)
    assert protocol.ws.name == BACKEND
    return protocol

HTTP_SCOPE = {"type": "http", "http_version": "1.1", "scheme": "http", "path": "/ws",
              "raw_path": b"/ws", "query_string": b"", "root_path": "", "headers": [],
              "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "state": {},
              "method": "GET"}


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.protocol: Any = None
        self.paused = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.aborted = True
        self.close()

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False


def handshake(app: Any, request: Request | None = None, on_close: Any = None,
              limits: WebSocketLimits | None = None) -> tuple[WSConnection, FakeTransport, Any]:
    """A client's upgrade ``request`` (by default ``GET /``) handed over in memory;
    returns the client, the transport and the protocol."""
    client = WSConnection(ConnectionType.CLIENT)
    transport = FakeTransport()
    protocol = hand_over(transport, app, dict(HTTP_SCOPE),
                         client.send(request or Request(host="x", target="/")),
                         on_close=on_close, limits=limits)
    return client, transport, protocol


def client_events(client: WSConnection, transport: FakeTransport) -> list[Any]:
    client.receive_data(bytes(transport.written))
    transport.written.clear()
    return list(client.events())


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)  # deliberate (noqa: sleep): one loop iteration, not a wait


def test_is_upgrade() -> None:
    assert is_upgrade([(b"connection", b"keep-alive, Upgrade"), (b"upgrade", b"WebSocket")])
    assert not is_upgrade([(b"upgrade", b"websocket")])
    assert not is_upgrade([(b"connection", b"upgrade"), (b"upgrade", b"h2c")])


def test_echo_roundtrip_and_close() -> None:
    seen: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket" and scope["scheme"] == "ws"
        assert scope["subprotocols"] == ["chat"]
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept", "subprotocol": "chat"})
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "websocket.disconnect":
                return
            if "text" in message and message["text"] is not None:
                await send({"type": "websocket.send", "text": message["text"].upper()})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"][::-1]})

    async def main() -> None:
        client, transport, _ = handshake(
            app, Request(host="x", target="/ws", subprotocols=["chat"]))
        await settle()
        events = client_events(client, transport)
        assert isinstance(events[0], AcceptConnection) and events[0].subprotocol == "chat"
        transport.protocol.data_received(client.send(TextMessage(data="hi")))
        transport.protocol.data_received(client.send(BytesMessage(data=b"abc")))
        await settle()
        events = client_events(client, transport)
        assert [e.data for e in events] == ["HI", b"cba"]
        transport.protocol.data_received(client.send(CloseConnection(code=1000)))
        await settle()
        assert seen[-1] == {"type": "websocket.disconnect", "code": 1000, "reason": ""}
        assert transport.closing

    asyncio.run(main())


def test_close_before_accept_is_403_and_send_after_close_raises() -> None:
    errors: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.close"})
        try:
            await send({"type": "websocket.send", "text": "late"})
        except ClientDisconnected as exc:
            errors.append(exc)

    async def main() -> None:
        client, transport, _ = handshake(app)
        await settle()
        events = client_events(client, transport)
        assert isinstance(events[0], RejectConnection) and events[0].status_code == 403

    asyncio.run(main())
    assert errors and isinstance(errors[0], OSError)


def test_app_exception_after_accept_closes_1011() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        raise ValueError("app bug")

    async def main() -> None:
        client, transport, _ = handshake(app)
        await settle()
        events = client_events(client, transport)
        assert isinstance(events[0], AcceptConnection)
        assert isinstance(events[1], CloseConnection) and events[1].code == 1011

    asyncio.run(main())


async def never_receiving_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accepts, then never calls receive() again: what the client sends piles up."""
    await receive()
    await send({"type": "websocket.accept"})
    await asyncio.Event().wait()


def test_reading_pauses_when_the_app_does_not_receive() -> None:
    async def main() -> None:
        client, transport, _ = handshake(never_receiving_app)
        await settle()
        client_events(client, transport)
        for i in range(40):
            transport.protocol.data_received(client.send(TextMessage(data=str(i))))
        assert transport.paused
        transport.protocol.task.cancel()

    asyncio.run(main())


@pytest.mark.parametrize("junk", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"])
def test_bad_upgrade_request_is_400(junk: bytes) -> None:
    called = []  # (an exception raised in the app would only be logged by the server)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        called.append(scope)

    async def main() -> None:
        transport = FakeTransport()
        hand_over(transport, app, dict(HTTP_SCOPE), junk)
        await settle()
        assert transport.written.startswith(b"HTTP/1.1 400 ")
        assert transport.closing

    asyncio.run(main())
    assert called == [], "the app was run for a refused handshake"


# ---------------------------------------------------------------- the close handshake


def accepted(app: Any, limits: WebSocketLimits | None = None,
             extensions: list[str] | None = None) -> tuple[WSConnection, FakeTransport, Any]:
    """A handshake done in memory; returns the client, the transport and the protocol."""
    client, transport, protocol = handshake(
        app, Request(host="x", target="/ws", extensions=extensions or []),
        on_close=lambda ws: finished.append(ws), limits=limits)
    finished: list[Any] = []
    protocol.finished_calls = finished
    return client, transport, protocol


async def opened(app: Any, limits: WebSocketLimits | None = None
                 ) -> tuple[WSConnection, FakeTransport, Any]:
    """accepted(), with the app run to its accept and the handshake read by the client:
    where a test about messages starts."""
    client, transport, protocol = accepted(app, limits)
    await settle()
    client_events(client, transport)
    return client, transport, protocol


def recording_app(seen: list[dict[str, Any]], ignore_disconnect: bool = False) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await receive()
            await send({"type": "websocket.accept"})
            while True:
                message = await receive()
                seen.append(message)
                if message["type"] == "websocket.disconnect":
                    if ignore_disconnect:
                        await asyncio.Event().wait()
                    return
        finally:
            seen.append({"type": "finally"})
    return app


@pytest.mark.parametrize("code", [1012, 1001])
def test_a_stop_sends_its_code_tells_the_app_and_awaits_the_clients_close(code: int) -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        client, transport, ws = await opened(recording_app(seen),
                                             WebSocketLimits(close_timeout=30))
        ws.shutdown(code)
        await settle()
        events = client_events(client, transport)
        assert [(type(e), e.code) for e in events] == [(CloseConnection, code)]
        assert seen[:2] == [{"type": "websocket.disconnect", "code": code, "reason": ""},
                            {"type": "finally"}]  # the app heard why, and returned
        assert not transport.closing  # TCP stays open: the handshake is not done yet
        assert ws.finished_calls == []  # nor is the drain of this connection
        transport.protocol.data_received(client.send(events[0].response()))
        await settle()
        assert transport.closing and not transport.aborted  # closed on the client's answer
        assert ws.close_timer is None
        assert ws.finished_calls == [ws]

    asyncio.run(main())


def test_a_client_that_never_answers_the_close_is_aborted_at_the_close_timeout() -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> float:
        client, transport, ws = accepted(recording_app(seen), WebSocketLimits(close_timeout=0.2))
        await settle()
        loop = asyncio.get_running_loop()
        started = loop.time()
        ws.shutdown(1012)
        while not transport.closing:
            assert loop.time() - started < 5, "never closed"
            await asyncio.sleep(0.01)  # deliberate (noqa: sleep): poll step of a bounded wait
        assert transport.aborted  # not close(): a silent peer would hold a flush forever
        await settle()
        assert ws.finished_calls == [ws]
        return loop.time() - started

    took = asyncio.run(main())
    assert 0.15 < took < 2, took


def test_the_drain_waits_for_the_app_task_not_only_for_the_connection() -> None:
    """A client gone, the app's task still running (it ignores the disconnect):
    not finished until the task ends; abort() cancels it and its finally runs."""
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        client, transport, ws = await opened(recording_app(seen, ignore_disconnect=True))
        transport.protocol.data_received(client.send(CloseConnection(code=1000)))
        await settle()
        assert transport.closing and seen[0]["code"] == 1000
        assert ws.finished_calls == [] and not ws.task.done()
        ws.abort()
        await settle()
        assert seen[-1] == {"type": "finally"} and ws.finished_calls == [ws]

    asyncio.run(main())


def test_a_stop_while_the_app_decides_closes_right_after_its_accept() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await gate.wait()
        await send({"type": "websocket.accept"})
        assert (await receive()) == {"type": "websocket.disconnect", "code": 1001, "reason": ""}

    gate = asyncio.Event()

    async def main() -> None:
        client, transport, ws = accepted(app)
        await settle()
        ws.shutdown(1001)
        gate.set()
        await settle()
        events = client_events(client, transport)
        assert isinstance(events[0], AcceptConnection)
        assert isinstance(events[1], CloseConnection) and events[1].code == 1001

    asyncio.run(main())


def test_messages_after_our_close_are_dropped_and_reading_resumes_for_the_close() -> None:
    async def main() -> None:
        client, transport, ws = await opened(never_receiving_app, WebSocketLimits(max_queue=3))
        for i in range(3):
            transport.protocol.data_received(client.send(TextMessage(data=str(i))))
        assert transport.paused and len(ws.inbox) == 3  # --ws-max-queue 3 reached
        ws.shutdown(1012)
        assert not transport.paused  # the client's close frame must get through
        transport.protocol.data_received(client.send(TextMessage(data="late")))
        assert [m.get("text") for m in ws.inbox] == ["0", "1", "2", None]  # + the disconnect
        ws.task.cancel()

    asyncio.run(main())


@pytest.mark.parametrize("max_queue", [1, 2, 5])
def test_reading_pauses_at_max_queue_and_resumes_at_half(max_queue: int) -> None:
    received: list[Any] = []

    async def main() -> None:
        go = asyncio.Event()  # made inside the loop that awaits it

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await go.wait()
            while True:
                received.append(await receive())

        client, transport, ws = await opened(app, WebSocketLimits(max_queue=max_queue))
        for i in range(max_queue - 1):
            transport.protocol.data_received(client.send(TextMessage(data=str(i))))
        assert not transport.paused
        transport.protocol.data_received(client.send(TextMessage(data="last")))
        assert transport.paused
        go.set()
        await settle()
        assert not transport.paused and len(received) == max_queue
        ws.task.cancel()

    asyncio.run(main())


def test_send_waits_while_the_transport_is_over_its_high_water_mark() -> None:
    progress: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for i in range(5):
            await send({"type": "websocket.send", "bytes": b"x" * 1000})
            progress.append(i)

    async def main() -> None:
        client, transport, ws = accepted(app)
        ws.pause_writing()  # the client stopped reading
        await settle()
        assert progress == []  # the first send wrote, then waits
        ws.resume_writing()
        await settle()
        assert progress == [0, 1, 2, 3, 4]

    asyncio.run(main())


@pytest.mark.parametrize("deflate", [True, False])
def test_per_message_deflate_is_accepted_only_when_enabled(deflate: bool) -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    async def main() -> list[Any]:
        from wsproto.extensions import PerMessageDeflate
        client, transport, _ = handshake(
            app, Request(host="x", target="/", extensions=[PerMessageDeflate()]),
            limits=WebSocketLimits(per_message_deflate=deflate))
        await settle()
        event = client_events(client, transport)[0]
        assert isinstance(event, AcceptConnection)
        return event.extensions

    negotiated = asyncio.run(main())
    assert [e.name for e in negotiated] == (["permessage-deflate"] if deflate else [])


# ---------------------------------------------------------------- frames, both backends


def client_frame(opcode: int, payload: bytes, fin: bool = True,
                 mask: bytes = b"\x37\xfa\x21\x3d") -> bytes:
    """One masked frame as a client sends it (RFC 6455 5.2), built by hand so a
    test can split a UTF-8 character or send what no client library would."""
    length = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if length < 126:
        head += bytes([0x80 | length])
    elif length < 65536:
        head += bytes([0x80 | 126]) + length.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + length.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def test_fragments_make_one_message_even_split_inside_a_character() -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        client, transport, ws = await opened(recording_app(seen))
        text = "d\u00e9j\u00e0 vu".encode()  # "é" is 2 bytes: split it between frames
        ws.data_received(client_frame(0x1, text[:2], fin=False))
        ws.data_received(client_frame(0x0, text[2:5], fin=False))
        ws.data_received(client_frame(0x0, text[5:]))
        ws.data_received(client_frame(0x2, b"ab", fin=False) + client_frame(0x0, b"cd"))
        await settle()
        assert seen == [{"type": "websocket.receive", "text": "d\u00e9j\u00e0 vu"},
                        {"type": "websocket.receive", "bytes": b"abcd"}]
        assert type(seen[1]["bytes"]) is bytes
        ws.task.cancel()

    asyncio.run(main())


def test_invalid_utf8_in_a_text_message_closes_with_1007() -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        client, transport, ws = await opened(recording_app(seen))
        ws.data_received(client_frame(0x1, b"ok \xff\xfe"))
        await settle()
        events = client_events(client, transport)
        assert [(type(e), e.code) for e in events] == [(CloseConnection, 1007)]
        assert seen[0]["type"] == "websocket.disconnect" and seen[0]["code"] == 1007
        assert transport.closing

    asyncio.run(main())


def test_a_ping_gets_its_pong_and_the_app_hears_nothing() -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        client, transport, ws = await opened(recording_app(seen))
        ws.data_received(client.send(Ping(payload=b"are you there")))
        await settle()
        events = client_events(client, transport)
        assert [(type(e), e.payload) for e in events] == [(Pong, b"are you there")]
        assert seen == []
        ws.task.cancel()

    asyncio.run(main())


def test_a_message_over_max_size_closes_with_1009_in_one_frame_or_many() -> None:
    for frames in ([client_frame(0x2, b"x" * 200)],
                   [client_frame(0x2, b"x" * 60, fin=False), client_frame(0x0, b"x" * 60)]):
        seen: list[dict[str, Any]] = []

        async def main() -> None:
            client, transport, ws = await opened(recording_app(seen), WebSocketLimits(max_size=100))
            for data in frames:
                ws.data_received(data)
            await settle()
            closes = [e for e in client_events(client, transport)
                      if isinstance(e, CloseConnection)]
            assert [e.code for e in closes] == [1009]
            assert seen[0]["type"] == "websocket.disconnect" and seen[0]["code"] == 1009
            assert not any(m["type"] == "websocket.receive" for m in seen)

        asyncio.run(main())


def test_the_clients_close_code_and_reason_reach_the_app_and_are_answered() -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        client, transport, ws = await opened(recording_app(seen))
        ws.data_received(client.send(CloseConnection(code=4001, reason="bye now")))
        await settle()
        events = client_events(client, transport)
        assert [(type(e), e.code) for e in events] == [(CloseConnection, 4001)]
        assert seen[0] == {"type": "websocket.disconnect", "code": 4001, "reason": "bye now"}
        assert transport.closing and ws.finished_calls == [ws]

    asyncio.run(main())


def test_an_app_that_accepts_a_subprotocol_the_client_did_not_offer_gets_500() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept", "subprotocol": "graphql-ws"})

    async def main() -> None:
        client, transport, _ = handshake(
            app, Request(host="x", target="/", subprotocols=["chat"]))
        await settle()
        events = client_events(client, transport)
        assert isinstance(events[0], RejectConnection) and events[0].status_code == 500
        assert transport.closing

    asyncio.run(main())


def test_an_app_response_to_the_handshake_arrives_whole_from_parts() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"www-authenticate", b"Bearer"),
                                (b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"who ",
                    "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"are you?"})

    async def main() -> None:
        client, transport, _ = handshake(app)
        await settle()
        events = client_events(client, transport)
        assert isinstance(events[0], RejectConnection) and events[0].status_code == 401
        assert (b"www-authenticate", b"Bearer") in events[0].headers
        assert b"".join(e.data for e in events[1:] if isinstance(e, RejectData)) == \
            b"who are you?"
        assert transport.closing

    asyncio.run(main())


def test_a_head_the_http_gate_admits_is_not_refused_by_the_backend() -> None:
    """--limit-request-field-size and --limit-request-fields may be raised past
    the protocol library's own head limits (websockets: 8 KiB lines, 128 fields)."""
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})

    async def main() -> None:
        extra = [(b"x-field-%d" % i, b"v") for i in range(200)] + [(b"cookie", b"c" * 20000)]
        client, transport, _ = handshake(
            app, Request(host="x", target="/", extra_headers=extra))
        await settle()
        assert isinstance(client_events(client, transport)[0], AcceptConnection)
        transport.protocol.task.cancel()

    asyncio.run(main())


# ---------------------------------------------------------------- any split of the bytes


def echo_app(seen: list[dict[str, Any]]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await send({"type": "websocket.send", "text": message["text"]})
            else:
                await send({"type": "websocket.send", "bytes": message["bytes"]})
    return app


SMALL = [  # (what the client sends, what the app receives, what comes back)
    (client_frame(0x1, b"hello"), {"text": "hello"}, ("TextMessage", "hello")),
    (client_frame(0x2, bytes(range(200))), {"bytes": bytes(range(200))},  # a 16-bit length
     ("BytesMessage", bytes(range(200)))),
    (client_frame(0x9, b"ping!"), None, ("Pong", b"ping!")),
    (client_frame(0x1, "caf\u00e9 ".encode()[:4], fin=False)  # split inside the "é"
     + client_frame(0x0, "caf\u00e9 ".encode()[4:]), {"text": "caf\u00e9 "},
     ("TextMessage", "caf\u00e9 ")),
    (client_frame(0x1, "\u2603".encode()), {"text": "\u2603"}, ("TextMessage", "\u2603")),
]
BIG = [SMALL[0], (client_frame(0x2, b"x" * 70000), {"bytes": b"x" * 70000},  # 64-bit length
                  ("BytesMessage", b"x" * 70000)), SMALL[-1]]


@pytest.mark.parametrize("frames, chunk", [(SMALL, c) for c in (10**6, 1, 2, 3, 7, 100)]
                         + [(BIG, c) for c in (10**6, 7, 1000, 65536)])
def test_any_split_of_the_bytes_gives_the_same_messages_and_answers(
        frames: list[Any], chunk: int) -> None:
    stream = b"".join(raw for raw, _, _ in frames)
    seen: list[dict[str, Any]] = []

    async def main() -> list[Any]:
        client, transport, ws = await opened(echo_app(seen), WebSocketLimits(max_size=100_000))
        for start in range(0, len(stream), chunk):
            ws.data_received(stream[start:start + chunk])
        await settle()  # the app echoes
        answers = client_events(client, transport)
        # (the close comes last, alone: an echo after it could not be sent)
        ws.data_received(client_frame(0x8, (1000).to_bytes(2, "big") + b"done"))
        await settle()
        return answers + client_events(client, transport)

    answers = asyncio.run(main())
    assert seen == [{"type": "websocket.receive", **m} for _, m, _ in frames if m] + \
        [{"type": "websocket.disconnect", "code": 1000, "reason": "done"}]
    kinds = [(type(e).__name__, getattr(e, "data", getattr(e, "payload", None)))
             for e in answers]
    expected = [answer for _, _, answer in frames] + [("CloseConnection", None)]
    # the pong comes before the echoes of the messages that arrived with its ping
    assert sorted(kinds, key=repr) == sorted(expected, key=repr)
    assert [k for k in kinds if k[0] != "Pong"] == [k for k in expected if k[0] != "Pong"]
    assert answers[-1].code == 1000


def test_a_frame_header_cut_anywhere_is_read_whole() -> None:
    """The tail of a cut header must not be taken for a frame of its own: here,
    from its fourth byte on, this one reads as a small masked text frame."""
    payload = bytes(range(129))
    frame = client_frame(0x2, payload, mask=b"\x85\x00\x00\x00")
    assert frame[3:5] == b"\x81\x85"  # 16-bit length 129, then the mask's first byte
    for cut in range(1, 9):
        seen: list[dict[str, Any]] = []

        async def main() -> None:
            client, transport, ws = accepted(recording_app(seen))
            await settle()
            ws.data_received(frame[:cut])
            ws.data_received(frame[cut:] + client_frame(0x1, b"next"))
            await settle()
            assert seen == [{"type": "websocket.receive", "bytes": payload},
                            {"type": "websocket.receive", "text": "next"}], cut
            ws.task.cancel()

        asyncio.run(main())


def test_an_unmasked_client_frame_closes_with_1002() -> None:
    seen: list[dict[str, Any]] = []

    async def main() -> None:
        client, transport, ws = await opened(recording_app(seen))
        ws.data_received(bytes([0x81, 3]) + b"hel")  # short: no room for a mask
        await settle()
        events = client_events(client, transport)
        assert [(type(e), e.code) for e in events] == [(CloseConnection, 1002)]
        assert [m["type"] for m in seen[:1]] == ["websocket.disconnect"]
        assert seen[0]["code"] == 1002 and transport.closing

    asyncio.run(main())


def test_compressed_messages_both_ways_when_deflate_is_negotiated() -> None:
    from wsproto.extensions import PerMessageDeflate
    seen: list[dict[str, Any]] = []

    async def main() -> list[Any]:
        client, transport, ws = handshake(
            echo_app(seen), Request(host="x", target="/", extensions=[PerMessageDeflate()]))
        await settle()
        assert [e.name for e in client_events(client, transport)[0].extensions] == \
            ["permessage-deflate"]
        for text in ("a" * 1000, "b" * 10, "\u00e9" * 300):
            raw = client.send(TextMessage(data=text))
            assert raw[0] & 0x40  # RSV1: compressed
            ws.data_received(raw)
        await settle()
        echoes = client_events(client, transport)
        ws.task.cancel()
        return [e.data for e in echoes]

    assert asyncio.run(main()) == ["a" * 1000, "b" * 10, "\u00e9" * 300]
    assert [m["text"] for m in seen] == ["a" * 1000, "b" * 10, "\u00e9" * 300]
