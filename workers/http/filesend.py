"""File bytes onto an HTTP connection: zero-copy with os.sendfile on a plain
socket, read-and-write through the transport otherwise (TLS, no sendfile).

The cycle frames the body and calls the connection's ``send_file``, which
lands here. asyncio's ``loop.sendfile`` is not used: uvloop does not implement
it (its transports raise NotImplementedError), and one path for both loops is
what keeps their behaviour the same. Owns no protocol decisions.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from typing import Any

from workers.http.errors import ClientDisconnected

log = logging.getLogger("arbiter.error")

# One os.sendfile call moves at most this much, then the loop turns, so one
# fast reader of a large file cannot hold the other connections back.
SENDFILE_CHUNK = 4 * 1024 * 1024
READ_CHUNK = 256 * 1024  # the fallback: one read, one transport write
# sendfile refused for this pair of files: read and write instead
_NO_SENDFILE = frozenset((errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSOCK,
                          errno.EXDEV))


async def send_file(conn: Any, fd: int, offset: int, count: int) -> None:
    """Send ``count`` bytes of ``fd`` from ``offset`` on ``conn`` (an
    HttpConnection), respecting write flow control and --timeout-write;
    raise ClientDisconnected if the connection goes away meanwhile. On any
    error the caller closes the connection: part of the file may be out."""
    transport = conn.transport
    if transport is None or conn.closed:
        raise ClientDisconnected("the client closed the connection")
    sock = transport.get_extra_info("socket")
    if sock is not None and transport.get_extra_info("sslcontext") is None \
            and hasattr(os, "sendfile"):
        sent = await _zero_copy(conn, sock.fileno(), fd, offset, count)
    else:
        sent = 0
    if count > sent:
        await _read_and_write(conn, fd, offset + sent, count - sent)
    log.debug("a file body: %d bytes zero-copy, %d bytes read and written", sent, count - sent)


async def _zero_copy(conn: Any, sock_fd: int, fd: int, offset: int, count: int) -> int:
    """os.sendfile straight to the socket, once the transport's own buffer is
    empty (nothing of ours may be queued behind the file). Returns the bytes
    sent: all of them, or fewer if sendfile is refused for these files."""
    await _flushed(conn)
    # a dup of the socket's fd to wait on: both loops refuse add_writer on the
    # fd a transport owns, and closing the dup never closes the connection
    out = os.dup(sock_fd)
    sent_total = 0
    try:
        while count:
            if conn.closed:
                raise ClientDisconnected("the client closed the connection")
            try:
                sent = os.sendfile(out, fd, offset, min(count, SENDFILE_CHUNK))
            except (BlockingIOError, InterruptedError):
                sent = -1
            except OSError as exc:
                if exc.errno in _NO_SENDFILE and not sent_total:
                    return 0  # e.g. a file system without sendfile: read and write
                raise ClientDisconnected(f"sending a file: {exc}") from None
            if sent == 0:
                raise RuntimeError("the file ended before the bytes the response promised")
            if sent > 0:
                offset += sent
                count -= sent
                sent_total += sent
            if count:
                await _writable(conn, out)
    finally:
        os.close(out)
    return sent_total


async def _flushed(conn: Any) -> None:
    """Wait until the transport has written everything queued (the head, a
    chunk-size line, earlier responses): with the write buffer limits at 0 the
    transport calls pause_writing now and resume_writing once it is empty, so
    the connection's own flow control and --timeout-write apply."""
    transport = conn.transport
    if not transport.get_write_buffer_size():
        return
    low, high = transport.get_write_buffer_limits()
    transport.set_write_buffer_limits(high=0, low=0)
    try:
        waiter = conn.drain()
        if waiter is not None:
            await waiter
    finally:
        if not transport.is_closing():
            transport.set_write_buffer_limits(high=high, low=low)
    if conn.closed:
        raise ClientDisconnected("the client closed the connection")


async def _writable(conn: Any, fd: int) -> None:
    """Wait until the socket takes more; a client that reads nothing for
    --timeout-write is dropped, as on the transport path."""
    loop = conn.loop
    ready: asyncio.Future[bool | None] = loop.create_future()
    conn.drain_waiter = ready  # connection_lost resolves it (with None)
    loop.add_writer(fd, _resolve, ready, True)
    timeout = conn.config.timeout_write_s
    timer = loop.call_later(timeout, _resolve, ready, False) if timeout else None
    try:
        writable = await ready
    finally:
        loop.remove_writer(fd)
        if timer is not None:
            timer.cancel()
        if conn.drain_waiter is ready:
            conn.drain_waiter = None
    if conn.closed:
        raise ClientDisconnected("the client closed the connection")
    if writable is False:
        conn.drop_stalled_client()
        raise ClientDisconnected("the client read nothing for --timeout-write")


def _resolve(future: asyncio.Future[bool | None], value: bool) -> None:
    if not future.done():
        future.set_result(value)


async def _read_and_write(conn: Any, fd: int, offset: int, count: int) -> None:
    """The portable path: read a chunk, write it through the transport (which
    encrypts under TLS), wait for the drain when the transport asks."""
    while count:
        chunk = os.pread(fd, min(count, READ_CHUNK), offset)
        if not chunk:
            raise RuntimeError("the file ended before the bytes the response promised")
        if conn.closed:
            raise ClientDisconnected("the client closed the connection")
        conn.write(chunk)
        offset += len(chunk)
        count -= len(chunk)
        waiter = conn.drain()
        if waiter is not None:
            await waiter
            if conn.closed:
                raise ClientDisconnected("the client closed the connection")
