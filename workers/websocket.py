"""WebSockets: the ASGI websocket protocol after an HTTP upgrade, one cycle over
two protocol backends (``ws_websockets``: the websockets library's sans-I/O
protocol; ``ws_wsproto``: wsproto), as ``workers.http`` has one cycle over two
HTTP parsers.

The request gate (``workers.http.framing``) detects ``Upgrade: websocket``;
the HTTP connection then calls ``hand_over()`` with the transport, the ASGI
scope it already built and every byte of the request it has read (head and
whatever followed). From then on this protocol
owns the transport. The backend does the framing (bytes -> ``on_*`` calls,
frames -> bytes); this module maps it to ASGI messages (spec 2.5), with bounded
buffers in both directions: past ``max_queue`` unread messages reading pauses,
and ``send()`` waits while the transport's buffer is over its high-water mark.

A backend is ``Backend(sink, write, max_size, per_message_deflate)``. It reads
with ``receive(data)`` and reports to the sink (this protocol): ``on_request
(subprotocols)``, ``on_bad_handshake()``, ``on_message(str | bytes, finished)``,
``on_pong()``, ``on_close_frame(code, reason)``. The cycle sends through it:
``accept``, ``reject`` / ``reject_body``, ``send_text`` / ``send_bytes``,
``close``, ``ping``; the backend writes every byte itself, its answers to pings
and to the client's close frame included.

Every close the server starts (the app's, a limit's, a stop's) follows RFC
6455 7.1: our close frame, the app told at once, then the client's close frame
awaited for up to ``close_timeout`` before TCP is closed (aborted, if the
client never answered). The server calls ``on_close`` once both the
connection and the app's task are over, so a drain can wait for both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import logging
from collections import deque
from collections.abc import Callable
from typing import Any

from workers.http.cycle import SPEC_VERSION
from workers.http.errors import ClientDisconnected

log = logging.getLogger("arbiter.error")

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclasses.dataclass(frozen=True)
class WebSocketLimits:
    """What an operator tunes (the --ws-* settings)."""

    max_size: int = MAX_MESSAGE_BYTES
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    close_timeout: float = 5.0  # for the client's close frame, after ours
    max_queue: int = 32  # unread incoming messages before reading pauses
    per_message_deflate: bool = True
    backend: str = "websockets"  # or "wsproto": --ws, resolved by backend_name()


def backend_name(name: str) -> str:
    """The protocol backend --ws names; auto: websockets when installed (it
    costs less than half of wsproto's CPU per message), else wsproto."""
    if name == "auto":
        return "websockets" if importlib.util.find_spec("websockets") else "wsproto"
    return name


def pick_backend(name: str) -> type:
    if backend_name(name) == "websockets":
        from workers.ws_websockets import WebsocketsBackend
        return WebsocketsBackend
    from workers.ws_wsproto import WsprotoBackend
    return WsprotoBackend


def hand_over(transport: asyncio.Transport, app: Any, scope: dict[str, Any], data: bytes,
              on_close: Callable[[WebSocketProtocol], None] | None = None,
              limits: WebSocketLimits | None = None) -> WebSocketProtocol:
    """Switch ``transport`` to a WebSocketProtocol that serves ``app``."""
    protocol = WebSocketProtocol(app, scope, on_close, limits)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    protocol.data_received(data)
    return protocol


class WebSocketProtocol(asyncio.Protocol):
    def __init__(self, app: Any, http_scope: dict[str, Any],
                 on_close: Callable[[WebSocketProtocol], None] | None = None,
                 limits: WebSocketLimits | None = None) -> None:
        self.app = app
        self.limits = limits or WebSocketLimits()
        self.max_size = self.limits.max_size
        self.max_queue = self.limits.max_queue
        self.ping_timer: asyncio.TimerHandle | None = None
        self.pong_timer: asyncio.TimerHandle | None = None
        self.scope = websocket_scope(http_scope)
        self.on_close = on_close
        self.ws = pick_backend(self.limits.backend)(self, self._write, self.max_size,
                                                    self.limits.per_message_deflate)
        self.transport: asyncio.Transport | None = None
        self.loop = asyncio.get_running_loop()
        self.inbox: deque[dict[str, Any]] = deque()
        self.inbox_waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.accepted = False
        self.closed = False  # no more frames may be sent
        self.handshake_done = False
        self.response_started = False
        self.reading_paused = False
        self.writing_paused = False
        self.parts: list[Any] = []  # the fragments of a message not finished yet
        self.message_size = 0
        self.task: asyncio.Task[None] | None = None
        self.close_timer: asyncio.TimerHandle | None = None
        self.transport_lost = False
        self.finished = False  # on_close was called
        self.drain_code: int | None = None  # a stop came while the app decided on accept

    # ---------------------------------------------------------- transport side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.ws.receive(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport_lost = True
        self._stop_pings()
        self._cancel_close_timer()
        if not self.closed:
            self.closed = True
            self._deliver({"type": "websocket.disconnect", "code": 1006, "reason": ""})
        if self.drain_waiter and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)
        self._maybe_finished()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.drain_waiter and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    def shutdown(self, code: int = 1012) -> None:
        """The worker stops (1001) or retires (1012): close with that code and
        await the client's close frame. An app still deciding whether to accept
        gets the close right after its accept."""
        if self.transport is None or self.transport_lost:
            return
        if not self.handshake_done:
            self.closed = True
            self.transport.close()
        elif self.accepted:
            self._start_close(code, "")
        elif not self.response_started:
            self.drain_code = code

    def abort(self) -> None:
        """A quick stop, or the graceful timeout is over: drop the connection and
        cancel the app's task (its ``finally`` blocks run)."""
        if self.transport is not None and not self.transport_lost:
            self.transport.abort()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def _maybe_finished(self) -> None:
        if self.finished or not self.transport_lost:
            return
        if self.task is not None and not self.task.done():
            return  # the app still runs (it may be handling the disconnect)
        self.finished = True
        if self.on_close:
            self.on_close(self)

    # ---------------------------------------------------------- what the backend reports

    def on_request(self, subprotocols: list[str]) -> None:
        """A valid handshake request: the app decides whether to accept it."""
        self.scope["subprotocols"] = subprotocols
        self.handshake_done = True
        self._deliver({"type": "websocket.connect"})
        self.task = self.loop.create_task(self._run_app())
        self.task.add_done_callback(lambda _: self._maybe_finished())

    def on_bad_handshake(self) -> None:
        if self.transport is None:
            return
        if not self.handshake_done:
            body = b"Invalid WebSocket upgrade request\n"
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                                 % (len(body), body))
        self.closed = True
        self.transport.close()

    def on_message(self, data: str | bytes, finished: bool) -> None:
        """Some or all of a text (str) or binary (bytes) message."""
        if self.closed:
            return  # after our close frame, data frames are dropped
        size = self.message_size + len(data)
        if size > self.max_size:
            self._start_close(1009, "message too big")
            return
        if not finished:
            self.parts.append(data)
            self.message_size = size
            return
        if self.parts:
            self.parts.append(data)
            data = data[:0].join(self.parts)  # "" or b"": the parts are all of one kind
            self.parts, self.message_size = [], 0
        if type(data) is str:
            message = {"type": "websocket.receive", "text": data}
        else:
            message = {"type": "websocket.receive",
                       "bytes": data if type(data) is bytes else bytes(data)}
        inbox = self.inbox
        inbox.append(message)
        waiter = self.inbox_waiter
        if waiter is not None:
            self.inbox_waiter = None
            if not waiter.done():
                waiter.set_result(None)
        if len(inbox) >= self.max_queue and self.transport and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def on_pong(self) -> None:
        if self.pong_timer is not None:
            self.pong_timer.cancel()
            self.pong_timer = None

    def on_close_frame(self, code: int, reason: str) -> None:
        """The client's close frame (the backend answered it), or a frame the
        backend refused (it sent its own close frame with ``code``)."""
        if self.closed:  # the answer to our close: the handshake is complete
            self._cancel_close_timer()
        else:  # the client closes first: tell the app
            self.closed = True
            self._stop_pings()
            self._deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self.transport is not None:
            self.transport.close()  # RFC 6455 7.1.1: the server closes TCP first

    # ---------------------------------------------------------- the close handshake

    def _start_close(self, code: int, reason: str) -> None:
        """Send our close frame, tell the app, then give the client close_timeout
        to answer with its own (read even if the app is not receiving)."""
        self._stop_pings()
        if self.closed:
            return  # a close frame went already, one way or the other
        self.ws.close(code, reason)
        self.closed = True
        self._deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
        if self.transport is None or self.transport_lost:
            return
        if self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()
        if self.limits.close_timeout:
            self.close_timer = self.loop.call_later(self.limits.close_timeout,
                                                    self._close_timed_out)
        else:
            self.transport.close()

    def _close_timed_out(self) -> None:
        self.close_timer = None
        log.info("closing a websocket at %s: no close frame from the client within %g s",
                 self.scope.get("path"), self.limits.close_timeout)
        if self.transport is not None:
            self.transport.abort()  # not close(): that would wait to flush to a silent peer

    def _cancel_close_timer(self) -> None:
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None

    # ---------------------------------------------------------- keepalive

    def _ping(self) -> None:
        """Keep idle connections alive through proxies, and find peers that
        vanished without a close (a laptop lid shut): no pong, 1011."""
        self.ping_timer = None
        if self.closed:
            return
        self.ws.ping(b"arbiter")
        if self.limits.ping_timeout and self.pong_timer is None:
            self.pong_timer = self.loop.call_later(self.limits.ping_timeout, self._no_pong)
        self.ping_timer = self.loop.call_later(self.limits.ping_interval, self._ping)

    def _no_pong(self) -> None:
        self.pong_timer = None
        log.info("closing a websocket at %s: no pong within %.0f s", self.scope.get("path"),
                 self.limits.ping_timeout)
        self._start_close(1011, "keepalive ping timeout")

    def _stop_pings(self) -> None:
        for timer in (self.ping_timer, self.pong_timer):
            if timer is not None:
                timer.cancel()
        self.ping_timer = self.pong_timer = None

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def _deliver(self, message: dict[str, Any]) -> None:
        self.inbox.append(message)
        waiter = self.inbox_waiter
        if waiter is not None:
            self.inbox_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # ---------------------------------------------------------- app side

    async def _run_app(self) -> None:
        try:
            await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.error("exception in the websocket app at %s", self.scope.get("path"),
                      exc_info=exc)
            if not self.accepted and not self.response_started:
                self._reject(500, [], b"")
            else:
                self._start_close(1011, "internal error")
            return
        if not self.accepted and not self.response_started:
            self._reject(500, [], b"")  # returned without accepting or closing
        elif not self.closed:
            self._start_close(1000, "")

    async def receive(self) -> dict[str, Any]:
        inbox = self.inbox
        while not inbox:
            self.inbox_waiter = waiter = self.loop.create_future()
            await waiter
        message = inbox.popleft()
        if not inbox and self.closed and message["type"] == "websocket.disconnect":
            inbox.append(message)  # keep answering disconnect
        if self.reading_paused and len(inbox) <= self.max_queue // 2 and self.transport:
            self.reading_paused = False
            self.transport.resume_reading()
        return message

    async def send(self, message: dict[str, Any]) -> None:
        if self.closed:
            raise ClientDisconnected("the websocket is closed")
        kind = message["type"]
        if kind == "websocket.send" and self.accepted:
            text = message.get("text")
            if text is not None:
                self.ws.send_text(text)
            else:
                self.ws.send_bytes(message.get("bytes") or b"")
            if self.writing_paused:
                await self._wait_writable()
        elif kind == "websocket.accept" and not self.accepted and not self.response_started:
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers") or []]
            subprotocol = message.get("subprotocol")
            if subprotocol is not None and subprotocol not in self.scope["subprotocols"]:
                raise RuntimeError(f"websocket.accept with subprotocol {subprotocol!r}, "
                                   "which the client did not offer")
            self.accepted = True
            self.ws.accept(subprotocol, headers)
            if self.drain_code is not None:  # the worker began to stop meanwhile
                self._start_close(self.drain_code, "")
            elif self.limits.ping_interval:
                self.ping_timer = self.loop.call_later(self.limits.ping_interval, self._ping)
        elif kind == "websocket.close":
            if self.accepted:
                self._start_close(int(message.get("code") or 1000), message.get("reason") or "")
            else:
                self._reject(403, [], b"")
        elif kind == "websocket.http.response.start" and not self.accepted \
                and not self.response_started:
            self.response_started = True
            headers = [(bytes(k), bytes(v)) for k, v in message.get("headers") or []]
            self.ws.reject(int(message["status"]), headers, True)
        elif kind == "websocket.http.response.body" and self.response_started:
            more = bool(message.get("more_body"))
            self.ws.reject_body(message.get("body") or b"", not more)
            if not more:
                self.closed = True
                if self.transport is not None:
                    self.transport.close()
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in this websocket state")

    async def _wait_writable(self) -> None:
        """Backpressure: while the transport's buffer is over its high-water mark
        (a client that reads slowly or not at all), send() does not return."""
        while self.writing_paused and not self.transport_lost:
            if self.drain_waiter is None or self.drain_waiter.done():
                self.drain_waiter = self.loop.create_future()  # shared by concurrent senders
            await self.drain_waiter

    def _reject(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if self.closed:
            return
        self.response_started = True
        self.ws.reject(status, [*headers, (b"content-length", b"%d" % len(body))], bool(body))
        if body:
            self.ws.reject_body(body, True)
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def websocket_scope(http_scope: dict[str, Any]) -> dict[str, Any]:
    scope = dict(http_scope)
    scope["type"] = "websocket"
    scope["asgi"] = {"version": "3.0", "spec_version": SPEC_VERSION}
    scope["scheme"] = "wss" if http_scope.get("scheme") == "https" else "ws"
    scope.pop("method", None)
    scope["subprotocols"] = []
    # the http scope's response extensions (pathsend...) are not for a websocket
    extensions: dict[str, Any] = {"websocket.http.response": {}}
    tls = (http_scope.get("extensions") or {}).get("tls")
    if tls is not None:
        extensions["tls"] = tls
    scope["extensions"] = extensions
    return scope
