#!/usr/bin/env python3
"""Spread bench: how evenly N workers share the requests of 64 wrk connections.

Each round starts ``python -m arbiter hello:app --workers N`` fresh (as bench/run.py's
workers-2 scenario does), runs a short wrk warm-up, then a measured wrk run
(``-t1 -c64``, nothing pinned), and reports each worker's share of the requests
(the hello app answers its pid in ``x-pid``, counted by bench/lua/pids.lua) and of
the connections (each worker's ESTABLISHED sockets on the port, sampled halfway).

    python bench/spread.py [--rounds 20] [--duration 3] [--workers 2] [--tree DIR ...]
                           [-- extra arbiter arguments]

``--tree`` runs the server from another checkout (a copy of an older commit, say);
given several times, rounds alternate between them (A B A B ...), so a before/after
comparison sees the same machine state. Loopback only; a script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def start_server(tree: Path, workers: int, extra: list[str]) -> tuple[subprocess.Popen, int]:
    command = [sys.executable, "-m", "arbiter", "hello:app", "--workers", str(workers),
               "--bind", f"{HOST}:0", "--app-dir", str(HERE / "apps"), "--no-access-log",
               *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(tree))
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen(command, cwd=tree, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stderr is not None
        for raw in iter(proc.stderr.readline, b""):
            lines.append(raw.decode("utf-8", "replace"))
            if re.search(r"all \d+ worker\(s\) ready", lines[-1]):
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(60):
        stop_server(proc)
        raise RuntimeError("arbiter did not get ready:\n" + "".join(lines[-20:]))
    port = next(int(m.group(1)) for line in lines
                if (m := re.search(r"Listening at: http://[\d.]+:(\d+)", line)))
    return proc, port


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(10)


def wrk(port: int, duration: int, connections: int, script: Path) -> dict:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s",
            "-s", str(script), f"http://{HOST}:{port}/"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60).stdout
    for line in out.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    raise RuntimeError(f"wrk printed no result: {out[-400:]}")


def connections_per_worker(master: int, port: int) -> dict[int, int]:
    counts: dict[int, int] = {}
    for child in psutil.Process(master).children():
        try:
            counts[child.pid] = sum(1 for c in child.net_connections("tcp")
                                    if c.status == psutil.CONN_ESTABLISHED
                                    and c.laddr and c.laddr.port == port)
        except psutil.Error:
            continue
    return counts


def one_round(tree: Path, args: argparse.Namespace, script: Path) -> dict:
    proc, port = start_server(tree, args.workers, args.arbiter_args)
    try:
        wrk(port, args.warmup, args.connections, script)
        sampled: dict[int, int] = {}

        def sample() -> None:
            time.sleep(args.duration / 2)  # deliberate (noqa: sleep): halfway through the measured run
            sampled.update(connections_per_worker(proc.pid, port))

        sampler = threading.Thread(target=sample)
        sampler.start()
        result = wrk(port, args.duration, args.connections, script)
        sampler.join()
    finally:
        stop_server(proc)
    counts = {int(pid): n for pid, n in result.get("pids", {}).items() if pid.isdigit()}
    total = sum(counts.values())
    conns = sum(sampled.values())
    return {
        "requests": total,
        "errors": sum(result["errors"].values()),
        "shares": sorted((n / total for n in counts.values()), reverse=True) if total else [],
        "conn_shares": sorted((n / conns for n in sampled.values()), reverse=True)
        if conns else [],
        "workers_seen": len(counts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--duration", type=int, default=3, help="measured s per round")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--tree", action="append", type=Path,
                        help="checkout to run the server from (default: this one); repeat "
                             "to alternate rounds between checkouts")
    parser.add_argument("arbiter_args", nargs="*", help="after --: extra arbiter arguments")
    args = parser.parse_args()
    trees = [t.resolve() for t in args.tree] if args.tree else [HERE.parent]
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "pids.lua"
        script.write_text((HERE / "lua" / "pids.lua").read_text() + "\n" +
                          (HERE / "lua" / "report.lua").read_text())
        results: dict[Path, list[dict]] = {t: [] for t in trees}
        for i in range(args.rounds):
            for tree in trees:
                r = one_round(tree, args, script)
                results[tree].append(r)
                say(f"round {i + 1}/{args.rounds} {tree.name}: {r['requests']} requests, "
                    f"{r['errors']} errors, request shares "
                    f"{' '.join(f'{100 * s:.1f}%' for s in r['shares'])}, connections "
                    f"{' '.join(f'{100 * s:.0f}%' for s in r['conn_shares'])}, load "
                    f"{os.getloadavg()[0]:.2f}")
    print(f"\n{args.workers} workers, wrk -t1 -c{args.connections}, {args.rounds} rounds of "
          f"{args.duration:g} s, extra arguments: {' '.join(args.arbiter_args) or '-'}\n")
    print("| tree | max share median | max share worst | rounds over 55% | "
          "max connection share median / worst | req/s median |\n|---|---|---|---|---|---|")
    for tree, runs in results.items():
        top = [r["shares"][0] if r["shares"] else 1.0 for r in runs]
        ctop = [r["conn_shares"][0] for r in runs if r["conn_shares"]]
        rps = [r["requests"] / args.duration for r in runs]
        print(f"| {tree} | {100 * statistics.median(top):.1f}% | {100 * max(top):.1f}% | "
              f"{sum(1 for s in top if s > 0.55)}/{len(top)} | "
              f"{100 * statistics.median(ctop):.0f}% / {100 * max(ctop):.0f}% | "
              f"{statistics.median(rps):.0f} |")


if __name__ == "__main__":
    main()
