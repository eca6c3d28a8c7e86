"""Re-executing the master in place (SIGUSR2, a --preload SIGHUP), and the hand-over.

A re-exec replaces this very process: if the new program could not start (a
broken config file, app code that no longer imports under --preload) the
listeners would close and the workers lose their master. So the new command
line is first run with --check-config in a child -- the same config load and
app import the new master would do -- and only a clean exit leads to the exec.
The check runs beside the master loop; its exit is reaped like any child's.

Every worker is handed over, whatever its phase: ready ones keep serving under
the new master until its first generation replaces them; booting ones (a
reload's canary, say) are retired gracefully there; retiring ones finish their
drain. Nothing is killed on the way, so no request fails.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

from arbiter import metrics_server, sockets, systemd
from arbiter.policy import Phase

if TYPE_CHECKING:
    from arbiter.master import Arbiter

log = logging.getLogger("arbiter.error")

ADOPT_ENV = "ARBITER_ADOPT_WORKERS"
_PHASES = {Phase.BOOTING: "booting", Phase.READY: "ready", Phase.RETIRING: "retiring"}


@dataclasses.dataclass
class _Precheck:
    """A running ``--check-config`` of the new command line, before a re-exec."""

    pid: int
    output: Any  # a temporary file holding its stdout and stderr
    deadline: float
    reload_hook: bool  # a --preload SIGHUP: call on_reload once the check passes
    started: float = dataclasses.field(default_factory=time.monotonic)


@dataclasses.dataclass(frozen=True)
class Handed:
    """One worker as the previous master handed it over."""

    pid: int
    slot: int
    fd: int
    phase: Phase


def encode_handover(workers: list[Handed]) -> str:
    return ",".join(f"{w.pid}:{w.slot}:{w.fd}:{_PHASES[w.phase]}" for w in workers)


def decode_handover(spec: str) -> list[Handed]:
    """``pid:slot:fd[:phase]`` items; a master before phases handed over ready ones only."""
    by_name = {name: phase for phase, name in _PHASES.items()}
    handed = []
    for item in filter(None, spec.split(",")):
        pid, slot, fd, *rest = item.split(":")
        handed.append(Handed(int(pid), int(slot), int(fd),
                             by_name.get(rest[0], Phase.READY) if rest else Phase.READY))
    return handed


class Reexec:
    """The pre-flight check and the exec of one master (the Arbiter owns one)."""

    def __init__(self, arbiter: Arbiter) -> None:
        self.arbiter = arbiter
        self.check: _Precheck | None = None
        self.execing = False  # set just before exec: the master must not clean up

    def deadline(self) -> float | None:
        return self.check.deadline if self.check is not None else None

    def request(self, now: float, reload_hook: bool) -> str | None:
        """Start the pre-flight check of the new command line (a newer request restarts it).

        Returns why it could not start; a later cancellation is told to the control socket.
        """
        a = self.arbiter
        if a.reexec_argv is None:
            log.error("cannot re-exec a master started from Python; ignoring the signal")
            return "cannot re-exec a master started from Python"
        if a.policy.stopping:
            return "the server is stopping"
        if self.check is not None:  # a newer request: check the newest code instead
            log.info("re-exec: restarting the pre-flight check for the newest code")
            self.stop_check()
        output = tempfile.TemporaryFile()
        argv = [sys.executable, *a.reexec_argv, "--check-config"]
        try:
            pid = os.posix_spawn(sys.executable, argv, dict(os.environ), file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, output.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, output.fileno(), 2)])
        except OSError as exc:
            output.close()
            log.error("re-exec cancelled: cannot run the pre-flight check: %s", exc)
            return f"re-exec cancelled: cannot run the pre-flight check: {exc}"
        systemd.reloading("checking the new master before re-executing")
        timeout = a.config.arbiter().boot_timeout_s or 60.0
        self.check = _Precheck(pid, output, now + timeout, reload_hook)
        log.info("re-exec: checking that the new master starts (config and app load, pid %d)",
                 pid)
        return None

    def child_exited(self, pid: int, status: int) -> bool:
        """True if ``pid`` was the pre-flight check (then exec, or say why not)."""
        check = self.check
        if check is None or pid != check.pid:
            return False
        self.check = None
        check.output.seek(0)
        text = check.output.read().decode("utf-8", "replace").strip()
        check.output.close()
        code = os.waitstatus_to_exitcode(status)
        stopping = self.arbiter.policy.stopping
        if code == 0 and not stopping:
            if check.reload_hook:
                self.arbiter.call_hook("on_reload")
            self._exec()
            return True
        if stopping:
            return True
        lines = [line for line in text.splitlines() if line.strip()]
        why = "\n".join(lines[-12:]) or f"exit status {code}"
        log.error("re-exec cancelled: the new master would not start (check exited with %s); "
                  "this master and its workers keep serving:\n%s", code, why)
        systemd.ready("re-exec cancelled: the new master would not start")
        self.arbiter.control.reexec_cancelled(
            f"re-exec cancelled: the new master would not start (check exited with {code}): "
            f"{lines[-1] if lines else why}")
        return True

    def poll(self, now: float) -> None:
        check = self.check
        if check is None:
            return
        if self.arbiter.policy.stopping:
            self.stop_check()
        elif now > check.deadline:
            log.error("re-exec cancelled: the pre-flight check did not finish within %.0f s",
                      check.deadline - check.started)
            self.stop_check()
            systemd.ready("re-exec cancelled: the check timed out")
            self.arbiter.control.reexec_cancelled(
                f"re-exec cancelled: the pre-flight check did not finish within "
                f"{check.deadline - check.started:.0f} s")

    def stop_check(self) -> None:
        check, self.check = self.check, None
        if check is None:
            return
        try:
            os.kill(check.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        check.output.close()  # its exit is then reaped quietly, as a stranger's

    def _exec(self) -> None:
        """Replace this master's program in place (same PID), keeping listeners and workers."""
        a = self.arbiter
        if a.reexec_argv is None or a.policy.stopping:
            return
        a.read_all_pipes()  # a READY or DRAINING written just now decides the phase
        handed = []
        for pid, pipe in a.pipes.items():
            record = a.policy.workers.get(pid)
            if record is None:
                continue
            os.set_inheritable(pipe.fd, True)
            handed.append(Handed(pid, record.slot, pipe.fd, record.phase))
        env = dict(os.environ)
        env.update(sockets.export_for_exec(a.listeners))
        env.update(a.notifier.exec_environ(os.getpid()))
        env.update(a.control.export_for_exec())
        env.update(metrics_server.export_for_exec(a.metrics, a.ledger,
                                                  a.policy.workers.values()))
        env[ADOPT_ENV] = encode_handover(handed)
        log.info("re-executing the master in place (pid %d), handing over %d listener(s) and "
                 "%d worker(s)", os.getpid(), len(a.listeners), len(handed))
        systemd.reloading("re-executing the master")
        from arbiter import logs
        logs.flush()
        signal.set_wakeup_fd(-1)
        self.execing = True
        try:
            os.execve(sys.executable, [sys.executable, *a.reexec_argv], env)
        except OSError as exc:
            self.execing = False
            signal.set_wakeup_fd(a.wakeup_fd, warn_on_full_buffer=False)
            for w in handed:
                os.set_inheritable(w.fd, False)
            if a.metrics is not None:
                a.metrics.exec_failed()
            log.error("re-exec failed, the current master keeps running: %s", exc)
            a.control.exec_failed(f"re-exec failed: {exc}")


def take_handover(environ: Any) -> list[Handed]:
    """The workers a previous master of this process handed over (the variable is removed)."""
    handed = decode_handover(environ.pop(ADOPT_ENV, ""))
    for w in handed:
        os.set_inheritable(w.fd, False)
        os.set_blocking(w.fd, False)
    return handed
