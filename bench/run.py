"""Side-by-side benchmark of arbiter against other ASGI servers.

Run by hand (not in CI), from the bench virtualenv:

    bash bench/setup.sh
    bench/.venv/bin/python bench/run.py            # full run (about an hour)
    bench/.venv/bin/python bench/run.py --smoke    # 1 s, 1 round: does everything work?

Method: every server is started fresh for every measurement, on 127.0.0.1 only,
with access logs off, pinned to core 0 (`taskset -c 0`); the load generator is
pinned to core 1. Readiness is polled with a deadline, then the scenario's answer
is checked (status and body) before anything is measured. Servers are interleaved
(A B C A B C ...) for --rounds rounds; tables report median/min/max and ratios to
uvicorn (httptools, uvloop) and to a raw uvloop protocol server (the ceiling).
Around every measurement the CPU time of the server's process tree, of the load
generator and of every other process is recorded (noise.py): it gives requests per
server CPU-second, and RESULTS.md is refused when other processes competed for the
cores (see bench/README.md, "Noise") unless --allow-noisy marks it as noisy.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import http.client
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import noise

HOST = "127.0.0.1"  # never anything else: loopback only
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
APPS = BENCH / "apps"
LUA = BENCH / "lua"
LOGS = BENCH / ".logs"
VENV_BIN = BENCH / ".venv" / "bin"
BIN = VENV_BIN if VENV_BIN.is_dir() else Path(sys.executable).parent
PYTHON = str(BIN / "python") if (BIN / "python").exists() else sys.executable
SERVER_CPU = "0"
CLIENT_CPU = "1"
BASELINE = "uvicorn-httptools"
CEILING = "raw-uvloop"

HELLO_BODY = b"Hello, world!"
JSON_PAYLOAD = {"message": "Hello, world!", "items": [1, 2, 3], "ok": True}
STREAM_BODY = bytes(range(256)) * 256 * 16
POST_SIZE = 16384
UPLOAD_SIZE = 1 << 20
FILE_BODY = bytes(range(256)) * 200  # bench/apps/file_50k.py's file
HZ = noise.clock_ticks_per_second()

# ---------------------------------------------------------------------------
# child processes: every one gets its own process group, killed at the end


LIVE: set[subprocess.Popen] = set()


def spawn(argv: list[str], *, log: Path | None = None, cwd: Path | None = None,
          env: dict | None = None, pipes: bool = False) -> subprocess.Popen:
    """Start a child in its own process group. pipes=True: text stdin/stdout
    pipes (stderr to the log); otherwise stdout and stderr both go to the log."""
    logf = open(log, "wb") if log else None
    try:
        if pipes:
            io = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf, text=True)
        else:
            io = dict(stdin=subprocess.DEVNULL, stdout=logf or subprocess.DEVNULL,
                      stderr=subprocess.STDOUT)
        proc = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True, **io)
    finally:
        if logf:
            logf.close()
    LIVE.add(proc)
    return proc


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group, wait for it with a deadline, then SIGKILL it."""
    pgid = proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if proc.poll() is not None and not group_alive(pgid):
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream:
            with contextlib.suppress(OSError):
                stream.close()
    LIVE.discard(proc)


def kill_all() -> None:
    for proc in list(LIVE):
        kill_group(proc, grace=3.0)


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pinned(cpu: str | None, argv: list[str]) -> list[str]:
    return (["taskset", "-c", cpu] + argv) if cpu is not None else argv


# ---------------------------------------------------------------------------
# servers


@dataclass
class Opts:
    app: str  # module:attr in bench/apps
    port: int
    workers: int = 1
    keepalive: int | None = None  # idle keep-alive timeout in seconds, when the scenario needs one
    max_conns: int | None = None  # raise connection caps (idle-10k)
    preload: bool = False
    close: bool = False  # raw server only: answer with Connection: close
    stream: bool = False  # raw server only: answer with the 1 MiB stream-1m body


@dataclass
class Server:
    name: str
    describe: str
    build: Callable[[Opts], list[str]]
    binary: str
    preload: bool = False  # has a preload flag
    raw: bool = False
    group: str = "peer"

    def available(self) -> tuple[bool, str]:
        exe = BIN / self.binary
        if not exe.exists():
            if self.group == "arbiter":
                return False, ("not available: `arbiter` is not installed in bench/.venv "
                               "(re-run bench/setup.sh once the repo has pyproject.toml)")
            return False, f"not available: {exe} missing (run bench/setup.sh)"
        return True, ""


def _uvicorn(http: str) -> Callable[[Opts], list[str]]:
    def build(o: Opts) -> list[str]:
        argv = [str(BIN / "uvicorn"), o.app, "--host", HOST, "--port", str(o.port),
                "--workers", str(o.workers), "--loop", "uvloop", "--http", http,
                "--no-access-log", "--app-dir", str(APPS)]
        if o.keepalive:
            argv += ["--timeout-keep-alive", str(o.keepalive)]
        return argv
    return build


def _gunicorn(worker: str, extra: list[str]) -> Callable[[Opts], list[str]]:
    def build(o: Opts) -> list[str]:
        argv = [str(BIN / "gunicorn"), "-k", worker, "-w", str(o.workers),
                "-b", f"{HOST}:{o.port}", "--chdir", str(APPS)] + extra
        if o.keepalive:
            argv += ["--keep-alive", str(o.keepalive)]
        if o.max_conns:
            argv += ["--worker-connections", str(o.max_conns)]
        if o.preload:
            argv += ["--preload"]
        return argv + [o.app]
    return build


def _granian(o: Opts) -> list[str]:
    argv = [str(BIN / "granian"), "--interface", "asgi", "--host", HOST, "--port", str(o.port),
            "--workers", str(o.workers), "--loop", "uvloop", "--http", "1",
            "--no-access-log", "--working-dir", str(APPS)]
    if o.max_conns:
        argv += ["--backpressure", str(o.max_conns)]
    return argv + [o.app]


def _hypercorn(o: Opts) -> list[str]:
    argv = [str(BIN / "hypercorn"), "-k", "uvloop", "-w", str(o.workers),
            "--bind", f"{HOST}:{o.port}"]
    if o.keepalive:
        argv += ["--keep-alive", str(o.keepalive)]
    return argv + [o.app]


def _arbiter(http: str, loop: str) -> Callable[[Opts], list[str]]:
    def build(o: Opts) -> list[str]:
        argv = [str(BIN / "arbiter"), o.app, "--host", HOST, "--port", str(o.port),
                "--workers", str(o.workers), "--http", http, "--worker-class", loop,
                "--no-access-log", "--app-dir", str(APPS)]
        if o.keepalive:
            argv += ["--keep-alive", str(o.keepalive)]
        if o.preload:
            argv += ["--preload"]
        return argv
    return build


def _raw(o: Opts) -> list[str]:
    return [PYTHON, str(BENCH / "raw_server.py"), "--host", HOST, "--port", str(o.port)] + (
        ["--close"] if o.close else []) + (["--stream"] if o.stream else [])


SERVERS = [
    Server(CEILING, "asyncio.Protocol on uvloop, fixed response, no parsing (ceiling)",
           _raw, "python", raw=True, group="ceiling"),
    Server("uvicorn-httptools", "uvicorn --http httptools --loop uvloop", _uvicorn("httptools"),
           "uvicorn"),
    Server("uvicorn-h11", "uvicorn --http h11 --loop uvloop", _uvicorn("h11"), "uvicorn"),
    Server("gunicorn-asgi", "gunicorn -k asgi (native, --asgi-loop uvloop, --http-parser fast)",
           _gunicorn("asgi", ["--asgi-loop", "uvloop", "--http-parser", "fast"]), "gunicorn",
           preload=True),
    Server("gunicorn-uvicorn-worker", "gunicorn -k uvicorn_worker.UvicornWorker",
           _gunicorn("uvicorn_worker.UvicornWorker", []), "gunicorn", preload=True),
    Server("granian", "granian --interface asgi --loop uvloop --http 1", _granian, "granian"),
    Server("hypercorn", "hypercorn -k uvloop", _hypercorn, "hypercorn"),
    Server("arbiter-httptools-uvloop", "arbiter --http httptools --worker-class uvloop",
           _arbiter("httptools", "uvloop"), "arbiter", preload=True, group="arbiter"),
    Server("arbiter-h11-uvloop", "arbiter --http h11 --worker-class uvloop",
           _arbiter("h11", "uvloop"), "arbiter", preload=True, group="arbiter"),
    Server("arbiter-httptools-asyncio", "arbiter --http httptools --worker-class asyncio",
           _arbiter("httptools", "asyncio"), "arbiter", preload=True, group="arbiter"),
    Server("arbiter-h11-asyncio", "arbiter --http h11 --worker-class asyncio",
           _arbiter("h11", "asyncio"), "arbiter", preload=True, group="arbiter"),
]
SERVER_BY_NAME = {s.name: s for s in SERVERS}
# The preload/PSS comparison uses these (and their --preload variants where they have one).
PSS_SERVERS = ["uvicorn-httptools", "gunicorn-asgi", "gunicorn-uvicorn-worker", "granian",
               "hypercorn", "arbiter-httptools-uvloop"]


class StartError(Exception):
    pass


class Running:
    """A started server: its process group, port and log."""

    def __init__(self, server: Server, opts: Opts, cpu: str | None, log: Path):
        self.server, self.opts, self.log = server, opts, log
        self.argv = server.build(opts)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(APPS) + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = spawn(pinned(cpu, self.argv), log=log, cwd=APPS, env=env)
        shown = pinned(cpu, server.build(dataclasses.replace(opts, port="$PORT")))
        self.command = " ".join(shlex.quote(a) for a in shown).replace(
            "'", "").replace(str(BIN), "bench/.venv/bin").replace(str(BENCH), "bench")

    def wait_port(self, deadline: float = 30.0) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise StartError(f"exited with {self.proc.returncode} before listening: {self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.opts.port), 0.5):
                return
            time.sleep(0.05)
        raise StartError(f"not listening after {deadline:.0f} s: {self.tail()}")

    def tail(self, n: int = 3) -> str:
        """The last exception line of the log (if any) and its last lines."""
        try:
            lines = [x.strip() for x in self.log.read_text(errors="replace").strip().splitlines()]
        except OSError:
            return ""
        errors = [x for x in lines if x.split(":", 1)[0].endswith(("Error", "Exception"))]
        picked = ([errors[-1]] if errors else []) + [x for x in lines[-n:] if x not in errors[-1:]]
        return " | ".join(picked)[-500:] + f" (log: {self.log.relative_to(ROOT)})"

    def tree(self):
        import psutil
        root = psutil.Process(self.proc.pid)
        return [root] + root.children(recursive=True)

    def stop(self) -> None:
        kill_group(self.proc)


# ---------------------------------------------------------------------------
# answers: each scenario is checked before it is measured


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict | None = None, timeout: float = 10.0):
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, conn
    except BaseException:
        conn.close()
        raise


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def check_hello(port: int) -> dict:
    status, headers, body, conn = http_request(port, "GET", "/")
    conn.close()
    expect(status == 200, f"status {status}")
    expect(body == HELLO_BODY, f"body {body[:60]!r}")
    return headers


def check_connect(port: int) -> dict:
    """The answer is right and the server closes the connection after it.
    A missing `Connection: close` response header is reported, not fatal (RFC
    9112 says SHOULD); wrk then counts a read error for each such request."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = b""
        end = time.monotonic() + 10
        while time.monotonic() < end:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        else:
            raise AssertionError("the server kept the connection open after Connection: close")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    expect(lines[0].startswith("HTTP/1.1 200"), f"status line {lines[0]!r}")
    expect(body == HELLO_BODY, f"body {body[:60]!r}")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    return headers


def check_json(port: int) -> dict:
    status, headers, body, conn = http_request(port, "GET", "/json")
    conn.close()
    expect(status == 200, f"status {status}")
    expect(json.loads(body) == JSON_PAYLOAD, f"body {body[:80]!r}")
    return headers


def _check_upload(port: int, size: int) -> dict:
    status, headers, body, conn = http_request(
        port, "POST", "/", body=b"a" * size,
        headers={"Content-Type": "application/octet-stream"})
    conn.close()
    expect(status == 200, f"status {status}")
    expect(body == str(size).encode(), f"body {body[:60]!r} (want {size})")
    return headers


def check_post(port: int) -> dict:
    return _check_upload(port, POST_SIZE)


def check_upload(port: int) -> dict:
    return _check_upload(port, UPLOAD_SIZE)


def check_file(port: int) -> dict:
    status, headers, body, conn = http_request(port, "GET", "/file")
    conn.close()
    expect(status == 200, f"status {status}")
    expect(body == FILE_BODY, f"{len(body)} bytes, want the {len(FILE_BODY)}-byte file")
    return headers


def check_stream(port: int) -> dict:
    status, headers, body, conn = http_request(port, "GET", "/")
    conn.close()
    expect(status == 200, f"status {status}")
    expect(len(body) == len(STREAM_BODY), f"{len(body)} bytes, want {len(STREAM_BODY)}")
    expect(body == STREAM_BODY, "body bytes differ from the pattern")
    return headers


def check_ws(port: int) -> dict:
    # The websocket scenario's client probes the upgrade itself; plain HTTP must answer 404.
    status, headers, body, conn = http_request(port, "GET", "/")
    conn.close()
    expect(status == 404, f"status {status} for plain HTTP on the echo app")
    return headers


def check_until(run: Running, check: Callable[[int], dict], deadline: float = 30.0) -> dict:
    """Retry the scenario's check until it passes: pre-fork servers may accept
    before their workers are ready. A wrong answer that persists is an error."""
    end = time.monotonic() + deadline
    last = "no attempt"
    while time.monotonic() < end:
        if run.proc.poll() is not None:
            raise StartError(f"exited with {run.proc.returncode}: {run.tail()}")
        try:
            return check(run.opts.port)
        except AssertionError as exc:
            raise StartError(f"wrong answer: {exc}") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
    raise StartError(f"no correct answer within {deadline:.0f} s ({last}): {run.tail()}")


# ---------------------------------------------------------------------------
# load generators


def wrk(port: int, path: str, duration: int, *, lua: list[str], headers: list[str],
        connections: int, cpu: str | None, tmp: Path) -> dict:
    script = tmp / ("wrk-" + "-".join(Path(x).stem for x in lua) + ".lua")
    script.write_text("".join((LUA / f).read_text() + "\n" for f in lua + ["report.lua"]))
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s",
            "-s", str(script)]
    for h in headers:
        argv += ["-H", h]
    argv.append(f"http://{HOST}:{port}{path}")
    proc = spawn(pinned(cpu, argv), pipes=True)
    try:
        out, _ = proc.communicate(timeout=duration + 60)
    finally:
        kill_group(proc, grace=1.0)
    for line in out.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line[len("BENCH_JSON "):])
            secs = data["duration_us"] / 1e6
            data["rps"] = data["requests"] / secs if secs else 0.0
            data["error_total"] = sum(data["errors"].values())
            return data
    raise RuntimeError(f"wrk printed no result (exit {proc.returncode}): {out[-400:]}")


def wrk_command(scn: "Scenario", connections: int, duration: int, cpu: str | None) -> str:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "5s", "-s",
            "+".join(f"bench/lua/{x}" for x in scn.lua + ["report.lua"])]
    for h in scn.headers:
        argv += ["-H", h]
    argv.append(f"http://{HOST}:$PORT{scn.path}")
    return " ".join(shlex.quote(a) for a in pinned(cpu, argv))


def ws_load(port: int, duration: float, clients: int, cpu: str | None) -> dict:
    argv = pinned(cpu, [PYTHON, str(BENCH / "ws_client.py"), f"ws://{HOST}:{port}/",
                        "--clients", str(clients), "--duration", str(duration),
                        "--max-messages", str(int(200_000 * max(duration, 1)))])
    proc = spawn(argv, pipes=True)
    try:
        out, _ = proc.communicate(timeout=duration + 90)
    finally:
        kill_group(proc, grace=1.0)
    for line in out.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    raise RuntimeError(f"ws_client printed no result (exit {proc.returncode}): {out[-400:]}")


# ---------------------------------------------------------------------------
# memory


def worker_pids(run: Running, headers_seen: list[dict]) -> list[int]:
    pids = sorted({int(h["x-pid"]) for h in headers_seen if h.get("x-pid", "").isdigit()})
    return pids or [run.proc.pid]


def rss(pids: list[int]) -> list[int]:
    import psutil
    out = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            out.append(psutil.Process(pid).memory_info().rss)
    return out


def memory(run: Running, pids: list[int]) -> dict:
    """RSS after a measurement: the mean over the workers that answered, and the
    sum over the server's whole process tree (shared pages counted in each)."""
    import psutil
    sizes = rss(pids)
    tree = []
    with contextlib.suppress(psutil.Error):
        tree = rss([p.pid for p in run.tree()])
    return {"rss_per_worker": statistics.mean(sizes) if sizes else None,
            "rss_tree": sum(tree) if tree else None}


def pss_tree(run: Running) -> tuple[int, dict[int, int]]:
    import psutil
    per = {}
    for proc in run.tree():
        with contextlib.suppress(psutil.Error):
            per[proc.pid] = proc.memory_full_info().pss
    return sum(per.values()), per


# ---------------------------------------------------------------------------
# scenarios


@dataclass
class Scenario:
    name: str
    kind: str  # wrk | ws | idle | workers | pss
    app: str
    path: str
    check: Callable[[int], dict]
    lua: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    raw: bool = False  # the raw server can answer it
    about: str = ""


SCENARIOS = [
    Scenario("hello", "wrk", "hello:app", "/", check_hello, raw=True,
             about="raw ASGI plaintext, 13-byte body, keep-alive"),
    Scenario("fastapi-json", "wrk", "fastapi_json:app", "/json", check_json,
             about="FastAPI GET returning a small JSON object"),
    Scenario("post-16k", "wrk", "post:app", "/", check_post, lua=["post16k.lua"],
             about="POST with a 16 KiB body, read in full by the app, which answers its length"),
    Scenario("stream-1m", "wrk", "stream:app", "/", check_stream, raw=True,
             about="1 MiB response sent as 16 ASGI body messages of 64 KiB"),
    Scenario("upload-1m", "wrk", "post:app", "/", check_upload, lua=["upload1m.lua"],
             about="POST with a 1 MiB body, streamed to the app, which reads it all and answers its length"),
    Scenario("file-50k", "wrk", "file_50k:app", "/file", check_file,
             about="FastAPI FileResponse of a 50 KiB file (http.response.pathsend where offered)"),
    Scenario("websocket", "ws", "ws_echo:app", "/", check_ws,
             about="WebSocket echo round trips per second, 64-byte text messages, one in flight per client"),
    Scenario("connect", "wrk", "hello:app", "/", check_connect, headers=["Connection: close"], raw=True,
             about="hello with a new TCP connection per request (Connection: close)"),
    Scenario("idle-10k", "idle", "hello:app", "/", check_hello, raw=True,
             about="hello while a helper holds N idle keep-alive connections"),
    Scenario("workers-2", "workers", "hello:app", "/", check_hello, lua=["pids.lua"],
             about="two workers, nothing pinned: how evenly requests spread over workers"),
    Scenario("preload-pss", "pss", "fastapi_json:app", "/json", check_json,
             about="PSS of the whole process tree with 2 and with 4 workers (FastAPI app)"),
]
SCENARIO_BY_NAME = {s.name: s for s in SCENARIOS}


class Bench:
    def __init__(self, args):
        self.args = args
        self.duration = args.duration
        self.results: dict = {}
        self.commands: dict = {}
        self.tmp = Path(tempfile.mkdtemp(prefix="arbiter-bench-"))
        LOGS.mkdir(exist_ok=True)
        self.pin = args.pin

    def cpu(self, which: str) -> str | None:
        return which if self.pin else None

    def log_path(self, scn: str, server: str, rnd: int, tag: str = "") -> Path:
        return LOGS / f"{scn}.{server}{tag}.r{rnd}.log"

    def entry(self, scn: str, name: str) -> dict:
        return self.results.setdefault(scn, {}).setdefault(
            name, {"status": "ok", "runs": [], "notes": []})

    def note(self, scn: str, name: str, text: str, status: str | None = None) -> None:
        e = self.entry(scn, name)
        if text not in e["notes"]:
            e["notes"].append(text)
        if status:
            e["status"] = status
        print(f"    {name}: {text}", flush=True)

    def start(self, server: Server, scn: Scenario, rnd: int, *, cpu: str | None, tag: str = "",
              **opts) -> Running:
        o = Opts(app=scn.app, port=free_port(), **opts)
        run = Running(server, o, cpu, self.log_path(scn.name, server.name, rnd, tag))
        self.commands.setdefault(scn.name, {})[server.name + tag] = run.command
        try:
            run.wait_port()
        except BaseException:
            run.stop()
            raise
        return run

    def watched(self, run: Running, load: Callable[[], dict], count: str = "requests") -> dict:
        """Run one measured load and keep what the CPUs did meanwhile (noise.py): the
        server tree's CPU time, requests per server CPU-second, other processes' CPU."""
        before = noise.snapshot()
        res = load()
        used = noise.interval(before, noise.snapshot(), server=run.proc.pid, bench=os.getpid(),
                              hz=HZ)
        res["noise"] = used.record(HZ)
        res["req_per_cpu_s"] = noise.per_cpu_second(res.get(count), res["noise"]["server_cpu_s"])
        if used.other_pct > noise.OTHER_LIMIT_PCT:
            busiest = ", ".join(f"{x['comm']} {x['core_pct']}%" for x in res["noise"]["top_other"])
            print(f"    noisy: other processes used {used.other_pct:.1f}% of a core"
                  + (f" ({busiest})" if busiest else ""), flush=True)
        return res

    # -- one measurement per kind ------------------------------------------

    def measure_wrk(self, server: Server, scn: Scenario, rnd: int) -> dict:
        run = self.start(server, scn, rnd, cpu=self.cpu(SERVER_CPU),
                         close=server.raw and scn.name == "connect",
                         stream=server.raw and scn.name == "stream-1m")
        try:
            headers = check_until(run, scn.check)
            if scn.name == "connect" and headers.get("connection", "").lower() != "close":
                self.note(scn.name, server.name, "closes without a 'Connection: close' header, "
                          "so wrk sees a read error per request")
            kw = dict(lua=scn.lua, headers=scn.headers, connections=self.args.connections,
                      cpu=self.cpu(CLIENT_CPU), tmp=self.tmp)
            wrk(run.opts.port, scn.path, self.args.warmup, **kw)
            res = self.watched(run, lambda: wrk(run.opts.port, scn.path, self.duration, **kw))
            res.update(memory(run, worker_pids(run, [headers])))
            if run.proc.poll() is not None:
                raise StartError(f"server exited during the run: {run.tail()}")
            return res
        finally:
            run.stop()

    def measure_ws(self, server: Server, scn: Scenario, rnd: int) -> dict:
        run = self.start(server, scn, rnd, cpu=self.cpu(SERVER_CPU))
        try:
            headers = check_until(run, scn.check)
            probe = ws_load(run.opts.port, min(1.0, self.args.warmup), self.args.ws_clients,
                            self.cpu(CLIENT_CPU))
            if not probe.get("ok"):
                return probe
            res = self.watched(run, lambda: ws_load(run.opts.port, self.duration,
                                                    self.args.ws_clients, self.cpu(CLIENT_CPU)),
                               count="messages")
            res["rps"] = res.get("rate", 0.0)
            res.update(memory(run, worker_pids(run, [headers])))
            if res.get("close_s", 0) > 1.0:
                self.note(scn.name, server.name,
                          f"close handshake took {res['close_s']:.1f} s (not counted in the rate)")
            return res
        finally:
            run.stop()

    def measure_idle(self, server: Server, scn: Scenario, rnd: int) -> dict:
        count = self.args.idle_conns
        run = self.start(server, scn, rnd, cpu=self.cpu(SERVER_CPU), keepalive=600,
                         max_conns=count + 1024)
        helper = None
        try:
            headers = check_until(run, scn.check)
            pids = worker_pids(run, [headers])
            kw = dict(lua=[], headers=[], connections=self.args.connections,
                      cpu=self.cpu(CLIENT_CPU), tmp=self.tmp)
            wrk(run.opts.port, "/", self.args.warmup, **kw)
            before = self.watched(run, lambda: wrk(run.opts.port, "/", self.duration, **kw))
            rss0 = sum(rss(pids))
            helper = spawn(pinned(self.cpu(CLIENT_CPU), [
                PYTHON, str(BENCH / "idle_conns.py"), "--host", HOST,
                "--port", str(run.opts.port), "--count", str(count)]), pipes=True,
                log=self.log_path(scn.name, server.name, rnd, ".helper"))
            opened = read_json_line(helper, timeout=180)
            rss1 = sum(rss(pids))
            after = self.watched(run, lambda: wrk(run.opts.port, "/", self.duration, **kw))
            helper.stdin.write("count\n")
            helper.stdin.flush()
            alive = read_json_line(helper, timeout=60)["alive"]
            if run.proc.poll() is not None:
                raise StartError(f"server exited during the run: {run.tail()}")
            n = opened["opened"]
            return {
                "rps": after["rps"], "rps_without": before["rps"],
                "remaining": after["rps"] / before["rps"] if before["rps"] else None,
                "opened": n, "failed": opened["failed"], "open_errors": opened["errors"],
                "alive_after": alive,
                "rss_before": rss0, "rss_with_idle": rss1,
                "rss_per_idle_conn": (rss1 - rss0) / n if n else None,
                "latency_us": after["latency_us"], "errors": after["errors"],
                "error_total": after["error_total"] + before["error_total"],
                "requests": after["requests"], "req_per_cpu_s": after["req_per_cpu_s"],
                "noise": after["noise"], "req_per_cpu_s_without": before["req_per_cpu_s"],
                "noise_without": before["noise"],
            }
        finally:
            if helper is not None:
                with contextlib.suppress(OSError):
                    helper.stdin.write("quit\n")
                    helper.stdin.flush()
                kill_group(helper, grace=5.0)
            run.stop()

    def measure_workers(self, server: Server, scn: Scenario, rnd: int) -> dict:
        run = self.start(server, scn, rnd, cpu=None, workers=2)
        try:
            check_until(run, scn.check)
            kw = dict(lua=scn.lua, headers=[], connections=self.args.connections, cpu=None,
                      tmp=self.tmp)
            wrk(run.opts.port, "/", self.args.warmup, **kw)
            res = self.watched(run, lambda: wrk(run.opts.port, "/", self.duration, **kw))
            counts = res.get("pids", {})
            total = sum(counts.values())
            res["workers_seen"] = len(counts)
            res["max_share"] = max(counts.values()) / total if total else None
            res.update(memory(run, [int(p) for p in counts if p.isdigit()]))
            return res
        finally:
            run.stop()

    def measure_pss(self, server: Server, scn: Scenario, preload: bool) -> dict:
        out = {}
        tag = "+preload" if preload else ""
        for workers in (2, 4):
            run = self.start(server, scn, 1, cpu=None, tag=f"{tag}.w{workers}", workers=workers,
                             preload=preload)
            try:
                check_until(run, scn.check)
                seen: dict = {}
                for _ in range(5):  # warm up and find every worker
                    res = wrk(run.opts.port, scn.path, max(1, self.args.warmup), lua=["pids.lua"],
                              headers=[], connections=self.args.connections, cpu=None, tmp=self.tmp)
                    for pid, n in res.get("pids", {}).items():
                        seen[pid] = seen.get(pid, 0) + n
                    if len(seen) >= workers:
                        break
                pids = [int(p) for p in seen if p.isdigit()]
                total, per = pss_tree(run)
                worker_pss = [per[p] for p in pids if p in per]
                out[f"w{workers}"] = {
                    "tree_pss": total, "processes": len(per), "workers_seen": len(pids),
                    "worker_pss_mean": statistics.mean(worker_pss) if worker_pss else None,
                    "worker_rss_mean": statistics.mean(rss(pids)) if pids else None,
                }
            finally:
                run.stop()
        out["per_extra_worker"] = (out["w4"]["tree_pss"] - out["w2"]["tree_pss"]) / 2
        return out

    # -- the loop -----------------------------------------------------------

    def selected_servers(self, scn: Scenario) -> list[Server]:
        names = self.args.servers
        out = []
        for s in SERVERS:
            if names and s.name not in names:
                continue
            if s.raw and not scn.raw:
                continue
            if scn.kind == "pss" and s.name not in PSS_SERVERS and not names:
                continue
            if scn.kind in ("pss", "workers") and s.raw:
                continue
            out.append(s)
        return out

    def run(self) -> None:
        for scn in self.args.scenarios:
            scn = SCENARIO_BY_NAME[scn]
            servers = self.selected_servers(scn)
            print(f"== {scn.name}: {scn.about}", flush=True)
            runnable = []
            for s in servers:
                ok, why = s.available()
                if ok:
                    runnable.append(s)
                else:
                    self.note(scn.name, s.name, why, status="not available")
            if scn.kind == "pss":
                self.run_pss(scn, runnable)
                continue
            for rnd in range(1, self.args.rounds + 1):
                print(f"  round {rnd}/{self.args.rounds}", flush=True)
                for s in runnable:
                    e = self.entry(scn.name, s.name)
                    if e["status"] in ("unsupported", "failed"):
                        continue
                    self.one(scn, s, rnd, e)

    def one(self, scn: Scenario, s: Server, rnd: int, e: dict) -> None:
        measure = {"wrk": self.measure_wrk, "ws": self.measure_ws, "idle": self.measure_idle,
                   "workers": self.measure_workers}[scn.kind]
        t0 = time.monotonic()
        try:
            res = measure(s, scn, rnd)
        except StartError as exc:
            self.note(scn.name, s.name, f"failed: {exc}", status="failed")
            return
        except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as exc:
            self.note(scn.name, s.name, f"round {rnd} error: {type(exc).__name__}: {exc}"[:400])
            return
        if scn.kind == "ws" and not res.get("ok"):
            if res.get("unsupported"):
                self.note(scn.name, s.name, f"unsupported: {res.get('error')}", status="unsupported")
            else:
                self.note(scn.name, s.name, f"round {rnd} failed: {res.get('error') or res.get('errors')}")
            return
        res["round"] = rnd
        e["runs"].append(res)
        errs = res.get("error_total", res.get("error_count", 0)) or 0
        if errs:
            self.note(scn.name, s.name, f"round {rnd}: {errs} errors {res.get('errors')}")
        lat = res.get("latency_us") or {}
        per_cpu = res.get("req_per_cpu_s")
        print(f"    {s.name:28s} {res['rps']:>10.0f}/s  p50 {fmt_ms(lat.get('p50'))} ms"
              f"  p99 {fmt_ms(lat.get('p99'))} ms  "
              + (f"{per_cpu:,.0f}/CPU-s  " if per_cpu else "")
              + f"other CPU {res['noise']['other_core_pct']:.1f}%  "
              f"({time.monotonic() - t0:.1f} s)", flush=True)

    def run_pss(self, scn: Scenario, runnable: list[Server]) -> None:
        for s in runnable:
            for preload in ([False, True] if s.preload else [False]):
                name = s.name + (" +preload" if preload else "")
                e = self.entry(scn.name, name)
                try:
                    res = self.measure_pss(s, scn, preload)
                except StartError as exc:
                    self.note(scn.name, name, f"failed: {exc}", status="failed")
                    continue
                except (RuntimeError, subprocess.TimeoutExpired, OSError, KeyError, ValueError) as exc:
                    self.note(scn.name, name, f"error: {type(exc).__name__}: {exc}"[:400])
                    continue
                e["runs"].append(res)
                print(f"    {name:36s} tree PSS w2 {mib(res['w2']['tree_pss'])} MiB, "
                      f"w4 {mib(res['w4']['tree_pss'])} MiB, per extra worker "
                      f"{mib(res['per_extra_worker'])} MiB", flush=True)


def read_json_line(proc: subprocess.Popen, timeout: float) -> dict:
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    try:
        while time.monotonic() < end:
            if sel.select(timeout=max(0.0, end - time.monotonic())):
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"helper exited ({proc.poll()})")
                return json.loads(line)
        raise RuntimeError("helper did not answer in time")
    finally:
        sel.close()


# ---------------------------------------------------------------------------
# report


def fmt_ms(us) -> str:
    return "-" if us is None else f"{us / 1000:.2f}"


def mib(b) -> str:
    return "-" if b is None else f"{b / 2**20:.1f}"


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values, fmt=lambda v: f"{v:,.0f}") -> tuple[str, str, str]:
    values = [v for v in values if v is not None]
    if not values:
        return "-", "-", "-"
    return fmt(statistics.median(values)), fmt(min(values)), fmt(max(values))


def ratio(a, b) -> str:
    return "-" if not a or not b else f"{a / b:.2f}"


NOISE_KEYS = ("noise", "noise_without")  # where a run keeps its measurements' CPU accounting


def other_pcts(runs: list[dict]) -> list[float]:
    return [r[k]["other_core_pct"] for r in runs for k in NOISE_KEYS if k in r]


def summarize(results: dict) -> dict:
    """Medians per scenario and server, with ratios to the baseline and the ceiling
    (of req/s, and of requests per server CPU-second to the baseline)."""
    out = {}
    for scn, servers in results.items():
        meds = {name: med([r.get("rps") for r in e["runs"]]) for name, e in servers.items()}
        base, ceil = meds.get(BASELINE), meds.get(CEILING)
        per_cpu = {name: med([r.get("req_per_cpu_s") for r in e["runs"]])
                   for name, e in servers.items()}
        base_cpu = per_cpu.get(BASELINE)
        out[scn] = {}
        for name, e in servers.items():
            runs = e["runs"]
            rps = [r.get("rps") for r in runs]
            out[scn][name] = {
                "status": e["status"] if runs or e["status"] != "ok" else "no result",
                "rounds": len(runs),
                "rps_median": med(rps),
                "rps_min": min([v for v in rps if v is not None], default=None),
                "rps_max": max([v for v in rps if v is not None], default=None),
                "p50_us_median": med([(r.get("latency_us") or {}).get("p50") for r in runs]),
                "p99_us_median": med([(r.get("latency_us") or {}).get("p99") for r in runs]),
                "ratio_to_uvicorn": (meds[name] / base) if meds.get(name) and base else None,
                "ratio_to_raw": (meds[name] / ceil) if meds.get(name) and ceil else None,
                "req_per_cpu_s_median": per_cpu[name],
                "cpu_ratio_to_uvicorn": (per_cpu[name] / base_cpu
                                         if per_cpu[name] and base_cpu else None),
                "rss_per_worker_median": med([r.get("rss_per_worker") for r in runs]),
                "other_core_pct_max": max(other_pcts(runs), default=None),
            }
    return out


def noise_by_measurement(results: dict) -> list[tuple[str, float]]:
    """(label, other CPU % of one core) for every measurement of the run."""
    out = []
    for scn, servers in results.items():
        for name, e in servers.items():
            for r in e["runs"]:
                for key in NOISE_KEYS:
                    if key in r:
                        tag = " (before the idle connections)" if key == "noise_without" else ""
                        out.append((f"{scn} {name} round {r.get('round', '?')}{tag}",
                                    r[key]["other_core_pct"]))
    return out


def cpu_cells(s: dict) -> list[str]:
    """The per-CPU-second columns every throughput table carries."""
    other = s["other_core_pct_max"]
    return [spread([s["req_per_cpu_s_median"]])[0], ratio(s["cpu_ratio_to_uvicorn"], 1.0),
            "-" if other is None else f"{other:.1f}"]


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 or h == "notes" else "---:"
                            for i, h in enumerate(header)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def status_note(e: dict) -> str:
    notes = [n.replace("|", "/") for n in e["notes"]]
    text = "; ".join(notes)
    limit = 200  # the full text is in results.json
    return text[:limit] + ("…" if len(text) > limit else "")


def render_scenario(scn: Scenario, servers: dict, summ: dict) -> str:
    rows = []
    if scn.kind in ("wrk", "ws"):
        unit = "msg/s" if scn.kind == "ws" else "req/s"
        lat = "round trip" if scn.kind == "ws" else "latency"
        per_cpu = "msg/CPU-s" if scn.kind == "ws" else "req/CPU-s"
        header = ["server", f"{unit} median", "min", "max", f"p50 {lat} ms", f"p99 {lat} ms",
                  "× uvicorn", "× raw", per_cpu, "CPU × uvicorn", "other CPU max %",
                  "RSS/worker MiB", "errors", "notes"]
        for name, e in servers.items():
            s, runs = summ[name], e["runs"]
            m, lo, hi = spread([r.get("rps") for r in runs])
            p99s = [(r.get("latency_us") or {}).get("p99") for r in runs]
            p99 = fmt_ms(med(p99s))
            if len([v for v in p99s if v is not None]) > 1:
                p99 += f" ({fmt_ms(min(v for v in p99s if v is not None))}–{fmt_ms(max(v for v in p99s if v is not None))})"
            row = [name, m if runs else e["status"], lo, hi, fmt_ms(s["p50_us_median"]), p99,
                   ratio(s["rps_median"], summ.get(BASELINE, {}).get("rps_median")),
                   ratio(s["rps_median"], summ.get(CEILING, {}).get("rps_median"))]
            row += cpu_cells(s) + [mib(s["rss_per_worker_median"])]
            errs = sum((r.get("error_total") or r.get("error_count") or 0) for r in runs)
            row += [str(errs), status_note(e)]
            rows.append(row)
    elif scn.kind == "idle":
        header = ["server", "idle conns opened", "still open after", "KiB RSS per idle conn",
                  "req/s without", "req/s with", "remaining", "p99 with ms", "× uvicorn",
                  "req/CPU-s with", "CPU × uvicorn", "other CPU max %", "notes"]
        for name, e in servers.items():
            runs = e["runs"]
            rows.append([
                name, str(med([r["opened"] for r in runs]) or e["status"]),
                str(med([r["alive_after"] for r in runs]) if runs else "-"),
                "-" if not runs else f"{med([r['rss_per_idle_conn'] for r in runs]) / 1024:.1f}",
                spread([r["rps_without"] for r in runs])[0], spread([r["rps"] for r in runs])[0],
                "-" if not runs else f"{100 * med([r['remaining'] for r in runs]):.0f}%",
                fmt_ms(med([r["latency_us"]["p99"] for r in runs])),
                ratio(summ[name]["rps_median"], summ.get(BASELINE, {}).get("rps_median")),
                *cpu_cells(summ[name]), status_note(e)])
    elif scn.kind == "workers":
        header = ["server", "req/s median", "min", "max", "workers seen", "max share median",
                  "max share worst", "req/CPU-s", "CPU × uvicorn", "other CPU max %", "notes"]
        for name, e in servers.items():
            runs = e["runs"]
            m, lo, hi = spread([r.get("rps") for r in runs])
            shares = [r.get("max_share") for r in runs if r.get("max_share") is not None]
            rows.append([name, m if runs else e["status"], lo, hi,
                         str(min((r["workers_seen"] for r in runs), default="-")),
                         f"{100 * med(shares):.1f}%" if shares else "-",
                         f"{100 * max(shares):.1f}%" if shares else "-",
                         *cpu_cells(summ[name]), status_note(e)])
    elif scn.kind == "pss":
        header = ["server", "tree PSS 2 workers MiB", "tree PSS 4 workers MiB",
                  "PSS per extra worker MiB", "worker PSS (4 w) MiB", "worker RSS (4 w) MiB", "notes"]
        for name, e in servers.items():
            if not e["runs"]:
                rows.append([name, e["status"], "-", "-", "-", "-", status_note(e)])
                continue
            r = e["runs"][0]
            note = status_note(e)
            if r["w4"]["workers_seen"] < 4:
                note = (note + "; " if note else "") + f"only {r['w4']['workers_seen']} of 4 workers answered"
            rows.append([name, mib(r["w2"]["tree_pss"]), mib(r["w4"]["tree_pss"]),
                         mib(r["per_extra_worker"]), mib(r["w4"]["worker_pss_mean"]),
                         mib(r["w4"]["worker_rss_mean"]), note])
    return table(header, rows)


def versions() -> dict:
    names = ["arbiter-asgi", "uvicorn", "uvicorn-worker", "gunicorn", "gunicorn_h1c", "granian",
             "hypercorn", "fastapi", "starlette", "pydantic", "uvloop", "httptools", "h11",
             "wsproto", "websockets", "psutil"]
    out = {}
    for n in names:
        try:
            out[n] = importlib.metadata.version(n)
        except importlib.metadata.PackageNotFoundError:
            out[n] = None
    return out


def machine() -> dict:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk_v = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5).stdout.split("\n")[0]
    commit = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5).stdout.strip()
    return {"cores": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "python": platform.python_version(), "wrk": wrk_v, "arbiter_commit": commit,
            "loadavg_start": os.getloadavg()}


def write_reports(bench: Bench, meta: dict) -> str:
    """results.json always; RESULTS.md only from a quiet run, or marked noisy with
    --allow-noisy. Returns noise.decide()'s answer: write, write-noisy or refuse."""
    summ = summarize(bench.results)
    verdict = noise.verdict(meta["loadavg_start"][0], noise_by_measurement(bench.results))
    meta["noise"] = verdict.record()
    data = {"meta": meta, "summary": summ, "results": bench.results, "commands": bench.commands}
    out_json = Path(bench.args.json_out)
    out_json.write_text(json.dumps(data, indent=1, default=str) + "\n")

    a = bench.args
    decision = noise.decide(verdict, a.allow_noisy)
    if decision == "refuse":
        print(f"wrote {a.json_out}; NOT writing {a.md_out}: the machine was busy ("
              + "; ".join(verdict.reasons()) + "). Re-run on a quiet machine, or pass "
              "--allow-noisy to write it marked as noisy.", file=sys.stderr)
        return decision
    lines = noise.banner(verdict) + [
        "# arbiter benchmark results", "",
        f"- date: {meta['date']}" + (" (SMOKE RUN: 1 s, 1 round — a check that everything works, "
                                     "not a measurement)" if a.smoke else ""),
        f"- machine: {meta['cores']} cores ({meta['cpu']}), Linux {meta['kernel']}, "
        f"load average at start {', '.join(f'{x:.2f}' for x in meta['loadavg_start'])}, "
        f"at end {', '.join(f'{x:.2f}' for x in meta['loadavg_end'])}",
        f"- python {meta['python']}, {meta['wrk']}, arbiter commit {meta['arbiter_commit'] or '?'}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items() if v),
        f"- method: {a.duration} s per measurement after a {a.warmup} s warm-up, {a.rounds} "
        f"round(s) interleaved (A B C A B C), {a.connections} connections, wrk -t1; server "
        + ("pinned to core 0, client to core 1" if a.pin else "not pinned (--no-pin)")
        + "; every server started fresh for every measurement, on 127.0.0.1, access log off, "
        "answer checked (status and body) before it is measured",
        f"- ratios: median req/s over the median of `{BASELINE}` (× uvicorn) and of "
        f"`{CEILING}` (× raw, where the raw server can answer the scenario)",
        "- req/CPU-s: requests completed in a measurement over the CPU seconds the server's "
        "whole process tree (master and workers) used during it, from its own ticks in "
        f"/proc/PID/stat; CPU × uvicorn is its median over `{BASELINE}`'s",
        f"- noise: other CPU is what all CPUs were busy with (/proc/stat) beyond the bench's "
        f"own processes (server, load generator, run.py), in % of one core; a run is noisy when "
        f"the load average at its start exceeds {noise.LOAD_LIMIT} or other CPU exceeds "
        f"{noise.OTHER_LIMIT_PCT:g}% in any measurement. This run: worst other CPU "
        f"{verdict.worst_other_pct:.1f}% over {verdict.measurements} measurements"
        + (" (NOISY, see the top)" if verdict.noisy else " (quiet)"),
        f"- command: `{meta['argv']}`" + (" (interrupted: partial results)" if meta.get("interrupted") else ""),
        "",
    ]
    for name in a.scenarios:
        scn = SCENARIO_BY_NAME[name]
        if name not in bench.results:
            continue
        lines += [f"## {name}", "", scn.about + ".", ""]
        if scn.kind == "idle":
            lines += [f"{a.idle_conns} idle connections (one GET each, then silent), keep-alive "
                      "timeouts raised to 600 s and connection caps raised where a server has them "
                      "(see the commands). RSS is the worker's, before and after opening them.", ""]
        if scn.kind == "workers":
            lines += ["wrk counts responses per `x-pid` header (a lua response() callback, which "
                      "costs throughput); max share 50% is a perfect spread.", ""]
        if scn.kind == "pss":
            lines += ["PSS (proportional set size, shared pages split among sharers) summed over the "
                      "whole process tree after a warm-up that reached every worker. Per extra worker "
                      "= (tree PSS with 4 workers - with 2) / 2. Single pass, not rounds.", ""]
        lines += [render_scenario(scn, bench.results[name], summ[name]), ""]
    lines += ["## Commands", "", "`$PORT` is a free port picked per start; paths are relative to the "
              "repo root; every command runs with cwd bench/apps and PYTHONPATH=bench/apps.", ""]
    for name in a.scenarios:
        scn = SCENARIO_BY_NAME[name]
        if name not in bench.commands:
            continue
        lines.append(f"### {name}")
        lines.append("")
        if scn.kind in ("wrk", "idle", "workers"):
            cpu = None if scn.kind == "workers" or not a.pin else CLIENT_CPU
            lines.append(f"- load: `{wrk_command(scn, a.connections, a.duration, cpu)}`")
        if scn.kind == "ws":
            cpu = CLIENT_CPU if a.pin else None
            lines.append("- load: `" + " ".join(pinned(cpu, [
                "bench/.venv/bin/python", "bench/ws_client.py", f"ws://{HOST}:$PORT/",
                "--clients", str(a.ws_clients), "--duration", str(a.duration)])) + "`")
        if scn.kind == "idle":
            lines.append(f"- idle helper: `bench/.venv/bin/python bench/idle_conns.py --port $PORT "
                         f"--count {a.idle_conns}`" + (" (under taskset -c 1, like the client)" if a.pin else ""))
        for server, cmd in bench.commands[name].items():
            lines.append(f"- {server}: `{cmd}`")
        lines.append("")
    Path(a.md_out).write_text("\n".join(lines))
    print(f"wrote {a.md_out}" + (" (marked NOISY)" if verdict.noisy else "") + f" and {a.json_out}")
    return decision


# ---------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, default=10, help="seconds per measurement (default 10)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up load before each measurement")
    p.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS),
                   help="comma-separated: " + ", ".join(s.name for s in SCENARIOS))
    p.add_argument("--servers", default="",
                   help="comma-separated filter: " + ", ".join(s.name for s in SERVERS))
    p.add_argument("--smoke", action="store_true",
                   help="quick check: 1 s, 1 round, 1 s warm-up, 2,000 idle connections")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--ws-clients", type=int, default=64)
    p.add_argument("--idle-conns", type=int, default=None,
                   help="idle connections for idle-10k (default 10,000; 2,000 with --smoke)")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="do not pin server and client to cores 0 and 1")
    p.add_argument("--md-out", default=str(BENCH / "RESULTS.md"))
    p.add_argument("--json-out", default=str(BENCH / "results.json"))
    p.add_argument("--allow-noisy", action="store_true",
                   help="write RESULTS.md even from a busy machine, marked as noisy at the top")
    p.add_argument("--list", action="store_true", help="list servers and scenarios, then exit")
    args = p.parse_args(argv)
    if args.smoke:
        args.duration, args.rounds, args.warmup = 1, 1, 1
    if args.idle_conns is None:
        args.idle_conns = 2_000 if args.smoke else 10_000
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for s in args.scenarios:
        if s not in SCENARIO_BY_NAME:
            p.error(f"unknown scenario {s!r}")
    for s in args.servers:
        if s not in SERVER_BY_NAME:
            p.error(f"unknown server {s!r}")
    if args.duration < 1 or args.rounds < 1 or args.warmup < 1:
        p.error("--duration, --rounds and --warmup must be at least 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for s in SERVERS:
            print(f"server   {s.name:28s} {s.describe}")
        for s in SCENARIOS:
            print(f"scenario {s.name:28s} {s.about}")
        return 0
    if not shutil.which("wrk"):
        print("wrk is not installed: run bash bench/setup.sh", file=sys.stderr)
        return 2
    try:
        import psutil  # noqa: F401
    except ImportError:
        print("psutil missing: run with bench/.venv/bin/python (bash bench/setup.sh)", file=sys.stderr)
        return 2
    if args.pin:
        cores = os.sched_getaffinity(0)
        if not {0, 1} <= cores or not shutil.which("taskset"):
            print("cores 0 and 1 (and taskset) are needed for pinning; use --no-pin", file=sys.stderr)
            return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.idle_conns + 4096
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(want, soft)), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < want:
        print(f"warning: open-file limit {hard} is below {want}; idle-10k may fail", file=sys.stderr)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    bench = Bench(args)
    meta = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "argv": " ".join(shlex.quote(a) for a in ["bench/run.py"] + (argv or sys.argv[1:])),
            "versions": versions(), **machine(), "args": vars(args)}
    load = meta["loadavg_start"][0]
    if load > noise.LOAD_LIMIT:
        print(f"warning: load average {load:.2f} is above {noise.LOAD_LIMIT}: this run counts as "
              "noisy" + ("" if args.allow_noisy else f", so {args.md_out} will not be written "
                         "(wait for a quiet machine, or pass --allow-noisy)"), file=sys.stderr)
    code = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        print("\ninterrupted: stopping servers, writing partial results", file=sys.stderr)
        meta["interrupted"] = True
        code = 130
    finally:
        kill_all()
        shutil.rmtree(bench.tmp, ignore_errors=True)
    meta["loadavg_end"] = os.getloadavg()
    if write_reports(bench, meta) == "refuse" and code == 0:
        code = 3
    return code


if __name__ == "__main__":
    sys.exit(main())
