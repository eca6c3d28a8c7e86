"""systemd integration: sd_notify messages and socket activation (LISTEN_FDS)."""

from __future__ import annotations

import os
import signal
import socket
import sys

import httpx
import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.slow


def test_notify_ready_reloading_stopping(arbiter_process, tmp_path) -> None:
    path = str(tmp_path / "notify.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.settimeout(0.2)
    messages: list[str] = []

    def saw(field: str) -> bool:
        try:
            messages.append(receiver.recv(4096).decode())
        except TimeoutError:
            pass
        return any(field in m.splitlines() for m in messages)

    try:
        server = arbiter_process(["basic:app", "--workers", "2"], env={"NOTIFY_SOCKET": path})
        wait_until(lambda: saw("READY=1"), 20, message="READY=1")
        assert any(f"MAINPID={server.pid}" in m for m in messages)
        server.signal(signal.SIGHUP)
        wait_until(lambda: saw("RELOADING=1"), 20, message="RELOADING=1")
        messages.clear()
        wait_until(lambda: saw("READY=1"), 20, message="READY=1 after the reload")
        server.signal(signal.SIGTERM)
        wait_until(lambda: saw("STOPPING=1"), 20, message="STOPPING=1")
        assert server.wait_exit(20) == 0
    finally:
        receiver.close()


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
