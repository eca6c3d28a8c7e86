"""HttpServer: what a worker runs; accepts on inherited sockets, tracks load.

The worker's contract: ``start(sockets)``, ``requests_total``,
``connection_count``, ``unhealthy`` (the --health-path answers 503),
``shutdown(close_code, timeout_s)`` (graceful) and ``close_now()``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
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
from arbiter.errors import BootError
from workers.http.connection import HttpConnection
from workers.http.cycle import scope_extensions
from workers.http.proxy import TrustedPeers
from workers.http.proxy_tls import ProxyThenTls
from workers.websocket import WebSocketLimits, backend_name

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


class _NeedsPassword(Exception):
    pass


def _no_password() -> bytes:
    # without a callback OpenSSL would prompt on the terminal for the passphrase
    raise _NeedsPassword()


def make_ssl_context(config: HttpConfig) -> ssl.SSLContext | None:
    """The server's TLS context. Whatever is wrong with the files or options
    becomes a BootError naming the flag, so the master stops with one clear
    line instead of restarting workers that crash with a traceback."""
    tls = config.tls
    if tls is None:
        return None
    for flag, path in (("--ssl-certfile", tls.certfile), ("--ssl-keyfile", tls.keyfile),
                       ("--ssl-ca-certs", tls.ca_certs)):
        if path is not None:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise BootError(f"{flag} {path}: {exc.strerror or exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.certfile, tls.keyfile,
                                tls.password if tls.password is not None else _no_password)
    except _NeedsPassword:
        raise BootError(f"--ssl-keyfile {tls.keyfile or tls.certfile}: the key is encrypted; "
                        "give its passphrase with --ssl-keyfile-password") from None
    except ssl.SSLError as exc:
        causes = "the key does not match the certificate, or a file is not PEM"
        if tls.password is not None:
            causes = "wrong --ssl-keyfile-password, " + causes
        raise BootError(f"cannot load the TLS certificate {tls.certfile} and key "
                        f"{tls.keyfile or tls.certfile}: {causes} (OpenSSL: {exc})") from None
    context.verify_mode = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
                           "required": ssl.CERT_REQUIRED}[tls.cert_reqs]
    if tls.ca_certs:
        try:
            context.load_verify_locations(tls.ca_certs)
        except ssl.SSLError as exc:
            raise BootError(f"--ssl-ca-certs {tls.ca_certs}: no PEM certificates "
                            f"(OpenSSL: {exc})") from None
    if tls.ciphers:
        try:
            context.set_ciphers(tls.ciphers)
        except ssl.SSLError:
            raise BootError(f"--ssl-ciphers {tls.ciphers!r}: OpenSSL selects no cipher from "
                            "it") from None
    return context


# ---------------------------------------------------------------- ASGI TLS extension

_TLS_VERSIONS = {"TLSv1": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303, "TLSv1.3": 0x0304}
_RDN_SHORT = {"commonName": "CN", "countryName": "C", "localityName": "L",
              "stateOrProvinceName": "ST", "organizationName": "O",
              "organizationalUnitName": "OU", "streetAddress": "STREET",
              "domainComponent": "DC", "userId": "UID"}


def rfc4514_name(subject: Any) -> str | None:
    """A subject as ssl.getpeercert() gives it (RDNs, most significant first)
    as an RFC 4514 string (least significant first), e.g. ``CN=a,O=b``."""
    if not subject:
        return None
    rdns = []
    for rdn in reversed(subject):
        rdns.append("+".join(f"{_RDN_SHORT.get(attr, attr)}={_rdn_escape(value)}"
                             for attr, value in rdn))
    return ",".join(rdns)


def _rdn_escape(value: str) -> str:
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;' or (ch == "#" and i == 0) \
                or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        elif ch == "\x00":
            out.append("\\00")
        else:
            out.append(ch)
    return "".join(out)


def _leaf_pem(certfile: str) -> str | None:
    """The first certificate of a PEM chain file: the one the server sends."""
    try:
        with open(certfile, encoding="ascii", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    begin = text.find("-----BEGIN CERTIFICATE-----")
    end_marker = "-----END CERTIFICATE-----"
    end = text.find(end_marker, begin)
    if begin < 0 or end < 0:
        return None
    return text[begin:end + len(end_marker)] + "\n"


class TlsScope:
    """Builds ``scope["extensions"]["tls"]`` (asgiref TLS extension 0.2) for
    one connection; what is the same for every connection is computed once."""

    def __init__(self, context: ssl.SSLContext, certfile: str) -> None:
        self.server_cert = _leaf_pem(certfile)
        # OpenSSL ids are 0x0300XXXX; the low 16 bits are the IANA suite number
        self.suites = {c["name"]: c["id"] & 0xFFFF for c in context.get_ciphers()}

    def extension(self, ssl_object: Any) -> dict[str, Any]:
        cipher = ssl_object.cipher()
        der = ssl_object.getpeercert(binary_form=True)
        return {
            "server_cert": self.server_cert,
            "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
            "client_cert_name": rfc4514_name(ssl_object.getpeercert().get("subject"))
            if der else None,
            "client_cert_error": None,  # a certificate that fails verification fails the handshake
            "tls_version": _TLS_VERSIONS.get(ssl_object.version() or ""),
            "cipher_suite": self.suites.get(cipher[0]) if cipher else None,
        }


class HttpServer:
    def __init__(self, app: Any, config: HttpConfig, *, lifespan_state: dict[str, Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.config = config
        self.lifespan_state = lifespan_state
        self.loop = loop
        self.parser_class = pick_parser(config.backend)
        self.trusted = TrustedPeers.parse(config.forwarded_allow_ips)
        self.websocket_limits = WebSocketLimits(
            backend=backend_name(config.ws_backend), max_size=config.ws_max_size,
            ping_interval=config.ws_ping_interval_s, ping_timeout=config.ws_ping_timeout_s,
            close_timeout=config.ws_close_timeout_s, max_queue=config.ws_max_queue,
            per_message_deflate=config.ws_per_message_deflate)
        self.extensions = scope_extensions(None)  # (HTTP/1.1, HTTP/1.0); TLS: per connection
        self.connections: set[HttpConnection] = set()
        self.websockets: set[Any] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.requests_done = 0
        # responses written, indexed by status // 100 (0 and 1 unused): for the metrics
        self.responses_by_class = [0] * 6
        # called once, when the first response is complete (the worker tells the master)
        self.on_first_response: Any = None
        self.active = 0
        self.stopping = False
        self.unhealthy = False  # --shutdown-delay or the drain: the health path says 503
        # --limit-concurrency: accepting is False while every slot is taken
        self.accepting = True
        self._listen_on: list[socket.socket] = []
        self._ssl_context: ssl.SSLContext | None = None
        self._resuming: asyncio.Task[None] | None = None
        self._tls_scope: TlsScope | None = None
        self._pid = os.getpid()
        self._access_format = check_access_format(config.access_log.format) \
            if config.access_log.enabled and not config.access_log.json else None
        extra = b"".join(n.encode("latin-1") + b": " + v.encode("latin-1") + b"\r\n"
                         for n, v in config.default_headers)
        self._static_headers = (b"server: arbiter\r\n" if config.server_header else b"") + extra
        self._drained: asyncio.Event | None = None
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
        if self._ssl_context is not None and self.config.tls is not None:
            self._tls_scope = TlsScope(self._ssl_context, self.config.tls.certfile)
        self._listen_on = list(sockets)
        await self._listen()

    async def _listen(self) -> None:
        """Serve every inherited socket through a dup of its fd: closing an
        asyncio/uvloop server closes only our dup, never the master's socket.
        create_server() calls listen() again: with --backlog, so the setting holds."""
        context = self._ssl_context
        backlog = self.config.backlog
        for sock in self._listen_on:
            if sock.fileno() < 0:
                continue  # closed by shutdown() while a resume was under way
            dup = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
            dup.setblocking(False)
            if context is not None and self.config.proxy_protocol:
                # the PROXY header comes before the TLS handshake: read it first
                server = await self.loop.create_server(
                    lambda: ProxyThenTls(self, context), sock=dup, backlog=backlog)
            else:
                server = await self.loop.create_server(
                    lambda: HttpConnection(self), sock=dup, ssl=context, backlog=backlog,
                    # the head's clock starts after the handshake; this bounds the handshake
                    ssl_handshake_timeout=(self.config.timeout_header_s or None)
                    if context is not None else None)
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

    def tls_extension(self, transport: Any) -> dict[str, Any] | None:
        """The ASGI ``tls`` scope extension of a TLS connection, else None."""
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or self._tls_scope is None:
            return None
        return self._tls_scope.extension(ssl_object)

    def connection_closed(self) -> None:
        if self._drained is not None and not self.connections and not self.websockets:
            self._drained.set()

    def websocket_finished(self, ws: Any) -> None:
        """A websocket's connection and its app task are both over."""
        self.websockets.discard(ws)
        self.connection_closed()

    def log_access(self, cycle: Any, client: Any) -> None:
        duration = time.monotonic() - cycle.started
        scope = cycle.scope
        line = format_access(scope, status=cycle.status or 500, sent=cycle.sent_length,
                             duration=duration, client=scope.get("client") or client,
                             pid=self._pid, when=time.time() - duration,
                             fmt=self._access_format, as_json=self.config.access_log.json)
        access_log.info("%s", line)

    async def shutdown(self, close_code: int = 1012, timeout_s: float | None = None) -> bool:
        """Drain: stop accepting, answer in-flight requests with Connection: close,
        close idle connections, close every WebSocket with ``close_code`` (1012
        retiring, 1001 stopping) and wait for the close handshakes and the app
        tasks, for ``timeout_s`` (default --graceful-timeout). What is left is
        closed (a stream cut, never finished) and its app task cancelled. True
        if everything finished in time."""
        self.stopping = self.unhealthy = True
        if timeout_s is None:
            timeout_s = self.config.graceful_timeout_s
        for server in self.servers:
            server.close()
        # and this process's copies of the listeners: once the master and every
        # stopping worker have let go, a new connection is refused (a load balancer
        # tries another server) instead of waiting in a queue no one accepts from
        for sock in self._listen_on:
            sock.close()
        # a connection accepted just before close() gets its connection_made a
        # few loop iterations later (asyncio accepts through a task): let those
        # run, so it is counted and answered instead of dropped at exit
        for _ in range(4):
            await asyncio.sleep(0)
        self._drained = asyncio.Event()
        for ws in list(self.websockets):
            ws.shutdown(close_code)
        for conn in list(self.connections):
            conn.shutdown()
        self.connection_closed()
        try:
            await asyncio.wait_for(self._drained.wait(), timeout_s)
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
        for ws in list(self.websockets):
            ws.abort()
        for task in list(self.tasks):
            task.cancel()


# ---------------------------------------------------------------- access log
#
# gunicorn's atoms: h remote address, l "-", u user (HTTP basic auth), t time
# of the request, r request line, m method, U path, q query, H protocol,
# s status, B body bytes (an int), b the same as text, f referer, a user agent,
# T/M/D duration in s/ms/us, L duration in decimal seconds, p "<pid>",
# {name}i a request header; {name}o and {name}e are "-" (not recorded).
# Every text atom is escaped: a request cannot end the line or fake a field.

DEFAULT_ACCESS_FORMAT = '%(h)s - "%(r)s" %(s)s %(b)s %(L)ss'
JSON_ATOMS = ("h", "l", "u", "t", "r", "m", "U", "q", "H", "s", "B", "b", "f", "a", "T",
              "M", "D", "L", "p")


def format_access(scope: dict[str, Any], *, status: int, sent: int, duration: float,
                  client: Any, pid: int, when: float, fmt: str | None = None,
                  as_json: bool = False) -> str:
    """One access log line for a finished request; pure, for testing."""
    atoms = _Atoms(scope, status, sent, duration, client, pid, when)
    if as_json:
        return json.dumps({key: atoms.raw(key) for key in JSON_ATOMS})
    try:
        return (fmt or DEFAULT_ACCESS_FORMAT) % atoms
    except (ValueError, TypeError):  # a format that does not fit: still log the request
        return DEFAULT_ACCESS_FORMAT % atoms


def check_access_format(fmt: str | None) -> str | None:
    """The format if it can format a line, else None (and an error logged once)."""
    if not fmt:
        return None
    scope = {"method": "GET", "path": "/", "raw_path": b"/", "query_string": b"",
             "http_version": "1.1", "headers": []}
    try:
        fmt % _Atoms(scope, 200, 0, 0.0, None, 0, 0.0)
    except (ValueError, TypeError) as exc:
        log.error("--access-log-format %r is not a %%-format of atoms (%s); using %r",
                  fmt, exc, DEFAULT_ACCESS_FORMAT)
        return None
    return fmt


class _Atoms(dict):  # type: ignore[type-arg]
    """Atoms computed when a format asks for them, escaped for text logs."""

    def __init__(self, scope: dict[str, Any], status: int, sent: int, duration: float,
                 client: Any, pid: int, when: float) -> None:
        super().__init__()
        self.scope = scope
        self.status = status
        self.sent = sent
        self.duration = duration
        self.client = client
        self.pid = pid
        self.when = when

    def __missing__(self, key: str) -> Any:
        value = self.raw(key)
        if type(value) is str:
            value = _escape(value)
        self[key] = value
        return value

    def header(self, name: bytes) -> str:
        for key, value in self.scope["headers"]:
            if key.lower() == name:
                return bytes(value).decode("latin-1")
        return "-"

    def raw(self, key: str) -> Any:
        scope = self.scope
        if key == "h":
            return str(self.client[0]) if self.client else "-"
        if key == "r":
            query = scope["query_string"]
            target = bytes(scope.get("raw_path") or scope["path"].encode())
            if query:
                target += b"?" + bytes(query)
            return f"{scope['method']} {target.decode('latin-1')} HTTP/{scope['http_version']}"
        if key == "s":
            return self.status
        if key == "b":
            return str(self.sent)
        if key == "B":
            return self.sent
        if key == "L":
            return f"{self.duration:.6f}"
        if key == "T":
            return int(self.duration)
        if key == "M":
            return int(self.duration * 1e3)
        if key == "D":
            return int(self.duration * 1e6)
        if key == "m":
            return scope["method"]
        if key == "U":
            return scope["path"]
        if key == "q":
            return bytes(scope["query_string"]).decode("latin-1")
        if key == "H":
            return "HTTP/" + scope["http_version"]
        if key == "a":
            return self.header(b"user-agent")
        if key == "f":
            return self.header(b"referer")
        if key == "t":
            return time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(self.when))
        if key == "p":
            return f"<{self.pid}>"
        if key == "u":
            return _basic_user(self.header(b"authorization"))
        if key.startswith("{") and key.endswith("}i"):
            return self.header(key[1:-2].lower().encode("latin-1", "replace"))
        return "-"  # l, {name}o, {name}e and atoms nobody defined


def _basic_user(authorization: str) -> str:
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        return "-"
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("latin-1")
    except (ValueError, binascii.Error):
        return "-"
    user, sep, _ = decoded.partition(":")
    return user if sep and user else "-"


_ESCAPES = {i: f"\\x{i:02x}" for i in range(0x20)}
_ESCAPES.update({0x7F: "\\x7f", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
                 ord('"'): '\\"', ord("\\"): "\\\\"})


def _escape(text: str) -> str:
    """Apache-style: quote, backslash and control characters as escapes, and
    any other unprintable character (C1 controls, U+2028...) as \\uXXXX."""
    if text.isprintable() and '"' not in text and "\\" not in text:
        return text
    text = text.translate(_ESCAPES)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else
                   (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
                    if ord(c) < 0x10000 else f"\\U{ord(c):08x}") for c in text)
