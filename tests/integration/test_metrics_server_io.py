"""The metrics server's I/O in-process, on real loopback sockets and a real selector,
driven like the master loop drives it, with a fake clock for the deadlines: a page
far larger than the socket buffers goes out as the client reads it, never blocking."""

from __future__ import annotations

import os
import selectors
import socket
import time

import pytest

from arbiter.addresses import Address
from arbiter.metrics_server import ACCEPT_PAUSE_S, MAX_CONNECTIONS, SCRAPE_TIMEOUT_S, start

BIG = "x" * 1023 + "\n"


class Loop:
    """One selector, one metrics server, and the master loop's two calls to it."""

    def __init__(self, page: str) -> None:
        self.now = 100.0
        self.selector = selectors.DefaultSelector()
        self.renders = 0

        def render() -> str:
            self.renders += 1
            return page

        server = start(Address("tcp", host="127.0.0.1", port=0), None, {}, self.selector,
                       render, lambda: self.now)
        assert server is not None
        self.server = server
        self.address = server.listener.sock.getsockname()

    def turn(self, timeout: float = 0.0) -> float:
        """One pass of the master loop; returns how long select() took."""
        started = time.monotonic()
        for key, events in self.selector.select(timeout):
            key.data(events)
        self.server.poll(self.now)
        return time.monotonic() - started

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.connect(self.address)
        sock.settimeout(5)
        for _ in range(10):
            self.turn(0.01)
        return sock

    def close(self) -> None:
        self.server.close()
        self.selector.close()


@pytest.fixture
def loop_with_big_page():
    loop = Loop(BIG * 4096)  # 4 MiB: far past what the kernel buffers hold
    yield loop
    loop.close()


def test_a_big_page_goes_out_as_a_slow_client_reads_it(loop_with_big_page) -> None:
    loop = loop_with_big_page
    client = loop.connect(rcvbuf=4096)
    client.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    assert loop.turn(1.0) < 0.5  # the read and the first write: no blocking on the rest
    outbox = next(iter(loop.server.scrapes.values())).outbox
    assert 0 < len(outbox) < len(BIG) * 4096  # partly written, the rest waits
    received = b""
    client.setblocking(False)
    deadline = time.monotonic() + 30
    while not received.endswith(b"x\n") or len(received) < len(BIG) * 4096:
        assert time.monotonic() < deadline, len(received)
        took = loop.turn(0.01)
        assert took < 0.5, took  # each pass is short, however slow the reader
        try:
            while chunk := client.recv(65536):
                received += chunk
        except BlockingIOError:
            pass
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and body == (BIG * 4096).encode()
    assert loop.renders == 1
    client.close()


def test_a_client_that_never_reads_is_dropped_at_its_deadline(loop_with_big_page) -> None:
    loop = loop_with_big_page
    client = loop.connect(rcvbuf=4096)
    client.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    loop.turn(0.1)
    assert len(loop.server.scrapes) == 1
    assert loop.server.deadline() == pytest.approx(loop.now + SCRAPE_TIMEOUT_S)
    loop.now += SCRAPE_TIMEOUT_S - 0.1
    loop.turn()
    assert len(loop.server.scrapes) == 1  # not yet
    loop.now += 0.2
    loop.turn()
    assert loop.server.scrapes == {} and loop.server.deadline() is None
    client.close()


def test_silent_clients_the_limit_and_a_bad_head(loop_with_big_page) -> None:
    loop = loop_with_big_page
    silent = [loop.connect() for _ in range(MAX_CONNECTIONS)]
    assert len(loop.server.scrapes) == MAX_CONNECTIONS
    assert loop.turn(0.2) >= 0.15  # nothing to do: select() sleeps, the silence costs nothing
    extra = loop.connect()
    assert extra.recv(10) == b""  # one too many: closed at once
    assert len(loop.server.scrapes) == MAX_CONNECTIONS
    for sock in silent:
        sock.close()
    for _ in range(10):
        loop.turn(0.01)
    assert loop.server.scrapes == {}
    bad = loop.connect()
    bad.sendall(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000)
    for _ in range(10):
        loop.turn(0.01)
    assert bad.recv(100).startswith(b"HTTP/1.1 431 ")
    assert loop.renders == 0


def test_the_handover_to_a_new_master_answers_a_scrape_caught_by_the_exec() -> None:
    """What a re-exec does, in one process: the old server exports its listener and
    the scrapes it has not answered; the new one adopts both and answers them."""
    old = Loop("arbiter_generation 1\n")
    waiting = old.connect()  # accepted; its request comes only after the exec
    answered = old.connect()
    answered.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    old.turn(0.1)
    env = old.server.export_for_exec()
    assert env["ARBITER_METRICS_FD"].endswith(" 127.0.0.1:0")
    unanswered = [fd for fd, s in old.server.scrapes.items() if not s.answered]
    assert len(unanswered) == 1 and env["ARBITER_METRICS_SCRAPES"] == str(unanswered[0])
    # exec() would keep these fds and drop the Python objects: detach them here
    old.server.listener.sock.detach()
    for scrape in old.server.scrapes.values():
        if not scrape.answered:
            scrape.sock.detach()
        else:
            scrape.sock.close()  # (exec closes it: a non-inheritable fd)
    old.selector.close()
    assert answered.recv(100).startswith(b"HTTP/1.1 200 ")

    new = Loop.__new__(Loop)
    new.now, new.renders = 200.0, 0
    new.selector = selectors.DefaultSelector()
    server = start(Address("tcp", host="127.0.0.1", port=0), None, env, new.selector,
                   lambda: "arbiter_generation 2\n", lambda: new.now)
    assert server is not None and env == {}
    new.server, new.address = server, server.listener.sock.getsockname()
    assert new.address == old.address and len(server.scrapes) == 1
    waiting.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    for _ in range(10):
        new.turn(0.01)
    assert waiting.recv(4096).endswith(b"\r\n\r\narbiter_generation 2\n")
    later = new.connect()  # and the listener is the new master's
    later.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    for _ in range(10):
        new.turn(0.01)
    assert later.recv(4096).startswith(b"HTTP/1.1 200 ")
    for sock in (waiting, answered, later):
        sock.close()
    new.close()


def test_out_of_file_descriptors_pauses_accepting_instead_of_spinning() -> None:
    import resource

    loop = Loop("arbiter_generation 1\n")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    client = socket.socket()
    client.settimeout(5)
    client.connect(loop.address)  # in the listen queue; accept() needs one more fd
    lowest_free = os.dup(0)  # a new fd takes the lowest free number: forbid it and above
    os.close(lowest_free)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
    try:
        loop.turn(0.1)  # accept() fails with EMFILE
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert loop.server.scrapes == {}
    assert loop.server.deadline() == pytest.approx(loop.now + ACCEPT_PAUSE_S)
    assert loop.turn(0.2) >= 0.15  # paused: the pending connection does not wake the loop
    loop.now += ACCEPT_PAUSE_S
    loop.turn()  # poll() resumes accepting
    client.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
    for _ in range(10):
        loop.turn(0.01)
    assert client.recv(4096).startswith(b"HTTP/1.1 200 ")
    client.close()
    loop.close()
