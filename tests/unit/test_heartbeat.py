"""The heartbeat framing, both halves, without processes: whole, byte by byte, mixed."""

from __future__ import annotations

import os
import struct

import pytest

from arbiter.heartbeat import (
    FRAME_SIZE, Frame, FrameDecoder, HeartbeatWriter, Kind, Load, encode, encode_error,
    extend_counter,
)

U32 = 2**32
LOAD = Load(in_flight=3, loop_lag_us=1500, blocked_loop_warnings=2, responses_2xx=900, responses_3xx=7, responses_4xx=40, responses_5xx=5)


def legacy(kind: int, requests: int, connections: int) -> bytes:
    """A frame as a worker before the Load fields wrote it (``!BxxxII``)."""
    return struct.pack("!BxxxII", kind, requests, connections)


def feed_whole(data: bytes) -> list[Frame]:
    return FrameDecoder().feed(data)


def feed_bytewise(data: bytes) -> list[Frame]:
    decoder = FrameDecoder()
    frames = []
    for i in range(len(data)):
        frames += decoder.feed(data[i:i + 1])
    return frames


def feed_split(data: bytes, at: int) -> list[Frame]:
    decoder = FrameDecoder()
    return decoder.feed(data[:at]) + decoder.feed(data[at:])


FEEDS = [feed_whole, feed_bytewise]


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("data, expected", [
    (encode(Kind.BOOTED), [Frame(Kind.BOOTED, 0, 0)]),
    (encode(Kind.TICK, 12, 3), [Frame(Kind.TICK, 12, 3)]),
    (encode(Kind.TICK, 12, 3, LOAD), [Frame(Kind.TICK, 12, 3, load=LOAD)]),
    (encode(Kind.READY, 0, 0, Load()), [Frame(Kind.READY, 0, 0, load=Load())]),
    # a worker of the previous version: 12 bytes, no load
    (legacy(Kind.TICK, 7, 2), [Frame(Kind.TICK, 7, 2)]),
    (legacy(Kind.DRAINING, 9, 1), [Frame(Kind.DRAINING, 9, 1)]),
    # legacy and extended frames interleaved (an adopted worker next to a new one is
    # two pipes, but one stream must not care which it gets)
    (legacy(Kind.TICK, 1, 1) + encode(Kind.TICK, 2, 2, LOAD) + legacy(Kind.TICK, 3, 3),
     [Frame(Kind.TICK, 1, 1), Frame(Kind.TICK, 2, 2, load=LOAD), Frame(Kind.TICK, 3, 3)]),
    (encode_error("no module named app") + encode(Kind.TICK, 1, 0, LOAD),
     [Frame(Kind.ERROR, 0, 0, "no module named app"), Frame(Kind.TICK, 1, 0, load=LOAD)]),
    # a newer worker with two more fields: they are skipped, the stream stays aligned
    (struct.pack("!BBxxII9I", Kind.TICK, 9, 5, 1, *LOAD, 111, 222) + encode(Kind.TICK, 6, 1),
     [Frame(Kind.TICK, 5, 1, load=LOAD), Frame(Kind.TICK, 6, 1)]),
    # an extended frame with fewer fields than this version knows: the rest are 0
    (struct.pack("!BBxxII2I", Kind.TICK, 2, 5, 1, 4, 250),
     [Frame(Kind.TICK, 5, 1, load=Load(in_flight=4, loop_lag_us=250))]),
    # an unknown kind, with and without extra fields, is skipped whole
    (struct.pack("!BBxxII1I", 99, 1, 0, 0, 42) + legacy(99, 0, 0) + encode(Kind.TICK, 8, 0),
     [Frame(Kind.TICK, 8, 0)]),
])
def test_decode(feed, data, expected):
    assert feed(data) == expected


def test_a_frame_split_at_every_offset_decodes_once():
    data = encode(Kind.TICK, 41, 2, LOAD) + legacy(Kind.TICK, 42, 2) + encode(Kind.SERVED, 1, 1)
    expected = feed_whole(data)
    assert len(expected) == 3
    for at in range(len(data) + 1):
        assert feed_split(data, at) == expected, at


def test_a_partial_frame_waits_for_the_rest():
    data = encode(Kind.TICK, 5, 1, LOAD)
    decoder = FrameDecoder()
    assert decoder.feed(data[:FRAME_SIZE]) == []  # the fixed part alone is not the frame
    assert decoder.feed(data[FRAME_SIZE:]) == [Frame(Kind.TICK, 5, 1, load=LOAD)]


def test_frame_sizes():
    assert len(encode(Kind.TICK, 1, 1)) == FRAME_SIZE == 12  # the legacy size, unchanged
    assert len(encode(Kind.TICK, 1, 1, LOAD)) == 12 + 4 * len(Load._fields) < 512
    assert encode(Kind.TICK, 1, 1)[1] == 0  # the count byte of a frame without load


def test_counters_wrap_and_gauges_saturate():
    big = Load(in_flight=U32 + 5, loop_lag_us=U32 * 3, blocked_loop_warnings=U32 + 1,
               responses_2xx=U32 + 7)
    (frame,) = feed_whole(encode(Kind.TICK, U32 + 3, U32 + 9, big))
    assert frame.requests == 3  # a counter: modulo 2**32
    assert frame.connections == U32 - 1  # a gauge: saturated
    assert frame.load == Load(in_flight=U32 - 1, loop_lag_us=U32 - 1, blocked_loop_warnings=1,
                              responses_2xx=7)


@pytest.mark.parametrize("previous, wire, expected", [
    (0, 0, 0),
    (10, 15, 15),
    (10, 10, 10),
    (U32 - 2, 3, U32 + 3),  # wrapped past 2**32
    (5 * U32 + 100, 200, 5 * U32 + 200),  # many wraps ago
    (5 * U32 + 100, 50, 5 * U32 + 100),  # a step back: ignored, not a wrap
    (1000, 999, 1000),
    (0, 2**31 - 1, 2**31 - 1),
    (0, U32 - 1, U32 - 1),  # the first value seen is taken whole
    (1, U32 - 1, 1),
])
def test_extend_counter(previous, wire, expected):
    assert extend_counter(previous, wire) == expected


def test_load_responses_by_class():
    assert LOAD.responses == (900, 7, 40, 5)


def test_writer_sends_one_frame_per_write():
    r, w = os.pipe()
    try:
        writer = HeartbeatWriter(w)
        writer.send(Kind.TICK, 3, 1, LOAD)
        writer.send(Kind.DRAINING, 4, 0)
        os.set_blocking(r, False)
        assert FrameDecoder().feed(os.read(r, 4096)) == [
            Frame(Kind.TICK, 3, 1, load=LOAD), Frame(Kind.DRAINING, 4, 0)]
    finally:
        os.close(r)
        os.close(w)
