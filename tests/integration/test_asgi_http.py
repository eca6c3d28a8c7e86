"""The ASGI http and websocket scopes and events, as an app sees them, on both parsers."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
import websockets

from tests.conftest import wait_until  # noqa: E402
from tests.integration.conftest import WS_BACKENDS

pytestmark = pytest.mark.slow

BACKENDS = ["h11", "httptools"]


@pytest.fixture(params=BACKENDS)
def server(request, arbiter_process):
    return arbiter_process(["asgi_probe:app", "--http", request.param, "--root-path", "/api",
                            "--header", "X-Extra:yes", "--no-date-header"]).wait_ready()


def raw_exchange(server, raw: bytes, timeout: float = 5) -> bytes:
    with socket.create_connection(server.address, timeout=timeout) as sock:
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


def json_body(response: bytes) -> dict:
    return json.loads(response.partition(b"\r\n\r\n")[2])


def test_http_scope_to_the_letter(server) -> None:
    response = raw_exchange(server, b"GET /a%20b/%E2%82%AC?x=1&y=%20z HTTP/1.1\r\nHost: h\r\n"
                                    b"X-Dup: 1\r\nX-DUP: 2\r\nConnection: close\r\n\r\n")
    scope = json_body(response)
    assert scope["type"] == "http" and scope["http_version"] == "1.1"
    assert scope["method"] == "GET" and scope["scheme"] == "http"
    assert scope["path"] == "/api/a b/\u20ac"
    assert scope["raw_path"] == "/a%20b/%E2%82%AC"
    assert scope["root_path"] == "/api"
    assert scope["query_string"] == "x=1&y=%20z"
    assert scope["headers"] == [["host", "h"], ["x-dup", "1"], ["x-dup", "2"],
                                ["connection", "close"]]
    host, port = scope["client"]
    assert host == "127.0.0.1" and isinstance(port, int) and port > 0
    assert scope["server"] == [server.address[0], server.address[1]]
    assert scope["asgi"]["version"] == "3.0"
    assert scope["state"] == {"ready": "yes"}


def test_default_headers_flags(server) -> None:
    response = raw_exchange(server, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    head = response.partition(b"\r\n\r\n")[0].lower()
    assert b"\r\nx-extra: yes" in head
    assert b"\r\nserver: arbiter" in head
    assert b"\r\ndate:" not in head


def test_no_server_header(arbiter_process) -> None:
    server = arbiter_process(["asgi_probe:app", "--no-server-header"]).wait_ready()
    response = httpx.get(server.url, timeout=5)
    assert "server" not in response.headers and "date" in response.headers


def test_http_10_closes_by_default_and_keeps_alive_on_request(server) -> None:
    response = raw_exchange(server, b"GET / HTTP/1.0\r\n\r\n")
    assert json_body(response)["http_version"] == "1.0"
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        first = b""
        while not first.endswith(b"}"):
            first += sock.recv(65536)
        assert b"connection: close" not in first.lower()
        sock.sendall(b"GET /again HTTP/1.0\r\n\r\n")  # the same connection still serves
        second = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            second += chunk
        assert json_body(second)["path"] == "/api/again"


def test_disconnect_event_and_send_after_disconnect(server) -> None:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(b"GET /wait-disconnect HTTP/1.1\r\nHost: h\r\n\r\n")
    events: dict = {}

    def seen() -> bool:
        events.update(httpx.get(server.url + "/events", timeout=5).json())
        return "late_send" in events
    wait_until(seen, timeout=10)
    assert events["disconnect"] == "seen"
    assert events["late_send"] not in ("no error",)  # an OSError subclass was raised
    assert "exception in the app" not in server.stderr  # and not logged as an app error


@pytest.mark.parametrize("ws", WS_BACKENDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_websocket_echo_and_refusal(arbiter_process, backend: str, ws: str) -> None:
    server = arbiter_process(["asgi_probe:app", "--http", backend, "--ws", ws]).wait_ready()
    url = f"ws://{server.address[0]}:{server.address[1]}/ws"

    async def talk() -> None:
        async with websockets.connect(url) as ws:
            await ws.send("hi")
            assert await ws.recv() == "echo:hi"
            await ws.send(b"abc")
            assert await ws.recv() == b"cba"
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(url + "/deny"):
                pass
        assert refused.value.response.status_code == 403
    asyncio.run(talk())
    # the worker that served the websocket still serves http
    assert httpx.get(server.url, timeout=5).status_code == 200


def test_absolute_form_target_gives_the_path(server) -> None:
    response = raw_exchange(server, b"GET http://example.com/a/b?c=1 HTTP/1.1\r\n"
                                    b"Host: example.com\r\nConnection: close\r\n\r\n")
    scope = json_body(response)
    assert (scope["path"], scope["raw_path"], scope["query_string"]) == ("/api/a/b", "/a/b", "c=1")
