"""Worker: the plug-in contract between the master and a worker process.

Everything a worker does after the fork that is not about a protocol lives
here: process title, parent-death signal, faulthandler for SIGABRT, event-loop
signal handlers, --umask and the switch to --user/--group (before the app is
imported), and the heartbeat timer that runs *on the event loop* (so a loop
blocked by app code goes silent and the master's --timeout catches it).
The --warn-blocking watcher (workers/stall.py) runs from ready until serve() returns.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from arbiter import process
from arbiter.config import WorkerConfig
from arbiter.errors import AppLoadError, BootError, ExitCode
from arbiter.heartbeat import HeartbeatWriter, Kind, Load, MasterGone, tick_interval_s
from arbiter.importer import load_app
from workers.stall import LoopStallWatcher
from workers.stopping import StopReason

# the signals the event loop handles (install_signal_handlers)
LOOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGUSR2, signal.SIGINT, signal.SIGQUIT,
                          signal.SIGUSR1})

log = logging.getLogger("arbiter.error")


class Worker:
    """Base class of every worker; subclass it to plug in your own.

    The master forks, then calls ``WorkerClass(**kwargs).run()`` in the child
    and exits with the code it returns. Keyword arguments, all stable API:

    - ``slot`` (1..N) and ``generation``: the worker's place and reload epoch;
    - ``config``: the frozen ``arbiter.config.WorkerConfig`` slice;
    - ``sockets``: the listening sockets bound by the master (never close or
      unlink the originals: the master keeps serving them to other workers);
    - ``heartbeat_fd``: the write end of this worker's pipe to the master;
    - ``master_pid``: to notice the master's death;
    - ``app``: the app object when the master preloaded it, else None.

    A subclass implements ``async def serve(self) -> int``. It must call
    ``self.notify_ready()`` once it is serving (the app imported, lifespan
    startup done), then await ``self.stop_requested`` and stop: gracefully
    unless ``self.quick_stop`` is set. ``self.stop_reason`` says why: STOP
    (SIGTERM, the server is going away: honour --shutdown-delay, close
    WebSockets with 1001) or RETIRE (SIGUSR2, a reload, recycling or
    scale-down: drain at once, 1012). It should call ``self.notify_served()``
    once, when its first response is complete (so the master tells a healthy
    worker from a crash loop). ``load_counters()`` feeds the TICK
    frames (requests served, open connections), and ``load_details()`` the
    metrics (in-flight requests, responses by status class). Raise ``AppLoadError`` (exit
    4) or ``BootError`` (exit 3) when the app cannot start. Set
    ``loop_factory`` to choose the event loop. ``blocked_loop_warnings``
    counts the stalls --warn-blocking caught (one per stall, rate-limited
    out of the log or not). ``warm(config)``, a classmethod, imports what the
    worker needs besides the app: the master calls it once before forking, and
    ``import_stack()`` again before a worker gives up root (``drop_privileges``).
    """

    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop

    def __init__(self, *, slot: int, generation: int, config: WorkerConfig,
                 sockets: list[Any], heartbeat_fd: int, master_pid: int,
                 app: Any = None) -> None:
        self.slot = slot
        self.generation = generation
        self.config = config
        self.sockets = sockets
        self.heartbeat = HeartbeatWriter(heartbeat_fd)
        self.master_pid = master_pid
        self.app = app
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_requested: asyncio.Event | None = None
        self.quick_stop = False
        self.stop_reason: StopReason | None = None  # the first stop signal's, kept
        self.started_at = time.monotonic()  # about when the master forked us
        self.ready = False
        self._stall_watcher: LoopStallWatcher | None = None
        self._tick_interval_s = tick_interval_s(config.timeout_s)
        self._tick_due = 0.0  # when the heartbeat timer should fire next (monotonic)
        self._loop_lag_us = 0  # how late it fired last time

    @classmethod
    def warm(cls, config: WorkerConfig) -> None:
        """Import what every worker of this class needs, in the master, before any fork.

        The master calls it once, after resolving the class: each fork then
        starts with these modules loaded, so a replacement worker (after a
        kill, a recycling, a reload) boots in the time its app takes. Never
        import the app here: a reload must load the app's new code. The base
        class needs nothing beyond what the master has; a subclass that
        overrides it calls ``super().warm(config)``.
        """

    # ------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Post-fork setup, then run ``serve()`` on a fresh event loop."""
        self.setup_process()
        try:
            self.heartbeat.send(Kind.BOOTED)
            loop = type(self).loop_factory()
            self.loop = loop
            asyncio.set_event_loop(loop)
            self.stop_requested = asyncio.Event()
            # uvloop drops a signal that arrives after add_signal_handler but before the
            # loop runs (a worker superseded while it boots then served on): they wait,
            # blocked, and are delivered in the loop's first turn
            unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, LOOP_SIGNALS)
            self.install_signal_handlers(loop)
            loop.call_soon(signal.pthread_sigmask, signal.SIG_SETMASK, unblocked)
            self.drop_privileges()
            try:
                return loop.run_until_complete(self.serve())
            finally:
                self._send_final_counters()
                self._stop_stall_watcher()
                self.cancel_leftover_tasks(loop)
                loop.close()
        except AppLoadError as exc:
            self._report_boot_failure(_describe(exc))
            return ExitCode.APP_LOAD_ERROR
        except BootError as exc:
            self._report_boot_failure(str(exc))
            return ExitCode.BOOT_ERROR
        except MasterGone:
            log.warning("worker %d: the master is gone; exiting", self.slot)
            return ExitCode.OK

    async def serve(self) -> int:
        raise NotImplementedError

    def _report_boot_failure(self, text: str) -> None:
        """The master logs it (once, however many workers fail the same way)."""
        try:
            self.heartbeat.send_error(text)
        except MasterGone:
            log.error("worker %d failed to boot: %s", self.slot, text)

    def setup_process(self) -> None:
        process.set_title(f"arbiter: worker {self.slot} [{self.config.proc_name}]")
        process.prctl(process.PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != self.master_pid:
            raise SystemExit(0)  # the master died between fork and prctl
        # SIGABRT from the master (--timeout) dumps every thread's traceback, then dies
        faulthandler.enable(file=_error_stream(), all_threads=True)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the master decides about reloads
        signal.signal(signal.SIGTTIN, signal.SIG_IGN)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        # SIGUSR2 means "retire"; the loop handler takes it from install_signal_handlers
        # on (before READY: the master sends it to ready workers only); until then a
        # stray one must not kill a booting worker
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)

    def drop_privileges(self) -> None:
        """--umask, then --user/--group: after the fork, the event loop and the
        worker's own imports, before the app is imported, so no app code runs as
        root. The service user may be unable to read the Python installation (a
        venv under /root), so every module the worker needs later is imported
        first (``import_stack``); the app's own modules must be readable by it."""
        privileges = self.config.privileges
        if privileges.umask is not None:
            os.umask(privileges.umask)
        if not privileges.switches or os.geteuid() != 0:
            return  # not root: the master allowed only the ids it already has
        self.import_stack()
        try:
            process.switch_user(privileges.uid, privileges.gid, privileges.groups)
        except OSError as exc:
            raise BootError(f"cannot switch to --user {privileges.user or '(unchanged)'} "
                            f"--group {privileges.gid}: {exc.strerror or exc}") from None
        # a change of credentials clears the parent-death signal: arm it again
        process.prctl(process.PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != self.master_pid:
            raise SystemExit(0)

    def import_stack(self) -> None:
        """Import the modules this worker needs besides the app (its protocol stack,
        parsers): called before the switch to --user, while they are readable. That
        is what ``warm`` imports; the master warmed its class already, but a reload
        may have named another."""
        type(self).warm(self.config)

    def install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        """The handlers of every signal in ``LOOP_SIGNALS``."""
        loop.add_signal_handler(signal.SIGTERM, self.request_stop, False, StopReason.STOP)
        loop.add_signal_handler(signal.SIGUSR2, self.request_stop, False, StopReason.RETIRE)
        loop.add_signal_handler(signal.SIGINT, self.request_stop, True)
        loop.add_signal_handler(signal.SIGQUIT, self.request_stop, True)
        loop.add_signal_handler(signal.SIGUSR1, self.reopen_logs)

    def request_stop(self, quick: bool, reason: StopReason = StopReason.STOP) -> None:
        self.quick_stop = self.quick_stop or quick
        if self.stop_reason is None:
            self.stop_reason = reason
        assert self.stop_requested is not None
        self.stop_requested.set()

    def reopen_logs(self) -> None:
        """SIGUSR1: reopen every log file handler the master installed before the fork
        (any handler with a ``reopen()`` method), then point faulthandler at the new one."""
        for name in ("arbiter.error", "arbiter.access"):
            for handler in logging.getLogger(name).handlers:
                reopen = getattr(handler, "reopen", None)
                if reopen is not None:
                    reopen()
        faulthandler.enable(file=_error_stream(), all_threads=True)

    # ------------------------------------------------------------ heartbeat

    def notify_ready(self) -> None:
        """Tell the master this worker serves; start the event-loop heartbeat.

        What is alive by now (the app and its imports, the heap inherited from the
        master) lives as long as the worker: ``gc.freeze()`` takes it out of the cyclic
        collector, so a full collection under load walks what requests made, not 50k
        boot objects (15 ms with FastAPI, each one a pause for every request in flight),
        and never writes to the pages the worker shares with the master."""
        gc.freeze()
        self._send(Kind.READY)
        self.ready = True
        assert self.loop is not None
        self._tick_due = time.monotonic() + self._tick_interval_s
        self.loop.call_later(self._tick_interval_s, self._tick)
        if self.config.warn_blocking_s > 0 and self._stall_watcher is None:
            self._stall_watcher = LoopStallWatcher(
                self.loop, self.config.warn_blocking_s, f"worker {self.slot} (pid {os.getpid()})")
            self._stall_watcher.start()

    @property
    def blocked_loop_warnings(self) -> int:
        """Stalls past --warn-blocking so far (a total for the heartbeat, later metrics)."""
        return self._stall_watcher.stalls if self._stall_watcher is not None else 0

    def _stop_stall_watcher(self) -> None:
        if self._stall_watcher is not None:
            self._stall_watcher.stop()

    def notify_served(self) -> None:
        """Call once, when the first response is complete. A worker that dies after
        it is replaced at once; one that dies before is crash-looping (backoff). The
        next TICK would say so too, but too late for a worker killed within a second."""
        try:
            self._send(Kind.SERVED)
        except MasterGone:
            pass

    def notify_draining(self) -> None:
        try:
            self._send(Kind.DRAINING)
        except MasterGone:
            pass

    def load_counters(self) -> tuple[int, int]:
        """(requests served, open connections), both so far."""
        return 0, 0

    def load_details(self) -> tuple[int, Sequence[int]]:
        """(in-flight requests, responses written by class: 2xx, 3xx, 4xx, 5xx)."""
        return 0, ()

    def _send(self, kind: Kind) -> None:
        requests, connections = self.load_counters()
        in_flight, responses = self.load_details()
        self.heartbeat.send(kind, requests, connections, Load(
            in_flight, self._loop_lag_us, self.blocked_loop_warnings, *responses[:4]))

    def _send_final_counters(self) -> None:
        """What was served since the last TICK counts too (the master's totals)."""
        if self.ready:
            try:
                self._send(Kind.TICK)
            except MasterGone:
                pass

    def _tick(self) -> None:
        assert self.loop is not None
        now = time.monotonic()
        self._loop_lag_us = max(0, int((now - self._tick_due) * 1e6))
        try:
            self._send(Kind.TICK)
        except MasterGone:
            self._master_gone()
            return
        if os.getppid() != self.master_pid:
            self._master_gone()
            return
        self._tick_due = now + self._tick_interval_s
        self.loop.call_later(self._tick_interval_s, self._tick)

    def _master_gone(self) -> None:
        if not (self.stop_requested and self.stop_requested.is_set()):
            log.warning("worker %d: the master is gone; stopping", self.slot)
            self.request_stop(False)

    # ------------------------------------------------------------ app loading

    def load_app(self) -> Any:
        """Import the app named in the config (or use the preloaded one)."""
        if self.app is not None:
            return self.app
        return load_app(self.config.app, self.config.app_dir, self.config.factory)

    @staticmethod
    def cancel_leftover_tasks(loop: asyncio.AbstractEventLoop) -> None:
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def _describe(exc: AppLoadError) -> str:
    cause = exc.__cause__
    if cause is None or isinstance(cause, ModuleNotFoundError):
        return str(exc)
    import traceback
    detail = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
    return f"{exc}\n{detail.rstrip()}"


def _error_stream() -> Any:
    for handler in logging.getLogger("arbiter.error").handlers:
        stream = getattr(handler, "stream", None)
        if stream is not None and hasattr(stream, "fileno"):
            try:
                stream.fileno()
            except (OSError, ValueError):
                continue
            return stream
    return sys.stderr

