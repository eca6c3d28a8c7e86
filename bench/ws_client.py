"""WebSocket echo load: N clients, each sending a message and waiting for its
echo, until a time or message budget runs out. Prints one JSON line.

Exit code 0 with "ok": false and "unsupported": true when the upgrade fails.
"""
import argparse
import asyncio
import base64
import hashlib
import ipaddress
import json
import time
import urllib.parse

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, InvalidStatus

try:
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


class EchoClient(asyncio.Protocol):
    """One connection's load, on raw frames: the upgrade, then one masked text frame
    out and its echo back, again and again. Frames are built once and echoes compared
    as bytes, so a message costs the client a few microseconds (the websockets
    library's asyncio client cost about as much as the fastest server did, and the
    rate measured the client). The mask key is fixed: a server cannot tell, and only
    the client's CPU cost is at stake."""

    def __init__(self, host, port, payload, deadline, budget, latencies, state):
        self.request = (f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n").encode()
        self.frame = _masked_text(payload)
        self.echo = _server_text(payload)
        self.deadline, self.budget = deadline, budget
        self.latencies, self.state = latencies, state
        self.buf = bytearray()
        self.upgraded = False
        self.done = asyncio.get_running_loop().create_future()
        self.t0 = 0.0

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data):
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end])
            del self.buf[:end + 4]
            if not head.startswith(b"HTTP/1.1 101") or ACCEPT.encode() not in head:
                return self._finish(RuntimeError(f"upgrade refused: {head[:80]!r}"))
            self.upgraded = True
            self.state["connected"] += 1
            self._send()
        while self.buf:
            frame = _split_frame(self.buf)
            if frame is None:
                return  # the rest of a frame is still to come
            opcode, payload, raw = frame
            if opcode == 0x9:  # ping: pong, and keep waiting for the echo
                self.transport.write(_masked(0xA, payload))
            elif opcode == 0x8:
                return self._finish(RuntimeError("closed by the server"))
            elif raw != self.echo:
                self.state["wrong"] += 1
                return self._finish(None)
            else:
                self.latencies.append(time.perf_counter() - self.t0)
                self._send()

    def _send(self):
        if time.monotonic() >= self.deadline or self.state["sent"] >= self.budget:
            self.state["last"] = max(self.state["last"], time.monotonic())
            self.transport.write(_masked(0x8, b"\x03\xe8"))  # close, 1000
            return self._finish(None)
        self.state["sent"] += 1
        self.t0 = time.perf_counter()
        self.transport.write(self.frame)

    def _finish(self, exc):
        if not self.done.done():
            self.done.set_exception(exc) if exc else self.done.set_result(None)
        self.transport.close()

    def connection_lost(self, exc):
        if not self.done.done():
            self._finish(exc or RuntimeError("the server closed the connection"))


KEY = base64.b64encode(b"arbiter-bench-ws").decode()
ACCEPT = base64.b64encode(hashlib.sha1(
    (KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
MASK = b"\x37\xfa\x21\x3d"


def _masked(opcode, payload):
    assert len(payload) < 126
    masked = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + MASK + masked


def _masked_text(text):
    return _masked(0x1, text.encode())


def _server_text(text):
    data = text.encode()
    return bytes([0x81, len(data)]) + data


def _split_frame(buf):
    """(opcode, payload, the frame's bytes) of a whole unmasked frame at the start of
    buf, taken out of it; None while it is incomplete."""
    if len(buf) < 2:
        return None
    length, at = buf[1] & 0x7F, 2
    if length == 126:
        if len(buf) < 4:
            return None
        length, at = int.from_bytes(buf[2:4], "big"), 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length, at = int.from_bytes(buf[2:10], "big"), 10
    if len(buf) < at + length:
        return None
    raw = bytes(buf[:at + length])
    del buf[:at + length]
    return raw[0] & 0x0F, raw[at:], raw


async def one_client(url, payload, deadline, budget, latencies, state):
    loop = asyncio.get_running_loop()
    parts = urllib.parse.urlsplit(url)
    _, client = await loop.create_connection(
        lambda: EchoClient(parts.hostname, parts.port, payload, deadline, budget,
                           latencies, state), parts.hostname, parts.port)
    await client.done


async def run(args):
    payload = "x" * args.size
    # Probe first: a server without WebSocket support fails the upgrade here.
    try:
        async with connect(args.url, compression=None, open_timeout=10, close_timeout=2) as ws:
            await ws.send("probe")
            if await asyncio.wait_for(ws.recv(), 10) != "probe":
                return {"ok": False, "error": "wrong echo"}
    except (InvalidHandshake, InvalidStatus, OSError, asyncio.TimeoutError, EOFError) as exc:
        return {"ok": False, "unsupported": True, "error": f"{type(exc).__name__}: {exc}"[:300]}

    latencies = []
    state = {"sent": 0, "wrong": 0, "connected": 0, "last": 0.0}
    start = time.monotonic()
    deadline = start + args.duration
    tasks = [one_client(args.url, payload, deadline, args.max_messages, latencies, state)
             for _ in range(args.clients)]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    finished = time.monotonic()
    elapsed = (state["last"] or finished) - start
    errors = [f"{type(r).__name__}: {r}"[:200] for r in results if isinstance(r, BaseException)]
    latencies.sort()

    def pct(p):
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))] * 1e6)

    return {
        "ok": not errors and state["wrong"] == 0 and bool(latencies),
        "messages": len(latencies),
        "duration_s": elapsed,
        "close_s": finished - (state["last"] or finished),
        "rate": len(latencies) / elapsed if elapsed else 0.0,
        "latency_us": {"p50": pct(50), "p99": pct(99)},
        "clients_connected": state["connected"],
        "wrong_echoes": state["wrong"],
        "errors": errors[:5],
        "error_count": len(errors),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--max-messages", type=int, default=2_000_000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    host = urllib.parse.urlsplit(args.url).hostname or ""
    if not ipaddress.ip_address(host).is_loopback:
        raise SystemExit("ws_client.py only targets loopback addresses")
    if uvloop is not None:
        result = uvloop.run(run(args))
    else:
        result = asyncio.run(run(args))
    print("BENCH_JSON " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
