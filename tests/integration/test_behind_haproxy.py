"""Two arbiter instances behind the real HAProxy, configured by the shipped
deploy/haproxy/haproxy.cfg (PROXY protocol v2, health checks on a path).

The test rewrites only the values the file marks for editing (the bind port, the
stats socket, the two server addresses) and starts each arbiter with the command
line the file documents. Clients connect from 127.0.0.2 so that the address the
app reports can only have come from the PROXY header (HAProxy connects from
127.0.0.1), and the client's port proves it was this very connection.
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import wait_until
from tests.fronts import documented_arbiter_args, replace_arg, require, rewrite, shipped, \
    start_front
from tests.load import Load

pytestmark = pytest.mark.slow

CLIENT_ADDRESS = "127.0.0.2"


class Stack:
    def __init__(self, servers, front, stats: Path) -> None:
        self.servers, self.front, self.stats = servers, front, stats
        self.url = f"http://127.0.0.1:{front.port}"

    def server_states(self) -> dict[str, dict[str, str]]:
        """``show stat`` on the stats socket: each arbiter server's row by name."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.stats))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        columns = lines[0].lstrip("# ").split(",")
        rows = [dict(zip(columns, line.split(","))) for line in lines[1:] if line]
        return {r["svname"]: r for r in rows if r["pxname"] == "arbiter"
                and r["svname"] not in ("BACKEND", "FRONTEND")}

    def summary(self) -> dict[str, tuple[str, str, str]]:
        return {name: (row["status"], row["check_status"], row["check_code"])
                for name, row in self.server_states().items()}

    def checked(self, names: tuple[str, ...] = ("app1", "app2")) -> bool:
        states = self.server_states()
        return all(states[n]["status"] == "UP" and states[n]["check_status"] == "L7OK"
                   and states[n]["check_code"] == "200" for n in names)


@pytest.fixture
def stack(arbiter_process, fronts, tmp_path) -> Stack:
    haproxy = require("haproxy")
    text = shipped("haproxy/haproxy.cfg")
    args = documented_arbiter_args(text)
    args = replace_arg(replace_arg(args, "--bind", "127.0.0.1:0"), "--forwarded-allow-ips",
                       "127.0.0.1")
    servers = [arbiter_process(["fronted:app", *args, "--workers", "1"]) for _ in range(2)]
    ports = [s.wait_ready().address[1] for s in servers]
    cfg, stats = tmp_path / "haproxy.cfg", tmp_path / "admin.sock"

    def argv(port: int) -> list[str]:
        cfg.write_text(rewrite(text, {
            "bind :80 ": f"bind 127.0.0.1:{port} ",
            "stats socket /run/haproxy/admin.sock": f"stats socket {stats}",
            "server app1 10.0.0.11:8000": f"server app1 127.0.0.1:{ports[0]}",
            "server app2 10.0.0.12:8000": f"server app2 127.0.0.1:{ports[1]}"}))
        return [haproxy, "-f", str(cfg), "-db"]

    front = start_front(argv, tmp_path / "haproxy.out", fronts)
    return Stack(servers, front, stats)


def raw_get(stack: Stack, path: str) -> tuple[int, int, dict[str, str], bytes]:
    """One request on a new connection from CLIENT_ADDRESS: (client port, status,
    headers, body)."""
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((CLIENT_ADDRESS, 0))
        sock.connect(("127.0.0.1", stack.front.port))
        port = sock.getsockname()[1]
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n"
                     .encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return port, int(lines[0].split()[1]), headers, body


def test_each_instance_sees_the_client_address_and_port_from_the_proxy_header(stack) -> None:
    pids = set()
    for _ in range(6):
        port, status, headers, body = raw_get(stack, "/scope")
        assert status == 200, body
        assert json.loads(body)["client"] == [CLIENT_ADDRESS, port]
        pids.add(headers["x-worker-pid"])
    assert len(pids) == 2  # round robin: both instances served


def test_the_health_check_on_the_path_passes_for_both_servers(stack) -> None:
    """Both servers pass an HTTP check (the app answers 404 anywhere but /healthz, so
    a 200 means the check asked for the path), made through the PROXY protocol."""
    wait_until(stack.checked, 15, message=f"both servers UP by an L7 check: {stack.summary()}")
    assert raw_get(stack, "/elsewhere")[1] == 404


def test_a_websocket_through_haproxy(stack) -> None:
    sock = socket.socket()
    sock.settimeout(10)
    sock.bind((CLIENT_ADDRESS, 0))
    sock.connect(("127.0.0.1", stack.front.port))
    port = sock.getsockname()[1]
    with connect(f"ws://127.0.0.1:{stack.front.port}/ws", sock=sock, open_timeout=10) as ws:
        ws.send("hello")
        assert ws.recv(10) == "echo:hello"
        ws.send(b"abc")
        assert ws.recv(10) == b"cba"
        ws.send("scope")
        assert json.loads(ws.recv(10))["client"] == [CLIENT_ADDRESS, port]


def test_stopping_one_instance_under_load_fails_no_request(stack) -> None:
    """A rolling deploy's step: one arbiter stops gracefully (SIGTERM) while clients
    keep coming; HAProxy sends what that one refuses to the other, and marks it DOWN."""
    wait_until(stack.checked, 15, message="both servers checked UP")
    loads = [Load(stack.url, "/pid"), Load(stack.url, "/pid", fresh=True)]
    try:
        for load in loads:
            load.wait_more(50)
        stack.servers[0].signal(signal.SIGTERM)
        assert stack.servers[0].wait_exit(30) == 0
        wait_until(lambda: stack.server_states()["app1"]["status"].startswith("DOWN"), 15,
                   message="app1 DOWN")
        for load in loads:
            load.wait_more(50)
    finally:
        for load in loads:
            load.finish()
    print(f"through HAProxy, one of two instances stopped: {[load.ok for load in loads]} "
          f"requests served, failed: {[load.failed for load in loads]}")
    assert [load.failed for load in loads] == [[], []]
    assert httpx.get(stack.url + "/pid", timeout=10).status_code == 200
