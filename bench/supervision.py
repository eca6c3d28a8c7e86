#!/usr/bin/env python3
"""Supervision bench: what the master's supervision costs and whether it drops requests.

Runs the real ``python -m arbiter`` (``bench/apps/hello.py``) on loopback and measures:

1. ``kill -9`` of a worker -> its replacement's READY, in ms, over ``--kills`` kills
   spread across the slots, each victim ready for longer than the policy's
   stability window so that crash backoff does not apply; then ``--backoff-kills``
   kills of one slot back to back, where it does.
2. ``--reloads`` SIGHUPs, one after the other, under continuous load from client
   threads (keep-alive connections, and a new connection per request): requests
   served and requests failed, and SIGHUP -> "generation N is serving" times.
3. The master's open fds (/proc/PID/fd) and threads before and after the reloads, and
   the RSS of the master and of a worker after start.
4. The same for ``--upgrades`` SIGUSR2 re-execs under load, and whether the
   master kept its PID.

Times come from the master's error log: a thread reads its stderr and stamps
every line with time.monotonic() as it arrives. A request fails when the
connection cannot be made, is reset or closed before a complete response, or
the status is not 200; nothing is retried. Prints a markdown table.

    python bench/supervision.py [--workers 4] [--kills 10] [--reloads 20] [--upgrades 3]

Linux only (/proc). A script, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from arbiter.policy import STABLE_AFTER_S  # noqa: E402  (the crash streak's reset window)

READY = r"worker (\d+) \(pid (\d+), generation (\d+)\) is ready"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the server


class Master:
    """``python -m arbiter`` in its own session; its stderr lines, stamped on arrival."""

    def __init__(self, workers: int, extra: list[str]) -> None:
        self.command = [sys.executable, "-m", "arbiter", "hello:app", "--workers", str(workers),
                        "--bind", "127.0.0.1:0", "--app-dir", str(HERE / "apps"),
                        "--no-access-log", *extra]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)
        self.proc = subprocess.Popen(self.command, cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self.pid = self.proc.pid
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            stamp = time.monotonic()
            with self._cond:
                self.lines.append((stamp, raw.decode("utf-8", "replace").rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def wait_for(self, pattern: str, start: int = 0, timeout: float = 60.0
                 ) -> tuple[int, float, re.Match[str]]:
        """The first line at or after index ``start`` matching ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = start
        with self._cond:
            while True:
                while index < len(self.lines):
                    stamp, line = self.lines[index]
                    match = regex.search(line)
                    if match:
                        return index, stamp, match
                    index += 1
                if self.proc.poll() is not None:
                    raise RuntimeError(f"arbiter exited ({self.proc.returncode}) before "
                                       f"{pattern!r}:\n{self.tail()}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(f"timed out waiting for {pattern!r}:\n{self.tail()}")
                self._cond.wait(min(remaining, 0.5))

    def tail(self, n: int = 15) -> str:
        return "\n".join(line for _, line in self.lines[-n:])

    def address(self) -> tuple[str, int]:
        match = self.wait_for(r"Listening at: http://([\d.]+):(\d+)")[2]
        return match.group(1), int(match.group(2))

    def slots(self) -> dict[int, tuple[int, float]]:
        """slot -> (pid, time its READY line arrived), from the latest READY per slot."""
        found: dict[int, tuple[int, float]] = {}
        with self._cond:
            for stamp, line in self.lines:
                match = re.search(READY, line)
                if match:
                    found[int(match.group(1))] = (int(match.group(2)), stamp)
        return found

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def threads(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            return int(re.search(r"^Threads:\s+(\d+)", f.read(), re.M).group(1))

    def rss_mib(self, pid: int | None = None) -> float:
        """VmRSS of the master (or of ``pid``), in MiB."""
        with open(f"/proc/{pid or self.pid}/status") as f:
            return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1)) / 1024

    def children(self) -> list[int]:
        kids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.pid and fields[0] != "Z":
                kids.append(int(entry))
        return sorted(kids)

    def settle(self, workers: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.children()) != workers:
            if time.monotonic() > deadline:
                raise RuntimeError(f"expected {workers} workers, have {self.children()}")
            time.sleep(0.05)  # polling interval

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left of the session we started
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        return self.proc.returncode


# ------------------------------------------------------------------ load


class Client(threading.Thread):
    """Sequential GETs on raw sockets: one keep-alive connection, or a new one each time."""

    def __init__(self, address: tuple[str, int], keep_alive: bool) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.keep_alive = keep_alive
        close = b"" if keep_alive else b"Connection: close\r\n"
        self.request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n" + close + b"\r\n"
        self.ok = 0
        self.failed = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.halt = threading.Event()

    def run(self) -> None:
        sock: socket.socket | None = None
        while not self.halt.is_set():
            try:
                if sock is None:
                    sock = socket.create_connection(self.address, timeout=10)
                sock.sendall(self.request)
                status, close = _read_response(sock)
            except (OSError, ValueError) as exc:
                self.failed += 1
                self.errors[f"{type(exc).__name__}: {exc}"] += 1
                if sock is not None:
                    sock.close()
                sock = None
                time.sleep(0.01)  # do not spin on a refused port
                continue
            if status == 200:
                self.ok += 1
            else:
                self.failed += 1
                self.errors[f"HTTP {status}"] += 1
            if close or not self.keep_alive:
                sock.close()
                sock = None
        if sock is not None:
            sock.close()


def _read_response(sock: socket.socket) -> tuple[int, bool]:
    """Read one response with a Content-Length body: (status, server closes)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("closed before a complete head" if data else "closed, no response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length_m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(length_m.group(1)) if length_m else 0
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError("closed mid-body")
        body += chunk
    close = re.search(rb"(?im)^connection:\s*close", head) is not None
    return status, close


class Load:
    def __init__(self, address: tuple[str, int], keep_alive: int, fresh: int) -> None:
        self.clients = [Client(address, True) for _ in range(keep_alive)] + \
                       [Client(address, False) for _ in range(fresh)]
        for client in self.clients:
            client.start()

    def wait_requests(self, n: int, timeout: float = 20.0) -> None:
        target = self.total() + n
        deadline = time.monotonic() + timeout
        while self.total() < target and time.monotonic() < deadline:
            time.sleep(0.01)  # polling interval

    def total(self) -> int:
        return sum(c.ok + c.failed for c in self.clients)

    def finish(self) -> dict[str, object]:
        for client in self.clients:
            client.halt.set()
        for client in self.clients:
            client.join(15)
        errors: collections.Counter[str] = collections.Counter()
        for client in self.clients:
            errors.update(client.errors)
        return {
            "ok": sum(c.ok for c in self.clients),
            "failed": sum(c.failed for c in self.clients),
            "keep_alive": (sum(c.ok for c in self.clients if c.keep_alive),
                           sum(c.failed for c in self.clients if c.keep_alive)),
            "fresh": (sum(c.ok for c in self.clients if not c.keep_alive),
                      sum(c.failed for c in self.clients if not c.keep_alive)),
            "errors": dict(errors),
        }


# ------------------------------------------------------------------ phases


def kill_to_ready(master: Master, slot: int, stable_s: float) -> tuple[float, float, float]:
    """SIGKILL slot's worker; ms to the death being logged, to the replacement's READY,
    and the boot time the master logged for it."""
    victim, ready_at = master.slots()[slot]
    wait = ready_at + stable_s - time.monotonic()
    if wait > 0:
        time.sleep(wait)  # the victim must have been ready this long (no crash streak)
    start = master.mark()
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    _, died, _ = master.wait_for(rf"\(pid {victim}, generation \d+\) was killed by SIGKILL",
                                 start)
    _, ready, match = master.wait_for(
        rf"worker {slot} \(pid (?!{victim}\b)\d+, generation \d+\) is ready \(([\d.]+) s to boot",
        start)
    return (died - killed) * 1000, (ready - killed) * 1000, float(match.group(1)) * 1000


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return (f"median {statistics.median(values):.0f} ms (min {min(values):.0f}, "
            f"max {max(values):.0f}, n={len(values)})")


def run(args: argparse.Namespace) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    master = Master(args.workers, args.arbiter_args)
    try:
        master.wait_for(r"all \d+ worker\(s\) ready", timeout=60)
        address = master.address()
        say(f"arbiter pid {master.pid} at {address}, {args.workers} workers")
        rows.append(("RSS of the master / of one worker, after start",
                     f"{master.rss_mib():.1f} / {master.rss_mib(master.children()[0]):.1f} MiB"))

        # 1. kill -9 -> READY, spread across the slots
        to_ready, to_reap, boots = [], [], []
        for i in range(args.kills):
            slot = i % args.workers + 1
            reap_ms, ready_ms, boot_ms = kill_to_ready(master, slot, STABLE_AFTER_S + 0.5)
            to_reap.append(reap_ms)
            to_ready.append(ready_ms)
            boots.append(boot_ms)
            say(f"kill {i + 1}/{args.kills} (slot {slot}): death logged {reap_ms:.1f} ms, "
                f"replacement ready {ready_ms:.0f} ms")
        rows.append((f"kill -9 -> replacement READY, {args.kills} kills over {args.workers} "
                     f"slots, no backoff", summary(to_ready)))
        rows.append(("  of which: kill -> death logged by the master", summary(to_reap)))
        rows.append(("  of which: the replacement's boot (fork -> READY, as logged)",
                     summary(boots)))

        # 1b. one slot, back to back: crash backoff applies from the third death
        if args.backoff_kills:
            series = []
            for i in range(args.backoff_kills):
                _, ready_ms, _ = kill_to_ready(master, 1, STABLE_AFTER_S + 0.5 if i == 0
                                               else 0.0)
                series.append(ready_ms)
                say(f"back-to-back kill {i + 1}/{args.backoff_kills}: {ready_ms:.0f} ms")
            rows.append((f"kill -9 of slot 1, {args.backoff_kills} times back to back "
                         f"(crash backoff)", ", ".join(f"{v:.0f}" for v in series) + " ms"))
            # let the slot's streak lapse before the reloads (a reload spawns past it anyway)
        master.settle(args.workers)

        # 2 + 3. SIGHUP reloads under load
        fds0, threads0 = master.fds(), master.threads()
        load = Load(address, args.keep_alive_clients, args.fresh_clients)
        load.wait_requests(200)
        durations = []
        for i in range(args.reloads):
            start = master.mark()
            sent = time.monotonic()
            os.kill(master.pid, signal.SIGHUP)
            _, done, _ = master.wait_for(r"reload: generation \d+ is serving", start)
            durations.append((done - sent) * 1000)
            say(f"reload {i + 1}/{args.reloads}: {durations[-1]:.0f} ms")
        load.wait_requests(200)
        result = load.finish()
        master.settle(args.workers)
        rows.append((f"{args.reloads} x SIGHUP under load: requests ok / failed",
                     _load_cell(result)))
        rows.append(("  SIGHUP -> new generation serving (all workers replaced)",
                     summary(durations)))
        rows.append((f"master open fds, before / after {args.reloads} reloads",
                     f"{fds0} / {master.fds()}"))
        rows.append((f"master threads, before / after {args.reloads} reloads",
                     f"{threads0} / {master.threads()}"))

        # 4. SIGUSR2 re-execs under load
        fds0, threads0 = master.fds(), master.threads()
        load = Load(address, args.keep_alive_clients, args.fresh_clients)
        load.wait_requests(200)
        durations, same_pid = [], True
        for i in range(args.upgrades):
            start = master.mark()
            sent = time.monotonic()
            os.kill(master.pid, signal.SIGUSR2)
            _, _, adopted = master.wait_for(r"\[(\d+)\] \[INFO\] adopted \d+ worker", start)
            same_pid = same_pid and int(adopted.group(1)) == master.pid
            _, done, _ = master.wait_for(r"reload: generation \d+ is serving", start)
            durations.append((done - sent) * 1000)
            say(f"upgrade {i + 1}/{args.upgrades}: {durations[-1]:.0f} ms")
        load.wait_requests(200)
        result = load.finish()
        master.settle(args.workers)
        same_pid = same_pid and master.proc.poll() is None
        rows.append((f"{args.upgrades} x SIGUSR2 under load: requests ok / failed",
                     _load_cell(result)))
        rows.append(("  SIGUSR2 -> old workers all replaced (pre-flight check, exec, "
                     "rolling reload)", summary(durations)))
        rows.append(("  master PID unchanged", "yes" if same_pid else "NO"))
        rows.append((f"master open fds, before / after {args.upgrades} upgrades",
                     f"{fds0} / {master.fds()}"))
        rows.append((f"master threads, before / after {args.upgrades} upgrades",
                     f"{threads0} / {master.threads()}"))
    finally:
        code = master.stop()
        say(f"arbiter exited with {code}")
    return rows


def _load_cell(result: dict[str, object]) -> str:
    ka, fr = result["keep_alive"], result["fresh"]
    cell = (f"{result['ok']} / {result['failed']} (keep-alive {ka[0]} / {ka[1]}, "  # type: ignore[index]
            f"new connection each {fr[0]} / {fr[1]})")  # type: ignore[index]
    if result["errors"]:
        cell += f" errors: {result['errors']}"
    return cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--kills", type=int, default=10, help="spread kill -9s (default 10)")
    parser.add_argument("--backoff-kills", type=int, default=5,
                        help="back-to-back kills of slot 1 (default 5; 0 skips)")
    parser.add_argument("--reloads", type=int, default=20, help="SIGHUPs (default 20)")
    parser.add_argument("--upgrades", type=int, default=3, help="SIGUSR2s (default 3)")
    parser.add_argument("--keep-alive-clients", type=int, default=2)
    parser.add_argument("--fresh-clients", type=int, default=2,
                        help="clients opening a new connection per request (default 2)")
    parser.add_argument("arbiter_args", nargs="*",
                        help="extra arbiter arguments, after --, e.g. -- --worker-class asyncio")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        raise SystemExit("supervision.py reads /proc: Linux only")
    started = time.monotonic()
    rows = run(args)
    import arbiter
    print(f"\narbiter {arbiter.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, {args.workers} workers, load: {args.keep_alive_clients} "
          f"keep-alive + {args.fresh_clients} new-connection client threads; "
          f"{time.monotonic() - started:.0f} s\n")
    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
