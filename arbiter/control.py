"""The control socket's wire format (pure), and the client side of the commands.

One JSON object per line over a unix stream socket, one request per connection:
``{"command": "scale", "by": 2}`` in, ``{"ok": true, ...}`` or ``{"ok": false,
"error": "..."}`` out. The first half parses and validates requests, builds
replies and renders ``arbiter status``, without I/O; the master's half of the
I/O is ``arbiter.control_server``. The client functions at the end connect,
send and wait; they raise ControlError and leave printing to the CLI.
"""

from __future__ import annotations

import dataclasses
import json
import re
import socket
from typing import Any

from arbiter.errors import ControlError
from arbiter.settings import BY_NAME, InvalidValue

COMMANDS = ("status", "reload", "scale", "reopen-logs", "stop")
MAX_REQUEST_BYTES = 64 * 1024
# The fields each command takes, with their JSON types (bool is not an int here).
_FIELDS: dict[str, dict[str, type]] = {
    "status": {}, "reload": {}, "scale": {"to": int, "by": int}, "reopen-logs": {},
    "stop": {"quick": bool},
}
_SCALE = re.compile(r"([+-]?)(\d{1,6})")


class RequestError(ValueError):
    """A request the master cannot take; the message is the error reply's text."""


def is_command(word: str) -> bool:
    """A first argument that names a command rather than an app (``module:attr``)."""
    return word in COMMANDS and ":" not in word


# ------------------------------------------------------------------ requests


@dataclasses.dataclass(frozen=True)
class Request:
    command: str
    to: int | None = None  # scale: an absolute count
    by: int | None = None  # scale: a change, +N or -N
    quick: bool = False  # stop: SIGINT's quick stop instead of SIGTERM's graceful one

    def describe(self) -> str:
        if self.command == "scale":
            return f"scale to {self.to}" if self.to is not None else f"scale by {self.by:+d}"
        return "stop (quick)" if self.command == "stop" and self.quick else self.command

    def encode(self) -> bytes:
        fields: dict[str, Any] = {"command": self.command}
        if self.to is not None:
            fields["to"] = self.to
        if self.by is not None:
            fields["by"] = self.by
        if self.quick:
            fields["quick"] = True
        return json.dumps(fields).encode() + b"\n"


def parse_request(line: bytes) -> Request:
    """One request line (without its newline) -> Request, or RequestError saying why not."""
    if len(line) > MAX_REQUEST_BYTES:
        raise RequestError(f"request longer than {MAX_REQUEST_BYTES} bytes")
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise RequestError("request is not UTF-8") from None
    except ValueError as exc:
        raise RequestError(f"request is not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise RequestError('a request is a JSON object such as {"command": "status"}')
    command = obj.get("command")
    if command is None:
        raise RequestError('request has no "command"')
    if not isinstance(command, str):
        raise RequestError('"command" must be a string')
    if command not in _FIELDS:
        raise RequestError(f"unknown command {command!r} (one of {', '.join(COMMANDS)})")
    fields = _FIELDS[command]
    for name, value in obj.items():
        if name == "command":
            continue
        kind = fields.get(name)
        if kind is None:
            raise RequestError(f"{command} takes no field {name!r}")
        if type(value) is not kind:
            raise RequestError(f"{command}: {name!r} must be "
                               f"{'an integer' if kind is int else 'true or false'}")
    request = Request(command, to=obj.get("to"), by=obj.get("by"),
                      quick=bool(obj.get("quick", False)))
    if command == "scale":
        _check_scale(request)
    return request


def _check_scale(request: Request) -> None:
    if (request.to is None) == (request.by is None):
        raise RequestError('scale takes either "to" (a count) or "by" (a change)')
    if request.to is not None and request.to < 1:
        raise RequestError("scale: the count must be at least 1")
    if request.by == 0:
        raise RequestError("scale: a change of 0 changes nothing")


def parse_scale(text: str) -> Request:
    """``arbiter scale`` argument: ``3`` (a count), ``+2`` or ``-1`` (a change)."""
    match = _SCALE.fullmatch(text.strip())
    if not match:
        raise RequestError(f"scale: expected N, +N or -N (e.g. 3, +2, -1), not {text!r}")
    sign, digits = match.groups()
    request = (Request("scale", to=int(digits)) if not sign
               else Request("scale", by=int(digits) * (-1 if sign == "-" else 1)))
    _check_scale(request)
    return request


def scale_target(request: Request, current: int) -> int:
    """The worker count a scale request asks for, given the current target (never below 1)."""
    target = request.to if request.to is not None else max(1, current + (request.by or 0))
    try:
        return int(BY_NAME["workers"].convert(target))
    except InvalidValue as exc:
        raise RequestError(f"cannot scale to {target} workers: --workers {exc}") from None


# ------------------------------------------------------------------ replies


def reply_ok(**fields: Any) -> bytes:
    return json.dumps({"ok": True, **fields}).encode() + b"\n"


def reply_error(error: str, **fields: Any) -> bytes:
    return json.dumps({"ok": False, "error": error, **fields}).encode() + b"\n"


def decode_reply(line: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(line.decode("utf-8"))
    except ValueError:
        raise ControlError(f"the master sent a reply that is not JSON: {line[:200]!r}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise ControlError(f"the master sent a malformed reply: {line[:200]!r}")
    return reply


# ------------------------------------------------------------------ status


STATUS_COLUMNS = ("SLOT", "PID", "GEN", "STATE", "UPTIME", "REQUESTS", "CONNS", "IN-FLIGHT",
                  "RSS", "LOOP LAG")


def format_status(status: dict[str, Any]) -> str:
    """The text of ``arbiter status``: the master's state, then one row per worker."""
    m = status["master"]
    state = ("stopping" if m["stopping"] else
             f"reloading to generation {m['generation']}" if m["reloading"] else "running")
    lines = [
        f"master     pid {m['pid']}, generation {m['generation']}, "
        f"{m['workers_ready']}/{m['workers_target']} workers ready, up "
        f"{format_duration(m['uptime_s'])} (arbiter {m['version']})",
        f"state      {state}",
        f"listening  {', '.join(m['listeners']) or '-'}",
        "",
    ]
    rows = [STATUS_COLUMNS] + [(
        str(w["slot"]), str(w["pid"]), str(w["generation"]), w["state"],
        format_duration(w["uptime_s"]), _num(w["requests"]), _num(w["connections"]),
        _num(w.get("in_flight")), _mib(w.get("rss_bytes")), _seconds(w.get("loop_lag_s")),
    ) for w in status["workers"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(STATUS_COLUMNS))]
    left = {"STATE"}  # words read left-aligned, numbers right-aligned
    for row in rows:
        cells = [cell.ljust(width) if name in left else cell.rjust(width)
                 for cell, width, name in zip(row, widths, STATUS_COLUMNS)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / (1024 * 1024):.1f} MiB"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f} ms"


# ------------------------------------------------------------------ client


CONNECT_TIMEOUT_S = 5.0
QUICK_REPLY_TIMEOUT_S = 15.0  # status and reopen-logs; reload, scale and stop wait longer


def call(path: str, request: Request) -> dict[str, Any]:
    """Send one request and return the master's reply.

    A reload or scale reply comes when its outcome is known, so only status and
    reopen-logs have a reply timeout. After a stop's reply, this returns only
    once the master has exited: its end of the connection closes when it does.
    """
    sock = connect(path)
    with sock:
        try:
            sock.sendall(request.encode())
        except OSError as exc:
            raise ControlError(f"control socket {path}: cannot send the request: "
                               f"{exc.strerror or exc}") from None
        quick = request.command in ("status", "reopen-logs")
        sock.settimeout(QUICK_REPLY_TIMEOUT_S if quick else None)
        reply = decode_reply(_read_line(sock, path))
        if request.command == "stop" and reply["ok"]:
            _wait_closed(sock)
            _wait_exited(int(reply.get("pid", 0)))
        return reply


def connect(path: str) -> socket.socket:
    """Connect, turning every failure into one line naming the path and what to do."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(CONNECT_TIMEOUT_S)
    try:
        sock.connect(path)
    except FileNotFoundError:
        sock.close()
        raise ControlError(f"control socket {path} does not exist: is the server running "
                           f"with --control-socket {path}?") from None
    except ConnectionRefusedError:
        sock.close()
        raise ControlError(f"control socket {path}: connection refused: no server is "
                           f"listening there (a stale file from a server that died?)") from None
    except PermissionError:
        sock.close()
        raise ControlError(f"control socket {path}: permission denied: it is mode 0600, so "
                           f"run the command as the server's user") from None
    except socket.timeout:
        sock.close()
        raise ControlError(f"control socket {path}: the master did not accept the connection "
                           f"within {CONNECT_TIMEOUT_S:g} s") from None
    except OSError as exc:
        sock.close()
        raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
    return sock


def _read_line(sock: socket.socket, path: str) -> bytes:
    data = bytearray()
    while b"\n" not in data:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            raise ControlError(f"control socket {path}: no reply within "
                               f"{QUICK_REPLY_TIMEOUT_S:g} s") from None
        except OSError as exc:
            raise ControlError(f"control socket {path}: {exc.strerror or exc}") from None
        if not chunk:
            raise ControlError(f"control socket {path}: the master closed the connection "
                               f"without a reply (did it exit or re-execute?)")
        data += chunk
        if len(data) > 64 * 1024 * 1024:
            raise ControlError(f"control socket {path}: the reply is absurdly long")
    return bytes(data[:data.index(b"\n")])


def _wait_closed(sock: socket.socket) -> None:
    """Until the master's end closes, which the kernel does when the master exits."""
    sock.settimeout(None)
    try:
        while sock.recv(4096):
            pass
    except OSError:
        pass


def _wait_exited(pid: int, timeout_s: float = 10.0) -> None:
    """The connection closes as the master's process ends; wait for the end to complete."""
    import time

    import psutil

    if pid <= 0:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.Error:  # gone, or not visible from here (another pid namespace)
            return
        time.sleep(0.01)  # deliberate (noqa: sleep): polling a process we cannot wait() for
