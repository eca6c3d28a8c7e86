"""The ASGI lifespan protocol (spec 2.0) for one worker.

Startup runs before the worker reports READY; a failure, or a startup past
its bound, raises BootError so the worker exits with the boot-error code.
Shutdown past its bound is abandoned (the app's task is cancelled, so its
``finally`` blocks run) and the worker goes on exiting. In ``auto`` mode an
app that raises before it ever calls ``receive()`` is taken not to support
lifespan (logged, not fatal); one that fails after receiving the startup
event failed for real. The bounds come from ``workers.stopping``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arbiter.errors import BootError

log = logging.getLogger("arbiter.error")


class Lifespan:
    def __init__(self, app: Any, mode: str, state: dict[str, Any]) -> None:
        self.app = app
        self.mode = mode
        self.state = state
        self.supported = mode != "off"
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._startup_done: asyncio.Future[dict[str, Any]] | None = None
        self._shutdown_done: asyncio.Future[dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._received = False

    async def startup(self, timeout_s: float | None = None, bound_by: str = "") -> None:
        """Run startup; ``timeout_s`` bounds it (None: unbounded), ``bound_by`` names
        the setting for the error."""
        if not self.supported:
            return
        loop = asyncio.get_running_loop()
        self._startup_done = loop.create_future()
        self._shutdown_done = loop.create_future()
        self._task = loop.create_task(self._run())
        await self._events.put({"type": "lifespan.startup"})
        try:
            message = await asyncio.wait_for(self._startup_done, timeout_s)
        except asyncio.TimeoutError:
            self._abandon()
            took = round(timeout_s or 0.0, 2)
            raise BootError(f"lifespan startup did not complete within {took:g} s "
                            f"({bound_by})") from None
        if message["type"] == "lifespan.startup.failed":
            raise BootError(f"lifespan startup failed: {message.get('message') or 'no message'}")
        if message["type"] == "unsupported":
            self.supported = False

    async def shutdown(self, timeout_s: float | None = None, bound_by: str = "") -> None:
        """Run shutdown, for at most ``timeout_s`` (None: unbounded)."""
        if not self.supported or self._shutdown_done is None:
            return
        await self._events.put({"type": "lifespan.shutdown"})
        try:
            message = await asyncio.wait_for(self._shutdown_done, timeout_s)
        except asyncio.TimeoutError:
            log.warning("lifespan shutdown did not complete within %g s (%s); cancelled it",
                        timeout_s, bound_by)
            self._abandon()
            return
        if message["type"] == "lifespan.shutdown.failed":
            log.error("lifespan shutdown failed: %s", message.get("message") or "no message")

    def _abandon(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()  # its finally blocks run; the worker's exit awaits them

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError):
                raise
            if self.mode == "auto" and not self._received:
                log.info("ASGI lifespan unsupported by the app (it raised %s: %s); "
                         "continuing without it", type(exc).__name__, exc)
                self._finish(self._startup_done, {"type": "unsupported"})
                return
            text = f"{type(exc).__name__}: {exc}"
            log.error("lifespan: the app raised %s", text, exc_info=exc)
            self._finish(self._startup_done, {"type": "lifespan.startup.failed", "message": text})
            self._finish(self._shutdown_done, {"type": "lifespan.shutdown.failed",
                                               "message": text})
            return
        # the app returned: fine before startup completes only if it never received
        if self.mode == "auto" and not self._received:
            self._finish(self._startup_done, {"type": "unsupported"})
        self._finish(self._startup_done, {"type": "lifespan.startup.failed",
                                          "message": "the app returned during startup"})
        self._finish(self._shutdown_done, {"type": "lifespan.shutdown.complete"})

    async def _receive(self) -> dict[str, Any]:
        self._received = True
        return await self._events.get()

    async def _send(self, message: dict[str, Any]) -> None:
        kind = message.get("type", "")
        if kind.startswith("lifespan.startup."):
            self._finish(self._startup_done, message)
        elif kind.startswith("lifespan.shutdown."):
            self._finish(self._shutdown_done, message)
        else:
            raise RuntimeError(f"unexpected lifespan message {kind!r}")

    @staticmethod
    def _finish(future: asyncio.Future[dict[str, Any]] | None, message: dict[str, Any]) -> None:
        if future is not None and not future.done():
            future.set_result(message)
