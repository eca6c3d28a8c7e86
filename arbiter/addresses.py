"""Parse listening addresses (HOST:PORT, [IPV6]:PORT, unix:PATH, fd://N).

Pure string handling, shared by config validation and ``arbiter.sockets``; no
socket is created here.
"""

from __future__ import annotations

import dataclasses
import ipaddress


@dataclasses.dataclass(frozen=True)
class Address:
    kind: str  # "tcp" | "unix" | "fd"
    host: str = ""
    port: int = 0
    path: str = ""
    fd: int = -1

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_address(text: str) -> Address:
    """Raise ValueError with a message saying which form was expected."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError("unix: needs a path, e.g. unix:/run/app.sock")
        return Address("unix", path=path)
    if text.startswith("fd://"):
        try:
            fd = int(text[5:])
        except ValueError:
            raise ValueError("fd:// needs a file descriptor number, e.g. fd://3") from None
        if fd < 0:
            raise ValueError("fd:// needs a non-negative file descriptor number")
        return Address("fd", fd=fd)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            raise ValueError("an IPv6 address needs a closing ], e.g. [::1]:8000")
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
        port_text = rest[1:] if rest.startswith(":") else ("8000" if not rest else None)
        if port_text is None:
            raise ValueError("expected [IPV6]:PORT")
        return Address("tcp", host=host, port=_port(port_text))
    if text.count(":") > 1:
        raise ValueError("put an IPv6 address in brackets, e.g. [::1]:8000")
    host, sep, port_text = text.partition(":")
    if not host and not sep:
        raise ValueError("expected HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N")
    return Address("tcp", host=host or "0.0.0.0", port=_port(port_text) if sep else 8000)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise ValueError(f"port {text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return port
