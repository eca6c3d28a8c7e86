"""The systemd cores with a fake clock: watchdog pings, boot extensions, STATUS lines.

The cores read a real ``Supervisor`` (the policy), driven with frames and a clock
the test owns; no process, no socket, except the Notifier test at the end, which
sends to a datagram socket bound in tmp_path.
"""

from __future__ import annotations

import os
import socket

import pytest

from arbiter import systemd
from arbiter.heartbeat import Frame, Kind
from arbiter.policy import ExitStatus, PolicyConfig, Spawn, Supervisor
from arbiter.systemd import (
    BootExtender, RequestTally, Status, StatusBoard, Watchdog, describe, fresh_window_s,
    take_watchdog, watchdog_timeout_s,
)

PID = 4242


def supervisor(workers: int = 2, timeout_s: float = 60.0, boot_timeout_s: float = 60.0,
               now: float = 0.0) -> Supervisor:
    """A policy whose first generation has been spawned (pids 100, 101, ...) at ``now``."""
    sup = Supervisor(PolicyConfig(workers=workers, timeout_s=timeout_s,
                                  boot_timeout_s=boot_timeout_s), now)
    for i, action in enumerate(a for a in sup.tick(now) if isinstance(a, Spawn)):
        sup.worker_spawned(100 + i, action.slot, action.generation, now)
    return sup


def ready(sup: Supervisor, pid: int, now: float, requests: int = 0) -> None:
    sup.frame(pid, Frame(Kind.READY, requests, 0), now)


def tick(sup: Supervisor, pid: int, now: float, requests: int = 0) -> None:
    sup.frame(pid, Frame(Kind.TICK, requests, 0), now)


# ------------------------------------------------------------------ environment


@pytest.mark.parametrize("environ, expected", [
    ({}, None),
    ({"WATCHDOG_USEC": "1000000"}, 1.0),  # no WATCHDOG_PID: meant for us
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(PID)}, 30.0),
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}, None),  # another process's
    ({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "x"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "1s"}, None),
    ({"WATCHDOG_PID": str(PID)}, None),
])
def test_watchdog_timeout_from_the_environment(environ: dict[str, str],
                                               expected: float | None) -> None:
    assert watchdog_timeout_s(environ, PID) == expected


@pytest.mark.parametrize("owner", [str(PID), "1"])
def test_the_watchdog_variables_are_taken_out_whoever_they_are_for(owner: str) -> None:
    environ = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": owner, "KEEP": "1"}
    assert take_watchdog(environ, PID) == (2.0 if owner == str(PID) else None)
    assert environ == {"KEEP": "1"}  # workers fork from this environment


@pytest.mark.parametrize("timeout_s, window_s", [(60, 3.0), (30, 3.0), (5, 3.0), (2, 1.2),
                                                 (1, 0.6), (0.5, 0.6), (0, 3.0)])
def test_fresh_means_three_tick_intervals(timeout_s: float, window_s: float) -> None:
    assert fresh_window_s(timeout_s) == pytest.approx(window_s)


# ------------------------------------------------------------------ watchdog


def test_no_ping_until_a_worker_is_ready_then_one_every_half_timeout() -> None:
    sup = supervisor()
    dog = Watchdog(timeout_s=2.0, now=0.0)
    assert not dog.poll(sup, 0.0)  # booting workers earn nothing
    assert dog.deadline(sup, 0.0) is None  # nothing to wake for: a READY frame wakes the loop
    ready(sup, 100, 0.5)
    assert dog.poll(sup, 0.5)
    assert dog.deadline(sup, 0.75) == 1.5
    sent = []
    for quarter in range(3, 24):  # a pass of the master loop every 0.25 s
        now = quarter / 4
        tick(sup, 100, now)
        if dog.poll(sup, now):
            sent.append(now)
    assert sent == [1.5, 2.5, 3.5, 4.5, 5.5]


def test_pings_stop_when_every_ready_worker_is_silent_and_resume_with_a_frame() -> None:
    sup = supervisor(timeout_s=60)  # TICK every 1 s: fresh within 3 s
    dog = Watchdog(timeout_s=1.0, now=0.0)
    ready(sup, 100, 0.0)
    ready(sup, 101, 0.0)
    assert dog.poll(sup, 0.0)
    assert dog.poll(sup, 2.0)  # 2 s of silence: still fresh
    assert dog.poll(sup, 3.0)
    assert not dog.poll(sup, 3.6)  # both silent for 3.6 s: no ping ...
    assert dog.deadline(sup, 3.6) is None  # ... and no timed wake-up for it (no busy loop)
    assert not dog.poll(sup, 20.0)
    tick(sup, 101, 20.5)  # one worker is back
    assert dog.deadline(sup, 20.5) == 20.5
    assert dog.poll(sup, 20.5)  # the owed ping goes out at once
    assert not dog.poll(sup, 20.6)
    assert dog.poll(sup, 21.0)


def test_a_fresh_worker_that_is_not_ready_earns_no_ping() -> None:
    sup = supervisor(workers=2)
    dog = Watchdog(timeout_s=1.0, now=0.0)
    ready(sup, 100, 0.0)
    sup.frame(100, Frame(Kind.DRAINING, 0, 0), 0.1)  # draining: not serving new clients
    tick(sup, 101, 0.2)  # booting, heartbeat fresh
    assert not dog.poll(sup, 0.2)


def test_a_gone_worker_earns_no_ping() -> None:
    sup = supervisor(workers=1)
    dog = Watchdog(timeout_s=1.0, now=0.0)
    ready(sup, 100, 0.0)
    assert dog.poll(sup, 0.0)
    sup.worker_exited(100, ExitStatus(sig=9), 0.2)
    assert not dog.poll(sup, 0.5)


def test_the_fresh_window_follows_the_timeout() -> None:
    sup = supervisor(timeout_s=1.0)  # TICK every 0.2 s: fresh within 0.6 s
    dog = Watchdog(timeout_s=0.4, now=0.0)
    ready(sup, 100, 0.0)
    assert dog.poll(sup, 0.0)
    assert dog.poll(sup, 0.5)
    assert not dog.poll(sup, 0.7)


def test_while_stopping_the_master_loop_alone_earns_the_ping() -> None:
    sup = supervisor(workers=1)
    dog = Watchdog(timeout_s=1.0, now=0.0)
    ready(sup, 100, 0.0)
    sup.stop(graceful=True, now=1.0)
    sup.frame(100, Frame(Kind.DRAINING, 0, 0), 1.0)
    assert dog.poll(sup, 1.0)
    assert dog.poll(sup, 9.0)  # draining and silent: --graceful-timeout deals with it


def test_the_suspended_master_refresh_counts_as_fresh() -> None:
    sup = supervisor(workers=1, timeout_s=60)
    dog = Watchdog(timeout_s=1.0, now=0.0)
    ready(sup, 100, 0.0)
    sup.next_deadline(0.0)
    sup.tick(100.0)  # the master woke 100 s late: every worker gets a fresh heartbeat
    assert dog.poll(sup, 100.0)


# ------------------------------------------------------------------ boot extension


def test_extends_at_once_and_every_few_seconds_until_ready() -> None:
    sup = supervisor(workers=1, boot_timeout_s=600)
    ext = BootExtender(now=0.0)
    assert ext.poll(sup, True, 0.0) == systemd.EXTEND_EVERY_S + systemd.EXTEND_MARGIN_S
    assert ext.poll(sup, True, 1.0) is None
    assert ext.deadline(sup, True, 1.0) == systemd.EXTEND_EVERY_S
    assert ext.poll(sup, True, 5.0) == 10.0
    ready(sup, 100, 7.0)
    assert ext.poll(sup, False, 10.0) is None  # READY=1 sent: systemd's start is over
    assert ext.deadline(sup, False, 10.0) is None


def test_extensions_stop_at_the_boot_timeout() -> None:
    sup = supervisor(workers=2, boot_timeout_s=8.0)
    ext = BootExtender(now=0.0)
    assert ext.poll(sup, True, 0.0) == 10.0
    assert ext.poll(sup, True, 5.0) == pytest.approx(3.0 + systemd.EXTEND_MARGIN_S)
    assert ext.poll(sup, True, 10.0) == pytest.approx(systemd.EXTEND_MARGIN_S)  # past it


def test_the_latest_booting_worker_bounds_the_extension() -> None:
    sup = supervisor(workers=2, boot_timeout_s=8.0)
    ready(sup, 100, 1.0)
    sup.worker_exited(100, ExitStatus(sig=9), 4.0)
    respawn = next(a for a in sup.tick(4.0) if isinstance(a, Spawn))
    sup.worker_spawned(200, respawn.slot, respawn.generation, 4.0)
    ext = BootExtender(now=0.0)
    ext.next_send = 9.0
    # worker 2's own deadline (0 + 8) has passed; the respawn may boot until 4 + 8
    assert ext.poll(sup, True, 9.0) == pytest.approx(4.0 + 8.0 - 9.0 + systemd.EXTEND_MARGIN_S)


def test_no_extension_without_a_booting_worker_or_while_stopping() -> None:
    sup = supervisor(workers=1)
    ext = BootExtender(now=0.0)
    sup.worker_exited(100, ExitStatus(code=1), 0.5)  # in crash backoff, say
    assert ext.poll(sup, True, 1.0) is None
    assert ext.deadline(sup, True, 1.0) is None  # the respawn comes with a policy deadline
    sup = supervisor(workers=1)
    sup.stop(graceful=True, now=0.0)
    assert ext.poll(sup, True, 1.0) is None


# ------------------------------------------------------------------ STATUS and title


def test_status_words_for_each_state() -> None:
    sup = supervisor(workers=2)
    assert describe(sup, False, 0).text == "starting: 0/2 workers ready, generation 1"
    ready(sup, 100, 0.1)
    s = describe(sup, False, 0)
    assert (s.text, s.title) == ("starting: 1/2 workers ready, generation 1",
                                 "starting, 1/2 ready, gen 1")
    ready(sup, 101, 0.2)
    s = describe(sup, True, 12034)
    assert (s.text, s.title) == ("2/2 workers ready, generation 1, 12034 requests",
                                 "2/2 ready, gen 1")
    sup.request_reload(1.0)
    s = describe(sup, True, 12034)
    assert (s.text, s.title) == (
        "reloading to generation 2: 0/2 new workers ready, 2 old serving, 12034 requests",
        "reloading, 0/2 ready, gen 2")
    s = describe(sup, True, 12034, note="last reload failed: canary did not boot")
    assert s.text == ("reloading to generation 2: 0/2 new workers ready, 2 old serving, "
                      "12034 requests; last reload failed: canary did not boot")
    assert "failed" not in s.title
    sup.stop(graceful=True, now=2.0)
    s = describe(sup, True, 12040)
    assert (s.text, s.title) == ("stopping, 2 workers left, 12040 requests", "stopping, 2 left")
    sup.worker_exited(100, ExitStatus(code=0), 2.5)
    assert describe(sup, True, 12040).text == "stopping, 1 worker left, 12040 requests"


def status(headline: str, requests: int | None, note: str = "") -> Status:
    return Status(headline, requests, note, headline)


def test_a_new_state_is_sent_at_once_a_new_count_every_few_seconds() -> None:
    board = StatusBoard(refresh_s=5.0)
    assert board.poll(status("2/2", 0), 0.0)
    assert not board.poll(status("2/2", 0), 0.1)  # unchanged: never resent
    assert board.deadline(status("2/2", 0), 0.1) is None
    assert not board.poll(status("2/2", 10), 1.0)  # the count alone: waits
    assert board.deadline(status("2/2", 10), 1.0) == 5.0
    assert board.poll(status("2/2", 10), 5.0)
    assert board.poll(status("reloading", 11), 5.5)  # a new state: at once
    assert board.poll(status("reloading", 11, note="last reload failed: x"), 5.6)
    assert not board.poll(status("reloading", 11, note="last reload failed: x"), 6.0)


def test_the_request_count_survives_workers_that_exit() -> None:
    sup = supervisor(workers=2)
    tally = RequestTally()
    ready(sup, 100, 0.0)
    ready(sup, 101, 0.0)
    tick(sup, 100, 1.0, requests=30)
    tick(sup, 101, 1.0, requests=12)
    assert tally.total(sup.workers) == 42
    sup.worker_exited(100, ExitStatus(sig=9), 1.5)
    assert tally.total(sup.workers) == 42
    respawn = next(a for a in sup.tick(1.5) if isinstance(a, Spawn))
    sup.worker_spawned(102, respawn.slot, respawn.generation, 1.5)
    ready(sup, 102, 2.0, requests=0)
    tick(sup, 101, 2.0, requests=20)
    tick(sup, 102, 2.0, requests=5)
    assert tally.total(sup.workers) == 55


# ------------------------------------------------------------------ the shell


def test_the_notifier_sends_what_is_due_and_keeps_the_watchdog_for_a_reexec(
        tmp_path, monkeypatch) -> None:
    setproctitle = pytest.importorskip("setproctitle")
    path = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    environ = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(PID)}
    title = setproctitle.getproctitle()

    def received() -> list[str]:
        out = []
        while True:
            try:
                out.append(receiver.recv(4096).decode())
            except BlockingIOError:
                return out

    try:
        notifier = systemd.Notifier(environ, PID, now=0.0)
        assert "WATCHDOG_USEC" not in environ and "WATCHDOG_PID" not in environ
        assert notifier.exec_environ(PID) == {"WATCHDOG_USEC": "1000000",
                                              "WATCHDOG_PID": str(PID)}
        sup = supervisor(workers=1)
        notifier.poll(sup, False, "main:app", 0.0)
        assert received() == ["EXTEND_TIMEOUT_USEC=10000000",
                              "STATUS=starting: 0/1 workers ready, generation 1"]
        assert setproctitle.getproctitle() == "arbiter: master [main:app] starting, 0/1 ready, gen 1"
        ready(sup, 100, 0.2)
        notifier.poll(sup, True, "main:app", 0.2)
        assert received() == ["WATCHDOG=1", "STATUS=1/1 workers ready, generation 1, 0 requests"]
        assert setproctitle.getproctitle() == "arbiter: master [main:app] 1/1 ready, gen 1"
        assert notifier.deadline(sup, True, 0.3) == pytest.approx(0.7)
        notifier.poll(sup, True, "main:app", 0.3)
        assert received() == []
    finally:
        setproctitle.setproctitle(title)
        receiver.close()


def test_without_notify_socket_only_the_title_is_kept() -> None:
    environ = {"WATCHDOG_USEC": "1000000"}
    notifier = systemd.Notifier(environ, os.getpid(), now=0.0)
    assert environ == {}
    assert notifier.watchdog is None and notifier.extender is None
    assert notifier.deadline(supervisor(), False, 0.0) is None
