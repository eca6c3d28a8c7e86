"""The ASGI response extensions on the real server, over loopback and TLS:
pathsend and zerocopysend (10 MiB, byte for byte), trailers, early hints.

Every parser and loop pairing runs the same checks; the responses are read
off raw sockets where the exact bytes are the behaviour under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
from pathlib import Path

import httpx
import pytest
import websockets.sync.client

from tests.conftest import ArbiterProcess, wait_until
from tests.integration.test_http_limits import wait_closed
from tests.integration.test_tls import certs  # noqa: F401  (the fixture)

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
COMBOS = [("httptools", "uvloop"), ("h11", "uvloop"), ("httptools", "asyncio"),
          ("h11", "asyncio")]


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("files") / "ten-mib.bin"
    path.write_bytes(os.urandom(10 * MIB))
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def start(args: list[str]) -> ArbiterProcess:
    server = ArbiterProcess(["extensions:app", "--no-access-log", "--log-level", "debug",
                             "--bind", "127.0.0.1:0", *args])
    try:
        server.wait_ready()
    except BaseException:
        server.kill()
        raise
    return server


@pytest.fixture(scope="module", params=COMBOS, ids=["-".join(c) for c in COMBOS])
def server(request):
    http, loop = request.param
    process = start(["--http", http, "--worker-class", loop])
    yield process
    process.kill()


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def tls_server(request, certs):  # noqa: F811
    process = start(["--worker-class", request.param, "--ssl-certfile", str(certs / "server.pem"),
                     "--ssl-keyfile", str(certs / "server.key")])
    yield process
    process.kill()


def tls_client(certs: Path) -> httpx.Client:  # noqa: F811
    return httpx.Client(verify=ssl.create_default_context(cafile=str(certs / "ca.pem")),
                        timeout=30)


# ---------------------------------------------------------------- a raw HTTP/1.1 reader


class Reader:
    """Responses off one raw socket: interim 1xx, Content-Length, chunked with
    trailers, or delimited by the close."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 20)
        self.buf += chunk
        return bool(chunk)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            assert self._fill(), f"closed mid-line: {self.buf[:200]!r}"
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            assert self._fill(), f"closed after {len(self.buf)} of {n} bytes"
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def fields(self) -> list[tuple[bytes, bytes]]:
        fields = []
        while (line := self.line()):
            name, _, value = line.partition(b":")
            fields.append((name.lower(), value.strip()))
        return fields

    def response(self, head_only: bool = False) -> dict:
        interim = []
        while True:
            status = int(self.line().split()[1])
            headers = self.fields()
            if status >= 200:
                break
            interim.append((status, headers))
        names = dict(headers)
        trailers = None
        if head_only or status in (204, 304):
            body = b""
        elif b"content-length" in names:
            body = self.exactly(int(names[b"content-length"]))
        elif names.get(b"transfer-encoding") == b"chunked":
            parts = []
            while (size := int(self.line(), 16)):
                parts.append(self.exactly(size))
                assert self.exactly(2) == b"\r\n"
            body = b"".join(parts)
            trailers = self.fields()
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return {"status": status, "headers": headers, "names": names, "body": body,
                "trailers": trailers, "interim": interim}


def connect(server: ArbiterProcess) -> socket.socket:
    sock = socket.create_connection(server.address, timeout=30)
    return sock


def get(path: str, *extra: bytes, method: bytes = b"GET", version: bytes = b"1.1") -> bytes:
    return (method + b" " + path.encode() + b" HTTP/" + version + b"\r\nHost: t\r\n"
            + b"".join(line + b"\r\n" for line in extra) + b"\r\n")


# ---------------------------------------------------------------- the scope


def test_the_extensions_advertised_and_the_spec_version(server) -> None:
    with connect(server) as sock:
        sock.sendall(get("/scope") + get("/scope", version=b"1.0"))
        reader = Reader(sock)
        http11 = json.loads(reader.response()["body"])
        http10 = json.loads(reader.response()["body"])
    assert http11 == {"extensions": ["http.response.early_hint", "http.response.pathsend",
                                     "http.response.trailers", "http.response.zerocopysend"],
                      "asgi": {"version": "3.0", "spec_version": "2.5"}}
    assert http10["extensions"] == ["http.response.pathsend", "http.response.zerocopysend"]
    host, port = server.address
    with websockets.sync.client.connect(f"ws://{host}:{port}/ws", open_timeout=10) as ws:
        ws_scope = json.loads(ws.recv(timeout=10))
    assert ws_scope == {"extensions": ["websocket.http.response"],
                        "asgi": {"version": "3.0", "spec_version": "2.5"}}


# ---------------------------------------------------------------- pathsend / zerocopysend


def test_pathsend_of_10_mib_byte_for_byte_and_zero_copy(server, big_file: Path) -> None:
    response = httpx.get(server.url + "/pathsend", params={"path": str(big_file)}, timeout=60)
    assert response.status_code == 200
    assert response.headers["content-length"] == str(10 * MIB)
    assert "transfer-encoding" not in response.headers
    assert sha(response.content) == sha(big_file.read_bytes())
    server.wait_for_log(r"a file body: 10485760 bytes zero-copy, 0 bytes read and written")


@pytest.mark.parametrize("query", [{"split": "1"}, {"offset": "0"}],
                         ids=["two-zerocopysends-and-a-body", "whole-file"])
def test_zerocopysend_of_10_mib_byte_for_byte(server, big_file: Path, query: dict) -> None:
    response = httpx.get(server.url + "/zerocopy", params={"path": str(big_file), **query},
                         timeout=60)
    assert response.status_code == 200
    if "split" in query:  # more_body: the length is not known up front
        assert response.headers["transfer-encoding"] == "chunked"
    else:
        assert response.headers["content-length"] == str(10 * MIB)
    assert sha(response.content) == sha(big_file.read_bytes())


def test_zerocopysend_with_offset_and_count_and_from_the_position(server,
                                                                  big_file: Path) -> None:
    data = big_file.read_bytes()
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(get(f"/zerocopy?path={big_file}&offset=12345&count=1000000"))
        response = reader.response()
        assert response["names"][b"content-length"] == b"1000000"
        assert response["body"] == data[12345:1012345]
        sock.sendall(get(f"/zerocopy?path={big_file}&position=777&count=3000"))
        response = reader.response()  # the file's position moved past what was sent
        assert response["body"] == data[777:3777] + b"|3777"


def test_head_of_a_file_and_the_connection_is_reused(server, big_file: Path) -> None:
    with connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(get(f"/pathsend?path={big_file}", method=b"HEAD"))
        head = reader.response(head_only=True)
        assert head["status"] == 200 and head["names"][b"content-length"] == b"10485760"
        # the next request on the same connection: the HEAD sent no body bytes
        sock.sendall(get(f"/pathsend?path={big_file}") + get("/scope"))
        full = reader.response()
        assert sha(full["body"]) == sha(big_file.read_bytes())
        assert reader.response()["status"] == 200  # pipelined after a file: kept alive
        assert b"connection" not in full["names"]


def test_keep_alive_after_files_small_and_large(server, tmp_path: Path,
                                                big_file: Path) -> None:
    small = tmp_path / "small.txt"
    small.write_bytes(b"tiny file\n")
    with connect(server) as sock:
        reader = Reader(sock)
        for path in (small, big_file, small):
            sock.sendall(get(f"/pathsend?path={path}&length={path.stat().st_size}"))
            assert reader.response()["body"] == path.read_bytes()
        sock.sendall(get("/scope"))
        assert reader.response()["status"] == 200


def test_a_missing_file_is_a_500_and_the_worker_serves_on(server, tmp_path: Path) -> None:
    with connect(server) as sock:
        sock.sendall(get(f"/pathsend?path={tmp_path / 'absent'}"))
        response = Reader(sock).response()
    assert response["status"] == 500 and response["names"][b"connection"] == b"close"
    assert httpx.get(server.url + "/scope", timeout=10).status_code == 200


def test_a_client_that_stops_reading_a_file_is_dropped(tmp_path: Path, big_file: Path) -> None:
    """Zero-copy respects --timeout-write like any body: a reader that stops
    is reset, the worker keeps serving."""
    process = start(["--timeout-write", "1"])
    try:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(process.address)
        sock.sendall(get(f"/pathsend?path={big_file}"))
        process.wait_for_log(r"dropping a client that read nothing for 1 s", timeout=30)
        _, data = wait_closed(sock, 30)
        assert len(data) < 10 * MIB
        sock.close()
        assert httpx.get(process.url + "/scope", timeout=10).status_code == 200
    finally:
        process.kill()


def test_a_slow_reader_gets_the_whole_file(server, big_file: Path) -> None:
    """Write flow control: the server waits for a client that reads late."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.settimeout(30)
    sock.connect(server.address)
    with sock:
        sock.sendall(get(f"/zerocopy?path={big_file}&split=1"))
        # read nothing until the server has surely filled the socket buffers
        wait_until(lambda: _unread(sock) >= 32 * 1024, 20, message="the socket to fill")
        assert sha(Reader(sock).response()["body"]) == sha(big_file.read_bytes())


def _unread(sock: socket.socket) -> int:
    import fcntl
    import termios
    return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4), "little")


# ---------------------------------------------------------------- TLS


@pytest.mark.parametrize("route", ["pathsend", "zerocopy"])
def test_files_over_tls_byte_for_byte(tls_server, certs, big_file: Path,  # noqa: F811
                                      route: str) -> None:
    host, port = tls_server.address
    with tls_client(certs) as client:
        response = client.get(f"https://{host}:{port}/{route}", params={"path": str(big_file)})
        assert response.status_code == 200
        assert sha(response.content) == sha(big_file.read_bytes())
        response = client.get(f"https://{host}:{port}/zerocopy",
                              params={"path": str(big_file), "offset": "5", "count": "99"})
        assert response.content == big_file.read_bytes()[5:104]
        assert client.get(f"https://{host}:{port}/scope").status_code == 200  # kept alive
    # under TLS the bytes go through the transport, which encrypts them
    tls_server.wait_for_log(r"a file body: 0 bytes zero-copy, 10485760 bytes read and written")


# ---------------------------------------------------------------- trailers


def test_trailers_follow_the_chunks_when_the_client_sends_te_trailers(server) -> None:
    with connect(server) as sock:
        sock.sendall(get("/trailers", b"TE: trailers") + get("/trailers?length=16",
                                                               b"TE: trailers"))
        reader = Reader(sock)
        for _ in range(2):  # with a Content-Length from the app too: chunks then
            response = reader.response()
            assert response["names"][b"transfer-encoding"] == b"chunked"
            assert b"content-length" not in response["names"]
            assert response["body"] == b"alpha-beta-gamma"
            assert response["trailers"] == [(b"x-checksum", sha(b"alpha-beta-gamma").encode()),
                                            (b"x-count", b"3")]


def test_trailers_are_dropped_without_te_trailers(server) -> None:
    with connect(server) as sock:
        sock.sendall(get("/trailers") + get("/trailers?length=16") + get("/scope"))
        reader = Reader(sock)
        chunked = reader.response()
        assert chunked["body"] == b"alpha-beta-gamma" and chunked["trailers"] == []
        with_length = reader.response()
        assert with_length["names"][b"content-length"] == b"16"
        assert with_length["body"] == b"alpha-beta-gamma"
        assert reader.response()["status"] == 200  # the connection went on


def test_a_trailer_with_cr_lf_is_refused_and_never_written(server) -> None:
    with connect(server) as sock:
        sock.sendall(get("/trailers?bad=1", b"TE: trailers"))
        _, data = wait_closed(sock, 20)
    assert b"alpha-" in data and b"x-injected" not in data
    assert not data.endswith(b"0\r\n\r\n")  # never passed off as complete
    server.wait_for_log(r"invalid response field b'x-checksum'")


# ---------------------------------------------------------------- early hints


def test_103_early_hints_come_before_the_final_response(server) -> None:
    with connect(server) as sock:
        sock.sendall(get("/early-hints", b"Connection: close"))
        _, data = wait_closed(sock, 20)
    hints = (b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload; as=style\r\n"
             b"link: </app.js>; rel=preload; as=script\r\n\r\n")
    assert data.startswith(hints + b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"\r\n\r\nfinal") and data.count(b"HTTP/1.1 ") == 2
    response = httpx.get(server.url + "/early-hints", timeout=10)  # a real client copes
    assert response.status_code == 200 and response.text == "final"


def test_no_early_hints_for_http_1_0(server) -> None:
    with connect(server) as sock:
        sock.sendall(get("/early-hints", version=b"1.0"))
        _, data = wait_closed(sock, 20)
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"103" not in data
    assert data.endswith(b"final")


def test_an_early_hint_with_cr_lf_is_refused_with_a_500(server) -> None:
    with connect(server) as sock:
        sock.sendall(get("/early-hints?bad=1"))
        _, data = wait_closed(sock, 20)
    assert data.startswith(b"HTTP/1.1 500 ") and b"evil" not in data and b"103" not in data
