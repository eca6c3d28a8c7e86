"""In-process cost of one keep-alive request through the HTTP stack, no sockets.

A development aid for profiling, not a benchmark result: feeds requests to an
HttpConnection on a fake transport and reports CPU microseconds (process time,
which a busy machine distorts less than the wall clock) per request. Each read
is fed from a loop callback, one per turn of the loop, as a socket read would
be, so the app's task gets to run (and, for a body in pieces, to wait for the
rest) and finish.
Cases: ``hello`` (a GET), ``fastapi-json`` (bench/apps/fastapi_json.py), ``post-16k`` (a 16 KiB Content-Length body the app
reads in full, as bench/apps/post.py does), ``post-16k-chunked`` (the same
body in four chunks) and ``post-16k-fastapi`` (bench/apps/post_fastapi.py: the
same, read by a FastAPI endpoint). ``--pieces N`` delivers each request in N
reads. Every case's answer is checked before a number is given.
Usage: python bench/micro.py [--http httptools|h11] [--loop asyncio|uvloop]
       [--case hello|fastapi-json|post-16k|post-16k-chunked|post-16k-fastapi] [--pieces N]
       [-n 100000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import pstats
import sys
import time
from pathlib import Path

from arbiter.config import resolve
from workers.http.connection import HttpConnection
from workers.http.server import HttpServer

REQUEST = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: micro\r\n"
           b"Accept: */*\r\n\r\n")
BODY = b"a" * 16384
POST = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: micro\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n"
        % len(BODY) + BODY)
POST_CHUNKED = (b"POST / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: micro\r\n"
                b"Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                + b"".join(b"%x\r\n%s\r\n" % (len(BODY) // 4, BODY[:len(BODY) // 4])
                           for _ in range(4)) + b"0\r\n\r\n")


async def hello(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})


def bench_app(module: str):
    """The ``app`` of a bench/apps module (the one bench/run.py serves), imported when
    asked for: FastAPI is the bench's dependency, not the project's."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "apps"))
    return importlib.import_module(module).app


JSON_GET = REQUEST.replace(b"GET / ", b"GET /json ")
CASES = {"hello": (lambda: hello, REQUEST),
         "post-16k": (lambda: bench_app("post"), POST),
         "post-16k-chunked": (lambda: bench_app("post"), POST_CHUNKED),
         "post-16k-fastapi": (lambda: bench_app("post_fastapi"), POST),
         "fastapi-json": (lambda: bench_app("fastapi_json"), JSON_GET)}
ANSWERS = {"hello": b"Hello, world!",
           "fastapi-json": b'{"message":"Hello, world!","items":[1,2,3],"ok":true}'}


class FakeTransport:
    def __init__(self) -> None:
        self.written = 0
        self.last = b""

    def write(self, data: bytes) -> None:
        self.written += 1
        self.last = data

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
    ap.add_argument("--case", default="hello", choices=sorted(CASES))
    ap.add_argument("--pieces", type=int, default=1, help="reads per request")
    ap.add_argument("-n", type=int, default=100_000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    config = resolve({"app": "x:app", "http": args.http, "access_log": False}, {}).http()
    if args.loop == "uvloop":
        import uvloop
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    app, request = CASES[args.case]
    app = app()
    step = -(-len(request) // args.pieces)
    pieces = [request[i:i + step] for i in range(0, len(request), step)]
    server = HttpServer(app, config, lifespan_state={}, loop=loop)
    conn = HttpConnection(server)
    transport = FakeTransport()
    conn.connection_made(transport)

    def run(n: int) -> float:
        done = loop.create_future()
        reads = n * len(pieces)
        fed = 0

        def feed() -> None:
            nonlocal fed
            conn.data_received(pieces[fed % len(pieces)])
            fed += 1
            if fed < reads:
                loop.call_soon(feed)
            else:
                loop.call_soon(done.set_result, None)  # after the last task's step

        start = time.process_time()
        loop.call_soon(feed)
        loop.run_until_complete(done)
        return (time.process_time() - start) / n * 1e6

    run(1000)
    # a fast wrong answer is not a result: the app must have answered in full
    answer = ANSWERS.get(args.case, b"%d" % len(BODY))
    if not (transport.last.startswith(b"HTTP/1.1 200 ") and transport.last.endswith(answer)):
        raise SystemExit(f"wrong answer: {transport.last[:300]!r}")
    if args.profile:
        cProfile.runctx("run(args.n)", globals(), locals(), "/tmp/micro.prof")
        pstats.Stats("/tmp/micro.prof").sort_stats("tottime").print_stats(18)
    else:
        best = min(run(args.n) for _ in range(3))
        print(f"{args.http} on {args.loop}, {args.case} x{len(pieces)}: {best:.2f} us "
              f"per request ({transport.written} writes)")


if __name__ == "__main__":
    main()
