"""The real nginx and HAProxy in front of arbiter, for the deploy/ tests.

Each test reads the config file a user would copy from deploy/, rewrites only the
values its comments mark for editing (ports, socket paths, server addresses), and
runs the real program in the foreground with its own files under tmp_path, on a
loopback port. ``rewrite`` insists that every marked value is there exactly once,
so an edit of the shipped file that the test no longer matches fails loudly.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.conftest import REPO, wait_until

DEPLOY = REPO / "deploy"


def shipped(relative: str) -> str:
    return (DEPLOY / relative).read_text()


def rewrite(text: str, replacements: Mapping[str, str]) -> str:
    """Replace each marked value, which must occur exactly once."""
    for old, new in replacements.items():
        count = text.count(old)
        assert count == 1, f"{old!r} occurs {count} times in the shipped file, expected once"
        text = text.replace(old, new)
    return text


def documented_arbiter_args(text: str) -> list[str]:
    """The arbiter command line the shipped file's comments tell a user to run,
    after "arbiter main:app", so the test runs what the file documents."""
    match = re.search(r"^#\s+arbiter main:app (.+)$", text, re.MULTILINE)
    assert match, "the shipped file documents no 'arbiter main:app ...' command line"
    return shlex.split(match.group(1))


def replace_arg(args: list[str], flag: str, value: str) -> list[str]:
    index = args.index(flag)
    return [*args[:index + 1], value, *args[index + 2:]]


def free_port() -> int:
    """A loopback port free a moment ago (nginx and HAProxy cannot be handed a
    socket); a start that lost the race is retried by ``start_front``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def require(program: str) -> str:
    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/local/sbin/{program}") if os.access(p, os.X_OK)),
        None)
    if path is None:
        pytest.skip(f"{program} is not installed (apt-get install {program}; .ci/run installs it)")
    return path


class Front:
    """nginx or HAProxy as a foreground child in its own session; ``stop()`` kills it."""

    def __init__(self, argv: list[str], log_path: Path, port: int) -> None:
        self.argv, self.log_path, self.port = argv, log_path, port
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def listening(self) -> bool:
        if self.proc.poll() is not None:
            raise _Exited(self.log)
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
            except ProcessLookupError:
                pass
        self._log.close()


class _Exited(Exception):
    pass


def start_front(make_argv: Callable[[int], list[str]], log_path: Path,
                started: list[Front]) -> Front:
    """Start on a free port; if another process took the port meanwhile, try another."""
    for _ in range(3):
        port = free_port()
        front = Front(make_argv(port), log_path, port)
        started.append(front)
        try:
            wait_until(front.listening, 15, message=f"{front.argv[0]} listening on {port}")
            return front
        except _Exited as exc:
            if "in use" not in str(exc):
                raise AssertionError(f"{front.argv[0]} exited:\n{exc}") from None
            time.sleep(0.05)  # deliberate (noqa: sleep): a short pause before the next port, not a wait
    raise AssertionError(f"{make_argv(0)[0]} found no free port:\n{log_path.read_text()}")

