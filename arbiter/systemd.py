"""sd_notify: tell systemd (Type=notify / notify-reload) what the master is doing.

A no-op when NOTIFY_SOCKET is unset, so the master can call it unconditionally.
"""

from __future__ import annotations

import os
import socket
import time


def notify(*fields: str) -> bool:
    """Send KEY=VALUE lines to $NOTIFY_SOCKET; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), address)
    except OSError:
        return False
    return True


def ready(status: str) -> None:
    notify("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")


def reloading(status: str) -> None:
    notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}",
           f"STATUS={status}")


def stopping(status: str) -> None:
    notify("STOPPING=1", f"STATUS={status}")


def status(text: str) -> None:
    notify(f"STATUS={text}")
