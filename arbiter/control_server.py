"""The control socket's server half, served by the master's own selector loop.

Non-blocking and bounded per client: a request line of at most
``control.MAX_REQUEST_BYTES``, READ_TIMEOUT_S to send it, WRITE_TIMEOUT_S to
take the reply, MAX_CLIENTS at once; the master loop's sleep budget includes
these deadlines. Each command runs the very Arbiter method its signal runs. A
reload is answered when the master executes the policy's ReloadDone or
ReloadFailed, a scale when the policy is at its new target, and a stop at once,
its connection then left open for the kernel to close as the master exits.
The socket (and any reload still waiting) is handed down across a re-exec.
Nothing here decides supervision.
"""

from __future__ import annotations

import enum
import logging
import os
import selectors
import socket
import time
from typing import TYPE_CHECKING, Any

from arbiter import __version__, control, sockets
from arbiter.control import Request, RequestError, reply_error, reply_ok
from arbiter.errors import BindError
from arbiter.policy import Phase

if TYPE_CHECKING:
    from arbiter.master import Arbiter

log = logging.getLogger("arbiter.error")

LISTEN_FD_ENV = "ARBITER_CONTROL_FD"
PENDING_ENV = "ARBITER_CONTROL_PENDING"  # reload clients waiting across a re-exec
MODE = 0o600
BACKLOG = 16
MAX_CLIENTS = 64
READ_TIMEOUT_S = 5.0
WRITE_TIMEOUT_S = 5.0
# A unix socket closed with unread input resets its peer, who then loses the reply (a
# client that sent a 1 MiB line, say): so the end is a shutdown, then input is discarded
# until the client closes, for at most this long.
LINGER_S = 2.0
ACCEPT_PAUSE_S = 1.0  # after EMFILE and the like, so a readable listener cannot spin the loop
_STATES = {Phase.BOOTING: "booting", Phase.READY: "ready", Phase.RETIRING: "draining"}


class _Stage(enum.Enum):
    READING = "reading"  # until one request line, within READ_TIMEOUT_S
    WAITING = "waiting"  # a reload or scale: until its outcome is known
    WRITING = "writing"  # the reply, within WRITE_TIMEOUT_S
    HOLDING = "holding"  # a stop was answered: open until the master exits
    LINGERING = "lingering"  # answered and shut for writing; input discarded until EOF


class _Client:
    __slots__ = ("sock", "inbuf", "outbuf", "stage", "deadline", "waits_for", "target",
                 "close_after", "handler")

    def __init__(self, sock: socket.socket, deadline: float | None) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = b""
        self.stage = _Stage.READING
        self.deadline = deadline
        self.waits_for = ""  # "reload" | "scale" while WAITING
        self.target = 0  # the worker count a scale waits for
        self.close_after = True  # after the reply: close, or hold (a stop)
        self.handler: Any = None  # what the selector calls, set when registered


class ControlServer:
    """The master's control socket and its clients (the Arbiter owns one)."""

    def __init__(self, arbiter: Arbiter) -> None:
        self.arbiter = arbiter
        self.listener: sockets.Listener | None = None
        self.path = ""
        self.clients: dict[int, _Client] = {}
        self._accept_paused_until: float | None = None

    @property
    def selector(self) -> selectors.BaseSelector:
        return self.arbiter.selector

    # ------------------------------------------------------------ lifecycle

    def open(self, path: str | None, environ: Any) -> None:
        """Bind the socket (mode 0600), or take it over from the master we re-executed.

        A stale file is replaced and a live one refused, as for a unix listener.
        """
        inherited_fd = environ.pop(LISTEN_FD_ENV, "")
        pending = [int(fd) for fd in environ.pop(PENDING_ENV, "").split(",") if fd]
        if inherited_fd:
            inherited = sockets.adopt_unix(int(inherited_fd))
            if path and inherited.address.path == path:
                self.listener = inherited
            else:  # the config changed across the re-exec: that socket is no longer wanted
                inherited.close(unlink=True)
        if path and self.listener is None:
            try:
                self.listener = sockets.open_unix(path, MODE, BACKLOG)
            except BindError as exc:
                raise BindError(f"--control-socket: {exc}") from None
        for fd in pending:
            self._adopt_waiting_reload(fd)
        if self.listener is None:
            return
        self.path = path or ""
        self._register_listener()
        log.info("Control socket at: %s (mode %o)", self.path, MODE)

    def _register_listener(self) -> None:
        assert self.listener is not None
        self.selector.register(self.listener.sock.fileno(), selectors.EVENT_READ,
                               self._on_accept)

    def close(self) -> None:
        """At exit: remove the socket file, close the clients; a stop's are left to the kernel."""
        if self.listener is not None:
            self._unregister(self.listener.sock.fileno())
            self.listener.close(unlink=True)
            self.listener = None
        for c in list(self.clients.values()):
            if c.stage is _Stage.HOLDING:
                continue  # closed by the kernel when this process ends: the client's "exited"
            if c.stage is _Stage.WAITING:
                self._answer(c, reply_error("the master is exiting"))
            self._drop(c)

    def close_in_child(self) -> None:
        """In a freshly forked worker: let go of the master's sockets (no unlink)."""
        if self.listener is not None:
            self.listener.sock.close()
            self.listener = None
        for c in self.clients.values():
            c.sock.close()
        self.clients.clear()

    def export_for_exec(self) -> dict[str, str]:
        """Before a re-exec: keep the socket and the waiting reloads; answer or drop the rest."""
        if self.listener is None:
            return {}
        env = {LISTEN_FD_ENV: str(self.listener.sock.fileno())}
        os.set_inheritable(self.listener.sock.fileno(), True)
        kept = []
        for c in list(self.clients.values()):
            if c.stage is _Stage.WAITING and c.waits_for == "reload":
                os.set_inheritable(c.sock.fileno(), True)
                kept.append(str(c.sock.fileno()))
                continue
            if c.stage is _Stage.WAITING:
                self._answer(c, reply_error("superseded: the master re-executed (SIGUSR2); "
                                            "the worker count is the config's again"))
            if c.outbuf:
                _send_some(c)
            self._drop(c)
        if kept:
            env[PENDING_ENV] = ",".join(kept)
        return env

    def exec_failed(self, why: str) -> None:
        """The exec did not happen: take back what export_for_exec made inheritable."""
        if self.listener is not None:
            os.set_inheritable(self.listener.sock.fileno(), False)
        for c in self.clients.values():
            os.set_inheritable(c.sock.fileno(), False)
        self.reexec_cancelled(why)

    # ------------------------------------------------------------ outcomes

    def reload_finished(self, generation: int) -> None:
        for c in self._waiting("reload"):
            self._answer(c, reply_ok(generation=generation,
                                     message=f"generation {generation} is serving"))

    def reload_failed(self, generation: int, reason: str) -> None:
        serving = self.arbiter.policy.generation
        for c in self._waiting("reload"):
            self._answer(c, reply_error(f"reload aborted: {reason}; generation {serving} "
                                        f"keeps serving", generation=generation))

    def reexec_cancelled(self, why: str) -> None:
        """A --preload reload is a re-exec; if it is cancelled, its clients learn why."""
        if self.arbiter.policy.reloading:
            return  # a policy reload is under way: its ReloadDone/ReloadFailed answers them
        for c in self._waiting("reload"):
            self._answer(c, reply_error(f"reload aborted: {why}"))

    def deadline(self) -> float | None:
        deadlines = [c.deadline for c in self.clients.values() if c.deadline is not None]
        if self._accept_paused_until is not None:
            deadlines.append(self._accept_paused_until)
        return min(deadlines) if deadlines else None

    def poll(self, now: float) -> None:
        """Each loop pass: enforce the deadlines, answer scales that are done or superseded."""
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            if self.listener is not None:
                self._register_listener()
        policy = self.arbiter.policy
        for c in list(self.clients.values()):
            if c.deadline is not None and now >= c.deadline:
                if c.stage is _Stage.READING:
                    c.outbuf = reply_error(f"no request line within {READ_TIMEOUT_S:g} s")
                    _send_some(c)  # one try: the client may not be reading either
                self._drop(c)
            elif c.stage is _Stage.WAITING and policy.stopping:
                self._answer(c, reply_error(f"{c.waits_for} abandoned: the server is stopping"))
            elif c.stage is _Stage.WAITING and c.waits_for == "scale":
                if policy.target != c.target:
                    self._answer(c, reply_error(f"superseded: the target is now "
                                                f"{policy.target} worker(s)"))
                elif policy.at_target():
                    self._answer(c, reply_ok(workers=c.target,
                                             message=f"{c.target} worker(s) ready"))

    # ------------------------------------------------------------ I/O

    def _on_accept(self, mask: int) -> None:
        try:
            self._accept(mask)
        except Exception:  # as _guarded: never the master loop
            log.exception("control socket: accepting failed")

    def _accept(self, mask: int) -> None:
        assert self.listener is not None
        for _ in range(MAX_CLIENTS):
            try:
                sock, _ = self.listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of fds, say: pause, or the loop would spin on it
                log.warning("control socket: cannot accept a connection: %s; pausing for "
                            "%g s", exc.strerror or exc, ACCEPT_PAUSE_S)
                self._unregister(self.listener.sock.fileno())
                self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE_S
                return
            sock.setblocking(False)
            if len(self.clients) >= MAX_CLIENTS:
                try:
                    sock.send(reply_error(f"too many control connections (at most "
                                          f"{MAX_CLIENTS})"))
                except OSError:
                    pass
                sock.close()
                continue
            self._add(_Client(sock, time.monotonic() + READ_TIMEOUT_S))

    def _adopt_waiting_reload(self, fd: int) -> None:
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            return
        sock.setblocking(False)
        os.set_inheritable(fd, False)
        if self.listener is None:  # no control socket in the new config: say so, let go
            try:
                sock.send(reply_error("the re-executed master has no control socket"))
            except OSError:
                pass
            sock.close()
            return
        c = _Client(sock, None)
        c.stage, c.waits_for = _Stage.WAITING, "reload"
        self._add(c)

    def _add(self, c: _Client) -> None:
        self.clients[c.sock.fileno()] = c
        c.handler = lambda mask: self._guarded(c, mask)
        self.selector.register(c.sock.fileno(), selectors.EVENT_READ, c.handler)

    def _listen_for(self, c: _Client, events: int) -> None:
        fd = c.sock.fileno()
        try:
            self.selector.modify(fd, events, c.handler)
        except KeyError:  # it had stopped listening (a half-closed waiting client)
            self.selector.register(fd, events, c.handler)

    def _guarded(self, c: _Client, mask: int) -> None:
        try:
            self._on_event(c, mask)
        except Exception:  # a bug here costs one client, never the master loop
            log.exception("control socket: dropping a client after an internal error")
            self._drop(c)

    def _on_event(self, c: _Client, mask: int) -> None:
        if c.sock.fileno() not in self.clients:
            return
        if c.stage is _Stage.WRITING:
            self._flush(c)
            return
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if c.stage is _Stage.WAITING:  # the client may have only shut its sending half
            if not data:  # (nc -N): stop reading, still answer; a send then tells if it is gone
                self._unregister(c.sock.fileno())
            return
        if c.stage is not _Stage.READING:  # holding, lingering: only a hang-up matters
            if not data:
                self._drop(c)
            return
        c.inbuf += data
        end = c.inbuf.find(b"\n")
        if end < 0 and len(c.inbuf) > control.MAX_REQUEST_BYTES:
            self._answer(c, reply_error(f"request longer than {control.MAX_REQUEST_BYTES} "
                                        f"bytes"))
        elif end >= 0 or (not data and c.inbuf.strip()):  # EOF ends an unterminated line
            self._handle(c, bytes(c.inbuf[:end] if end >= 0 else c.inbuf))
        elif not data:
            self._drop(c)

    def _handle(self, c: _Client, line: bytes) -> None:
        c.inbuf.clear()
        try:
            request = control.parse_request(line)
        except RequestError as exc:
            self._answer(c, reply_error(str(exc)))
            return
        try:
            self._execute(c, request, time.monotonic())
        except RequestError as exc:
            self._answer(c, reply_error(str(exc)))
        except Exception:  # a bug here must not take the master down
            log.exception("control: the %s command failed", request.command)
            self._answer(c, reply_error(f"{request.command} failed inside the master; see "
                                        f"its error log"))

    def _execute(self, c: _Client, request: Request, now: float) -> None:
        """Each command through the Arbiter method its signal uses."""
        a, command = self.arbiter, request.command
        if command == "status":
            self._answer(c, reply_ok(**self.status(now)))
            return
        if command == "reopen-logs":  # reopen first, so the line lands in the new file
            count = a.reopen_logs()
            log.info("control: reopen-logs: log files reopened here and signalled to %d "
                     "worker(s)", count)
            self._answer(c, reply_ok(message=f"log files reopened in the master and "
                                             f"{count} worker(s)"))
            return
        log.info("control: %s requested", request.describe())
        if command == "stop":
            a.request_stop(graceful=not request.quick, now=now)
            c.close_after = False
            self._answer(c, reply_ok(pid=os.getpid(), message="stopping"))
        elif command == "reload":
            why_not = a.request_reload(now)
            if why_not:
                raise RequestError(why_not)
            self._wait(c, "reload")
        elif command == "scale":
            if a.policy.stopping:
                raise RequestError("the server is stopping")
            target = control.scale_target(request, a.policy.target)
            a.request_scale(target - a.policy.target, now)
            self._wait(c, "scale", target)
            self.poll(now)  # already there (scale 3 at 3): answered now

    def _wait(self, c: _Client, what: str, target: int = 0) -> None:
        c.stage, c.waits_for, c.target, c.deadline = _Stage.WAITING, what, target, None

    def _waiting(self, what: str) -> list[_Client]:
        return [c for c in self.clients.values()
                if c.stage is _Stage.WAITING and c.waits_for == what]

    def _answer(self, c: _Client, reply: bytes) -> None:
        c.outbuf, c.stage = reply, _Stage.WRITING
        c.deadline = time.monotonic() + WRITE_TIMEOUT_S
        self._flush(c)

    def _flush(self, c: _Client) -> None:
        if not _send_some(c):
            self._drop(c)
        elif c.outbuf:  # the rest when the client reads
            self._listen_for(c, selectors.EVENT_WRITE)
        elif c.close_after:
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self._drop(c)
                return
            c.stage, c.deadline = _Stage.LINGERING, time.monotonic() + LINGER_S
            self._listen_for(c, selectors.EVENT_READ)
        else:
            c.stage, c.deadline = _Stage.HOLDING, None
            self._listen_for(c, selectors.EVENT_READ)

    def _drop(self, c: _Client) -> None:
        fd = c.sock.fileno()
        if self.clients.pop(fd, None) is not None:
            self._unregister(fd)
        c.sock.close()

    def _unregister(self, fd: int) -> None:
        try:
            self.selector.unregister(fd)
        except (KeyError, ValueError):
            pass

    # ------------------------------------------------------------ status

    def status(self, now: float) -> dict[str, Any]:
        """What ``arbiter status`` shows; per-worker numbers the table lacks are None."""
        a, policy = self.arbiter, self.arbiter.policy
        tls = a.config.http().tls is not None
        workers = []
        for w in sorted(policy.workers.values(), key=lambda w: (w.slot, w.generation)):
            workers.append({
                "slot": w.slot, "pid": w.pid, "generation": w.generation,
                "state": _STATES[w.phase], "uptime_s": round(now - w.spawned_at, 3),
                "requests": w.requests, "connections": w.connections,
                "in_flight": getattr(w, "in_flight", None),
                "rss_bytes": getattr(w, "rss_bytes", None),
                "loop_lag_s": getattr(w, "loop_lag_s", None),
            })
        return {
            "master": {
                "pid": os.getpid(), "version": __version__, "app": a.config.app,
                "generation": policy.generation, "workers_target": policy.target,
                "workers_ready": policy.ready_count(), "reloading": policy.reloading,
                "stopping": policy.stopping, "uptime_s": round(_process_uptime_s(), 3),
                "listeners": [listener.url(tls=tls) for listener in a.listeners],
                "control_socket": self.path,
            },
            "workers": workers,
        }


def _send_some(c: _Client) -> bool:
    """Write what the socket takes now; False if the client is gone."""
    try:
        sent = c.sock.send(c.outbuf)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    c.outbuf = c.outbuf[sent:]
    return True


def _process_uptime_s() -> float:
    """Since the master process started: a re-exec keeps the process, so the count goes on."""
    import psutil
    try:
        return max(0.0, time.time() - psutil.Process().create_time())
    except psutil.Error:
        return 0.0
