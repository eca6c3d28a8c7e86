"""sd_notify: tell systemd (Type=notify / notify-reload) what the master is doing.

``notify`` is the wire, a no-op when NOTIFY_SOCKET is unset. The decisions -- when
the next WATCHDOG=1 is due and whether the workers earn it, what STATUS= says and
when it is worth resending, how far to EXTEND_TIMEOUT_USEC= while the first
generation boots -- are pure classes fed the clock and the policy's worker table;
``Notifier`` is their shell in the master loop. Nothing here forks or sleeps.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Protocol

from arbiter import process
from arbiter.heartbeat import tick_interval_s
from arbiter.policy import Phase, PolicyConfig, WorkerRecord

WATCHDOG_ENV = ("WATCHDOG_USEC", "WATCHDOG_PID")
FRESH_TICKS = 3  # a worker is fresh while its last frame is at most this many TICKs old
STATUS_REFRESH_S = 5.0  # a STATUS= whose only change is the request count waits this long
EXTEND_EVERY_S = 5.0  # EXTEND_TIMEOUT_USEC= is repeated this often while the first boot runs
EXTEND_MARGIN_S = 5.0  # ... and each one outlasts the next send by this much


def notify(*fields: str) -> bool:
    """Send KEY=VALUE lines to $NOTIFY_SOCKET; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), address)
    except OSError:
        return False
    return True


def ready(status: str) -> None:
    notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def reloading(status: str) -> None:
    notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
           f"STATUS={status}")


def stopping(status: str) -> None:
    notify("STOPPING=1", f"STATUS={status}")


def status(text: str) -> None:
    notify(f"STATUS={text}")


# ------------------------------------------------------------------ the environment


def watchdog_timeout_s(environ: Mapping[str, str], pid: int) -> float | None:
    """WatchdogSec= as systemd passes it, if it is meant for ``pid`` (sd_watchdog_enabled(3))."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID")
    if owner is not None:
        try:
            if int(owner) != pid:
                return None
        except ValueError:
            return None
    return usec / 1e6


def take_watchdog(environ: MutableMapping[str, str], pid: int) -> float | None:
    """Read the watchdog settings once and remove them: workers must not inherit them."""
    timeout = watchdog_timeout_s(environ, pid)
    for name in WATCHDOG_ENV:
        environ.pop(name, None)
    return timeout


# ------------------------------------------------------------------ pure cores


class Supervised(Protocol):
    """What the cores read from the policy (``arbiter.policy.Supervisor``)."""

    config: PolicyConfig
    workers: dict[int, WorkerRecord]
    generation: int
    target: int
    stopping: bool

    @property
    def reloading(self) -> bool: ...


def fresh_window_s(timeout_s: float) -> float:
    """How old a worker's last frame may be for the worker to count as alive."""
    return FRESH_TICKS * tick_interval_s(timeout_s)


class Watchdog:
    """WATCHDOG=1 is due every half of WatchdogSec=, and earned, not just due.

    A ping is earned while the master loop runs (it is the loop that asks) and at
    least one ready worker has a fresh heartbeat; while stopping, draining workers
    have a deadline of their own (--graceful-timeout), so the loop alone earns it.
    When every worker is silent or gone the pings stop and systemd restarts a
    server that cannot serve. An unearned ping is not skipped but owed: the next
    frame from a worker makes it earned again, and it goes out on that pass.
    """

    def __init__(self, timeout_s: float, now: float) -> None:
        self.interval_s = timeout_s / 2
        self.next_ping = now

    @staticmethod
    def earned(sup: Supervised, now: float) -> bool:
        if sup.stopping:
            return True
        window = fresh_window_s(sup.config.timeout_s)
        return any(w.phase is Phase.READY and now - w.last_beat <= window
                   for w in sup.workers.values())

    def poll(self, sup: Supervised, now: float) -> bool:
        """True when a ping goes out now (then the next is due an interval later)."""
        if now < self.next_ping or not self.earned(sup, now):
            return False
        self.next_ping = now + self.interval_s
        return True

    def deadline(self, sup: Supervised, now: float) -> float | None:
        """When the loop must wake for it; None when only a worker's frame can help."""
        if self.next_ping > now:
            return self.next_ping
        return now if self.earned(sup, now) else None


class BootExtender:
    """EXTEND_TIMEOUT_USEC= while this master's first generation boots.

    systemd never tells a service its TimeoutStartSec=, and sd_notify(3) says an
    extension only counts once the start has run past it, and must then be
    renewed within the time it names. So the first one goes out at once, is
    repeated every EXTEND_EVERY_S until READY=1 and each lasts EXTEND_MARGIN_S
    beyond the next: a start within TimeoutStartSec= is unaffected, a longer
    --boot-timeout is honoured. Never beyond the last booting worker's
    --boot-timeout (plus the margin): the master kills it then and halts.
    """

    def __init__(self, now: float) -> None:
        self.next_send = now

    @staticmethod
    def _booting(sup: Supervised) -> list[WorkerRecord]:
        return [w for w in sup.workers.values() if w.phase is Phase.BOOTING]

    def poll(self, sup: Supervised, waiting: bool, now: float) -> float | None:
        """Seconds to extend by now, or None. ``waiting``: READY=1 is not sent yet."""
        if not waiting or sup.stopping or now < self.next_send:
            return None
        booting = self._booting(sup)
        if not booting:
            return None  # a worker in crash backoff: the last extension's margin covers it
        extend = EXTEND_EVERY_S + EXTEND_MARGIN_S
        boot_timeout = sup.config.boot_timeout_s
        if boot_timeout:
            last_deadline = max(w.spawned_at for w in booting) + boot_timeout
            extend = min(extend, max(0.0, last_deadline - now) + EXTEND_MARGIN_S)
        self.next_send = now + EXTEND_EVERY_S
        return extend

    def deadline(self, sup: Supervised, waiting: bool, now: float) -> float | None:
        if not waiting or sup.stopping:
            return None
        if self.next_send > now:
            return self.next_send
        return now if self._booting(sup) else None


class RequestTally:
    """Requests served under this master: live workers' counters plus those of workers gone.

    A worker's last TICK is what counts for it, so up to a second of its requests
    before it exited is not in the total: this is a status line, not a ledger.
    """

    def __init__(self) -> None:
        self._last: dict[int, int] = {}
        self._gone = 0

    def total(self, workers: Mapping[int, WorkerRecord]) -> int:
        for pid in [pid for pid in self._last if pid not in workers]:
            self._gone += self._last.pop(pid)
        for pid, w in workers.items():
            self._last[pid] = w.requests
        return self._gone + sum(self._last.values())


@dataclasses.dataclass(frozen=True)
class Status:
    """The master's state in words: STATUS= for systemd, a short form for ``ps``."""

    headline: str  # the state; a change is sent at once
    requests: int | None  # a change of the count alone is sent at most every STATUS_REFRESH_S
    note: str  # the last failure worth keeping in view (a reload that failed)
    title: str  # for the process title: no counter, so it changes only with the state

    @property
    def text(self) -> str:
        text = self.headline
        if self.requests is not None:
            text += f", {self.requests} requests"
        return f"{text}; {self.note}" if self.note else text


def _workers(n: int) -> str:
    return f"{n} worker{'' if n == 1 else 's'}"


def describe(sup: Supervised, started: bool, requests: int, note: str = "") -> Status:
    """``started``: READY=1 was sent (the first generation came up)."""
    ready = [w for w in sup.workers.values() if w.phase is Phase.READY]
    g, target = sup.generation, sup.target
    if sup.stopping:
        left = len(sup.workers)
        return Status(f"stopping, {_workers(left)} left", requests, note, f"stopping, {left} left")
    if sup.reloading:
        new = sum(1 for w in ready if w.generation == g)
        old = len(ready) - new
        return Status(f"reloading to generation {g}: {new}/{target} new workers ready, "
                      f"{old} old serving", requests, note,
                      f"reloading, {new}/{target} ready, gen {g}")
    if not started:
        return Status(f"starting: {len(ready)}/{target} workers ready, generation {g}", None, note,
                      f"starting, {len(ready)}/{target} ready, gen {g}")
    return Status(f"{len(ready)}/{target} workers ready, generation {g}", requests, note,
                  f"{len(ready)}/{target} ready, gen {g}")


class StatusBoard:
    """When a STATUS= is worth sending: a new state at once, a new count now and then."""

    def __init__(self, refresh_s: float = STATUS_REFRESH_S) -> None:
        self.refresh_s = refresh_s
        self.sent: Status | None = None
        self.sent_at = 0.0

    def _due_at(self, status: Status) -> float | None:
        sent = self.sent
        if sent is None or (sent.headline, sent.note) != (status.headline, status.note):
            return -float("inf")
        if sent.text != status.text:
            return self.sent_at + self.refresh_s
        return None

    def poll(self, status: Status, now: float) -> bool:
        """True when ``status`` goes out now."""
        due = self._due_at(status)
        if due is None or now < due:
            return False
        self.sent, self.sent_at = status, now
        return True

    def deadline(self, status: Status, now: float) -> float | None:
        due = self._due_at(status)
        return None if due is None else max(now, due)


# ------------------------------------------------------------------ the shell


class Notifier:
    """The master's systemd voice beyond READY/RELOADING/STOPPING, and its process title.

    Call ``poll`` on every pass of the master loop and fold ``deadline`` into its
    sleep. The title is kept without systemd too; the rest is sent only to a
    NOTIFY_SOCKET.
    """

    def __init__(self, environ: MutableMapping[str, str], pid: int, now: float) -> None:
        self.enabled = bool(environ.get("NOTIFY_SOCKET"))
        timeout = take_watchdog(environ, pid)
        self.watchdog_timeout_s = timeout if self.enabled else None
        self.watchdog = Watchdog(timeout, now) if self.enabled and timeout else None
        self.extender = BootExtender(now) if self.enabled else None
        self.board = StatusBoard()
        self.tally = RequestTally()
        self.note = ""
        self._title = ""

    def exec_environ(self, pid: int) -> dict[str, str]:
        """What a re-exec of this very process must get back (the same pid goes on pinging)."""
        if self.watchdog_timeout_s is None:
            return {}
        return {"WATCHDOG_USEC": str(round(self.watchdog_timeout_s * 1e6)),
                "WATCHDOG_PID": str(pid)}

    def status(self, sup: Supervised, started: bool) -> Status:
        return describe(sup, started, self.tally.total(sup.workers), self.note)

    def poll(self, sup: Supervised, started: bool, proc_name: str, now: float) -> None:
        if self.watchdog is not None and self.watchdog.poll(sup, now):
            notify("WATCHDOG=1")
        if self.extender is not None:
            extend = self.extender.poll(sup, not started, now)
            if extend is not None:
                notify(f"EXTEND_TIMEOUT_USEC={round(extend * 1e6)}")
        current = self.status(sup, started)
        if self.enabled and self.board.poll(current, now):
            notify(f"STATUS={current.text}")
        title = f"arbiter: master [{proc_name}] {current.title}"
        if title != self._title:
            self._title = title
            process.set_title(title)

    def deadline(self, sup: Supervised, started: bool, now: float) -> float | None:
        deadlines: Iterable[float | None] = (
            self.watchdog.deadline(sup, now) if self.watchdog is not None else None,
            self.extender.deadline(sup, not started, now) if self.extender is not None else None,
            self.board.deadline(self.status(sup, started), now) if self.enabled else None)
        present = [d for d in deadlines if d is not None]
        return min(present) if present else None
