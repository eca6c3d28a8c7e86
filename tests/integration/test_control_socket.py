"""The control socket end to end: the real master, the real `arbiter COMMAND` client,
raw bytes for what a broken client sends, real signals (kill -9, SIGUSR2)."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import APPS, ArbiterProcess, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def sock_path() -> Iterator[str]:
    """A short path: a unix socket's must fit in 108 bytes, pytest's tmp_path may not."""
    directory = tempfile.mkdtemp(prefix="arb-ctl-", dir="/tmp")
    yield os.path.join(directory, "control.sock")
    shutil.rmtree(directory, ignore_errors=True)


def arbiter_cmd(path: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """The real client: `python -m arbiter COMMAND ... --control-socket PATH`."""
    return subprocess.run([sys.executable, "-m", "arbiter", *args, "--control-socket", path],
                          capture_output=True, text=True, timeout=timeout, cwd=str(APPS))


def status(path: str) -> dict:
    done = arbiter_cmd(path, "status", "--json", timeout=20)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def start(arbiter_process, path: str, *args: str, **kwargs) -> ArbiterProcess:
    server = arbiter_process([*args, "--control-socket", path], **kwargs).wait_ready()
    server.wait_for_log(r"Control socket at: ")
    return server


def raw_exchange(path: str, data: bytes, timeout: float = 15.0) -> tuple[bytes, bool]:
    """Send ``data`` as a broken client would; return the reply and whether EOF followed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the master stopped reading and closed: its reply is still there to read
        received = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return received, True
            received += chunk


def test_status_text_and_json_with_three_workers(arbiter_process, sock_path) -> None:
    server = start(arbiter_process, sock_path, "basic:app", "--workers", "3")
    for _ in range(6):
        assert httpx.get(server.url, timeout=5).status_code == 200
    pids = server.worker_pids()
    # the counters come from the heartbeat TICKs, once a second
    report = wait_until(lambda: (lambda s: s if sum(w["requests"] for w in s["workers"]) >= 6
                                 else None)(status(sock_path)), 15, interval=0.3,
                        message="the status to count the 6 requests")
    master = report["master"]
    assert master["pid"] == server.pid and master["generation"] == 1
    assert master["workers_target"] == 3 and master["workers_ready"] == 3
    assert master["reloading"] is False and master["stopping"] is False
    assert master["listeners"] == [server.url] and master["control_socket"] == sock_path
    assert sorted(w["pid"] for w in report["workers"]) == pids
    assert sorted(w["slot"] for w in report["workers"]) == [1, 2, 3]
    for w in report["workers"]:
        assert w["state"] == "ready" and w["generation"] == 1
        assert 0 <= w["uptime_s"] < 120 and w["connections"] >= 0
        assert set(w) >= {"in_flight", "rss_bytes", "loop_lag_s"}

    text = arbiter_cmd(sock_path, "status", timeout=20)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"master     pid {server.pid}, generation 1, 3/3 workers ready")
    assert lines[1] == "state      running"
    assert lines[2] == f"listening  {server.url}"
    assert lines[4].split()[:5] == ["SLOT", "PID", "GEN", "STATE", "UPTIME"]
    rows = [line.split() for line in lines[5:]]
    assert sorted(int(row[1]) for row in rows) == pids
    assert all(row[3] == "ready" for row in rows) and len(rows) == 3
    print(text.stdout)  # the sample in the report


def test_scale_returns_when_the_count_is_reached(arbiter_process, sock_path) -> None:
    server = start(arbiter_process, sock_path, "basic:app", "--workers", "3")
    # Slow requests in flight on the two workers a scale to 1 retires (slots 2 and 3), so
    # they take seconds to drain: the command must wait for them to be gone.
    results: list[int] = []

    def slow() -> None:
        results.append(httpx.get(server.url + "/slow?s=4", timeout=30).status_code)

    def busy_slots() -> set[int]:
        return {w["slot"] for w in status(sock_path)["workers"] if w["connections"]}

    clients: list[threading.Thread] = []
    for _ in range(5):  # the kernel picks the worker that accepts: a few rounds at most
        for _ in range(6):
            clients.append(threading.Thread(target=slow))
            clients[-1].start()
        try:
            wait_until(lambda: {2, 3} <= busy_slots(), 3, interval=0.3)
            break
        except AssertionError:
            continue
    assert {2, 3} <= busy_slots()
    down = arbiter_cmd(sock_path, "scale", "1")
    assert down.returncode == 0, down.stderr
    assert down.stdout.strip() == "1 worker(s) ready"
    assert len(server.worker_pids()) == 1  # the retired two have drained and exited
    for client in clients:
        client.join(30)
    assert results == [200] * len(clients)  # drained, not cut off
    up = arbiter_cmd(sock_path, "scale", "+2")
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == "3 worker(s) ready"
    assert len(server.worker_pids()) == 3
    report = status(sock_path)
    assert [w["state"] for w in report["workers"]] == ["ready"] * 3
    assert report["master"]["workers_target"] == 3
    minus = arbiter_cmd(sock_path, "scale", "-5")  # never below 1
    assert minus.returncode == 0 and minus.stdout.strip() == "1 worker(s) ready"
    assert len(server.worker_pids()) == 1
    for bad, fragment in [("0", "at least 1"), ("x", "expected N, +N or -N")]:
        refused = arbiter_cmd(sock_path, "scale", bad)
        assert refused.returncode == 2 and fragment in refused.stderr
    too_many = arbiter_cmd(sock_path, "scale", "600")
    assert too_many.returncode == 1 and "from 1 to 512" in too_many.stderr
    assert len(server.worker_pids()) == 1


def test_reload_returns_when_the_new_generation_is_ready_or_why_not(
        arbiter_process, sock_path, tmp_path) -> None:
    app = tmp_path / "flaky.py"
    app.write_text((APPS / "basic.py").read_text())
    server = start(arbiter_process, sock_path, "flaky:app", "--workers", "2",
                   "--app-dir", str(tmp_path))
    old = set(server.worker_pids())
    done = arbiter_cmd(sock_path, "reload")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "generation 2 is serving"
    new = set(server.worker_pids())
    assert len(new) == 2 and not new & old  # every worker replaced when it returns
    assert int(httpx.get(server.url + "/pid", timeout=5).text) in new

    app.write_text("raise ImportError('deploy is broken')\n")
    failed = arbiter_cmd(sock_path, "reload")
    assert failed.returncode == 1
    assert "reload aborted: canary worker" in failed.stderr
    assert "deploy is broken" in failed.stderr
    assert "generation 2 keeps serving" in failed.stderr
    assert set(server.worker_pids()) == new and server.proc.poll() is None
    assert status(sock_path)["master"]["generation"] == 2


def test_a_reload_superseded_by_a_newer_one_answers_when_the_newest_is_serving(
        arbiter_process, sock_path, tmp_path) -> None:
    delay = tmp_path / "boot-delay"
    delay.write_text("0")
    server = start(arbiter_process, sock_path, "supervised:app", "--workers", "2",
                   env={"BOOT_DELAY_FILE": str(delay)})
    delay.write_text("3")
    first = subprocess.Popen([sys.executable, "-m", "arbiter", "reload", "--control-socket",
                              sock_path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    server.wait_for_log(r"BOOT DELAY \d+ 3", stream="stdout")  # generation 2's canary boots
    delay.write_text("0")
    second = arbiter_cmd(sock_path, "reload")  # what SIGHUP does now: restart with the newest
    out, err = first.communicate(timeout=60)
    assert second.returncode == 0 and second.stdout.strip() == "generation 3 is serving"
    assert first.returncode == 0 and out.strip() == "generation 3 is serving", err
    server.wait_for_log(r"restarting generation 2's reload with the newest config")


def test_stop_returns_after_the_master_exited(arbiter_process, sock_path) -> None:
    server = start(arbiter_process, sock_path, "basic:app", "--workers", "2")
    slow: dict[str, object] = {}

    def slow_request() -> None:
        slow["status"] = httpx.get(server.url + "/slow?s=3", timeout=30).status_code
        slow["at"] = time.monotonic()

    client = threading.Thread(target=slow_request)
    client.start()
    wait_until(lambda: any(w["connections"] for w in status(sock_path)["workers"]), 15,
               interval=0.2, message="the slow request to be in flight")
    done = arbiter_cmd(sock_path, "stop")
    returned_at = time.monotonic()
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"master {server.pid} has exited"
    assert server.proc.poll() == 0  # already exited (a zombie until reaped here)
    client.join(10)
    assert slow["status"] == 200  # the graceful stop let it finish ...
    assert slow["at"] <= returned_at + 0.5  # ... and the command returned after that
    assert not os.path.exists(sock_path)  # removed on exit


def test_stop_quick(arbiter_process, sock_path) -> None:
    server = start(arbiter_process, sock_path, "basic:app", "--workers", "2")
    done = arbiter_cmd(sock_path, "stop", "--quick")
    assert done.returncode == 0, done.stderr
    assert server.proc.poll() == 0
    server.wait_for_log(r"quick stop of 2 worker\(s\)")


def test_reopen_logs(arbiter_process, sock_path, tmp_path) -> None:
    log = tmp_path / "error.log"
    server = arbiter_process(["basic:app", "--workers", "2", "--error-log", str(log),
                              "--control-socket", sock_path])
    wait_until(lambda: log.exists() and "all 2 worker(s) ready" in log.read_text(), 20,
               message="the workers to be ready")
    log.rename(tmp_path / "error.log.1")  # as logrotate does
    done = arbiter_cmd(sock_path, "reopen-logs")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "log files reopened in the master and 2 worker(s)"
    assert "control: reopen-logs: log files reopened here and signalled to 2 worker(s)" in \
        log.read_text()  # the new file
    assert server.proc.poll() is None


def test_garbage_a_huge_line_and_silent_clients_never_disturb_the_master(
        arbiter_process, sock_path) -> None:
    server = start(arbiter_process, sock_path, "basic:app", "--workers", "2")
    reply, closed = raw_exchange(sock_path, b"hello\n")
    assert json.loads(reply)["ok"] is False and "not JSON" in json.loads(reply)["error"]
    assert closed
    reply, closed = raw_exchange(sock_path, b'{"command": "restart"}\n')
    assert "unknown command 'restart'" in json.loads(reply)["error"] and closed
    started = time.monotonic()
    reply, closed = raw_exchange(sock_path, b"x" * (1024 * 1024))  # 1 MiB, no newline
    assert json.loads(reply) == {"ok": False, "error": "request longer than 65536 bytes"}
    assert closed and time.monotonic() - started < 5

    # Silent clients (one says nothing, one stops mid-line) while a worker is killed -9:
    # the replacement is ready while they are still connected, long before their 5 s.
    silent = []
    for first_bytes in (b"", b'{"command": "sta'):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(sock_path)
        sock.sendall(first_bytes)
        silent.append(sock)
    connected_at = time.monotonic()
    victim = server.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    server.wait_for_log(r"is ready", count=3, timeout=20)
    replaced_after = time.monotonic() - killed_at
    assert victim not in server.worker_pids() and len(server.worker_pids()) == 2
    assert select.select(silent, [], [], 0)[0] == []  # still connected, nothing said to them
    assert replaced_after < 4.0, replaced_after
    for sock in silent:
        sock.settimeout(20)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        dropped_after = time.monotonic() - connected_at
        assert json.loads(data) == {"ok": False, "error": "no request line within 5 s"}
        assert 4.5 <= dropped_after < 15, dropped_after
        sock.close()
    assert status(sock_path)["master"]["workers_ready"] == 2
    print(f"kill -9 -> ready with two silent control clients connected: {replaced_after:.3f} s")


def test_socket_is_0600_ours_and_removed_on_exit(arbiter_process, sock_path) -> None:
    server = start(arbiter_process, sock_path, "basic:app")
    info = os.stat(sock_path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert info.st_uid == os.getuid()
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not os.path.exists(sock_path)


def test_socket_survives_a_reexec(arbiter_process, sock_path) -> None:
    server = start(arbiter_process, sock_path, "basic:app", "--workers", "2")
    inode = os.stat(sock_path).st_ino
    old = set(server.worker_pids())
    server.signal(signal.SIGUSR2)
    server.wait_for_log(r"adopted 2 worker\(s\)", timeout=30)
    server.wait_for_log(r"reload: generation \d+ is serving", timeout=30)
    report = status(sock_path)
    assert report["master"]["pid"] == server.pid
    assert not {w["pid"] for w in report["workers"]} & old
    info = os.stat(sock_path)
    assert info.st_ino == inode and stat.S_IMODE(info.st_mode) == 0o600  # the same socket
    assert "Control socket at: " in server.stderr


def test_reload_under_preload_is_a_reexec_and_waits_for_it(arbiter_process, sock_path,
                                                           tmp_path) -> None:
    """--preload: SIGHUP re-executes the master, so the waiting client is handed down
    across the exec and answered by the new master when its generation is serving."""
    app = tmp_path / "flaky.py"
    app.write_text((APPS / "basic.py").read_text())
    server = start(arbiter_process, sock_path, "flaky:app", "--workers", "2", "--preload",
                   "--app-dir", str(tmp_path))
    old = set(server.worker_pids())
    done = arbiter_cmd(sock_path, "reload")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "generation 1 is serving"
    assert "re-executing the master in place" in server.stderr
    new = set(server.worker_pids())
    assert len(new) == 2 and not new & old
    app.write_text("raise ImportError('deploy is broken')\n")
    failed = arbiter_cmd(sock_path, "reload")
    assert failed.returncode == 1
    assert "re-exec cancelled: the new master would not start" in failed.stderr
    assert set(server.worker_pids()) == new


def test_a_second_server_on_the_same_socket_is_refused(arbiter_process, sock_path) -> None:
    first = start(arbiter_process, sock_path, "basic:app")
    second = arbiter_process(["basic:app", "--control-socket", sock_path])
    assert second.wait_exit() == 1
    assert (f"--control-socket: cannot bind unix:{sock_path}: address already in use by a "
            f"running server") in second.stderr
    assert status(sock_path)["master"]["pid"] == first.pid  # untouched
    first.signal(signal.SIGTERM)
    assert first.wait_exit() == 0


def test_a_stale_socket_file_is_replaced_and_a_non_socket_refused(arbiter_process,
                                                                  sock_path) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()  # the file stays, no one listens: a server that died
    server = start(arbiter_process, sock_path, "basic:app")
    assert status(sock_path)["master"]["pid"] == server.pid
    server.signal(signal.SIGTERM)
    server.wait_exit()
    Path(sock_path).write_text("not a socket")
    refused = arbiter_process(["basic:app", "--control-socket", sock_path])
    assert refused.wait_exit() == 1
    assert "the path exists and is not a socket" in refused.stderr


def test_client_errors_name_the_path_and_what_to_do(sock_path) -> None:
    missing = arbiter_cmd(sock_path, "status")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (f"arbiter: error: control socket {sock_path} does not "
                                      f"exist: is the server running with --control-socket "
                                      f"{sock_path}?")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()
    refused = arbiter_cmd(sock_path, "status")
    assert refused.returncode == 1 and "connection refused" in refused.stderr
    assert sock_path in refused.stderr
    unset = subprocess.run([sys.executable, "-m", "arbiter", "status"], capture_output=True,
                           text=True, timeout=20,
                           env={k: v for k, v in os.environ.items()
                                if k != "ARBITER_CONTROL_SOCKET"})
    assert unset.returncode == 2 and "pass --control-socket PATH" in unset.stderr
    from_env = subprocess.run([sys.executable, "-m", "arbiter", "status"], capture_output=True,
                              text=True, timeout=20,
                              env={**os.environ, "ARBITER_CONTROL_SOCKET": sock_path})
    assert from_env.returncode == 1 and "connection refused" in from_env.stderr
    conf = Path(sock_path).with_name("arbiter.conf.py")
    conf.write_text(f"control_socket = {sock_path!r}\n")
    from_file = subprocess.run([sys.executable, "-m", "arbiter", "status", "-c", str(conf)],
                               capture_output=True, text=True, timeout=20)
    assert from_file.returncode == 1 and f"control socket {sock_path}" in from_file.stderr


def test_a_client_that_shuts_its_sending_half_still_gets_its_answer(arbiter_process,
                                                                    sock_path) -> None:
    """As `nc -N -U` does: the request, then EOF on its side; the answer comes later."""
    server = start(arbiter_process, sock_path, "basic:app")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(sock_path)
        sock.sendall(b'{"command": "scale", "by": 1}\n')
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    assert json.loads(data) == {"ok": True, "workers": 2, "message": "2 worker(s) ready"}
    assert len(server.worker_pids()) == 2
