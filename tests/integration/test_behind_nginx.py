"""arbiter behind the real nginx, configured by the shipped deploy/nginx/arbiter.conf.

The test rewrites only the values the file marks for editing (the listen port, the
socket path), wraps it in a minimal nginx.conf whose files all live in tmp_path,
and starts arbiter with the command line the file documents. Clients connect from
127.0.0.2, so an address the app reports can only have come from the proxy headers.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.fronts import documented_arbiter_args, replace_arg, require, rewrite, shipped, \
    start_front
from tests.load import Load

pytestmark = pytest.mark.slow

CLIENT_ADDRESS = "127.0.0.2"  # any loopback address; not the one nginx connects from


class Stack:
    def __init__(self, server, front, sock: Path) -> None:
        self.server, self.front, self.sock = server, front, sock
        self.url = f"http://127.0.0.1:{front.port}"


def wrapper_conf(tmp_path: Path, site: Path) -> str:
    """The main context a distribution's nginx.conf would give: here every path is
    under tmp_path and nginx stays in the foreground."""
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / name).mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""  # its workers must reach tmp_path
    return (f"{user}worker_processes 1;\npid {tmp_path}/nginx.pid;\n"
            f"error_log {tmp_path}/error.log info;\nevents {{ worker_connections 256; }}\n"
            f"http {{\n  access_log {tmp_path}/access.log;\n"
            + "".join(f"  {name}_temp_path {tmp_path}/{name};\n" if name != "body" else
                      f"  client_body_temp_path {tmp_path}/body;\n"
                      for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"))
            + f"  include {site};\n}}\n")


@pytest.fixture
def stack(arbiter_process, fronts, tmp_path) -> Stack:
    nginx = require("nginx")
    text = shipped("nginx/arbiter.conf")
    sock = tmp_path / "arbiter.sock"
    args = replace_arg(documented_arbiter_args(text), "--bind", f"unix:{sock}")
    server = arbiter_process(["fronted:app", *args, "--workers", "1"]).wait_ready()
    site, main = tmp_path / "site.conf", tmp_path / "nginx.conf"
    main.write_text(wrapper_conf(tmp_path, site))

    def argv(port: int) -> list[str]:
        site.write_text(rewrite(text, {"listen 80;": f"listen 127.0.0.1:{port};",
                                       "server unix:/run/myapp/arbiter.sock;":
                                       f"server unix:{sock};"}))
        return [nginx, "-p", str(tmp_path), "-c", str(main), "-e", str(tmp_path / "error.log"),
                "-g", "daemon off;"]

    front = start_front(argv, tmp_path / "nginx.out", fronts)
    return Stack(server, front, sock)


def raw_get(stack: Stack, path: str, extra: bytes = b"") -> tuple[int, bytes]:
    """One request on a new connection from CLIENT_ADDRESS."""
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((CLIENT_ADDRESS, 0))
        sock.connect(("127.0.0.1", stack.front.port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: app.test\r\n".encode() + extra
                     + b"Connection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_the_app_sees_the_client_address_and_scheme_from_the_proxy_headers(stack) -> None:
    status, body = raw_get(stack, "/scope")
    assert status == 200, body
    scope = json.loads(body)
    assert scope["client"] == [CLIENT_ADDRESS, 0]  # nginx sends the address, not the port
    assert scope["scheme"] == "http"
    headers = dict(scope["headers"])
    assert headers["x-forwarded-for"] == CLIENT_ADDRESS and "connection" not in headers
    # a client cannot pass itself off as another address: nginx appends the real one
    status, body = raw_get(stack, "/scope", b"X-Forwarded-For: 198.51.100.1\r\n")
    assert json.loads(body)["client"] == [CLIENT_ADDRESS, 0]


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            inodes.add(target)
    return inodes


def test_nginx_reuses_its_upstream_connections(stack) -> None:
    """Ten client connections, one after the other: after each response the worker
    holds one connection from nginx, and it is the same one every time."""
    [worker] = stack.server.worker_pids()
    before = _socket_inodes(worker)  # the listener and the worker's own sockets
    seen = []
    for _ in range(10):
        status, _ = raw_get(stack, "/pid")
        assert status == 200
        seen.append(sorted(_socket_inodes(worker) - before))
    assert len(seen[0]) == 1, seen
    assert all(s == seen[0] for s in seen), f"upstream connections after each request: {seen}"


def test_a_websocket_echo_through_nginx(stack) -> None:
    client_sock = socket.socket()
    client_sock.settimeout(10)
    client_sock.bind((CLIENT_ADDRESS, 0))
    client_sock.connect(("127.0.0.1", stack.front.port))
    with connect(f"ws://127.0.0.1:{stack.front.port}/ws", sock=client_sock,
                 open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(10) == "echo:hello"
        ws.send(b"\x01\x02\x03")
        assert ws.recv(10) == b"\x03\x02\x01"
        ws.send("scope")
        scope = json.loads(ws.recv(10))
    assert scope["client"] == [CLIENT_ADDRESS, 0] and scope["scheme"] == "ws"


def test_request_bodies_pass_whole_with_a_length_or_chunked(stack) -> None:
    payload = os.urandom(5 * 1024 * 1024 + 7)  # past nginx's 1m default, under the file's 64m
    expected = {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    with httpx.Client(base_url=stack.url, timeout=30) as client:
        response = client.post("/upload", content=payload)
        assert response.status_code == 200 and response.json() == expected
        chunks = (payload[i:i + 65536] for i in range(0, len(payload), 65536))
        response = client.post("/upload", content=chunks)  # Transfer-Encoding: chunked
        assert response.status_code == 200 and response.json() == expected


def test_twenty_reloads_under_load_through_nginx_fail_no_request(stack) -> None:
    """Keep-alive clients and new-connection clients through nginx while arbiter
    does 20 rolling reloads: every request gets its 200."""
    loads = [Load(stack.url, "/pid"), Load(stack.url, "/pid", fresh=True)]
    try:
        for load in loads:
            load.wait_more(20)
        for n in range(1, 21):
            stack.server.signal(signal.SIGHUP)
            stack.server.wait_for_log(r"reload: generation \d+ is serving", timeout=30,
                                      count=n)
            for load in loads:
                load.wait_more(5)
    finally:
        for load in loads:
            load.finish()
    nginx_errors = [line for line in (stack.sock.parent / "error.log").read_text().splitlines()
                    if "[error]" in line]
    print(f"through nginx, 20 reloads: {[load.ok for load in loads]} requests served "
          f"(keep-alive, new connection each), failed: {[load.failed for load in loads]}; "
          f"nginx logged {len(nginx_errors)} upstream error(s) (retried): {nginx_errors[:3]}")
    assert [load.failed for load in loads] == [[], []]
    pids = {body for load in loads for body in load.first_seen}
    assert len(pids) >= 21  # a new worker served after every reload
