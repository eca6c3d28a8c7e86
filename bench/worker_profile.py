"""Where a worker's time goes under a scenario's load: py-spy samples of one
arbiter worker, summed by the function on top of the stack (self time) and by
every function on it (total), printed as the top entries per scenario.

A development aid, not a benchmark result: sampling costs the worker a little,
so compare profiles with each other (``--tree`` runs an older checkout the same
way, by putting it first on PYTHONPATH), never their rates with bench/run.py's.
The worker runs pinned to core 0, the load (wrk or ws_client.py) to core 1, as in
run.py. Needs py-spy (``pip install py-spy``) and root or ptrace rights.

Usage: bench/.venv/bin/python bench/worker_profile.py [--tree DIR] [--seconds 4]
       [--scenarios hello,fastapi-json,...] [--top 12]
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
APPS = BENCH / "apps"
LUA = BENCH / "lua"
HOST = "127.0.0.1"

# scenario: (app, path, wrk script or None, "ws" for the WebSocket client)
SCENARIOS = {
    "hello": ("hello:app", "/", None),
    "fastapi-json": ("fastapi_json:app", "/json", None),
    "post-16k": ("post:app", "/", "post16k.lua"),
    "upload-1m": ("post:app", "/", "upload1m.lua"),
    "stream-1m": ("stream:app", "/", None),
    "file-50k": ("file_50k:app", "/file", None),
    "websocket": ("ws_echo:app", "/", "ws"),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_answering(port: int, path: str, deadline_s: float = 20.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=1).read()
            return
        except OSError as exc:
            if getattr(exc, "code", None) == 404:  # the echo app answers plain HTTP 404
                return
            time.sleep(0.05)  # deliberate (noqa: sleep): polling the port with a deadline
    raise SystemExit(f"the server on port {port} never answered {path}")


def worker_pid(master: int) -> int:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    pids = [int(p) for p in out.split()]
    if len(pids) != 1:
        raise SystemExit(f"expected one worker under {master}, found {pids}")
    return pids[0]


def load_argv(kind: str | None, port: int, path: str, seconds: float) -> list[str]:
    if kind == "ws":
        return ["taskset", "-c", "1", sys.executable, str(BENCH / "ws_client.py"),
                f"ws://{HOST}:{port}/", "--duration", str(seconds)]
    argv = ["taskset", "-c", "1", "wrk", "-t1", "-c64", f"-d{int(seconds)}s"]
    if kind:
        argv += ["-s", str(LUA / kind)]
    return argv + [f"http://{HOST}:{port}{path}"]


def profile(scenario: str, tree: str | None, seconds: float) -> collections.Counter:
    app, path, kind = SCENARIOS[scenario]
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [tree, str(APPS)])))
    server = subprocess.Popen(
        ["taskset", "-c", "0", sys.executable, "-m", "arbiter", app, "--bind", f"{HOST}:{port}",
         "--workers", "1", "--no-access-log", "--app-dir", str(APPS)],
        cwd=APPS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    out = Path(tempfile.mkdtemp(prefix="arbiter-profile-")) / "stacks.txt"
    try:
        wait_answering(port, path)
        pid = worker_pid(server.pid)
        subprocess.run(load_argv(kind, port, path, 1), capture_output=True, timeout=60)  # warm-up
        load = subprocess.Popen(load_argv(kind, port, path, seconds + 1),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)),
                        "--rate", "250", "--format", "raw", "--nonblocking", "--output", str(out)],
                       capture_output=True, timeout=seconds + 60)
        load.wait(timeout=seconds + 60)
        return collapsed(out.read_text())
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        shutil.rmtree(out.parent, ignore_errors=True)


def collapsed(text: str) -> collections.Counter:
    """py-spy's raw format: 'frame;frame;...;leaf count' per line."""
    stacks: collections.Counter = collections.Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def short(frame: str) -> str:
    """'function (path/to/file.py:line)' without the line, the path cut to its package."""
    name, _, where = frame.partition(" (")
    file = where.split(":")[0]
    for marker in ("site-packages/", "/workers/", "/arbiter/", "/lib/python3"):
        if marker in file:
            file = (marker.strip("/") + "/" if marker in ("/workers/", "/arbiter/") else "") \
                + file.split(marker, 1)[1]
            break
    return f"{name} ({file})"


def report(stacks: collections.Counter, top: int) -> str:
    total = sum(stacks.values()) or 1
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    for stack, count in stacks.items():
        frames = [short(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"  {total} samples; self time:"]
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tree", help="an arbiter checkout to profile instead of the installed one")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--top", type=int, default=12)
    args = ap.parse_args()
    if shutil.which("py-spy") is None:
        raise SystemExit("py-spy is not on PATH (pip install py-spy)")
    for name in args.scenarios.split(","):
        print(f"== {name} ({args.tree or 'installed arbiter'})", flush=True)
        print(report(profile(name, args.tree, args.seconds), args.top), flush=True)


if __name__ == "__main__":
    main()
