"""The master's policy with a fake clock: events in, actions out. No processes."""

from __future__ import annotations

import random
import signal

from arbiter.heartbeat import Frame, Kind
from arbiter.policy import (
    ABORT_GRACE_S, ExitStatus, Halt, Kill, PolicyConfig, ReloadDone, ReloadFailed, Spawn,
    Supervisor,
)


class Table:
    """Drives a Supervisor like the master would, with fake pids and a fake clock."""

    def __init__(self, **config: object) -> None:
        self.now = 1000.0
        self.sup = Supervisor(PolicyConfig(**{"workers": 2, **config}), self.now,
                              random.Random(7))
        self.next_pid = 100
        self.actions: list[object] = []

    def run(self, actions: list[object]) -> list[object]:
        self.actions += actions
        for action in actions:
            if isinstance(action, Spawn):
                self.next_pid += 1
                self.sup.worker_spawned(self.next_pid, action.slot, action.generation, self.now)
        return actions

    def tick(self, advance: float = 0.0) -> list[object]:
        self.now += advance
        self.sup.next_deadline(self.now)
        return self.run(self.sup.tick(self.now))

    def ready(self, pid: int) -> None:
        self.run(self.sup.frame(pid, Frame(Kind.READY, 0, 0), self.now))

    def beat(self, pid: int, requests: int = 0) -> None:
        self.run(self.sup.frame(pid, Frame(Kind.TICK, requests, 0), self.now))

    def exit(self, pid: int, code: int | None = 0, sig: int | None = None) -> list[object]:
        status = ExitStatus(sig=sig) if sig else ExitStatus(code=code)
        return self.run(self.sup.worker_exited(pid, status, self.now))

    def pids(self) -> list[int]:
        return sorted(self.sup.workers)

    def boot_all(self) -> list[int]:
        self.tick()
        for pid in self.pids():
            self.ready(pid)
        return self.pids()


def kills(actions: list[object]) -> list[tuple[int, int]]:
    return [(a.pid, a.sig) for a in actions if isinstance(a, Kill)]


def test_spawns_to_target_once() -> None:
    t = Table(workers=3)
    spawns = [a for a in t.tick() if isinstance(a, Spawn)]
    assert [s.slot for s in spawns] == [1, 2, 3]
    assert not [a for a in t.tick(0.1) if isinstance(a, Spawn)]


def test_first_generation_import_error_halts_with_4() -> None:
    t = Table()
    t.tick()
    actions = t.exit(t.pids()[0], code=4)
    assert any(isinstance(a, Kill) and a.sig == signal.SIGQUIT for a in actions)
    t.exit(t.pids()[0], code=4)
    assert Halt(4) in t.tick()


def test_boot_timeout_is_separate_from_loop_timeout() -> None:
    t = Table(timeout_s=5, boot_timeout_s=30)
    t.tick()
    assert not kills(t.tick(20))  # slow boot is fine under --boot-timeout
    ready, booting = t.pids()
    t.ready(ready)
    t.now += 11
    t.beat(ready)  # the ready one keeps beating; the booting one never finishes
    assert kills(t.tick()) == [(booting, signal.SIGKILL)]


def test_silent_ready_worker_gets_sigabrt_then_sigkill() -> None:
    t = Table(timeout_s=5)
    a, b = t.boot_all()
    t.now += 6
    t.beat(b)
    assert kills(t.tick()) == [(a, signal.SIGABRT)]
    assert kills(t.tick(ABORT_GRACE_S + 0.1)) == [(a, signal.SIGKILL)]


def test_master_suspension_kills_nobody() -> None:
    t = Table(timeout_s=5)
    t.boot_all()
    t.sup.next_deadline(t.now)
    t.now += 60  # SIGSTOP'd master resumes
    assert not kills(t.run(t.sup.tick(t.now)))


def test_reload_is_readiness_gated_and_canary_first() -> None:
    t = Table(workers=2)
    old = t.boot_all()
    actions = t.run(t.sup.request_reload(t.now))
    assert [a.slot for a in actions if isinstance(a, Spawn)] == [1]  # the canary alone
    canary = t.pids()[-1]
    assert not kills(actions)
    t.ready(canary)
    actions = t.tick()
    assert len([a for a in actions if isinstance(a, Spawn)]) == 1
    assert kills(actions) == [(old[0], signal.SIGTERM)]  # one old retired: capacity kept
    t.ready(t.pids()[-1])
    assert kills(t.tick()) == [(old[1], signal.SIGTERM)]
    t.exit(old[0])
    t.exit(old[1])
    assert any(isinstance(a, ReloadDone) for a in t.tick())


def test_failed_canary_keeps_the_old_generation() -> None:
    t = Table(workers=2)
    old = t.boot_all()
    t.run(t.sup.request_reload(t.now))
    canary = t.pids()[-1]
    actions = t.exit(canary, code=4)
    assert any(isinstance(a, ReloadFailed) for a in actions)
    assert not kills(t.tick(1))
    assert t.pids() == old and not t.sup.reloading


def test_max_requests_recycles_one_at_a_time() -> None:
    t = Table(workers=3, max_requests=10, max_recycling=1)
    pids = t.boot_all()
    for pid in pids:
        t.beat(pid, requests=50)
    t.tick()
    marked = [w for w in t.sup.workers.values() if w.recycle_reason]
    assert len(marked) == 1
    assert not kills(t.actions)  # not retired before its replacement is ready


def test_jitter_spreads_limits() -> None:
    t = Table(workers=4, max_requests=100, max_requests_jitter=50)
    t.tick()
    limits = {w.max_requests for w in t.sup.workers.values()}
    assert all(100 <= x <= 150 for x in limits) and len(limits) > 1


def test_crash_backoff_grows() -> None:
    t = Table(workers=1)
    t.boot_all()
    delays = []
    for _ in range(4):
        pid = t.pids()[0]
        t.exit(pid, sig=signal.SIGKILL)
        start = t.now
        while not [a for a in t.tick(0.05) if isinstance(a, Spawn)]:
            pass
        delays.append(round(t.now - start, 1))
        t.ready(t.pids()[0])
    assert delays[0] < 0.2 and delays[-1] > delays[1] >= 0.5


def test_scale_down_never_below_one_and_graceful_stop_escalates() -> None:
    t = Table(workers=1)
    (pid,) = t.boot_all()
    t.run(t.sup.scale(-1, t.now))
    assert t.sup.target == 1
    assert kills(t.run(t.sup.stop(True, t.now))) == [(pid, signal.SIGTERM)]
    assert kills(t.run(t.sup.stop(False, t.now))) == [(pid, signal.SIGQUIT)]
    assert kills(t.tick(10)) == [(pid, signal.SIGKILL)]
    t.exit(pid, sig=signal.SIGKILL)
    assert Halt(0) in t.tick()
