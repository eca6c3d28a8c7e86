"""--warn-blocking's decisions (StallPolicy) with a fake clock, and the stack it prints."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time

import pytest

from workers.stall import (
    LoopStallWatcher,
    StallPolicy,
    StallWarning,
    Suppressing,
    format_loop_stack,
    frames_of,
    refresh_interval_s,
)

THRESHOLD = 0.5
INTERVAL = 0.125  # refresh_interval_s(0.5)


def run(observations: list[tuple[float, float]], limit: int = 5,
        window_s: float = 60.0) -> tuple[StallPolicy, list[tuple[float, object]]]:
    """Feed (now, beat) pairs; return the policy and every non-None verdict with its time."""
    policy = StallPolicy(THRESHOLD, INTERVAL, limit, window_s)
    verdicts = []
    for now, beat in observations:
        verdict = policy.observe(now, beat)
        if verdict is not None:
            verdicts.append((now, verdict))
    return policy, verdicts


def ticks(start: float, stop: float, step: float = INTERVAL) -> list[float]:
    count = int((stop - start) / step + 1e-9)
    return [round(start + i * step, 6) for i in range(count + 1)]


def stall(start: float, held_s: float) -> list[tuple[float, float]]:
    """The watcher's view of one stall: the loop refreshed at ``start``, then was held."""
    return [(now, start) for now in ticks(start + INTERVAL, start + INTERVAL + held_s)]


def idle(start: float, stop: float) -> list[tuple[float, float]]:
    """A loop that refreshes on time: each observation sees a fresh beat."""
    return [(now, now - 0.01) for now in ticks(start, stop)]


def test_refresh_interval_is_a_quarter_of_the_threshold_within_bounds() -> None:
    assert refresh_interval_s(0.5) == INTERVAL
    assert refresh_interval_s(0.001) == 0.01
    assert refresh_interval_s(60) == 1.0


@pytest.mark.parametrize("name, observations, expected", [
    ("idle loop", idle(0, 600), []),
    ("held just under the threshold", [(t, 0.0) for t in (0.125, 0.25, 0.5, 0.62)], []),
    ("held at the threshold warns once", stall(0, 0.5), [(0.625, StallWarning(0.5))]),
    ("held for 10 s warns once, at the threshold", stall(0, 10),
     [(0.625, StallWarning(0.5))]),
    ("two stalls, one warning each", stall(0, 1) + idle(2, 3) + stall(3, 1),
     [(0.625, StallWarning(0.5)), (3.625, StallWarning(0.5))]),
    ("the watcher did not run for 5 s (process stopped): no verdict from that look",
     [(0.125, 0.0), (5.125, 0.0), (5.2, 5.15)], []),
    ("still held after the watcher's gap: the next look on time warns",
     [(0.125, 0.0), (5.125, 0.0), (5.25, 0.0)], [(5.25, StallWarning(5.125))]),
])
def test_when_to_warn(name: str, observations: list[tuple[float, float]],
                      expected: list[tuple[float, object]]) -> None:
    _, verdicts = run(observations)
    assert [(now, type(v), round(v.held_s, 6)) for now, v in verdicts] == \
        [(now, type(v), v.held_s) for now, v in expected], name


def many_stalls(count: int, every_s: float, start: float = 0.0) -> list[tuple[float, float]]:
    observations: list[tuple[float, float]] = []
    for i in range(count):
        observations += stall(start + i * every_s, 0.6)
    return observations


def test_at_most_five_warnings_a_minute_then_one_note() -> None:
    policy, verdicts = run(many_stalls(50, 1.0))
    kinds = [type(v) for _, v in verdicts]
    assert kinds == [StallWarning] * 5 + [Suppressing]
    note = verdicts[-1][1]
    assert isinstance(note, Suppressing) and note.limit == 5 and note.window_s == 60.0
    assert policy.stalls == 50  # every stall is counted, logged or not
    assert policy.unreported == 45


def test_after_the_window_the_next_warning_says_how_many_were_not_logged() -> None:
    observations = many_stalls(8, 1.0) + many_stalls(1, 1.0, start=61.0)
    policy, verdicts = run(observations)
    assert [type(v) for _, v in verdicts] == [StallWarning] * 5 + [Suppressing, StallWarning]
    last = verdicts[-1][1]
    assert isinstance(last, StallWarning) and last.unreported == 3
    assert policy.stalls == 9 and policy.unreported == 0


def test_a_sliding_window_never_suppresses_stalls_spread_out() -> None:
    _, verdicts = run(many_stalls(40, 13.0))  # under five a minute
    assert [type(v) for _, v in verdicts] == [StallWarning] * 40
    assert all(v.unreported == 0 for _, v in verdicts)


def test_a_new_note_after_each_quiet_spell() -> None:
    observations = many_stalls(7, 1.0) + many_stalls(7, 1.0, start=100.0)
    _, verdicts = run(observations)
    assert [type(v) for _, v in verdicts] == ([StallWarning] * 5 + [Suppressing]) * 2
    assert verdicts[6][1].unreported == 2


# ------------------------------------------------------------ the stack printed


def _enter(outer_box: list, body):  # stands in for the worker's way into its loop
    outer_box.append(frames_of(sys._getframe()))
    return body()


def test_the_stack_drops_the_way_into_the_loop_and_keeps_the_culprit() -> None:
    outer: list = []
    seen: list[str] = []

    def culprit() -> None:
        seen.append(format_loop_stack(sys._getframe(), outer[0]))  # CULPRIT LINE

    def loop_entry() -> None:
        _enter(outer, lambda: None)  # what the watcher sees at start()
        culprit()

    loop_entry()
    text = seen[0]
    line = next(n for n, src in enumerate(open(__file__), 1) if "# CULPRIT LINE" in src
                and "seen.append" in src)
    assert f'File "{__file__}", line {line}, in culprit' in text
    assert text.splitlines()[0].endswith("in loop_entry")  # the shared frames are gone
    assert "in test_the_stack_drops" not in text


# ------------------------------------------------------------ the watcher on a real loop


def test_watcher_on_a_real_loop_warns_for_sleep_not_for_await(
        caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    watcher = LoopStallWatcher(loop, 0.05, "worker 9 (pid 1)")

    async def scenario() -> None:
        watcher.start()
        await asyncio.sleep(0.3)  # deliberate (noqa: sleep) (an awaiting handler: must not warn)
        time.sleep(0.3)  # BLOCKS THE LOOP  # deliberate (noqa: sleep) (the stall under test)
        await asyncio.sleep(0.1)  # deliberate (noqa: sleep) (let the loop refresh after the stall)
        watcher.stop()

    with caplog.at_level(logging.WARNING, logger="arbiter.error"):
        loop.run_until_complete(scenario())
    loop.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1, messages
    line = next(n for n, src in enumerate(open(__file__), 1) if "# BLOCKS THE LOOP" in src)
    assert messages[0].startswith("worker 9 (pid 1): the event loop has been blocked for ")
    assert f'File "{__file__}", line {line}, in scenario' in messages[0]
    assert watcher.stalls == 1
    assert not any(t.name == "arbiter-stall-watcher" for t in threading.enumerate())
