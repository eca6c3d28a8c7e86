"""A request's objects die with its response, and a ready worker's boot heap is out
of the cyclic collector.

Under load (64 connections, FastAPI) a request done in one step used to stay
reachable from its Task until the loop's next turn; the young collections that a
turn's allocations trigger promoted those objects, and a full collection (15 ms
over the boot heap) ran about once a second: fastapi-json's p99 was 2.5x uvicorn's.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest

from tests.unit.fake_http import REQUEST, RUNNERS, connected

REPO = Path(__file__).resolve().parents[2]


class Marker:
    """Something of the request's, put in its scope by the app."""


@pytest.mark.parametrize("runner", RUNNERS)
def test_a_request_done_in_one_step_is_not_kept_alive_by_its_task(runner: str) -> None:
    refs: list[weakref.ref[Marker]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        marker = Marker()
        scope["marker"] = marker
        refs.append(weakref.ref(marker))
        assert asyncio.current_task() is not None  # sniffio/anyio still see a task
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    async def main() -> None:
        loop = asyncio.get_running_loop()
        _, conn, transport = connected(app, loop)
        seen: asyncio.Future[bool] = loop.create_future()

        def read() -> None:  # from a loop callback, as a socket read
            conn.data_received(REQUEST)
            # the response is out and the task's own step has not run yet
            assert transport.out.startswith(b"HTTP/1.1 200 ") and transport.out.endswith(b"ok")
            assert len(refs) == 1
            seen.set_result(refs[0]() is None)

        loop.call_soon(read)
        assert await seen, "the request's scope outlived its response"
        await asyncio.sleep(0)  # deliberate (noqa: sleep): one loop turn, the task's step
        conn.connection_lost(None)
    RUNNERS[runner](main())


PROBE = """
import asyncio, gc, os, sys
from arbiter.config import resolve
from workers.asgi import UvloopWorker

class Probe(UvloopWorker):
    async def serve(self):
        before = gc.get_freeze_count()
        self.notify_ready()
        print(before, gc.get_freeze_count())
        return 0

config = resolve({}, {}, {}, overrides=dict(app="basic:app")).worker()
read_fd, write_fd = os.pipe()
sys.exit(Probe(slot=1, generation=1, config=config, sockets=[], heartbeat_fd=write_fd,
               master_pid=os.getppid()).run())
"""


def test_a_ready_worker_has_frozen_its_boot_heap() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    before, after = map(int, done.stdout.split())
    assert before == 0 and after > 10_000, (before, after)
