"""arbiter as PID 1, as in the container deploy/docker/Dockerfile builds.

``unshare --pid --fork --mount-proc`` gives arbiter a new PID namespace in which it
is process 1, and it runs with the Dockerfile's command line and environment (the
app swapped for the test app, as a user swaps in theirs, and the host and port
moved to loopback). PID 1 is where orphans end up and where signals without a
handler are ignored: arbiter must reap them and must drain on SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import wait_until
from tests.dockerfile import docker_command, env_of, final_stage

pytestmark = pytest.mark.slow


def _namespace_pid(host_pid: int) -> int:
    """The pid a process has in its innermost PID namespace (NSpid's last field)."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError(f"no NSpid line for {host_pid}")


@pytest.fixture
def unshare() -> list[str]:
    path = shutil.which("unshare")
    if path is None:
        pytest.skip("unshare (util-linux) is not installed")
    argv = [path, "--pid", "--fork", "--mount-proc"]
    if os.geteuid() != 0:
        argv.insert(1, "--map-root-user")  # an unprivileged user namespace, where allowed
    probe = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {probe.stderr.strip()}")
    return argv


def test_arbiter_as_pid_1_serves_reaps_orphans_and_drains_on_sigterm(arbiter_process, unshare,
                                                                     tmp_path) -> None:
    command = docker_command()
    assert command[0] == "arbiter"
    command = [sys.executable, "-m", "arbiter", "lifecycle:app", *command[2:]]
    env = {**env_of(final_stage()), "ARBITER_HOST": "127.0.0.1", "PORT": "0"}
    server = arbiter_process([], command=[*unshare, *command], env=env).wait_ready()
    wait_until(lambda: psutil.Process(server.pid).children(), 10, message="arbiter under unshare")
    [master] = psutil.Process(server.pid).children()
    assert _namespace_pid(master.pid) == 1
    workers = master.children()
    assert len(workers) == int(env["WEB_CONCURRENCY"])

    with httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/").text == "version one"
        # a worker double-forks a grandchild and reaps only its child: the grandchild,
        # orphaned, is handed to PID 1, arbiter's master
        release = tmp_path / "release"
        orphan_ns_pid = int(client.get("/grandchild", params={"release": str(release)}).text)
    orphan = wait_until(lambda: next((p for p in master.children()
                                      if _namespace_pid(p.pid) == orphan_ns_pid), None), 10,
                        message="the orphan adopted by PID 1")
    assert orphan.pid not in {w.pid for w in workers}
    release.touch()

    def reaped() -> bool:
        try:
            return orphan.status() != psutil.STATUS_ZOMBIE and not orphan.is_running()
        except psutil.NoSuchProcess:
            return True

    wait_until(reaped, 15, message="the orphan reaped, no zombie left")

    result: list[object] = []

    def in_flight() -> None:
        try:
            result.append(httpx.get(server.url + "/slow?s=2", timeout=30).text)
        except httpx.HTTPError as exc:
            result.append(exc)

    thread = threading.Thread(target=in_flight)
    thread.start()
    server.wait_for_log(r"IN FLIGHT /slow", stream="stdout")
    os.kill(master.pid, signal.SIGTERM)  # what `docker stop` sends to PID 1
    thread.join(30)
    assert result == ["slow done"]
    assert server.wait_exit(30) == 0  # unshare exits with arbiter's code
    assert "graceful stop" in server.stderr
