"""WebSocket echo load: N clients, each sending a message and waiting for its
echo, until a time or message budget runs out. Prints one JSON line.

Exit code 0 with "ok": false and "unsupported": true when the upgrade fails.
"""
import argparse
import asyncio
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


async def one_client(url, payload, deadline, budget, latencies, state):
    async with connect(url, compression=None, open_timeout=10, close_timeout=2,
                       max_size=2**20) as ws:
        state["connected"] += 1
        try:
            while time.monotonic() < deadline and state["sent"] < budget:
                state["sent"] += 1
                t0 = time.perf_counter()
                await ws.send(payload)
                answer = await ws.recv()
                latencies.append(time.perf_counter() - t0)
                if answer != payload:
                    state["wrong"] += 1
                    return
        finally:
            # The rate counts the exchange only, not the close handshake.
            state["last"] = max(state["last"], time.monotonic())


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
