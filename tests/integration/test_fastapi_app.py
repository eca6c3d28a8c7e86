"""A real FastAPI app on the real server, driven by httpx and websockets:
FileResponse through pathsend, StreamingResponse, SSE, background tasks and a
WebSocket, then all of it across a SIGHUP reload with clients connected."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
from pathlib import Path

import httpx
import pytest
import websockets.sync.client
from websockets.exceptions import ConnectionClosed

from tests.conftest import wait_until

pytestmark = pytest.mark.slow

pytest.importorskip("fastapi")

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("files") / "ten-mib.bin"
    path.write_bytes(os.urandom(10 * MIB))
    return path


def start(arbiter_process, loop: str, http: str = "httptools", *extra: str):
    return arbiter_process(["fastapi_full:app", "--worker-class", loop, "--http", http,
                            "--no-access-log", *extra]).wait_ready()


def ws_url(server, path: str = "/ws") -> str:
    host, port = server.address
    return f"ws://{host}:{port}{path}"


def sse_events(text: str) -> list[str]:
    return [block.removeprefix("data: ") for block in text.split("\n\n") if block]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_fastapi_file_stream_sse_background_and_websocket(arbiter_process, big_file: Path,
                                                          loop: str, http: str) -> None:
    server = start(arbiter_process, loop, http)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        # anyio (a def endpoint runs in a thread) and asyncio.timeout need the
        # request's task to be current from the app's first line on
        for path in ("/sync", "/task"):
            response = client.get(path)
            assert response.status_code == 200, f"{path}: {response.text}"
        assert client.get("/sync").json()["thread"] != "MainThread"
        assert client.get("/task").json() == {"has_task": True, "same": True}
        # FileResponse: Starlette sees the extension and sends pathsend, not body chunks
        response = client.get("/file", params={"path": str(big_file)},
                              headers={"x-record": "file"})
        assert response.status_code == 200
        assert response.headers["content-length"] == str(10 * MIB)
        assert hashlib.sha256(response.content).digest() == \
            hashlib.sha256(big_file.read_bytes()).digest()
        assert client.get("/records/file").json() == ["http.response.start",
                                                      "http.response.pathsend"]
        # StreamingResponse: chunked, every chunk in order
        response = client.get("/stream", params={"n": 4})
        assert response.headers["transfer-encoding"] == "chunked"
        assert response.text == "chunk 0;chunk 1;chunk 2;chunk 3;"
        # SSE: text/event-stream, events as they are produced
        with client.stream("GET", "/sse", params={"n": 3, "delay": 0.05}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            text = "".join(stream.iter_text())
        pid = client.get("/pid").json()["pid"]
        assert sse_events(text) == [f"event {i} from {pid}" for i in range(3)]
        # a background task runs after the response is sent, and does its work
        response = client.post("/background", params={"record": "bg"},
                               headers={"x-record": "bg"})
        assert response.json() == {"queued": "bg"}
        records = wait_until(lambda: (r := client.get("/records/bg").json())
                             and len(r) == 3 and r, 10, message="the background task")
        assert records == ["http.response.start", "http.response.body", "background task ran"]
    with websockets.sync.client.connect(ws_url(server), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"pid": pid}
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo: hello"


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_fastapi_across_a_sighup_reload_with_clients_connected(arbiter_process,
                                                               loop: str) -> None:
    """The SSE stream in flight completes on the old worker, new requests land
    on the new one, the WebSocket hears 1012 and reconnects to the new one."""
    server = start(arbiter_process, loop, "httptools", "--graceful-timeout", "60")
    old_pid = httpx.get(server.url + "/pid", timeout=10).json()["pid"]
    events: list[str] = []
    outcome: dict[str, object] = {}

    def read_sse() -> None:
        try:
            with httpx.stream("GET", server.url + "/sse", params={"n": 30, "delay": 0.1},
                              timeout=60) as stream:
                buffered = ""
                for text in stream.iter_text():
                    buffered += text
                    *whole, buffered = buffered.split("\n\n")
                    events.extend(block.removeprefix("data: ") for block in whole if block)
            outcome["ok"] = True
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    def new_pid() -> int | None:
        pid = httpx.get(server.url + "/pid", timeout=10,
                        headers={"connection": "close"}).json()["pid"]
        return pid if pid != old_pid else None

    with websockets.sync.client.connect(ws_url(server), open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10)) == {"pid": old_pid}
        reader = threading.Thread(target=read_sse, daemon=True)
        reader.start()
        wait_until(lambda: len(events) >= 3, 20, message="the SSE stream to be in flight")
        server.signal(signal.SIGHUP)
        new = wait_until(new_pid, 30, interval=0.05, message="a request on the new generation")
        for _ in range(5):  # and from now on every new request goes there
            assert httpx.get(server.url + "/pid", timeout=10).json()["pid"] == new
        assert len(events) < 30  # all of that while the old stream was still in flight
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012  # service restart
    with websockets.sync.client.connect(ws_url(server), open_timeout=10) as again:
        assert json.loads(again.recv(timeout=10)) == {"pid": new}
        again.send("after the reload")
        assert again.recv(timeout=10) == "echo: after the reload"

    reader.join(60)
    assert outcome == {"ok": True}, outcome
    assert events == [f"event {i} from {old_pid}" for i in range(30)]
    server.wait_for_log(r"reload: generation 2 is serving", timeout=60)
