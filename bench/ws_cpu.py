"""Server CPU seconds per 100k WebSocket echoes: what a noisy machine cannot skew.

Each round starts every server fresh (pinned to core 0), warms it up, then runs
bench/ws_client.py (pinned to core 1) for a fixed message budget and reads the
serving process's utime+stime from /proc/PID/stat before and after. Servers are
interleaved (A B C A B C ...); the medians are printed with the ratios to the
first server given. Wall-clock rates are printed too, but on a shared machine
only the CPU figure means much.

    bench/.venv/bin/python bench/ws_cpu.py --rounds 5 arbiter-wsproto uvicorn
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HOST = "127.0.0.1"  # loopback only
BENCH = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")


def arbiter(ws: str | None) -> list[str]:
    argv = [str(BIN / "arbiter"), "ws_echo:app", "--workers", "1", "--http", "httptools",
            "--worker-class", "uvloop", "--no-access-log", "--app-dir", str(BENCH / "apps"),
            "--preload"]
    return argv + (["--ws", ws] if ws else [])


def uvicorn(ws: str) -> list[str]:
    return [str(BIN / "uvicorn"), "ws_echo:app", "--workers", "1", "--loop", "uvloop",
            "--http", "httptools", "--ws", ws, "--no-access-log", "--app-dir",
            str(BENCH / "apps")]


SERVERS = {
    "arbiter": arbiter(None),  # its default backend
    "arbiter-wsproto": arbiter("wsproto"),
    "arbiter-websockets": arbiter("websockets"),
    "uvicorn": uvicorn("auto"),  # auto: websockets-sansio when websockets is installed
    "uvicorn-wsproto": uvicorn("wsproto"),
    "uvicorn-websockets": uvicorn("websockets"),  # the legacy asyncio implementation
    "ceiling": [sys.executable, str(BENCH / "ws_raw_server.py")],  # no ASGI at all
}


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of the process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS  # utime, stime


def serving_pid(proc: subprocess.Popen) -> int:
    """The process that owns the connections: arbiter's only worker, or uvicorn itself."""
    import psutil
    children = psutil.Process(proc.pid).children()
    return children[0].pid if children else proc.pid


def client(port: int, messages: int, clients: int, size: int) -> dict:
    argv = ["taskset", "-c", "1", sys.executable, str(BENCH / "ws_client.py"),
            f"ws://{HOST}:{port}/", "--clients", str(clients), "--duration", "300",
            "--max-messages", str(messages), "--size", str(size)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=400).stdout
    for line in out.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    raise RuntimeError(f"no result from ws_client: {out[-400:]}")


def measure(name: str, port: int, args: argparse.Namespace) -> dict:
    argv = ["taskset", "-c", "0"] + SERVERS[name] + ["--host", HOST, "--port", str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{name} did not start")
            time.sleep(0.05)  # deliberate (noqa: sleep): poll step of a bounded wait for the port
        time.sleep(0.3)  # deliberate (noqa: sleep): let arbiter's worker finish booting after the bind
        pid = serving_pid(proc)
        client(port, args.messages // 10, args.clients, args.size)  # warm-up
        before = cpu_seconds(pid)
        result = client(port, args.messages, args.clients, args.size)
        after = cpu_seconds(pid)
        if not result["ok"]:
            raise RuntimeError(f"{name}: {result}")
        per = 100_000 / result["messages"]
        user, system = (after[0] - before[0]) * per, (after[1] - before[1]) * per
        return {"cpu_per_100k": user + system, "user": user, "system": system,
                "rate": result["rate"], "messages": result["messages"]}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("servers", nargs="+", choices=sorted(SERVERS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--port", type=int, default=18765)
    args = p.parse_args()
    runs: dict[str, list[dict]] = {s: [] for s in args.servers}
    for rnd in range(args.rounds):
        for name in args.servers:
            r = measure(name, args.port, args)
            runs[name].append(r)
            print(f"round {rnd + 1} {name:20s} {r['cpu_per_100k']:.3f} CPU-s/100k "
                  f"(user {r['user']:.2f} sys {r['system']:.2f}) "
                  f"{r['rate']:8.0f} msg/s  load {os.getloadavg()[0]:.1f}", flush=True)
    base = statistics.median(r["cpu_per_100k"] for r in runs[args.servers[0]])
    print(f"\nmedians over {args.rounds} rounds, {args.messages} messages of {args.size} B, "
          f"{args.clients} clients (ratio: {args.servers[0]}'s CPU over the server's, >1 is "
          "cheaper):")
    for name, rs in runs.items():
        cpu = [r["cpu_per_100k"] for r in rs]
        med = statistics.median(cpu)
        print(f"  {name:20s} {med:.3f} CPU-s/100k (min {min(cpu):.3f} max {max(cpu):.3f})  "
              f"x{base / med:.2f}  rate {statistics.median(r['rate'] for r in rs):.0f} msg/s")


if __name__ == "__main__":
    main()
