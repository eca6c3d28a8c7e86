"""The Arbiter: the master process loop.

Sleep until the next deadline, a heartbeat frame or a signal; feed what
happened to the policy (``arbiter.policy``); carry out its actions with fork,
kill and waitpid. Signal handlers only enqueue the signal number; the loop does
the work. This module owns processes, not decisions; the fork itself (both of its
sides) is in ``arbiter.forking``.

Config-file hooks keep gunicorn's names, arguments and moments: on_starting,
when_ready (listeners bound, before the first fork), pre_fork, post_fork (in
the worker), on_reload, worker_exit (in the worker), child_exit (in the master)
and on_exit. A hook gets the Arbiter and, for worker hooks, a ``WorkerInfo``.
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from arbiter import __version__, control_server, heartbeat, metrics, metrics_server, pidfile
from arbiter import forking, process, reexec, sockets, systemd
from arbiter.config import Config, PrivilegesConfig
from arbiter.errors import UsageError
from arbiter.forking import HANDLED_SIGNALS, WorkerInfo
from arbiter.policy import (
    Action, ExitStatus, Halt, Kill, Log, PolicyConfig, ReloadDone, ReloadFailed, Spawn,
    Supervisor,
)

log = logging.getLogger("arbiter.error")

RSS_SAMPLE_INTERVAL_S = 1.0

# A worker entry point: (slot, generation, config, listeners, heartbeat fd, preloaded app) -> code
WorkerEntry = Callable[[int, int, Config, list[Any], int, Any], int]


class _WorkerPipe:
    __slots__ = ("pid", "fd", "decoder")

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd, self.decoder = pid, fd, heartbeat.FrameDecoder()


class Arbiter:
    """Supervises the workers of one server, from bind to exit."""

    def __init__(self, config: Config, *, worker_entry: WorkerEntry,
                 reload_config: Callable[[], Config] | None = None,
                 reexec_argv: list[str] | None = None,
                 preloaded_app: Any = None, worker_class_name: str = "") -> None:
        self.config = config
        self.worker_class_name = worker_class_name or config["worker_class"]
        self.worker_entry = worker_entry
        self.reload_config = reload_config
        self.reexec_argv = reexec_argv
        self.preloaded_app = preloaded_app
        self.listeners: list[sockets.Listener] = []
        self.pipes: dict[int, _WorkerPipe] = {}
        self.configs: dict[int, Config] = {}
        self.selector = selectors.DefaultSelector()
        self.signals: collections.deque[int] = collections.deque()
        self._wakeup_r = self._wakeup_w = -1
        self._next_rss_sample = 0.0
        self._announced_ready = False
        self.notifier = systemd.Notifier(os.environ, os.getpid(), time.monotonic())
        self._listeners_closed = False
        self.reexec = reexec.Reexec(self)
        self.control = control_server.ControlServer(self)
        self.ledger = metrics.Ledger()  # totals that outlive workers (and re-execs)
        self.metrics: metrics_server.MetricsServer | None = None
        self.reloader: Any = None
        self.log = log  # for hooks written for gunicorn (server.log.info(...))
        arb = config.arbiter()
        self.policy = Supervisor(self._policy_config(config), time.monotonic())
        self.pid_file = arb.pid_file

    @property
    def pid(self) -> int:
        return os.getpid()

    # ---------------------------------------------------------------- setup

    @staticmethod
    def _policy_config(config: Config) -> PolicyConfig:
        a = config.arbiter()
        return PolicyConfig(
            workers=a.workers, timeout_s=a.timeout_s, boot_timeout_s=a.boot_timeout_s,
            graceful_timeout_s=a.graceful_timeout_s, shutdown_delay_s=a.shutdown_delay_s,
            max_requests=a.max_requests,
            max_requests_jitter=a.max_requests_jitter, max_rss_mib=a.max_rss_mib,
            max_lifetime_s=a.max_lifetime_s, max_recycling=a.max_recycling)

    def start(self) -> None:
        """Bind (or adopt) listeners and install signal handling. Raises typed errors."""
        arb = self.config.arbiter()
        check_privileges(arb.privileges, os.geteuid(), os.getegid())
        self.call_hook("on_starting")
        self.listeners = sockets.open_listeners(arb.addresses, arb.backlog, arb.uds_mode,
                                                os.environ, arb.privileges.owner)
        try:
            self.control.open(arb.control_socket, os.environ)
        except BaseException:
            for listener in self.listeners:
                listener.close(unlink=True)
            raise
        self._start_metrics(arb)
        if self.pid_file:
            pidfile.write(self.pid_file, os.getpid())
        os.environ.pop(sockets.INHERIT_ENV, None)
        for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            os.environ.pop(name, None)
        # Adopt orphaned descendants of workers (Linux), so they are reaped here and not
        # by a PID 1 that may never reap (a container's entry point): no zombies.
        if not process.prctl(process.PR_SET_CHILD_SUBREAPER, 1):
            log.debug("prctl(PR_SET_CHILD_SUBREAPER) is not available here")
        self._wakeup_r, self._wakeup_w = os.pipe()
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)
        self.selector.register(self._wakeup_r, selectors.EVENT_READ)
        signal.set_wakeup_fd(self._wakeup_w, warn_on_full_buffer=False)
        for sig in HANDLED_SIGNALS:
            signal.signal(sig, self._enqueue_signal)
        self.configs[self.policy.generation] = self.config
        self._adopt_workers()
        if arb.reload:
            # A .pyc written now would record the source mtime in whole seconds (plus the
            # size), so a same-size save within that second would import as the old code.
            # Development only: compiling without a cache is cheap. Workers inherit this.
            sys.dont_write_bytecode = True
            self.reloader = self._make_reloader(self.config)
        process.set_title(f"arbiter: master [{arb.proc_name}]")
        for listener in self.listeners:
            log.info("Listening at: %s (%d)", listener.url(tls=self.config.http().tls is not None),
                     os.getpid())
        if self.metrics is not None:
            log.info("Metrics at: %s", self.metrics.url())
        log.info("Using worker class %s, %d worker(s)", self.worker_class_name, arb.workers)
        log.debug("listener fds %s; --timeout %g s, --boot-timeout %g s, --graceful-timeout "
                  "%g s", [listener.sock.fileno() for listener in self.listeners],
                  arb.timeout_s, arb.boot_timeout_s, arb.graceful_timeout_s)
        if os.geteuid() == 0 and arb.privileges.uid is None:
            log.warning("the workers run as root: give --user (and --group) so that the app "
                        "runs unprivileged; the master binds first and stays root")
        self.call_hook("when_ready")

    def _start_metrics(self, arb: Any) -> None:
        """--metrics-bind: bound (or adopted after a re-exec) once; off without it."""
        self.ledger = metrics_server.take_ledger(os.environ)
        try:
            self.metrics = metrics_server.start(
                arb.metrics_address, arb.uds_mode, os.environ, self.selector,
                self.render_metrics, time.monotonic)
        except BaseException:
            for listener in self.listeners:
                listener.close(unlink=True)
            self.control.close()
            raise

    def render_metrics(self) -> str:
        workers = list(self.policy.workers.values())
        return metrics.render(workers, self.policy.generation, self.ledger.totals(workers),
                              __version__)

    @staticmethod
    def _watch_spec(config: Config) -> tuple[Any, ...]:
        a = config.arbiter()
        return (a.reload_dirs or (config["app_dir"],), a.reload_include, a.reload_exclude)

    def _make_reloader(self, config: Config) -> Any:
        from arbiter.reloader import make_reloader
        if self.reloader is not None:
            self.reloader.close()
        reloader = make_reloader(*self._watch_spec(config))
        log.info("--reload: watching %s for %s (excluding %s), by %s",
                 ", ".join(str(d) for d in reloader.dirs), " ".join(reloader.include),
                 " ".join(reloader.exclude) or "nothing", reloader.backend)
        return reloader

    def call_hook(self, name: str, *args: Any, config: Config | None = None) -> None:
        """Call a config-file hook; one that raises is logged, never fatal."""
        hook = (config or self.config).hooks.get(name)
        if hook is None:
            return
        try:
            hook(self, *args)
        except Exception:
            log.exception("hook %s raised; carrying on", name)

    def _enqueue_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)

    # ---------------------------------------------------------------- loop

    def run(self) -> int:
        """Supervise until stopped; returns the exit code."""
        try:
            self.start_loop_actions()
            while True:
                now = time.monotonic()
                timeout = self._sleep_budget(now)
                for key, mask in self.selector.select(timeout):
                    if key.fd == self._wakeup_r:
                        _drain(self._wakeup_r)
                    elif isinstance(key.data, _WorkerPipe):
                        self._read_pipe(key.data)
                    else:  # a socket the master serves (control, metrics): its handler
                        key.data(mask)
                now = time.monotonic()
                while self.signals:
                    self._handle_signal(self.signals.popleft(), now)
                self._reap(now)
                self._close_listeners_once_stopping()
                self.reexec.poll(now)
                self._sample_rss(now)
                if self.metrics is not None:
                    self.metrics.poll(now)
                self._poll_reloader(now)
                code = self._execute(self.policy.tick(time.monotonic()))
                if code is not None:
                    return code
                self._notify_systemd(time.monotonic())
                self.control.poll(time.monotonic())
        finally:
            self._cleanup()

    def start_loop_actions(self) -> None:
        self._execute(self.policy.tick(time.monotonic()))

    def _sleep_budget(self, now: float) -> float:
        budget = self.policy.next_deadline(now) - now
        check_deadline = self.reexec.deadline()
        if check_deadline is not None:
            budget = min(budget, check_deadline - now)
        if self._samples_rss():
            budget = min(budget, max(0.0, self._next_rss_sample - now))
        if self.metrics is not None and self.metrics.deadline() is not None:
            budget = min(budget, self.metrics.deadline() - now)  # type: ignore[operator]
        if self.reloader is not None:
            from arbiter.reloader import POLL_INTERVAL_S
            budget = min(budget, POLL_INTERVAL_S)
        notify_deadline = self.notifier.deadline(self.policy, self._announced_ready, now)
        if notify_deadline is not None:
            budget = min(budget, notify_deadline - now)
        control_deadline = self.control.deadline()
        if control_deadline is not None:
            budget = min(budget, control_deadline - now)
        return max(0.0, budget)

    def _notify_systemd(self, now: float) -> None:
        """WATCHDOG=1, EXTEND_TIMEOUT_USEC= and STATUS= when due, and the process title."""
        self.notifier.poll(self.policy, self._announced_ready, self.config.proc_name, now)

    def _read_pipe(self, pipe: _WorkerPipe) -> None:
        try:
            data = os.read(pipe.fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close_pipe(pipe.pid)
            return
        now = time.monotonic()
        for frame in pipe.decoder.feed(data):
            self._execute(self.policy.frame(pipe.pid, frame, now))

    def _close_pipe(self, pid: int) -> None:
        pipe = self.pipes.pop(pid, None)
        if pipe is not None:
            self.selector.unregister(pipe.fd)
            os.close(pipe.fd)

    def _reap(self, now: float) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            pipe = self.pipes.get(pid)
            if pipe is not None:  # frames written just before death still count
                self._read_pipe(pipe)
                self._close_pipe(pid)
            if self.reexec.child_exited(pid, status):
                continue
            record = self.policy.workers.get(pid)
            if record is None:  # an orphan adopted as subreaper
                log.debug("reaped pid %d (not a worker)", pid)
                continue
            self.ledger.worker_gone(record)
            if os.WIFSIGNALED(status):
                exit_status = ExitStatus(sig=os.WTERMSIG(status))
            else:
                exit_status = ExitStatus(code=os.waitstatus_to_exitcode(status))
            self._execute(self.policy.worker_exited(pid, exit_status, now))
            self.call_hook("child_exit", WorkerInfo(record.slot, record.generation, pid,
                                                exit_status=exit_status))

    def _samples_rss(self) -> bool:
        """For --max-rss, and for what --metrics-bind and `arbiter status` show."""
        return (self.metrics is not None or self.control.listener is not None
                or bool(self.config.arbiter().max_rss_mib))
    def _close_listeners_once_stopping(self) -> None:
        """A stop refuses new connections at once. The workers close their copies of
        the listeners; the master's copy, kept open until it exits, would let the
        kernel complete handshakes nobody accepts, then reset them at the exit. A
        load balancer sends a refused connection to another server; a reset one
        is lost. (Socket activation: systemd's own copy keeps queueing.)"""
        if self.policy.stopping and not self._listeners_closed:
            self._listeners_closed = True
            for listener in self.listeners:
                listener.close(unlink=True)

    def _sample_rss(self, now: float) -> None:
        if now < self._next_rss_sample or not self._samples_rss():
            return
        self._next_rss_sample = now + RSS_SAMPLE_INTERVAL_S
        import psutil
        for pid in self.policy.pids():
            try:
                rss = psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
            self.policy.rss_sample(pid, rss)

    def _poll_reloader(self, now: float) -> None:
        if self.reloader is None or self.policy.stopping:
            return
        changed = self.reloader.changed()
        if changed:
            log.info("--reload: %s changed; reloading", ", ".join(changed[:3]))
            self._reload(now)

    # ---------------------------------------------------------------- signals

    def _handle_signal(self, signum: int, now: float) -> None:
        sig = signal.Signals(signum)
        if sig == signal.SIGCHLD:
            return  # reaping happens every pass
        if sig == signal.SIGUSR1:  # reopen first, so this line lands in the new file
            count = self.reopen_logs()
            log.info("received SIGUSR1: log files reopened here and signalled to %d worker(s)",
                     count)
            return
        log.info("received %s", sig.name)
        if sig == signal.SIGTERM:
            self.request_stop(graceful=True, now=now)
        elif sig in (signal.SIGINT, signal.SIGQUIT):
            self.request_stop(graceful=False, now=now)
        elif sig == signal.SIGHUP:
            self.request_reload(now)
        elif sig == signal.SIGTTIN:
            self.request_scale(+1, now)
        elif sig == signal.SIGTTOU:
            self.request_scale(-1, now)
        elif sig == signal.SIGUSR2:
            self.reexec.request(now, reload_hook=False)

    # What a signal asks for, one method each; the control socket's commands call the same.

    def reopen_logs(self) -> int:
        """Reopen log files here and tell every worker to; returns how many were told."""
        from arbiter import logs
        logs.reopen()
        workers = list(self.policy.pids())
        self._execute([Kill(pid, signal.SIGUSR1) for pid in workers])
        return len(workers)

    def request_stop(self, graceful: bool, now: float) -> None:
        systemd.stopping("graceful stop" if graceful else "quick stop")
        self._execute(self.policy.stop(graceful=graceful, now=now))

    def request_scale(self, delta: int, now: float) -> None:
        self._execute(self.policy.scale(delta, now))

    def request_reload(self, now: float) -> str | None:
        """A rolling reload (a re-exec under --preload); returns why it did not start."""
        if self.config.arbiter().preload:
            log.info("--preload: a reload must load new code, so re-executing the master")
            return self.reexec.request(now, reload_hook=True)
        return self._reload(now)

    def _reload(self, now: float) -> str | None:
        if self.policy.stopping:
            return "the server is stopping"
        systemd.reloading("reloading")
        new_config = self.config
        if self.reload_config is not None:
            try:
                new_config = self.reload_config()
            except Exception as exc:  # a broken config file must not stop the service
                log.error("reload: cannot load the new config, keeping the old one: %s", exc)
                self.notifier.note = "last reload failed: invalid config"
                systemd.ready("reload failed: invalid config; old generation serving")
                self.ledger.lifecycle("reload_aborted", ())
                return f"reload: cannot load the new config, keeping the old one: {exc}"
        if new_config.addresses != self.config.addresses:
            log.warning("reload: bind addresses changed; that takes a restart, keeping the "
                        "current listeners")
        if new_config["metrics_bind"] != self.config["metrics_bind"]:
            log.warning("reload: --metrics-bind changed; that takes a restart (or a SIGUSR2), "
                        "keeping the current metrics listener")
        if self.reloader is not None and self._watch_spec(new_config) != self._watch_spec(
                self.config):
            self.reloader = self._make_reloader(new_config)
        self.config = new_config
        self.policy.config = self._policy_config(new_config)
        self.policy.target = new_config.arbiter().workers
        self.call_hook("on_reload")  # the new config's hook, as in gunicorn
        actions = self.policy.request_reload(now)
        self.configs[self.policy.generation] = new_config
        self._execute(actions)
        return None

    # ---------------------------------------------------------------- actions

    def _execute(self, actions: list[Action]) -> int | None:
        for action in actions:
            if isinstance(action, Spawn):
                self._spawn(action)
            elif isinstance(action, Kill):
                try:
                    os.kill(action.pid, action.sig)
                except ProcessLookupError:
                    pass
            elif isinstance(action, Log):
                log.log(logging.getLevelName(action.level.upper()), "%s", action.message,
                        extra={"event": action.event, "fields": action.fields}
                        if action.event else None)
                if action.event:
                    self.ledger.lifecycle(action.event, action.fields)
            elif isinstance(action, ReloadFailed):
                self.configs.pop(action.generation, None)
                self.config = self.configs.get(self.policy.generation, self.config)
                self.policy.config = self._policy_config(self.config)
                self.policy.target = self.config.arbiter().workers
                self.notifier.note = f"last reload failed: {action.reason}"
                systemd.ready(f"reload failed: {action.reason}")
                self.control.reload_failed(action.generation, action.reason)
            elif isinstance(action, ReloadDone):
                for generation in [g for g in self.configs if g < action.generation]:
                    del self.configs[generation]
                self.notifier.note = ""
                systemd.ready(f"generation {action.generation} serving")
                self.control.reload_finished(action.generation)
            elif isinstance(action, Halt):
                return action.code
        if not self._announced_ready and self.policy.ever_ready and not self.policy.stopping:
            if self.policy.ready_count() >= self.policy.target:
                self._announced_ready = True
                log.info("all %d worker(s) ready", self.policy.target)
                systemd.ready(f"{self.policy.target} worker(s) serving")
        return None

    def _spawn(self, spawn: Spawn) -> None:
        config = self.configs.get(spawn.generation, self.config)
        self.call_hook("pre_fork", WorkerInfo(spawn.slot, spawn.generation), config=config)
        try:
            pid, heartbeat_fd = forking.fork_worker(self, spawn, config)
        except forking.ForkFailed as exc:
            self._execute(self.policy.spawn_failed(spawn.slot, str(exc), time.monotonic()))
            return
        self._watch_pipe(pid, heartbeat_fd)
        self._execute(self.policy.worker_spawned(pid, spawn.slot, spawn.generation,
                                                 time.monotonic()))

    def _watch_pipe(self, pid: int, fd: int) -> None:
        pipe = _WorkerPipe(pid, fd)
        self.pipes[pid] = pipe
        self.selector.register(fd, selectors.EVENT_READ, pipe)

    def close_in_child(self) -> None:
        """In a new worker: close what is the master's (the heartbeat pipes, the loop's
        selector and wakeup pipe, the metrics and control sockets)."""
        for pipe in self.pipes.values():
            os.close(pipe.fd)
        if self.metrics is not None:  # its sockets are the master's, not the worker's
            self.metrics.close_in_child()
        self.selector.close()
        self.control.close_in_child()
        os.close(self._wakeup_r)
        os.close(self._wakeup_w)

    # ---------------------------------------------------------------- upgrade

    def read_all_pipes(self) -> None:
        """Take in every frame the workers have written (before a re-exec)."""
        for pipe in list(self.pipes.values()):
            self._read_pipe(pipe)

    @property
    def wakeup_fd(self) -> int:
        return self._wakeup_w

    def _adopt_workers(self) -> None:
        handed = reexec.take_handover(os.environ)
        if not handed:
            return
        now = time.monotonic()
        for w in handed:
            self._watch_pipe(w.pid, w.fd)
            self.policy.adopt(w.pid, w.slot, now, w.phase)
            self.ledger.seed(self.policy.workers[w.pid])
        phases = collections.Counter(w.phase.value for w in handed)
        log.info("adopted %d worker(s) from the previous master (%s); replacing them",
                 len(handed), ", ".join(f"{n} {phase}" for phase, n in sorted(phases.items())))

    # ---------------------------------------------------------------- exit

    def _cleanup(self) -> None:
        if self.reexec.execing:
            return
        self.reexec.stop_check()
        if self.reloader is not None:
            self.reloader.close()
        for listener in self.listeners:
            listener.close(unlink=True)
        self.control.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.pid_file:
            pidfile.remove(self.pid_file, os.getpid())
        self.call_hook("on_exit")


def check_privileges(privileges: PrivilegesConfig, euid: int, egid: int) -> None:
    """Refuse at start what a worker could not do after the fork: only root may
    switch to other ids (the master stays root so it can signal and re-exec its
    workers; see the README's Deploying section)."""
    if euid == 0:
        return
    if privileges.uid is not None and privileges.uid != euid:
        raise UsageError(f"--user {privileges.user}: switching the workers to another user "
                         f"needs root (arbiter runs as uid {euid})")
    if privileges.gid is not None and privileges.gid != egid:
        raise UsageError(f"--group {privileges.gid}: switching the workers to another group "
                         f"needs root (arbiter runs as gid {egid})")


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, OSError):
        pass

