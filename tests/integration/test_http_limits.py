"""Timeouts, flow control and the concurrency limit, black-box over raw sockets.

Every wait polls against a deadline; the only fixed delays are the pace at
which a test client deliberately trickles or reads (that pace *is* the
behaviour under test, not a wait for the server's state).
"""

from __future__ import annotations

import select
import socket
import time

import httpx
import psutil
import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.slow

PARSERS = ["h11", "httptools"]
LOOPS = ["uvloop", "asyncio"]
MIB = 1024 * 1024


def start(arbiter_process, *extra: str, http: str = "httptools", loop: str = "uvloop"):
    return arbiter_process(["limits:app", "--http", http, "--worker-class", loop,
                            "--no-access-log", *extra]).wait_ready()


def worker_pid(server) -> int:
    return int(httpx.get(server.url + "/pid", timeout=5).text)


def connect(server, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the window is small from the start
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5)
    sock.connect(server.address)
    return sock


def wait_closed(sock: socket.socket, timeout: float) -> tuple[float, bytes]:
    """Read until the server closes (EOF or reset); the moment it did and what it sent."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the server kept the connection open for {timeout} s; "
                                 f"got {data[:200]!r}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return time.monotonic(), data
        if not chunk:
            return time.monotonic(), data
        data += chunk


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One Content-Length response off a keep-alive socket: (head, body)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed mid-head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed mid-body"
        body += chunk
    assert len(body) == length, "more bytes than the response had"
    return head, body


def still_serving(server, pid: int) -> None:
    response = httpx.get(server.url + "/pid", timeout=5)
    assert response.status_code == 200
    assert int(response.text) == pid, "the worker was replaced"


def peer_gone(client: socket.socket) -> bool:
    """Whether the server closed or reset ``client``'s connection, seen from
    the client's own TCP state, without reading (what the client must not do)."""
    state = client.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    return state != 1  # not TCP_ESTABLISHED: CLOSE_WAIT (FIN) or CLOSE (RST)


def server_side_of(worker: int, client: socket.socket) -> bool:
    """Whether the worker still holds the accepted end of ``client``."""
    port = client.getsockname()[1]
    try:
        conns = psutil.Process(worker).net_connections(kind="tcp")
    except psutil.NoSuchProcess:
        return False
    return any(c.raddr and c.raddr.port == port for c in conns)


# ---------------------------------------------------------------- --timeout-header


@pytest.fixture(params=PARSERS)
def header_server(request, arbiter_process):
    return start(arbiter_process, "--timeout-header", "1", "--keep-alive", "5",
                 http=request.param)


def test_silent_client_is_closed_after_timeout_header(header_server) -> None:
    """A connection that sent no byte has no request to answer: closed, silently."""
    pid = worker_pid(header_server)
    with connect(header_server) as sock:
        opened = time.monotonic()
        closed, data = wait_closed(sock, 5)
    print(f"silent client closed after {closed - opened:.2f} s")
    assert 0.9 <= closed - opened <= 2.5, closed - opened
    assert data == b""
    still_serving(header_server, pid)


def assert_one_408(data: bytes) -> None:
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), data
    assert data.count(b"HTTP/1.1 ") == 1, data
    assert b"\r\nconnection: close\r\n" in data.lower(), data


def test_partial_head_gets_408_then_close(header_server) -> None:
    pid = worker_pid(header_server)
    with connect(header_server) as sock:
        opened = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\nHo")
        closed, data = wait_closed(sock, 5)
    print(f"stalled partial head answered 408 and closed after {closed - opened:.2f} s")
    assert 0.9 <= closed - opened <= 2.5, closed - opened
    assert_one_408(data)
    still_serving(header_server, pid)


def trickle(sock: socket.socket, raw: bytes, interval: float) -> float:
    """Send ``raw`` a byte at a time every ``interval`` s until the server
    closes; returns when the first byte went out. Fails if the whole head
    got through."""
    first = 0.0
    for i in range(len(raw)):
        try:
            sock.send(raw[i:i + 1])
        except (BrokenPipeError, ConnectionResetError):
            return first
        if not first:
            first = time.monotonic()
        readable, _, _ = select.select([sock], [], [], interval)  # the trickle's pace
        if readable:
            return first
    raise AssertionError("the server let a trickled head through")


SLOW_HEAD = b"GET /pid HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 40 + b"\r\n\r\n"


def test_trickled_head_is_cut_at_timeout_from_first_byte(header_server) -> None:
    pid = worker_pid(header_server)
    with connect(header_server) as sock:
        first = trickle(sock, SLOW_HEAD, 0.1)  # 10 bytes/s: 7 s for the whole head
        closed, data = wait_closed(sock, 5)
    print(f"trickled head cut {closed - first:.2f} s after its first byte")
    assert 0.9 <= closed - first <= 2.2, closed - first
    assert_one_408(data)
    still_serving(header_server, pid)


def test_trickled_second_head_on_keep_alive_is_timed_from_its_first_byte(header_server):
    """After a response the connection idles (keep-alive 5 s); a head then
    started gets timeout_header (1 s) from its first byte, not more."""
    pid = worker_pid(header_server)
    with connect(header_server) as sock:
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200") and int(body) == pid
        readable, _, _ = select.select([sock], [], [], 1.3)  # idle longer than timeout_header
        assert not readable, "closed while idle within keep-alive"
        first = trickle(sock, SLOW_HEAD, 0.1)
        closed, data = wait_closed(sock, 5)
    print(f"second trickled head cut {closed - first:.2f} s after its first byte")
    assert 0.9 <= closed - first <= 2.2, closed - first
    assert_one_408(data)
    still_serving(header_server, pid)


def test_pipelined_partial_head_is_on_the_header_clock(header_server) -> None:
    """Part of the next head came with the first request: once that is
    answered, the connection is not idle (keep-alive, 5 s) but owes the rest
    of a head (timeout_header, 1 s), and then gets its 408."""
    pid = worker_pid(header_server)
    with connect(header_server) as sock:
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\nGET /pid HTTP/1.1\r\nHo")
        head, body = read_response(sock)
        answered = time.monotonic()
        assert head.startswith(b"HTTP/1.1 200") and int(body) == pid
        closed, data = wait_closed(sock, 4)
    print(f"pipelined partial head answered 408 {closed - answered:.2f} s after the first response")
    assert closed - answered <= 2.5, closed - answered
    assert_one_408(data)
    still_serving(header_server, pid)


def test_head_completed_within_timeout_is_served(header_server) -> None:
    pid = worker_pid(header_server)
    with connect(header_server) as sock:
        sock.sendall(SLOW_HEAD[:20])
        readable, _, _ = select.select([sock], [], [], 0.5)  # half the timeout, then finish
        assert not readable
        sock.sendall(SLOW_HEAD[20:])
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200") and int(body) == pid
    still_serving(header_server, pid)


# ---------------------------------------------------------------- --keep-alive


@pytest.fixture(params=PARSERS)
def keep_alive_server(request, arbiter_process):
    return start(arbiter_process, "--keep-alive", "1", "--timeout-header", "5",
                 http=request.param)


def test_idle_keep_alive_connection_closes_after_keep_alive(keep_alive_server) -> None:
    """Nothing of a next request came: closed silently, no 408."""
    with connect(keep_alive_server) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        read_response(sock)
        answered = time.monotonic()
        closed, data = wait_closed(sock, 5)
    assert data == b""
    print(f"idle keep-alive closed after {closed - answered:.2f} s")
    assert 0.95 <= closed - answered <= 2.5, closed - answered


def test_busy_keep_alive_connection_stays_open(keep_alive_server) -> None:
    pid = worker_pid(keep_alive_server)
    with connect(keep_alive_server) as sock:
        began = time.monotonic()
        served = 0
        while time.monotonic() - began < 3.0:  # three keep-alive periods
            sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200") and int(body) == pid
            served += 1
            readable, _, _ = select.select([sock], [], [], 0.6)  # idle, but under 1 s
            assert not readable, "closed although requests kept coming"
    assert served >= 4


# ---------------------------------------------------------------- --timeout-body


@pytest.fixture(params=PARSERS)
def body_server(request, arbiter_process):
    return start(arbiter_process, "--timeout-body", "1", "--keep-alive", "30",
                 http=request.param)


def uploads(server) -> list[dict]:
    return httpx.get(server.url + "/uploads", timeout=5).json()


def wait_upload_outcome(server, outcome: dict) -> None:
    """The app's own account of how its /upload ended (one worker)."""
    wait_until(lambda: outcome in uploads(server), 5,
               message=f"the app to report {outcome} (it has {uploads(server)})")


UPLOAD_100 = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
UPLOAD_CHUNKED = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("raw, got", [(UPLOAD_100 + b"0123456789", 10),
                                      (UPLOAD_CHUNKED + b"5\r\nhello\r\n", 5)],
                         ids=["content-length", "chunked"])
def test_stalled_body_gets_408_and_the_app_sees_disconnect(body_server, raw, got) -> None:
    pid = worker_pid(body_server)
    with connect(body_server) as sock:
        sock.sendall(raw)
        stalled = time.monotonic()
        closed, data = wait_closed(sock, 6)
    print(f"stalled body answered 408 and closed {closed - stalled:.2f} s after its last byte")
    assert 0.9 <= closed - stalled <= 3.0, closed - stalled
    assert_one_408(data)
    wait_upload_outcome(body_server, {"disconnect_after": got})
    still_serving(body_server, pid)


def test_stalled_body_after_the_response_started_is_only_closed(body_server) -> None:
    """The app answered before reading: no 408 can follow a started response,
    and the cut response must not look complete (no last chunk)."""
    pid = worker_pid(body_server)
    with connect(body_server) as sock:
        sock.sendall(UPLOAD_100.replace(b"/upload", b"/upload?respond_first=1") + b"0123456789")
        stalled = time.monotonic()
        closed, data = wait_closed(sock, 6)
    print(f"stalled body (response started) closed {closed - stalled:.2f} s after its last byte")
    assert 0.9 <= closed - stalled <= 3.0, closed - stalled
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.count(b"HTTP/1.1 ") == 1, data
    assert data.endswith(b"\r\n\r\n8\r\nreading\n\r\n"), data  # the first chunk, no end
    wait_upload_outcome(body_server, {"disconnect_after": 10})
    still_serving(body_server, pid)


def test_steady_slow_body_sender_is_not_dropped(body_server) -> None:
    """One byte every 0.3 s is progress: 12 bytes take over three timeouts."""
    with connect(body_server) as sock:
        sock.sendall(UPLOAD_100.replace(b"100", b"12"))
        began = time.monotonic()
        for i in range(12):
            readable, _, _ = select.select([sock], [], [], 0.3)  # the sender's pace
            assert not readable, f"the server answered after {i} of 12 body bytes"
            sock.sendall(b"x")
        head, body = read_response(sock)
        elapsed = time.monotonic() - began
    print(f"slow body sender: 12 bytes in {elapsed:.1f} s (--timeout-body 1), served")
    assert head.startswith(b"HTTP/1.1 200") and body == b"12"
    assert elapsed >= 3.0
    wait_upload_outcome(body_server, {"complete": 12})


@pytest.mark.parametrize("raw", [b"GET /slow?s=2 HTTP/1.1\r\nHost: x\r\n\r\n",
                                 b"POST /slow?s=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"],
                         ids=["no-body", "body-then-slow-app"])
def test_a_slow_app_is_not_taken_for_a_stalled_body(body_server, raw) -> None:
    """The body clock runs only while the app waits on the client: an app
    that takes 2 s after its body (or with none) is answered."""
    with connect(body_server) as sock:
        sock.sendall(raw)
        if raw.startswith(b"POST"):
            readable, _, _ = select.select([sock], [], [], 0.3)  # the app waits for the body
            assert not readable
            sock.sendall(b"body")
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 200") and body == b"slow done", (head, body)


def test_stalled_body_frees_its_concurrency_slot(arbiter_process) -> None:
    """With --limit-concurrency 1, a stalled upload holds the only slot (the
    worker stops accepting) until its 408; then the next client is served."""
    server = start(arbiter_process, "--limit-concurrency", "1", "--timeout-body", "1")
    pid = worker_pid(server)
    with connect(server) as stalled:
        # Expect: 100-continue shows when the app runs (and so holds the slot)
        stalled.sendall(UPLOAD_100.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n"))
        interim = b""
        while not interim.endswith(b"\r\n\r\n"):
            chunk = stalled.recv(4096)
            assert chunk, interim
            interim += chunk
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
        stalled.sendall(b"0123456789")
        began = time.monotonic()
        with connect(server) as waiting:  # the kernel completes the handshake for the queue
            waiting.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            # a short look (not a wait for state): nothing may come while the slot is held
            assert not select.select([waiting], [], [], 0.3)[0], "answered while saturated"
            assert not server_side_of(pid, waiting), "accepted while saturated"
            served, data = wait_closed(waiting, 8)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(str(pid).encode()), data
        _, answer = wait_closed(stalled, 5)
    print(f"the queued client was served {served - began:.2f} s after the upload stalled")
    assert_one_408(answer)
    assert served - began >= 0.9


# ---------------------------------------------------------------- --timeout-write


@pytest.mark.parametrize("loop", LOOPS)
def test_client_that_never_reads_is_dropped_after_timeout_write(arbiter_process, loop):
    server = start(arbiter_process, "--timeout-write", "1", loop=loop)
    pid = worker_pid(server)
    with connect(server, rcvbuf=16384) as sock:
        sock.sendall(b"GET /stream?chunks=100000&size=65536 HTTP/1.1\r\nHost: x\r\n\r\n")
        sent = time.monotonic()
        wait_until(lambda: peer_gone(sock), 6, interval=0.01,
                   message="the server to drop a client that does not read")
        dropped = time.monotonic() - sent
        print(f"non-reader ({loop}) dropped {dropped:.2f} s after its request")
        assert 0.9 <= dropped <= 4.0, dropped
    still_serving(server, pid)
    assert psutil.Process(pid).memory_info().rss < 200 * MIB


def read_paced(sock: socket.socket, total: int, rate: float, sample=None) -> int:
    """Read up to ``total`` bytes at about ``rate`` bytes/s; returns the count
    read (less when the response ended first). ``sample`` runs every ~50 ms."""
    got = 0
    began = time.monotonic()
    while got < total:
        while True:  # the reader's pace: slower than the server can write
            ahead = got / rate - (time.monotonic() - began)
            if sample is not None:
                sample()
            if ahead <= 0:
                break
            select.select([], [], [], min(ahead, 0.05))
        chunk = sock.recv(min(16384, total - got))
        if not chunk:
            break
        got += len(chunk)
    return got


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("target", ["/stream?chunks=144&size=65536", "/blob?size=9437184"],
                         ids=["streamed", "one-message"])
def test_slow_steady_reader_is_not_dropped(arbiter_process, loop, target) -> None:
    server = start(arbiter_process, "--timeout-write", "1", loop=loop)
    pid = worker_pid(server)
    size = 9 * MIB
    with connect(server, rcvbuf=65536) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                     % target.encode())
        began = time.monotonic()
        # three timeout_write periods at 3 MiB/s, far slower than the server writes
        got = read_paced(sock, size + 4096, 3 * MIB)
        elapsed = time.monotonic() - began
    assert got > size, f"dropped after {got} of {size} bytes"
    print(f"slow reader ({loop}, {target}): {got / MIB:.1f} MiB in {elapsed:.1f} s, not dropped")
    still_serving(server, pid)


# ---------------------------------------------------------------- flow control


@pytest.mark.parametrize("loop", LOOPS)
def test_slow_reader_of_a_huge_stream_keeps_worker_rss_flat(arbiter_process, loop) -> None:
    """The app would send 1 GiB as fast as it can; the client reads 200 MiB
    of it at a fraction of that pace, then hangs up. RSS must not follow."""
    server = start(arbiter_process, "--timeout-write", "30", loop=loop)
    pid = worker_pid(server)
    worker = psutil.Process(pid)
    with httpx.stream("GET", server.url + "/stream?chunks=64&size=65536", timeout=5) as r:
        r.read()  # warm the code paths once before the baseline
    baseline = worker.memory_info().rss
    peak = [baseline]

    def sample() -> None:
        peak[0] = max(peak[0], worker.memory_info().rss)

    with connect(server, rcvbuf=262144) as sock:
        sock.sendall(b"GET /stream?chunks=16384&size=65536 HTTP/1.1\r\nHost: x\r\n\r\n")
        began = time.monotonic()
        got = read_paced(sock, 200 * MIB, 80 * MIB, sample)
        elapsed = time.monotonic() - began
    assert got == 200 * MIB
    growth = (peak[0] - baseline) / MIB
    print(f"{loop}: read {got / MIB:.0f} MiB in {elapsed:.1f} s, "
          f"worker RSS {baseline / MIB:.1f} MiB -> peak {peak[0] / MIB:.1f} MiB "
          f"(+{growth:.1f} MiB)")
    assert growth < 30, f"worker RSS grew by {growth:.1f} MiB"
    still_serving(server, pid)


# ---------------------------------------------------------------- --limit-concurrency


def open_idle(server, count: int) -> list[socket.socket]:
    """``count`` keep-alive connections, each served once and then left idle."""
    socks = []
    for _ in range(count):
        sock = connect(server)
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        head, _ = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200")
        socks.append(sock)
    return socks


def hold(server, seconds: float) -> tuple[socket.socket, int]:
    """A request kept in flight for ``seconds``; returns once the app runs it,
    with the pid of the worker that does."""
    sock = connect(server)
    sock.sendall(b"GET /hold?s=%g HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % seconds)
    data = b""
    while b"\r\n\r\n" not in data or not data.partition(b"\r\n\r\n")[2].count(b"\r\n") >= 2:
        chunk = sock.recv(4096)
        assert chunk, f"closed before the first chunk: {data!r}"
        data += chunk
    assert data.startswith(b"HTTP/1.1 200"), data
    first_chunk = data.partition(b"\r\n\r\n")[2].split(b"\r\n")[1]
    return sock, int(first_chunk)


@pytest.mark.parametrize("loop", LOOPS)
def test_over_the_limit_on_an_open_connection_is_503_and_closed(arbiter_process, loop):
    server = start(arbiter_process, "--limit-concurrency", "2", "--keep-alive", "30",
                   loop=loop)
    pid = worker_pid(server)
    [spare] = open_idle(server, 1)
    held = [hold(server, 3) for _ in range(2)]
    assert {p for _, p in held} == {pid}
    spare.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
    closed, data = wait_closed(spare, 5)  # everything the server sent, up to its close
    print(f"over the limit on an open connection ({loop}):\n{data.decode(errors='replace')}")
    head, _, body = data.partition(b"\r\n\r\n")
    head = head.lower()
    assert head.startswith(b"http/1.1 503"), data
    assert b"\r\nretry-after: " in head and b"\r\nconnection: close" in head
    length = int(head.partition(b"\r\ncontent-length: ")[2].partition(b"\r\n")[0])
    assert len(body) == length and data.count(b"HTTP/1.1 ") == 1, \
        f"one request, one response; got {data!r}"
    for sock, _ in held:
        _, rest = wait_closed(sock, 10)
        assert rest.endswith(b"done\n\r\n0\r\n\r\n")
        sock.close()
    spare.close()
    still_serving(server, pid)
    assert "ERROR" not in server.stderr, server.stderr


@pytest.mark.parametrize("loop", LOOPS)
def test_idle_keep_alive_connections_do_not_count_against_the_limit(arbiter_process, loop):
    server = start(arbiter_process, "--limit-concurrency", "2", "--keep-alive", "30",
                   loop=loop)
    pid = worker_pid(server)
    idle = open_idle(server, 20)
    try:
        for sock in idle[:3]:  # idle ones may still be used, and are served
            sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            head, body = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200") and int(body) == pid
        still_serving(server, pid)  # a fresh connection too
    finally:
        for sock in idle:
            sock.close()


@pytest.mark.parametrize("loop", LOOPS)
def test_saturated_worker_stops_accepting_until_a_slot_frees(arbiter_process, loop) -> None:
    """At the limit the worker leaves new connections in the listen queue
    (for other workers to take) instead of accepting them only to say 503."""
    server = start(arbiter_process, "--limit-concurrency", "1", loop=loop)
    pid = worker_pid(server)
    held, _ = hold(server, 2)
    with connect(server) as waiting:  # the kernel completes the handshake for the queue
        waiting.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        readable, _, _ = select.select([waiting], [], [], 0.5)
        assert not readable, "answered while the worker was saturated"
        assert not server_side_of(pid, waiting), "accepted while saturated"
        closed, data = wait_closed(waiting, 10)
        assert data.startswith(b"HTTP/1.1 200") and data.endswith(str(pid).encode()), data
    _, rest = wait_closed(held, 5)
    assert rest.endswith(b"done\n\r\n0\r\n\r\n")
    held.close()
    still_serving(server, pid)


def test_saturated_worker_leaves_new_connections_to_the_others(arbiter_process) -> None:
    server = start(arbiter_process, "--limit-concurrency", "1", "--workers", "2")
    wait_until(lambda: len(server.worker_pids()) == 2, 10, message="two workers")
    held, busy = hold(server, 3)
    pids = []
    for _ in range(8):  # a fresh connection each time
        response = httpx.get(server.url + "/pid", timeout=5, headers={"connection": "close"})
        assert response.status_code == 200, response.text
        pids.append(int(response.text))
    assert busy not in pids, pids
    wait_closed(held, 10)
    held.close()

    def busy_one_serves_again() -> bool:
        return worker_pid(server) == busy

    wait_until(busy_one_serves_again, 10, message="the freed worker to accept again")


@pytest.mark.parametrize("loop", LOOPS)
def test_pausing_and_resuming_accept_leaks_no_descriptors(arbiter_process, loop) -> None:
    server = start(arbiter_process, "--limit-concurrency", "1", loop=loop)
    pid = worker_pid(server)
    worker = psutil.Process(pid)
    idle_fds = worker.num_fds()
    for _ in range(30):  # each request fills the only slot: one pause and resume each
        response = httpx.get(server.url + "/pid", timeout=5, headers={"connection": "close"})
        assert int(response.text) == pid
    wait_until(lambda: worker.num_fds() <= idle_fds, 5,
               message=f"fds back to {idle_fds} (now {worker.num_fds()})")


@pytest.mark.parametrize("loop", LOOPS)
def test_non_reader_of_a_response_sent_in_one_message_is_dropped(arbiter_process, loop):
    """The app hands over the whole body at once and is done: nothing awaits
    a drain, yet the buffered bytes must not pin the connection forever."""
    server = start(arbiter_process, "--timeout-write", "1", "--keep-alive", "30", loop=loop)
    pid = worker_pid(server)
    with connect(server, rcvbuf=16384) as sock:
        sock.sendall(b"GET /blob?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (64 * MIB))
        sent = time.monotonic()
        wait_until(lambda: peer_gone(sock), 8, interval=0.01,
                   message="the server to drop a client that does not read")
        dropped = time.monotonic() - sent
    print(f"non-reader of one big message ({loop}) dropped after {dropped:.2f} s")
    assert dropped <= 4.0, dropped
    still_serving(server, pid)


@pytest.mark.parametrize("loop", LOOPS)
def test_graceful_stop_while_saturated(arbiter_process, loop) -> None:
    """SIGTERM while accept is paused: the in-flight request finishes, the
    freed slot does not reopen the listener, the worker exits cleanly."""
    import signal

    server = start(arbiter_process, "--limit-concurrency", "1", loop=loop)
    held, _ = hold(server, 1.5)
    server.signal(signal.SIGTERM)
    _, rest = wait_closed(held, 10)
    held.close()
    assert rest.endswith(b"done\n\r\n0\r\n\r\n")
    assert server.wait_exit(15) == 0
    assert "Traceback" not in server.stderr and "ERROR" not in server.stderr, server.stderr
