"""Lifecycle lines from a real master, in text and in JSON: kill -9, max-requests
recycling, a reload and an aborted reload each leave one line per event naming the
worker's slot, pid and generation; every JSON line parses."""

from __future__ import annotations

import json
import os
import re
import signal

import httpx
import pytest

from tests.conftest import APPS, wait_until

pytestmark = pytest.mark.slow


def _json_lines(text: str) -> list[dict[str, object]]:
    lines = [line for line in text.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line parses, or the test fails


def _run_scenario(arbiter_process, tmp_path, log_format: str):
    app = tmp_path / "flaky.py"
    app.write_text((APPS / "basic.py").read_text())
    server = arbiter_process(["flaky:app", "--workers", "2", "--app-dir", str(tmp_path),
                              "--max-requests", "20", "--log-format", log_format,
                              "--no-access-log"]).wait_ready()
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(server.worker_pids()) == 2 and victim not in server.worker_pids(),
               15, message="the replacement")
    with httpx.Client(timeout=5) as client:  # past --max-requests: recycling
        for _ in range(60):
            assert client.get(server.url + "/").status_code == 200
    server.wait_for_log(r"max.requests", timeout=20)
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload: generation \d+ is serving", timeout=30)
    app.write_text("raise ImportError('deploy is broken')\n")
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload aborted", timeout=30)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(30) == 0
    return server, victim


def test_lifecycle_lines_in_text(arbiter_process, tmp_path) -> None:
    server, victim = _run_scenario(arbiter_process, tmp_path, "text")
    err = server.stderr
    assert "spawned worker 1 (pid " in err and "generation 1)" in err
    assert f"(pid {victim}, generation 1) was killed by SIGKILL" in err
    assert "request(s) served)" in err  # exits say uptime and requests
    assert re.search(r"recycling worker \d \(pid \d+, generation 1\): served \d+ requests "
                     r"\(--max-requests\)", err)
    assert "reload: starting generation 2" in err
    assert "reload: generation 2 is serving (" in err  # with its duration
    assert "reload aborted: canary worker" in err and "deploy is broken" in err


def test_lifecycle_lines_in_json(arbiter_process, tmp_path) -> None:
    server, victim = _run_scenario(arbiter_process, tmp_path, "json")
    records = _json_lines(server.stderr)
    for r in records:
        assert {"time", "level", "pid", "message"} <= set(r), r
    by_event: dict[str, list[dict[str, object]]] = {}
    for r in records:
        if "event" in r:
            by_event.setdefault(str(r["event"]), []).append(r)
            if str(r["event"]) in ("spawned", "ready", "retired", "exited"):
                assert {"worker", "pid", "generation"} <= set(r), r
    killed = [r for r in by_event["exited"] if r["pid"] == victim]
    assert killed and killed[0]["cause"] == "crash" and killed[0]["signal"] == "SIGKILL"
    assert "uptime_s" in killed[0] and "requests" in killed[0]
    assert any(r["reason"] == "max_requests" for r in by_event["retired"])
    assert any(r["reason"] == "reload" for r in by_event["retired"])
    assert by_event["reload_started"][0]["generation"] == 2
    assert isinstance(by_event["reload_finished"][0]["duration_s"], float)
    assert "deploy is broken" in str(by_event["reload_aborted"][0]["reason"])
    assert len(by_event["spawned"]) >= len(by_event["ready"]) >= 5
