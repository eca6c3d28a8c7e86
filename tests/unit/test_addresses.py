"""Listening address parsing (pure) and binding errors (real sockets, loopback only)."""

from __future__ import annotations

import os
import socket

import pytest

from arbiter.addresses import Address, parse_address
from arbiter.errors import BindError
from arbiter.sockets import open_listeners


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8000", Address("tcp", host="127.0.0.1", port=8000)),
    ("localhost:0", Address("tcp", host="localhost", port=0)),
    (":9000", Address("tcp", host="0.0.0.0", port=9000)),
    ("[::1]:8080", Address("tcp", host="::1", port=8080)),
    ("unix:/run/app.sock", Address("unix", path="/run/app.sock")),
    ("fd://3", Address("fd", fd=3)),
])
def test_parse(text: str, expected: Address) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("text, message", [
    ("unix:", "needs a path"),
    ("fd://x", "file descriptor"),
    ("[::1:80", "closing ]"),
    ("::1:80", "brackets"),
    ("host:99999", "out of range"),
    ("[nothex]:80", "not an IPv6"),
])
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_address(text)


def test_bind_port_zero_and_report_real_port() -> None:
    listeners = open_listeners([parse_address("127.0.0.1:0")], 16, None, {})
    try:
        url = listeners[0].url()
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
    finally:
        for listener in listeners:
            listener.close(unlink=True)


def test_address_in_use_is_a_clear_error() -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        with pytest.raises(BindError, match=f"127.0.0.1:{port}: address already in use"):
            open_listeners([parse_address(f"127.0.0.1:{port}")], 16, None, {})
    finally:
        holder.close()


def test_unix_socket_stale_file_is_replaced_and_live_one_refused(tmp_path) -> None:
    path = str(tmp_path / "a.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # file left behind, nobody listening
    listeners = open_listeners([parse_address(f"unix:{path}")], 16, 0o660, {})
    try:
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o660)
        with pytest.raises(BindError, match="in use"):
            open_listeners([parse_address(f"unix:{path}")], 16, None, {})
    finally:
        listeners[0].close(unlink=True)
    assert not os.path.exists(path)


def test_fd_that_is_not_a_socket_is_refused(tmp_path) -> None:
    with open(tmp_path / "f", "w") as f:
        with pytest.raises(BindError, match=f"fd://{f.fileno()}"):
            open_listeners([parse_address(f"fd://{f.fileno()}")], 16, None, {})


def test_inherited_fd_is_adopted() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    listeners = open_listeners([parse_address(f"fd://{sock.fileno()}")], 16, None, {})
    assert listeners[0].sock.getsockname() == sock.getsockname()
    listeners[0].sock.detach()
    sock.close()
