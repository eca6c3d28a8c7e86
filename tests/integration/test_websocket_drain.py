"""Long-lived connections at a reload (SIGHUP: workers retire, 1012) and a stop
(SIGTERM: 1001): real server, real signals, the `websockets` client and raw sockets."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import time

import psutil
import pytest
import websockets
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Request

from tests.conftest import wait_until
from tests.integration.conftest import servers_on_each_ws_backend

pytestmark = pytest.mark.slow
arbiter_process = servers_on_each_ws_backend()  # every test on --ws websockets and wsproto

CLIENTS = 20
LOOPS = pytest.mark.parametrize("loop", ["uvloop", "asyncio"])


def ws_url(server, path: str) -> str:
    host, port = server.address
    return f"ws://{host}:{port}{path}"


def finally_ids(server, what: str = "FINALLY") -> set[str]:
    return set(re.findall(rf"^WS {what} (\S+)$", server.stdout, re.M))


def wait_finally(server, idents: set[str], what: str = "FINALLY") -> None:
    """Every app task among ``idents`` printed its WS FINALLY (or CLEANED) line."""
    try:
        wait_until(lambda: idents <= finally_ids(server, what), 10, message=f"every WS {what}")
    except AssertionError:
        missing = sorted(idents - finally_ids(server, what))
        raise AssertionError(f"no WS {what} for {missing}:\n{server.stdout[-3000:]}\n"
                             f"{server.stderr[-3000:]}") from None


def disconnect_codes(server) -> dict[str, int]:
    return {i: int(c) for i, c in re.findall(r"^WS DISCONNECT (\S+) (\d+)$", server.stdout,
                                             re.M)}


class Client:
    """One WebSocket client that reconnects after every close until it lands on a
    worker that is not one of ``old_pids``; records each connection and close."""

    def __init__(self, index: int, server, old_pids: set[int], reconnect: bool = True,
                 cleanup_s: float = 0.5) -> None:
        self.index = index
        self.cleanup_s = cleanup_s
        self.reconnect = reconnect
        self.server = server
        self.old_pids = old_pids
        self.connections: list[tuple[str, int]] = []  # (id, worker pid)
        self.closes: list[tuple[float, int | None, bool]] = []  # (when, code, clean)
        self.refused = 0  # upgrades refused by a draining worker (503), retried
        self.landed_at: float | None = None
        self.connected = asyncio.Event()

    async def run(self, stay: asyncio.Event | None = None) -> None:
        attempt = 0
        while True:
            ident = f"c{self.index}-{attempt}"
            attempt += 1
            try:
                path = f"/ws?id={ident}&cleanup={self.cleanup_s}"
                async with websockets.connect(ws_url(self.server, path),
                                              open_timeout=20, ping_interval=None) as ws:
                    hello = json.loads(await ws.recv())
                    self.connections.append((ident, hello["pid"]))
                    self.connected.set()
                    if hello["pid"] not in self.old_pids:
                        self.landed_at = time.monotonic()
                        if stay is not None:
                            await stay.wait()
                        return
                    try:
                        await ws.recv()
                        raise AssertionError("the server sent a message, not a close")
                    except websockets.exceptions.ConnectionClosed as closed:
                        rcvd = closed.rcvd
                        clean = bool(rcvd is not None and closed.sent is not None
                                     and closed.rcvd_then_sent)
                        self.closes.append((time.monotonic(), rcvd.code if rcvd else None,
                                            clean))
            except websockets.exceptions.InvalidStatus as refused:
                assert refused.response.status_code == 503, refused
                self.refused += 1
            if not self.reconnect:
                return


@LOOPS
def test_sighup_closes_every_websocket_with_1012_and_clients_reconnect_to_the_new_generation(
        arbiter_process, loop: str) -> None:
    server = arbiter_process(["long_lived:app", "--workers", "2", "--ws-close-timeout", "5",
                              "--graceful-timeout", "30", "--worker-class", loop]).wait_ready()
    old_pids = set(server.worker_pids())
    assert len(old_pids) == 2

    async def scenario() -> tuple[list[Client], float]:
        clients = [Client(i, server, old_pids) for i in range(CLIENTS)]
        stay = asyncio.Event()
        tasks = [asyncio.create_task(c.run(stay)) for c in clients]
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), 30)
        assert {pid for c in clients for _, pid in c.connections} <= old_pids
        started = time.monotonic()
        server.signal(signal.SIGHUP)
        deadline = started + 60
        while not all(c.landed_at for c in clients):
            assert time.monotonic() < deadline, "clients did not all reach the new generation"
            done = [t for t in tasks if t.done()]
            for t in done:
                t.result()  # raise a client's failure here
            await asyncio.sleep(0.05)  # deliberate (noqa: sleep): poll step of a bounded wait
        stay.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        return clients, started

    clients, started = asyncio.run(scenario())
    server.wait_for_log(r"reload: generation 2 is serving", timeout=30)
    new_pids = set(server.worker_pids())
    assert not new_pids & old_pids
    for c in clients:
        assert c.closes, f"client {c.index} was never closed"
        for _, code, clean in c.closes:
            assert code == 1012, f"client {c.index} got close code {code}"
            assert clean, f"client {c.index}: no clean close handshake"
        assert c.connections[-1][1] in new_pids
    # every app task on an old worker heard 1012, had the time to clean up (0.5 s,
    # not cancelled at once) and ran its finally block
    on_old = {ident for c in clients for ident, pid in c.connections if pid in old_pids}
    wait_finally(server, on_old, "CLEANED")
    wait_finally(server, on_old)
    codes = disconnect_codes(server)
    assert all(codes[ident] == 1012 for ident in on_old), codes
    closed_all = max(c.closes[0][0] for c in clients) - started
    reconnected_all = max(c.landed_at for c in clients if c.landed_at) - started
    print(f"\n{loop}: SIGHUP -> all {CLIENTS} WebSocket clients closed: {closed_all:.2f} s; "
          f"all reconnected to generation 2: {reconnected_all:.2f} s; "
          f"closes: {sum(len(c.closes) for c in clients)}, "
          f"upgrades refused while draining: {sum(c.refused for c in clients)}")
    assert closed_all < 30 and reconnected_all < 30


def test_sigterm_closes_every_websocket_with_1001_and_the_master_exits_0(
        arbiter_process) -> None:
    server = arbiter_process(["long_lived:app", "--workers", "2"]).wait_ready()
    old_pids = set(server.worker_pids())

    async def scenario() -> tuple[list[Client], float]:
        clients = [Client(i, server, old_pids, reconnect=False) for i in range(CLIENTS)]
        tasks = [asyncio.create_task(c.run()) for c in clients]
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), 30)
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        return clients, started

    clients, started = asyncio.run(scenario())
    assert server.wait_exit(30) == 0
    for c in clients:
        assert [(code, clean) for _, code, clean in c.closes[:1]] == [(1001, True)], \
            (c.index, c.closes)
    idents = {ident for c in clients for ident, _ in c.connections}
    assert len(idents) >= CLIENTS
    wait_finally(server, idents, "CLEANED")
    wait_finally(server, idents)
    assert all(code == 1001 for code in disconnect_codes(server).values())
    closed_all = max(c.closes[0][0] for c in clients) - started
    print(f"\nSIGTERM -> all {CLIENTS} WebSocket clients closed with 1001: {closed_all:.2f} s")


# ---------------------------------------------------------------- raw clients


def raw_handshake(server, path: str = "/ws") -> tuple[socket.socket, WSConnection]:
    sock = socket.create_connection(server.address, timeout=10)
    client = WSConnection(ConnectionType.CLIENT)
    sock.sendall(client.send(Request(host="x", target=path)))
    accepted = False
    while not accepted:
        client.receive_data(sock.recv(65536))
        accepted = any(isinstance(e, AcceptConnection) for e in client.events())
    return sock, client


def read_until_close(sock: socket.socket, client: WSConnection, answer: bool,
                     deadline: float) -> tuple[int | None, float, float]:
    """Read until EOF: (the server's close code, when its close frame came, when
    TCP was closed). ``answer`` sends our close frame back, as a client should."""
    code, frame_at = None, 0.0
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return code, frame_at, time.monotonic()
        if not data:
            return code, frame_at, time.monotonic()
        client.receive_data(data)
        for event in client.events():
            if isinstance(event, CloseConnection):
                code, frame_at = event.code, time.monotonic()
                if answer:
                    sock.sendall(client.send(event.response()))
    raise AssertionError("the server never closed the connection")


@LOOPS
def test_a_client_that_ignores_the_close_frame_is_dropped_at_the_close_timeout(
        arbiter_process, loop: str) -> None:
    """Two raw clients on one worker: one answers the close (TCP closed at once),
    one never reads nor answers (dropped at --ws-close-timeout, not at the
    graceful timeout); the retiring worker exits right after."""
    server = arbiter_process(["long_lived:app", "--workers", "1", "--ws-close-timeout", "1.5",
                              "--graceful-timeout", "30", "--worker-class", loop]).wait_ready()
    (old_pid,) = server.worker_pids()
    polite, polite_ws = raw_handshake(server, "/ws?id=polite")
    silent, silent_ws = raw_handshake(server, "/ws?id=silent")
    with polite, silent:
        server.signal(signal.SIGHUP)
        started = time.monotonic()
        code, frame_at, closed_at = read_until_close(polite, polite_ws, True, started + 30)
        assert code == 1012
        assert closed_at - frame_at < 1.0  # the handshake done, TCP closed: no close timeout
        wait_until(lambda: not psutil.pid_exists(old_pid) or
                   psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE, 20,
                   message="the retired worker's exit")
        dropped = time.monotonic() - frame_at
        # the silent one now reads what waited in its buffer: the close frame, then EOF
        silent_code, _, _ = read_until_close(silent, silent_ws, False, time.monotonic() + 10)
    print(f"\n{loop}: silent client dropped {dropped:.2f} s after the close frame "
          f"(--ws-close-timeout 1.5)")
    assert silent_code == 1012
    assert 1.3 <= dropped < 8, dropped  # at the close timeout, far from the 30 s graceful one
    server.wait_for_log(r"no close frame from the client within 1.5 s")
    wait_until(lambda: {"polite", "silent"} <= finally_ids(server), 10)


def test_an_app_task_that_ignores_the_disconnect_is_cancelled_at_the_graceful_timeout(
        arbiter_process) -> None:
    server = arbiter_process(["long_lived:app", "--graceful-timeout", "3",
                              "--ws-close-timeout", "1"]).wait_ready()

    async def scenario() -> tuple[int | None, float]:
        async with websockets.connect(ws_url(server, "/ws/stubborn?id=stubborn"),
                                      ping_interval=None) as ws:
            json.loads(await ws.recv())
            started = time.monotonic()
            server.signal(signal.SIGTERM)
            try:
                await ws.recv()
            except websockets.exceptions.ConnectionClosed as closed:
                return (closed.rcvd.code if closed.rcvd else None), started
        return None, started

    code, started = asyncio.run(scenario())
    assert code == 1001
    assert server.wait_exit(30) == 0
    took = time.monotonic() - started
    assert "WS DISCONNECT stubborn 1001" in server.stdout
    wait_until(lambda: "stubborn" in finally_ids(server), 10)  # its finally ran on cancel
    assert 2 < took < 15, took  # cancelled near the 3 s graceful timeout
    assert "killing" not in server.stderr  # the worker ended it, not the master's SIGKILL


def test_a_websocket_upgrade_at_a_draining_worker_is_refused_with_503() -> None:
    """In-process (no timing games): an open keep-alive connection to a worker that
    has begun to drain asks for a WebSocket: 503, so the client retries elsewhere."""
    from arbiter.config import resolve
    from workers.http.server import HttpServer

    async def app(scope, receive, send):
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
        else:  # pragma: no cover - must not be reached
            raise AssertionError("the app was called for an upgrade at a draining worker")

    async def check() -> bytes:
        loop = asyncio.get_running_loop()
        listener = socket.create_server(("127.0.0.1", 0))
        server = HttpServer(app, resolve({"app": "x:app", "graceful_timeout": "5"}, {}).http(),
                            lifespan_state={}, loop=loop)
        await server.start([listener])
        reader, writer = await asyncio.open_connection(*listener.getsockname())
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200 ")
        slow, slow_writer = await asyncio.open_connection(*listener.getsockname())
        drain = asyncio.ensure_future(server.shutdown(1001))
        await asyncio.sleep(0)  # deliberate (noqa: sleep): one loop step, the drain begins
        assert server.stopping
        writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        slow_writer.close()
        await asyncio.wait_for(drain, 10)
        listener.close()
        return answer

    answer = asyncio.run(check())
    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert b"retry-after: 1\r\n" in answer and b"connection: close\r\n" in answer


# ---------------------------------------------------------------- settings and limits


@pytest.mark.parametrize("flag, negotiated", [(None, True), ("--ws-per-message-deflate", True),
                                              ("--no-ws-per-message-deflate", False)])
def test_per_message_deflate_on_and_off(arbiter_process, flag: str | None,
                                        negotiated: bool) -> None:
    server = arbiter_process(["long_lived:app", *([flag] if flag else [])]).wait_ready()

    async def talk() -> str | None:
        async with websockets.connect(ws_url(server, "/ws?id=deflate"),
                                      compression="deflate") as ws:
            json.loads(await ws.recv())
            await ws.send("x" * 10000)
            assert await ws.recv() == "echo:" + "x" * 10000
            return ws.response.headers.get("Sec-WebSocket-Extensions")

    extensions = asyncio.run(talk())
    if negotiated:
        assert extensions is not None and extensions.startswith("permessage-deflate")
    else:
        assert extensions is None


def test_a_401_denial_reaches_the_client_whole(arbiter_process) -> None:
    from tests.apps.long_lived import DENY_BODY

    server = arbiter_process(["long_lived:app"]).wait_ready()

    async def denied() -> websockets.exceptions.InvalidStatus:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with websockets.connect(ws_url(server, "/ws/deny")):
                pass
        return refused.value

    refusal = asyncio.run(denied())
    response = refusal.response
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="test"'
    assert response.headers["content-type"] == "text/plain"
    assert response.body == DENY_BODY
    # the same, byte for byte, from a raw socket
    sock = socket.create_connection(server.address, timeout=10)
    with sock:
        sock.sendall(b"GET /ws/deny HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0].startswith(b"HTTP/1.1 401 "), lines[0]
    fields = {k.lower(): v.strip() for k, _, v in (line.partition(b":") for line in lines[1:])}
    assert fields[b"www-authenticate"] == b'Bearer realm="test"'
    assert fields[b"content-length"] == str(len(DENY_BODY)).encode()
    assert b"upgrade" not in fields and b"sec-websocket-accept" not in fields
    assert body == DENY_BODY  # exactly the body, and the connection closed after it


@LOOPS
def test_send_to_a_client_that_does_not_read_waits_and_memory_stays_flat(
        arbiter_process, loop: str) -> None:
    """The app tries to send 100 MiB in 1 MiB messages to a client that never
    reads: send() waits (a few messages go, into the socket buffers) and the
    worker's RSS stays flat."""
    server = arbiter_process(["long_lived:app", "--ws-ping-interval", "0",
                              "--worker-class", loop]).wait_ready()
    (pid,) = server.worker_pids()
    worker = psutil.Process(pid)
    import httpx

    def flood() -> dict:
        return httpx.get(server.url + "/flood", timeout=5).json()

    before = worker.memory_info().rss
    sock = socket.create_connection(server.address, timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    with sock:
        key = b"dGhlIHNhbXBsZSBub25jZQ=="
        sock.sendall(b"GET /ws/flood?mib=100 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                     b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                     b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")
        assert sock.recv(12) == b"HTTP/1.1 101"  # and from here on, the client reads nothing
        wait_until(lambda: flood()["sent"] >= 1, 10, message="the first message sent")
        stalled_at = None
        samples = []
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:  # watch it stall: sent stops growing
            samples.append(flood()["sent"])
            time.sleep(0.25)  # deliberate (noqa: sleep): sampling interval of a 6 s watch
        stalled_at = samples[-1]
        growth_mib = (worker.memory_info().rss - before) / 2**20
    print(f"\n{loop}: flood: {stalled_at} of 100 MiB sent before send() waited; "
          f"worker RSS growth {growth_mib:.1f} MiB")
    assert not flood()["done"]
    assert samples[-1] == samples[len(samples) // 2], samples  # stalled: no progress
    assert stalled_at < 30, stalled_at  # only what the socket buffers hold, give or take
    assert growth_mib < 30, growth_mib
    # the worker is fine: it serves, and the flood ended when the client left
    assert httpx.get(server.url + "/pid", timeout=5).text == str(pid)
    wait_until(lambda: "WS FINALLY -" in server.stdout, 10)


def test_ws_max_queue_pauses_reading_from_a_client_the_app_does_not_read(
        arbiter_process) -> None:
    """With --ws-max-queue 4 and an app that is not receiving, the worker stops
    reading: the client's writes back up into its own socket buffer."""
    server = arbiter_process(["long_lived:app", "--ws-max-queue", "4",
                              "--ws-ping-interval", "0"]).wait_ready()
    sock, client = raw_handshake(server, "/ws/deaf?id=queue")  # the app never receives
    from wsproto.events import BytesMessage
    stream = memoryview(b"".join(client.send(BytesMessage(data=b"\0" * 65536))
                                 for _ in range(1024)))  # 64 MiB of whole frames
    sock.setblocking(False)
    sent = 0
    deadline = time.monotonic() + 20
    with sock:
        while sent < len(stream) and time.monotonic() < deadline:
            try:
                sent += sock.send(stream[sent:sent + 2**20])
            except BlockingIOError:
                break
        blocked_at = sent
    print(f"\n--ws-max-queue 4: the client could write {blocked_at / 2**20:.1f} MiB before "
          f"its writes blocked")
    assert blocked_at < 32 * 2**20, "the worker kept reading: no backpressure"
    wait_until(lambda: "WS FINALLY queue" in server.stdout, 10)
