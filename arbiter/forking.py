"""Forking one worker: the os.fork and both of its sides.

Apart from the master loop because the fork is where one process becomes two:
signals held across it, the heartbeat pipe split between the two ends, and in the
child the master's signal handling undone and the worker entry point run to an
``os._exit``. What to spawn, and when, is the policy's; the master's bookkeeping of
the new pid (its pipe in the selector, the policy told) stays in ``arbiter.master``.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
from typing import TYPE_CHECKING, Any, NoReturn

from arbiter.config import Config
from arbiter.errors import ExitCode
from arbiter.policy import ExitStatus, Spawn

if TYPE_CHECKING:
    from arbiter.master import Arbiter

log = logging.getLogger("arbiter.error")

# The signals the master installs handlers for: held across the fork, reset in the child.
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN,
                   signal.SIGTTOU, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD)


@dataclasses.dataclass
class WorkerInfo:
    """What a worker hook learns about its worker (gunicorn passes its Worker object).

    ``pid`` is None in pre_fork; ``exit_status`` is set in child_exit and
    ``exit_code`` in worker_exit.
    """

    slot: int
    generation: int
    pid: int | None = None
    exit_status: ExitStatus | None = None
    exit_code: int | None = None
    log: logging.Logger = dataclasses.field(default=log, repr=False)


class ForkFailed(Exception):
    """os.fork() was refused (EAGAIN, ENOMEM): no child, and nothing of it left open."""


def fork_worker(arbiter: Arbiter, spawn: Spawn, config: Config) -> tuple[int, int]:
    """Fork the worker ``spawn`` asks for; in the master, return its pid and the
    non-blocking read end of its heartbeat pipe. The child never returns."""
    read_fd, write_fd = os.pipe()
    if arbiter.config.arbiter().preload:
        gc.freeze()
    # Signals wait across the fork: one sent to the new pid before the child has reset
    # the master's handlers would be queued in the child's copy of the master and lost
    # (a worker superseded 2 ms after its spawn then booted and served on).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    try:
        pid = os.fork()
    except OSError as exc:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(read_fd)
        os.close(write_fd)
        raise ForkFailed(str(exc)) from exc
    if pid == 0:  # child: never returns
        os.close(read_fd)
        _become_worker(arbiter, spawn, config, write_fd, mask)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    os.close(write_fd)
    os.set_blocking(read_fd, False)
    return pid, read_fd


def _become_worker(arbiter: Arbiter, spawn: Spawn, config: Config, heartbeat_fd: int,
                   mask: Any) -> NoReturn:
    code = int(ExitCode.RUNTIME_ERROR)
    info = WorkerInfo(spawn.slot, spawn.generation, os.getpid())
    try:
        signal.set_wakeup_fd(-1)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        # SIGUSR1 (reopen logs) is sent to booting workers too; until the worker's event
        # loop installs its handler, the default action would kill it.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # what waited is delivered now
        arbiter.close_in_child()
        arbiter.call_hook("post_fork", info, config=config)
        code = arbiter.worker_entry(spawn.slot, spawn.generation, config,
                                    [listener.sock for listener in arbiter.listeners],
                                    heartbeat_fd, arbiter.preloaded_app)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        log.exception("worker %d crashed", spawn.slot)
    finally:
        info.exit_code = code
        arbiter.call_hook("worker_exit", info, config=config)
        from arbiter import logs
        logs.flush()
        os._exit(code)
