"""The master's decisions, as a pure core: (worker table, clock, event) -> actions.

Nothing here forks, signals, sleeps or reads the clock: the master loop feeds in
events with the current monotonic time and carries out the returned actions
(Spawn, Kill, Log, Halt, ReloadFailed). That keeps every supervision rule --
readiness-gated replacement, canary reloads, two timeouts, recycling limits,
crash backoff, first-generation halts -- testable with a fake clock.
"""

from __future__ import annotations

import dataclasses
import enum
import random
import signal
from collections.abc import Iterable

from arbiter.actions import (  # noqa: F401  (re-exported: the policy's vocabulary)
    Action, ExitStatus, Halt, Kill, Log, ReloadDone, ReloadFailed, Spawn, signal_name,
)
from arbiter.errors import ExitCode
from arbiter.heartbeat import Frame, Kind, extend_counter

ABORT_GRACE_S = 3.0  # after SIGABRT, time for faulthandler to write tracebacks
QUICK_STOP_S = 5.0  # after SIGQUIT, time before SIGKILL
STABLE_AFTER_S = 10.0  # a worker ready this long resets its slot's crash streak
# ... and so does one that completed a request (a SERVED frame): backoff is for crash
# loops, workers that die booting or before they finish a single response.
MAX_BACKOFF_S = 30.0
RSS_STRIKES = 3  # consecutive samples over --max-rss before recycling
IDLE_WAKEUP_S = 5.0


class Phase(enum.Enum):
    BOOTING = "booting"
    READY = "ready"
    RETIRING = "retiring"


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    workers: int
    timeout_s: float = 30.0
    boot_timeout_s: float = 60.0
    graceful_timeout_s: float = 30.0
    shutdown_delay_s: float = 0.0  # a SIGTERMed ready worker serves this long before draining
    max_requests: int = 0
    max_requests_jitter: int = 0
    max_rss_mib: int = 0
    max_lifetime_s: float = 0.0
    max_recycling: int = 1


def _take_counters(w: WorkerRecord, frame: Frame) -> None:
    """A frame's numbers into the record: gauges as they are, counters unwrapped."""
    w.requests = extend_counter(w.requests, frame.requests)
    w.connections = frame.connections
    w.served = w.served or w.requests > 0
    load = frame.load
    if load is None:
        return
    w.in_flight = load.in_flight
    w.loop_lag_s = load.loop_lag_us / 1e6
    w.blocked_loop_warnings = extend_counter(w.blocked_loop_warnings,
                                             load.blocked_loop_warnings)
    w.responses = tuple(extend_counter(old, new) for old, new in zip(w.responses,
                                                                      load.responses))


# ------------------------------------------------------------------ table


@dataclasses.dataclass
class WorkerRecord:
    pid: int
    slot: int
    generation: int
    spawned_at: float
    max_requests: int = 0
    phase: Phase = Phase.BOOTING
    last_beat: float = 0.0
    ready_at: float | None = None
    requests: int = 0  # cumulative (unwrapped from the frames' 32 bits)
    connections: int = 0
    # what the heartbeat's Load carries (for metrics and `arbiter status`): the
    # counters are cumulative for this worker's life, unwrapped like requests
    in_flight: int = 0
    loop_lag_s: float = 0.0
    blocked_loop_warnings: int = 0
    responses: tuple[int, ...] = (0, 0, 0, 0)  # 2xx, 3xx, 4xx, 5xx
    rss_bytes: int | None = None  # sampled by the master (--max-rss, --metrics-bind)
    recycle_reason: str | None = None
    aborted_at: float | None = None
    retired_at: float | None = None
    kill_sent: bool = False
    boot_timed_out: bool = False
    rss_strikes: int = 0
    served: bool = False  # it completed at least one response
    error: str = ""  # why it could not boot, as the worker reported it

    retire_cause: str = ""  # why it was retired, as a metric label: reload, max_requests...
    # how long it may drain from retired_at: --graceful-timeout, plus --shutdown-delay for
    # a ready worker told to stop (SIGTERM) rather than to retire (SIGUSR2)
    drain_allowance_s: float | None = None

    @property
    def name(self) -> str:
        return f"worker {self.slot} (pid {self.pid}, generation {self.generation})"

    def ids(self) -> tuple[tuple[str, object], ...]:
        return (("worker", self.slot), ("pid", self.pid), ("generation", self.generation))


def _event(level: str, message: str, event: str, w: WorkerRecord | None = None,
           **facts: object) -> Log:
    return Log(level, message, event, (w.ids() if w else ()) + tuple(facts.items()))


@dataclasses.dataclass
class _Reload:
    generation: int
    previous: int
    canary_ready: bool = False
    started_at: float = 0.0


@dataclasses.dataclass
class _Backoff:
    streak: int = 0
    not_before: float = 0.0


class Supervisor:
    """The worker table and every rule about it."""

    def __init__(self, config: PolicyConfig, now: float, rng: random.Random | None = None):
        self.config = config
        self.target = config.workers
        self.generation = 1
        self._next_generation = 2
        self.workers: dict[int, WorkerRecord] = {}
        self.ever_ready = False
        self.stopping = False
        self.exit_code: int = ExitCode.OK
        self._stop_deadline = 0.0
        self._graceful = True
        self._reload: _Reload | None = None
        self._backoff: dict[int, _Backoff] = {}
        self._last_tick = now
        self._planned_wake = now
        self._rng = rng or random.Random()
        self._reported: set[str] = set()  # boot errors already logged, said once

    # -------------------------------------------------------------- queries

    @property
    def reloading(self) -> bool:
        return self._reload is not None

    def ready_count(self) -> int:
        return sum(1 for w in self.workers.values() if w.phase is Phase.READY)

    def at_target(self) -> bool:
        """Settled: exactly ``target`` workers, each ready and current (a scale is done)."""
        return len(self.workers) == self.target and all(
            w.phase is Phase.READY and self._current(w) for w in self.workers.values())

    def _current(self, w: WorkerRecord) -> bool:
        return (w.generation == self.generation and w.recycle_reason is None
                and w.phase is not Phase.RETIRING)

    def _split(self) -> tuple[list[WorkerRecord], list[WorkerRecord], list[WorkerRecord],
                              list[WorkerRecord]]:
        ready_cur, boot_cur, ready_old, boot_old = [], [], [], []
        for w in self.workers.values():
            if w.phase is Phase.RETIRING:
                continue
            current = self._current(w)
            if w.phase is Phase.READY:
                (ready_cur if current else ready_old).append(w)
            else:
                (boot_cur if current else boot_old).append(w)
        return ready_cur, boot_cur, ready_old, boot_old

    # -------------------------------------------------------------- events

    def worker_spawned(self, pid: int, slot: int, generation: int, now: float) -> list[Action]:
        limit = self.config.max_requests
        if limit and self.config.max_requests_jitter:
            limit += self._rng.randint(0, self.config.max_requests_jitter)
        w = self.workers[pid] = WorkerRecord(pid, slot, generation, now, max_requests=limit,
                                             last_beat=now)
        return [_event("info", f"spawned {w.name}", "spawned", w)]

    def adopt(self, pid: int, slot: int, now: float, phase: Phase = Phase.READY) -> None:
        """Take over a worker of a previous master (after an in-place re-exec).

        Adopted workers form generation 0; generation 1 replaces them like a
        reload, canary first, so a broken upgrade leaves ready ones serving. A
        booting one (a reload's canary) is retired at the next tick, gracefully;
        a retiring one goes on draining, its graceful timeout counted from now.
        """
        w = WorkerRecord(pid, slot, 0, now, phase=phase, last_beat=now)
        if phase is not Phase.BOOTING:
            w.ready_at = now
        if phase is Phase.RETIRING:
            w.retired_at, w.recycle_reason = now, "handed over while retiring"
        self.workers[pid] = w
        if phase is Phase.READY:
            self.ever_ready = True
        if self._reload is None:
            self._reload = _Reload(self.generation, previous=0)

    def spawn_failed(self, slot: int, error: str, now: float) -> list[Action]:
        self._bump_backoff(slot, now, stable=False)
        return [Log("error", f"cannot fork worker {slot}: {error}")]

    def frame(self, pid: int, frame: Frame, now: float) -> list[Action]:
        w = self.workers.get(pid)
        if w is None:
            return []
        w.last_beat = now
        if frame.kind is Kind.ERROR:
            w.error = frame.text
            return []
        # every frame but ERROR carries the worker's counters (and, since the Load
        # fields, its gauges: a legacy frame has none)
        _take_counters(w, frame)
        w.served = w.served or frame.kind is Kind.SERVED
        if frame.kind is Kind.READY and w.phase is Phase.BOOTING:
            w.phase, w.ready_at = Phase.READY, now
            self.ever_ready = True
            boot_s = round(now - w.spawned_at, 3)
            actions: list[Action] = [_event("info", f"{w.name} is ready ({boot_s:.2f} s to boot)",
                                            "ready", w, boot_s=boot_s)]
            r = self._reload
            if r and w.generation == r.generation and not r.canary_ready:
                r.canary_ready = True
                actions.append(Log("info", f"reload: canary {w.name} is ready; replacing the "
                                           f"other workers"))
            return actions
        if frame.kind is Kind.DRAINING and w.phase is not Phase.RETIRING:
            w.phase, w.retired_at = Phase.RETIRING, now
        return []

    def rss_sample(self, pid: int, rss_bytes: int) -> None:
        w = self.workers.get(pid)
        if w is None:
            return
        w.rss_bytes = rss_bytes
        if self.config.max_rss_mib:
            over = rss_bytes > self.config.max_rss_mib * 1024 * 1024
            w.rss_strikes = w.rss_strikes + 1 if over else 0

    def worker_exited(self, pid: int, status: ExitStatus, now: float) -> list[Action]:
        w = self.workers.pop(pid, None)
        if w is None:
            return []  # not ours (we may be PID 1): reaped quietly
        how = status.describe(killed_by_master=w.kill_sent)  # no OOM guess for our own kill
        if w.error:
            how = f"{how}: {w.error}" if w.error not in self._reported else f"{how} (same error)"
            self._reported.add(w.error)
        uptime = round(now - w.spawned_at, 3)
        served = f"after {uptime:.1f} s, {w.requests} request(s) served"

        def exited(level: str, message: str, cause: str) -> Log:
            return _event(level, message, "exited", w, cause=cause, code=status.code,
                          signal=signal_name(status.sig) if status.sig else None,
                          uptime_s=uptime, requests=w.requests)

        if self.stopping:
            return [exited("info", f"{w.name} {how} ({served})", "stop")]
        if w.phase is Phase.RETIRING:
            return [exited("info", f"{w.name} retired ({w.recycle_reason or 'replaced'}); it "
                                   f"{how} ({served})", "retired")]
        booting = w.phase is Phase.BOOTING
        boot_failure = booting and (status.code in (ExitCode.BOOT_ERROR,
                                                    ExitCode.APP_LOAD_ERROR)
                                    or w.boot_timed_out)
        cause = "boot_failure" if booting else "timeout" if w.aborted_at is not None else "crash"
        if booting and not self.ever_ready and w.generation == 1:
            code = status.code if status.code in (ExitCode.BOOT_ERROR,
                                                  ExitCode.APP_LOAD_ERROR) else ExitCode.BOOT_ERROR
            return [exited("error", f"{w.name} failed to boot: it {how}; stopping, since the "
                                    f"first generation cannot start", cause),
                    *self.halt(code, now)]
        r = self._reload
        if booting and r and w.generation == r.generation and not r.canary_ready:
            return [exited("error", f"{w.name} {how} while booting", cause),
                    *self._abort_reload(r, f"canary {w.name} failed to boot: it {how}", now)]
        level = "error" if booting or boot_failure else "warning"
        actions: list[Action] = [exited(level, f"{w.name} {how}"
                                               f"{' while booting' if booting else f' ({served})'}",
                                        cause)]
        if self._current(w) or w.generation == self.generation:
            delay = self._bump_backoff(w.slot, now, stable=self._was_stable(w, now))
            if delay > 0:
                actions.append(Log("warning", f"worker {w.slot} keeps dying; next restart in "
                                              f"{delay:.1f} s"))
        return actions

    def request_reload(self, now: float) -> list[Action]:
        if self.stopping:
            return []
        actions: list[Action] = []
        previous = self.generation
        if self._reload:
            previous = self._reload.previous if not self._reload.canary_ready else previous
            actions.append(Log("info", f"reload: restarting generation {self.generation}'s "
                                       f"reload with the newest config"))
        self.generation = self._next_generation
        self._next_generation += 1
        self._reload = _Reload(self.generation, previous, started_at=now)
        actions.append(Log("info", f"reload: starting generation {self.generation}",
                           "reload_started", (("generation", self.generation),)))
        return actions + self.tick(now)

    def scale(self, delta: int, now: float) -> list[Action]:
        if self.stopping:
            return []
        before = self.target
        self.target = max(1, self.target + delta)
        if self.target == before:
            return [Log("info", f"already at the minimum of {before} worker" if delta < 0
                        else f"workers: already {before}")]
        return [Log("info", f"workers: {before} -> {self.target}"), *self.tick(now)]

    def stop(self, graceful: bool, now: float) -> list[Action]:
        if self.stopping and (graceful or not self._graceful):
            return []  # already stopping at least this hard
        self.stopping = True
        self._graceful = graceful
        sig = signal.SIGTERM if self._graceful else signal.SIGQUIT
        # SIGTERM: every ready worker serves --shutdown-delay more, then drains
        wait = self._stop_allowance() if self._graceful else QUICK_STOP_S
        self._stop_deadline = now + wait
        kind = "graceful" if self._graceful else "quick"
        actions: list[Action] = [Log("info", f"{kind} stop of {len(self.workers)} worker(s)")]
        for w in self.workers.values():
            actions.append(Kill(w.pid, sig))
            w.retired_at = w.retired_at or now
        return actions

    def halt(self, code: int, now: float) -> list[Action]:
        self.exit_code = code
        return self.stop(graceful=False, now=now)

    # -------------------------------------------------------------- the clock

    def tick(self, now: float) -> list[Action]:
        """Check deadlines and reconcile the table with the target."""
        gap = now - max(self._last_tick, self._planned_wake)  # lateness past the planned wake
        self._last_tick = now
        if self.stopping:
            return self._tick_stopping(now)
        actions: list[Action] = []
        if gap > self._suspend_gap():
            actions.append(Log("warning", f"the master woke {gap:.1f} s late (suspended?); "
                                          f"giving workers a fresh heartbeat deadline"))
            for w in self.workers.values():
                w.last_beat = max(w.last_beat, now)
        actions += self._check_deadlines(now)
        if self.stopping:
            return actions
        actions += self._mark_recycles(now)
        actions += self._reconcile(now)
        return actions

    def next_deadline(self, now: float) -> float:
        c = self.config
        deadlines = [now + IDLE_WAKEUP_S]
        if self.stopping:
            deadlines.append(self._stop_deadline)
        for w in self.workers.values():
            if w.ready_at is None:  # booting, or retired before it was ever ready
                if c.boot_timeout_s and not w.kill_sent:
                    deadlines.append(w.spawned_at + c.boot_timeout_s)
            elif c.timeout_s and not w.kill_sent:
                deadlines.append(w.aborted_at + ABORT_GRACE_S if w.aborted_at
                                 else w.last_beat + c.timeout_s)
            if w.retired_at and not self.stopping and not w.kill_sent:
                deadlines.append(w.retired_at + self._drain_allowance(w))
            if c.max_lifetime_s and w.phase is Phase.READY and not w.recycle_reason:
                # Only a future one: a worker past its lifetime that is not marked yet
                # waits for --max-recycling room or the end of a reload, and both come
                # with an event (an exit, a READY). A past deadline would spin the loop.
                expires = w.spawned_at + c.max_lifetime_s
                if expires > now:
                    deadlines.append(expires)
        for b in self._backoff.values():
            if b.not_before > now:
                deadlines.append(b.not_before)
        self._planned_wake = max(now, min(deadlines))
        return self._planned_wake

    # -------------------------------------------------------------- internals

    def _suspend_gap(self) -> float:
        timeout = self.config.timeout_s or 30.0
        return max(2.0, min(timeout / 2, IDLE_WAKEUP_S * 2))

    def _tick_stopping(self, now: float) -> list[Action]:
        if not self.workers:
            return [Halt(self.exit_code)]
        if now < self._stop_deadline:
            return []
        pending = [w for w in self.workers.values() if not w.kill_sent]
        if not pending:
            return []
        for w in pending:
            w.kill_sent = True
        c = self.config
        what = ("still running after a quick stop" if not self._graceful else
                f"still busy after the graceful timeout of {c.graceful_timeout_s:g} s"
                if not c.shutdown_delay_s else
                f"still busy after the shutdown delay and graceful timeout "
                f"({c.shutdown_delay_s:g} s + {c.graceful_timeout_s:g} s)")
        return [Log("warning", f"{len(pending)} worker(s) {what}: killing "
                               f"{', '.join(w.name for w in pending)}"),
                *(Kill(w.pid, signal.SIGKILL) for w in pending)]

    def _check_deadlines(self, now: float) -> list[Action]:
        c = self.config
        actions: list[Action] = []
        for w in list(self.workers.values()):
            if w.kill_sent:
                continue
            if w.ready_at is None:
                # Booting (or retired while booting): --boot-timeout bounds it, never
                # --timeout, which is about a ready event loop that stopped ticking.
                if c.boot_timeout_s and now - w.spawned_at > c.boot_timeout_s:
                    w.kill_sent = w.boot_timed_out = True
                    actions += [Log("error", f"{w.name} did not become ready within the boot "
                                             f"timeout of {c.boot_timeout_s:g} s; killing it"),
                                Kill(w.pid, signal.SIGKILL)]
                    continue
                if w.phase is Phase.BOOTING:
                    continue
            silent = now - w.last_beat
            loop_clock = w.ready_at is not None  # a worker retired while booting has none
            if w.aborted_at is not None:
                if now - w.aborted_at >= ABORT_GRACE_S:
                    w.kill_sent = True
                    actions.append(Kill(w.pid, signal.SIGKILL))
            elif loop_clock and c.timeout_s and silent > c.timeout_s:
                w.aborted_at = now
                actions += [Log("critical", f"WORKER TIMEOUT: {w.name} has been silent for "
                                            f"{silent:.1f} s (--timeout {c.timeout_s:g}); "
                                            f"aborting it, its tracebacks follow"),
                            Kill(w.pid, signal.SIGABRT)]
            elif (w.phase is Phase.RETIRING and w.retired_at is not None
                  and now - w.retired_at > self._drain_allowance(w)):
                w.kill_sent = True
                allowance = self._drain_allowance(w)
                what = (f"the graceful timeout of {allowance:g} s" if allowance ==
                        c.graceful_timeout_s else f"the shutdown delay and graceful timeout "
                        f"({c.shutdown_delay_s:g} s + {c.graceful_timeout_s:g} s)")
                actions += [Log("warning", f"{w.name} still busy after {what}; killing it"),
                            Kill(w.pid, signal.SIGKILL)]
        r = self._reload
        if r and not r.canary_ready:
            for w in self.workers.values():
                if w.generation == r.generation and w.boot_timed_out:
                    return actions + self._abort_reload(
                        r, f"canary {w.name} did not boot within {c.boot_timeout_s:g} s", now)
        return actions

    def _mark_recycles(self, now: float) -> list[Action]:
        if self._reload:
            return []
        c = self.config
        busy = sum(1 for w in self.workers.values() if w.recycle_reason)
        actions: list[Action] = []
        for w in sorted(self.workers.values(), key=lambda w: w.spawned_at):
            if busy >= c.max_recycling:
                break
            if w.phase is not Phase.READY or w.recycle_reason:
                continue
            reason = cause = None
            if w.max_requests and w.requests >= w.max_requests:
                reason, cause = f"served {w.requests} requests (--max-requests)", "max_requests"
            elif c.max_rss_mib and w.rss_strikes >= RSS_STRIKES:
                reason, cause = (f"RSS above {c.max_rss_mib} MiB for {w.rss_strikes} samples "
                                 f"(--max-rss)", "max_rss")
            elif c.max_lifetime_s and now - w.spawned_at >= c.max_lifetime_s:
                reason = f"alive for {now - w.spawned_at:.0f} s (--max-lifetime)"
                cause = "max_lifetime"
            if reason:
                w.recycle_reason, w.retire_cause = reason, cause or ""
                busy += 1
                actions.append(Log("info", f"recycling {w.name}: {reason}"))
        return actions

    def _reconcile(self, now: float) -> list[Action]:
        ready_cur, boot_cur, ready_old, boot_old = self._split()
        actions: list[Action] = []
        # obsolete workers that are not serving yet are useless: stop them
        for w in boot_old:
            actions += self._retire(w, now, "superseded before it was ready", "superseded")
        # spawn towards the target; during a reload only the canary boots first
        r = self._reload
        used = {w.slot for w in ready_cur + boot_cur}
        room = self.target - len(ready_cur) - len(boot_cur)
        if r and not r.canary_ready:
            room = min(room, 1 - len(boot_cur))
        for slot in range(1, self.target + 1):
            if room <= 0:
                break
            if slot in used or self._backoff.get(slot, _Backoff()).not_before > now:
                continue
            actions.append(Spawn(slot, self.generation))
            room -= 1
        # retire obsolete ready workers only while capacity stays at the target
        capacity = len(ready_cur) + len(ready_old)
        for w in sorted(ready_old, key=lambda w: w.spawned_at):
            if capacity - 1 < self.target:
                break
            capacity -= 1
            actions += self._retire(w, now, w.recycle_reason or "old generation",
                                    w.retire_cause or "reload")
        # scaled down: retire surplus current workers, booting ones first
        surplus = len(ready_cur) + len(boot_cur) - self.target
        for w in sorted(boot_cur, key=lambda w: -w.slot)[:max(0, surplus)]:
            actions += self._retire(w, now, "scaled down", "scale")
            surplus -= 1
        if surplus > 0 and len(ready_cur) > self.target:
            for w in sorted(ready_cur, key=lambda w: -w.slot)[:surplus]:
                actions += self._retire(w, now, "scaled down", "scale")
        if r and r.canary_ready and not any(
                w.generation != r.generation for w in self.workers.values()):
            self._reload = None
            took = round(now - r.started_at, 3)
            actions += [Log("info", f"reload: generation {r.generation} is serving "
                                    f"({took:.2f} s)", "reload_finished",
                            (("generation", r.generation), ("duration_s", took))),
                        ReloadDone(r.generation)]
        return actions

    def _retire(self, w: WorkerRecord, now: float, why: str, cause: str) -> list[Action]:
        sig = self._retire_signal(w)
        if sig == signal.SIGTERM and w.phase is Phase.READY:
            w.drain_allowance_s = self._stop_allowance()  # it honours --shutdown-delay
        w.phase, w.retired_at = Phase.RETIRING, now
        w.recycle_reason = w.recycle_reason or why
        w.retire_cause = w.retire_cause or cause
        return [_event("info", f"retiring {w.name}: {why}", "retired", w, reason=w.retire_cause),
                Kill(w.pid, sig)]

    @staticmethod
    def _retire_signal(w: WorkerRecord) -> signal.Signals:
        """SIGUSR2 tells a worker it is retiring (WebSockets hear 1012, no shutdown
        delay); a ready worker of this master has its handler, installed before READY.
        A booting one may still ignore SIGUSR2 (and has no WebSockets), and an adopted
        generation 0 may come from an older arbiter whose workers ignore it: SIGTERM."""
        if w.phase is Phase.READY and w.generation >= 1:
            return signal.SIGUSR2
        return signal.SIGTERM

    def _stop_allowance(self) -> float:
        return self.config.shutdown_delay_s + self.config.graceful_timeout_s

    def _drain_allowance(self, w: WorkerRecord) -> float:
        if w.drain_allowance_s is not None:
            return w.drain_allowance_s
        return self.config.graceful_timeout_s

    def _abort_reload(self, r: _Reload, why: str, now: float) -> list[Action]:
        self._reload = None
        self.generation = r.previous
        actions: list[Action] = [
            Log("error", f"reload aborted: {why}; generation {r.previous} keeps serving",
                "reload_aborted", (("generation", r.generation), ("reason", why))),
            ReloadFailed(r.generation, why)]
        for w in list(self.workers.values()):
            if w.generation == r.generation and w.phase is not Phase.RETIRING:
                actions += self._retire(w, now, "reload aborted", "reload_aborted")
        return actions

    def _was_stable(self, w: WorkerRecord, now: float) -> bool:
        """Not part of a crash loop: it served a request, or stayed up long enough."""
        return w.served or (w.ready_at is not None and now - w.ready_at >= STABLE_AFTER_S)

    def _bump_backoff(self, slot: int, now: float, stable: bool) -> float:
        b = self._backoff.setdefault(slot, _Backoff())
        b.streak = 0 if stable else b.streak + 1
        delay = 0.0 if b.streak <= 1 else min(0.5 * 2 ** (b.streak - 2), MAX_BACKOFF_S)
        b.not_before = now + delay
        return delay

    def pids(self) -> Iterable[int]:
        return list(self.workers)
