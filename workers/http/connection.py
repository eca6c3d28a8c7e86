"""Transport <-> parser <-> cycle: the only asyncio glue of the HTTP stack.

Owns reads, writes, timers (header, keep-alive, body, write), flow control, pipelining
(one cycle at a time, reading paused meanwhile), handing a websocket
upgrade to ``workers.websocket``, and answering --health-path itself.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import socket
import struct
from collections import deque
from typing import Any
from urllib.parse import unquote

from workers.http import filesend
from workers.http.app_steps import enter_task, first_step, leave_task, resume
from workers.http.cycle import SPEC_VERSION, HttpCycle, scope_extensions, simple_response
from workers.http.errors import ClientDisconnected, RemoteProtocolError
from workers.http.framing import Head, origin_form
from workers.http.proxy import apply_proxy_headers, asgi_address
from workers.http.proxy_protocol import (ProxyProtocolError, ProxyProtocolParser, ProxyResult,
                                          could_start_header)
from workers.http.timeouts import Expiry, on_deadline

log = logging.getLogger("arbiter.error")
access_log = logging.getLogger("arbiter.access")


class HttpConnection(asyncio.Protocol):
    def __init__(self, server: Any, proxy_header: ProxyResult | None = None) -> None:
        self.server = server
        self.proxy_header = proxy_header  # read before the TLS handshake (proxy_tls.py)
        self.config = server.config
        self.loop: asyncio.AbstractEventLoop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = server.parser_class(self, self.config)
        self.cycles: deque[HttpCycle] = deque()
        self.parsing: HttpCycle | None = None
        self.body_waiter: asyncio.Future[None] | None = None
        self.drain_waiter: asyncio.Future[None] | None = None
        self.write_paused = False
        self.pending: list[bytes] = []  # queued body bytes, not yet on the transport
        self.pending_size = 0
        self.flush_scheduled = False
        self.read_paused = False
        self.closed = False
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0
        self.deadline: float | None = None
        self.write_timer: asyncio.TimerHandle | None = None
        self.write_backlog = 0
        self.running: HttpCycle | None = None
        self.head_timer = False  # the deadline running is timeout_header's
        self.proxy_parser: ProxyProtocolParser | None = None
        self.proxy_buffer: bytes | None = b""
        self.limit_concurrency = self.config.limit_concurrency
        self.access_log = self.config.access_log.enabled
        self.proxy_headers = self.config.proxy_headers
        health = self.config.health_path
        self.health_path = health.encode("ascii") if health else None
        self.client: tuple[str, int] | None = None
        self.server_addr: tuple[str, int] | None = None
        self.scheme = "http"
        self.tls: dict[str, Any] | None = None  # the ASGI tls extension
        # scope["extensions"] for HTTP/1.1 and HTTP/1.0 requests (shared, built once)
        self.extensions_11, self.extensions_10 = server.extensions
        self.upgrade_head: tuple[str, bytes, list[tuple[bytes, bytes]]] | None = None

    # ------------------------------------------------------------ transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.client = asgi_address(transport.get_extra_info("peername"))
        self.server_addr = asgi_address(transport.get_extra_info("sockname"))
        if transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
            self.tls = self.server.tls_extension(transport)
            self.extensions_11, self.extensions_10 = scope_extensions(self.tls)
        self.server.connections.add(self)
        if self.proxy_header is not None:
            self._use_proxy_header(self.proxy_header)
        elif self.config.proxy_protocol and self.scheme == "http" \
                and self.server.trusted.contains(self.client):  # (TLS: proxy_tls.py read it)
            self.proxy_parser = ProxyProtocolParser()
            self.proxy_buffer = b""
        self.head_timer = True
        self._arm(self.config.timeout_header_s)
        if self.server.stopping:  # accepted as the server began to stop
            self.shutdown()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self._disarm()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._stop_write_timer()
        self.pending = []
        for cycle in self.cycles:
            cycle.client_gone()
        self._wake_body()
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)
        self.server.connection_closed()

    def data_received(self, data: bytes) -> None:
        if self.proxy_parser is not None:
            data = self._proxy_protocol(data)
            if not data:
                return
        try:
            self.parser.feed(data)
        except RemoteProtocolError as exc:
            self._reject(exc.status, exc.message)
            return
        except _Upgraded:
            return
        self._wake_body()
        if self.cycles:
            if self.running is None:
                self._run(self.cycles[0])
        elif not self.head_timer and not self.server.stopping:
            # part of a request head: the client has timeout_header from now
            # to complete it, however slowly the rest trickles in
            self.head_timer = True
            self._arm(self.config.timeout_header_s)

    def _proxy_protocol(self, data: bytes) -> bytes:
        """A trusted peer (a load balancer) may start with a PROXY protocol v1
        or v2 header naming the real client; anything else is plain HTTP."""
        if self.proxy_buffer is not None:  # not yet known whether a header comes
            data = self.proxy_buffer + data
            if not could_start_header(data):
                self.proxy_parser = None  # not a PROXY header: plain HTTP
                return data
            if len(data) < 6 or (data[:1] == b"\r" and len(data) < 12):
                self.proxy_buffer = data  # too short to tell yet
                return b""
            self.proxy_buffer = None
        assert self.proxy_parser is not None
        try:
            result = self.proxy_parser.feed(data)
        except ProxyProtocolError as exc:
            log.info("closing a connection from %s: %s", self.client, exc)
            self._reject(400, "Invalid PROXY protocol header")
            return b""
        if result is None:
            return b""
        self.proxy_parser = None
        self._use_proxy_header(result)
        return result.leftover

    def _use_proxy_header(self, result: ProxyResult) -> None:
        """The client and server a trusted proxy named (None: keep the socket's)."""
        if result.client is not None:
            self.client = result.client
        if result.server is not None:
            self.server_addr = result.server

    def pause_writing(self) -> None:
        self.write_paused = True
        # the stall clock starts here, not only when the app awaits a drain:
        # a body handed over in one message, then a graceful close, must
        # not pin the connection (and its buffer) for as long as nobody reads
        if self.config.timeout_write_s and self.write_timer is None:
            self.write_backlog = self._buffered()
            self.write_timer = self.loop.call_later(self.config.timeout_write_s,
                                                    self._write_stalled)

    def resume_writing(self) -> None:
        self.write_paused = False
        self._stop_write_timer()
        if self.drain_waiter is not None and not self.drain_waiter.done():
            self.drain_waiter.set_result(None)

    # ------------------------------------------------------------ parser sink

    def on_head(self, head: Head) -> None:
        self.deadline = None
        self.head_timer = False
        target = head.target
        if target[:1] != b"/" and target[:4].lower() == b"http":
            target = origin_form(target)
        path_bytes, _, query = target.partition(b"?")
        root = self.config.root_path
        try:
            path = path_bytes.decode("ascii")
            if "%" in path:
                path = unquote(path, errors="strict")
        except UnicodeError:
            raise RemoteProtocolError(400, "Invalid request target") from None
        method = head.method
        headers = head.headers
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": SPEC_VERSION},
            "http_version": head.version, "method": method, "scheme": self.scheme,
            "path": root + path, "raw_path": path_bytes, "query_string": query,
            "root_path": root, "headers": headers, "client": self.client,
            "server": self.server_addr, "state": dict(self.server.lifespan_state),
            "extensions": self.extensions_11 if head.version == "1.1" else self.extensions_10,
        }
        if self.proxy_headers:
            apply_proxy_headers(scope, self.server.trusted)
        if head.upgrade:  # a WebSocket: on_upgrade comes next, with the bytes after the head
            self.upgrade_head = (method, target, headers)
            self.upgrade_scope = scope
            return
        cycle = HttpCycle(scope, self, head.keep_alive and not self.server.stopping,
                          head.framing.expect_continue, self.server.default_headers)
        self.parsing = cycle
        self.body_received = 0
        self.cycles.append(cycle)
        if len(self.cycles) > 1:
            self.pause_reading()  # pipelined: answer in order, one at a time

    def on_body(self, data: bytes) -> None:
        if self.parsing is None:
            return
        limit = self.config.limit_request_body
        self.body_received += len(data)
        if limit and self.body_received > limit:
            raise RemoteProtocolError(413, "Request body too large")
        self.parsing.feed_body(data)

    def on_end(self) -> None:
        if self.parsing is not None:
            self.parsing.feed_end()
            self.parsing = None

    def on_upgrade(self, leftover: bytes) -> None:
        assert self.upgrade_head is not None and self.transport is not None  # on_head came first
        from workers import websocket
        method, target, headers = self.upgrade_head
        if self.server.stopping:  # draining: the client retries, and a new worker takes it
            self.write(simple_response(503, "Service Unavailable",
                                       b"retry-after: 1\r\n" + self.server.default_headers()))
            self.server.responses_by_class[5] += 1
            self._close()
            raise _Upgraded()
        raw = b"%s %s HTTP/1.1\r\n" % (method.encode(), target) + b"".join(
            n + b": " + v + b"\r\n" for n, v in headers) + b"\r\n" + leftover
        self.server.connections.discard(self)
        self._disarm()
        ws = websocket.hand_over(self.transport, self.server.app, self.upgrade_scope, raw,
                                 on_close=self.server.websocket_finished,
                                 limits=self.server.websocket_limits)
        self.server.websockets.add(ws)
        raise _Upgraded()

    # ------------------------------------------------------------ cycle io

    def write(self, data: bytes) -> None:
        if self.pending:
            self.pending.append(data)
            self.flush()
        elif self.transport is not None and not self.closed:
            self.transport.write(data)

    def queue(self, data: bytes) -> None:
        """Body bytes with more to come: written together with what follows
        (the next write, FLUSH_AT bytes, a drain), or at the latest on the next
        turn of the loop. A response streamed without waiting goes out in one
        vectored write per FLUSH_AT bytes instead of a syscall per message
        (measured: 17 writes per stream-1m response became 4 writev calls)."""
        self.pending.append(data)
        self.pending_size += len(data)
        if self.pending_size >= FLUSH_AT:
            self.flush()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self.flush_scheduled = False
        self.flush()

    def flush(self) -> None:
        pending = self.pending
        if pending:
            self.pending = []
            self.pending_size = 0
            if self.transport is not None and not self.closed:
                self.transport.writelines(pending)

    def drain(self) -> asyncio.Future[None] | None:
        if not self.write_paused or self.closed:
            return None
        self.flush()  # (what is queued is bounded by FLUSH_AT; it goes before the wait)
        self.drain_waiter = self.loop.create_future()
        if self.config.timeout_write_s and self.write_timer is None:
            self.write_backlog = self._buffered()
            self.write_timer = self.loop.call_later(self.config.timeout_write_s,
                                                    self._write_stalled)
        return self.drain_waiter

    async def send_file(self, fd: int, offset: int, count: int) -> None:
        """File bytes of a response body (pathsend, zerocopysend): zero-copy
        where the socket allows. After a failure part of the file may be out,
        so the connection is closed: nothing more can go on the wire."""
        self.flush()  # the file's bytes come after what is queued
        try:
            await filesend.send_file(self, fd, offset, count)
        except BaseException:
            self._close()
            raise

    def _buffered(self) -> int:
        return self.transport.get_write_buffer_size() if self.transport is not None else 0

    def _write_stalled(self) -> None:
        """The client has not read for timeout_write: drop it, unless it is
        reading slowly (the buffer shrank), which is progress."""
        self.write_timer = None
        if not self.write_paused:  # (closed and flushing still counts as stalled)
            return
        backlog = self._buffered()
        if backlog < self.write_backlog:
            self.write_backlog = backlog
            self.write_timer = self.loop.call_later(self.config.timeout_write_s,
                                                    self._write_stalled)
            return
        self.drop_stalled_client()

    def drop_stalled_client(self) -> None:
        log.info("dropping a client that read nothing for %.0f s", self.config.timeout_write_s)
        if self.transport is not None:
            self.closed = True
            sock = self.transport.get_extra_info("socket")
            if sock is not None:  # reset: else the kernel keeps the unsent bytes, orphaned
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
                except OSError:
                    pass
            self.transport.abort()

    def _stop_write_timer(self) -> None:
        if self.write_timer is not None:
            self.write_timer.cancel()
            self.write_timer = None

    def _wake_body(self) -> None:
        if self.body_waiter is not None and not self.body_waiter.done():
            self.body_waiter.set_result(None)

    def wait_body(self) -> asyncio.Future[None]:
        self.body_waiter = self.loop.create_future()
        if self.parsing is not None and self.parsing is self.running \
                and self.config.timeout_body_s:
            # the app waits on a body the client still owes: each wait (so
            # each arrival of bytes) restarts the clock; only a stall runs out
            self._arm(self.config.timeout_body_s)
        return self.body_waiter

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closed \
                and len(self.cycles) <= 1:
            self.read_paused = False
            self.transport.resume_reading()

    def cycle_done(self, cycle: HttpCycle) -> None:
        server = self.server
        server.requests_done += 1
        server.responses_by_class[(cycle.status or 500) // 100] += 1
        if server.requests_done == 1 and server.on_first_response is not None:
            server.on_first_response()
        if self.body_waiter is not None:
            self._wake_body()  # an app task waiting in receive() now gets http.disconnect
        if self.access_log:
            self.server.log_access(cycle, self.client)

    # ------------------------------------------------------------ running the app

    def _run(self, cycle: HttpCycle) -> None:
        """Run the app's first step now, as its own Task's (``app_steps``), in its
        own copy of the context, as a Task would."""
        self.running = cycle
        if self.health_path is not None and cycle.scope["raw_path"] == self.health_path:
            self._answer_health(cycle)
            return
        server = self.server
        server.active += 1
        if self.limit_concurrency and server.active >= self.limit_concurrency \
                and server.over_limit():  # the last slot taken: stop accepting
            cycle.answer(503, "Service Unavailable", b"retry-after: 1\r\n")
            self._finished(cycle, None)
            return
        loop = self.loop
        context = contextvars.copy_context()
        # (the app's coroutine, what it waits on, the cycle) once it waits; until then
        # the task holds nothing of the request, whose objects die with its response
        # (held to the next turn, they were promoted by the GC: see app_steps)
        waiting: list[Any] = []
        task = asyncio.Task(self._finish(waiting), loop=loop, context=context)
        outcome: BaseException | None = None
        suspended = False
        enter_task(loop, task)
        try:
            coro, waiting_on = context.run(first_step, server.app, cycle)
            suspended = True
        except StopIteration:
            pass
        except BaseException as exc:
            outcome = exc
        finally:
            leave_task(loop, task)
        if not suspended:  # done in one step
            self._finished(cycle, outcome)
            return
        waiting.extend((coro, waiting_on, cycle))
        server.tasks.add(task)
        task.add_done_callback(server.tasks.discard)
        task.add_done_callback(lambda _: self._cancelled_early(waiting))

    def _answer_health(self, cycle: HttpCycle) -> None:
        """--health-path: answered here, never by the app, and counted nowhere
        (no request total, no concurrency slot; an access log line only with
        --access-log-health). 503, closing, once the worker is stopping."""
        if cycle.scope["method"] not in ("GET", "HEAD"):
            cycle.answer(405, "Method Not Allowed", b"allow: GET, HEAD\r\n", counted=False)
        elif self.server.unhealthy:
            cycle.answer(503, "Service Unavailable", counted=False)
        else:
            cycle.answer(200, "OK", keep_alive=True, counted=False)
        if self.access_log and self.config.access_log.health:
            self.server.log_access(cycle, self.client)
        self._after(cycle)

    async def _finish(self, waiting: list[Any]) -> None:
        if not waiting:
            return
        coro, waiting_on, cycle = waiting
        try:
            await resume(coro, waiting_on)
        except BaseException as exc:
            self._finished(cycle, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            self._finished(cycle, None)

    def _cancelled_early(self, waiting: list[Any]) -> None:
        """A task cancelled before its own first step never ran ``_finish``:
        close the app's coroutine (its finally blocks run) and finish here."""
        coro, _, cycle = waiting
        if self.running is cycle:
            coro.close()
            self._finished(cycle, asyncio.CancelledError())

    def _run_next(self) -> None:
        if self.cycles and self.running is None and not self.closed:
            self._run(self.cycles[0])

    def _finished(self, cycle: HttpCycle, exc: BaseException | None) -> None:
        """The app is done with this request, one way or another."""
        self.server.active -= 1
        if not self.server.accepting:
            self.server.slot_freed()
        if exc is None:
            if not cycle.response_started and not cycle.disconnected:
                log.error("the app returned without a response at %s",
                          _printable(cycle.scope["path"]))
                cycle.answer(500, "Internal Server Error")
            elif not cycle.response_complete:
                cycle.keep_alive = False
        elif isinstance(exc, asyncio.CancelledError):
            self._close()
        elif not isinstance(exc, ClientDisconnected):
            log.error("exception in the app at %s %s", cycle.scope["method"],
                      _printable(cycle.scope["path"]), exc_info=exc)
            if not cycle.response_started:
                cycle.answer(500, "Internal Server Error")
            else:
                self._close()  # never pass off half a response as complete
        self._after(cycle)

    def _after(self, cycle: HttpCycle) -> None:
        self.cycles.popleft()
        self.running = None
        if self.closed:
            return
        if not cycle.keep_alive or not cycle.body_done or self.server.stopping:
            self._close()
            return
        if self.cycles:
            self.loop.call_soon(self._run_next)  # not recursively: pipelines can be long
        elif self.parser.head_pending():  # part of the next head came already
            self.head_timer = True
            self._arm(self.config.timeout_header_s)
        else:
            self._arm(self.config.keep_alive_s)
        self.resume_reading()

    # ------------------------------------------------------------ timers & closing

    def _arm(self, seconds: float) -> None:
        """Set the idle deadline. One timer handle per connection is re-armed
        lazily when it fires, instead of a new one per request."""
        if not seconds:
            self.deadline = None
            return
        self.deadline = deadline = self.loop.time() + seconds
        if self.timer is not None and self.timer_at > deadline:
            self.timer.cancel()
            self.timer = None
        if self.timer is None:
            self.timer_at = deadline
            self.timer = self.loop.call_at(deadline, self._timed_out)

    def _disarm(self) -> None:
        self.deadline = None

    def _timed_out(self) -> None:
        self.timer = None
        deadline = self.deadline
        if deadline is None or self.closed:
            return
        if self.loop.time() < deadline - 0.001:
            self.timer_at = deadline
            self.timer = self.loop.call_at(deadline, self._timed_out)
            return
        self.deadline = None
        cycle = self.cycles[0] if self.cycles else None
        verdict = on_deadline(
            between_requests=cycle is None, head_started=self.parser.head_pending(),
            app_awaits_body=cycle is not None and cycle is self.parsing
            and self.body_waiter is not None and not self.body_waiter.done(),
            response_started=cycle is not None and cycle.response_started)
        if verdict is Expiry.KEEP:
            return  # a stale body deadline: the app is not waiting (it re-arms if it does)
        if cycle is None:
            if verdict is Expiry.ANSWER_408:
                self._reject(408, "Request Timeout")
            else:
                self._close()
            return
        log.info("closing a connection from %s: no request body bytes for %.0f s",
                 self.client, self.config.timeout_body_s)
        if verdict is Expiry.ANSWER_408:
            self.write(simple_response(408, "Request Timeout", self.server.default_headers()))
            cycle.status = 408
            cycle.response_started = cycle.response_complete = True  # the app cannot answer now
            self.cycle_done(cycle)
        cycle.keep_alive = False
        self._close()
        cycle.client_gone()
        self._wake_body()  # the app's receive() returns http.disconnect

    def _reject(self, status: int, message: str) -> None:
        if not self.cycles or not self.cycles[0].response_started:
            self.write(simple_response(status, message, self.server.default_headers()))
            self.server.responses_by_class[status // 100] += 1
        self._close()

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.flush()
            self.closed = True
            self.transport.close()

    def shutdown(self) -> None:
        """Server stopping: in-flight responses say Connection: close; an idle
        connection gets a short grace, so a request already on the wire is
        answered (with Connection: close) instead of meeting a reset."""
        for cycle in self.cycles:
            cycle.close_after = True
        if not self.cycles:
            self._arm(min(self.config.keep_alive_s, 1.0) or 0.01)


FLUSH_AT = 256 * 1024  # queued body bytes written at once (held per connection at most)
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


class _Upgraded(Exception):
    """Raised out of the parser once the transport belongs to the websocket."""


def _printable(text: str) -> str:
    return text.encode("unicode_escape").decode("ascii")[:200]
