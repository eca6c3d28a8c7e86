"""The worker -> master pipe protocol: fixed-size frames, both halves.

A worker writes BOOTED, READY, SERVED (once, at its first completed response),
TICK(requests, connections, load) and DRAINING; the master decodes them. Only
framing lives here: what a missing TICK means is the master policy's business.

A frame is ``!BBxxII`` (kind, the number of extra u32 fields, two pad bytes,
requests, connections) followed by that many u32 fields: the ``Load`` a TICK
carries for metrics. A worker of an older version (before a SIGUSR2 re-exec)
writes 12-byte frames whose count byte is 0; fields a newer worker adds beyond
``Load`` are skipped. At most 40 bytes, so one write is atomic on a pipe.
Counters are cumulative and wrap at 2**32 (``extend_counter`` unwraps them);
gauges saturate.
"""

from __future__ import annotations

import enum
import os
import struct
from typing import NamedTuple

_FRAME = struct.Struct("!BBxxII")
FRAME_SIZE = _FRAME.size  # the fixed part; a legacy frame is only this
_FIELD = struct.Struct("!I")
_U32 = 0xFFFFFFFF


class Kind(enum.IntEnum):
    BOOTED = 1  # the process is up, about to import the app
    READY = 2  # app imported, lifespan started, serving
    TICK = 3  # the event loop is alive; carries load counters
    DRAINING = 4  # stopped accepting, finishing in-flight requests
    ERROR = 5  # why the worker cannot boot; `requests` holds the UTF-8 text's length
    SERVED = 6  # the first response is complete: this worker is not crash-looping


class Load(NamedTuple):
    """What a TICK carries beyond (requests, connections), in wire order.

    Append new fields at the end only: the order is the protocol.
    """

    in_flight: int = 0  # gauge: requests the app is running now
    loop_lag_us: int = 0  # gauge: how late the last heartbeat timer fired
    blocked_loop_warnings: int = 0  # counter: stalls past --warn-blocking
    responses_2xx: int = 0  # counters: responses written, by status class
    responses_3xx: int = 0
    responses_4xx: int = 0
    responses_5xx: int = 0

    @property
    def responses(self) -> tuple[int, int, int, int]:
        """2xx, 3xx, 4xx, 5xx."""
        return self[3:7]  # type: ignore[return-value]


_LOAD_FIELDS = len(Load._fields)
_COUNTERS = frozenset({"blocked_loop_warnings", "responses_2xx", "responses_3xx",
                       "responses_4xx", "responses_5xx"})
_LOAD_IS_COUNTER = tuple(name in _COUNTERS for name in Load._fields)
_LOAD_FRAME = struct.Struct(f"!BBxxII{_LOAD_FIELDS}I")


class Frame(NamedTuple):
    kind: Kind
    requests: int
    connections: int
    text: str = ""
    load: Load | None = None  # None: a legacy frame, or a kind that carries none


class MasterGone(Exception):
    """The master closed its end of the pipe: the worker should exit."""


MAX_TEXT = 60000


def tick_interval_s(timeout_s: float) -> float:
    """How often a ready worker sends TICK: a fifth of --timeout, within 0.2..1 s.

    Both sides need it: the worker to schedule its TICKs, the master to judge
    whether a worker's last frame is recent (the systemd watchdog).
    """
    return max(0.2, min(1.0, timeout_s / 5)) if timeout_s else 1.0


def encode(kind: Kind, requests: int = 0, connections: int = 0,
           load: Load | None = None) -> bytes:
    if load is None:
        return _FRAME.pack(kind, 0, requests & _U32, min(connections, _U32))
    return _LOAD_FRAME.pack(kind, _LOAD_FIELDS, requests & _U32, min(connections, _U32),
                            *(v & _U32 if counter else min(v, _U32)
                              for v, counter in zip(load, _LOAD_IS_COUNTER)))


def encode_error(text: str) -> bytes:
    payload = text.encode("utf-8", "replace")[:MAX_TEXT]
    return _FRAME.pack(Kind.ERROR, 0, len(payload), 0) + payload


def extend_counter(previous: int, wire: int) -> int:
    """The unbounded value of a cumulative counter sent modulo 2**32, given the
    last unbounded value seen (0 at first: a worker adopted after a re-exec may
    be far along). A step back (a worker whose counter is not monotonic) is
    ignored rather than taken for a wrap of nearly 2**32."""
    step = (wire - previous) & _U32
    return previous + step if step < 1 << 31 or previous == 0 else previous


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
            kind, extra, requests, connections = _FRAME.unpack_from(buffer, offset)
            if kind == Kind.ERROR:
                end = offset + FRAME_SIZE + requests
                if len(buffer) < end:
                    break
                text = buffer[offset + FRAME_SIZE:end].decode("utf-8", "replace")
                frames.append(Frame(Kind.ERROR, 0, 0, text))
                offset = end
                continue
            end = offset + FRAME_SIZE + extra * _FIELD.size
            if len(buffer) < end:
                break
            load = None
            if extra:
                known = min(extra, _LOAD_FIELDS)
                load = Load(*struct.unpack_from(f"!{known}I", buffer, offset + FRAME_SIZE))
            offset = end
            try:
                frames.append(Frame(Kind(kind), requests, connections, load=load))
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

    def send(self, kind: Kind, requests: int = 0, connections: int = 0,
             load: Load | None = None) -> None:
        try:
            os.write(self.fd, encode(kind, requests, connections, load))
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
