"""Every corpus case, sans-IO, through both parsers: fed whole, byte by byte,
in two halves, and (for accepted cases) followed by trailing garbage."""

from __future__ import annotations

import pytest

from tests.http_corpus import CASES, Case, expected_events, run
from workers.http.parser_h11 import H11Parser
from workers.http.parser_httptools import HttptoolsParser

PARSERS = [H11Parser, HttptoolsParser]
GARBAGE = b"\x01\x02 not http\r\n\r\n"


@pytest.mark.parametrize("parser_class", PARSERS, ids=["h11", "httptools"])
@pytest.mark.parametrize("split", ["whole", "bytes", "halves"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_outcome(case: Case, split: str, parser_class: type) -> None:
    status, events = run(parser_class, case.raw, split)
    assert status == case.status, events
    if case.ok:
        assert events == expected_events(case)


@pytest.mark.parametrize("parser_class", PARSERS, ids=["h11", "httptools"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_trailing_garbage(case: Case, parser_class: type) -> None:
    status, events = run(parser_class, case.raw + GARBAGE)
    if not case.ok:
        assert status == case.status
        return
    expected = expected_events(case)
    assert events == expected
    # after a request that ends the connection, nothing more is read at all
    last_keep_alive = expected[-3 if expected[-2][0] == "body" else -2][5]
    assert status == (400 if last_keep_alive else None)


def test_corpus_is_broad() -> None:
    statuses = {c.status for c in CASES}
    assert {None, 400, 413, 414, 431, 501} <= statuses
    assert len(CASES) >= 60
