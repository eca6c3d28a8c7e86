"""systemd integration: sd_notify messages and socket activation (LISTEN_FDS).

A test plays systemd's part of sd_notify(3): it binds a unix datagram socket,
passes it as NOTIFY_SOCKET (with WATCHDOG_USEC where the watchdog is under test)
and timestamps every datagram the master sends.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.slow


class NotifySocket:
    """The receiving end of NOTIFY_SOCKET: every datagram, with the time it arrived."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)
        self._sock.settimeout(0.05)
        self._lock = threading.Lock()
        self._messages: list[tuple[float, str]] = []
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self._messages.append((time.monotonic(), data.decode()))

    def messages(self) -> list[tuple[float, str]]:
        with self._lock:
            return list(self._messages)

    def values(self, key: str, since: float = 0.0) -> list[tuple[float, str]]:
        """(arrival, value) of every ``key=value`` line received at or after ``since``."""
        return [(t, line.partition("=")[2]) for t, m in self.messages() if t >= since
                for line in m.splitlines() if line.partition("=")[0] == key]

    def wait_for(self, key: str, match: Callable[[str], bool] = lambda v: True,
                 since: float = 0.0, timeout: float = 20.0) -> tuple[float, str]:
        def found() -> tuple[float, str] | None:
            return next(((t, v) for t, v in self.values(key, since) if match(v)), None)
        try:
            return wait_until(found, timeout, message=f"{key}= from the master")  # type: ignore[no-any-return]
        except AssertionError as exc:
            raise AssertionError(f"{exc}; received:\n{self.transcript()}") from None

    def transcript(self, since: float = 0.0) -> str:
        messages = self.messages()
        start = since or (messages[0][0] if messages else 0.0)
        return "\n".join(f"{t - start:7.3f} {m!r}" for t, m in messages if t >= since)

    def close(self) -> None:
        self._closed.set()
        self._reader.join(5)
        self._sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    receiver = NotifySocket(tmp_path / "notify.sock")
    yield receiver
    receiver.close()


def _worker_environ(server) -> set[str]:
    """The names a worker's app sees in os.environ (/proc/PID/environ shows the exec's)."""
    return set(httpx.get(f"{server.url}/env", timeout=5).json())


def _title(pid: int) -> str:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read().replace(b"\0", b" ").decode().strip()


def test_notify_ready_reloading_stopping(arbiter_process, notify_socket) -> None:
    server = arbiter_process(["basic:app", "--workers", "2"],
                             env={"NOTIFY_SOCKET": notify_socket.path})
    t_ready, _ = notify_socket.wait_for("READY")
    assert ("MAINPID", str(server.pid)) in [(k, v) for k in ["MAINPID"]
                                             for _, v in notify_socket.values(k)]
    server.signal(signal.SIGHUP)
    t_reloading, _ = notify_socket.wait_for("RELOADING", since=t_ready)
    notify_socket.wait_for("READY", since=t_reloading)
    server.signal(signal.SIGTERM)
    notify_socket.wait_for("STOPPING")
    assert server.wait_exit(20) == 0


def test_watchdog_pings_at_twice_the_rate_watchdog_usec_asks(arbiter_process,
                                                             notify_socket) -> None:
    server = arbiter_process(["basic:app", "--workers", "2"],
                             env={"NOTIFY_SOCKET": notify_socket.path,
                                  "WATCHDOG_USEC": "1000000"})
    t_ready, _ = notify_socket.wait_for("READY")
    start, _ = notify_socket.wait_for("WATCHDOG", since=t_ready)
    window = 3.0  # WATCHDOG_USEC is 1 s: a ping every 0.5 s, 6 in the window
    notify_socket.wait_for("WATCHDOG", since=start + window, timeout=10)
    pings = [t for t, v in notify_socket.values("WATCHDOG", since=start) if t < start + window]
    assert {v for _, v in notify_socket.values("WATCHDOG")} == {"1"}
    assert 4 <= len(pings) <= 9, notify_socket.transcript(since=start)
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert max(gaps) < 1.0, gaps  # systemd would have restarted us
    names = _worker_environ(server)  # the watchdog is the master's, not the workers'
    assert "NOTIFY_SOCKET" in names
    assert {"WATCHDOG_USEC", "WATCHDOG_PID"} & names == set()


def test_watchdog_pings_stop_while_every_worker_is_stopped_and_resume(arbiter_process,
                                                                      notify_socket) -> None:
    server = arbiter_process(["basic:app", "--workers", "2", "--timeout", "60"],
                             env={"NOTIFY_SOCKET": notify_socket.path,
                                  "WATCHDOG_USEC": "1000000"})
    t_ready, _ = notify_socket.wait_for("READY")
    notify_socket.wait_for("WATCHDOG", since=t_ready)
    workers = server.worker_pids()
    assert len(workers) == 2
    try:
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        t_stop = time.monotonic()

        def last_ping() -> float:
            return notify_socket.values("WATCHDOG")[-1][0]

        # "fresh" is a frame within 3 TICK intervals (1 s each with --timeout 60)
        wait_until(lambda: time.monotonic() - last_ping() > 3.0, 15,
                   message="the watchdog pings to stop")
        stopped_after = last_ping() - t_stop
        assert stopped_after < 5.0, notify_socket.transcript(since=t_stop - 1)
        assert server.proc.poll() is None and server.worker_pids() == workers
        status = notify_socket.values("STATUS")[-1][1]
        assert status.startswith("2/2 workers ready"), status  # --timeout 60 is not up yet
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    t_cont = time.monotonic()
    resumed, _ = notify_socket.wait_for("WATCHDOG", since=t_cont, timeout=10)
    notify_socket.wait_for("WATCHDOG", since=resumed + 1.0, timeout=10)
    print(f"\npings stopped {stopped_after:.2f} s after SIGSTOP, resumed "
          f"{resumed - t_cont:.2f} s after SIGCONT")


def test_watchdog_of_another_pid_is_not_ours(arbiter_process, notify_socket) -> None:
    server = arbiter_process(["basic:app", "--workers", "1"],
                             env={"NOTIFY_SOCKET": notify_socket.path,
                                  "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())})
    t_ready, _ = notify_socket.wait_for("READY")
    # four ping intervals' worth of silence after READY (a ping would be due every 0.5 s)
    wait_until(lambda: time.monotonic() > t_ready + 2.0, 10, message="2 s after READY")
    assert notify_socket.values("WATCHDOG") == [], notify_socket.transcript()
    assert {"WATCHDOG_USEC", "WATCHDOG_PID"} & _worker_environ(server) == set()


def test_watchdog_pings_go_on_after_a_reexec(arbiter_process, notify_socket) -> None:
    server = arbiter_process(["basic:app", "--workers", "2"],
                             env={"NOTIFY_SOCKET": notify_socket.path,
                                  "WATCHDOG_USEC": "1000000"})
    t_ready, _ = notify_socket.wait_for("READY")
    notify_socket.wait_for("WATCHDOG", since=t_ready)
    server.signal(signal.SIGUSR2)
    # the new program (same pid) may say READY before this test reads the log line,
    # so the re-ready is looked for after the old program's last word
    t_reexec, _ = notify_socket.wait_for(
        "STATUS", lambda v: v == "re-executing the master", since=t_ready, timeout=30)
    server.wait_for_log(r"adopted 2 worker\(s\)", timeout=30)
    t_adopted = t_reexec
    t_reready, _ = notify_socket.wait_for("READY", since=t_adopted, timeout=30)
    notify_socket.wait_for("WATCHDOG", since=t_reready, timeout=10)
    notify_socket.wait_for("STATUS", lambda v: v.startswith("2/2 workers ready, generation 1"),
                           since=t_adopted)
    assert {"WATCHDOG_USEC", "WATCHDOG_PID"} & _worker_environ(server) == set()


def test_status_and_process_title_follow_a_reload(arbiter_process, notify_socket) -> None:
    server = arbiter_process(["basic:app", "--workers", "2"],
                             env={"NOTIFY_SOCKET": notify_socket.path})
    t_ready, _ = notify_socket.wait_for("READY")
    notify_socket.wait_for("STATUS", lambda v: v.startswith("2/2 workers ready, generation 1"))
    wait_until(lambda: _title(server.pid) == "arbiter: master [basic:app] 2/2 ready, gen 1", 10,
               message=f"the master's title (it is {_title(server.pid)!r})")
    with httpx.Client(base_url=server.url, timeout=5) as client:
        for _ in range(5):
            assert client.get("/").status_code == 200
    # the count alone is resent every few seconds (the workers report it every second)
    notify_socket.wait_for("STATUS", lambda v: v == "2/2 workers ready, generation 1, "
                                                "5 requests", timeout=15)
    t_hup = time.monotonic()
    server.signal(signal.SIGHUP)
    notify_socket.wait_for("STATUS", lambda v: v.startswith("reloading to generation 2: "),
                           since=t_hup)
    t_done, done = notify_socket.wait_for(
        "STATUS", lambda v: v.startswith("2/2 workers ready, generation 2, "), since=t_hup)
    assert int(done.split(", ")[2].split()[0]) >= 5  # the retired workers' requests still count
    wait_until(lambda: _title(server.pid) == "arbiter: master [basic:app] 2/2 ready, gen 2", 10,
               message=f"the master's title (it is {_title(server.pid)!r})")
    server.signal(signal.SIGTERM)
    notify_socket.wait_for("STATUS", lambda v: v.startswith("stopping, "), since=t_done)
    assert server.wait_exit(20) == 0
    print("\nsd_notify across a reload (s since the first datagram):\n"
          + notify_socket.transcript())


def test_extend_timeout_while_the_first_generation_boots(arbiter_process, notify_socket,
                                                         tmp_path) -> None:
    delay = tmp_path / "boot-delay"
    delay.write_text("6")  # longer than one extension period (5 s)
    arbiter_process(["supervised:app", "--workers", "1", "--boot-timeout", "8"],
                    env={"NOTIFY_SOCKET": notify_socket.path, "BOOT_DELAY_FILE": str(delay)})
    t_ready, _ = notify_socket.wait_for("READY", timeout=30)
    notify_socket.wait_for("STATUS", lambda v: v.startswith("1/1 workers ready"), since=t_ready)
    extends = notify_socket.values("EXTEND_TIMEOUT_USEC")
    assert len(extends) >= 2 and all(t < t_ready for t, _ in extends), \
        notify_socket.transcript()
    first, second = (int(v) for _, v in extends[:2])
    assert first == 10_000_000  # the next send, 5 s later, plus a 5 s margin
    # 5 s into an 8 s --boot-timeout: 3 s left plus the margin, not a full 10 s
    assert 6_000_000 <= second <= 8_000_000, extends
    assert 4.0 <= extends[1][0] - extends[0][0] <= 7.0


def test_socket_activation_listen_fds(arbiter_process) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    # systemd hands the socket over as fd 3 and sets LISTEN_PID to the service's pid
    launcher = (
        "import os, sys\n"
        f"os.dup2({listener.fileno()}, 3)\n"
        "os.environ['LISTEN_FDS'] = '1'\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'arbiter', 'basic:app'])\n")
    os.set_inheritable(listener.fileno(), True)
    server = arbiter_process([], command=[sys.executable, "-c", launcher],
                             pass_fds=(listener.fileno(),))
    server.wait_ready()
    listener.close()  # only the server holds it now
    assert f"127.0.0.1:{port}" in server.url
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200


def test_fd_option(arbiter_process) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    os.set_inheritable(listener.fileno(), True)
    launcher = (f"import os, sys\nos.execv(sys.executable, [sys.executable, '-m', 'arbiter', "
                f"'basic:app', '--fd', '{listener.fileno()}'])\n")
    arbiter_process([], command=[sys.executable, "-c", launcher],
                    pass_fds=(listener.fileno(),)).wait_ready()
    listener.close()
    assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
