"""A worker's stop, step by step, against the real server: --shutdown-delay with the
--health-path, streaming responses at the drain, and the lifespan bounds."""

from __future__ import annotations

import re
import signal
import socket
import time

import httpx
import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.slow


def raw_get(server, target: str, method: str = "GET") -> socket.socket:
    sock = socket.create_connection(server.address, timeout=10)
    sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def read_to_eof(sock: socket.socket, timeout: float = 30) -> tuple[bytes, float]:
    """Everything until the server closes, and when it did."""
    sock.settimeout(timeout)
    data = b""
    with sock:
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return data, time.monotonic()


# ---------------------------------------------------------------- streams at a stop


def test_a_stream_that_ends_within_the_graceful_timeout_finishes_across_sigterm(
        arbiter_process) -> None:
    server = arbiter_process(["long_lived:app", "--graceful-timeout", "15"]).wait_ready()
    sock = raw_get(server, "/stream?id=short&n=10&every=0.2")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in first
    server.signal(signal.SIGTERM)
    rest, _ = read_to_eof(sock)
    body = first + rest
    assert body.endswith(b"0\r\n\r\n"), body[-60:]  # the terminating chunk: complete
    assert all(f"data: {i}\n\n".encode() in body for i in range(10))
    assert server.wait_exit(30) == 0
    assert "STREAM FINALLY short 10" in server.stdout


def test_a_stream_longer_than_the_graceful_timeout_is_cut_never_passed_off_as_complete(
        arbiter_process) -> None:
    server = arbiter_process(["long_lived:app", "--graceful-timeout", "2"]).wait_ready()
    sock = raw_get(server, "/stream?id=long&n=200&every=0.1")
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    rest, closed_at = read_to_eof(sock)
    body = first + rest
    assert b"data: 3\n\n" in body  # it went on streaming during the graceful timeout
    assert not body.endswith(b"0\r\n\r\n"), "a cut stream was framed as complete"
    assert 1.0 < closed_at - started < 10, closed_at - started  # at the graceful timeout
    assert server.wait_exit(30) == 0
    sent = int(re.search(r"STREAM FINALLY long (\d+)", server.stdout).group(1))
    assert 3 < sent < 200  # the app's task was cancelled, and its finally ran
    assert "killing" not in server.stderr  # the worker cut it, not the master's SIGKILL


# ------------------------------------------------------- --health-path and --shutdown-delay


def test_the_health_path_is_answered_by_the_worker_not_the_app(arbiter_process) -> None:
    server = arbiter_process(["long_lived:app", "--health-path", "/healthz"]).wait_ready()
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(3):  # keep-alive: one connection for all three
            ok = client.get("/healthz")
            assert ok.status_code == 200 and ok.text == "OK\n"
            assert ok.headers.get("connection") != "close"
        head = client.head("/healthz")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == "3"
        refused = client.post("/healthz", content=b"x")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        assert client.get("/healthz?probe=1").status_code == 200  # the query is not the path
        assert client.get("/pid").status_code == 200
    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 0
    # not the app's: no access-log line, and not counted in the requests served
    assert "/healthz" not in server.stdout
    assert re.search(r"GET /pid HTTP/1.1\" 200", server.stdout)
    assert re.search(r"exited with code 0 \(after [\d.]+ s, 1 request\(s\) served\)",
                     server.stderr), server.stderr


def test_access_log_health_logs_the_health_path(arbiter_process) -> None:
    server = arbiter_process(["long_lived:app", "--health-path", "/healthz",
                              "--access-log-health"]).wait_ready()
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
    wait_until(lambda: re.search(r"GET /healthz HTTP/1.1\" 200", server.stdout), 10,
               message="the health check's access-log line")


def test_shutdown_delay_serves_while_the_health_path_says_503_then_drains(
        arbiter_process) -> None:
    """SIGTERM with --shutdown-delay 3: new connections are still accepted and
    served for ~3 s while /healthz answers 503 (Connection: close); then the
    graceful stop, and the master exits 0. (Requests are checked for the first
    1.5 s only, so that a slow machine never sends one after the delay.)"""
    server = arbiter_process(["long_lived:app", "--workers", "2", "--shutdown-delay", "3",
                              "--health-path", "/healthz",
                              "--graceful-timeout", "10"]).wait_ready()
    assert httpx.get(server.url + "/healthz", timeout=5).status_code == 200
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    server.wait_for_log(r"stopping in 3 s \(--shutdown-delay\)", count=2, timeout=10)
    health, served, last_ok = [], 0, 0.0
    while time.monotonic() - started < 1.5:  # inside the delay: everything still works
        with httpx.Client(timeout=5) as fresh:  # a new connection each time
            h = fresh.get(server.url + "/healthz")
        with httpx.Client(timeout=5) as fresh:
            r = fresh.get(server.url + "/pid")
        health.append((h.status_code, h.headers.get("connection")))
        assert r.status_code == 200, r
        served += 1
        last_ok = time.monotonic() - started
    assert set(health) == {(503, "close")}, health
    assert served >= 3 and last_ok >= 1.4
    assert server.wait_exit(20) == 0
    took = time.monotonic() - started
    assert 3.0 <= took < 12, took  # the delay, then a quick drain
    print(f"\n--shutdown-delay 3: {served} requests served during the delay "
          f"(last at {last_ok:.2f} s), health 503 throughout; exit after {took:.2f} s")
    assert "killing" not in server.stderr


# ---------------------------------------------------------------- lifespan bounds


def test_a_lifespan_startup_past_timeout_lifespan_exits_3_and_the_master_says_why(
        arbiter_process) -> None:
    server = arbiter_process(["long_lived:app", "--timeout-lifespan", "1"],
                             env={"STARTUP_HANG": "60"})
    assert server.wait_exit(30) == 3
    assert re.search(r"failed to boot: it exited with code 3 \(boot error\): lifespan startup "
                     r"did not complete within 1 s \(--timeout-lifespan\)", server.stderr), \
        server.stderr


def test_a_lifespan_startup_past_the_boot_timeout_is_reported_by_the_worker(
        arbiter_process) -> None:
    """Default bound: just before --boot-timeout, so the worker says what hung
    (exit 3) rather than being SIGKILLed by the master."""
    server = arbiter_process(["long_lived:app", "--boot-timeout", "5"],
                             env={"STARTUP_HANG": "60"})
    assert server.wait_exit(30) == 3
    assert re.search(r"lifespan startup did not complete within [\d.]+ s \(--boot-timeout\)",
                     server.stderr), server.stderr
    assert "did not become ready within the boot timeout" not in server.stderr


@pytest.mark.parametrize("args, bound", [(["--timeout-lifespan", "1"], "1 s \\(--timeout-lifespan"),
                                         ([], "2 s \\(--timeout-lifespan")])
def test_a_hanging_lifespan_shutdown_is_cut_at_its_bound_and_the_worker_exits(
        arbiter_process, args: list[str], bound: str) -> None:
    """--timeout-lifespan 1, or the default (a third of --graceful-timeout 6: 2 s)."""
    server = arbiter_process(["long_lived:app", "--graceful-timeout", "6", *args],
                             env={"SHUTDOWN_HANG": "60"}).wait_ready()
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    took = time.monotonic() - started
    assert re.search(rf"lifespan shutdown did not complete within {bound}\); cancelled it",
                     server.stderr), server.stderr
    assert "LIFESPAN FINALLY" in server.stdout  # the cancelled handler's finally ran
    assert took < 5.5, took  # before the graceful timeout: not the master's SIGKILL
    assert "killing" not in server.stderr
