"""In-process cost of one keep-alive request through the HTTP stack, no sockets.

A development aid for profiling, not a benchmark result: feeds GET requests to
an HttpConnection on a fake transport and reports microseconds per request.
Each request is fed from a loop callback, one per turn of the loop, as a socket
read would be, so the app's task gets to run and finish.
Usage: python bench/micro.py [--http httptools|h11] [--loop asyncio|uvloop]
       [-n 100000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time

from arbiter.config import resolve
from workers.http.connection import HttpConnection
from workers.http.server import HttpServer

REQUEST = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: micro\r\n"
           b"Accept: */*\r\n\r\n")


async def hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


class FakeTransport:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += 1

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", 5000), "sockname": ("127.0.0.1", 8000)}.get(name)

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def close(self) -> None: ...
    def get_write_buffer_size(self) -> int: return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", default="httptools")
    ap.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    config = resolve({"app": "x:app", "http": args.http, "access_log": False}, {}).http()
    if args.loop == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    server = HttpServer(hello, config, lifespan_state={}, loop=loop)
    conn = HttpConnection(server)
    transport = FakeTransport()
    conn.connection_made(transport)

    def run(n: int) -> float:
        done = loop.create_future()
        left = n

        def feed() -> None:
            nonlocal left
            conn.data_received(REQUEST)
            left -= 1
            if left:
                loop.call_soon(feed)
            else:
                loop.call_soon(done.set_result, None)  # after the last task's step

        start = time.perf_counter()
        loop.call_soon(feed)
        loop.run_until_complete(done)
        return (time.perf_counter() - start) / n * 1e6

    run(1000)
    if args.profile:
        cProfile.runctx("run(args.n)", globals(), locals(), "/tmp/micro.prof")
        pstats.Stats("/tmp/micro.prof").sort_stats("tottime").print_stats(18)
    else:
        best = min(run(args.n) for _ in range(3))
        print(f"{args.http} on {args.loop}: {best:.2f} us per request "
              f"({transport.written} writes)")


if __name__ == "__main__":
    main()
