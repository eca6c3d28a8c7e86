"""The worker -> master pipe protocol: fixed-size frames, both halves.

A worker writes BOOTED, READY, SERVED (once, at its first completed response),
TICK(requests, connections) and DRAINING; the master decodes them. Only framing lives here: what a missing TICK means is the
master policy's business. Frames are 12 bytes, so one write is atomic on a pipe.
"""

from __future__ import annotations

import enum
import os
import struct
from typing import NamedTuple

_FRAME = struct.Struct("!BxxxII")
FRAME_SIZE = _FRAME.size
_U32 = 0xFFFFFFFF


class Kind(enum.IntEnum):
    BOOTED = 1  # the process is up, about to import the app
    READY = 2  # app imported, lifespan started, serving
    TICK = 3  # the event loop is alive; carries load counters
    DRAINING = 4  # stopped accepting, finishing in-flight requests
    ERROR = 5  # why the worker cannot boot; `requests` holds the UTF-8 text's length
    SERVED = 6  # the first response is complete: this worker is not crash-looping


class Frame(NamedTuple):
    kind: Kind
    requests: int
    connections: int
    text: str = ""


class MasterGone(Exception):
    """The master closed its end of the pipe: the worker should exit."""


MAX_TEXT = 60000


def tick_interval_s(timeout_s: float) -> float:
    """How often a ready worker sends TICK: a fifth of --timeout, within 0.2..1 s.

    Both sides need it: the worker to schedule its TICKs, the master to judge
    whether a worker's last frame is recent (the systemd watchdog).
    """
    return max(0.2, min(1.0, timeout_s / 5)) if timeout_s else 1.0


def encode(kind: Kind, requests: int = 0, connections: int = 0) -> bytes:
    return _FRAME.pack(kind, min(requests, _U32), min(connections, _U32))


def encode_error(text: str) -> bytes:
    payload = text.encode("utf-8", "replace")[:MAX_TEXT]
    return _FRAME.pack(Kind.ERROR, len(payload), 0) + payload


class FrameDecoder:
    """Turns a byte stream into frames; keeps a partial frame for the next feed."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Frame]:
        buffer = self._buffer + data
        frames = []
        offset = 0
        while len(buffer) - offset >= FRAME_SIZE:
            kind, requests, connections = _FRAME.unpack_from(buffer, offset)
            if kind == Kind.ERROR:
                end = offset + FRAME_SIZE + requests
                if len(buffer) < end:
                    break
                text = buffer[offset + FRAME_SIZE:end].decode("utf-8", "replace")
                frames.append(Frame(Kind.ERROR, 0, 0, text))
                offset = end
                continue
            offset += FRAME_SIZE
            try:
                frames.append(Frame(Kind(kind), requests, connections))
            except ValueError:
                continue  # unknown kind from a newer worker: skip it, keep the stream aligned
        self._buffer = buffer[offset:]
        return frames


class HeartbeatWriter:
    """The worker's half. Never blocks: a full pipe means the master is behind."""

    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def send(self, kind: Kind, requests: int = 0, connections: int = 0) -> None:
        try:
            os.write(self.fd, encode(kind, requests, connections))
        except BlockingIOError:
            pass
        except (BrokenPipeError, OSError) as exc:
            raise MasterGone(str(exc)) from None

    def send_error(self, text: str) -> None:
        """Blocking: the master must get the whole message before we exit."""
        data = encode_error(text)
        try:
            os.set_blocking(self.fd, True)
            while data:
                data = data[os.write(self.fd, data):]
        except OSError as exc:
            raise MasterGone(str(exc)) from None

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
