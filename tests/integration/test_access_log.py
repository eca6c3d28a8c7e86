"""The access log over the wire: one line per request, to a file or nowhere."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.slow


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def wait_for_lines(path: Path, count: int) -> list[str]:
    return wait_until(lambda: len(lines_of(path)) >= count and lines_of(path), 10,
                      message=f"{count} access log lines in {path}")


def raw_request(server, raw: bytes) -> bytes:
    with socket.create_connection(server.address, timeout=5) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_one_line_per_request_in_the_access_log_file(arbiter_process, tmp_path, http):
    log_file = tmp_path / "access.log"
    server = arbiter_process(["limits:app", "--http", http, "--access-log-file",
                              str(log_file)]).wait_ready()
    with httpx.Client(base_url=server.url, timeout=5) as client:  # keep-alive: one connection
        for i in range(5):
            assert client.get(f"/pid?n={i}", headers={"user-agent": "probe/1"}).status_code \
                == 200
        client.head("/")
        client.get("/stream?chunks=3&size=1000")
    raw_request(server, b"GET /sentinel HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    lines = wait_for_lines(log_file, 8)
    assert len(lines) == 8, lines
    for i, text in enumerate(lines[:5]):
        assert f'"GET /pid?n={i} HTTP/1.1" 200 ' in text, text
        assert text.startswith("127.0.0.1 - ")
    assert '"HEAD / HTTP/1.1" 200 0 ' in lines[5]
    assert '"GET /stream?chunks=3&size=1000 HTTP/1.1" 200 3000 ' in lines[6]
    assert '"GET /sentinel HTTP/1.1" 200 13 ' in lines[7]
    assert "/pid" not in server.stdout  # the file, not stdout


def test_no_access_log_writes_nothing(arbiter_process, tmp_path) -> None:
    log_file = tmp_path / "access.log"
    server = arbiter_process(["limits:app", "--no-access-log", "--access-log-file",
                              str(log_file)]).wait_ready()
    for _ in range(3):
        assert httpx.get(server.url + "/pid", timeout=5).status_code == 200
    server.signal(signal.SIGTERM)  # a graceful stop flushes whatever was logged
    assert server.wait_exit(15) == 0
    assert lines_of(log_file) == []
    assert "/pid" not in server.stdout


def test_json_lines_and_custom_format(arbiter_process, tmp_path) -> None:
    json_file, text_file = tmp_path / "json.log", tmp_path / "text.log"
    as_json = arbiter_process(["limits:app", "--access-log-json", "--access-log-file",
                               str(json_file)]).wait_ready()
    httpx.get(as_json.url + "/pid?x=1", timeout=5, headers={"referer": "http://r/"})
    [text] = wait_for_lines(json_file, 1)
    record = json.loads(text)
    assert record["r"] == "GET /pid?x=1 HTTP/1.1" and record["s"] == 200
    assert record["U"] == "/pid" and record["q"] == "x=1" and record["f"] == "http://r/"
    assert record["B"] == len(str(as_json.worker_pids()[0]))
    assert record["p"] == f"<{as_json.worker_pids()[0]}>"

    custom = arbiter_process(["limits:app", "--access-log-file", str(text_file),
                              "--access-log-format",
                              '%(h)s %(m)s %(U)s %(q)s %(H)s %(s)s %(B)s "%(a)s" '
                              '%({x-trace}i)s %(p)s']).wait_ready()
    httpx.get(custom.url + "/pid?y=2", timeout=5,
              headers={"user-agent": "ua/2", "x-trace": "t-77"})
    [text] = wait_for_lines(text_file, 1)
    pid = custom.worker_pids()[0]
    assert text == f'127.0.0.1 GET /pid y=2 HTTP/1.1 200 {len(str(pid))} "ua/2" t-77 <{pid}>'


def test_a_request_cannot_forge_an_access_log_line(arbiter_process, tmp_path) -> None:
    log_file = tmp_path / "access.log"
    server = arbiter_process(["limits:app", "--access-log-file", str(log_file),
                              "--access-log-format", '%(h)s "%(r)s" %(U)s %(s)s "%(a)s"']
                             ).wait_ready()
    forged = b"/x%0A6.6.6.6%20%22GET%20/admin%20HTTP/1.1%22%20/admin%20200%0D"
    response = raw_request(server, b"GET " + forged + b" HTTP/1.1\r\nHost: x\r\n"
                           b"User-Agent: a\"\r\nConnection: close\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200")
    raw_request(server, b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    lines = wait_for_lines(log_file, 2)
    assert len(lines) == 2, lines
    assert lines[0].startswith('127.0.0.1 "GET /x%0A6.6.6.6')
    assert '/x\\n6.6.6.6 \\"GET /admin HTTP/1.1\\" /admin 200\\r 200 "a\\""' in lines[0]
    assert lines[1].startswith('127.0.0.1 "GET /next HTTP/1.1" /next 200')
