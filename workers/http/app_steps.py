"""An ASGI app's first step, run inside its request's own Task in the turn the
request arrived.

An app that does not wait has its response out before the loop turns again, and
``asyncio.current_task()`` is its Task from the app's first line on (sniffio, so
anyio, and ``asyncio.timeout`` need one). The connection enters the Task, runs
``first_step``, leaves it, and, if the app waits, the Task's own step drives the
rest with ``resume``. The Task must hold nothing of a request done in one step:
kept to the next turn, 64 connections' FastAPI scopes survived each young
collection, and a full one (15 ms over the boot heap) ran every second.
"""

from __future__ import annotations

import types
from asyncio.tasks import _enter_task as enter_task  # (3.10-3.13) the first step as the task's
from asyncio.tasks import _leave_task as leave_task
from typing import Any

__all__ = ["awaited", "enter_task", "first_step", "leave_task", "resume"]


def first_step(app: Any, cycle: Any) -> tuple[Any, Any]:
    """Call the app and run it to its first suspension (StopIteration: done)."""
    coro = app(cycle.scope, cycle.receive, cycle.send)
    if type(coro) is not types.CoroutineType:
        coro = awaited(coro)
    return coro, coro.send(None)


async def awaited(awaitable: Any) -> Any:
    """Make any awaitable an app may return into a coroutine we can step."""
    return await awaitable


@types.coroutine
def resume(coro: Any, waiting_on: Any) -> Any:
    """Drive a coroutine whose first step already ran, as ``yield from`` would."""
    while True:
        try:
            value = yield waiting_on
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # cancellation or close: hand it to the app
            try:
                waiting_on = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                waiting_on = coro.send(value)
            except StopIteration as stop:
                return stop.value
