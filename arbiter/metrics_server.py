"""The --metrics-bind listener, served by the master's own selector loop.

Every socket is non-blocking and every scrape connection is bounded: its
request head (MAX_REQUEST bytes), its life (SCRAPE_TIMEOUT_S, checked by the
master loop through ``deadline()``/``poll()``), how many run at once
(MAX_CONNECTIONS; past it a new one is closed at once), and its output (one
rendered page, written as the socket takes it). So a scraper that says nothing
or never reads costs a file descriptor for a few seconds, never the loop's
time. Answers: ``GET /metrics`` 200, another path 404, another method 405,
anything unparsable 400, an oversized head 431; then the connection closes.
Across a re-exec the listener and the scrapes not answered yet are handed to
the new master. What the page says is ``arbiter.metrics``'s business.
"""

from __future__ import annotations

import logging
import os
import selectors
import socket
from collections.abc import Callable, Iterable, MutableMapping

from arbiter import sockets
from arbiter.addresses import Address
from arbiter.errors import BindError
from arbiter.metrics import CONTENT_TYPE, Ledger
from arbiter.policy import WorkerRecord

log = logging.getLogger("arbiter.error")

INHERIT_ENV = "ARBITER_METRICS_FD"  # "FD ADDRESS": the listener, across a re-exec
SCRAPES_ENV = "ARBITER_METRICS_SCRAPES"  # scrapes not answered yet, across a re-exec
LEDGER_ENV = "ARBITER_METRICS_LEDGER"  # the totals, across a re-exec
MAX_REQUEST = 8192
MAX_CONNECTIONS = 16
SCRAPE_TIMEOUT_S = 5.0
ACCEPT_PAUSE_S = 1.0  # after accept() fails (out of fds): the listener stays readable
BACKLOG = 64
_PHRASES = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large", 500: "Internal Server Error"}


def start(address: Address | None, uds_mode: int | None, environ: MutableMapping[str, str],
          selector: selectors.BaseSelector, render: Callable[[], str],
          clock: Callable[[], float]) -> MetricsServer | None:
    """Bind ``address`` (None: metrics are off), or adopt the listener a previous
    master of this process handed down for the same address. Raises BindError."""
    handed = environ.pop(INHERIT_ENV, "")
    scrapes = [socket.socket(fileno=int(fd)) for fd in environ.pop(SCRAPES_ENV, "").split(",")
               if fd]
    for scrape in scrapes:
        os.set_inheritable(scrape.fileno(), False)
    sock = None
    if handed:
        fd_text, _, handed_address = handed.partition(" ")
        sock = socket.socket(fileno=int(fd_text))
        os.set_inheritable(sock.fileno(), False)
        if address is None or handed_address != str(address):
            sock.close()  # the new config moved or dropped it
            sock = None
            if handed_address.startswith("unix:"):
                _unlink(handed_address[5:])
    if sock is None:
        for scrape in scrapes:
            scrape.close()
        scrapes = []
    if address is None:
        return None
    if sock is not None:
        listener = sockets.Listener(sock, address, owns_path=address.kind == "unix")
    else:
        try:
            listener = sockets.open_listeners([address], BACKLOG, uds_mode, {})[0]
        except BindError as exc:
            raise BindError(f"--metrics-bind: {exc}") from None
    server = MetricsServer(listener, selector, render, clock)
    for scrape in scrapes:
        server.adopt(scrape)
    return server


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def take_ledger(environ: MutableMapping[str, str]) -> Ledger:
    """The totals a previous master of this process handed down, or a fresh ledger."""
    text = environ.pop(LEDGER_ENV, "")
    return Ledger.restore(text) if text else Ledger()


def export_for_exec(server: MetricsServer | None, ledger: Ledger,
                    live: Iterable[WorkerRecord]) -> dict[str, str]:
    """The environment that carries the listener and the totals across exec()."""
    env = {LEDGER_ENV: ledger.export(live)}
    if server is not None:
        env.update(server.export_for_exec())
    return env


def respond(head: bytes, render: Callable[[], str]) -> tuple[int, bytes]:
    """The status and the whole response to one request head (pure)."""
    line, _, _ = head.partition(b"\n")
    parts = line.rstrip(b"\r").split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or not parts[1]:
        return _plain(400, "bad request\n")
    method, target = parts[0], parts[1]
    path = target.split(b"?", 1)[0]
    if path != b"/metrics":
        return _plain(404, "not found: try /metrics\n")
    if method not in (b"GET", b"HEAD"):
        return _plain(405, "only GET and HEAD\n", b"allow: GET, HEAD\r\n")
    body = render().encode("utf-8")
    status, response = _response(200, CONTENT_TYPE, body)
    if method == b"HEAD":
        response = response[:len(response) - len(body)]
    return status, response


def _plain(status: int, text: str, extra: bytes = b"") -> tuple[int, bytes]:
    return _response(status, "text/plain; charset=utf-8", text.encode(), extra)


def _response(status: int, content_type: str, body: bytes,
              extra: bytes = b"") -> tuple[int, bytes]:
    head = (f"HTTP/1.1 {status} {_PHRASES[status]}\r\ncontent-type: {content_type}\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n").encode() + extra + b"\r\n"
    return status, head + body


def head_end(buffer: bytes) -> int:
    """Where the request head ends (after its blank line), or -1 while incomplete."""
    crlf, lf = buffer.find(b"\r\n\r\n"), buffer.find(b"\n\n")
    ends = [i + 4 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    return min(ends) if ends else -1


class _Scrape:
    """One accepted connection: read a head, write the answer, linger, close."""

    __slots__ = ("sock", "deadline", "inbox", "outbox", "answered")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock, self.deadline = sock, deadline
        self.inbox = b""
        self.outbox = b""
        self.answered = False  # the response is being written (or was): ignore input


class MetricsServer:
    """The listener and its scrape connections, registered in the master's selector.

    Selector keys carry a callable as their data: the master calls it with the
    ready events. ``render`` makes the page when a request is complete.
    """

    def __init__(self, listener: sockets.Listener, selector: selectors.BaseSelector,
                 render: Callable[[], str], clock: Callable[[], float]) -> None:
        self.listener = listener
        self.selector = selector
        self.render = render
        self.clock = clock
        self.scrapes: dict[int, _Scrape] = {}
        self._handing: list[socket.socket] = []  # scrapes made inheritable for an exec
        self._paused_until: float | None = None  # accepting again then
        listener.sock.setblocking(False)
        selector.register(listener.sock, selectors.EVENT_READ, self._accept)

    def url(self) -> str:
        return self.listener.url() + ("" if self.listener.sock.family == socket.AF_UNIX
                                      else "/metrics")

    # ------------------------------------------------------------ the master's clock

    def deadline(self) -> float | None:
        """The soonest moment a scrape connection must be dropped (or accepting resume)."""
        soonest = min((s.deadline for s in self.scrapes.values()), default=None)
        if self._paused_until is not None:
            soonest = min(soonest or self._paused_until, self._paused_until)
        return soonest

    def poll(self, now: float) -> None:
        for scrape in [s for s in self.scrapes.values() if now >= s.deadline]:
            self._close(scrape)
        if self._paused_until is not None and now >= self._paused_until:
            self._paused_until = None
            self.selector.register(self.listener.sock, selectors.EVENT_READ, self._accept)

    # ------------------------------------------------------------ events

    def _accept(self, events: int) -> None:
        for _ in range(MAX_CONNECTIONS):  # a bounded batch per loop pass
            try:
                sock, _ = self.listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except (ConnectionAbortedError, ConnectionResetError):
                continue  # that client is gone already
            except OSError as exc:  # out of fds or memory: pause, or the loop would spin
                log.warning("metrics: cannot accept a scrape connection (%s); pausing %g s",
                            exc, ACCEPT_PAUSE_S)
                self.selector.unregister(self.listener.sock)
                self._paused_until = self.clock() + ACCEPT_PAUSE_S
                return
            if len(self.scrapes) >= MAX_CONNECTIONS:
                sock.close()  # too many scrapers at once: this one tries again later
                continue
            self.adopt(sock)

    def adopt(self, sock: socket.socket) -> None:
        """Serve an accepted connection (or one a previous master handed over)."""
        sock.setblocking(False)
        scrape = _Scrape(sock, self.clock() + SCRAPE_TIMEOUT_S)
        self.scrapes[sock.fileno()] = scrape
        self.selector.register(sock, selectors.EVENT_READ,
                               lambda events, s=scrape: self._ready(s, events))

    def _ready(self, scrape: _Scrape, events: int) -> None:
        try:
            if events & selectors.EVENT_READ and not self._read(scrape):
                return
            if events & selectors.EVENT_WRITE and scrape.outbox:
                self._write(scrape)
        except Exception:  # a bug here must cost one scrape, never the master loop
            log.exception("metrics: dropping a scrape connection")
            self._close(scrape)

    def _read(self, scrape: _Scrape) -> bool:
        """False once the connection is closed."""
        try:
            data = scrape.sock.recv(MAX_REQUEST + 1)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            data = b""
        if not data:
            self._close(scrape)  # the scraper left (or finished reading: a lingering close)
            return False
        if scrape.answered:
            return True  # what a client sends after its head is drained, not read
        scrape.inbox += data
        end = head_end(scrape.inbox)
        if end < 0 and len(scrape.inbox) <= MAX_REQUEST:
            return True
        if end < 0 or end > MAX_REQUEST:
            _, response = _plain(431, "request head too large\n")
        else:
            try:
                _, response = respond(scrape.inbox[:end], self.render)
            except Exception:
                log.exception("metrics: cannot render the page")
                _, response = _plain(500, "cannot render the metrics; see the error log\n")
        scrape.inbox = b""
        scrape.answered = True
        scrape.outbox = response
        self._write(scrape)
        return scrape.sock.fileno() >= 0

    def _write(self, scrape: _Scrape) -> None:
        try:
            sent = scrape.sock.send(scrape.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._close(scrape)
            return
        scrape.outbox = scrape.outbox[sent:]
        if scrape.outbox:
            self.selector.modify(scrape.sock, selectors.EVENT_READ | selectors.EVENT_WRITE,
                                 self.selector.get_key(scrape.sock).data)
            return
        # all written: half-close and wait (until the deadline) for the client to
        # close, so that unread request bytes cannot turn our close into a reset
        # that destroys the response before the client read it
        try:
            scrape.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(scrape)
            return
        self.selector.modify(scrape.sock, selectors.EVENT_READ,
                             self.selector.get_key(scrape.sock).data)

    def _close(self, scrape: _Scrape) -> None:
        fd = scrape.sock.fileno()
        if fd < 0:
            return
        self.scrapes.pop(fd, None)
        self.selector.unregister(scrape.sock)
        scrape.sock.close()

    # ------------------------------------------------------------ re-exec and exit

    def export_for_exec(self) -> dict[str, str]:
        """Keep the listener open across exec(), and the scrapes not answered yet
        (the new master answers them; one still in the listen queue is its own
        anyway). One being answered is finished as far as its socket takes it now,
        without waiting: the exec closes it after what was written."""
        for scrape in list(self.scrapes.values()):
            self._ready(scrape, selectors.EVENT_READ | selectors.EVENT_WRITE)
        self._handing = [s.sock for s in self.scrapes.values() if not s.answered]
        for sock in [self.listener.sock, *self._handing]:
            os.set_inheritable(sock.fileno(), True)
        return {INHERIT_ENV: f"{self.listener.sock.fileno()} {self.listener.address}",
                SCRAPES_ENV: ",".join(str(sock.fileno()) for sock in self._handing)}

    def exec_failed(self) -> None:
        for sock in [self.listener.sock, *self._handing]:
            if sock.fileno() >= 0:
                os.set_inheritable(sock.fileno(), False)
        self._handing = []

    def close_in_child(self) -> None:
        """In a forked worker: drop our copies of the sockets, so that a scrape the
        master closes really closes, and the listener dies with the master."""
        for scrape in self.scrapes.values():
            scrape.sock.close()
        self.listener.sock.close()

    def close(self) -> None:
        for scrape in list(self.scrapes.values()):
            self._close(scrape)
        if self._paused_until is None:
            self.selector.unregister(self.listener.sock)
        self.listener.close(unlink=True)

