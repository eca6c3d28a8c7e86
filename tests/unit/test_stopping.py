"""A worker's stop without processes: the budgets of each step (tables), and the
lifespan protocol's bounds driven with in-memory apps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from arbiter.errors import BootError
from workers.lifespan import Lifespan
from workers.stopping import (StopReason, connection_drain_s, exit_margin_s,
                              lifespan_shutdown_s, lifespan_startup_s)


def test_the_reason_gives_the_close_code_and_the_shutdown_delay() -> None:
    assert StopReason.STOP.websocket_close_code == 1001  # going away
    assert StopReason.RETIRE.websocket_close_code == 1012  # service restart
    assert StopReason.STOP.shutdown_delay_s(5.0) == 5.0
    assert StopReason.RETIRE.shutdown_delay_s(5.0) == 0.0  # the replacement already serves


@pytest.mark.parametrize("graceful, margin, drain", [
    (30.0, 1.0, 29.0), (5.0, 0.5, 4.5), (2.0, 0.2, 1.8), (0.0, 0.0, 0.0)])
def test_connections_get_the_graceful_timeout_less_an_exit_margin(
        graceful: float, margin: float, drain: float) -> None:
    assert exit_margin_s(graceful) == pytest.approx(margin)
    assert connection_drain_s(graceful) == pytest.approx(drain)


@pytest.mark.parametrize("timeout_lifespan, boot_timeout, booting_for, bound, by", [
    (None, 60.0, 0.5, 58.5, "--boot-timeout"),  # default: until just before the master's
    (None, 3.0, 0.2, 2.5, "--boot-timeout"),
    (None, 3.0, 5.0, 0.0, "--boot-timeout"),  # already late: fail at once, with the reason
    (None, 0.0, 1.0, None, "--boot-timeout"),  # both off: unbounded
    (10.0, 60.0, 0.5, 10.0, "--timeout-lifespan"),
    (10.0, 5.0, 0.5, 4.0, "--boot-timeout"),  # whichever ends first
    (10.0, 0.0, 0.5, 10.0, "--timeout-lifespan"),
    (0.0, 60.0, 0.5, 58.5, "--boot-timeout"),  # 0: no bound of its own
])
def test_lifespan_startup_bound(timeout_lifespan: float | None, boot_timeout: float,
                                booting_for: float, bound: float | None, by: str) -> None:
    got, source = lifespan_startup_s(timeout_lifespan, boot_timeout, booting_for)
    assert (got if got is None else pytest.approx(got)) == bound and source == by


@pytest.mark.parametrize("timeout_lifespan, graceful, draining_for, bound, by", [
    (None, 30.0, 0.1, 10.0, "--timeout-lifespan"),  # default: a third of the graceful timeout
    (None, 30.0, 25.0, 4.0, "--graceful-timeout"),  # the connections took most of it
    (None, 30.0, 40.0, 0.0, "--graceful-timeout"),
    (2.0, 30.0, 0.1, 2.0, "--timeout-lifespan"),
    (20.0, 30.0, 15.0, 14.0, "--graceful-timeout"),
    (0.0, 30.0, 1.0, 28.0, "--graceful-timeout"),  # 0: only the graceful deadline
    (None, 0.0, 0.0, 0.0, "--graceful-timeout"),
])
def test_lifespan_shutdown_bound(timeout_lifespan: float | None, graceful: float,
                                 draining_for: float, bound: float, by: str) -> None:
    got, source = lifespan_shutdown_s(timeout_lifespan, graceful, draining_for)
    assert got == pytest.approx(bound) and source == by


# ---------------------------------------------------------------- lifespan bounds


def lifespan_app(startup_hang: float = 0.0, shutdown_hang: float = 0.0,
                 record: list[str] | None = None) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        try:
            await receive()
            await asyncio.sleep(startup_hang)  # deliberate (noqa: sleep): app behaviour, a slow startup
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await asyncio.sleep(shutdown_hang)  # deliberate (noqa: sleep): app behaviour, a hanging shutdown
            await send({"type": "lifespan.shutdown.complete"})
        finally:
            (record if record is not None else []).append("finally")
    return app


def test_a_startup_past_its_bound_is_a_boot_error_naming_the_setting() -> None:
    record: list[str] = []

    async def main() -> None:
        lifespan = Lifespan(lifespan_app(startup_hang=60, record=record), "on", {})
        with pytest.raises(BootError, match=r"lifespan startup did not complete within "
                                            r"0.1 s \(--timeout-lifespan\)"):
            await lifespan.startup(0.1, "--timeout-lifespan")
        await asyncio.sleep(0)  # deliberate (noqa: sleep): one step, the cancel lands
        assert record == ["finally"]  # the app's startup task was cancelled

    asyncio.run(main())


def test_a_startup_within_its_bound_and_an_unbounded_one_complete() -> None:
    async def main() -> None:
        for bound in (5.0, None):
            lifespan = Lifespan(lifespan_app(startup_hang=0.01), "on", {})
            await lifespan.startup(bound, "--boot-timeout")
            await lifespan.shutdown(bound, "--timeout-lifespan")
            assert lifespan._task is not None and lifespan._task.done()

    asyncio.run(main())


def test_a_shutdown_past_its_bound_is_cancelled_and_logged(caplog: Any) -> None:
    record: list[str] = []

    async def main() -> float:
        loop = asyncio.get_running_loop()
        lifespan = Lifespan(lifespan_app(shutdown_hang=60, record=record), "on", {})
        await lifespan.startup(None)
        started = loop.time()
        await lifespan.shutdown(0.1, "--timeout-lifespan")
        took = loop.time() - started
        await asyncio.sleep(0)  # deliberate (noqa: sleep): one step, the cancel lands
        return took

    with caplog.at_level("WARNING", logger="arbiter.error"):
        took = asyncio.run(main())
    assert 0.05 < took < 2
    assert record == ["finally"]
    assert "lifespan shutdown did not complete within 0.1 s (--timeout-lifespan); cancelled it" \
        in caplog.text
