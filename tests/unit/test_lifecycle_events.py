"""Lifecycle lines: each policy event names itself and carries its facts; the JSON
log format writes them as one parsable object per line. Fake clock, no processes."""

from __future__ import annotations

import json
import logging
import signal

from arbiter.logs import JsonFormatter
from arbiter.policy import Log
from tests.unit.test_policy import Table


def events(actions: list[object], name: str) -> list[dict[str, object]]:
    return [dict(a.fields) | {"message": a.message} for a in actions
            if isinstance(a, Log) and a.event == name]


def test_spawned_and_ready_name_the_worker_and_its_boot_time() -> None:
    t = Table(workers=1)
    t.tick()
    (spawned,) = events(t.actions, "spawned")
    pid = t.pids()[0]
    assert spawned == {"worker": 1, "pid": pid, "generation": 1,
                       "message": f"spawned worker 1 (pid {pid}, generation 1)"}
    t.now += 0.25
    t.ready(pid)
    (ready,) = events(t.actions, "ready")
    assert ready["boot_s"] == 0.25 and ready["pid"] == pid
    assert "0.25 s to boot" in str(ready["message"])


def test_kill_9_is_an_exit_caused_by_a_crash_with_uptime_and_requests() -> None:
    t = Table(workers=1)
    (pid,) = t.boot_all()
    t.beat(pid, requests=42)
    t.now += 3.5
    t.exit(pid, sig=signal.SIGKILL)
    (exited,) = events(t.actions, "exited")
    assert exited["cause"] == "crash" and exited["signal"] == "SIGKILL"
    assert exited["code"] is None and exited["uptime_s"] == 3.5 and exited["requests"] == 42
    assert "after 3.5 s, 42 request(s) served" in str(exited["message"])


def test_a_timed_out_worker_exits_with_cause_timeout() -> None:
    t = Table(workers=1, timeout_s=5)
    (pid,) = t.boot_all()
    t.tick(6)  # silent past --timeout: SIGABRT
    t.exit(pid, sig=signal.SIGABRT)
    assert events(t.actions, "exited")[0]["cause"] == "timeout"


def test_max_requests_retires_with_its_reason_then_exits_as_retired() -> None:
    t = Table(workers=1, max_requests=10)
    (pid,) = t.boot_all()
    t.beat(pid, requests=10)
    t.tick()
    t.ready(t.pids()[-1])  # the replacement
    t.tick()
    (retired,) = events(t.actions, "retired")
    assert retired["reason"] == "max_requests" and retired["pid"] == pid
    t.exit(pid, code=0)
    (exited,) = events(t.actions, "exited")
    assert exited["cause"] == "retired" and exited["code"] == 0


def test_a_reload_starts_retires_for_reload_and_finishes_with_its_duration() -> None:
    t = Table(workers=1)
    (old,) = t.boot_all()
    t.run(t.sup.request_reload(t.now))
    assert events(t.actions, "reload_started") == [
        {"generation": 2, "message": "reload: starting generation 2"}]
    t.now += 1.5
    t.ready(t.pids()[-1])
    t.tick()
    assert events(t.actions, "retired")[0]["reason"] == "reload"
    t.exit(old, code=0)
    t.tick()
    (finished,) = events(t.actions, "reload_finished")
    assert finished["generation"] == 2 and finished["duration_s"] == 1.5


def test_an_aborted_reload_says_why() -> None:
    t = Table(workers=1)
    t.boot_all()
    t.run(t.sup.request_reload(t.now))
    t.exit(t.pids()[-1], code=4)  # the canary cannot import the app
    (aborted,) = events(t.actions, "reload_aborted")
    assert aborted["generation"] == 2 and "app import error" in str(aborted["reason"])


def test_scale_down_retires_with_reason_scale() -> None:
    t = Table(workers=2)
    t.boot_all()
    t.run(t.sup.scale(-1, t.now))
    assert [e["reason"] for e in events(t.actions, "retired")] == ["scale"]


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("arbiter.error", logging.WARNING, __file__, 1, "%s",
                               (message,), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_time_level_pid_message_and_the_event_fields() -> None:
    line = JsonFormatter().format(_record(
        "worker 1 (pid 7, generation 2) was killed\nby SIGKILL", event="exited",
        fields=(("worker", 1), ("pid", 7), ("generation", 2), ("code", None))))
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["level"] == "warning" and parsed["message"].endswith("by SIGKILL")
    assert parsed["event"] == "exited" and parsed["worker"] == 1 and parsed["generation"] == 2
    assert parsed["pid"] == 7  # the worker's pid, not the master's, for a worker event
    assert "code" not in parsed  # facts that do not apply are left out
    assert parsed["time"].endswith("Z") and parsed["time"][4] == "-"


def test_plain_json_lines_have_the_process_pid_and_no_event() -> None:
    parsed = json.loads(JsonFormatter().format(_record("Listening at: http://x")))
    assert set(parsed) == {"time", "level", "pid", "message"}
