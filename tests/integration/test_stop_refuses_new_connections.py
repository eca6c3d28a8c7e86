"""A graceful stop refuses new connections at once, and drains the ones it has.

Before, the master and each stopping worker kept their copies of the listening
socket open until they exited: the kernel went on completing handshakes that no
one accepted, and reset them at the exit. A load balancer retries a refused
connection on another server; a reset one is a failed request.
"""

from __future__ import annotations

import signal
import socket
import threading

import httpx
import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind, worker_class", [("tcp", "uvloop"), ("unix", "asyncio")])
def test_a_graceful_stop_refuses_new_connections_and_drains(arbiter_process, tmp_path,
                                                            worker_class: str, kind: str) -> None:
    path = str(tmp_path / "app.sock")
    bind = ["--bind", f"unix:{path}"] if kind == "unix" else []
    server = arbiter_process(["lifecycle:app", "--workers", "2", "-k", worker_class, *bind])
    server.wait_ready()
    if kind == "unix":
        family, address, url, transport = socket.AF_UNIX, path, "http://app", \
            httpx.HTTPTransport(uds=path)
    else:
        family, address, url, transport = socket.AF_INET, server.address, server.url, \
            httpx.HTTPTransport()
    results: list[object] = []

    def slow_request() -> None:
        with httpx.Client(transport=transport, timeout=30) as client:
            try:
                results.append(client.get(url + "/slow?s=5").status_code)
            except httpx.HTTPError as exc:
                results.append(exc)

    thread = threading.Thread(target=slow_request)
    thread.start()
    server.wait_for_log(r"IN FLIGHT /slow", stream="stdout")
    server.signal(signal.SIGTERM)
    server.wait_for_log(r"graceful stop of 2 worker\(s\)")

    def refused() -> bool:
        with socket.socket(family) as sock:
            sock.settimeout(2)
            try:
                sock.connect(address)
            except (ConnectionRefusedError, FileNotFoundError):
                return True
        return False

    wait_until(refused, 3, message="new connections refused during the drain")
    assert results == []  # while the in-flight request is still being served
    thread.join(30)
    assert results == [200]  # the in-flight request finished
    assert server.wait_exit(30) == 0
