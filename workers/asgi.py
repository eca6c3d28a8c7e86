"""AsgiWorker: load the app, run lifespan, serve HTTP on the inherited sockets.

The built-in worker classes differ only in their event loop: UvloopWorker
(the default when uvloop is installed) and AsyncioWorker. The stop sequence:
--shutdown-delay (STOP only: serving, the health path 503), the drain
(workers/http/server.py), then lifespan shutdown, each bounded by
workers/stopping.py so the whole stop ends inside the master's deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from arbiter.config import WorkerConfig
from workers import stopping
from workers.base import Worker
from workers.lifespan import Lifespan
from workers.stopping import StopReason

log = logging.getLogger("arbiter.error")


class AsgiWorker(Worker):
    """Serves an ASGI 3 app over HTTP/1.1. Override ``wrap_app`` to add middleware."""

    server: Any = None

    def wrap_app(self, app: Any) -> Any:
        return app

    def load_counters(self) -> tuple[int, int]:
        if self.server is None:
            return 0, 0
        return self.server.requests_total, self.server.connection_count

    def load_details(self) -> tuple[int, Sequence[int]]:
        if self.server is None:
            return 0, ()
        return self.server.active, self.server.responses_by_class[2:6]

    @classmethod
    def warm(cls, config: WorkerConfig) -> None:
        """The HTTP server, its connection, proxy and WebSocket modules, and the parser
        and WebSocket backends the config names (most of a worker's boot time, before this)."""
        super().warm(config)
        from workers.http.server import pick_parser
        from workers.websocket import pick_backend
        pick_parser(config.http.backend)
        pick_backend(config.http.ws_backend)

    async def serve(self) -> int:
        assert self.stop_requested is not None and self.loop is not None
        app = self.wrap_app(self.load_app())
        from workers.http import HttpServer  # after the app, so its import errors come first
        state: dict[str, Any] = {}
        lifespan = Lifespan(app, self.config.lifespan, state)
        config = self.config
        await lifespan.startup(*stopping.lifespan_startup_s(
            config.timeout_lifespan_s, config.boot_timeout_s, time.monotonic() - self.started_at))
        if self.stop_requested.is_set():
            await lifespan.shutdown(*stopping.lifespan_shutdown_s(
                config.timeout_lifespan_s, config.graceful_timeout_s, 0.0))
            return 0
        self.server = HttpServer(app, self.config.http, lifespan_state=state, loop=self.loop)
        self.server.on_first_response = self.notify_served
        await self.server.start(self.sockets)
        self.notify_ready()
        await self.stop_requested.wait()
        if self.quick_stop:
            self.server.close_now()
            return 0
        reason = self.stop_reason or StopReason.STOP
        delay = reason.shutdown_delay_s(config.shutdown_delay_s)
        if delay and not await self._shutdown_delay(delay):
            return 0
        self.notify_draining()
        drain_started = time.monotonic()
        if not await self._drain(reason):
            return 0
        await lifespan.shutdown(*stopping.lifespan_shutdown_s(
            config.timeout_lifespan_s, config.graceful_timeout_s,
            time.monotonic() - drain_started))
        return 0

    async def _shutdown_delay(self, delay_s: float) -> bool:
        """--shutdown-delay: go on serving (accepting too) while the health path
        answers 503, so the load balancer stops sending before we stop taking;
        False if a quick stop cut it short."""
        assert self.stop_requested is not None and self.loop is not None
        self.server.unhealthy = True
        log.info("worker %d: stopping in %g s (--shutdown-delay); serving meanwhile, the "
                 "health path answers 503", self.slot, delay_s)
        deadline = self.loop.time() + delay_s
        while not self.quick_stop:
            left = deadline - self.loop.time()
            if left <= 0:
                return True
            self.stop_requested.clear()
            try:
                await asyncio.wait_for(self.stop_requested.wait(), left)
            except asyncio.TimeoutError:
                return True
        self.server.close_now()
        return False

    async def _drain(self, reason: StopReason) -> bool:
        """Graceful shutdown of the HTTP server; a quick-stop signal cuts it short."""
        assert self.stop_requested is not None
        self.stop_requested.clear()
        shutdown = asyncio.ensure_future(self.server.shutdown(
            reason.websocket_close_code,
            stopping.connection_drain_s(self.config.graceful_timeout_s)))
        while not shutdown.done():
            interrupt = asyncio.ensure_future(self.stop_requested.wait())
            await asyncio.wait({shutdown, interrupt}, return_when=asyncio.FIRST_COMPLETED)
            interrupt.cancel()
            self.stop_requested.clear()
            if self.quick_stop and not shutdown.done():
                self.server.close_now()
                shutdown.cancel()
                return False
        if not shutdown.result():
            log.warning("worker %d: connections still busy after the graceful timeout were "
                        "closed", self.slot)
        return True


class AsyncioWorker(AsgiWorker):
    loop_factory = asyncio.new_event_loop


def _uvloop_factory() -> asyncio.AbstractEventLoop:
    import uvloop

    return uvloop.new_event_loop()


class UvloopWorker(AsgiWorker):
    loop_factory = staticmethod(_uvloop_factory)

    @classmethod
    def warm(cls, config: WorkerConfig) -> None:
        super().warm(config)
        import uvloop  # noqa: F401  (the import is the warming)
