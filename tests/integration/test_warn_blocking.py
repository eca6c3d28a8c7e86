"""--warn-blocking against the real server: one warning per stall, naming the app's line."""

from __future__ import annotations

import re
import signal

import httpx
import pytest

from tests.conftest import APPS

pytestmark = pytest.mark.slow

APP_FILE = APPS / "blocking.py"
BLOCKING_LINE = next(n for n, text in enumerate(APP_FILE.read_text().splitlines(), 1)
                     if text.lstrip().startswith("time.sleep(") and "# THE BLOCKING LINE" in text)  # deliberate (noqa: sleep): a string
WARNING = re.compile(r"\[WARNING\] worker (\d+) \(pid (\d+)\): the event loop has been blocked "
                     r"for ([\d.]+) s so far")
NOTE = re.compile(r"\[WARNING\] worker \d+ \(pid \d+\): the event loop is blocked again .*"
                  r"further ones are suppressed")


def stop_and_collect(server) -> str:
    """Stop gracefully; the master's exit line comes after everything the worker wrote."""
    server.signal(signal.SIGTERM)
    server.wait_for_log(r"worker 1 \(pid \d+, generation 1\) exited with code 0")
    assert server.wait_exit() == 0
    return server.stderr


def get(server, path: str, timeout: float = 30) -> None:
    response = httpx.get(server.url + path, timeout=timeout)
    assert response.status_code == 200 and response.text == "ok"


def test_a_blocking_handler_logs_one_warning_with_its_file_and_line(arbiter_process) -> None:
    server = arbiter_process(["blocking:app"]).wait_ready()  # the default, 0.5 s
    worker_pid = server.wait_for_log(r"worker 1 \(pid (\d+), generation 1\) is ready").group(1)
    get(server, "/block?s=1")
    get(server, "/")
    log = stop_and_collect(server)
    warnings = list(WARNING.finditer(log))
    assert len(warnings) == 1, log
    slot, pid, held = warnings[0].groups()
    assert (slot, pid) == ("1", worker_pid)
    assert 0.5 <= float(held) < 3.0  # a lower bound, taken during the 1 s sleep
    after = log[warnings[0].end():]
    assert f'File "{APP_FILE}", line {BLOCKING_LINE}, in app' in after, log
    assert "time.sleep(_seconds(scope))" in after  # deliberate (noqa: sleep): a string


def test_awaiting_idle_and_booting_never_warn(arbiter_process) -> None:
    server = arbiter_process(["blocking:app", "--warn-blocking", "0.2"],
                             env={"BLOCK_AT_IMPORT": "1"}).wait_ready()
    get(server, "/await?s=1")  # the loop is idle meanwhile, apart from this task
    get(server, "/await?s=0.5")
    log = stop_and_collect(server)
    assert "the event loop" not in log, log


def test_fifty_blocking_requests_stay_within_the_rate_limit(arbiter_process) -> None:
    server = arbiter_process(["blocking:app", "--warn-blocking", "0.05",
                              "--no-access-log"]).wait_ready()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(50):
            assert client.get("/block?s=0.1").status_code == 200
    log = stop_and_collect(server)
    warnings, notes = len(WARNING.findall(log)), len(NOTE.findall(log))
    assert (warnings, notes) == (5, 1), log[-6000:]  # 5 a minute, then one note


def test_warn_blocking_0_turns_it_off(arbiter_process) -> None:
    server = arbiter_process(["blocking:app", "--warn-blocking", "0"]).wait_ready()
    get(server, "/block?s=1")
    log = stop_and_collect(server)
    assert "the event loop" not in log, log
