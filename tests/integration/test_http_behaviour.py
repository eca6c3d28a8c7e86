"""One behaviour suite over both parsers and both loops, in raw bytes."""

from __future__ import annotations

import socket

import httpx
import pytest

pytestmark = pytest.mark.slow

BACKENDS = [("h11", "uvloop"), ("httptools", "uvloop"), ("h11", "asyncio"),
            ("httptools", "asyncio")]


@pytest.fixture(params=BACKENDS, ids=["-".join(b) for b in BACKENDS])
def server(request, arbiter_process):
    http, loop = request.param
    return arbiter_process(["basic:app", "--http", http, "--worker-class", loop,
                            "--limit-request-line", "200", "--limit-request-fields", "20",
                            "--limit-request-field-size", "300",
                            "--limit-request-body", "1000"]).wait_ready()


def exchange(server, raw: bytes) -> bytes:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
    return data


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


@pytest.mark.parametrize("raw, status", [
    (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30))
     + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 400 + b"\r\n\r\n", 431),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked"
     b"\r\n\r\n0\r\n\r\n", 400),
    (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
     400),
    (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
], ids=["line-414", "count-431", "size-431", "body-413", "cl-te", "dup-cl", "space-colon",
        "garbage"])
def test_bad_requests_get_a_status_and_close(server, raw: bytes, status: int) -> None:
    response = exchange(server, raw)
    assert status_of(response) == status
    assert httpx.get(server.url, timeout=5).status_code == 200  # others unaffected
    assert len(server.worker_pids()) == 1


def test_pipelined_requests_answer_in_order(server) -> None:
    raw = b"".join(b"GET /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d" % i
                   for i in range(3)) + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    response = exchange(server, raw)
    assert response.count(b"HTTP/1.1 200 ") == 4
    bodies = [response.index(b"\r\n1\r\n%d\r\n" % i) for i in range(3)]
    assert bodies == sorted(bodies)


def test_head_has_no_body_and_chunked_response(server) -> None:
    response = exchange(server, b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"\r\n\r\n")
    response = exchange(server, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"transfer-encoding: chunked" in response and response.endswith(b"0\r\n\r\n")
    # never chunked to HTTP/1.0 (RFC 9112 6.1): the close ends the body
    response = exchange(server, b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head and b"connection: close" in head
    assert body == b"Hello, world!"


def test_chunked_request_body(server) -> None:
    raw = (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert b"hello world" in exchange(server, raw)


def test_expect_100_continue(server) -> None:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(b"ok")
        assert b"\r\n2\r\nok\r\n" in sock.recv(4096)


UPLOAD = 128 * 1024 * 1024  # far more than the kernel's socket buffers can hold


@pytest.mark.parametrize("http, loop", BACKENDS, ids=["-".join(b) for b in BACKENDS])
def test_an_unread_body_pauses_reading_until_the_app_reads(arbiter_process, http: str,
                                                             loop: str) -> None:
    """Read flow control: a body the app has not read yet is held up to a
    high-water mark (256 KiB), then reading stops and the kernel's buffers fill,
    so the client cannot push more; once the app reads, reading resumes and
    the whole body arrives, none lost."""
    import select
    import time

    server = arbiter_process(["uploads:app", "--http", http, "--worker-class", loop]
                             ).wait_ready()
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        sock.sendall(b"POST /hold HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % UPLOAD)
        sock.setblocking(False)
        piece = b"u" * 65536
        sent = 0
        deadline = time.monotonic() + 60
        last_progress = time.monotonic()
        # push until the server stops taking bytes: no progress for 2 s
        while sent < UPLOAD and time.monotonic() - last_progress < 2.0:
            assert time.monotonic() < deadline, "the client could neither send nor stall"
            select.select([], [sock], [], 0.1)
            try:
                sent += sock.send(piece[:UPLOAD - sent])
                last_progress = time.monotonic()
            except BlockingIOError:
                pass
        # the kernel holds at most 32 MiB here (tcp_rmem) plus the 64 KiB send buffer
        assert sent < UPLOAD // 2, f"the server read {sent} bytes the app never asked for"
        assert httpx.get(server.url + "/release", timeout=10).text == "released"
        sock.settimeout(60)
        while sent < UPLOAD:
            sent += sock.send(piece[:UPLOAD - sent])
        response = b""
        while not response.endswith(b"\r\n\r\n%d" % UPLOAD):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {response!r}"
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 "), response


@pytest.mark.parametrize("loop_name", ["asyncio", "uvloop"])
def test_tcp_nodelay_is_set_on_accepted_connections(loop_name: str) -> None:
    """asyncio leaves TCP_NODELAY off on sockets accepted from a listener it did
    not create (ours: the master binds), and head + body would then wait for
    the client's delayed ACK. Checked on the server's own accepted socket."""
    import asyncio

    from arbiter.config import resolve
    from workers.http.server import HttpServer

    async def hello(scope, receive, send):  # pragma: no cover - not called
        pass

    async def check() -> int:
        listener = socket.create_server(("127.0.0.1", 0))
        server = HttpServer(hello, resolve({"app": "x:app"}, {}).http(), lifespan_state={},
                            loop=asyncio.get_running_loop())
        await server.start([listener])
        client = socket.create_connection(listener.getsockname())
        try:
            deadline = asyncio.get_running_loop().time() + 5
            while not server.connections:  # poll the accept with a deadline
                assert asyncio.get_running_loop().time() < deadline, "never accepted"
                await asyncio.sleep(0.01)  # deliberate (noqa: sleep): one poll step, bounded above
            conn = next(iter(server.connections))
            sock = conn.transport.get_extra_info("socket")
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        finally:
            client.close()
            server.close_now()
            listener.close()

    if loop_name == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(check()) != 0
    finally:
        loop.close()


@pytest.mark.parametrize("te, status", [(b"gzip", 501), (b"chunked, gzip", 400)])
def test_transfer_encoding_other_than_final_chunked(server, te: bytes, status: int) -> None:
    raw = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te + b"\r\n\r\n"
    assert status_of(exchange(server, raw)) == status


# ---------------------------------------------------------------- upgrades (RFC 9110 7.8)


def responses(data: bytes) -> list[tuple[bytes, bytes]]:
    """Split everything a connection sent, up to its close, into (head, body)
    pairs; a response body is framed by Content-Length or chunked."""
    found = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"a partial head: {head!r}"
        fields = {n.strip().lower(): v.strip() for n, _, v in
                  (line.partition(b":") for line in head.split(b"\r\n")[1:])}
        if b"content-length" in fields:
            length = int(fields[b"content-length"])
            body, data = data[:length], data[length:]
        else:
            assert fields.get(b"transfer-encoding") == b"chunked", head
            body = b""
            while True:
                size_line, _, data = data.partition(b"\r\n")
                size = int(size_line, 16)
                body, data = body + data[:size], data[size + 2:]
                if not size:
                    break
        found.append((head, body))
    return found


def scope_headers(body: bytes) -> list[tuple[str, str]]:
    import json
    return [(name, value) for name, value in json.loads(body)["headers"]]


def upgrade_offer(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """What of an upgrade offer reached the app (it should see none)."""
    return [(name, value) for name, value in headers if name == "upgrade"
            or (name == "connection" and "upgrade" in value.lower())]


def test_curl_http2_on_plain_http_is_served_as_http_1_1(server) -> None:
    """curl --http2 (and Java's HttpClient) offers h2c on plain http: the
    request is served as HTTP/1.1, without a 101 and without the offer."""
    import subprocess

    result = subprocess.run(["curl", "-sS", "-v", "--http2", "--max-time", "10",
                             server.url + "/scope"], capture_output=True, timeout=20)
    sent = [line for line in result.stderr.splitlines() if line.startswith(b"> ")]
    received = [line for line in result.stderr.splitlines() if line.startswith(b"< ")]
    assert b"> Upgrade: h2c" in sent, result.stderr  # curl did make the offer
    assert result.returncode == 0, result.stderr
    assert received[0].startswith(b"< HTTP/1.1 200"), received
    assert not any(b" 101 " in line for line in received), received
    headers = scope_headers(result.stdout)
    assert not upgrade_offer(headers) and ("connection", "HTTP2-Settings") in headers, headers
    assert "ERROR" not in server.stderr, server.stderr


@pytest.mark.parametrize("body", [b"", b"hello"], ids=["no-body", "body"])
def test_an_unknown_upgrade_is_ignored_and_pipelining_goes_on(server, body: bytes) -> None:
    offer = b"Connection: Upgrade\r\nUpgrade: foo\r\n"
    raw = (b"POST /echo HTTP/1.1\r\nHost: x\r\n" + offer + b"Content-Length: %d\r\n\r\n%s"
           % (len(body), body)
           + b"GET /scope HTTP/1.1\r\nHost: x\r\n" + offer + b"Connection: close\r\n\r\n")
    answered = responses(exchange(server, raw))
    assert [head.split(b"\r\n")[0] for head, _ in answered] == [b"HTTP/1.1 200 OK"] * 2, answered
    assert answered[0][1] == body
    headers = scope_headers(answered[1][1])
    assert not upgrade_offer(headers) and ("connection", "close") in headers, headers
    assert "ERROR" not in server.stderr, server.stderr


def test_a_websocket_upgrade_without_its_headers_is_400(server) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    response = exchange(server, raw)
    assert status_of(response) == 400 and response.count(b"HTTP/1.1 ") == 1, response
    assert httpx.get(server.url, timeout=5).status_code == 200
