"""Fixtures for the integration tests that start programs other than arbiter."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fronts import Front


@pytest.fixture
def fronts() -> Iterator[list[Front]]:
    """Every nginx or HAProxy a test starts goes in this list and is killed after it."""
    started: list[Front] = []
    yield started
    for front in started:
        front.stop()


WS_BACKENDS = ["websockets", "wsproto"]  # --ws


def servers_on_each_ws_backend() -> Any:
    """For a module whose servers all serve WebSockets: ``arbiter_process =
    servers_on_each_ws_backend()`` runs each of its tests once per --ws backend."""
    @pytest.fixture(params=WS_BACKENDS)
    def arbiter_process(arbiter_process: Callable[..., Any],
                        request: pytest.FixtureRequest) -> Callable[..., Any]:
        def start(args: list[str], *more: Any, **options: Any) -> Any:
            return arbiter_process([*args, "--ws", request.param], *more, **options)
        return start
    return arbiter_process
