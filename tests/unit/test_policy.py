"""The master's policy with a fake clock: events in, actions out. No processes."""

from __future__ import annotations

import random
import signal

import pytest

from arbiter.heartbeat import Frame, Kind
from arbiter.policy import (
    ABORT_GRACE_S, STABLE_AFTER_S, ExitStatus, Halt, Kill, Log, Phase, PolicyConfig, ReloadDone,
    ReloadFailed, Spawn, Supervisor,
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
                self.actions += self.sup.worker_spawned(self.next_pid, action.slot,
                                                        action.generation, self.now)
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
    # one old retired (SIGUSR2: a ready worker retiring, not a stop): capacity kept
    assert kills(actions) == [(old[0], signal.SIGUSR2)]
    t.ready(t.pids()[-1])
    assert kills(t.tick()) == [(old[1], signal.SIGUSR2)]
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


def _restart_delay(t: Table, pid: int, **exit_kw: object) -> float:
    """Exit ``pid``; tick in 50 ms steps until its slot is spawned again."""
    t.exit(pid, **exit_kw)
    start = t.now
    while not [a for a in t.tick(0.05) if isinstance(a, Spawn)]:
        pass
    return round(t.now - start, 2)


@pytest.mark.parametrize("how", ["served-frame", "tick-requests"])
def test_a_worker_that_served_a_request_is_replaced_at_once_every_time(how: str) -> None:
    t = Table(workers=1)
    t.boot_all()
    delays = []
    for _ in range(8):  # eight kill -9s in a row, each worker up only 0.1 s
        pid = t.pids()[0]
        t.ready(pid)
        t.tick(0.1)
        if how == "served-frame":
            t.run(t.sup.frame(pid, Frame(Kind.SERVED, 1, 1), t.now))
        else:
            t.beat(pid, requests=3)
        delays.append(_restart_delay(t, pid, sig=signal.SIGKILL))
    assert max(delays) <= 0.05, delays
    assert not any("keeps dying" in m for m in logs(t.actions))


@pytest.mark.parametrize("phase", ["booting", "ready-never-served"])
def test_a_worker_that_dies_before_its_first_response_backs_off(phase: str) -> None:
    t = Table(workers=1)
    t.boot_all()
    delays = []
    for _ in range(5):
        pid = t.pids()[0]
        if phase == "ready-never-served":
            t.ready(pid)
            t.beat(pid, requests=0)
        delays.append(_restart_delay(t, pid, code=1))
    assert delays[0] <= 0.05 and delays[1] >= 0.5, delays
    assert delays[2] >= 1.0 and delays[3] >= 2.0 and delays[4] >= 4.0, delays


def test_a_served_worker_resets_the_crash_streak_of_its_slot() -> None:
    t = Table(workers=1)
    t.boot_all()
    for _ in range(3):  # a crash loop builds a streak: 0, 0.5, 1 s
        _restart_delay(t, t.pids()[0], code=1)
    pid = t.pids()[0]
    t.ready(pid)
    t.run(t.sup.frame(pid, Frame(Kind.SERVED, 1, 0), t.now))
    assert _restart_delay(t, pid, sig=signal.SIGKILL) <= 0.05  # served: at once
    # and the streak starts over: the next crash is again restarted at once
    assert _restart_delay(t, t.pids()[0], code=1) <= 0.05


def test_a_worker_ready_past_stable_after_resets_the_crash_streak() -> None:
    t = Table(workers=1)
    t.boot_all()
    for _ in range(3):
        _restart_delay(t, t.pids()[0], code=1)
    pid = t.pids()[0]
    t.ready(pid)
    t.tick(STABLE_AFTER_S + 0.1)  # never served, but up long enough
    assert _restart_delay(t, pid, code=1) <= 0.05
    assert _restart_delay(t, t.pids()[0], code=1) <= 0.05


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


def logs(actions: list[object]) -> list[str]:
    return [a.message for a in actions if isinstance(a, Log)]


def test_lifetime_past_while_recycling_is_full_does_not_spin() -> None:
    t = Table(workers=2, max_lifetime_s=10, max_recycling=1)
    first = t.boot_all()
    actions = t.tick(11)
    assert len([m for m in logs(actions) if "--max-lifetime" in m]) == 1  # one at a time
    # the other is past its lifetime too, but waits for room: no deadline in the past
    assert t.sup.next_deadline(t.now) > t.now + 1
    replacement = t.pids()[-1]
    t.ready(replacement)
    retired = kills(t.tick())
    assert len(retired) == 1 and retired[0][0] in first  # retired only after the replacement
    t.exit(retired[0][0])
    assert any("--max-lifetime" in m for m in logs(t.tick()))  # room again: the second one


def test_lifetime_deadline_wakes_the_loop() -> None:
    t = Table(workers=1, max_lifetime_s=10)
    t.boot_all()
    assert t.sup.next_deadline(t.now) == t.now + 5.0  # IDLE_WAKEUP_S, sooner than lifetime
    t.now += 8
    assert t.sup.next_deadline(t.now) == pytest.approx(t.now + 2)


def test_rss_needs_consecutive_samples_over_the_limit() -> None:
    t = Table(workers=1, max_rss_mib=100)
    (pid,) = t.boot_all()
    for rss in (150, 150, 50, 150, 150):  # a dip resets the count
        t.sup.rss_sample(pid, rss * 1024 * 1024)
    assert not any("--max-rss" in m for m in logs(t.tick()))
    t.sup.rss_sample(pid, 150 * 1024 * 1024)
    marked = logs(t.tick())
    assert any("RSS above 100 MiB for 3 samples (--max-rss)" in m for m in marked)
    assert not kills(t.actions)  # readiness-gated: a replacement boots first
    t.ready(t.pids()[-1])
    assert kills(t.tick()) == [(pid, signal.SIGUSR2)]


def test_sighup_during_a_reload_supersedes_the_booting_canary() -> None:
    t = Table(workers=2)
    old = t.boot_all()
    t.run(t.sup.request_reload(t.now))
    canary2 = t.pids()[-1]
    actions = t.run(t.sup.request_reload(t.now))
    assert any("restarting generation 2's reload with the newest config" in m
               for m in logs(actions))
    assert kills(actions) == [(canary2, signal.SIGTERM)]  # superseded before it was ready
    assert [(a.slot, a.generation) for a in actions if isinstance(a, Spawn)] == [(1, 3)]
    t.exit(canary2)
    for _ in range(2):
        t.ready(t.pids()[-1])
        t.tick()
    for pid in old:
        t.exit(pid)
    assert ReloadDone(3) in t.tick()
    assert {w.generation for w in t.sup.workers.values()} == {3}


def test_a_worker_retired_while_booting_is_bounded_by_boot_and_graceful_timeouts() -> None:
    t = Table(workers=1, timeout_s=5, boot_timeout_s=60, graceful_timeout_s=20)
    t.boot_all()
    t.run(t.sup.request_reload(t.now))
    canary2 = t.pids()[-1]
    t.run(t.sup.request_reload(t.now))  # canary2 retired while still booting
    canary3 = t.pids()[-1]
    t.ready(canary3)
    for _ in range(3):  # the others beat; canary2 never does, being mid-boot
        t.now += 6
        for pid in t.pids():
            if pid != canary2:
                t.beat(pid)
        assert (canary2, signal.SIGABRT) not in kills(t.tick())  # no --timeout: not ready yet
    assert (canary2, signal.SIGKILL) in kills(t.tick(3))  # past --graceful-timeout


def test_canary_that_never_boots_aborts_the_reload() -> None:
    t = Table(workers=2, boot_timeout_s=30)
    old = t.boot_all()
    t.run(t.sup.request_reload(t.now))
    canary = t.pids()[-1]
    for pid in old:
        t.beat(pid)
    actions = t.tick(31)
    assert (canary, signal.SIGKILL) in kills(actions)
    assert any(isinstance(a, ReloadFailed) for a in actions)
    assert not t.sup.reloading and t.sup.generation == 1


def test_exit_descriptions_name_code_signal_and_possible_oom() -> None:
    assert ExitStatus(code=7).describe() == "exited with code 7"
    assert ExitStatus(code=4).describe() == "exited with code 4 (app import error)"
    assert ExitStatus(sig=signal.SIGSEGV).describe() == "was killed by SIGSEGV"
    assert "perhaps out of memory" in ExitStatus(sig=signal.SIGKILL).describe()
    assert "from the master" in ExitStatus(sig=signal.SIGKILL).describe(killed_by_master=True)


def test_adopted_workers_keep_their_phase_and_none_is_killed_on_the_way() -> None:
    """After a re-exec during a reload: the ready ones serve until generation 1 is
    ready, the booting canary is retired gracefully, the retiring one drains."""
    t = Table(workers=2, graceful_timeout_s=30)
    t.sup.adopt(50, 1, t.now, Phase.READY)
    t.sup.adopt(51, 2, t.now, Phase.READY)
    t.sup.adopt(52, 1, t.now, Phase.BOOTING)
    t.sup.adopt(53, 2, t.now, Phase.RETIRING)
    first = t.tick()
    assert kills(first) == [(52, signal.SIGTERM)]  # the canary: gracefully, not SIGKILL
    assert [a.slot for a in first if isinstance(a, Spawn)] == [1]  # generation 1's canary
    t.run(t.sup.frame(52, Frame(Kind.READY, 0, 0), t.now))  # it finishes booting anyway
    assert t.sup.workers[52].phase is Phase.RETIRING
    assert not kills(t.tick(10))
    t.now += 21
    for pid in (50, 51, 52, 53):  # all alive, their loops ticking
        t.beat(pid)
    assert sorted(kills(t.tick())) == [(52, signal.SIGKILL), (53, signal.SIGKILL)]


# ---------------------------------------------------------------- stop vs retire signals


def test_retiring_signals_say_retire_to_ready_workers_and_stop_to_the_rest() -> None:
    """SIGUSR2 (retire: 1012, no shutdown delay) only to a ready worker of this
    master, whose loop handler is installed before READY; SIGTERM to a booting
    one (it may still ignore SIGUSR2) and to adopted generation 0 (an older
    arbiter's worker may ignore SIGUSR2)."""
    t = Table(workers=2)
    t.boot_all()
    t.run(t.sup.request_reload(t.now))
    booting = t.pids()[-1]
    actions = t.run(t.sup.request_reload(t.now))  # supersedes the booting canary
    assert kills(actions) == [(booting, signal.SIGTERM)]
    t2 = Table(workers=1)
    t2.sup.adopt(50, 1, t2.now, Phase.READY)
    t2.tick()
    t2.ready(t2.pids()[-1])
    assert kills(t2.tick()) == [(50, signal.SIGTERM)]  # generation 0
    t3 = Table(workers=2)
    (_, second) = t3.boot_all()
    t3.run(t3.sup.scale(-1, t3.now))
    assert kills(t3.actions) == [(second, signal.SIGUSR2)]  # scale-down retires


def test_a_graceful_stop_waits_shutdown_delay_plus_graceful_timeout() -> None:
    t = Table(workers=1, graceful_timeout_s=10, shutdown_delay_s=5)
    (pid,) = t.boot_all()
    assert kills(t.run(t.sup.stop(True, t.now))) == [(pid, signal.SIGTERM)]
    assert not kills(t.tick(14.5))  # 14.5 s: still inside 5 + 10
    actions = t.tick(1)
    assert kills(actions) == [(pid, signal.SIGKILL)]
    assert any("shutdown delay and graceful timeout (5 s + 10 s)" in m for m in logs(actions))


def test_an_adopted_worker_stopped_with_sigterm_gets_the_shutdown_delay_too() -> None:
    """Retired by SIGTERM, a ready worker serves --shutdown-delay first: the master
    must not kill it at --graceful-timeout; a retire by SIGUSR2 has no delay."""
    t = Table(workers=1, graceful_timeout_s=10, shutdown_delay_s=5)
    t.sup.adopt(50, 1, t.now, Phase.READY)
    t.tick()
    canary = t.pids()[-1]
    t.ready(canary)
    assert kills(t.tick()) == [(50, signal.SIGTERM)]
    for _ in range(3):
        t.now += 4.5
        t.beat(50)
        t.beat(canary)
        assert not kills(t.tick())  # 13.5 s: past graceful, inside delay + graceful
    t.now += 2
    t.beat(canary)
    assert kills(t.tick()) == [(50, signal.SIGKILL)]
    # generation 1 retired by a reload: SIGUSR2, killed at the graceful timeout alone
    t.exit(50)
    t.run(t.sup.request_reload(t.now))
    t.ready(t.pids()[-1])
    assert kills(t.tick()) == [(canary, signal.SIGUSR2)]
    t.now += 10.5
    t.beat(t.pids()[-1])
    assert kills(t.tick()) == [(canary, signal.SIGKILL)]
