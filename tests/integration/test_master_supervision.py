"""Master supervision, black-box: reloads under load, hang detection, scaling, orphans."""

from __future__ import annotations

import os
import signal

import httpx
import psutil
import pytest

from tests.conftest import APPS, wait_until
from tests.load import Load

pytestmark = pytest.mark.slow


def test_twenty_reloads_under_load_lose_nothing(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--workers", "2"]).wait_ready()
    master = psutil.Process(server.pid)
    fds_before, threads_before = master.num_fds(), master.num_threads()
    load, fresh = Load(server.url), Load(server.url, fresh=True)
    for i in range(20):
        server.signal(signal.SIGHUP)
        server.wait_for_log(r"reload: generation \d+ is serving", count=i + 1, timeout=30)
    load.finish()
    fresh.finish()
    assert load.failed == [] and load.ok > 20
    assert fresh.failed == [] and fresh.ok > 20
    wait_until(lambda: len(server.worker_pids()) == 2, 10)
    assert master.num_fds() == fds_before
    assert master.num_threads() == threads_before == 1


def test_reload_with_broken_code_keeps_old_generation(arbiter_process, tmp_path) -> None:
    app = tmp_path / "flaky.py"
    app.write_text((APPS / "basic.py").read_text())
    server = arbiter_process(["flaky:app", "--workers", "2", "--app-dir", str(tmp_path)]
                             ).wait_ready()
    pids = server.worker_pids()
    app.write_text("raise ImportError('deploy is broken')\n")
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload aborted: .*deploy is broken")
    assert server.worker_pids() == pids
    response = httpx.get(server.url + "/pid", timeout=5)
    assert response.status_code == 200 and int(response.text) in pids  # the old generation
    assert server.proc.poll() is None


def test_blocked_event_loop_is_aborted_with_its_traceback(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--timeout", "2"]).wait_ready()
    victim = server.worker_pids()[0]
    try:
        httpx.get(server.url + "/block?s=30", timeout=15)
    except httpx.HTTPError:
        pass
    server.wait_for_log(rf"WORKER TIMEOUT: worker 1 \(pid {victim}, generation 1\) has been "
                        rf"silent for [\d.]+ s \(--timeout 2\)", timeout=20)
    server.wait_for_log(r'File ".*basic\.py", line \d+ in app', timeout=20)
    wait_until(lambda: server.worker_pids() and victim not in server.worker_pids(), 20)
    server.wait_for_log(r"is ready", count=2, timeout=20)
    assert httpx.get(server.url, timeout=5).status_code == 200


def test_ttin_ttou_scale_never_below_one(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--workers", "1"]).wait_ready()
    server.signal(signal.SIGTTIN)
    wait_until(lambda: len(server.worker_pids()) == 2, 20, message="2 workers")
    server.signal(signal.SIGTTOU)
    wait_until(lambda: len(server.worker_pids()) == 1, 20, message="1 worker")
    server.signal(signal.SIGTTOU)  # separately: identical pending signals coalesce
    server.wait_for_log(r"minimum of 1 worker")
    assert len(server.worker_pids()) == 1


def test_workers_exit_when_the_master_is_killed(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--workers", "2"]).wait_ready()
    workers = [psutil.Process(p) for p in server.worker_pids()]
    os.kill(server.pid, signal.SIGKILL)
    wait_until(lambda: not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE
                               for w in workers), 20, message="orphans to exit")


def test_usr2_keeps_the_pid_and_serves_throughout(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--workers", "2"]).wait_ready()
    old = server.worker_pids()
    load = Load(server.url)
    server.signal(signal.SIGUSR2)
    server.wait_for_log(r"adopted 2 worker\(s\)", timeout=30)
    server.wait_for_log(r"reload: generation \d+ is serving", timeout=30)
    load.finish()
    assert load.failed == []
    assert server.proc.poll() is None
    wait_until(lambda: len(server.worker_pids()) == 2 and not set(old) & set(
        server.worker_pids()), 20)


def test_usr2_while_a_reload_canary_boots_kills_nothing_and_fails_nothing(
        arbiter_process, tmp_path) -> None:
    """SIGHUP, then SIGUSR2 while the canary is still booting, under load: the new master
    takes the canary over and retires it gracefully (its lifespan shutdown runs), the
    old workers serve until the new master's own generation is ready: 0 failures."""
    delay = tmp_path / "boot-delay"
    delay.write_text("0")
    server = arbiter_process(["supervised:app", "--workers", "2"],
                             env={"BOOT_DELAY_FILE": str(delay)}).wait_ready()
    old = set(server.worker_pids())
    kept, fresh = Load(server.url), Load(server.url, fresh=True)
    kept.wait_more(20)
    delay.write_text("5")
    server.signal(signal.SIGHUP)
    canary = int(server.wait_for_log(r"BOOT DELAY (\d+) 5", stream="stdout").group(1))
    delay.write_text("0")  # the new master's workers boot at once
    server.signal(signal.SIGUSR2)
    server.wait_for_log(r"adopted 3 worker\(s\) from the previous master \(1 booting, "
                        r"2 ready\)", timeout=30)
    server.wait_for_log(r"reload: generation \d+ is serving", timeout=30)
    server.wait_for_log(rf"LIFESPAN SHUTDOWN {canary}", stream="stdout", timeout=20)
    wait_until(lambda: len(server.worker_pids()) == 2 and not (old | {canary}) & set(
        server.worker_pids()), 20, message="the old workers and the canary to be gone")
    kept.wait_more(20)
    fresh.wait_more(20)
    kept.finish()
    fresh.finish()
    assert kept.failed == [] and fresh.failed == []
    assert "SIGKILL" not in server.stderr
    assert server.proc.poll() is None


def test_max_requests_recycles_without_failures(arbiter_process) -> None:
    server = arbiter_process(["basic:app", "--workers", "2", "--max-requests", "50"]
                             ).wait_ready()
    load = Load(server.url)
    server.wait_for_log(r"retired \(served \d+ requests", timeout=60)
    load.finish()
    assert load.failed == []


def test_pid_file(arbiter_process, tmp_path) -> None:
    pid_file = tmp_path / "a.pid"
    server = arbiter_process(["basic:app", "--pid", str(pid_file)]).wait_ready()
    assert pid_file.read_text().strip() == str(server.pid)
    second = arbiter_process(["basic:app", "--pid", str(pid_file)])
    assert second.wait_exit(15) == 1
    assert "names a running process" in second.stderr
    server.signal(signal.SIGTERM)
    assert server.wait_exit(20) == 0
    assert not pid_file.exists()
