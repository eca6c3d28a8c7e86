"""Blocked-loop warnings (--warn-blocking): name the code that holds a worker's event loop.

The loop refreshes a timestamp from a timer (no per-request work); a daemon thread
wakes a few times per threshold, and when the timer is overdue by the threshold it
logs the loop thread's Python stack. The decisions (when a stall counts, one warning
per stall, a bounded number per minute) live in the pure ``StallPolicy``; this module
never touches the heartbeat, which stays on the loop for --timeout to judge.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import sys
import threading
import time
import traceback
from types import FrameType

log = logging.getLogger("arbiter.error")

WARNINGS_PER_WINDOW = 5
WINDOW_S = 60.0


def refresh_interval_s(threshold_s: float) -> float:
    """How often the loop refreshes its timestamp and the watcher looks at it."""
    return min(1.0, max(0.01, threshold_s / 4))


@dataclasses.dataclass(frozen=True)
class StallWarning:
    """Log this stall: the loop has been held ``held_s`` so far; ``unreported``
    earlier stalls were left out of the log by the rate limit since the last warning."""

    held_s: float
    unreported: int = 0


@dataclasses.dataclass(frozen=True)
class Suppressing:
    """The rate limit was reached: say once that further stalls go unlogged for a while."""

    held_s: float
    limit: int
    window_s: float


Verdict = StallWarning | Suppressing | None


class StallPolicy:
    """Decides, from the watcher's clock and the loop's last refresh, what to log.

    The loop's next refresh was due at ``beat + interval_s``; it is held when ``now``
    is past that by ``threshold_s`` or more (a lower bound on how long it has been
    held). A stall is identified by its ``beat``: it is counted and reported once.
    An observation made long after the previous one (the whole process was stopped,
    or the machine starved it) says nothing about the loop, so it is skipped.
    """

    def __init__(self, threshold_s: float, interval_s: float,
                 limit: int = WARNINGS_PER_WINDOW, window_s: float = WINDOW_S) -> None:
        self.threshold_s = threshold_s
        self.interval_s = interval_s
        self.limit = limit
        self.window_s = window_s
        self.stalls = 0  # every stall past the threshold, logged or not
        self.unreported = 0  # stalls the rate limit kept out of the log since the last warning
        self._warned_beat: float | None = None
        self._last_now: float | None = None
        self._logged: collections.deque[float] = collections.deque()
        self._suppressing = False

    def observe(self, now: float, beat: float) -> Verdict:
        previous, self._last_now = self._last_now, now
        if previous is not None and now - previous > self.interval_s + self.threshold_s:
            return None  # the watcher itself did not run for a while
        held_s = now - (beat + self.interval_s)
        if held_s < self.threshold_s or beat == self._warned_beat:
            return None
        self._warned_beat = beat
        self.stalls += 1
        while self._logged and now - self._logged[0] >= self.window_s:
            self._logged.popleft()
        if len(self._logged) < self.limit:
            self._logged.append(now)
            unreported, self.unreported, self._suppressing = self.unreported, 0, False
            return StallWarning(held_s, unreported)
        self.unreported += 1
        if self._suppressing:
            return None
        self._suppressing = True
        return Suppressing(held_s, self.limit, self.window_s)


class LoopStallWatcher:
    """The I/O shell around StallPolicy: a loop timer and a daemon thread.

    ``start()`` runs on the loop's thread once the worker serves; ``stop()`` before
    the loop stops running (else an ended loop would look like a held one).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold_s: float,
                 name: str) -> None:
        self.loop = loop
        self.name = name  # e.g. "worker 2 (pid 4711)"
        self.threshold_s = threshold_s
        self.interval_s = refresh_interval_s(threshold_s)
        self.policy = StallPolicy(threshold_s, self.interval_s)
        self._beat = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop_thread_id = 0
        self._outer_frames: list[FrameType] = []

    @property
    def stalls(self) -> int:
        return self.policy.stalls

    def start(self) -> None:
        self._loop_thread_id = threading.get_ident()
        self._outer_frames = frames_of(sys._getframe())
        self._refresh()
        self._thread = threading.Thread(target=self._watch, name="arbiter-stall-watcher",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._outer_frames = []
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(1.0)

    def _refresh(self) -> None:
        self._beat = time.monotonic()
        if not self._stopped.is_set():
            self._timer = self.loop.call_later(self.interval_s, self._refresh)

    def _watch(self) -> None:
        while not self._stopped.wait(self.interval_s):
            verdict = self.policy.observe(time.monotonic(), self._beat)
            if verdict is not None and not self._stopped.is_set():
                self._report(verdict)

    def _report(self, verdict: StallWarning | Suppressing) -> None:
        if isinstance(verdict, Suppressing):
            log.warning("%s: the event loop is blocked again (%.2f s so far); %d blocked-loop "
                        "warnings were logged in the last %.0f s, so further ones are "
                        "suppressed until that rate drops", self.name, verdict.held_s,
                        verdict.limit, verdict.window_s)
            return
        frame = sys._current_frames().get(self._loop_thread_id)
        stack = format_loop_stack(frame, self._outer_frames) if frame is not None else \
            "  (the loop thread's stack is not available)\n"
        unreported = (f" ({verdict.unreported} stalls since the last warning were "
                      "suppressed)" if verdict.unreported else "")
        log.warning("%s: the event loop has been blocked for %.2f s so far (--warn-blocking "
                    "%g)%s; the code holding it, most recent call last:\n%s", self.name,
                    verdict.held_s, self.threshold_s, unreported, stack.rstrip("\n"))


def frames_of(frame: FrameType | None) -> list[FrameType]:
    """The call chain ending at ``frame``, outermost first."""
    chain: list[FrameType] = []
    while frame is not None:
        chain.append(frame)
        frame = frame.f_back
    chain.reverse()
    return chain


def format_loop_stack(frame: FrameType, outer: list[FrameType]) -> str:
    """``frame``'s stack without the process startup that led into the loop.

    ``outer`` is the chain seen on the loop when the watcher started: the frames
    the two chains share (the same frame objects) are the way into the loop, of
    which only the innermost is kept, so the log shows the loop and what it runs.
    """
    chain = frames_of(frame)
    shared = 0
    while shared < min(len(chain), len(outer)) and chain[shared] is outer[shared]:
        shared += 1
    summary = traceback.StackSummary.extract(
        ((f, f.f_lineno) for f in chain[max(0, shared - 1):]), capture_locals=False)
    return "".join(summary.format())
