"""The request corpus over raw sockets against a real server, per backend.

Every refused case must get its status and a closed connection; every accepted
case its responses; and afterwards the same worker still serves a fresh
connection (no crash, no restart).
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.conftest import ArbiterProcess
from tests.http_corpus import CASES, SERVER_ARGS, Case

pytestmark = pytest.mark.slow

TIMEOUT = 3.0


class Reader:
    """Just enough of an HTTP/1.1 response reader to count and unframe replies."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            self.eof = True
            raise EOFError
        self.buf += chunk

    def _until(self, token: bytes) -> bytes:
        while token not in self.buf:
            self._more()
        part, _, self.buf = self.buf.partition(token)
        return part

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        part, self.buf = self.buf[:n], self.buf[n:]
        return part

    def response(self) -> tuple[int, bytes]:
        head = self._until(b"\r\n\r\n").split(b"\r\n")
        status = int(head[0].split(b" ", 2)[1])
        fields = {}
        for line in head[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
        if status == 100:
            return self.response()
        if b"content-length" in fields:
            return status, self._exactly(int(fields[b"content-length"]))
        if fields.get(b"transfer-encoding", b"").lower() == b"chunked":
            body = b""
            while True:
                size = int(self._until(b"\r\n").split(b";")[0], 16)
                if not size:
                    self._until(b"\r\n")
                    return status, body
                body += self._exactly(size)
                self._exactly(2)
        while True:  # delimited by close
            try:
                self._more()
            except EOFError:
                body, self.buf = self.buf, b""
                return status, body

    def closed(self) -> bool:
        """True when the server closes (EOF or reset) within the timeout."""
        try:
            while True:
                self._more()
        except (EOFError, ConnectionResetError):
            return True
        except TimeoutError:
            return False


def check_case(address: tuple[str, int], case: Case) -> str | None:
    """Run one case on its own connection; return a failure message or None."""
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        try:
            sock.sendall(case.raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may refuse and close before reading all of it
        reader = Reader(sock)
        try:
            if case.ok:
                for req in case.requests:
                    status, body = reader.response()
                    if status != 200:
                        return f"{case.id}: status {status}, expected 200"
                    if req.target == b"/echo" and body != req.body:
                        return f"{case.id}: echoed {body[:60]!r}, expected {req.body[:60]!r}"
                return None
            status, _ = reader.response()
        except (EOFError, ConnectionResetError) as exc:
            return f"{case.id}: connection ended early ({type(exc).__name__})"
        except TimeoutError:
            return f"{case.id}: no response within {TIMEOUT} s"
        if status != case.status:
            return f"{case.id}: status {status}, expected {case.status}"
        if not reader.closed():
            return f"{case.id}: connection left open after {status}"
    return None


def get(address: tuple[str, int], path: str) -> tuple[int, bytes]:
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
        return Reader(sock).response()


@pytest.fixture(params=["h11", "httptools"])
def server(request):
    process = ArbiterProcess(["basic:app", "--http", request.param, "--worker-class", "uvloop",
                              "--workers", "1", "--bind", "127.0.0.1:0", *SERVER_ARGS])
    try:
        yield process.wait_ready()
    finally:
        process.kill()


def test_corpus_against_live_server(server) -> None:
    started = time.monotonic()
    address = server.address
    status, pid_before = get(address, "/pid")
    assert status == 200
    failures = [msg for case in CASES if (msg := check_case(address, case)) is not None]
    assert not failures, "\n".join(failures)
    status, pid_after = get(address, "/pid")
    assert status == 200 and pid_after == pid_before
    assert get(address, "/")[1] == b"Hello, world!"
    assert time.monotonic() - started < 20
