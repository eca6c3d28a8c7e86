"""A PROXY protocol header in front of TLS (an AWS NLB with TLS passthrough,
HAProxy ``send-proxy-v2`` to a TLS backend): read it from the raw TCP socket,
then start TLS on that socket. Used only with --proxy-protocol and --ssl-*;
a TLS listener without --proxy-protocol stays on the loop's own TLS path.
The header itself is parsed by ``proxy_protocol``; who may send one is
``TrustedPeers``' call. TLS starts with ``loop.connect_accepted_socket(ssl=)``
rather than ``start_tls``: asyncio's ``start_tls`` (3.11) feeds the protocol the
first decrypted bytes before it returns, before we could call its
``connection_made``; this is the loops' own TLS server path instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from typing import Any

from workers.http.connection import HttpConnection
from workers.http.cycle import simple_response
from workers.http.proxy_protocol import (ProxyProtocolError, ProxyProtocolParser, ProxyResult,
                                         could_start_header)

log = logging.getLogger("arbiter.error")


class ProxyThenTls(asyncio.Protocol):
    """What the listener makes of each accepted connection: it takes the
    socket out of its plain transport before that reads a byte (a transport
    reads greedily, and what it read past the header would be lost to TLS),
    then runs ``serve`` on it."""

    def __init__(self, server: Any, context: ssl.SSLContext) -> None:
        self.server = server
        self.context = context

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = transport.get_extra_info("socket")
        sock = socket.socket(raw.family, raw.type, raw.proto, fileno=os.dup(raw.fileno()))
        transport.abort()  # closes the transport's fd only: the connection lives on in ours
        sock.setblocking(False)
        server = self.server
        task = server.loop.create_task(serve(server, sock, self.context))
        server.tasks.add(task)
        task.add_done_callback(server.tasks.discard)


async def serve(server: Any, sock: socket.socket, context: ssl.SSLContext) -> None:
    """A trusted peer's PROXY header (if it sends one), then the TLS handshake,
    both within one --timeout-header from the accept; then HTTP as usual, with
    the client the header named. An untrusted peer goes straight to TLS: its
    header, if any, is not believed (the handshake fails on it)."""
    loop = server.loop
    budget = server.config.timeout_header_s or None
    deadline = loop.time() + budget if budget else None
    handed_over = False
    try:
        peer = sock.getpeername()  # (a unix socket's peer is a str: trusted by "unix")
        header = None
        if server.trusted.contains(peer if isinstance(peer, tuple) else None):
            try:
                header = await asyncio.wait_for(read_proxy_header(loop, sock), budget)
            except ProxyProtocolError as exc:
                log.info("closing a connection from %s: %s", peer, exc)
                refusal = simple_response(400, "Invalid PROXY protocol header",
                                          server.default_headers())
                try:
                    sock.send(refusal)
                    server.responses_by_class[4] += 1
                except OSError:
                    pass
                return
        timeout = None
        if deadline is not None:
            timeout = deadline - loop.time()
            if timeout <= 0:
                return
        handed_over = True  # from here the transport owns (and closes) the socket
        await loop.connect_accepted_socket(lambda: HttpConnection(server, header), sock,
                                           ssl=context, ssl_handshake_timeout=timeout)
    except (OSError, asyncio.TimeoutError, _PeerLeft):
        pass  # gone, stalled past --timeout-header, or failed the handshake: just close
    except Exception:  # a bug here must cost this connection only, and say so
        log.exception("error on a PROXY-then-TLS connection")
    finally:
        if not handed_over:
            sock.close()


async def read_proxy_header(loop: asyncio.AbstractEventLoop,
                            sock: socket.socket) -> ProxyResult | None:
    """The PROXY header, read without taking a byte past it; None when the
    first byte cannot start one (a TLS record does not: a health check)."""
    first = await _recv(loop, sock, 1, socket.MSG_PEEK)
    if not first:
        raise _PeerLeft()
    if not could_start_header(first):
        return None
    parser = ProxyProtocolParser()
    while True:
        data = await _recv(loop, sock, parser.needed())
        if not data:
            raise _PeerLeft()
        result = parser.feed(data)
        if result is not None:
            return result


async def _recv(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int,
                flags: int = 0) -> bytes:
    """``sock.recv`` once the socket is readable (the loops' sock_recv takes no flags)."""
    while True:
        try:
            return sock.recv(size, flags)
        except (BlockingIOError, InterruptedError):
            pass
        readable = loop.create_future()
        fd = sock.fileno()
        loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
        try:
            await readable
        finally:
            loop.remove_reader(fd)


class _PeerLeft(Exception):
    """The peer closed before its PROXY header was complete."""
