"""HttpServer: what a worker runs; accepts on inherited sockets, tracks load.

The worker's contract: ``start(sockets)``, ``requests_total``,
``connection_count``, ``shutdown()`` (graceful) and ``close_now()``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import socket
import ssl
import time
from email.utils import formatdate
from typing import Any

from arbiter.config import HttpConfig
from workers.http.connection import HttpConnection
from workers.http.proxy import TrustedPeers

log = logging.getLogger("arbiter.error")
access_log = logging.getLogger("arbiter.access")


def pick_parser(name: str) -> type:
    if name == "auto":
        name = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if name == "httptools":
        from workers.http.parser_httptools import HttptoolsParser
        return HttptoolsParser
    from workers.http.parser_h11 import H11Parser
    return H11Parser


def make_ssl_context(config: HttpConfig) -> ssl.SSLContext | None:
    tls = config.tls
    if tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.certfile, tls.keyfile, tls.password)
    context.verify_mode = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                           "required": ssl.CERT_REQUIRED}[tls.cert_reqs]
    if tls.ca_certs:
        context.load_verify_locations(tls.ca_certs)
    if tls.ciphers:
        context.set_ciphers(tls.ciphers)
    return context


class HttpServer:
    def __init__(self, app: Any, config: HttpConfig, *, lifespan_state: dict[str, Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.config = config
        self.lifespan_state = lifespan_state
        self.loop = loop
        self.parser_class = pick_parser(config.backend)
        self.trusted = TrustedPeers.parse(config.forwarded_allow_ips)
        self.connections: set[HttpConnection] = set()
        self.websockets: set[Any] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.requests_done = 0
        self.active = 0
        self.stopping = False
        # --limit-concurrency: accepting is False while every slot is taken
        self.accepting = True
        self._listen_on: list[socket.socket] = []
        self._ssl_context: ssl.SSLContext | None = None
        self._resuming: asyncio.Task[None] | None = None
        extra = b"".join(n.encode("latin-1") + b": " + v.encode("latin-1") + b"\r\n"
                         for n, v in config.default_headers)
        self._static_headers = (b"server: arbiter\r\n" if config.server_header else b"") + extra
        self._closed_event: asyncio.Event | None = None
        self._headers = self._static_headers
        self._date_timer: asyncio.TimerHandle | None = None
        if config.date_header:
            self._refresh_date()

    @property
    def requests_total(self) -> int:
        return self.requests_done

    @property
    def connection_count(self) -> int:
        return len(self.connections) + len(self.websockets)

    def default_headers(self) -> bytes:
        """Server, Date and --header lines; Date is refreshed by a timer."""
        return self._headers

    def _refresh_date(self) -> None:
        now = time.time()
        self._headers = self._static_headers + b"date: " + formatdate(
            int(now), usegmt=True).encode() + b"\r\n"
        # wake just after the next second starts
        self._date_timer = self.loop.call_later(1.0 - now % 1.0 + 0.001, self._refresh_date)

    async def start(self, sockets: list[socket.socket]) -> None:
        self._ssl_context = make_ssl_context(self.config)
        self._listen_on = list(sockets)
        await self._listen()

    async def _listen(self) -> None:
        """Serve every inherited socket through a dup of its fd: closing an
        asyncio/uvloop server closes only our dup, never the master's socket."""
        for sock in self._listen_on:
            dup = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
            dup.setblocking(False)
            server = await self.loop.create_server(lambda: HttpConnection(self), sock=dup,
                                                   ssl=self._ssl_context, backlog=2048)
            self.servers.append(server)

    # ------------------------------------------------------------ --limit-concurrency
    #
    # A worker whose slots are all taken stops accepting, so new connections
    # wait in the shared listen queue where another worker can take them,
    # rather than being accepted only to be told 503. Neither asyncio's nor
    # uvloop's Server can pause and resume (after close() start_serving() is
    # refused, and remove_reader() on a socket a uvloop server owns is not
    # allowed), so pausing closes our servers -- only our dup fds, with their
    # poller registrations -- and resuming makes new ones on fresh dups.
    # Connections already accepted are untouched; a request arriving on one
    # while saturated still gets the 503.

    def over_limit(self) -> bool:
        """A connection counted one more running request: stop accepting if
        that took the last slot; True if it is one too many (answer 503)."""
        limit = self.config.limit_concurrency
        if self.active >= limit and self.accepting and not self.stopping:
            self.accepting = False
            for server in self.servers:
                server.close()
            self.servers.clear()
        return self.active > limit

    def slot_freed(self) -> None:
        """Called when a request finishes while not accepting."""
        if self._resuming is None and not self.stopping \
                and self.active < self.config.limit_concurrency:
            self._resuming = self.loop.create_task(self._resume_accepting())

    async def _resume_accepting(self) -> None:
        try:
            if self.stopping or self.accepting:
                return
            await self._listen()
            self.accepting = True
            if self.stopping:  # shutdown() ran while the servers were made
                for server in self.servers:
                    server.close()
            elif self.active >= self.config.limit_concurrency:
                self.over_limit()  # filled up again meanwhile
        finally:
            self._resuming = None

    def connection_closed(self) -> None:
        if self.stopping and not self.connections and self._closed_event is not None:
            self._closed_event.set()

    def log_access(self, cycle: Any, client: Any) -> None:
        scope = cycle.scope
        duration = time.monotonic() - cycle.started
        headers = dict(scope["headers"])
        fields = {
            "h": client[0] if client else "-", "m": scope["method"],
            "U": scope["path"], "q": scope["query_string"].decode("latin-1"),
            "H": "HTTP/" + scope["http_version"], "s": cycle.status or 500,
            "b": cycle.bytes_sent, "T": int(duration), "D": int(duration * 1e6),
            "L": f"{duration:.6f}", "p": f"<{os.getpid()}>",
            "a": headers.get(b"user-agent", b"-").decode("latin-1"),
            "f": headers.get(b"referer", b"-").decode("latin-1"),
            "t": time.strftime("[%d/%b/%Y:%H:%M:%S %z]"),
        }
        query = f"?{fields['q']}" if fields["q"] else ""
        fields["r"] = f"{fields['m']} {fields['U']}{query} {fields['H']}"
        if self.config.access_log.json:
            line = json.dumps(fields)
        else:
            safe = {k: _escape(str(v)) for k, v in fields.items()}
            fmt = self.config.access_log.format or '%(h)s - "%(r)s" %(s)s %(b)s %(L)ss'
            try:
                line = fmt % safe
            except (KeyError, ValueError, TypeError):
                line = '%(h)s - "%(r)s" %(s)s' % safe
        access_log.info("%s", line)

    async def shutdown(self) -> bool:
        self.stopping = True
        for server in self.servers:
            server.close()
        for ws in list(self.websockets):
            ws.shutdown()
        for conn in list(self.connections):
            conn.shutdown()
        self._closed_event = asyncio.Event()
        if self.connections:
            try:
                await asyncio.wait_for(self._closed_event.wait(), self.config.graceful_timeout_s)
            except asyncio.TimeoutError:
                self.close_now()
                return False
        return True

    def close_now(self) -> None:
        self.stopping = True
        if self._resuming is not None:
            self._resuming.cancel()
        for server in self.servers:
            server.close()
        for conn in list(self.connections):
            conn._close()
        for task in list(self.tasks):
            task.cancel()


def _escape(text: str) -> str:
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")
