"""Fixtures for the integration tests that start programs other than arbiter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fronts import Front


@pytest.fixture
def fronts() -> Iterator[list[Front]]:
    """Every nginx or HAProxy a test starts goes in this list and is killed after it."""
    started: list[Front] = []
    yield started
    for front in started:
        front.stop()
