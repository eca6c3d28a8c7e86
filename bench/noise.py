"""Was the machine quiet while we measured? CPU accounting for bench/run.py.

A measurement is trusted only if nothing else competed for the two cores the
server and the load generator pin. Around every measurement run.py takes a
snapshot of /proc/stat (busy jiffies of all CPUs) and of every /proc/PID/stat;
what the CPUs did beyond the bench's own process tree (run.py, the server under
test and its workers, wrk / the WebSocket client / the idle helper) is "other"
CPU. The same snapshots give the server tree's own CPU time, hence requests per
server CPU-second.

Everything here is pure arithmetic on the text of those files, except
`snapshot()`, the one function that reads them. The arithmetic assumes the
kernel's tick-based CPU accounting without IRQ_TIME_ACCOUNTING (the benchmark
box's kernel): there, interrupt time is charged to the task it interrupted, so
the loopback traffic's softirq work is part of the server's and the client's own
ticks. On a kernel with IRQ_TIME_ACCOUNTING it is not, and it shows up as
"other": the check then errs towards calling a run noisy (irq time is recorded
separately so one can tell). Interrupt time that found no task to charge (the
CPU was idle) is left out of "other" (``interval``): it competed with nobody.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

# A run is noisy when either limit is exceeded (see bench/README.md, "Noise").
LOAD_LIMIT = 0.5  # 1-minute load average when the run starts
OTHER_LIMIT_PCT = 5.0  # CPU used by other processes, % of one core, in any measurement


@dataclass(frozen=True)
class Cpu:
    """System-wide CPU time in jiffies (USER_HZ), summed over all CPUs."""
    busy: int  # user + nice + system + irq + softirq + steal
    irq: int  # irq + softirq (part of busy)
    steal: int  # time the hypervisor gave to someone else (part of busy)


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    comm: str
    own: int  # utime + stime, in clock ticks
    children: int  # cutime + cstime: children it has reaped
    start: int = 0  # starttime, in ticks after boot: tells a reused pid from the old process


@dataclass(frozen=True)
class Snapshot:
    cpu: Cpu
    procs: Mapping[int, Proc]
    wall: float  # time.monotonic() when it was taken


def parse_cpu(stat_text: str) -> Cpu:
    """The aggregate `cpu` line of /proc/stat. guest and guest_nice are already
    inside user and nice, so they are not added again; older kernels print fewer
    columns (missing ones are 0)."""
    for line in stat_text.splitlines():
        name, _, rest = line.partition(" ")
        if name == "cpu":
            user, nice, system, _idle, _iowait, irq, softirq, steal = (
                [int(x) for x in rest.split()] + [0] * 8)[:8]
            return Cpu(busy=user + nice + system + irq + softirq + steal, irq=irq + softirq,
                       steal=steal)
    raise ValueError("no aggregate cpu line in /proc/stat")


def parse_proc_stat(text: str) -> Proc:
    """One /proc/PID/stat line. The command name sits in parentheses and may
    itself contain spaces and parentheses, so the fields start after the last ')'."""
    head, _, rest = text.rpartition(")")
    pid, _, comm = head.partition(" (")
    fields = rest.split()  # fields[0] is field 3 (state) of proc(5)
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return Proc(pid=int(pid), ppid=int(fields[1]), comm=comm, own=utime + stime,
                children=cutime + cstime, start=int(fields[19]))


def tree(procs: Mapping[int, Proc], root: int) -> set[int]:
    """root and all its descendants present in the snapshot."""
    kids: dict[int, list[int]] = {}
    for p in procs.values():
        kids.setdefault(p.ppid, []).append(p.pid)
    found, todo = set(), [root] if root in procs else []
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(kids.get(pid, ()))
    return found


def tree_ticks(procs: Mapping[int, Proc], root: int) -> int:
    """CPU ticks of a process tree: every live member's own time plus the time of
    the children it has reaped (a worker that died and was reaped by the master
    moves from the first into the second, so differences stay exact)."""
    return sum(procs[pid].own + procs[pid].children for pid in tree(procs, root))


@dataclass(frozen=True)
class Interval:
    """CPU use between two snapshots. *_ticks are clock ticks summed over CPUs;
    *_pct are percent of one core over the interval."""
    core_ticks: float  # wall-clock length of the interval, in ticks of one core
    server_ticks: int
    client_ticks: int  # the rest of the bench's tree: load generator, helpers, run.py
    other_ticks: int  # busy minus the bench's tree and idle_irq (may dip below 0 by sampling)
    irq_ticks: int
    steal_ticks: int
    top_other: tuple[tuple[str, int, int], ...]  # (comm, pid, own ticks), busiest first
    idle_irq_ticks: int = 0  # interrupt time charged to no process: it ran on an idle CPU

    def pct(self, ticks: float) -> float:
        return 100.0 * ticks / self.core_ticks if self.core_ticks > 0 else 0.0

    @property
    def other_pct(self) -> float:
        return max(0.0, self.pct(self.other_ticks))

    def record(self, hz: int) -> dict:
        """The JSON form kept with each measurement in results.json."""
        return {
            "interval_s": round(self.core_ticks / hz, 3),
            "server_cpu_s": self.server_ticks / hz,
            "client_cpu_s": self.client_ticks / hz,
            "other_cpu_s": self.other_ticks / hz,
            "server_core_pct": round(self.pct(self.server_ticks), 1),
            "client_core_pct": round(self.pct(self.client_ticks), 1),
            "other_core_pct": round(self.other_pct, 1),
            "irq_core_pct": round(self.pct(self.irq_ticks), 1),
            "steal_core_pct": round(self.pct(self.steal_ticks), 1),
            "idle_irq_core_pct": round(self.pct(self.idle_irq_ticks), 1),
            "top_other": [{"comm": c, "pid": p, "core_pct": round(self.pct(t), 1)}
                          for c, p, t in self.top_other],
        }


def interval(before: Snapshot, after: Snapshot, *, server: int, bench: int, hz: int,
             top: int = 3) -> Interval:
    """Split the CPU time between two snapshots into the server's tree, the rest of
    the bench's tree (bench is run.py's pid; the server is one of its children), and
    everything else. The busiest other processes are ranked by their own time only
    (a parent's reaped-children time would count a child's past again).

    Busy time that no process was charged with and that interrupts explain
    (``idle_irq``: a tick that found the CPU idle but for an interrupt, on the
    benchmark box mostly the loopback softirq of the bench's own traffic, 5-8% of
    a core at upload-1m's 3 GB/s) is not other CPU: it took no time from the pinned
    server or client, the CPU was idle. Busy time beyond that stays other: steal,
    other processes, and what nothing explains."""
    server_t = tree_ticks(after.procs, server) - tree_ticks(before.procs, server)
    bench_t = tree_ticks(after.procs, bench) - tree_ticks(before.procs, bench)
    ours = tree(before.procs, bench) | tree(after.procs, bench)
    others = []
    others_t = 0  # own time, and time of children they reaped (short-lived commands)
    for pid, p in after.procs.items():
        if pid in ours:
            continue
        old = before.procs.get(pid)
        same = old is not None and old.start == p.start
        used = p.own - (old.own if same else 0)
        if used > 0:
            others.append((p.comm, pid, used))
        others_t += max(0, used) + max(0, p.children - (old.children if same else 0))
    others.sort(key=lambda x: -x[2])
    busy_t = after.cpu.busy - before.cpu.busy
    irq_t = after.cpu.irq - before.cpu.irq
    steal_t = after.cpu.steal - before.cpu.steal
    unattributed = busy_t - bench_t - others_t - steal_t
    idle_irq = min(max(0, unattributed), max(0, irq_t))
    return Interval(
        core_ticks=(after.wall - before.wall) * hz,
        server_ticks=server_t,
        client_ticks=bench_t - server_t,
        other_ticks=busy_t - bench_t - idle_irq,
        irq_ticks=irq_t,
        steal_ticks=steal_t,
        top_other=tuple(others[:top]),
        idle_irq_ticks=idle_irq,
    )


def per_cpu_second(requests: int | float | None, server_cpu_s: float | None) -> float | None:
    """Requests completed per second of the server tree's CPU time: what a user pays
    for, and what a competing process disturbs least (it slows the server's clock
    and its throughput alike)."""
    if not requests or not server_cpu_s or server_cpu_s <= 0:
        return None
    return requests / server_cpu_s


# ---------------------------------------------------------------------------
# the verdict: is the run fit to be RESULTS.md?


@dataclass(frozen=True)
class Verdict:
    loadavg_start: float
    noisy_measurements: tuple[tuple[str, float], ...]  # (label, other % of one core)
    measurements: int
    worst_other_pct: float

    @property
    def load_high(self) -> bool:
        return self.loadavg_start > LOAD_LIMIT

    @property
    def noisy(self) -> bool:
        return self.load_high or bool(self.noisy_measurements)

    def reasons(self) -> list[str]:
        out = []
        if self.load_high:
            out.append(f"load average {self.loadavg_start:.2f} at the start "
                       f"(limit {LOAD_LIMIT})")
        if self.noisy_measurements:
            n = len(self.noisy_measurements)
            worst = max(self.noisy_measurements, key=lambda x: x[1])
            out.append(f"other processes used more than {OTHER_LIMIT_PCT:g}% of a core in "
                       f"{n} of {self.measurements} measurements "
                       f"(worst {worst[1]:.1f}%, {worst[0]})")
        return out

    def record(self) -> dict:
        return {"noisy": self.noisy, "reasons": self.reasons(),
                "loadavg_start": self.loadavg_start, "load_limit": LOAD_LIMIT,
                "other_limit_core_pct": OTHER_LIMIT_PCT, "measurements": self.measurements,
                "worst_other_core_pct": self.worst_other_pct,
                "noisy_measurements": [list(x) for x in self.noisy_measurements]}


def verdict(loadavg_start: float, others: Iterable[tuple[str, float]]) -> Verdict:
    """others: (label, other CPU % of one core) for every measurement."""
    others = list(others)
    return Verdict(
        loadavg_start=loadavg_start,
        noisy_measurements=tuple((lbl, pct) for lbl, pct in others if pct > OTHER_LIMIT_PCT),
        measurements=len(others),
        worst_other_pct=max((pct for _, pct in others), default=0.0),
    )


def decide(v: Verdict, allow_noisy: bool) -> str:
    """'write' (quiet), 'write-noisy' (noisy, written with a banner) or 'refuse'."""
    if not v.noisy:
        return "write"
    return "write-noisy" if allow_noisy else "refuse"


def banner(v: Verdict) -> list[str]:
    """Markdown lines that open a noisy RESULTS.md; none for a quiet run."""
    if not v.noisy:
        return []
    lines = ["> **NOISY RUN: do not compare these numbers with a quiet run.** The machine was "
             "busy while it was measured (written with `--allow-noisy`):"]
    lines += [f"> - {r}" for r in v.reasons()]
    lines += [f"> - limits: load average {LOAD_LIMIT} at the start, other CPU "
              f"{OTHER_LIMIT_PCT:g}% of one core in any measurement; worst other CPU "
              f"{v.worst_other_pct:.1f}% of a core over {v.measurements} measurements",
              "> - req/CPU-s (requests per server CPU-second) is the column least "
              "distorted by the noise; results.json has the numbers per measurement.", ""]
    return lines


# ---------------------------------------------------------------------------
# the one piece of I/O


def snapshot(proc: Path = Path("/proc")) -> Snapshot:
    """/proc/stat and every process's /proc/PID/stat, read back to back."""
    wall = time.monotonic()
    cpu = parse_cpu((proc / "stat").read_text())
    procs = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            p = parse_proc_stat((proc / entry.name / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # exited between the listing and the read, or unreadable
        procs[p.pid] = p
    return Snapshot(cpu=cpu, procs=procs, wall=wall)


def clock_ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK")
