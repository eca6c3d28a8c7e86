"""Shared test helpers: start the real `arbiter` command and poll with deadlines."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)  # deliberate (noqa: sleep): polling interval, not a wait for state


class ArbiterProcess:
    """The real `python -m arbiter` in a subprocess, with its logs captured."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None,
                 cwd: Path | str = APPS, command: list[str] | None = None,
                 pass_fds: tuple[int, ...] = ()) -> None:
        full_env = dict(os.environ)
        full_env.pop("NOTIFY_SOCKET", None)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        self.args = args
        self.proc = subprocess.Popen(
            command or [sys.executable, "-m", "arbiter", *args], cwd=str(cwd), env=full_env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True, pass_fds=pass_fds)
        self.stdout_lines: list[str] = []
        self.stderr_lines: list[str] = []
        self._lock = threading.Lock()
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout_lines),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines),
                             daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _pump(self, stream: Any, sink: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            with self._lock:
                sink.append(raw.decode("utf-8", "replace"))
        stream.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stderr(self) -> str:
        with self._lock:
            return "".join(self.stderr_lines)

    @property
    def stdout(self) -> str:
        with self._lock:
            return "".join(self.stdout_lines)

    def wait_for_log(self, pattern: str, timeout: float = 15.0, stream: str = "stderr",
                     count: int = 1) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            text = self.stderr if stream == "stderr" else self.stdout
            matches = list(regex.finditer(text))
            if len(matches) >= count:
                return matches[count - 1]
            if self.proc.poll() is not None:
                raise AssertionError(f"arbiter exited with {self.proc.returncode} before "
                                     f"logging {pattern!r}:\n{self.stderr[-4000:]}")
            return None

        try:
            return wait_until(found, timeout, message=f"log {pattern!r}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- stderr ---\n{self.stderr[-4000:]}") from None

    @property
    def url(self) -> str:
        return self.wait_for_log(r"Listening at: (https?://\S+)").group(1)

    @property
    def address(self) -> tuple[str, int]:
        match = re.match(r"https?://\[?([^\]]+?)\]?:(\d+)$", self.url)
        assert match
        return match.group(1), int(match.group(2))

    def wait_ready(self, timeout: float = 20.0) -> ArbiterProcess:
        self.wait_for_log(r"all \d+ worker\(s\) ready", timeout)
        return self

    def worker_pids(self) -> list[int]:
        import psutil
        try:
            return sorted(c.pid for c in psutil.Process(self.pid).children()
                          if c.status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return []

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"arbiter did not exit within {timeout} s:\n"
                                 f"{self.stderr[-4000:]}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        else:  # the master is gone; make sure no worker outlives the test
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for reader in self._readers:
            reader.join(5)


@pytest.fixture
def arbiter_process() -> Iterator[Callable[..., ArbiterProcess]]:
    """Factory: ``arbiter_process(["app:app", "--workers", "2"])``; always cleaned up."""
    started: list[ArbiterProcess] = []

    def start(args: list[str], env: dict[str, str] | None = None,
              cwd: Path | str = APPS, bind: bool = True,
              command: list[str] | None = None,
              pass_fds: tuple[int, ...] = ()) -> ArbiterProcess:
        if bind and command is None and not any(a.startswith(("--bind", "-b", "--uds", "--fd", "--port"))
                            for a in args):
            args = [*args, "--bind", "127.0.0.1:0"]
        process = ArbiterProcess(args, env, cwd, command, pass_fds)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()
