"""In-process cost of one WebSocket echo (64 B text), no sockets.

A development aid for profiling, not a benchmark result: ``--clients``
connections on fake transports, each fed one masked client frame per round,
the ASGI echo app answering through the server's own protocol; a round ends
when every connection has written its echo. Deterministic enough to run under
``valgrind --tool=callgrind`` (instructions per message: run twice with two
``-n`` and divide the difference), or with ``--profile`` for cProfile's top.

    python bench/ws_micro.py --server arbiter-wsproto -n 20000
    python bench/ws_micro.py --server uvicorn -n 20000   # needs uvicorn (bench/.venv)
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import os
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "apps"))

HANDSHAKE = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Key: " + base64.b64encode(os.urandom(16))
             + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
SCOPE = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.5"},
         "http_version": "1.1", "method": "GET", "scheme": "http", "path": "/",
         "raw_path": b"/", "query_string": b"", "root_path": "",
         "headers": [(b"host", b"127.0.0.1:8000"), (b"upgrade", b"websocket"),
                     (b"connection", b"Upgrade")],
         "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "state": {},
         "extensions": {}}


def client_frame(payload: bytes, mask: bytes = b"\x12\x34\x56\x78") -> bytes:
    """One masked, final text frame (RFC 6455 5.2), as a client sends it."""
    assert len(payload) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


class Transport(asyncio.Transport):
    def __init__(self, done) -> None:
        super().__init__()
        self.done = done
        self.writes = 0
        self.protocol = None

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.done(self)

    def get_extra_info(self, name, default=None):
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name)

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


def connect(server: str, transport: Transport, app):
    if server.startswith("arbiter"):
        from workers.websocket import WebSocketLimits, hand_over
        # "arbiter": its default backend (and any version); "arbiter-NAME": --ws NAME
        kwargs = {"backend": server.split("-", 1)[1]} if "-" in server else {}
        limits = WebSocketLimits(ping_interval=0, **kwargs)
        return hand_over(transport, app, dict(SCOPE), HANDSHAKE, limits=limits)
    from uvicorn.config import Config
    from uvicorn.server import ServerState
    ws = {"uvicorn": "websockets-sansio", "uvicorn-wsproto": "wsproto",
          "uvicorn-websockets": "websockets"}[server]
    config = Config(app=app, ws=ws, ws_ping_interval=None, lifespan="off", log_level="error")
    config.load()
    protocol = config.ws_protocol_class(config=config, server_state=ServerState(),
                                        app_state={})
    transport.set_protocol(protocol)
    protocol.connection_made(transport)
    protocol.data_received(HANDSHAKE)
    return protocol


async def run(server: str, clients: int, messages: int, size: int) -> float:
    from ws_echo import app
    loop = asyncio.get_running_loop()
    frame = client_frame(b"x" * size)
    state = {"pending": 0, "waiter": None}

    def done(transport: Transport) -> None:
        state["pending"] -= 1
        if state["pending"] == 0 and state["waiter"] is not None:
            state["waiter"].set_result(None)

    transports = [Transport(done) for _ in range(clients)]
    state["pending"] = clients  # the handshake responses
    state["waiter"] = loop.create_future()
    protocols = [connect(server, t, app) for t in transports]
    await state["waiter"]
    rounds = max(1, messages // clients)
    start = time.process_time()
    for _ in range(rounds):
        state["pending"] = clients
        state["waiter"] = loop.create_future()
        for protocol in protocols:
            protocol.data_received(frame)
        await state["waiter"]
    took = time.process_time() - start
    for protocol in protocols:  # the apps see a disconnect and return
        protocol.connection_lost(None)
    for _ in range(10):
        await asyncio.sleep(0)  # deliberate (noqa: sleep): a few loop iterations for the apps to end
    return took / (rounds * clients)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--server", default="arbiter")
    p.add_argument("-n", type=int, default=20000, help="messages in all")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    if args.loop == "uvloop":
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    coro = run(args.server, args.clients, args.n, args.size)
    if args.profile:
        prof = cProfile.Profile()
        per = prof.runcall(asyncio.run, coro)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    else:
        per = asyncio.run(coro)
    print(f"{args.server}: {per * 1e6:.2f} us CPU per message")


if __name__ == "__main__":
    main()
