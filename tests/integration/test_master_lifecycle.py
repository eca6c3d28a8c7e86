"""The master's lifecycle, black-box: real processes, loopback sockets and signals.

Suspension, code reloads (--reload, --preload + SIGHUP), reaping of orphans,
stop escalation and config-file hooks. Every wait polls a condition with a
deadline; the one deliberate sleep keeps the master stopped past --timeout.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import APPS, wait_until
from tests.load import Load

pytestmark = pytest.mark.slow


class InFlight:
    """One request in a thread, expected to be cut off; records how it ended."""

    def __init__(self, url: str) -> None:
        self.outcome: str | None = None
        self._thread = threading.Thread(target=self._run, args=(url,), daemon=True)
        self._thread.start()

    def _run(self, url: str) -> None:
        try:
            self.outcome = f"HTTP {httpx.get(url, timeout=60).status_code}"
        except httpx.HTTPError as exc:
            self.outcome = type(exc).__name__


def start_in_flight(server, path: str) -> InFlight:
    """Start a request to ``path`` and wait until the app is running it."""
    request = InFlight(server.url + path)
    server.wait_for_log(r"IN FLIGHT", stream="stdout")
    return request


# ------------------------------------------------------------------ suspension


def test_sigstop_longer_than_timeout_kills_no_healthy_worker(arbiter_process) -> None:
    server = arbiter_process(["lifecycle:app", "--workers", "2", "--timeout", "2"]).wait_ready()
    pids = server.worker_pids()
    master = psutil.Process(server.pid)
    load = Load(server.url, "/pid")
    load.wait_more(10)
    server.signal(signal.SIGSTOP)
    wait_until(lambda: master.status() == psutil.STATUS_STOPPED, 5, message="master stopped")
    served_before = load.ok
    time.sleep(4)  # deliberate (noqa: sleep): the point: the master stays stopped 2x --timeout
    assert load.ok > served_before, "workers must keep serving while the master is stopped"
    resumed = time.monotonic()
    server.signal(signal.SIGCONT)
    server.signal(signal.SIGUSR1)  # a marker: logged once the loop has run again
    server.wait_for_log(r"received SIGUSR1")
    print(f"SIGCONT -> master loop running again: {time.monotonic() - resumed:.3f} s")
    load.wait_more(20)
    # a heartbeat deadline is checked every pass; give it a few --timeout-sized chances
    server.signal(signal.SIGUSR1)
    server.wait_for_log(r"received SIGUSR1", count=2)
    load.wait_more(20)
    load.finish()
    assert "WORKER TIMEOUT" not in server.stderr
    assert server.worker_pids() == pids
    assert load.failed == []


# ------------------------------------------------------------------ stopping


def test_graceful_timeout_kills_a_stuck_worker_and_says_so(arbiter_process) -> None:
    server = arbiter_process(["lifecycle:app", "--graceful-timeout", "2"]).wait_ready()
    (pid,) = server.worker_pids()
    request = start_in_flight(server, "/block?s=30")
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    server.wait_for_log(rf"still busy after the graceful timeout of 2 s: killing worker 1 "
                        rf"\(pid {pid}\b")
    assert server.wait_exit(10) == 0
    elapsed = time.monotonic() - started
    print(f"SIGTERM -> exit with a stuck worker and --graceful-timeout 2: {elapsed:.2f} s")
    assert 1.8 <= elapsed < 6
    wait_until(lambda: request.outcome is not None, 10, message="the request to end")
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_second_sigint_during_a_graceful_stop_makes_it_quick(arbiter_process) -> None:
    server = arbiter_process(["lifecycle:app", "--graceful-timeout", "60"]).wait_ready()
    request = start_in_flight(server, "/slow?s=60")
    server.signal(signal.SIGTERM)
    server.wait_for_log(r"graceful stop of 1 worker")
    assert server.proc.poll() is None  # draining: waits for the request
    started = time.monotonic()
    server.signal(signal.SIGINT)
    assert server.wait_exit(10) == 0
    elapsed = time.monotonic() - started
    print(f"second SIGINT -> exit: {elapsed:.2f} s")
    assert elapsed < 3
    assert "killing" not in server.stderr  # the worker obeyed; no SIGKILL needed
    wait_until(lambda: request.outcome is not None, 10, message="the request to end")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_sigint_and_sigquit_stop_quickly_despite_a_request_in_flight(arbiter_process,
                                                                     sig) -> None:
    server = arbiter_process(["lifecycle:app", "--workers", "2",
                              "--graceful-timeout", "60"]).wait_ready()
    workers = server.worker_pids()
    request = start_in_flight(server, "/slow?s=60")
    started = time.monotonic()
    server.signal(sig)
    assert server.wait_exit(10) == 0
    assert time.monotonic() - started < 3
    server.wait_for_log(r"quick stop of 2 worker")
    wait_until(lambda: request.outcome is not None, 10, message="the request to end")
    wait_until(lambda: not any(psutil.pid_exists(p) and psutil.Process(p).status()
                               != psutil.STATUS_ZOMBIE for p in workers), 10,
               message="workers gone")


# ------------------------------------------------------------------ reaping


def _zombie_children(pid: int) -> list[int]:
    try:
        return [c.pid for c in psutil.Process(pid).children()
                if c.status() == psutil.STATUS_ZOMBIE]
    except psutil.NoSuchProcess:
        return []


def test_orphaned_grandchild_is_adopted_and_reaped_quietly(arbiter_process, tmp_path) -> None:
    server = arbiter_process(["lifecycle:app", "--workers", "2"]).wait_ready()
    workers = server.worker_pids()
    release = tmp_path / "release"
    response = httpx.get(f"{server.url}/grandchild", params={"release": str(release)},
                         timeout=10)
    grandchild = int(response.text)
    # the worker's child exited at once: the grandchild now belongs to the master (subreaper)
    assert psutil.Process(grandchild).ppid() == server.pid
    release.touch()
    wait_until(lambda: not psutil.pid_exists(grandchild), 10,
               message=f"grandchild {grandchild} to be reaped")
    assert _zombie_children(server.pid) == []
    assert server.worker_pids() == workers
    server.signal(signal.SIGUSR1)  # a marker: the loop has run again after the reap
    server.wait_for_log(r"received SIGUSR1")
    assert str(grandchild) not in server.stderr
    assert not any(w in server.stderr for w in ("exited with", "was killed"))
    assert httpx.get(server.url, timeout=5).status_code == 200


# ------------------------------------------------------------------ code reloads


def copy_app(tmp_path: Path, name: str) -> Path:
    """A private copy of the lifecycle app that the test may edit."""
    target = tmp_path / f"{name}.py"
    target.write_text((APPS / "lifecycle.py").read_text())
    return target


def edit_body(app: Path, old: bytes, new: bytes, mtime: float | None = None) -> None:
    """Change the served body in place, the way an editor saving the file would."""
    source = app.read_text()
    assert old.decode() in source
    app.write_text(source.replace(old.decode(), new.decode()))
    if mtime is not None:
        os.utime(app, (mtime, mtime))


# Python's default: write __pycache__ (the test environment may turn it off).
WRITE_BYTECODE = {"PYTHONDONTWRITEBYTECODE": ""}


def test_reload_serves_edited_code_without_a_failed_request(arbiter_process,
                                                            tmp_path) -> None:
    app = copy_app(tmp_path, "devapp")
    # Two saves within one second, made deterministic: a .pyc records its source's
    # mtime in whole seconds and its size, so a same-size edit in the same second
    # looks unchanged to the import system.
    second = int(time.time()) - 100
    os.utime(app, (second + 0.1, second + 0.1))
    server = arbiter_process(["devapp:app", "--workers", "2", "--reload",
                              "--app-dir", str(tmp_path)], cwd=tmp_path,
                             env=WRITE_BYTECODE).wait_ready()
    load = Load(server.url, "/")
    load.wait_more(20)
    edited = time.monotonic()
    edit_body(app, b"version one", b"version two", mtime=second + 0.6)  # same size too
    wait_until(lambda: b"version two" in load.first_seen, 20, message="the edited body")
    print(f"--reload: edit -> new body served: {load.first_seen[b'version two'] - edited:.2f} s")
    server.wait_for_log(r"reload: generation 2 is serving", timeout=20)
    load.wait_more(20)
    load.finish()
    assert load.failed == []
    assert set(load.first_seen) == {b"version one", b"version two"}


def test_preload_hup_reexecs_in_place_and_serves_new_code(arbiter_process, tmp_path) -> None:
    app = copy_app(tmp_path, "prodapp")
    deployed = time.time() - 100  # deployed earlier; same-second saves are the test above
    os.utime(app, (deployed, deployed))
    server = arbiter_process(["prodapp:app", "--workers", "2", "--preload",
                              "--app-dir", str(tmp_path)], cwd=tmp_path,
                             env=WRITE_BYTECODE).wait_ready()
    old_workers = server.worker_pids()
    load = Load(server.url, "/")
    load.wait_more(20)
    edit_body(app, b"version one", b"version two")
    hup = time.monotonic()
    server.signal(signal.SIGHUP)
    adopted = server.wait_for_log(r"\[(\d+)\] \[INFO\] adopted 2 worker\(s\)", timeout=30)
    assert int(adopted.group(1)) == server.pid  # the re-executed master kept its PID
    wait_until(lambda: b"version two" in load.first_seen, 30, message="the edited body")
    print(f"--preload SIGHUP -> new body served: {load.first_seen[b'version two'] - hup:.2f} s")
    server.wait_for_log(r"reload: generation \d+ is serving", timeout=30)
    load.wait_more(20)
    load.finish()
    assert server.proc.poll() is None
    assert load.failed == []
    wait_until(lambda: len(server.worker_pids()) == 2
               and not set(old_workers) & set(server.worker_pids()), 20,
               message="the old workers to be replaced")


# ------------------------------------------------------------------ config hooks

HOOKS = ("on_starting", "when_ready", "pre_fork", "post_fork", "on_reload", "worker_exit",
         "child_exit", "on_exit")
HOOKS_CONFIG = '''
import os

_RAISE = os.environ.get("HOOK_RAISE", "").split(",")


def _record(name, worker=None):
    line = f"{name} pid={os.getpid()}"
    if worker is not None:
        line += f" slot={worker.slot} gen={worker.generation} wpid={worker.pid}"
    fd = os.open(os.environ["HOOK_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, (line + "\\n").encode())
    os.close(fd)
    if name in _RAISE:
        raise RuntimeError(f"{name} fails on purpose")


def on_starting(arbiter): _record("on_starting")
def when_ready(arbiter): _record("when_ready")
def pre_fork(arbiter, worker): _record("pre_fork", worker)
def post_fork(arbiter, worker): _record("post_fork", worker)
def on_reload(arbiter): _record("on_reload")
def worker_exit(arbiter, worker): _record("worker_exit", worker)
def child_exit(arbiter, worker): _record("child_exit", worker)
def on_exit(arbiter): _record("on_exit")
'''


def start_with_hooks(arbiter_process, tmp_path: Path, raising: tuple[str, ...] = ()):
    config = tmp_path / "hooks.py"
    config.write_text(HOOKS_CONFIG)
    record = tmp_path / "hooks.log"
    server = arbiter_process(["lifecycle:app", "--workers", "1", "--config", str(config)],
                             env={"HOOK_LOG": str(record), "HOOK_RAISE": ",".join(raising)})
    return server, record


def hook_lines(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


def test_config_hooks_run_at_gunicorns_moments_in_the_right_process(arbiter_process,
                                                                    tmp_path) -> None:
    server, record = start_with_hooks(arbiter_process, tmp_path)
    server.wait_ready()
    (first,) = server.worker_pids()
    master = server.pid
    assert hook_lines(record) == [
        f"on_starting pid={master}", f"when_ready pid={master}",
        f"pre_fork pid={master} slot=1 gen=1 wpid=None",
        f"post_fork pid={first} slot=1 gen=1 wpid={first}"]
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload: generation 2 is serving")
    wait_until(lambda: f"child_exit pid={master} slot=1 gen=1 wpid={first}"
               in hook_lines(record), 10, message="child_exit of the first worker")
    (second,) = server.worker_pids()
    after_reload = hook_lines(record)[4:]
    assert after_reload[:3] == [
        f"on_reload pid={master}", f"pre_fork pid={master} slot=1 gen=2 wpid=None",
        f"post_fork pid={second} slot=1 gen=2 wpid={second}"]
    assert after_reload.index(f"worker_exit pid={first} slot=1 gen=1 wpid={first}") < \
        after_reload.index(f"child_exit pid={master} slot=1 gen=1 wpid={first}")
    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0
    assert hook_lines(record)[-3:] == [
        f"worker_exit pid={second} slot=1 gen=2 wpid={second}",
        f"child_exit pid={master} slot=1 gen=2 wpid={second}", f"on_exit pid={master}"]
    assert len(hook_lines(record)) == 12


def test_a_raising_hook_is_logged_by_name_and_kills_nothing(arbiter_process,
                                                            tmp_path) -> None:
    server, record = start_with_hooks(arbiter_process, tmp_path, raising=HOOKS)
    server.wait_ready()
    (worker,) = server.worker_pids()
    assert httpx.get(server.url, timeout=5).text == "version one"
    assert server.worker_pids() == [worker]  # post_fork raised, yet the worker serves
    server.signal(signal.SIGHUP)
    server.wait_for_log(r"reload: generation 2 is serving")
    assert httpx.get(server.url, timeout=5).status_code == 200
    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0
    for name in HOOKS:
        assert f"hook {name} raised; carrying on" in server.stderr, name
        assert f"RuntimeError: {name} fails on purpose" in server.stderr, name
    assert len(hook_lines(record)) == 12  # every hook still ran once per moment


def test_post_worker_init_is_refused_with_its_name(arbiter_process, tmp_path) -> None:
    config = tmp_path / "hooks.py"
    config.write_text("def post_worker_init(worker):\n    pass\n")
    server = arbiter_process(["lifecycle:app", "--config", str(config)])
    assert server.wait_exit(15) == 2
    assert "post_worker_init" in server.stderr and "not supported" in server.stderr
    assert "Listening at" not in server.stderr
