"""A stop signal that reaches a worker while it boots, after its event loop's
handlers are installed but before the loop runs, is not lost.

uvloop drops a signal delivered in that window (its handler never runs), so a
worker the master superseded 2 ms after the fork booted anyway and served on,
and the reload waited for it. Each case runs in a fresh interpreter: the worker
sends the signal to itself from ``drop_privileges``, the step between installing
the handlers and running the loop, then waits (bounded) for its stop request.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import asyncio, os, signal, sys
from arbiter.config import resolve
from workers.asgi import AsyncioWorker, UvloopWorker

base = UvloopWorker if sys.argv[1] == "uvloop" else AsyncioWorker
sig = signal.Signals[sys.argv[2]]

class EarlySignalled(base):
    def drop_privileges(self):
        os.kill(os.getpid(), sig)  # arrives before the loop runs

    async def serve(self):
        try:
            await asyncio.wait_for(self.stop_requested.wait(), 5)
        except asyncio.TimeoutError:
            print("stop never requested")
            return 1
        print("stopped:", self.stop_reason.name)
        return 0

config = resolve({}, {}, {}, overrides=dict(app="basic:app")).worker()
read_fd, write_fd = os.pipe()
worker = EarlySignalled(slot=1, generation=1, config=config, sockets=[],
                        heartbeat_fd=write_fd, master_pid=os.getppid())
sys.exit(worker.run())
"""


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("sig, reason", [("SIGTERM", "STOP"), ("SIGUSR2", "RETIRE")])
def test_a_stop_signal_before_the_loop_runs_still_stops_the_worker(
        loop: str, sig: str, reason: str) -> None:
    done = subprocess.run([sys.executable, "-c", PROBE, loop, sig], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().splitlines()[-1] == f"stopped: {reason}"
